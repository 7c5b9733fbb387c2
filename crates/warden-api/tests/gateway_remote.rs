//! The routes a remote gateway calls (`/api/v1/gateway/…`) with an agent token, spoken to
//! directly: what the token decides about them, what an agent may and may not record, and
//! where approvals belong. The wrapper that uses them end to end is tested in the `warden`
//! crate.

mod common;

use std::time::Duration;

use common::TestServer;
use common::mcp::POLICIES;
use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_core::{Actor, AuditEvent, EntityRef, ResourceRef, Role};

const TENANT: &str = "acme";

async fn server() -> TestServer {
    server_with(|_| {}).await
}

async fn server_with(
    configure: impl FnOnce(&mut warden_gateway::GatewayConfig) + Send + 'static,
) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(policies.join(TENANT)).unwrap();
    std::fs::write(policies.join(TENANT).join("mcp.cedar"), POLICIES).unwrap();
    TestServer::start_in(dir, move |c| {
        c.policies = Some(policies);
        c.gateway.approval_timeout = Duration::from_secs(30);
        configure(&mut c.gateway);
    })
    .await
}

async fn agent(s: &TestServer, name: &str) -> String {
    s.agent_token(TENANT, name, "alice", "acme/platform").await
}

fn tool(name: &str) -> Value {
    json!({"type": "Tool", "id": format!("everything__{name}"),
           "attributes": {"name": name, "server": "everything"},
           "parents": [{"type": "ToolServer", "id": "everything"}]})
}

/// Asks the server for one decision; returns the decision and its seal.
async fn decide(s: &TestServer, token: &str, name: &str, args: Value) -> (Value, String) {
    let (status, v) = s
        .post(
            "/api/v1/gateway/decisions",
            token,
            &json!({"requests": [{"action": "call_tool", "resource": tool(name), "context": {"args": args}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let d = &v["decisions"][0];
    (
        d["decision"].clone(),
        d["seal"].as_str().unwrap().to_owned(),
    )
}

/// A decided event as the gateway builds it, with whatever it claims about who acted.
fn decided_event(name: &str, decision: &Value, args: Value) -> AuditEvent {
    let resource = tool(name);
    let mut e = AuditEvent::new(
        "other-tenant",
        "other-tenant/somewhere",
        "mcp.tool.call.decided",
        "warden.gateway",
        Actor {
            principal: Some(EntityRef::new("Agent", "someone-else")),
            agent: Some("someone-else".into()),
            session: Some("tok_not_mine".into()),
            token_id: Some("tok_not_mine".into()),
            ..Default::default()
        },
        json!({"request": {"action": "call_tool", "resource": resource, "context": {"args": args}},
               "mcp": {"gen_ai.tool.name": name}}),
    );
    e.header.action = Some("call_tool".into());
    e.header.resource = Some(ResourceRef {
        resource_type: "Tool".into(),
        id: format!("everything__{name}"),
    });
    e.header.decision = Some(warden_core::DecisionSummary {
        outcome: serde_json::from_value(decision["outcome"].clone()).unwrap(),
        policies: serde_json::from_value(decision["reasons"].clone()).unwrap(),
        obligations: serde_json::from_value(decision["obligations"].clone()).unwrap(),
        warnings: serde_json::from_value(decision["warnings"].clone()).unwrap(),
        errors: serde_json::from_value(decision["errors"].clone()).unwrap(),
    });
    e.seal();
    e
}

fn plain_event(kind: &str) -> AuditEvent {
    AuditEvent::new(
        TENANT,
        "acme/platform",
        kind,
        "warden.gateway",
        Actor::default(),
        json!({"note": "from the agent"}),
    )
}

async fn record(
    s: &TestServer,
    token: &str,
    event: &AuditEvent,
    seal: Option<&str>,
) -> (StatusCode, Value) {
    s.post(
        "/api/v1/gateway/events",
        token,
        &json!({"events": [{"event": event, "seal": seal}]}),
    )
    .await
}

async fn events_of(s: &TestServer, auditor: &str, kind: &str) -> Vec<Value> {
    let (status, page) = s
        .get(
            &format!("/api/v1/audit/events?type={kind}&limit=100"),
            auditor,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn only_agent_tokens_may_use_the_gateway_routes() {
    let s = server().await;
    let admin = s.token(TENANT, Role::Admin, None, None, None).await;
    let (status, v) = s.get("/api/v1/gateway/session", &admin).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("agent tokens"),
        "{v}"
    );
    let (status, _) = s.get("/api/v1/gateway/session", "wdn_unknown").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let token = agent(&s, "claude-code").await;
    let (status, v) = s.get("/api/v1/gateway/session", &token).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["tenant"], TENANT);
    assert_eq!(v["agent"], "claude-code");
    assert_eq!(v["on_behalf_of"], "alice");
    assert_eq!(v["namespace"], "acme/platform");
    assert!(v["token_id"].as_str().unwrap().starts_with("tok_"), "{v}");
    assert_eq!(v["settings"]["approval_timeout_secs"], 30.0);
    assert_eq!(v["settings"]["registry"], "optional");
}

#[tokio::test]
async fn decisions_are_for_the_token_whatever_the_body_says() {
    let s = server().await;
    let token = agent(&s, "claude-code").await;
    let (allowed, _) = decide(&s, &token, "echo", json!({"message": "hi"})).await;
    assert_eq!(allowed["outcome"], "allow", "{allowed}");
    let (denied, _) = decide(&s, &token, "get-env", json!({})).await;
    assert_eq!(denied["outcome"], "deny");
    assert_eq!(denied["reasons"][0]["id"], "mcp.no-env");
    let (held, _) = decide(&s, &token, "get-sum", json!({"a": 1, "b": 2})).await;
    assert_eq!(held["outcome"], "approval_required");

    // Who acts is not the body's to say, and only the gateway's actions are decided here.
    for body in [
        json!({"requests": [{"action": "call_tool", "resource": tool("echo"), "principal": {"type": "Agent", "id": "root"}}]}),
        json!({"requests": [{"action": "call_tool", "resource": tool("echo"), "tenant": "other"}]}),
        json!({"requests": [{"action": "write", "resource": tool("echo")}]}),
    ] {
        let (status, v) = s.post("/api/v1/gateway/decisions", &token, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {v}");
    }
}

#[tokio::test]
async fn an_agent_token_records_only_the_gateways_event_types() {
    let s = server().await;
    let token = agent(&s, "claude-code").await;
    let auditor = s.token(TENANT, Role::Auditor, None, None, None).await;
    for kind in [
        "approval.granted",
        "approval.requested",
        "authz.decision",
        "policy.changed",
        "token.created",
        "registry.server.approved",
        "mcp.made.up",
    ] {
        let (status, v) = record(&s, &token, &plain_event(kind), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{kind} → {v}");
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains("gateway's own event types"),
            "{v}"
        );
        let stored = events_of(&s, &auditor, kind).await;
        assert!(
            !stored
                .iter()
                .any(|e| e["payload"]["note"] == "from the agent"),
            "{kind} was stored"
        );
    }
    // One forbidden event sinks the whole batch: nothing of it is recorded.
    let ok = plain_event("mcp.session.started");
    let (status, _) = s
        .post(
            "/api/v1/gateway/events",
            &token,
            &json!({"events": [{"event": ok}, {"event": plain_event("approval.granted")}]}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        events_of(&s, &auditor, "mcp.session.started")
            .await
            .is_empty()
    );
    // Another source is not the gateway's.
    let mut foreign = plain_event("mcp.session.started");
    foreign.header.source = "somebody.else".into();
    let (status, _) = record(&s, &token, &foreign, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn events_are_stamped_with_the_token_and_only_the_servers_decisions_pass() {
    let s = server().await;
    let token = agent(&s, "claude-code").await;
    let other = agent(&s, "other-agent").await;
    let auditor = s.token(TENANT, Role::Auditor, None, None, None).await;

    // An allow the server never gave (no seal, or another token's seal) is refused.
    let (allowed, seal) = decide(&s, &token, "echo", json!({"message": "hi"})).await;
    let event = decided_event("echo", &allowed, json!({"message": "hi"}));
    let (status, v) = record(&s, &token, &event, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("not made by this server"),
        "{v}"
    );
    let (status, _) = record(&s, &other, &event, Some(&seal)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A decision changed after it was sealed is not the server's either.
    let mut forged = allowed.clone();
    forged["reasons"] = json!([]);
    let (status, _) = record(
        &s,
        &token,
        &decided_event("echo", &forged, json!({})),
        Some(&seal),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, v) = record(&s, &token, &event, Some(&seal)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["recorded"][0]["duplicate"], false);
    // A retry (same id) is recorded once.
    let (status, v) = record(&s, &token, &event, Some(&seal)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["recorded"][0]["duplicate"], true);

    // A deny needs no seal: the gateway may refuse on its own.
    let (denied, _) = decide(&s, &token, "get-env", json!({})).await;
    let (status, v) = record(
        &s,
        &token,
        &decided_event("get-env", &denied, json!({})),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");

    // Stored under the token's tenant, namespace and session, whatever the event said.
    let stored = events_of(&s, &auditor, "mcp.tool.call.decided").await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    let token_id = s.get("/api/v1/gateway/session", &token).await.1["token_id"].clone();
    for e in &stored {
        assert_eq!(e["tenant"], TENANT);
        assert_eq!(e["namespace"], "acme/platform");
        assert_eq!(e["actor"]["agent"], "claude-code");
        assert_eq!(e["actor"]["on_behalf_of"], "alice");
        assert_eq!(e["actor"]["session"], token_id);
        assert_eq!(e["actor"]["token_id"], token_id);
        assert_eq!(e["source"], "warden.gateway");
    }
    let other_auditor = s
        .token("other-tenant", Role::Auditor, None, None, None)
        .await;
    assert!(
        events_of(&s, &other_auditor, "mcp.tool.call.decided")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn events_are_redacted_on_the_server_before_storage() {
    let s = server().await;
    let token = agent(&s, "claude-code").await;
    let auditor = s.token(TENANT, Role::Auditor, None, None, None).await;
    // `message` is redacted by the echo policy's obligation; the GitHub token by a detector.
    let by_path = "canary-by-path-51e0";
    let by_shape = "ghp_CANARYremoteCANARYremoteCANARY123456";
    let args = json!({"message": by_path});
    let (allowed, seal) = decide(&s, &token, "echo", args.clone()).await;
    let mut event = decided_event("echo", &allowed, args);
    event.payload["mcp"]["note"] = json!(format!("use {by_shape}"));
    event.seal();
    let (status, v) = record(&s, &token, &event, Some(&seal)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let stored = events_of(&s, &auditor, "mcp.tool.call.decided").await;
    let message = stored[0]["payload"]["request"]["context"]["args"]["message"]
        .as_str()
        .unwrap();
    assert!(message.starts_with("hmac-sha256:"), "{message}");
    // The hash is the tenant's: an auditor finds the value with the hash route.
    let (_, hashed) = s
        .post("/api/v1/audit/hash", &auditor, &json!({"value": by_path}))
        .await;
    assert_eq!(hashed["hash"], message, "{hashed}");

    let (_, export) = s
        .get_text("/api/v1/audit/export?format=ndjson", Some(&auditor))
        .await;
    assert!(!export.contains(by_path) && !export.contains(by_shape));
    let dir = s.stop().await;
    for entry in std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .flatten()
    {
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        for c in [by_path, by_shape] {
            assert!(
                !bytes.windows(c.len()).any(|w| w == c.as_bytes()),
                "{c} is in {}",
                entry.path().display()
            );
        }
    }
}

/// Records the held decision on get-sum and opens its approval, as the gateway does.
async fn hold(s: &TestServer, token: &str, args: Value) -> (Value, String) {
    let (held, seal) = decide(s, token, "get-sum", args.clone()).await;
    assert_eq!(held["outcome"], "approval_required");
    let event = decided_event("get-sum", &held, args.clone());
    let (status, v) = record(s, token, &event, Some(&seal)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let digest = hex_sha256(&args);
    let (status, approval) = s
        .post(
            "/api/v1/gateway/approvals",
            token,
            &json!({
                "action": "call_tool", "resource_type": "Tool", "resource_id": "everything__get-sum",
                "args_sha256": digest, "arguments": args, "policies": ["mcp.sum-ask"],
                "decision_event": event.header.id,
                "expires_at": chrono::Utc::now() + chrono::Duration::hours(5),
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{approval}");
    (approval, digest)
}

fn hex_sha256(v: &Value) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(warden_core::canonical::to_vec(v)))
}

#[tokio::test]
async fn approvals_belong_to_the_session_that_asked() {
    let s = server().await;
    let token = agent(&s, "claude-code").await;
    let other = agent(&s, "other-agent").await;
    let admin = s.token(TENANT, Role::Admin, None, None, None).await;
    let args = json!({"a": 20, "b": 22});
    let (approval, digest) = hold(&s, &token, args.clone()).await;
    let id = approval["id"].as_str().unwrap();
    assert_eq!(approval["status"], "pending");
    assert_eq!(
        approval["session"],
        s.get("/api/v1/gateway/session", &token).await.1["token_id"]
    );
    // The expiry is the server's at most (30 s here), not what the agent asked for.
    let expires: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(approval["expires_at"].clone()).unwrap();
    assert!(expires < chrono::Utc::now() + chrono::Duration::seconds(31));

    // Another session sees nothing of it and cannot use, expire or answer it.
    let (status, _) = s
        .get(&format!("/api/v1/gateway/approvals/{id}"), &other)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s
        .post(
            &format!("/api/v1/gateway/approvals/{id}/expire"),
            &other,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Nor open one on the strength of a decision that is not its own.
    let (status, v) = s
        .post(
            "/api/v1/gateway/approvals",
            &other,
            &json!({
                "action": "call_tool", "resource_type": "Tool", "resource_id": "everything__get-sum",
                "args_sha256": digest, "arguments": args, "decision_event": approval["decision_event"],
                "expires_at": chrono::Utc::now() + chrono::Duration::minutes(5),
            }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    // In-client answers are off on this server.
    let (status, _) = s
        .post(
            &format!("/api/v1/gateway/approvals/{id}/answer"),
            &token,
            &json!({"approve": true}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A long-poll returns when a person answers.
    let waiter = {
        let (client, base, token, id) = (
            s.client.clone(),
            s.base.clone(),
            token.clone(),
            id.to_owned(),
        );
        tokio::spawn(async move {
            let r = client
                .get(format!(
                    "{base}/api/v1/gateway/approvals/{id}?wait_ms=20000"
                ))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            common::read(r).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, v) = s
        .post(
            &format!("/api/v1/approvals/{id}/approve"),
            &admin,
            &json!({"comment": "ok"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, answered) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the long-poll ends with the answer")
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{answered}");
    assert_eq!(answered["status"], "approved");

    // Only the session that asked can use the grant, once.
    let consume = json!({"resource_id": "everything__get-sum", "args_sha256": digest});
    let (_, v) = s
        .post("/api/v1/gateway/approvals/consume", &other, &consume)
        .await;
    assert_eq!(v["approval"], Value::Null);
    let (_, v) = s
        .post("/api/v1/gateway/approvals/consume", &token, &consume)
        .await;
    assert_eq!(v["approval"]["status"], "consumed", "{v}");
    let (_, v) = s
        .post("/api/v1/gateway/approvals/consume", &token, &consume)
        .await;
    assert_eq!(v["approval"], Value::Null);
}

#[tokio::test]
async fn the_session_user_may_answer_in_the_client_when_the_server_allows_it() {
    let s = server_with(|g| g.elicitation_approvals = true).await;
    let token = agent(&s, "claude-code").await;
    let auditor = s.token(TENANT, Role::Auditor, None, None, None).await;
    let (approval, _) = hold(&s, &token, json!({"a": 1, "b": 1})).await;
    let id = approval["id"].as_str().unwrap();
    let (status, v) = s
        .post(
            &format!("/api/v1/gateway/approvals/{id}/answer"),
            &token,
            &json!({"approve": false, "comment": "not now"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "denied");
    // Who answered comes from the token, not the body.
    assert_eq!(v["resolved_by"], "user:alice");
    assert_eq!(v["resolved_via"], "elicitation");
    assert_eq!(events_of(&s, &auditor, "approval.denied").await.len(), 1);
}

#[tokio::test]
async fn the_registry_is_the_tenants_without_transports() {
    let s = server().await;
    let token = agent(&s, "claude-code").await;
    let admin = s.token(TENANT, Role::Admin, None, None, None).await;
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../warden-registry/tests/fixtures/server-json/npm-github.json"
    );
    let server_json: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let (status, v) = s
        .post("/api/v1/registry/servers", &admin, &server_json)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert!(v["transport"].is_object(), "{v}");
    let r = s
        .client
        .get(format!("{}/api/v1/gateway/registry", s.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    let servers = body["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{body}");
    assert_eq!(
        servers[0]["name"],
        "io.github.modelcontextprotocol/server-github"
    );
    // How the server is started, and its secret references, stay on the server.
    assert_eq!(servers[0]["transport"], Value::Null, "{body}");
    let again = s
        .client
        .get(format!("{}/api/v1/gateway/registry", s.base))
        .bearer_auth(&token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn the_gateway_routes_are_in_the_openapi_document() {
    let s = server().await;
    let (_, doc) = s.get_text("/openapi.json", None).await;
    let doc: Value = serde_json::from_str(&doc).unwrap();
    for (path, method) in [
        ("/api/v1/gateway/session", "get"),
        ("/api/v1/gateway/registry", "get"),
        ("/api/v1/gateway/decisions", "post"),
        ("/api/v1/gateway/events", "post"),
        ("/api/v1/gateway/approvals", "post"),
        ("/api/v1/gateway/approvals/consume", "post"),
        ("/api/v1/gateway/approvals/{id}", "get"),
        ("/api/v1/gateway/approvals/{id}/expire", "post"),
        ("/api/v1/gateway/approvals/{id}/answer", "post"),
    ] {
        assert!(
            doc["paths"][path].get(method).is_some(),
            "{method} {path} missing from /openapi.json"
        );
    }
}
