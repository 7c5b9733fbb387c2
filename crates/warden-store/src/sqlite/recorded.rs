//! Recorded decisions for policy simulation, read straight from `audit_events`.
//!
//! Pages follow the time index `(tenant, time_us)` in (time, seq) order with a keyset cursor
//! that starts each page's index range at the previous page's last time, so every page costs
//! the same however deep into the window it is. Paging by `seq` instead would make SQLite
//! choose between scanning the log from the cursor (events outside the window included) and
//! sorting the whole window for every page. A simulation reads millions of rows, so pages go
//! through the direct [`Reader`](super::reader::Reader), not sqlx.

use rusqlite::types::Value;
use warden_core::{Result, TenantId};

use super::{SqliteStore, us};
use crate::recorded::{
    DECISION_EVENT_TYPES, DecisionCursor, DecisionPage, DecisionWindow, RecordedDecision,
};

pub(super) async fn decisions(
    store: &SqliteStore,
    tenant: &TenantId,
    window: &DecisionWindow,
    after: Option<DecisionCursor>,
    limit: u32,
) -> Result<DecisionPage> {
    let (sql, params) = query(tenant, window, after, limit);
    let decisions = store
        .reader
        .read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
            let mut out = Vec::with_capacity(crate::page_capacity(limit));
            while let Some(r) = rows.next()? {
                out.push(RecordedDecision {
                    seq: r.get::<_, i64>(0)? as u64,
                    id: r.get(1)?,
                    time_us: r.get(2)?,
                    namespace: r.get(3)?,
                    outcome: r.get(4)?,
                    header: r.get(5)?,
                    payload: r.get(6)?,
                });
            }
            Ok(out)
        })
        .await?;
    let next = (decisions.len() as u32 == limit)
        .then(|| decisions.last())
        .flatten()
        .map(|d| DecisionCursor {
            time_us: d.time_us,
            seq: d.seq,
        });
    Ok(DecisionPage { decisions, next })
}

/// The page's statement and its parameters, in order.
fn query(
    tenant: &TenantId,
    window: &DecisionWindow,
    after: Option<DecisionCursor>,
    limit: u32,
) -> (String, Vec<Value>) {
    let from = us(window.from);
    let lower = after.map_or(from, |c| c.time_us.max(from));
    let mut sql = String::from(
        "SELECT seq, id, time_us, namespace, outcome, header, payload \
         FROM audit_events WHERE tenant = ? AND time_us >= ? AND time_us < ?",
    );
    let mut params = vec![
        Value::Text(tenant.as_str().to_owned()),
        Value::Integer(lower),
        Value::Integer(us(window.to)),
    ];
    if let Some(c) = after {
        sql.push_str(" AND (time_us > ? OR seq > ?)");
        params.push(Value::Integer(c.time_us));
        params.push(Value::Integer(c.seq as i64));
    }
    if let Some(ns) = &window.namespace {
        // A subtree as a range, not LIKE ('_' is legal in names and a LIKE wildcard).
        sql.push_str(" AND (namespace = ? OR (namespace >= ? AND namespace < ?))");
        params.push(Value::Text(ns.as_str().to_owned()));
        params.push(Value::Text(format!("{ns}/")));
        params.push(Value::Text(format!("{ns}0")));
    }
    sql.push_str(" AND event_type IN (");
    for (i, t) in DECISION_EVENT_TYPES.iter().enumerate() {
        sql.push_str(if i == 0 { "?" } else { ", ?" });
        params.push(Value::Text((*t).to_owned()));
    }
    sql.push_str(") ORDER BY time_us, seq LIMIT ?");
    params.push(Value::Integer(i64::from(limit)));
    (sql, params)
}
