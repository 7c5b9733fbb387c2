//! Recorded decisions for policy simulation, read straight from `audit_events`.
//!
//! Pages follow the time index `(tenant, time_us)` in (time, seq) order with a keyset cursor
//! that starts each page's index range at the previous page's last time, so every page costs
//! the same however deep into the window it is. Paging by `seq` instead would make SQLite
//! choose between scanning the log from the cursor (events outside the window included) and
//! sorting the whole window for every page.

use sqlx::{QueryBuilder, Row, Sqlite};
use warden_core::{Result, TenantId};

use super::{SqliteStore, db_err, us};
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
    let from = us(window.from);
    let lower = after.map_or(from, |c| c.time_us.max(from));
    let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
        "SELECT seq, id, time_us, namespace, outcome, header, payload \
         FROM audit_events WHERE tenant = ",
    );
    qb.push_bind(tenant.as_str().to_owned());
    qb.push(" AND time_us >= ").push_bind(lower);
    qb.push(" AND time_us < ").push_bind(us(window.to));
    if let Some(c) = after {
        qb.push(" AND (time_us > ")
            .push_bind(c.time_us)
            .push(" OR seq > ")
            .push_bind(c.seq as i64)
            .push(")");
    }
    if let Some(ns) = &window.namespace {
        // A subtree as a range, not LIKE ('_' is legal in names and a LIKE wildcard).
        qb.push(" AND (namespace = ")
            .push_bind(ns.as_str().to_owned())
            .push(" OR (namespace >= ")
            .push_bind(format!("{ns}/"))
            .push(" AND namespace < ")
            .push_bind(format!("{ns}0"))
            .push("))");
    }
    qb.push(" AND event_type IN (");
    let mut types = qb.separated(", ");
    for t in DECISION_EVENT_TYPES {
        types.push_bind(t);
    }
    qb.push(") ORDER BY time_us, seq LIMIT ")
        .push_bind(i64::from(limit));
    let rows = qb.build().fetch_all(store.pool()).await.map_err(db_err)?;
    let next = if rows.len() as u32 == limit {
        rows.last()
            .map(|r| -> Result<DecisionCursor> {
                Ok(DecisionCursor {
                    time_us: r.try_get("time_us").map_err(db_err)?,
                    seq: r.try_get::<i64, _>("seq").map_err(db_err)? as u64,
                })
            })
            .transpose()?
    } else {
        None
    };
    let mut decisions = Vec::with_capacity(rows.len());
    for r in &rows {
        decisions.push(RecordedDecision {
            seq: r.try_get::<i64, _>("seq").map_err(db_err)? as u64,
            time_us: r.try_get("time_us").map_err(db_err)?,
            id: r.try_get("id").map_err(db_err)?,
            namespace: r.try_get("namespace").map_err(db_err)?,
            outcome: r.try_get("outcome").map_err(db_err)?,
            header: r.try_get("header").map_err(db_err)?,
            payload: r.try_get("payload").map_err(db_err)?,
        });
    }
    Ok(DecisionPage { decisions, next })
}
