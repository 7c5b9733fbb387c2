//! Analytics figures against the real servers (see docs/benchmarks.md):
//!
//! - `feed`: the feeder's throughput from the system of record into ClickHouse. A SQLite store
//!   (a file in a temporary folder) is filled with `WARDEN_BENCH_FEED_EVENTS` decision events
//!   (default 300,000, built like the decision API builds them, payload of about 400 bytes)
//!   before the clock starts; then a feeder copies them all into an empty table (batches of
//!   20,000, the default, or `WARDEN_BENCH_FEED_BATCH`). Events per second from the first
//!   read to the last insert.
//!   With `WARDEN_BENCH_FEED_STORE=postgres` the store is a fresh PostgreSQL database
//!   (`WARDEN_TEST_POSTGRES_URL`) instead.
//! - `report/clickhouse`: the 30-day usage report (`group_by=agent`, whole tenant, and a
//!   namespace subtree) over `WARDEN_BENCH_REPORT_EVENTS` events (default 10,000,000) spread
//!   over 90 days, generated inside ClickHouse with `INSERT … SELECT … FROM numbers(N)`;
//!   counting distinct event ids per group as the server does. Median of 5 runs.
//! - `report/postgres` (when `WARDEN_BENCH_POSTGRES=1`): the same report through
//!   `Store::usage_report` over the same number of events in a fresh PostgreSQL database
//!   (`WARDEN_TEST_POSTGRES_URL`), generated with `generate_series`. Median of 5 runs.
//!
//! ClickHouse is `WARDEN_TEST_CLICKHOUSE_URL` (default `http://127.0.0.1:18123`, what
//! `scripts/clickhouse.sh` starts); each run works in a database of its own, dropped after.
//!
//! ```sh
//! cargo bench -p warden-analytics --bench analytics
//! WARDEN_BENCH_POSTGRES=1 WARDEN_BENCH_REPORT_EVENTS=10000000 cargo bench -p warden-analytics --bench analytics
//! ```

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use sqlx::Connection;
use warden_analytics::client::as_u64;
use warden_analytics::testing::TestClickHouse;
use warden_analytics::{Feeder, report, schema};
use warden_core::{
    Actor, AuditEvent, DecisionSummary, EntityRef, NamespacePath, Outcome, PolicyRef, ResourceRef,
    TenantId,
};
use warden_store::usage::{UsageGroupBy, UsageQuery};
use warden_store::{NewEvent, SqliteStore, Store};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn decision(i: usize) -> AuditEvent {
    let agent = format!("agent-{}", i % 100);
    let actor = Actor {
        principal: Some(EntityRef::new("Agent", &agent)),
        agent: Some(agent),
        on_behalf_of: Some(format!("user-{}", i % 1000)),
        session: Some(format!("s-{}", i % 5000)),
        token_id: Some("tok_0192f0c4a3b87d11a0e3c5d2b4f6a718".into()),
        role: Some("agent".into()),
    };
    let tool = format!("server{}__tool{}", i % 10, i % 50);
    let mut e = AuditEvent::new(
        "acme",
        &format!("acme/team{}", i % 20),
        "authz.decision",
        "warden.api",
        actor,
        json!({
            "request": {
                "action": "call_tool",
                "resource": {"type": "Tool", "id": tool, "attributes": {"risk": "low", "categories": ["code"]}},
                "context": {"args": {"repository": "acme/site", "title": "Fix the flaky test in the checkout flow", "labels": ["bug", "ci"], "token": "[REDACTED:hmac-sha256:4f1c2a]"}},
            },
            "evaluated": 7,
        }),
    );
    e.header.action = Some("call_tool".into());
    e.header.resource = Some(ResourceRef {
        resource_type: "Tool".into(),
        id: tool,
    });
    e.header.decision = Some(DecisionSummary {
        outcome: [Outcome::Allow, Outcome::Deny, Outcome::ApprovalRequired][i % 3],
        policies: vec![PolicyRef {
            id: "platform.tools".into(),
            namespace: "acme/platform".into(),
            origin: "acme/platform/tools.cedar".into(),
            line: 3,
            reason: None,
        }],
        obligations: vec![],
        warnings: vec![],
        errors: vec![],
    });
    e.seal();
    e
}

async fn feed(ch: &TestClickHouse) {
    let n = env_usize("WARDEN_BENCH_FEED_EVENTS", 300_000);
    let dir = tempfile::tempdir().unwrap();
    // `WARDEN_BENCH_FEED_STORE=postgres`: feed from a fresh PostgreSQL database instead.
    let pg = std::env::var("WARDEN_BENCH_FEED_STORE").is_ok_and(|v| v == "postgres");
    let kind = if pg { "PostgreSQL" } else { "SQLite" };
    let (store, pg_db): (Arc<dyn Store>, Option<String>) = if pg {
        let (store, name) = pg_store().await;
        (Arc::new(store), Some(name))
    } else {
        let store = SqliteStore::open(&dir.path().join("warden.db"))
            .await
            .unwrap();
        (Arc::new(store), None)
    };
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let batch: Vec<NewEvent> = (i..(i + 5_000).min(n))
            .map(|k| NewEvent {
                event: decision(k),
                dedupe: false,
            })
            .collect();
        i += batch.len();
        store.append_events(&batch).await.unwrap();
    }
    eprintln!(
        "feed: {n} events recorded in {kind} in {:.1?}",
        started.elapsed()
    );

    // The store side alone: read every event in log order and encode it as a row.
    let tenant = TenantId::parse("acme").unwrap();
    let started = Instant::now();
    let (mut at, mut bytes, mut read_time) = (0u64, 0usize, Duration::ZERO);
    loop {
        let t = Instant::now();
        let page = store.outbox_rows(&tenant, at, 20_000).await.unwrap();
        read_time += t.elapsed();
        let Some(last) = page.last() else { break };
        at = last.seq + 1;
        let mut body = Vec::new();
        for e in &page {
            warden_analytics::row::encode("acme", e, &mut body).unwrap();
        }
        bytes += body.len();
    }
    let took = started.elapsed();
    println!(
        "feed: the store side alone (read in log order + encode {} MB of rows): {took:.2?}, of which reading {read_time:.2?}: {:.0} events/s",
        bytes / 1_000_000,
        n as f64 / took.as_secs_f64()
    );

    let mut config = ch.config();
    config.batch = env_usize("WARDEN_BENCH_FEED_BATCH", config.batch);
    let mut feeder = Feeder::new(store.clone(), config).unwrap();
    let started = Instant::now();
    let mut fed = 0;
    loop {
        let k = feeder.pass().await.unwrap();
        if k == 0 {
            break;
        }
        fed += k;
    }
    let took = started.elapsed();
    assert_eq!(fed, n as u64);
    println!(
        "feed: {n} events store ({kind}) -> ClickHouse in {took:.2?}: {:.0} events/s",
        n as f64 / took.as_secs_f64()
    );
    drop(store);
    if let Some(name) = pg_db {
        drop_pg(&name).await;
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn thirty_days() -> (chrono::DateTime<Utc>, chrono::DateTime<Utc>) {
    let to = Utc::now();
    (to - chrono::Duration::days(30), to)
}

async fn report_clickhouse(ch: &TestClickHouse, n: usize) {
    let client = ch.client();
    schema::create(&client, Default::default()).await.unwrap();
    let now = Utc::now().timestamp();
    let started = Instant::now();
    // 90 days of events, newest now; the same columns the feeder fills.
    client
        .execute(&format!(
            "INSERT INTO {table} SELECT \
               'acme' AS tenant, number AS seq, generateUUIDv4() AS id, \
               toDateTime({now} - intDiv(number * 7776000, {n}), 'UTC') AS time, \
               toInt64({now} - intDiv(number * 7776000, {n})) * 1000000 AS time_us, \
               concat('acme/team', toString(number % 20)) AS namespace, \
               'authz.decision' AS event_type, 'warden.api' AS source, \
               concat('Agent::\"agent-', toString(number % 100), '\"') AS principal, \
               concat('agent-', toString(number % 100)) AS agent, \
               concat('user-', toString(number % 1000)) AS user, \
               concat('s-', toString(number % 5000)) AS session, \
               'call_tool' AS action, 'Tool' AS resource_type, \
               concat('server', toString(number % 10), '__tool', toString(number % 50)) AS resource_id, \
               resource_id AS tool, concat('server', toString(number % 10)) AS server, \
               ['allow', 'deny', 'approval_required'][number % 3 + 1] AS outcome, \
               ['platform.tools'] AS policies, \
               '{{\"request\":{{\"action\":\"call_tool\"}},\"evaluated\":7}}' AS payload \
             FROM numbers({n})",
            table = client.table(schema::TABLE),
        ))
        .await
        .unwrap();
    eprintln!(
        "report: {n} events generated in ClickHouse in {:.1?}",
        started.elapsed()
    );
    let tenant = TenantId::parse("acme").unwrap();
    let (from, to) = thirty_days();
    for (label, ns) in [
        ("whole tenant", None),
        ("namespace acme/team7", Some("acme/team7")),
    ] {
        let q = UsageQuery {
            from,
            to,
            namespace: ns.map(|n| NamespacePath::parse(n).unwrap()),
            group_by: UsageGroupBy::Agent,
        };
        let mut times = Vec::new();
        let mut counted = 0;
        for _ in 0..5 {
            let started = Instant::now();
            let rows = report::usage(&client, &tenant, &q).await.unwrap();
            times.push(started.elapsed());
            counted = rows.iter().map(|r| r.total).sum::<u64>();
        }
        println!(
            "report/clickhouse: 30-day usage by agent ({label}) over {n} events ({counted} in the window): median {:.2?} (distinct ids)",
            median(times)
        );
    }
    let rows = client
        .rows(&format!(
            "SELECT count() FROM {} FINAL",
            client.table(schema::TABLE)
        ))
        .await
        .unwrap();
    assert_eq!(as_u64(&rows[0][0]), Some(n as u64));
}

fn pg_admin() -> String {
    std::env::var("WARDEN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh, migrated PostgreSQL database for one benchmark, and its name.
async fn pg_store() -> (warden_store::postgres::PgStore, String) {
    use warden_store::postgres::{PgStore, Schema};
    let admin = pg_admin();
    let name = format!("warden_bench_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let options = sqlx::postgres::PgConnectOptions::from_str(&admin)
        .unwrap()
        .database(&name);
    let store = PgStore::connect_with(options, Schema::Migrate, 4)
        .await
        .unwrap();
    (store, name)
}

async fn drop_pg(name: &str) {
    let mut conn = sqlx::PgConnection::connect(&pg_admin()).await.unwrap();
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await;
}

async fn report_postgres(n: usize) {
    use warden_store::postgres::{PgStore, Schema};
    let admin = std::env::var("WARDEN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("warden_bench_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let options = sqlx::postgres::PgConnectOptions::from_str(&admin)
        .unwrap()
        .database(&name);
    let store = PgStore::connect_with(options, Schema::Migrate, 4)
        .await
        .unwrap();
    let now_us = Utc::now().timestamp_micros();
    let started = Instant::now();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO audit_events (tenant, seq, id, time_us, namespace, event_type, principal, agent, \
           on_behalf_of, session, action, resource_type, resource_id, outcome, header, payload, leaf_hash) \
         SELECT 'acme', g, md5(g::text), {now_us} - (g::bigint * 7776000 / {n}) * 1000000, \
           'acme/team' || (g % 20), 'authz.decision', 'Agent::\"agent-' || (g % 100) || '\"', \
           'agent-' || (g % 100), 'user-' || (g % 1000), 's-' || (g % 5000), 'call_tool', 'Tool', \
           'server' || (g % 10) || '__tool' || (g % 50), \
           (ARRAY['allow','deny','approval_required'])[g % 3 + 1], '{{}}', '{{}}', '\\x00'::bytea \
         FROM generate_series(0, {n} - 1) AS g; ANALYZE audit_events;"
    )))
    .execute(store.pool())
    .await
    .unwrap();
    eprintln!(
        "report: {n} events generated in PostgreSQL in {:.1?}",
        started.elapsed()
    );
    let tenant = TenantId::parse("acme").unwrap();
    let (from, to) = thirty_days();
    let q = UsageQuery {
        from,
        to,
        namespace: None,
        group_by: UsageGroupBy::Agent,
    };
    let mut times = Vec::new();
    let mut counted = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let rows = store.usage_report(&tenant, &q).await.unwrap();
        times.push(started.elapsed());
        counted = rows.iter().map(|r| r.total).sum::<u64>();
    }
    println!(
        "report/postgres: 30-day usage by agent (whole tenant) over {n} events ({counted} in the window): median {:.2?}",
        median(times)
    );
    drop(store);
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await;
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks one part.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let runs = |part: &str| filter.as_deref().is_none_or(|f| part.contains(f));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let n = env_usize("WARDEN_BENCH_REPORT_EVENTS", 10_000_000);
        if runs("feed") {
            let ch = TestClickHouse::new()
                .await
                .expect("ClickHouse for the benchmark");
            feed(&ch).await;
        }
        if runs("report/clickhouse") {
            let ch = TestClickHouse::new()
                .await
                .expect("ClickHouse for the benchmark");
            report_clickhouse(&ch, n).await;
        }
        if runs("report/postgres") && std::env::var("WARDEN_BENCH_POSTGRES").is_ok_and(|v| v == "1")
        {
            report_postgres(n).await;
        }
    });
}
