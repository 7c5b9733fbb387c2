//! Approval requests end to end on a real server: opened through the desk (as the gateway
//! does), answered over HTTP by the roles that may, confined to tenant and scope, recorded in
//! the audit trail before they take effect, waking whoever waits, and used once.

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use common::TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;
use warden_api::approvals::{POLL_INTERVAL, answer_recorded, cli_answerer};
use warden_core::{
    Actor, Approval, ApprovalAnswer, ApprovalChannel, ApprovalStatus, NewApproval, Role, TenantId,
};

fn held(namespace: &str, args_sha256: &str, expires_in: chrono::Duration) -> NewApproval {
    NewApproval {
        tenant: namespace.split('/').next().unwrap().into(),
        namespace: namespace.into(),
        session: "tok_agent_session".into(),
        agent: Some("claude-code".into()),
        on_behalf_of: Some("alice".into()),
        action: "call_tool".into(),
        resource_type: "Tool".into(),
        resource_id: "deploy__trigger_deploy".into(),
        args_sha256: args_sha256.into(),
        arguments: json!({"environment": "production"}),
        policies: vec!["ask-production-deploys".into()],
        reason: Some("production deploys need a person".into()),
        decision_event: None,
        expires_at: Utc::now() + expires_in,
    }
}

fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

async fn open(s: &TestServer, request: NewApproval) -> Approval {
    // Tenants come into existence with their first token.
    let t = TenantId::parse(&request.tenant).unwrap();
    s.state().store.ensure_tenant(&t).await.unwrap();
    s.state().approvals.open(request).await.expect("opened")
}

async fn post_empty(s: &TestServer, path: &str, token: &str) -> (StatusCode, Value) {
    let r = s
        .client
        .post(format!("{}{path}", s.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    common::read(r).await
}

/// The audit events about one approval, oldest first.
async fn history(s: &TestServer, auditor: &str, id: Uuid) -> Vec<Value> {
    let (status, page) = s
        .get(
            &format!("/api/v1/audit/events?resource_type=Approval&resource_id={id}"),
            auditor,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut events = page["events"].as_array().unwrap().clone();
    events.reverse();
    events
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn approvers_list_read_and_answer_and_every_answer_is_recorded() {
    let s = TestServer::start().await;
    let approver = s.token("acme", Role::Approver, None, None, None).await;
    let auditor = s.token("acme", Role::Auditor, None, None, None).await;
    let first = open(&s, held("acme/platform/api", "a1", minutes(10))).await;
    let second = open(&s, held("acme/platform/api", "a2", minutes(10))).await;
    assert_eq!(first.status, ApprovalStatus::Pending);

    let (status, page) = s.get("/api/v1/approvals", &approver).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let ids: Vec<_> = page["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        [second.id.to_string(), first.id.to_string()],
        "newest first"
    );
    assert!(page.get("next_cursor").is_none(), "one page: {page}");

    let (status, one) = s
        .get(&format!("/api/v1/approvals/{}", first.id), &approver)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["status"], "pending");
    assert_eq!(one["resource_id"], "deploy__trigger_deploy");
    assert_eq!(one["arguments"], json!({"environment": "production"}));
    assert_eq!(one["session"], "tok_agent_session");

    // Approve with a comment.
    let (status, a) = s
        .post(
            &format!("/api/v1/approvals/{}/approve", first.id),
            &approver,
            &json!({"comment": "release window, go"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{a}");
    assert_eq!(a["status"], "approved");
    assert_eq!(a["resolved_via"], "api");
    assert_eq!(a["comment"], "release window, go");
    let by = a["resolved_by"].as_str().unwrap();
    assert!(by.starts_with("token:tok_"), "{by}");
    assert!(a["resolved_at"].is_string());

    // Deny with no body at all.
    let (status, d) = post_empty(
        &s,
        &format!("/api/v1/approvals/{}/deny", second.id),
        &approver,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d["status"], "denied");
    assert!(d["comment"].is_null());

    // An answer cannot be changed, either way.
    for (id, verb, is) in [
        (first.id, "approve", "approved"),
        (first.id, "deny", "approved"),
        (second.id, "approve", "denied"),
    ] {
        let (status, p) =
            post_empty(&s, &format!("/api/v1/approvals/{id}/{verb}"), &approver).await;
        assert_eq!(status, StatusCode::CONFLICT, "{verb} {id}: {p}");
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("already answered and is now {is}")),
            "{detail}"
        );
    }
    let (_, still) = s
        .get(&format!("/api/v1/approvals/{}", first.id), &approver)
        .await;
    assert_eq!(still["status"], "approved");
    assert_eq!(still["comment"], "release window, go");

    let (_, approved) = s.get("/api/v1/approvals?status=approved", &approver).await;
    assert_eq!(approved["approvals"].as_array().unwrap().len(), 1);
    assert_eq!(approved["approvals"][0]["id"], first.id.to_string());
    let (_, pending) = s.get("/api/v1/approvals?status=pending", &approver).await;
    assert!(pending["approvals"].as_array().unwrap().is_empty());

    // Requested, then answered — each once, and the refused answers left no trace.
    let granted = history(&s, &auditor, first.id).await;
    assert_eq!(types(&granted), ["approval.requested", "approval.granted"]);
    let g = &granted[1];
    assert_eq!(g["source"], "warden.api");
    assert_eq!(g["action"], "grant");
    assert_eq!(g["namespace"], "acme/platform/api");
    assert_eq!(g["actor"]["role"], "approver");
    assert_eq!(
        format!("token:{}", g["actor"]["token_id"].as_str().unwrap()),
        by
    );
    assert_eq!(g["payload"]["answer"]["comment"], "release window, go");
    assert_eq!(g["payload"]["approval"]["args_sha256"], "a1");
    let r = &granted[0];
    assert_eq!(r["actor"]["agent"], "claude-code");
    assert_eq!(r["actor"]["session"], "tok_agent_session");
    assert_eq!(
        r["payload"]["approval"]["arguments"],
        json!({"environment": "production"})
    );
    let denied = history(&s, &auditor, second.id).await;
    assert_eq!(types(&denied), ["approval.requested", "approval.denied"]);
}

#[tokio::test]
async fn admins_and_policy_admins_answer_auditors_read_agents_and_services_do_neither() {
    let s = TestServer::start().await;
    let a = open(&s, held("acme/x", "r1", minutes(10))).await;
    let b = open(&s, held("acme/x", "r2", minutes(10))).await;
    let agent = s.agent_token("acme", "claude-code", "alice", "acme").await;
    let service = s.token("acme", Role::Service, None, None, None).await;
    let auditor = s.token("acme", Role::Auditor, None, None, None).await;
    let admin = s.token("acme", Role::Admin, None, None, None).await;
    let policy_admin = s.token("acme", Role::PolicyAdmin, None, None, None).await;

    for (who, token) in [("agent", &agent), ("service", &service)] {
        for path in [
            "/api/v1/approvals".to_owned(),
            format!("/api/v1/approvals/{}", a.id),
        ] {
            let (status, p) = s.get(&path, token).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{who} GET {path}: {p}");
        }
        for verb in ["approve", "deny"] {
            let (status, p) =
                post_empty(&s, &format!("/api/v1/approvals/{}/{verb}", a.id), token).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{who} {verb}: {p}");
        }
    }
    let (status, _) = s.get("/api/v1/approvals", &auditor).await;
    assert_eq!(status, StatusCode::OK, "auditors read approvals");
    let (status, p) =
        post_empty(&s, &format!("/api/v1/approvals/{}/approve", a.id), &auditor).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "auditors do not answer: {p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("answer approval requests")
    );

    let (status, v) = post_empty(&s, &format!("/api/v1/approvals/{}/approve", a.id), &admin).await;
    assert_eq!(
        (status, v["status"].as_str()),
        (StatusCode::OK, Some("approved"))
    );
    let (status, v) = post_empty(
        &s,
        &format!("/api/v1/approvals/{}/deny", b.id),
        &policy_admin,
    )
    .await;
    assert_eq!(
        (status, v["status"].as_str()),
        (StatusCode::OK, Some("denied"))
    );

    // An approver may do nothing else.
    let approver = s.token("acme", Role::Approver, None, None, None).await;
    let (status, _) = s.get("/api/v1/audit/events", &approver).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = s
        .post("/api/v1/tokens", &approver, &json!({"role": "admin"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = s
        .post(
            "/api/v1/authorize",
            &approver,
            &common::tool_call("x__y", "low", json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn another_tenants_or_another_scopes_approvals_do_not_exist() {
    let s = TestServer::start().await;
    let mine = open(&s, held("acme/team-a/svc", "i1", minutes(10))).await;
    let sibling = open(&s, held("acme/team-b", "i2", minutes(10))).await;
    let theirs = open(&s, held("globex/app", "i3", minutes(10))).await;
    let globex = s.token("globex", Role::Admin, None, None, None).await;
    let scoped = s
        .token("acme", Role::Approver, None, None, Some("acme/team-a"))
        .await;

    // Another tenant: 404 for read and answer, never listed; the approval is untouched.
    for path in [
        format!("/api/v1/approvals/{}", mine.id),
        format!("/api/v1/approvals/{}/approve", mine.id),
        format!("/api/v1/approvals/{}/deny", mine.id),
    ] {
        let (status, p) = if path.ends_with("approve") || path.ends_with("deny") {
            post_empty(&s, &path, &globex).await
        } else {
            s.get(&path, &globex).await
        };
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {p}");
    }
    let (_, list) = s.get("/api/v1/approvals", &globex).await;
    let text = list.to_string();
    assert!(!text.contains("acme"), "globex sees acme approvals: {text}");
    assert!(text.contains(&theirs.id.to_string()));
    let a = s
        .state()
        .store
        .get_approval(&acme(), mine.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.status, ApprovalStatus::Pending);

    // A token scoped to acme/team-a sees and answers its subtree only.
    let (_, list) = s.get("/api/v1/approvals", &scoped).await;
    let listed: Vec<_> = list["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].clone())
        .collect();
    assert_eq!(listed, [json!(mine.id.to_string())]);
    let (status, _) = s
        .get(&format!("/api/v1/approvals/{}", sibling.id), &scoped)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post_empty(
        &s,
        &format!("/api/v1/approvals/{}/approve", sibling.id),
        &scoped,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s
        .get("/api/v1/approvals?namespace=acme/team-b", &scoped)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "outside the token's scope");
    let (status, _) = s.get("/api/v1/approvals?namespace=globex", &scoped).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another tenant's namespace");
    let (status, v) = s
        .get("/api/v1/approvals?namespace=acme/team-a/svc", &scoped)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["approvals"].as_array().unwrap().len(), 1);

    // Ids that are not approvals at all.
    for id in ["nope", &Uuid::now_v7().to_string()] {
        let (status, _) = s.get(&format!("/api/v1/approvals/{id}"), &scoped).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_reason() {
    let s = TestServer::start().await;
    let a = open(&s, held("acme/x", "b1", minutes(10))).await;
    let approver = s.token("acme", Role::Approver, None, None, None).await;
    let path = format!("/api/v1/approvals/{}/approve", a.id);
    let (status, p) = s
        .post(
            &path,
            &approver,
            &json!({"comment": "ok", "approve": false}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "unknown field: {p}");
    let (status, p) = s
        .post(&path, &approver, &json!({"comment": "x".repeat(5000)}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{p}");
    let (status, _) = s
        .post_raw(&path, Some(&approver), "text/plain", b"yes".to_vec())
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for q in ["status=maybe", "cursor=s12", "colour=red"] {
        let (status, p) = s.get(&format!("/api/v1/approvals?{q}"), &approver).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {p}");
    }
    let a = s
        .state()
        .store
        .get_approval(&acme(), a.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        a.status,
        ApprovalStatus::Pending,
        "refused requests change nothing"
    );
}

#[tokio::test]
async fn expired_requests_cannot_be_answered_and_are_listed_as_expired() {
    let s = TestServer::start().await;
    let approver = s.token("acme", Role::Approver, None, None, None).await;
    let auditor = s.token("acme", Role::Auditor, None, None, None).await;
    let late = open(&s, held("acme/x", "e1", chrono::Duration::seconds(-1))).await;
    let live = open(&s, held("acme/x", "e2", minutes(10))).await;

    let (status, p) = post_empty(
        &s,
        &format!("/api/v1/approvals/{}/approve", late.id),
        &approver,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("expired"), "{p}");
    let (_, one) = s
        .get(&format!("/api/v1/approvals/{}", late.id), &approver)
        .await;
    assert_eq!(
        one["status"], "expired",
        "shown expired before it is written down"
    );
    let (_, expired) = s.get("/api/v1/approvals?status=expired", &approver).await;
    assert_eq!(expired["approvals"][0]["id"], late.id.to_string());
    assert_eq!(expired["approvals"].as_array().unwrap().len(), 1);
    let (_, pending) = s.get("/api/v1/approvals?status=pending", &approver).await;
    assert_eq!(pending["approvals"][0]["id"], live.id.to_string());
    assert_eq!(pending["approvals"].as_array().unwrap().len(), 1);

    // The desk writes the expiry down once, recorded.
    let desk = &s.state().approvals;
    let e = desk.expire(&acme(), late.id).await.unwrap().unwrap();
    assert_eq!(e.status, ApprovalStatus::Expired);
    assert!(desk.expire(&acme(), late.id).await.unwrap().is_none());
    assert!(
        desk.expire(&acme(), live.id).await.unwrap().is_none(),
        "not due"
    );
    let h = history(&s, &auditor, late.id).await;
    assert_eq!(types(&h), ["approval.requested", "approval.expired"]);
    let (status, p) = post_empty(
        &s,
        &format!("/api/v1/approvals/{}/deny", late.id),
        &approver,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(p["detail"].as_str().unwrap().contains("expired"), "{p}");
}

#[tokio::test]
async fn pages_follow_next_cursor_newest_first() {
    let s = TestServer::start().await;
    let approver = s.token("acme", Role::Approver, None, None, None).await;
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(
            open(&s, held("acme/x", &format!("p{i}"), minutes(10)))
                .await
                .id
                .to_string(),
        );
    }
    made.reverse();
    let mut seen = Vec::new();
    let mut path = "/api/v1/approvals?limit=2".to_owned();
    loop {
        let (status, page) = s.get(&path, &approver).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(
            page["approvals"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/approvals?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, made);
}

#[tokio::test]
async fn a_waiter_is_woken_by_an_answer_over_http() {
    let s = TestServer::start().await;
    let approver = s.token("acme", Role::Approver, None, None, None).await;
    let a = open(&s, held("acme/x", "w1", minutes(10))).await;
    let state = s.state().clone();
    let waiter = tokio::spawn(async move {
        let r = state
            .approvals
            .wait(&acme(), a.id, Instant::now() + Duration::from_secs(30))
            .await;
        (r, Instant::now())
    });
    // Let it settle into its wait before answering.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, _) = post_empty(
        &s,
        &format!("/api/v1/approvals/{}/approve", a.id),
        &approver,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let answered = Instant::now();
    let (r, woke) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter returns")
        .unwrap();
    assert_eq!(r.unwrap().status, ApprovalStatus::Approved);
    let lag = woke.saturating_duration_since(answered);
    assert!(
        lag < POLL_INTERVAL,
        "woken at once, not by polling: {lag:?}"
    );
}

#[tokio::test]
async fn a_waiter_notices_an_answer_written_by_another_process() {
    let s = TestServer::start().await;
    let a = open(&s, held("acme/x", "w2", minutes(10))).await;
    let state = s.state().clone();
    let started = Instant::now();
    let waiter = tokio::spawn(async move {
        state
            .approvals
            .wait(&acme(), a.id, Instant::now() + Duration::from_secs(30))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A second handle on the same file answers, as `warden approvals approve` does.
    let other = warden_store::SqliteStore::open(&warden_api::server::database_path(&s.data_dir()))
        .await
        .unwrap();
    let answer = ApprovalAnswer {
        approve: false,
        by: cli_answerer("bob"),
        via: ApprovalChannel::Cli,
        comment: Some("not today".into()),
    };
    let actor = Actor {
        role: Some("cli".into()),
        on_behalf_of: Some("bob".into()),
        ..Default::default()
    };
    let direct = &other;
    answer_recorded(&other, &acme(), a.id, &answer, actor, |e| async move {
        warden_store::append_one(direct, e).await.map(|_| ())
    })
    .await
    .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter notices")
        .unwrap()
        .unwrap();
    assert_eq!(r.status, ApprovalStatus::Denied);
    assert_eq!(r.resolved_by.as_deref(), Some("cli:bob"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "noticed within the poll interval: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_waiter_returns_at_its_deadline_or_at_the_expiry() {
    let s = TestServer::start().await;
    let desk = &s.state().approvals;
    let a = open(&s, held("acme/x", "w3", minutes(10))).await;
    let started = Instant::now();
    let r = desk
        .wait(&acme(), a.id, started + Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(
        r.status,
        ApprovalStatus::Pending,
        "still pending at the deadline"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));

    let soon = open(
        &s,
        held("acme/x", "w4", chrono::Duration::milliseconds(400)),
    )
    .await;
    let started = Instant::now();
    let r = desk
        .wait(&acme(), soon.id, started + Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(r.status_at(Utc::now()), ApprovalStatus::Expired);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let unknown = desk
        .wait(
            &acme(),
            Uuid::now_v7(),
            Instant::now() + Duration::from_secs(1),
        )
        .await;
    assert!(matches!(unknown, Err(warden_core::Error::NotFound(_))));
}

#[tokio::test]
async fn a_grant_is_used_once_by_exactly_its_action_and_that_is_recorded() {
    let s = TestServer::start().await;
    let approver = s.token("acme", Role::Approver, None, None, None).await;
    let auditor = s.token("acme", Role::Auditor, None, None, None).await;
    let desk = &s.state().approvals;
    let a = open(&s, held("acme/x", "c1", minutes(10))).await;
    let tool = "deploy__trigger_deploy";
    let session = "tok_agent_session";
    assert!(
        desk.consume(&acme(), session, tool, "c1")
            .await
            .unwrap()
            .is_none(),
        "not granted yet"
    );
    let (status, _) = post_empty(
        &s,
        &format!("/api/v1/approvals/{}/approve", a.id),
        &approver,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for (sess, res, args) in [
        (session, tool, "c2"),
        ("tok_other_session", tool, "c1"),
        (session, "deploy__rollback", "c1"),
    ] {
        assert!(
            desk.consume(&acme(), sess, res, args)
                .await
                .unwrap()
                .is_none()
        );
    }
    let globex = TenantId::parse("globex").unwrap();
    assert!(
        desk.consume(&globex, session, tool, "c1")
            .await
            .unwrap()
            .is_none()
    );
    let used = desk
        .consume(&acme(), session, tool, "c1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((used.id, used.status), (a.id, ApprovalStatus::Consumed));
    assert!(
        desk.consume(&acme(), session, tool, "c1")
            .await
            .unwrap()
            .is_none(),
        "used once"
    );
    let h = history(&s, &auditor, a.id).await;
    assert_eq!(
        types(&h),
        [
            "approval.requested",
            "approval.granted",
            "approval.consumed"
        ]
    );
    assert_eq!(h[2]["actor"]["session"], session);
    assert_eq!(
        h[2]["payload"]["approval"]["granted_by"],
        h[1]["payload"]["answer"]["by"]
    );
    let (_, shown) = s
        .get(&format!("/api/v1/approvals/{}", a.id), &approver)
        .await;
    assert_eq!(shown["status"], "consumed");
    let (status, _) = post_empty(&s, &format!("/api/v1/approvals/{}/deny", a.id), &approver).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn the_desk_answers_for_the_gateway_and_records_who() {
    let s = TestServer::start().await;
    let auditor = s.token("acme", Role::Auditor, None, None, None).await;
    let desk = &s.state().approvals;
    let a = open(&s, held("acme/x", "g1", minutes(10))).await;
    let answered = desk
        .answer(
            &acme(),
            a.id,
            ApprovalAnswer {
                approve: true,
                by: "alice".into(),
                via: ApprovalChannel::Elicitation,
                comment: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(answered.resolved_via, Some(ApprovalChannel::Elicitation));
    let again = desk
        .answer(
            &acme(),
            a.id,
            ApprovalAnswer {
                approve: false,
                by: "alice".into(),
                via: ApprovalChannel::Elicitation,
                comment: None,
            },
        )
        .await;
    assert!(matches!(again, Err(warden_core::Error::Conflict(_))));
    let missing = desk
        .answer(
            &acme(),
            Uuid::now_v7(),
            ApprovalAnswer {
                approve: true,
                by: "alice".into(),
                via: ApprovalChannel::Elicitation,
                comment: None,
            },
        )
        .await;
    assert!(matches!(missing, Err(warden_core::Error::NotFound(_))));
    let h = history(&s, &auditor, a.id).await;
    assert_eq!(types(&h), ["approval.requested", "approval.granted"]);
    assert_eq!(h[1]["source"], "warden.gateway");
    assert_eq!(
        h[1]["actor"]["principal"],
        json!({"type": "User", "id": "alice"})
    );
}

#[tokio::test]
async fn nothing_is_granted_when_the_answer_cannot_be_recorded() {
    let s = TestServer::start().await;
    let approver = s.token("acme", Role::Approver, None, None, None).await;
    let a = open(&s, held("acme/x", "f1", minutes(10))).await;
    // The audit pipeline stops taking events (as during shutdown): answers fail closed.
    s.state().pipeline.shutdown().await;
    let (status, p) = post_empty(
        &s,
        &format!("/api/v1/approvals/{}/approve", a.id),
        &approver,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{p}");
    let stored = s
        .state()
        .store
        .get_approval(&acme(), a.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.status,
        ApprovalStatus::Pending,
        "the answer was not applied"
    );
    // And a request that cannot be recorded is never left open to be granted.
    let r = s
        .state()
        .approvals
        .open(held("acme/x", "f2", minutes(10)))
        .await;
    assert!(r.is_err());
    let rows = s
        .state()
        .store
        .list_approvals(&acme(), &warden_store::ApprovalFilter::all(Utc::now(), 10))
        .await
        .unwrap();
    let unrecorded = rows.iter().find(|r| r.args_sha256 == "f2").unwrap();
    assert_eq!(unrecorded.status, ApprovalStatus::Denied);
    assert_eq!(unrecorded.resolved_by.as_deref(), Some("warden"));
}

#[tokio::test]
async fn the_routes_are_in_the_openapi_document() {
    let s = TestServer::start().await;
    let (_, doc) = s.get_text("/openapi.json", None).await;
    let doc: Value = serde_json::from_str(&doc).unwrap();
    for path in [
        "/api/v1/approvals",
        "/api/v1/approvals/{id}",
        "/api/v1/approvals/{id}/approve",
        "/api/v1/approvals/{id}/deny",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from OpenAPI"
        );
    }
}
