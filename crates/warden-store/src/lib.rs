//! Warden's system of record.
//!
//! Every durable fact — tenants, tokens, policy bundles and their versions, approval requests, the
//! registry of tool servers, tools and agents, the audit trail with its Merkle log and
//! checkpoints — goes through the [`Store`] trait. SQLite (WAL,
//! `synchronous=FULL`) is the embedded default; PostgreSQL implements the same trait for
//! deployments at scale.
//!
//! The [`pipeline::AuditPipeline`] sits in front of the store: a bounded queue and a single
//! writer that commits many events per transaction (group commit) and acknowledges each event
//! only once its transaction is durable.

pub mod checkpointer;
pub mod database;
pub mod delivery;
pub mod lease;
pub mod model;
mod numbering;
pub mod outbox;
pub mod pipeline;
pub mod postgres;
pub mod recorded;
pub mod registry;
pub mod sqlite;
pub mod usage;
// Retention
pub mod retention;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;
use warden_audit::merkle::{Hash, NodeId};
use warden_core::retention::{LegalHold, RetentionRule, SeqRange};
use warden_core::{
    Approval, ApprovalAnswer, AuditEvent, NamespacePath, NewApproval, Result, TenantId,
};

pub use database::{Database, OpenOptions, open};
pub use delivery::{
    DeadLetter, DeadLetterBatch, DeliveryStart, DeliveryState, LeaseKey, NewDeadLetter,
    StoredDestination,
};
pub use model::*;
pub use postgres::PgStore;
pub use recorded::{DecisionCursor, DecisionPage, DecisionWindow, RecordedDecision};
pub use registry::{
    AgentFilter, ChangeKind, HistoryEntry, HistoryFilter, RegistryChange, RegistryRows,
    RegistryWrite, ServerFilter, StoredAgent, StoredServer, StoredTool, SubjectKind, ToolFilter,
};
pub use sqlite::SqliteStore;

/// Log levels at and above which perfect-subtree hashes are stored; lower ones are recomputed
/// from at most 2^level leaf hashes when a proof needs them.
pub const STORED_NODE_MIN_LEVEL: u8 = 4;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap write probe for `/readyz`: true when a write transaction can be opened.
    async fn writable(&self) -> Result<()>;

    // --- tenants and tokens -------------------------------------------------------------
    /// Creates the tenant if it does not exist; true when it was created.
    async fn ensure_tenant(&self, tenant: &TenantId) -> Result<bool>;
    async fn insert_token(&self, token: &TokenRecord) -> Result<()>;
    async fn token_by_secret_hash(&self, secret_sha256: &str) -> Result<Option<TokenRecord>>;
    async fn list_tokens(&self, tenant: &TenantId) -> Result<Vec<TokenRecord>>;
    /// Marks a token revoked; `None` when the tenant has no such token.
    async fn revoke_token(&self, tenant: &TenantId, id: &str) -> Result<Option<TokenRecord>>;

    // --- API-managed policies -----------------------------------------------------------
    /// Stores a new version of a namespace's policy text (`None` deletes). When `expected`
    /// is given and the current version differs, nothing is written (`Conflict`).
    async fn put_policy(&self, change: PolicyChange) -> Result<PolicyVersion>;
    /// The current text of every namespace of every tenant (deleted ones left out).
    async fn current_policies(&self) -> Result<Vec<PolicyVersion>>;
    async fn policy_history(
        &self,
        tenant: &TenantId,
        namespace: Option<&str>,
    ) -> Result<Vec<PolicyVersion>>;

    // --- policy bundles -------------------------------------------------------------------
    // A tenant's whole set of policy files and tests, one row per applied version. Versions
    // are numbered 1, 2, 3, … per tenant; a version is never changed once written.

    /// Records `bundle` as the tenant's next version. When `expected_version` is given and
    /// the tenant's current version differs, nothing is written (`Conflict`), so that of two
    /// writers based on the same version only the first succeeds.
    async fn append_bundle_version(&self, bundle: NewBundleVersion) -> Result<BundleVersion>;
    /// `None` when the tenant has no such version (another tenant's included).
    async fn bundle_version(
        &self,
        tenant: &TenantId,
        version: i64,
    ) -> Result<Option<BundleVersion>>;
    /// Every version of the tenant's bundle, newest first.
    async fn bundle_versions(&self, tenant: &TenantId) -> Result<Vec<BundleVersion>>;
    /// The newest version of every tenant that has one (to put in force at start).
    async fn latest_bundle_versions(&self) -> Result<Vec<BundleVersion>>;
    /// The newest version number of every tenant that has one, without the files: polled by
    /// every node so that a change applied on one is put in force on the others.
    async fn bundle_heads(&self) -> Result<Vec<(TenantId, i64)>>;

    // --- approval requests ----------------------------------------------------------------
    // Every change is one conditional write, so that the server, the CLI and (later) several
    // nodes answering or using the same approval at once can never both succeed.

    /// Stores a new pending approval with a fresh UUIDv7 id, requested now.
    async fn create_approval(&self, request: &NewApproval) -> Result<Approval>;
    /// `None` when the tenant has no such approval (another tenant's id included).
    async fn get_approval(&self, tenant: &TenantId, id: Uuid) -> Result<Option<Approval>>;
    /// Newest first. Rows come back as stored: a pending row past its expiry still says
    /// `pending` (use [`Approval::status_at`]); the status filter already judges it expired.
    async fn list_approvals(
        &self,
        tenant: &TenantId,
        filter: &ApprovalFilter,
    ) -> Result<Vec<Approval>>;
    /// Pending and unexpired at `now` → approved or denied, atomically. Otherwise nothing is
    /// written and the error says why.
    async fn answer_approval(
        &self,
        tenant: &TenantId,
        id: Uuid,
        answer: &ApprovalAnswer,
        now: DateTime<Utc>,
    ) -> Result<Approval, AnswerError>;
    /// Uses up one approved, unexpired approval bound to exactly this session, resource and
    /// argument digest: marks it consumed and returns it. `None` when there is none, so a
    /// grant serves one action once.
    async fn consume_approval(
        &self,
        tenant: &TenantId,
        session: &str,
        resource_id: &str,
        args_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Approval>>;
    /// Pending and past its expiry at `now` → expired; the updated approval, or `None` when
    /// there was nothing to write down (unknown, answered, not yet due, already expired).
    async fn expire_approval(
        &self,
        tenant: &TenantId,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Approval>>;

    // --- registry -------------------------------------------------------------------------
    // Every query takes the tenant. A change is one `RegistryChange`, applied in one
    // transaction with its history rows and audit events, or not at all.

    /// Applies a change: every write, history row and event, or nothing. `Conflict` when an
    /// update's record is no longer at the version it names (someone changed it meanwhile), or
    /// an insert's name or alias is taken (the message says which); `NotFound` when an update's
    /// record, or an inserted tool's server, does not exist.
    async fn registry_apply(&self, change: &RegistryChange) -> Result<()>;
    /// Every tenant's servers, tools and agents, for the in-memory snapshot.
    async fn registry_all(&self) -> Result<RegistryRows>;
    /// Changes whenever the registry of any tenant changes (the newest history id); cheap, for
    /// noticing changes made by another process.
    async fn registry_stamp(&self) -> Result<Option<String>>;
    async fn get_server(&self, tenant: &TenantId, name: &str) -> Result<Option<StoredServer>>;
    /// By name, keyset-paginated (`after`, `limit`).
    async fn list_servers(
        &self,
        tenant: &TenantId,
        filter: &ServerFilter,
    ) -> Result<Vec<StoredServer>>;
    async fn get_tool(
        &self,
        tenant: &TenantId,
        server: &str,
        name: &str,
    ) -> Result<Option<StoredTool>>;
    /// By server, then name, keyset-paginated.
    async fn list_tools(&self, tenant: &TenantId, filter: &ToolFilter) -> Result<Vec<StoredTool>>;
    async fn get_agent(&self, tenant: &TenantId, name: &str) -> Result<Option<StoredAgent>>;
    /// By name, keyset-paginated.
    async fn list_agents(
        &self,
        tenant: &TenantId,
        filter: &AgentFilter,
    ) -> Result<Vec<StoredAgent>>;
    /// Newest first, keyset-paginated (`before`, `limit`).
    async fn registry_history(
        &self,
        tenant: &TenantId,
        filter: &HistoryFilter,
    ) -> Result<Vec<HistoryEntry>>;

    // --- audit trail --------------------------------------------------------------------
    /// Appends a batch in one durable transaction, extending each tenant's Merkle log, in
    /// batch order within each tenant. Events marked `dedupe` whose id is already recorded
    /// (or appears earlier in the batch) are skipped (`Duplicate`).
    async fn append_encoded(&self, batch: Vec<EncodedEvent>) -> Result<Vec<Appended>>;

    /// How many [`Store::append_encoded`] calls the audit pipeline may have running at once.
    /// More than one only where the store keeps each log in call order by itself (the
    /// PostgreSQL store: a call that continues a log an earlier call extends commits only
    /// after it); otherwise the pipeline waits for each commit before it starts the next.
    fn appends_in_flight(&self) -> usize {
        1
    }

    /// [`Store::append_encoded`] for events not yet encoded.
    async fn append_events(&self, batch: &[NewEvent]) -> Result<Vec<Appended>> {
        self.append_encoded(batch.iter().map(EncodedEvent::from).collect())
            .await
    }
    async fn query_events(
        &self,
        tenant: &TenantId,
        filter: &EventFilter,
        page: PageRequest,
    ) -> Result<Vec<StoredEvent>>;
    /// As [`Store::query_events`], for exports, which write each payload's stored text: a
    /// store may leave `event.payload` null where `payload_json` holds the text, sparing a
    /// parse per event.
    async fn export_events(
        &self,
        tenant: &TenantId,
        filter: &EventFilter,
        page: PageRequest,
    ) -> Result<Vec<StoredEvent>> {
        self.query_events(tenant, filter, page).await
    }
    async fn get_event(&self, tenant: &TenantId, id: &str) -> Result<Option<StoredEvent>>;
    /// Events of a tenant in log order from `from_seq`, at most `limit` (for verify and export).
    async fn events_in_order(
        &self,
        tenant: &TenantId,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>>;
    /// The tenant's decision events in a window, oldest first, a page of at most `limit` at a
    /// time, unparsed (for policy simulation, see [`recorded`]). The default goes through
    /// [`Store::query_events`]; a store can do it faster.
    async fn recorded_decisions(
        &self,
        tenant: &TenantId,
        window: &DecisionWindow,
        after: Option<DecisionCursor>,
        limit: u32,
    ) -> Result<DecisionPage> {
        recorded::by_query(self, tenant, window, after, limit).await
    }
    /// All tenants that have a log.
    async fn log_tenants(&self) -> Result<Vec<TenantId>>;
    /// The tenant's tree size and right frontier.
    async fn merkle_head(&self, tenant: &TenantId) -> Result<MerkleHead>;
    /// Hashes of the given perfect subtrees (all must lie inside the current tree).
    async fn merkle_nodes(&self, tenant: &TenantId, ids: &[NodeId]) -> Result<Vec<(NodeId, Hash)>>;
    async fn insert_checkpoint(&self, tenant: &TenantId, cp: &StoredCheckpoint) -> Result<()>;
    async fn checkpoints(&self, tenant: &TenantId) -> Result<Vec<StoredCheckpoint>>;
    async fn latest_checkpoint(&self, tenant: &TenantId) -> Result<Option<StoredCheckpoint>>;

    // --- retention (see [`retention`]) ---------------------------------------------------
    /// The tenant's retention rules, by namespace.
    async fn retention_rules(&self, tenant: &TenantId) -> Result<Vec<RetentionRule>>;
    /// Sets the rule of `rule.namespace`; returns the rule it replaced.
    async fn put_retention_rule(&self, rule: &RetentionRule) -> Result<Option<RetentionRule>>;
    /// Removes a namespace's rule; returns it, `None` when there was none.
    async fn delete_retention_rule(
        &self,
        tenant: &TenantId,
        namespace: &NamespacePath,
    ) -> Result<Option<RetentionRule>>;
    /// Every legal hold of the tenant, released ones too, oldest first.
    async fn legal_holds(&self, tenant: &TenantId) -> Result<Vec<LegalHold>>;
    async fn place_legal_hold(&self, hold: &LegalHold) -> Result<()>;
    /// Releases an active hold; `None` when the tenant has no such hold, `Conflict` when it
    /// was already released.
    async fn release_legal_hold(
        &self,
        tenant: &TenantId,
        id: Uuid,
        by: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<LegalHold>>;
    /// Tenants that have at least one retention rule.
    async fn retention_tenants(&self) -> Result<Vec<TenantId>>;
    /// Drops storage units of the audit log that retention emptied and that no new event can
    /// belong to (PostgreSQL: past months' partitions with no row left); their names. A
    /// store without such units has nothing to drop.
    async fn drop_emptied_partitions(&self, _now: DateTime<Utc>) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// Events of the tenant older than `before`, by position after `after`, at most `limit`.
    async fn retention_candidates(
        &self,
        tenant: &TenantId,
        before: DateTime<Utc>,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<retention::RetentionCandidate>>;
    /// In one transaction: purges the payloads in `purge` and deletes the rows in `delete`
    /// (keeping their leaf hashes), provided the tenant's active holds are still exactly
    /// `holds` (`Conflict` otherwise: a hold placed meanwhile is never overrun). Returns how
    /// many payloads were purged and rows deleted.
    async fn apply_retention_ranges(
        &self,
        tenant: &TenantId,
        purge: &[SeqRange],
        delete: &[SeqRange],
        holds: &[Uuid],
    ) -> Result<(u64, u64)>;
    /// Leaf hashes of deleted rows from position `from_seq`, in order, at most `limit`.
    async fn expired_leaves(
        &self,
        tenant: &TenantId,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<(u64, Hash)>>;
    // --- Delivery to stream destinations --------------------------------------------------
    // The audit log is the outbox; see [`delivery`]. Every query takes the tenant.

    /// Creates a destination unless one of that name exists (false, nothing written). With
    /// [`DeliveryStart::Now`] its cursor is put at the tenant's log head in the same
    /// transaction: events committed before are never delivered, every later one is.
    async fn create_destination(&self, d: &StoredDestination, start: DeliveryStart)
    -> Result<bool>;
    /// Inserts or replaces a destination; returns the one it replaced.
    async fn put_destination(&self, d: &StoredDestination) -> Result<Option<StoredDestination>>;
    /// Removes a destination with its cursor, lease and dead letters; returns it.
    async fn delete_destination(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<StoredDestination>>;
    async fn get_destination(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<StoredDestination>>;
    /// The tenant's destinations, or every tenant's (for the delivery engine), by name.
    async fn list_destinations(&self, tenant: Option<&TenantId>) -> Result<Vec<StoredDestination>>;
    async fn delivery_state(&self, tenant: &TenantId, name: &str) -> Result<DeliveryState>;
    /// Takes or renews the delivery lease until `expires`; true when this node holds it.
    async fn acquire_delivery_lease(
        &self,
        key: &LeaseKey<'_>,
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<bool>;
    async fn release_delivery_lease(&self, key: &LeaseKey<'_>) -> Result<()>;
    /// Moves the cursor `from` → `to` when this node holds the lease and the cursor is at
    /// `from`; false (nothing written) otherwise.
    async fn advance_delivery_cursor(&self, key: &LeaseKey<'_>, from: u64, to: u64)
    -> Result<bool>;
    /// Dead-letters a batch's events, moves the cursor past them and appends the batch's
    /// audit record (if any) in one transaction, under the conditions of
    /// [`Store::advance_delivery_cursor`]; false (nothing written) otherwise.
    async fn dead_letter(&self, key: &LeaseKey<'_>, batch: &DeadLetterBatch<'_>) -> Result<bool>;
    /// The delivering node's report: circuit state and, when given, the last error.
    async fn record_delivery_status(
        &self,
        key: &LeaseKey<'_>,
        circuit: &str,
        error: Option<&str>,
    ) -> Result<()>;
    /// Oldest first, after `after_seq`, at most `limit`.
    async fn dead_letters(
        &self,
        tenant: &TenantId,
        name: &str,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>>;
    async fn remove_dead_letters(&self, tenant: &TenantId, name: &str, seqs: &[u64])
    -> Result<u64>;

    // --- named leases (see [`lease`]) -----------------------------------------------------
    // Cluster-wide work, not a tenant's: one node at a time holds a name.

    /// Takes or renews lease `name` for `owner` until `expires`; true when `owner` holds it
    /// now (it held it, nobody did, or the holder's expiry is before `now`).
    async fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<bool>;
    /// Gives lease `name` up if `owner` holds it; another owner's lease is left alone.
    async fn release_lease(&self, name: &str, owner: &str) -> Result<()>;

    // --- analytics ----------------------------------------------------------------------
    /// Decisions (events with an outcome) of the tenant in `[from, to)`, in the namespace
    /// subtree if given, counted by outcome per group (see [`usage`]). Exact: the system of
    /// record holds each event once.
    async fn usage_report(
        &self,
        tenant: &TenantId,
        query: &usage::UsageQuery,
    ) -> Result<Vec<usage::UsageRow>>;
    /// The tenant's events in log order from `from_seq`, at most `limit`, unparsed (see
    /// [`outbox`]): what the analytics feeder copies.
    async fn outbox_rows(
        &self,
        tenant: &TenantId,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<outbox::OutboxRow>> {
        outbox::by_events(self, tenant, from_seq, limit).await
    }
    /// The tenant's events in log order from `from_seq`, at most `limit`, as stored and
    /// unparsed, with their leaf hashes: what `warden audit verify` checks. The default goes
    /// through [`Store::events_in_order`]; a store can do it without parsing.
    async fn log_rows(
        &self,
        tenant: &TenantId,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<warden_audit::verify::StoredEvent>> {
        Ok(self
            .events_in_order(tenant, from_seq, limit)
            .await?
            .into_iter()
            .map(|e| warden_audit::verify::StoredEvent {
                seq: e.seq,
                leaf_hash: e.leaf_hash,
                header_json: e.header_json,
                payload_json: e.payload_json,
                columns: e.columns,
            })
            .collect())
    }
}

/// Room for a page's rows, reserved up front for a page of the usual size only: a caller
/// that wants a whole log in one call asks for `u32::MAX` rows.
pub(crate) fn page_capacity(limit: u32) -> usize {
    limit.min(1_024) as usize
}

/// Convenience for callers that record one event outside the pipeline (the CLI).
pub async fn append_one(store: &dyn Store, event: AuditEvent) -> Result<u64> {
    match store
        .append_events(&[NewEvent {
            event,
            dedupe: false,
        }])
        .await?
        .pop()
    {
        Some(Appended::Stored { seq }) => Ok(seq),
        _ => Err(warden_core::Error::internal("event was not appended")),
    }
}
