//! The SQLite write-ahead log stays bounded while the audit pipeline commits without pause: it
//! starts over from its beginning again and again, and nothing appended is lost on the way.
//! (SQLite only: PostgreSQL manages its own log.)

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use warden_core::{Actor, AuditEvent, TenantId};
use warden_store::pipeline::{AuditPipeline, PipelineConfig};
use warden_store::{SqliteStore, Store};

/// The WAL header's checkpoint sequence number (bytes 12..16, big-endian), which SQLite
/// increments each time the log starts over.
fn restarts(wal: &Path) -> u32 {
    let bytes = std::fs::read(wal).unwrap_or_default();
    bytes
        .get(12..16)
        .map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_starts_over_while_appends_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.db");
    let wal = dir.path().join("warden.db-wal");
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    let pipeline = Arc::new(AuditPipeline::start(
        store.clone(),
        PipelineConfig::default(),
    ));
    let event = |i: u64| {
        AuditEvent::new(
            "acme",
            "acme/platform",
            "authz.decision",
            "warden.api",
            Actor::default(),
            json!({"i": i}),
        )
    };

    pipeline.record(event(0)).await.unwrap();
    let first = restarts(&wal);
    // Writers that each record one event after another, waiting for every commit: the next
    // commit is always queued, so a checkpoint beside the writer never finds the log quiet.
    // They stop once the log started over three times, or after `BUDGET` events: with the
    // hand-over that takes a few thousand here; a checkpointer left alone did not restart the
    // log once in 20,000.
    const BUDGET: u64 = 40_000;
    let stop = Arc::new(AtomicBool::new(false));
    let recorded = Arc::new(AtomicU64::new(1));
    let writers: Vec<_> = (0..16)
        .map(|_| {
            let (pipeline, stop, recorded) = (pipeline.clone(), stop.clone(), recorded.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = recorded.fetch_add(1, Ordering::Relaxed);
                    pipeline.record(event(n)).await.unwrap();
                }
            })
        })
        .collect();
    while restarts(&wal) < first + 3 && recorded.load(Ordering::Relaxed) < BUDGET {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let restarted = restarts(&wal) - first;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let appended = recorded.load(Ordering::Relaxed);
    println!("the log started over {restarted} times in {appended} events");
    assert!(
        restarted >= 3,
        "the log started over {restarted} times in {appended} events of steady appends \
         (WAL of {} bytes)",
        std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0)
    );
    pipeline.shutdown().await;

    let acme = TenantId::parse("acme").unwrap();
    let stored = store.events_in_order(&acme, 0, u32::MAX).await.unwrap();
    assert_eq!(stored.len() as u64, appended);
    assert!(stored.iter().enumerate().all(|(i, e)| e.seq == i as u64));
}
