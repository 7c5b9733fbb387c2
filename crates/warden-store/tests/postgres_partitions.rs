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
