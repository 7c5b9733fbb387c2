//! Keeping the write-ahead log short: checkpoints beside the writer, and the writer's share.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold, on the
//! committing connection — with the audit pipeline, on its single writer, which then spends
//! much of its time reading the log back and writing database pages instead of appending. So
//! a passive checkpoint runs beside the writer, on a pooled connection, and never blocks it.
//!
//! That alone never finishes under steady load: the log starts over from its beginning only
//! once every frame in it has been copied back, and a checkpoint beside a writer that commits
//! every millisecond always leaves the frames committed while it ran. The log then grows
//! without end (1.1 GB in half a minute of gateway load), and every commit appends to the file
//! instead of overwriting it, which costs a slower fsync. So the checkpointer chases the writer:
//! after a pass that copied every frame it saw, it runs the next one at once — each pass has
//! only what was committed during the one before to copy, so they get shorter — and once a
//! pass was short, it hands the tail (what was committed during that short pass) to the
//! writer and waits: between two batches the writer copies those few frames itself (nothing is
//! committed meanwhile, so the copy completes), and its next commit starts the log over. A log
//! that grew long meanwhile is cut back to [`WAL_KEEP_BYTES`] when it starts over.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::{Row, SqlitePool};

/// How often the checkpointer looks at the log when it is not chasing the writer.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// A pass this short leaves a tail (what was committed while it ran) that the writer copies
/// between two batches without a pause anyone notices.
const SHORT_PASS: Duration = Duration::from_millis(5);

/// Passes run back to back before the checkpointer waits again: a writer faster than the
/// copy is chased a while, not forever.
const MAX_CHASE: usize = 16;

/// What the log file is cut back to when it starts over (`journal_size_limit`).
pub(super) const WAL_KEEP_BYTES: i64 = 64 << 20;

/// Set by the checkpointer when the writer should copy the rest of the log.
#[derive(Default)]
pub(super) struct WalTail(AtomicBool);

impl WalTail {
    /// Whether the writer should checkpoint now; asking clears the request.
    pub(super) fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }

    fn hand_over(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Handed over and not yet taken: the checkpointer stays out of the writer's way (two
    /// checkpoints at once would leave the writer's busy, and the log unfinished).
    fn pending(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// What to do after a pass that found `log` frames, copied `copied` of them, in `took`.
#[derive(Debug, PartialEq)]
enum Next {
    /// Nothing to copy, or readers hold frames: look again at the next tick.
    Wait,
    /// Everything seen was copied, slowly: the writer committed meanwhile; copy that at once.
    Chase,
    /// Everything seen was copied, quickly: the writer finishes the short rest.
    HandOver,
}

fn next(log: i64, copied: i64, took: Duration) -> Next {
    if log <= 0 || copied < log {
        Next::Wait
    } else if took <= SHORT_PASS {
        Next::HandOver
    } else {
        Next::Chase
    }
}

/// Runs passive checkpoints on a pooled connection until dropped.
pub(super) struct WalCheckpointer(tokio::task::JoinHandle<()>);

impl WalCheckpointer {
    pub(super) fn start(pool: SqlitePool, tail: Arc<WalTail>) -> WalCheckpointer {
        WalCheckpointer(tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if pool.is_closed() {
                    break;
                }
                for _ in 0..MAX_CHASE {
                    if tail.pending() {
                        break;
                    }
                    let started = Instant::now();
                    // One row: busy, frames in the log, frames copied into the database file.
                    let row = match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                        .fetch_one(&pool)
                        .await
                    {
                        Ok(row) => row,
                        Err(e) => {
                            tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
                            break;
                        }
                    };
                    let (log, copied) = (row.get::<i64, _>(1), row.get::<i64, _>(2));
                    match next(log, copied, started.elapsed()) {
                        Next::Wait => break,
                        Next::Chase => continue,
                        Next::HandOver => {
                            tail.hand_over();
                            break;
                        }
                    }
                }
            }
        }))
    }
}

impl Drop for WalCheckpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_passes_hand_over_slow_ones_chase() {
        let ms = Duration::from_millis;
        // Nothing in the log (or not in WAL mode): nothing to do.
        assert_eq!(next(0, 0, ms(0)), Next::Wait);
        assert_eq!(next(-1, -1, ms(0)), Next::Wait);
        // A reader holds frames: the writer could not finish either.
        assert_eq!(next(500, 400, ms(1)), Next::Wait);
        // Everything copied, but it took a while: the writer committed meanwhile.
        assert_eq!(next(500, 500, ms(40)), Next::Chase);
        // Everything copied quickly: the rest is short.
        assert_eq!(next(500, 500, ms(2)), Next::HandOver);
    }
}
