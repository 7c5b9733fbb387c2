//! The columns a store keeps next to each event so queries need not parse its JSON.
//!
//! They are derived from the header in this one place, so every store fills them the same way
//! and the verifier can recompute them: a query column edited behind the log's back (to hide
//! an event from a search, say) is caught like any other change.

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use warden_core::EventHeader;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedColumns {
    pub id: Uuid,
    /// Microseconds since the Unix epoch, the header's full precision.
    pub time_micros: i64,
    pub namespace: String,
    pub event_type: String,
    /// The principal as Cedar writes it: `Agent::"ci-bot"`.
    pub principal: Option<String>,
    pub agent: Option<String>,
    pub on_behalf_of: Option<String>,
    pub session: Option<String>,
    pub action: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    /// `allow`, `deny` or `approval_required`, for events that carry a decision.
    pub outcome: Option<String>,
}

impl IndexedColumns {
    pub fn of(header: &EventHeader) -> IndexedColumns {
        IndexedColumns {
            id: header.id,
            time_micros: header.time.timestamp_micros(),
            namespace: header.namespace.clone(),
            event_type: header.event_type.clone(),
            principal: header.actor.principal.as_ref().map(ToString::to_string),
            agent: header.actor.agent.clone(),
            on_behalf_of: header.actor.on_behalf_of.clone(),
            session: header.actor.session.clone(),
            action: header.action.clone(),
            resource_type: header.resource.as_ref().map(|r| r.resource_type.clone()),
            resource_id: header.resource.as_ref().map(|r| r.id.clone()),
            outcome: header
                .decision
                .as_ref()
                .map(|d| d.outcome.as_str().to_owned()),
        }
    }

    /// Names of the columns that differ from `other`, for a message a person can act on.
    pub fn differences(&self, other: &IndexedColumns) -> Vec<&'static str> {
        let mut diff = Vec::new();
        let mut check = |name: &'static str, same: bool| {
            if !same {
                diff.push(name);
            }
        };
        check("id", self.id == other.id);
        check("time", self.time_micros == other.time_micros);
        check("namespace", self.namespace == other.namespace);
        check("event_type", self.event_type == other.event_type);
        check("principal", self.principal == other.principal);
        check("agent", self.agent == other.agent);
        check("on_behalf_of", self.on_behalf_of == other.on_behalf_of);
        check("session", self.session == other.session);
        check("action", self.action == other.action);
        check("resource_type", self.resource_type == other.resource_type);
        check("resource_id", self.resource_id == other.resource_id);
        check("outcome", self.outcome == other.outcome);
        diff
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use warden_core::{Actor, AuditEvent, DecisionSummary, EntityRef, Outcome, ResourceRef};

    use super::*;

    #[test]
    fn columns_come_from_the_header() {
        let actor = Actor {
            principal: Some(EntityRef::new("Agent", "ci-bot")),
            agent: Some("ci-bot".into()),
            on_behalf_of: Some("alice".into()),
            session: Some("s-1".into()),
            ..Actor::default()
        };
        let mut e = AuditEvent::new(
            "acme",
            "acme/platform",
            "authz.decision",
            "warden.api",
            actor,
            json!({}),
        );
        e.header.action = Some("call_tool".into());
        e.header.resource = Some(ResourceRef {
            resource_type: "Tool".into(),
            id: "github.create_issue".into(),
        });
        e.header.decision = Some(DecisionSummary {
            outcome: Outcome::ApprovalRequired,
            policies: vec![],
            obligations: vec![],
            warnings: vec![],
            errors: vec![],
        });
        let c = IndexedColumns::of(&e.header);
        assert_eq!(c.principal.as_deref(), Some(r#"Agent::"ci-bot""#));
        assert_eq!(c.outcome.as_deref(), Some("approval_required"));
        assert_eq!(c.resource_type.as_deref(), Some("Tool"));
        assert_eq!(c.time_micros, e.header.time.timestamp_micros());
        assert!(c.differences(&c).is_empty());

        let mut other = c.clone();
        other.outcome = Some("allow".into());
        other.namespace = "acme".into();
        assert_eq!(c.differences(&other), ["namespace", "outcome"]);
    }
}
