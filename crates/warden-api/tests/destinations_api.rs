//! `/api/v1/destinations`: what is refused (and with which status), who may do what, and
//! tenant isolation.

mod common;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_core::Role;

fn hook(name: &str) -> Value {
    json!({"name": name, "kind": "webhook", "url": "https://siem.example.com/hook", "secret": "env:HOOK_SECRET"})
}

fn with(mut v: Value, k: &str, x: Value) -> Value {
    v[k] = x;
    v
}

#[tokio::test]
async fn bad_settings_are_refused_with_every_problem() {
    let s = TestServer::start().await;
    let admin = s.token("acme", Role::Admin, None, None, None).await;
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            with(hook("a"), "url", json!("not a url")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "url",
        ),
        (
            with(hook("a"), "url", json!("ftp://x.example.com/")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "http",
        ),
        (
            with(hook("a"), "secret", json!("whsec_plaintext_value")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "env:NAME",
        ),
        (
            with(
                hook("a"),
                "headers",
                json!(
                    (0..21)
                        .map(|i| (format!("X-H{i}"), json!("v")))
                        .collect::<serde_json::Map<_, _>>()
                ),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "at most 20",
        ),
        (
            with(hook("a"), "headers", json!({"Authorization": "Bearer abc"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "carries a secret",
        ),
        (
            with(hook("a"), "colour", json!("red")),
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            with(hook("a"), "kind", json!("kafka")),
            StatusCode::BAD_REQUEST,
            "kind",
        ),
        (
            with(hook("a"), "start", json!("yesterday")),
            StatusCode::BAD_REQUEST,
            "expected `beginning` or `now`",
        ),
        (
            with(hook("Bad Name"), "batch_size", json!(0)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "batch_size",
        ),
        (
            with(hook("a"), "namespace", json!("globex/x")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not a namespace of tenant acme",
        ),
        (
            with(hook("a"), "event_types", json!(["Authz Decision"])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "event_types",
        ),
        (
            json!({"name": "h", "kind": "splunk_hec", "url": "https://splunk:8088/services/collector/event", "token": "abc-123"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "token",
        ),
        (
            json!({"name": "f", "kind": "file", "path": "relative/audit.ndjson"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "absolute",
        ),
    ];
    for (body, status, needle) in &cases {
        let (got, v) = s.post("/api/v1/destinations", &admin, body).await;
        assert_eq!(got, *status, "{body} → {v}");
        let text = v.to_string();
        assert!(text.contains(needle), "{needle:?} not in {text}");
        assert!(
            !text.contains("whsec_plaintext_value") && !text.contains("abc-123"),
            "a refused secret was echoed: {text}"
        );
    }
    // Two problems at once are both listed.
    let (_, v) = s
        .post(
            "/api/v1/destinations",
            &admin,
            &with(
                with(hook("a"), "url", json!("nope")),
                "secret",
                json!("literal"),
            ),
        )
        .await;
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(2), "{v}");
    let (_, list) = s.get("/api/v1/destinations", &admin).await;
    assert_eq!(list["destinations"], json!([]), "nothing was stored");
    eprintln!("{} bad bodies refused", cases.len() + 1);
}

#[tokio::test]
async fn roles_and_tenants_are_kept_apart() {
    let s = TestServer::start().await;
    let admin = s.token("acme", Role::Admin, None, None, None).await;
    let auditor = s.token("acme", Role::Auditor, None, None, None).await;
    let policy_admin = s.token("acme", Role::PolicyAdmin, None, None, None).await;
    let confined = s
        .token("acme", Role::Admin, None, None, Some("acme/platform"))
        .await;
    let other = s.token("globex", Role::Admin, None, None, None).await;

    let (st, v) = s.post("/api/v1/destinations", &admin, &hook("siem")).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["secret"], "env:HOOK_SECRET");
    let (st, _) = s.post("/api/v1/destinations", &admin, &hook("siem")).await;
    assert_eq!(st, StatusCode::CONFLICT);

    // The auditor reads; only the admin writes; a confined token does neither.
    let (st, v) = s.get("/api/v1/destinations/siem", &auditor).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v["state"][0]["next_seq"].as_u64().is_some());
    assert_eq!(v["state"][0]["circuit"], "closed");
    for (token, what) in [
        (&auditor, "auditor"),
        (&policy_admin, "policy_admin"),
        (&confined, "confined admin"),
    ] {
        let (st, _) = s.post("/api/v1/destinations", token, &hook("x")).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{what} created");
        let (st, _) = s.delete("/api/v1/destinations/siem", token).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{what} deleted");
        let (st, _) = s
            .post("/api/v1/destinations/siem/replay", token, &json!({}))
            .await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{what} replayed");
    }
    let (st, _) = s.get("/api/v1/destinations", &policy_admin).await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // Another tenant sees nothing and cannot touch it.
    let (_, list) = s.get("/api/v1/destinations", &other).await;
    assert_eq!(list["destinations"], json!([]));
    for (st, _) in [
        s.get("/api/v1/destinations/siem", &other).await,
        s.put("/api/v1/destinations/siem", &other, &hook("siem"))
            .await,
        s.delete("/api/v1/destinations/siem", &other).await,
        s.post("/api/v1/destinations/siem/replay", &other, &json!({}))
            .await,
    ] {
        assert_eq!(st, StatusCode::NOT_FOUND);
    }
    // globex may have its own "siem".
    let (st, _) = s.post("/api/v1/destinations", &other, &hook("siem")).await;
    assert_eq!(st, StatusCode::CREATED);

    // Replace (no renaming), then delete; each change is in the audit trail.
    let (st, _) = s
        .put("/api/v1/destinations/siem", &admin, &hook("other"))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, v) = s
        .put(
            "/api/v1/destinations/siem",
            &admin,
            &with(hook("siem"), "event_types", json!(["authz.*"])),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, _) = s.delete("/api/v1/destinations/siem", &admin).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s.get("/api/v1/destinations/siem", &admin).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let mut seen = Vec::new();
    for t in [
        "destination.created",
        "destination.updated",
        "destination.deleted",
    ] {
        let (_, ev) = s
            .get(&format!("/api/v1/audit/events?type={t}"), &admin)
            .await;
        let n = ev["events"].as_array().map_or(0, Vec::len);
        assert_eq!(n, 1, "{t}: {ev}");
        seen.push(t);
    }
    let (_, ev) = s
        .get("/api/v1/audit/events?type=destination.created", &other)
        .await;
    assert_eq!(
        ev["events"].as_array().map(Vec::len),
        Some(1),
        "globex sees only its own"
    );
    let (_, doc) = s.get("/openapi.json", &admin).await;
    assert!(doc["paths"]["/api/v1/destinations/{name}/replay"].is_object());
    eprintln!("audited {seen:?}; 3 roles refused; other tenant isolated");
}

/// `start`: a new destination begins at the first event of the tenant's log (the default), or
/// with `now` right after the last event recorded when it is created — its own creation
/// record included. Only creation reads it: a later replacement moves no cursor.
#[tokio::test]
async fn a_new_destination_starts_at_the_beginning_or_now() {
    let s = TestServer::start_with(|c| c.delivery.enabled = false).await;
    let admin = s.token("acme", Role::Admin, None, None, None).await;
    let other = s.token("globex", Role::Admin, None, None, None).await;
    let state = |name: &'static str| {
        let (s, admin) = (&s, &admin);
        async move {
            let (st, v) = s.get(&format!("/api/v1/destinations/{name}"), admin).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            v
        }
    };
    let (st, v) = s
        .post("/api/v1/destinations", &admin, &hook("history"))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert!(
        v.get("start").is_none(),
        "the default is not written out: {v}"
    );
    let history = state("history").await;
    assert_eq!(history["state"][0]["next_seq"], 0);
    assert!(
        history["state"][0]["lag"].as_u64().unwrap() > 0,
        "{history}"
    );

    let (st, v) = s
        .post(
            "/api/v1/destinations",
            &admin,
            &with(hook("fresh"), "start", json!("now")),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["start"], "now");
    let fresh = state("fresh").await;
    let at = fresh["state"][0]["next_seq"].as_u64().unwrap();
    assert_eq!(
        at,
        fresh["state"][0]["log_size"].as_u64().unwrap(),
        "nothing recorded before, its creation included, is to deliver: {fresh}"
    );
    assert_eq!(fresh["state"][0]["lag"], 0);

    // Another tenant's activity does not move it; its own does.
    let (st, _) = s.post("/api/v1/destinations", &other, &hook("x")).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(state("fresh").await["state"][0]["lag"], 0);
    let (st, _) = s
        .put(
            "/api/v1/destinations/fresh",
            &admin,
            &with(hook("fresh"), "start", json!("beginning")),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let fresh = state("fresh").await;
    assert_eq!(
        fresh["state"][0]["next_seq"].as_u64().unwrap(),
        at,
        "{fresh}"
    );
    assert_eq!(
        fresh["state"][0]["lag"], 1,
        "the update is the one new event"
    );
    eprintln!("history from 0; fresh from {at}");
}
