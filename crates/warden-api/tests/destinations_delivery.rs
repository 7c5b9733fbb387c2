//! Delivery to stream destinations, end to end: a real Warden server records decisions and
//! pushes its audit log to test receivers (in-test HTTP servers standing in for a SIEM) and
//! to a rotating file.
//!
//! The webhook receiver fails half of its requests, then hangs past the client timeout, then
//! recovers: every event still arrives (set equality by id), every signature verifies, the
//! order per tenant holds and nothing is dead-lettered. A receiver that always fails forces
//! dead letters; after it recovers, replay delivers them.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::{TestServer, example_policies, tool_call};
use serde_json::{Value, json};
use warden_core::{Role, TenantId};

const SECRET: &str = "whsec-test-0123456789";
const DEADLINE: Duration = Duration::from_secs(90);

/// What the receiver does with the next request.
const OK: u8 = 0;
const FLAKY: u8 = 1;
const HANG: u8 = 2;
const DOWN: u8 = 3;

#[derive(Default)]
struct Receiver {
    mode: AtomicU8,
    requests: AtomicU64,
    refused: AtomicU64,
    bad_signatures: AtomicU64,
    /// (tenant, seq, id) in arrival order of acknowledged batches.
    accepted: std::sync::Mutex<Vec<(String, u64, String)>>,
    /// HEC: the Authorization headers seen.
    auth: std::sync::Mutex<Vec<String>>,
}

async fn webhook(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let n = r.requests.fetch_add(1, Ordering::SeqCst);
    match r.mode.load(Ordering::SeqCst) {
        FLAKY if n % 2 == 0 => {
            r.refused.fetch_add(1, Ordering::SeqCst);
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
        HANG => {
            // Longer than the destination's timeout: the sender gives up first.
            tokio::time::sleep(Duration::from_secs(2)).await;
            r.refused.fetch_add(1, Ordering::SeqCst);
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        DOWN => {
            r.refused.fetch_add(1, Ordering::SeqCst);
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
        _ => {}
    }
    let ts = headers
        .get("x-warden-timestamp")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let sig = headers
        .get("x-warden-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !warden_delivery::sign::verify(SECRET.as_bytes(), ts, &body, sig) {
        r.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    let v: Value = serde_json::from_slice(&body).expect("the batch is JSON");
    let mut acc = r.accepted.lock().unwrap();
    for e in v["events"].as_array().expect("events") {
        acc.push((
            e["tenant"].as_str().unwrap().to_owned(),
            e["seq"].as_u64().unwrap(),
            e["id"].as_str().unwrap().to_owned(),
        ));
    }
    StatusCode::OK
}

async fn hec(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.requests.fetch_add(1, Ordering::SeqCst);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    r.auth.lock().unwrap().push(auth);
    let text = String::from_utf8(body.to_vec()).unwrap();
    let mut acc = r.accepted.lock().unwrap();
    for line in text.lines() {
        let env: Value = serde_json::from_str(line).expect("one HEC envelope per line");
        assert_eq!(env["sourcetype"], "warden:audit");
        assert!(env["time"].as_f64().is_some());
        acc.push((
            env["fields"]["tenant"].as_str().unwrap().to_owned(),
            env["event"]["seq"].as_u64().unwrap(),
            env["event"]["id"].as_str().unwrap().to_owned(),
        ));
    }
    StatusCode::OK
}

async fn start_receiver() -> (Arc<Receiver>, SocketAddr) {
    let r = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(webhook))
        .route("/services/collector/event", axum::routing::post(hec))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (r, addr)
}

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.policies = Some(example_policies());
        c.delivery.poll_interval = Duration::from_millis(50);
        c.delivery.lease_ttl = Duration::from_secs(5);
    })
    .await
}

fn secret_file(s: &TestServer) -> String {
    let p = s.dir.path().join("hook.secret");
    std::fs::write(&p, format!("{SECRET}\n")).unwrap();
    format!("file:{}", p.display())
}

async fn decisions(s: &TestServer, agent: &str, n: usize) {
    for i in 0..n {
        let (status, _) = s
            .post(
                "/api/v1/authorize",
                agent,
                &tool_call("github__get_file_contents", "low", json!({"i": i})),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::OK);
    }
}

/// Every event id of the tenant's log, in log order.
async fn log_ids(s: &TestServer, tenant: &str) -> Vec<String> {
    let rows = s
        .state()
        .store
        .events_in_order(&TenantId::parse(tenant).unwrap(), 0, 1_000_000)
        .await
        .unwrap();
    rows.iter().map(|r| r.event.header.id.to_string()).collect()
}

async fn state_of(s: &TestServer, token: &str, name: &str) -> Value {
    let (status, v) = s.get(&format!("/api/v1/destinations/{name}"), token).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{v}");
    v["state"][0].clone()
}

/// Waits (bounded) until the destination's cursor has reached the end of the log.
async fn caught_up(s: &TestServer, token: &str, name: &str) -> Value {
    let start = Instant::now();
    loop {
        let st = state_of(s, token, name).await;
        if st["lag"] == 0 {
            return st;
        }
        assert!(start.elapsed() < DEADLINE, "{name} did not catch up: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn received_ids(r: &Receiver) -> HashSet<String> {
    r.accepted
        .lock()
        .unwrap()
        .iter()
        .map(|(_, _, id)| id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_then_hanging_receiver_gets_every_event_signed_and_in_order() {
    let (rx, addr) = start_receiver().await;
    let s = server().await;
    let admin = s.token("acme", Role::Admin, None, None, None).await;
    let agent = s
        .agent_token("acme", "claude-code", "alice", "acme/platform/api")
        .await;
    let (status, body) = s
        .post(
            "/api/v1/destinations",
            &admin,
            &json!({
                "name": "siem-hook", "kind": "webhook", "url": format!("http://{addr}/hook"),
                "secret": secret_file(&s), "headers": {"X-Team": "secops"},
                "batch_size": 7, "timeout_ms": 300, "max_attempts": 1000,
                "backoff_initial_ms": 5, "backoff_max_ms": 50,
                "breaker_failures": 4, "breaker_cooldown_ms": 150
            }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");

    rx.mode.store(FLAKY, Ordering::SeqCst);
    decisions(&s, &agent, 120).await;
    // Let the flaky phase deliver part of it, then hang.
    let start = Instant::now();
    while received_ids(&rx).len() < 40 {
        assert!(start.elapsed() < DEADLINE, "nothing delivered while flaky");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rx.mode.store(HANG, Ordering::SeqCst);
    decisions(&s, &agent, 80).await;
    let hung_from = rx.requests.load(Ordering::SeqCst);
    while rx.requests.load(Ordering::SeqCst) < hung_from + 3 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let during_hang = state_of(&s, &admin, "siem-hook").await;
    rx.mode.store(OK, Ordering::SeqCst);
    decisions(&s, &agent, 50).await;
    let st = caught_up(&s, &admin, "siem-hook").await;

    let expected = log_ids(&s, "acme").await;
    let got = received_ids(&rx);
    let accepted = rx.accepted.lock().unwrap().clone();
    let duplicates = accepted.len() - got.len();
    let missing: Vec<_> = expected.iter().filter(|id| !got.contains(*id)).collect();
    let unknown = got.len() + missing.len() - expected.len();
    // Order per tenant: first arrivals come in log order.
    let mut seen = HashSet::new();
    let first_arrivals: Vec<u64> = accepted
        .iter()
        .filter(|(_, _, id)| seen.insert(id.clone()))
        .map(|(_, seq, _)| *seq)
        .collect();
    let in_order = first_arrivals.windows(2).all(|w| w[0] < w[1]);
    eprintln!(
        "delivered {} events ({} in the log), {duplicates} duplicates, {} dead letters; {} requests, {} refused, {} bad signatures; lag during the hang {}, circuit then {}",
        got.len(),
        expected.len(),
        st["dead_letters"],
        rx.requests.load(Ordering::SeqCst),
        rx.refused.load(Ordering::SeqCst),
        rx.bad_signatures.load(Ordering::SeqCst),
        during_hang["lag"],
        during_hang["circuit"],
    );
    assert!(missing.is_empty(), "{} events never arrived", missing.len());
    assert_eq!(unknown, 0, "the receiver got ids that are not in the log");
    assert_eq!(rx.bad_signatures.load(Ordering::SeqCst), 0);
    assert!(in_order, "events arrived out of log order");
    assert!(accepted.iter().all(|(t, _, _)| t == "acme"));
    assert_eq!(st["dead_letters"], 0);
    assert!(
        rx.refused.load(Ordering::SeqCst) > 0,
        "the receiver never failed"
    );
    assert!(
        during_hang["last_error"].as_str().is_some(),
        "the state shows the last error: {during_hang}"
    );
    let (_, metrics) = s.get_text("/metrics", None).await;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "warden_delivery_events_delivered_total{tenant=\"acme\",destination=\"siem-hook\"}",
            )
        })
        .expect("delivered metric");
    assert!(metrics.contains(
        "warden_delivery_failed_attempts_total{tenant=\"acme\",destination=\"siem-hook\"}"
    ));
    assert!(
        metrics.contains("warden_delivery_lag_events{tenant=\"acme\",destination=\"siem-hook\"}")
    );
    assert!(
        metrics
            .contains("warden_delivery_circuit_state{tenant=\"acme\",destination=\"siem-hook\"} 0")
    );
    let delivered: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(delivered >= expected.len() as u64 - 1, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_always_fails_gets_dead_letters_and_replay_delivers_them() {
    let (rx, addr) = start_receiver().await;
    let s = server().await;
    let admin = s.token("acme", Role::Admin, None, None, None).await;
    let agent = s
        .agent_token("acme", "claude-code", "alice", "acme/platform/api")
        .await;
    rx.mode.store(DOWN, Ordering::SeqCst);
    let (status, body) = s
        .post(
            "/api/v1/destinations",
            &admin,
            &json!({
                "name": "dl", "kind": "webhook", "url": format!("http://{addr}/hook"),
                "secret": secret_file(&s), "event_types": ["authz.*"],
                "batch_size": 10, "timeout_ms": 1000, "max_attempts": 3,
                "backoff_initial_ms": 1, "backoff_max_ms": 5,
                "breaker_failures": 2, "breaker_cooldown_ms": 20
            }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    decisions(&s, &agent, 25).await;
    let st = caught_up(&s, &admin, "dl").await;
    assert_eq!(st["dead_letters"], 25, "every decision dead-lettered: {st}");
    assert!(received_ids(&rx).is_empty());
    // Each dead-lettered batch is in the audit trail once, with its count and positions.
    let (_, records) = s
        .get(
            "/api/v1/audit/events?type=destination.dead_lettered",
            &admin,
        )
        .await;
    let records = records["events"].as_array().expect("events").clone();
    let counted: u64 = records
        .iter()
        .map(|e| e["payload"]["events"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 25, "{records:?}");
    let mut dead: Vec<u64> = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .state()
            .store
            .dead_letters(&TenantId::parse("acme").unwrap(), "dl", after, 100)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        dead.extend(page.iter().map(|d| d.seq));
    }
    for e in &records {
        let p = &e["payload"];
        assert_eq!(
            (p["destination"].as_str(), p["attempts"].as_u64()),
            (Some("dl"), Some(3))
        );
        let (first, last) = (
            p["first_seq"].as_u64().unwrap(),
            p["last_seq"].as_u64().unwrap(),
        );
        let inside = dead.iter().filter(|s| (first..=last).contains(*s)).count() as u64;
        assert_eq!(inside, p["events"].as_u64().unwrap(), "{p}");
        assert_eq!(e["source"], "warden.delivery");
        assert_eq!(e["namespace"], "acme");
    }

    rx.mode.store(OK, Ordering::SeqCst);
    let (status, report) = s
        .post("/api/v1/destinations/dl/replay", &admin, &json!({}))
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{report}");
    assert_eq!(report["delivered"], 25);
    assert_eq!(report["remaining"], 0);
    let decisions_in_log: BTreeSet<String> = s
        .state()
        .store
        .events_in_order(&TenantId::parse("acme").unwrap(), 0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event.header.event_type == "authz.decision")
        .map(|e| e.event.header.id.to_string())
        .collect();
    let got: BTreeSet<String> = received_ids(&rx).into_iter().collect();
    assert_eq!(
        got, decisions_in_log,
        "replay delivered exactly the dead letters"
    );
    assert_eq!(state_of(&s, &admin, "dl").await["dead_letters"], 0);
    let (_, events) = s
        .get("/api/v1/audit/events?type=destination.replayed", &admin)
        .await;
    assert_eq!(
        events["events"].as_array().map(Vec::len),
        Some(1),
        "{events}"
    );
    eprintln!(
        "dead-lettered 25 events after 3 attempts each, replay delivered {}, {} remain, {} refused requests",
        report["delivered"],
        report["remaining"],
        rx.refused.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_hec_receives_envelopes_with_the_token() {
    let (rx, addr) = start_receiver().await;
    let s = server().await;
    let admin = s.token("acme", Role::Admin, None, None, None).await;
    let agent = s
        .agent_token("acme", "claude-code", "alice", "acme/platform/api")
        .await;
    let tok = s.dir.path().join("hec.token");
    std::fs::write(&tok, "hec-token-42\n").unwrap();
    let (status, body) = s
        .post(
            "/api/v1/destinations",
            &admin,
            &json!({
                "name": "splunk", "kind": "splunk_hec",
                "url": format!("http://{addr}/services/collector/event"),
                "token": format!("file:{}", tok.display()), "namespace": "acme/platform",
                "batch_size": 4
            }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    decisions(&s, &agent, 10).await;
    caught_up(&s, &admin, "splunk").await;
    let accepted = rx.accepted.lock().unwrap().clone();
    let auth = rx.auth.lock().unwrap().clone();
    eprintln!(
        "HEC received {} envelopes in {} requests",
        accepted.len(),
        auth.len()
    );
    let in_subtree: BTreeSet<String> = s
        .state()
        .store
        .events_in_order(&TenantId::parse("acme").unwrap(), 0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event.header.namespace.starts_with("acme/platform"))
        .map(|e| e.event.header.id.to_string())
        .collect();
    let got: BTreeSet<String> = accepted.iter().map(|(_, _, id)| id.clone()).collect();
    assert_eq!(
        got, in_subtree,
        "exactly the events of the acme/platform subtree"
    );
    assert!(got.len() >= 10);
    assert!(auth.iter().all(|a| a == "Splunk hec-token-42"), "{auth:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_destination_rotates_and_keeps_n_files() {
    let s = server().await;
    let admin = s.token("acme", Role::Admin, None, None, None).await;
    let agent = s
        .agent_token("acme", "claude-code", "alice", "acme/platform/api")
        .await;
    let out = s.dir.path().join("out").join("audit.ndjson");
    let (status, body) = s
        .post(
            "/api/v1/destinations",
            &admin,
            &json!({
                "name": "shipper", "kind": "file", "path": out.display().to_string(),
                "format": "ocsf", "event_types": ["authz.decision"],
                "batch_size": 2, "rotate_bytes": 8192, "keep_files": 2
            }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    decisions(&s, &agent, 40).await;
    caught_up(&s, &admin, "shipper").await;
    let name = |n: u32| std::path::PathBuf::from(format!("{}.{n}", out.display()));
    assert!(out.exists() && name(1).exists() && name(2).exists());
    assert!(!name(3).exists(), "only keep_files rotated files are kept");
    let mut uids = Vec::new();
    for p in [name(2), name(1), out.clone()] {
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.len() as u64 <= 8192,
            "{} has {} bytes",
            p.display(),
            text.len()
        );
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["class_uid"], 6003);
            uids.push(v["metadata"]["uid"].as_str().unwrap().to_owned());
        }
    }
    let log = log_ids(&s, "acme").await;
    let positions: Vec<usize> = uids
        .iter()
        .map(|u| log.iter().position(|l| l == u).expect("a logged event"))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "files hold events in log order"
    );
    eprintln!(
        "file destination: {} events in the 3 newest files, oldest rotated away",
        uids.len()
    );
    assert!(uids.len() < 40, "older files were dropped");
}
