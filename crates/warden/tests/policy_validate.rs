//! `warden policy validate DIR`: exit 0 for a directory the server would load, exit 1 with
//! `DIR/tenant/file.cedar:LINE:COL:` errors otherwise, in text or JSON (each error an object
//! with `file`, `line`, `column`, `message`), exit 2 when it cannot run as asked.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

fn validate(dir: &Path, json: bool) -> Out {
    let mut args = vec!["policy", "validate", path_str(dir)];
    if json {
        args.extend(["--format", "json"]);
    }
    warden_sync(&args)
}

#[test]
fn the_example_policies_are_valid() {
    let out = validate(&example_policies(), false);
    assert!(out.success(), "{}", out.text());
    assert!(out.stdout.starts_with("ok: "), "{}", out.text());

    let out = validate(&example_policies(), true);
    assert!(out.success(), "{}", out.text());
    let v = json_of(&out);
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    assert!(v["policies"].as_u64().unwrap() > 0, "{v}");
}

#[test]
fn a_syntax_error_exits_1_with_file_and_line() {
    let dir = policy_dir(&[(
        "acme/broken.cedar",
        "// a policy that never ends\npermit(principal, action, resource) when { \n",
    )]);
    let out = validate(dir.path(), false);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    assert!(
        out.stderr.contains("acme/broken.cedar:2:"),
        "the error names tenant/file.cedar:LINE: {}",
        out.text()
    );
    assert!(
        out.stderr.contains("nothing would be applied"),
        "{}",
        out.text()
    );

    let out = validate(dir.path(), true);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let v = json_of(&out);
    assert_eq!(v["valid"], false, "{v}");
    let errors = v["errors"].as_array().expect("errors array");
    let e = &errors[0];
    assert!(
        e["file"].as_str().unwrap().ends_with("acme/broken.cedar"),
        "{v}"
    );
    assert_eq!(e["line"], 2, "{v}");
    assert!(e["column"].as_u64().unwrap() >= 1, "{v}");
    assert!(!e["message"].as_str().unwrap().is_empty(), "{v}");
}

#[test]
fn a_schema_violation_exits_1_with_file_and_line() {
    let dir = policy_dir(&[
        (
            "acme/platform/ok.cedar",
            "permit (principal is Agent, action == Action::\"read\", resource);\n",
        ),
        (
            "acme/platform/typo.cedar",
            "// reads an attribute tools do not have\n\n\
             permit (principal is Agent, action == Action::\"call_tool\", resource is Tool)\n\
             when { resource.no_such_attribute == \"x\" };\n",
        ),
    ]);
    let out = validate(dir.path(), false);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    assert!(
        out.stderr.contains("acme/platform/typo.cedar:"),
        "{}",
        out.text()
    );
    assert!(
        !out.stderr.contains("ok.cedar"),
        "only the broken file is named: {}",
        out.text()
    );
    let out = validate(dir.path(), true);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let v = json_of(&out);
    assert_eq!(v["valid"], false, "{v}");
    let e = &v["errors"][0];
    assert!(
        e["file"]
            .as_str()
            .unwrap()
            .ends_with("acme/platform/typo.cedar"),
        "{v}"
    );
    assert_eq!(e["line"], 4, "{v}");
    assert!(
        e["message"].as_str().unwrap().contains("no_such_attribute"),
        "{v}"
    );
}

#[test]
fn errors_name_files_as_the_directory_was_given() {
    let dir = policy_dir(&[(
        "acme/broken.cedar",
        "permit(principal, action, resource) when { \n",
    )]);
    let out = validate(dir.path(), false);
    let expected = format!("{}:1:", dir.path().join("acme/broken.cedar").display());
    assert!(out.stderr.contains(&expected), "{}", out.text());
}

#[test]
fn a_file_outside_a_namespace_folder_is_reported_without_a_line() {
    let dir = policy_dir(&[("loose.cedar", "permit(principal, action, resource);\n")]);
    let out = validate(dir.path(), true);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let v = json_of(&out);
    let e = &v["errors"][0];
    assert!(e["file"].as_str().unwrap().ends_with("loose.cedar"), "{v}");
    assert_eq!(e["line"], Value::Null, "{v}");
    assert!(
        e["message"].as_str().unwrap().contains("namespace folder"),
        "{v}"
    );
}

#[test]
fn a_missing_directory_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = validate(&dir.path().join("nope"), false);
    assert_eq!(out.status.code(), Some(2), "{}", out.text());
    assert!(out.stderr.contains("is not a directory"), "{}", out.text());
}
