//! Fault: ClickHouse stopped for a while under load. A real Warden server keeps answering
//! `POST /api/v1/authorize` (every request answered), the lag shows in `/metrics` while
//! ClickHouse is down, and once it is back every event arrives exactly once after dedupe:
//! `count() FINAL` == `uniqExact(id)` == events recorded.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{TestServer, example_policies, tool_call};
use reqwest::StatusCode;
use serde_json::json;
use warden_analytics::client::as_u64;
use warden_analytics::testing::PrivateClickHouse;
use warden_analytics::{AnalyticsConfig, ClickHouse};
use warden_core::TenantId;

/// A `/metrics` sample without labels, or with exactly `labels`.
fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name_and_labels)?
            .strip_prefix(' ')?
            .parse()
            .ok()
    })
}

async fn scalar(ch: &ClickHouse, sql: &str) -> u64 {
    let rows = ch.rows(sql).await.unwrap();
    as_u64(&rows[0][0]).unwrap()
}

#[derive(Default)]
struct Load {
    answered: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clickhouse_down_under_load_then_back_every_event_once() {
    let Some(ch) = PrivateClickHouse::start() else {
        return;
    };
    let mut config = AnalyticsConfig::new(ch.url());
    config.batch = 500;
    config.interval = Duration::from_millis(50);
    let client = ClickHouse::new(&config).unwrap();
    let s = Arc::new(
        TestServer::start_with(move |c| {
            c.policies = Some(example_policies());
            c.analytics = Some(config);
        })
        .await,
    );
    let mut tokens = Vec::new();
    for (agent, user) in [
        ("bot", "alice"),
        ("triage", "bob"),
        ("bot", "carol"),
        ("ops", "dave"),
    ] {
        tokens.push(s.agent_token("acme", agent, user, "acme/platform").await);
    }

    // Load: 8 clients deciding as fast as they are answered, for the whole test.
    let load = Arc::new(Load::default());
    let mut clients = Vec::new();
    for i in 0..8 {
        let (s, load, token) = (s.clone(), load.clone(), tokens[i % tokens.len()].clone());
        clients.push(tokio::spawn(async move {
            let calls = [
                tool_call("github__list_issues", "low", json!({})),
                tool_call("shell__run_shell", "low", json!({})),
                tool_call("deploy__trigger_deploy", "low", json!({})),
            ];
            let mut k = 0;
            while !load.stop.load(Ordering::Relaxed) {
                let (status, _) = s.post("/api/v1/authorize", &token, &calls[k % 3]).await;
                if status == StatusCode::OK {
                    load.answered.fetch_add(1, Ordering::Relaxed);
                } else {
                    load.failed.fetch_add(1, Ordering::Relaxed);
                }
                k += 1;
            }
        }));
    }
    let metrics = || async { s.get_text("/metrics", None).await.1 };

    // Phase 1: ClickHouse up; the copy keeps up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fed_before = metric(&metrics().await, "warden_analytics_events_fed_total").unwrap();
    assert!(fed_before > 0.0, "the feeder copies while ClickHouse is up");

    // Phase 2: ClickHouse stopped.
    let started = std::time::Instant::now();
    let ch = tokio::task::spawn_blocking(move || {
        ch.stop();
        ch
    })
    .await
    .unwrap();
    println!("ClickHouse stopped in {:?}", started.elapsed());
    let at_stop = load.answered.load(Ordering::Relaxed);
    let mut peak_lag = 0.0;
    let mut errors = 0.0;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let m = metrics().await;
        peak_lag = metric(&m, "warden_analytics_lag_events_overall").unwrap();
        errors = metric(&m, "warden_analytics_errors_total").unwrap();
    }
    let while_down = load.answered.load(Ordering::Relaxed) - at_stop;
    println!(
        "while ClickHouse was down: {while_down} decisions answered, lag {peak_lag} events, {errors} feed errors"
    );
    assert!(while_down > 0, "decisions kept being answered");
    assert!(peak_lag > 0.0, "the lag shows in /metrics");
    assert!(errors > 0.0, "the failed attempts show in /metrics");
    let m = metrics().await;
    assert!(metric(&m, "warden_analytics_lag_events{tenant=\"acme\"}").unwrap() > 0.0);

    // Phase 3: ClickHouse back; a little more load, then stop it and let the copy catch up.
    let ch = tokio::task::spawn_blocking(move || {
        ch.restart();
        ch
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let answered = load.answered.load(Ordering::Relaxed);
    let failed = load.failed.load(Ordering::Relaxed);
    assert_eq!(failed, 0, "every decision request was answered");

    let tenant = TenantId::parse("acme").unwrap();
    let store = s.state().store.clone();
    let stats = s.state().analytics.as_ref().unwrap().stats.clone();
    let mut caught_up = false;
    for _ in 0..1200 {
        if stats.is_current("acme") {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(caught_up, "the copy caught up: lag {:?}", stats.lag("acme"));
    let recorded = store.merkle_head(&tenant).await.unwrap().size;

    let table = client.table(warden_analytics::schema::TABLE);
    let w = "WHERE tenant = 'acme'";
    // A pass that began before the last events were appended reports the lag of the heads it
    // read; the next pass brings the rest. Wait for the copy to hold every recorded event
    // (never more: the counts below are exact).
    let mut final_count = 0;
    for _ in 0..600 {
        final_count = scalar(&client, &format!("SELECT count() FROM {table} FINAL {w}")).await;
        if final_count >= recorded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let unique = scalar(&client, &format!("SELECT uniqExact(id) FROM {table} {w}")).await;
    let raw = scalar(&client, &format!("SELECT count() FROM {table} {w}")).await;
    let decisions = scalar(
        &client,
        &format!("SELECT count() FROM {table} FINAL {w} AND event_type = 'authz.decision'"),
    )
    .await;
    let m = metrics().await;
    println!(
        "decisions answered {answered} (failed {failed}); events recorded {recorded}; ClickHouse: \
         count FINAL {final_count}, uniqExact(id) {unique}, rows before merge {raw}, decisions {decisions}; \
         fed {} (re-sent included), feed errors {}",
        metric(&m, "warden_analytics_events_fed_total").unwrap(),
        metric(&m, "warden_analytics_errors_total").unwrap(),
    );
    assert_eq!(final_count, recorded);
    assert_eq!(unique, recorded);
    assert_eq!(
        decisions, answered,
        "every answered decision is in ClickHouse once"
    );
    assert_eq!(metric(&m, "warden_analytics_lag_events_overall"), Some(0.0));

    match Arc::try_unwrap(s) {
        Ok(s) => {
            s.stop().await;
        }
        Err(_) => panic!("the load tasks still hold the server"),
    }
    drop(ch);
}
