//! The outbox read on SQLite: the log in order with nothing parsed (see [`crate::outbox`]).

use sqlx::Row;
use warden_core::{Result, TenantId};

use super::{SqliteStore, db_err};
use crate::outbox::{COLUMNS, OutboxRow, outbox_row};

pub(super) async fn rows(
    store: &SqliteStore,
    tenant: &TenantId,
    from_seq: u64,
    limit: u32,
) -> Result<Vec<OutboxRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_events WHERE tenant = ? AND seq >= ? ORDER BY seq LIMIT ?"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant.as_str())
        .bind(from_seq as i64)
        .bind(i64::from(limit))
        .fetch_all(&store.pool)
        .await
        .map_err(db_err)?;
    rows.iter().map(|r| outbox_row!(r)).collect()
}
