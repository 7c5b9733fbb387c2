//! Records the store keeps and the shapes of its queries.

use chrono::{DateTime, Utc};
use serde::Serialize;
use warden_audit::index::IndexedColumns;
use warden_audit::merkle::{Hash, leaf_hash};
use warden_core::{ApprovalStatus, AuditEvent, Error, NamespacePath, Role, TenantId};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TokenRecord {
    pub id: String,
    pub tenant: TenantId,
    /// Hex SHA-256 of the secret. The secret itself is never stored.
    #[serde(skip)]
    pub secret_sha256: String,
    pub role: Role,
    pub agent: Option<String>,
    pub on_behalf_of: Option<String>,
    pub namespace: Option<NamespacePath>,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TokenRecord {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|t| t > now)
    }
}

#[derive(Clone, Debug)]
pub struct PolicyChange {
    pub tenant: TenantId,
    pub namespace: NamespacePath,
    /// `None` deletes the namespace's API-managed policies.
    pub text: Option<String>,
    pub author: String,
    pub message: Option<String>,
    /// Optimistic concurrency: the version the writer based its change on (0 = none yet).
    pub expected_version: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PolicyVersion {
    pub tenant: TenantId,
    pub namespace: String,
    pub version: i64,
    pub text: Option<String>,
    pub sha256: Option<String>,
    pub author: String,
    pub message: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A policy bundle to record as the tenant's next version.
#[derive(Clone, Debug)]
pub struct NewBundleVersion {
    pub tenant: TenantId,
    /// Path (relative to the policy directory) -> text.
    pub files: std::collections::BTreeMap<String, String>,
    /// SHA-256 of the bundle's content, as the policy crate computes it.
    pub sha256: String,
    /// `enforce`, `warn` or `off`.
    pub mode: String,
    /// `api` or `directory`.
    pub source: String,
    pub author: String,
    pub message: Option<String>,
    pub test_failures: Option<serde_json::Value>,
    /// Optimistic concurrency: the version the writer based its bundle on (0 = none yet).
    /// `None` appends whatever the current version is.
    pub expected_version: Option<i64>,
}

/// One recorded version of a tenant's policy bundle.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BundleVersion {
    pub tenant: TenantId,
    /// 1, 2, 3, … per tenant.
    pub version: i64,
    pub sha256: String,
    pub files: std::collections::BTreeMap<String, String>,
    pub mode: String,
    pub source: String,
    pub author: String,
    pub message: Option<String>,
    pub test_failures: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

impl NewBundleVersion {
    /// Refuses the write when the writer based its bundle on another version than `current`
    /// (optimistic concurrency; `Conflict` with what to do about it).
    pub fn check_base(&self, current: i64) -> Result<(), Error> {
        match self.expected_version {
            Some(expected) if expected != current => Err(Error::Conflict(format!(
                "the policy bundle of {} is at version {current}, not {expected}; fetch it, apply your change to it and try again",
                self.tenant
            ))),
            _ => Ok(()),
        }
    }

    /// The version to store, numbered `version`, created `created_at`.
    pub fn into_version(self, version: i64, created_at: DateTime<Utc>) -> BundleVersion {
        BundleVersion {
            tenant: self.tenant,
            version,
            sha256: self.sha256,
            files: self.files,
            mode: self.mode,
            source: self.source,
            author: self.author,
            message: self.message,
            test_failures: self.test_failures,
            created_at,
        }
    }
}

/// The JSON columns of a stored bundle (`files`, `test_failures`) decoded, or an error naming
/// the row.
pub fn decode_bundle_json(
    tenant: &TenantId,
    version: i64,
    files: &str,
    test_failures: Option<&str>,
) -> Result<
    (
        std::collections::BTreeMap<String, String>,
        Option<serde_json::Value>,
    ),
    Error,
> {
    let bad = |what: String| Error::internal(format!("stored bundle {tenant} v{version}: {what}"));
    let files = serde_json::from_str(files).map_err(|e| bad(format!("files: {e}")))?;
    let test_failures = test_failures
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| bad(format!("test_failures: {e}")))?;
    Ok((files, test_failures))
}

#[derive(Clone, Debug)]
pub struct NewEvent {
    pub event: AuditEvent,
    /// Check the id against recorded events first (ingested events may be re-sent).
    pub dedupe: bool,
}

/// An event in the form every store writes: the canonical header (what the Merkle leaf
/// commits to), the payload text, the leaf hash and the query columns. Encoding is pure CPU
/// and independent of where the event lands in the log, so the audit pipeline does it on the
/// caller's task — on every core at once — and its single writer does only database work.
#[derive(Clone, Debug)]
pub struct EncodedEvent {
    pub tenant: String,
    pub dedupe: bool,
    pub columns: IndexedColumns,
    pub header: String,
    /// `None` for an event without payload (`null`).
    pub payload: Option<String>,
    pub leaf: Hash,
}

impl EncodedEvent {
    pub fn of(event: &AuditEvent, dedupe: bool) -> EncodedEvent {
        let header =
            String::from_utf8(event.header.canonical_bytes()).expect("canonical JSON is UTF-8");
        EncodedEvent {
            tenant: event.header.tenant.clone(),
            dedupe,
            columns: IndexedColumns::of(&event.header),
            leaf: leaf_hash(header.as_bytes()),
            header,
            // The canonical text: the very bytes `payload_sha256` digests, so the stored
            // payload can be checked against its header with a hash alone (see
            // `warden audit verify`), and written faster than through serde's serializer.
            payload: match &event.payload {
                serde_json::Value::Null => None,
                p => Some(warden_core::canonical::to_string(p)),
            },
        }
    }
}

impl From<&NewEvent> for EncodedEvent {
    fn from(e: &NewEvent) -> EncodedEvent {
        EncodedEvent::of(&e.event, e.dedupe)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    Stored { seq: u64 },
    Duplicate,
}

/// Query filters. All are optional and combine with AND.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// The namespace and everything below it.
    pub namespace: Option<NamespacePath>,
    pub event_type: Option<String>,
    pub agent: Option<String>,
    pub on_behalf_of: Option<String>,
    pub session: Option<String>,
    pub action: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub outcome: Option<String>,
}

#[derive(Clone, Copy, Debug)]
pub struct PageRequest {
    /// Keyset cursor: only events with a smaller `seq` (newest first) or larger (oldest first).
    pub after_seq: Option<u64>,
    pub limit: u32,
    pub oldest_first: bool,
}

#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub seq: u64,
    pub event: AuditEvent,
    /// The stored header text exactly as committed to by the leaf.
    pub header_json: String,
    pub payload_json: Option<String>,
    pub leaf_hash: Hash,
    pub columns: warden_audit::index::IndexedColumns,
}

#[derive(Clone, Debug, Default)]
pub struct MerkleHead {
    pub size: u64,
    pub frontier: Vec<Hash>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredCheckpoint {
    pub size: u64,
    #[serde(serialize_with = "hex_hash")]
    pub root: Hash,
    pub time: DateTime<Utc>,
    /// The signed note, verifiable with the public key alone.
    pub note: String,
}

fn hex_hash<S: serde::Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(h))
}

/// Which approvals to list, newest first. Filters combine with AND.
#[derive(Clone, Debug)]
pub struct ApprovalFilter {
    /// The status as of `now` ([`warden_core::Approval::status_at`]): `Expired` also matches
    /// pending approvals past their expiry, and `Pending` leaves them out.
    pub status: Option<ApprovalStatus>,
    /// The namespace and everything below it.
    pub namespace: Option<NamespacePath>,
    /// Keyset cursor: only approvals with a smaller (older) id.
    pub before: Option<uuid::Uuid>,
    pub limit: u32,
    /// The time `status` is judged at.
    pub now: DateTime<Utc>,
}

impl ApprovalFilter {
    /// Every approval as of `now`, at most `limit`.
    pub fn all(now: DateTime<Utc>, limit: u32) -> ApprovalFilter {
        ApprovalFilter {
            status: None,
            namespace: None,
            before: None,
            limit,
            now,
        }
    }
}

/// Why an answer to an approval was not applied.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// No such approval in this tenant.
    #[error("approval not found")]
    NotFound,
    /// Someone answered first (or the grant was already used): the status it has.
    #[error("this approval was already answered: it is {}", .0.as_str())]
    AlreadyAnswered(ApprovalStatus),
    /// Nobody answered before its expiry; it can no longer be answered.
    #[error("this approval expired before it was answered")]
    Expired,
    #[error(transparent)]
    Store(#[from] Error),
}

impl From<AnswerError> for Error {
    fn from(e: AnswerError) -> Error {
        match e {
            AnswerError::NotFound => Error::not_found("approval not found"),
            AnswerError::AlreadyAnswered(status) => Error::Conflict(format!(
                "this approval was already answered and is now {}; an answer cannot be changed",
                status.as_str()
            )),
            AnswerError::Expired => Error::Conflict(
                "this approval expired before it was answered; the agent has to ask again".into(),
            ),
            AnswerError::Store(e) => e,
        }
    }
}
