//! Reports answered from ClickHouse.
//!
//! Exactness: the table may hold an event twice until its parts merge (at-least-once
//! delivery), so a report counts distinct event ids per group (`uniqExact(id)`), not rows.
//! Every copy of an event is the same stored row sent again, so all copies fall in the same
//! group and count once. (`FINAL`, which collapses rows of the same sorting key as it reads,
//! gives the same answer, but merges the window's rows on one thread: about twice as slow
//! on a 30-day window.) The answer then equals the system of record's for the events
//! ClickHouse holds; [`crate::FeedStats::is_current`] says whether that is all of them.

use warden_core::TenantId;
use warden_store::usage::{UsageGroupBy, UsageQuery, UsageRow, fold_usage};

use crate::client::{ClickHouse, ClickHouseError, as_string, as_u64, quote};
use crate::schema::TABLE;

/// The group key's column.
fn column(g: UsageGroupBy) -> &'static str {
    match g {
        UsageGroupBy::Agent => "agent",
        UsageGroupBy::Tool => "tool",
        UsageGroupBy::User => "user",
        UsageGroupBy::Namespace => "namespace",
        UsageGroupBy::Outcome => "outcome",
    }
}

/// The usage report's statement.
pub fn usage_sql(ch: &ClickHouse, tenant: &TenantId, q: &UsageQuery) -> String {
    let from_us = q.from.timestamp_micros();
    let to_us = q.to.timestamp_micros();
    // `time` (seconds) bounds the partitions and the primary key; `time_us` makes the bounds
    // exact to the microsecond, as the system of record applies them.
    let mut sql = format!(
        "SELECT {key} AS k, outcome, uniqExact(id) AS n FROM {table} \
         WHERE tenant = {tenant} \
         AND time >= toDateTime({from_s}, 'UTC') AND time <= toDateTime({to_s}, 'UTC') \
         AND time_us >= {from_us} AND time_us < {to_us} AND outcome != ''",
        key = column(q.group_by),
        table = ch.table(TABLE),
        tenant = quote(tenant.as_str()),
        from_s = q.from.timestamp(),
        to_s = q.to.timestamp(),
    );
    if let Some(ns) = &q.namespace {
        // The subtree as a key range, as the system of record does it.
        sql.push_str(&format!(
            " AND (namespace = {} OR (namespace >= {} AND namespace < {}))",
            quote(ns.as_str()),
            quote(&format!("{ns}/")),
            quote(&format!("{ns}0"))
        ));
    }
    sql.push_str(" GROUP BY k, outcome");
    sql
}

/// Decisions of the tenant in the window, by outcome per group, from ClickHouse.
pub async fn usage(
    ch: &ClickHouse,
    tenant: &TenantId,
    q: &UsageQuery,
) -> Result<Vec<UsageRow>, ClickHouseError> {
    let rows = ch.rows(&usage_sql(ch, tenant, q)).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        match (
            r.first().and_then(as_string),
            r.get(1).and_then(as_string),
            r.get(2).and_then(as_u64),
        ) {
            (Some(k), Some(o), Some(n)) => out.push((k, o, n)),
            _ => return Err(ClickHouseError::Answer(format!("unexpected row {r:?}"))),
        }
    }
    Ok(fold_usage(out))
}
