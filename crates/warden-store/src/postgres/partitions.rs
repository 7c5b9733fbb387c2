//! The audit table's monthly partitions, created ahead of time.
//!
//! `audit_events` is partitioned by month of the event's time. A default partition catches
//! any event whose month has no partition of its own, so an append never fails for want of
//! one; but events in the default partition cannot be dropped by month, so every node creates
//! the coming months' partitions when it connects and again periodically
//! (`warden_create_audit_partitions`, migration 0001).
//!
//! Retention deletes expired rows tenant by tenant (each tenant has its own rules and holds,
//! and a partition holds every tenant's events). Once a past month's partition is empty — no
//! tenant keeps anything in it — the retention run detaches and drops it
//! ([`drop_emptied`]): its space goes back at once instead of waiting for vacuum, and the
//! table has one partition fewer to plan over. An event that later arrives with a time in
//! that month lands in the default partition.

use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
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

/// Drops every monthly partition that lies wholly before the month of `now` and holds no
/// row; returns the dropped partitions' names, oldest first. Each is checked and dropped
/// under an exclusive lock, so a row written meanwhile keeps its partition.
pub(crate) async fn drop_emptied(pool: &PgPool, now: DateTime<Utc>) -> Result<Vec<String>> {
    let current = format!("audit_events_{:04}{:02}", now.year(), now.month());
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid \
         JOIN pg_class p ON p.oid = i.inhparent \
         WHERE p.relname = 'audit_events' AND c.relname ~ '^audit_events_[0-9]{6}$' \
         ORDER BY c.relname",
    )
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    let mut dropped = Vec::new();
    // Names sort by month; only months before the current one are candidates.
    for name in names.into_iter().filter(|n| *n < current) {
        let mut tx = pool.begin().await.map_err(db_err)?;
        // The name matched `audit_events_[0-9]{6}` above: safe to splice into the statement.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE"
        )))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let empty: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT NOT EXISTS (SELECT 1 FROM {name})"
        )))
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        if !empty {
            tx.rollback().await.map_err(db_err)?;
            continue;
        }
        for sql in [
            format!("ALTER TABLE audit_events DETACH PARTITION {name}"),
            format!("DROP TABLE {name}"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        tracing::info!(partition = %name, "dropped an audit partition retention emptied");
        dropped.push(name);
    }
    Ok(dropped)
}
