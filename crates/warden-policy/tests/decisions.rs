//! How the engine decides: forbid-overrides over the namespace chain, ask, warn, off,
//! redaction, errors, and which policies are consulted at all.

mod common;

use common::*;
use serde_json::json;
use warden_core::{Obligation, Outcome};

const ALLOW_READS: &str = r#"
@id("read-tools")
@reason("Read tools are fine.")
permit (principal, action == Action::"call_tool", resource is Tool)
when { resource.name like "get_*" };
"#;

#[test]
fn a_matching_permit_allows() {
    let e = engine(&[("acme", ALLOW_READS)]);
    let d = e.decide(&call_tool("acme/platform", "github__get_file"));
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(ids(&d.reasons), ["read-tools"]);
    assert_eq!(d.reasons[0].reason.as_deref(), Some("Read tools are fine."));
    assert_eq!(d.reasons[0].origin, "acme/policies.cedar");
    assert_eq!(d.reasons[0].line, 2);
    assert!(d.errors.is_empty() && d.warnings.is_empty() && d.obligations.is_empty());
}

#[test]
fn no_matching_permit_denies_with_no_reasons() {
    let e = engine(&[("acme", ALLOW_READS)]);
    let d = e.decide(&call_tool("acme/platform", "github__push_files"));
    assert_eq!(d.outcome, Outcome::Deny);
    assert!(d.reasons.is_empty());
    assert!(d.errors.is_empty());
    let d = Engine::empty().decide(&call_tool("acme", "github__get_file"));
    assert_eq!(d.outcome, Outcome::Deny);
    assert!(d.reasons.is_empty());
}

use warden_policy::Engine;

#[test]
fn forbid_overrides_permit() {
    let e = engine(&[(
        "acme",
        r#"
        @id("all") permit (principal, action, resource);
        @id("no-bots") forbid (principal == Agent::"ci-bot", action == Action::"call_tool", resource);
        "#,
    )]);
    let d = e.decide(&call_tool("acme", "github__get_file"));
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(ids(&d.reasons), ["no-bots"]);
}

#[test]
fn a_parent_forbid_cannot_be_undone_by_a_child_permit() {
    let e = engine(&[
        (
            "acme",
            r#"@id("no-delete") forbid (principal, action, resource is Tool) when { resource.name like "delete_*" };"#,
        ),
        (
            "acme/platform",
            r#"@id("platform-all") permit (principal, action, resource);"#,
        ),
    ]);
    assert_eq!(
        e.decide(&call_tool("acme/platform/api", "github__delete_repo"))
            .outcome,
        Outcome::Deny
    );
    assert_eq!(
        e.decide(&call_tool("acme/platform/api", "github__get_file"))
            .outcome,
        Outcome::Allow
    );
}

#[test]
fn policies_of_a_sibling_namespace_do_not_apply() {
    let e = engine(&[(
        "acme/data",
        r#"@id("data-all") permit (principal, action, resource);"#,
    )]);
    assert_eq!(
        e.decide(&call_tool("acme/data/etl", "x__get")).outcome,
        Outcome::Allow
    );
    let d = e.decide(&call_tool("acme/platform", "x__get"));
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(d.evaluated, 0);
    // A namespace that merely shares a prefix is a sibling too.
    assert_eq!(
        e.decide(&call_tool("acme/data-lake", "x__get")).outcome,
        Outcome::Deny
    );
}

#[test]
fn policies_of_another_tenant_are_never_applied() {
    let e = engine(&[
        (
            "globex",
            r#"@id("globex-all") permit (principal, action, resource);"#,
        ),
        (
            "acme",
            r#"@id("acme-nothing") forbid (principal, action, resource) when { context.time.hour > 99 };"#,
        ),
    ]);
    let d = e.decide(&call_tool("acme", "x__get"));
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(d.evaluated, 1);
    assert_eq!(
        e.decide(&call_tool("globex/x", "x__get")).outcome,
        Outcome::Allow
    );
}

#[test]
fn policy_ids_are_unique_per_tenant_only() {
    let text = r#"@id("same") permit (principal, action, resource);"#;
    engine(&[("acme", text), ("globex", text)]);
    let errs = build_errors(&[("acme", text), ("acme/platform", text)], None);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].origin, "acme/platform/policies.cedar");
    assert!(
        errs[0].message.contains("duplicate policy id \"same\""),
        "{}",
        errs[0]
    );
}

#[test]
fn policies_without_id_are_named_by_origin_and_position() {
    let e = engine(&[(
        "acme",
        "forbid (principal, action, resource) when { context.time.hour > 99 };\n\npermit (principal, action, resource);\n",
    )]);
    let d = e.decide(&call_tool("acme", "x__y"));
    assert_eq!(ids(&d.reasons), ["acme/policies.cedar#1"]);
    assert_eq!(d.reasons[0].line, 3);
}

const ASK_DEPLOY: &str = r#"
@id("deploy-ask")
@reason("Production deploys need approval.")
@effect("ask")
permit (principal, action == Action::"call_tool", resource == Tool::"deploy__trigger")
when { context.args has environment && context.args.environment == "production" };
"#;

#[test]
fn an_ask_permit_requires_approval() {
    let e = engine(&[("acme", ASK_DEPLOY)]);
    let d = e.decide(&with_args(
        call_tool("acme", "deploy__trigger"),
        json!({"environment": "production"}),
    ));
    assert_eq!(d.outcome, Outcome::ApprovalRequired);
    assert_eq!(ids(&d.reasons), ["deploy-ask"]);
    assert_eq!(
        d.obligations,
        [Obligation::Approval {
            policies: vec!["deploy-ask".into()]
        }]
    );
    let d = e.decide(&with_args(
        call_tool("acme", "deploy__trigger"),
        json!({"environment": "staging"}),
    ));
    assert_eq!(d.outcome, Outcome::Deny);
}

#[test]
fn ask_beats_a_plain_permit() {
    let e = engine(&[
        ("acme", ASK_DEPLOY),
        (
            "acme/platform",
            r#"@id("all") permit (principal, action, resource);"#,
        ),
    ]);
    let d = e.decide(&with_args(
        call_tool("acme/platform", "deploy__trigger"),
        json!({"environment": "production"}),
    ));
    assert_eq!(d.outcome, Outcome::ApprovalRequired);
    assert_eq!(ids(&d.reasons), ["deploy-ask"]);
}

#[test]
fn forbid_beats_ask() {
    let e = engine(&[(
        "acme",
        &format!(
            "{ASK_DEPLOY}\n@id(\"freeze\") forbid (principal, action == Action::\"call_tool\", resource == Tool::\"deploy__trigger\");"
        ),
    )]);
    let d = e.decide(&with_args(
        call_tool("acme", "deploy__trigger"),
        json!({"environment": "production"}),
    ));
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(ids(&d.reasons), ["freeze"]);
    assert!(
        !d.obligations
            .iter()
            .any(|o| matches!(o, Obligation::Approval { .. }))
    );
}

#[test]
fn a_warn_mode_forbid_only_reports() {
    let e = engine(&[(
        "acme",
        r#"
        @id("all") permit (principal, action, resource);
        @id("night") @mode("warn") @reason("No calls at night.")
        forbid (principal, action, resource) when { context.time.hour >= 8 };
        @id("ask-later") @mode("warn") @effect("ask") permit (principal, action, resource);
        "#,
    )]);
    let d = e.decide(&call_tool("acme", "x__y"));
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(ids(&d.reasons), ["all"]);
    let warned: Vec<_> = d
        .warnings
        .iter()
        .map(|w| (w.policy.id.as_str(), w.would))
        .collect();
    assert_eq!(
        warned,
        [
            ("night", Outcome::Deny),
            ("ask-later", Outcome::ApprovalRequired)
        ]
    );
    assert_eq!(
        d.warnings[0].policy.reason.as_deref(),
        Some("No calls at night.")
    );
}

#[test]
fn a_warn_mode_policy_that_would_not_change_the_outcome_is_silent() {
    let e = engine(&[(
        "acme",
        r#"
        @id("no") forbid (principal, action, resource);
        @id("night") @mode("warn") forbid (principal, action, resource);
        "#,
    )]);
    let d = e.decide(&call_tool("acme", "x__y"));
    assert_eq!(d.outcome, Outcome::Deny);
    assert!(d.warnings.is_empty());
}

#[test]
fn an_off_mode_policy_is_ignored() {
    let e = engine(&[(
        "acme",
        r#"
        @id("all") permit (principal, action, resource);
        @id("off") @mode("off") forbid (principal, action, resource);
        "#,
    )]);
    let d = e.decide(&call_tool("acme", "x__y"));
    assert_eq!(d.outcome, Outcome::Allow);
    assert!(d.warnings.is_empty());
    assert_eq!(d.evaluated, 1);
    assert_eq!(e.policy_count(), 2);
}

const REDACT: &str = r#"
@id("github") @redact("args.token, args.password")
permit (principal, action == Action::"call_tool", resource is Tool) when { resource.server == "github" };
"#;

#[test]
fn redaction_obligations_come_from_matching_policies() {
    let e = engine(&[("acme", REDACT)]);
    let d = e.decide(&call_tool("acme", "github__get_file"));
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(
        d.redact_paths().collect::<Vec<_>>(),
        ["args.token", "args.password"]
    );
    assert_eq!(
        d.obligations[0],
        Obligation::Redact {
            path: "args.token".into(),
            policy: "github".into()
        }
    );
    let d = e.decide(&call_tool("acme", "gitlab__get_file"));
    assert_eq!(d.redact_paths().count(), 0);
}

#[test]
fn redaction_applies_even_when_a_forbid_denies() {
    let e = engine(&[
        ("acme", REDACT),
        (
            "acme/x",
            r#"@id("no") forbid (principal, action, resource);"#,
        ),
    ]);
    let d = e.decide(&call_tool("acme/x", "github__get_file"));
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(ids(&d.reasons), ["no"]);
    assert_eq!(
        d.redact_paths().collect::<Vec<_>>(),
        ["args.token", "args.password"]
    );
}

#[test]
fn an_evaluation_error_in_a_forbid_denies() {
    let schema = "type Args = { count?: Long, branch?: String };";
    let e = engine_with(
        &[(
            "acme",
            r#"
            @id("all") permit (principal, action, resource);
            @id("too-many") forbid (principal, action, resource)
            when { context.args has count && context.args.count > 10 };
            "#,
        )],
        Some(schema),
    );
    assert_eq!(
        e.decide(&with_args(call_tool("acme", "x__y"), json!({"count": 3})))
            .outcome,
        Outcome::Allow
    );
    // The caller sent a string where the policy compares a Long: Cedar cannot evaluate the
    // forbid, and a forbid that cannot be evaluated must not let the call through.
    let d = e.decide(&with_args(
        call_tool("acme", "x__y"),
        json!({"count": "many"}),
    ));
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(ids(&d.reasons), ["too-many"]);
    assert_eq!(d.errors.len(), 1);
    assert!(d.errors[0].starts_with("too-many: "), "{:?}", d.errors);
}

#[test]
fn an_evaluation_error_in_a_permit_denies_too() {
    let e = engine_with(
        &[(
            "acme",
            r#"@id("branch") permit (principal, action, resource) when { context.args.branch like "feature/*" };"#,
        )],
        Some("type Args = { branch: String };"),
    );
    // `branch` is declared required, but this call does not send it.
    let d = e.decide(&call_tool("acme", "x__y"));
    assert_eq!(d.outcome, Outcome::Deny);
    assert!(d.errors[0].starts_with("branch: "));
}

#[test]
fn the_slice_holds_only_policies_that_can_apply() {
    let mut sources: Vec<(String, String)> = Vec::new();
    for k in 0..50 {
        let mut text = String::new();
        for j in 0..20 {
            text.push_str(&format!(
                "@id(\"t{k}-{j}\") permit (principal, action == Action::\"call_tool\", resource == Tool::\"srv__tool{j}\");\n\
                 @id(\"r{k}-{j}\") permit (principal, action == Action::\"read\", resource is Repository);\n"
            ));
        }
        sources.push((format!("acme/team-{k}"), text));
    }
    sources.push(("acme".into(), r#"@id("root") forbid (principal, action == Action::"call_tool", resource is Tool) when { resource has risk && resource.risk == "critical" };"#.into()));
    let refs: Vec<(&str, &str)> = sources
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let e = engine(&refs);
    assert_eq!(e.policy_count(), 2001);
    let d = e.decide(&call_tool("acme/team-7/svc", "srv__tool3"));
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(ids(&d.reasons), ["t7-3"]);
    assert_eq!(
        d.evaluated, 2,
        "only the root forbid and team-7's rule for this tool"
    );
    let d = e.decide(&with_tool_attrs(
        call_tool("acme/team-7", "srv__tool3"),
        json!({"risk": "critical"}),
    ));
    assert_eq!(d.outcome, Outcome::Deny);
}

#[test]
fn context_reaches_policies() {
    let e = engine(&[(
        "acme",
        r#"
        @id("ctx") permit (principal, action, resource)
        when {
          context.namespace in Namespace::"acme/platform" &&
          context.namespace.path == "acme/platform/api" &&
          context.namespace in Tenant::"acme" &&
          context has on_behalf_of && context.on_behalf_of == User::"alice" &&
          context has session && context.session.id == "sess-1" &&
          context.session.tools_called.contains("git__read") && context.session.calls == 3 &&
          context.session.categories.contains("secrets") && context.session.denied == 0 &&
          context.session.servers.isEmpty() &&
          context.time.hour == 10 && context.time.weekday == 2 && context.time.unix == 1749031200 &&
          context has client_ip && context.client_ip.isInRange(ip("10.0.0.0/8")) &&
          context has labels && context.labels.contains("x")
        };
        "#,
    )]);
    let mut req = call_tool("acme/platform/api", "x__y");
    req.context.insert("client_ip".into(), json!("10.1.2.3"));
    req.context.insert("labels".into(), json!(["x", "y"]));
    req.facts.tools_called.insert("git__read".into());
    req.facts.categories.insert("secrets".into());
    req.facts.calls = 3;
    let d = e.decide(&req);
    assert_eq!(d.outcome, Outcome::Allow, "{d:?}");
    // The facts are what the policy read: without them it no longer matches.
    req.facts = Default::default();
    assert_eq!(e.decide(&req).outcome, Outcome::Deny);
}

#[test]
fn entity_attributes_parents_and_escapes_reach_policies() {
    let e = engine(&[(
        "acme",
        r#"
        @id("owned") permit (principal in Team::"platform", action == Action::"write", resource in Project::"web")
        when {
          principal has owner && principal.owner == User::"alice" &&
          resource has default_branch && resource.default_branch == "main" &&
          resource in Namespace::"acme"
        };
        "#,
    )]);
    let mut req = request(
        "acme/platform",
        ("Agent", "ci-bot"),
        "write",
        ("Repository", "web-app"),
    );
    req.principal.parents = vec![warden_core::EntityRef::new("Team", "platform")];
    req.principal.attributes = json!({"owner": {"__entity": {"type": "User", "id": "alice"}}})
        .as_object()
        .unwrap()
        .clone();
    req.resource.parents = vec![
        warden_core::EntityRef::new("Project", "web"),
        warden_core::EntityRef::new("Namespace", "acme/platform"),
    ];
    req.resource.attributes = json!({"default_branch": "main", "stars": 1.5, "gone": null})
        .as_object()
        .unwrap()
        .clone();
    assert_eq!(
        e.decide(&req).outcome,
        Outcome::Allow,
        "{:?}",
        e.decide(&req)
    );
}

#[test]
fn tool_name_and_server_follow_from_the_id_unless_given() {
    let e = engine(&[(
        "acme",
        r#"@id("gh") permit (principal, action, resource is Tool) when { resource.server == "github" && resource.name == "get_me" };"#,
    )]);
    assert_eq!(
        e.decide(&call_tool("acme", "github__get_me")).outcome,
        Outcome::Allow
    );
    let req = with_tool_attrs(
        call_tool("acme", "gh-get-me"),
        json!({"server": "github", "name": "get_me"}),
    );
    assert_eq!(e.decide(&req).outcome, Outcome::Allow);
}

#[test]
fn the_slice_also_narrows_by_principal() {
    let mut text = String::new();
    for j in 0..200 {
        text.push_str(&format!(
            "@id(\"agent-{j}\") permit (principal == Agent::\"bot-{j}\", action == Action::\"call_tool\", resource is Tool);\n"
        ));
    }
    let e = engine(&[("acme", &text)]);
    let mut req = call_tool("acme", "x__y");
    req.principal.id = "bot-42".into();
    let d = e.decide(&req);
    assert_eq!((d.outcome, d.evaluated), (Outcome::Allow, 1));
    assert_eq!(ids(&d.reasons), ["agent-42"]);
    req.principal.id = "stranger".into();
    assert_eq!(e.decide(&req).evaluated, 0);
}

#[test]
fn a_request_entity_that_is_another_ones_parent_keeps_its_ancestry() {
    let e = engine(&[(
        "acme",
        r#"@id("p") permit (principal, action == Action::"read", resource in Namespace::"acme") when { resource in principal };"#,
    )]);
    // The repository's parent is the principal itself: a hierarchy among the request's own
    // entities, which the engine leaves to Cedar's general closure.
    let mut req = request("acme/x", ("User", "bob"), "read", ("Repository", "r"));
    req.resource.parents = vec![warden_core::EntityRef::new("User", "bob")];
    let d = e.decide(&req);
    assert_eq!(
        d.outcome,
        Outcome::Deny,
        "not in Namespace::\"acme\": {d:?}"
    );
    req.resource
        .parents
        .push(warden_core::EntityRef::new("Namespace", "acme/x"));
    assert_eq!(e.decide(&req).outcome, Outcome::Allow);
}

#[test]
fn entities_built_for_one_request_are_not_reused_for_a_different_one() {
    // Requests naming the same principal and tool but with other attributes, parents or
    // on-behalf-of user must be decided on what they say, not on an earlier request's
    // entities.
    let e = engine(&[(
        "acme",
        r#"
        @id("low") permit (principal, action == Action::"call_tool", resource is Tool)
        when { resource has risk && resource.risk == "low" && context has on_behalf_of && context.on_behalf_of == User::"alice" };
        @id("team") forbid (principal in Team::"quarantine", action, resource);
        "#,
    )]);
    let low = with_tool_attrs(call_tool("acme", "x__y"), json!({"risk": "low"}));
    assert_eq!(e.decide(&low).outcome, Outcome::Allow);
    let high = with_tool_attrs(call_tool("acme", "x__y"), json!({"risk": "high"}));
    assert_eq!(e.decide(&high).outcome, Outcome::Deny);
    let mut bob = low.clone();
    bob.on_behalf_of = Some(warden_core::EntityRef::new("User", "bob"));
    assert_eq!(e.decide(&bob).outcome, Outcome::Deny);
    let mut quarantined = low.clone();
    quarantined.principal.parents = vec![warden_core::EntityRef::new("Team", "quarantine")];
    assert_eq!(ids(&e.decide(&quarantined).reasons), ["team"]);
    let mut elsewhere = low.clone();
    elsewhere.namespace = warden_core::NamespacePath::parse("acme/other").unwrap();
    assert_eq!(e.decide(&elsewhere).outcome, Outcome::Allow);
    assert_eq!(e.decide(&low).outcome, Outcome::Allow);
}
