//! `warden destinations list|replay` over the store: a receiver that refuses everything gets
//! dead letters, each dead-lettered batch recorded once in the audit trail (and the records
//! do not feed themselves: the log stops growing); once the receiver recovers, `replay` (with
//! no server running) delivers them and the replay is in the audit trail. A destination that
//! starts `now` never sees what was recorded before it.

mod common;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use common::*;
use serde_json::Value;

#[derive(Default)]
struct Receiver {
    up: AtomicBool,
    ids: Mutex<Vec<String>>,
}

async fn hook(State(r): State<Arc<Receiver>>, body: Bytes) -> StatusCode {
    if !r.up.load(Ordering::SeqCst) {
        return StatusCode::BAD_GATEWAY;
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    let mut ids = r.ids.lock().unwrap();
    for e in v["events"].as_array().unwrap() {
        ids.push(e["id"].as_str().unwrap().to_owned());
    }
    StatusCode::OK
}

async fn listed(data: &std::path::Path, name: &str) -> Value {
    let out = warden(&[
        "destinations",
        "list",
        "--data-dir",
        path_str(data),
        "--json",
    ])
    .await;
    assert!(out.success(), "{}", out.text());
    out.stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no destination {name}: {}", out.text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_the_cli_delivers_the_dead_letters() {
    let rx = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let secret = tmp.path().join("hook.secret");
    std::fs::write(&secret, "s3").unwrap();
    let config = tmp.path().join("warden.toml");
    std::fs::write(
        &config,
        format!(
            "[delivery]\npoll_interval = \"50ms\"\n\n[[destinations]]\ntenant = \"acme\"\nname = \"hook\"\n\
             kind = \"webhook\"\nurl = \"http://{addr}/hook\"\nsecret = \"file:{}\"\n\
             event_types = [\"authz.*\"]\nmax_attempts = 2\nbackoff_initial_ms = 1\n\
             breaker_cooldown_ms = 10\n\n\
             [[destinations]]\ntenant = \"acme\"\nname = \"all\"\nkind = \"webhook\"\n\
             url = \"http://{addr}/hook\"\nsecret = \"file:{}\"\nstart = \"now\"\n\
             batch_size = 4\nmax_attempts = 2\nbackoff_initial_ms = 1\nbreaker_cooldown_ms = 10\n",
            secret.display(),
            secret.display()
        ),
    )
    .unwrap();
    let agent = agent_token(&data).await;
    let mut server =
        Server::start_args(&data, &example_policies(), &["--config", path_str(&config)]).await;
    let client = client();
    for i in 0..10 {
        let (status, _) = authorize(&client, &server.base, &agent.secret, &decision_request(i).0)
            .await
            .unwrap();
        assert!(status.is_success());
    }
    // Both destinations dead-letter everything they read; the records of that enter the log
    // and are read in turn. Settled: both at the head, and the log no longer grows.
    let start = Instant::now();
    let mut last_size = None;
    let (row, all) = loop {
        let row = listed(&data, "hook").await;
        let all = listed(&data, "all").await;
        let settled = row["dead_letters"] == 10
            && row["lag"] == 0
            && all["lag"] == 0
            && last_size == Some(all["log_size"].clone());
        if settled {
            break (row, all);
        }
        last_size = Some(all["log_size"].clone());
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{row}\n{all}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(row["last_error"].as_str().unwrap().contains("502"), "{row}");
    server.terminate().await;

    let events = export(&data).await;
    let records = |name: &str| -> Vec<Value> {
        events
            .iter()
            .filter(|e| {
                e["type"] == "destination.dead_lettered" && e["payload"]["destination"] == name
            })
            .cloned()
            .collect()
    };
    // One record per dead-lettered batch of hook's 10 decisions, in the tenant root, by the
    // delivery engine, naming the positions and the receiver's error.
    let hook = records("hook");
    assert!(!hook.is_empty());
    let counted: u64 = hook
        .iter()
        .map(|e| e["payload"]["events"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 10, "{hook:?}");
    for e in &hook {
        let p = &e["payload"];
        assert_eq!(e["namespace"], "acme");
        assert_eq!(e["source"], "warden.delivery");
        assert_eq!(p["attempts"], 2);
        assert!(p["error"].as_str().unwrap().contains("502"), "{p}");
        assert!(p["first_seq"].as_u64() <= p["last_seq"].as_u64(), "{p}");
        assert!(p["cursor"]["to"].as_u64().unwrap() > p["last_seq"].as_u64().unwrap());
    }
    // "all" reads every event, records included: it records the batches that held anything
    // else, and a batch of records alone gets none, so the loop ends.
    let all_records = records("all");
    assert!(!all_records.is_empty());
    assert!(all_records.len() as u64 <= all["dead_letters"].as_u64().unwrap());
    // Started `now`: nothing before its creation reached it, everything after did.
    let created = events
        .iter()
        .find(|e| {
            e["type"] == "destination.created" && e["payload"]["destination"]["name"] == "all"
        })
        .expect("all was created");
    let created_seq = created["seq"].as_u64().unwrap();
    let log_size = all["log_size"].as_u64().unwrap();
    assert_eq!(
        all["dead_letters"].as_u64().unwrap(),
        log_size - created_seq - 1,
        "{all}"
    );
    let out = verify(&data).await;
    assert!(
        out.success(),
        "verify with dead-letter records: {}",
        out.text()
    );
    eprintln!(
        "hook: 10 decisions dead-lettered in {} recorded batches; all: {} dead letters from seq {}, {} records; log settled at {log_size}",
        hook.len(),
        all["dead_letters"],
        created_seq + 1,
        all_records.len()
    );

    rx.up.store(true, Ordering::SeqCst);
    let out = warden(&[
        "destinations",
        "replay",
        "hook",
        "--tenant",
        "acme",
        "--by",
        "ops",
        "--data-dir",
        path_str(&data),
    ])
    .await;
    assert!(out.success(), "{}", out.text());
    assert!(
        out.stderr.contains("replayed 10 dead letters"),
        "{}",
        out.text()
    );
    assert_eq!(rx.ids.lock().unwrap().len(), 10);
    assert_eq!(listed(&data, "hook").await["dead_letters"], 0);
    let replayed = export(&data)
        .await
        .into_iter()
        .filter(|e| e["type"] == "destination.replayed")
        .count();
    assert_eq!(replayed, 1);
    eprintln!("dead-lettered 10, replayed 10 from the CLI, 0 remain");
}
