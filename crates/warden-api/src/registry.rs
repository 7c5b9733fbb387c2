//! The registry service: the one place that changes the registry of tool servers, tools and
//! agents, and keeps the in-memory view the doors read at decision time.
//!
//! Every change goes the same way: check who asks (role, and a namespace-confined token may
//! only touch scopes inside its namespace), validate with `warden_registry` (lifecycle,
//! scoping, pins, `server.json`), then hand the store one [`RegistryChange`] holding the new
//! records, the history rows and the audit events. The store applies it in one transaction
//! with each update conditional on the version that was read, so a change is acknowledged
//! only once its event is durable, nothing is in force unrecorded, and of two changes made
//! from the same state exactly one wins (the other is a 409). Changes through one process are
//! made one at a time; a change made meanwhile by another process (the CLI, another node)
//! surfaces as that 409.
//!
//! After each change the [`RegistrySnapshot`] is rebuilt from the store and swapped in whole
//! ([`Registry::snapshot`]); [`Registry::refresh`] notices changes made by other processes.
//!
//! The gateway reports what servers list through [`Registry::observe_listing`]: a pinned
//! tool whose definition changed goes back to `pending_review` (or is only reported, when its
//! server's pin policy is `warn`), a tool the registry does not know is added as
//! `pending_review` with proposed categories. Only a definition that differs from the last one
//! observed is written or recorded, so a server listing the same tools again costs a few
//! digests and nothing else.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use tokio::sync::MutexGuard;
use uuid::Uuid;
use warden_audit::redact::{detect_secret_shape, is_secret_key};
use warden_core::{
    Actor, AuditEvent, Error, NamespacePath, ResourceRef, Result, Role, TenantId, catalog,
};
use warden_registry::lifecycle::{self, Transition, TransitionError};
use warden_registry::model::{
    Agent, Category, Classification, EnvValue, Owner, PinPolicy, RiskLevel, SECRET_FORMS,
    ScopeEffect, ScopeEntry, ServerName, Source, State, Tool, ToolAnnotations, ToolServer,
    Transport, validate_agent_name, validate_alias,
};
use warden_registry::pin::{self, Finding, Pin, ToolDefinition};
use warden_registry::server_json::{self, ImportedServer, Problem};
use warden_registry::{RegistrySnapshot, scope};
use warden_store::{
    ChangeKind, HistoryEntry, RegistryChange, RegistryWrite, Store, StoredAgent, StoredServer,
    StoredTool, SubjectKind, TokenRecord, ToolFilter,
};

/// Longest `reason` accepted with a change, in bytes.
pub const MAX_REASON_BYTES: usize = 4096;
/// Longest `notes` on a tool, in bytes.
pub const MAX_NOTES_BYTES: usize = 16 * 1024;
/// How many times Warden's own observations retry after another writer changed a tool first.
const OBSERVE_ATTEMPTS: usize = 3;

/// May this role read the registry?
pub fn can_read(role: Role) -> bool {
    matches!(
        role,
        Role::Admin | Role::PolicyAdmin | Role::Auditor | Role::Approver
    )
}

/// May this role register, import and update servers, tools and agents?
pub fn can_write(role: Role) -> bool {
    matches!(role, Role::Admin | Role::PolicyAdmin)
}

/// The roles that may set (or remove) a scope entry with this effect. Enabling is approving
/// for a namespace (the policy writers); blocking is also security's (`auditor`), as it is
/// for the global state; lifting a block is the tenant administrator's alone.
pub fn scope_roles(effect: ScopeEffect, removing: bool) -> &'static [Role] {
    match (effect, removing) {
        (ScopeEffect::Enable, _) => &[Role::Admin, Role::PolicyAdmin],
        (ScopeEffect::Block, false) => &[Role::Admin, Role::PolicyAdmin, Role::Auditor],
        (ScopeEffect::Block, true) => &[Role::Admin],
    }
}

/// Who makes a change: recorded in history rows and audit events.
#[derive(Clone, Debug)]
pub struct Who {
    /// `token:<id>`, `cli:<name>`, or `warden` for what Warden observes itself.
    pub by: String,
    pub role: Role,
    /// A token confined to a namespace: it may change scopes inside it only, and nothing that
    /// applies to the whole tenant.
    pub confined_to: Option<NamespacePath>,
    /// The owner of what this caller registers without naming one.
    pub owner: Option<Owner>,
    pub actor: Actor,
    /// The event source: `warden.api`, `warden.cli`, `warden.gateway`.
    pub source: String,
}

impl Who {
    /// A caller of the REST API.
    pub fn token(token: &TokenRecord) -> Who {
        Who {
            by: format!("token:{}", token.id),
            role: token.role,
            confined_to: token.namespace.clone(),
            owner: token
                .on_behalf_of
                .as_deref()
                .and_then(|u| Owner::parse(u).ok())
                .or_else(|| Owner::parse(&format!("token:{}", token.id)).ok()),
            actor: Actor {
                principal: None,
                agent: token.agent.clone(),
                on_behalf_of: token.on_behalf_of.clone(),
                session: None,
                token_id: Some(token.id.clone()),
                role: Some(token.role.as_str().to_owned()),
            },
            source: "warden.api".into(),
        }
    }

    /// A person at the command line, working on the data directory (as the tenant's admin).
    pub fn cli(name: &str) -> Who {
        Who {
            by: format!("cli:{name}"),
            role: Role::Admin,
            confined_to: None,
            owner: Owner::parse(name).ok(),
            actor: Actor {
                role: Some("cli".into()),
                on_behalf_of: Some(name.to_owned()),
                ..Default::default()
            },
            source: "warden.cli".into(),
        }
    }

    /// Warden itself (what the gateway or discovery observed).
    pub fn warden(source: &str) -> Who {
        Who {
            by: "warden".into(),
            role: Role::Admin,
            confined_to: None,
            owner: None,
            actor: Actor {
                role: Some("system".into()),
                ..Default::default()
            },
            source: source.to_owned(),
        }
    }

    fn require(&self, allowed: bool, what: &str) -> Result<()> {
        if allowed {
            Ok(())
        } else {
            Err(Error::forbidden(format!(
                "role {} may not {what}",
                self.role
            )))
        }
    }

    /// Registry-wide changes need a token that is not confined to a namespace.
    fn whole_tenant(&self, what: &str) -> Result<()> {
        match &self.confined_to {
            Some(ns) => Err(Error::forbidden(format!(
                "this token is confined to namespace {ns}; {what} applies to the whole tenant and \
                 needs a token without a namespace"
            ))),
            None => Ok(()),
        }
    }

    fn write(&self, what: &str) -> Result<()> {
        self.require(can_write(self.role), what)?;
        self.whole_tenant(what)
    }

    /// Whether the caller may change the registry (checked before slow work such as
    /// connecting to a server).
    pub fn require_write(&self, what: &str) -> Result<()> {
        self.write(what)
    }
}

/// What a change is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    Server(ServerName),
    Tool(ServerName, String),
    Agent(String),
}

impl Subject {
    fn kind(&self) -> SubjectKind {
        match self {
            Subject::Server(_) => SubjectKind::Server,
            Subject::Tool(..) => SubjectKind::Tool,
            Subject::Agent(_) => SubjectKind::Agent,
        }
    }

    fn subject(&self) -> String {
        match self {
            Subject::Server(s) | Subject::Tool(s, _) => s.to_string(),
            Subject::Agent(a) => a.clone(),
        }
    }

    fn tool(&self) -> Option<String> {
        match self {
            Subject::Tool(_, t) => Some(t.clone()),
            _ => None,
        }
    }

    /// The audit event's resource: `ToolServer::"<name>"`, `Tool::"<server>/<tool>"`,
    /// `Agent::"<name>"` (a server name has exactly one `/`, so the tool's id splits
    /// unambiguously at the second).
    fn resource(&self) -> ResourceRef {
        let (t, id) = match self {
            Subject::Server(s) => ("ToolServer", s.to_string()),
            Subject::Tool(s, t) => ("Tool", format!("{s}/{t}")),
            Subject::Agent(a) => ("Agent", a.clone()),
        };
        ResourceRef {
            resource_type: t.into(),
            id,
        }
    }

    fn describe(&self) -> String {
        match self {
            Subject::Server(s) => format!("server {s}"),
            Subject::Tool(s, t) => format!("tool {t:?} of server {s}"),
            Subject::Agent(a) => format!("agent {a:?}"),
        }
    }

    fn not_found(&self) -> Error {
        Error::not_found(format!("{} not found in the registry", self.describe()))
    }
}

/// Times as the store keeps them (microseconds), so what a change returns is what a read gives.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap_or_default()
}

fn check_reason(reason: &str) -> Result<String> {
    let r = reason.trim();
    if r.is_empty() {
        return Err(Error::invalid(
            "a reason is required for every change of state or scope (it is recorded in the \
             audit trail)",
        ));
    }
    if r.len() > MAX_REASON_BYTES {
        return Err(Error::invalid(format!(
            "`reason` is longer than {MAX_REASON_BYTES} bytes"
        )));
    }
    Ok(r.to_owned())
}

fn transition_error(subject: &Subject, e: TransitionError) -> Error {
    let msg = format!("{}: {e}", subject.describe());
    match e {
        TransitionError::NotAllowed { .. } => Error::Conflict(msg),
        TransitionError::Forbidden { .. } => Error::Forbidden(msg),
        TransitionError::MissingReason => Error::Invalid(msg),
    }
}

/// Refuses literal values that look like secrets in a transport, beyond what the record types
/// already refuse (a literal in a variable or header marked secret): a literal whose name says
/// it is a secret (`API_TOKEN`, `Authorization`), and any value, argument or URL shaped like a
/// known credential. The message names where, never the value.
pub fn check_literals(t: &Transport) -> std::result::Result<(), String> {
    let shaped = |what: &str, v: &str| match detect_secret_shape(v) {
        Some(kind) => Err(format!(
            "{what} holds a literal value that looks like a secret ({kind}). {SECRET_FORMS}"
        )),
        None => Ok(()),
    };
    let named = |what: &str, name: &str, secret: bool, value: &Option<EnvValue>| {
        if let Some(EnvValue::Literal(v)) = value {
            if !secret && is_secret_key(name) {
                return Err(format!(
                    "{what} is named like a secret but holds a literal value; mark it is_secret \
                     and give a reference instead. {SECRET_FORMS}"
                ));
            }
            shaped(what, v)?;
        }
        Ok(())
    };
    match t {
        Transport::Stdio { command, args, env } => {
            shaped("the stdio command", command)?;
            for (i, a) in args.iter().enumerate() {
                shaped(&format!("stdio argument {i}"), a)?;
            }
            for e in env {
                named(
                    &format!("environment variable {}", e.name),
                    &e.name,
                    e.is_secret,
                    &e.value,
                )?;
            }
        }
        Transport::StreamableHttp { url, headers } | Transport::Sse { url, headers } => {
            shaped("the URL", url)?;
            for h in headers {
                named(
                    &format!("header {}", h.name),
                    &h.name,
                    h.is_secret,
                    &h.value,
                )?;
            }
        }
    }
    Ok(())
}

fn validate_server(s: &ToolServer) -> Result<()> {
    s.validate().map_err(Error::Invalid)?;
    if let Some(t) = &s.transport {
        check_literals(t).map_err(Error::Invalid)?;
    }
    if s.description.trim().is_empty() {
        return Err(Error::invalid("`description` is empty"));
    }
    if s.version.trim().is_empty() {
        return Err(Error::invalid("`version` is empty"));
    }
    Ok(())
}

/// Deserializes a field that may be absent (unchanged), `null` (cleared) or a value.
fn nullable<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

// --- Request shapes ------------------------------------------------------------------------

/// A server registered natively (rather than from a `server.json`).
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewServer {
    pub name: ServerName,
    /// The prefix agents see on its tools; derived from the name when absent.
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    pub description: String,
    pub version: String,
    /// The caller when absent.
    #[serde(default)]
    pub owner: Option<Owner>,
    #[serde(default)]
    pub source: Option<Source>,
    /// How Warden reaches it. Secret values only as references (`env:NAME`, `file:/path`).
    #[serde(default)]
    pub transport: Option<Transport>,
    /// `block` (default) or `warn`.
    #[serde(default)]
    pub pin_policy: Option<PinPolicy>,
}

/// Changes to a server's metadata; absent fields stay as they are, `null` clears.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerPatch {
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub title: Option<Option<String>>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub owner: Option<Option<Owner>>,
    #[serde(default)]
    pub source: Option<Source>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Transport>)]
    pub transport: Option<Option<Transport>>,
    #[serde(default)]
    pub pin_policy: Option<PinPolicy>,
}

/// Warden's metadata about a tool; absent fields stay as they are, `null` clears. Setting
/// `risk` or `categories` is a person's decision and clears the proposal;
/// `accept_proposal: true` takes the proposed categories and risk (unless given here).
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolPatch {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<RiskLevel>)]
    pub risk: Option<Option<RiskLevel>>,
    #[serde(default)]
    pub categories: Option<BTreeSet<Category>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Classification>)]
    pub classification: Option<Option<Classification>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub owner: Option<Option<Owner>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub notes: Option<Option<String>>,
    #[serde(default)]
    pub accept_proposal: bool,
}

/// An agent for the catalog.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    pub name: String,
    /// The caller when absent.
    #[serde(default)]
    pub owner: Option<Owner>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
}

/// Changes to an agent's catalog entry; absent fields stay as they are, `null` clears.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentPatch {
    #[serde(default)]
    pub owner: Option<Owner>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub version: Option<Option<String>>,
    #[serde(default)]
    pub models: Option<Vec<String>>,
}

/// What a discovery learned about the server besides its tools (from `initialize`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DiscoveryInfo {
    /// The server's `serverInfo`.
    pub server_info: Option<Value>,
    pub protocol_version: Option<String>,
}

/// What a discovery changed in the registry.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DiscoveryReport {
    /// The listing compared with the pins.
    pub findings: Vec<Finding>,
    /// Tools added to the registry (`pending_review`, with a proposal).
    pub new: Vec<String>,
    /// Pinned tools whose definition no longer matches their pin (first seen now).
    pub changed: Vec<String>,
    /// Pinned tools the server no longer lists.
    pub removed: Vec<String>,
    /// The `registry.discovery.completed` event.
    #[schema(value_type = String, format = Uuid)]
    pub event_id: Uuid,
}

/// A server after a state change, and the tools approved with it (`include_tools`).
#[derive(Clone, Debug)]
pub struct ServerTransition {
    pub server: StoredServer,
    pub tools: Vec<StoredTool>,
}

/// Why an import was refused.
#[derive(Debug)]
pub enum ImportError {
    /// The document does not pass: every problem, with its JSON path.
    Problems(Vec<Problem>),
    Other(Error),
}

impl From<Error> for ImportError {
    fn from(e: Error) -> Self {
        ImportError::Other(e)
    }
}

// --- Building a change ---------------------------------------------------------------------

/// The writes, history rows and events of one change, applied together by the store.
struct Plan {
    tenant: TenantId,
    writes: Vec<RegistryWrite>,
    history: Vec<HistoryEntry>,
    events: Vec<AuditEvent>,
}

impl Plan {
    fn new(tenant: &TenantId) -> Plan {
        Plan {
            tenant: tenant.clone(),
            writes: Vec::new(),
            history: Vec::new(),
            events: Vec::new(),
        }
    }

    /// One recorded change: its event, and the history rows that point at it.
    fn record(&mut self, event: AuditEvent, rows: Vec<HistoryEntry>) -> Uuid {
        let id = event.header.id;
        for mut r in rows {
            r.event_id = Some(id);
            self.history.push(r);
        }
        self.events.push(event);
        id
    }

    fn into_change(self) -> RegistryChange {
        RegistryChange {
            tenant: self.tenant,
            writes: self.writes,
            history: self.history,
            events: self.events,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn history_row(
    who: &Who,
    subject: &Subject,
    kind: ChangeKind,
    from: Option<State>,
    to: Option<State>,
    reason: Option<&str>,
    detail: Value,
    at: DateTime<Utc>,
) -> HistoryEntry {
    HistoryEntry {
        id: Uuid::now_v7(),
        subject_kind: subject.kind(),
        subject: subject.subject(),
        tool: subject.tool(),
        kind,
        from_state: from,
        to_state: to,
        reason: reason.map(str::to_owned),
        by: who.by.clone(),
        at,
        detail,
        event_id: None,
    }
}

fn event(
    tenant: &TenantId,
    namespace: &str,
    event_type: &str,
    who: &Who,
    action: &str,
    subject: &Subject,
    payload: Value,
) -> AuditEvent {
    let mut e = AuditEvent::new(
        tenant.as_str(),
        namespace,
        event_type,
        &who.source,
        who.actor.clone(),
        payload,
    );
    e.header.action = Some(action.to_owned());
    e.header.resource = Some(subject.resource());
    e
}

/// What an event says about a server (references only: the record holds no secret).
fn server_summary(s: &ToolServer) -> Value {
    json!({
        "name": s.name,
        "alias": s.alias,
        "title": s.title,
        "description": s.description,
        "version": s.version,
        "owner": s.owner,
        "source": s.source,
        "transport": s.transport,
        "state": s.state,
        "pin_policy": s.pin_policy,
    })
}

/// The fields that differ between two JSON objects: `{"field": {"before": …, "after": …}}`.
fn changed_fields(before: &Value, after: &Value, skip: &[&str]) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let (Some(b), Some(a)) = (before.as_object(), after.as_object()) else {
        return out;
    };
    for (k, av) in a {
        if skip.contains(&k.as_str()) {
            continue;
        }
        let bv = b.get(k).unwrap_or(&Value::Null);
        if bv != av {
            out.insert(k.clone(), json!({"before": bv, "after": av}));
        }
    }
    out
}

/// A server, tool or agent as stored, after a scope change.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // short-lived: one per change
pub enum Record {
    Server(StoredServer),
    Tool(StoredTool),
    Agent(StoredAgent),
}

impl Record {
    fn scopes_mut(&mut self) -> &mut Vec<ScopeEntry> {
        match self {
            Record::Server(s) => &mut s.server.scopes,
            Record::Tool(t) => &mut t.tool.scopes,
            Record::Agent(a) => &mut a.agent.scopes,
        }
    }

    fn touch(&mut self, at: DateTime<Utc>) {
        match self {
            Record::Server(s) => s.server.updated_at = at,
            Record::Tool(_) => {}
            Record::Agent(a) => a.agent.updated_at = at,
        }
    }

    fn write(&self) -> RegistryWrite {
        match self {
            Record::Server(s) => RegistryWrite::UpdateServer {
                server: s.server.clone(),
                expected_version: s.version,
            },
            Record::Tool(t) => RegistryWrite::UpdateTool {
                tool: t.tool.clone(),
                observed: t.observed.clone(),
                expected_version: t.version,
            },
            Record::Agent(a) => RegistryWrite::UpdateAgent {
                agent: a.agent.clone(),
                expected_version: a.version,
            },
        }
    }

    /// The record as it will be after the change is applied.
    fn applied(mut self, at: DateTime<Utc>) -> Record {
        match &mut self {
            Record::Server(s) => s.version += 1,
            Record::Tool(t) => {
                t.version += 1;
                t.updated_at = at;
            }
            Record::Agent(a) => a.version += 1,
        }
        self
    }
}

/// How a listing reached the registry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    /// The gateway listed the server's tools.
    Listing,
    /// Someone ran a discovery.
    Discovery,
}

/// What one observation of a server's tools changed.
#[derive(Default)]
struct Observed {
    findings: Vec<Finding>,
    new: Vec<String>,
    changed: Vec<String>,
    removed: Vec<String>,
}

// --- The service ---------------------------------------------------------------------------

/// Last observed definition digests: tenant → server → tool → sha256.
type ObservedDigests = HashMap<TenantId, HashMap<String, HashMap<String, String>>>;

/// The registry service. One per server (in [`crate::state::Inner::registry`]); the CLI makes
/// its own over the data directory's store.
pub struct Registry {
    store: Arc<dyn Store>,
    snapshot: ArcSwap<RegistrySnapshot>,
    /// The store's registry stamp the snapshot was built from.
    stamp: Mutex<Option<String>>,
    /// What each server listed last, as digests: the fast path for a repeated listing.
    observed: Mutex<ObservedDigests>,
    /// Changes through this process, one at a time.
    changing: tokio::sync::Mutex<()>,
    /// Reloads, one at a time, so an older view never replaces a newer one. Holds how many
    /// of this process's changes the current snapshot includes.
    loading: tokio::sync::Mutex<u64>,
    /// How many changes this process has committed.
    applied: AtomicU64,
}

impl Registry {
    /// Loads every tenant's registry from the store.
    pub async fn load(store: Arc<dyn Store>) -> Result<Registry> {
        let registry = Registry {
            store,
            snapshot: ArcSwap::from_pointee(RegistrySnapshot::default()),
            stamp: Mutex::new(None),
            observed: Mutex::new(HashMap::new()),
            changing: tokio::sync::Mutex::new(()),
            loading: tokio::sync::Mutex::new(0),
            applied: AtomicU64::new(0),
        };
        registry.reload().await?;
        Ok(registry)
    }

    /// The current view of every tenant's registry. Cheap: one atomic load.
    pub fn snapshot(&self) -> Arc<RegistrySnapshot> {
        self.snapshot.load_full()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Rebuilds the snapshot from the store and swaps it in.
    pub async fn reload(&self) -> Result<()> {
        let mut loaded = self.loading.lock().await;
        let upto = self.applied.load(Ordering::SeqCst);
        self.reload_locked().await?;
        *loaded = upto;
        Ok(())
    }

    /// Brings the snapshot up to `change` (this process's n-th committed change). Changes
    /// committed while a rebuild runs share the next one, so a burst of changes (the first
    /// listing of many servers) costs a few rebuilds rather than one each.
    async fn catch_up(&self, change: u64) -> Result<()> {
        let mut loaded = self.loading.lock().await;
        if *loaded >= change {
            return Ok(());
        }
        // Every change counted here committed before the store is read below.
        let upto = self.applied.load(Ordering::SeqCst);
        self.reload_locked().await?;
        *loaded = upto;
        Ok(())
    }

    async fn reload_locked(&self) -> Result<()> {
        // The stamp is read first: a change committed meanwhile makes the next refresh load
        // again rather than be missed.
        let stamp = self.store.registry_stamp().await?;
        let rows = self.store.registry_all().await?;
        let mut observed: ObservedDigests = HashMap::new();
        for (tenant, t) in &rows.tools {
            if let Some(sha) = &t.observed_sha256 {
                observed
                    .entry(tenant.clone())
                    .or_default()
                    .entry(t.tool.server.to_string())
                    .or_default()
                    .insert(t.tool.name.clone(), sha.clone());
            }
        }
        let snapshot = RegistrySnapshot::build(
            rows.servers
                .into_iter()
                .map(|(t, s)| (t, s.server))
                .collect(),
            rows.tools.into_iter().map(|(t, s)| (t, s.tool)).collect(),
            rows.agents.into_iter().map(|(t, a)| (t, a.agent)).collect(),
        );
        for w in snapshot.warnings() {
            tracing::warn!(warning = %w, "registry snapshot");
        }
        self.snapshot.store(Arc::new(snapshot));
        *self.observed.lock().expect("observed lock") = observed;
        *self.stamp.lock().expect("stamp lock") = stamp;
        Ok(())
    }

    /// Reloads when the registry changed since the snapshot was built (by another process,
    /// such as `warden registry`). Returns whether it reloaded.
    pub async fn refresh(&self) -> Result<bool> {
        let stamp = self.store.registry_stamp().await?;
        if stamp == *self.stamp.lock().expect("stamp lock") {
            return Ok(false);
        }
        self.reload().await?;
        Ok(true)
    }

    /// Applies a change, lets the next change through, and brings the snapshot up to date
    /// (it includes the change when this returns). The change is durable (with its events)
    /// when this returns `Ok`, even if the snapshot could not be rebuilt; then the next
    /// refresh rebuilds it.
    async fn apply(&self, plan: Plan, one_at_a_time: MutexGuard<'_, ()>) -> Result<()> {
        self.store.registry_apply(&plan.into_change()).await?;
        let change = self.applied.fetch_add(1, Ordering::SeqCst) + 1;
        drop(one_at_a_time);
        if let Err(e) = self.catch_up(change).await {
            tracing::error!(error = %e, "registry changed but its snapshot could not be rebuilt; \
                the next refresh retries");
        }
        Ok(())
    }

    async fn server_record(&self, tenant: &TenantId, name: &ServerName) -> Result<StoredServer> {
        self.store
            .get_server(tenant, name.as_str())
            .await?
            .ok_or_else(|| Subject::Server(name.clone()).not_found())
    }

    async fn tool_record(
        &self,
        tenant: &TenantId,
        server: &ServerName,
        tool: &str,
    ) -> Result<StoredTool> {
        self.store
            .get_tool(tenant, server.as_str(), tool)
            .await?
            .ok_or_else(|| Subject::Tool(server.clone(), tool.to_owned()).not_found())
    }

    async fn agent_record(&self, tenant: &TenantId, name: &str) -> Result<StoredAgent> {
        self.store
            .get_agent(tenant, name)
            .await?
            .ok_or_else(|| Subject::Agent(name.to_owned()).not_found())
    }

    async fn tools_of(&self, tenant: &TenantId, server: &ServerName) -> Result<Vec<StoredTool>> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .list_tools(
                    tenant,
                    &ToolFilter {
                        server: Some(server.to_string()),
                        after: after.take(),
                        limit: 1000,
                        ..Default::default()
                    },
                )
                .await?;
            let full = page.len() == 1000;
            after = page
                .last()
                .map(|t| (t.tool.server.to_string(), t.tool.name.clone()));
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }

    // --- servers ---------------------------------------------------------------------------

    /// Imports an official `server.json`: a new server in `pending_review`, owned by `owner`
    /// (else the caller), under `alias` (else the one derived from its name).
    pub async fn import_server_json(
        &self,
        tenant: &TenantId,
        document: &Value,
        owner: Option<Owner>,
        alias: Option<String>,
        who: &Who,
    ) -> std::result::Result<(StoredServer, ImportedServer), ImportError> {
        who.write("register servers")?;
        let at = now();
        let mut imported =
            server_json::import_value(document, owner.or_else(|| who.owner.clone()), at)
                .map_err(ImportError::Problems)?;
        if let Some(alias) = alias {
            validate_alias(&alias).map_err(Error::Invalid)?;
            imported.server.alias = alias;
        }
        if let Some(t) = &imported.server.transport {
            // Refused as a problem of the document, at the place the transport came from.
            if let Err(message) = check_literals(t) {
                return Err(ImportError::Problems(vec![Problem {
                    path: imported
                        .transport_from
                        .clone()
                        .unwrap_or_else(|| "$".into()),
                    message,
                }]));
            }
        }
        validate_server(&imported.server)?;
        let via = json!({
            "via": "server.json",
            "schema": imported.schema,
            "transport_from": imported.transport_from,
        });
        let stored = self
            .insert_server(tenant, imported.server.clone(), via, who)
            .await?;
        imported.server = stored.server.clone();
        Ok((stored, imported))
    }

    /// Registers a server from Warden's own record shape, in `pending_review`.
    pub async fn register_server(
        &self,
        tenant: &TenantId,
        new: NewServer,
        who: &Who,
    ) -> Result<StoredServer> {
        who.write("register servers")?;
        let at = now();
        let server = ToolServer {
            alias: new.alias.unwrap_or_else(|| new.name.alias()),
            name: new.name,
            title: new.title,
            description: new.description,
            version: new.version,
            owner: new.owner.or_else(|| who.owner.clone()),
            source: new.source.unwrap_or_default(),
            transport: new.transport,
            state: State::PendingReview,
            scopes: Vec::new(),
            pin_policy: new.pin_policy.unwrap_or_default(),
            created_at: at,
            updated_at: at,
        };
        validate_server(&server)?;
        self.insert_server(tenant, server, json!({"via": "api"}), who)
            .await
    }

    async fn insert_server(
        &self,
        tenant: &TenantId,
        server: ToolServer,
        via: Value,
        who: &Who,
    ) -> Result<StoredServer> {
        let one_at_a_time = self.changing.lock().await;
        let subject = Subject::Server(server.name.clone());
        let mut plan = Plan::new(tenant);
        let mut payload = json!({ "server": server_summary(&server) });
        if let (Some(p), Some(v)) = (payload.as_object_mut(), via.as_object()) {
            p.extend(v.clone());
        }
        let e = event(
            tenant,
            tenant.as_str(),
            catalog::REGISTRY_SERVER_REGISTERED,
            who,
            "register",
            &subject,
            payload,
        );
        let row = history_row(
            who,
            &subject,
            ChangeKind::Registered,
            None,
            Some(server.state),
            None,
            via,
            server.created_at,
        );
        plan.record(e, vec![row]);
        plan.writes
            .push(RegistryWrite::InsertServer(server.clone()));
        self.apply(plan, one_at_a_time).await?;
        Ok(StoredServer { server, version: 1 })
    }

    /// Changes a server's metadata (not its state or scopes). A patch that changes nothing
    /// writes and records nothing.
    pub async fn update_server(
        &self,
        tenant: &TenantId,
        name: &ServerName,
        patch: ServerPatch,
        who: &Who,
    ) -> Result<StoredServer> {
        who.write("update servers")?;
        let one_at_a_time = self.changing.lock().await;
        let current = self.server_record(tenant, name).await?;
        let mut s = current.server.clone();
        if let Some(a) = patch.alias {
            validate_alias(&a).map_err(Error::Invalid)?;
            s.alias = a;
        }
        if let Some(t) = patch.title {
            s.title = t;
        }
        if let Some(d) = patch.description {
            s.description = d;
        }
        if let Some(v) = patch.version {
            s.version = v;
        }
        if let Some(o) = patch.owner {
            s.owner = o;
        }
        if let Some(src) = patch.source {
            s.source = src;
        }
        if let Some(t) = patch.transport {
            s.transport = t;
        }
        if let Some(p) = patch.pin_policy {
            s.pin_policy = p;
        }
        validate_server(&s)?;
        let changes = changed_fields(
            &server_summary(&current.server),
            &server_summary(&s),
            &["state"],
        );
        if changes.is_empty() {
            return Ok(current);
        }
        let changes = Value::Object(changes);
        let at = now();
        s.updated_at = at;
        let subject = Subject::Server(name.clone());
        let mut plan = Plan::new(tenant);
        let e = event(
            tenant,
            tenant.as_str(),
            catalog::REGISTRY_SERVER_UPDATED,
            who,
            "update",
            &subject,
            json!({"server": name, "changes": changes}),
        );
        let row = history_row(
            who,
            &subject,
            ChangeKind::Update,
            None,
            None,
            None,
            json!({"changes": changes}),
            at,
        );
        plan.record(e, vec![row]);
        plan.writes.push(RegistryWrite::UpdateServer {
            server: s.clone(),
            expected_version: current.version,
        });
        self.apply(plan, one_at_a_time).await?;
        Ok(StoredServer {
            server: s,
            version: current.version + 1,
        })
    }

    /// Moves a server to `to` (lifecycle rules and roles of `warden_registry::lifecycle`).
    /// With `include_tools` (only when approving) every `pending_review` tool of the server is
    /// approved and pinned in the same change.
    pub async fn transition_server(
        &self,
        tenant: &TenantId,
        name: &ServerName,
        to: State,
        reason: &str,
        include_tools: bool,
        who: &Who,
    ) -> Result<ServerTransition> {
        let subject = Subject::Server(name.clone());
        who.whole_tenant("a change of state")?;
        let one_at_a_time = self.changing.lock().await;
        let current = self.server_record(tenant, name).await?;
        let from = current.server.state;
        lifecycle::check(from, to, who.role, reason).map_err(|e| transition_error(&subject, e))?;
        let reason = check_reason(reason)?;
        if include_tools && to != State::Approved {
            return Err(Error::invalid(
                "include_tools applies only when a server is approved",
            ));
        }
        let transition = Transition::between(from, to).expect("checked above");
        let at = now();
        let mut plan = Plan::new(tenant);
        let mut server = current.server.clone();
        server.state = to;
        server.updated_at = at;
        let e = event(
            tenant,
            tenant.as_str(),
            catalog::REGISTRY_SERVER_STATE_CHANGED,
            who,
            transition.as_str(),
            &subject,
            json!({
                "server": name, "from": from, "to": to, "transition": transition,
                "by": who.by, "role": who.role, "reason": reason,
                "include_tools": include_tools,
            }),
        );
        let row = history_row(
            who,
            &subject,
            ChangeKind::Transition,
            Some(from),
            Some(to),
            Some(&reason),
            json!({"transition": transition, "role": who.role, "include_tools": include_tools}),
            at,
        );
        plan.record(e, vec![row]);
        plan.writes.push(RegistryWrite::UpdateServer {
            server: server.clone(),
            expected_version: current.version,
        });

        let mut tools = Vec::new();
        if include_tools {
            let pending: Vec<StoredTool> = self
                .tools_of(tenant, name)
                .await?
                .into_iter()
                .filter(|t| t.tool.state == State::PendingReview)
                .collect();
            let unseen: Vec<&str> = pending
                .iter()
                .filter(|t| t.observed.is_none())
                .map(|t| t.tool.name.as_str())
                .collect();
            if !unseen.is_empty() {
                return Err(Error::Conflict(format!(
                    "server {name} was not approved: its tools {} have never been listed by the \
                     server, so there is no definition to pin; discover the server's tools first, \
                     or approve without include_tools",
                    unseen.join(", ")
                )));
            }
            for t in pending {
                let tool_subject = Subject::Tool(name.clone(), t.tool.name.clone());
                lifecycle::check(t.tool.state, State::Approved, who.role, &reason)
                    .map_err(|e| transition_error(&tool_subject, e))?;
                let approved = plan_tool_transition(
                    &mut plan,
                    tenant,
                    t,
                    State::Approved,
                    &reason,
                    who,
                    at,
                    Some(name),
                )?;
                tools.push(approved);
            }
        }
        self.apply(plan, one_at_a_time).await?;
        Ok(ServerTransition {
            server: StoredServer {
                server,
                version: current.version + 1,
            },
            tools,
        })
    }

    // --- tools -----------------------------------------------------------------------------

    /// Adds a tool to a server from its MCP definition (as `tools/list` gives it):
    /// `pending_review`, with proposed categories and risk; the definition is what approval
    /// will pin.
    pub async fn register_tool(
        &self,
        tenant: &TenantId,
        server: &ServerName,
        definition: ToolDefinition,
        who: &Who,
    ) -> Result<StoredTool> {
        who.write("register tools")?;
        let one_at_a_time = self.changing.lock().await;
        let srv = self.server_record(tenant, server).await?;
        let at = now();
        let mut plan = Plan::new(tenant);
        let tool = plan_new_tool(&mut plan, tenant, &srv.server, &definition, who, "api", at);
        self.apply(plan, one_at_a_time).await?;
        Ok(StoredTool {
            tool,
            observed_sha256: Some(pin::digest(&definition)),
            observed: Some(definition),
            version: 1,
            created_at: at,
            updated_at: at,
        })
    }

    /// Changes Warden's metadata about a tool (risk, categories, classification, owner, notes).
    pub async fn update_tool(
        &self,
        tenant: &TenantId,
        server: &ServerName,
        name: &str,
        patch: ToolPatch,
        who: &Who,
    ) -> Result<StoredTool> {
        who.write("update tools")?;
        let one_at_a_time = self.changing.lock().await;
        let current = self.tool_record(tenant, server, name).await?;
        let mut t = current.tool.clone();
        let decided = patch.risk.is_some() || patch.categories.is_some();
        if patch.accept_proposal {
            let Some(p) = t.proposal.clone() else {
                return Err(Error::invalid(format!(
                    "tool {name:?} of server {server} has no proposal to accept"
                )));
            };
            t.categories = p.categories;
            t.risk = Some(p.risk);
        }
        if let Some(r) = patch.risk {
            t.risk = r;
        }
        if let Some(c) = patch.categories {
            t.categories = c;
        }
        if decided || patch.accept_proposal {
            // A person confirmed (or corrected) what was proposed.
            t.proposal = None;
        }
        if let Some(c) = patch.classification {
            t.classification = c;
        }
        if let Some(o) = patch.owner {
            t.owner = o;
        }
        if let Some(n) = patch.notes {
            if n.as_ref().is_some_and(|n| n.len() > MAX_NOTES_BYTES) {
                return Err(Error::invalid(format!(
                    "`notes` is longer than {MAX_NOTES_BYTES} bytes"
                )));
            }
            t.notes = n;
        }
        let view = |t: &Tool| {
            json!({
                "risk": t.risk, "categories": t.categories, "classification": t.classification,
                "owner": t.owner, "notes": t.notes, "proposal": t.proposal,
            })
        };
        let changes = changed_fields(&view(&current.tool), &view(&t), &[]);
        if changes.is_empty() {
            return Ok(current);
        }
        let at = now();
        let subject = Subject::Tool(server.clone(), name.to_owned());
        let mut plan = Plan::new(tenant);
        let e = event(
            tenant,
            tenant.as_str(),
            catalog::REGISTRY_TOOL_UPDATED,
            who,
            "update",
            &subject,
            json!({"server": server, "tool": name, "changes": changes}),
        );
        let row = history_row(
            who,
            &subject,
            ChangeKind::Update,
            None,
            None,
            None,
            json!({"changes": changes}),
            at,
        );
        plan.record(e, vec![row]);
        let updated = StoredTool {
            tool: t,
            ..current.clone()
        };
        plan.writes.push(Record::Tool(updated.clone()).write());
        self.apply(plan, one_at_a_time).await?;
        Ok(match Record::Tool(updated).applied(at) {
            Record::Tool(t) => t,
            _ => unreachable!("a tool stays a tool"),
        })
    }

    /// Moves a tool to `to`. Approving from `pending_review` pins the definition its server
    /// listed last (re-approving a changed tool pins the new one); a tool never listed has
    /// nothing to pin and cannot be approved.
    pub async fn transition_tool(
        &self,
        tenant: &TenantId,
        server: &ServerName,
        name: &str,
        to: State,
        reason: &str,
        who: &Who,
    ) -> Result<StoredTool> {
        let subject = Subject::Tool(server.clone(), name.to_owned());
        who.whole_tenant("a change of state")?;
        let one_at_a_time = self.changing.lock().await;
        let current = self.tool_record(tenant, server, name).await?;
        lifecycle::check(current.tool.state, to, who.role, reason)
            .map_err(|e| transition_error(&subject, e))?;
        let reason = check_reason(reason)?;
        let at = now();
        let mut plan = Plan::new(tenant);
        let updated = plan_tool_transition(&mut plan, tenant, current, to, &reason, who, at, None)?;
        self.apply(plan, one_at_a_time).await?;
        Ok(updated)
    }

    // --- agents ----------------------------------------------------------------------------

    pub async fn register_agent(
        &self,
        tenant: &TenantId,
        new: NewAgent,
        who: &Who,
    ) -> Result<StoredAgent> {
        who.write("register agents")?;
        validate_agent_name(&new.name).map_err(Error::Invalid)?;
        let owner = new.owner.or_else(|| who.owner.clone()).ok_or_else(|| {
            Error::invalid("an agent needs an owner: give `owner` (a user id or team:<name>)")
        })?;
        let one_at_a_time = self.changing.lock().await;
        let at = now();
        let agent = Agent {
            name: new.name,
            owner,
            description: new.description,
            version: new.version,
            models: new.models,
            scopes: Vec::new(),
            created_at: at,
            updated_at: at,
        };
        let subject = Subject::Agent(agent.name.clone());
        let mut plan = Plan::new(tenant);
        let e = event(
            tenant,
            tenant.as_str(),
            catalog::REGISTRY_AGENT_REGISTERED,
            who,
            "register",
            &subject,
            json!({
                "name": agent.name, "owner": agent.owner, "version": agent.version,
                "models": agent.models, "description": agent.description,
            }),
        );
        let row = history_row(
            who,
            &subject,
            ChangeKind::Registered,
            None,
            None,
            None,
            json!({"via": "api"}),
            at,
        );
        plan.record(e, vec![row]);
        plan.writes.push(RegistryWrite::InsertAgent(agent.clone()));
        self.apply(plan, one_at_a_time).await?;
        Ok(StoredAgent { agent, version: 1 })
    }

    pub async fn update_agent(
        &self,
        tenant: &TenantId,
        name: &str,
        patch: AgentPatch,
        who: &Who,
    ) -> Result<StoredAgent> {
        who.write("update agents")?;
        let one_at_a_time = self.changing.lock().await;
        let current = self.agent_record(tenant, name).await?;
        let mut a = current.agent.clone();
        if let Some(o) = patch.owner {
            a.owner = o;
        }
        if let Some(d) = patch.description {
            a.description = d;
        }
        if let Some(v) = patch.version {
            a.version = v;
        }
        if let Some(m) = patch.models {
            a.models = m;
        }
        let view = |a: &Agent| json!({"owner": a.owner, "description": a.description, "version": a.version, "models": a.models});
        let changes = changed_fields(&view(&current.agent), &view(&a), &[]);
        if changes.is_empty() {
            return Ok(current);
        }
        let at = now();
        a.updated_at = at;
        let subject = Subject::Agent(name.to_owned());
        let mut plan = Plan::new(tenant);
        let e = event(
            tenant,
            tenant.as_str(),
            catalog::REGISTRY_AGENT_UPDATED,
            who,
            "update",
            &subject,
            json!({"agent": name, "changes": changes}),
        );
        let row = history_row(
            who,
            &subject,
            ChangeKind::Update,
            None,
            None,
            None,
            json!({"changes": changes}),
            at,
        );
        plan.record(e, vec![row]);
        plan.writes.push(RegistryWrite::UpdateAgent {
            agent: a.clone(),
            expected_version: current.version,
        });
        self.apply(plan, one_at_a_time).await?;
        Ok(StoredAgent {
            agent: a,
            version: current.version + 1,
        })
    }

    // --- scopes ----------------------------------------------------------------------------

    /// Enables or blocks the subject in `namespace` and below, replacing its entry there. A
    /// change below a block is refused (`Conflict`): a block is final and read-only below.
    pub async fn set_scope(
        &self,
        tenant: &TenantId,
        subject: &Subject,
        namespace: &NamespacePath,
        effect: ScopeEffect,
        reason: &str,
        who: &Who,
    ) -> Result<Record> {
        self.change_scope(tenant, subject, namespace, Some(effect), reason, who)
            .await
    }

    /// Removes the subject's scope entry at `namespace` (`NotFound` when there is none).
    pub async fn remove_scope(
        &self,
        tenant: &TenantId,
        subject: &Subject,
        namespace: &NamespacePath,
        reason: &str,
        who: &Who,
    ) -> Result<Record> {
        self.change_scope(tenant, subject, namespace, None, reason, who)
            .await
    }

    /// Sets (`effect: Some`) or removes (`None`) the subject's scope entry at `namespace`.
    async fn change_scope(
        &self,
        tenant: &TenantId,
        subject: &Subject,
        namespace: &NamespacePath,
        effect: Option<ScopeEffect>,
        reason: &str,
        who: &Who,
    ) -> Result<Record> {
        if namespace.tenant() != *tenant {
            return Err(Error::not_found(format!("namespace {namespace} not found")));
        }
        if let Some(scope) = &who.confined_to
            && !namespace.is_within(scope)
        {
            return Err(Error::forbidden(format!(
                "this token is confined to namespace {scope}; {namespace} lies outside it"
            )));
        }
        let one_at_a_time = self.changing.lock().await;
        let mut record = match subject {
            Subject::Server(s) => Record::Server(self.server_record(tenant, s).await?),
            Subject::Tool(s, t) => Record::Tool(self.tool_record(tenant, s, t).await?),
            Subject::Agent(a) => Record::Agent(self.agent_record(tenant, a).await?),
        };
        let previous = record
            .scopes_mut()
            .iter()
            .find(|e| &e.namespace == namespace)
            .cloned();
        let (roles, applied_effect) = match (effect, &previous) {
            (Some(e), _) => (scope_roles(e, false), e),
            (None, Some(p)) => (scope_roles(p.effect, true), p.effect),
            (None, None) => {
                return Err(Error::not_found(format!(
                    "{} has no scope entry at {namespace}",
                    subject.describe()
                )));
            }
        };
        // Replacing a block with anything else lifts it: as much the administrator's alone as
        // removing it.
        let roles = match (&previous, effect) {
            (Some(p), Some(e)) if p.effect == ScopeEffect::Block && e != ScopeEffect::Block => {
                scope_roles(ScopeEffect::Block, true)
            }
            _ => roles,
        };
        if !roles.contains(&who.role) {
            let what = match effect {
                Some(e) => format!("{} {} in a namespace", e.as_str(), subject.describe()),
                None => format!(
                    "remove the {} entry of {} at {namespace}",
                    applied_effect.as_str(),
                    subject.describe()
                ),
            };
            return Err(Error::forbidden(format!(
                "role {} may not {what}; this needs one of the roles {}",
                who.role,
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let reason = check_reason(reason)?;
        let at = now();
        match effect {
            Some(e) => {
                let entry = ScopeEntry {
                    namespace: namespace.clone(),
                    effect: e,
                    reason: reason.clone(),
                    by: who.by.clone(),
                    at,
                };
                scope::set_scope(record.scopes_mut(), entry).map_err(Error::Conflict)?;
            }
            None => {
                scope::remove_scope(record.scopes_mut(), namespace).map_err(Error::Conflict)?;
            }
        }
        record.touch(at);
        let event_type = match subject {
            Subject::Server(_) => catalog::REGISTRY_SERVER_SCOPE_CHANGED,
            Subject::Tool(..) => catalog::REGISTRY_TOOL_SCOPE_CHANGED,
            Subject::Agent(_) => catalog::REGISTRY_AGENT_SCOPE_CHANGED,
        };
        let detail = json!({
            "namespace": namespace,
            "effect": applied_effect,
            "change": if effect.is_some() { "set" } else { "removed" },
            "previous": previous,
        });
        let mut payload = detail.clone();
        payload["subject"] = json!(subject.describe());
        payload["reason"] = json!(reason);
        payload["by"] = json!(who.by);
        let mut plan = Plan::new(tenant);
        let e = event(
            tenant,
            namespace.as_str(),
            event_type,
            who,
            "scope",
            subject,
            payload,
        );
        let row = history_row(
            who,
            subject,
            ChangeKind::Scope,
            None,
            None,
            Some(&reason),
            detail,
            at,
        );
        plan.record(e, vec![row]);
        plan.writes.push(record.write());
        self.apply(plan, one_at_a_time).await?;
        Ok(record.applied(at))
    }

    // --- what servers list -----------------------------------------------------------------

    /// What the gateway saw a registered server list. Compared with the pins (the findings
    /// are `pin::compare`'s); only a tool whose definition differs from the last one observed
    /// changes anything:
    ///
    /// - a pinned tool whose definition no longer matches its pin: with the server's pin
    ///   policy `block`, an approved or deprecated tool goes back to `pending_review` (hidden
    ///   and refused until approved again, which pins the new definition); with `warn` it
    ///   stays as it is. Either way `registry.tool.definition_changed` is recorded with the
    ///   old and new digests and a readable diff;
    /// - a tool the registry does not know is added as `pending_review` with proposed
    ///   categories and risk (`registry.tool.appeared`);
    /// - the definition is kept as the tool's last observed one.
    ///
    /// A listing identical to the last one is answered from memory and writes nothing. A
    /// server the tenant has not registered (a configured upstream) yields no findings.
    pub async fn observe_listing(
        &self,
        tenant: &TenantId,
        server: &ServerName,
        listed: &[ToolDefinition],
    ) -> Result<Vec<Finding>> {
        let snapshot = self.snapshot();
        if snapshot.server(tenant, server.as_str()).is_none() {
            return Ok(Vec::new());
        }
        if self.seen_before(tenant, server, listed) {
            let pins: HashMap<String, Pin> = snapshot
                .tools_of(tenant, server.as_str())
                .filter_map(|t| t.pin.clone().map(|p| (t.name.clone(), p)))
                .collect();
            return Ok(pin::compare(&pins, listed));
        }
        let who = Who::warden("warden.gateway");
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .observe(tenant, server, listed, &who, Via::Listing, None)
                .await
            {
                // Someone changed one of the tools meanwhile: read them again.
                Err(Error::Conflict(_)) if attempt < OBSERVE_ATTEMPTS => continue,
                r => return r.map(|(o, _)| o.findings),
            }
        }
    }

    /// Records a discovery of `server` (Warden connected, ran `initialize` and `tools/list`):
    /// tools new to the registry are added as `pending_review` with proposals, pinned tools
    /// whose definition changed are handled as [`observe_listing`](Self::observe_listing)
    /// does, and `registry.discovery.completed` is recorded — all in one change.
    pub async fn record_discovery(
        &self,
        tenant: &TenantId,
        server: &ServerName,
        listed: &[ToolDefinition],
        info: DiscoveryInfo,
        who: &Who,
    ) -> Result<DiscoveryReport> {
        who.write("discover servers")?;
        let (observed, event_id) = self
            .observe(tenant, server, listed, who, Via::Discovery, Some(info))
            .await?;
        Ok(DiscoveryReport {
            findings: observed.findings,
            new: observed.new,
            changed: observed.changed,
            removed: observed.removed,
            event_id: event_id.expect("a discovery records its event"),
        })
    }

    /// Records that a discovery of `server` failed; nothing else is written.
    pub async fn record_discovery_failed(
        &self,
        tenant: &TenantId,
        server: &ServerName,
        error: &str,
        who: &Who,
    ) -> Result<Uuid> {
        let mut plan = Plan::new(tenant);
        let e = event(
            tenant,
            tenant.as_str(),
            catalog::REGISTRY_DISCOVERY_FAILED,
            who,
            "discover",
            &Subject::Server(server.clone()),
            json!({"server": server, "error": error, "by": who.by}),
        );
        let id = plan.record(e, Vec::new());
        self.store.registry_apply(&plan.into_change()).await?;
        Ok(id)
    }

    /// True when every listed tool's digest is the one last observed for it.
    fn seen_before(
        &self,
        tenant: &TenantId,
        server: &ServerName,
        listed: &[ToolDefinition],
    ) -> bool {
        let observed = self.observed.lock().expect("observed lock");
        let Some(seen) = observed.get(tenant).and_then(|t| t.get(server.as_str())) else {
            return listed.is_empty();
        };
        listed
            .iter()
            .all(|d| seen.get(&d.name).is_some_and(|sha| *sha == pin::digest(d)))
    }

    async fn observe(
        &self,
        tenant: &TenantId,
        server: &ServerName,
        listed: &[ToolDefinition],
        who: &Who,
        via: Via,
        discovery: Option<DiscoveryInfo>,
    ) -> Result<(Observed, Option<Uuid>)> {
        let one_at_a_time = self.changing.lock().await;
        let srv = self.server_record(tenant, server).await?;
        let tools = self.tools_of(tenant, server).await?;
        let at = now();
        let mut plan = Plan::new(tenant);
        let observed =
            plan_observation(&mut plan, tenant, &srv.server, &tools, listed, who, via, at);
        let mut event_id = None;
        if let Some(info) = discovery {
            let unchanged = observed
                .findings
                .iter()
                .filter(|f| matches!(f, Finding::Unchanged { .. }))
                .count();
            let e = event(
                tenant,
                tenant.as_str(),
                catalog::REGISTRY_DISCOVERY_COMPLETED,
                who,
                "discover",
                &Subject::Server(server.clone()),
                json!({
                    "server": server,
                    "server_info": info.server_info,
                    "protocol_version": info.protocol_version,
                    "tools": listed.len(),
                    "new": observed.new,
                    "changed": observed.changed,
                    "removed": observed.removed,
                    "unchanged": unchanged,
                    "by": who.by,
                }),
            );
            event_id = Some(plan.record(e, Vec::new()));
        }
        if !plan.writes.is_empty() || !plan.events.is_empty() {
            self.apply(plan, one_at_a_time).await?;
        }
        Ok((observed, event_id))
    }
}

/// Adds a tool new to the registry to `plan`: `pending_review`, with a proposal, its
/// definition as the last observed one.
fn plan_new_tool(
    plan: &mut Plan,
    tenant: &TenantId,
    server: &ToolServer,
    def: &ToolDefinition,
    who: &Who,
    via: &str,
    at: DateTime<Utc>,
) -> Tool {
    let tool = Tool::discovered(server.name.clone(), def);
    let subject = Subject::Tool(server.name.clone(), tool.name.clone());
    let sha256 = pin::digest(def);
    let (event_type, action) = if via == "listing" {
        (catalog::REGISTRY_TOOL_APPEARED, "appear")
    } else {
        (catalog::REGISTRY_TOOL_REGISTERED, "register")
    };
    let e = event(
        tenant,
        tenant.as_str(),
        event_type,
        who,
        action,
        &subject,
        json!({
            "server": server.name, "tool": tool.name, "sha256": sha256,
            "server_state": server.state, "proposal": tool.proposal, "via": via,
        }),
    );
    let row = history_row(
        who,
        &subject,
        ChangeKind::Registered,
        None,
        Some(tool.state),
        None,
        json!({"via": via, "sha256": sha256, "proposal": tool.proposal}),
        at,
    );
    plan.record(e, vec![row]);
    plan.writes.push(RegistryWrite::InsertTool {
        tool: tool.clone(),
        observed: Some(def.clone()),
    });
    tool
}

/// Adds one tool's state change to `plan` (already checked against the lifecycle rules) and
/// returns the tool as it will be. Approving from `pending_review` pins its last observed
/// definition. `with_server`: the server approved in the same change.
#[allow(clippy::too_many_arguments)]
fn plan_tool_transition(
    plan: &mut Plan,
    tenant: &TenantId,
    current: StoredTool,
    to: State,
    reason: &str,
    who: &Who,
    at: DateTime<Utc>,
    with_server: Option<&ServerName>,
) -> Result<StoredTool> {
    let server = current.tool.server.clone();
    let name = current.tool.name.clone();
    let subject = Subject::Tool(server.clone(), name.clone());
    let from = current.tool.state;
    let transition = Transition::between(from, to).expect("checked by the caller");
    let mut tool = current.tool.clone();
    tool.state = to;
    let mut pinned = None;
    if from == State::PendingReview && to == State::Approved {
        let Some(def) = current.observed.clone() else {
            return Err(Error::Conflict(format!(
                "tool {name:?} of server {server} cannot be approved: its server has never listed \
                 it, so there is no definition to pin; discover the server's tools (or let the \
                 gateway list them) first"
            )));
        };
        let previous = tool.pin.take();
        let pin = Pin::new(def, at);
        pinned = Some((previous, pin.clone()));
        tool.pin = Some(pin);
    }
    let e = event(
        tenant,
        tenant.as_str(),
        catalog::REGISTRY_TOOL_STATE_CHANGED,
        who,
        transition.as_str(),
        &subject,
        json!({
            "server": server, "tool": name, "from": from, "to": to, "transition": transition,
            "by": who.by, "role": who.role, "reason": reason, "with_server": with_server,
        }),
    );
    let row = history_row(
        who,
        &subject,
        ChangeKind::Transition,
        Some(from),
        Some(to),
        Some(reason),
        json!({"transition": transition, "role": who.role, "with_server": with_server}),
        at,
    );
    plan.record(e, vec![row]);
    if let Some((previous, pin)) = pinned {
        let diff = previous
            .as_ref()
            .map(|p| pin::diff(&p.definition, &pin.definition));
        let detail = json!({
            "sha256": pin.sha256,
            "previous_sha256": previous.as_ref().map(|p| &p.sha256),
            "diff_from_previous": diff,
            "definition": pin.definition,
        });
        let e = event(
            tenant,
            tenant.as_str(),
            catalog::REGISTRY_TOOL_PINNED,
            who,
            "pin",
            &subject,
            json!({
                "server": server, "tool": name, "sha256": pin.sha256,
                "previous_sha256": previous.as_ref().map(|p| &p.sha256),
                "diff_from_previous": diff,
            }),
        );
        let row = history_row(
            who,
            &subject,
            ChangeKind::Pin,
            None,
            None,
            Some(reason),
            detail,
            at,
        );
        plan.record(e, vec![row]);
    }
    let updated = StoredTool { tool, ..current };
    plan.writes.push(Record::Tool(updated.clone()).write());
    Ok(match Record::Tool(updated).applied(at) {
        Record::Tool(t) => t,
        _ => unreachable!("a tool stays a tool"),
    })
}

/// Keeps what the server says about a tool current (its pin keeps what was approved).
fn refresh_description(tool: &mut Tool, def: &ToolDefinition) {
    let annotations = ToolAnnotations::from_mcp(def.annotations.as_ref());
    tool.title = annotations.title.clone();
    tool.annotations = annotations;
    tool.description = def.description.clone();
    tool.input_schema = def.input_schema.clone();
    tool.output_schema = def.output_schema.clone();
}

/// Adds to `plan` what one listing of a server's tools changes (see
/// [`Registry::observe_listing`]).
#[allow(clippy::too_many_arguments)]
fn plan_observation(
    plan: &mut Plan,
    tenant: &TenantId,
    server: &ToolServer,
    tools: &[StoredTool],
    listed: &[ToolDefinition],
    who: &Who,
    via: Via,
    at: DateTime<Utc>,
) -> Observed {
    let pins: HashMap<String, Pin> = tools
        .iter()
        .filter_map(|t| t.tool.pin.clone().map(|p| (t.tool.name.clone(), p)))
        .collect();
    let mut out = Observed {
        findings: pin::compare(&pins, listed),
        ..Default::default()
    };
    out.removed = out
        .findings
        .iter()
        .filter(|f| matches!(f, Finding::Removed { .. }))
        .map(|f| f.name().to_owned())
        .collect();
    let known: HashMap<&str, &StoredTool> =
        tools.iter().map(|t| (t.tool.name.as_str(), t)).collect();
    let via_name = match via {
        Via::Listing => "listing",
        Via::Discovery => "discovery",
    };
    let mut seen = HashSet::new();
    for def in listed {
        if !seen.insert(def.name.as_str()) {
            continue;
        }
        let sha256 = pin::digest(def);
        let Some(stored) = known.get(def.name.as_str()) else {
            plan_new_tool(plan, tenant, server, def, who, via_name, at);
            out.new.push(def.name.clone());
            continue;
        };
        if stored.observed_sha256.as_deref() == Some(sha256.as_str()) {
            continue;
        }
        let mut tool = stored.tool.clone();
        refresh_description(&mut tool, def);
        if let Some(p) = stored.tool.pin.as_ref().filter(|p| p.sha256 != sha256) {
            let subject = Subject::Tool(server.name.clone(), def.name.clone());
            let from = tool.state;
            let blocks = server.pin_policy == PinPolicy::Block
                && matches!(from, State::Approved | State::Deprecated);
            if blocks {
                tool.state = State::PendingReview;
            }
            let action = match (server.pin_policy, blocks) {
                (PinPolicy::Warn, _) => "warn",
                (PinPolicy::Block, true) => "pending_review",
                (PinPolicy::Block, false) => "none",
            };
            let diff = pin::diff(&p.definition, def);
            let detail = json!({
                "old_sha256": p.sha256,
                "new_sha256": sha256,
                "previous_observed_sha256": stored.observed_sha256,
                "pin_policy": server.pin_policy,
                "action": action,
                "diff": diff,
                "via": via_name,
            });
            let mut payload = detail.clone();
            payload["server"] = json!(server.name);
            payload["tool"] = json!(def.name);
            payload["state"] = json!({"before": from, "after": tool.state});
            let e = event(
                tenant,
                tenant.as_str(),
                catalog::REGISTRY_TOOL_DEFINITION_CHANGED,
                who,
                "definition_changed",
                &subject,
                payload,
            );
            let mut rows = vec![history_row(
                who,
                &subject,
                ChangeKind::DefinitionChanged,
                Some(from),
                Some(tool.state),
                None,
                detail,
                at,
            )];
            if blocks {
                rows.push(history_row(
                    who,
                    &subject,
                    ChangeKind::Transition,
                    Some(from),
                    Some(State::PendingReview),
                    Some(
                        "its definition no longer matches the one pinned on approval (pin \
                         policy block)",
                    ),
                    json!({"transition": Transition::ReReview, "cause": "definition_changed"}),
                    at,
                ));
            }
            plan.record(e, rows);
            out.changed.push(def.name.clone());
        }
        plan.writes.push(RegistryWrite::UpdateTool {
            tool,
            observed: Some(def.clone()),
            expected_version: stored.version,
        });
    }
    out
}
