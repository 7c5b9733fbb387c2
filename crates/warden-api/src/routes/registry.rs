//! The registry over REST, under `/api/v1/registry`: tool servers (imported from the official
//! `server.json` or registered natively), their tools, agents, lifecycle transitions, namespace
//! scopes, pins and the history of every change.
//!
//! Server names contain a `/` (`io.github.acme/deploy`); in a path they are one segment with
//! the `/` percent-encoded: `/api/v1/registry/servers/io.github.acme%2Fdeploy/tools`.
//!
//! Reads are for `admin`, `policy_admin`, `auditor` and `approver`; registering and changing
//! metadata for `admin` and `policy_admin`; state changes and scopes follow the lifecycle
//! rules (`warden_registry::lifecycle`, [`crate::registry::scope_roles`]). Every change is in
//! the audit trail before it is answered. Content errors (a `server.json` that does not pass,
//! a secret value where only a reference belongs, an alias or transport that is not usable)
//! are `422`; a duplicate, a transition the state does not allow, a change below a block or
//! a change someone else made first are `409`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{StatusCode, header};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;
use warden_core::{Error, NamespacePath, TenantId};
use warden_registry::model::{
    Agent, Category, Owner, RiskLevel, SECRET_FORMS, ScopeEffect, ServerName, State as ItemState,
    Tool, ToolServer,
};
use warden_registry::pin::{self, Pin, ToolDefinition};
use warden_registry::scope::{self, Effective};
use warden_registry::server_json::{
    ImportedServer, Repository, ServerJsonPackage, ServerJsonTransport,
};
use warden_store::{
    AgentFilter, ChangeKind, HistoryEntry, HistoryFilter, ServerFilter, StoredAgent, StoredServer,
    StoredTool, SubjectKind, ToolFilter,
};

use crate::extract::{Caller, JsonBody, check_json_content_type, parse_json, read_body};
use crate::problem::{ApiResult, Problem};
use crate::query::QueryParams;
use crate::registry::{
    AgentPatch, ImportError, NewAgent, NewServer, Record, ServerPatch, Subject, ToolPatch, Who,
    can_read,
};
use crate::routes::audit::{DEFAULT_PAGE, MAX_PAGE};
use crate::state::AppState;

/// The media type of a natively registered server (Warden's own record shape) on
/// `POST /servers`; any other JSON type is read as `server.json`.
pub const NATIVE_SERVER_MEDIA_TYPE: &str = "application/vnd.warden.server+json";

// --- Helpers -------------------------------------------------------------------------------

fn reader(caller: &Caller) -> Result<(), Problem> {
    caller.require(can_read(caller.role()), "read the registry")
}

fn who(caller: &Caller) -> Who {
    Who::token(&caller.token)
}

fn tenant(caller: &Caller) -> &TenantId {
    &caller.token.tenant
}

/// Errors of the registry service: content problems are 422 here (the body was valid JSON of
/// the right shape, but what it says cannot be registered).
fn reg_err(e: Error) -> Problem {
    match e {
        Error::Invalid(m) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-registry-record",
            m,
        ),
        e => e.into(),
    }
}

fn problems_422(detail: String, problems: Vec<String>) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-registry-record",
        detail,
    )
    .with_errors(problems)
}

/// Deserializes a body already read as JSON. A secret value where only a reference belongs
/// is 422 (the message never repeats the value); other shape errors are 400, as everywhere.
fn typed<T: DeserializeOwned>(v: Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let at = if path.is_empty() || path == "." {
            String::new()
        } else {
            format!(" at `{path}`")
        };
        if inner.contains(SECRET_FORMS) {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "secret-value",
                format!("refused{at}: {inner}; nothing was stored"),
            )
        } else {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-json",
                format!("invalid value{at}: {inner}"),
            )
        }
    })
}

/// A server name from a path segment (`io.github.acme%2Fdeploy`, already decoded).
fn server_name(raw: &str) -> Result<ServerName, Problem> {
    ServerName::parse(raw).map_err(|e| {
        let hint = if raw.contains('/') {
            String::new()
        } else {
            " (a server name contains '/': percent-encode it as %2F in the path, \
             e.g. io.github.acme%2Fdeploy)"
                .to_owned()
        };
        Problem::from(Error::not_found(format!(
            "server {raw:?} not found: {e}{hint}"
        )))
    })
}

/// The namespace an effective status is asked for: the caller's tenant's, and within its
/// token's scope.
fn namespace_param(
    caller: &Caller,
    raw: &Option<String>,
) -> Result<Option<NamespacePath>, Problem> {
    raw.as_deref()
        .map(|n| {
            let ns = NamespacePath::parse(n)?;
            caller.check_namespace(&ns)?;
            Ok::<_, Problem>(ns)
        })
        .transpose()
}

fn page_limit(limit: Option<u32>) -> u32 {
    limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
}

/// Keyset cursors are opaque: the hex of the last item's key.
fn encode_cursor(parts: &[&str]) -> String {
    hex::encode(parts.join("\n"))
}

fn decode_cursor(c: &Option<String>, parts: usize) -> Result<Option<Vec<String>>, Problem> {
    let bad = || Problem::from(Error::invalid("`cursor` is not one this API returned"));
    c.as_deref()
        .map(|c| {
            let bytes = hex::decode(c).map_err(|_| bad())?;
            let text = String::from_utf8(bytes).map_err(|_| bad())?;
            let v: Vec<String> = text.splitn(parts, '\n').map(str::to_owned).collect();
            if v.len() == parts { Ok(v) } else { Err(bad()) }
        })
        .transpose()
}

/// Servers looked up once per request, for tools' effective statuses.
struct Servers<'a> {
    state: &'a AppState,
    tenant: &'a TenantId,
    seen: HashMap<String, Option<ToolServer>>,
}

impl<'a> Servers<'a> {
    fn new(state: &'a AppState, tenant: &'a TenantId) -> Self {
        Servers {
            state,
            tenant,
            seen: HashMap::new(),
        }
    }

    async fn get(&mut self, name: &ServerName) -> Result<Option<&ToolServer>, Problem> {
        if !self.seen.contains_key(name.as_str()) {
            let s = self
                .state
                .store
                .get_server(self.tenant, name.as_str())
                .await?
                .map(|s| s.server);
            self.seen.insert(name.to_string(), s);
        }
        Ok(self.seen[name.as_str()].as_ref())
    }
}

// --- Views ---------------------------------------------------------------------------------

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServerView {
    #[serde(flatten)]
    pub server: ToolServer,
    /// Starts at 1 and grows with every change of the record.
    pub record_version: i64,
    /// Its status in the `namespace` asked for (`?namespace=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective: Option<Effective>,
}

impl ServerView {
    fn of(s: StoredServer, ns: Option<&NamespacePath>) -> ServerView {
        ServerView {
            effective: ns.map(|ns| scope::effective(s.server.state, &s.server.scopes, ns)),
            record_version: s.version,
            server: s.server,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ToolView {
    #[serde(flatten)]
    pub tool: Tool,
    pub record_version: i64,
    /// Digest of the definition its server listed last.
    pub observed_sha256: Option<String>,
    /// Whether that definition is the pinned one (absent without a pin or an observation).
    pub matches_pin: Option<bool>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
    /// Its status in the `namespace` asked for, its server's scopes and state included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective: Option<Effective>,
}

impl ToolView {
    fn of(t: StoredTool, server: Option<&ToolServer>, ns: Option<&NamespacePath>) -> ToolView {
        let matches_pin = match (&t.tool.pin, &t.observed_sha256) {
            (Some(p), Some(o)) => Some(&p.sha256 == o),
            _ => None,
        };
        ToolView {
            effective: match (ns, server) {
                (Some(ns), Some(s)) => Some(scope::effective_tool(s, &t.tool, ns)),
                _ => None,
            },
            record_version: t.version,
            observed_sha256: t.observed_sha256,
            matches_pin,
            created_at: t.created_at,
            updated_at: t.updated_at,
            tool: t.tool,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentView {
    #[serde(flatten)]
    pub agent: Agent,
    pub record_version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective: Option<Effective>,
}

impl AgentView {
    fn of(a: StoredAgent, ns: Option<&NamespacePath>) -> AgentView {
        AgentView {
            effective: ns.map(|ns| scope::effective_agent(&a.agent.scopes, ns)),
            record_version: a.version,
            agent: a.agent,
        }
    }
}

/// What an import read besides the registry record (returned once, not stored).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportInfo {
    /// The `$schema` the file declared (or the newest accepted one).
    pub schema: String,
    /// Where the transport came from (`$.packages[0]`, `$.remotes[1]`), if anywhere.
    pub transport_from: Option<String>,
    pub website_url: Option<String>,
    pub repository: Option<Repository>,
    pub packages: Vec<ServerJsonPackage>,
    pub remotes: Vec<ServerJsonTransport>,
}

impl From<ImportedServer> for ImportInfo {
    fn from(i: ImportedServer) -> Self {
        ImportInfo {
            schema: i.schema,
            transport_from: i.transport_from,
            website_url: i.website_url,
            repository: i.repository,
            packages: i.packages,
            remotes: i.remotes,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedServer {
    #[serde(flatten)]
    pub server: ServerView,
    /// Present for a `server.json` import.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportInfo>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServerPage {
    pub servers: Vec<ServerView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ToolPage {
    pub tools: Vec<ToolView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentPage {
    pub agents: Vec<AgentView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryPage {
    /// Newest first.
    pub entries: Vec<HistoryEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServerTransitionView {
    pub server: ServerView,
    /// The tools approved and pinned with it (`include_tools`).
    pub tools: Vec<ToolView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ObservedDefinition {
    pub sha256: String,
    pub definition: ToolDefinition,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PinsView {
    pub server: ServerName,
    pub tool: String,
    pub state: ItemState,
    /// The definition as approved.
    pub pin: Option<Pin>,
    /// The definition as its server listed it last.
    pub observed: Option<ObservedDefinition>,
    /// A readable diff from the pin to the observed definition, when they differ.
    pub diff_from_pin: Option<String>,
    /// Pins and definition changes, newest first (`kind` `pin` or `definition_changed`; the
    /// detail holds the digests and the diff).
    pub history: Vec<HistoryEntry>,
}

// --- Request bodies and queries ------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerTransitionBody {
    /// The state to move to.
    pub to: ItemState,
    /// Why; kept in the history and the audit event.
    pub reason: String,
    /// When approving: approve and pin every `pending_review` tool of the server as well.
    #[serde(default)]
    pub include_tools: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionBody {
    pub to: ItemState,
    pub reason: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeBody {
    /// The namespace (and everything below it) the entry applies to.
    pub namespace: NamespacePath,
    pub effect: ScopeEffect,
    pub reason: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeRemoval {
    /// The namespace whose entry is removed.
    pub namespace: NamespacePath,
    pub reason: String,
    /// If given, the entry must have this effect.
    #[serde(default)]
    pub effect: Option<ScopeEffect>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ServerQuery {
    /// `pending_review`, `approved`, `deprecated` or `blocked`.
    pub state: Option<ItemState>,
    pub owner: Option<String>,
    /// Names starting with this.
    pub name_prefix: Option<String>,
    /// Add each server's effective status in this namespace.
    pub namespace: Option<String>,
    /// Page size (default 100, at most 1,000).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ToolQuery {
    /// Only this server's tools (its name, `/` and all).
    pub server: Option<String>,
    pub state: Option<ItemState>,
    /// `low`, `medium`, `high` or `critical`.
    pub risk: Option<RiskLevel>,
    /// Tools with this category among theirs.
    pub category: Option<Category>,
    pub owner: Option<String>,
    /// Tool names starting with this.
    pub name_prefix: Option<String>,
    /// Add each tool's effective status in this namespace.
    pub namespace: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ServerToolQuery {
    pub state: Option<ItemState>,
    pub risk: Option<RiskLevel>,
    pub category: Option<Category>,
    pub owner: Option<String>,
    pub name_prefix: Option<String>,
    pub namespace: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AgentQuery {
    pub owner: Option<String>,
    pub name_prefix: Option<String>,
    /// Add each agent's effective status in this namespace.
    pub namespace: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ItemQuery {
    /// Add the effective status in this namespace.
    pub namespace: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// The owner (a user id or `team:<name>`); the caller when absent.
    pub owner: Option<String>,
    /// The gateway alias; derived from the name when absent.
    pub alias: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// `server`, `tool` or `agent`.
    pub subject_kind: Option<SubjectKind>,
    /// A server's name (also for its tools) or an agent's.
    pub subject: Option<String>,
    /// A tool's name.
    pub tool: Option<String>,
    /// `registered`, `update`, `transition`, `scope`, `pin` or `definition_changed`.
    pub kind: Option<ChangeKind>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The body of `POST /servers`: a `server.json` document, or (with
/// `Content-Type: application/vnd.warden.server+json`) a natively registered server.
pub enum ServerBody {
    ServerJson(Value),
    Native(Value),
}

impl FromRequest<AppState> for ServerBody {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Problem> {
        check_json_content_type(req.headers())?;
        let native = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.to_ascii_lowercase()
                    .starts_with(NATIVE_SERVER_MEDIA_TYPE)
            });
        let bytes = read_body(req, state).await?;
        let value: Value = parse_json(&bytes)?;
        Ok(if native {
            ServerBody::Native(value)
        } else {
            ServerBody::ServerJson(value)
        })
    }
}

// --- Servers -------------------------------------------------------------------------------

#[utoipa::path(
    get, path = "/api/v1/registry/servers", tag = "registry", params(ServerQuery),
    responses((status = 200, description = "By name, keyset-paginated", body = ServerPage),
              (status = 400, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []))
)]
pub async fn list_servers(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<ServerQuery>,
) -> ApiResult<Json<ServerPage>> {
    reader(&caller)?;
    let ns = namespace_param(&caller, &q.namespace)?;
    let limit = page_limit(q.limit);
    let after = decode_cursor(&q.cursor, 1)?.map(|mut v| v.remove(0));
    let rows = state
        .store
        .list_servers(
            tenant(&caller),
            &ServerFilter {
                state: q.state,
                owner: q.owner,
                name_prefix: q.name_prefix,
                after,
                limit,
            },
        )
        .await?;
    let next_cursor = (rows.len() as u32 == limit)
        .then(|| {
            rows.last()
                .map(|s| encode_cursor(&[s.server.name.as_str()]))
        })
        .flatten();
    Ok(Json(ServerPage {
        servers: rows
            .into_iter()
            .map(|s| ServerView::of(s, ns.as_ref()))
            .collect(),
        next_cursor,
    }))
}

#[utoipa::path(
    post, path = "/api/v1/registry/servers", tag = "registry", params(ImportQuery),
    request_body(
        description = "The official MCP registry `server.json` (schema 2025-12-11; also 2025-10-17 and 2025-09-29) as `application/json`, or a natively registered server (`NewServer`) as `application/vnd.warden.server+json`.",
        content(
            (Object = "application/json"),
            (NewServer = "application/vnd.warden.server+json"),
        )
    ),
    responses(
        (status = 201, description = "Registered in pending_review and recorded", body = CreatedServer),
        (status = 400, description = "Not JSON, or a native body of the wrong shape", body = Problem),
        (status = 403, description = "Role may not register servers", body = Problem),
        (status = 409, description = "The tenant already has a server of that name, or the alias is taken", body = Problem),
        (status = 422, description = "The document does not pass: `errors` lists every problem as `<JSON path>: <message>`; or a secret value was given where only a reference belongs", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn create_server(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<ImportQuery>,
    body: ServerBody,
) -> ApiResult<(StatusCode, Json<CreatedServer>)> {
    let who = who(&caller);
    let registry = &state.registry;
    let created = match body {
        ServerBody::ServerJson(doc) => {
            let owner = q
                .owner
                .as_deref()
                .map(Owner::parse)
                .transpose()
                .map_err(|e| reg_err(Error::Invalid(e)))?;
            match registry
                .import_server_json(tenant(&caller), &doc, owner, q.alias, &who)
                .await
            {
                Ok((stored, imported)) => CreatedServer {
                    server: ServerView::of(stored, None),
                    import: Some(imported.into()),
                },
                Err(ImportError::Problems(problems)) => {
                    return Err(problems_422(
                        format!(
                            "the server.json was not imported: {} problem(s); nothing was stored",
                            problems.len()
                        ),
                        problems.iter().map(ToString::to_string).collect(),
                    ));
                }
                Err(ImportError::Other(e)) => return Err(reg_err(e)),
            }
        }
        ServerBody::Native(v) => {
            if q.owner.is_some() || q.alias.is_some() {
                return Err(Error::invalid(
                    "`owner` and `alias` belong in the body of a natively registered server",
                )
                .into());
            }
            let new: NewServer = typed(v)?;
            let stored = registry
                .register_server(tenant(&caller), new, &who)
                .await
                .map_err(reg_err)?;
            CreatedServer {
                server: ServerView::of(stored, None),
                import: None,
            }
        }
    };
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    get, path = "/api/v1/registry/servers/{name}", tag = "registry",
    params(("name" = String, Path, description = "The server's name with its `/` percent-encoded: `io.github.acme%2Fdeploy`"), ItemQuery),
    responses((status = 200, body = ServerView), (status = 404, body = Problem)),
    security(("bearer" = []))
)]
pub async fn get_server(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<ItemQuery>,
) -> ApiResult<Json<ServerView>> {
    reader(&caller)?;
    let ns = namespace_param(&caller, &q.namespace)?;
    let name = server_name(&name)?;
    let s = state
        .store
        .get_server(tenant(&caller), name.as_str())
        .await?
        .ok_or_else(|| Subject::Server(name.clone()))
        .map_err(not_found)?;
    Ok(Json(ServerView::of(s, ns.as_ref())))
}

fn not_found(s: Subject) -> Problem {
    let what = match s {
        Subject::Server(n) => format!("server {n}"),
        Subject::Tool(n, t) => format!("tool {t:?} of server {n}"),
        Subject::Agent(a) => format!("agent {a:?}"),
    };
    Error::not_found(format!("{what} not found in the registry")).into()
}

#[utoipa::path(
    patch, path = "/api/v1/registry/servers/{name}", tag = "registry",
    params(("name" = String, Path, description = "The server's name with its `/` percent-encoded")),
    request_body = ServerPatch,
    responses(
        (status = 200, description = "Changed and recorded (or unchanged)", body = ServerView),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "Alias taken, or changed by someone else meanwhile", body = Problem),
        (status = 422, description = "Not usable (alias, transport, a secret value)", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn patch_server(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<ServerView>> {
    let name = server_name(&name)?;
    let patch: ServerPatch = typed(body)?;
    let s = state
        .registry
        .update_server(tenant(&caller), &name, patch, &who(&caller))
        .await
        .map_err(reg_err)?;
    Ok(Json(ServerView::of(s, None)))
}

#[utoipa::path(
    post, path = "/api/v1/registry/servers/{name}/transitions", tag = "registry",
    params(("name" = String, Path, description = "The server's name with its `/` percent-encoded")),
    request_body = ServerTransitionBody,
    responses(
        (status = 200, description = "Changed and recorded", body = ServerTransitionView),
        (status = 403, description = "The caller's role may not make this transition", body = Problem),
        (status = 404, body = Problem),
        (status = 409, description = "Not allowed from the current state (the message lists the allowed targets); or a tool to include has no definition to pin", body = Problem),
        (status = 422, description = "No reason given", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn transition_server(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<ServerTransitionBody>,
) -> ApiResult<Json<ServerTransitionView>> {
    let name = server_name(&name)?;
    let t = state
        .registry
        .transition_server(
            tenant(&caller),
            &name,
            body.to,
            &body.reason,
            body.include_tools,
            &who(&caller),
        )
        .await
        .map_err(reg_err)?;
    let server = t.server.server.clone();
    Ok(Json(ServerTransitionView {
        tools: t
            .tools
            .into_iter()
            .map(|tool| ToolView::of(tool, Some(&server), None))
            .collect(),
        server: ServerView::of(t.server, None),
    }))
}

#[utoipa::path(
    put, path = "/api/v1/registry/servers/{name}/scopes", tag = "registry",
    params(("name" = String, Path, description = "The server's name with its `/` percent-encoded")),
    request_body = ScopeBody,
    responses(
        (status = 200, description = "Set (replacing an entry at the same namespace) and recorded", body = ServerView),
        (status = 403, description = "Role may not set this effect, or the namespace is outside the token's scope", body = Problem),
        (status = 404, body = Problem),
        (status = 409, description = "Below a block: a block is final and read-only below", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn put_server_scope(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<ScopeBody>,
) -> ApiResult<Json<ServerView>> {
    let subject = Subject::Server(server_name(&name)?);
    let ns = body.namespace.clone();
    match set_scope(&state, &caller, &subject, body).await? {
        Record::Server(s) => Ok(Json(ServerView::of(s, Some(&ns)))),
        _ => Err(Error::internal("scope change returned another kind of record").into()),
    }
}

#[utoipa::path(
    delete, path = "/api/v1/registry/servers/{name}/scopes", tag = "registry",
    params(("name" = String, Path, description = "The server's name with its `/` percent-encoded")),
    request_body = ScopeRemoval,
    responses(
        (status = 200, description = "Removed and recorded", body = ServerView),
        (status = 403, body = Problem),
        (status = 404, description = "No such server, or no entry at that namespace", body = Problem),
        (status = 409, description = "Below a block", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn delete_server_scope(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<ScopeRemoval>,
) -> ApiResult<Json<ServerView>> {
    let subject = Subject::Server(server_name(&name)?);
    let ns = body.namespace.clone();
    match remove_scope(&state, &caller, &subject, body).await? {
        Record::Server(s) => Ok(Json(ServerView::of(s, Some(&ns)))),
        _ => Err(Error::internal("scope change returned another kind of record").into()),
    }
}

async fn set_scope(
    state: &AppState,
    caller: &Caller,
    subject: &Subject,
    body: ScopeBody,
) -> Result<Record, Problem> {
    state
        .registry
        .set_scope(
            tenant(caller),
            subject,
            &body.namespace,
            body.effect,
            &body.reason,
            &who(caller),
        )
        .await
        .map_err(reg_err)
}

async fn remove_scope(
    state: &AppState,
    caller: &Caller,
    subject: &Subject,
    body: ScopeRemoval,
) -> Result<Record, Problem> {
    if let Some(effect) = body.effect {
        // Checked against what is stored, so a caller removing "the enable" never removes a block.
        let stored = scopes_of(state, caller, subject).await?;
        match stored.iter().find(|e| e.namespace == body.namespace) {
            Some(e) if e.effect != effect => {
                return Err(Error::Conflict(format!(
                    "the entry at {} is {}, not {}",
                    body.namespace,
                    e.effect.as_str(),
                    effect.as_str()
                ))
                .into());
            }
            _ => {}
        }
    }
    state
        .registry
        .remove_scope(
            tenant(caller),
            subject,
            &body.namespace,
            &body.reason,
            &who(caller),
        )
        .await
        .map_err(reg_err)
}

async fn scopes_of(
    state: &AppState,
    caller: &Caller,
    subject: &Subject,
) -> Result<Vec<warden_registry::model::ScopeEntry>, Problem> {
    let t = tenant(caller);
    let found = match subject {
        Subject::Server(s) => state
            .store
            .get_server(t, s.as_str())
            .await?
            .map(|s| s.server.scopes),
        Subject::Tool(s, n) => state
            .store
            .get_tool(t, s.as_str(), n)
            .await?
            .map(|t| t.tool.scopes),
        Subject::Agent(a) => state.store.get_agent(t, a).await?.map(|a| a.agent.scopes),
    };
    found.ok_or_else(|| not_found(subject.clone()))
}

// --- Tools ---------------------------------------------------------------------------------

async fn tool_page(
    state: &AppState,
    caller: &Caller,
    filter: ToolFilter,
    ns: Option<NamespacePath>,
) -> Result<ToolPage, Problem> {
    let limit = filter.limit;
    let rows = state.store.list_tools(tenant(caller), &filter).await?;
    let next_cursor = (rows.len() as u32 == limit)
        .then(|| {
            rows.last()
                .map(|t| encode_cursor(&[t.tool.server.as_str(), &t.tool.name]))
        })
        .flatten();
    let mut servers = Servers::new(state, tenant(caller));
    let mut tools = Vec::with_capacity(rows.len());
    for t in rows {
        let server = match &ns {
            Some(_) => servers.get(&t.tool.server).await?.cloned(),
            None => None,
        };
        tools.push(ToolView::of(t, server.as_ref(), ns.as_ref()));
    }
    Ok(ToolPage { tools, next_cursor })
}

fn tool_cursor(c: &Option<String>) -> Result<Option<(String, String)>, Problem> {
    Ok(decode_cursor(c, 2)?.map(|mut v| {
        let name = v.pop().unwrap_or_default();
        (v.pop().unwrap_or_default(), name)
    }))
}

#[utoipa::path(
    get, path = "/api/v1/registry/tools", tag = "registry", params(ToolQuery),
    responses((status = 200, description = "By server, then name; keyset-paginated", body = ToolPage),
              (status = 400, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []))
)]
pub async fn list_tools(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<ToolQuery>,
) -> ApiResult<Json<ToolPage>> {
    reader(&caller)?;
    let ns = namespace_param(&caller, &q.namespace)?;
    let filter = ToolFilter {
        server: q.server,
        state: q.state,
        risk: q.risk,
        category: q.category,
        owner: q.owner,
        name_prefix: q.name_prefix,
        after: tool_cursor(&q.cursor)?,
        limit: page_limit(q.limit),
    };
    Ok(Json(tool_page(&state, &caller, filter, ns).await?))
}

#[utoipa::path(
    get, path = "/api/v1/registry/servers/{name}/tools", tag = "registry",
    params(("name" = String, Path, description = "The server's name with its `/` percent-encoded"), ServerToolQuery),
    responses((status = 200, description = "By name, keyset-paginated", body = ToolPage), (status = 404, body = Problem)),
    security(("bearer" = []))
)]
pub async fn list_server_tools(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<ServerToolQuery>,
) -> ApiResult<Json<ToolPage>> {
    reader(&caller)?;
    let ns = namespace_param(&caller, &q.namespace)?;
    let name = server_name(&name)?;
    if state
        .store
        .get_server(tenant(&caller), name.as_str())
        .await?
        .is_none()
    {
        return Err(not_found(Subject::Server(name)));
    }
    let filter = ToolFilter {
        server: Some(name.to_string()),
        state: q.state,
        risk: q.risk,
        category: q.category,
        owner: q.owner,
        name_prefix: q.name_prefix,
        after: tool_cursor(&q.cursor)?,
        limit: page_limit(q.limit),
    };
    Ok(Json(tool_page(&state, &caller, filter, ns).await?))
}

#[utoipa::path(
    post, path = "/api/v1/registry/servers/{name}/tools", tag = "registry",
    params(("name" = String, Path, description = "The server's name with its `/` percent-encoded")),
    request_body(content = Object, description = "The tool as MCP `tools/list` gives it: name, description, inputSchema, outputSchema, annotations"),
    responses(
        (status = 201, description = "Registered in pending_review with proposed categories and risk", body = ToolView),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "The server already has a tool of that name", body = Problem),
        (status = 422, description = "Not an MCP tool definition", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn create_tool(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<(StatusCode, Json<ToolView>)> {
    let name = server_name(&name)?;
    let def = ToolDefinition::from_mcp(&body).map_err(|e| reg_err(Error::Invalid(e)))?;
    let t = state
        .registry
        .register_tool(tenant(&caller), &name, def, &who(&caller))
        .await
        .map_err(reg_err)?;
    Ok((StatusCode::CREATED, Json(ToolView::of(t, None, None))))
}

async fn find_tool(
    state: &AppState,
    caller: &Caller,
    server: &ServerName,
    tool: &str,
) -> Result<StoredTool, Problem> {
    state
        .store
        .get_tool(tenant(caller), server.as_str(), tool)
        .await?
        .ok_or_else(|| not_found(Subject::Tool(server.clone(), tool.to_owned())))
}

#[utoipa::path(
    get, path = "/api/v1/registry/servers/{name}/tools/{tool}", tag = "registry",
    params(("name" = String, Path, description = "The server's name with its `/` percent-encoded"),
           ("tool" = String, Path, description = "The tool's name as its server lists it"), ItemQuery),
    responses((status = 200, body = ToolView), (status = 404, body = Problem)),
    security(("bearer" = []))
)]
pub async fn get_tool(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, tool)): Path<(String, String)>,
    QueryParams(q): QueryParams<ItemQuery>,
) -> ApiResult<Json<ToolView>> {
    reader(&caller)?;
    let ns = namespace_param(&caller, &q.namespace)?;
    let name = server_name(&name)?;
    let t = find_tool(&state, &caller, &name, &tool).await?;
    let server = match &ns {
        Some(_) => state
            .store
            .get_server(tenant(&caller), name.as_str())
            .await?
            .map(|s| s.server),
        None => None,
    };
    Ok(Json(ToolView::of(t, server.as_ref(), ns.as_ref())))
}

#[utoipa::path(
    patch, path = "/api/v1/registry/servers/{name}/tools/{tool}", tag = "registry",
    params(("name" = String, Path, description = "The server's name with its `/` percent-encoded"),
           ("tool" = String, Path, description = "The tool's name")),
    request_body = ToolPatch,
    responses(
        (status = 200, description = "Changed and recorded (or unchanged)", body = ToolView),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn patch_tool(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, tool)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<ToolView>> {
    let name = server_name(&name)?;
    let patch: ToolPatch = typed(body)?;
    let t = state
        .registry
        .update_tool(tenant(&caller), &name, &tool, patch, &who(&caller))
        .await
        .map_err(reg_err)?;
    Ok(Json(ToolView::of(t, None, None)))
}

#[utoipa::path(
    post, path = "/api/v1/registry/servers/{name}/tools/{tool}/transitions", tag = "registry",
    params(("name" = String, Path, description = "The server's name with its `/` percent-encoded"),
           ("tool" = String, Path, description = "The tool's name")),
    request_body = TransitionBody,
    responses(
        (status = 200, description = "Changed and recorded; approving pins the last observed definition", body = ToolView),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "Not allowed from the current state, or nothing to pin", body = Problem),
        (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn transition_tool(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, tool)): Path<(String, String)>,
    JsonBody(body): JsonBody<TransitionBody>,
) -> ApiResult<Json<ToolView>> {
    let name = server_name(&name)?;
    let t = state
        .registry
        .transition_tool(
            tenant(&caller),
            &name,
            &tool,
            body.to,
            &body.reason,
            &who(&caller),
        )
        .await
        .map_err(reg_err)?;
    Ok(Json(ToolView::of(t, None, None)))
}

async fn tool_scope_view(
    state: &AppState,
    caller: &Caller,
    record: Record,
    ns: &NamespacePath,
) -> Result<ToolView, Problem> {
    let Record::Tool(t) = record else {
        return Err(Error::internal("scope change returned another kind of record").into());
    };
    let server = state
        .store
        .get_server(tenant(caller), t.tool.server.as_str())
        .await?
        .map(|s| s.server);
    Ok(ToolView::of(t, server.as_ref(), Some(ns)))
}

#[utoipa::path(
    put, path = "/api/v1/registry/servers/{name}/tools/{tool}/scopes", tag = "registry",
    params(("name" = String, Path, description = "The server's name with its `/` percent-encoded"),
           ("tool" = String, Path, description = "The tool's name")),
    request_body = ScopeBody,
    responses((status = 200, body = ToolView), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, description = "Below a block", body = Problem)),
    security(("bearer" = []))
)]
pub async fn put_tool_scope(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, tool)): Path<(String, String)>,
    JsonBody(body): JsonBody<ScopeBody>,
) -> ApiResult<Json<ToolView>> {
    let subject = Subject::Tool(server_name(&name)?, tool);
    let ns = body.namespace.clone();
    let record = set_scope(&state, &caller, &subject, body).await?;
    Ok(Json(tool_scope_view(&state, &caller, record, &ns).await?))
}

#[utoipa::path(
    delete, path = "/api/v1/registry/servers/{name}/tools/{tool}/scopes", tag = "registry",
    params(("name" = String, Path, description = "The server's name with its `/` percent-encoded"),
           ("tool" = String, Path, description = "The tool's name")),
    request_body = ScopeRemoval,
    responses((status = 200, body = ToolView), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem)),
    security(("bearer" = []))
)]
pub async fn delete_tool_scope(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, tool)): Path<(String, String)>,
    JsonBody(body): JsonBody<ScopeRemoval>,
) -> ApiResult<Json<ToolView>> {
    let subject = Subject::Tool(server_name(&name)?, tool);
    let ns = body.namespace.clone();
    let record = remove_scope(&state, &caller, &subject, body).await?;
    Ok(Json(tool_scope_view(&state, &caller, record, &ns).await?))
}

#[utoipa::path(
    get, path = "/api/v1/registry/servers/{name}/tools/{tool}/pins", tag = "registry",
    params(("name" = String, Path, description = "The server's name with its `/` percent-encoded"),
           ("tool" = String, Path, description = "The tool's name")),
    responses((status = 200, description = "The pin, the last observed definition, and the pin history with diffs", body = PinsView),
              (status = 404, body = Problem)),
    security(("bearer" = []))
)]
pub async fn tool_pins(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, tool)): Path<(String, String)>,
) -> ApiResult<Json<PinsView>> {
    reader(&caller)?;
    let name = server_name(&name)?;
    let t = find_tool(&state, &caller, &name, &tool).await?;
    let history = state
        .store
        .registry_history(
            tenant(&caller),
            &HistoryFilter {
                subject_kind: Some(SubjectKind::Tool),
                subject: Some(name.to_string()),
                tool: Some(tool.clone()),
                kinds: vec![ChangeKind::Pin, ChangeKind::DefinitionChanged],
                before: None,
                limit: MAX_PAGE,
            },
        )
        .await?;
    let diff_from_pin = match (&t.tool.pin, &t.observed) {
        (Some(p), Some(o)) if !p.matches(o) => Some(pin::diff(&p.definition, o)),
        _ => None,
    };
    Ok(Json(PinsView {
        server: name,
        tool,
        state: t.tool.state,
        observed: match (t.observed, t.observed_sha256) {
            (Some(definition), Some(sha256)) => Some(ObservedDefinition { sha256, definition }),
            _ => None,
        },
        pin: t.tool.pin,
        diff_from_pin,
        history,
    }))
}

// --- Agents --------------------------------------------------------------------------------

#[utoipa::path(
    get, path = "/api/v1/registry/agents", tag = "registry", params(AgentQuery),
    responses((status = 200, description = "By name, keyset-paginated", body = AgentPage),
              (status = 400, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []))
)]
pub async fn list_agents(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<AgentQuery>,
) -> ApiResult<Json<AgentPage>> {
    reader(&caller)?;
    let ns = namespace_param(&caller, &q.namespace)?;
    let limit = page_limit(q.limit);
    let rows = state
        .store
        .list_agents(
            tenant(&caller),
            &AgentFilter {
                owner: q.owner,
                name_prefix: q.name_prefix,
                after: decode_cursor(&q.cursor, 1)?.map(|mut v| v.remove(0)),
                limit,
            },
        )
        .await?;
    let next_cursor = (rows.len() as u32 == limit)
        .then(|| rows.last().map(|a| encode_cursor(&[&a.agent.name])))
        .flatten();
    Ok(Json(AgentPage {
        agents: rows
            .into_iter()
            .map(|a| AgentView::of(a, ns.as_ref()))
            .collect(),
        next_cursor,
    }))
}

#[utoipa::path(
    post, path = "/api/v1/registry/agents", tag = "registry", request_body = NewAgent,
    responses((status = 201, body = AgentView), (status = 403, body = Problem),
              (status = 409, description = "The tenant already has an agent of that name", body = Problem),
              (status = 422, body = Problem)),
    security(("bearer" = []))
)]
pub async fn create_agent(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<NewAgent>,
) -> ApiResult<(StatusCode, Json<AgentView>)> {
    let a = state
        .registry
        .register_agent(tenant(&caller), body, &who(&caller))
        .await
        .map_err(reg_err)?;
    Ok((StatusCode::CREATED, Json(AgentView::of(a, None))))
}

#[utoipa::path(
    get, path = "/api/v1/registry/agents/{name}", tag = "registry",
    params(("name" = String, Path, description = "The agent's name"), ItemQuery),
    responses((status = 200, body = AgentView), (status = 404, body = Problem)),
    security(("bearer" = []))
)]
pub async fn get_agent(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<ItemQuery>,
) -> ApiResult<Json<AgentView>> {
    reader(&caller)?;
    let ns = namespace_param(&caller, &q.namespace)?;
    let a = state
        .store
        .get_agent(tenant(&caller), &name)
        .await?
        .ok_or_else(|| not_found(Subject::Agent(name.clone())))?;
    Ok(Json(AgentView::of(a, ns.as_ref())))
}

#[utoipa::path(
    patch, path = "/api/v1/registry/agents/{name}", tag = "registry",
    params(("name" = String, Path, description = "The agent's name")),
    request_body = AgentPatch,
    responses((status = 200, body = AgentView), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem)),
    security(("bearer" = []))
)]
pub async fn patch_agent(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<AgentPatch>,
) -> ApiResult<Json<AgentView>> {
    let a = state
        .registry
        .update_agent(tenant(&caller), &name, body, &who(&caller))
        .await
        .map_err(reg_err)?;
    Ok(Json(AgentView::of(a, None)))
}

#[utoipa::path(
    put, path = "/api/v1/registry/agents/{name}/scopes", tag = "registry",
    params(("name" = String, Path, description = "The agent's name")),
    request_body = ScopeBody,
    responses((status = 200, body = AgentView), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, description = "Below a block", body = Problem)),
    security(("bearer" = []))
)]
pub async fn put_agent_scope(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<ScopeBody>,
) -> ApiResult<Json<AgentView>> {
    let ns = body.namespace.clone();
    match set_scope(&state, &caller, &Subject::Agent(name), body).await? {
        Record::Agent(a) => Ok(Json(AgentView::of(a, Some(&ns)))),
        _ => Err(Error::internal("scope change returned another kind of record").into()),
    }
}

#[utoipa::path(
    delete, path = "/api/v1/registry/agents/{name}/scopes", tag = "registry",
    params(("name" = String, Path, description = "The agent's name")),
    request_body = ScopeRemoval,
    responses((status = 200, body = AgentView), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem)),
    security(("bearer" = []))
)]
pub async fn delete_agent_scope(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<ScopeRemoval>,
) -> ApiResult<Json<AgentView>> {
    let ns = body.namespace.clone();
    match remove_scope(&state, &caller, &Subject::Agent(name), body).await? {
        Record::Agent(a) => Ok(Json(AgentView::of(a, Some(&ns)))),
        _ => Err(Error::internal("scope change returned another kind of record").into()),
    }
}

// --- History -------------------------------------------------------------------------------

#[utoipa::path(
    get, path = "/api/v1/registry/history", tag = "registry", params(HistoryQuery),
    responses((status = 200, description = "Every change, newest first, keyset-paginated", body = HistoryPage),
              (status = 400, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []))
)]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<HistoryQuery>,
) -> ApiResult<Json<HistoryPage>> {
    reader(&caller)?;
    let limit = page_limit(q.limit);
    let before = q
        .cursor
        .as_deref()
        .map(|c| {
            Uuid::parse_str(c).map_err(|_| Error::invalid("`cursor` is not one this API returned"))
        })
        .transpose()?;
    let entries = state
        .store
        .registry_history(
            tenant(&caller),
            &HistoryFilter {
                subject_kind: q.subject_kind,
                subject: q.subject,
                tool: q.tool,
                kinds: q.kind.into_iter().collect(),
                before,
                limit,
            },
        )
        .await?;
    let next_cursor = (entries.len() as u32 == limit)
        .then(|| entries.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(Json(HistoryPage {
        entries,
        next_cursor,
    }))
}
