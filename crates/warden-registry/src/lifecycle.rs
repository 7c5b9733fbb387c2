//! Lifecycle of servers and tools: which state changes are allowed, and who may make them.
//!
//! ```text
//!                 approve                deprecate
//! pending_review ─────────► approved ─────────────► deprecated
//!       ▲  ▲                   │  ▲    un-deprecate     │
//!       │  └──── re-review ────┘  └─────────────────────┘
//!       │        (also from deprecated)
//!       │ unblock
//!    blocked ◄──── block (from any other state)
//! ```
//!
//! Who may do what follows from what each role is for: the people who write policy decide
//! what is approved (`admin`, `policy_admin`); the security team may stop a tool at once but
//! not approve one (`auditor` may block); lifting a block is the tenant administrator's
//! alone (`admin`), so a block by security cannot be undone by the people it was meant to
//! stop. Every transition carries a reason, which the audit event records.

use serde::{Deserialize, Serialize};
use warden_core::Role;

use crate::model::State;

/// The kinds of transition, named as the audit trail and the API name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// `pending_review → approved`.
    Approve,
    /// `approved → deprecated`.
    Deprecate,
    /// `deprecated → approved`.
    Undeprecate,
    /// `approved | deprecated → pending_review`, e.g. after its definition changed.
    ReReview,
    /// Any other state `→ blocked`.
    Block,
    /// `blocked → pending_review`: unblocked items are reviewed again, never approved at once.
    Unblock,
}

impl Transition {
    /// The transition from `from` to `to`, or `None` when there is none.
    pub fn between(from: State, to: State) -> Option<Transition> {
        use State::*;
        match (from, to) {
            (PendingReview, Approved) => Some(Transition::Approve),
            (Approved, Deprecated) => Some(Transition::Deprecate),
            (Deprecated, Approved) => Some(Transition::Undeprecate),
            (Approved | Deprecated, PendingReview) => Some(Transition::ReReview),
            (PendingReview | Approved | Deprecated, Blocked) => Some(Transition::Block),
            (Blocked, PendingReview) => Some(Transition::Unblock),
            _ => None,
        }
    }

    /// The roles allowed to make it.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Transition::Approve
            | Transition::Deprecate
            | Transition::Undeprecate
            | Transition::ReReview => &[Role::Admin, Role::PolicyAdmin],
            Transition::Block => &[Role::Admin, Role::PolicyAdmin, Role::Auditor],
            Transition::Unblock => &[Role::Admin],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Approve => "approve",
            Transition::Deprecate => "deprecate",
            Transition::Undeprecate => "undeprecate",
            Transition::ReReview => "re_review",
            Transition::Block => "block",
            Transition::Unblock => "unblock",
        }
    }
}

/// The states reachable from `from`.
pub fn allowed_targets(from: State) -> Vec<State> {
    State::ALL
        .into_iter()
        .filter(|&to| Transition::between(from, to).is_some())
        .collect()
}

/// Why a transition was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error(
        "cannot change state from {from} to {to}; from {from} the allowed targets are {}",
        list(allowed)
    )]
    NotAllowed {
        from: State,
        to: State,
        allowed: Vec<State>,
    },
    #[error(
        "role {role} may not change a state to {to}; this transition needs one of the roles {}",
        list(allowed_roles)
    )]
    Forbidden {
        role: Role,
        to: State,
        allowed_roles: Vec<Role>,
    },
    #[error("a reason is required for every state change (it is recorded in the audit trail)")]
    MissingReason,
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks one state change: allowed from the current state, by this role, with a reason.
/// The checks run in that order, so the message names the first thing to fix.
/// `Transition::between` names the change for the audit event.
pub fn check(from: State, to: State, role: Role, reason: &str) -> Result<(), TransitionError> {
    let Some(transition) = Transition::between(from, to) else {
        return Err(TransitionError::NotAllowed {
            from,
            to,
            allowed: allowed_targets(from),
        });
    };
    if !transition.roles().contains(&role) {
        return Err(TransitionError::Forbidden {
            role,
            to,
            allowed_roles: transition.roles().to_vec(),
        });
    }
    if reason.trim().is_empty() {
        return Err(TransitionError::MissingReason);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    /// Every (from, to) pair: exactly the listed ones are allowed, each with its roles.
    #[test]
    fn every_transition_and_role_is_as_specified() {
        let admins = [Role::Admin, Role::PolicyAdmin];
        let expected: &[(State, State, &[Role])] = &[
            (PendingReview, Approved, &admins),
            (Approved, Deprecated, &admins),
            (Deprecated, Approved, &admins),
            (Approved, PendingReview, &admins),
            (Deprecated, PendingReview, &admins),
            (
                PendingReview,
                Blocked,
                &[Role::Admin, Role::PolicyAdmin, Role::Auditor],
            ),
            (
                Approved,
                Blocked,
                &[Role::Admin, Role::PolicyAdmin, Role::Auditor],
            ),
            (
                Deprecated,
                Blocked,
                &[Role::Admin, Role::PolicyAdmin, Role::Auditor],
            ),
            (Blocked, PendingReview, &[Role::Admin]),
        ];
        for from in State::ALL {
            for to in State::ALL {
                let allowed_roles = expected
                    .iter()
                    .find(|(f, t, _)| *f == from && *t == to)
                    .map(|(_, _, r)| *r);
                for role in Role::ALL {
                    let got = check(from, to, role, "reviewed");
                    match allowed_roles {
                        None => assert!(
                            matches!(got, Err(TransitionError::NotAllowed { .. })),
                            "{from} -> {to} by {role}: {got:?}"
                        ),
                        Some(roles) if roles.contains(&role) => {
                            assert!(got.is_ok(), "{from} -> {to} by {role}: {got:?}")
                        }
                        Some(roles) => assert_eq!(
                            got,
                            Err(TransitionError::Forbidden {
                                role,
                                to,
                                allowed_roles: roles.to_vec()
                            }),
                            "{from} -> {to} by {role}"
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn transitions_are_named() {
        assert_eq!(
            Transition::between(PendingReview, Approved),
            Some(Transition::Approve)
        );
        assert_eq!(
            Transition::between(Approved, Deprecated),
            Some(Transition::Deprecate)
        );
        assert_eq!(
            Transition::between(Deprecated, Approved),
            Some(Transition::Undeprecate)
        );
        assert_eq!(
            Transition::between(Deprecated, PendingReview),
            Some(Transition::ReReview)
        );
        assert_eq!(
            Transition::between(Approved, Blocked),
            Some(Transition::Block)
        );
        assert_eq!(
            Transition::between(Blocked, PendingReview),
            Some(Transition::Unblock)
        );
        assert_eq!(Transition::between(Blocked, Approved), None);
        assert_eq!(Transition::between(PendingReview, Deprecated), None);
        assert_eq!(check(Blocked, PendingReview, Role::Admin, "fixed"), Ok(()));
    }

    #[test]
    fn same_state_is_refused_and_the_message_lists_the_targets() {
        for s in State::ALL {
            assert!(matches!(
                check(s, s, Role::Admin, "x"),
                Err(TransitionError::NotAllowed { .. })
            ));
        }
        let e = check(Approved, Approved, Role::Admin, "x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot change state from approved to approved; from approved the allowed targets \
             are pending_review, deprecated, blocked"
        );
        let e = check(Blocked, Approved, Role::Admin, "x").unwrap_err();
        assert!(
            e.to_string().contains("allowed targets are pending_review"),
            "{e}"
        );
    }

    #[test]
    fn security_may_block_but_not_approve_or_unblock() {
        assert!(check(Approved, Blocked, Role::Auditor, "CVE-2025-1234").is_ok());
        let e = check(PendingReview, Approved, Role::Auditor, "looks fine").unwrap_err();
        assert_eq!(
            e.to_string(),
            "role auditor may not change a state to approved; this transition needs one of the \
             roles admin, policy_admin"
        );
        let e = check(Blocked, PendingReview, Role::PolicyAdmin, "fixed").unwrap_err();
        assert!(
            e.to_string().ends_with("needs one of the roles admin"),
            "{e}"
        );
        for r in [Role::Agent, Role::Service, Role::Approver] {
            assert!(check(Approved, Blocked, r, "x").is_err());
        }
    }

    #[test]
    fn a_reason_is_required() {
        for reason in ["", "   ", "\n\t"] {
            assert_eq!(
                check(PendingReview, Approved, Role::Admin, reason),
                Err(TransitionError::MissingReason)
            );
        }
        // The role check comes first: an auditor without a reason learns about the role.
        assert!(matches!(
            check(PendingReview, Approved, Role::Auditor, ""),
            Err(TransitionError::Forbidden { .. })
        ));
        assert!(
            TransitionError::MissingReason
                .to_string()
                .contains("reason is required")
        );
    }
}
