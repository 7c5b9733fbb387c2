//! Warden's domain vocabulary.
//!
//! Everything the doors (decision API, MCP gateway), the policy engine, the audit trail and
//! the stores agree on lives here: tenants and namespaces, principals and roles, decision
//! requests and decisions, the versioned audit event and its catalog, and the error kinds
//! every layer maps to. This crate does no I/O.

pub mod approval;
pub mod authz;
pub mod canonical;
pub mod catalog;
pub mod error;
pub mod event;
pub mod explain;
mod header_bytes;
pub mod ids;
pub mod metrics;
pub mod role;
pub mod simulation;
// Retention
pub mod retention;

pub use approval::{Approval, ApprovalAnswer, ApprovalChannel, ApprovalStatus, NewApproval};
pub use authz::{
    Decision, DecisionRequest, EntityRef, Obligation, Outcome, PolicyMode, PolicyRef, Resource,
    SessionFacts, Warning,
};
pub use error::{Error, Result};
pub use event::{
    Actor, AuditEvent, ClientInfo, DecisionSummary, EventHeader, ResourceRef, SCHEMA_VERSION,
    TraceContext,
};
pub use explain::{
    Clause, Explanation, FailedCondition, PolicyEffect, PolicyExplanation, PolicyStatus,
};
pub use ids::{NamespacePath, TenantId};
pub use role::Role;
