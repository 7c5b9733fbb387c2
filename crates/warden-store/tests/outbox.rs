//! The audit log read as an outbox, on SQLite and PostgreSQL: the same events, columns and
//! texts as `events_in_order`, in log order, one tenant only.

#[macro_use]
mod common;

use serde_json::json;
use warden_core::{Actor, AuditEvent, TenantId};
use warden_store::NewEvent;
use warden_store::outbox::by_events;

use common::{Backend, TestDb};

async fn outbox_rows_match_the_log(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let batch: Vec<NewEvent> = (0..30)
        .map(|i| NewEvent {
            event: AuditEvent::new(
                if i % 3 == 0 { "globex" } else { "acme" },
                if i % 3 == 0 {
                    "globex"
                } else {
                    "acme/platform"
                },
                "authz.decision",
                "warden.api",
                Actor {
                    agent: Some(format!("agent-{i}")),
                    ..Actor::default()
                },
                json!({"i": i}),
            ),
            dedupe: false,
        })
        .collect();
    store.append_events(&batch).await.unwrap();
    let acme = TenantId::parse("acme").unwrap();
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
    assert!(rows.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    assert!(rows.iter().all(|r| r.columns.namespace == "acme/platform"));
    assert_eq!(store.outbox_rows(&acme, 0, 3).await.unwrap().len(), 3);
}

on_both_backends!(outbox_rows_match_the_log);
