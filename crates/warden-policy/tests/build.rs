//! Policies that cannot be used are reported, each at its origin, line and column, and no
//! engine is built.

mod common;

use common::*;
use serde_json::json;
use warden_core::Outcome;
use warden_policy::{Engine, PolicySource};

#[test]
fn an_unparseable_policy_is_reported_at_its_line() {
    let text = "@id(\"ok\") permit (principal, action, resource);\n\n// broken:\npermit (principal, action resource);\n";
    let errs = build_errors(&[("acme/platform", text)], None);
    assert!(!errs.is_empty());
    assert_eq!(errs[0].origin, "acme/platform/policies.cedar");
    assert_eq!(errs[0].line, 4, "{}", errs[0]);
    assert!(
        errs[0]
            .to_string()
            .starts_with("acme/platform/policies.cedar:4:"),
        "{}",
        errs[0]
    );
}

#[test]
fn a_missing_semicolon_is_reported() {
    let errs = build_errors(&[("acme", "permit (principal, action, resource)\n")], None);
    assert_eq!(errs[0].line, 1, "{}", errs[0]);
}

#[test]
fn all_errors_of_all_sources_are_reported() {
    let errs = build_errors(
        &[
            ("acme", "permit (principal, action, resource) when { };\n"),
            (
                "acme/x",
                "\n\npermit (principal, action == Action::\"fly\", resource);\n",
            ),
        ],
        None,
    );
    let origins: Vec<(&str, u32)> = errs.iter().map(|e| (e.origin.as_str(), e.line)).collect();
    assert!(origins.contains(&("acme/policies.cedar", 1)), "{errs:?}");
    assert!(origins.contains(&("acme/x/policies.cedar", 3)), "{errs:?}");
}

#[test]
fn an_unknown_attribute_fails_validation_at_its_line() {
    let text = "@id(\"a\")\npermit (principal, action == Action::\"call_tool\", resource)\nwhen {\n  resource.colour == \"red\"\n};\n";
    let errs = build_errors(&[("acme", text)], None);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].line, errs[0].column), (4, 3), "{}", errs[0]);
    assert!(errs[0].message.contains("colour"), "{}", errs[0]);
    assert!(!errs[0].message.contains("for policy"), "{}", errs[0]);
}

#[test]
fn validation_errors_are_located_in_their_source() {
    let text = "@id(\"a\") permit (principal, action, resource);\n\n@id(\"b\")\nforbid (principal, action == Action::\"call_tool\", resource)\n  when { resource.colour == \"red\" };\n";
    let errs = build_errors(
        &[
            ("acme", "permit (principal, action, resource);"),
            ("acme/x", text),
        ],
        None,
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(
        (errs[0].origin.as_str(), errs[0].line, errs[0].column),
        ("acme/x/policies.cedar", 5, 10),
        "{}",
        errs[0]
    );
}

#[test]
fn templates_are_refused() {
    let errs = build_errors(
        &[(
            "acme",
            "permit (principal, action, resource);\npermit (principal == ?principal, action, resource);",
        )],
        None,
    );
    assert!(errs[0].message.contains("templates"), "{}", errs[0]);
}

#[test]
fn an_unknown_entity_type_fails_validation() {
    let text = "permit (principal == Robot::\"r2\", action, resource);\n";
    let errs = build_errors(&[("acme", text)], None);
    assert_eq!(errs[0].line, 1);
    assert!(errs[0].message.contains("Robot"), "{}", errs[0]);
}

#[test]
fn an_optional_attribute_read_without_has_fails_validation() {
    let text = "permit (principal, action == Action::\"call_tool\", resource) when { resource.risk == \"low\" };";
    let errs = build_errors(&[("acme", text)], None);
    assert!(errs[0].message.contains("risk"), "{}", errs[0]);
}

#[test]
fn bad_annotation_values_are_reported() {
    let errs = build_errors(
        &[(
            "acme",
            "permit (principal, action, resource);\n@effect(\"maybe\")\npermit (principal, action, resource);",
        )],
        None,
    );
    assert_eq!(
        (errs[0].line, errs[0].message.contains("unknown @effect")),
        (2, true),
        "{}",
        errs[0]
    );
    let errs = build_errors(
        &[(
            "acme",
            "@effect(\"ask\") forbid (principal, action, resource);",
        )],
        None,
    );
    assert!(
        errs[0].message.contains("only applies to a permit"),
        "{}",
        errs[0]
    );
    let errs = build_errors(
        &[(
            "acme",
            "\n@id(\"x\")\n@mode(\"loud\")\nforbid (principal, action, resource);",
        )],
        None,
    );
    assert_eq!(errs[0].line, 3, "{}", errs[0]);
    assert!(
        errs[0].message.contains("unknown @mode(\"loud\")"),
        "{}",
        errs[0]
    );
    let errs = build_errors(
        &[(
            "acme",
            "@redact(\"args.token,,\") permit (principal, action, resource);",
        )],
        None,
    );
    assert!(errs[0].message.contains("@redact"), "{}", errs[0]);
}

#[test]
fn the_schema_extension_types_tool_arguments() {
    let policy = r#"@id("main") forbid (principal, action == Action::"call_tool", resource)
        when { context.args has branch && context.args.branch == "main" };"#;
    let unguarded = r#"@id("main") forbid (principal, action == Action::"call_tool", resource)
        when { context.args.branch == "main" };"#;
    let schema = "type Args = { branch?: String, command?: String };";
    let e = engine_with(&[("acme", policy)], Some(schema));
    let d = e.decide(&with_args(
        call_tool("acme", "git__push"),
        json!({"branch": "main"}),
    ));
    assert_eq!((d.outcome, d.reasons.len()), (Outcome::Deny, 1));
    // Without the `has` guard an optional argument cannot be read safely.
    let errs = build_errors(&[("acme", unguarded)], Some(schema));
    assert!(errs[0].message.contains("branch"), "{}", errs[0]);
    // Without an extension `Args` is empty: guarded reads still validate and work.
    let e = engine(&[("acme", policy)]);
    let d = e.decide(&with_args(
        call_tool("acme", "git__push"),
        json!({"branch": "main"}),
    ));
    assert_eq!((d.outcome, d.reasons.len()), (Outcome::Deny, 1));
    assert!(!build_errors(&[("acme", unguarded)], None).is_empty());
}

#[test]
fn an_extension_may_declare_more_than_args() {
    let e = engine_with(
        &[(
            "acme",
            r#"permit (principal, action, resource) when { context.args has level && context.args.level.n > 1 };"#,
        )],
        Some("type Level = { n: Long };\ntype Args = { level?: Level };"),
    );
    assert_eq!(
        e.decide(&with_args(
            call_tool("acme", "a__b"),
            json!({"level": {"n": 2}})
        ))
        .outcome,
        Outcome::Allow
    );
    engine_with(&[], Some("type Unrelated = { n: Long };"));
}

#[test]
fn errors_in_the_schema_extension_are_located_in_it() {
    let errs = build_errors(&[], Some("\n\ntype Args = { branch?: Strin };"));
    assert_eq!(errs[0].origin, "schema.cedarschema");
    assert_eq!(errs[0].line, 3, "{}", errs[0]);
}

#[test]
fn the_content_hash_changes_with_the_sources() {
    let a = engine(&[("acme", "permit (principal, action, resource);")]);
    let b = engine(&[("acme", "permit (principal, action, resource);")]);
    let c = engine(&[("acme", "forbid (principal, action, resource);")]);
    assert_eq!(a.content_hash(), b.content_hash());
    assert_ne!(a.content_hash(), c.content_hash());
    assert_eq!(a.content_hash().len(), 64);
}

#[test]
fn the_engine_is_shareable() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Engine>();
    assert!(Engine::schema_text().contains("entity Tool"));
    let _ = PolicySource::new(
        warden_core::NamespacePath::parse("acme").unwrap(),
        "api:acme",
        "",
    );
}

#[test]
fn the_documented_patterns_validate() {
    let doc = include_str!("../../../docs/policies.md");
    let start = doc
        .find("// Only in working hours.")
        .expect("patterns in docs/policies.md");
    let block = &doc[start..];
    let block = &block[..block.find("```").unwrap()];
    let e = engine_with(&[("acme", block)], Some("type Args = { branch?: String };"));
    assert_eq!(e.policy_count(), 4);
}

#[test]
fn error_messages_say_what_is_wrong() {
    let text = "@id(\"a\")\npermit (principal, action == Action::\"call_tool\", resource)\nwhen { resource.colour == \"red\" };\n";
    let errs = build_errors(&[("acme/platform", text)], None);
    assert_eq!(
        errs[0].to_string(),
        "acme/platform/policies.cedar:3:8: attribute `colour` on entity type `Tool` not found (did you mean `owner`?)"
    );
    let errs = build_errors(
        &[(
            "acme",
            "permit (principal, action, resource) when { context.time.hour > };",
        )],
        None,
    );
    assert_eq!(
        errs[0].to_string(),
        "acme/policies.cedar:1:65: unexpected token `}`"
    );
}
