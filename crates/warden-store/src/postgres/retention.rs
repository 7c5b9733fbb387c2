//! Retention rules, legal holds and retention runs on PostgreSQL (see [`crate::retention`]).

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;
use warden_audit::merkle::Hash;
use warden_core::retention::{LegalHold, RetentionRule, SeqRange};
use warden_core::{Error, NamespacePath, Result, TenantId};

use super::{db_err, from_us, us};
use crate::retention::RetentionCandidate;

fn rule_from_row(r: &PgRow) -> Result<RetentionRule> {
    Ok(RetentionRule {
        tenant: TenantId::parse(r.get::<&str, _>("tenant"))?,
        namespace: NamespacePath::parse(r.get::<&str, _>("namespace"))?,
        payload_days: r.get::<Option<i64>, _>("payload_days").map(|d| d as u32),
        header_days: r.get::<Option<i64>, _>("header_days").map(|d| d as u32),
        updated_by: r.get("updated_by"),
        updated_at: from_us(r.get("updated_us")),
    })
}

fn hold_from_row(r: &PgRow) -> Result<LegalHold> {
    let id: &str = r.get("id");
    Ok(LegalHold {
        id: Uuid::parse_str(id).map_err(|e| Error::internal(format!("stored hold id: {e}")))?,
        tenant: TenantId::parse(r.get::<&str, _>("tenant"))?,
        namespace: r
            .get::<Option<&str>, _>("namespace")
            .map(NamespacePath::parse)
            .transpose()?,
        from: r.get::<Option<i64>, _>("from_us").map(from_us),
        to: r.get::<Option<i64>, _>("to_us").map(from_us),
        reason: r.get("reason"),
        created_by: r.get("created_by"),
        created_at: from_us(r.get("created_us")),
        released_by: r.get("released_by"),
        released_reason: r.get("released_reason"),
        released_at: r.get::<Option<i64>, _>("released_us").map(from_us),
    })
}

pub(super) async fn rules(pool: &PgPool, tenant: &TenantId) -> Result<Vec<RetentionRule>> {
    let rows = sqlx::query("SELECT * FROM retention_rules WHERE tenant = $1 ORDER BY namespace")
        .bind(tenant.as_str())
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    rows.iter().map(rule_from_row).collect()
}

async fn rule(
    conn: &mut sqlx::PgConnection,
    tenant: &TenantId,
    ns: &NamespacePath,
) -> Result<Option<RetentionRule>> {
    let row = sqlx::query("SELECT * FROM retention_rules WHERE tenant = $1 AND namespace = $2")
        .bind(tenant.as_str())
        .bind(ns.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    row.as_ref().map(rule_from_row).transpose()
}

pub(super) async fn put_rule(pool: &PgPool, r: &RetentionRule) -> Result<Option<RetentionRule>> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    lock_tenant(&mut tx, &r.tenant).await?;
    let before = rule(&mut tx, &r.tenant, &r.namespace).await?;
    sqlx::query(
        "INSERT INTO retention_rules (tenant, namespace, payload_days, header_days, updated_by, updated_us) \
         VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (tenant, namespace) DO UPDATE SET \
         payload_days = excluded.payload_days, header_days = excluded.header_days, \
         updated_by = excluded.updated_by, updated_us = excluded.updated_us",
    )
    .bind(r.tenant.as_str())
    .bind(r.namespace.as_str())
    .bind(r.payload_days.map(i64::from))
    .bind(r.header_days.map(i64::from))
    .bind(&r.updated_by)
    .bind(us(r.updated_at))
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    Ok(before)
}

pub(super) async fn delete_rule(
    pool: &PgPool,
    tenant: &TenantId,
    ns: &NamespacePath,
) -> Result<Option<RetentionRule>> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    lock_tenant(&mut tx, tenant).await?;
    let before = rule(&mut tx, tenant, ns).await?;
    sqlx::query("DELETE FROM retention_rules WHERE tenant = $1 AND namespace = $2")
        .bind(tenant.as_str())
        .bind(ns.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    Ok(before)
}

pub(super) async fn holds(pool: &PgPool, tenant: &TenantId) -> Result<Vec<LegalHold>> {
    let rows = sqlx::query("SELECT * FROM legal_holds WHERE tenant = $1 ORDER BY created_us, id")
        .bind(tenant.as_str())
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    rows.iter().map(hold_from_row).collect()
}

pub(super) async fn place_hold(pool: &PgPool, h: &LegalHold) -> Result<()> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    lock_tenant(&mut tx, &h.tenant).await?;
    sqlx::query(
        "INSERT INTO legal_holds (id, tenant, namespace, from_us, to_us, reason, created_by, created_us) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
    )
    .bind(h.id.to_string())
    .bind(h.tenant.as_str())
    .bind(h.namespace.as_ref().map(|n| n.as_str().to_owned()))
    .bind(h.from.map(us))
    .bind(h.to.map(us))
    .bind(&h.reason)
    .bind(&h.created_by)
    .bind(us(h.created_at))
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    tx.commit().await.map_err(db_err)
}

pub(super) async fn release_hold(
    pool: &PgPool,
    tenant: &TenantId,
    id: Uuid,
    by: &str,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<Option<LegalHold>> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    lock_tenant(&mut tx, tenant).await?;
    let row = sqlx::query("SELECT * FROM legal_holds WHERE tenant = $1 AND id = $2")
        .bind(tenant.as_str())
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
    let Some(mut hold) = row.as_ref().map(hold_from_row).transpose()? else {
        return Ok(None);
    };
    if !hold.is_active() {
        return Err(Error::Conflict(format!(
            "legal hold {id} was already released"
        )));
    }
    sqlx::query(
        "UPDATE legal_holds SET released_by = $1, released_reason = $2, released_us = $3 WHERE tenant = $4 AND id = $5",
    )
    .bind(by)
    .bind(reason)
    .bind(us(at))
    .bind(tenant.as_str())
    .bind(id.to_string())
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    hold.released_by = Some(by.to_owned());
    hold.released_reason = Some(reason.to_owned());
    hold.released_at = Some(at);
    Ok(Some(hold))
}

pub(super) async fn tenants(pool: &PgPool) -> Result<Vec<TenantId>> {
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT tenant FROM retention_rules ORDER BY 1")
            .fetch_all(pool)
            .await
            .map_err(db_err)?;
    rows.iter().map(|t| TenantId::parse(t)).collect()
}

pub(super) async fn candidates(
    pool: &PgPool,
    tenant: &TenantId,
    before: DateTime<Utc>,
    after: Option<u64>,
    limit: u32,
) -> Result<Vec<RetentionCandidate>> {
    let rows = sqlx::query(
        "SELECT seq, namespace, time_us, event_type, payload IS NOT NULL AS present FROM audit_events \
         WHERE tenant = $1 AND time_us < $2 AND seq > $3 ORDER BY seq LIMIT $4",
    )
    .bind(tenant.as_str())
    .bind(us(before))
    .bind(after.map(|s| s as i64).unwrap_or(-1))
    .bind(limit as i64)
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    Ok(rows
        .iter()
        .map(|r| RetentionCandidate {
            seq: r.get::<i64, _>("seq") as u64,
            namespace: r.get("namespace"),
            time: from_us(r.get("time_us")),
            event_type: r.get("event_type"),
            payload_present: r.get::<bool, _>("present"),
        })
        .collect())
}

pub(super) async fn apply_ranges(
    pool: &PgPool,
    tenant: &TenantId,
    purge: &[SeqRange],
    delete: &[SeqRange],
    holds: &[Uuid],
) -> Result<(u64, u64)> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    // Placing a hold takes the same lock: none can appear between the check and the deletions.
    lock_tenant(&mut tx, tenant).await?;
    let mut active: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM legal_holds WHERE tenant = $1 AND released_us IS NULL ORDER BY id",
    )
    .bind(tenant.as_str())
    .fetch_all(&mut *tx)
    .await
    .map_err(db_err)?;
    active.sort();
    let mut planned: Vec<String> = holds.iter().map(Uuid::to_string).collect();
    planned.sort();
    if active != planned {
        return Err(Error::Conflict(
            "legal holds changed while retention was planned; nothing was removed, run it again"
                .into(),
        ));
    }
    let (mut purged, mut deleted) = (0u64, 0u64);
    for [a, b] in purge {
        purged += sqlx::query(
            "UPDATE audit_events SET payload = NULL WHERE tenant = $1 AND seq >= $2 AND seq <= $3 AND payload IS NOT NULL",
        )
        .bind(tenant.as_str())
        .bind(*a as i64)
        .bind(*b as i64)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected();
    }
    for [a, b] in delete {
        sqlx::query(
            "INSERT INTO audit_expired_leaves (tenant, seq, leaf_hash) \
             SELECT tenant, seq, leaf_hash FROM audit_events WHERE tenant = $1 AND seq >= $2 AND seq <= $3 \
             ON CONFLICT (tenant, seq) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(*a as i64)
        .bind(*b as i64)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        deleted +=
            sqlx::query("DELETE FROM audit_events WHERE tenant = $1 AND seq >= $2 AND seq <= $3")
                .bind(tenant.as_str())
                .bind(*a as i64)
                .bind(*b as i64)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
    }
    tx.commit().await.map_err(db_err)?;
    Ok((purged, deleted))
}

pub(super) async fn expired_leaves(
    pool: &PgPool,
    tenant: &TenantId,
    from_seq: u64,
    limit: u32,
) -> Result<Vec<(u64, Hash)>> {
    let rows = sqlx::query(
        "SELECT seq, leaf_hash FROM audit_expired_leaves WHERE tenant = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
    )
    .bind(tenant.as_str())
    .bind(from_seq as i64)
    .bind(limit as i64)
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    rows.iter()
        .map(|r| {
            Ok((
                r.get::<i64, _>("seq") as u64,
                r.get::<&[u8], _>("leaf_hash")
                    .try_into()
                    .map_err(|_| Error::internal("stored hash is not 32 bytes"))?,
            ))
        })
        .collect()
}

/// Serialises retention runs, hold placements and releases of one tenant (transaction-scoped
/// advisory lock), so that no hold appears between a run's check and its deletions.
async fn lock_tenant(tx: &mut sqlx::PgConnection, tenant: &TenantId) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("warden.retention.{tenant}"))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    Ok(())
}
