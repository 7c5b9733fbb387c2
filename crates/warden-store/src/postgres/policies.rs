//! Policies in PostgreSQL: API-managed texts (one row per version of a namespace's text, kept
//! for the one-time import into bundles) and policy bundles (one row per version of a
//! tenant's whole set of files).

use chrono::Utc;
use sqlx::Row;
use sqlx::postgres::PgRow;
use warden_core::{Error, Result, TenantId};

use super::{PgStore, db_err, from_us, us};
use crate::model::{
    BundleVersion, NewBundleVersion, PolicyChange, PolicyVersion, decode_bundle_json,
};

fn policy_from_row(r: &PgRow) -> Result<PolicyVersion> {
    Ok(PolicyVersion {
        tenant: TenantId::parse(r.get::<&str, _>("tenant"))?,
        namespace: r.get("namespace"),
        version: r.get("version"),
        text: r.get("text"),
        sha256: r.get("sha256"),
        author: r.get("author"),
        message: r.get("message"),
        created_at: from_us(r.get("created_us")),
    })
}

pub(super) async fn put(store: &PgStore, c: PolicyChange) -> Result<PolicyVersion> {
    let mut tx = store.pool.begin().await.map_err(db_err)?;
    // Writers of one namespace take turns (a transaction-scoped advisory lock on it), so the
    // version read below is still the latest when the next one is inserted, and a stale
    // `expected_version` is refused with its reason rather than a key violation.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("warden.policy:{}:{}", c.tenant, c.namespace))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    let current: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(version) FROM policy_versions WHERE tenant = $1 AND namespace = $2",
    )
    .bind(c.tenant.as_str())
    .bind(c.namespace.as_str())
    .fetch_one(&mut *tx)
    .await
    .map_err(db_err)?;
    let current = current.unwrap_or(0);
    if let Some(expected) = c.expected_version
        && expected != current
    {
        return Err(Error::Conflict(format!(
            "policies of {} are at version {current}, not {expected}; reload and apply your change again",
            c.namespace
        )));
    }
    let v = PolicyVersion {
        tenant: c.tenant.clone(),
        namespace: c.namespace.as_str().to_owned(),
        version: current + 1,
        sha256: c
            .text
            .as_deref()
            .map(|t| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(t.as_bytes()))),
        text: c.text,
        author: c.author,
        message: c.message,
        created_at: from_us(us(Utc::now())),
    };
    sqlx::query(
        "INSERT INTO policy_versions (tenant, namespace, version, text, sha256, author, message, created_us) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
    )
    .bind(v.tenant.as_str())
    .bind(&v.namespace)
    .bind(v.version)
    .bind(&v.text)
    .bind(&v.sha256)
    .bind(&v.author)
    .bind(&v.message)
    .bind(us(v.created_at))
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    Ok(v)
}

pub(super) async fn current(store: &PgStore) -> Result<Vec<PolicyVersion>> {
    let rows = sqlx::query(
        "SELECT DISTINCT ON (tenant, namespace) * FROM policy_versions \
         ORDER BY tenant, namespace, version DESC",
    )
    .fetch_all(&store.pool)
    .await
    .map_err(db_err)?;
    rows.iter()
        .filter(|r| r.get::<Option<&str>, _>("text").is_some())
        .map(policy_from_row)
        .collect()
}

pub(super) async fn history(
    store: &PgStore,
    tenant: &TenantId,
    namespace: Option<&str>,
) -> Result<Vec<PolicyVersion>> {
    let rows = sqlx::query(
        "SELECT * FROM policy_versions WHERE tenant = $1 AND ($2::text IS NULL OR namespace = $2) \
         ORDER BY namespace, version DESC",
    )
    .bind(tenant.as_str())
    .bind(namespace)
    .fetch_all(&store.pool)
    .await
    .map_err(db_err)?;
    rows.iter().map(policy_from_row).collect()
}

fn bundle_from_row(r: &PgRow) -> Result<BundleVersion> {
    let tenant = TenantId::parse(r.get::<&str, _>("tenant"))?;
    let version: i64 = r.get("version");
    let (files, test_failures) =
        decode_bundle_json(&tenant, version, r.get("files"), r.get("test_failures"))?;
    Ok(BundleVersion {
        version,
        sha256: r.get("sha256"),
        files,
        mode: r.get("mode"),
        source: r.get("source"),
        author: r.get("author"),
        message: r.get("message"),
        test_failures,
        created_at: from_us(r.get("created_us")),
        tenant,
    })
}

pub(super) async fn append_bundle(store: &PgStore, b: NewBundleVersion) -> Result<BundleVersion> {
    let files = serde_json::to_string(&b.files)
        .map_err(|e| Error::internal(format!("bundle files: {e}")))?;
    let failures = b.test_failures.as_ref().map(|v| v.to_string());
    let mut tx = store.pool.begin().await.map_err(db_err)?;
    // Writers of one tenant's bundle take turns (on any node), so the version read below is
    // still the latest when the next one is inserted and a stale `expected_version` is refused
    // with its reason rather than a key violation.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("warden.bundle:{}", b.tenant))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    let current: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM policy_bundles WHERE tenant = $1")
            .bind(b.tenant.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
    let current = current.unwrap_or(0);
    b.check_base(current)?;
    let v = b.into_version(current + 1, from_us(us(Utc::now())));
    sqlx::query(
        "INSERT INTO policy_bundles (tenant, version, sha256, files, mode, source, author, message, \
         test_failures, created_us) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
    )
    .bind(v.tenant.as_str())
    .bind(v.version)
    .bind(&v.sha256)
    .bind(&files)
    .bind(&v.mode)
    .bind(&v.source)
    .bind(&v.author)
    .bind(&v.message)
    .bind(&failures)
    .bind(us(v.created_at))
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    Ok(v)
}

pub(super) async fn bundle(
    store: &PgStore,
    tenant: &TenantId,
    version: i64,
) -> Result<Option<BundleVersion>> {
    let row = sqlx::query("SELECT * FROM policy_bundles WHERE tenant = $1 AND version = $2")
        .bind(tenant.as_str())
        .bind(version)
        .fetch_optional(&store.pool)
        .await
        .map_err(db_err)?;
    row.as_ref().map(bundle_from_row).transpose()
}

pub(super) async fn bundles(store: &PgStore, tenant: &TenantId) -> Result<Vec<BundleVersion>> {
    let rows = sqlx::query("SELECT * FROM policy_bundles WHERE tenant = $1 ORDER BY version DESC")
        .bind(tenant.as_str())
        .fetch_all(&store.pool)
        .await
        .map_err(db_err)?;
    rows.iter().map(bundle_from_row).collect()
}

pub(super) async fn latest_bundles(store: &PgStore) -> Result<Vec<BundleVersion>> {
    let rows = sqlx::query(
        "SELECT DISTINCT ON (tenant) * FROM policy_bundles ORDER BY tenant, version DESC",
    )
    .fetch_all(&store.pool)
    .await
    .map_err(db_err)?;
    rows.iter().map(bundle_from_row).collect()
}

pub(super) async fn bundle_heads(store: &PgStore) -> Result<Vec<(TenantId, i64)>> {
    let rows = sqlx::query(
        "SELECT tenant, MAX(version) AS version FROM policy_bundles GROUP BY tenant ORDER BY tenant",
    )
    .fetch_all(&store.pool)
    .await
    .map_err(db_err)?;
    rows.iter()
        .map(|r| {
            Ok((
                TenantId::parse(r.get::<&str, _>("tenant"))?,
                r.get("version"),
            ))
        })
        .collect()
}
