//! The PostgreSQL store: the system of record when Warden runs as several nodes.
//!
//! The same tables and the same semantics as the SQLite store (migrations in
//! `migrations/postgres`). What differs is how writers are kept apart: SQLite has one writer
//! per file (`BEGIN IMMEDIATE`); here every conditional write is one statement or holds a
//! row lock, and an audit append locks its tenant's Merkle head row before reading it, so
//! that nodes appending to one tenant at once extend one tree (see [`append_in`]). A commit
//! returns once the WAL record is flushed (`synchronous_commit` on, PostgreSQL's default):
//! that is what "acknowledged" means here.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
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
use crate::registry::{
    AgentFilter, HistoryEntry, HistoryFilter, RegistryChange, RegistryRows, ServerFilter,
    StoredAgent, StoredServer, StoredTool, ToolFilter,
};
use crate::{STORED_NODE_MIN_LEVEL, Store};

mod append;
mod outbox;
mod partitions;
mod policies;
mod registry;
mod usage;
// Retention
mod retention;
// Delivery
mod delivery;
// Named leases
mod lease;

pub(crate) use append::append_in;
pub use partitions::{PARTITION_MONTHS_AHEAD, PARTITION_REFRESH};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections per node: the audit writer, the checkpointer, and concurrent reads.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;

/// How the store treats the schema when it connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// Apply pending migrations (`warden migrate`, and `warden serve` by default).
    Migrate,
    /// Refuse to run unless every migration this build knows is applied: a node never works
    /// on a schema older than its code, and the operator decides when migrations run.
    RequireCurrent,
}

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// This node's audit writer: batches numbered in order, several in flight.
    appender: Arc<append::Appender>,
    /// Batches the audit pipeline keeps in flight ([`append::in_flight`]).
    appends_in_flight: usize,
    /// Keeps the audit table's monthly partitions created ahead; stops with the last handle.
    _partitions: Arc<partitions::Maintainer>,
}

impl PgStore {
    /// Connects to `url` (`postgres://…`), then migrates or checks the schema, and creates the
    /// audit partitions ahead.
    pub async fn connect(url: &str, schema: Schema) -> Result<PgStore> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| Error::invalid(format!("bad PostgreSQL URL: {e}")))?;
        Self::connect_with(opts, schema, DEFAULT_MAX_CONNECTIONS).await
    }

    pub async fn connect_with(
        opts: PgConnectOptions,
        schema: Schema,
        max_connections: u32,
    ) -> Result<PgStore> {
        let where_ = format!(
            "{}:{}/{}",
            opts.get_host(),
            opts.get_port(),
            opts.get_database().unwrap_or("(default)")
        );
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await
            .map_err(|e| {
                Error::unavailable(
                    format!("cannot connect to PostgreSQL at {where_}: {e}"),
                    None,
                )
            })?;
        match schema {
            Schema::Migrate => MIGRATOR.run(&pool).await.map_err(|e| {
                Error::internal(format!("database migration failed for {where_}: {e}"))
            })?,
            Schema::RequireCurrent => require_current(&pool, &where_).await?,
        }
        partitions::create_ahead(&pool).await?;
        Ok(PgStore {
            _partitions: Arc::new(partitions::Maintainer::start(pool.clone())),
            appender: Arc::default(),
            appends_in_flight: append::in_flight(max_connections),
            pool,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The versions of the migrations this build applies, oldest first.
    pub fn migrations() -> Vec<i64> {
        MIGRATOR.iter().map(|m| m.version).collect()
    }
}

/// Refuses a database whose schema lacks a migration of this build (or was never migrated).
async fn require_current(pool: &PgPool, where_: &str) -> Result<()> {
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(pool)
        .await
        .map_err(db_err)?;
    let applied: HashSet<i64> = if table.is_some() {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
            .map_err(db_err)?
            .into_iter()
            .collect()
    } else {
        HashSet::new()
    };
    let missing: Vec<String> = MIGRATOR
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::unavailable(
        format!(
            "the database at {where_} is not migrated to this version of Warden (missing: {}); \
             run `warden migrate --database …` first",
            missing.join(", ")
        ),
        None,
    ))
}

/// Any database failure makes the caller's request unanswerable now; the door turns it into
/// 503 so that nothing proceeds unrecorded.
pub(crate) fn db_err(e: sqlx::Error) -> Error {
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

pub(crate) fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_us(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(v).unwrap_or_default()
}

fn hash_from(bytes: &[u8]) -> Result<Hash> {
    bytes
        .try_into()
        .map_err(|_| Error::internal("stored hash is not 32 bytes"))
}

fn token_from_row(r: &PgRow) -> Result<TokenRecord> {
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

fn approval_from_row(r: &PgRow) -> Result<Approval> {
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

fn event_from_row(r: &PgRow) -> Result<StoredEvent> {
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
        id: Uuid::parse_str(r.get::<&str, _>("id"))
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

fn checkpoint_from_row(r: &PgRow) -> Result<StoredCheckpoint> {
    Ok(StoredCheckpoint {
        size: r.get::<i64, _>("size") as u64,
        root: hash_from(r.get::<&[u8], _>("root"))?,
        time: from_us(r.get("time_us")),
        note: r.get("note"),
    })
}

const EVENT_COLUMNS: &str = "seq, id, time_us, namespace, event_type, principal, agent, on_behalf_of, session, \
     action, resource_type, resource_id, outcome, header, payload, leaf_hash";

/// `column` is `ns` or lies below it: a range, not LIKE (`_` is legal in namespace names and
/// a LIKE wildcard); byte-wise because the columns are `COLLATE "C"`.
fn push_subtree(qb: &mut QueryBuilder<Postgres>, column: &str, ns: &NamespacePath) {
    qb.push(format!(" AND ({column} = "))
        .push_bind(ns.as_str().to_owned());
    qb.push(format!(" OR ({column} >= "))
        .push_bind(format!("{ns}/"));
    qb.push(format!(" AND {column} < "))
        .push_bind(format!("{ns}0"))
        .push("))");
}

#[async_trait]
impl Store for PgStore {
    async fn writable(&self) -> Result<()> {
        // A standby accepts connections and reads but no write: not ready.
        let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        if standby {
            return Err(Error::unavailable(
                "the PostgreSQL server is a read-only standby",
                Some(Duration::from_secs(1)),
            ));
        }
        Ok(())
    }

    async fn ensure_tenant(&self, tenant: &TenantId) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO tenants (id, created_us) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
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
             created_us, expires_us, revoked_us) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
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
        let row = sqlx::query("SELECT * FROM tokens WHERE secret_sha256 = $1")
            .bind(h)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn list_tokens(&self, tenant: &TenantId) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query("SELECT * FROM tokens WHERE tenant = $1 ORDER BY created_us")
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token(&self, tenant: &TenantId, id: &str) -> Result<Option<TokenRecord>> {
        sqlx::query(
            "UPDATE tokens SET revoked_us = COALESCE(revoked_us, $1) WHERE tenant = $2 AND id = $3",
        )
        .bind(us(Utc::now()))
        .bind(tenant.as_str())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        let row = sqlx::query("SELECT * FROM tokens WHERE tenant = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn put_policy(&self, c: PolicyChange) -> Result<PolicyVersion> {
        policies::put(self, c).await
    }

    async fn current_policies(&self) -> Result<Vec<PolicyVersion>> {
        policies::current(self).await
    }

    async fn policy_history(
        &self,
        tenant: &TenantId,
        namespace: Option<&str>,
    ) -> Result<Vec<PolicyVersion>> {
        policies::history(self, tenant, namespace).await
    }

    async fn append_bundle_version(&self, b: NewBundleVersion) -> Result<BundleVersion> {
        policies::append_bundle(self, b).await
    }

    async fn bundle_version(
        &self,
        tenant: &TenantId,
        version: i64,
    ) -> Result<Option<BundleVersion>> {
        policies::bundle(self, tenant, version).await
    }

    async fn bundle_versions(&self, tenant: &TenantId) -> Result<Vec<BundleVersion>> {
        policies::bundles(self, tenant).await
    }

    async fn latest_bundle_versions(&self) -> Result<Vec<BundleVersion>> {
        policies::latest_bundles(self).await
    }

    async fn bundle_heads(&self) -> Result<Vec<(TenantId, i64)>> {
        policies::bundle_heads(self).await
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
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)",
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
        let row = sqlx::query("SELECT * FROM approvals WHERE tenant = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.as_ref().map(approval_from_row).transpose()
    }

    async fn list_approvals(&self, tenant: &TenantId, f: &ApprovalFilter) -> Result<Vec<Approval>> {
        let mut qb: QueryBuilder<Postgres> =
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
            push_subtree(&mut qb, "namespace", ns);
        }
        if let Some(before) = f.before {
            // Hyphenated lower-case UUIDv7s compare byte-wise in the order they were made.
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
        // One conditional statement: of two answers racing, the second waits for the first's
        // row lock, then finds the row no longer pending.
        let row = sqlx::query(
            "UPDATE approvals SET status = $1, resolved_by = $2, resolved_via = $3, resolved_us = $4, comment = $5 \
             WHERE tenant = $6 AND id = $7 AND status = 'pending' AND expires_us > $8 RETURNING *",
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
        // The inner SELECT locks the grant it picks (skipping one another consumer holds), and
        // the outer `status = 'approved'` is checked again on the row written: two concurrent
        // consumers never take the same grant.
        let row = sqlx::query(
            "UPDATE approvals SET status = 'consumed', consumed_us = $1 \
             WHERE tenant = $2 AND status = 'approved' AND id = ( \
               SELECT id FROM approvals WHERE tenant = $2 AND session = $3 AND resource_id = $4 \
               AND args_sha256 = $5 AND status = 'approved' AND expires_us > $1 ORDER BY id LIMIT 1 \
               FOR UPDATE SKIP LOCKED) \
             RETURNING *",
        )
        .bind(us(now))
        .bind(tenant.as_str())
        .bind(session)
        .bind(resource_id)
        .bind(args_sha256)
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
             WHERE tenant = $1 AND id = $2 AND status = 'pending' AND expires_us <= $3 RETURNING *",
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
        self.appender.append(&self.pool, batch).await
    }

    fn appends_in_flight(&self) -> usize {
        self.appends_in_flight
    }

    async fn query_events(
        &self,
        tenant: &TenantId,
        f: &EventFilter,
        page: PageRequest,
    ) -> Result<Vec<StoredEvent>> {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events WHERE tenant = "
        ));
        qb.push_bind(tenant.as_str().to_owned());
        if let Some(t) = f.from {
            qb.push(" AND time_us >= ").push_bind(us(t));
        }
        if let Some(t) = f.to {
            qb.push(" AND time_us < ").push_bind(us(t));
        }
        if let Some(ns) = &f.namespace {
            push_subtree(&mut qb, "namespace", ns);
        }
        let eq = [
            ("event_type", &f.event_type),
            ("agent", &f.agent),
            ("on_behalf_of", &f.on_behalf_of),
            ("session", &f.session),
            ("action", &f.action),
            ("resource_type", &f.resource_type),
            ("resource_id", &f.resource_id),
            ("outcome", &f.outcome),
        ];
        for (col, v) in eq {
            if let Some(v) = v {
                qb.push(format!(" AND {col} = ")).push_bind(v.clone());
            }
        }
        if let Some(after) = page.after_seq {
            qb.push(if page.oldest_first {
                " AND seq > "
            } else {
                " AND seq < "
            })
            .push_bind(after as i64);
        }
        qb.push(if page.oldest_first {
            " ORDER BY seq ASC"
        } else {
            " ORDER BY seq DESC"
        });
        qb.push(" LIMIT ").push_bind(page.limit as i64);
        let rows = qb.build().fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn get_event(&self, tenant: &TenantId, id: &str) -> Result<Option<StoredEvent>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events WHERE tenant = $1 AND id = $2"
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
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events WHERE tenant = $1 AND seq >= $2 ORDER BY seq LIMIT $3"
        )))
        .bind(tenant.as_str())
        .bind(from_seq as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn log_tenants(&self) -> Result<Vec<TenantId>> {
        // A head row of size 0 is left by an append whose events were all duplicates.
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT tenant FROM merkle_heads WHERE size > 0 \
             UNION SELECT DISTINCT tenant FROM audit_events ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(|t| TenantId::parse(t)).collect()
    }

    async fn merkle_head(&self, tenant: &TenantId) -> Result<MerkleHead> {
        let row = sqlx::query("SELECT size, frontier FROM merkle_heads WHERE tenant = $1")
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        match row {
            Some(row) => head_from_row(&row, tenant.as_str()),
            None => Ok(MerkleHead::default()),
        }
    }

    async fn merkle_nodes(&self, tenant: &TenantId, ids: &[NodeId]) -> Result<Vec<(NodeId, Hash)>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if id.level >= STORED_NODE_MIN_LEVEL {
                let h: Option<Vec<u8>> = sqlx::query_scalar(
                    "SELECT hash FROM merkle_nodes WHERE tenant = $1 AND level = $2 AND idx = $3",
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
                    "SELECT leaf_hash FROM (SELECT seq, leaf_hash FROM audit_events WHERE tenant = $1 AND seq >= $2 AND seq < $3 \
                     UNION ALL SELECT seq, leaf_hash FROM audit_expired_leaves WHERE tenant = $1 AND seq >= $2 AND seq < $3) AS l ORDER BY seq",
                )
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
            "INSERT INTO checkpoints (tenant, size, root, time_us, note) VALUES ($1,$2,$3,$4,$5) \
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
        let rows = sqlx::query("SELECT * FROM checkpoints WHERE tenant = $1 ORDER BY size")
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    async fn latest_checkpoint(&self, tenant: &TenantId) -> Result<Option<StoredCheckpoint>> {
        let row =
            sqlx::query("SELECT * FROM checkpoints WHERE tenant = $1 ORDER BY size DESC LIMIT 1")
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
    async fn drop_emptied_partitions(&self, now: DateTime<Utc>) -> Result<Vec<String>> {
        partitions::drop_emptied(&self.pool, now).await
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

fn head_from_row(row: &PgRow, tenant: &str) -> Result<MerkleHead> {
    Ok(MerkleHead {
        size: row.get::<i64, _>("size") as u64,
        frontier: frontier_from(row.get("frontier"), tenant)?,
    })
}

/// A head's frontier as stored (its hashes end to end) back into hashes.
fn frontier_from(bytes: &[u8], tenant: &str) -> Result<Vec<Hash>> {
    if !bytes.len().is_multiple_of(32) {
        return Err(Error::internal(format!(
            "merkle head of {tenant} is corrupt"
        )));
    }
    bytes.chunks(32).map(hash_from).collect()
}
