//! The decision API: `POST /api/v1/authorize` and `POST /api/v1/authorize/batch`.
//!
//! Identity is resolved here, once: an agent token decides for its own agent, the user it
//! acts for and its session; a service token names the principal in the request. Every
//! answer is recorded durably before it is sent; if it cannot be, the caller gets 503 and no
//! decision.

use std::net::SocketAddr;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;
use warden_core::{
    Actor, AuditEvent, ClientInfo, Decision, DecisionRequest, DecisionSummary, EntityRef, Error,
    Explanation, NamespacePath, Obligation, Outcome, PolicyRef, Resource, ResourceRef, Role,
    TraceContext, Warning, catalog,
};

use crate::bundles;
use crate::extract::{Caller, ClientAddr, JsonBody};
use crate::policies::Disagreement;
use crate::problem::{ApiResult, Problem};
use crate::query::QueryParams;
use crate::state::{AppState, MAX_BATCH_ITEMS};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeRequest {
    /// Where the action happens. Defaults to the token's namespace scope.
    #[serde(default)]
    pub namespace: Option<NamespacePath>,
    /// Who acts. Taken from an agent token; a service or admin token must name it.
    #[serde(default)]
    pub principal: Option<Resource>,
    /// The user the principal acts for (service and admin tokens only).
    #[serde(default)]
    pub on_behalf_of: Option<EntityRef>,
    /// The agent session (service and admin tokens only).
    #[serde(default)]
    pub session: Option<String>,
    /// An action of the schema, e.g. `call_tool`, `read`, `write`.
    pub action: String,
    pub resource: Resource,
    /// Free JSON the policies can read as `context.*` (tool arguments under `args`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub context: Map<String, Value>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuthorizeResponse {
    pub decision: Outcome,
    /// The policies that determined the decision.
    pub reasons: Vec<PolicyRef>,
    pub obligations: Vec<Obligation>,
    /// Warn-mode policies that would have denied or asked.
    pub warnings: Vec<Warning>,
    /// Why the request was denied by an evaluation error, if it was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// The audit event recording this decision (already durable).
    #[schema(value_type = String, format = Uuid)]
    pub event_id: Uuid,
    /// With `?explain=true`: every policy considered, which matched, which determined the
    /// decision, and for the others the first condition that did not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<Explanation>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuthorizeQuery {
    /// Add an `explanation` to the answer: the policies considered, which matched, which
    /// determined the decision, and for the others the first condition that did not hold.
    /// Costs several evaluations per policy; meant for people, not for every call.
    #[serde(default)]
    pub explain: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Up to 1,000 requests, decided independently.
    pub requests: Vec<AuthorizeRequest>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchItem {
    /// 200 when decided; otherwise the status this request alone would have had.
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<AuthorizeResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Problem>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchResponse {
    pub results: Vec<BatchItem>,
}

/// Facts about the HTTP exchange recorded with each decision.
#[derive(Clone, Debug, Default)]
pub struct Exchange {
    pub client: ClientInfo,
    pub trace: Option<TraceContext>,
}

impl Exchange {
    pub fn from_parts(headers: &HeaderMap, addr: Option<SocketAddr>) -> Exchange {
        let ua = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect());
        let trace = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(TraceContext::from_traceparent);
        Exchange {
            client: ClientInfo {
                address: addr.map(|a| a.ip().to_string()),
                user_agent: ua,
            },
            trace,
        }
    }
}

/// Turns a wire request into a decision request, enforcing who may decide for whom.
pub fn resolve(
    state: &AppState,
    caller: &Caller,
    req: AuthorizeRequest,
) -> Result<DecisionRequest, Problem> {
    caller.require(caller.role().can_authorize(), "ask for decisions")?;
    let token = &caller.token;
    let namespace = req
        .namespace
        .or_else(|| token.namespace.clone())
        .ok_or_else(|| {
            Problem::from(Error::invalid(
                "`namespace` is required (this token has no default namespace)",
            ))
        })?;
    caller.check_namespace(&namespace)?;
    let (principal, on_behalf_of, session) = match token.role {
        Role::Agent => {
            let agent = token.agent.clone().unwrap_or_default();
            if let Some(p) = &req.principal
                && (p.entity_type != "Agent" || p.id != agent)
            {
                return Err(Error::forbidden(format!(
                    "an agent token decides for its own agent (Agent::{agent:?}) only, not {}",
                    p.as_ref()
                ))
                .into());
            }
            if req.on_behalf_of.is_some() || req.session.is_some() {
                return Err(Error::forbidden("an agent token's user and session come from the token; leave `on_behalf_of` and `session` out").into());
            }
            let attributes = req.principal.map(|p| p.attributes).unwrap_or_default();
            (
                Resource {
                    entity_type: "Agent".into(),
                    id: agent,
                    attributes,
                    parents: vec![],
                },
                token
                    .on_behalf_of
                    .clone()
                    .map(|u| EntityRef::new("User", u)),
                Some(token.id.clone()),
            )
        }
        _ => {
            let p = req.principal.ok_or_else(|| {
                Problem::from(Error::invalid(
                    "`principal` is required with a service or admin token",
                ))
            })?;
            (p, req.on_behalf_of, req.session)
        }
    };
    let mut dreq = DecisionRequest {
        tenant: token.tenant.clone(),
        namespace,
        principal,
        on_behalf_of,
        session,
        facts: Default::default(),
        action: req.action,
        resource: req.resource,
        context: req.context,
        time: chrono::Utc::now(),
    };
    // The registry's facts, as the gateway adds them: a registered tool's attributes and
    // server, a registered agent's owner, models and status here. They win over what the
    // caller sent: the registry is the source of truth about them.
    let snapshot = state.registry.snapshot();
    if dreq.resource.entity_type == "Tool" {
        warden_gateway::registry::apply_tool_facts(
            &snapshot,
            &dreq.tenant,
            &dreq.namespace,
            &mut dreq.resource,
        );
    }
    if dreq.principal.entity_type == "Agent"
        && let Some((attrs, effective)) =
            snapshot.agent_facts(&dreq.tenant, &dreq.principal.id, &dreq.namespace)
    {
        warden_gateway::registry::apply_agent_facts(&mut dreq.principal, attrs, &effective);
    }
    state
        .policies
        .engine()
        .check_request(&dreq)
        .map_err(|m| Problem::from(Error::invalid(m)))?;
    Ok(dreq)
}

/// The durable record of one decision. The request is kept whole (redacted) in the payload so
/// that it can be decided again later under another policy set.
pub fn decision_event(
    state: &AppState,
    caller: &Caller,
    req: &DecisionRequest,
    d: &Decision,
    ex: &Exchange,
) -> AuditEvent {
    let mut payload = json!({
        "request": {
            "principal": req.principal,
            "on_behalf_of": req.on_behalf_of,
            "session": req.session,
            "action": req.action,
            "resource": req.resource,
            "context": req.context,
            "time": req.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        },
        "evaluated": d.evaluated,
    });
    let paths: Vec<String> = d
        .redact_paths()
        .map(|p| format!("request.context.{p}"))
        .collect();
    let path_refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    state
        .redactor(req.tenant.as_str())
        .redact(&mut payload, &path_refs);
    let actor = Actor {
        principal: Some(req.principal.as_ref()),
        agent: (req.principal.entity_type == "Agent").then(|| req.principal.id.clone()),
        on_behalf_of: req.on_behalf_of.as_ref().map(|u| u.id.clone()),
        session: req.session.clone(),
        token_id: Some(caller.token.id.clone()),
        role: Some(caller.token.role.as_str().to_owned()),
    };
    let mut e = AuditEvent::new(
        req.tenant.as_str(),
        req.namespace.as_str(),
        catalog::AUTHZ_DECISION,
        "warden.api",
        actor,
        payload,
    );
    e.header.action = Some(req.action.clone());
    e.header.resource = Some(ResourceRef {
        resource_type: req.resource.entity_type.clone(),
        id: req.resource.id.clone(),
    });
    e.header.decision = Some(DecisionSummary {
        outcome: d.outcome,
        policies: d.reasons.clone(),
        obligations: d.obligations.clone(),
        warnings: d.warnings.clone(),
        errors: d.errors.clone(),
    });
    e.header.client = Some(ex.client.clone());
    e.header.trace = ex.trace.clone();
    e
}

/// The decision of the bundle in force (in its mode) and, when a shadow bundle decided
/// otherwise, how.
fn decide(state: &AppState, req: &DecisionRequest) -> (Decision, Option<Disagreement>) {
    let started = Instant::now();
    let d = state.policies.decide(req);
    state.metrics.decision_latency().observe(started.elapsed());
    d
}

fn response(d: Decision, event_id: Uuid) -> AuthorizeResponse {
    AuthorizeResponse {
        decision: d.outcome,
        reasons: d.reasons,
        obligations: d.obligations,
        warnings: d.warnings,
        errors: d.errors,
        event_id,
        explanation: None,
    }
}

/// The decision and its explanation, from one engine (a policy change between the two
/// would otherwise explain another set than the one that decided). Only for `?explain=true`.
fn decide_explained(
    state: &AppState,
    req: &DecisionRequest,
) -> (Decision, Option<Disagreement>, Explanation) {
    let engine = state.policies.engine();
    let started = Instant::now();
    let (d, shadow) = state.policies.decide_with(&engine, req);
    state.metrics.decision_latency().observe(started.elapsed());
    (d, shadow, engine.explain(req))
}

#[utoipa::path(
    post, path = "/api/v1/authorize", tag = "decisions",
    params(AuthorizeQuery),
    request_body = AuthorizeRequest,
    responses(
        (status = 200, description = "Decided and recorded", body = AuthorizeResponse),
        (status = 400, description = "Invalid request", body = Problem),
        (status = 401, description = "Missing, unknown, expired or revoked token", body = Problem),
        (status = 403, description = "The token may not decide this", body = Problem),
        (status = 404, description = "Namespace not found", body = Problem),
        (status = 413, description = "Body too large", body = Problem),
        (status = 503, description = "The decision could not be recorded; retry after Retry-After", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn authorize(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ClientAddr(addr): ClientAddr,
    QueryParams(query): QueryParams<AuthorizeQuery>,
    JsonBody(req): JsonBody<AuthorizeRequest>,
) -> ApiResult<Json<AuthorizeResponse>> {
    let ex = Exchange::from_parts(&headers, addr);
    let dreq = resolve(&state, &caller, req)?;
    let (d, shadow, explanation) = if query.explain {
        let (d, s, e) = decide_explained(&state, &dreq);
        (d, s, Some(e))
    } else {
        let (d, s) = decide(&state, &dreq);
        (d, s, None)
    };
    let event = decision_event(&state, &caller, &dreq, &d, &ex);
    let event_id = event.header.id;
    state.pipeline.record(event).await?;
    if let Some(s) = &shadow {
        bundles::record_disagreement(&state, &dreq, &d, s, event_id);
    }
    if !d.errors.is_empty() {
        state.metrics.decision_errors.inc();
    }
    state.metrics.count(d.outcome);
    Ok(Json(AuthorizeResponse {
        explanation,
        ..response(d, event_id)
    }))
}

#[utoipa::path(
    post, path = "/api/v1/authorize/batch", tag = "decisions",
    request_body = BatchRequest,
    responses(
        (status = 200, description = "Each request decided (or refused) on its own", body = BatchResponse),
        (status = 400, description = "Not a batch, or more than 1,000 requests", body = Problem),
        (status = 503, description = "The audit queue cannot take the batch", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn authorize_batch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ClientAddr(addr): ClientAddr,
    JsonBody(batch): JsonBody<BatchRequest>,
) -> ApiResult<Json<BatchResponse>> {
    caller.require(caller.role().can_authorize(), "ask for decisions")?;
    if batch.requests.len() > MAX_BATCH_ITEMS {
        return Err(Error::invalid(format!(
            "a batch holds at most {MAX_BATCH_ITEMS} requests, this one has {}; split it",
            batch.requests.len()
        ))
        .into());
    }
    let ex = Exchange::from_parts(&headers, addr);
    let mut slots: Vec<Result<(Decision, Uuid), Problem>> =
        Vec::with_capacity(batch.requests.len());
    let mut events = Vec::new();
    let mut shadowed = Vec::new();
    for req in batch.requests {
        match resolve(&state, &caller, req) {
            Ok(dreq) => {
                let (d, shadow) = decide(&state, &dreq);
                let e = decision_event(&state, &caller, &dreq, &d, &ex);
                if let Some(s) = shadow {
                    shadowed.push((dreq, d.clone(), s, e.header.id));
                }
                slots.push(Ok((d, e.header.id)));
                events.push(warden_store::NewEvent {
                    event: e,
                    dedupe: false,
                });
            }
            Err(p) => slots.push(Err(p)),
        }
    }
    let mut recorded = state.pipeline.record_many(events).await?.into_iter();
    for (dreq, d, s, id) in &shadowed {
        bundles::record_disagreement(&state, dreq, d, s, *id);
    }
    let results = slots
        .into_iter()
        .map(|slot| match slot {
            Ok((d, id)) => match recorded.next().expect("one result per event") {
                Ok(_) => {
                    state.metrics.count(d.outcome);
                    BatchItem {
                        status: 200,
                        result: Some(response(d, id)),
                        error: None,
                    }
                }
                Err(e) => {
                    let p = Problem::from(e);
                    BatchItem {
                        status: p.status,
                        result: None,
                        error: Some(p),
                    }
                }
            },
            Err(p) => BatchItem {
                status: p.status,
                result: None,
                error: Some(p),
            },
        })
        .collect();
    Ok(Json(BatchResponse { results }))
}
