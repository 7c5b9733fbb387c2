//! What the store keeps about the registry (tool servers, tools, agents and the history of
//! their changes), and the shapes of registry writes and queries.
//!
//! A registry change is one [`RegistryChange`]: the records it inserts or updates, the history
//! rows that say what happened, and the audit events that record it. The store applies all of
//! it in one transaction or none of it: an update applies only if the record is still at the
//! version the writer read (optimistic concurrency), an insert only if the name (and, for a
//! server, the alias) is free. So two concurrent changes cannot both win, and a change is never
//! in force without its audit event, nor its event recorded without the change.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;
use warden_core::{AuditEvent, TenantId};
use warden_registry::model::{Agent, Category, RiskLevel, State, Tool, ToolServer};
use warden_registry::pin::ToolDefinition;

/// A server as stored: the record and the version its next update must name.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredServer {
    pub server: ToolServer,
    /// Starts at 1; every update adds one.
    pub version: i64,
}

/// A tool as stored: the record (with its pin), what its server listed last, and the version.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredTool {
    pub tool: Tool,
    /// The definition as the server listed it most recently (discovery or the gateway).
    pub observed: Option<ToolDefinition>,
    /// Its digest (`warden_registry::pin::digest`).
    pub observed_sha256: Option<String>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An agent as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredAgent {
    pub agent: Agent,
    pub version: i64,
}

/// One write of a [`RegistryChange`].
#[derive(Clone, Debug)]
pub enum RegistryWrite {
    /// A new server; `Conflict` when the tenant has one of that name or alias.
    InsertServer(ToolServer),
    /// Replaces the server's record if it is still at `expected_version`.
    UpdateServer {
        server: ToolServer,
        expected_version: i64,
    },
    /// A new tool of a stored server; `Conflict` when the server already has it.
    InsertTool {
        tool: Tool,
        observed: Option<ToolDefinition>,
    },
    /// Replaces the tool's record and observed definition if still at `expected_version`.
    UpdateTool {
        tool: Tool,
        observed: Option<ToolDefinition>,
        expected_version: i64,
    },
    InsertAgent(Agent),
    UpdateAgent {
        agent: Agent,
        expected_version: i64,
    },
}

/// Everything one registry change writes, applied all or nothing.
#[derive(Clone, Debug)]
pub struct RegistryChange {
    pub tenant: TenantId,
    pub writes: Vec<RegistryWrite>,
    pub history: Vec<HistoryEntry>,
    /// Appended to the tenant's audit log in the same transaction.
    pub events: Vec<AuditEvent>,
}

/// What a history row is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    Server,
    Tool,
    Agent,
}

impl SubjectKind {
    pub const ALL: [SubjectKind; 3] = [SubjectKind::Server, SubjectKind::Tool, SubjectKind::Agent];

    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Server => "server",
            SubjectKind::Tool => "tool",
            SubjectKind::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<SubjectKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The kind of change a history row records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Added to the registry (import, API, discovery, or first listed by its server).
    Registered,
    /// Metadata changed (the detail holds the fields before and after).
    Update,
    /// A lifecycle state change.
    Transition,
    /// A namespace scope entry was set or removed.
    Scope,
    /// A tool's definition was pinned (on approval).
    Pin,
    /// A server listed a pinned tool with another definition (the detail holds the diff).
    DefinitionChanged,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 6] = [
        ChangeKind::Registered,
        ChangeKind::Update,
        ChangeKind::Transition,
        ChangeKind::Scope,
        ChangeKind::Pin,
        ChangeKind::DefinitionChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Registered => "registered",
            ChangeKind::Update => "update",
            ChangeKind::Transition => "transition",
            ChangeKind::Scope => "scope",
            ChangeKind::Pin => "pin",
            ChangeKind::DefinitionChanged => "definition_changed",
        }
    }

    pub fn parse(s: &str) -> Option<ChangeKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One change to a server, tool or agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    /// UUIDv7, so entries sort by the time they were made.
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    pub subject_kind: SubjectKind,
    /// The server's name (also for its tools) or the agent's.
    pub subject: String,
    /// The tool's name, for entries about a tool.
    pub tool: Option<String>,
    pub kind: ChangeKind,
    pub from_state: Option<State>,
    pub to_state: Option<State>,
    pub reason: Option<String>,
    /// Who made it: `token:<id>`, `cli:<user>`, or `warden` for what Warden observed itself.
    pub by: String,
    #[schema(value_type = String, format = DateTime)]
    pub at: DateTime<Utc>,
    /// What changed, by kind: fields before and after, the scope entry, the pin digest, the diff.
    #[schema(value_type = Object)]
    pub detail: Value,
    /// The audit event recording the change.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub event_id: Option<Uuid>,
}

/// Which servers to list, by name. Filters combine with AND.
#[derive(Clone, Debug, Default)]
pub struct ServerFilter {
    pub state: Option<State>,
    pub owner: Option<String>,
    /// Names starting with this.
    pub name_prefix: Option<String>,
    /// Keyset cursor: only names after this one.
    pub after: Option<String>,
    pub limit: u32,
}

/// Which tools to list, by server then name. Filters combine with AND.
#[derive(Clone, Debug, Default)]
pub struct ToolFilter {
    pub server: Option<String>,
    pub state: Option<State>,
    pub risk: Option<RiskLevel>,
    /// Tools with this category among theirs.
    pub category: Option<Category>,
    pub owner: Option<String>,
    /// Tool names starting with this.
    pub name_prefix: Option<String>,
    /// Keyset cursor: only tools after this (server, tool).
    pub after: Option<(String, String)>,
    pub limit: u32,
}

/// Which agents to list, by name.
#[derive(Clone, Debug, Default)]
pub struct AgentFilter {
    pub owner: Option<String>,
    pub name_prefix: Option<String>,
    pub after: Option<String>,
    pub limit: u32,
}

/// Which history rows to list, newest first.
#[derive(Clone, Debug, Default)]
pub struct HistoryFilter {
    pub subject_kind: Option<SubjectKind>,
    pub subject: Option<String>,
    pub tool: Option<String>,
    /// Any of these kinds (all when empty).
    pub kinds: Vec<ChangeKind>,
    /// Keyset cursor: only rows older than this id.
    pub before: Option<Uuid>,
    pub limit: u32,
}

/// Every tenant's registry, for building the in-memory snapshot.
#[derive(Clone, Debug, Default)]
pub struct RegistryRows {
    pub servers: Vec<(TenantId, StoredServer)>,
    pub tools: Vec<(TenantId, StoredTool)>,
    pub agents: Vec<(TenantId, StoredAgent)>,
}

/// The `categories` column: `,read,write,` (`,` when there are none), so that one category
/// is found with `LIKE '%,read,%'` on any database.
pub fn categories_column(tool: &Tool) -> String {
    let mut s = String::from(",");
    for c in &tool.categories {
        s.push_str(c.as_str());
        s.push(',');
    }
    s
}
