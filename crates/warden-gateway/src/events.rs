//! The audit events the gateway records, named after OpenTelemetry's GenAI/MCP conventions
//! where one exists (`gen_ai.tool.name`, `mcp.method.name`, `mcp.session.id`,
//! `jsonrpc.request.id`).

use serde_json::{Map, Value, json};
use warden_core::{
    Actor, AuditEvent, Decision, DecisionRequest, DecisionSummary, ResourceRef, TraceContext,
};

use crate::jsonrpc::Id;
use crate::session::Session;

pub use warden_core::catalog::{
    MCP_PROMPT_GET_DECIDED as PROMPT_GET_DECIDED, MCP_REQUEST_REFUSED as REQUEST_REFUSED,
    MCP_RESOURCE_READ_DECIDED as RESOURCE_READ_DECIDED, MCP_SESSION_ENDED as SESSION_ENDED,
    MCP_SESSION_STARTED as SESSION_STARTED, MCP_TOOL_CALL_COMPLETED as TOOL_CALL_COMPLETED,
    MCP_TOOL_CALL_DECIDED as TOOL_CALL_DECIDED, MCP_TOOLS_LISTED as TOOLS_LISTED,
};

pub const SOURCE: &str = "warden.gateway";

/// The agent session as the audit trail names it.
pub fn actor(session: &Session) -> Actor {
    let id = &session.identity;
    Actor {
        principal: Some(warden_core::EntityRef::new("Agent", &id.agent)),
        agent: Some(id.agent.clone()),
        on_behalf_of: id.on_behalf_of.clone(),
        session: Some(id.token_id.clone()),
        token_id: Some(id.token_id.clone()),
        role: Some("agent".into()),
    }
}

/// The MCP facts of one request, as payload attributes.
pub fn mcp_attributes(session: &Session, method: &str, request_id: Option<&Id>) -> Value {
    let mut m = Map::new();
    m.insert("mcp.method.name".into(), json!(method));
    m.insert("mcp.session.id".into(), json!(session.id));
    m.insert(
        "mcp.protocol.version".into(),
        json!(session.protocol_version),
    );
    if let Some(id) = request_id {
        m.insert("jsonrpc.request.id".into(), json!(id.to_string()));
    }
    if let Some(scope) = &session.scope {
        m.insert("warden.gateway.scope".into(), json!(scope));
    }
    Value::Object(m)
}

/// An event about the session, not about one decision.
pub fn session_event(
    session: &Session,
    event_type: &str,
    payload: Value,
    trace: Option<TraceContext>,
) -> AuditEvent {
    let id = &session.identity;
    let mut e = AuditEvent::new(
        id.tenant.as_str(),
        id.namespace.as_str(),
        event_type,
        SOURCE,
        actor(session),
        payload,
    );
    e.header.client = Some(session.client.clone());
    e.header.trace = trace;
    e
}

/// The durable record of a decision at the gateway. Like the decision API's event, the
/// payload keeps the whole (redacted) request so that it can be decided again later.
#[allow(clippy::too_many_arguments)]
pub fn decided_event(
    session: &Session,
    event_type: &str,
    req: &DecisionRequest,
    d: &Decision,
    mcp: Value,
    redactor: &warden_audit::redact::Redactor,
    trace: Option<TraceContext>,
) -> AuditEvent {
    let mut payload = json!({
        "request": {
            "principal": req.principal,
            "on_behalf_of": req.on_behalf_of,
            "session": req.session,
            "facts": req.facts,
            "action": req.action,
            "resource": req.resource,
            "context": req.context,
            "time": req.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        },
        "evaluated": d.evaluated,
        "mcp": mcp,
    });
    let paths: Vec<String> = d
        .redact_paths()
        .map(|p| format!("request.context.{p}"))
        .collect();
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    redactor.redact(&mut payload, &refs);
    let mut e = session_event(session, event_type, payload, trace);
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
    e.seal();
    e
}

/// The trace context a client put in `params._meta.traceparent`.
pub fn trace_of(params: Option<&Value>) -> Option<TraceContext> {
    params?
        .get("_meta")?
        .get("traceparent")?
        .as_str()
        .and_then(TraceContext::from_traceparent)
}
