//! The policy test runner: test files parse strictly (unknown fields are errors with their
//! line), cases run with the engine that decides in production, failures say what differs,
//! and policies no case exercised are listed.

mod common;

use common::*;
use serde_json::json;
use warden_core::{NamespacePath, Obligation, Outcome};
use warden_policy::Engine;
use warden_policy::testing::{self, TestFile};

const POLICIES: &str = r#"
@id("reads")
@redact("args.token")
permit (principal is Agent, action == Action::"call_tool", resource is Tool)
when { resource.name like "get_*" };

@id("no-delete")
forbid (principal is Agent, action == Action::"call_tool", resource is Tool)
when { resource.name like "delete_*" };

@id("deploy-ask")
@effect("ask")
permit (principal is Agent, action == Action::"call_tool", resource == Tool::"deploy__run");

@id("late-warn")
@mode("warn")
forbid (principal, action == Action::"call_tool", resource is Tool)
when { context.time.hour >= 19 };

@id("never-tested")
permit (principal is Agent, action == Action::"read", resource is Repository);

@id("switched-off")
@mode("off")
permit (principal, action, resource);
"#;

fn engine() -> Engine {
    Engine::build(vec![source("acme", "acme/tools.cedar", POLICIES)], None)
        .unwrap_or_else(|e| panic!("{e:?}"))
}

fn acme() -> NamespacePath {
    NamespacePath::parse("acme").unwrap()
}

fn parse(text: &str) -> TestFile {
    TestFile::parse("acme/tools.test.yaml", Some(&acme()), text).unwrap_or_else(|e| panic!("{e:?}"))
}

fn parse_errors(text: &str) -> Vec<String> {
    match TestFile::parse("acme/tools.test.yaml", Some(&acme()), text) {
        Ok(f) => panic!("expected errors, parsed {f:?}"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

const PASSING: &str = r#"
defaults:
  principal: {type: Agent, id: ci-bot}
  action: call_tool

cases:
  - name: reading is allowed, the token redacted
    request:
      resource: {type: Tool, id: github__get_file}
      context: {args: {token: secret}}
    expect:
      decision: allow
      policies: [reads]
      obligations:
        - {type: redact, path: args.token, policy: reads}
      warnings: []

  - name: deleting is denied
    request:
      resource: {type: Tool, id: github__delete_repo}
    expect:
      decision: deny
      policies: [no-delete]

  - name: deploying needs a person
    request:
      resource: {type: Tool, id: deploy__run}
    expect:
      decision: approval_required
      obligations:
        - type: approval
          policies: [deploy-ask]

  - name: late at night a read is allowed, with a warning
    request:
      time: "2025-06-04T21:00:00Z"
      resource: {type: Tool, id: github__get_file}
    expect:
      decision: allow
      warnings:
        - {policy: late-warn, would: deny}
"#;

#[test]
fn a_passing_file_passes_and_lists_the_policies_no_case_exercised() {
    let file = parse(PASSING);
    assert_eq!(file.cases.len(), 4);
    // Defaults fill what a case leaves out; the namespace is the file's folder.
    let first = &file.cases[0];
    assert_eq!(first.line, 7);
    assert_eq!(first.request.namespace.as_str(), "acme");
    assert_eq!(first.request.tenant.as_str(), "acme");
    assert_eq!(first.request.principal.id, "ci-bot");
    assert_eq!(first.request.action, "call_tool");
    assert_eq!(
        first.request.time.to_rfc3339(),
        "2025-06-04T10:00:00+00:00",
        "a fixed time when the case gives none"
    );
    assert_eq!(
        first.expect.obligations,
        Some(vec![Obligation::Redact {
            path: "args.token".into(),
            policy: "reads".into()
        }])
    );

    let report = testing::run(&engine(), &[file]);
    assert!(report.passed, "{report:#?}");
    assert_eq!((report.cases, report.failed), (4, 0));
    assert!(report.results.iter().all(|r| r.explanation.is_none()));
    // `late-warn` matched (a warning) and counts as exercised; `switched-off` is never
    // evaluated and is not listed.
    let unexercised: Vec<&str> = report.unexercised.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(unexercised, ["never-tested"]);
}

#[test]
fn a_failing_case_shows_expected_and_actual_and_why() {
    let file = parse(
        r#"
cases:
  - name: deleting is allowed (wrongly expected)
    request:
      principal: {type: Agent, id: ci-bot}
      action: call_tool
      resource: {type: Tool, id: github__delete_repo}
    expect:
      decision: allow
      policies: [reads, no-such-policy]
"#,
    );
    let report = testing::run(&engine(), &[file]);
    assert!(!report.passed);
    assert_eq!(report.failed, 1);
    let r = &report.results[0];
    assert!(!r.passed);
    assert_eq!(r.line, 3);
    assert_eq!(r.actual.outcome, Outcome::Deny);
    let fields: Vec<&str> = r.differences.iter().map(|d| d.field).collect();
    assert_eq!(fields, ["decision", "policies"]);
    assert_eq!(r.differences[0].expected, json!("allow"));
    assert_eq!(r.differences[0].actual, json!("deny"));
    assert_eq!(
        r.differences[1].expected,
        json!(["no-such-policy", "reads"])
    );
    assert_eq!(r.differences[1].actual, json!(["no-delete"]));
    assert_eq!(
        r.differences[1].note.as_deref(),
        Some(r#"no loaded policy has the id "no-such-policy""#)
    );
    // The explanation comes with a failure: `reads` did not match, and why.
    let x = r.explanation.as_ref().expect("an explanation");
    assert_eq!(x.summary, "denied by no-delete");
    let reads = x.policies.iter().find(|p| p.policy.id == "reads").unwrap();
    assert_eq!(
        reads.failed.as_ref().unwrap().text,
        r#"resource.name like "get_*""#
    );
}

#[test]
fn obligations_and_warnings_are_compared_exactly() {
    let file = parse(
        r#"
defaults:
  principal: {type: Agent, id: ci-bot}
  action: call_tool
  resource: {type: Tool, id: github__get_file}
cases:
  - name: a redaction not expected
    expect:
      decision: allow
      obligations: []
  - name: a warning expected that does not come
    expect:
      decision: allow
      warnings: [{policy: late-warn, would: deny}]
"#,
    );
    let report = testing::run(&engine(), &[file]);
    assert_eq!(report.failed, 2);
    let d = &report.results[0].differences;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].field, "obligations");
    assert_eq!(d[0].expected, json!([]));
    assert_eq!(
        d[0].actual,
        json!([{"type": "redact", "path": "args.token", "policy": "reads"}])
    );
    let d = &report.results[1].differences;
    assert_eq!(d[0].field, "warnings");
    assert_eq!(d[0].actual, json!([]));
}

#[test]
fn an_evaluation_error_fails_the_case_unless_it_is_expected() {
    let engine = Engine::build(
        vec![source(
            "acme",
            "acme/typed.cedar",
            r#"@id("typed")
forbid (principal, action == Action::"call_tool", resource is Tool)
when { context.args has n && context.args.n > 3 };
@id("reads")
permit (principal, action == Action::"call_tool", resource is Tool);
"#,
        )],
        Some("type Args = { n?: Long };"),
    )
    .unwrap();
    let file = parse(
        r#"
defaults:
  principal: {type: Agent, id: ci-bot}
  action: call_tool
  resource: {type: Tool, id: calc__add}
  context: {args: {n: "three"}}
cases:
  - name: denied, but only because a policy failed
    expect:
      decision: deny
  - name: the failure is what this case tests
    expect:
      decision: deny
      errors: [typed]
"#,
    );
    let report = testing::run(&engine, &[file]);
    let [unexpected, expected] = &report.results[..] else {
        panic!("{report:#?}")
    };
    assert!(!unexpected.passed);
    assert_eq!(unexpected.differences[0].field, "errors");
    assert!(expected.passed, "{expected:#?}");
}

#[test]
fn a_request_the_engine_refuses_is_a_failure_that_says_why() {
    let file = parse(
        r#"
cases:
  - name: a misspelt action
    request:
      principal: {type: Agent, id: ci-bot}
      action: cal_tool
      resource: {type: Tool, id: github__get_file}
    expect:
      decision: deny
"#,
    );
    let report = testing::run(&engine(), &[file]);
    let r = &report.results[0];
    assert!(!r.passed);
    assert_eq!(r.differences[0].field, "request");
    assert!(
        r.differences[0]
            .actual
            .as_str()
            .unwrap()
            .contains(r#"unknown action "cal_tool""#),
        "{r:#?}"
    );
}

#[test]
fn unknown_fields_are_errors_with_file_line_and_column() {
    let errors = parse_errors(
        r#"cases:
  - name: a typo in the expectation
    request:
      principal: {type: Agent, id: ci-bot}
      action: call_tool
      resource: {type: Tool, id: github__get_file}
    expect:
      decision: allow
      polices: [reads]
"#,
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("acme/tools.test.yaml:9:7: unknown field `polices`"),
        "{errors:?}"
    );

    // In the request too, and at the top level.
    let errors = parse_errors(
        "cases:\n  - name: x\n    request:\n      principal: {type: Agent, id: a, attrs: {}}\n    expect: {decision: allow}\n",
    );
    assert!(
        errors[0].starts_with("acme/tools.test.yaml:4:"),
        "{errors:?}"
    );
    assert!(errors[0].contains("unknown field `attrs`"), "{errors:?}");
    let errors = parse_errors("case: []\n");
    assert!(
        errors[0].starts_with("acme/tools.test.yaml:1:1: unknown field `case`"),
        "{errors:?}"
    );
}

#[test]
fn bad_values_are_errors_with_their_line() {
    let errors = parse_errors(
        r#"cases:
  - name: a
    request:
      namespace: acme//x
      time: yesterday
    expect: {decision: alow}
"#,
    );
    assert!(
        errors[0].starts_with("acme/tools.test.yaml:6:") && errors[0].contains("alow"),
        "{errors:?}"
    );

    let errors = parse_errors(
        r#"cases:
  - name: a
    request:
      namespace: acme//x
      time: yesterday
      action: call_tool
    expect: {decision: allow}
"#,
    );
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(errors[0].starts_with("acme/tools.test.yaml:4:18: invalid namespace path"));
    assert!(errors[1].starts_with("acme/tools.test.yaml:5:13: `time` must be an RFC 3339"));
    assert!(
        errors[2].starts_with("acme/tools.test.yaml:2:11: the request has no `principal`"),
        "{errors:?}"
    );
    assert!(errors[3].contains("no `resource`"), "{errors:?}");

    let errors = parse_errors(
        "cases:\n  - name: a\n    request: {principal: {type: Agent, id: a}, action: read, resource: {type: Repository, id: r}}\n    expect: {decision: allow}\n  - name: a\n    request: {principal: {type: Agent, id: a}, action: read, resource: {type: Repository, id: r}}\n    expect: {decision: allow}\n",
    );
    assert_eq!(
        errors,
        ["acme/tools.test.yaml:5:11: duplicate case name \"a\" (first at line 2)"]
    );

    let errors = parse_errors("cases: []\n");
    assert_eq!(errors, ["acme/tools.test.yaml:1:1: the file has no cases"]);

    // Outside a namespace folder a case must name its namespace.
    let err = TestFile::parse(
        "root.test.yaml",
        None,
        "cases:\n  - name: a\n    request: {principal: {type: Agent, id: a}, action: read, resource: {type: Repository, id: r}}\n    expect: {decision: allow}\n",
    )
    .unwrap_err();
    assert!(err[0].message.contains("no `namespace`"), "{err:?}");
}

#[test]
fn yaml_1_1_booleans_stay_strings_and_json_is_accepted() {
    let file = parse(
        r#"{"cases": [{"name": "json", "request": {"principal": {"type": "Agent", "id": "a"},
          "action": "call_tool", "resource": {"type": "Tool", "id": "x__get_y"},
          "context": {"args": {"confirm": no, "dry_run": false}}},
          "expect": {"decision": "allow"}}]}"#,
    );
    let args = &file.cases[0].request.context["args"];
    assert_eq!(args["confirm"], json!("no"));
    assert_eq!(args["dry_run"], json!(false));
}

#[test]
fn a_request_file_for_explain_uses_the_case_format() {
    let req = testing::parse_request(
        "req.yaml",
        None,
        "namespace: acme/platform\nprincipal: {type: Agent, id: ci-bot}\naction: call_tool\nresource: {type: Tool, id: github__get_file}\nsession_facts: {categories: [secrets]}\n",
    )
    .unwrap();
    assert_eq!(req.namespace.as_str(), "acme/platform");
    assert_eq!(req.session.as_deref(), Some(testing::DEFAULT_TEST_SESSION));
    assert!(req.facts.categories.contains("secrets"));
    let err =
        testing::parse_request("req.yaml", None, "namespace: acme\nexpect: {}\n").unwrap_err();
    assert!(
        err[0]
            .to_string()
            .starts_with("req.yaml:2:1: unknown field `expect`"),
        "{err:?}"
    );
}
