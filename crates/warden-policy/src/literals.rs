//! The entity literals policies are written with (`Tool::"github__get_file_contents"`,
//! `ToolServer::"io.github.acme/deploy"`, `Agent::"ci-bot"`), each with where it is written,
//! so that a caller can check them against what exists (a tenant's registry).
//!
//! Read from Cedar's syntax tree, not from the text: a literal in the scope
//! (`resource in ToolServer::"…"`), in a condition (`principal == Agent::"…"`) or in a set
//! (`[Tool::"a", Tool::"b"]`) is found wherever it sits, and a string or comment that merely
//! looks like one is not.

use std::str::FromStr;

use cedar_policy::PolicySet;
use cedar_policy_core::ast::{self, ExprKind, Literal};

use crate::source::{LineIndex, PolicySource};

/// One entity literal of a policy, located in its source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntityLiteral {
    /// The source's origin (`acme/platform/tools.cedar`).
    pub origin: String,
    /// The namespace the source's policies apply to (`acme/platform`).
    pub namespace: String,
    /// `Tool`, `ToolServer`, `Agent`, `Action`, …
    pub entity_type: String,
    pub id: String,
    /// 1-based, of the literal's first character.
    pub line: u32,
    pub column: u32,
}

/// Every entity literal of every policy in `sources`, in source order (by origin, then
/// position). A source that does not parse contributes nothing: parsing and validation
/// report it on their own.
pub fn entity_literals(sources: &[PolicySource]) -> Vec<EntityLiteral> {
    let mut out = Vec::new();
    for src in sources {
        let Ok(set) = PolicySet::from_str(&src.text) else {
            continue;
        };
        let lines = LineIndex::new(&src.text);
        let mut found: Vec<(usize, EntityLiteral)> = Vec::new();
        for policy in set.policies() {
            let policy: &ast::Policy = policy.as_ref();
            // The condition is the scope and the `when`/`unless` clauses as one expression.
            let condition = policy.condition();
            for e in condition.subexpressions() {
                let ExprKind::Lit(Literal::EntityUID(uid)) = e.expr_kind() else {
                    continue;
                };
                // The whole text was parsed at once, so offsets are into `src.text`.
                let Some(offset) = uid.loc().or(e.source_loc()).map(|l| l.start()) else {
                    continue;
                };
                let (line, column) = lines.line_col(offset);
                found.push((
                    offset,
                    EntityLiteral {
                        origin: src.origin.clone(),
                        namespace: src.namespace.as_str().to_owned(),
                        entity_type: uid.entity_type().to_string(),
                        id: AsRef::<str>::as_ref(uid.eid()).to_owned(),
                        line,
                        column,
                    },
                ));
            }
        }
        found.sort_by_key(|(offset, _)| *offset);
        found.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        out.extend(found.into_iter().map(|(_, l)| l));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_core::NamespacePath;

    fn literals(text: &str) -> Vec<(String, String, u32, u32)> {
        let src = PolicySource::new(
            NamespacePath::parse("acme/platform").unwrap(),
            "p.cedar",
            text,
        );
        entity_literals(&[src])
            .into_iter()
            .map(|l| (l.entity_type, l.id, l.line, l.column))
            .collect()
    }

    #[test]
    fn literals_in_scopes_conditions_and_sets_are_found_where_they_are_written() {
        let text = "// Tool::\"in_a_comment\"\n\
                    permit (\n  principal == Agent::\"ci-bot\",\n  action == Action::\"call_tool\",\n  resource in ToolServer::\"io.github.acme/deploy\"\n)\n\
                    when { resource == Tool::\"github__get_file_contents\" || [Tool::\"a__b\", Tool::\"c__d\"].contains(resource) }\n\
                    unless { resource.name == \"Tool::\\\"in_a_string\\\"\" };\n";
        let found = literals(text);
        assert_eq!(
            found,
            vec![
                ("Agent".into(), "ci-bot".into(), 3, 16),
                ("Action".into(), "call_tool".into(), 4, 13),
                ("ToolServer".into(), "io.github.acme/deploy".into(), 5, 15),
                ("Tool".into(), "github__get_file_contents".into(), 7, 20),
                ("Tool".into(), "a__b".into(), 7, 58),
                ("Tool".into(), "c__d".into(), 7, 72),
            ],
            "{found:?}"
        );
    }

    #[test]
    fn a_source_that_does_not_parse_has_no_literals() {
        assert!(literals("permit (principal == Agent::\"x\", action, resource) when {").is_empty());
    }
}
