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
    reports_from_clickhouse_equal_the_store
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
