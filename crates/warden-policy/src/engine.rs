//! The engine: built once from policy texts, then asked for decisions concurrently.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{Effect, Policy, PolicyId, PolicySet, ValidationMode, Validator};
use cedar_policy_core::ast::{self, SlotEnv};
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;
use miette::Diagnostic;
use sha2::{Digest, Sha256};
use warden_core::{Decision, DecisionRequest, Obligation, Outcome, PolicyMode, PolicyRef, Warning};

use crate::annotations::{self, Annotations};
use crate::index::{Entry, Index, Slice, Subject, scope_decided_by_index};
use crate::reads::ContextReads;
use crate::request::{Prepared, RequestBuilder, WARDEN_CONTEXT_KEYS, reserved_key};
use crate::schema::{BASE_SCHEMA, CompiledSchema};
use crate::source::{LineIndex, PolicyError, PolicySource, Span, split_policies};

/// One loaded policy, as decisions report it.
struct Meta {
    reference: PolicyRef,
    forbid: bool,
    ask: bool,
    mode: PolicyMode,
    redact: Vec<String>,
}

/// A validated, indexed set of policies for any number of tenants. Immutable: a change of
/// policies builds a new engine, which the caller swaps in (share it behind an `Arc`).
pub struct Engine {
    schema: CompiledSchema,
    policies: Vec<Meta>,
    /// Each policy's condition (scope and `when`/`unless` clauses as one expression), by
    /// policy number; `None` for `@mode("off")` policies, which are never evaluated.
    conditions: Vec<Option<ast::Expr>>,
    /// Each policy as parsed, by policy number, for explanations only: `decide` never reads
    /// it. Cedar shares a policy's body behind an `Arc`, so keeping it costs little.
    parsed: Vec<ast::Policy>,
    index: Index,
    requests: RequestBuilder,
    /// What the conditions read of a request's context.
    context_reads: ContextReads,
    hash: String,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("policies", &self.policies.len())
            .field("content_hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// Where a parsed policy sits in its source, to locate validation errors.
struct Located {
    source: usize,
    offset: usize,
}

impl Engine {
    /// Parses and strictly validates every policy against Warden's schema (completed by the
    /// tenant's `schema_extension`, the text of `schema.cedarschema`), then indexes them.
    /// Every problem is reported, each located as `origin:line:column`; nothing is built
    /// unless all policies are usable.
    pub fn build(
        sources: Vec<PolicySource>,
        schema_extension: Option<&str>,
    ) -> Result<Engine, Vec<PolicyError>> {
        let schema = CompiledSchema::compile(schema_extension).map_err(|e| vec![e])?;
        let mut errors: Vec<PolicyError> = Vec::new();
        let mut parsed: Vec<(Policy, Meta, Located)> = Vec::new();
        let mut ids: HashMap<(String, String), (String, u32)> = HashMap::new();

        for (s, src) in sources.iter().enumerate() {
            let lines = LineIndex::new(&src.text);
            let policies = match parse_source(src, &lines) {
                Ok(p) => p,
                Err(errs) => {
                    errors.extend(errs);
                    continue;
                }
            };
            for (n, (policy, span)) in policies.into_iter().enumerate() {
                let text = &src.text[span.start..span.end];
                let number = parsed.len();
                let policy = policy.new_id(PolicyId::new(number.to_string()));
                let ann = match annotations::read(&policy) {
                    Ok(a) => a,
                    Err(e) => {
                        let at = text.find(&format!("@{}", e.key)).unwrap_or(0);
                        errors.push(PolicyError::at(
                            &src.origin,
                            &lines,
                            span.start + at,
                            e.message,
                        ));
                        continue;
                    }
                };
                let (line, _) = lines.line_col(span.start);
                let Annotations {
                    id,
                    reason,
                    ask,
                    mode,
                    redact,
                } = ann;
                let id = id.unwrap_or_else(|| format!("{}#{n}", src.origin));
                let tenant = src.namespace.tenant().as_str().to_owned();
                if let Some((origin, first)) = ids.get(&(tenant.clone(), id.clone())) {
                    errors.push(PolicyError::at(
                        &src.origin,
                        &lines,
                        span.start,
                        format!("duplicate policy id {id:?} in tenant {tenant:?} (first defined at {origin}:{first})"),
                    ));
                    continue;
                }
                ids.insert((tenant, id.clone()), (src.origin.clone(), line));
                let meta = Meta {
                    reference: PolicyRef {
                        id,
                        namespace: src.namespace.as_str().to_owned(),
                        origin: src.origin.clone(),
                        line,
                        reason,
                    },
                    forbid: policy.effect() == Effect::Forbid,
                    ask,
                    mode,
                    redact,
                };
                parsed.push((
                    policy,
                    meta,
                    Located {
                        source: s,
                        offset: span.start,
                    },
                ));
            }
        }

        // Policies that parsed are validated even when others did not: all problems at once.
        errors.extend(validate(&schema, &sources, &parsed));
        if !errors.is_empty() {
            return Err(errors);
        }

        let entries: Vec<Entry<'_>> = parsed
            .iter()
            .map(|(p, m, _)| Entry {
                namespace: &m.reference.namespace,
                policy: (m.mode != PolicyMode::Off).then_some(p),
            })
            .collect();
        let index = Index::build(&schema, &entries);
        drop(entries);
        // Cedar rebuilds a policy's condition expression each time it evaluates it; building
        // it once here takes that allocation off every decision. Where the index already
        // guarantees the scope (action, principal and resource by uid or type), only the
        // `when`/`unless` clauses are left to evaluate.
        let conditions: Vec<Option<ast::Expr>> = parsed
            .iter()
            .map(|(p, m, _)| {
                (m.mode != PolicyMode::Off).then(|| {
                    let policy = AsRef::<ast::Policy>::as_ref(p);
                    if scope_decided_by_index(&schema, p) {
                        policy
                            .non_scope_constraints()
                            .cloned()
                            .unwrap_or_else(|| ast::Expr::val(true))
                    } else {
                        policy.condition()
                    }
                })
            })
            .collect();
        let (parsed, policies): (Vec<ast::Policy>, Vec<Meta>) = parsed
            .into_iter()
            .map(|(p, m, _)| (AsRef::<ast::Policy>::as_ref(&p).clone(), m))
            .unzip();
        let requests = RequestBuilder::new(schema.types.iter().map(|(n, (_, t))| (n, t)));
        let context_reads = ContextReads::of(conditions.iter().flatten());
        Ok(Engine {
            requests,
            context_reads,
            schema,
            policies,
            conditions,
            parsed,
            index,
            hash: content_hash(&sources, schema_extension),
        })
    }

    /// What the policies can read of a request's context: requests that agree on it (and on
    /// entities and action) get the same decision.
    pub fn context_reads(&self) -> &ContextReads {
        &self.context_reads
    }

    /// An engine without policies: it denies everything.
    pub fn empty() -> Engine {
        Engine::build(Vec::new(), None).expect("Warden's schema is valid")
    }

    /// How many policies were loaded (including `@mode("off")` ones).
    pub fn policy_count(&self) -> usize {
        self.policies.len()
    }

    /// A stable hex digest of the sources and schema extension the engine was built from.
    pub fn content_hash(&self) -> String {
        self.hash.clone()
    }

    /// Warden's Cedar schema (without a tenant extension).
    pub fn schema_text() -> &'static str {
        BASE_SCHEMA
    }

    /// The policies loaded, in source order, with their mode.
    pub fn policies(&self) -> impl Iterator<Item = (&PolicyRef, PolicyMode)> {
        self.policies.iter().map(|m| (&m.reference, m.mode))
    }

    /// Refuses requests the schema cannot make sense of: an unknown action, a principal or
    /// resource type the action does not apply to, a context key Warden fills in itself, a
    /// namespace outside the request's tenant.
    pub fn check_request(&self, req: &DecisionRequest) -> Result<(), String> {
        self.check(req).map(|_| ())
    }

    pub(crate) fn check(&self, req: &DecisionRequest) -> Result<u32, String> {
        let ns_tenant = req.namespace.as_str().split('/').next().unwrap_or_default();
        if ns_tenant != req.tenant.as_str() {
            return Err(format!(
                "namespace {:?} does not belong to tenant {:?}",
                req.namespace.as_str(),
                req.tenant.as_str()
            ));
        }
        let Some(&a) = self.schema.action_index.get(&req.action) else {
            let known: Vec<&str> = self
                .schema
                .actions
                .iter()
                .map(|a| a.name.as_str())
                .collect();
            return Err(format!(
                "unknown action {:?}; known actions: {}",
                req.action,
                known.join(", ")
            ));
        };
        let action = &self.schema.actions[a as usize];
        if !action.principals.contains(&req.principal.entity_type) {
            return Err(format!(
                "principal type {:?} is not allowed for action {:?} (allowed: {})",
                req.principal.entity_type,
                action.name,
                action.principals.join(", ")
            ));
        }
        if !action.resources.contains(&req.resource.entity_type) {
            return Err(format!(
                "resource type {:?} is not allowed for action {:?} (allowed: {})",
                req.resource.entity_type,
                action.name,
                action.resources.join(", ")
            ));
        }
        if let Some(k) = WARDEN_CONTEXT_KEYS
            .iter()
            .find(|k| req.context.contains_key(**k))
        {
            return Err(reserved_key(k));
        }
        if let Some(u) = &req.on_behalf_of
            && u.entity_type != "User"
        {
            return Err(format!(
                "on_behalf_of must be a User, not {:?}",
                u.entity_type
            ));
        }
        Ok(a)
    }

    /// Decides a request. Never fails: a request that cannot be evaluated is denied, with
    /// the reason in `errors`.
    pub fn decide(&self, req: &DecisionRequest) -> Decision {
        let a = match self.check(req) {
            Ok(a) => a,
            Err(e) => return Decision::deny_with_error(e),
        };
        let slice = self.index.slice(
            req.namespace.as_str(),
            a,
            self.subject(&req.principal),
            self.subject(&req.resource),
        );
        if slice.is_empty() {
            return decision(Outcome::Deny, 0);
        }
        let prepared = match self
            .requests
            .build(self.schema.actions[a as usize].uid.as_ref(), req)
        {
            Ok(r) => r,
            Err(e) => {
                return Decision {
                    evaluated: slice.len(),
                    ..Decision::deny_with_error(e)
                };
            }
        };
        // Each policy's condition is evaluated on its own, so that every satisfied policy is
        // known whatever its effect (redaction and warnings need them all) and an error is
        // seen as an error, not skipped as Cedar's authorizer does. Forbid-overrides and the
        // annotations are applied in `outcome`.
        let evaluator = Evaluator::new(
            prepared.request,
            &prepared.entities,
            Extensions::all_available(),
        );
        let no_slots = SlotEnv::new();
        let mut satisfied: Vec<u32> = Vec::with_capacity(slice.len());
        let mut failed: Vec<(u32, String)> = Vec::new();
        for &n in slice.iter() {
            let Some(condition) = &self.conditions[n as usize] else {
                continue;
            };
            match evaluator.interpret(condition, &no_slots).map(|v| v.value) {
                Ok(ast::ValueKind::Lit(ast::Literal::Bool(true))) => satisfied.push(n),
                Ok(ast::ValueKind::Lit(ast::Literal::Bool(false))) => {}
                // Validation makes conditions boolean; anything else is treated as an error.
                Ok(other) => {
                    failed.push((n, format!("condition evaluated to {other}, not a boolean")))
                }
                Err(e) => failed.push((n, e.to_string())),
            }
        }
        self.outcome(&satisfied, &failed, slice.len())
    }

    fn subject<'a>(&self, r: &'a warden_core::Resource) -> Subject<'a> {
        let type_number = self.schema.types.get(&r.entity_type).map(|(t, _)| *t);
        Subject {
            type_number,
            entity_type: &r.entity_type,
            id: &r.id,
        }
    }

    pub(crate) fn outcome(
        &self,
        satisfied: &[u32],
        failed: &[(u32, String)],
        evaluated: usize,
    ) -> Decision {
        let meta = |n: u32| &self.policies[n as usize];
        let enforced = |n: &&u32| meta(**n).mode == PolicyMode::Enforce;
        let forbids: Vec<u32> = satisfied
            .iter()
            .filter(enforced)
            .filter(|n| meta(**n).forbid)
            .copied()
            .collect();
        let permits: Vec<u32> = satisfied
            .iter()
            .filter(enforced)
            .filter(|n| !meta(**n).forbid)
            .copied()
            .collect();
        let errors: Vec<&(u32, String)> = failed
            .iter()
            .filter(|(n, _)| meta(*n).mode == PolicyMode::Enforce)
            .collect();
        let asks: Vec<u32> = permits.iter().filter(|n| meta(**n).ask).copied().collect();

        let mut d = decision(Outcome::Deny, evaluated);
        if !forbids.is_empty() || !errors.is_empty() {
            // An error never allows: the policy might have been a forbid that applies.
            let mut reasons: Vec<u32> = forbids
                .iter()
                .copied()
                .chain(errors.iter().map(|(n, _)| *n))
                .collect();
            reasons.sort_unstable();
            reasons.dedup();
            d.reasons = reasons
                .into_iter()
                .map(|n| meta(n).reference.clone())
                .collect();
            d.errors = errors
                .iter()
                .map(|(n, e)| format!("{}: {e}", meta(*n).reference.id))
                .collect();
        } else if !asks.is_empty() {
            d.outcome = Outcome::ApprovalRequired;
            d.reasons = asks.iter().map(|&n| meta(n).reference.clone()).collect();
            d.obligations.push(Obligation::Approval {
                policies: asks.iter().map(|&n| meta(n).reference.id.clone()).collect(),
            });
        } else if !permits.is_empty() {
            d.outcome = Outcome::Allow;
            d.reasons = permits.iter().map(|&n| meta(n).reference.clone()).collect();
        }
        let denied_by_policy = !forbids.is_empty() || !errors.is_empty();

        // Redaction applies whenever a policy's conditions hold, whatever the outcome; a
        // policy that failed to evaluate might have held, so its redactions apply too.
        let mut matched: Vec<u32> = satisfied
            .iter()
            .copied()
            .chain(errors.iter().map(|(n, _)| *n))
            .collect();
        matched.sort_unstable();
        matched.dedup();
        for n in matched {
            let m = meta(n);
            if m.mode == PolicyMode::Enforce {
                for path in &m.redact {
                    d.obligations.push(Obligation::Redact {
                        path: path.clone(),
                        policy: m.reference.id.clone(),
                    });
                }
            }
        }

        // A warn-mode policy reports the outcome it would have produced had it been enforced
        // alongside the others, when that differs from the real one.
        let warned = satisfied
            .iter()
            .map(|&n| (n, false))
            .chain(failed.iter().map(|(n, _)| (*n, true)))
            .filter(|(n, _)| meta(*n).mode == PolicyMode::Warn);
        for (n, errored) in warned {
            let m = meta(n);
            let would = if errored || m.forbid || denied_by_policy {
                Outcome::Deny
            } else if m.ask || d.outcome == Outcome::ApprovalRequired {
                Outcome::ApprovalRequired
            } else {
                Outcome::Allow
            };
            if would != d.outcome && !d.warnings.iter().any(|w| w.policy.id == m.reference.id) {
                d.warnings.push(Warning {
                    policy: m.reference.clone(),
                    would,
                });
            }
        }
        d
    }
}

/// What explanations read of the engine (see `explain.rs`). `decide` does not go through
/// these: it stays free of any explanation work.
impl Engine {
    /// The slice for a request that passed `check` (which gave `action`).
    pub(crate) fn slice_for(&self, req: &DecisionRequest, action: u32) -> Arc<Slice> {
        self.index.slice(
            req.namespace.as_str(),
            action,
            self.subject(&req.principal),
            self.subject(&req.resource),
        )
    }

    /// Cedar's request and entities for a request that passed `check`.
    pub(crate) fn prepare(&self, action: u32, req: &DecisionRequest) -> Result<Prepared, String> {
        self.requests
            .build(self.schema.actions[action as usize].uid.as_ref(), req)
    }

    /// A policy as parsed, by number.
    pub(crate) fn parsed_policy(&self, n: u32) -> &ast::Policy {
        &self.parsed[n as usize]
    }

    /// How decisions name a policy, and what it does: (reference, forbid, ask, mode).
    pub(crate) fn policy_meta(&self, n: u32) -> (&PolicyRef, bool, bool, PolicyMode) {
        let m = &self.policies[n as usize];
        (&m.reference, m.forbid, m.ask, m.mode)
    }
}

fn decision(outcome: Outcome, evaluated: usize) -> Decision {
    Decision {
        outcome,
        reasons: vec![],
        obligations: vec![],
        warnings: vec![],
        errors: vec![],
        evaluated,
    }
}

/// The policy number a policy was given as its Cedar id.
fn number(id: &PolicyId) -> Option<u32> {
    AsRef::<str>::as_ref(id).parse().ok()
}

/// Parses one source, each policy with where it sits in the text. The whole text is parsed
/// at once, which is much cheaper than policy by policy.
fn parse_source(
    src: &PolicySource,
    lines: &LineIndex<'_>,
) -> Result<Vec<(Policy, Span)>, Vec<PolicyError>> {
    let set = PolicySet::from_str(&src.text).map_err(|errs| {
        errs.iter()
            .map(|e| PolicyError::at(&src.origin, lines, label_offset(e), message(e)))
            .collect::<Vec<_>>()
    })?;
    let spans = split_policies(&src.text);
    // Cedar names the policies of a text `policy0`, `policy1`, … in order.
    let written: Vec<Option<Policy>> = (0..spans.len())
        .map(|i| set.policy(&PolicyId::new(format!("policy{i}"))).cloned())
        .collect();
    if let Some(i) = written.iter().position(Option::is_none) {
        return Err(vec![PolicyError::at(
            &src.origin,
            lines,
            spans[i].start,
            "policy templates (with ?principal or ?resource) are not supported; write static policies",
        )]);
    }
    Ok(written.into_iter().flatten().zip(spans).collect())
}

fn validate(
    schema: &CompiledSchema,
    sources: &[PolicySource],
    parsed: &[(Policy, Meta, Located)],
) -> Vec<PolicyError> {
    let set = match PolicySet::from_policies(parsed.iter().map(|(p, _, _)| p.clone())) {
        Ok(s) => s,
        Err(e) => {
            return vec![PolicyError {
                origin: String::new(),
                line: 1,
                column: 1,
                message: e.to_string(),
            }];
        }
    };
    let result = Validator::new(schema.schema.clone()).validate(&set, ValidationMode::Strict);
    let mut errors: Vec<(usize, usize, PolicyError)> = result
        .validation_errors()
        .map(|e| {
            let id = e.policy_id();
            let (_, _, at) = &parsed[number(id).unwrap_or(0) as usize];
            let src = &sources[at.source];
            // Spans are relative to the whole source, which was parsed at once.
            let offset = e
                .labels()
                .and_then(|mut l| l.next())
                .map_or(at.offset, |l| l.offset());
            // Cedar names the policy by its internal number; the location says which it is.
            let text = message(e);
            let text = text
                .strip_prefix(&format!("for policy `{id}`, "))
                .unwrap_or(&text)
                .to_owned();
            (
                at.source,
                offset,
                PolicyError::at(&src.origin, &LineIndex::new(&src.text), offset, text),
            )
        })
        .collect();
    errors.sort_by_key(|(s, o, _)| (*s, *o));
    errors.into_iter().map(|(_, _, e)| e).collect()
}

pub(crate) fn label_offset(e: &dyn Diagnostic) -> usize {
    e.labels()
        .and_then(|mut l| l.next())
        .map_or(0, |l| l.offset())
}

pub(crate) fn message(e: &dyn Diagnostic) -> String {
    match e.help() {
        Some(help) => format!("{e} ({help})"),
        None => e.to_string(),
    }
}

fn content_hash(sources: &[PolicySource], extension: Option<&str>) -> String {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    field(extension.unwrap_or("").as_bytes());
    for s in sources {
        field(s.namespace.as_str().as_bytes());
        field(s.origin.as_bytes());
        field(s.text.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
