//! Warden's audit trail, as pure logic.
//!
//! Each tenant's events form an append-only Merkle log (RFC 6962 hashing) whose heads Warden
//! signs as checkpoints, so anyone holding the public key can check offline that no recorded
//! event was changed, removed, reordered or slipped in. Secrets are replaced by keyed hashes
//! before anything is stored. This crate holds the hashing and proofs ([`merkle`]), the
//! checkpoint notes ([`checkpoint`]), redaction ([`redact`]), the queryable columns derived
//! from an event ([`index`]), the streaming verifier ([`verify`]) and the export formats
//! ([`export`]); the stores and the CLI do the I/O around it.

pub mod checkpoint;
pub mod export;
pub mod index;
pub mod merkle;
pub mod redact;
pub mod verify;

pub use checkpoint::{Checkpoint, CheckpointError, CheckpointSigner, CheckpointVerifier};
pub use export::{ExportFormat, ExportRecord};
pub use index::IndexedColumns;
pub use merkle::{CompactRange, Hash, MerkleError, NodeId, ProofPlan};
pub use redact::{RedactionReport, Redactor, tenant_key};
pub use verify::{
    FailureKind, LogVerifier, StoredCheckpoint, StoredEvent, VerifyFailure, VerifySummary,
};
