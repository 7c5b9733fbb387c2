//! The offline verifier: feed it a tenant's stored events in sequence order and its stored
//! checkpoints, and it proves the log is intact or names the first thing that is not.
//!
//! It is a state machine with no I/O, so the CLI can stream rows from any store through it in
//! constant memory and every kind of tampering can be tested without a database.

use std::fmt;

use chrono::{DateTime, Utc};
use warden_core::EventHeader;
use warden_core::event::{canonical_digest, payload_digest};
use warden_core::retention::{RetentionRecord, SeqRange};

use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointVerifier};
use crate::index::IndexedColumns;
use crate::merkle::{CompactRange, Hash, leaf_hash};

/// A checkpoint as a store keeps it: the signed note plus its size and root for lookups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub root: Hash,
    pub note: String,
}

/// One event row as a store keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// Position in the tenant's log, from 0; equals the Merkle leaf index.
    pub seq: u64,
    pub leaf_hash: Hash,
    /// The canonical header JSON exactly as stored: the bytes the leaf commits to.
    pub header_json: String,
    /// `None` once the payload was purged for retention or erasure.
    pub payload_json: Option<String>,
    pub columns: IndexedColumns,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// A row is missing, out of order or was inserted.
    Sequence,
    /// The header is not valid event JSON.
    MalformedHeader,
    /// The header belongs to another tenant.
    WrongTenant,
    /// The header JSON is not in canonical form, so it is not the text that was hashed.
    NonCanonicalHeader,
    /// The stored leaf hash does not match the header.
    LeafHash,
    /// A query column disagrees with the header.
    Columns,
    /// The stored payload is not valid JSON.
    MalformedPayload,
    /// The payload's digest does not match the one in the header.
    PayloadDigest,
    /// The root recomputed from the events differs from the checkpoint's.
    CheckpointRoot,
    /// The signed note cannot be read.
    MalformedCheckpoint,
    /// The note is not signed by the expected key.
    CheckpointKey,
    /// The note's signature does not verify.
    CheckpointSignature,
    /// The signed note says something other than the stored checkpoint row.
    CheckpointMismatch,
    /// A checkpoint covers more events than the log holds: events were deleted from the end.
    Truncated,
    /// A payload is purged or a row deleted where no retention run said it would be.
    UnexplainedRemoval,
    /// A retention run's record is unreadable or not the one in the log.
    RetentionRecord,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Sequence => "sequence",
            FailureKind::MalformedHeader => "malformed_header",
            FailureKind::WrongTenant => "wrong_tenant",
            FailureKind::NonCanonicalHeader => "non_canonical_header",
            FailureKind::LeafHash => "leaf_hash",
            FailureKind::Columns => "columns",
            FailureKind::MalformedPayload => "malformed_payload",
            FailureKind::PayloadDigest => "payload_digest",
            FailureKind::CheckpointRoot => "checkpoint_root",
            FailureKind::MalformedCheckpoint => "malformed_checkpoint",
            FailureKind::CheckpointKey => "checkpoint_key",
            FailureKind::CheckpointSignature => "checkpoint_signature",
            FailureKind::CheckpointMismatch => "checkpoint_mismatch",
            FailureKind::Truncated => "truncated",
            FailureKind::UnexplainedRemoval => "unexplained_removal",
            FailureKind::RetentionRecord => "retention_record",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first problem found, located as precisely as the verifier knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyFailure {
    pub seq: Option<u64>,
    pub event_id: Option<String>,
    pub checkpoint_size: Option<u64>,
    pub kind: FailureKind,
    pub detail: String,
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.seq, &self.event_id, self.checkpoint_size) {
            (Some(seq), Some(id), _) => write!(f, "event #{seq} ({id}): ")?,
            (Some(seq), None, _) => write!(f, "event #{seq}: ")?,
            (None, _, Some(size)) => write!(f, "checkpoint at size {size}: ")?,
            (None, _, None) => {}
        }
        write!(f, "{} [{}]", self.detail, self.kind)
    }
}

impl std::error::Error for VerifyFailure {}

/// What a successful verification covered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifySummary {
    /// Positions in the log, including those whose rows retention deleted.
    pub events: u64,
    pub payloads_purged: u64,
    /// Rows deleted by retention runs (their leaf hashes kept the tree whole).
    pub headers_expired: u64,
    pub checkpoints_verified: u64,
    /// False when no public key was given: roots were checked, signatures were not.
    pub signatures_checked: bool,
    pub last_checkpoint_size: Option<u64>,
    pub last_checkpoint_time: Option<DateTime<Utc>>,
    /// Events no signed checkpoint covers yet; they are only as safe as the store.
    pub events_after_last_checkpoint: u64,
    pub root: Hash,
}

/// Streams one tenant's log through every check. Stop at the first failure: the state after
/// one is not meaningful.
#[derive(Debug)]
pub struct LogVerifier {
    tenant: String,
    origin: String,
    verifier: Option<CheckpointVerifier>,
    /// Sorted by size; `next_checkpoint` indexes the first not yet reached.
    checkpoints: Vec<StoredCheckpoint>,
    next_checkpoint: usize,
    range: CompactRange,
    payloads_purged: u64,
    last_checkpoint: Option<(u64, DateTime<Utc>)>,
    // Retention
    /// Retention records read ahead of the stream, by position; each must be met in it.
    retention: Vec<Preloaded>,
    headers_expired: u64,
}

/// A retention record read ahead: removals before its position are checked against it, and
/// the event at its position must carry exactly this payload.
#[derive(Debug)]
struct Preloaded {
    seq: u64,
    payload_json: String,
    record: RetentionRecord,
    confirmed: bool,
}

impl LogVerifier {
    pub fn new(
        tenant: &str,
        verifier: Option<CheckpointVerifier>,
        mut checkpoints: Vec<StoredCheckpoint>,
    ) -> LogVerifier {
        checkpoints.sort_by_key(|c| c.size);
        LogVerifier {
            tenant: tenant.to_owned(),
            origin: Checkpoint::origin_for(tenant),
            verifier,
            checkpoints,
            next_checkpoint: 0,
            range: CompactRange::new(),
            payloads_purged: 0,
            last_checkpoint: None,
            retention: Vec::new(),
            headers_expired: 0,
        }
    }

    /// The tenant's `audit.retention.applied` events as stored (position, payload JSON), read
    /// before the stream: a purged payload or deleted row is accepted only where a later one
    /// of them names its position, and each must then be met, intact, in the stream.
    pub fn with_retention_records(
        mut self,
        records: Vec<(u64, String)>,
    ) -> Result<LogVerifier, VerifyFailure> {
        for (seq, payload_json) in records {
            let record: RetentionRecord =
                serde_json::from_str(&payload_json).map_err(|e| VerifyFailure {
                    seq: Some(seq),
                    event_id: None,
                    checkpoint_size: None,
                    kind: FailureKind::RetentionRecord,
                    detail: format!("retention record does not parse: {e}"),
                })?;
            self.retention.push(Preloaded {
                seq,
                payload_json,
                record,
                confirmed: false,
            });
        }
        Ok(self)
    }

    /// True when a retention record after `seq` names it in the ranges `pick` selects.
    fn explained(&self, seq: u64, pick: fn(&RetentionRecord) -> &[SeqRange]) -> bool {
        self.retention
            .iter()
            .any(|p| p.seq > seq && RetentionRecord::names(pick(&p.record), seq))
    }

    /// A position whose row a retention run deleted: only its leaf hash is left.
    pub fn expired(&mut self, seq: u64, leaf: Hash) -> Result<(), VerifyFailure> {
        self.reach_checkpoints()?;
        let expected = self.range.size();
        let fail = |kind, detail: String| VerifyFailure {
            seq: Some(seq),
            event_id: None,
            checkpoint_size: None,
            kind,
            detail,
        };
        if seq != expected {
            return Err(fail(
                FailureKind::Sequence,
                format!(
                    "expected event #{expected} next but found the leaf of deleted event #{seq}"
                ),
            ));
        }
        if !self.explained(seq, |r| &r.deleted_ranges) {
            return Err(fail(
                FailureKind::UnexplainedRemoval,
                "the event's row was deleted but no retention run recorded deleting it".into(),
            ));
        }
        self.headers_expired += 1;
        self.range.append(leaf);
        self.reach_checkpoints()
    }

    /// Events accepted so far.
    pub fn events(&self) -> u64 {
        self.range.size()
    }

    pub fn event(&mut self, row: StoredEvent) -> Result<(), VerifyFailure> {
        self.reach_checkpoints()?;
        let expected = self.range.size();
        let fail = |kind, event_id: Option<String>, detail: String| VerifyFailure {
            seq: Some(row.seq),
            event_id,
            checkpoint_size: None,
            kind,
            detail,
        };
        if row.seq != expected {
            let why = if row.seq > expected {
                format!(
                    "expected event #{expected} next but found #{}: events are missing or out of order",
                    row.seq
                )
            } else {
                format!(
                    "expected event #{expected} next but found #{}: an event was inserted or repeated",
                    row.seq
                )
            };
            return Err(fail(
                FailureKind::Sequence,
                Some(row.columns.id.to_string()),
                why,
            ));
        }

        let header: EventHeader = serde_json::from_str(&row.header_json).map_err(|e| {
            fail(
                FailureKind::MalformedHeader,
                Some(row.columns.id.to_string()),
                format!("header is not a valid event: {e}"),
            )
        })?;
        let id = Some(header.id.to_string());
        if header.tenant != self.tenant {
            let why = format!(
                "header belongs to tenant {:?}, not {:?}",
                header.tenant, self.tenant
            );
            return Err(fail(FailureKind::WrongTenant, id, why));
        }
        if header.canonical_bytes() != row.header_json.as_bytes() {
            let why =
                "header JSON is not in canonical form: it was rewritten after it was recorded"
                    .to_owned();
            return Err(fail(FailureKind::NonCanonicalHeader, id, why));
        }

        let leaf = leaf_hash(row.header_json.as_bytes());
        if leaf != row.leaf_hash {
            let why = format!(
                "stored leaf hash {} does not match the header's {}: the header was changed",
                hex::encode(row.leaf_hash),
                hex::encode(leaf)
            );
            return Err(fail(FailureKind::LeafHash, id, why));
        }

        let columns = IndexedColumns::of(&header);
        let changed = columns.differences(&row.columns);
        if !changed.is_empty() {
            let why = format!(
                "query columns disagree with the header: {}",
                changed.join(", ")
            );
            return Err(fail(FailureKind::Columns, id, why));
        }

        if header.event_type == warden_core::catalog::AUDIT_RETENTION_APPLIED
            && let Some(p) = self.retention.iter_mut().find(|p| p.seq == row.seq)
        {
            if row.payload_json.as_deref() != Some(p.payload_json.as_str()) {
                let why =
                    "the retention record read ahead differs from the event in the log".into();
                return Err(fail(FailureKind::RetentionRecord, id, why));
            }
            p.confirmed = true;
        }

        let mut purged = false;
        if let Some(text) = &row.payload_json
            && canonical_digest(text.as_bytes()) == header.payload_sha256
        {
            // Stored as the canonical text the digest was taken over (every store writes it
            // so): intact, with nothing to parse. A match cannot hold for any other text.
        } else if let Some(text) = &row.payload_json {
            // Text in another form (the key order of older rows, or a copy rewritten by a
            // tool): parsed and made canonical before it is compared.
            let payload: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                fail(
                    FailureKind::MalformedPayload,
                    id.clone(),
                    format!("payload is not valid JSON: {e}"),
                )
            })?;
            let digest = payload_digest(&payload);
            if digest == header.payload_sha256 {
                // A genuine payload, present and intact.
            } else if payload.is_null() {
                // Stores that purge by writing `null` rather than dropping the column.
                purged = true;
            } else {
                let why = format!(
                    "payload digest {digest} does not match {} in the header: the payload was changed",
                    header.payload_sha256
                );
                return Err(fail(FailureKind::PayloadDigest, id, why));
            }
        } else {
            purged = true;
        }
        if purged {
            if !self.explained(row.seq, |r| &r.purged_ranges) {
                let why = "the payload is missing but no retention run recorded purging it".into();
                return Err(fail(FailureKind::UnexplainedRemoval, id, why));
            }
            self.payloads_purged += 1;
        }

        self.range.append(leaf);
        self.reach_checkpoints()
    }

    /// Checks every checkpoint whose size the log has now reached.
    fn reach_checkpoints(&mut self) -> Result<(), VerifyFailure> {
        while let Some(stored) = self.checkpoints.get(self.next_checkpoint) {
            if stored.size != self.range.size() {
                break;
            }
            let time = self.check_checkpoint(stored)?;
            self.last_checkpoint = Some((stored.size, time));
            self.next_checkpoint += 1;
        }
        Ok(())
    }

    fn check_checkpoint(&self, stored: &StoredCheckpoint) -> Result<DateTime<Utc>, VerifyFailure> {
        let fail = |kind, detail: String| VerifyFailure {
            seq: None,
            event_id: None,
            checkpoint_size: Some(stored.size),
            kind,
            detail,
        };
        let root = self.range.root();
        if stored.root != root {
            let why = format!(
                "the events hash to root {} but the stored checkpoint says {}: either events before it were changed, removed, reordered or inserted, or the checkpoint itself was altered",
                hex::encode(root),
                hex::encode(stored.root)
            );
            return Err(fail(FailureKind::CheckpointRoot, why));
        }
        let signed = match &self.verifier {
            Some(verifier) => verifier.verify(&stored.note),
            None => Checkpoint::parse_unverified(&stored.note),
        }
        .map_err(|e| {
            let kind = match e {
                CheckpointError::Malformed(_) | CheckpointError::KeyFile(_) => {
                    FailureKind::MalformedCheckpoint
                }
                CheckpointError::WrongKey { .. } => FailureKind::CheckpointKey,
                CheckpointError::BadSignature => FailureKind::CheckpointSignature,
            };
            fail(kind, e.to_string())
        })?;
        if signed.origin != self.origin {
            let why = format!(
                "signed note is for log {:?}, not {:?}",
                signed.origin, self.origin
            );
            return Err(fail(FailureKind::CheckpointMismatch, why));
        }
        if signed.size != stored.size || signed.root != stored.root {
            let why = format!(
                "signed note says size {} root {}, the stored checkpoint says size {} root {}",
                signed.size,
                hex::encode(signed.root),
                stored.size,
                hex::encode(stored.root)
            );
            return Err(fail(FailureKind::CheckpointMismatch, why));
        }
        Ok(signed.time)
    }

    pub fn finish(mut self) -> Result<VerifySummary, VerifyFailure> {
        self.reach_checkpoints()?;
        let events = self.range.size();
        if let Some(stored) = self.checkpoints.get(self.next_checkpoint) {
            return Err(VerifyFailure {
                seq: None,
                event_id: None,
                checkpoint_size: Some(stored.size),
                kind: FailureKind::Truncated,
                detail: format!(
                    "a checkpoint covers {} events but the log holds only {events}: events were deleted from the end",
                    stored.size
                ),
            });
        }
        if let Some(p) = self.retention.iter().find(|p| !p.confirmed) {
            return Err(VerifyFailure {
                seq: Some(p.seq),
                event_id: None,
                checkpoint_size: None,
                kind: FailureKind::RetentionRecord,
                detail: "a retention record was read at this position but the log holds no such event there".into(),
            });
        }
        let (last_checkpoint_size, last_checkpoint_time) = match self.last_checkpoint {
            Some((size, time)) => (Some(size), Some(time)),
            None => (None, None),
        };
        Ok(VerifySummary {
            events,
            payloads_purged: self.payloads_purged,
            headers_expired: self.headers_expired,
            checkpoints_verified: self.next_checkpoint as u64,
            signatures_checked: self.verifier.is_some(),
            last_checkpoint_size,
            last_checkpoint_time,
            events_after_last_checkpoint: events - last_checkpoint_size.unwrap_or(0),
            root: self.range.root(),
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;
    use warden_core::{Actor, AuditEvent, EntityRef};

    use super::*;
    use crate::checkpoint::CheckpointSigner;

    const TENANT: &str = "acme";

    struct Log {
        rows: Vec<StoredEvent>,
        checkpoints: Vec<StoredCheckpoint>,
        signer: CheckpointSigner,
    }

    fn row(seq: u64, event: &AuditEvent) -> StoredEvent {
        let header_json = String::from_utf8(event.header.canonical_bytes()).unwrap();
        StoredEvent {
            seq,
            leaf_hash: leaf_hash(header_json.as_bytes()),
            header_json,
            payload_json: Some(serde_json::to_string(&event.payload).unwrap()),
            columns: IndexedColumns::of(&event.header),
        }
    }

    fn event(i: u64) -> AuditEvent {
        let actor = Actor {
            principal: Some(EntityRef::new("Agent", "ci-bot")),
            agent: Some("ci-bot".into()),
            ..Actor::default()
        };
        let mut e = AuditEvent::new(
            TENANT,
            "acme/platform",
            "authz.decision",
            "warden.api",
            actor,
            json!({"n": i}),
        );
        e.header.action = Some(format!("action_{i}"));
        e
    }

    fn sign(signer: &CheckpointSigner, size: u64, root: Hash) -> StoredCheckpoint {
        let time = Utc.with_ymd_and_hms(2025, 2, 1, 0, 0, size as u32).unwrap();
        let note = signer.sign(&Checkpoint::new(
            Checkpoint::origin_for(TENANT),
            size,
            root,
            time,
        ));
        StoredCheckpoint { size, root, note }
    }

    /// Ten events with checkpoints at sizes 4 and 8.
    fn log() -> Log {
        let signer = CheckpointSigner::from_seed([11; 32]);
        let mut range = CompactRange::new();
        let mut rows = Vec::new();
        let mut checkpoints = Vec::new();
        for i in 0..10 {
            let r = row(i, &event(i));
            range.append(r.leaf_hash);
            rows.push(r);
            if range.size().is_multiple_of(4) {
                checkpoints.push(sign(&signer, range.size(), range.root()));
            }
        }
        Log {
            rows,
            checkpoints,
            signer,
        }
    }

    /// Signs the checkpoints again (at sizes 4 and 8) after rows were replaced.
    fn rebuild(log: &mut Log) {
        let mut range = CompactRange::new();
        log.checkpoints.clear();
        for r in &log.rows {
            range.append(r.leaf_hash);
            if range.size().is_multiple_of(4) {
                log.checkpoints
                    .push(sign(&log.signer, range.size(), range.root()));
            }
        }
    }

    fn run(log: &Log) -> Result<VerifySummary, VerifyFailure> {
        let mut v = LogVerifier::new(TENANT, Some(log.signer.verifier()), log.checkpoints.clone());
        for r in &log.rows {
            v.event(r.clone())?;
        }
        v.finish()
    }

    fn fails(log: &Log) -> VerifyFailure {
        let failure = run(log).expect_err("tampering went unnoticed");
        assert!(!failure.to_string().is_empty());
        failure
    }

    /// Rewrites a row as a careful forger would: a consistent leaf hash and columns.
    fn forge(row: &mut StoredEvent, change: impl FnOnce(&mut EventHeader)) {
        let mut header: EventHeader = serde_json::from_str(&row.header_json).unwrap();
        change(&mut header);
        row.header_json = String::from_utf8(header.canonical_bytes()).unwrap();
        row.leaf_hash = leaf_hash(row.header_json.as_bytes());
        row.columns = IndexedColumns::of(&header);
    }

    fn renumber(rows: &mut [StoredEvent]) {
        for (i, r) in rows.iter_mut().enumerate() {
            r.seq = i as u64;
        }
    }

    #[test]
    fn intact_log_verifies() {
        let log = log();
        let summary = run(&log).unwrap();
        assert_eq!(summary.events, 10);
        assert_eq!(summary.checkpoints_verified, 2);
        assert_eq!(summary.last_checkpoint_size, Some(8));
        assert_eq!(summary.events_after_last_checkpoint, 2);
        assert_eq!(summary.payloads_purged, 0);
        assert!(summary.signatures_checked);
        let leaves: Vec<Hash> = log.rows.iter().map(|r| r.leaf_hash).collect();
        assert_eq!(summary.root, crate::merkle::root_from_leaves(&leaves));
        assert_eq!(
            summary.last_checkpoint_time,
            Some(Utc.with_ymd_and_hms(2025, 2, 1, 0, 0, 8).unwrap())
        );
    }

    /// Events 0–3, then a retention record (4) deleting 0 and purging 2; a checkpoint over
    /// all five. Returns the rows (0 removed, 2 purged), the record's payload, the verifier key.
    fn retained_log() -> (Vec<StoredEvent>, Hash, String, Log) {
        let base = log();
        let mut rows: Vec<StoredEvent> = base.rows[..4].to_vec();
        let record = RetentionRecord {
            payloads_purged: 1,
            headers_deleted: 1,
            purged_ranges: vec![[2, 2]],
            deleted_ranges: vec![[0, 0]],
            now: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            ..Default::default()
        };
        let mut e = event(4);
        e.payload = serde_json::to_value(&record).unwrap();
        e.header.event_type = warden_core::catalog::AUDIT_RETENTION_APPLIED.into();
        e.header.payload_sha256 = payload_digest(&e.payload);
        rows.push(row(4, &e));
        let mut range = CompactRange::new();
        for r in &rows {
            range.append(r.leaf_hash);
        }
        let cp = sign(&base.signer, 5, range.root());
        let payload = rows[4].payload_json.clone().unwrap();
        let leaf0 = rows[0].leaf_hash;
        rows.remove(0);
        rows[1].payload_json = None;
        let log = Log {
            rows,
            checkpoints: vec![cp],
            signer: base.signer,
        };
        (log.rows.clone(), leaf0, payload, log)
    }

    #[test]
    fn removals_a_retention_record_names_verify_and_are_counted() {
        let (rows, leaf0, payload, log) = retained_log();
        let verifier =
            || LogVerifier::new(TENANT, Some(log.signer.verifier()), log.checkpoints.clone());
        let mut v = verifier()
            .with_retention_records(vec![(4, payload.clone())])
            .unwrap();
        v.expired(0, leaf0).unwrap();
        for r in &rows {
            v.event(r.clone()).unwrap();
        }
        let summary = v.finish().unwrap();
        assert_eq!((summary.payloads_purged, summary.headers_expired), (1, 1));
        assert_eq!(summary.events, 5);
        assert_eq!(summary.checkpoints_verified, 1);

        // Without the record, the kept leaf explains nothing.
        let mut v = verifier();
        assert_eq!(
            v.expired(0, leaf0).unwrap_err().kind,
            FailureKind::UnexplainedRemoval
        );
        // A record read ahead that is not the one in the log.
        let forged = payload.replace("[[0,0]]", "[[0,3]]");
        assert_ne!(forged, payload);
        let mut v = verifier()
            .with_retention_records(vec![(4, forged)])
            .unwrap();
        v.expired(0, leaf0).unwrap();
        let err = rows
            .iter()
            .try_for_each(|r| v.event(r.clone()))
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::RetentionRecord);
        // A record at a position the log does not hold.
        let mut v = verifier()
            .with_retention_records(vec![(4, payload.clone()), (9, payload)])
            .unwrap();
        v.expired(0, leaf0).unwrap();
        for r in &rows {
            v.event(r.clone()).unwrap();
        }
        assert_eq!(v.finish().unwrap_err().kind, FailureKind::RetentionRecord);
    }

    #[test]
    fn purged_payloads_verify_only_where_a_retention_run_recorded_them() {
        let mut log = log();
        log.rows[2].payload_json = None;
        log.rows[5].payload_json = Some("null".into());
        let err = run(&log).unwrap_err();
        assert_eq!(err.kind, FailureKind::UnexplainedRemoval);
        assert_eq!(err.seq, Some(2));
    }

    #[test]
    fn without_a_key_roots_are_checked_and_signatures_reported_unchecked() {
        let log = log();
        let mut v = LogVerifier::new(TENANT, None, log.checkpoints.clone());
        for r in &log.rows {
            v.event(r.clone()).unwrap();
        }
        let summary = v.finish().unwrap();
        assert!(!summary.signatures_checked);
        assert_eq!(summary.checkpoints_verified, 2);
    }

    #[test]
    fn empty_log_verifies_and_an_empty_checkpoint_is_checked() {
        let signer = CheckpointSigner::from_seed([1; 32]);
        let empty = sign(&signer, 0, crate::merkle::empty_root());
        let summary = LogVerifier::new(TENANT, Some(signer.verifier()), vec![empty])
            .finish()
            .unwrap();
        assert_eq!(summary.events, 0);
        assert_eq!(summary.checkpoints_verified, 1);
    }

    #[test]
    fn changed_header_field_is_caught() {
        let mut log = log();
        log.rows[3].header_json = log.rows[3].header_json.replace("action_3", "action_X");
        let f = fails(&log);
        assert_eq!((f.kind, f.seq), (FailureKind::LeafHash, Some(3)));

        let mut log = self::log();
        forge(&mut log.rows[3], |h| h.action = Some("delete_repo".into()));
        let f = fails(&log);
        assert_eq!(
            (f.kind, f.checkpoint_size),
            (FailureKind::CheckpointRoot, Some(4))
        );

        let mut log = self::log();
        forge(&mut log.rows[9], |h| h.action = Some("delete_repo".into()));
        let summary = run(&log).unwrap();
        assert_eq!(
            summary.events_after_last_checkpoint, 2,
            "uncovered events are reported as such"
        );
    }

    #[test]
    fn non_canonical_or_foreign_headers_are_caught() {
        let mut log = log();
        let pretty: serde_json::Value = serde_json::from_str(&log.rows[1].header_json).unwrap();
        log.rows[1].header_json = serde_json::to_string_pretty(&pretty).unwrap();
        assert_eq!(fails(&log).kind, FailureKind::NonCanonicalHeader);

        let mut log = self::log();
        forge(&mut log.rows[1], |h| h.tenant = "globex".into());
        assert_eq!(fails(&log).kind, FailureKind::WrongTenant);

        let mut log = self::log();
        log.rows[1].header_json = "{}".into();
        assert_eq!(fails(&log).kind, FailureKind::MalformedHeader);
    }

    #[test]
    fn changed_column_is_caught() {
        let mut log = log();
        log.rows[6].columns.outcome = Some("allow".into());
        log.rows[6].columns.agent = None;
        let f = fails(&log);
        assert_eq!((f.kind, f.seq), (FailureKind::Columns, Some(6)));
        assert!(f.detail.contains("agent, outcome"), "{f}");
    }

    /// Stores write a payload as its canonical text, which verification checks by its digest
    /// alone; text in any other key order (older rows) is parsed and made canonical first.
    /// Either way a changed value is caught.
    #[test]
    fn payload_text_verifies_in_canonical_and_in_any_key_order() {
        let mut log = log();
        let payload = json!({"tool": "deploy", "args": {"z": 1, "a": [true, null, 2.5]}});
        let event = {
            let mut e = event(3);
            e.payload = payload.clone();
            e.seal();
            e
        };
        let canonical = warden_core::canonical::to_string(&payload);
        let as_written = serde_json::to_string(&payload).unwrap();
        assert_ne!(
            canonical, as_written,
            "the two forms must differ for this test"
        );
        for text in [&canonical, &as_written] {
            log.rows[3] = StoredEvent {
                payload_json: Some(text.clone()),
                ..row(3, &event)
            };
            rebuild(&mut log);
            assert_eq!(run(&log).unwrap().events, 10, "{text}");
        }
        for text in [
            canonical.replace("deploy", "delete"),
            as_written.replace("deploy", "delete"),
        ] {
            log.rows[3].payload_json = Some(text);
            let f = fails(&log);
            assert_eq!((f.kind, f.seq), (FailureKind::PayloadDigest, Some(3)));
        }
    }

    #[test]
    fn changed_payload_is_caught() {
        let mut log = log();
        log.rows[7].payload_json = Some(r#"{"n":700}"#.into());
        let f = fails(&log);
        assert_eq!((f.kind, f.seq), (FailureKind::PayloadDigest, Some(7)));

        log.rows[7].payload_json = Some("{not json".into());
        assert_eq!(fails(&log).kind, FailureKind::MalformedPayload);
    }

    #[test]
    fn deleted_middle_row_is_caught() {
        let mut log = log();
        log.rows.remove(5);
        let f = fails(&log);
        assert_eq!((f.kind, f.seq), (FailureKind::Sequence, Some(6)));
        assert!(f.to_string().contains("missing"), "{f}");

        renumber(&mut log.rows);
        let f = fails(&log);
        assert_eq!(
            (f.kind, f.checkpoint_size),
            (FailureKind::CheckpointRoot, Some(8))
        );
    }

    #[test]
    fn swapped_rows_are_caught() {
        let mut log = log();
        log.rows.swap(1, 2);
        assert_eq!(fails(&log).kind, FailureKind::Sequence);

        renumber(&mut log.rows);
        let f = fails(&log);
        assert_eq!(
            (f.kind, f.checkpoint_size),
            (FailureKind::CheckpointRoot, Some(4))
        );
    }

    #[test]
    fn inserted_row_is_caught() {
        let mut log = log();
        log.rows.insert(5, row(5, &event(99)));
        let f = fails(&log);
        assert_eq!((f.kind, f.seq), (FailureKind::Sequence, Some(5)));
        assert!(f.to_string().contains("inserted"), "{f}");

        renumber(&mut log.rows);
        assert_eq!(fails(&log).kind, FailureKind::CheckpointRoot);
    }

    #[test]
    fn deleted_tail_under_a_checkpoint_is_caught() {
        let mut log = log();
        log.rows.truncate(7);
        let f = fails(&log);
        assert_eq!(
            (f.kind, f.checkpoint_size),
            (FailureKind::Truncated, Some(8))
        );
        assert!(f.to_string().starts_with("checkpoint at size 8: "), "{f}");

        // Deleting uncovered tail events cannot be proven; only the count says so.
        let mut log = self::log();
        log.rows.truncate(9);
        assert_eq!(run(&log).unwrap().events_after_last_checkpoint, 1);
    }

    #[test]
    fn altered_checkpoint_root_is_caught() {
        let mut log = log();
        log.checkpoints[0].root[0] ^= 1;
        assert_eq!(fails(&log).kind, FailureKind::CheckpointRoot);

        // Stored row and events agree, but the signed note says otherwise.
        let mut log = self::log();
        let other = sign(&log.signer, 4, [7; 32]);
        log.checkpoints[0].note = other.note;
        assert_eq!(fails(&log).kind, FailureKind::CheckpointMismatch);
    }

    #[test]
    fn altered_note_signature_is_caught() {
        let mut log = log();
        let note = &log.checkpoints[1].note;
        let (text, sig) = note.rsplit_once(' ').unwrap();
        let mut sig = sig.as_bytes().to_vec();
        sig[20] = if sig[20] == b'A' { b'B' } else { b'A' };
        log.checkpoints[1].note = format!("{text} {}", String::from_utf8(sig).unwrap());
        let f = fails(&log);
        assert_eq!(
            (f.kind, f.checkpoint_size),
            (FailureKind::CheckpointSignature, Some(8))
        );

        let mut log = self::log();
        let stranger = CheckpointSigner::from_seed([99; 32]);
        log.checkpoints[1] = sign(&stranger, 8, log.checkpoints[1].root);
        assert_eq!(fails(&log).kind, FailureKind::CheckpointKey);

        let mut log = self::log();
        log.checkpoints[1].note = "garbage".into();
        assert_eq!(fails(&log).kind, FailureKind::MalformedCheckpoint);
    }

    #[test]
    fn checkpoint_for_another_tenant_is_caught() {
        let mut log = log();
        let cp = &log.checkpoints[0];
        let time = Utc.with_ymd_and_hms(2025, 2, 1, 0, 0, 0).unwrap();
        let note = log.signer.sign(&Checkpoint::new(
            Checkpoint::origin_for("globex"),
            cp.size,
            cp.root,
            time,
        ));
        log.checkpoints[0].note = note;
        assert_eq!(fails(&log).kind, FailureKind::CheckpointMismatch);
    }
}
