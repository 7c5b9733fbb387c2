//! Bulk reads on SQLite through the C library directly, for the readers that go through the
//! log by the million: policy simulation and the outbox (analytics feeder, destinations).
//!
//! sqlx runs every SQLite connection on a worker thread of its own and hands each row over a
//! channel; for wide rows read by the thousand that costs several µs per row — more than
//! SQLite takes to produce it, and more than deciding a recorded request again. Here a page is
//! read on a blocking thread with a prepared statement, rows copied straight into the result.
//!
//! The connections are read-only and separate from the pool: in WAL mode a reader sees the
//! last committed state and never blocks the writer. Each call is one statement, so one read
//! transaction: a page is a consistent snapshot, as it is through sqlx.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use warden_core::{Error, Result};

/// Idle connections kept for the next read; one per concurrent bulk reader is enough.
const IDLE_KEPT: usize = 4;

pub(crate) struct Reader {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

impl Reader {
    pub(crate) fn new(path: &Path, busy_timeout: Duration) -> Arc<Reader> {
        Arc::new(Reader {
            path: path.to_owned(),
            busy_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Runs `read` on a blocking thread with a read-only connection of its own.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = me.take()?;
            let out = read(&conn).map_err(|e| read_err(&e));
            if out.is_ok() {
                me.put(conn);
            }
            out
        })
        .await
        .map_err(|e| Error::internal(format!("a database read stopped: {e}")))?
    }

    fn take(&self) -> Result<Connection> {
        if let Some(c) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(c);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| {
            Error::unavailable(
                format!("cannot open database {}: {e}", self.path.display()),
                Some(Duration::from_secs(1)),
            )
        })?;
        conn.busy_timeout(self.busy_timeout)
            .map_err(|e| read_err(&e))?;
        // The same page cache as the pool's connections: a page of wide rows spans many
        // database pages, and the indexes walked to reach them stay warm between pages.
        conn.pragma_update(None, "cache_size", -16384)
            .map_err(|e| read_err(&e))?;
        conn.set_prepared_statement_cache_capacity(16);
        Ok(conn)
    }

    fn put(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_KEPT {
            idle.push(conn);
        }
    }
}

/// As the pool's errors: the caller cannot be answered now (503), nothing is half done.
fn read_err(e: &rusqlite::Error) -> Error {
    Error::unavailable(
        format!("the system of record cannot be read: {e}"),
        Some(Duration::from_secs(1)),
    )
}
