//! Named leases in the store, on SQLite and PostgreSQL (the same tests on each): taken when
//! free, renewed by their holder, refused to another owner until they expire, taken over once
//! expired, released only by their holder, and kept apart by name.

#[macro_use]
mod common;

use chrono::{Duration, Utc};
use common::{Backend, TestDb};

const NAME: &str = "analytics.feeder";

async fn a_lease_has_one_holder_until_it_expires(b: Backend) {
    let db = TestDb::new(b).await;
    // Two handles on one database, as two nodes have.
    let (one, two) = (db.open().await, db.open().await);
    let t0 = Utc::now();
    let ttl = Duration::seconds(30);

    assert!(
        one.acquire_lease(NAME, "node-a", t0, t0 + ttl)
            .await
            .unwrap()
    );
    // Renewed by its holder, before and after its expiry.
    let t1 = t0 + Duration::seconds(10);
    assert!(
        one.acquire_lease(NAME, "node-a", t1, t1 + ttl)
            .await
            .unwrap()
    );
    // Refused to another owner while it runs (it now runs until t1 + ttl).
    let t2 = t0 + Duration::seconds(35);
    assert!(
        !two.acquire_lease(NAME, "node-b", t2, t2 + ttl)
            .await
            .unwrap()
    );
    // Another name is another lease.
    assert!(
        two.acquire_lease("other.work", "node-b", t2, t2 + ttl)
            .await
            .unwrap()
    );
    // Taken over once expired; the old holder is then refused.
    let t3 = t1 + ttl + Duration::milliseconds(1);
    assert!(
        two.acquire_lease(NAME, "node-b", t3, t3 + ttl)
            .await
            .unwrap()
    );
    assert!(
        !one.acquire_lease(NAME, "node-a", t3, t3 + ttl)
            .await
            .unwrap()
    );

    // Only the holder releases it: node-a's release leaves node-b's lease in place.
    one.release_lease(NAME, "node-a").await.unwrap();
    assert!(
        !one.acquire_lease(NAME, "node-a", t3, t3 + ttl)
            .await
            .unwrap()
    );
    two.release_lease(NAME, "node-b").await.unwrap();
    // Released: free at once, long before it would have expired.
    assert!(
        one.acquire_lease(NAME, "node-a", t3, t3 + ttl)
            .await
            .unwrap()
    );
    // Releasing a lease nobody holds is no error.
    two.release_lease("never.taken", "node-b").await.unwrap();
    // The other name is still node-b's.
    assert!(
        !one.acquire_lease("other.work", "node-a", t3, t3 + ttl)
            .await
            .unwrap()
    );
}

async fn racing_owners_never_both_hold_a_lease(b: Backend) {
    let db = TestDb::new(b).await;
    let now = Utc::now();
    let mut handles = Vec::new();
    for i in 0..8 {
        let store = db.open().await;
        handles.push(tokio::spawn(async move {
            store
                .acquire_lease(NAME, &format!("node-{i}"), now, now + Duration::seconds(30))
                .await
                .unwrap()
        }));
    }
    let mut holders = 0;
    for h in handles {
        holders += u32::from(h.await.unwrap());
    }
    assert_eq!(
        holders, 1,
        "exactly one of eight racing nodes holds the lease"
    );
}

on_both_backends!(
    a_lease_has_one_holder_until_it_expires,
    racing_owners_never_both_hold_a_lease
);
