//! Which parts of a request's context a set of policies can read.
//!
//! A decision is a function of the request's entities (principal, resource, on-behalf-of
//! user, namespace), its action, and the context values the conditions read. Policies read
//! the context through attribute paths — `context.time.hour`, `context has session`,
//! `context.args.environment` — so two requests with the same entities and action that agree
//! on every path read are decided the same way. A simulation uses this to decide each
//! distinct request once (see [`crate::simulate`]).
//!
//! The analysis is conservative: a path is the longest attribute chain rooted at `context`;
//! any other use of `context` (passed whole to an operator, compared as a record, or inside
//! an expression this walk does not know) means the whole context is read.

use cedar_policy_core::ast::{Expr, ExprKind, Var};
use smol_str::SmolStr;

/// One attribute path read from the context: `context.time.hour` reads the value at
/// `time.hour`; `context.args has environment` only whether `args.environment` is there.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ContextPath {
    /// At least one attribute.
    pub attrs: Vec<SmolStr>,
    /// Only whether the last attribute is present is read.
    pub presence: bool,
}

/// What the policies read of the context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContextReads {
    /// Only these paths, sorted, deduplicated.
    Paths(Vec<ContextPath>),
    /// The context as a whole.
    All,
}

impl ContextReads {
    pub(crate) fn of<'a>(conditions: impl IntoIterator<Item = &'a Expr>) -> ContextReads {
        let mut paths = Vec::new();
        for c in conditions {
            if !walk(c, &mut paths) {
                return ContextReads::All;
            }
        }
        paths.sort();
        paths.dedup();
        ContextReads::Paths(paths)
    }
}

fn is_context(e: &Expr) -> bool {
    matches!(e.expr_kind(), ExprKind::Var(Var::Context))
}

/// The path `e` reads when it is a chain of attribute reads, or a test, rooted at `context`.
fn context_path(e: &Expr) -> Option<ContextPath> {
    let presence = matches!(
        e.expr_kind(),
        ExprKind::HasAttr { .. } | ExprKind::ExtHasAttr { .. }
    );
    attribute_chain(e).map(|attrs| ContextPath { attrs, presence })
}

/// The attributes of a chain of reads and tests rooted at `context`.
fn attribute_chain(e: &Expr) -> Option<Vec<SmolStr>> {
    let (inner, attrs): (&Expr, Vec<SmolStr>) = match e.expr_kind() {
        ExprKind::GetAttr { expr, attr } | ExprKind::HasAttr { expr, attr } => {
            (expr, vec![attr.clone()])
        }
        ExprKind::ExtHasAttr { expr, attrs } => (expr, attrs.iter().cloned().collect()),
        _ => return None,
    };
    let mut path = if is_context(inner) {
        Vec::new()
    } else {
        // Below a test there is only a boolean: an inner link is always a read.
        match inner.expr_kind() {
            ExprKind::GetAttr { .. } => attribute_chain(inner)?,
            _ => return None,
        }
    };
    path.extend(attrs);
    Some(path)
}

/// Adds the context paths `e` reads; false when it reads the context other than by paths.
fn walk(e: &Expr, out: &mut Vec<ContextPath>) -> bool {
    if let Some(path) = context_path(e) {
        out.push(path);
        return true;
    }
    match e.expr_kind() {
        ExprKind::Var(Var::Context) => false,
        ExprKind::Lit(_) | ExprKind::Var(_) | ExprKind::Slot(_) => true,
        ExprKind::If {
            test_expr,
            then_expr,
            else_expr,
        } => walk(test_expr, out) && walk(then_expr, out) && walk(else_expr, out),
        ExprKind::And { left, right } | ExprKind::Or { left, right } => {
            walk(left, out) && walk(right, out)
        }
        ExprKind::UnaryApp { arg, .. } => walk(arg, out),
        ExprKind::BinaryApp { arg1, arg2, .. } => walk(arg1, out) && walk(arg2, out),
        ExprKind::ExtensionFunctionApp { args, .. } => args.iter().all(|a| walk(a, out)),
        ExprKind::GetAttr { expr, .. }
        | ExprKind::HasAttr { expr, .. }
        | ExprKind::ExtHasAttr { expr, .. }
        | ExprKind::Like { expr, .. }
        | ExprKind::Is { expr, .. } => walk(expr, out),
        ExprKind::Set(items) => items.iter().all(|i| walk(i, out)),
        ExprKind::Record(fields) => fields.values().all(|f| walk(f, out)),
        // Anything else: safe only if `context` appears nowhere in it.
        _ => !e.subexpressions().any(is_context),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Engine, PolicySource};
    use warden_core::NamespacePath;

    fn reads(text: &str) -> ContextReads {
        let engine = Engine::build(
            vec![PolicySource::new(
                NamespacePath::parse("acme").unwrap(),
                "acme/p.cedar",
                text,
            )],
            None,
        )
        .unwrap();
        engine.context_reads().clone()
    }

    /// Paths; a leading `?` marks a presence test.
    fn paths(list: &[&[&str]]) -> ContextReads {
        let mut v: Vec<ContextPath> = list
            .iter()
            .map(|p| {
                let presence = p[0] == "?";
                ContextPath {
                    attrs: p[usize::from(presence)..]
                        .iter()
                        .map(|s| SmolStr::from(*s))
                        .collect(),
                    presence,
                }
            })
            .collect();
        v.sort();
        ContextReads::Paths(v)
    }

    #[test]
    fn attribute_chains_are_paths() {
        assert_eq!(
            reads(
                r#"forbid (principal, action == Action::"call_tool", resource is Tool)
                   when { context.time.hour < 6 && context has session
                          && context.session.categories.contains("write") };"#
            ),
            paths(&[
                &["?", "session"],
                &["session", "categories"],
                &["time", "hour"]
            ])
        );
        assert_eq!(
            reads(
                r#"permit (principal, action == Action::"call_tool", resource is Tool)
                   when { context has args.environment && context.args.environment == "prod" };"#
            ),
            paths(&[&["?", "args", "environment"], &["args", "environment"]])
        );
    }

    #[test]
    fn policies_without_context_read_nothing() {
        assert_eq!(
            reads(r#"permit (principal, action == Action::"call_tool", resource is Tool);"#),
            paths(&[])
        );
    }

    #[test]
    fn the_context_used_whole_is_read_whole() {
        assert_eq!(
            reads(
                r#"permit (principal, action == Action::"call_tool", resource is Tool)
                   when { context == context };"#
            ),
            ContextReads::All
        );
    }
}
