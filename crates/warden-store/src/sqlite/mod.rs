//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`, so a committed
//! transaction is on disk before the commit returns — that is what "acknowledged" means.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use uuid::Uuid;
use warden_audit::index::IndexedColumns;
use warden_audit::merkle::{Hash, NodeId, node_hash};
use warden_core::event::EventHeader;
use warden_core::{
    Approval, ApprovalAnswer, ApprovalChannel, ApprovalStatus, AuditEvent, Error, NamespacePath,
    NewApproval, Result, Role, TenantId,
};

use crate::delivery::{
    DeadLetter, DeadLetterBatch, DeliveryStart, DeliveryState, LeaseKey, StoredDestination,
};
use crate::model::*;
use crate::numbering::{by_tenant, number};
use crate::registry::{
    AgentFilter, HistoryEntry, HistoryFilter, RegistryChange, RegistryRows, ServerFilter,
    StoredAgent, StoredServer, StoredTool, ToolFilter,
};
use crate::{STORED_NODE_MIN_LEVEL, Store};

mod appender;
mod events;
mod outbox;
mod reader;
mod recorded;
mod registry;
mod usage;
mod wal;
// Retention
mod retention;
// Delivery
mod delivery;
// Named leases
mod lease;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Rows per multi-row INSERT: 17 columns × 1,000 stays below SQLite's 32,766 variables.
const INSERT_CHUNK: usize = 512;

/// How many of `remaining` rows the next multi-row INSERT takes: the largest power of two, up
/// to [`INSERT_CHUNK`]. A statement's text depends on its row count and each new text is parsed
/// and planned again; with powers of two a handful of texts serve every batch size and stay in
/// the connection's statement cache.
fn statement_rows(remaining: usize) -> usize {
    debug_assert!(remaining > 0);
    let pow = 1usize << (usize::BITS - 1 - remaining.leading_zeros());
    pow.min(INSERT_CHUNK)
}

/// How long a write waits for another process's lock (the CLI, a backup) before failing.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The audit pipeline's writer: one connection on a thread of its own (see [`appender`]).
    appender: Arc<appender::Appender>,
    /// Bulk reads of the log (simulation, outbox) without sqlx's per-row hand-over.
    reader: Arc<reader::Reader>,
    /// Stops the WAL checkpointer when the last handle goes.
    _checkpointer: Arc<wal::WalCheckpointer>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        Self::open_with(path, DEFAULT_BUSY_TIMEOUT).await
    }

    /// As [`open`](Self::open), waiting at most `busy_timeout` for another writer's lock
    /// before a write fails (and the door answers 503).
    pub async fn open_with(path: &Path, busy_timeout: Duration) -> Result<SqliteStore> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|e| Error::internal(format!("bad database path {}: {e}", path.display())))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(busy_timeout)
            .foreign_keys(true)
            // Audit rows are 2–3 KB: with SQLite's default 4 KB pages most take a page of
            // their own and every one costs a WAL frame write. 16 KB pages hold several rows
            // each. (Only takes effect when the file is created.)
            .page_size(16384)
            // 16 MiB of page cache per connection instead of 2: the audit table's indexes
            // stay in memory instead of being read back from the file on every append.
            .pragma("cache_size", "-16384")
            // Checkpoints run beside the writer (see `wal`). A process that opens
            // the store briefly (the CLI) checkpoints when it closes the last connection.
            .pragma("wal_autocheckpoint", "0")
            // A log that grew long under load is cut back when it starts over (see `wal`).
            .pragma("journal_size_limit", wal::WAL_KEEP_BYTES.to_string());
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(opts.clone())
            .await
            .map_err(|e| {
                Error::unavailable(
                    format!("cannot open database {}: {e}", path.display()),
                    None,
                )
            })?;
        MIGRATOR.run(&pool).await.map_err(|e| {
            Error::internal(format!(
                "database migration failed for {}: {e}",
                path.display()
            ))
        })?;
        let tail = Arc::new(wal::WalTail::default());
        let appender = appender::Appender::open(path, busy_timeout, tail.clone())?;
        let checkpointer = Arc::new(wal::WalCheckpointer::start(pool.clone(), tail));
        Ok(SqliteStore {
            pool,
            appender: Arc::new(appender),
            reader: reader::Reader::new(path, busy_timeout),
            _checkpointer: checkpointer,
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The versions of the migrations this build applies, oldest first.
    pub fn migrations() -> Vec<i64> {
        MIGRATOR.iter().map(|m| m.version).collect()
    }
}

/// Any database failure makes the caller's request unanswerable now; the door turns it into
/// 503 so that nothing proceeds unrecorded.
fn db_err(e: sqlx::Error) -> Error {
    if let sqlx::Error::Database(db) = &e
        && db.is_unique_violation()
    {
        return Error::Conflict(format!("already exists: {}", db.message()));
    }
    Error::unavailable(
        format!("the system of record cannot be used: {e}"),
        Some(Duration::from_secs(1)),
    )
}

fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_us(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(v).unwrap_or_default()
}

fn hash_from(bytes: &[u8]) -> Result<Hash> {
    bytes
        .try_into()
        .map_err(|_| Error::internal("stored hash is not 32 bytes"))
}

fn token_from_row(r: &SqliteRow) -> Result<TokenRecord> {
    let role: String = r.get("role");
    let ns: Option<String> = r.get("namespace");
    Ok(TokenRecord {
        id: r.get("id"),
        tenant: TenantId::parse(r.get::<&str, _>("tenant"))?,
        secret_sha256: r.get("secret_sha256"),
        role: Role::parse(&role)
            .ok_or_else(|| Error::internal(format!("unknown stored role {role}")))?,
        agent: r.get("agent"),
        on_behalf_of: r.get("on_behalf_of"),
        namespace: ns.as_deref().map(NamespacePath::parse).transpose()?,
        description: r.get("description"),
        created_at: from_us(r.get("created_us")),
        expires_at: r.get::<Option<i64>, _>("expires_us").map(from_us),
        revoked_at: r.get::<Option<i64>, _>("revoked_us").map(from_us),
    })
}

fn policy_from_row(r: &SqliteRow) -> Result<PolicyVersion> {
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

fn bundle_from_row(r: &SqliteRow) -> Result<BundleVersion> {
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

fn approval_from_row(r: &SqliteRow) -> Result<Approval> {
    let id: &str = r.get("id");
    let bad = |what: &str| Error::internal(format!("stored approval {id}: {what}"));
    let status: &str = r.get("status");
    let via: Option<&str> = r.get("resolved_via");
    let decision_event: Option<&str> = r.get("decision_event");
    Ok(Approval {
        id: Uuid::parse_str(id).map_err(|e| bad(&format!("id: {e}")))?,
        tenant: r.get("tenant"),
        namespace: r.get("namespace"),
        session: r.get("session"),
        agent: r.get("agent"),
        on_behalf_of: r.get("on_behalf_of"),
        action: r.get("action"),
        resource_type: r.get("resource_type"),
        resource_id: r.get("resource_id"),
        args_sha256: r.get("args_sha256"),
        arguments: serde_json::from_str(r.get("arguments"))
            .map_err(|e| bad(&format!("arguments do not parse: {e}")))?,
        policies: serde_json::from_str(r.get("policies"))
            .map_err(|e| bad(&format!("policies do not parse: {e}")))?,
        reason: r.get("reason"),
        decision_event: decision_event
            .map(Uuid::parse_str)
            .transpose()
            .map_err(|e| bad(&format!("decision event: {e}")))?,
        status: ApprovalStatus::parse(status)
            .ok_or_else(|| bad(&format!("unknown status {status}")))?,
        requested_at: from_us(r.get("requested_us")),
        expires_at: from_us(r.get("expires_us")),
        resolved_by: r.get("resolved_by"),
        resolved_via: via
            .map(|v| ApprovalChannel::parse(v).ok_or_else(|| bad(&format!("unknown channel {v}"))))
            .transpose()?,
        resolved_at: r.get::<Option<i64>, _>("resolved_us").map(from_us),
        comment: r.get("comment"),
    })
}

pub(crate) fn event_from_row(r: &SqliteRow) -> Result<StoredEvent> {
    let header_json: String = r.get("header");
    let payload_json: Option<String> = r.get("payload");
    let header: EventHeader = serde_json::from_str(&header_json)
        .map_err(|e| Error::internal(format!("stored event header does not parse: {e}")))?;
    let payload = match &payload_json {
        Some(p) => serde_json::from_str(p)
            .map_err(|e| Error::internal(format!("stored payload does not parse: {e}")))?,
        None => serde_json::Value::Null,
    };
    let columns = IndexedColumns {
        id: uuid::Uuid::parse_str(r.get::<&str, _>("id"))
            .map_err(|e| Error::internal(format!("stored id: {e}")))?,
        time_micros: r.get("time_us"),
        namespace: r.get("namespace"),
        event_type: r.get("event_type"),
        principal: r.get("principal"),
        agent: r.get("agent"),
        on_behalf_of: r.get("on_behalf_of"),
        session: r.get("session"),
        action: r.get("action"),
        resource_type: r.get("resource_type"),
        resource_id: r.get("resource_id"),
        outcome: r.get("outcome"),
    };
    Ok(StoredEvent {
        seq: r.get::<i64, _>("seq") as u64,
        event: AuditEvent { header, payload },
        header_json,
        payload_json,
        leaf_hash: hash_from(r.get::<&[u8], _>("leaf_hash"))?,
        columns,
    })
}

pub(crate) const EVENT_COLUMNS: &str = "seq, id, time_us, namespace, event_type, principal, agent, on_behalf_of, session, \
     action, resource_type, resource_id, outcome, header, payload, leaf_hash";

#[async_trait]
impl Store for SqliteStore {
    async fn writable(&self) -> Result<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        sqlx::query("SELECT 1")
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.rollback().await.map_err(db_err)
    }

    async fn ensure_tenant(&self, tenant: &TenantId) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO tenants (id, created_us) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(us(Utc::now()))
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn insert_token(&self, t: &TokenRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO tokens (id, tenant, secret_sha256, role, agent, on_behalf_of, namespace, description, \
             created_us, expires_us, revoked_us) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        )
        .bind(&t.id)
        .bind(t.tenant.as_str())
        .bind(&t.secret_sha256)
        .bind(t.role.as_str())
        .bind(&t.agent)
        .bind(&t.on_behalf_of)
        .bind(t.namespace.as_ref().map(|n| n.as_str()))
        .bind(&t.description)
        .bind(us(t.created_at))
        .bind(t.expires_at.map(us))
        .bind(t.revoked_at.map(us))
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn token_by_secret_hash(&self, h: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query("SELECT * FROM tokens WHERE secret_sha256 = ?")
            .bind(h)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn list_tokens(&self, tenant: &TenantId) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query("SELECT * FROM tokens WHERE tenant = ? ORDER BY created_us")
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token(&self, tenant: &TenantId, id: &str) -> Result<Option<TokenRecord>> {
        sqlx::query(
            "UPDATE tokens SET revoked_us = COALESCE(revoked_us, ?) WHERE tenant = ? AND id = ?",
        )
        .bind(us(Utc::now()))
        .bind(tenant.as_str())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        let row = sqlx::query("SELECT * FROM tokens WHERE tenant = ? AND id = ?")
            .bind(tenant.as_str())
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn put_policy(&self, c: PolicyChange) -> Result<PolicyVersion> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let current: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(version) FROM policy_versions WHERE tenant = ? AND namespace = ?",
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
             VALUES (?,?,?,?,?,?,?,?)",
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

    async fn current_policies(&self) -> Result<Vec<PolicyVersion>> {
        let rows = sqlx::query(
            "SELECT p.* FROM policy_versions p JOIN (SELECT tenant, namespace, MAX(version) AS v FROM policy_versions \
             GROUP BY tenant, namespace) m ON p.tenant = m.tenant AND p.namespace = m.namespace AND p.version = m.v \
             WHERE p.text IS NOT NULL ORDER BY p.tenant, p.namespace",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(policy_from_row).collect()
    }

    async fn policy_history(
        &self,
        tenant: &TenantId,
        namespace: Option<&str>,
    ) -> Result<Vec<PolicyVersion>> {
        let rows = sqlx::query(
            "SELECT * FROM policy_versions WHERE tenant = ? AND (? IS NULL OR namespace = ?) \
             ORDER BY namespace, version DESC",
        )
        .bind(tenant.as_str())
        .bind(namespace)
        .bind(namespace)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(policy_from_row).collect()
    }

    async fn append_bundle_version(&self, b: NewBundleVersion) -> Result<BundleVersion> {
        let files = serde_json::to_string(&b.files)
            .map_err(|e| Error::internal(format!("bundle files: {e}")))?;
        let failures = b.test_failures.as_ref().map(|v| v.to_string());
        // BEGIN IMMEDIATE takes the write lock before reading the current version, so two
        // writers cannot both see the same version and both append after it.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let current: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM policy_bundles WHERE tenant = ?")
                .bind(b.tenant.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
        let current = current.unwrap_or(0);
        b.check_base(current)?;
        let v = b.into_version(current + 1, from_us(us(Utc::now())));
        sqlx::query(
            "INSERT INTO policy_bundles (tenant, version, sha256, files, mode, source, author, message, \
             test_failures, created_us) VALUES (?,?,?,?,?,?,?,?,?,?)",
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

    async fn bundle_version(
        &self,
        tenant: &TenantId,
        version: i64,
    ) -> Result<Option<BundleVersion>> {
        let row = sqlx::query("SELECT * FROM policy_bundles WHERE tenant = ? AND version = ?")
            .bind(tenant.as_str())
            .bind(version)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(bundle_from_row).transpose()
    }

    async fn bundle_versions(&self, tenant: &TenantId) -> Result<Vec<BundleVersion>> {
        let rows =
            sqlx::query("SELECT * FROM policy_bundles WHERE tenant = ? ORDER BY version DESC")
                .bind(tenant.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
        rows.iter().map(bundle_from_row).collect()
    }

    async fn latest_bundle_versions(&self) -> Result<Vec<BundleVersion>> {
        let rows = sqlx::query(
            "SELECT b.* FROM policy_bundles b JOIN (SELECT tenant, MAX(version) AS v FROM policy_bundles \
             GROUP BY tenant) m ON b.tenant = m.tenant AND b.version = m.v ORDER BY b.tenant",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(bundle_from_row).collect()
    }

    async fn bundle_heads(&self) -> Result<Vec<(TenantId, i64)>> {
        let rows = sqlx::query(
            "SELECT tenant, MAX(version) AS version FROM policy_bundles GROUP BY tenant ORDER BY tenant",
        )
        .fetch_all(&self.pool)
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

    async fn create_approval(&self, a: &NewApproval) -> Result<Approval> {
        let tenant = TenantId::parse(&a.tenant)?;
        let namespace = NamespacePath::parse(&a.namespace)?;
        if namespace.tenant() != tenant {
            return Err(Error::invalid(format!(
                "namespace {namespace} does not belong to tenant {tenant}"
            )));
        }
        // Stored with the precision of the column, so what is returned is what a read gives.
        let now = from_us(us(Utc::now()));
        let approval = Approval {
            id: Uuid::now_v7(),
            tenant: a.tenant.clone(),
            namespace: a.namespace.clone(),
            session: a.session.clone(),
            agent: a.agent.clone(),
            on_behalf_of: a.on_behalf_of.clone(),
            action: a.action.clone(),
            resource_type: a.resource_type.clone(),
            resource_id: a.resource_id.clone(),
            args_sha256: a.args_sha256.clone(),
            arguments: a.arguments.clone(),
            policies: a.policies.clone(),
            reason: a.reason.clone(),
            decision_event: a.decision_event,
            status: ApprovalStatus::Pending,
            requested_at: now,
            expires_at: from_us(us(a.expires_at)),
            resolved_by: None,
            resolved_via: None,
            resolved_at: None,
            comment: None,
        };
        let arguments = serde_json::to_string(&approval.arguments).expect("JSON serializes");
        let policies = serde_json::to_string(&approval.policies).expect("JSON serializes");
        sqlx::query(
            "INSERT INTO approvals (id, tenant, namespace, session, agent, on_behalf_of, action, resource_type, \
             resource_id, args_sha256, arguments, policies, reason, decision_event, status, requested_us, expires_us) \
             VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        )
        .bind(approval.id.to_string())
        .bind(&approval.tenant)
        .bind(&approval.namespace)
        .bind(&approval.session)
        .bind(&approval.agent)
        .bind(&approval.on_behalf_of)
        .bind(&approval.action)
        .bind(&approval.resource_type)
        .bind(&approval.resource_id)
        .bind(&approval.args_sha256)
        .bind(arguments)
        .bind(policies)
        .bind(&approval.reason)
        .bind(approval.decision_event.map(|e| e.to_string()))
        .bind(approval.status.as_str())
        .bind(us(approval.requested_at))
        .bind(us(approval.expires_at))
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(approval)
    }

    async fn get_approval(&self, tenant: &TenantId, id: Uuid) -> Result<Option<Approval>> {
        let row = sqlx::query("SELECT * FROM approvals WHERE tenant = ? AND id = ?")
            .bind(tenant.as_str())
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(approval_from_row).transpose()
    }

    async fn list_approvals(&self, tenant: &TenantId, f: &ApprovalFilter) -> Result<Vec<Approval>> {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT * FROM approvals WHERE tenant = ");
        qb.push_bind(tenant.as_str().to_owned());
        let now = us(f.now);
        // The same rule as Approval::status_at: pending and at or past expiry is expired.
        match f.status {
            None => {}
            Some(ApprovalStatus::Pending) => {
                qb.push(" AND status = 'pending' AND expires_us > ")
                    .push_bind(now);
            }
            Some(ApprovalStatus::Expired) => {
                qb.push(" AND (status = 'expired' OR (status = 'pending' AND expires_us <= ")
                    .push_bind(now)
                    .push("))");
            }
            Some(other) => {
                qb.push(" AND status = ").push_bind(other.as_str());
            }
        }
        if let Some(ns) = &f.namespace {
            // Subtree as a range, not LIKE: '_' is legal in namespace names and a LIKE wildcard.
            qb.push(" AND (namespace = ")
                .push_bind(ns.as_str().to_owned());
            qb.push(" OR (namespace >= ").push_bind(format!("{ns}/"));
            qb.push(" AND namespace < ")
                .push_bind(format!("{ns}0"))
                .push("))");
        }
        if let Some(before) = f.before {
            // Hyphenated lower-case UUIDs sort as text in the order of their bytes, and a
            // UUIDv7's bytes in the order it was made.
            qb.push(" AND id < ").push_bind(before.to_string());
        }
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(f.limit as i64);
        let rows = qb.build().fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(approval_from_row).collect()
    }

    async fn answer_approval(
        &self,
        tenant: &TenantId,
        id: Uuid,
        answer: &ApprovalAnswer,
        now: DateTime<Utc>,
    ) -> Result<Approval, AnswerError> {
        let status = if answer.approve {
            ApprovalStatus::Approved
        } else {
            ApprovalStatus::Denied
        };
        // One conditional statement: of two answers racing, exactly one finds the row pending.
        let row = sqlx::query(
            "UPDATE approvals SET status = ?, resolved_by = ?, resolved_via = ?, resolved_us = ?, comment = ? \
             WHERE tenant = ? AND id = ? AND status = 'pending' AND expires_us > ? RETURNING *",
        )
        .bind(status.as_str())
        .bind(&answer.by)
        .bind(answer.via.as_str())
        .bind(us(now))
        .bind(&answer.comment)
        .bind(tenant.as_str())
        .bind(id.to_string())
        .bind(us(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        if let Some(row) = row {
            return Ok(approval_from_row(&row)?);
        }
        // Nothing was written; say why. A status only moves forward, so what is read now is
        // still a reason the answer could not apply.
        let current = self
            .get_approval(tenant, id)
            .await?
            .ok_or(AnswerError::NotFound)?;
        Err(match current.status_at(now) {
            ApprovalStatus::Expired => AnswerError::Expired,
            ApprovalStatus::Pending => {
                return Err(AnswerError::Store(Error::internal(format!(
                    "approval {id} is pending but could not be answered"
                ))));
            }
            answered => AnswerError::AlreadyAnswered(answered),
        })
    }

    async fn consume_approval(
        &self,
        tenant: &TenantId,
        session: &str,
        resource_id: &str,
        args_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Approval>> {
        // The outer `status = 'approved'` is checked again on the row being written, so two
        // concurrent consumers cannot both take the same grant (on any database).
        let row = sqlx::query(
            "UPDATE approvals SET status = 'consumed', consumed_us = ? \
             WHERE tenant = ? AND status = 'approved' AND id = ( \
               SELECT id FROM approvals WHERE tenant = ? AND session = ? AND resource_id = ? \
               AND args_sha256 = ? AND status = 'approved' AND expires_us > ? ORDER BY id LIMIT 1) \
             RETURNING *",
        )
        .bind(us(now))
        .bind(tenant.as_str())
        .bind(tenant.as_str())
        .bind(session)
        .bind(resource_id)
        .bind(args_sha256)
        .bind(us(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.as_ref().map(approval_from_row).transpose()
    }

    async fn expire_approval(
        &self,
        tenant: &TenantId,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Approval>> {
        let row = sqlx::query(
            "UPDATE approvals SET status = 'expired' \
             WHERE tenant = ? AND id = ? AND status = 'pending' AND expires_us <= ? RETURNING *",
        )
        .bind(tenant.as_str())
        .bind(id.to_string())
        .bind(us(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.as_ref().map(approval_from_row).transpose()
    }

    async fn registry_apply(&self, change: &RegistryChange) -> Result<()> {
        registry::apply(self, change).await
    }

    async fn registry_all(&self) -> Result<RegistryRows> {
        registry::all(self).await
    }

    async fn registry_stamp(&self) -> Result<Option<String>> {
        registry::stamp(self).await
    }

    async fn get_server(&self, tenant: &TenantId, name: &str) -> Result<Option<StoredServer>> {
        registry::get_server(self, tenant, name).await
    }

    async fn list_servers(
        &self,
        tenant: &TenantId,
        filter: &ServerFilter,
    ) -> Result<Vec<StoredServer>> {
        registry::list_servers(self, tenant, filter).await
    }

    async fn get_tool(
        &self,
        tenant: &TenantId,
        server: &str,
        name: &str,
    ) -> Result<Option<StoredTool>> {
        registry::get_tool(self, tenant, server, name).await
    }

    async fn list_tools(&self, tenant: &TenantId, filter: &ToolFilter) -> Result<Vec<StoredTool>> {
        registry::list_tools(self, tenant, filter).await
    }

    async fn get_agent(&self, tenant: &TenantId, name: &str) -> Result<Option<StoredAgent>> {
        registry::get_agent(self, tenant, name).await
    }

    async fn list_agents(
        &self,
        tenant: &TenantId,
        filter: &AgentFilter,
    ) -> Result<Vec<StoredAgent>> {
        registry::list_agents(self, tenant, filter).await
    }

    async fn registry_history(
        &self,
        tenant: &TenantId,
        filter: &HistoryFilter,
    ) -> Result<Vec<HistoryEntry>> {
        registry::history(self, tenant, filter).await
    }

    async fn append_encoded(&self, batch: Vec<EncodedEvent>) -> Result<Vec<Appended>> {
        if batch.is_empty() {
            return Ok(vec![]);
        }
        self.appender.append(batch).await
    }

    async fn query_events(
        &self,
        tenant: &TenantId,
        f: &EventFilter,
        page: PageRequest,
    ) -> Result<Vec<StoredEvent>> {
        events::query(self, tenant, f, page, true).await
    }

    async fn export_events(
        &self,
        tenant: &TenantId,
        f: &EventFilter,
        page: PageRequest,
    ) -> Result<Vec<StoredEvent>> {
        events::query(self, tenant, f, page, false).await
    }

    async fn get_event(&self, tenant: &TenantId, id: &str) -> Result<Option<StoredEvent>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events WHERE tenant = ? AND id = ?"
        )))
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn events_in_order(
        &self,
        tenant: &TenantId,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>> {
        events::in_order(self, tenant, from_seq, limit).await
    }

    async fn recorded_decisions(
        &self,
        tenant: &TenantId,
        window: &crate::DecisionWindow,
        after: Option<crate::DecisionCursor>,
        limit: u32,
    ) -> Result<crate::DecisionPage> {
        recorded::decisions(self, tenant, window, after, limit).await
    }

    async fn log_rows(
        &self,
        tenant: &TenantId,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<warden_audit::verify::StoredEvent>> {
        events::log_rows(self, tenant, from_seq, limit).await
    }

    async fn log_tenants(&self) -> Result<Vec<TenantId>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT tenant FROM merkle_heads UNION SELECT DISTINCT tenant FROM audit_events ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(|t| TenantId::parse(t)).collect()
    }

    async fn merkle_head(&self, tenant: &TenantId) -> Result<MerkleHead> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        read_head(&mut conn, tenant.as_str()).await
    }

    async fn merkle_nodes(&self, tenant: &TenantId, ids: &[NodeId]) -> Result<Vec<(NodeId, Hash)>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if id.level >= STORED_NODE_MIN_LEVEL {
                let h: Option<Vec<u8>> = sqlx::query_scalar(
                    "SELECT hash FROM merkle_nodes WHERE tenant = ? AND level = ? AND idx = ?",
                )
                .bind(tenant.as_str())
                .bind(id.level as i64)
                .bind(id.index as i64)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
                let h = h.ok_or_else(|| {
                    Error::internal(format!("merkle node {id:?} of {tenant} is missing"))
                })?;
                out.push((*id, hash_from(&h)?));
            } else {
                let width = 1u64 << id.level;
                let start = id.index * width;
                let leaves: Vec<Vec<u8>> = sqlx::query_scalar(
                    "SELECT leaf_hash FROM (SELECT seq, leaf_hash FROM audit_events WHERE tenant = ? AND seq >= ? AND seq < ? \
                     UNION ALL SELECT seq, leaf_hash FROM audit_expired_leaves WHERE tenant = ? AND seq >= ? AND seq < ?) AS l ORDER BY seq",
                )
                .bind(tenant.as_str())
                .bind(start as i64)
                .bind((start + width) as i64)
                .bind(tenant.as_str())
                .bind(start as i64)
                .bind((start + width) as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
                if leaves.len() as u64 != width {
                    return Err(Error::internal(format!(
                        "leaves for merkle node {id:?} of {tenant} are missing"
                    )));
                }
                let mut level: Vec<Hash> =
                    leaves.iter().map(|l| hash_from(l)).collect::<Result<_>>()?;
                while level.len() > 1 {
                    level = level.chunks(2).map(|p| node_hash(&p[0], &p[1])).collect();
                }
                out.push((*id, level[0]));
            }
        }
        Ok(out)
    }

    async fn insert_checkpoint(&self, tenant: &TenantId, cp: &StoredCheckpoint) -> Result<()> {
        sqlx::query(
            "INSERT INTO checkpoints (tenant, size, root, time_us, note) VALUES (?,?,?,?,?) \
             ON CONFLICT (tenant, size) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(cp.size as i64)
        .bind(cp.root.to_vec())
        .bind(us(cp.time))
        .bind(&cp.note)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn checkpoints(&self, tenant: &TenantId) -> Result<Vec<StoredCheckpoint>> {
        let rows = sqlx::query("SELECT * FROM checkpoints WHERE tenant = ? ORDER BY size")
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    async fn latest_checkpoint(&self, tenant: &TenantId) -> Result<Option<StoredCheckpoint>> {
        let row =
            sqlx::query("SELECT * FROM checkpoints WHERE tenant = ? ORDER BY size DESC LIMIT 1")
                .bind(tenant.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }

    // Retention
    async fn retention_rules(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<warden_core::retention::RetentionRule>> {
        retention::rules(&self.pool, tenant).await
    }
    async fn put_retention_rule(
        &self,
        rule: &warden_core::retention::RetentionRule,
    ) -> Result<Option<warden_core::retention::RetentionRule>> {
        retention::put_rule(&self.pool, rule).await
    }
    async fn delete_retention_rule(
        &self,
        tenant: &TenantId,
        namespace: &NamespacePath,
    ) -> Result<Option<warden_core::retention::RetentionRule>> {
        retention::delete_rule(&self.pool, tenant, namespace).await
    }
    async fn legal_holds(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<warden_core::retention::LegalHold>> {
        retention::holds(&self.pool, tenant).await
    }
    async fn place_legal_hold(&self, hold: &warden_core::retention::LegalHold) -> Result<()> {
        retention::place_hold(&self.pool, hold).await
    }
    async fn release_legal_hold(
        &self,
        tenant: &TenantId,
        id: Uuid,
        by: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<warden_core::retention::LegalHold>> {
        retention::release_hold(&self.pool, tenant, id, by, reason, at).await
    }
    async fn retention_tenants(&self) -> Result<Vec<TenantId>> {
        retention::tenants(&self.pool).await
    }
    async fn retention_candidates(
        &self,
        tenant: &TenantId,
        before: DateTime<Utc>,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<crate::retention::RetentionCandidate>> {
        retention::candidates(&self.pool, tenant, before, after, limit).await
    }
    async fn apply_retention_ranges(
        &self,
        tenant: &TenantId,
        purge: &[warden_core::retention::SeqRange],
        delete: &[warden_core::retention::SeqRange],
        holds: &[Uuid],
    ) -> Result<(u64, u64)> {
        retention::apply_ranges(&self.pool, tenant, purge, delete, holds).await
    }
    async fn expired_leaves(
        &self,
        tenant: &TenantId,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<(u64, Hash)>> {
        retention::expired_leaves(&self.pool, tenant, from_seq, limit).await
    }
    // Delivery
    async fn create_destination(
        &self,
        d: &StoredDestination,
        start: DeliveryStart,
    ) -> Result<bool> {
        self.dest_create(d, start).await
    }
    async fn put_destination(&self, d: &StoredDestination) -> Result<Option<StoredDestination>> {
        self.dest_put(d).await
    }
    async fn delete_destination(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<StoredDestination>> {
        self.dest_delete(tenant, name).await
    }
    async fn get_destination(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<StoredDestination>> {
        self.dest_get(tenant, name).await
    }
    async fn list_destinations(&self, tenant: Option<&TenantId>) -> Result<Vec<StoredDestination>> {
        self.dest_list(tenant).await
    }
    async fn delivery_state(&self, tenant: &TenantId, name: &str) -> Result<DeliveryState> {
        self.dest_state(tenant, name).await
    }
    async fn acquire_delivery_lease(
        &self,
        key: &LeaseKey<'_>,
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<bool> {
        self.dest_lease(key, now, expires).await
    }
    async fn release_delivery_lease(&self, key: &LeaseKey<'_>) -> Result<()> {
        self.dest_release(key).await
    }
    async fn advance_delivery_cursor(
        &self,
        key: &LeaseKey<'_>,
        from: u64,
        to: u64,
    ) -> Result<bool> {
        self.dest_advance(key, from, to).await
    }
    async fn dead_letter(&self, key: &LeaseKey<'_>, batch: &DeadLetterBatch<'_>) -> Result<bool> {
        self.dest_dead_letter(key, batch).await
    }
    async fn record_delivery_status(
        &self,
        key: &LeaseKey<'_>,
        circuit: &str,
        error: Option<&str>,
    ) -> Result<()> {
        self.dest_status(key, circuit, error).await
    }
    async fn dead_letters(
        &self,
        tenant: &TenantId,
        name: &str,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>> {
        self.dest_dead_letters(tenant, name, after_seq, limit).await
    }
    async fn remove_dead_letters(
        &self,
        tenant: &TenantId,
        name: &str,
        seqs: &[u64],
    ) -> Result<u64> {
        self.dest_remove_dead_letters(tenant, name, seqs).await
    }
    async fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<bool> {
        self.lease_acquire(name, owner, now, expires).await
    }
    async fn release_lease(&self, name: &str, owner: &str) -> Result<()> {
        self.lease_release(name, owner).await
    }

    // Analytics
    async fn usage_report(
        &self,
        tenant: &TenantId,
        query: &crate::usage::UsageQuery,
    ) -> Result<Vec<crate::usage::UsageRow>> {
        usage::report(self, tenant, query).await
    }
    async fn outbox_rows(
        &self,
        tenant: &TenantId,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<crate::outbox::OutboxRow>> {
        outbox::rows(self, tenant, from_seq, limit).await
    }
}

/// Appends a batch inside a write transaction the caller holds (taken with `BEGIN IMMEDIATE`,
/// so the Merkle heads read here cannot move before it commits). `encoded` holds each event
/// of `batch`, encoded ahead of the lock.
pub(crate) async fn append_in(
    tx: &mut sqlx::SqliteConnection,
    batch: Vec<EncodedEvent>,
) -> Result<Vec<Appended>> {
    let (mut out, groups) = by_tenant(batch.into_iter());
    for (tenant, events) in groups {
        let tenant = tenant.as_str();
        let existing = existing_ids(&mut *tx, tenant, &events).await?;
        let head = read_head(&mut *tx, tenant).await?;
        let numbered = number(tenant, events, head, &existing, &mut out)?;
        let mut rows = numbered.rows.into_iter();
        while rows.len() > 0 {
            let chunk = statement_rows(rows.len());
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
                "INSERT INTO audit_events (tenant, {EVENT_COLUMNS}) "
            ));
            // The rows' strings move into the statement's arguments; none is copied.
            qb.push_values(rows.by_ref().take(chunk), |mut b, r| {
                let EncodedEvent {
                    columns: c,
                    header,
                    payload,
                    leaf,
                    ..
                } = r.event;
                b.push_bind(tenant)
                    .push_bind(r.seq)
                    .push_bind(c.id.to_string())
                    .push_bind(c.time_micros)
                    .push_bind(c.namespace)
                    .push_bind(c.event_type)
                    .push_bind(c.principal)
                    .push_bind(c.agent)
                    .push_bind(c.on_behalf_of)
                    .push_bind(c.session)
                    .push_bind(c.action)
                    .push_bind(c.resource_type)
                    .push_bind(c.resource_id)
                    .push_bind(c.outcome)
                    .push_bind(header)
                    .push_bind(payload)
                    .push_bind(leaf.to_vec());
            });
            qb.build().execute(&mut *tx).await.map_err(db_err)?;
        }
        let mut rest = numbered.nodes.as_slice();
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(statement_rows(rest.len()));
            rest = tail;
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO merkle_nodes (tenant, level, idx, hash) ");
            qb.push_values(chunk, |mut b, (n, h)| {
                b.push_bind(tenant)
                    .push_bind(n.level as i64)
                    .push_bind(n.index as i64)
                    .push_bind(h.to_vec());
            });
            qb.build().execute(&mut *tx).await.map_err(db_err)?;
        }
        if let Some(head) = numbered.head {
            sqlx::query(UPSERT_HEAD)
                .bind(tenant)
                .bind(head.size as i64)
                .bind(head.frontier)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
    }
    Ok(out)
}

/// Writes a tenant's new Merkle head (size and frontier).
pub(crate) const UPSERT_HEAD: &str = "INSERT INTO merkle_heads (tenant, size, frontier) VALUES (?, ?, ?) \
     ON CONFLICT (tenant) DO UPDATE SET size = excluded.size, frontier = excluded.frontier";

fn checkpoint_from_row(r: &SqliteRow) -> Result<StoredCheckpoint> {
    Ok(StoredCheckpoint {
        size: r.get::<i64, _>("size") as u64,
        root: hash_from(r.get::<&[u8], _>("root"))?,
        time: from_us(r.get("time_us")),
        note: r.get("note"),
    })
}

async fn read_head(conn: &mut sqlx::SqliteConnection, tenant: &str) -> Result<MerkleHead> {
    let row = sqlx::query("SELECT size, frontier FROM merkle_heads WHERE tenant = ?")
        .bind(tenant)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    let Some(row) = row else {
        return Ok(MerkleHead::default());
    };
    head_from(tenant, row.get("size"), row.get("frontier"))
}

/// A Merkle head from its stored size and frontier (the concatenated 32-byte hashes).
pub(crate) fn head_from(tenant: &str, size: i64, frontier: &[u8]) -> Result<MerkleHead> {
    if !frontier.len().is_multiple_of(32) {
        return Err(Error::internal(format!(
            "merkle head of {tenant} is corrupt"
        )));
    }
    Ok(MerkleHead {
        size: size as u64,
        frontier: frontier.chunks(32).map(hash_from).collect::<Result<_>>()?,
    })
}

async fn existing_ids(
    conn: &mut sqlx::SqliteConnection,
    tenant: &str,
    events: &[(usize, EncodedEvent)],
) -> Result<HashSet<String>> {
    let ids: Vec<String> = events
        .iter()
        .filter(|(_, e)| e.dedupe)
        .map(|(_, e)| e.columns.id.to_string())
        .collect();
    let mut found = HashSet::new();
    for chunk in ids.chunks(INSERT_CHUNK) {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT id FROM audit_events WHERE tenant = ");
        qb.push_bind(tenant.to_owned()).push(" AND id IN (");
        let mut sep = qb.separated(", ");
        for id in chunk {
            sep.push_bind(id.clone());
        }
        qb.push(")");
        let rows: Vec<String> = qb
            .build_query_scalar()
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
        found.extend(rows);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_are_split_into_power_of_two_statements() {
        let split = |mut n: usize| {
            let mut sizes = Vec::new();
            while n > 0 {
                let k = statement_rows(n);
                sizes.push(k);
                n -= k;
            }
            sizes
        };
        assert_eq!(split(1), [1]);
        assert_eq!(split(35), [32, 2, 1]);
        assert_eq!(split(512), [512]);
        assert_eq!(split(1300), [512, 512, 256, 16, 4]);
    }
}
