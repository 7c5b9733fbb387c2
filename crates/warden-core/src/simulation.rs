//! The report of a policy simulation: recorded decisions decided again under candidate
//! policies, and what would have changed.
//!
//! The work is `warden_policy::simulate` (deciding and counting) and the API's driver
//! (reading the recorded events); this is the shape both the CLI and
//! `POST /api/v1/policies/simulate` return.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Outcome;

/// How many example event ids each group keeps: the earliest ones of the window.
pub const EXAMPLES_PER_GROUP: usize = 5;

/// What would change if the candidate policies had been in force over the window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SimulationReport {
    pub tenant: String,
    /// The namespace subtree replayed; `null` for the whole tenant.
    pub namespace: Option<String>,
    /// Inclusive.
    #[schema(value_type = String, format = DateTime)]
    pub from: DateTime<Utc>,
    /// Exclusive.
    #[schema(value_type = String, format = DateTime)]
    pub to: DateTime<Utc>,
    pub candidate: CandidateSummary,
    /// Decision events found in the window (`authz.decision`, `mcp.tool.call.decided`,
    /// `mcp.resource.read.decided`, `mcp.prompt.get.decided`).
    pub recorded: u64,
    /// Decided again under the candidate (`recorded` minus `not_replayed`).
    pub replayed: u64,
    /// Replayed with the same outcome as recorded.
    pub unchanged: u64,
    /// Replayed with another outcome than recorded.
    pub changed: u64,
    pub not_replayed: NotReplayed,
    /// Replays in which a candidate policy failed to evaluate (the replay denies, as the
    /// server would): a sign of a broken candidate, whether or not the outcome changed.
    pub candidate_errors: Examples,
    /// Changed decisions whose recorded request holds redacted values (`hmac-sha256:…`): a
    /// policy reading such a value saw the clear value when it was recorded and sees its keyed
    /// hash in the replay, so these changes may come from the redaction, not the candidate.
    pub changed_with_redacted_values: Examples,
    /// Changed decisions by direction (`allow` → `deny`, …), largest first.
    pub directions: Vec<DirectionGroup>,
    /// Changed decisions by the policies that determined them, before or now (a decision is
    /// counted under each), largest first.
    pub by_policy: Vec<PolicyGroup>,
    /// Changed decisions by agent (the principal's id; `Type::"id"` for other principals).
    pub by_agent: Vec<Group>,
    /// Changed decisions by tool (the resource's id; `Type::"id"` for other resources).
    pub by_tool: Vec<Group>,
    /// Changed decisions by the namespace they were requested in.
    pub by_namespace: Vec<Group>,
    /// Wall time of the replay.
    pub duration_ms: u64,
}

/// The candidate policies the window was replayed under.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CandidateSummary {
    /// Policies loaded (all tenants of the candidate, `@mode("off")` ones included).
    pub policies: usize,
    /// Digest of the candidate's texts and schema extension.
    pub content_hash: String,
}

/// Recorded decisions that were not decided again.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NotReplayed {
    /// Refused by the registry at the gateway before any policy was asked (a tool not
    /// approved, changed since approval, or a blocked agent): policies cannot change these.
    pub registry_refused: Examples,
    /// The payload holding the request was purged (retention) or cannot be read.
    pub request_missing: Examples,
}

/// A count and the earliest example event ids.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Examples {
    pub count: u64,
    /// Event ids (`GET /api/v1/audit/events/{id}`), earliest first, at most
    /// [`EXAMPLES_PER_GROUP`].
    pub examples: Vec<String>,
}

/// Changed decisions that went from one outcome to another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DirectionGroup {
    pub from: Outcome,
    pub to: Outcome,
    pub count: u64,
    pub examples: Vec<String>,
}

/// Changed decisions sharing one agent, tool or namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Group {
    pub key: String,
    pub count: u64,
    /// Counts by direction, keyed `allow_to_deny`, `deny_to_allow`, `allow_to_approval_required`, ….
    pub directions: BTreeMap<String, u64>,
    pub examples: Vec<String>,
}

/// Changed decisions one policy determined, in the recorded decision or in the replay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicyGroup {
    /// The policy id (`@id`, or `<file>#<n>`).
    pub policy: String,
    /// Changed decisions it determined, before or now.
    pub count: u64,
    /// Of those, the ones it determined when recorded.
    pub determined_before: u64,
    /// Of those, the ones it determines under the candidate.
    pub determines_now: u64,
    pub directions: BTreeMap<String, u64>,
    pub examples: Vec<String>,
}

/// `allow_to_deny`: how directions are keyed in JSON.
pub fn direction_key(from: Outcome, to: Outcome) -> String {
    format!("{}_to_{}", from.as_str(), to.as_str())
}
