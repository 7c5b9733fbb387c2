//! Bad input gets a clear problem+json answer and loses nothing.

mod common;

use std::time::Duration;

use common::{TestServer, example_policies, tool_call};
use reqwest::StatusCode;
use serde_json::json;
use warden_core::Role;

async fn server() -> (TestServer, String) {
    let s = TestServer::start_with(|c| c.policies = Some(example_policies())).await;
    let t = s
        .agent_token("acme", "claude-code", "alice", "acme/platform/api")
        .await;
    (s, t)
}

#[tokio::test]
async fn malformed_json_is_400_and_names_the_problem() {
    let (s, t) = server().await;
    let (status, p) = s
        .post_raw(
            "/api/v1/authorize",
            Some(&t),
            "application/json",
            b"{\"action\": ".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        p["detail"].as_str().unwrap().contains("not valid JSON"),
        "{p}"
    );
}

#[tokio::test]
async fn unknown_fields_and_wrong_types_are_refused_with_their_path() {
    let (s, t) = server().await;
    let mut body = tool_call("github__get_file_contents", "low", json!({}));
    body["colour"] = json!("blue");
    let (status, p) = s.post("/api/v1/authorize", &t, &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(p["detail"].as_str().unwrap().contains("colour"), "{p}");
    let (status, p) = s
        .post(
            "/api/v1/authorize",
            &t,
            &json!({"action": "call_tool", "resource": {"type": 5, "id": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        p["detail"].as_str().unwrap().contains("resource.type"),
        "{p}"
    );
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let s = TestServer::start_with(|c| c.max_body_bytes = 1024).await;
    let t = s.agent_token("acme", "a", "u", "acme").await;
    let big = tool_call("x__y", "low", json!({"blob": "x".repeat(4096)}));
    let (status, p) = s.post("/api/v1/authorize", &t, &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("1024"));
}

#[tokio::test]
async fn batches_over_1000_are_refused() {
    let (s, t) = server().await;
    let one = tool_call("github__get_file_contents", "low", json!({}));
    let reqs: Vec<_> = (0..1001).map(|_| one.clone()).collect();
    let (status, p) = s
        .post("/api/v1/authorize/batch", &t, &json!({"requests": reqs}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("1000"));
    let events: Vec<_> = (0..1001)
        .map(|i| json!({"specversion": "1.0", "id": i.to_string(), "source": "s", "type": "t"}))
        .collect();
    let (status, _) = s.post("/api/v1/events", &t, &json!(events)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bad_namespace_paths_are_400() {
    let (s, t) = server().await;
    let long = format!("acme/{}", "a".repeat(300));
    for ns in [
        "acme/../globex",
        "acme//x",
        "acme/",
        "/acme",
        long.as_str(),
        "acme/sp ace",
    ] {
        let mut body = tool_call("github__get_file_contents", "low", json!({}));
        body["namespace"] = json!(ns);
        let (status, p) = s.post("/api/v1/authorize", &t, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{ns}: {p}");
        assert!(p["detail"].as_str().unwrap().contains("namespace"), "{p}");
    }
}

#[tokio::test]
async fn unknown_actions_and_principal_types_are_400() {
    let (s, _) = server().await;
    let service = s
        .token("acme", Role::Service, None, None, Some("acme"))
        .await;
    let (status, p) = s
        .post("/api/v1/authorize", &service, &json!({"namespace": "acme", "principal": {"type": "Agent", "id": "a"}, "action": "teleport", "resource": {"type": "Tool", "id": "x"}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(p["detail"].as_str().unwrap().contains("teleport"), "{p}");
    let (status, p) = s
        .post("/api/v1/authorize", &service, &json!({"namespace": "acme", "principal": {"type": "Robot", "id": "a"}, "action": "call_tool", "resource": {"type": "Tool", "id": "x"}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(p["detail"].as_str().unwrap().contains("Robot"), "{p}");
    let (status, _) = s.post("/api/v1/authorize", &service, &json!({"namespace": "acme", "action": "call_tool", "resource": {"type": "Tool", "id": "x"}})).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a service token must name the principal"
    );
}

#[tokio::test]
async fn missing_unknown_expired_and_revoked_tokens_are_401() {
    let (s, _) = server().await;
    let body = tool_call("github__get_file_contents", "low", json!({}));
    let r = s
        .client
        .post(format!("{}/api/v1/authorize", s.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get("www-authenticate").is_some());
    let (status, _) = s
        .post("/api/v1/authorize", "wdn_not-a-real-token", &body)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let spec = warden_api::tokens::TokenSpec {
        tenant: warden_core::TenantId::parse("acme").unwrap(),
        role: Role::Agent,
        agent: Some("a".into()),
        on_behalf_of: None,
        namespace: None,
        ttl: Some(Duration::from_secs(1)),
        description: None,
    };
    let expiring = warden_api::tokens::create_token(
        s.state().store.as_ref(),
        &spec,
        Default::default(),
        "test",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut b = body.clone();
    b["namespace"] = json!("acme");
    let (status, p) = s.post("/api/v1/authorize", &expiring.secret, &b).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(p["detail"].as_str().unwrap().contains("expired"), "{p}");

    let admin = s.token("acme", Role::Admin, None, None, None).await;
    let (status, created) = s
        .post(
            "/api/v1/tokens",
            &admin,
            &json!({"role": "agent", "agent": "a", "namespace": "acme"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["token"].as_str().unwrap().to_owned();
    let (status, _) = s.post("/api/v1/authorize", &secret, &b).await;
    assert_eq!(status, StatusCode::OK);
    let r = s
        .client
        .delete(format!(
            "{}/api/v1/tokens/{}",
            s.base,
            created["id"].as_str().unwrap()
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (status, p) = s.post("/api/v1/authorize", &secret, &b).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(p["detail"].as_str().unwrap().contains("revoked"), "{p}");
}

#[tokio::test]
async fn wrong_content_type_is_415_and_unknown_routes_are_problem_404() {
    let (s, t) = server().await;
    let (status, _) = s
        .post_raw("/api/v1/authorize", Some(&t), "text/xml", b"<a/>".to_vec())
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _) = s.get("/api/v1/nothing-here", &t).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s
        .get(
            "/api/v1/audit/events?colour=blue",
            &s.token("acme", Role::Auditor, None, None, None).await,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "unknown query parameters are refused"
    );
}

#[tokio::test]
async fn agent_tokens_cannot_speak_for_another_agent_or_leave_their_scope() {
    let (s, t) = server().await;
    let mut body = tool_call("github__get_file_contents", "low", json!({}));
    body["principal"] = json!({"type": "Agent", "id": "someone-else"});
    let (status, _) = s.post("/api/v1/authorize", &t, &body).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let mut body = tool_call("github__get_file_contents", "low", json!({}));
    body["namespace"] = json!("acme/ops");
    let (status, _) = s.post("/api/v1/authorize", &t, &body).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// Holds SQLite's write lock from outside, as another process (a backup, a stuck CLI) would.
async fn lock_database(s: &TestServer) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let url = format!("sqlite://{}", s.data_dir().join("warden.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

#[tokio::test]
async fn a_full_audit_queue_answers_503_with_retry_after_and_recovers() {
    let s = TestServer::start_with(|c| {
        c.policies = Some(example_policies());
        c.pipeline.queue_capacity = 4;
        c.pipeline.max_batch = 1;
    })
    .await;
    let t = s
        .agent_token("acme", "claude-code", "alice", "acme/platform/api")
        .await;
    let lock = lock_database(&s).await;
    let body = tool_call("github__get_file_contents", "low", json!({}));
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let client = s.client.clone();
        let url = format!("{}/api/v1/authorize", s.base);
        let (t, body) = (t.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(t)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status(), r.headers().get("retry-after").is_some())
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(lock); // rolls back, releasing the lock
    let mut ok = 0;
    let mut full = 0;
    for task in tasks {
        let (status, retry) = task.await.unwrap();
        if status == StatusCode::OK {
            ok += 1;
        } else {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(retry, "503 carries Retry-After");
            full += 1;
        }
    }
    println!("queue-full test: {ok} answered, {full} refused with 503");
    assert!(full > 0, "some requests must find the queue full");
    assert!(
        ok > 0,
        "queued requests are answered once the store is free"
    );
    let (status, _) = s.post("/api/v1/authorize", &t, &body).await;
    assert_eq!(status, StatusCode::OK, "service recovers");
}

#[tokio::test]
async fn an_unwritable_store_answers_503_keeps_serving_reads_and_recovers() {
    let s = TestServer::start_with(|c| {
        c.policies = Some(example_policies());
        c.store_busy_timeout = Duration::from_millis(200);
    })
    .await;
    let t = s
        .agent_token("acme", "claude-code", "alice", "acme/platform/api")
        .await;
    let auditor = s.token("acme", Role::Auditor, None, None, None).await;
    let body = tool_call("github__get_file_contents", "low", json!({}));
    let (status, before) = s.post("/api/v1/authorize", &t, &body).await;
    assert_eq!(status, StatusCode::OK);

    let lock = lock_database(&s).await;
    let (status, p) = s.post("/api/v1/authorize", &t, &body).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "no unrecorded decision: {p}"
    );
    assert!(p.get("decision").is_none());
    let (status, _) = s
        .get(
            &format!(
                "/api/v1/audit/events/{}",
                before["event_id"].as_str().unwrap()
            ),
            &auditor,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "reads keep working while writes fail"
    );
    let (status, ready) = s.get_text("/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert!(ready.contains("\"ready\":false"), "{ready}");
    drop(lock);

    let (status, _) = s.post("/api/v1/authorize", &t, &body).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "writes resume once the store can be written"
    );
}
