//! Acknowledged means durable: a server killed with SIGKILL in the middle of a load loses no
//! decision it answered, and its log still verifies after a restart.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use reqwest::StatusCode;

const CLIENTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_decision_survives_kill_9_mid_load() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let agent = agent_token(&data).await;
    let auditor = auditor_token(&data).await;

    let mut server = Server::start(&data).await;
    let load = Load::start(&server.base, &agent.secret, CLIENTS);
    load.wait_for(300, Duration::from_millis(1500)).await;
    load.mark_stopping();
    let status = server.kill9();
    let at_kill = load.acknowledged_so_far();
    let result = load.finish().await;
    assert!(
        !status.success(),
        "the server was killed, not stopped: {status}"
    );
    assert!(
        result.unexpected.is_empty() && result.errors_before_stop.is_empty(),
        "the load itself failed: {:?} {:?}\n{}",
        result.unexpected,
        result.errors_before_stop,
        server.log()
    );
    let acknowledged: HashSet<String> = result.acknowledged.iter().cloned().collect();
    assert_eq!(
        acknowledged.len(),
        result.acknowledged.len(),
        "an event id was handed out twice"
    );

    // Restart on the same data directory: every acknowledged event must be there.
    let mut server = Server::start(&data).await;
    let exported = ids_of(&export(&data).await);
    let missing: Vec<&String> = acknowledged.difference(&exported).collect();
    println!(
        "acknowledged {} (at kill {at_kill}, cut off by the kill {}), found {} of them, {} events in the log",
        acknowledged.len(),
        result.errors_after_stop,
        acknowledged.len() - missing.len(),
        exported.len()
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged events are missing after the crash, e.g. {:?}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );

    // The restarted server serves each of them, and keeps extending the same log.
    let client = client();
    let mut fetches = tokio::task::JoinSet::new();
    let ids: Vec<String> = result.acknowledged.clone();
    for chunk in ids.chunks(ids.len().div_ceil(4)) {
        let (client, base, token) = (client.clone(), server.base.clone(), auditor.secret.clone());
        let chunk = chunk.to_vec();
        fetches.spawn(async move {
            let mut not_found = Vec::new();
            for id in chunk {
                let r = client
                    .get(format!("{base}/api/v1/audit/events/{id}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("event request");
                if r.status() != StatusCode::OK {
                    not_found.push((id, r.status()));
                    continue;
                }
                let v: serde_json::Value = r.json().await.expect("event JSON");
                assert_eq!(v["id"].as_str(), Some(id.as_str()));
                assert_eq!(v["type"], "authz.decision");
            }
            not_found
        });
    }
    let mut not_served = Vec::new();
    while let Some(r) = fetches.join_next().await {
        not_served.extend(r.expect("fetch task"));
    }
    assert!(
        not_served.is_empty(),
        "the restarted server does not serve {} acknowledged events, e.g. {:?}",
        not_served.len(),
        not_served.iter().take(5).collect::<Vec<_>>()
    );
    for i in 0..3 {
        let (body, expected) = decision_request(i);
        let (status, v) = authorize(&client, &server.base, &agent.secret, &body)
            .await
            .expect("decision after restart");
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["decision"], expected, "{v}");
    }

    let status = server.terminate().await;
    assert!(status.success(), "SIGTERM exit: {status}\n{}", server.log());
    let out = verify(&data).await;
    assert!(
        out.success(),
        "the log does not verify after a crash and restart: {}",
        out.text()
    );
    assert!(
        out.stdout.contains("0 events after the last checkpoint"),
        "{}",
        out.text()
    );
    println!("{}", out.stdout.trim());
}
