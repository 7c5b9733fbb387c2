//! Governing what an agent does through the gateway: every `tools/call`, `resources/read`
//! and `prompts/get` is decided by the policies, recorded durably before anything reaches
//! the server (fail closed), refused, held for a person's approval, or forwarded — and the
//! outcome of a forwarded call is recorded too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use warden_core::{
    ApprovalAnswer, ApprovalChannel, ApprovalStatus, Decision, DecisionRequest, EntityRef,
    NewApproval, Outcome, Resource, canonical,
};
use warden_registry::RegistrySnapshot;

use crate::catalog::{Listing, Server};
use crate::events;
use crate::gateway::{Gateway, audit_error, param_str, trace, unknown_prompt, unknown_resource};
use crate::jsonrpc::{Message, Notification, Request, RpcError, code};
use crate::registry::{self, Listed, Standing};
use crate::session::Session;
use crate::upstream::{ServerMessage, UpstreamError};

/// How long a relayed server-to-client request (sampling, elicitation) may wait for the
/// agent.
const CLIENT_ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

/// The policy resource for a tool: `Tool::"<server>__<tool>"` in `ToolServer::"<server>"`,
/// with the tool's MCP annotations as attributes.
pub fn tool_resource(server: &str, tool: &Value) -> Resource {
    let name = tool.get("name").and_then(Value::as_str).unwrap_or_default();
    let mut attributes = Map::new();
    attributes.insert("name".into(), json!(name));
    attributes.insert("server".into(), json!(server));
    if let Some(d) = tool.get("description").and_then(Value::as_str) {
        attributes.insert("description".into(), json!(d));
    }
    if let Some(a) = tool.get("annotations").and_then(Value::as_object) {
        for (hint, attr) in [
            ("readOnlyHint", "read_only"),
            ("destructiveHint", "destructive"),
            ("idempotentHint", "idempotent"),
            ("openWorldHint", "open_world"),
        ] {
            if let Some(b) = a.get(hint).and_then(Value::as_bool) {
                attributes.insert(attr.into(), json!(b));
            }
        }
    }
    Resource {
        entity_type: "Tool".into(),
        id: format!("{server}{}{name}", crate::config::NAME_SEPARATOR),
        attributes,
        parents: vec![EntityRef::new("ToolServer", server)],
    }
}

fn decision_request(
    session: &Session,
    principal: Resource,
    action: &str,
    resource: Resource,
    args: Value,
) -> DecisionRequest {
    let id = &session.identity;
    let mut context = Map::new();
    context.insert("args".into(), args);
    if let Some(ip) = &session.client.address {
        context.insert("client_ip".into(), json!(ip));
    }
    DecisionRequest {
        tenant: id.tenant.clone(),
        namespace: id.namespace.clone(),
        principal,
        on_behalf_of: id.on_behalf_of.as_ref().map(|u| EntityRef::new("User", u)),
        session: Some(id.token_id.clone()),
        facts: session.facts(),
        action: action.into(),
        resource,
        context,
        time: chrono::Utc::now(),
    }
}

async fn decide(gw: &Gateway, req: &DecisionRequest) -> Decision {
    let started = Instant::now();
    let d = gw.governor.decide(req).await;
    gw.metrics.decision_latency.observe(started.elapsed());
    d
}

/// The agent as the policies' principal, with what the registry knows about it, and why the
/// registry refuses the agent in the session's namespace, if it does (the principal is then
/// the bare agent, for the record).
pub fn principal(
    session: &Session,
    snapshot: Option<&RegistrySnapshot>,
) -> (Resource, Option<String>) {
    let id = &session.identity;
    match registry::agent_principal(snapshot, &id.tenant, &id.namespace, &id.agent) {
        Ok(p) => (p, None),
        Err(why) => {
            let bare = Resource {
                entity_type: "Agent".into(),
                id: id.agent.clone(),
                ..Default::default()
            };
            (bare, Some(why))
        }
    }
}

/// The decision for a request the registry has not refused; a registry refusal is a plain
/// deny that no policy was asked about.
async fn decide_unless_refused(gw: &Gateway, req: &DecisionRequest, refused: bool) -> Decision {
    if refused {
        Decision {
            errors: vec![],
            ..Decision::deny_with_error("")
        }
    } else {
        decide(gw, req).await
    }
}

/// The registry's standing of `tool`, one of the server's listed `tools`, for this session.
/// A changed or new definition is reported to the registry (once), with the whole listing.
pub fn standing(
    gw: &Gateway,
    session: &Session,
    server: &Server,
    tools: &Arc<Vec<Value>>,
    tool: &Value,
    snapshot: Option<&RegistrySnapshot>,
) -> Standing {
    let id = &session.identity;
    let Some(snapshot) = snapshot else {
        // No registry: nothing to compare, no digest needed.
        let listed = Listed::with_digest(server.name(), tool, None);
        return registry::standing(None, gw.config.registry, &id.tenant, &id.namespace, &listed).0;
    };
    let name = tool.get("name").and_then(Value::as_str).unwrap_or_default();
    let digest = match server.digests(tools).get(name) {
        Some(d) => Some(d.clone()),
        // A definition fetched outside the cached listing.
        None => Listed::new(server.name(), tool).digest,
    };
    let listed = Listed::with_digest(server.name(), tool, digest);
    let (standing, observation) = registry::standing(
        Some(snapshot),
        gw.config.registry,
        &id.tenant,
        &id.namespace,
        &listed,
    );
    if let Some(o) = observation {
        gw.observer
            .report(&gw.governor, o, || registry::definitions(tools));
    }
    standing
}

/// The policy resource of a tool, with the registry's facts.
pub fn registered_tool(server: &str, tool: &Value, standing: &Standing) -> Resource {
    let mut resource = tool_resource(server, tool);
    registry::enrich_tool(&mut resource, standing);
    resource
}

/// Whether `tools/list` shows each tool: `list_tools` must allow it, and `call_tool` without
/// arguments must not be forbidden (a tool no call could pass is not shown at all). Decided
/// in one batch, which a remote governor sends in one round trip.
pub async fn may_list(
    gw: &Gateway,
    session: &Session,
    principal: &Resource,
    resources: Vec<Resource>,
) -> Vec<bool> {
    let mut requests = Vec::with_capacity(resources.len() * 2);
    for resource in resources {
        requests.push(decision_request(
            session,
            principal.clone(),
            "list_tools",
            resource.clone(),
            json!({}),
        ));
        requests.push(decision_request(
            session,
            principal.clone(),
            "call_tool",
            resource,
            json!({}),
        ));
    }
    let started = Instant::now();
    let decisions = gw.governor.decide_many(&requests).await;
    gw.metrics.decision_latency.observe(started.elapsed());
    decisions
        .chunks(2)
        .map(|pair| match pair {
            [listed, call] => {
                listed.outcome == Outcome::Allow
                    && (call.outcome != Outcome::Deny || call.reasons.is_empty())
            }
            // A governor that answered fewer decisions than asked: not shown.
            _ => false,
        })
        .collect()
}

/// A tool result the agent's model can read, marked as an error.
pub fn tool_error(text: impl Into<String>) -> Value {
    json!({"content": [{"type": "text", "text": text.into()}], "isError": true})
}

/// Why a decision denied, in one sentence an agent can show its user.
pub fn denial_text(d: &Decision, namespace: &str, what: &str) -> String {
    if let Some(e) = d.errors.first() {
        return format!("denied: a policy could not be evaluated, and an error never allows ({e})");
    }
    match d.reasons.first() {
        Some(p) => match &p.reason {
            Some(r) => format!("denied by policy {} in {}: {r}", p.id, p.namespace),
            None => format!("denied by policy {} in {}", p.id, p.namespace),
        },
        None => format!("denied: no policy in {namespace} allows {what}"),
    }
}

/// Records a request that was refused before any decision (unknown tool, bad arguments).
async fn refuse(
    gw: &Gateway,
    session: &Session,
    request: &Request,
    error: RpcError,
    subject: Option<&str>,
) -> Result<Value, RpcError> {
    let e = events::session_event(
        session,
        events::REQUEST_REFUSED,
        json!({
            "mcp": events::mcp_attributes(session, &request.method, Some(&request.id)),
            "gen_ai.tool.name": subject,
            "error": {"code": error.code, "message": error.message},
        }),
        trace(request),
    );
    gw.governor.record(e).await.map_err(audit_error)?;
    Err(error)
}

/// `tools/call`.
pub async fn call_tool(
    gw: &Arc<Gateway>,
    session: &Arc<Session>,
    request: &Request,
    out: Option<&mpsc::Sender<Message>>,
) -> Result<Value, RpcError> {
    let name = param_str(request, "name")?;
    let args = match request.params.as_ref().and_then(|p| p.get("arguments")) {
        None | Some(Value::Null) => json!({}),
        Some(a @ Value::Object(_)) => a.clone(),
        Some(_) => {
            let e = RpcError::new(code::INVALID_PARAMS, "params.arguments must be an object");
            return refuse(gw, session, request, e, Some(&name)).await;
        }
    };
    let scope = session.scope.as_deref();
    let Some((server, tool_name)) = gw.catalog.resolve(&session.identity.tenant, scope, &name)
    else {
        let e = unknown_tool(&name);
        return refuse(gw, session, request, e, Some(&name)).await;
    };
    let definition = match server.tool(&tool_name).await {
        Ok(Some(d)) => d,
        Ok(None) => return refuse(gw, session, request, unknown_tool(&name), Some(&name)).await,
        Err(e) => return refuse(gw, session, request, e, Some(&name)).await,
    };
    if let Some(schema) = definition.get("inputSchema") {
        let problems = crate::args::check(schema, &args);
        if !problems.is_empty() {
            let e = RpcError::new(
                code::INVALID_PARAMS,
                format!("invalid arguments for tool {name}: {}", problems.join("; ")),
            )
            .with_data(json!({"problems": problems}));
            return refuse(gw, session, request, e, Some(&name)).await;
        }
    }

    // The registry first: a tool it does not allow here (blocked, not approved, changed
    // since approval) or an agent it blocks is refused whatever the policies say.
    let snapshot = gw.governor.registry();
    // The listing the definition came from (cached): its pin digests are computed once.
    let tools = server.list(Listing::Tools).await.unwrap_or_default();
    let standing = standing(
        gw,
        session,
        &server,
        &tools,
        &definition,
        snapshot.as_deref(),
    );
    let (principal, agent_refused) = principal(session, snapshot.as_deref());
    let refusal = match (agent_refused, &standing) {
        (Some(why), _) => Some(("agent_blocked", why)),
        (None, Standing::Refused { status, why }) => Some((*status, why.clone())),
        _ => None,
    };
    let resource = registered_tool(server.name(), &definition, &standing);
    let dreq = decision_request(session, principal, "call_tool", resource, args.clone());
    let d = decide_unless_refused(gw, &dreq, refusal.is_some()).await;
    let redactor = gw.governor.redactor(session.identity.tenant.as_str());
    let mut mcp = events::mcp_attributes(session, "tools/call", Some(&request.id));
    mcp["gen_ai.tool.name"] = json!(name);
    mcp["gen_ai.operation.name"] = json!("execute_tool");
    mcp["warden.upstream"] = json!(server.name());
    match (&refusal, &standing) {
        (Some((status, why)), _) => {
            mcp["warden.registry"] = json!({"status": status, "refused": why});
        }
        (
            None,
            Standing::Usable {
                warning: Some(w), ..
            },
        ) => {
            mcp["warden.registry"] = json!({"status": "definition_changed", "warning": w});
        }
        _ => {}
    }
    let decided = events::decided_event(
        session,
        events::TOOL_CALL_DECIDED,
        &dreq,
        &d,
        mcp.clone(),
        &redactor,
        trace(request),
    );
    let decision_event = decided.header.id;
    // Fail closed: the decision is durable before anything happens.
    gw.governor.record(decided).await.map_err(audit_error)?;

    let namespace = session.identity.namespace.as_str();
    match d.outcome {
        Outcome::Deny => {
            session.update_facts(|f| f.denied += 1);
            if let Some((_, why)) = refusal {
                gw.metrics
                    .call(server.name(), &tool_name, "refused_by_registry");
                return Ok(tool_error(format!("refused by the registry: {why}")));
            }
            gw.metrics.call(server.name(), &tool_name, "denied");
            return Ok(tool_error(denial_text(
                &d,
                namespace,
                &format!("calling {name}"),
            )));
        }
        Outcome::ApprovalRequired => {
            let held = Held {
                action: "call_tool",
                resource: &dreq.resource,
                args: &args,
                decision: &d,
                decision_event,
                redact: &d.redact_paths().map(str::to_owned).collect::<Vec<_>>(),
            };
            if let Err(refusal) = hold(gw, session, request, out, held).await {
                let outcome = match refusal.status {
                    ApprovalStatus::Expired => "approval_expired",
                    _ => "approval_denied",
                };
                gw.metrics.call(server.name(), &tool_name, outcome);
                session.update_facts(|f| f.denied += 1);
                return Ok(tool_error(refusal.message));
            }
            gw.metrics.call(server.name(), &tool_name, "approved");
        }
        Outcome::Allow => gw.metrics.call(server.name(), &tool_name, "allowed"),
    }

    // Forward, with the upstream's own name for the tool.
    let mut params = request.params.clone().unwrap_or(json!({}));
    params["name"] = json!(tool_name);
    session.update_facts(|f| {
        f.calls += 1;
        f.tools_called.insert(dreq.resource.id.clone());
        f.servers.insert(server.name().to_owned());
        if let Some(true) = dreq
            .resource
            .attributes
            .get("read_only")
            .and_then(Value::as_bool)
        {
            f.categories.insert("read".into());
        }
        // The categories the registry gives the tool (`secrets`, `network`, …).
        if let Some(Value::Array(categories)) = dreq.resource.attributes.get("categories") {
            f.categories.extend(
                categories
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned),
            );
        }
    });
    let started = Instant::now();
    let answer = relay(session, &server, "tools/call", params, out).await;
    let elapsed = started.elapsed();
    gw.metrics.upstream_latency.observe(elapsed);

    let (result, completion) = match answer {
        Ok(Ok(result)) => {
            let bytes = serde_json::to_vec(&result).unwrap_or_default();
            let is_error = result.get("isError").and_then(Value::as_bool) == Some(true);
            let info = json!({
                "outcome": if is_error { "tool_error" } else { "success" },
                "is_error": is_error,
                "result_bytes": bytes.len(),
                "result_sha256": hex::encode(Sha256::digest(&bytes)),
            });
            (Ok(result), info)
        }
        Ok(Err(e)) => {
            gw.metrics.call(server.name(), &tool_name, "upstream_error");
            let info =
                json!({"outcome": "upstream_error", "error": e.message, "error_code": e.code});
            (Err(e), info)
        }
        Err(e) => {
            gw.metrics.call(server.name(), &tool_name, "upstream_error");
            let outcome = match e {
                UpstreamError::Timeout { .. } => "timeout",
                UpstreamError::Crashed { .. } => "crashed",
                UpstreamError::Unavailable { .. } => "unavailable",
                UpstreamError::Protocol { .. } => "protocol_error",
            };
            let text = format!("the call to {name} failed: {e}");
            let info = json!({"outcome": outcome, "error": e.to_string()});
            (Ok(tool_error(text)), info)
        }
    };
    let mut payload = json!({
        "mcp": mcp,
        "decision_event": decision_event,
        "duration_ms": elapsed.as_secs_f64() * 1000.0,
    });
    if let (Value::Object(p), Value::Object(c)) = (&mut payload, completion) {
        p.extend(c);
    }
    let mut completed = events::session_event(
        session,
        events::TOOL_CALL_COMPLETED,
        payload,
        trace(request),
    );
    completed.header.action = Some("call_tool".into());
    completed.header.resource = Some(warden_core::ResourceRef {
        resource_type: "Tool".into(),
        id: dreq.resource.id.clone(),
    });
    redactor.redact(&mut completed.payload, &[]);
    completed.seal();
    // The call has happened: its answer goes back without waiting for a second commit. The
    // outcome is queued before the answer leaves (a graceful shutdown still writes it); if
    // it cannot even be queued, the gap is loud.
    if let Err(e) = gw.governor.record_later(completed) {
        tracing::error!(error = %e, tool = %name, "could not record the outcome of a tool call");
    }
    result
}

/// `resources/read`: decided as `read_resource` on `McpResource::"<uri>"`.
pub async fn read_resource(
    gw: &Arc<Gateway>,
    session: &Arc<Session>,
    request: &Request,
    out: Option<&mpsc::Sender<Message>>,
) -> Result<Value, RpcError> {
    let uri = param_str(request, "uri")?;
    let Some(server) = gw
        .catalog
        .resource_owner(&session.identity.tenant, session.scope.as_deref(), &uri)
        .await
    else {
        return refuse(gw, session, request, unknown_resource(&uri), None).await;
    };
    let resource = Resource {
        entity_type: "McpResource".into(),
        id: uri.clone(),
        attributes: [
            ("uri".to_owned(), json!(uri)),
            ("server".to_owned(), json!(server.name())),
        ]
        .into_iter()
        .collect(),
        parents: vec![EntityRef::new("ToolServer", server.name())],
    };
    let params = request.params.clone().unwrap_or(json!({}));
    governed_forward(
        gw,
        session,
        request,
        out,
        &server,
        "read_resource",
        events::RESOURCE_READ_DECIDED,
        resource,
        params,
    )
    .await
}

/// `prompts/get`: decided as `get_prompt` on `Prompt::"<server>__<prompt>"`.
pub async fn get_prompt(
    gw: &Arc<Gateway>,
    session: &Arc<Session>,
    request: &Request,
    out: Option<&mpsc::Sender<Message>>,
) -> Result<Value, RpcError> {
    let name = param_str(request, "name")?;
    let Some((server, prompt)) =
        gw.catalog
            .resolve(&session.identity.tenant, session.scope.as_deref(), &name)
    else {
        return refuse(gw, session, request, unknown_prompt(&name), None).await;
    };
    let resource = Resource {
        entity_type: "Prompt".into(),
        id: format!("{}{}{prompt}", server.name(), crate::config::NAME_SEPARATOR),
        attributes: [
            ("name".to_owned(), json!(prompt)),
            ("server".to_owned(), json!(server.name())),
        ]
        .into_iter()
        .collect(),
        parents: vec![EntityRef::new("ToolServer", server.name())],
    };
    let mut params = request.params.clone().unwrap_or(json!({}));
    params["name"] = json!(prompt);
    governed_forward(
        gw,
        session,
        request,
        out,
        &server,
        "get_prompt",
        events::PROMPT_GET_DECIDED,
        resource,
        params,
    )
    .await
}

/// Decide, record, then refuse (a JSON-RPC error), hold, or forward.
#[allow(clippy::too_many_arguments)]
async fn governed_forward(
    gw: &Arc<Gateway>,
    session: &Arc<Session>,
    request: &Request,
    out: Option<&mpsc::Sender<Message>>,
    server: &Arc<Server>,
    action: &'static str,
    event_type: &str,
    resource: Resource,
    params: Value,
) -> Result<Value, RpcError> {
    let args = params.get("arguments").cloned().unwrap_or(json!({}));
    let args = if args.is_object() { args } else { json!({}) };
    let snapshot = gw.governor.registry();
    let (principal, refusal) = principal(session, snapshot.as_deref());
    let dreq = decision_request(session, principal, action, resource, args.clone());
    let d = decide_unless_refused(gw, &dreq, refusal.is_some()).await;
    let redactor = gw.governor.redactor(session.identity.tenant.as_str());
    let mut mcp = events::mcp_attributes(session, &request.method, Some(&request.id));
    mcp["warden.upstream"] = json!(server.name());
    if let Some(why) = &refusal {
        mcp["warden.registry"] = json!({"status": "agent_blocked", "refused": why});
    }
    let e = events::decided_event(
        session,
        event_type,
        &dreq,
        &d,
        mcp,
        &redactor,
        trace(request),
    );
    let decision_event = e.header.id;
    gw.governor.record(e).await.map_err(audit_error)?;
    match d.outcome {
        Outcome::Deny => {
            if let Some(why) = refusal {
                return Err(RpcError::new(
                    code::POLICY_DENIED,
                    format!("refused by the registry: {why}"),
                ));
            }
            return Err(RpcError::new(
                code::POLICY_DENIED,
                denial_text(
                    &d,
                    session.identity.namespace.as_str(),
                    &format!("{} on {}", action, dreq.resource.id),
                ),
            ));
        }
        Outcome::ApprovalRequired => {
            let held = Held {
                action,
                resource: &dreq.resource,
                args: &args,
                decision: &d,
                decision_event,
                redact: &d.redact_paths().map(str::to_owned).collect::<Vec<_>>(),
            };
            if let Err(refusal) = hold(gw, session, request, out, held).await {
                return Err(RpcError::new(code::POLICY_DENIED, refusal.message));
            }
        }
        Outcome::Allow => {}
    }
    session.update_facts(|f| {
        f.servers.insert(server.name().to_owned());
    });
    relay(session, server, &request.method, params, out)
        .await
        .map_err(|e| crate::catalog::upstream_error(&e))?
}

/// Forwards a request to a server, passing what the server sends meanwhile (progress,
/// logging, sampling and elicitation requests) to the agent, and the agent's answers back.
async fn relay(
    session: &Arc<Session>,
    server: &Arc<Server>,
    method: &str,
    params: Value,
    out: Option<&mpsc::Sender<Message>>,
) -> Result<Result<Value, RpcError>, UpstreamError> {
    let (tx, mut rx) = mpsc::channel::<ServerMessage>(32);
    let call = server.upstream.call(method, Some(params), Some(tx));
    tokio::pin!(call);
    loop {
        tokio::select! {
            answer = &mut call => return answer,
            Some(m) = rx.recv() => match m {
                ServerMessage::Notification(n) => {
                    if let Some(out) = out {
                        let _ = out.send(Message::Notification(n)).await;
                    }
                }
                ServerMessage::Request { request, reply } => {
                    // What the agent did not declare it cannot answer: say so at once
                    // rather than send it a request it does not know.
                    let needs = match request.method.as_str() {
                        "sampling/createMessage" => Some("sampling"),
                        "elicitation/create" => Some("elicitation"),
                        "roots/list" => Some("roots"),
                        _ => None,
                    };
                    if request.method == "ping" {
                        let _ = reply.send(Ok(json!({})));
                        continue;
                    }
                    if let Some(capability) = needs
                        && !session.client_supports(capability)
                    {
                        let _ = reply.send(Err(RpcError::new(
                            code::METHOD_NOT_FOUND,
                            format!("the agent's client does not support {capability}"),
                        )));
                        continue;
                    }
                    let session = session.clone();
                    let out = out.cloned();
                    tokio::spawn(async move {
                        let answer = session
                            .ask_client(&request.method, request.params, out.as_ref(), CLIENT_ANSWER_TIMEOUT)
                            .await;
                        let _ = reply.send(answer);
                    });
                }
            },
        }
    }
}

/// A call waiting for approval.
struct Held<'a> {
    action: &'a str,
    resource: &'a Resource,
    args: &'a Value,
    decision: &'a Decision,
    decision_event: uuid::Uuid,
    redact: &'a [String],
}

/// Why a held call may not proceed.
struct Refusal {
    status: ApprovalStatus,
    message: String,
}

/// Holds a call until a person approves it. A grant for exactly this session, resource and
/// arguments that was given earlier (the agent retried after its first call timed out) is
/// used up at once; otherwise an approval request is opened and waited on, with progress
/// notifications to a client that asked for them, and — when configured and the client can
/// — a question to the on-behalf-of user in the client itself.
async fn hold(
    gw: &Arc<Gateway>,
    session: &Arc<Session>,
    request: &Request,
    out: Option<&mpsc::Sender<Message>>,
    held: Held<'_>,
) -> Result<(), Refusal> {
    let tenant = session.identity.tenant.clone();
    let token = session.identity.token_id.clone();
    let digest = hex::encode(Sha256::digest(canonical::to_vec(held.args)));
    let failed = |e: warden_core::Error| Refusal {
        status: ApprovalStatus::Denied,
        message: format!("this call needs approval, and the approval could not be handled: {e}"),
    };
    if gw
        .governor
        .consume_approval(&tenant, &token, &held.resource.id, &digest)
        .await
        .map_err(failed)?
        .is_some()
    {
        return Ok(());
    }

    let mut shown = json!({ "args": held.args.clone() });
    let refs: Vec<&str> = held.redact.iter().map(String::as_str).collect();
    gw.governor
        .redactor(tenant.as_str())
        .redact(&mut shown, &refs);
    let reasons: Vec<String> = held
        .decision
        .reasons
        .iter()
        .filter_map(|p| p.reason.clone())
        .collect();
    let approval = gw
        .governor
        .open_approval(NewApproval {
            tenant: tenant.as_str().to_owned(),
            namespace: session.identity.namespace.as_str().to_owned(),
            session: token.clone(),
            agent: Some(session.identity.agent.clone()),
            on_behalf_of: session.identity.on_behalf_of.clone(),
            action: held.action.to_owned(),
            resource_type: held.resource.entity_type.clone(),
            resource_id: held.resource.id.clone(),
            args_sha256: digest.clone(),
            arguments: shown["args"].take(),
            policies: held.decision.reasons.iter().map(|p| p.id.clone()).collect(),
            reason: (!reasons.is_empty()).then(|| reasons.join(" ")),
            decision_event: Some(held.decision_event),
            expires_at: chrono::Utc::now()
                + chrono::Duration::from_std(gw.config.approval_timeout)
                    .unwrap_or(chrono::Duration::minutes(10)),
        })
        .await
        .map_err(failed)?;
    let _held = gw.metrics.hold();
    let deadline = Instant::now() + gw.config.approval_timeout;

    let elicitation = (gw.config.elicitation_approvals && session.client_supports("elicitation"))
        .then(|| {
            let gw = gw.clone();
            let session = session.clone();
            let out = out.cloned();
            let approval = approval.clone();
            tokio::spawn(async move { elicit(&gw, &session, out.as_ref(), &approval).await })
        });
    let progress_token = request
        .params
        .as_ref()
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get("progressToken"))
        .cloned();
    let started = Instant::now();
    let mut ticks = 0u64;
    let outcome = loop {
        let next = (Instant::now() + gw.config.progress_interval).min(deadline);
        let a = gw
            .governor
            .wait_approval(&tenant, approval.id, next)
            .await
            .map_err(failed)?;
        // `wait` returns at the approval's expiry with the stored status still pending;
        // `status_at` tells an expiry from our own progress deadline.
        match a.status_at(chrono::Utc::now()) {
            ApprovalStatus::Pending if Instant::now() < deadline => {
                ticks += 1;
                if let (Some(out), Some(token)) = (out, &progress_token) {
                    let n = Notification {
                        method: "notifications/progress".into(),
                        params: Some(json!({
                            "progressToken": token,
                            "progress": ticks,
                            "message": format!(
                                "waiting for a person to approve (approval {}, {}s so far)",
                                approval.id,
                                started.elapsed().as_secs()
                            ),
                        })),
                    };
                    let _ = out.send(Message::Notification(n)).await;
                }
            }
            _ => break a,
        }
    };
    if let Some(task) = elicitation {
        task.abort();
    }
    match outcome.status_at(chrono::Utc::now()) {
        ApprovalStatus::Approved => {
            // Use the grant up: it can never let another call through.
            match gw
                .governor
                .consume_approval(&tenant, &token, &held.resource.id, &digest)
                .await
                .map_err(failed)?
            {
                Some(_) => Ok(()),
                None => Err(Refusal {
                    status: ApprovalStatus::Consumed,
                    message: format!(
                        "approval {} was already used by another call; ask again",
                        approval.id
                    ),
                }),
            }
        }
        ApprovalStatus::Denied => {
            let by = outcome.resolved_by.as_deref().unwrap_or("an approver");
            let message = match &outcome.comment {
                Some(c) if !c.is_empty() => format!("denied by approver {by}: {c}"),
                _ => format!("denied by approver {by}"),
            };
            Err(Refusal {
                status: ApprovalStatus::Denied,
                message,
            })
        }
        _ => {
            let _ = gw.governor.expire_approval(&tenant, approval.id).await;
            Err(Refusal {
                status: ApprovalStatus::Expired,
                message: format!(
                    "approval {} was not given within {}s; the call was not made",
                    approval.id,
                    gw.config.approval_timeout.as_secs()
                ),
            })
        }
    }
}

/// Asks the on-behalf-of user in the agent's client whether the held call may proceed.
async fn elicit(
    gw: &Gateway,
    session: &Session,
    out: Option<&mpsc::Sender<Message>>,
    approval: &warden_core::Approval,
) {
    let user = session
        .identity
        .on_behalf_of
        .clone()
        .unwrap_or_else(|| "the user".into());
    let message = format!(
        "Agent {} wants to {} {} with arguments {}. {} Approve it?",
        session.identity.agent,
        approval.action.replace('_', " "),
        approval.resource_id,
        approval.arguments,
        approval.reason.clone().unwrap_or_default(),
    );
    let params = json!({
        "message": message,
        "requestedSchema": {
            "type": "object",
            "properties": {
                "approve": {"type": "boolean", "title": "Approve", "description": "Let this call proceed"},
                "comment": {"type": "string", "title": "Comment"}
            },
            "required": ["approve"]
        }
    });
    let timeout = gw.config.approval_timeout;
    let Ok(answer) = session
        .ask_client("elicitation/create", Some(params), out, timeout)
        .await
    else {
        return;
    };
    let approve = match answer.get("action").and_then(Value::as_str) {
        Some("accept") => answer
            .get("content")
            .and_then(|c| c.get("approve"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
        Some("decline") => false,
        // Cancelled: the user did not answer; the approval stays open for others.
        _ => return,
    };
    let comment = answer
        .get("content")
        .and_then(|c| c.get("comment"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let answer = ApprovalAnswer {
        approve,
        by: format!("user:{user}"),
        via: ApprovalChannel::Elicitation,
        comment,
    };
    if let Err(e) = gw
        .governor
        .answer_approval(&session.identity.tenant, approval.id, answer)
        .await
    {
        tracing::info!(error = %e, approval = %approval.id, "in-client answer not applied");
    }
}

fn unknown_tool(name: &str) -> RpcError {
    RpcError::new(
        code::INVALID_PARAMS,
        format!("unknown tool {name:?}; tools/list shows the tools this session may call"),
    )
    .with_data(json!({"tool": name}))
}
