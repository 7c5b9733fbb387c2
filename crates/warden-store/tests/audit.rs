//! The audit trail in the store, on SQLite and PostgreSQL: each tenant's events form one
//! Merkle log whatever writes to it, re-sent events are recorded once, queries see only the
//! caller's tenant, checkpoints are kept per tenant.

#[macro_use]
mod common;

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use serde_json::json;
use warden_audit::merkle::{CompactRange, Hash, NodeId, root_from_leaves};
use warden_core::{Actor, AuditEvent, NamespacePath, TenantId};
use warden_store::{
    Appended, EventFilter, NewEvent, PageRequest, STORED_NODE_MIN_LEVEL, Store, StoredCheckpoint,
};

use common::{Backend, TestDb};

fn tenant(t: &str) -> TenantId {
    TenantId::parse(t).unwrap()
}

fn event(tenant: &str, namespace: &str, n: usize) -> AuditEvent {
    AuditEvent::new(
        tenant,
        namespace,
        "authz.decision",
        "warden.api",
        Actor {
            agent: Some(format!("agent-{}", n % 3)),
            ..Default::default()
        },
        json!({"n": n}),
    )
}

fn new(event: AuditEvent, dedupe: bool) -> NewEvent {
    NewEvent { event, dedupe }
}

fn seqs(out: &[Appended]) -> Vec<Option<u64>> {
    out.iter()
        .map(|a| match a {
            Appended::Stored { seq } => Some(*seq),
            Appended::Duplicate => None,
        })
        .collect()
}

/// Every leaf of the tenant's log, in order.
async fn leaves(s: &Arc<dyn Store>, t: &TenantId) -> Vec<Hash> {
    let mut out = Vec::new();
    loop {
        let page = s.events_in_order(t, out.len() as u64, 500).await.unwrap();
        if page.is_empty() {
            return out;
        }
        for e in page {
            assert_eq!(e.seq, out.len() as u64, "no gap in the sequence");
            out.push(e.leaf_hash);
        }
    }
}

/// The stored head is the tree of the stored leaves, and every node a proof can ask for
/// (stored or recomputed) is that tree's.
async fn assert_one_tree(s: &Arc<dyn Store>, t: &TenantId, size: u64) {
    let leaves = leaves(s, t).await;
    assert_eq!(leaves.len() as u64, size, "leaves of {t}");
    let head = s.merkle_head(t).await.unwrap();
    assert_eq!(head.size, size);
    let range = CompactRange::from_frontier(head.size, head.frontier).unwrap();
    assert_eq!(range.root(), root_from_leaves(&leaves), "head root of {t}");
    let mut ids = Vec::new();
    for level in [0u8, 2, STORED_NODE_MIN_LEVEL, STORED_NODE_MIN_LEVEL + 1] {
        let width = 1u64 << level;
        for index in 0..size / width {
            ids.push(NodeId::new(level, index));
        }
    }
    for (id, h) in s.merkle_nodes(t, &ids).await.unwrap() {
        let from = (id.index << id.level) as usize;
        let to = from + (1usize << id.level);
        assert_eq!(h, root_from_leaves(&leaves[from..to]), "node {id:?} of {t}");
    }
}

async fn appended_events_extend_each_tenants_own_log(b: Backend) {
    let db = TestDb::new(b).await;
    let s = db.open().await;
    // Interleaved tenants in one batch: each gets its own sequence from 0, in batch order.
    let batch: Vec<NewEvent> = (0..40)
        .map(|n| {
            let t = if n % 4 == 3 { "globex" } else { "acme" };
            new(event(t, &format!("{t}/platform"), n), false)
        })
        .collect();
    let out = s.append_events(&batch).await.unwrap();
    let mut acme = 0u64;
    let mut globex = 0u64;
    for (e, a) in batch.iter().zip(&out) {
        let next = if e.event.header.tenant == "acme" {
            &mut acme
        } else {
            &mut globex
        };
        assert_eq!(*a, Appended::Stored { seq: *next });
        *next += 1;
    }
    assert_eq!((acme, globex), (30, 10));
    // A second batch continues where the first stopped.
    let more: Vec<NewEvent> = (40..75)
        .map(|n| new(event("acme", "acme/platform", n), false))
        .collect();
    let out = s.append_events(&more).await.unwrap();
    assert_eq!(seqs(&out), (30..65).map(Some).collect::<Vec<_>>());
    assert_one_tree(&s, &tenant("acme"), 65).await;
    assert_one_tree(&s, &tenant("globex"), 10).await;
    assert_eq!(
        s.log_tenants().await.unwrap(),
        vec![tenant("acme"), tenant("globex")]
    );
    // What was stored is what was appended, byte for byte.
    let first = &s.events_in_order(&tenant("acme"), 0, 1).await.unwrap()[0];
    assert_eq!(first.event, batch[0].event);
    assert_eq!(
        first.header_json.as_bytes(),
        batch[0].event.header.canonical_bytes()
    );
    assert_eq!(first.payload_json.as_deref(), Some(r#"{"n":0}"#));
}

/// The log as `warden audit verify` reads it: the stored texts and leaf hashes, in order from
/// any position, one tenant only; a payload stored as its canonical text, whose SHA-256 is the
/// header's `payload_sha256`.
async fn the_log_reads_back_unparsed_as_stored(b: Backend) {
    let db = TestDb::new(b).await;
    let s = db.open().await;
    let batch: Vec<NewEvent> = (0..30)
        .map(|n| {
            let t = if n % 3 == 2 { "globex" } else { "acme" };
            let mut e = event(t, &format!("{t}/platform"), n);
            e.payload = json!({"n": n, "args": {"z": "last", "a": [1, "é\"\n"]}});
            e.seal();
            new(e, false)
        })
        .collect();
    s.append_events(&batch).await.unwrap();
    for (t, size) in [("acme", 20u64), ("globex", 10)] {
        for from in [0u64, 7, size - 1, size] {
            let rows = s.log_rows(&tenant(t), from, 6).await.unwrap();
            let events = s.events_in_order(&tenant(t), from, 6).await.unwrap();
            assert_eq!(rows.len(), (size - from).min(6) as usize, "{t} from {from}");
            assert_eq!(rows.len(), events.len());
            for (r, e) in rows.iter().zip(&events) {
                assert_eq!(r.seq, e.seq);
                assert_eq!(r.leaf_hash, e.leaf_hash);
                assert_eq!(r.header_json, e.header_json);
                assert_eq!(r.payload_json, e.payload_json);
                assert_eq!(r.columns, e.columns);
                assert_eq!(e.event.header.tenant, t);
            }
        }
    }
    // A whole log in one call: as many rows as there are, nothing reserved for the rest.
    let all = s.log_rows(&tenant("acme"), 0, u32::MAX).await.unwrap();
    assert_eq!(all.len(), 20);
    let outbox = s.outbox_rows(&tenant("acme"), 0, u32::MAX).await.unwrap();
    assert_eq!(outbox.len(), 20);
    let first = &s.log_rows(&tenant("acme"), 0, 1).await.unwrap()[0];
    let payload = first.payload_json.as_deref().unwrap();
    assert_eq!(
        payload, r#"{"args":{"a":[1,"é\"\n"],"z":"last"},"n":0}"#,
        "keys sorted, nothing else changed"
    );
    assert_eq!(
        warden_core::event::canonical_digest(payload.as_bytes()),
        batch[0].event.header.payload_sha256
    );
}

async fn resent_events_are_recorded_once(b: Backend) {
    let db = TestDb::new(b).await;
    let s = db.open().await;
    let a = event("acme", "acme/x", 1);
    let c = event("acme", "acme/x", 2);
    let out = s
        .append_events(&[
            new(a.clone(), true),
            new(a.clone(), true),
            new(c.clone(), true),
        ])
        .await
        .unwrap();
    assert_eq!(
        seqs(&out),
        [Some(0), None, Some(1)],
        "a duplicate inside the batch"
    );
    let out = s
        .append_events(&[new(c.clone(), true), new(event("acme", "acme/x", 3), true)])
        .await
        .unwrap();
    assert_eq!(seqs(&out), [None, Some(2)], "a duplicate of a stored event");
    // The same id in another tenant is another event.
    let mut other = a.clone();
    other.header.tenant = "globex".into();
    other.header.namespace = "globex".into();
    let out = s.append_events(&[new(other, true)]).await.unwrap();
    assert_eq!(seqs(&out), [Some(0)]);
    // A batch of nothing but duplicates leaves the log as it was.
    let out = s.append_events(&[new(a, true)]).await.unwrap();
    assert_eq!(seqs(&out), [None]);
    assert_one_tree(&s, &tenant("acme"), 3).await;
}

async fn queries_filter_page_and_stay_in_their_tenant(b: Backend) {
    let db = TestDb::new(b).await;
    let s = db.open().await;
    let mut batch = Vec::new();
    for n in 0..30 {
        let ns = match n % 3 {
            0 => "acme/platform",
            1 => "acme/platform/api",
            _ => "acme/platform_x", // '_' is no wildcard, and not below acme/platform
        };
        batch.push(new(event("acme", ns, n), false));
    }
    batch.push(new(event("globex", "globex/platform", 99), false));
    s.append_events(&batch).await.unwrap();
    let acme = tenant("acme");
    let all = |f: EventFilter| {
        let s = s.clone();
        let acme = acme.clone();
        async move {
            s.query_events(
                &acme,
                &f,
                PageRequest {
                    after_seq: None,
                    limit: 1000,
                    oldest_first: true,
                },
            )
            .await
            .unwrap()
        }
    };
    let subtree = all(EventFilter {
        namespace: Some(NamespacePath::parse("acme/platform").unwrap()),
        ..Default::default()
    })
    .await;
    assert_eq!(subtree.len(), 20);
    assert!(
        subtree
            .iter()
            .all(|e| e.columns.namespace != "acme/platform_x")
    );
    let agent = all(EventFilter {
        agent: Some("agent-1".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(agent.len(), 10);
    let future = all(EventFilter {
        from: Some(Utc::now() + chrono::Duration::hours(1)),
        ..Default::default()
    })
    .await;
    assert!(future.is_empty());

    // Newest first, by keyset.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .query_events(
                &acme,
                &EventFilter::default(),
                PageRequest {
                    after_seq: after,
                    limit: 7,
                    oldest_first: false,
                },
            )
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        seen.extend(page.iter().map(|e| e.seq));
    }
    assert_eq!(seen, (0..30).rev().collect::<Vec<u64>>());

    // Another tenant's event does not exist for this one.
    let theirs = batch.last().unwrap().event.header.id.to_string();
    assert!(s.get_event(&acme, &theirs).await.unwrap().is_none());
    let globex = s
        .get_event(&tenant("globex"), &theirs)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(globex.seq, 0);
}

async fn events_of_any_time_are_stored(b: Backend) {
    // Months far in the past or future have no partition of their own on PostgreSQL: the
    // append must not fail for it.
    let db = TestDb::new(b).await;
    let s = db.open().await;
    let mut old = event("acme", "acme", 0);
    old.header.time = Utc.with_ymd_and_hms(2001, 2, 3, 4, 5, 6).unwrap();
    let mut late = event("acme", "acme", 1);
    late.header.time = Utc.with_ymd_and_hms(2090, 1, 1, 0, 0, 0).unwrap();
    let now = event("acme", "acme", 2);
    let out = s
        .append_events(&[new(old.clone(), false), new(late, false), new(now, false)])
        .await
        .unwrap();
    assert_eq!(seqs(&out), [Some(0), Some(1), Some(2)]);
    let got = s
        .get_event(&tenant("acme"), &old.header.id.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.event.header.time, old.header.time);
    assert_one_tree(&s, &tenant("acme"), 3).await;
}

async fn checkpoints_are_kept_per_tenant_once_per_size(b: Backend) {
    let db = TestDb::new(b).await;
    let s = db.open().await;
    let cp = |size: u64, note: &str| StoredCheckpoint {
        size,
        root: [size as u8; 32],
        time: Utc
            .timestamp_micros(1_700_000_000_000_000 + size as i64)
            .unwrap(),
        note: note.into(),
    };
    let acme = tenant("acme");
    assert!(s.latest_checkpoint(&acme).await.unwrap().is_none());
    s.insert_checkpoint(&acme, &cp(10, "ten")).await.unwrap();
    s.insert_checkpoint(&acme, &cp(4, "four")).await.unwrap();
    // Two nodes signing the same size: the first one stays.
    s.insert_checkpoint(&acme, &cp(10, "ten again"))
        .await
        .unwrap();
    assert_eq!(
        s.checkpoints(&acme).await.unwrap(),
        vec![cp(4, "four"), cp(10, "ten")]
    );
    assert_eq!(
        s.latest_checkpoint(&acme).await.unwrap(),
        Some(cp(10, "ten"))
    );
    assert!(s.checkpoints(&tenant("globex")).await.unwrap().is_empty());
}

async fn two_writers_on_one_database_extend_one_tree(b: Backend) {
    // Two handles stand for two processes (two nodes, or the server and the CLI): each has
    // its own connections, and both append to the same tenants at once.
    let db = TestDb::new(b).await;
    let (one, two) = (db.open().await, db.open().await);
    let writer = |s: Arc<dyn Store>, who: usize| {
        tokio::spawn(async move {
            let mut stored = 0;
            for round in 0..15 {
                let batch: Vec<NewEvent> = (0..20)
                    .map(|n| {
                        let t = if n % 2 == 0 { "acme" } else { "globex" };
                        new(event(t, t, who * 10_000 + round * 100 + n), false)
                    })
                    .collect();
                let out = s.append_events(&batch).await.unwrap();
                stored += out.iter().filter(|a| **a != Appended::Duplicate).count();
            }
            stored
        })
    };
    let (a, c) = tokio::join!(writer(one.clone(), 1), writer(two.clone(), 2));
    assert_eq!(a.unwrap() + c.unwrap(), 600);
    for t in ["acme", "globex"] {
        assert_one_tree(&one, &tenant(t), 300).await;
        assert_one_tree(&two, &tenant(t), 300).await;
    }
}

/// One handle appending many batches at once, as a node's pipeline does with batches in
/// flight: every event lands once, in one tree per tenant, and an event sent again in
/// batches written at the same time is recorded once, although none of them is committed
/// when the others are numbered.
async fn batches_in_flight_on_one_handle_extend_one_tree(b: Backend) {
    let db = TestDb::new(b).await;
    let s = db.open().await;
    let resent: Vec<AuditEvent> = (0..40).map(|n| event("acme", "acme", 90_000 + n)).collect();
    let mut tasks = Vec::new();
    for who in 0..8usize {
        let (s, resent) = (s.clone(), resent.clone());
        tasks.push(tokio::spawn(async move {
            let mut stored = 0;
            for round in 0..10usize {
                let mut batch: Vec<NewEvent> = (0..20)
                    .map(|n| {
                        let t = if n % 2 == 0 { "acme" } else { "globex" };
                        new(event(t, t, who * 10_000 + round * 100 + n), false)
                    })
                    .collect();
                // Every task sends the same four of these each round.
                for e in &resent[round * 4..round * 4 + 4] {
                    batch.push(new(e.clone(), true));
                }
                let out = s.append_events(&batch).await.unwrap();
                stored += out.iter().filter(|a| **a != Appended::Duplicate).count();
            }
            stored
        }));
    }
    let mut stored = 0;
    for t in tasks {
        stored += t.await.unwrap();
    }
    assert_eq!(stored, 8 * 10 * 20 + resent.len());
    assert_one_tree(&s, &tenant("acme"), 8 * 10 * 10 + resent.len() as u64).await;
    assert_one_tree(&s, &tenant("globex"), 8 * 10 * 10).await;
    let mut times = std::collections::HashMap::new();
    let mut from = 0;
    loop {
        let page = s.events_in_order(&tenant("acme"), from, 500).await.unwrap();
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        for e in page {
            *times.entry(e.event.header.id).or_insert(0) += 1;
        }
    }
    for e in &resent {
        assert_eq!(
            times.get(&e.header.id),
            Some(&1),
            "{} recorded once",
            e.header.id
        );
    }
}

/// Batches handed to one handle at once may share a commit (SQLite's writer commits every
/// batch waiting as one transaction): each caller still gets the answers for its own events,
/// in its order — the duplicate where it resent an event, and for every other event the
/// position at which that very event is stored.
async fn each_batch_in_flight_gets_its_own_answers(b: Backend) {
    let db = TestDb::new(b).await;
    let s = db.open().await;
    let earlier: Vec<AuditEvent> = (0..16).map(|n| event("acme", "acme", 50_000 + n)).collect();
    let batch: Vec<NewEvent> = earlier.iter().map(|e| new(e.clone(), false)).collect();
    s.append_events(&batch).await.unwrap();
    let mut tasks = Vec::new();
    for (who, resent) in earlier.iter().cloned().enumerate() {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            // Batches of 1 to 16 events; the resent one sits at a different place in each.
            let mut batch: Vec<NewEvent> = (0..who)
                .map(|n| new(event("acme", "acme", who * 100 + n), false))
                .collect();
            batch.insert(who / 2, new(resent, true));
            let out = s.append_events(&batch).await.unwrap();
            (batch, out)
        }));
    }
    let mut stored = 0;
    for t in tasks {
        let (batch, out) = t.await.unwrap();
        assert_eq!(out.len(), batch.len());
        for (sent, answer) in batch.iter().zip(&out) {
            match answer {
                Appended::Duplicate => assert!(sent.dedupe, "only the resent event is a duplicate"),
                Appended::Stored { seq } => {
                    assert!(!sent.dedupe, "the resent event was already stored");
                    let row = s.events_in_order(&tenant("acme"), *seq, 1).await.unwrap();
                    assert_eq!(row[0].seq, *seq);
                    assert_eq!(row[0].event.header.id, sent.event.header.id);
                    stored += 1;
                }
            }
        }
    }
    assert_eq!(stored, (0..16).sum::<usize>());
    assert_one_tree(&s, &tenant("acme"), 16 + stored as u64).await;
}

/// A batch of several megabytes (on PostgreSQL, one whose rows are kept in memory for its
/// transaction) lands whole: every event once, in order, its payload intact, and a resent
/// event among them recorded once.
async fn a_batch_of_several_megabytes_lands_whole(b: Backend) {
    let db = TestDb::new(b).await;
    let s = db.open().await;
    let big = |n: usize| {
        let mut e = event("acme", "acme/a", n);
        e.payload = json!({"n": n, "blob": format!("{n:06}").repeat(500)});
        e
    };
    let zero = big(0);
    let first = s.append_events(&[new(zero.clone(), true)]).await.unwrap();
    assert_eq!(seqs(&first), vec![Some(0)]);
    let mut batch: Vec<NewEvent> = (1..1_500).map(|n| new(big(n), false)).collect();
    batch.push(new(zero, true));
    let out = s.append_events(&batch).await.unwrap();
    assert_eq!(out.len(), 1_500);
    assert_eq!(out[1_499], Appended::Duplicate, "the resent event");
    assert_eq!(
        seqs(&out[..1_499]),
        (1..1_500).map(Some).collect::<Vec<_>>()
    );
    assert_one_tree(&s, &tenant("acme"), 1_500).await;
    let page = s.events_in_order(&tenant("acme"), 1_234, 1).await.unwrap();
    assert_eq!(page[0].event.payload["blob"], json!("001234".repeat(500)));
}

/// A node's pipeline keeps writing while another node (a second handle) appends to the same
/// log: whichever of them finds the log moved numbers its batch again, and the tree stays
/// one.
async fn a_pipeline_and_another_writer_share_one_log(b: Backend) {
    use warden_store::pipeline::{AuditPipeline, PipelineConfig};
    let db = TestDb::new(b).await;
    let (one, two) = (db.open().await, db.open().await);
    let pipeline = Arc::new(AuditPipeline::start(one.clone(), PipelineConfig::default()));
    let mut tasks = Vec::new();
    for n in 0..600usize {
        let p = pipeline.clone();
        tasks.push(tokio::spawn(async move {
            p.record(event("acme", "acme", n)).await.unwrap()
        }));
    }
    let other = tokio::spawn(async move {
        for round in 0..20usize {
            let batch: Vec<NewEvent> = (0..10)
                .map(|n| new(event("acme", "acme", 50_000 + round * 100 + n), false))
                .collect();
            two.append_events(&batch).await.unwrap();
        }
    });
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Appended::Stored { .. }));
    }
    other.await.unwrap();
    pipeline.shutdown().await;
    assert_one_tree(&one, &tenant("acme"), 800).await;
}

/// An event nobody waits for (a call's outcome) shares the commit of the next event somebody
/// waits for, instead of a commit of its own; alone, it is still written.
async fn unawaited_events_share_the_next_awaited_commit(b: Backend) {
    use warden_store::pipeline::{AuditPipeline, PipelineConfig};
    let db = TestDb::new(b).await;
    let s = db.open().await;
    let pipeline = AuditPipeline::start(s.clone(), PipelineConfig::default());
    let outcome = pipeline.submit(event("acme", "acme/a", 0)).unwrap();
    let decision = pipeline.record(event("acme", "acme/a", 1)).await.unwrap();
    assert_eq!(outcome.await.unwrap(), Appended::Stored { seq: 0 });
    assert_eq!(decision, Appended::Stored { seq: 1 });
    assert_eq!(pipeline.stats().batches.get(), 1, "one commit for both");

    let alone = pipeline.submit(event("acme", "acme/a", 2)).unwrap();
    assert_eq!(alone.await.unwrap(), Appended::Stored { seq: 2 });
    assert_eq!(pipeline.stats().batches.get(), 2);
    // Queued and not yet due: a graceful shutdown writes it at once.
    let pending = pipeline.submit(event("acme", "acme/a", 3)).unwrap();
    pipeline.shutdown().await;
    assert_eq!(pending.await.unwrap(), Appended::Stored { seq: 3 });
    assert_eq!(s.merkle_head(&tenant("acme")).await.unwrap().size, 4);
}

/// A batch in flight is answered as soon as it has committed, also while the writer holds
/// back an event nobody waits for (waiting for one somebody waits for, to share its commit).
async fn a_commit_is_answered_while_an_unawaited_event_waits(b: Backend) {
    use std::time::Duration;
    use warden_store::pipeline::{AuditPipeline, PipelineConfig};
    let db = TestDb::new(b).await;
    let s = db.open().await;
    let config = PipelineConfig {
        unawaited_wait: Duration::from_secs(600),
        ..Default::default()
    };
    let pipeline = Arc::new(AuditPipeline::start(s.clone(), config));
    let hold = db.hold_writes().await;
    let p = pipeline.clone();
    let decision = tokio::spawn(async move { p.record(event("acme", "acme", 0)).await });
    // The decision's batch is being written (held back); the call's outcome comes meanwhile.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let outcome = pipeline.submit(event("acme", "acme", 1)).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    hold.release().await;
    let decided = tokio::time::timeout(Duration::from_secs(60), decision)
        .await
        .expect("the decision is answered once committed, not once the outcome stops waiting")
        .unwrap()
        .unwrap();
    assert_eq!(decided, Appended::Stored { seq: 0 });
    // The outcome still waits for an awaited event, and shares its commit.
    let next = pipeline.record(event("acme", "acme", 2)).await.unwrap();
    assert_eq!(outcome.await.unwrap(), Appended::Stored { seq: 1 });
    assert_eq!(next, Appended::Stored { seq: 2 });
    pipeline.shutdown().await;
}

on_both_backends!(
    a_commit_is_answered_while_an_unawaited_event_waits,
    unawaited_events_share_the_next_awaited_commit,
    the_log_reads_back_unparsed_as_stored,
    appended_events_extend_each_tenants_own_log,
    resent_events_are_recorded_once,
    queries_filter_page_and_stay_in_their_tenant,
    events_of_any_time_are_stored,
    checkpoints_are_kept_per_tenant_once_per_size,
    two_writers_on_one_database_extend_one_tree,
    batches_in_flight_on_one_handle_extend_one_tree,
    each_batch_in_flight_gets_its_own_answers,
    a_pipeline_and_another_writer_share_one_log,
    a_batch_of_several_megabytes_lands_whole,
);
