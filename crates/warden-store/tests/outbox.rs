//! The audit log read as an outbox, on SQLite and PostgreSQL: the same events, columns and
//! texts as `events_in_order`, in log order, one tenant only.

#[macro_use]
mod common;

use serde_json::json;
use warden_core::{Actor, AuditEvent, TenantId};
use warden_store::NewEvent;
use warden_store::outbox::by_events;

use common::{Backend, TestDb};

fn event(tenant: &str, namespace: &str, i: usize) -> NewEvent {
    NewEvent {
        event: AuditEvent::new(
            tenant,
            namespace,
            "authz.decision",
            "warden.api",
            Actor {
                agent: Some(format!("agent-{i}")),
                ..Actor::default()
            },
            // Text beyond ASCII, as payloads carry it.
            json!({"i": i, "note": "naïve café ✓ 数据"}),
        ),
        dedupe: false,
    }
}

async fn outbox_rows_match_the_log(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let batch: Vec<NewEvent> = (0..30)
        .map(|i| {
            if i % 3 == 0 {
                event("globex", "globex", i)
            } else {
                event("acme", "acme/platform", i)
            }
        })
        .collect();
    store.append_events(&batch).await.unwrap();
    let acme = TenantId::parse("acme").unwrap();
    // Purged payloads (NULL) read as such.
    store
        .apply_retention_ranges(&acme, &[[6, 8]], &[], &[])
        .await
        .unwrap();
    let rows = store.outbox_rows(&acme, 5, 100).await.unwrap();
    let expected = by_events(store.as_ref(), &acme, 5, 100).await.unwrap();
    assert_eq!(rows.len(), 15);
    assert_eq!(rows.len(), expected.len());
    for (r, e) in rows.iter().zip(&expected) {
        assert_eq!(r.seq, e.seq);
        assert_eq!(r.columns, e.columns);
        assert_eq!(r.header, e.header);
        assert_eq!(r.payload, e.payload);
    }
    assert_eq!(rows.first().unwrap().seq, 5);
    let purged: Vec<u64> = rows
        .iter()
        .filter(|r| r.payload.is_none())
        .map(|r| r.seq)
        .collect();
    assert_eq!(purged, [6, 7, 8]);
    assert!(
        rows[0]
            .payload
            .as_deref()
            .unwrap()
            .contains("naïve café ✓ 数据")
    );
    assert!(rows.iter().all(|r| r.columns.principal.is_none()));
    assert!(rows.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    assert!(rows.iter().all(|r| r.columns.namespace == "acme/platform"));
    assert_eq!(store.outbox_rows(&acme, 0, 3).await.unwrap().len(), 3);
}

/// Pages as large as the feeder's (PostgreSQL reads those as two ranges at once), over a log
/// with a hole that retention cut: read page after page, each row comes once, in log order,
/// and nothing is left out.
async fn large_pages_read_the_whole_log_once(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let acme = TenantId::parse("acme").unwrap();
    for chunk in 0..10 {
        let batch: Vec<NewEvent> = (0..1_000)
            .map(|i| event("acme", "acme", chunk * 1_000 + i))
            .collect();
        store.append_events(&batch).await.unwrap();
    }
    store
        .append_events(&[event("globex", "globex", 0)])
        .await
        .unwrap();
    // Rows 100..=1099 deleted: the first half of a page read from 0 has a hole.
    store
        .apply_retention_ranges(&acme, &[], &[[100, 1_099]], &[])
        .await
        .unwrap();
    let expected: Vec<u64> = (0..100).chain(1_100..10_000).collect();

    let mut seen = Vec::new();
    let mut at = 0;
    loop {
        let page = store.outbox_rows(&acme, at, 6_000).await.unwrap();
        assert!(page.len() <= 6_000);
        let Some(last) = page.last() else { break };
        at = last.seq + 1;
        seen.extend(page.iter().map(|r| r.seq));
    }
    assert_eq!(seen, expected);

    // A page from the middle is the log from there, whole up to its end.
    let page = store.outbox_rows(&acme, 5_000, 6_000).await.unwrap();
    let seqs: Vec<u64> = page.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (5_000..10_000).collect::<Vec<u64>>());
    let same = by_events(store.as_ref(), &acme, 5_000, 6_000)
        .await
        .unwrap();
    for (r, e) in page.iter().zip(&same) {
        assert_eq!(
            (r.seq, &r.columns, &r.header),
            (e.seq, &e.columns, &e.header)
        );
    }
    assert_eq!(page.len(), same.len());
}

on_both_backends!(
    outbox_rows_match_the_log,
    large_pages_read_the_whole_log_once
);
