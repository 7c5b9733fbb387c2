//! A decision request and the decision the policy engine returns for it.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{NamespacePath, TenantId};

/// A Cedar entity reference: `Agent::"claude-code"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntityRef {
    #[serde(rename = "type")]
    pub entity_type: String,
    pub id: String,
}

impl EntityRef {
    pub fn new(entity_type: impl Into<String>, id: impl Into<String>) -> Self {
        EntityRef {
            entity_type: entity_type.into(),
            id: id.into(),
        }
    }
}

impl std::fmt::Display for EntityRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}::{:?}", self.entity_type, self.id)
    }
}

/// An entity with the attributes and parents the caller knows about it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    #[serde(rename = "type")]
    pub entity_type: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<EntityRef>,
}

impl Resource {
    pub fn as_ref(&self) -> EntityRef {
        EntityRef::new(&self.entity_type, &self.id)
    }
}

/// Everything the policy engine needs to decide one action. Identity has already been
/// resolved at the door: `principal` comes from the agent-session token unless a service
/// token named it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionRequest {
    pub tenant: TenantId,
    pub namespace: NamespacePath,
    /// Usually an `Agent`; `User` and `ServiceAccount` are possible for platform calls.
    pub principal: Resource,
    /// The user the agent acts for, when there is one.
    pub on_behalf_of: Option<EntityRef>,
    /// The agent session id, when the request comes from an agent session.
    pub session: Option<String>,
    /// What the session has done so far (the gateway keeps them); policies read them as
    /// `context.session.*`. Empty when the door keeps no session state.
    #[serde(default, skip_serializing_if = "SessionFacts::is_empty")]
    pub facts: SessionFacts,
    /// Action name as in the schema, without the `Action::` prefix: `call_tool`.
    pub action: String,
    pub resource: Resource,
    /// Free JSON from the caller (tool arguments under `args`, client facts, …).
    pub context: Map<String, Value>,
    /// When the action is requested; policies see it as `context.time`.
    pub time: DateTime<Utc>,
}

/// Facts about an agent session, so that a policy can depend on what happened earlier in it
/// ("after a secret was read in this session, no tool that reaches the network").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionFacts {
    /// Tools called (allowed and forwarded) so far, as `server__tool`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub tools_called: BTreeSet<String>,
    /// Servers whose tools, resources or prompts were used.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub servers: BTreeSet<String>,
    /// Capability categories of the tools called and resources read (`read`, `secrets`, …).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub categories: BTreeSet<String>,
    /// Tool calls forwarded so far.
    #[serde(default)]
    pub calls: u64,
    /// Tool calls refused so far (by policy or by an approver).
    #[serde(default)]
    pub denied: u64,
}

impl SessionFacts {
    pub fn is_empty(&self) -> bool {
        *self == SessionFacts::default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    Deny,
    /// A permit with `@effect("ask")` matched and nothing forbids: a person must approve.
    ApprovalRequired,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::ApprovalRequired => "approval_required",
        }
    }
    pub fn parse(s: &str) -> Option<Outcome> {
        [Outcome::Allow, Outcome::Deny, Outcome::ApprovalRequired]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// How a policy takes part in decisions (`@mode` annotation).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    #[default]
    Enforce,
    /// Evaluated and reported ("would deny"), never acted on.
    Warn,
    /// Not evaluated at all.
    Off,
}

/// Where a policy comes from, so a person can find and fix it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicyRef {
    /// `@id` annotation when present, otherwise `<origin>#<n>`.
    pub id: String,
    pub namespace: String,
    /// The file (relative to the policy directory) or `api:<namespace>` for API-managed policies.
    pub origin: String,
    /// 1-based line of the policy in its origin.
    pub line: u32,
    /// The policy's `@reason` annotation, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Something the door must do besides allowing or refusing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Obligation {
    /// Replace the value at `path` (e.g. `args.token`) by its keyed hash before it is stored.
    Redact { path: String, policy: String },
    /// The action waits for a person's approval.
    Approval { policies: Vec<String> },
}

/// A warn-mode policy that would have changed the decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Warning {
    pub policy: PolicyRef,
    /// What the policy would have decided if enforced (`deny` or `approval_required`).
    pub would: Outcome,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Decision {
    pub outcome: Outcome,
    /// The policies that determined the outcome (forbids for a deny, permits otherwise).
    pub reasons: Vec<PolicyRef>,
    pub obligations: Vec<Obligation>,
    pub warnings: Vec<Warning>,
    /// Evaluation errors. Any error makes the outcome `deny`: an error never allows.
    pub errors: Vec<String>,
    /// How many policies were evaluated for this request (the slice).
    pub evaluated: usize,
}

impl Decision {
    pub fn deny_with_error(msg: impl Into<String>) -> Decision {
        Decision {
            outcome: Outcome::Deny,
            reasons: vec![],
            obligations: vec![],
            warnings: vec![],
            errors: vec![msg.into()],
            evaluated: 0,
        }
    }

    /// Paths to redact before storage, from `Redact` obligations.
    pub fn redact_paths(&self) -> impl Iterator<Item = &str> {
        self.obligations.iter().filter_map(|o| match o {
            Obligation::Redact { path, .. } => Some(path.as_str()),
            _ => None,
        })
    }
}
