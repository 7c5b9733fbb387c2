//! Retention end to end on a real server and the CLI: rules and holds through the API (roles,
//! validation, audit events), `warden audit retention apply` on backdated events, and
//! `warden audit verify` passing after the purge and expiry with their counts — while a row
//! deleted or a payload removed by hand, with no retention run behind it, still fails.

mod common;

use std::path::Path;

use chrono::{Duration, Utc};
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use warden_core::{Actor, AuditEvent};
use warden_store::{NewEvent, SqliteStore, Store};

/// Events `days` old, written through the store library: backdating is a test-only path
/// that the API does not offer.
async fn append_backdated(data: &Path, namespace: &str, days: i64, n: usize) {
    let store = SqliteStore::open(&data.join("warden.db")).await.unwrap();
    let batch: Vec<NewEvent> = (0..n)
        .map(|i| {
            let mut e = AuditEvent::new(
                "acme",
                namespace,
                "authz.decision",
                "warden.api",
                Actor::default(),
                json!({"request": {"note": format!("old {namespace} {days} {i}")}}),
            );
            e.header.time = Utc::now() - Duration::days(days);
            NewEvent {
                event: e,
                dedupe: false,
            }
        })
        .collect();
    store.append_events(&batch).await.unwrap();
}

async fn open(data: &Path) -> SqlitePool {
    let opts = SqliteConnectOptions::new().filename(data.join("warden.db"));
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .unwrap()
}

async fn sql_count(data: &Path, sql: &str) -> i64 {
    let pool = open(data).await;
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

async fn sql_exec(data: &Path, sql: &str) {
    let pool = open(data).await;
    let done = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert!(done.rows_affected() > 0, "{sql} changed nothing");
    pool.close().await;
}

fn copy_data(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("keys")).unwrap();
    for f in ["warden.db", "warden.db-wal", "warden.db-shm"] {
        if from.join(f).exists() {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
    }
    for entry in std::fs::read_dir(from.join("keys")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join("keys").join(entry.file_name())).unwrap();
    }
}

async fn call(
    method: reqwest::Method,
    base: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = client()
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_through_api_and_cli_keeps_the_log_verifiable() {
    use reqwest::Method as M;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let agent = agent_token(&data).await;
    let admin = create_token(&data, &["--tenant", "acme", "--role", "admin"]).await;
    let auditor = auditor_token(&data).await;
    let scoped = create_token(
        &data,
        &[
            "--tenant",
            "acme",
            "--role",
            "admin",
            "--namespace",
            "acme/platform",
        ],
    )
    .await;
    append_backdated(&data, "acme/platform/api", 400, 3).await;
    append_backdated(&data, "acme/platform/api", 40, 2).await;
    append_backdated(&data, "acme/legal", 400, 2).await;

    let mut server = Server::start(&data).await;
    let base = server.base.clone();
    for i in 0..3 {
        let (body, _) = decision_request(i);
        let (status, v) = authorize(&client(), &base, &agent.secret, &body)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{v}");
    }

    // Roles and validation.
    let rule = json!({"namespace": "acme", "payload_days": 30, "header_days": 365});
    let put = |token: &str, body: Value| {
        let token = token.to_owned();
        let base = base.clone();
        async move { call(M::PUT, &base, "/api/v1/retention", &token, Some(body)).await }
    };
    assert_eq!(
        put(&auditor.secret, rule.clone()).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        put(&agent.secret, rule.clone()).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        put(&scoped.secret, rule.clone()).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, v) = put(
        &admin.secret,
        json!({"namespace": "acme", "payload_days": 30, "header_days": 7}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("header_days"), "{v}");
    let (status, v) = put(
        &admin.secret,
        json!({"namespace": "acme", "payload_days": 0}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v) = put(&admin.secret, json!({"namespace": "acme", "keep": 1})).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "unknown fields are refused: {v}"
    );
    let (status, v) = put(
        &admin.secret,
        json!({"namespace": "other", "payload_days": 1}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another tenant's namespace: {v}"
    );
    let (status, v) = put(&admin.secret, rule.clone()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["header_days"], 365);
    let (status, v) = call(M::GET, &base, "/api/v1/retention", &auditor.secret, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    let (status, _) = call(
        M::DELETE,
        &base,
        "/api/v1/retention?namespace=acme/nothing",
        &admin.secret,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, v) = call(
        M::POST,
        &base,
        "/api/v1/legal-holds",
        &admin.secret,
        Some(json!({"namespace": "acme/legal", "from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z", "reason": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v) = call(
        M::POST,
        &base,
        "/api/v1/legal-holds",
        &admin.secret,
        Some(json!({"namespace": "acme/legal", "reason": ""})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, hold) = call(
        M::POST,
        &base,
        "/api/v1/legal-holds",
        &admin.secret,
        Some(json!({"namespace": "acme/legal", "reason": "case 7"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let hold_id = hold["id"].as_str().unwrap().to_owned();
    let (status, v) = call(M::GET, &base, "/api/v1/legal-holds", &auditor.secret, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v[0]["active"], true, "{v}");
    let (status, _) = call(
        M::POST,
        &base,
        "/api/v1/retention/apply",
        &auditor.secret,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let status = server.terminate().await;
    assert!(status.success(), "{}", server.log());

    // Applied from the CLI: 3 headers past 365 days, 2 payloads past 30; the held 2 stay.
    let d = path_str(&data);
    let out = warden(&["audit", "retention", "apply", "--data-dir", d]).await;
    assert!(
        !out.success() && out.stderr.contains("--by"),
        "{}",
        out.text()
    );
    let out = warden(&[
        "audit",
        "retention",
        "apply",
        "--data-dir",
        d,
        "--by",
        "ops",
    ])
    .await;
    assert!(out.success(), "{}", out.text());
    assert!(
        out.stdout
            .contains("acme: 2 payloads purged, 3 headers deleted, 2 events kept by legal holds"),
        "{}",
        out.text()
    );
    let out = verify(&data).await;
    assert!(out.success(), "verify after retention: {}", out.text());
    assert!(
        out.stdout.contains("2 payloads purged") && out.stdout.contains("3 headers expired"),
        "{}",
        out.text()
    );
    // Held events keep header and payload.
    assert_eq!(
        sql_count(
            &data,
            "SELECT COUNT(*) FROM audit_events WHERE namespace = 'acme/legal' AND event_type = 'authz.decision' AND payload IS NOT NULL"
        )
        .await,
        2
    );
    // Every change is an audit event.
    for (t, n) in [
        ("audit.retention.rule_set", 1),
        ("audit.legal_hold.placed", 1),
        ("audit.retention.applied", 1),
    ] {
        let q = format!("SELECT COUNT(*) FROM audit_events WHERE event_type = '{t}'");
        assert_eq!(sql_count(&data, &q).await, n, "{t}");
    }

    // Removals without a retention run behind them still fail.
    let live = "(SELECT MAX(seq) FROM audit_events WHERE event_type = 'authz.decision' AND payload IS NOT NULL)";
    let cases = [
        (
            "a row deleted by hand",
            format!("DELETE FROM audit_events WHERE seq = {live}"),
            "[sequence]",
        ),
        (
            "a payload removed by hand",
            format!("UPDATE audit_events SET payload = NULL WHERE seq = {live}"),
            "[unexplained_removal]",
        ),
        (
            "a row deleted with its leaf kept, as retention would",
            format!(
                "INSERT INTO audit_expired_leaves SELECT tenant, seq, leaf_hash FROM audit_events WHERE seq = {live}; \
                 DELETE FROM audit_events WHERE seq IN (SELECT seq FROM audit_expired_leaves)"
            ),
            "[unexplained_removal]",
        ),
    ];
    for (i, (name, sql, want)) in cases.iter().enumerate() {
        let copy = tmp.path().join(format!("case-{i}"));
        copy_data(&data, &copy);
        sql_exec(&copy, sql).await;
        let out = verify(&copy).await;
        assert!(
            !out.success() && out.stdout.contains(want),
            "{name}: expected failure with {want}: {}",
            out.text()
        );
    }

    // Released, the hold no longer keeps its events; a run through the API removes them.
    let mut server = Server::start(&data).await;
    let base = server.base.clone();
    let release = format!("/api/v1/legal-holds/{hold_id}/release");
    let (status, v) = call(
        M::POST,
        &base,
        &release,
        &admin.secret,
        Some(json!({"reason": "case closed"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["active"], false);
    let (status, _) = call(
        M::POST,
        &base,
        &release,
        &admin.secret,
        Some(json!({"reason": "again"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, v) = call(
        M::POST,
        &base,
        "/api/v1/retention/apply",
        &admin.secret,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["headers_deleted"], 2, "{v}");
    assert_eq!(v["payloads_purged"], 0, "{v}");
    let (status, v) = call(
        M::DELETE,
        &base,
        "/api/v1/retention?namespace=acme",
        &admin.secret,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let status = server.terminate().await;
    assert!(status.success(), "{}", server.log());
    for (t, n) in [
        ("audit.legal_hold.released", 1),
        ("audit.retention.rule_deleted", 1),
        ("audit.retention.applied", 2),
    ] {
        let q = format!("SELECT COUNT(*) FROM audit_events WHERE event_type = '{t}'");
        assert_eq!(sql_count(&data, &q).await, n, "{t}");
    }
    let out = verify(&data).await;
    assert!(
        out.success() && out.stdout.contains("5 headers expired"),
        "{}",
        out.text()
    );
}

/// The same on PostgreSQL: backdated events, `warden audit retention apply --database`, and
/// `warden audit verify --database` passing with the counts; a row deleted by hand fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_postgres_keeps_the_log_verifiable() {
    use sqlx::Connection;
    use warden_core::retention::RetentionRule;
    use warden_core::{NamespacePath, TenantId};
    use warden_store::postgres::{PgStore, Schema};

    let admin_url = std::env::var("WARDEN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {admin_url}: {e}"));
    let name = format!("warden_test_{}", uuid::Uuid::now_v7().simple());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let base = admin_url.split('?').next().unwrap();
    let host_end = base
        .find("://")
        .and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j))
        .unwrap_or(base.len());
    let url = format!("{}/{name}", &base[..host_end]);

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = path_str(&data);
    let out = warden(&["migrate", "--database", &url]).await;
    assert!(out.success(), "{}", out.text());
    create_token(
        &data,
        &["--database", &url, "--tenant", "acme", "--role", "admin"],
    )
    .await;
    {
        let store = PgStore::connect(&url, Schema::Migrate).await.unwrap();
        let batch: Vec<NewEvent> = [(400, "acme/a"), (400, "acme/a"), (40, "acme/a")]
            .iter()
            .map(|(days, ns)| {
                let mut e = AuditEvent::new(
                    "acme",
                    ns,
                    "authz.decision",
                    "warden.api",
                    Actor::default(),
                    json!({"n": days}),
                );
                e.header.time = Utc::now() - Duration::days(*days);
                NewEvent {
                    event: e,
                    dedupe: false,
                }
            })
            .collect();
        store.append_events(&batch).await.unwrap();
        store
            .put_retention_rule(&RetentionRule {
                tenant: TenantId::parse("acme").unwrap(),
                namespace: NamespacePath::parse("acme").unwrap(),
                payload_days: Some(30),
                header_days: Some(365),
                updated_by: "test".into(),
                updated_at: Utc::now(),
            })
            .await
            .unwrap();
    }
    // A server run signs a checkpoint over the whole log at shutdown.
    let mut server = Server::start_args(&data, &example_policies(), &["--database", &url]).await;
    let status = server.terminate().await;
    assert!(status.success(), "{}", server.log());

    let db = ["--database", url.as_str(), "--data-dir", d];
    let mut args = vec!["audit", "retention", "apply", "--by", "ops"];
    args.extend_from_slice(&db);
    let out = warden(&args).await;
    assert!(
        out.success()
            && out
                .stdout
                .contains("acme: 1 payloads purged, 2 headers deleted"),
        "{}",
        out.text()
    );
    let mut args = vec!["audit", "verify"];
    args.extend_from_slice(&db);
    let out = warden(&args).await;
    assert!(
        out.success()
            && out.stdout.contains("1 payloads purged")
            && out.stdout.contains("2 headers expired"),
        "{}",
        out.text()
    );

    // A row deleted by hand, without a retention run: fails.
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(
        "DELETE FROM audit_events WHERE seq = (SELECT MAX(seq) FROM audit_events WHERE event_type = 'token.created')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let out = warden(&args).await;
    assert!(
        !out.success() && out.stdout.contains("[sequence]"),
        "{}",
        out.text()
    );

    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
}

/// The server applies retention on its own at `[retention] interval`; `enabled = false` stops
/// it, and an unknown key in the section is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_applies_retention_on_schedule() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let admin = create_token(&data, &["--tenant", "acme", "--role", "admin"]).await;
    append_backdated(&data, "acme/platform/api", 400, 2).await;

    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[retention]\nintervall = \"1s\"\n").unwrap();
    let out = warden(&[
        "serve",
        "--data-dir",
        path_str(&data),
        "--config",
        path_str(&bad),
    ])
    .await;
    assert!(!out.success(), "{}", out.text());
    assert!(out.text().contains("intervall"), "{}", out.text());

    // Off: no run however long the server stays up.
    let off = tmp.path().join("off.toml");
    std::fs::write(&off, "[retention]\nenabled = false\ninterval = \"1s\"\n").unwrap();
    let mut server =
        Server::start_args(&data, &example_policies(), &["--config", path_str(&off)]).await;
    let (status, v) = call(
        reqwest::Method::PUT,
        &server.base,
        "/api/v1/retention",
        &admin.secret,
        Some(json!({"namespace": "acme", "header_days": 365})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    server.terminate().await;
    let runs = "SELECT COUNT(*) FROM audit_events WHERE event_type = 'audit.retention.applied'";
    assert_eq!(sql_count(&data, runs).await, 0);

    let on = tmp.path().join("on.toml");
    std::fs::write(&on, "[retention]\ninterval = \"1s\"\n").unwrap();
    let mut server =
        Server::start_args(&data, &example_policies(), &["--config", path_str(&on)]).await;
    // Waits for the outcome, not for a time: the first run comes one interval after start.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while sql_count(&data, runs).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled run: {}",
            server.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    server.terminate().await;
    let expired = "SELECT COUNT(*) FROM audit_expired_leaves";
    assert_eq!(sql_count(&data, expired).await, 2);
    let out = verify(&data).await;
    assert!(
        out.success() && out.stdout.contains("2 headers expired"),
        "{}",
        out.text()
    );
}

/// Rules and holds from a terminal, with no server: `warden audit retention rules|set|remove`
/// and `warden audit hold list|place|release` on a real data directory, each change recorded
/// as `cli:NAME`; a hold keeps its events through a run, and after its release the next run
/// removes them; the log still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_holds_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = path_str(&data);
    create_token(&data, &["--tenant", "acme", "--role", "admin"]).await;
    append_backdated(&data, "acme/platform/api", 400, 3).await;
    append_backdated(&data, "acme/legal", 400, 2).await;
    let run = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(["--data-dir".to_owned(), d.to_owned()]);
        async move {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            warden(&refs).await
        }
    };

    let out = run(&["audit", "retention", "rules"]).await;
    assert!(out.success(), "{}", out.text());
    assert!(out.stdout.contains("no retention rule"), "{}", out.text());

    // Refused like the API refuses it, and nothing recorded.
    for (args, want) in [
        (
            vec![
                "--namespace",
                "acme",
                "--payload-days",
                "30",
                "--header-days",
                "7",
            ],
            "header_days",
        ),
        (
            vec!["--namespace", "acme", "--payload-days", "0"],
            "payload_days",
        ),
        (
            vec!["--namespace", "globex", "--payload-days", "1"],
            "not found",
        ),
    ] {
        let mut a = vec![
            "audit",
            "retention",
            "set",
            "--tenant",
            "acme",
            "--by",
            "ops",
        ];
        a.extend(args);
        let out = run(&a).await;
        assert!(
            !out.success() && out.stderr.contains(want),
            "{want}: {}",
            out.text()
        );
    }
    let out = run(&[
        "audit",
        "retention",
        "set",
        "--tenant",
        "nobody",
        "--namespace",
        "nobody",
        "--header-days",
        "1",
        "--by",
        "ops",
    ])
    .await;
    assert!(
        !out.success() && out.stderr.contains("tenant nobody has no audit log"),
        "{}",
        out.text()
    );

    let out = run(&[
        "audit",
        "retention",
        "set",
        "--tenant",
        "acme",
        "--namespace",
        "acme",
        "--payload-days",
        "30",
        "--header-days",
        "365",
        "--by",
        "ops",
    ])
    .await;
    assert!(out.success(), "{}", out.text());
    assert!(
        out.stdout
            .contains("acme: payloads kept 30 days, headers kept 365 days"),
        "{}",
        out.text()
    );
    let out = run(&[
        "audit",
        "retention",
        "rules",
        "--tenant",
        "acme",
        "--format",
        "json",
    ])
    .await;
    assert!(out.success(), "{}", out.text());
    let rules: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(rules.as_array().unwrap().len(), 1, "{rules}");
    assert_eq!(rules[0]["namespace"], "acme");
    assert_eq!(rules[0]["header_days"], 365);
    assert_eq!(rules[0]["updated_by"], "cli:ops");
    let out = run(&["audit", "retention", "rules", "--format", "yaml"]).await;
    assert!(
        !out.success() && out.stderr.contains("unknown format"),
        "{}",
        out.text()
    );

    let out = run(&[
        "audit",
        "hold",
        "place",
        "--tenant",
        "acme",
        "--namespace",
        "acme/legal",
        "--reason",
        "case 7",
        "--by",
        "ops",
        "--format",
        "json",
    ])
    .await;
    assert!(out.success(), "{}", out.text());
    let hold: Value = serde_json::from_str(&out.stdout).unwrap();
    let id = hold["id"].as_str().unwrap().to_owned();
    assert_eq!(hold["active"], true);
    assert_eq!(hold["created_by"], "cli:ops");
    let out = run(&["audit", "hold", "list", "--tenant", "acme"]).await;
    assert!(
        out.success() && out.stdout.contains(&id) && out.stdout.contains("active"),
        "{}",
        out.text()
    );

    // The hold keeps acme/legal's 2 events; the other 3 lose their rows.
    let out = run(&["audit", "retention", "apply", "--by", "ops"]).await;
    assert!(
        out.success()
            && out.stdout.contains(
                "acme: 0 payloads purged, 3 headers deleted, 2 events kept by legal holds"
            ),
        "{}",
        out.text()
    );
    let legal = "SELECT COUNT(*) FROM audit_events WHERE namespace = 'acme/legal' AND event_type = 'authz.decision'";
    assert_eq!(sql_count(&data, legal).await, 2);

    let out = run(&[
        "audit",
        "hold",
        "release",
        &id,
        "--tenant",
        "acme",
        "--reason",
        "case closed",
        "--by",
        "ops",
    ])
    .await;
    assert!(
        out.success() && out.stdout.contains(&format!("released {id}")),
        "{}",
        out.text()
    );
    let out = run(&[
        "audit", "hold", "release", &id, "--tenant", "acme", "--reason", "again", "--by", "ops",
    ])
    .await;
    assert!(
        !out.success() && out.stderr.contains("already released"),
        "{}",
        out.text()
    );
    let out = run(&["audit", "hold", "list", "--tenant", "acme", "--active"]).await;
    assert!(
        out.success() && out.stdout.contains("no legal hold"),
        "{}",
        out.text()
    );

    let out = run(&[
        "audit",
        "retention",
        "apply",
        "--tenant",
        "acme",
        "--by",
        "ops",
    ])
    .await;
    assert!(
        out.success()
            && out.stdout.contains(
                "acme: 0 payloads purged, 2 headers deleted, 0 events kept by legal holds"
            ),
        "{}",
        out.text()
    );
    assert_eq!(sql_count(&data, legal).await, 0);

    let out = run(&[
        "audit",
        "retention",
        "remove",
        "--tenant",
        "acme",
        "--namespace",
        "acme",
        "--by",
        "ops",
    ])
    .await;
    assert!(out.success(), "{}", out.text());
    let out = run(&[
        "audit",
        "retention",
        "remove",
        "--tenant",
        "acme",
        "--namespace",
        "acme",
        "--by",
        "ops",
    ])
    .await;
    assert!(
        !out.success() && out.stderr.contains("no retention rule for namespace acme"),
        "{}",
        out.text()
    );

    // Every change is in the audit trail, from the CLI, in the namespace it concerns.
    let events = export(&data).await;
    for (t, n, ns) in [
        ("audit.retention.rule_set", 1, "acme"),
        ("audit.legal_hold.placed", 1, "acme/legal"),
        ("audit.legal_hold.released", 1, "acme/legal"),
        ("audit.retention.rule_deleted", 1, "acme"),
        ("audit.retention.applied", 2, "acme"),
    ] {
        let of: Vec<&Value> = events.iter().filter(|e| e["type"] == t).collect();
        assert_eq!(of.len(), n, "{t}");
        assert!(
            of.iter()
                .all(|e| e["source"] == "warden.cli" && e["namespace"] == ns),
            "{t}: {of:?}"
        );
    }
    // No server ran, so no checkpoint key exists: the hashes and retention records are checked.
    let out = run(&["audit", "verify", "--allow-unsigned"]).await;
    assert!(
        out.success() && out.stdout.contains("5 headers expired"),
        "{}",
        out.text()
    );
}
