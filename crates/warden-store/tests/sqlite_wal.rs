//! The SQLite write-ahead log stays bounded while the audit pipeline commits without pause: it
//! starts over from its beginning again and again, and nothing appended is lost on the way.
//! (SQLite only: PostgreSQL manages its own log.)

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let pipeline = AuditPipeline::start(store.clone(), PipelineConfig::default());
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
    // One event at a time, each waiting for its commit: a commit every few hundred
    // microseconds, never a pause in which a checkpoint beside the writer could finish alone.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut appended = 1u64;
    while restarts(&wal) < first + 3 {
        pipeline.record(event(appended)).await.unwrap();
        appended += 1;
        assert!(
            Instant::now() < deadline,
            "the log never started over three times in 30 s: {appended} commits, WAL of {} bytes",
            std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0)
        );
    }
    pipeline.shutdown().await;

    let acme = TenantId::parse("acme").unwrap();
    let stored = store.events_in_order(&acme, 0, u32::MAX).await.unwrap();
    assert_eq!(stored.len() as u64, appended);
    assert!(stored.iter().enumerate().all(|(i, e)| e.seq == i as u64));
}
