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
    /// A person who answers approval requests (held agent actions); may read them and
    /// approve or deny, nothing else.
    Approver,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::PolicyAdmin,
        Role::Auditor,
        Role::Agent,
        Role::Service,
        Role::Approver,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::PolicyAdmin => "policy_admin",
            Role::Auditor => "auditor",
            Role::Agent => "agent",
            Role::Service => "service",
            Role::Approver => "approver",
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
    /// List and read approval requests.
    pub fn can_read_approvals(self) -> bool {
        matches!(
            self,
            Role::Admin | Role::PolicyAdmin | Role::Auditor | Role::Approver
        )
    }
    /// Approve or deny a held action. Never an agent or a service: the party that asks does
    /// not answer.
    pub fn can_answer_approvals(self) -> bool {
        matches!(self, Role::Admin | Role::PolicyAdmin | Role::Approver)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_only_people_answer_approvals() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        let answer: Vec<_> = Role::ALL
            .into_iter()
            .filter(|r| r.can_answer_approvals())
            .collect();
        assert_eq!(answer, [Role::Admin, Role::PolicyAdmin, Role::Approver]);
        assert!(Role::Auditor.can_read_approvals() && !Role::Auditor.can_answer_approvals());
        for r in [Role::Agent, Role::Service] {
            assert!(!r.can_read_approvals() && !r.can_answer_approvals());
        }
        let approver = Role::Approver;
        assert!(
            !approver.can_authorize()
                && !approver.can_read_audit()
                && !approver.can_write_policies()
                && !approver.can_ingest_events()
                && !approver.can_manage_tokens()
        );
    }
}
