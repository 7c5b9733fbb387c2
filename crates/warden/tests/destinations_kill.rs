//! A node killed with SIGKILL in the middle of delivering to a webhook loses nothing: after a
//! restart on the same database the destination's cursor resumes (once the dead node's lease
//! has expired) and every event of the log reaches the receiver — some perhaps twice, none
//! missing.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use serde_json::Value;

const SECRET: &str = "kill9-secret";

#[derive(Default)]
struct Receiver {
    requests: AtomicU64,
    bad_signatures: AtomicU64,
    ids: Mutex<Vec<String>>,
}

async fn hook(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.requests.fetch_add(1, Ordering::SeqCst);
    // A slow receiver keeps the node busy delivering when it is killed.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    if !warden_delivery::sign::verify(
        SECRET.as_bytes(),
        &h("x-warden-timestamp"),
        &body,
        &h("x-warden-signature"),
    ) {
        r.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    let mut ids = r.ids.lock().unwrap();
    for e in v["events"].as_array().unwrap() {
        ids.push(e["id"].as_str().unwrap().to_owned());
    }
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_after_kill_9_with_nothing_missing() {
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
    std::fs::write(&secret, SECRET).unwrap();
    let config = tmp.path().join("warden.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[delivery]
poll_interval = "50ms"
lease_ttl = "2s"

[[destinations]]
tenant = "acme"
name = "hook"
kind = "webhook"
url = "http://{addr}/hook"
secret = "file:{}"
batch_size = 5
timeout_ms = 5000
max_attempts = 1000
"#,
            secret.display()
        ),
    )
    .unwrap();
    let agent = agent_token(&data).await;
    let extra = ["--config", path_str(&config)];
    let mut server = Server::start_args(&data, &example_policies(), &extra).await;
    let client = client();
    for i in 0..300 {
        let (status, _) = authorize(&client, &server.base, &agent.secret, &decision_request(i).0)
            .await
            .unwrap();
        assert!(status.is_success());
    }
    // Kill it while it is still delivering.
    let start = Instant::now();
    while rx.ids.lock().unwrap().len() < 40 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "nothing delivered:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill9();
    let at_kill = rx.ids.lock().unwrap().len();

    let server = Server::start_args(&data, &example_policies(), &extra).await;
    let start = Instant::now();
    let (expected, got) = loop {
        let expected = ids_of(&export(&data).await);
        let got: HashSet<String> = rx.ids.lock().unwrap().iter().cloned().collect();
        if expected.is_subset(&got) {
            break (expected, got);
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{} of {} events still missing:\n{}",
            expected.difference(&got).count(),
            expected.len(),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let all = rx.ids.lock().unwrap().len();
    let missing = expected.difference(&got).count();
    eprintln!(
        "delivered {} events of {} in the log ({at_kill} before the kill), {} duplicates, {missing} missing, {} bad signatures",
        got.len(),
        expected.len(),
        all - got.len(),
        rx.bad_signatures.load(Ordering::SeqCst)
    );
    assert_eq!(missing, 0);
    assert!(
        at_kill < expected.len(),
        "the kill came after delivery had finished"
    );
    assert_eq!(rx.bad_signatures.load(Ordering::SeqCst), 0);
    let out = warden(&[
        "destinations",
        "list",
        "--data-dir",
        path_str(&data),
        "--json",
    ])
    .await;
    assert!(out.success(), "{}", out.text());
    let row: Value = serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(row["name"], "hook");
    assert_eq!(row["origin"], "config");
}
