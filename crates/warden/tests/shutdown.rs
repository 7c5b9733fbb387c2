//! Graceful shutdown: SIGTERM in the middle of a load answers what is in flight, writes every
//! answered decision, signs a final checkpoint and exits 0.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;

const CLIENTS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_and_seals_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let agent = agent_token(&data).await;

    let mut server = Server::start(&data).await;
    let load = Load::start(&server.base, &agent.secret, CLIENTS);
    load.wait_for(200, Duration::from_millis(1000)).await;
    load.mark_stopping();
    server.send_sigterm();
    let at_signal = load.acknowledged_so_far();
    let status = server.wait_exit().await;
    let result = load.finish().await;
    let log = server.log();
    assert!(
        status.success(),
        "graceful shutdown exits 0: {status}\n{log}"
    );
    assert!(
        log.contains("shutting down"),
        "the server saw the signal:\n{log}"
    );
    assert!(
        result.unexpected.is_empty() && result.errors_before_stop.is_empty(),
        "the load itself failed: {:?} {:?}\n{log}",
        result.unexpected,
        result.errors_before_stop
    );

    let events = export(&data).await;
    let stored = ids_of(&events);
    let acknowledged: HashSet<&String> = result.acknowledged.iter().collect();
    let missing: Vec<&&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(**id))
        .collect();
    println!(
        "acknowledged {} ({} before the signal, {} answered 503, {} cut off), found {} of them, {} events in the log",
        acknowledged.len(),
        at_signal,
        result.unavailable,
        result.errors_after_stop,
        acknowledged.len() - missing.len(),
        events.len()
    );
    assert!(
        missing.is_empty(),
        "{} answered decisions were not written, e.g. {:?}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );

    let out = verify(&data).await;
    assert!(out.success(), "{}", out.text());
    assert!(
        out.stdout
            .contains(&format!("acme: ok — {} events", events.len())),
        "{}",
        out.text()
    );
    assert!(
        out.stdout.contains("0 events after the last checkpoint"),
        "the final checkpoint covers the whole log: {}",
        out.text()
    );
    println!("{}", out.stdout.trim());
}
