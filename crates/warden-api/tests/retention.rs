//! The retention routes on an in-process server: tenant isolation of rules and holds, the
//! audit events of each change (recorded with who and what), problem+json for bad input, and
//! the routes in the OpenAPI document.

mod common;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::json;
use warden_core::Role;

#[tokio::test]
async fn rules_and_holds_are_per_tenant_audited_and_documented() {
    let s = TestServer::start().await;
    let a_admin = s.token("acme", Role::Admin, None, None, None).await;
    let b_admin = s.token("globex", Role::Admin, None, None, None).await;
    let a_policy = s.token("acme", Role::PolicyAdmin, None, None, None).await;

    let (status, v) = s
        .put(
            "/api/v1/retention",
            &a_admin,
            &json!({"namespace": "acme/hr", "payload_days": 30, "header_days": 2555}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, hold) = s
        .post(
            "/api/v1/legal-holds",
            &a_admin,
            &json!({"from": "2026-01-01T00:00:00Z", "reason": "audit 2026"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let hold_id = hold["id"].as_str().unwrap();

    // The other tenant sees none of it and cannot touch it.
    let (_, rules) = s.get("/api/v1/retention", &b_admin).await;
    assert_eq!(rules, json!([]));
    let (_, holds) = s.get("/api/v1/legal-holds", &b_admin).await;
    assert_eq!(holds, json!([]));
    let (status, _) = s
        .post(
            &format!("/api/v1/legal-holds/{hold_id}/release"),
            &b_admin,
            &json!({"reason": "mine now"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s
        .delete("/api/v1/retention?namespace=acme/hr", &b_admin)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, out) = s
        .post("/api/v1/retention/apply", &b_admin, &json!(null))
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(
        out["event_seq"],
        serde_json::Value::Null,
        "no rule, no run: {out}"
    );

    // Only admins change; a policy admin neither changes nor reads.
    let (status, v) = s.get("/api/v1/retention", &a_policy).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["status"], 403);
    let (status, _) = s
        .post("/api/v1/legal-holds", &a_policy, &json!({"reason": "x"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, v) = s
        .post(
            &format!("/api/v1/legal-holds/{hold_id}/release"),
            &a_admin,
            &json!({"reason": "done", "force": true}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "unknown field: {v}");
    let (status, v) = s.delete("/api/v1/retention?ns=acme/hr", &a_admin).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "unknown query parameter: {v}"
    );

    // Each change is an audit event of the tenant, naming what changed.
    let (status, v) = s
        .post(
            &format!("/api/v1/legal-holds/{hold_id}/release"),
            &a_admin,
            &json!({"reason": "audit closed"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = s
        .delete("/api/v1/retention?namespace=acme/hr", &a_admin)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, page) = s.get("/api/v1/audit/events?limit=100", &a_admin).await;
    let events = page["events"].as_array().expect("events");
    let of = |t: &str| {
        events
            .iter()
            .find(|e| e["type"] == t)
            .unwrap_or_else(|| panic!("no {t} in {page}"))
            .clone()
    };
    let set = of("audit.retention.rule_set");
    assert_eq!(set["namespace"], "acme/hr");
    assert_eq!(set["payload"]["after"]["header_days"], 2555);
    assert_eq!(set["actor"]["role"], "admin");
    let placed = of("audit.legal_hold.placed");
    assert_eq!(placed["payload"]["hold"]["reason"], "audit 2026");
    assert_eq!(placed["namespace"], "acme");
    let released = of("audit.legal_hold.released");
    assert_eq!(released["payload"]["reason"], "audit closed");
    let deleted = of("audit.retention.rule_deleted");
    assert_eq!(deleted["payload"]["before"]["payload_days"], 30);
    let (_, b_page) = s.get("/api/v1/audit/events?limit=100", &b_admin).await;
    assert!(!b_page.to_string().contains("audit.retention.rule_set"));

    let (_, doc) = s.get_text("/openapi.json", None).await;
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    for path in [
        "/api/v1/retention",
        "/api/v1/retention/apply",
        "/api/v1/legal-holds",
        "/api/v1/legal-holds/{id}/release",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from OpenAPI"
        );
    }
    assert!(doc["paths"]["/api/v1/retention"].get("put").is_some());
    assert!(doc["paths"]["/api/v1/retention"].get("delete").is_some());
}
