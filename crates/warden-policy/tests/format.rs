//! Canonical formatting keeps comments and annotations, changes no policy, is stable, and
//! reports a text that does not parse like a build does.

mod common;

use common::*;
use warden_policy::format_policies;

const MESSY: &str = r#"// Header comment: what this file is for.

@id("platform.read-tools")   @reason("Read-only tools are allowed; the token is redacted.")
@redact("args.token")
permit(principal is Agent,action==Action::"call_tool",resource is Tool)
  when {context has on_behalf_of}   // a trailing comment
when{resource.name like "get_*"||resource.name like "list_*"};
// Between policies.
@id("no-delete") @effect("ask")
permit (principal, action == Action::"call_tool", resource)
unless { resource has read_only && resource.read_only };
// At the end.
"#;

#[test]
fn comments_and_annotations_are_kept_and_the_policies_unchanged() {
    let formatted = format_policies("acme/tools.cedar", MESSY).unwrap();
    for kept in [
        "// Header comment: what this file is for.",
        "// a trailing comment",
        "// Between policies.",
        "// At the end.",
        r#"@id("platform.read-tools")"#,
        r#"@reason("Read-only tools are allowed; the token is redacted.")"#,
        r#"@redact("args.token")"#,
        r#"@effect("ask")"#,
    ] {
        assert!(formatted.contains(kept), "{kept:?} lost:\n{formatted}");
    }
    assert_ne!(formatted, MESSY);
    assert!(formatted.ends_with('\n'));
    // The same policies, with the same annotations, come out of both texts.
    let before = engine(&[("acme", MESSY)]);
    let after = engine(&[("acme", &formatted)]);
    let ids = |e: &warden_policy::Engine| {
        e.policies()
            .map(|(r, m)| (r.id.clone(), r.reason.clone(), m))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&before), ids(&after));
    // They decide the same; only the lines the policies start on moved.
    let unlocated = |mut d: warden_core::Decision| {
        d.reasons.iter_mut().for_each(|r| r.line = 0);
        d
    };
    for tool in ["github__get_file", "github__delete_repo"] {
        let req = call_tool("acme", tool);
        assert_eq!(
            unlocated(before.decide(&req)),
            unlocated(after.decide(&req))
        );
    }
}

#[test]
fn formatting_is_stable() {
    let once = format_policies("a.cedar", MESSY).unwrap();
    let twice = format_policies("a.cedar", &once).unwrap();
    assert_eq!(once, twice);
}

#[test]
fn a_syntax_error_is_located() {
    let errs = format_policies(
        "acme/broken.cedar",
        "// fine\npermit (principal, action, resource)\nwhen { principal.name == };\n",
    )
    .unwrap_err();
    assert!(!errs.is_empty());
    assert_eq!(errs[0].origin, "acme/broken.cedar");
    assert_eq!(errs[0].line, 3, "{errs:?}");
}

#[test]
fn a_file_of_comments_only_is_left_as_it_is() {
    let text = "// Nothing here yet.\n";
    assert_eq!(format_policies("a.cedar", text).unwrap(), text);
}
