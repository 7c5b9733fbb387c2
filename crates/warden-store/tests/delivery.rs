//! Delivery state in the store, on SQLite and PostgreSQL (the same tests on each):
//! destinations per tenant, the cursor that only the lease holder moves (compare and set),
//! leases taken over once expired, dead letters written with the cursor move, and removal.

#[macro_use]
mod common;

use std::sync::Arc;

use chrono::{Duration, Utc};
use common::{Backend, TestDb};
use serde_json::json;
use warden_core::{Actor, AuditEvent, TenantId};
use warden_store::{
    DeadLetterBatch, DeliveryStart, LeaseKey, NewDeadLetter, NewEvent, Store, StoredDestination,
};

fn tenant(t: &str) -> TenantId {
    TenantId::parse(t).unwrap()
}

async fn store(b: Backend) -> (TestDb, Arc<dyn Store>) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    (db, store)
}

fn destination(t: &str, name: &str) -> StoredDestination {
    let now = Utc::now();
    StoredDestination {
        tenant: tenant(t),
        name: name.into(),
        spec: json!({"name": name, "kind": "webhook", "url": "http://127.0.0.1:9/h", "secret": "env:S"}),
        origin: "api".into(),
        created_at: now,
        updated_at: now,
    }
}

async fn destinations_are_per_tenant(b: Backend) {
    let (_db, s) = store(b).await;
    assert_eq!(
        s.put_destination(&destination("acme", "siem"))
            .await
            .unwrap(),
        None
    );
    s.put_destination(&destination("globex", "siem"))
        .await
        .unwrap();
    let mut changed = destination("acme", "siem");
    changed.spec["url"] = json!("http://127.0.0.1:9/other");
    let before = s.put_destination(&changed).await.unwrap().unwrap();
    assert_eq!(before.spec["url"], "http://127.0.0.1:9/h");
    let acme = s.list_destinations(Some(&tenant("acme"))).await.unwrap();
    assert_eq!(acme.len(), 1);
    assert_eq!(acme[0].spec["url"], "http://127.0.0.1:9/other");
    assert_eq!(s.list_destinations(None).await.unwrap().len(), 2);
    assert!(
        s.get_destination(&tenant("initech"), "siem")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.delete_destination(&tenant("acme"), "siem")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        s.delete_destination(&tenant("acme"), "siem")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.get_destination(&tenant("globex"), "siem")
            .await
            .unwrap()
            .is_some(),
        "the other tenant's stays"
    );
}

async fn only_the_lease_holder_moves_the_cursor(b: Backend) {
    let (_db, s) = store(b).await;
    let t = tenant("acme");
    let now = Utc::now();
    let ghost = LeaseKey {
        tenant: &t,
        destination: "ghost",
        owner: "node-a",
    };
    assert!(
        !s.acquire_delivery_lease(&ghost, now, now + Duration::seconds(30))
            .await
            .unwrap(),
        "no lease on a destination that does not exist"
    );
    s.put_destination(&destination("acme", "siem"))
        .await
        .unwrap();
    let a = LeaseKey {
        tenant: &t,
        destination: "siem",
        owner: "node-a",
    };
    let bk = LeaseKey {
        tenant: &t,
        destination: "siem",
        owner: "node-b",
    };
    assert!(
        s.acquire_delivery_lease(&a, now, now + Duration::seconds(30))
            .await
            .unwrap()
    );
    assert!(
        !s.acquire_delivery_lease(&bk, now, now + Duration::seconds(30))
            .await
            .unwrap(),
        "held by a"
    );
    assert!(
        s.acquire_delivery_lease(&a, now, now + Duration::seconds(30))
            .await
            .unwrap(),
        "renewal"
    );
    assert!(s.advance_delivery_cursor(&a, 0, 10).await.unwrap());
    assert!(
        !s.advance_delivery_cursor(&a, 0, 20).await.unwrap(),
        "the cursor is no longer at 0"
    );
    assert!(
        !s.advance_delivery_cursor(&bk, 10, 20).await.unwrap(),
        "b holds no lease"
    );
    // a stops renewing; once its lease has expired, b takes over and a can no longer write.
    let later = now + Duration::seconds(31);
    assert!(
        s.acquire_delivery_lease(&bk, later, later + Duration::seconds(30))
            .await
            .unwrap()
    );
    assert!(
        !s.advance_delivery_cursor(&a, 10, 20).await.unwrap(),
        "a lost its lease"
    );
    assert!(s.advance_delivery_cursor(&bk, 10, 20).await.unwrap());
    let st = s.delivery_state(&t, "siem").await.unwrap();
    assert_eq!(
        (st.next_seq, st.lease_owner.as_deref()),
        (20, Some("node-b"))
    );
    s.record_delivery_status(&bk, "open", Some("the receiver answered 500"))
        .await
        .unwrap();
    s.record_delivery_status(&bk, "closed", None).await.unwrap();
    let st = s.delivery_state(&t, "siem").await.unwrap();
    assert_eq!(st.circuit, "closed");
    assert_eq!(
        st.last_error.as_deref(),
        Some("the receiver answered 500"),
        "kept until the next error"
    );
    // A release lets a take it at once.
    s.release_delivery_lease(&bk).await.unwrap();
    assert!(
        s.acquire_delivery_lease(&a, now, now + Duration::seconds(30))
            .await
            .unwrap()
    );
    // Another tenant's destination of the same name is another cursor.
    let g = tenant("globex");
    assert_eq!(s.delivery_state(&g, "siem").await.unwrap().next_seq, 0);
    eprintln!(
        "cursor at {} after takeover; other tenant at 0",
        st.next_seq
    );
}

async fn dead_letters_move_with_the_cursor_and_replay_removes_them(b: Backend) {
    let (_db, s) = store(b).await;
    let t = tenant("acme");
    s.put_destination(&destination("acme", "siem"))
        .await
        .unwrap();
    let now = Utc::now();
    let a = LeaseKey {
        tenant: &t,
        destination: "siem",
        owner: "node-a",
    };
    assert!(
        s.acquire_delivery_lease(&a, now, now + Duration::seconds(30))
            .await
            .unwrap()
    );
    let letters: Vec<NewDeadLetter> = (0..5)
        .map(|i| NewDeadLetter {
            seq: i,
            event_id: format!("ev-{i}"),
        })
        .collect();
    let record = event("acme", "destination.dead_lettered");
    let batch = |from| DeadLetterBatch {
        from,
        to: 5,
        letters: &letters,
        attempts: 4,
        error: "boom",
        record: Some(&record),
    };
    assert!(
        !s.dead_letter(&a, &batch(3)).await.unwrap(),
        "cursor is at 0, not 3"
    );
    assert_eq!(
        s.delivery_state(&t, "siem").await.unwrap().dead_letters,
        0,
        "nothing written"
    );
    assert_eq!(
        s.merkle_head(&t).await.unwrap().size,
        0,
        "no record of a batch that was not dead-lettered"
    );
    assert!(s.dead_letter(&a, &batch(0)).await.unwrap());
    let st = s.delivery_state(&t, "siem").await.unwrap();
    assert_eq!((st.next_seq, st.dead_letters), (5, 5));
    let logged = s.events_in_order(&t, 0, 10).await.unwrap();
    assert_eq!(
        logged.len(),
        1,
        "the record is committed with the dead letters"
    );
    assert_eq!(logged[0].event.header.id, record.header.id);
    let other = event("globex", "destination.dead_lettered");
    assert!(
        s.dead_letter(
            &a,
            &DeadLetterBatch {
                from: 5,
                to: 6,
                letters: &[],
                attempts: 1,
                error: "x",
                record: Some(&other),
            }
        )
        .await
        .is_err(),
        "a record of another tenant is refused"
    );
    assert_eq!(s.delivery_state(&t, "siem").await.unwrap().next_seq, 5);
    let page = s.dead_letters(&t, "siem", None, 2).await.unwrap();
    assert_eq!(page.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!((page[0].attempts, page[0].error.as_str()), (4, "boom"));
    let page = s.dead_letters(&t, "siem", Some(1), 10).await.unwrap();
    assert_eq!(page.len(), 3);
    assert!(
        s.dead_letters(&tenant("globex"), "siem", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.remove_dead_letters(&t, "siem", &[0, 1, 9]).await.unwrap(),
        2
    );
    assert_eq!(s.delivery_state(&t, "siem").await.unwrap().dead_letters, 3);
    // Removing the destination removes its state and dead letters.
    s.delete_destination(&t, "siem").await.unwrap();
    let st = s.delivery_state(&t, "siem").await.unwrap();
    assert_eq!((st.next_seq, st.dead_letters, st.lease_owner), (0, 0, None));
    eprintln!("dead-lettered 5, removed 2, 3 left, all gone with the destination");
}

fn event(t: &str, event_type: &str) -> AuditEvent {
    AuditEvent::new(t, t, event_type, "test", Actor::default(), json!({}))
}

async fn append(s: &Arc<dyn Store>, t: &str, n: usize) {
    let batch: Vec<NewEvent> = (0..n)
        .map(|_| NewEvent {
            event: event(t, "authz.decision"),
            dedupe: false,
        })
        .collect();
    s.append_events(&batch).await.unwrap();
}

async fn a_new_destination_starts_at_the_beginning_or_now(b: Backend) {
    let (_db, s) = store(b).await;
    let t = tenant("acme");
    append(&s, "acme", 7).await;
    append(&s, "globex", 3).await;
    assert!(
        s.create_destination(&destination("acme", "history"), DeliveryStart::Beginning)
            .await
            .unwrap()
    );
    assert!(
        s.create_destination(&destination("acme", "fresh"), DeliveryStart::Now)
            .await
            .unwrap()
    );
    assert!(
        s.create_destination(&destination("initech", "fresh"), DeliveryStart::Now)
            .await
            .unwrap(),
        "a tenant without a log starts at 0"
    );
    assert_eq!(s.delivery_state(&t, "history").await.unwrap().next_seq, 0);
    assert_eq!(
        s.delivery_state(&t, "fresh").await.unwrap().next_seq,
        7,
        "after the tenant's own head, not another tenant's"
    );
    assert_eq!(
        s.delivery_state(&tenant("initech"), "fresh")
            .await
            .unwrap()
            .next_seq,
        0
    );
    // A name that is taken: nothing written, the cursor stays where it is.
    let mut again = destination("acme", "history");
    again.spec["url"] = json!("http://127.0.0.1:9/other");
    assert!(
        !s.create_destination(&again, DeliveryStart::Now)
            .await
            .unwrap()
    );
    let kept = s.get_destination(&t, "history").await.unwrap().unwrap();
    assert_eq!(kept.spec["url"], "http://127.0.0.1:9/h");
    assert_eq!(s.delivery_state(&t, "history").await.unwrap().next_seq, 0);
    // The node that takes the lease keeps the cursor it finds.
    append(&s, "acme", 2).await;
    let now = Utc::now();
    let k = LeaseKey {
        tenant: &t,
        destination: "fresh",
        owner: "node-a",
    };
    assert!(
        s.acquire_delivery_lease(&k, now, now + Duration::seconds(30))
            .await
            .unwrap()
    );
    let st = s.delivery_state(&t, "fresh").await.unwrap();
    assert_eq!(
        (st.next_seq, st.lease_owner.as_deref()),
        (7, Some("node-a"))
    );
    let next = s.events_in_order(&t, st.next_seq, 100).await.unwrap();
    assert_eq!(
        next.len(),
        2,
        "exactly the events recorded after the creation"
    );
    eprintln!("beginning at 0, now at 7 of 9; the 2 later events are next");
}

on_both_backends!(
    a_new_destination_starts_at_the_beginning_or_now,
    destinations_are_per_tenant,
    only_the_lease_holder_moves_the_cursor,
    dead_letters_move_with_the_cursor_and_replay_removes_them,
);
