//! `warden policy fmt`, `warden policy test` and `warden policy explain`, run as a CI
//! pipeline would: exit codes (0 ok, 1 not ok, 2 cannot run), file:line messages, JSON.

mod common;

use std::path::Path;

use common::*;

const MESSY: &str = "// Reads for the platform team.\n\
@id(\"reads\") @reason(\"Reading is fine.\")\n\
permit(principal is Agent,action==Action::\"call_tool\",resource is Tool) // trailing\n\
when{resource.name like \"get_*\"};\n";

/// Formatted as `warden policy fmt` formats it.
const POLICY: &str = r#"@id("reads")
@reason("Reading is fine.")
permit (
  principal is Agent,
  action == Action::"call_tool",
  resource is Tool
)
when { resource.name like "get_*" };

@id("no-delete")
forbid (
  principal is Agent,
  action == Action::"call_tool",
  resource is Tool
)
when { resource.name like "delete_*" };

@id("untested")
permit (
  principal is Agent,
  action == Action::"read",
  resource is Repository
);
"#;

// ---- fmt ----

#[test]
fn the_example_policies_are_formatted() {
    let out = warden_sync(&["policy", "fmt", "--check", path_str(&example_policies())]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    assert_eq!(out.stdout, "", "{}", out.text());
}

#[test]
fn fmt_check_lists_unformatted_files_and_fmt_rewrites_them_keeping_comments() {
    let dir = policy_dir(&[("acme/tools.cedar", MESSY), ("globex/ok.cedar", POLICY)]);
    let file = dir.path().join("acme/tools.cedar");

    let out = warden_sync(&["policy", "fmt", "--check", path_str(dir.path())]);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    assert_eq!(out.stdout.trim(), path_str(&file), "{}", out.text());
    assert!(
        out.stderr.contains("1 of 2 file(s) not formatted"),
        "{}",
        out.text()
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        MESSY,
        "--check changes nothing"
    );

    let out = warden_sync(&["policy", "fmt", path_str(dir.path())]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let formatted = std::fs::read_to_string(&file).unwrap();
    assert_ne!(formatted, MESSY);
    for kept in [
        "// Reads for the platform team.",
        "// trailing",
        "@id(\"reads\")",
        "@reason(\"Reading is fine.\")",
    ] {
        assert!(formatted.contains(kept), "{kept:?} lost:\n{formatted}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("globex/ok.cedar")).unwrap(),
        POLICY,
        "a formatted file is not rewritten"
    );

    // Formatted now; a single file can be named too.
    let out = warden_sync(&["policy", "fmt", "--check", path_str(&file)]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    // The directory still loads, with the same policies.
    let out = warden_sync(&["policy", "validate", path_str(dir.path())]);
    assert!(out.success(), "{}", out.text());
}

#[test]
fn fmt_reports_a_file_that_does_not_parse_and_leaves_it() {
    let broken = "// broken\npermit (principal, action, resource)\nwhen { resource.name == };\n";
    let dir = policy_dir(&[("acme/broken.cedar", broken), ("acme/tools.cedar", MESSY)]);
    let out = warden_sync(&["policy", "fmt", path_str(dir.path())]);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let at = format!("{}:3:", dir.path().join("acme/broken.cedar").display());
    assert!(out.stderr.contains(&at), "{}", out.text());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("acme/broken.cedar")).unwrap(),
        broken
    );
    // The other file was still formatted.
    assert_ne!(
        std::fs::read_to_string(dir.path().join("acme/tools.cedar")).unwrap(),
        MESSY
    );
}

#[test]
fn fmt_of_a_path_that_does_not_exist_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = warden_sync(&["policy", "fmt", path_str(&dir.path().join("nope"))]);
    assert_eq!(out.status.code(), Some(2), "{}", out.text());
    assert!(out.stderr.contains("does not exist"), "{}", out.text());
}

// ---- test ----

#[test]
fn the_example_tests_pass_and_exercise_every_example_policy() {
    let out = warden_sync(&["policy", "test", path_str(&example_policies())]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    assert!(out.stdout.contains("PASS "), "{}", out.text());
    assert!(!out.stdout.contains("FAIL "), "{}", out.text());
    assert!(out.stdout.contains(" 0 failed"), "{}", out.text());
    assert!(
        !out.stdout.contains("policies no test exercised"),
        "{}",
        out.text()
    );

    let out = warden_sync(&[
        "policy",
        "test",
        path_str(&example_policies()),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let v = json_of(&out);
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    assert_eq!(v["unexercised"], serde_json::json!([]), "{v}");
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    assert!(v["cases"].as_u64().unwrap() >= 20, "{v}");
}

fn tests_dir(test_file: &str) -> tempfile::TempDir {
    policy_dir(&[
        ("acme/tools.cedar", POLICY),
        ("acme/tools.test.yaml", test_file),
    ])
}

const ONE_FAILING: &str = "defaults:
  principal: {type: Agent, id: ci-bot}
  action: call_tool
cases:
  - name: reading is allowed
    request:
      resource: {type: Tool, id: github__get_file}
    expect:
      decision: allow
      policies: [reads]
  - name: deleting is allowed (it is not)
    request:
      resource: {type: Tool, id: github__delete_repo}
    expect:
      decision: allow
";

#[test]
fn a_failing_case_exits_1_showing_expected_actual_why_and_untested_policies() {
    let dir = tests_dir(ONE_FAILING);
    let out = warden_sync(&["policy", "test", path_str(dir.path())]);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let file = dir.path().join("acme/tools.test.yaml");
    let s = &out.stdout;
    assert!(
        s.contains(&format!("PASS {}:5 reading is allowed", file.display())),
        "{}",
        out.text()
    );
    assert!(
        s.contains(&format!(
            "FAIL {}:11 deleting is allowed (it is not)",
            file.display()
        )),
        "{}",
        out.text()
    );
    assert!(s.contains("expected: allow"), "{}", out.text());
    assert!(s.contains("actual:   deny"), "{}", out.text());
    assert!(s.contains("why: denied by no-delete"), "{}", out.text());
    assert!(
        s.contains(&format!(
            "no-delete (forbid, {}:10): matched, determining",
            dir.path().join("acme/tools.cedar").display()
        )),
        "{}",
        out.text()
    );
    assert!(
        s.contains("and 1 other policy considered that did not match"),
        "{}",
        out.text()
    );
    assert!(
        s.contains("policies no test exercised (1)"),
        "{}",
        out.text()
    );
    assert!(s.contains("  untested ("), "{}", out.text());
    assert!(s.contains("1 passed, 1 failed"), "{}", out.text());

    let out = warden_sync(&["policy", "test", path_str(dir.path()), "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let v = json_of(&out);
    assert_eq!(v["passed"], false, "{v}");
    assert_eq!(v["failed"], 1, "{v}");
    let failed = &v["results"][1];
    assert_eq!(failed["line"], 11, "{v}");
    assert_eq!(failed["differences"][0]["field"], "decision", "{v}");
    assert_eq!(failed["actual"]["outcome"], "deny", "{v}");
    assert_eq!(
        failed["explanation"]["summary"], "denied by no-delete",
        "{v}"
    );
    assert_eq!(v["unexercised"][0]["id"], "untested", "{v}");
}

#[test]
fn an_unknown_field_in_a_test_file_exits_1_with_file_and_line() {
    let dir = tests_dir(
        "cases:
  - name: a typo
    request:
      principal: {type: Agent, id: ci-bot}
      action: call_tool
      resource: {type: Tool, id: github__get_file}
    expect:
      decision: allow
      polices: [reads]
",
    );
    let out = warden_sync(&["policy", "test", path_str(dir.path())]);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let at = format!(
        "ERROR {}:9:7: unknown field `polices`",
        dir.path().join("acme/tools.test.yaml").display()
    );
    assert!(out.stdout.contains(&at), "{}", out.text());

    let out = warden_sync(&["policy", "test", path_str(dir.path()), "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let v = json_of(&out);
    assert_eq!(v["passed"], false, "{v}");
    let e = &v["errors"][0];
    assert!(
        e["file"]
            .as_str()
            .unwrap()
            .ends_with("acme/tools.test.yaml"),
        "{v}"
    );
    assert_eq!(
        (e["line"].as_u64(), e["column"].as_u64()),
        (Some(9), Some(7)),
        "{v}"
    );
}

#[test]
fn no_test_files_or_policies_that_do_not_load_exit_1() {
    let dir = policy_dir(&[("acme/tools.cedar", POLICY)]);
    let out = warden_sync(&["policy", "test", path_str(dir.path())]);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    assert!(
        out.stderr.contains("no test files (*.test.yaml)"),
        "{}",
        out.text()
    );

    let dir = policy_dir(&[
        (
            "acme/tools.cedar",
            "permit (principal, action, resource) when {",
        ),
        ("acme/tools.test.yaml", ONE_FAILING),
    ]);
    let out = warden_sync(&["policy", "test", path_str(dir.path())]);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    assert!(out.stderr.contains("acme/tools.cedar:1:"), "{}", out.text());
    assert!(
        out.stderr.contains("the policies do not load"),
        "{}",
        out.text()
    );

    let out = warden_sync(&["policy", "test", path_str(&dir.path().join("nope"))]);
    assert_eq!(out.status.code(), Some(2), "{}", out.text());
}

// ---- explain ----

fn request_file(dir: &Path, text: &str) -> String {
    let p = dir.join("request.yaml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

#[test]
fn explain_says_why_an_agent_was_denied() {
    let scratch = tempfile::tempdir().unwrap();
    // Without a user, no permit of the examples matches `get_file_contents`.
    let req = request_file(
        scratch.path(),
        r#"{"namespace": "acme/platform/api",
            "principal": {"type": "Agent", "id": "claude-code"},
            "action": "call_tool",
            "resource": {"type": "Tool", "id": "github__get_file_contents"}}"#,
    );
    let dir = example_policies();
    let out = warden_sync(&["policy", "explain", path_str(&dir), "--request", &req]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let s = &out.stdout;
    assert!(s.starts_with("decision: deny\n"), "{}", out.text());
    assert!(
        s.contains("denied by default: none of the"),
        "{}",
        out.text()
    );
    let tools = dir.join("acme/platform/tools.cedar");
    assert!(
        s.contains(&format!(
            "platform.read-tools (permit, {}:2): did not match: when `context has on_behalf_of` was false ({}:9:8)",
            tools.display(),
            tools.display()
        )),
        "{}",
        out.text()
    );

    let out = warden_sync(&[
        "policy",
        "explain",
        path_str(&dir),
        "--request",
        &req,
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let v = json_of(&out);
    assert_eq!(v["decision"]["outcome"], "deny", "{v}");
    assert_eq!(v["explanation"]["outcome"], "deny", "{v}");
    let policies = v["explanation"]["policies"].as_array().unwrap();
    let read = policies
        .iter()
        .find(|p| p["policy"]["id"] == "platform.read-tools")
        .unwrap();
    assert_eq!(read["status"], "not_matched", "{v}");
    assert_eq!(read["failed"]["clause"], "when", "{v}");
    assert_eq!(read["failed"]["line"], 9, "{v}");
}

#[test]
fn explain_names_the_determining_policy_of_an_allow_and_an_ask() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = example_policies();
    let req = request_file(
        scratch.path(),
        "namespace: acme/platform/api\nprincipal: {type: Agent, id: claude-code}\n\
         on_behalf_of: {type: User, id: alice}\naction: call_tool\n\
         resource: {type: Tool, id: deploy__trigger_deploy}\ncontext: {args: {environment: production}}\n",
    );
    let out = warden_sync(&["policy", "explain", path_str(&dir), "--request", &req]);
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    assert!(
        out.stdout.starts_with(
            "decision: approval_required\n  approval required by platform.production-deploy-ask\n"
        ),
        "{}",
        out.text()
    );
    assert!(
        out.stdout.contains("platform.production-deploy-ask (ask, "),
        "{}",
        out.text()
    );
    assert!(
        out.stdout.contains(": matched, determining"),
        "{}",
        out.text()
    );
    assert!(
        out.stdout.contains("platform.staging-deploy (permit, ")
            && out
                .stdout
                .contains("when `context.args.environment != \"production\"` was false"),
        "{}",
        out.text()
    );
}

#[test]
fn explain_refuses_a_bad_request_file_with_its_line() {
    let scratch = tempfile::tempdir().unwrap();
    let req = request_file(
        scratch.path(),
        "namespace: acme\nprincipal: {type: Agent, id: a}\nactoin: call_tool\n",
    );
    let out = warden_sync(&[
        "policy",
        "explain",
        path_str(&example_policies()),
        "--request",
        &req,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", out.text());
    assert!(
        out.stderr
            .contains(&format!("{req}:3:1: unknown field `actoin`")),
        "{}",
        out.text()
    );
    let out = warden_sync(&[
        "policy",
        "explain",
        path_str(&example_policies()),
        "--request",
        &format!("{req}.missing"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", out.text());
}
