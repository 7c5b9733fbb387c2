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

/// The columns the outbox query selects, in the order the backends decode them.
pub(crate) const COLUMNS: &str = "seq, id, time_us, namespace, event_type, principal, agent, \
     on_behalf_of, session, action, resource_type, resource_id, outcome, header, payload";
