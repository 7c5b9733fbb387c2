//! The usage report in SQL on SQLite: one grouped scan of the tenant's decisions in the window
//! (the `(tenant, time_us)` index bounds it).

use sqlx::{QueryBuilder, Row, Sqlite};
use warden_core::{Result, TenantId};

use super::{SqliteStore, db_err, us};
use crate::usage::{UsageQuery, UsageRow, fold_usage};

pub(super) async fn report(
    store: &SqliteStore,
    tenant: &TenantId,
    q: &UsageQuery,
) -> Result<Vec<UsageRow>> {
    let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
        "SELECT {} AS k, outcome, COUNT(*) AS n FROM audit_events WHERE tenant = ",
        q.group_by.store_sql()
    ));
    qb.push_bind(tenant.as_str().to_owned());
    qb.push(" AND time_us >= ").push_bind(us(q.from));
    qb.push(" AND time_us < ").push_bind(us(q.to));
    qb.push(" AND outcome IS NOT NULL");
    if let Some(ns) = &q.namespace {
        // Subtree as a range, not LIKE: '_' is legal in namespace names and a LIKE wildcard.
        qb.push(" AND (namespace = ")
            .push_bind(ns.as_str().to_owned());
        qb.push(" OR (namespace >= ").push_bind(format!("{ns}/"));
        qb.push(" AND namespace < ")
            .push_bind(format!("{ns}0"))
            .push("))");
    }
    qb.push(" GROUP BY k, outcome");
    let rows = qb.build().fetch_all(&store.pool).await.map_err(db_err)?;
    Ok(fold_usage(rows.iter().map(|r| {
        (
            r.get::<String, _>("k"),
            r.get::<String, _>("outcome"),
            r.get::<i64, _>("n") as u64,
        )
    })))
}
