//! Records the store keeps and the shapes of its queries.

use chrono::{DateTime, Utc};
use serde::Serialize;
use warden_audit::merkle::Hash;
use warden_core::{AuditEvent, NamespacePath, Role, TenantId};

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

#[derive(Clone, Debug)]
pub struct NewEvent {
    pub event: AuditEvent,
    /// Check the id against recorded events first (ingested events may be re-sent).
    pub dedupe: bool,
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
