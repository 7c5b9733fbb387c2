//! Token roles: what a bearer may do inside its tenant.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything in its tenant.
    Admin,
    /// Read and change policies; read the audit trail.
    PolicyAdmin,
    /// Read the audit trail and reports.
    Auditor,
    /// One agent session: authorize its own actions (and use the gateway).
    Agent,
    /// A platform that authorizes on behalf of many agents and names the principal.
    Service,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::PolicyAdmin,
        Role::Auditor,
        Role::Agent,
        Role::Service,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::PolicyAdmin => "policy_admin",
            Role::Auditor => "auditor",
            Role::Agent => "agent",
            Role::Service => "service",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn can_authorize(self) -> bool {
        matches!(self, Role::Agent | Role::Service | Role::Admin)
    }
    pub fn can_read_audit(self) -> bool {
        matches!(self, Role::Admin | Role::Auditor | Role::PolicyAdmin)
    }
    pub fn can_write_policies(self) -> bool {
        matches!(self, Role::Admin | Role::PolicyAdmin)
    }
    pub fn can_ingest_events(self) -> bool {
        matches!(self, Role::Admin | Role::Service | Role::Agent)
    }
    pub fn can_manage_tokens(self) -> bool {
        matches!(self, Role::Admin)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
