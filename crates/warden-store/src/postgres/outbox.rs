//! The outbox read on PostgreSQL: the log in order with nothing parsed (see [`crate::outbox`]).
//!
//! A large read is split in two halves by `seq`, read at once on two pooled connections: one
//! backend streams and one client decodes at a time otherwise, and the analytics feeder
//! catching up on a backlog waits on exactly that.

use sqlx::Row;
use warden_core::{Result, TenantId};

use super::{PgStore, db_err};
use crate::outbox::{COLUMNS, OutboxRow, outbox_row};

/// Below this many rows a read is one query: two round trips would cost more than they save.
const SPLIT_AT: u32 = 4_000;

pub(super) async fn rows(
    store: &PgStore,
    tenant: &TenantId,
    from_seq: u64,
    limit: u32,
) -> Result<Vec<OutboxRow>> {
    if limit < SPLIT_AT {
        return read(store, tenant, from_seq, None, limit).await;
    }
    // The first half is every row with `seq` in [from, from + half): at most `half` of them,
    // fewer where retention deleted rows. The second continues at from + half. Together they
    // are a prefix of the log from `from_seq` in order, at most `limit` rows: what one query
    // would have returned, or a shorter page where the first range had gaps (a caller goes on
    // from the last row it got).
    let half = limit / 2;
    let middle = from_seq + u64::from(half);
    let (first, second) = tokio::join!(
        read(store, tenant, from_seq, Some(middle), half),
        read(store, tenant, middle, None, limit - half),
    );
    let mut rows = first?;
    rows.extend(second?);
    Ok(rows)
}

/// Rows with `from_seq <= seq < below` (no upper bound without `below`), in order, at most
/// `limit`.
async fn read(
    store: &PgStore,
    tenant: &TenantId,
    from_seq: u64,
    below: Option<u64>,
    limit: u32,
) -> Result<Vec<OutboxRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_events \
         WHERE tenant = $1 AND seq >= $2 AND seq < $3 ORDER BY seq LIMIT $4"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant.as_str())
        .bind(from_seq as i64)
        .bind(below.map_or(i64::MAX, |b| b as i64))
        .bind(i64::from(limit))
        .fetch_all(&store.pool)
        .await
        .map_err(db_err)?;
    rows.iter().map(|r| outbox_row!(r)).collect()
}
