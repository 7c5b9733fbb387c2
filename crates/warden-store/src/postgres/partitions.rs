//! The audit table's monthly partitions, created ahead of time.
//!
//! `audit_events` is partitioned by month of the event's time. A default partition catches
//! any event whose month has no partition of its own, so an append never fails for want of
//! one; but events in the default partition cannot be dropped by month, so every node creates
//! the coming months' partitions when it connects and again periodically
//! (`warden_create_audit_partitions`, migration 0001). Retention drops a month whose events
//! have all expired with `DROP TABLE audit_events_YYYYMM` (or `DETACH PARTITION` first, to
//! archive it) — a metadata change, not a delete of every row.

use std::time::Duration;

use sqlx::PgPool;
use warden_core::Result;

use super::db_err;

/// Months created beyond the current one.
pub const PARTITION_MONTHS_AHEAD: i32 = 3;

/// How often each node checks that the coming months have their partitions.
pub const PARTITION_REFRESH: Duration = Duration::from_secs(6 * 3600);

/// Creates the partitions of this month and the next [`PARTITION_MONTHS_AHEAD`]; how many
/// were new.
pub(crate) async fn create_ahead(pool: &PgPool) -> Result<i32> {
    let created: i32 = sqlx::query_scalar("SELECT warden_create_audit_partitions($1)")
        .bind(PARTITION_MONTHS_AHEAD)
        .fetch_one(pool)
        .await
        .map_err(db_err)?;
    if created > 0 {
        tracing::info!(created, "created monthly audit partitions ahead");
    }
    Ok(created)
}

/// Runs [`create_ahead`] every [`PARTITION_REFRESH`] until dropped.
pub(crate) struct Maintainer(tokio::task::JoinHandle<()>);

impl Maintainer {
    pub(crate) fn start(pool: PgPool) -> Maintainer {
        Maintainer(tokio::spawn(async move {
            let mut tick = tokio::time::interval(PARTITION_REFRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate; connecting already did it
            loop {
                tick.tick().await;
                if pool.is_closed() {
                    break;
                }
                if let Err(e) = create_ahead(&pool).await {
                    tracing::warn!(error = %e, "creating audit partitions ahead failed; retrying later");
                }
            }
        }))
    }
}

impl Drop for Maintainer {
    fn drop(&mut self) {
        self.0.abort();
    }
}
