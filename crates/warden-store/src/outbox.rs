//! The audit log read as an outbox: each tenant's events in log order, as stored — the query
//! columns and the header and payload texts, nothing parsed — for consumers that copy the log
//! elsewhere (the analytics feeder) and need no `AuditEvent`.

use warden_audit::index::IndexedColumns;
use warden_core::{Result, TenantId};

use crate::Store;

/// One stored event, unparsed.
#[derive(Clone, Debug)]
pub struct OutboxRow {
    pub seq: u64,
    pub columns: IndexedColumns,
    /// The canonical header JSON, as the Merkle leaf commits to it.
    pub header: String,
    /// The redacted payload JSON; `None` once purged.
    pub payload: Option<String>,
}

/// [`Store::outbox_rows`] through [`Store::events_in_order`], for a store without a faster way.
pub async fn by_events<S: Store + ?Sized>(
    store: &S,
    tenant: &TenantId,
    from_seq: u64,
    limit: u32,
) -> Result<Vec<OutboxRow>> {
    Ok(store
        .events_in_order(tenant, from_seq, limit)
        .await?
        .into_iter()
        .map(|e| OutboxRow {
            seq: e.seq,
            columns: e.columns,
            header: e.header_json,
            payload: e.payload_json,
        })
        .collect())
}

/// The columns the outbox query selects, in the order [`outbox_row!`] reads them.
pub(crate) const COLUMNS: &str = "seq, id, time_us, namespace, event_type, principal, agent, \
     on_behalf_of, session, action, resource_type, resource_id, outcome, header, payload";

/// An [`OutboxRow`] from a row of the outbox query. A macro, not a function: the backends' row
/// types differ, the columns and their decoding do not; `db_err` is the calling backend's.
/// Columns are read by position ([`COLUMNS`]' order): by name, each of the 15 would be a
/// lookup per row, and the outbox is read by the million.
macro_rules! outbox_row {
    ($r:expr) => {{
        let r = $r;
        Ok($crate::outbox::OutboxRow {
            seq: r.try_get::<i64, _>(0).map_err(db_err)? as u64,
            columns: warden_audit::index::IndexedColumns {
                id: uuid::Uuid::parse_str(r.try_get::<&str, _>(1).map_err(db_err)?)
                    .map_err(|e| warden_core::Error::internal(format!("stored id: {e}")))?,
                time_micros: r.try_get(2).map_err(db_err)?,
                namespace: r.try_get(3).map_err(db_err)?,
                event_type: r.try_get(4).map_err(db_err)?,
                principal: r.try_get(5).map_err(db_err)?,
                agent: r.try_get(6).map_err(db_err)?,
                on_behalf_of: r.try_get(7).map_err(db_err)?,
                session: r.try_get(8).map_err(db_err)?,
                action: r.try_get(9).map_err(db_err)?,
                resource_type: r.try_get(10).map_err(db_err)?,
                resource_id: r.try_get(11).map_err(db_err)?,
                outcome: r.try_get(12).map_err(db_err)?,
            },
            header: r.try_get(13).map_err(db_err)?,
            payload: r.try_get(14).map_err(db_err)?,
        })
    }};
}
pub(crate) use outbox_row;
