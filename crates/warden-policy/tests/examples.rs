//! The example policy directory used by the quickstart decides as documented.

mod common;

use common::*;
use serde_json::json;
use warden_core::Outcome;
use warden_policy::Engine;

fn example_engine() -> Engine {
    Engine::build(
        vec![
            source(
                "acme",
                "acme/base.cedar",
                include_str!("../../../examples/policies/acme/base.cedar"),
            ),
            source(
                "acme/platform",
                "acme/platform/tools.cedar",
                include_str!("../../../examples/policies/acme/platform/tools.cedar"),
            ),
        ],
        Some(include_str!(
            "../../../examples/policies/schema.cedarschema"
        )),
    )
    .unwrap_or_else(|errs| panic!("{errs:?}"))
}

fn claude(tool: &str) -> warden_core::DecisionRequest {
    let mut req = call_tool("acme/platform/api", tool);
    req.principal.id = "claude-code".into();
    req
}

#[test]
fn reading_a_file_is_allowed() {
    let d = example_engine().decide(&claude("github__get_file_contents"));
    assert_eq!(d.outcome, Outcome::Allow, "{d:?}");
    assert!(d.reasons.iter().any(|r| r.id == "platform.read-tools"));
    assert_eq!(d.redact_paths().collect::<Vec<_>>(), ["args.token"]);
}

#[test]
fn deleting_a_repository_is_denied_with_a_reason() {
    let d = example_engine().decide(&claude("github__delete_repository"));
    assert_eq!(d.outcome, Outcome::Deny, "{d:?}");
    assert_eq!(ids(&d.reasons), ["acme.no-repository-deletion"]);
    assert_eq!(d.reasons[0].origin, "acme/base.cedar");
    assert!(
        d.reasons[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("irreversible")
    );
}

#[test]
fn a_production_deploy_needs_approval() {
    let d = example_engine().decide(&with_args(
        claude("deploy__trigger_deploy"),
        json!({"environment": "production"}),
    ));
    assert_eq!(d.outcome, Outcome::ApprovalRequired, "{d:?}");
    assert_eq!(ids(&d.reasons), ["platform.production-deploy-ask"]);
    let d = example_engine().decide(&with_args(
        claude("deploy__trigger_deploy"),
        json!({"environment": "staging"}),
    ));
    assert_eq!(d.outcome, Outcome::Allow, "{d:?}");
}

#[test]
fn after_hours_writes_are_only_reported() {
    let mut req = claude("github__create_pull_request");
    req.time = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2025, 6, 7, 23, 0, 0).unwrap();
    let d = example_engine().decide(&req);
    assert_eq!(d.outcome, Outcome::ApprovalRequired, "{d:?}");
    assert_eq!(d.warnings.len(), 1);
    assert_eq!(d.warnings[0].policy.id, "platform.after-hours-writes");
    assert_eq!(d.warnings[0].would, Outcome::Deny);
}

#[test]
fn critical_tools_are_confined_to_ops_and_secrets_are_never_deleted() {
    let e = example_engine();
    let req = with_tool_attrs(claude("k8s__get_pods"), json!({"risk": "critical"}));
    assert_eq!(e.decide(&req).outcome, Outcome::Deny);
    let mut ops = req.clone();
    ops.namespace = warden_core::NamespacePath::parse("acme/ops").unwrap();
    // Outside acme/platform nothing permits it, but the tenant-wide forbid no longer applies.
    let d = e.decide(&ops);
    assert!(d.reasons.is_empty() && d.outcome == Outcome::Deny);
    let del = request(
        "acme/platform",
        ("Agent", "claude-code"),
        "delete",
        ("Secret", "db-password"),
    );
    let d = e.decide(&del);
    assert_eq!(ids(&d.reasons), ["acme.secrets-never-deleted"]);
    let read = request(
        "acme/platform",
        ("Agent", "claude-code"),
        "read",
        ("Secret", "db-password"),
    );
    assert_eq!(e.decide(&read).outcome, Outcome::Allow);
}

#[test]
fn the_quickstart_requests_decide_as_documented() {
    // The requests scripts/quickstart.sh sends, with the registry facts it includes.
    let e = example_engine();
    let tool = |id: &str, attrs: serde_json::Value| with_tool_attrs(claude(id), attrs);
    let read = tool(
        "github__get_file_contents",
        json!({"name": "get_file_contents", "server": "github", "risk": "low", "categories": ["read"]}),
    );
    assert_eq!(e.decide(&read).outcome, Outcome::Allow);
    let delete = tool(
        "github__delete_repository",
        json!({"name": "delete_repository", "server": "github", "risk": "critical", "categories": ["delete"]}),
    );
    let d = e.decide(&delete);
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(d.reasons[0].id, "acme.no-repository-deletion");
    let deploy = with_args(
        tool(
            "deploy__trigger_deploy",
            json!({"name": "trigger_deploy", "server": "deploy", "risk": "high", "categories": ["execute"]}),
        ),
        json!({"environment": "production"}),
    );
    assert_eq!(e.decide(&deploy).outcome, Outcome::ApprovalRequired);
}

/// The registry presets: per team and capability category, allow / ask / deny.
fn presets_engine() -> Engine {
    Engine::build(
        vec![
            source(
                "acme",
                "acme/base.cedar",
                include_str!("../../../examples/policies/acme/base.cedar"),
            ),
            source(
                "acme",
                "acme/registry.cedar",
                include_str!("../../../examples/policies/acme/registry.cedar"),
            ),
        ],
        Some(include_str!(
            "../../../examples/policies/schema.cedarschema"
        )),
    )
    .unwrap_or_else(|errs| panic!("{errs:?}"))
}

/// A call by an agent of `team` to a registered tool with the registry's facts, as the
/// gateway sends it.
fn registered_call(team: &str, categories: &[&str]) -> warden_core::DecisionRequest {
    let mut req = with_tool_attrs(
        call_tool("acme/platform/api", "deploy__do_it"),
        json!({"categories": categories, "risk": "medium", "registered": true,
               "approval_state": "approved", "pinned": true}),
    );
    req.principal.parents = vec![warden_core::EntityRef::new("Team", team)];
    req.resource.parents = vec![warden_core::EntityRef::new(
        "ToolServer",
        "io.github.acme/deploy",
    )];
    req.time = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2025, 6, 4, 10, 0, 0).unwrap();
    req
}

#[test]
fn registry_presets_allow_ask_or_deny_by_team_and_category() {
    let e = presets_engine();
    let outcome = |team, cats: &[&str]| e.decide(&registered_call(team, cats)).outcome;
    assert_eq!(outcome("developers", &["read"]), Outcome::Allow);
    assert_eq!(outcome("developers", &["write"]), Outcome::ApprovalRequired);
    assert_eq!(outcome("developers", &["delete", "write"]), Outcome::Deny);
    assert_eq!(outcome("maintainers", &["write"]), Outcome::Allow);
    assert_eq!(outcome("maintainers", &["delete", "write"]), Outcome::Allow);
    let d = e.decide(&registered_call("developers", &["delete"]));
    assert_eq!(ids(&d.reasons), ["acme.registry.deletes-maintainers-only"]);
}

#[test]
fn registry_presets_follow_the_session_and_the_server() {
    let e = presets_engine();
    // After secrets were handled in the session, network tools are off.
    let mut req = registered_call("maintainers", &["network"]);
    assert_eq!(e.decide(&req).outcome, Outcome::Allow);
    req.facts.categories.insert("secrets".into());
    let d = e.decide(&req);
    assert_eq!(ids(&d.reasons), ["acme.registry.no-network-after-secrets"]);
    // The deploy server only in office hours.
    let mut late = registered_call("maintainers", &["write"]);
    late.time = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2025, 6, 4, 22, 0, 0).unwrap();
    assert_eq!(
        ids(&e.decide(&late).reasons),
        ["acme.registry.deploy-in-office-hours"]
    );
    // A deprecated tool asks.
    let mut old = registered_call("maintainers", &["write"]);
    old.resource
        .attributes
        .insert("approval_state".into(), json!("deprecated"));
    assert_eq!(e.decide(&old).outcome, Outcome::ApprovalRequired);
}
