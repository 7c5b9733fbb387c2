//! The feeder against a real ClickHouse and real systems of record (a SQLite file and a
//! PostgreSQL database): every event arrives, exactly once after dedupe even when batches are
//! sent again; reports from ClickHouse equal the store's; tenants stay apart.

#[path = "../../warden-store/tests/common/mod.rs"]
#[macro_use]
mod common;

use std::sync::Arc;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use common::{Backend, TestDb};
use serde_json::json;
use warden_analytics::client::as_u64;
use warden_analytics::testing::TestClickHouse;
use warden_analytics::{ClickHouse, Feeder, Partition, report, schema};
use warden_core::{
    Actor, AuditEvent, DecisionSummary, EntityRef, NamespacePath, Outcome, ResourceRef, TenantId,
};
use warden_store::usage::{UsageGroupBy, UsageQuery};
use warden_store::{NewEvent, Store};

/// A decision event as the doors record them, at `time`.
fn decision(
    tenant: &str,
    namespace: &str,
    agent: Option<&str>,
    user: Option<&str>,
    tool: &str,
    outcome: Outcome,
    time: DateTime<Utc>,
) -> AuditEvent {
    let actor = Actor {
        principal: Some(match agent {
            Some(a) => EntityRef::new("Agent", a),
            None => EntityRef::new("User", user.unwrap_or("someone")),
        }),
        agent: agent.map(str::to_owned),
        on_behalf_of: user.map(str::to_owned),
        ..Actor::default()
    };
    let mut e = AuditEvent::new(
        tenant,
        namespace,
        "authz.decision",
        "warden.api",
        actor,
        json!({"request": {"context": {"n": 1}}}),
    );
    e.header.time = time.trunc_subsecs(6);
    e.header.action = Some("call_tool".into());
    e.header.resource = Some(if tool.is_empty() {
        ResourceRef {
            resource_type: "Repository".into(),
            id: "acme/site".into(),
        }
    } else {
        ResourceRef {
            resource_type: "Tool".into(),
            id: tool.into(),
        }
    });
    e.header.decision = Some(DecisionSummary {
        outcome,
        policies: vec![],
        obligations: vec![],
        warnings: vec![],
        errors: vec![],
    });
    e.seal();
    e
}

/// Records `n` decisions of `tenant` spread over the last 40 days (several agents, users,
/// tools, namespaces and outcomes) and a few events without a decision.
async fn record(store: &dyn Store, tenant: &str, n: usize, now: DateTime<Utc>) -> usize {
    let agents = [Some("ci-bot"), Some("triage"), None];
    let users = [Some("alice"), Some("bob"), None];
    let tools = ["github__create_issue", "github__merge", "slack__post", ""];
    let outcomes = [Outcome::Allow, Outcome::Deny, Outcome::ApprovalRequired];
    let namespaces = [
        tenant.to_owned(),
        format!("{tenant}/platform"),
        format!("{tenant}/platform/ci"),
        format!("{tenant}/platform_x"),
        format!("{tenant}/sales"),
    ];
    let mut batch = Vec::new();
    for i in 0..n {
        let time = now - Duration::minutes((i as i64 * 97) % (40 * 24 * 60));
        batch.push(NewEvent {
            event: decision(
                tenant,
                &namespaces[i % namespaces.len()],
                agents[i % agents.len()],
                users[(i / 2) % users.len()],
                tools[(i / 3) % tools.len()],
                outcomes[(i / 5) % outcomes.len()],
                time,
            ),
            dedupe: false,
        });
    }
    for _ in 0..3 {
        batch.push(NewEvent {
            event: AuditEvent::new(
                tenant,
                tenant,
                "token.created",
                "warden.api",
                Actor::default(),
                json!({}),
            ),
            dedupe: false,
        });
    }
    let total = batch.len();
    for chunk in batch.chunks(500) {
        store.append_events(chunk).await.unwrap();
    }
    total
}

async fn scalar(ch: &ClickHouse, sql: &str) -> u64 {
    let rows = ch.rows(sql).await.unwrap();
    as_u64(&rows[0][0]).unwrap_or_else(|| panic!("{sql}: {rows:?}"))
}

/// `count() FINAL`, `uniqExact(id)` and the raw `count()` of a tenant's rows.
async fn counts(ch: &ClickHouse, tenant: &str) -> (u64, u64, u64) {
    let t = ch.table(schema::TABLE);
    let w = format!("WHERE tenant = '{tenant}'");
    (
        scalar(ch, &format!("SELECT count() FROM {t} FINAL {w}")).await,
        scalar(ch, &format!("SELECT uniqExact(id) FROM {t} {w}")).await,
        scalar(ch, &format!("SELECT count() FROM {t} {w}")).await,
    )
}

async fn feed_all(store: &Arc<dyn Store>, ch: &TestClickHouse, batch: usize) -> u64 {
    let mut config = ch.config();
    config.batch = batch;
    let mut feeder = Feeder::new(store.clone(), config).unwrap();
    let mut fed = 0;
    loop {
        let n = feeder.pass().await.expect("feed pass");
        if n == 0 {
            break;
        }
        fed += n;
    }
    fed
}

/// The first events of `tenant` in ClickHouse hold, column by column, what the store holds.
async fn same_rows(store: &Arc<dyn Store>, ch: &ClickHouse, tenant: &str) {
    let stored = store
        .outbox_rows(&TenantId::parse(tenant).unwrap(), 0, 20)
        .await
        .unwrap();
    let got = ch
        .rows(&format!(
            "SELECT toString(id), seq, time_us, toUInt32(time), namespace, event_type, agent, user, \
             session, action, resource_type, resource_id, tool, server, outcome, policies, payload \
             FROM {} FINAL WHERE tenant = '{tenant}' ORDER BY seq LIMIT 20",
            ch.table(schema::TABLE)
        ))
        .await
        .unwrap();
    assert_eq!(got.len(), stored.len());
    for (row, e) in got.iter().zip(&stored) {
        let c = &e.columns;
        let header: serde_json::Value = serde_json::from_str(&e.header).unwrap();
        let policies: Vec<String> = header["decision"]["policies"]
            .as_array()
            .map(|p| {
                p.iter()
                    .map(|p| p["id"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        let tool =
            warden_analytics::row::tool_of(c.resource_type.as_deref(), c.resource_id.as_deref());
        let text = |v: &Option<String>| serde_json::json!(v.clone().unwrap_or_default());
        let expected = serde_json::json!([
            c.id.to_string(),
            e.seq.to_string(),
            c.time_micros.to_string(),
            c.time_micros / 1_000_000,
            c.namespace,
            c.event_type,
            text(&c.agent),
            text(&c.on_behalf_of),
            text(&c.session),
            text(&c.action),
            text(&c.resource_type),
            text(&c.resource_id),
            tool,
            warden_analytics::row::server_of(tool),
            text(&c.outcome),
            policies,
            e.payload.clone().unwrap_or_default(),
        ]);
        assert_eq!(serde_json::Value::Array(row.clone()), expected);
    }
}

async fn events_arrive_exactly_once(b: Backend) {
    let Some(ch) = TestClickHouse::new().await else {
        return;
    };
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let now = Utc::now();
    let acme = record(store.as_ref(), "acme", 400, now).await as u64;
    let globex = record(store.as_ref(), "globex", 150, now).await as u64;

    // Batches of 64 events: several per tenant, and batches that hold both tenants.
    let fed = feed_all(&store, &ch, 64).await;
    assert_eq!(fed, acme + globex);
    let client = ch.client();
    assert_eq!(counts(&client, "acme").await, (acme, acme, acme));
    assert_eq!(counts(&client, "globex").await, (globex, globex, globex));
    same_rows(&store, &client, "acme").await;

    // A feeder starting afresh resumes one batch back: it sends the last 64 events of each
    // tenant again, as after a crash in mid-insert.
    let again = feed_all(&store, &ch, 64).await;
    assert_eq!(again, 128, "one batch of each tenant is sent again");
    let (final_acme, uniq_acme, raw_acme) = counts(&client, "acme").await;
    println!(
        "{b:?}: recorded {acme} acme events; ClickHouse holds {raw_acme} rows, count FINAL {final_acme}, uniqExact(id) {uniq_acme}"
    );
    // Until the parts merge (which ClickHouse may already have done) the re-sent rows are
    // there twice.
    assert!((acme..=acme + 64).contains(&raw_acme));
    assert_eq!((final_acme, uniq_acme), (acme, acme));
    // A feeder that keeps running sends new events once each.
    let mut config = ch.config();
    config.batch = 64;
    let mut feeder = Feeder::new(store.clone(), config).unwrap();
    assert_eq!(feeder.pass().await.unwrap(), 128, "resumes one batch back");
    assert_eq!(feeder.pass().await.unwrap(), 0, "nothing new");
    let more = record(store.as_ref(), "acme", 50, now).await as u64;
    assert_eq!(feeder.pass().await.unwrap(), more);
    assert_eq!(feeder.stats().lag("acme"), Some(0));
    assert!(feeder.stats().is_current("acme"));
    let (f, u, _) = counts(&client, "acme").await;
    assert_eq!((f, u), (acme + more, acme + more));
}

async fn reports_from_clickhouse_equal_the_store(b: Backend) {
    let Some(ch) = TestClickHouse::new().await else {
        return;
    };
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let now = Utc::now();
    record(store.as_ref(), "acme", 700, now).await;
    record(store.as_ref(), "globex", 120, now).await;
    feed_all(&store, &ch, 100).await;
    // Send a part again so the comparison runs over a table with duplicates in it.
    feed_all(&store, &ch, 100).await;
    let client = ch.client();
    let acme = TenantId::parse("acme").unwrap();
    let globex = TenantId::parse("globex").unwrap();

    let windows = [
        (now - Duration::days(30), now + Duration::seconds(1)),
        (now - Duration::days(7), now - Duration::days(1)),
        // Bounds inside a second: `time_us` makes them exact.
        (
            now - Duration::days(3) + Duration::microseconds(1_500),
            now - Duration::hours(5) + Duration::microseconds(250_001),
        ),
    ];
    let namespaces = [
        None,
        Some("acme/platform"),
        Some("acme/sales"),
        Some("acme"),
    ];
    let mut compared = 0;
    for (from, to) in windows {
        for ns in namespaces {
            for group_by in UsageGroupBy::ALL {
                let q = UsageQuery {
                    from,
                    to,
                    namespace: ns.map(|n| NamespacePath::parse(n).unwrap()),
                    group_by,
                };
                let expected = store.usage_report(&acme, &q).await.unwrap();
                let got = report::usage(&client, &acme, &q).await.unwrap();
                assert_eq!(got, expected, "{group_by:?} {ns:?} {from}..{to}");
                compared += 1;
            }
        }
    }
    println!("{b:?}: {compared} usage reports equal on ClickHouse and the store");

    // The subtree of acme/platform holds acme/platform and acme/platform/ci, not
    // acme/platform_x.
    let q = UsageQuery {
        from: now - Duration::days(60),
        to: now + Duration::seconds(1),
        namespace: Some(NamespacePath::parse("acme/platform").unwrap()),
        group_by: UsageGroupBy::Namespace,
    };
    let keys: Vec<_> = report::usage(&client, &acme, &q)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key.unwrap())
        .collect();
    assert_eq!(keys, ["acme/platform", "acme/platform/ci"]);

    // Tenants apart: globex sees its 120 decisions and none of acme's.
    let all = UsageQuery {
        namespace: None,
        group_by: UsageGroupBy::Namespace,
        ..q
    };
    let g = report::usage(&client, &globex, &all).await.unwrap();
    assert_eq!(g.iter().map(|r| r.total).sum::<u64>(), 120);
    assert!(
        g.iter()
            .all(|r| r.key.as_deref().unwrap().starts_with("globex"))
    );
    assert_eq!(g, store.usage_report(&globex, &all).await.unwrap());
    let a = report::usage(&client, &acme, &all).await.unwrap();
    assert_eq!(a.iter().map(|r| r.total).sum::<u64>(), 700);
    // A namespace of another tenant under acme's id finds nothing.
    let cross = UsageQuery {
        namespace: Some(NamespacePath::parse("globex").unwrap()),
        ..all.clone()
    };
    assert!(
        report::usage(&client, &acme, &cross)
            .await
            .unwrap()
            .is_empty()
    );
}

on_both_backends!(
    events_arrive_exactly_once,
    reports_from_clickhouse_equal_the_store,
    purges_reach_clickhouse
);

#[tokio::test]
async fn lag_counts_every_event_while_clickhouse_is_unreachable() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.open().await;
    let n = record(store.as_ref(), "acme", 20, Utc::now()).await as u64;
    // Nothing listens on port 1.
    let mut config = warden_analytics::AnalyticsConfig::new("http://127.0.0.1:1");
    config.batch = 5;
    let mut feeder = Feeder::new(store.clone(), config).unwrap();
    let stats = feeder.stats();
    assert!(feeder.pass().await.is_err());
    assert_eq!(stats.lag("acme"), Some(n));
    assert_eq!(stats.total_lag(), n);
    assert!(!stats.is_current("acme"));
    assert_eq!(stats.errors.load(std::sync::atomic::Ordering::Relaxed), 1);
    let mut metrics = String::new();
    stats.render(&mut metrics);
    assert!(metrics.contains(&format!(
        "warden_analytics_lag_events{{tenant=\"acme\"}} {n}"
    )));
    assert!(metrics.contains("warden_analytics_errors_total 1"));
    assert!(metrics.contains("warden_analytics_last_success_timestamp_seconds 0"));
}

#[tokio::test]
async fn retention_drops_whole_partitions_before_the_cutoff() {
    let Some(ch) = TestClickHouse::new().await else {
        return;
    };
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.open().await;
    let today = Utc::now()
        .date_naive()
        .and_hms_opt(12, 0, 0)
        .unwrap()
        .and_utc();
    let mut batch = Vec::new();
    for days_ago in [0i64, 1, 2, 3] {
        for _ in 0..5 {
            batch.push(NewEvent {
                event: decision(
                    "acme",
                    "acme",
                    Some("ci-bot"),
                    None,
                    "x__y",
                    Outcome::Allow,
                    today - Duration::days(days_ago),
                ),
                dedupe: false,
            });
        }
    }
    store.append_events(&batch).await.unwrap();
    let mut config = ch.config();
    config.partition = Partition::Day;
    let mut feeder = Feeder::new(store.clone(), config).unwrap();
    assert_eq!(feeder.pass().await.unwrap(), 20);
    let client = ch.client();
    assert_eq!(schema::partitions(&client).await.unwrap().len(), 4);

    // Keep two days: the partitions of 2 and 3 days ago go; yesterday's stays whole.
    let cutoff = today - Duration::days(2) + Duration::hours(13);
    let dropped = schema::drop_partitions_before(&client, cutoff)
        .await
        .unwrap();
    let day = |d: i64| (today - Duration::days(d)).format("%Y%m%d").to_string();
    assert_eq!(dropped, [day(3), day(2)]);
    assert_eq!(counts(&client, "acme").await.0, 10);
    // The system of record keeps its own copy.
    assert_eq!(
        store
            .merkle_head(&TenantId::parse("acme").unwrap())
            .await
            .unwrap()
            .size,
        20
    );
}

#[tokio::test]
async fn a_lost_table_is_created_again_and_the_batch_sent_again() {
    let Some(ch) = TestClickHouse::new().await else {
        return;
    };
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.open().await;
    let now = Utc::now();
    let first = record(store.as_ref(), "acme", 30, now).await as u64;
    let mut feeder = Feeder::new(store.clone(), ch.config()).unwrap();
    assert_eq!(feeder.pass().await.unwrap(), first);
    let client = ch.client();
    client
        .execute(&format!("DROP TABLE {}", client.table(schema::TABLE)))
        .await
        .unwrap();
    let more = record(store.as_ref(), "acme", 10, now).await as u64;
    assert!(feeder.pass().await.is_err(), "the table is gone");
    assert_eq!(feeder.stats().lag("acme"), Some(more));
    assert_eq!(
        feeder.pass().await.unwrap(),
        more,
        "the same batch, into a new table"
    );
    assert_eq!(counts(&client, "acme").await, (more, more, more));
}

/// Polls `cond` every 20 ms until it holds, for at most `secs` seconds.
async fn eventually(secs: u64, what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond().await {
        assert!(
            std::time::Instant::now() < until,
            "not within {secs}s: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn active(stats: &warden_analytics::FeedStats) -> i64 {
    stats.active.load(std::sync::atomic::Ordering::Relaxed)
}

/// Two nodes over one PostgreSQL database and one ClickHouse database: one feeds at a time;
/// when it dies (no release) the other takes over once the lease expired, when it stops
/// gracefully (release) a third takes over at once; every event is in ClickHouse once.
#[tokio::test]
async fn one_feeder_per_cluster() {
    let Some(ch) = TestClickHouse::new().await else {
        return;
    };
    let db = TestDb::new(Backend::Postgres).await;
    let now = Utc::now();
    let lease_ttl = std::time::Duration::from_secs(2);
    let node = |name: &str, store: Arc<dyn Store>| {
        let mut config = ch.config();
        config.batch = 100;
        config.lease_ttl = Some(lease_ttl);
        Feeder::new(store, config).unwrap().owned_by(name)
    };
    let mut total = record(db.open().await.as_ref(), "acme", 300, now).await as u64;
    total += record(db.open().await.as_ref(), "globex", 100, now).await as u64;

    let (a, b) = (
        node("node-a", db.open().await),
        node("node-b", db.open().await),
    );
    let (sa, sb) = (a.stats(), b.stats());
    let (stop_a, rx_a) = tokio::sync::watch::channel(false);
    let (stop_b, rx_b) = tokio::sync::watch::channel(false);
    let task_a = tokio::spawn(a.run(rx_a));
    let task_b = tokio::spawn(b.run(rx_b));
    let client = ch.client();
    let writer = db.open().await;
    // Exactly one holds the lease at every look while events keep coming.
    for round in 0..5 {
        total += record(writer.as_ref(), "acme", 20, now).await as u64;
        for _ in 0..10 {
            let (x, y) = (active(&sa), active(&sb));
            assert!(x + y <= 1, "both nodes feed (round {round})");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    eventually(30, "every event in ClickHouse", async || {
        counts(&client, "acme").await.1 + counts(&client, "globex").await.1 == total
    })
    .await;
    assert_eq!(active(&sa) + active(&sb), 1, "one node feeds");
    let (holder, holder_stop, standby, standby_task, standby_stop) = if active(&sa) == 1 {
        (task_a, stop_a, sb.clone(), task_b, stop_b)
    } else {
        (task_b, stop_b, sa.clone(), task_a, stop_a)
    };
    // The standby node knows how far ClickHouse got (its reports may read it).
    eventually(20, "the standby sees ClickHouse current", async || {
        standby.is_current("acme") && standby.is_current("globex")
    })
    .await;

    // The holder dies without releasing: the standby takes over once the lease expired.
    holder.abort();
    let _ = holder.await;
    drop(holder_stop);
    let died = std::time::Instant::now();
    let more = record(writer.as_ref(), "globex", 40, now).await as u64;
    total += more;
    eventually(20, "the standby takes over", async || active(&standby) == 1).await;
    let took = died.elapsed();
    assert!(
        took >= lease_ttl - std::time::Duration::from_millis(300),
        "taken over after {took:?}, before the lease of {lease_ttl:?} expired"
    );
    eventually(30, "the new holder feeds", async || {
        counts(&client, "globex").await.1 + counts(&client, "acme").await.1 == total
    })
    .await;

    // A graceful stop releases the lease: a third node takes over without waiting for it.
    let c = node("node-c", db.open().await);
    let sc = c.stats();
    let (stop_c, rx_c) = tokio::sync::watch::channel(false);
    let task_c = tokio::spawn(c.run(rx_c));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(active(&sc), 0, "node-c stands by while the lease is held");
    standby_stop.send(true).unwrap();
    standby_task.await.unwrap();
    assert_eq!(active(&standby), 0);
    let stopped = std::time::Instant::now();
    eventually(20, "node-c takes over", async || active(&sc) == 1).await;
    assert!(
        stopped.elapsed() < lease_ttl - std::time::Duration::from_millis(500),
        "released, yet taken over only after {:?}",
        stopped.elapsed()
    );
    total += record(writer.as_ref(), "acme", 25, now).await as u64;
    eventually(30, "node-c feeds", async || {
        counts(&client, "globex").await.1 + counts(&client, "acme").await.1 == total
    })
    .await;
    stop_c.send(true).unwrap();
    task_c.await.unwrap();

    // Every event once, exactly: count FINAL and uniqExact(id) agree with the store.
    let (fa, ua, _) = counts(&client, "acme").await;
    let (fg, ug, _) = counts(&client, "globex").await;
    assert_eq!((fa + fg, ua + ug), (total, total));
    let dup = scalar(
        &client,
        &format!(
            "SELECT count() FROM (SELECT id FROM {} FINAL GROUP BY id HAVING count() > 1)",
            client.table(schema::TABLE)
        ),
    )
    .await;
    assert_eq!(dup, 0, "no event twice after FINAL");
    let mut metrics = String::new();
    sc.render(&mut metrics);
    assert!(
        metrics.contains("warden_analytics_feeder_active 0"),
        "{metrics}"
    );
}

fn hold(
    tenant: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> warden_core::retention::LegalHold {
    warden_core::retention::LegalHold {
        id: uuid::Uuid::now_v7(),
        tenant: TenantId::parse(tenant).unwrap(),
        namespace: Some(NamespacePath::parse(&format!("{tenant}/legal")).unwrap()),
        from,
        to,
        reason: "case 42".into(),
        created_by: "test".into(),
        created_at: Utc::now(),
        released_by: None,
        released_reason: None,
        released_at: None,
    }
}

/// `retention_days` drops the partitions wholly older than it, never one that an active legal
/// hold of any tenant reaches into; the running feeder does it at start.
#[tokio::test]
async fn retention_days_drops_old_partitions_unless_held() {
    let Some(ch) = TestClickHouse::new().await else {
        return;
    };
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.open().await;
    let now = Utc::now();
    let old = now - Duration::days(70);
    let events = |time: DateTime<Utc>, n: usize| -> Vec<NewEvent> {
        (0..n)
            .map(|_| NewEvent {
                event: decision(
                    "acme",
                    "acme",
                    Some("ci-bot"),
                    None,
                    "x__y",
                    Outcome::Allow,
                    time,
                ),
                dedupe: false,
            })
            .collect()
    };
    store.append_events(&events(old, 7)).await.unwrap();
    store.append_events(&events(now, 5)).await.unwrap();
    // globex has a log (and so its holds count) but no old events.
    record(store.as_ref(), "globex", 0, now).await;
    let mut config = ch.config();
    config.retention_days = Some(30);
    let mut feeder = Feeder::new(store.clone(), config.clone()).unwrap();
    assert_eq!(feeder.pass().await.unwrap(), 15);
    let client = ch.client();
    let old_id = old.format("%Y%m").to_string();
    assert_eq!(
        schema::partitions(&client).await.unwrap(),
        [old_id.clone(), now.format("%Y%m").to_string()]
    );

    // Another tenant's hold reaching into the old month keeps the partition whole.
    let h = hold(
        "globex",
        Some(old - Duration::days(1)),
        Some(old + Duration::hours(1)),
    );
    store.place_legal_hold(&h).await.unwrap();
    let r = feeder.drop_expired_partitions(now, 30).await.unwrap();
    assert!(r.dropped.is_empty(), "{r:?}");
    assert_eq!(r.held, std::slice::from_ref(&old_id));
    assert_eq!(counts(&client, "acme").await.0, 12);
    // A hold over other months does not.
    store
        .place_legal_hold(&hold("acme", None, Some(old - Duration::days(40))))
        .await
        .unwrap();
    store
        .release_legal_hold(&h.tenant, h.id, "test", "case closed", Utc::now())
        .await
        .unwrap();

    // The running feeder drops it at start: only the current month is left.
    let runner = Feeder::new(store.clone(), config).unwrap();
    let stats = runner.stats();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(runner.run(rx));
    eventually(20, "the old partition dropped", async || {
        schema::partitions(&client).await.unwrap().len() == 1
    })
    .await;
    // It resumes a batch back, here from the start of the log, and does not send the
    // dropped month's events again.
    eventually(20, "the runner caught up", async || {
        stats.is_current("acme")
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(
        schema::partitions(&client).await.unwrap(),
        [now.format("%Y%m").to_string()]
    );
    assert_eq!(counts(&client, "acme").await.0, 5);
    assert_eq!(
        stats
            .partitions_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let mut metrics = String::new();
    stats.render(&mut metrics);
    assert!(metrics.contains("warden_analytics_partitions_dropped_total 1"));
    // Within retention, nothing more goes.
    assert!(
        feeder
            .drop_expired_partitions(now, 30)
            .await
            .unwrap()
            .dropped
            .is_empty()
    );
}

/// Rows of ClickHouse whose payload column is empty, by position, for a tenant.
async fn blank_payloads(ch: &ClickHouse, tenant: &str) -> Vec<u64> {
    ch.rows(&format!(
        "SELECT seq FROM {} FINAL WHERE tenant = '{tenant}' AND payload = '' ORDER BY seq",
        ch.table(schema::TABLE)
    ))
    .await
    .unwrap()
    .iter()
    .map(|r| as_u64(&r[0]).unwrap())
    .collect()
}

async fn positions(ch: &ClickHouse, tenant: &str) -> Vec<u64> {
    ch.rows(&format!(
        "SELECT seq FROM {} FINAL WHERE tenant = '{tenant}' ORDER BY seq",
        ch.table(schema::TABLE)
    ))
    .await
    .unwrap()
    .iter()
    .map(|r| as_u64(&r[0]).unwrap())
    .collect()
}

/// A retention run of the system of record reaches ClickHouse: once its record is fed, the
/// purged payloads are blank there and the deleted rows gone; other events, and another
/// tenant's events at the same positions, keep theirs.
async fn purges_reach_clickhouse(b: Backend) {
    let Some(ch) = TestClickHouse::new().await else {
        return;
    };
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let now = Utc::now();
    let at = |days: i64| now - Duration::days(days);
    let mut batch = Vec::new();
    // Positions 0-2: 40 days old (rows deleted), 3-6: 20 days (payloads purged), 7-9: new.
    for (days, n) in [(40, 3), (20, 4), (0, 3)] {
        for tenant in ["acme", "globex"] {
            for _ in 0..n {
                batch.push(NewEvent {
                    event: decision(
                        tenant,
                        tenant,
                        Some("ci-bot"),
                        None,
                        "x__y",
                        Outcome::Allow,
                        at(days),
                    ),
                    dedupe: false,
                });
            }
        }
    }
    store.append_events(&batch).await.unwrap();
    let acme = TenantId::parse("acme").unwrap();
    store
        .put_retention_rule(&warden_core::retention::RetentionRule {
            tenant: acme.clone(),
            namespace: NamespacePath::parse("acme").unwrap(),
            payload_days: Some(10),
            header_days: Some(30),
            updated_by: "test".into(),
            updated_at: now,
        })
        .await
        .unwrap();
    let mut feeder = Feeder::new(store.clone(), ch.config()).unwrap();
    assert_eq!(feeder.pass().await.unwrap(), 20);
    let client = ch.client();
    assert!(blank_payloads(&client, "acme").await.is_empty());

    let out = warden_store::retention::apply_tenant(
        store.as_ref(),
        &acme,
        now,
        "warden.cli",
        &warden_core::Actor::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        (out.headers_deleted, out.payloads_purged),
        (3, 4),
        "{out:?}"
    );
    // The record (position 10) is fed, then its removals applied.
    assert_eq!(feeder.pass().await.unwrap(), 1);
    assert_eq!(
        feeder
            .stats()
            .removal_mutations
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    // Mutations run in the background; they are done when system.mutations says so.
    let pending = format!(
        "SELECT count() FROM system.mutations WHERE database = '{}' AND is_done = 0",
        client.database()
    );
    eventually(30, "the mutations done", async || {
        scalar(&client, &pending).await == 0
    })
    .await;
    assert_eq!(blank_payloads(&client, "acme").await, [3, 4, 5, 6]);
    assert_eq!(positions(&client, "acme").await, [3, 4, 5, 6, 7, 8, 9, 10]);
    // Another tenant's events at the same positions keep everything.
    assert!(blank_payloads(&client, "globex").await.is_empty());
    assert_eq!(
        positions(&client, "globex").await,
        (0..10).collect::<Vec<_>>()
    );

    // Idempotent: a feeder starting afresh sends the last batch again, record included.
    let mut again = Feeder::new(store.clone(), ch.config()).unwrap();
    assert!(again.pass().await.unwrap() > 0);
    eventually(30, "the mutations done", async || {
        scalar(&client, &pending).await == 0
    })
    .await;
    assert_eq!(blank_payloads(&client, "acme").await, [3, 4, 5, 6]);
    assert_eq!(counts(&client, "acme").await.0, 8);
    assert!(blank_payloads(&client, "globex").await.is_empty());
}
