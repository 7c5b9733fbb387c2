//! PostgreSQL only: the audit table is partitioned by month; the coming months' partitions
//! exist as soon as a store connects, an event lands in its month's partition, and an event of
//! a month without one lands in the default partition instead of failing.

mod common;

use chrono::{Datelike, Months, TimeZone, Utc};
use serde_json::json;
use sqlx::Row;
use warden_core::{Actor, AuditEvent};
use warden_store::postgres::{PARTITION_MONTHS_AHEAD, PgStore, Schema};
use warden_store::{NewEvent, Store};

use common::PgDatabase;

fn partition_of(t: chrono::DateTime<Utc>) -> String {
    format!("audit_events_{:04}{:02}", t.year(), t.month())
}

#[tokio::test]
async fn months_ahead_have_partitions_and_strays_go_to_the_default() {
    let db = PgDatabase::create().await;
    let s = PgStore::connect_with(db.options(), Schema::Migrate, 4)
        .await
        .unwrap();
    let parts: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'audit_events'::regclass ORDER BY 1",
    )
    .fetch_all(s.pool())
    .await
    .unwrap();
    let this_month = Utc::now().with_day(1).unwrap();
    let mut expected: Vec<String> = (0..=PARTITION_MONTHS_AHEAD as u32)
        .map(|m| partition_of(this_month.checked_add_months(Months::new(m)).unwrap()))
        .collect();
    expected.push("audit_events_default".into());
    expected.sort();
    assert_eq!(parts, expected);

    // Connecting again (another node starting) creates nothing twice.
    let again: i32 = sqlx::query_scalar("SELECT warden_create_audit_partitions($1)")
        .bind(PARTITION_MONTHS_AHEAD)
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(again, 0);

    let now = AuditEvent::new(
        "acme",
        "acme",
        "authz.decision",
        "t",
        Actor::default(),
        json!({}),
    );
    let mut old = now.clone();
    old.header.id = uuid::Uuid::now_v7();
    old.header.time = Utc.with_ymd_and_hms(2001, 2, 3, 4, 5, 6).unwrap();
    s.append_events(&[
        NewEvent {
            event: now.clone(),
            dedupe: false,
        },
        NewEvent {
            event: old.clone(),
            dedupe: false,
        },
    ])
    .await
    .unwrap();
    let rows =
        sqlx::query("SELECT tableoid::regclass::text AS part, id FROM audit_events ORDER BY seq")
            .fetch_all(s.pool())
            .await
            .unwrap();
    let placed: Vec<(String, String)> = rows.iter().map(|r| (r.get("part"), r.get("id"))).collect();
    assert_eq!(
        placed,
        vec![
            (partition_of(now.header.time), now.header.id.to_string()),
            ("audit_events_default".into(), old.header.id.to_string()),
        ]
    );
}

/// Headers and payloads are compressed with lz4, not PostgreSQL's slower default: on the
/// partition that existed when the migration ran (the default one), on the monthly ones
/// created after it, and so on a long event as it is written.
#[tokio::test]
async fn long_columns_are_compressed_with_lz4() {
    let db = PgDatabase::create().await;
    let s = PgStore::connect_with(db.options(), Schema::Migrate, 2)
        .await
        .unwrap();
    let methods: Vec<(String, String, String)> = sqlx::query(
        "SELECT c.relname::text AS rel, a.attname::text AS col, a.attcompression::text AS m \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
         WHERE a.attname IN ('header', 'payload') AND (c.relname = 'audit_events' OR c.oid IN \
           (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'audit_events'::regclass)) \
         ORDER BY 1, 2",
    )
    .fetch_all(s.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("rel"), r.get("col"), r.get("m")))
    .collect();
    // The parent, the default partition and every month ahead, two columns each.
    assert_eq!(methods.len(), 2 * (PARTITION_MONTHS_AHEAD as usize + 3));
    for (rel, col, m) in &methods {
        assert_eq!(m, "l", "{rel}.{col} is not compressed with lz4");
    }

    let e = AuditEvent::new(
        "acme",
        "acme",
        "authz.decision",
        "t",
        Actor::default(),
        json!({ "text": "the same words again and again ".repeat(200) }),
    );
    s.append_events(&[NewEvent {
        event: e.clone(),
        dedupe: false,
    }])
    .await
    .unwrap();
    let used: Option<String> =
        sqlx::query_scalar("SELECT pg_column_compression(payload) FROM audit_events WHERE id = $1")
            .bind(e.header.id.to_string())
            .fetch_one(s.pool())
            .await
            .unwrap();
    assert_eq!(used.as_deref(), Some("lz4"));
    let back = s
        .get_event(
            &warden_core::TenantId::parse("acme").unwrap(),
            &e.header.id.to_string(),
        )
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(back.event.payload, e.payload);
}

#[tokio::test]
async fn a_node_that_may_not_migrate_refuses_an_old_schema() {
    let db = PgDatabase::create().await;
    let e = match PgStore::connect_with(db.options(), Schema::RequireCurrent, 2).await {
        Ok(_) => panic!("an empty database was accepted without migrations"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("not migrated") && e.contains("warden migrate"),
        "{e}"
    );
    PgStore::connect_with(db.options(), Schema::Migrate, 2)
        .await
        .unwrap();
    PgStore::connect_with(db.options(), Schema::RequireCurrent, 2)
        .await
        .unwrap();
}

/// A past month's partition goes once retention has removed every tenant's events from it;
/// a month where one tenant still keeps an event stays, and so does the current month.
#[tokio::test]
async fn retention_drops_the_partitions_it_emptied() {
    use std::sync::Arc;
    use warden_core::NamespacePath;
    use warden_core::TenantId;
    use warden_core::retention::RetentionRule;

    let db = PgDatabase::create().await;
    let pg = PgStore::connect_with(db.options(), Schema::Migrate, 4)
        .await
        .unwrap();
    let now = Utc::now();
    let this_month = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .unwrap();
    // Two past months with partitions of their own, as a deployment running since then has.
    let months: Vec<chrono::DateTime<Utc>> = [4, 3]
        .iter()
        .map(|m| this_month.checked_sub_months(Months::new(*m)).unwrap())
        .collect();
    for m in &months {
        let end = m.checked_add_months(Months::new(1)).unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {} PARTITION OF audit_events FOR VALUES FROM ({}) TO ({})",
            partition_of(*m),
            m.timestamp_micros(),
            end.timestamp_micros()
        )))
        .execute(pg.pool())
        .await
        .unwrap();
    }
    let pool = pg.pool().clone();
    let s: Arc<dyn Store> = Arc::new(pg);
    let event = |tenant: &str, at: chrono::DateTime<Utc>| {
        let mut e = AuditEvent::new(
            tenant,
            tenant,
            "authz.decision",
            "t",
            Actor::default(),
            json!({}),
        );
        e.header.time = at;
        NewEvent {
            event: e,
            dedupe: false,
        }
    };
    let day = chrono::Duration::days(1);
    s.append_events(&[
        // Oldest month: only acme, whose headers expire after 30 days.
        event("acme", months[0] + day),
        // Next month: acme and globex, which keeps everything.
        event("acme", months[1] + day),
        event("globex", months[1] + day),
        event("acme", now),
    ])
    .await
    .unwrap();
    s.put_retention_rule(&RetentionRule {
        tenant: TenantId::parse("acme").unwrap(),
        namespace: NamespacePath::parse("acme").unwrap(),
        payload_days: None,
        header_days: Some(30),
        updated_by: "test".into(),
        updated_at: now,
    })
    .await
    .unwrap();

    let out = warden_store::retention::apply_all(s.as_ref(), now, "warden.cli", &Actor::default())
        .await
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].headers_deleted, 2);

    let parts: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'audit_events'::regclass ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        !parts.contains(&partition_of(months[0])),
        "the emptied month is still there: {parts:?}"
    );
    assert!(parts.contains(&partition_of(months[1])), "{parts:?}");
    assert!(parts.contains(&partition_of(now)), "{parts:?}");
    assert!(parts.contains(&"audit_events_default".to_owned()));

    // globex's event is still there and acme's log still verifies its expired leaves.
    let globex = s
        .events_in_order(&TenantId::parse("globex").unwrap(), 0, 10)
        .await
        .unwrap();
    assert_eq!(globex.len(), 1);
    // An event of the dropped month arriving late lands in the default partition.
    s.append_events(&[event("acme", months[0] + day * 2)])
        .await
        .unwrap();
    let part: String = sqlx::query_scalar(
        "SELECT tableoid::regclass::text FROM audit_events WHERE tenant = 'acme' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(part, "audit_events_default");
}
