//! `GET /api/v1/reports/usage` through a real server: the same answer from ClickHouse (fed by
//! the server's own feeder) and from the system of record, tenant isolation, roles and bad
//! input.

mod common;

use std::time::Duration;

use common::{TestServer, example_policies, tool_call};
use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_analytics::testing::TestClickHouse;
use warden_core::Role;

/// Decisions of every outcome by two agents for two users in two namespaces; returns how many.
async fn make_decisions(s: &TestServer, tenant: &str) -> usize {
    let tokens = [
        s.agent_token(tenant, "bot", "alice", &format!("{tenant}/platform/api"))
            .await,
        s.agent_token(tenant, "triage", "bob", &format!("{tenant}/platform"))
            .await,
        s.agent_token(tenant, "bot", "carol", &format!("{tenant}/sales"))
            .await,
    ];
    let calls = [
        tool_call("github__list_issues", "low", json!({})),
        tool_call("shell__run_shell", "low", json!({})),
        tool_call("deploy__trigger_deploy", "low", json!({})),
        json!({"action": "read", "resource": {"type": "Repository", "id": "site"}}),
    ];
    let mut n = 0;
    for i in 0..24 {
        let (status, v) = s
            .post(
                "/api/v1/authorize",
                &tokens[i % tokens.len()],
                &calls[(i / 3) % calls.len()],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        n += 1;
    }
    n
}

async fn wait_until_fed(s: &TestServer, tenant: &str) {
    let stats = s
        .state()
        .analytics
        .as_ref()
        .expect("analytics")
        .stats
        .clone();
    for _ in 0..600 {
        if stats.is_current(tenant) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the feeder did not catch up with {tenant}: lag {:?}",
        stats.lag(tenant)
    );
}

fn usage_path(params: &str) -> String {
    format!("/api/v1/reports/usage?{params}")
}

#[tokio::test]
async fn the_same_report_from_clickhouse_and_from_the_store() {
    let Some(ch) = TestClickHouse::new().await else {
        return;
    };
    let config = ch.config();
    let s = TestServer::start_with(move |c| {
        c.policies = Some(example_policies());
        c.analytics = Some(config);
    })
    .await;
    let acme = make_decisions(&s, "acme").await;
    make_decisions(&s, "globex").await;
    // Creating a token is an audit event too: before waiting for the copy to catch up.
    let auditor = s.token("acme", Role::Auditor, None, None, None).await;
    wait_until_fed(&s, "acme").await;
    wait_until_fed(&s, "globex").await;

    let mut compared = 0;
    let mut auto_clickhouse = 0;
    for ns in [
        "",
        "&namespace=acme/platform",
        "&namespace=acme/sales",
        "&namespace=acme",
    ] {
        for group_by in ["agent", "tool", "user", "namespace", "outcome"] {
            let q = format!(
                "group_by={group_by}{ns}&from=2020-01-01T00:00:00Z&to=2100-01-01T00:00:00Z"
            );
            let (st, store) = s
                .get(&usage_path(&format!("{q}&source=store")), &auditor)
                .await;
            assert_eq!(st, StatusCode::OK, "{store}");
            let (st, chv) = s
                .get(&usage_path(&format!("{q}&source=clickhouse")), &auditor)
                .await;
            assert_eq!(st, StatusCode::OK, "{chv}");
            assert_eq!(store["source"], "store");
            assert_eq!(chv["source"], "clickhouse");
            assert_eq!(chv["rows"], store["rows"], "{q}");
            // Caught up: the default reads ClickHouse (unless an event just came in, which the
            // feeder copies within one interval).
            wait_until_fed(&s, "acme").await;
            let (_, auto) = s.get(&usage_path(&q), &auditor).await;
            if auto["source"] == "clickhouse" {
                auto_clickhouse += 1;
            }
            assert_eq!(auto["rows"], store["rows"]);
            compared += 1;
        }
    }
    println!(
        "{compared} usage reports equal from ClickHouse and the store; the default read ClickHouse {auto_clickhouse} times"
    );
    assert!(
        auto_clickhouse > compared / 2,
        "{auto_clickhouse} of {compared}"
    );

    // The whole tenant, by outcome: every decision counted once; globex's are not in it.
    let (_, v) = s
        .get(&usage_path("group_by=outcome&source=clickhouse"), &auditor)
        .await;
    let total: u64 = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["total"].as_u64().unwrap())
        .sum();
    assert_eq!(total, acme as u64);
    let (_, v) = s
        .get(
            &usage_path("group_by=namespace&source=clickhouse"),
            &auditor,
        )
        .await;
    for r in v["rows"].as_array().unwrap() {
        assert!(r["key"].as_str().unwrap().starts_with("acme"), "{r}");
    }
    let keys: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["acme/platform", "acme/platform/api", "acme/sales"]);
    // By tool: decisions on something else than a tool have no key.
    let (_, v) = s.get(&usage_path("group_by=tool"), &auditor).await;
    assert_eq!(v["rows"][0]["key"], Value::Null);
    assert_eq!(v["rows"][0]["total"], 6);

    // Metrics show the feeder.
    let (_, metrics) = s.get_text("/metrics", None).await;
    assert!(
        metrics.contains("warden_analytics_lag_events{tenant=\"acme\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("warden_analytics_events_fed_total"));
    s.stop().await;
}

/// With `retention_days`, a window that starts before it is answered by the system of record
/// (ClickHouse may have dropped its partitions); a window within it by ClickHouse. The server's
/// feeder holds the cluster's feeder lease and says so in `/metrics`.
#[tokio::test]
async fn windows_older_than_clickhouse_retention_read_the_store() {
    let Some(ch) = TestClickHouse::new().await else {
        return;
    };
    let mut config = ch.config();
    config.retention_days = Some(30);
    let s = TestServer::start_with(move |c| {
        c.policies = Some(example_policies());
        c.analytics = Some(config);
    })
    .await;
    make_decisions(&s, "acme").await;
    let auditor = s.token("acme", Role::Auditor, None, None, None).await;
    wait_until_fed(&s, "acme").await;
    let now = chrono::Utc::now();
    let window = |days: i64| {
        let from =
            (now - chrono::Duration::days(days)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        usage_path(&format!(
            "group_by=outcome&from={from}&to=2100-01-01T00:00:00Z"
        ))
    };
    let (st, old) = s.get(&window(45), &auditor).await;
    assert_eq!(st, StatusCode::OK, "{old}");
    assert_eq!(old["source"], "store", "{old}");
    wait_until_fed(&s, "acme").await;
    let (_, recent) = s.get(&window(7), &auditor).await;
    assert_eq!(recent["source"], "clickhouse", "{recent}");
    assert_eq!(recent["rows"], old["rows"]);
    let (_, metrics) = s.get_text("/metrics", None).await;
    assert!(
        metrics.contains("warden_analytics_feeder_active 1"),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test]
async fn who_may_read_reports_and_bad_input() {
    let s = TestServer::start_with(|c| c.policies = Some(example_policies())).await;
    make_decisions(&s, "acme").await;
    let admin = s.token("acme", Role::Admin, None, None, None).await;
    let auditor = s.token("acme", Role::Auditor, None, None, None).await;
    let confined = s
        .token("acme", Role::Auditor, None, None, Some("acme/platform"))
        .await;

    // Without analytics the store answers, and ClickHouse cannot be asked for.
    let (st, v) = s.get(&usage_path("group_by=agent"), &admin).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["source"], "store");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| r["total"].as_u64().unwrap())
            .sum::<u64>(),
        24
    );
    let (st, v) = s
        .get(&usage_path("group_by=agent&source=clickhouse"), &admin)
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");

    // The default window is the last 30 days.
    let (_, v) = s.get(&usage_path("group_by=outcome"), &auditor).await;
    let from: chrono::DateTime<chrono::Utc> = v["from"].as_str().unwrap().parse().unwrap();
    let to: chrono::DateTime<chrono::Utc> = v["to"].as_str().unwrap().parse().unwrap();
    assert_eq!(to - from, chrono::Duration::days(30));

    // A confined token sees its subtree by default, and nothing outside it.
    let (_, v) = s.get(&usage_path("group_by=namespace"), &confined).await;
    assert_eq!(v["namespace"], "acme/platform");
    for r in v["rows"].as_array().unwrap() {
        assert!(
            r["key"].as_str().unwrap().starts_with("acme/platform"),
            "{r}"
        );
    }
    let (st, _) = s
        .get(
            &usage_path("group_by=agent&namespace=acme/sales"),
            &confined,
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    for role in [Role::PolicyAdmin, Role::Service, Role::Approver] {
        let t = s.token("acme", role, None, None, None).await;
        let (st, _) = s.get(&usage_path("group_by=agent"), &t).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{role}");
    }
    let agent = s.agent_token("acme", "bot", "alice", "acme/platform").await;
    let (st, _) = s.get(&usage_path("group_by=agent"), &agent).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s.get_text(&usage_path("group_by=agent"), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    for (q, want) in [
        ("", StatusCode::BAD_REQUEST),
        ("group_by=server", StatusCode::BAD_REQUEST),
        ("group_by=agent&source=elsewhere", StatusCode::BAD_REQUEST),
        ("group_by=agent&from=yesterday", StatusCode::BAD_REQUEST),
        (
            "group_by=agent&from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            StatusCode::BAD_REQUEST,
        ),
        ("group_by=agent&limit=5", StatusCode::BAD_REQUEST),
        (
            "group_by=agent&namespace=Not%20A%20Namespace",
            StatusCode::BAD_REQUEST,
        ),
        ("group_by=agent&namespace=globex", StatusCode::NOT_FOUND),
    ] {
        let (st, v) = s.get(&usage_path(q), &auditor).await;
        assert_eq!(st, want, "{q}: {v}");
        assert!(
            v["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{q}: {v}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn the_usage_route_is_in_the_openapi_document() {
    let s = TestServer::start().await;
    let (status, doc) = s.get("/openapi.json", "").await;
    assert_eq!(status, StatusCode::OK);
    let op = &doc["paths"]["/api/v1/reports/usage"]["get"];
    assert_eq!(op["tags"][0], "reports");
    let params: Vec<&str> = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in ["from", "to", "namespace", "group_by", "source"] {
        assert!(params.contains(&p), "{p} in {params:?}");
    }
    assert!(doc["components"]["schemas"]["UsageReport"].is_object());
    s.stop().await;
}
