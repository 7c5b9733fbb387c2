//! `warden destinations list|replay` over the store: a receiver that refuses everything gets
//! dead letters; once it recovers, `replay` (with no server running) delivers them and the
//! replay is in the audit trail.

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

async fn listed(data: &std::path::Path) -> Value {
    let out = warden(&[
        "destinations",
        "list",
        "--data-dir",
        path_str(data),
        "--json",
    ])
    .await;
    assert!(out.success(), "{}", out.text());
    serde_json::from_str(out.stdout.lines().next().expect("one destination")).unwrap()
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
             breaker_cooldown_ms = 10\n",
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
    let start = Instant::now();
    let row = loop {
        let row = listed(&data).await;
        if row["dead_letters"] == 10 && row["lag"] == 0 {
            break row;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{row}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(row["last_error"].as_str().unwrap().contains("502"), "{row}");
    server.terminate().await;

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
    assert_eq!(listed(&data).await["dead_letters"], 0);
    let replayed = export(&data)
        .await
        .into_iter()
        .filter(|e| e["type"] == "destination.replayed")
        .count();
    assert_eq!(replayed, 1);
    eprintln!("dead-lettered 10, replayed 10 from the CLI, 0 remain");
}
