//! Why a request was decided as it was, for a person asking "why was my agent denied?".
//!
//! An explanation lists every policy the engine considered for the request (the slice of
//! the tenant's policies that can apply to its namespace, action, principal and resource),
//! says which matched and which determined the outcome, and for each policy that did not
//! match names the first condition that did not hold, with where it is written.

use serde::{Deserialize, Serialize};

use crate::{Outcome, PolicyMode, PolicyRef};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Explanation {
    /// The outcome explained.
    pub outcome: Outcome,
    /// One sentence for a person: what decided, or that nothing permitted the request.
    pub summary: String,
    /// Why the request was refused before any policy was evaluated (an unknown action, a
    /// principal type the action does not apply to, …), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The policies considered, in the order they were loaded. Policies of other namespaces,
    /// of other actions or for other principal or resource types are never considered.
    pub policies: Vec<PolicyExplanation>,
}

/// One considered policy and what became of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicyExplanation {
    pub policy: PolicyRef,
    pub effect: PolicyEffect,
    pub mode: PolicyMode,
    pub status: PolicyStatus,
    /// True for the policies that determined the outcome (the decision's `reasons`).
    pub determining: bool,
    /// For a policy that did not match or failed: the first condition that did not hold or
    /// could not be evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<FailedCondition>,
}

/// What a policy does when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyEffect {
    Permit,
    /// A permit with `@effect("ask")`: a person must approve.
    Ask,
    Forbid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyStatus {
    /// Its scope and all its conditions held.
    Matched,
    /// Its scope or one of its conditions did not hold.
    NotMatched,
    /// A condition could not be evaluated (an error denies).
    Error,
}

/// The first part of a policy that kept it from matching.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FailedCondition {
    pub clause: Clause,
    /// The condition as written: for a scope clause the constraint
    /// (`principal in Team::"maintainers"`); in a `when` clause the first conjunct that was
    /// false; for an `unless` clause its condition, which held.
    pub text: String,
    /// Where the condition is written in the policy's origin (1-based).
    pub line: u32,
    pub column: u32,
    /// The evaluation error, when the condition failed with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Which part of a policy a condition belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Clause {
    Principal,
    Action,
    Resource,
    When,
    Unless,
}

impl Clause {
    pub fn as_str(self) -> &'static str {
        match self {
            Clause::Principal => "principal",
            Clause::Action => "action",
            Clause::Resource => "resource",
            Clause::When => "when",
            Clause::Unless => "unless",
        }
    }
}

impl PolicyEffect {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyEffect::Permit => "permit",
            PolicyEffect::Ask => "ask",
            PolicyEffect::Forbid => "forbid",
        }
    }
}
