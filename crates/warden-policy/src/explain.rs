//! Explanations: for one request, every policy considered, which matched, which determined
//! the outcome, and for the others the first condition that did not hold.
//!
//! This is the answer to "why was my agent denied?" without reading every policy. It is
//! computed on demand, apart from [`Engine::decide`], which does none of this work: an
//! explanation evaluates a policy piece by piece (its scope clauses, then each `when` and
//! `unless` clause, then each conjunct of a failing `when`) to find the piece that failed,
//! which costs several evaluations per policy instead of one.
//!
//! The pieces are evaluated in the order Cedar evaluates the whole condition, with the same
//! short-circuits (`principal && action && resource && clause1 && clause2 …`, each `when`
//! a conjunction), so a policy is matched, not matched or in error here exactly when it is
//! for `decide`; the outcome and determining policies come from the engine's own outcome
//! rule.

use cedar_policy_core::ast::{self, ExprKind, Literal, SlotEnv, UnaryOp, ValueKind};
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;
use cedar_policy_core::parser::Loc;
use warden_core::{
    Clause, Decision, DecisionRequest, Explanation, FailedCondition, Outcome, PolicyEffect,
    PolicyExplanation, PolicyMode, PolicyStatus,
};

use crate::Engine;
use crate::source::LineIndex;

/// How one policy fared.
enum Verdict {
    Matched,
    NotMatched(FailedCondition),
    Error(FailedCondition, String),
}

impl Engine {
    /// Explains how [`Engine::decide`] decides `req`: the policies considered (the slice),
    /// which matched, which determined the outcome, and for each policy that did not match
    /// (or failed) the first condition that did not hold (or could not be evaluated).
    ///
    /// Not for the decision path: it evaluates each policy piece by piece.
    pub fn explain(&self, req: &DecisionRequest) -> Explanation {
        let action = match self.check(req) {
            Ok(a) => a,
            Err(e) => return refused(e),
        };
        let slice = self.slice_for(req, action);
        if slice.is_empty() {
            return Explanation {
                outcome: Outcome::Deny,
                summary: "denied by default: no policy applies to this action on this resource \
                          in this namespace"
                    .into(),
                refused: None,
                policies: Vec::new(),
            };
        }
        let prepared = match self.prepare(action, req) {
            Ok(p) => p,
            Err(e) => return refused(e),
        };
        let evaluator = Evaluator::new(
            prepared.request,
            &prepared.entities,
            Extensions::all_available(),
        );
        let mut satisfied: Vec<u32> = Vec::new();
        let mut failed: Vec<(u32, String)> = Vec::new();
        let mut verdicts: Vec<(u32, Verdict)> = Vec::with_capacity(slice.len());
        for &n in slice.iter() {
            let (_, _, _, mode) = self.policy_meta(n);
            if mode == PolicyMode::Off {
                continue;
            }
            let verdict = judge(&evaluator, self.parsed_policy(n));
            match &verdict {
                Verdict::Matched => satisfied.push(n),
                Verdict::Error(_, e) => failed.push((n, e.clone())),
                Verdict::NotMatched(_) => {}
            }
            verdicts.push((n, verdict));
        }
        let decision = self.outcome(&satisfied, &failed, slice.len());
        let policies = verdicts
            .into_iter()
            .map(|(n, verdict)| {
                let (reference, forbid, ask, mode) = self.policy_meta(n);
                let effect = match (forbid, ask) {
                    (true, _) => PolicyEffect::Forbid,
                    (false, true) => PolicyEffect::Ask,
                    (false, false) => PolicyEffect::Permit,
                };
                let (status, failed) = match verdict {
                    Verdict::Matched => (PolicyStatus::Matched, None),
                    Verdict::NotMatched(f) => (PolicyStatus::NotMatched, Some(f)),
                    Verdict::Error(f, _) => (PolicyStatus::Error, Some(f)),
                };
                PolicyExplanation {
                    determining: decision.reasons.iter().any(|r| r.id == reference.id),
                    policy: reference.clone(),
                    effect,
                    mode,
                    status,
                    failed,
                }
            })
            .collect::<Vec<_>>();
        Explanation {
            outcome: decision.outcome,
            summary: summary(&decision, &policies),
            refused: None,
            policies,
        }
    }
}

fn refused(reason: String) -> Explanation {
    Explanation {
        outcome: Outcome::Deny,
        summary: format!(
            "denied: the request was refused before any policy was evaluated: {reason}"
        ),
        refused: Some(reason),
        policies: Vec::new(),
    }
}

fn summary(d: &Decision, policies: &[PolicyExplanation]) -> String {
    let ids = |f: &dyn Fn(&PolicyExplanation) -> bool| {
        policies
            .iter()
            .filter(|p| f(p))
            .map(|p| p.policy.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match d.outcome {
        Outcome::Allow => format!("allowed by {}", ids(&|p| p.determining)),
        Outcome::ApprovalRequired => {
            format!("approval required by {}", ids(&|p| p.determining))
        }
        Outcome::Deny if d.reasons.is_empty() => {
            let enforced = |p: &PolicyExplanation| {
                p.mode == PolicyMode::Enforce && p.effect != PolicyEffect::Forbid
            };
            let permits = policies.iter().filter(|p| enforced(p)).count();
            match permits {
                0 => "denied by default: no permit policy applies to this request".into(),
                1 => "denied by default: the one permit policy considered did not match".into(),
                n => {
                    format!("denied by default: none of the {n} permit policies considered matched")
                }
            }
        }
        Outcome::Deny => {
            let forbids = ids(&|p| p.determining && p.status == PolicyStatus::Matched);
            let errors = ids(&|p| p.determining && p.status == PolicyStatus::Error);
            match (forbids.is_empty(), errors.is_empty()) {
                (false, true) => format!("denied by {forbids}"),
                (true, false) => {
                    format!("denied because {errors} could not be evaluated (an error denies)")
                }
                _ => format!(
                    "denied by {forbids}, and because {errors} could not be evaluated (an error denies)"
                ),
            }
        }
    }
}

/// Evaluates one policy piece by piece, in Cedar's order, stopping at the first piece that
/// does not hold.
fn judge(evaluator: &Evaluator<'_>, policy: &ast::Policy) -> Verdict {
    let scope = scope_offsets(policy);
    let scope_pieces = [
        (
            Clause::Principal,
            policy.principal_constraint().as_expr(),
            policy.principal_constraint().to_string(),
        ),
        (
            Clause::Action,
            policy.action_constraint().as_expr(),
            policy.action_constraint().to_string(),
        ),
        (
            Clause::Resource,
            policy.resource_constraint().as_expr(),
            policy.resource_constraint().to_string(),
        ),
    ];
    for (i, (clause, expr, text)) in scope_pieces.into_iter().enumerate() {
        let (line, column) = match (policy.loc(), scope.get(i)) {
            (Some(loc), Some(&at)) => position(loc, at),
            (Some(loc), None) => position(loc, loc.start()),
            _ => (0, 0),
        };
        let failed = |error: Option<String>| FailedCondition {
            clause,
            text: text.clone(),
            line,
            column,
            error,
        };
        match truth(evaluator, &expr) {
            Ok(true) => {}
            Ok(false) => return Verdict::NotMatched(failed(None)),
            Err(e) => return Verdict::Error(failed(Some(e.clone())), e),
        }
    }
    let Some(conditions) = policy.non_scope_constraints() else {
        return Verdict::Matched;
    };
    for clause in clauses(conditions, policy.loc()) {
        match clause {
            Piece::When(expr) => {
                for conjunct in conjuncts(expr) {
                    let failed = |error: Option<String>| condition(Clause::When, conjunct, error);
                    match truth(evaluator, conjunct) {
                        Ok(true) => {}
                        Ok(false) => return Verdict::NotMatched(failed(None)),
                        Err(e) => return Verdict::Error(failed(Some(e.clone())), e),
                    }
                }
            }
            Piece::Unless(inner) => {
                let failed = |error: Option<String>| condition(Clause::Unless, inner, error);
                match truth(evaluator, inner) {
                    Ok(false) => {}
                    Ok(true) => return Verdict::NotMatched(failed(None)),
                    Err(e) => return Verdict::Error(failed(Some(e.clone())), e),
                }
            }
        }
    }
    Verdict::Matched
}

fn truth(evaluator: &Evaluator<'_>, expr: &ast::Expr) -> Result<bool, String> {
    match evaluator.interpret(expr, &SlotEnv::new()) {
        Ok(v) => match v.value {
            ValueKind::Lit(Literal::Bool(b)) => Ok(b),
            other => Err(format!("condition evaluated to {other}, not a boolean")),
        },
        Err(e) => Err(e.to_string()),
    }
}

fn condition(clause: Clause, expr: &ast::Expr, error: Option<String>) -> FailedCondition {
    let (text, line, column) = match expr.source_loc() {
        Some(loc) => {
            let (line, column) = position(loc, loc.start());
            (
                loc.snippet().map_or_else(|| expr.to_string(), squeeze),
                line,
                column,
            )
        }
        None => (expr.to_string(), 0, 0),
    };
    FailedCondition {
        clause,
        text,
        line,
        column,
        error,
    }
}

/// A condition as written, on one line: a multi-line condition is easier to read in a
/// report with its line breaks and indentation collapsed.
fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One `when` or `unless` clause of a policy.
enum Piece<'a> {
    When(&'a ast::Expr),
    /// The clause's condition (the policy requires it to be false).
    Unless(&'a ast::Expr),
}

/// Splits a policy's conditions into its clauses. Cedar joins the clauses `c1 && (c2 && …)`
/// with `&&` nodes located at the whole policy, while an `&&` written inside a clause is
/// located at that clause's text; this tells the two apart. An `unless` clause is a `!`
/// located at the clause, `unless` keyword included.
fn clauses<'a>(conditions: &'a ast::Expr, policy: Option<&Loc>) -> Vec<Piece<'a>> {
    let at_policy = |e: &ast::Expr| match (e.source_loc(), policy) {
        (Some(a), Some(p)) => a.span == p.span,
        _ => false,
    };
    let mut out = Vec::new();
    let mut rest = conditions;
    loop {
        let (clause, next) = match rest.expr_kind() {
            ExprKind::And { left, right } if at_policy(rest) => (left.as_ref(), Some(right)),
            _ => (rest, None),
        };
        out.push(piece(clause));
        match next {
            Some(r) => rest = r,
            None => break,
        }
    }
    out
}

fn piece(clause: &ast::Expr) -> Piece<'_> {
    if let ExprKind::UnaryApp {
        op: UnaryOp::Not,
        arg,
    } = clause.expr_kind()
        && clause
            .source_loc()
            .and_then(Loc::snippet)
            .is_some_and(|s| s.trim_start().starts_with("unless"))
    {
        return Piece::Unless(arg);
    }
    Piece::When(clause)
}

/// The conjuncts of a `when` condition, left to right (`a && b && c` → `a`, `b`, `c`), the
/// order in which Cedar evaluates them.
fn conjuncts(expr: &ast::Expr) -> Vec<&ast::Expr> {
    match expr.expr_kind() {
        ExprKind::And { left, right } => {
            let mut v = conjuncts(left);
            v.extend(conjuncts(right));
            v
        }
        _ => vec![expr],
    }
}

/// Where the principal, action and resource clauses of a policy's scope start, as offsets
/// into its source: after the annotations, the first `(`, then after each `,` outside
/// brackets, strings and comments. Empty if the text does not look as expected.
fn scope_offsets(policy: &ast::Policy) -> Vec<usize> {
    let Some(loc) = policy.loc() else {
        return Vec::new();
    };
    let start = policy
        .annotations()
        .filter_map(|(_, a)| a.loc.as_ref().map(Loc::end))
        .max()
        .unwrap_or(loc.start())
        .max(loc.start());
    let src = loc.src.as_bytes();
    let end = loc.end().min(src.len());
    let mut offsets = Vec::new();
    let mut depth = 0usize;
    let mut expect_clause = false;
    let mut i = start;
    while i < end && offsets.len() < 3 {
        match src[i] {
            b'/' if src.get(i + 1) == Some(&b'/') => {
                while i < end && src[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b if b.is_ascii_whitespace() => {}
            b'"' => {
                i += 1;
                while i < end && src[i] != b'"' {
                    i += if src[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'(' | b'[' => {
                depth += 1;
                if depth == 1 {
                    expect_clause = true;
                    i += 1;
                    continue;
                }
            }
            b')' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => {
                expect_clause = true;
                i += 1;
                continue;
            }
            _ => {}
        }
        if expect_clause && !src[i].is_ascii_whitespace() {
            offsets.push(i);
            expect_clause = false;
        }
        i += 1;
    }
    offsets
}

/// 1-based line and column of `offset` in the source `loc` points into.
fn position(loc: &Loc, offset: usize) -> (u32, u32) {
    LineIndex::new(&loc.src).line_col(offset)
}
