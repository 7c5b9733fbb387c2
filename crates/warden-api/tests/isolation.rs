//! Two tenants on one server: nothing of one is ever visible with the other's token.

mod common;

use common::{TestServer, tool_call};
use reqwest::StatusCode;
use serde_json::json;
use warden_core::Role;

#[tokio::test]
async fn every_read_endpoint_confines_a_token_to_its_tenant() {
    let s = TestServer::start().await;
    let a_admin = s.token("acme", Role::Admin, None, None, None).await;
    let b_admin = s.token("globex", Role::Admin, None, None, None).await;
    let b_agent = s.agent_token("globex", "bot", "bob", "globex/secret").await;
    s.put_text(
        "/api/v1/policies/globex/secret",
        &b_admin,
        "permit (principal, action, resource);",
    )
    .await;
    let (_, v) = s
        .post(
            "/api/v1/authorize",
            &b_agent,
            &tool_call("x__globex-only-tool", "low", json!({})),
        )
        .await;
    let b_event = v["event_id"].as_str().unwrap().to_owned();

    let (status, page) = s.get("/api/v1/audit/events?limit=1000", &a_admin).await;
    assert_eq!(status, StatusCode::OK);
    let text = page.to_string();
    assert!(!text.contains("globex"), "acme sees globex events: {text}");
    let (_, export) = s.get_text("/api/v1/audit/export", Some(&a_admin)).await;
    assert!(!export.contains("globex"));
    for path in [
        format!("/api/v1/audit/events/{b_event}"),
        format!("/api/v1/audit/events/{b_event}/proof"),
        "/api/v1/policies/globex/secret".to_owned(),
    ] {
        let (status, body) = s.get(&path, &a_admin).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let (status, _) = s
        .get("/api/v1/audit/events?namespace=globex", &a_admin)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, tokens) = s.get("/api/v1/tokens", &a_admin).await;
    assert!(!tokens.to_string().contains("globex"));
    let (_, versions) = s.get("/api/v1/policies/versions", &a_admin).await;
    assert!(!versions.to_string().contains("globex"));
    let (_, overview) = s.get("/api/v1/policies", &a_admin).await;
    assert!(!overview["files"].to_string().contains("globex"));
    assert_eq!(overview["version"], 0, "{overview}");
    let (_, cps) = s.get("/api/v1/audit/checkpoints", &a_admin).await;
    assert_eq!(cps["origin"], "warden/acme");
    // A foreign namespace in a write looks the same as one that does not exist.
    let (status, _) = s
        .put_text(
            "/api/v1/policies/globex/secret",
            &a_admin,
            "forbid (principal, action, resource);",
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s.post("/api/v1/authorize", &a_admin, &json!({"namespace": "globex/secret", "principal": {"type": "Agent", "id": "x"}, "action": "call_tool", "resource": {"type": "Tool", "id": "t"}})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, h_a) = s
        .post("/api/v1/audit/hash", &a_admin, &json!({"value": "same"}))
        .await;
    let (_, h_b) = s
        .post("/api/v1/audit/hash", &b_admin, &json!({"value": "same"}))
        .await;
    assert_ne!(h_a["hash"], h_b["hash"], "redaction keys differ per tenant");
}

#[tokio::test]
async fn roles_limit_what_a_token_may_do() {
    let s = TestServer::start().await;
    let agent = s.agent_token("acme", "bot", "u", "acme").await;
    let auditor = s.token("acme", Role::Auditor, None, None, None).await;
    let (status, _) = s.get("/api/v1/audit/events", &agent).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "agents do not read the audit trail"
    );
    let (status, _) = s
        .post(
            "/api/v1/authorize",
            &auditor,
            &tool_call("x__y", "low", json!({})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "auditors do not ask for decisions"
    );
    let (status, _) = s
        .post("/api/v1/tokens", &auditor, &json!({"role": "admin"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let s = TestServer::start().await;
    let (status, _) = s.get_text("/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s.get_text("/readyz", None).await;
    assert_eq!(status, StatusCode::OK);
    let t = s.agent_token("acme", "a", "u", "acme").await;
    s.post(
        "/api/v1/authorize",
        &t,
        &tool_call("x__y", "low", json!({})),
    )
    .await;
    let (_, metrics) = s.get_text("/metrics", None).await;
    for name in [
        "warden_decisions_total{outcome=\"deny\"} 1",
        "warden_decision_seconds_bucket",
        "warden_audit_queue_depth",
        "warden_audit_append_seconds_count",
        "warden_audit_events_appended_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    let (_, doc) = s.get_text("/openapi.json", None).await;
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/api/v1/authorize",
        "/api/v1/authorize/batch",
        "/api/v1/events",
        "/api/v1/audit/events",
        "/api/v1/audit/events/{id}",
        "/api/v1/audit/events/{id}/proof",
        "/api/v1/audit/export",
        "/api/v1/audit/hash",
        "/api/v1/audit/checkpoints",
        "/api/v1/audit/consistency",
        "/api/v1/policies",
        "/api/v1/policies/versions",
        "/api/v1/policies/versions/{version}",
        "/api/v1/policies/diff",
        "/api/v1/policies/bundle",
        "/api/v1/policies/rollback",
        "/api/v1/policies/shadow",
        "/api/v1/policies/promote",
        "/api/v1/policies/{namespace}",
        "/api/v1/tokens",
        "/api/v1/tokens/{id}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from OpenAPI"
        );
    }
}
