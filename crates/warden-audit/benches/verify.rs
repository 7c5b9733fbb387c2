//! Offline verification of a tenant's log (`warden audit verify` without the store read):
//! header and leaf checks, the payload against its digest, the Merkle range, a signed
//! checkpoint at the end.
//!
//! - `verify/canonical_payloads`: payloads stored as their canonical text, as every store
//!   writes them: the digest of the stored bytes is compared, nothing is parsed.
//! - `verify/reordered_payloads`: the same events with their payload keys in another order
//!   (rows written before payloads were stored canonically): each payload is parsed and made
//!   canonical before it is hashed.
//!
//! ```text
//! cargo bench -p warden-audit --bench verify
//! ```

use std::hint::black_box;

use chrono::{TimeZone, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use warden_audit::checkpoint::{Checkpoint, CheckpointSigner};
use warden_audit::index::IndexedColumns;
use warden_audit::merkle::{CompactRange, leaf_hash};
use warden_audit::verify::{LogVerifier, StoredCheckpoint, StoredEvent};
use warden_core::{Actor, AuditEvent, EntityRef};

/// The allocator the `warden` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TENANT: &str = "acme";

/// How a payload is stored as text.
type PayloadText = fn(&Value) -> String;
const EVENTS: usize = 10_000;

/// A decision's payload of the usual size (~600 B), keys in the order a producer writes them.
fn payload(i: usize) -> Value {
    json!({
        "request": {
            "principal": {"type": "Agent", "id": "claude-code"},
            "on_behalf_of": {"type": "User", "id": "alice"},
            "action": "call_tool",
            "resource": {"type": "Tool", "id": "github__create_pull_request"},
            "context": {
                "args": {"repository": "acme/api", "branch": format!("fix-{i}"), "draft": true},
                "environment": "staging",
                "time": {"hour": 14, "weekday": "tue"},
                "client_ip": "10.0.4.17",
            },
        },
        "decision": "allow",
        "policies": [{"id": "allow-pr-tools", "namespace": "acme/platform", "line": 12}],
        "reasons": ["pull requests are allowed on staging branches"],
        "duration_us": 41 + i % 17,
    })
}

fn rows(text: PayloadText) -> (Vec<StoredEvent>, StoredCheckpoint, CheckpointSigner) {
    let signer = CheckpointSigner::from_seed([5; 32]);
    let mut range = CompactRange::new();
    let mut rows = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        let actor = Actor {
            principal: Some(EntityRef::new("Agent", "claude-code")),
            agent: Some("claude-code".into()),
            ..Actor::default()
        };
        let e = AuditEvent::new(
            TENANT,
            "acme/platform",
            "authz.decision",
            "warden.api",
            actor,
            payload(i),
        );
        let header_json = String::from_utf8(e.header.canonical_bytes()).unwrap();
        let leaf = leaf_hash(header_json.as_bytes());
        range.append(leaf);
        rows.push(StoredEvent {
            seq: i as u64,
            leaf_hash: leaf,
            header_json,
            payload_json: Some(text(&e.payload)),
            columns: IndexedColumns::of(&e.header),
        });
    }
    let time = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    let note = signer.sign(&Checkpoint::new(
        Checkpoint::origin_for(TENANT),
        range.size(),
        range.root(),
        time,
    ));
    let checkpoint = StoredCheckpoint {
        size: range.size(),
        root: range.root(),
        note,
    };
    (rows, checkpoint, signer)
}

fn verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(20);
    let forms: [(&str, PayloadText); 2] = [
        ("canonical_payloads", warden_core::canonical::to_string),
        ("reordered_payloads", |v| serde_json::to_string(v).unwrap()),
    ];
    for (name, text) in forms {
        let (rows, checkpoint, signer) = rows(text);
        group.bench_function(name, |b| {
            b.iter_batched(
                || rows.clone(),
                |rows| {
                    let mut v =
                        LogVerifier::new(TENANT, Some(signer.verifier()), vec![checkpoint.clone()]);
                    for r in rows {
                        v.event(r).unwrap();
                    }
                    black_box(v.finish().unwrap())
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
