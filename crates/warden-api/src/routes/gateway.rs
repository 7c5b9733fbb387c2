//! The server side of a remote gateway: `warden gateway stdio --remote URL` runs the MCP
//! server on the agent's machine and governs its traffic there, while identity, decisions,
//! the audit trail and approvals stay here. These routes, under `/api/v1/gateway/`, are what
//! that wrapper's governor calls, with the agent's own token.
//!
//! The caller is only an agent, so nothing that says who acts comes from the body: tenant,
//! agent, on-behalf-of user, session (the token id) and namespace are the token's. Events
//! are limited to the gateway's own `mcp.*` types, stamped with the token, and redacted here
//! with the tenant's key (which never leaves the server) before they are stored. A decided
//! event that allows or holds an action must carry the seal this server gave that decision,
//! so the trail never shows an allow the server did not make. Approvals are confined to the
//! token's session; approval events are written by the approval desk, never sent.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use warden_audit::redact::{mac_hex, purpose_key};
use warden_core::{
    Actor, Approval, ApprovalAnswer, ApprovalChannel, AuditEvent, ClientInfo, Decision,
    DecisionRequest, DecisionSummary, EntityRef, Error, NamespacePath, NewApproval, Outcome,
    Resource, ResourceRef, Role, SCHEMA_VERSION, SessionFacts, canonical, catalog,
};
use warden_gateway::registry::RegistryMode;
use warden_registry::model::{Agent, Tool, ToolServer};
use warden_store::NewEvent;

use crate::approvals::as_of;
use crate::extract::{Caller, ClientAddr, JsonBody, OptionalJsonBody};
use crate::problem::{ApiResult, Problem};
use crate::query::QueryParams;
use crate::routes::approvals::MAX_COMMENT_BYTES;
use crate::state::{AppState, MAX_BATCH_ITEMS};

/// The `source` of every event the gateway records.
pub const GATEWAY_SOURCE: &str = "warden.gateway";

/// The event types a remote gateway may record: those the gateway itself emits. Approval
/// events are not among them: the approval desk writes them when the routes below act.
pub const GATEWAY_EVENT_TYPES: [&str; 8] = [
    catalog::MCP_SESSION_STARTED,
    catalog::MCP_SESSION_ENDED,
    catalog::MCP_TOOLS_LISTED,
    catalog::MCP_TOOL_CALL_DECIDED,
    catalog::MCP_TOOL_CALL_COMPLETED,
    catalog::MCP_RESOURCE_READ_DECIDED,
    catalog::MCP_PROMPT_GET_DECIDED,
    catalog::MCP_REQUEST_REFUSED,
];

/// The types that record a decision (and must carry one).
const DECIDED_TYPES: [&str; 3] = [
    catalog::MCP_TOOL_CALL_DECIDED,
    catalog::MCP_RESOURCE_READ_DECIDED,
    catalog::MCP_PROMPT_GET_DECIDED,
];

/// The actions the gateway decides.
pub const GATEWAY_ACTIONS: [&str; 4] = ["list_tools", "call_tool", "read_resource", "get_prompt"];

/// Longest a long-poll on an approval is held open.
pub const MAX_APPROVAL_WAIT: Duration = Duration::from_secs(60);

const SEAL_CONTEXT: &str = "warden-gateway-decision-v1";

// --- wire types ------------------------------------------------------------------------

/// The agent session behind the token, and the server's gateway settings the remote
/// gateway adopts.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GatewaySession {
    pub tenant: String,
    /// The token's id: it names the agent session.
    pub token_id: String,
    pub agent: String,
    pub on_behalf_of: Option<String>,
    /// The namespace the session is scoped to (the tenant's root when the token has none).
    pub namespace: String,
    pub settings: GatewaySettings,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GatewaySettings {
    /// Seconds a held call waits for a person.
    pub approval_timeout_secs: f64,
    /// Seconds between progress notifications of a held call.
    pub progress_interval_secs: f64,
    /// Whether the on-behalf-of user may answer in the agent's own client.
    pub elicitation_approvals: bool,
    /// `optional` or `required`: whether servers the registry does not know may be used.
    #[schema(value_type = String)]
    pub registry: RegistryMode,
}

/// The tenant's registry, as the gateway consults it: servers (without how they are started
/// and their secret references), tools with their pins, agents.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GatewayRegistry {
    pub servers: Vec<ToolServer>,
    pub tools: Vec<Tool>,
    pub agents: Vec<Agent>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayDecide {
    /// Up to 1,000 requests, decided independently, in order.
    pub requests: Vec<GatewayDecisionRequest>,
}

/// One action to decide. Who acts, for whom, in which session and namespace, and when, are
/// not here: they come from the token and the server's clock.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayDecisionRequest {
    /// `list_tools`, `call_tool`, `read_resource` or `get_prompt`.
    pub action: String,
    pub resource: Resource,
    /// What policies read as `context.*` (tool arguments under `args`). `client_ip` is set
    /// by the server to the caller's address.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub context: Map<String, Value>,
    /// What the session has done so far, as the gateway keeps it.
    #[serde(default)]
    pub facts: SessionFacts,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GatewayDecisions {
    /// One per request, in order.
    pub decisions: Vec<GatewayDecision>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GatewayDecision {
    pub decision: Decision,
    /// The server's seal on this decision for this token; a decided event that allows or
    /// holds the action must carry it.
    pub seal: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayEvents {
    /// Up to 1,000 events, recorded all together or not at all.
    pub events: Vec<GatewayEvent>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayEvent {
    /// An event as the gateway builds it. Tenant, namespace, actor, client and source are
    /// replaced by the server's; the payload is redacted here and its digest recomputed.
    pub event: AuditEvent,
    /// The seal of the event's decision (decided events that allow or hold).
    #[serde(default)]
    pub seal: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GatewayRecorded {
    /// Durable when this answer is sent.
    pub recorded: Vec<RecordedEvent>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecordedEvent {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    /// Already recorded by an earlier attempt; not stored twice.
    pub duplicate: bool,
}

/// A held action of this session, to put before a person.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayOpenApproval {
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    /// SHA-256 (hex) of the canonical JSON of the arguments.
    pub args_sha256: String,
    /// The arguments; redacted here by the decision's obligations and the detectors.
    #[schema(value_type = Object)]
    pub arguments: Value,
    #[serde(default)]
    pub policies: Vec<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// The recorded decision (of this session) that asked for approval.
    #[schema(value_type = String, format = Uuid)]
    pub decision_event: Uuid,
    /// At most the server's `approval_timeout` from now.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayConsume {
    pub resource_id: String,
    pub args_sha256: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GatewayMaybeApproval {
    /// `null` when there was nothing to use or write down.
    pub approval: Option<Approval>,
}

#[derive(Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Milliseconds to wait for an answer before returning the approval as it is (at most
    /// 60,000; default 0: at once).
    pub wait_ms: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayAnswer {
    pub approve: bool,
    #[serde(default)]
    pub comment: Option<String>,
}

// --- helpers ---------------------------------------------------------------------------

/// The caller, if it is an agent session.
fn agent(caller: &Caller) -> Result<(), Problem> {
    if caller.role() == Role::Agent {
        return Ok(());
    }
    Err(Error::forbidden(format!(
        "the gateway routes take agent tokens (an agent session); this token's role is {}",
        caller.role()
    ))
    .into())
}

fn namespace_of(caller: &Caller) -> NamespacePath {
    caller
        .token
        .namespace
        .clone()
        .unwrap_or_else(|| caller.token.tenant.root_namespace())
}

fn agent_name(caller: &Caller) -> String {
    caller.token.agent.clone().unwrap_or_default()
}

/// The actor of every event of the session: the token's agent, user and session.
fn session_actor(caller: &Caller) -> Actor {
    let token = &caller.token;
    Actor {
        principal: Some(EntityRef::new("Agent", agent_name(caller))),
        agent: Some(agent_name(caller)),
        on_behalf_of: token.on_behalf_of.clone(),
        session: Some(token.id.clone()),
        token_id: Some(token.id.clone()),
        role: Some(Role::Agent.as_str().to_owned()),
    }
}

fn summary(d: &Decision) -> DecisionSummary {
    DecisionSummary {
        outcome: d.outcome,
        policies: d.reasons.clone(),
        obligations: d.obligations.clone(),
        warnings: d.warnings.clone(),
        errors: d.errors.clone(),
    }
}

/// The seal of a decision: a MAC, under a key only this server holds, over the token, the
/// action, the resource and the decision as the event records it.
fn seal(
    state: &AppState,
    caller: &Caller,
    action: &str,
    resource: &ResourceRef,
    decision: &DecisionSummary,
) -> String {
    let tenant = caller.token.tenant.as_str();
    let key = purpose_key(&state.redaction_master, SEAL_CONTEXT, tenant);
    let message = json!({
        "token": caller.token.id,
        "action": action,
        "resource": resource,
        "decision": decision,
    });
    mac_hex(&key, &canonical::to_vec(&message))
}

fn forbidden(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "forbidden", detail)
}

// --- session and registry --------------------------------------------------------------

#[utoipa::path(
    get, path = "/api/v1/gateway/session", tag = "gateway",
    responses(
        (status = 200, description = "The agent session behind the token, and the server's gateway settings", body = GatewaySession),
        (status = 401, description = "Missing, unknown, expired or revoked token", body = Problem),
        (status = 403, description = "Not an agent token", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn session(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<GatewaySession>> {
    agent(&caller)?;
    let g = &state.config.gateway;
    Ok(Json(GatewaySession {
        tenant: caller.token.tenant.as_str().to_owned(),
        token_id: caller.token.id.clone(),
        agent: agent_name(&caller),
        on_behalf_of: caller.token.on_behalf_of.clone(),
        namespace: namespace_of(&caller).as_str().to_owned(),
        settings: GatewaySettings {
            approval_timeout_secs: g.approval_timeout.as_secs_f64(),
            progress_interval_secs: g.progress_interval.as_secs_f64(),
            elicitation_approvals: g.elicitation_approvals,
            registry: g.registry,
        },
    }))
}

#[utoipa::path(
    get, path = "/api/v1/gateway/registry", tag = "gateway",
    responses(
        (status = 200, description = "The token's tenant's registry (servers without their transports). `ETag` lets a poller skip an unchanged one.", body = GatewayRegistry),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag"),
        (status = 403, description = "Not an agent token", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn registry(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Response> {
    agent(&caller)?;
    let snapshot = state.registry.snapshot();
    let tenant = &caller.token.tenant;
    let mut servers = Vec::new();
    let mut tools = Vec::new();
    for s in snapshot.servers(tenant) {
        tools.extend(snapshot.tools_of(tenant, s.name.as_str()).cloned());
        // How a server is started, and its secret references, are not the agent's business.
        servers.push(ToolServer {
            transport: None,
            ..s.clone()
        });
    }
    let body = GatewayRegistry {
        servers,
        tools,
        agents: snapshot.agents(tenant).cloned().collect(),
    };
    let bytes = serde_json::to_vec(&body).map_err(|e| Error::internal(e.to_string()))?;
    let etag = format!("\"{}\"", hex::encode(Sha256::digest(&bytes)));
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    let etag = HeaderValue::from_str(&etag).map_err(|e| Error::internal(e.to_string()))?;
    if unchanged {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok((
        [
            (header::ETAG, etag),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        bytes,
    )
        .into_response())
}

// --- decisions -------------------------------------------------------------------------

/// One decision, for the token's agent session, with the registry's facts as the gateway and
/// the decision API add them.
fn decide_one(
    state: &AppState,
    caller: &Caller,
    addr: Option<SocketAddr>,
    req: GatewayDecisionRequest,
) -> Decision {
    let token = &caller.token;
    let namespace = namespace_of(caller);
    let snapshot = state.registry.snapshot();
    let mut principal = Resource {
        entity_type: "Agent".into(),
        id: agent_name(caller),
        ..Default::default()
    };
    let mut refused = None;
    match warden_gateway::registry::agent_principal(
        Some(&snapshot),
        &token.tenant,
        &namespace,
        &principal.id,
    ) {
        Ok(p) => principal = p,
        Err(why) => refused = Some(why),
    }
    let mut context = req.context;
    match addr {
        Some(a) => context.insert("client_ip".into(), json!(a.ip().to_string())),
        None => context.remove("client_ip"),
    };
    let mut dreq = DecisionRequest {
        tenant: token.tenant.clone(),
        namespace,
        principal,
        on_behalf_of: token
            .on_behalf_of
            .as_ref()
            .map(|u| EntityRef::new("User", u)),
        session: Some(token.id.clone()),
        facts: req.facts,
        action: req.action,
        resource: req.resource,
        context,
        time: Utc::now(),
    };
    if let Some(why) = refused {
        return Decision::deny_with_error(format!("refused by the registry: {why}"));
    }
    if dreq.resource.entity_type == "Tool" {
        warden_gateway::registry::apply_tool_facts(
            &snapshot,
            &dreq.tenant,
            &dreq.namespace,
            &mut dreq.resource,
        );
    }
    let engine = state.policies.engine();
    if let Err(m) = engine.check_request(&dreq) {
        return Decision::deny_with_error(m);
    }
    let started = Instant::now();
    // The bundle's mode applies; a shadow bundle does not: the remote gateway records the
    // decision event itself, after this answer, so there is no event here to shadow.
    let (d, _) = state.policies.decide_with(&engine, &dreq);
    state.metrics.decision_latency().observe(started.elapsed());
    state.metrics.count(d.outcome);
    if !d.errors.is_empty() {
        state.metrics.decision_errors.inc();
    }
    d
}

#[utoipa::path(
    post, path = "/api/v1/gateway/decisions", tag = "gateway",
    request_body = GatewayDecide,
    responses(
        (status = 200, description = "One decision per request, in order; not recorded here (the gateway records its own decided event)", body = GatewayDecisions),
        (status = 400, description = "More than 1,000 requests, or an action the gateway does not decide", body = Problem),
        (status = 401, description = "Missing, unknown, expired or revoked token", body = Problem),
        (status = 403, description = "Not an agent token", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn decide(
    State(state): State<AppState>,
    caller: Caller,
    ClientAddr(addr): ClientAddr,
    JsonBody(body): JsonBody<GatewayDecide>,
) -> ApiResult<Json<GatewayDecisions>> {
    agent(&caller)?;
    if body.requests.len() > MAX_BATCH_ITEMS {
        return Err(Error::invalid(format!(
            "at most {MAX_BATCH_ITEMS} requests at once, got {}; split them",
            body.requests.len()
        ))
        .into());
    }
    if let Some(r) = body
        .requests
        .iter()
        .find(|r| !GATEWAY_ACTIONS.contains(&r.action.as_str()))
    {
        return Err(Error::invalid(format!(
            "the gateway decides {}; not {:?}",
            GATEWAY_ACTIONS.join(", "),
            r.action
        ))
        .into());
    }
    let decisions = body
        .requests
        .into_iter()
        .map(|req| {
            let (action, resource) = (
                req.action.clone(),
                ResourceRef {
                    resource_type: req.resource.entity_type.clone(),
                    id: req.resource.id.clone(),
                },
            );
            let decision = decide_one(&state, &caller, addr, req);
            let seal = seal(&state, &caller, &action, &resource, &summary(&decision));
            GatewayDecision { decision, seal }
        })
        .collect();
    Ok(Json(GatewayDecisions { decisions }))
}

// --- events ----------------------------------------------------------------------------

/// Checks one event of the session and makes it the server's: stamped with the token,
/// redacted with the tenant's key, its digest recomputed.
fn admit(
    state: &AppState,
    caller: &Caller,
    client: &ClientInfo,
    item: GatewayEvent,
) -> Result<AuditEvent, Problem> {
    let GatewayEvent { mut event, seal: s } = item;
    let id = event.header.id;
    let kind = event.header.event_type.clone();
    if !GATEWAY_EVENT_TYPES.contains(&kind.as_str()) {
        return Err(forbidden(format!(
            "event {id}: an agent token records only the gateway's own event types ({}); not {kind:?}",
            GATEWAY_EVENT_TYPES.join(", ")
        )));
    }
    if event.header.schema_version != SCHEMA_VERSION {
        return Err(Error::invalid(format!(
            "event {id}: schema_version {} is not {SCHEMA_VERSION}",
            event.header.schema_version
        ))
        .into());
    }
    if event.header.source != GATEWAY_SOURCE {
        return Err(Error::invalid(format!(
            "event {id}: source must be {GATEWAY_SOURCE:?}, not {:?}",
            event.header.source
        ))
        .into());
    }
    if DECIDED_TYPES.contains(&kind.as_str()) {
        let (Some(action), Some(resource), Some(decision)) = (
            &event.header.action,
            &event.header.resource,
            &event.header.decision,
        ) else {
            return Err(Error::invalid(format!(
                "event {id}: a {kind} event needs its action, resource and decision"
            ))
            .into());
        };
        // A deny lets nothing through: the gateway may refuse on its own (the registry, a
        // server it cannot reach). An allow or a hold must be this server's.
        if decision.outcome != Outcome::Deny {
            let expected = seal(state, caller, action, resource, decision);
            if s.as_deref() != Some(expected.as_str()) {
                return Err(forbidden(format!(
                    "event {id}: its decision ({}) on {} was not made by this server for this token",
                    decision.outcome.as_str(),
                    resource.id
                )));
            }
        }
    }
    let h = &mut event.header;
    h.tenant = caller.token.tenant.as_str().to_owned();
    h.namespace = namespace_of(caller).as_str().to_owned();
    h.actor = session_actor(caller);
    h.client = Some(client.clone());
    // Redaction happens here, once, with the tenant's key: the decision's paths (relative to
    // the recorded request's context), then the detectors over everything.
    let paths: Vec<String> = h
        .decision
        .iter()
        .flat_map(|d| &d.obligations)
        .filter_map(|o| match o {
            warden_core::Obligation::Redact { path, .. } => Some(format!("request.context.{path}")),
            _ => None,
        })
        .collect();
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    state
        .redactor(caller.token.tenant.as_str())
        .redact(&mut event.payload, &refs);
    event.seal();
    Ok(event)
}

#[utoipa::path(
    post, path = "/api/v1/gateway/events", tag = "gateway",
    request_body = GatewayEvents,
    responses(
        (status = 200, description = "Every event is durable", body = GatewayRecorded),
        (status = 400, description = "Malformed event, or more than 1,000", body = Problem),
        (status = 401, description = "Missing, unknown, expired or revoked token", body = Problem),
        (status = 403, description = "Not an agent token, an event type the gateway does not emit, or a decision this server did not make; nothing was recorded", body = Problem),
        (status = 503, description = "The audit trail cannot record now; nothing may proceed", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn record(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ClientAddr(addr): ClientAddr,
    JsonBody(body): JsonBody<GatewayEvents>,
) -> ApiResult<Json<GatewayRecorded>> {
    agent(&caller)?;
    if body.events.len() > MAX_BATCH_ITEMS {
        return Err(Error::invalid(format!(
            "at most {MAX_BATCH_ITEMS} events at once, got {}",
            body.events.len()
        ))
        .into());
    }
    let ex = crate::routes::authorize::Exchange::from_parts(&headers, addr);
    let events = body
        .events
        .into_iter()
        .map(|item| admit(&state, &caller, &ex.client, item))
        .collect::<Result<Vec<_>, _>>()?;
    let ids: Vec<Uuid> = events.iter().map(|e| e.header.id).collect();
    // Retries carry the same ids: recorded once.
    let batch = events
        .into_iter()
        .map(|event| NewEvent {
            event,
            dedupe: true,
        })
        .collect();
    let mut recorded = Vec::with_capacity(ids.len());
    for (id, outcome) in ids
        .into_iter()
        .zip(state.pipeline.record_many(batch).await?)
    {
        let appended = outcome?;
        recorded.push(RecordedEvent {
            id,
            duplicate: appended == warden_store::Appended::Duplicate,
        });
    }
    Ok(Json(GatewayRecorded { recorded }))
}

// --- approvals -------------------------------------------------------------------------

/// The approval, if it belongs to the token's session; 404 otherwise (another session's
/// approval looks like one that does not exist).
async fn own_approval(state: &AppState, caller: &Caller, id: &str) -> Result<Approval, Problem> {
    let not_found = || Problem::from(Error::not_found(format!("approval {id} not found")));
    let uuid = Uuid::parse_str(id).map_err(|_| not_found())?;
    let a = state
        .store
        .get_approval(&caller.token.tenant, uuid)
        .await?
        .ok_or_else(not_found)?;
    if a.session != caller.token.id {
        return Err(not_found());
    }
    Ok(a)
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[utoipa::path(
    post, path = "/api/v1/gateway/approvals", tag = "gateway",
    request_body = GatewayOpenApproval,
    responses(
        (status = 201, description = "Opened (pending) and `approval.requested` recorded", body = Approval),
        (status = 400, description = "Malformed request", body = Problem),
        (status = 403, description = "Not an agent token, or the decision event is not this session's approval_required decision on this action", body = Problem),
        (status = 503, description = "The audit trail cannot record; nothing was opened", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn open_approval(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<GatewayOpenApproval>,
) -> ApiResult<(StatusCode, Json<Approval>)> {
    agent(&caller)?;
    if !is_sha256_hex(&body.args_sha256) {
        return Err(Error::invalid("`args_sha256` must be 64 hex digits").into());
    }
    // The request must follow this session's recorded decision that asked for approval of
    // exactly this action; its obligations say what to redact in the arguments.
    let decision = state
        .store
        .get_event(&caller.token.tenant, &body.decision_event.to_string())
        .await?
        .map(|stored| stored.event.header)
        .filter(|h| {
            DECIDED_TYPES.contains(&h.event_type.as_str())
                && h.actor.session.as_deref() == Some(caller.token.id.as_str())
                && h.action.as_deref() == Some(body.action.as_str())
                && h.resource.as_ref().is_some_and(|r| {
                    r.resource_type == body.resource_type && r.id == body.resource_id
                })
        })
        .and_then(|h| h.decision)
        .filter(|d| d.outcome == Outcome::ApprovalRequired)
        .ok_or_else(|| {
            forbidden(format!(
                "event {} is not this session's recorded approval_required decision on {} {}",
                body.decision_event, body.action, body.resource_id
            ))
        })?;
    let paths: Vec<&str> = decision
        .obligations
        .iter()
        .filter_map(|o| match o {
            warden_core::Obligation::Redact { path, .. } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    let mut shown = json!({ "args": body.arguments });
    state
        .redactor(caller.token.tenant.as_str())
        .redact(&mut shown, &paths);
    let now = Utc::now();
    let longest = chrono::Duration::from_std(state.config.gateway.approval_timeout)
        .unwrap_or(chrono::Duration::minutes(10));
    let expires_at = body.expires_at.min(now + longest);
    if expires_at <= now {
        return Err(Error::invalid("`expires_at` is in the past").into());
    }
    let token = &caller.token;
    let approval = state
        .approvals
        .open(NewApproval {
            tenant: token.tenant.as_str().to_owned(),
            namespace: namespace_of(&caller).as_str().to_owned(),
            session: token.id.clone(),
            agent: Some(agent_name(&caller)),
            on_behalf_of: token.on_behalf_of.clone(),
            action: body.action,
            resource_type: body.resource_type,
            resource_id: body.resource_id,
            args_sha256: body.args_sha256.to_ascii_lowercase(),
            arguments: shown["args"].take(),
            policies: body.policies,
            reason: body.reason,
            decision_event: Some(body.decision_event),
            expires_at,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(approval)))
}

#[utoipa::path(
    post, path = "/api/v1/gateway/approvals/consume", tag = "gateway",
    request_body = GatewayConsume,
    responses(
        (status = 200, description = "The grant for exactly this action of this session, now used up (`approval.consumed` recorded), or null", body = GatewayMaybeApproval),
        (status = 403, description = "Not an agent token", body = Problem),
        (status = 503, description = "Could not be recorded; the action must not run", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn consume_approval(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<GatewayConsume>,
) -> ApiResult<Json<GatewayMaybeApproval>> {
    agent(&caller)?;
    let approval = state
        .approvals
        .consume(
            &caller.token.tenant,
            &caller.token.id,
            &body.resource_id,
            &body.args_sha256.to_ascii_lowercase(),
        )
        .await?;
    Ok(Json(GatewayMaybeApproval { approval }))
}

#[utoipa::path(
    get, path = "/api/v1/gateway/approvals/{id}", tag = "gateway",
    params(("id" = String, Path, description = "Approval id (UUID)"), WaitQuery),
    responses(
        (status = 200, description = "The approval once answered or expired, or as it is when `wait_ms` has passed (`status` as of now)", body = Approval),
        (status = 404, description = "No approval of this session has this id", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn get_approval(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<WaitQuery>,
) -> ApiResult<Json<Approval>> {
    agent(&caller)?;
    let a = own_approval(&state, &caller, &id).await?;
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0)).min(MAX_APPROVAL_WAIT);
    let a = if wait.is_zero() {
        a
    } else {
        state
            .approvals
            .wait(&caller.token.tenant, a.id, Instant::now() + wait)
            .await?
    };
    Ok(Json(as_of(a, Utc::now())))
}

#[utoipa::path(
    post, path = "/api/v1/gateway/approvals/{id}/expire", tag = "gateway",
    params(("id" = String, Path, description = "Approval id (UUID)")),
    responses(
        (status = 200, description = "Written down as expired (`approval.expired` recorded), or null when not due or already answered", body = GatewayMaybeApproval),
        (status = 404, description = "No approval of this session has this id", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn expire_approval(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<GatewayMaybeApproval>> {
    agent(&caller)?;
    let a = own_approval(&state, &caller, &id).await?;
    let approval = state.approvals.expire(&caller.token.tenant, a.id).await?;
    Ok(Json(GatewayMaybeApproval { approval }))
}

#[utoipa::path(
    post, path = "/api/v1/gateway/approvals/{id}/answer", tag = "gateway",
    params(("id" = String, Path, description = "Approval id (UUID)")),
    request_body = GatewayAnswer,
    responses(
        (status = 200, description = "The on-behalf-of user's answer in the agent's client, recorded with channel `elicitation`", body = Approval),
        (status = 403, description = "Not an agent token, or `elicitation_approvals` is off on this server", body = Problem),
        (status = 404, description = "No approval of this session has this id", body = Problem),
        (status = 409, description = "Already answered, or expired", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn answer_approval(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<Option<GatewayAnswer>>,
) -> ApiResult<Json<Approval>> {
    agent(&caller)?;
    if !state.config.gateway.elicitation_approvals {
        return Err(forbidden(
            "this server does not let agents' users answer approvals in their own client \
             (gateway.elicitation_approvals is off)",
        ));
    }
    let body = body.ok_or_else(|| Problem::from(Error::invalid("the answer is required")))?;
    if body
        .comment
        .as_ref()
        .is_some_and(|c| c.len() > MAX_COMMENT_BYTES)
    {
        return Err(Error::invalid(format!(
            "the comment is longer than {MAX_COMMENT_BYTES} bytes"
        ))
        .into());
    }
    let a = own_approval(&state, &caller, &id).await?;
    // The answer is the session's user's, as the in-process gateway records it; who that
    // is comes from the token.
    let user = caller
        .token
        .on_behalf_of
        .clone()
        .unwrap_or_else(|| "the user".into());
    let answer = ApprovalAnswer {
        approve: body.approve,
        by: format!("user:{user}"),
        via: ApprovalChannel::Elicitation,
        comment: body.comment,
    };
    let answered = state
        .approvals
        .answer(&caller.token.tenant, a.id, answer)
        .await?;
    Ok(Json(answered))
}
