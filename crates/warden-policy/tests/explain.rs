//! Explanations say which policies were considered, which matched, which decided, and for the
//! others the first condition that did not hold, located in the policy's file.

mod common;

use common::*;
use serde_json::json;
use warden_core::{Clause, Explanation, Outcome, PolicyEffect, PolicyExplanation, PolicyStatus};
use warden_policy::Engine;

const POLICIES: &str = r#"// Tool rules.
@id("forbid-delete")
@reason("Deleting is never done by an agent.")
forbid (principal is Agent, action == Action::"call_tool", resource is Tool)
when { resource.name == "delete_repository" };

@id("reads")
permit (principal is Agent, action == Action::"call_tool", resource is Tool)
when { context has on_behalf_of }
when {
  resource.name like "get_*" ||
  resource.name like "list_*"
};

@id("deploy-ask")
@effect("ask")
permit (principal is Agent, action == Action::"call_tool", resource == Tool::"deploy__trigger")
when { context.args has environment && context.args.environment == "production" };

@id("maintainers")
permit (principal in Team::"maintainers", action == Action::"call_tool", resource is Tool);

@id("outside-ops")
forbid (principal, action == Action::"call_tool", resource is Tool)
when { resource has risk && resource.risk == "critical" }
unless { context.namespace in Namespace::"acme/ops" };

@id("broken-types")
@mode("warn")
forbid (principal, action == Action::"call_tool", resource is Tool)
when { context.args has count && context.args.count > 3 };

@id("reading-repos")
permit (principal, action == Action::"read", resource is Repository);
"#;

fn engine() -> Engine {
    Engine::build(
        vec![source("acme", "acme/tools.cedar", POLICIES)],
        Some("type Args = { environment?: String, count?: Long };"),
    )
    .unwrap_or_else(|e| panic!("{e:?}"))
}

fn policy<'a>(e: &'a Explanation, id: &str) -> &'a PolicyExplanation {
    e.policies
        .iter()
        .find(|p| p.policy.id == id)
        .unwrap_or_else(|| panic!("{id} not considered: {e:#?}"))
}

/// The line of the first occurrence of `needle` in `POLICIES`, 1-based.
fn line_of(needle: &str) -> u32 {
    let at = POLICIES.find(needle).expect("needle in the policies");
    POLICIES[..at].matches('\n').count() as u32 + 1
}

#[test]
fn an_allow_names_the_determining_permit_and_why_the_others_did_not_match() {
    let e = engine();
    let req = call_tool("acme/platform", "github__get_file_contents");
    let x = e.explain(&req);
    assert_eq!(x.outcome, Outcome::Allow);
    assert_eq!(x.outcome, e.decide(&req).outcome);
    assert_eq!(x.summary, "allowed by reads");
    assert!(x.refused.is_none());

    // The slice: the call_tool policies of the chain that can apply to this tool; not the
    // `read` one, nor the one for another tool by its id.
    let ids: Vec<&str> = x.policies.iter().map(|p| p.policy.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "forbid-delete",
            "reads",
            "maintainers",
            "outside-ops",
            "broken-types"
        ]
    );

    let reads = policy(&x, "reads");
    assert_eq!(reads.status, PolicyStatus::Matched);
    assert!(reads.determining);
    assert_eq!(reads.effect, PolicyEffect::Permit);
    assert!(reads.failed.is_none());

    // A `when` clause that was false: the conjunct, as written, where it is written.
    let forbid = policy(&x, "forbid-delete");
    assert_eq!(forbid.status, PolicyStatus::NotMatched);
    assert!(!forbid.determining);
    assert_eq!(forbid.effect, PolicyEffect::Forbid);
    let f = forbid.failed.as_ref().unwrap();
    assert_eq!(f.clause, Clause::When);
    assert_eq!(f.text, r#"resource.name == "delete_repository""#);
    assert_eq!(
        f.line,
        line_of(r#"when { resource.name == "delete_repository" }"#)
    );
    assert_eq!(f.column, 8);
    assert!(f.error.is_none());

    // A scope clause that did not hold, pointed at where it is written.
    let m = policy(&x, "maintainers");
    let f = m.failed.as_ref().unwrap();
    assert_eq!(f.clause, Clause::Principal);
    assert_eq!(f.text, r#"principal in Team::"maintainers""#);
    assert_eq!(
        f.line,
        line_of(r#"permit (principal in Team::"maintainers""#)
    );
    assert_eq!(f.column, 9);

    let outside = policy(&x, "outside-ops");
    let f = outside.failed.as_ref().unwrap();
    assert_eq!(f.clause, Clause::When);
    assert_eq!(f.text, "resource has risk");
}

#[test]
fn a_deny_by_default_says_that_no_permit_matched_and_why_each_did_not() {
    let e = engine();
    // No user: `reads` fails on its first `when` clause.
    let mut req = call_tool("acme/platform", "github__get_file_contents");
    req.on_behalf_of = None;
    let x = e.explain(&req);
    assert_eq!(x.outcome, Outcome::Deny);
    assert_eq!(e.decide(&req).outcome, Outcome::Deny);
    assert_eq!(
        x.summary,
        "denied by default: none of the 2 permit policies considered matched"
    );
    assert!(x.policies.iter().all(|p| !p.determining));
    let f = policy(&x, "reads").failed.as_ref().unwrap();
    assert_eq!(f.clause, Clause::When);
    assert_eq!(f.text, "context has on_behalf_of");

    // With a user but another tool name: the second `when` clause, multi-line, collapsed.
    let x = e.explain(&call_tool("acme/platform", "github__create_issue"));
    let f = policy(&x, "reads").failed.as_ref().unwrap();
    assert_eq!(f.clause, Clause::When);
    assert_eq!(
        f.text,
        r#"resource.name like "get_*" || resource.name like "list_*""#
    );
    assert_eq!(f.line, line_of(r#"  resource.name like "get_*" ||"#));
    assert_eq!(f.column, 3);
}

#[test]
fn a_deny_by_a_forbid_names_it_and_an_unless_that_held_is_shown() {
    let e = engine();
    let x = e.explain(&call_tool("acme/platform", "github__delete_repository"));
    assert_eq!(x.outcome, Outcome::Deny);
    assert_eq!(x.summary, "denied by forbid-delete");
    let forbid = policy(&x, "forbid-delete");
    assert!(forbid.determining);
    assert_eq!(forbid.status, PolicyStatus::Matched);

    // In acme/ops a critical tool is exempt: the `unless` held.
    let req = with_tool_attrs(
        call_tool("acme/ops", "vault__get_secret"),
        json!({"risk": "critical"}),
    );
    let x = e.explain(&req);
    assert_eq!(x.outcome, Outcome::Allow, "{x:#?}");
    let f = policy(&x, "outside-ops").failed.as_ref().unwrap();
    assert_eq!(f.clause, Clause::Unless);
    assert_eq!(f.text, r#"context.namespace in Namespace::"acme/ops""#);
    assert_eq!(f.line, line_of("unless { context.namespace"));
    assert_eq!(f.column, 10);

    // Elsewhere the forbid matches and decides.
    let req = with_tool_attrs(
        call_tool("acme/platform", "vault__get_secret"),
        json!({"risk": "critical"}),
    );
    let x = e.explain(&req);
    assert_eq!(x.outcome, Outcome::Deny);
    assert!(policy(&x, "outside-ops").determining);
    assert!(
        !policy(&x, "reads").determining,
        "a permit overruled does not decide"
    );
    assert_eq!(policy(&x, "reads").status, PolicyStatus::Matched);
}

#[test]
fn an_ask_names_the_ask_permit() {
    let e = engine();
    let req = with_args(
        call_tool("acme/platform", "deploy__trigger"),
        json!({"environment": "production"}),
    );
    let x = e.explain(&req);
    assert_eq!(x.outcome, Outcome::ApprovalRequired);
    assert_eq!(e.decide(&req).outcome, Outcome::ApprovalRequired);
    assert_eq!(x.summary, "approval required by deploy-ask");
    let ask = policy(&x, "deploy-ask");
    assert!(ask.determining);
    assert_eq!(ask.effect, PolicyEffect::Ask);

    // Staging: the second conjunct is the one that was false, not the whole clause.
    let req = with_args(
        call_tool("acme/platform", "deploy__trigger"),
        json!({"environment": "staging"}),
    );
    let x = e.explain(&req);
    let f = policy(&x, "deploy-ask").failed.as_ref().unwrap();
    assert_eq!(f.text, r#"context.args.environment == "production""#);
}

#[test]
fn an_evaluation_error_is_located_and_matches_the_decision() {
    let e = engine();
    // `count` is declared a Long; a string makes `>` fail at evaluation.
    let req = with_args(
        call_tool("acme/platform", "github__get_file_contents"),
        json!({"count": "many"}),
    );
    let d = e.decide(&req);
    let x = e.explain(&req);
    // The failing policy is in warn mode: it does not change the outcome, in either.
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(x.outcome, d.outcome);
    let broken = policy(&x, "broken-types");
    assert_eq!(broken.status, PolicyStatus::Error);
    assert_eq!(broken.mode, warden_core::PolicyMode::Warn);
    let f = broken.failed.as_ref().unwrap();
    assert_eq!(f.clause, Clause::When);
    assert_eq!(f.text, "context.args.count > 3");
    assert!(f.error.as_deref().unwrap_or("").contains("type"), "{f:?}");
}

#[test]
fn a_refused_request_and_an_empty_slice_are_explained() {
    let e = engine();
    let mut req = call_tool("acme/platform", "github__get_file_contents");
    req.action = "cal_tool".into();
    let x = e.explain(&req);
    assert_eq!(x.outcome, Outcome::Deny);
    assert!(
        x.refused.as_deref().unwrap().contains("unknown action"),
        "{x:?}"
    );
    assert!(x.policies.is_empty());

    let x = e.explain(&call_tool("globex/platform", "github__get_file_contents"));
    assert_eq!(x.outcome, Outcome::Deny);
    assert!(x.policies.is_empty());
    assert!(x.summary.starts_with("denied by default"), "{}", x.summary);
}

#[test]
fn the_decision_and_the_explanation_agree_on_the_examples() {
    // Every request of the example table: same outcome, and the determining policies are
    // the decision's reasons.
    let e = Engine::build(
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
            source(
                "acme/platform",
                "acme/platform/tools.cedar",
                include_str!("../../../examples/policies/acme/platform/tools.cedar"),
            ),
            source(
                "acme/platform",
                "acme/platform/mcp.cedar",
                include_str!("../../../examples/policies/acme/platform/mcp.cedar"),
            ),
        ],
        Some(include_str!(
            "../../../examples/policies/schema.cedarschema"
        )),
    )
    .unwrap();
    let mut requests = vec![];
    for tool in [
        "github__get_file_contents",
        "github__delete_repository",
        "github__create_pull_request",
        "everything__get-env",
        "everything__get-sum",
        "everything__trigger-sampling-request",
    ] {
        requests.push(call_tool("acme/platform/api", tool));
    }
    for env in ["production", "staging"] {
        requests.push(with_args(
            call_tool("acme/platform/api", "deploy__trigger_deploy"),
            json!({ "environment": env }),
        ));
    }
    let mut late = call_tool("acme/platform/api", "github__create_pull_request");
    late.time = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2025, 6, 7, 23, 0, 0).unwrap();
    requests.push(late);
    for req in requests {
        let d = e.decide(&req);
        let x = e.explain(&req);
        assert_eq!(x.outcome, d.outcome, "{}: {x:#?}", req.resource.id);
        let mut determining: Vec<&str> = x
            .policies
            .iter()
            .filter(|p| p.determining)
            .map(|p| p.policy.id.as_str())
            .collect();
        let mut reasons = ids(&d.reasons);
        determining.sort();
        reasons.sort();
        assert_eq!(determining, reasons, "{}", req.resource.id);
        assert_eq!(x.policies.len(), d.evaluated, "{}", req.resource.id);
    }
}

#[test]
fn an_enforced_policy_that_fails_denies_and_is_named_as_the_reason() {
    let e = Engine::build(
        vec![source(
            "acme",
            "acme/typed.cedar",
            r#"@id("typed")
forbid (principal, action == Action::"call_tool", resource is Tool)
when { context.args has n && context.args.n > 3 };

@id("tools")
permit (principal, action == Action::"call_tool", resource is Tool);
"#,
        )],
        Some("type Args = { n?: Long };"),
    )
    .unwrap();
    let req = with_args(call_tool("acme", "calc__add"), json!({"n": "three"}));
    let d = e.decide(&req);
    let x = e.explain(&req);
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(x.outcome, Outcome::Deny);
    assert_eq!(
        x.summary,
        "denied because typed could not be evaluated (an error denies)"
    );
    let typed = policy(&x, "typed");
    assert_eq!(typed.status, PolicyStatus::Error);
    assert!(typed.determining);
    let f = typed.failed.as_ref().unwrap();
    assert_eq!(f.text, "context.args.n > 3");
    assert_eq!((f.line, f.column), (3, 30));
    assert!(f.error.is_some());
    // The permit matched but did not decide: an error never allows.
    let tools = policy(&x, "tools");
    assert_eq!(tools.status, PolicyStatus::Matched);
    assert!(!tools.determining);
}
