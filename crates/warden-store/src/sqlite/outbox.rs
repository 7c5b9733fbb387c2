//! The outbox read on SQLite: the log in order with nothing parsed (see [`crate::outbox`]).

use sqlx::Row;
use warden_audit::index::IndexedColumns;
use warden_core::{Error, Result, TenantId};

use super::{SqliteStore, db_err};
use crate::outbox::OutboxRow;

pub(super) async fn rows(
    store: &SqliteStore,
    tenant: &TenantId,
    from_seq: u64,
    limit: u32,
) -> Result<Vec<OutboxRow>> {
    let rows = sqlx::query(
        "SELECT seq, id, time_us, namespace, event_type, principal, agent, on_behalf_of, session, \
         action, resource_type, resource_id, outcome, header, payload \
         FROM audit_events WHERE tenant = ? AND seq >= ? ORDER BY seq LIMIT ?",
    )
    .bind(tenant.as_str())
    .bind(from_seq as i64)
    .bind(i64::from(limit))
    .fetch_all(&store.pool)
    .await
    .map_err(db_err)?;
    rows.iter()
        .map(|r| {
            Ok(OutboxRow {
                seq: r.try_get::<i64, _>("seq").map_err(db_err)? as u64,
                columns: IndexedColumns {
                    id: uuid::Uuid::parse_str(r.try_get::<&str, _>("id").map_err(db_err)?)
                        .map_err(|e| Error::internal(format!("stored id: {e}")))?,
                    time_micros: r.try_get("time_us").map_err(db_err)?,
                    namespace: r.try_get("namespace").map_err(db_err)?,
                    event_type: r.try_get("event_type").map_err(db_err)?,
                    principal: r.try_get("principal").map_err(db_err)?,
                    agent: r.try_get("agent").map_err(db_err)?,
                    on_behalf_of: r.try_get("on_behalf_of").map_err(db_err)?,
                    session: r.try_get("session").map_err(db_err)?,
                    action: r.try_get("action").map_err(db_err)?,
                    resource_type: r.try_get("resource_type").map_err(db_err)?,
                    resource_id: r.try_get("resource_id").map_err(db_err)?,
                    outcome: r.try_get("outcome").map_err(db_err)?,
                },
                header: r.try_get("header").map_err(db_err)?,
                payload: r.try_get("payload").map_err(db_err)?,
            })
        })
        .collect()
}
