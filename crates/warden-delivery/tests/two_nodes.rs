//! Two nodes on one PostgreSQL database: one delivers a destination at a time (the lease), and
//! when it stops the other takes over from the stored cursor; every event arrives.

#[path = "../../warden-store/tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use common::{Backend, TestDb};
use serde_json::{Value, json};
use tokio::sync::watch;
use warden_core::{Actor, AuditEvent, TenantId};
use warden_delivery::{DeliveryConfig, Engine};
use warden_store::{NewEvent, Store, StoredDestination};

async fn hook(State(ids): State<Arc<Mutex<Vec<String>>>>, body: Bytes) -> StatusCode {
    let v: Value = serde_json::from_slice(&body).unwrap();
    let mut ids = ids.lock().unwrap();
    for e in v["events"].as_array().unwrap() {
        ids.push(e["id"].as_str().unwrap().to_owned());
    }
    StatusCode::OK
}

async fn append(store: &dyn Store, n: usize) -> Vec<String> {
    let batch: Vec<NewEvent> = (0..n)
        .map(|i| NewEvent {
            event: AuditEvent::new(
                "acme",
                "acme/ops",
                "test.event",
                "warden.test",
                Actor::default(),
                json!({"i": i}),
            ),
            dedupe: false,
        })
        .collect();
    let ids = batch
        .iter()
        .map(|e| e.event.header.id.to_string())
        .collect();
    store.append_events(&batch).await.unwrap();
    ids
}

async fn wait_for(ids: &Arc<Mutex<Vec<String>>>, want: &HashSet<String>) {
    let start = Instant::now();
    loop {
        let got: HashSet<String> = ids.lock().unwrap().iter().cloned().collect();
        if want.is_subset(&got) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} missing",
            want.difference(&got).count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The nodes' delivered counts once they add up to `total` (or after 10 s). The receiver holds
/// a batch a moment before the node counts it (a node counts what the receiver has answered),
/// so the counts are read once they have caught up with what the receiver got.
async fn counted(engines: [&Arc<Engine>; 2], total: u64) -> [u64; 2] {
    let start = Instant::now();
    loop {
        let got = engines.map(|e| e.metrics.get("acme", "hook").delivered);
        if got.iter().sum::<u64>() >= total || start.elapsed() > Duration::from_secs(10) {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_delivers_at_a_time_and_the_other_takes_over() {
    let ids = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(ids.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("s");
    std::fs::write(&secret, "k").unwrap();

    let db = TestDb::new(Backend::Postgres).await;
    let (a, b) = (db.open().await, db.open().await);
    let tenant = TenantId::parse("acme").unwrap();
    a.ensure_tenant(&tenant).await.unwrap();
    let now = Utc::now();
    a.put_destination(&StoredDestination {
        tenant: tenant.clone(),
        name: "hook".into(),
        spec: json!({"name": "hook", "kind": "webhook", "url": format!("http://{addr}/hook"),
            "secret": format!("file:{}", secret.display()), "batch_size": 10}),
        origin: "api".into(),
        created_at: now,
        updated_at: now,
    })
    .await
    .unwrap();
    let config = DeliveryConfig {
        enabled: true,
        poll_interval: Duration::from_millis(20),
        lease_ttl: Duration::from_secs(2),
    };
    let (one, two) = (
        Arc::new(Engine::new(a.clone(), config.clone())),
        Arc::new(Engine::new(b.clone(), config)),
    );
    let (stop_one, rx_one) = watch::channel(false);
    let (stop_two, rx_two) = watch::channel(false);
    let task_one = tokio::spawn(one.clone().run(rx_one));
    let task_two = tokio::spawn(two.clone().run(rx_two));

    let mut want: HashSet<String> = append(a.as_ref(), 200).await.into_iter().collect();
    wait_for(&ids, &want).await;
    let [d1, d2] = counted([&one, &two], 200).await;
    assert!(d1 == 0 || d2 == 0, "both nodes delivered: {d1} and {d2}");
    assert_eq!(d1 + d2, 200);

    // The node holding the lease stops (and releases it): the other continues.
    let (holder, other, stop, task) = if d1 > 0 {
        (&one, &two, stop_one, task_one)
    } else {
        (&two, &one, stop_two, task_two)
    };
    stop.send(true).unwrap();
    task.await.unwrap();
    want.extend(append(b.as_ref(), 50).await);
    wait_for(&ids, &want).await;
    let [first, second] = counted([holder, other], 250).await;
    let all = ids.lock().unwrap().len();
    eprintln!(
        "delivered {} events: first node {first}, second node {second} after the takeover, {} duplicates",
        want.len(),
        all - want.len()
    );
    assert_eq!((first, second), (200, 50));
    assert_eq!(
        a.delivery_state(&tenant, "hook").await.unwrap().next_seq,
        250
    );
}
