//! Approval requests: a held action waiting for a person's yes or no.
//!
//! An approval is bound to exactly one action: the tenant, the agent session, the tool and
//! the SHA-256 of the canonical arguments, and it expires. Granting it lets that action
//! proceed once; it can never be used for other arguments, another session, or after it
//! expired.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for a person.
    Pending,
    /// Granted; the held action may proceed (once).
    Approved,
    /// Refused.
    Denied,
    /// Nobody answered before `expires_at`.
    Expired,
    /// Granted and used by the action it was bound to.
    Consumed,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Consumed => "consumed",
        }
    }
    pub fn parse(s: &str) -> Option<ApprovalStatus> {
        [
            ApprovalStatus::Pending,
            ApprovalStatus::Approved,
            ApprovalStatus::Denied,
            ApprovalStatus::Expired,
            ApprovalStatus::Consumed,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// How an approval was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalChannel {
    /// `POST /api/v1/approvals/{id}/approve|deny`.
    Api,
    /// `warden approvals approve|deny`.
    Cli,
    /// The on-behalf-of user, asked in the agent's own client (MCP elicitation).
    Elicitation,
}

impl ApprovalChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalChannel::Api => "api",
            ApprovalChannel::Cli => "cli",
            ApprovalChannel::Elicitation => "elicitation",
        }
    }
    pub fn parse(s: &str) -> Option<ApprovalChannel> {
        [
            ApprovalChannel::Api,
            ApprovalChannel::Cli,
            ApprovalChannel::Elicitation,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// What the gateway (or another door) asks a person to approve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewApproval {
    pub tenant: String,
    pub namespace: String,
    /// The agent session (token id) the action belongs to.
    pub session: String,
    pub agent: Option<String>,
    pub on_behalf_of: Option<String>,
    /// The action of the schema, e.g. `call_tool`.
    pub action: String,
    /// The resource, e.g. the gateway's tool name `server__tool`.
    pub resource_type: String,
    pub resource_id: String,
    /// SHA-256 (hex) of the canonical JSON of the arguments.
    pub args_sha256: String,
    /// The arguments as the approver sees them (already redacted).
    pub arguments: Value,
    /// Ids of the policies that asked for approval, and their reasons.
    pub policies: Vec<String>,
    pub reason: Option<String>,
    /// The audit event of the decision that asked for approval.
    pub decision_event: Option<Uuid>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Approval {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    pub tenant: String,
    pub namespace: String,
    pub session: String,
    pub agent: Option<String>,
    pub on_behalf_of: Option<String>,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    pub args_sha256: String,
    #[schema(value_type = Object)]
    pub arguments: Value,
    pub policies: Vec<String>,
    pub reason: Option<String>,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub decision_event: Option<Uuid>,
    pub status: ApprovalStatus,
    pub requested_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Who answered (token id, or the user for elicitation), how, when, and why.
    pub resolved_by: Option<String>,
    pub resolved_via: Option<ApprovalChannel>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub comment: Option<String>,
}

impl Approval {
    /// The status as of `now`: a pending approval past its expiry is expired, whether or not
    /// anyone has written that down yet.
    pub fn status_at(&self, now: DateTime<Utc>) -> ApprovalStatus {
        if self.status == ApprovalStatus::Pending && now >= self.expires_at {
            ApprovalStatus::Expired
        } else {
            self.status
        }
    }
}

/// A person's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalAnswer {
    pub approve: bool,
    pub by: String,
    pub via: ApprovalChannel,
    pub comment: Option<String>,
}
