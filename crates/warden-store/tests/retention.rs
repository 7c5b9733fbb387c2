//! Retention on SQLite and PostgreSQL: the most specific rule decides, a legal hold keeps
//! what it covers, a run purges payloads and deletes rows past their time and counts them,
//! records itself before it removes anything, keeps the Merkle tree whole, and touches only
//! its own tenant.

#[macro_use]
mod common;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use warden_audit::merkle::{CompactRange, root_from_leaves};
use warden_core::retention::{LegalHold, RetentionRecord, RetentionRule};
use warden_core::{Actor, AuditEvent, NamespacePath, TenantId, catalog};
use warden_store::retention::apply_tenant;
use warden_store::{EventFilter, NewEvent, PageRequest, Store};

use common::{Backend, TestDb};

fn tenant(t: &str) -> TenantId {
    TenantId::parse(t).unwrap()
}

fn ns(n: &str) -> NamespacePath {
    NamespacePath::parse(n).unwrap()
}

/// An event `days` days old: test-only backdating, through the store, not the API.
fn old_event(namespace: &str, days: i64, now: DateTime<Utc>) -> NewEvent {
    let t = namespace.split('/').next().unwrap();
    let mut e = AuditEvent::new(
        t,
        namespace,
        "authz.decision",
        "warden.api",
        Actor::default(),
        json!({"secret_detail": format!("{namespace} {days}")}),
    );
    e.header.time = now - Duration::days(days);
    NewEvent {
        event: e,
        dedupe: false,
    }
}

fn rule(t: &str, n: &str, p: Option<u32>, h: Option<u32>) -> RetentionRule {
    RetentionRule {
        tenant: tenant(t),
        namespace: ns(n),
        payload_days: p,
        header_days: h,
        updated_by: "test".into(),
        updated_at: Utc::now(),
    }
}

/// (seq, namespace, payload present) of every remaining row.
async fn rows(s: &Arc<dyn Store>, t: &TenantId) -> Vec<(u64, String, bool)> {
    s.events_in_order(t, 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, e.event.header.namespace, e.payload_json.is_some()))
        .collect()
}

/// Rows and kept leaves together still make the tree the head describes.
async fn assert_tree_whole(s: &Arc<dyn Store>, t: &TenantId) {
    let head = s.merkle_head(t).await.unwrap();
    let mut leaves: Vec<(u64, [u8; 32])> = s
        .events_in_order(t, 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, e.leaf_hash))
        .collect();
    leaves.extend(s.expired_leaves(t, 0, 10_000).await.unwrap());
    leaves.sort_by_key(|l| l.0);
    let seqs: Vec<u64> = leaves.iter().map(|l| l.0).collect();
    assert_eq!(
        seqs,
        (0..head.size).collect::<Vec<_>>(),
        "every position once"
    );
    let hashes: Vec<[u8; 32]> = leaves.iter().map(|l| l.1).collect();
    let range = CompactRange::from_frontier(head.size, head.frontier).unwrap();
    assert_eq!(range.root(), root_from_leaves(&hashes));
    // Inclusion-proof nodes over deleted leaves still compute.
    let ids: Vec<_> = (0..head.size / 2)
        .map(|i| warden_audit::merkle::NodeId::new(1, i))
        .collect();
    s.merkle_nodes(t, &ids).await.unwrap();
}

async fn rules_holds_and_purge(b: Backend) {
    let db = TestDb::new(b).await;
    let s = db.open().await;
    let acme = tenant("acme");
    let now = Utc::now();
    // seq: 0 acme/dev 400d, 1 acme/dev 40d, 2 acme/dev 1d, 3 acme/hr 40d, 4 acme/hr 400d,
    //      5 acme/legal 400d (held), 6 acme/keep 400d (rule without days: forever)
    let batch = vec![
        old_event("acme/dev", 400, now),
        old_event("acme/dev", 40, now),
        old_event("acme/dev", 1, now),
        old_event("acme/hr", 40, now),
        old_event("acme/hr", 400, now),
        old_event("acme/legal", 400, now),
        old_event("acme/keep", 400, now),
    ];
    s.append_events(&batch).await.unwrap();
    s.append_events(&[old_event("other/dev", 400, now)])
        .await
        .unwrap();

    assert!(
        s.put_retention_rule(&rule("acme", "acme", Some(30), Some(365)))
            .await
            .unwrap()
            .is_none()
    );
    // acme/hr keeps payloads 60 days and headers forever: the more specific rule wins.
    s.put_retention_rule(&rule("acme", "acme/hr", Some(60), None))
        .await
        .unwrap();
    s.put_retention_rule(&rule("acme", "acme/keep", None, None))
        .await
        .unwrap();
    let replaced = s
        .put_retention_rule(&rule("acme", "acme/hr", Some(50), None))
        .await
        .unwrap()
        .expect("replaces the earlier acme/hr rule");
    assert_eq!(replaced.payload_days, Some(60));
    assert_eq!(s.retention_rules(&acme).await.unwrap().len(), 3);
    assert!(
        s.retention_rules(&tenant("other"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.retention_tenants().await.unwrap(), vec![acme.clone()]);

    let hold = LegalHold {
        id: uuid::Uuid::now_v7(),
        tenant: acme.clone(),
        namespace: Some(ns("acme/legal")),
        from: None,
        to: Some(now - Duration::days(100)),
        reason: "case 42".into(),
        created_by: "test".into(),
        created_at: now,
        released_by: None,
        released_reason: None,
        released_at: None,
    };
    s.place_legal_hold(&hold).await.unwrap();

    let actor = Actor::default();
    let out = apply_tenant(s.as_ref(), &acme, now, "warden.cli", &actor)
        .await
        .unwrap();
    // Deleted: seq 0 and 4 (past 365 days; acme/hr's rule keeps headers forever, so 4 is
    // only purged). Purged: 1 (acme 30d) and 4 (acme/hr 50d). 3 (acme/hr, 40 < 50) kept.
    assert_eq!(out.headers_deleted, 1, "{out:?}");
    assert_eq!(out.payloads_purged, 2, "{out:?}");
    assert_eq!(out.blocked_by_holds.len(), 1);
    assert_eq!(out.blocked_by_holds[0].hold, hold.id);
    assert_eq!(out.blocked_by_holds[0].events, 1);
    let event_seq = out.event_seq.unwrap();
    assert_eq!(event_seq, 7);

    let got = rows(&s, &acme).await;
    let expect = vec![
        (1, "acme/dev".to_string(), false),
        (2, "acme/dev".to_string(), true),
        (3, "acme/hr".to_string(), true),
        (4, "acme/hr".to_string(), false),
        (5, "acme/legal".to_string(), true),
        (6, "acme/keep".to_string(), true),
        (7, "acme".to_string(), true),
    ];
    assert_eq!(got, expect);
    assert_tree_whole(&s, &acme).await;

    // The run recorded itself, with the ranges it removed.
    let recs = s
        .query_events(
            &acme,
            &EventFilter {
                event_type: Some(catalog::AUDIT_RETENTION_APPLIED.into()),
                ..Default::default()
            },
            PageRequest {
                after_seq: None,
                limit: 10,
                oldest_first: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(recs.len(), 1);
    let rec: RetentionRecord =
        serde_json::from_str(recs[0].payload_json.as_deref().unwrap()).unwrap();
    assert_eq!(rec.deleted_ranges, vec![[0, 0]]);
    assert_eq!(rec.purged_ranges, vec![[1, 1], [4, 4]]);
    assert_eq!((rec.payloads_purged, rec.headers_deleted), (2, 1));

    // The other tenant is untouched.
    assert_eq!(
        rows(&s, &tenant("other")).await,
        vec![(0, "other/dev".into(), true)]
    );

    // A second run removes nothing more; the record itself is never removed.
    let again = apply_tenant(
        s.as_ref(),
        &acme,
        now + Duration::days(1000),
        "warden.cli",
        &actor,
    )
    .await
    .unwrap();
    assert_eq!(again.payloads_purged, 1, "acme/hr keeps headers: {again:?}");
    // 1, 2, 3 (acme/hr keeps headers), 6 kept forever; 1 and 2 past 365 days now.
    assert_eq!(again.headers_deleted, 2, "{again:?}");
    let kept: Vec<u64> = rows(&s, &acme).await.iter().map(|r| r.0).collect();
    assert_eq!(kept, vec![3, 4, 5, 6, 7, 8]);

    // Released, the hold no longer protects seq 5.
    let released = s
        .release_legal_hold(&acme, hold.id, "test", "case closed", now)
        .await
        .unwrap()
        .unwrap();
    assert!(!released.is_active());
    assert!(
        s.release_legal_hold(&acme, hold.id, "test", "again", now)
            .await
            .is_err()
    );
    assert!(
        s.release_legal_hold(&tenant("other"), hold.id, "test", "x", now)
            .await
            .unwrap()
            .is_none()
    );
    let last = apply_tenant(s.as_ref(), &acme, now, "warden.cli", &actor)
        .await
        .unwrap();
    assert_eq!(last.headers_deleted, 1, "{last:?}");
    assert!(last.blocked_by_holds.is_empty());
    assert_tree_whole(&s, &acme).await;

    assert!(
        s.delete_retention_rule(&acme, &ns("acme/keep"))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        s.delete_retention_rule(&acme, &ns("acme/keep"))
            .await
            .unwrap()
            .is_none()
    );
}

async fn a_hold_placed_after_planning_stops_the_run(b: Backend) {
    let db = TestDb::new(b).await;
    let s = db.open().await;
    let acme = tenant("acme");
    let now = Utc::now();
    s.append_events(&[old_event("acme/dev", 400, now)])
        .await
        .unwrap();
    let hold = LegalHold {
        id: uuid::Uuid::now_v7(),
        tenant: acme.clone(),
        namespace: None,
        from: None,
        to: None,
        reason: "everything".into(),
        created_by: "test".into(),
        created_at: now,
        released_by: None,
        released_reason: None,
        released_at: None,
    };
    s.place_legal_hold(&hold).await.unwrap();
    // Planned without the hold: refused, nothing removed.
    let err = s
        .apply_retention_ranges(&acme, &[], &[[0, 0]], &[])
        .await
        .unwrap_err();
    assert!(matches!(err, warden_core::Error::Conflict(_)), "{err:?}");
    assert_eq!(rows(&s, &acme).await.len(), 1);
    assert!(s.legal_holds(&tenant("other")).await.unwrap().is_empty());
    let holds = s.legal_holds(&acme).await.unwrap();
    assert_eq!(holds.len(), 1);
    assert_eq!(
        (holds[0].id, holds[0].reason.as_str()),
        (hold.id, "everything")
    );
    assert!(holds[0].is_active());
}

on_both_backends!(
    rules_holds_and_purge,
    a_hold_placed_after_planning_stops_the_run
);
