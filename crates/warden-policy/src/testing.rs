//! Policy tests: requests with the decision they must get, run with the engine that decides
//! in production ([`Engine::build`] and [`Engine::decide`]).
//!
//! Test files are YAML (`*.test.yaml`, next to the policies; JSON is YAML too, so a file
//! may be written in JSON). The format is described in `docs/policies.md`. Parsing refuses
//! unknown fields, each error located as `file:line:column`, so that a misspelt expectation
//! is an error rather than an expectation silently not checked.
//!
//! Besides pass or fail, a run reports which policies no case exercised: a policy that is
//! never among the matching or determining policies of any case is untested.
//!
//! No I/O: callers hand over the texts (the CLI reads the files; a server can check a
//! bundle's tests before applying it).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use serde_saphyr::Spanned;
use warden_core::{
    Decision, DecisionRequest, EntityRef, Explanation, NamespacePath, Obligation, Outcome,
    PolicyMode, PolicyRef, PolicyStatus, Resource, SessionFacts,
};

use crate::{Engine, PolicyError};

/// The file suffix of policy tests.
pub const TEST_FILE_SUFFIX: &str = ".test.yaml";

/// When a case's request happens if it does not say: a Wednesday at 10:00 UTC, inside
/// working hours, so that time-dependent policies decide the same on every run.
pub const DEFAULT_TEST_TIME: &str = "2025-06-04T10:00:00Z";

/// The session id a case gets when it gives session facts but no session id: the engine
/// shows `context.session` only for a request that has a session.
pub const DEFAULT_TEST_SESSION: &str = "test-session";

/// A parsed test file.
#[derive(Clone, Debug, PartialEq)]
pub struct TestFile {
    /// The file, relative to the policy directory (as in errors and reports).
    pub origin: String,
    pub cases: Vec<TestCase>,
}

/// One request and the decision it must get.
#[derive(Clone, Debug, PartialEq)]
pub struct TestCase {
    pub name: String,
    /// Where the case starts in its file (1-based), for reports.
    pub line: u32,
    pub request: DecisionRequest,
    pub expect: Expectation,
}

/// What a case expects. Only `decision` is required; every other field, when given, must
/// equal the decision's exactly (in any order).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Expectation {
    pub decision: Outcome,
    /// The ids of the determining policies (the decision's `reasons`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub obligations: Option<Vec<Obligation>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<ExpectedWarning>>,
    /// The ids of the policies expected to fail evaluation. A case fails when a policy
    /// fails that is not listed here: an error denies, and a test that passes only because
    /// of an error is not testing the policy it meant to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// A warn-mode policy that would have changed the decision.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedWarning {
    pub policy: String,
    pub would: OutcomeName,
}

/// An outcome as written in a test file (`allow`, `deny`, `approval_required`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeName {
    Allow,
    Deny,
    ApprovalRequired,
}

impl From<OutcomeName> for Outcome {
    fn from(o: OutcomeName) -> Outcome {
        match o {
            OutcomeName::Allow => Outcome::Allow,
            OutcomeName::Deny => Outcome::Deny,
            OutcomeName::ApprovalRequired => Outcome::ApprovalRequired,
        }
    }
}

impl From<Outcome> for OutcomeName {
    fn from(o: Outcome) -> OutcomeName {
        match o {
            Outcome::Allow => OutcomeName::Allow,
            Outcome::Deny => OutcomeName::Deny,
            Outcome::ApprovalRequired => OutcomeName::ApprovalRequired,
        }
    }
}

// ---- the file format, as written ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    defaults: Option<RawRequest>,
    cases: Vec<RawCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: Spanned<String>,
    #[serde(default)]
    request: Option<RawRequest>,
    expect: RawExpect,
}

/// The request of a case, or of an explanation: the decision API's request plus what the
/// API takes from the token or the clock (`on_behalf_of`, `session`, `time`).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    namespace: Option<Spanned<String>>,
    principal: Option<Resource>,
    on_behalf_of: Option<EntityRef>,
    session: Option<String>,
    session_facts: Option<SessionFacts>,
    action: Option<String>,
    resource: Option<Resource>,
    context: Option<Map<String, Value>>,
    time: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    decision: OutcomeName,
    #[serde(default)]
    policies: Option<Vec<String>>,
    #[serde(default)]
    obligations: Option<Vec<RawObligation>>,
    #[serde(default)]
    warnings: Option<Vec<ExpectedWarning>>,
    #[serde(default)]
    errors: Vec<String>,
}

/// An obligation as the decision API shows it.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum RawObligation {
    Redact { path: String, policy: String },
    Approval { policies: Vec<String> },
}

impl From<RawObligation> for Obligation {
    fn from(o: RawObligation) -> Obligation {
        match o {
            RawObligation::Redact { path, policy } => Obligation::Redact { path, policy },
            RawObligation::Approval { policies } => Obligation::Approval { policies },
        }
    }
}

fn yaml<'a, T: Deserialize<'a>>(origin: &str, text: &'a str) -> Result<T, Vec<PolicyError>> {
    let mut options = serde_saphyr::Options::default();
    // YAML 1.2: `no`, `on`, `yes` are strings, as a tool argument may well be.
    options.strict_booleans = true;
    // Errors are reported as `file:line:column: message`, without a rendered excerpt.
    options.with_snippet = false;
    serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let e = e.without_snippet();
        let (line, column) = e
            .location()
            .map_or((1, 1), |l| (l.line() as u32, l.column() as u32));
        let message = e.to_string();
        // The parser appends the location; it is in front already.
        let message = message
            .strip_suffix(&format!(" at line {line}, column {column}"))
            .unwrap_or(&message)
            .to_owned();
        vec![PolicyError {
            origin: origin.to_owned(),
            line,
            column,
            message,
        }]
    })
}

fn error_at<T>(origin: &str, at: &Spanned<T>, message: impl Into<String>) -> PolicyError {
    PolicyError {
        origin: origin.to_owned(),
        line: at.referenced.line() as u32,
        column: at.referenced.column() as u32,
        message: message.into(),
    }
}

impl TestFile {
    /// Parses a test file. `folder` is the namespace of the folder the file sits in, if it
    /// sits in one: a case that names no namespace (nor its file's `defaults`) is in it.
    pub fn parse(
        origin: &str,
        folder: Option<&NamespacePath>,
        text: &str,
    ) -> Result<TestFile, Vec<PolicyError>> {
        let raw: RawFile = yaml(origin, text)?;
        if raw.cases.is_empty() {
            return Err(vec![PolicyError {
                origin: origin.to_owned(),
                line: 1,
                column: 1,
                message: "the file has no cases".into(),
            }]);
        }
        let defaults = raw.defaults.unwrap_or_default();
        let mut errors = Vec::new();
        let mut cases = Vec::with_capacity(raw.cases.len());
        let mut names: BTreeMap<String, u32> = BTreeMap::new();
        for case in raw.cases {
            let line = case.name.referenced.line() as u32;
            if let Some(first) = names.insert(case.name.value.clone(), line) {
                errors.push(error_at(
                    origin,
                    &case.name,
                    format!(
                        "duplicate case name {:?} (first at line {first})",
                        case.name.value
                    ),
                ));
                continue;
            }
            let request = case.request.unwrap_or_default().or(&defaults);
            match request.resolve(origin, folder, &case.name) {
                Ok(request) => cases.push(TestCase {
                    name: case.name.value,
                    line,
                    request,
                    expect: Expectation {
                        decision: case.expect.decision.into(),
                        policies: case.expect.policies,
                        obligations: case
                            .expect
                            .obligations
                            .map(|o| o.into_iter().map(Obligation::from).collect()),
                        warnings: case.expect.warnings,
                        errors: case.expect.errors,
                    },
                }),
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            Ok(TestFile {
                origin: origin.to_owned(),
                cases,
            })
        } else {
            Err(errors)
        }
    }
}

/// Parses a single request in the format of a test case's `request` (for explanations).
pub fn parse_request(
    origin: &str,
    folder: Option<&NamespacePath>,
    text: &str,
) -> Result<DecisionRequest, Vec<PolicyError>> {
    let raw: Spanned<RawRequest> = yaml(origin, text)?;
    let at = Spanned {
        value: String::new(),
        referenced: raw.referenced,
        defined: raw.defined,
    };
    raw.value.resolve(origin, folder, &at)
}

impl RawRequest {
    /// This request, each missing field taken from `defaults` (whole: a case's `context`
    /// replaces the default context, it is not merged into it).
    fn or(self, defaults: &RawRequest) -> RawRequest {
        let d = defaults.clone();
        RawRequest {
            namespace: self.namespace.or(d.namespace),
            principal: self.principal.or(d.principal),
            on_behalf_of: self.on_behalf_of.or(d.on_behalf_of),
            session: self.session.or(d.session),
            session_facts: self.session_facts.or(d.session_facts),
            action: self.action.or(d.action),
            resource: self.resource.or(d.resource),
            context: self.context.or(d.context),
            time: self.time.or(d.time),
        }
    }

    /// The decision request, or what is missing or wrong; errors without a place of their
    /// own are located at `at` (the case's name).
    fn resolve<T>(
        self,
        origin: &str,
        folder: Option<&NamespacePath>,
        at: &Spanned<T>,
    ) -> Result<DecisionRequest, Vec<PolicyError>> {
        let mut errors = Vec::new();
        let missing = |field: &str| {
            error_at(
                origin,
                at,
                format!("the request has no `{field}` (give it in the case or in `defaults`)"),
            )
        };
        let namespace = match &self.namespace {
            Some(ns) => NamespacePath::parse(&ns.value)
                .map_err(|e| errors.push(error_at(origin, ns, e.to_string())))
                .ok(),
            None => match folder {
                Some(f) => Some(f.clone()),
                None => {
                    errors.push(missing("namespace"));
                    None
                }
            },
        };
        let time = match &self.time {
            Some(t) => DateTime::parse_from_rfc3339(&t.value)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    errors.push(error_at(
                        origin,
                        t,
                        format!(
                            "`time` must be an RFC 3339 time such as {DEFAULT_TEST_TIME:?}: {e}"
                        ),
                    ))
                })
                .ok(),
            None => Some(default_time()),
        };
        let principal = self.principal.or_else(|| {
            errors.push(missing("principal"));
            None
        });
        let action = self.action.or_else(|| {
            errors.push(missing("action"));
            None
        });
        let resource = self.resource.or_else(|| {
            errors.push(missing("resource"));
            None
        });
        let (Some(namespace), Some(time), Some(principal), Some(action), Some(resource)) =
            (namespace, time, principal, action, resource)
        else {
            return Err(errors);
        };
        let session = match (self.session, &self.session_facts) {
            (Some(s), _) => Some(s),
            (None, Some(_)) => Some(DEFAULT_TEST_SESSION.to_owned()),
            (None, None) => None,
        };
        Ok(DecisionRequest {
            tenant: namespace.tenant(),
            namespace,
            principal,
            on_behalf_of: self.on_behalf_of,
            session,
            facts: self.session_facts.unwrap_or_default(),
            action,
            resource,
            context: self.context.unwrap_or_default(),
            time,
        })
    }
}

fn default_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(DEFAULT_TEST_TIME)
        .expect("the default test time is RFC 3339")
        .with_timezone(&Utc)
}

// ---- running ----

/// The result of running test files against an engine.
#[derive(Clone, Debug, Serialize)]
pub struct TestReport {
    /// True when every case passed.
    pub passed: bool,
    pub files: usize,
    pub cases: usize,
    pub failed: usize,
    pub results: Vec<CaseResult>,
    /// Policies that no case exercised: none of the cases had them among its matching or
    /// determining policies. `@mode("off")` policies are left out: they are never evaluated.
    pub unexercised: Vec<PolicyRef>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    /// The test file, relative to the policy directory.
    pub file: String,
    pub line: u32,
    pub name: String,
    pub passed: bool,
    pub expected: Expectation,
    pub actual: Decision,
    /// What differs, one entry per expectation not met; empty when the case passed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<Difference>,
    /// For a failed case: how each policy considered fared, to see why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<Explanation>,
}

/// One expectation not met.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Difference {
    /// `request`, `decision`, `policies`, `obligations`, `warnings` or `errors`.
    pub field: &'static str,
    pub expected: Value,
    pub actual: Value,
    /// Something that helps, e.g. that no loaded policy has an expected id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Runs every case of `files` with `engine` and reports each result and the policies no
/// case exercised.
pub fn run(engine: &Engine, files: &[TestFile]) -> TestReport {
    let known: BTreeSet<&str> = engine.policies().map(|(r, _)| r.id.as_str()).collect();
    let mut exercised: BTreeSet<(String, String)> = BTreeSet::new();
    let mut results = Vec::new();
    for file in files {
        for case in &file.cases {
            let actual = engine.decide(&case.request);
            let explanation = engine.explain(&case.request);
            let tenant = case.request.tenant.as_str().to_owned();
            for p in &explanation.policies {
                if p.determining || p.status == PolicyStatus::Matched {
                    exercised.insert((tenant.clone(), p.policy.id.clone()));
                }
            }
            let differences = match engine.check_request(&case.request) {
                Err(refused) => vec![Difference {
                    field: "request",
                    expected: Value::String("a request the engine accepts".into()),
                    actual: Value::String(refused),
                    note: None,
                }],
                Ok(()) => compare(&case.expect, &actual, &known),
            };
            let passed = differences.is_empty();
            results.push(CaseResult {
                file: file.origin.clone(),
                line: case.line,
                name: case.name.clone(),
                passed,
                expected: case.expect.clone(),
                actual,
                differences,
                explanation: (!passed).then_some(explanation),
            });
        }
    }
    let unexercised = engine
        .policies()
        .filter(|(r, mode)| {
            *mode != PolicyMode::Off && {
                let tenant = r.namespace.split('/').next().unwrap_or_default();
                !exercised.contains(&(tenant.to_owned(), r.id.clone()))
            }
        })
        .map(|(r, _)| r.clone())
        .collect();
    let failed = results.iter().filter(|r| !r.passed).count();
    TestReport {
        passed: failed == 0,
        files: files.len(),
        cases: results.len(),
        failed,
        results,
        unexercised,
    }
}

fn compare(expect: &Expectation, actual: &Decision, known: &BTreeSet<&str>) -> Vec<Difference> {
    let mut out = Vec::new();
    let unknown_note = |ids: &mut dyn Iterator<Item = &String>| {
        let unknown: Vec<&str> = ids
            .map(String::as_str)
            .filter(|id| !known.contains(id))
            .collect();
        (!unknown.is_empty()).then(|| {
            format!(
                "no loaded policy has the id {}",
                unknown
                    .iter()
                    .map(|id| format!("{id:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    };
    if expect.decision != actual.outcome {
        out.push(Difference {
            field: "decision",
            expected: json(&expect.decision),
            actual: json(&actual.outcome),
            note: None,
        });
    }
    if let Some(policies) = &expect.policies {
        let want: BTreeSet<&String> = policies.iter().collect();
        let got: BTreeSet<&String> = actual.reasons.iter().map(|r| &r.id).collect();
        if want != got {
            out.push(Difference {
                field: "policies",
                expected: json(&want),
                actual: json(&got),
                note: unknown_note(&mut policies.iter()),
            });
        }
    }
    if let Some(obligations) = &expect.obligations {
        let want = normalized(obligations);
        let got = normalized(&actual.obligations);
        if want != got {
            let mut ids = obligations.iter().flat_map(|o| match o {
                Obligation::Redact { policy, .. } => vec![policy],
                Obligation::Approval { policies } => policies.iter().collect(),
            });
            out.push(Difference {
                field: "obligations",
                expected: Value::Array(want),
                actual: Value::Array(got),
                note: unknown_note(&mut ids),
            });
        }
    }
    if let Some(warnings) = &expect.warnings {
        let want: BTreeSet<&ExpectedWarning> = warnings.iter().collect();
        let got_owned: Vec<ExpectedWarning> = actual
            .warnings
            .iter()
            .map(|w| ExpectedWarning {
                policy: w.policy.id.clone(),
                would: w.would.into(),
            })
            .collect();
        let got: BTreeSet<&ExpectedWarning> = got_owned.iter().collect();
        if want != got {
            out.push(Difference {
                field: "warnings",
                expected: json(&want),
                actual: json(&got),
                note: unknown_note(&mut warnings.iter().map(|w| &w.policy)),
            });
        }
    }
    let want: BTreeSet<&str> = expect.errors.iter().map(String::as_str).collect();
    let got = failed_policies(actual);
    if want != got {
        out.push(Difference {
            field: "errors",
            expected: json(&want),
            actual: json(&actual.errors),
            note: unknown_note(&mut expect.errors.iter()),
        });
    }
    out
}

/// The ids of the policies whose evaluation failed. The engine reports each failure as
/// `"<policy id>: <message>"` and lists the failing policy among the reasons; an error that
/// names no reason (a request the engine could not build) is kept whole.
fn failed_policies(d: &Decision) -> BTreeSet<&str> {
    d.errors
        .iter()
        .map(|e| {
            d.reasons
                .iter()
                .map(|r| r.id.as_str())
                .filter(|id| e.starts_with(&format!("{id}: ")))
                .max_by_key(|id| id.len())
                .unwrap_or(e.as_str())
        })
        .collect()
}

/// Obligations in a canonical order, as JSON, for comparing and showing.
fn normalized(obligations: &[Obligation]) -> Vec<Value> {
    let mut v: Vec<Value> = obligations
        .iter()
        .map(|o| match o {
            Obligation::Approval { policies } => {
                let mut p = policies.clone();
                p.sort();
                json(&Obligation::Approval { policies: p })
            }
            other => json(other),
        })
        .collect();
    v.sort_by_key(|o| o.to_string());
    v.dedup();
    v
}

fn json<T: Serialize + ?Sized>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}
