//! Recorded decisions as a policy simulation reads them: the decision events of a window, a
//! page at a time, with only the columns and texts a replay needs and nothing parsed.
//!
//! A simulation reads up to millions of events, and parsing every header and payload into an
//! `AuditEvent` (as [`Store::query_events`] does) would cost more than deciding them again.

use chrono::{DateTime, Utc};
use warden_core::{NamespacePath, Result, TenantId, catalog};

use crate::{EventFilter, PageRequest, Store};

/// The event types that record a decision with its whole request (see `docs/audit.md`).
pub const DECISION_EVENT_TYPES: [&str; 4] = [
    catalog::AUTHZ_DECISION,
    catalog::MCP_TOOL_CALL_DECIDED,
    catalog::MCP_RESOURCE_READ_DECIDED,
    catalog::MCP_PROMPT_GET_DECIDED,
];

/// Which recorded decisions: a time window, optionally one namespace subtree.
#[derive(Clone, Debug)]
pub struct DecisionWindow {
    /// Inclusive.
    pub from: DateTime<Utc>,
    /// Exclusive.
    pub to: DateTime<Utc>,
    /// The namespace and everything below it.
    pub namespace: Option<NamespacePath>,
}

/// Where the next page starts. Only meaningful to the store that returned it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecisionCursor {
    pub time_us: i64,
    pub seq: u64,
}

/// One recorded decision event, unparsed.
#[derive(Clone, Debug)]
pub struct RecordedDecision {
    pub seq: u64,
    pub time_us: i64,
    pub id: String,
    pub namespace: String,
    /// The recorded outcome column (`allow`, `deny`, `approval_required`).
    pub outcome: Option<String>,
    /// The canonical header JSON.
    pub header: String,
    /// The payload JSON; `None` once purged.
    pub payload: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct DecisionPage {
    pub decisions: Vec<RecordedDecision>,
    /// Pass it back for the next page; `None` when this was the last.
    pub next: Option<DecisionCursor>,
}

/// [`Store::recorded_decisions`] through [`Store::query_events`], for a store without a
/// faster way: pages by log position and keeps the decision events.
pub async fn by_query<S: Store + ?Sized>(
    store: &S,
    tenant: &TenantId,
    window: &DecisionWindow,
    after: Option<DecisionCursor>,
    limit: u32,
) -> Result<DecisionPage> {
    let filter = EventFilter {
        from: Some(window.from),
        to: Some(window.to),
        namespace: window.namespace.clone(),
        ..Default::default()
    };
    let page = PageRequest {
        after_seq: after.map(|c| c.seq),
        limit,
        oldest_first: true,
    };
    let rows = store.query_events(tenant, &filter, page).await?;
    let next = if rows.len() as u32 == limit {
        rows.last().map(|r| DecisionCursor {
            time_us: r.columns.time_micros,
            seq: r.seq,
        })
    } else {
        None
    };
    let decisions = rows
        .into_iter()
        .filter(|r| DECISION_EVENT_TYPES.contains(&r.columns.event_type.as_str()))
        .map(|r| RecordedDecision {
            seq: r.seq,
            time_us: r.columns.time_micros,
            id: r.columns.id.to_string(),
            namespace: r.columns.namespace,
            outcome: r.columns.outcome,
            header: r.header_json,
            payload: r.payload_json,
        })
        .collect();
    Ok(DecisionPage { decisions, next })
}
