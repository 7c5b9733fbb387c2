//! The usage report in SQL, on SQLite and PostgreSQL: decisions only, counted by outcome per
//! group, inside the window (to the microsecond) and the namespace subtree, one tenant only.

#[macro_use]
mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use warden_core::{
    Actor, AuditEvent, DecisionSummary, NamespacePath, Outcome, ResourceRef, TenantId,
};
use warden_store::NewEvent;
use warden_store::usage::{UsageGroupBy, UsageQuery, UsageRow};

use common::{Backend, TestDb};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap()
}

#[allow(clippy::too_many_arguments)]
fn event(
    tenant: &str,
    ns: &str,
    agent: Option<&str>,
    user: Option<&str>,
    resource: (&str, &str),
    outcome: Option<Outcome>,
    at: DateTime<Utc>,
) -> NewEvent {
    let actor = Actor {
        agent: agent.map(str::to_owned),
        on_behalf_of: user.map(str::to_owned),
        ..Actor::default()
    };
    let mut e = AuditEvent::new(tenant, ns, "authz.decision", "warden.api", actor, json!({}));
    e.header.time = at;
    e.header.resource = Some(ResourceRef {
        resource_type: resource.0.into(),
        id: resource.1.into(),
    });
    e.header.decision = outcome.map(|outcome| DecisionSummary {
        outcome,
        policies: vec![],
        obligations: vec![],
        warnings: vec![],
        errors: vec![],
    });
    if outcome.is_none() {
        e.header.event_type = "token.created".into();
    }
    e.seal();
    NewEvent {
        event: e,
        dedupe: false,
    }
}

fn row(key: Option<&str>, allow: u64, deny: u64, ask: u64) -> UsageRow {
    UsageRow {
        key: key.map(str::to_owned),
        allow,
        deny,
        approval_required: ask,
        total: allow + deny + ask,
    }
}

async fn counts_decisions_by_group(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let tool = ("Tool", "github__merge");
    let other = ("Tool", "slack__post");
    let repo = ("Repository", "site");
    use Outcome::*;
    let events = vec![
        event(
            "acme",
            "acme/a",
            Some("bot"),
            Some("alice"),
            tool,
            Some(Allow),
            t0(),
        ),
        event(
            "acme",
            "acme/a",
            Some("bot"),
            Some("alice"),
            tool,
            Some(Deny),
            t0(),
        ),
        event(
            "acme",
            "acme/a/b",
            Some("bot"),
            None,
            other,
            Some(ApprovalRequired),
            t0(),
        ),
        event(
            "acme",
            "acme/a_b",
            Some("ops"),
            Some("bob"),
            repo,
            Some(Allow),
            t0(),
        ),
        event("acme", "acme", None, Some("bob"), tool, Some(Deny), t0()),
        // Not a decision: not counted.
        event("acme", "acme/a", Some("bot"), None, tool, None, t0()),
        // Outside the window by one microsecond on either side.
        event(
            "acme",
            "acme/a",
            Some("bot"),
            None,
            tool,
            Some(Allow),
            t0() - Duration::microseconds(1),
        ),
        event(
            "acme",
            "acme/a",
            Some("bot"),
            None,
            tool,
            Some(Allow),
            t0() + Duration::hours(1),
        ),
        // Another tenant.
        event(
            "globex",
            "globex",
            Some("bot"),
            Some("alice"),
            tool,
            Some(Allow),
            t0(),
        ),
    ];
    store.append_events(&events).await.unwrap();
    let acme = TenantId::parse("acme").unwrap();
    let q = |group_by, ns: Option<&str>| UsageQuery {
        from: t0(),
        to: t0() + Duration::hours(1),
        namespace: ns.map(|n| NamespacePath::parse(n).unwrap()),
        group_by,
    };
    let report = |group_by, ns| {
        let store = store.clone();
        let acme = acme.clone();
        async move { store.usage_report(&acme, &q(group_by, ns)).await.unwrap() }
    };

    assert_eq!(
        report(UsageGroupBy::Agent, None).await,
        [
            row(None, 0, 1, 0),
            row(Some("bot"), 1, 1, 1),
            row(Some("ops"), 1, 0, 0)
        ]
    );
    assert_eq!(
        report(UsageGroupBy::Tool, None).await,
        [
            row(None, 1, 0, 0),
            row(Some("github__merge"), 1, 2, 0),
            row(Some("slack__post"), 0, 0, 1)
        ]
    );
    assert_eq!(
        report(UsageGroupBy::User, None).await,
        [
            row(None, 0, 0, 1),
            row(Some("alice"), 1, 1, 0),
            row(Some("bob"), 1, 1, 0)
        ]
    );
    assert_eq!(
        report(UsageGroupBy::Outcome, None).await,
        [
            row(Some("allow"), 2, 0, 0),
            row(Some("approval_required"), 0, 0, 1),
            row(Some("deny"), 0, 2, 0)
        ]
    );
    // The subtree of acme/a: acme/a and acme/a/b, not acme/a_b.
    assert_eq!(
        report(UsageGroupBy::Namespace, Some("acme/a")).await,
        [row(Some("acme/a"), 1, 1, 0), row(Some("acme/a/b"), 0, 0, 1)]
    );
    // Another tenant's namespace under acme's id: nothing.
    assert!(report(UsageGroupBy::Agent, Some("globex")).await.is_empty());
    let globex = TenantId::parse("globex").unwrap();
    assert_eq!(
        store
            .usage_report(&globex, &q(UsageGroupBy::Agent, None))
            .await
            .unwrap(),
        [row(Some("bot"), 1, 0, 0)]
    );
}

on_both_backends!(counts_decisions_by_group);
