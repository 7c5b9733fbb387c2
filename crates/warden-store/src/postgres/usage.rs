//! The usage report in SQL on PostgreSQL: one grouped scan of the tenant's decisions in the
//! window; the time bounds prune the monthly partitions and the `(tenant, time_us)` index
//! bounds the scan inside them.

use sqlx::{Postgres, QueryBuilder, Row};
use warden_core::{Result, TenantId};

use super::{PgStore, db_err, push_subtree, us};
use crate::usage::{UsageQuery, UsageRow, fold_usage};

pub(super) async fn report(
    store: &PgStore,
    tenant: &TenantId,
    q: &UsageQuery,
) -> Result<Vec<UsageRow>> {
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT {} AS k, outcome, COUNT(*) AS n FROM audit_events WHERE tenant = ",
        q.group_by.store_sql()
    ));
    qb.push_bind(tenant.as_str().to_owned());
    qb.push(" AND time_us >= ").push_bind(us(q.from));
    qb.push(" AND time_us < ").push_bind(us(q.to));
    qb.push(" AND outcome IS NOT NULL");
    if let Some(ns) = &q.namespace {
        push_subtree(&mut qb, "namespace", ns);
    }
    qb.push(" GROUP BY 1, 2");
    let rows = qb.build().fetch_all(&store.pool).await.map_err(db_err)?;
    Ok(fold_usage(rows.iter().map(|r| {
        (
            r.get::<String, _>("k"),
            r.get::<String, _>("outcome"),
            r.get::<i64, _>("n") as u64,
        )
    })))
}
