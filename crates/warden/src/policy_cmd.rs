//! `warden policy …`: check policies before they go live, in a terminal or a CI pipeline.
//!
//! - `validate DIR`: the same parsing and strict validation the server applies; with
//!   `--server`, the entities the policies name checked against the tenant's registry (see
//!   `registry_check`).
//! - `fmt [--check] PATH…`: canonical formatting (Cedar's formatter).
//! - `test DIR`: run the policy tests (`*.test.yaml`) with the server's engine.
//! - `explain DIR --request FILE`: why a request gets its decision.
//! - `simulate`: replay recorded decisions under a candidate (see `simulate_cmd`).
//! - `versions`, `show`, `diff`, `apply`, `rollback`, `promote`: the tenant's bundle on a
//!   running server (see `policy_server_cmd`).
//!
//! Exit codes, the same for every subcommand: 0 all is well; 1 the policies (or their tests,
//! or their formatting) are not; 2 the command could not do its work as asked (a path that
//! does not exist, an unreadable request file, bad arguments).
//!
//! Files are named as the user gave the directory (`policies/acme/base.cedar:8:1`), so that
//! an editor or a CI annotation can open them from where the command ran.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use serde_json::{Value, json};
use warden_api::policies::DirSnapshot;
use warden_core::{
    Clause, Decision, Explanation, NamespacePath, Obligation, Outcome, PolicyEffect,
    PolicyExplanation, PolicyStatus,
};
use warden_policy::testing::{
    self, CaseResult, Expectation, TEST_FILE_SUFFIX, TestFile, TestReport,
};
use warden_policy::{Engine, PolicyError};

use crate::policy_server_cmd::{self as remote, Op, ServerArgs};
use crate::registry_check::{self, Kind, RegistryArgs};

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Parse and strictly validate a policy directory; print file:line:col errors. With
    /// --server, also check the entities the policies name against the tenant's registry.
    Validate {
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Format policy files canonically (Cedar's formatter), in place.
    Fmt {
        /// Policy files, or directories whose `*.cedar` files are formatted.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Change nothing: list the files that are not formatted and exit 1 if there are any.
        #[arg(long)]
        check: bool,
    },
    /// Run the policy tests (`*.test.yaml`) of a policy directory against its policies.
    Test {
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Explain the decision for one request: the policies considered, which matched, which
    /// decided, and for the others the first condition that did not hold.
    Explain {
        dir: PathBuf,
        /// The request, in the format of a test case's `request` (YAML or JSON).
        #[arg(long)]
        request: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Replay the recorded decisions of a window under a candidate policy directory and report
    /// which would change.
    Simulate(crate::simulate_cmd::SimulateArgs),
    /// List the versions of the tenant's policy bundle on a server, newest first.
    Versions {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// One version of the tenant's bundle on a server: its files and its diff from the one
    /// before.
    Show {
        version: i64,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// How two versions of the tenant's bundle on a server differ, file by file.
    Diff {
        #[arg(long)]
        from: i64,
        #[arg(long)]
        to: i64,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Apply a tenant's policies from a directory laid out as the server's
    /// (`DIR/<tenant>/…`) as the next version of its API-managed bundle: validated, tested,
    /// stored, in force and recorded, or refused with the reasons.
    Apply {
        dir: PathBuf,
        #[arg(long)]
        tenant: String,
        /// `enforce` (default), `warn` or `off`.
        #[arg(long)]
        mode: Option<String>,
        /// Why; kept with the version.
        #[arg(long)]
        message: Option<String>,
        /// The version this change is based on: the server refuses it (409) if another change
        /// came first [default: the current version].
        #[arg(long)]
        base_version: Option<i64>,
        /// Apply even if policy tests fail (the failures are kept with the version).
        #[arg(long)]
        tests_warn: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Put an earlier version back in force (as a new version).
    Rollback {
        version: i64,
        #[arg(long)]
        message: Option<String>,
        #[arg(long)]
        base_version: Option<i64>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Enforce the shadow bundle, or the bundle in warn mode, as a new version.
    Promote {
        #[arg(long)]
        message: Option<String>,
        #[arg(long)]
        base_version: Option<i64>,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// The policies (or tests, or formatting) are not right.
const FAILED: u8 = 1;
/// The command could not run as asked.
const USAGE: u8 = 2;

pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    let code = match cmd {
        PolicyCommand::Validate {
            dir,
            format,
            registry,
        } => validate(&dir, format, &registry),
        PolicyCommand::Fmt { paths, check } => fmt(&paths, check),
        PolicyCommand::Test { dir, format } => test(&dir, format),
        PolicyCommand::Explain {
            dir,
            request,
            format,
        } => explain(&dir, &request, format),
        PolicyCommand::Simulate(args) => crate::simulate_cmd::run(args),
        PolicyCommand::Versions { server } => remote::run(server, Op::Versions),
        PolicyCommand::Show { version, server } => remote::run(server, Op::Show { version }),
        PolicyCommand::Diff { from, to, server } => remote::run(server, Op::Diff { from, to }),
        PolicyCommand::Apply {
            dir,
            tenant,
            mode,
            message,
            base_version,
            tests_warn,
            server,
        } => remote::run(
            server,
            Op::Apply {
                dir,
                tenant,
                mode,
                message,
                base_version,
                tests_warn,
            },
        ),
        PolicyCommand::Rollback {
            version,
            message,
            base_version,
            server,
        } => remote::run(
            server,
            Op::Rollback {
                version,
                message,
                base_version,
            },
        ),
        PolicyCommand::Promote {
            message,
            base_version,
            server,
        } => remote::run(
            server,
            Op::Promote {
                message,
                base_version,
            },
        ),
    };
    Ok(ExitCode::from(code))
}

fn usage(message: impl std::fmt::Display) -> u8 {
    eprintln!("error: {message}");
    USAGE
}

// ---- reading a policy directory ----

/// A problem with the policies, located when it can be.
struct Problem {
    file: String,
    line: Option<u32>,
    column: Option<u32>,
    message: String,
    /// For a finding of the registry check: its kind and the entity (`Tool::"…"`).
    registry: Option<(Kind, String)>,
}

impl Problem {
    fn located(dir: &Path, e: &PolicyError) -> Problem {
        Problem {
            file: shown(dir, &e.origin),
            line: Some(e.line),
            column: Some(e.column),
            message: e.message.clone(),
            registry: None,
        }
    }

    /// The directory reader's errors read `<relative path>: <message>`.
    fn unlocated(dir: &Path, e: &str) -> Problem {
        let (origin, message) = e.split_once(": ").unwrap_or(("", e));
        Problem {
            file: shown(dir, origin),
            line: None,
            column: None,
            message: message.to_owned(),
            registry: None,
        }
    }

    fn of_finding(dir: &Path, f: registry_check::Finding) -> Problem {
        let l = f.literal;
        Problem {
            file: shown(dir, &l.origin),
            line: Some(l.line),
            column: Some(l.column),
            message: f.message,
            registry: Some((f.kind, format!("{}::{:?}", l.entity_type, l.id))),
        }
    }

    fn json(&self) -> Value {
        let mut v = json!({"file": self.file, "line": self.line, "column": self.column, "message": self.message});
        if let Some((kind, entity)) = &self.registry {
            v["kind"] = json!(kind.as_str());
            v["entity"] = json!(entity);
        }
        v
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.file, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// `origin` (relative to `dir`) as the user would open it from where the command ran.
fn shown(dir: &Path, origin: &str) -> String {
    if origin.is_empty() {
        return dir.display().to_string();
    }
    if dir == Path::new(".") || dir.as_os_str().is_empty() {
        return origin.to_owned();
    }
    dir.join(origin).display().to_string()
}

struct Loaded {
    engine: Engine,
    files: usize,
}

/// Reads and builds the policies of `dir` exactly as the server does.
fn load(dir: &Path) -> Result<Loaded, Vec<Problem>> {
    build(dir, read(dir)?)
}

fn read(dir: &Path) -> Result<DirSnapshot, Vec<Problem>> {
    warden_api::policies::read_dir(dir).map_err(|errs| {
        errs.iter()
            .map(|e| Problem::unlocated(dir, e))
            .collect::<Vec<_>>()
    })
}

fn build(dir: &Path, snap: DirSnapshot) -> Result<Loaded, Vec<Problem>> {
    let files = snap.sources.len();
    Engine::build(snap.sources, snap.schema_extension.as_deref())
        .map(|engine| Loaded { engine, files })
        .map_err(|errs| errs.iter().map(|e| Problem::located(dir, e)).collect())
}

fn print_problems(problems: &[Problem]) {
    for p in problems {
        eprintln!("{p}");
    }
}

// ---- validate ----

fn validate(dir: &Path, format: Format, registry: &RegistryArgs) -> u8 {
    if !dir.is_dir() {
        return usage(format_args!("{} is not a directory", dir.display()));
    }
    let target = match registry.target() {
        Ok(t) => t,
        Err(e) => return usage(e),
    };
    let snap = match read(dir) {
        Ok(s) => s,
        Err(problems) => return invalid(problems, Vec::new(), None, format),
    };
    // The registry is asked before anything is reported: a check that cannot be made is
    // the command failing (2), whatever else the policies have.
    let report = match &target {
        None => None,
        Some((server, token)) => {
            let tenants = snap
                .sources
                .iter()
                .map(|s| s.namespace.tenant().as_str().to_owned())
                .collect();
            let literals = warden_policy::entity_literals(&snap.sources);
            match registry_check::check(server, token, &tenants, &literals) {
                Ok(r) => Some(r),
                Err(e) => return usage(e),
            }
        }
    };
    let (mut problems, mut warnings) = (Vec::new(), Vec::new());
    let mut summary = None;
    if let Some(report) = report {
        for f in report.findings {
            match f.kind {
                Kind::Unknown => problems.push(Problem::of_finding(dir, f)),
                Kind::Blocked => warnings.push(Problem::of_finding(dir, f)),
            }
        }
        summary = Some(RegistrySummary {
            server: report.server,
            tenant: report.tenant,
            checked: report.checked,
            unchecked_tenants: report.unchecked_tenants,
        });
    }
    let loaded = match build(dir, snap) {
        Ok(l) => Some(l),
        Err(mut offline) => {
            offline.append(&mut problems);
            problems = offline;
            None
        }
    };
    match loaded {
        Some(l) if problems.is_empty() => valid(&l, &warnings, summary.as_ref(), format),
        _ => invalid(problems, warnings, summary.as_ref(), format),
    }
}

/// What a registry check covered, for the report.
struct RegistrySummary {
    server: String,
    tenant: Option<String>,
    checked: usize,
    unchecked_tenants: Vec<String>,
}

impl RegistrySummary {
    fn json(&self) -> Value {
        json!({
            "server": self.server,
            "tenant": self.tenant,
            "checked": self.checked,
            "unchecked_tenants": self.unchecked_tenants,
        })
    }

    fn print(&self) {
        let Some(tenant) = &self.tenant else {
            eprintln!("note: no policies to check against the registry");
            return;
        };
        if !self.unchecked_tenants.is_empty() {
            eprintln!(
                "note: the policies of tenant {} were not checked against the registry: the token is tenant {tenant}'s",
                self.unchecked_tenants.join(", ")
            );
        }
    }

    fn text(&self) -> String {
        match &self.tenant {
            Some(t) => format!(
                "; {} entit{} checked against the registry of tenant {t} on {}",
                self.checked,
                if self.checked == 1 { "y" } else { "ies" },
                self.server
            ),
            None => String::new(),
        }
    }
}

fn print_warnings(warnings: &[Problem]) {
    for w in warnings {
        match (w.line, w.column) {
            (Some(l), Some(c)) => eprintln!("{}:{l}:{c}: warning: {}", w.file, w.message),
            _ => eprintln!("{}: warning: {}", w.file, w.message),
        }
    }
}

fn valid(
    l: &Loaded,
    warnings: &[Problem],
    registry: Option<&RegistrySummary>,
    format: Format,
) -> u8 {
    match format {
        Format::Json => {
            let mut v = json!({"valid": true, "files": l.files, "policies": l.engine.policy_count(), "errors": []});
            if let Some(r) = registry {
                v["warnings"] = warnings.iter().map(Problem::json).collect();
                v["registry"] = r.json();
            }
            println!("{v}");
        }
        Format::Text => {
            print_warnings(warnings);
            if let Some(r) = registry {
                r.print();
            }
            let mut line = format!(
                "ok: {} policies in {} files",
                l.engine.policy_count(),
                l.files
            );
            if let Some(r) = registry {
                line.push_str(&r.text());
            }
            if !warnings.is_empty() {
                line.push_str(&format!(", {} warning(s)", warnings.len()));
            }
            println!("{line}");
        }
    }
    0
}

fn invalid(
    mut problems: Vec<Problem>,
    warnings: Vec<Problem>,
    registry: Option<&RegistrySummary>,
    format: Format,
) -> u8 {
    // Each file's problems in the order of its lines, whichever check found them (without
    // the registry check, the order is the engine's, as it always was).
    if registry.is_some() {
        problems.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    }
    match format {
        Format::Json => {
            let errors: Vec<Value> = problems.iter().map(Problem::json).collect();
            let mut v = json!({"valid": false, "errors": errors});
            if let Some(r) = registry {
                v["warnings"] = warnings.iter().map(Problem::json).collect();
                v["registry"] = r.json();
            }
            println!("{v}");
        }
        Format::Text => {
            print_problems(&problems);
            print_warnings(&warnings);
            if let Some(r) = registry {
                r.print();
            }
            eprintln!("{} error(s); nothing would be applied", problems.len());
        }
    }
    FAILED
}

// ---- fmt ----

fn fmt(paths: &[PathBuf], check: bool) -> u8 {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found, &|name| name.ends_with(".cedar"));
            found.sort();
            files.extend(found);
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            return usage(format_args!("{} does not exist", p.display()));
        }
    }
    let mut unformatted = Vec::new();
    let mut problems = Vec::new();
    for file in &files {
        let name = file.display().to_string();
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => return usage(format_args!("{name}: cannot read: {e}")),
        };
        match warden_policy::format_policies(&name, &text) {
            Ok(formatted) if formatted == text => {}
            Ok(formatted) => {
                if !check && let Err(e) = std::fs::write(file, formatted) {
                    return usage(format_args!("{name}: cannot write: {e}"));
                }
                println!("{name}");
                unformatted.push(name);
            }
            Err(errs) => problems.extend(errs.iter().map(|e| Problem::located(Path::new(""), e))),
        }
    }
    print_problems(&problems);
    if check && !unformatted.is_empty() {
        eprintln!(
            "{} of {} file(s) not formatted; `warden policy fmt` rewrites them",
            unformatted.len(),
            files.len()
        );
        return FAILED;
    }
    if !problems.is_empty() {
        eprintln!(
            "{} error(s); files that do not parse were left as they are",
            problems.len()
        );
        return FAILED;
    }
    if !check {
        eprintln!(
            "{} of {} file(s) reformatted",
            unformatted.len(),
            files.len()
        );
    }
    0
}

/// Files below `dir` whose name passes `keep`, skipping hidden files and folders (`.git`,
/// editors' swap files), as the server's directory reader does.
fn walk(dir: &Path, out: &mut Vec<PathBuf>, keep: &dyn Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out, keep);
        } else if keep(&name) {
            out.push(path);
        }
    }
}

// ---- test ----

fn test(dir: &Path, format: Format) -> u8 {
    if !dir.is_dir() {
        return usage(format_args!("{} is not a directory", dir.display()));
    }
    let loaded = match load(dir) {
        Ok(l) => l,
        Err(problems) => return failed_to_load(&problems, format),
    };
    let mut paths = Vec::new();
    walk(dir, &mut paths, &|name| name.ends_with(TEST_FILE_SUFFIX));
    paths.sort();
    if paths.is_empty() {
        let message = format!(
            "no test files (*{TEST_FILE_SUFFIX}) under {}",
            dir.display()
        );
        match format {
            Format::Json => println!(
                "{}",
                json!({"passed": false, "errors": [{"file": dir.display().to_string(), "line": null, "column": null, "message": message}]})
            ),
            Format::Text => eprintln!("{message}"),
        }
        return FAILED;
    }
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for path in &paths {
        let rel = path
            .strip_prefix(dir)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/");
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                problems.push(Problem::unlocated(dir, &format!("{rel}: cannot read: {e}")));
                continue;
            }
        };
        // A case without a namespace is in the namespace of its file's folder.
        let folder = Path::new(&rel)
            .parent()
            .and_then(|p| NamespacePath::parse(&p.to_string_lossy()).ok());
        match TestFile::parse(&rel, folder.as_ref(), &text) {
            Ok(f) => files.push(f),
            Err(errs) => problems.extend(errs.iter().map(|e| Problem::located(dir, e))),
        }
    }
    let report = testing::run(&loaded.engine, &files);
    let ok = report.passed && problems.is_empty();
    match format {
        Format::Json => {
            let mut v = serde_json::to_value(&report).unwrap_or(Value::Null);
            v["passed"] = Value::Bool(ok);
            v["errors"] = problems.iter().map(Problem::json).collect();
            println!("{v}");
        }
        Format::Text => print_report(dir, &report, &problems),
    }
    if ok { 0 } else { FAILED }
}

fn failed_to_load(problems: &[Problem], format: Format) -> u8 {
    match format {
        Format::Json => {
            let errors: Vec<Value> = problems.iter().map(Problem::json).collect();
            println!("{}", json!({"passed": false, "errors": errors}));
        }
        Format::Text => {
            print_problems(problems);
            eprintln!("{} error(s): the policies do not load", problems.len());
        }
    }
    FAILED
}

fn print_report(dir: &Path, report: &TestReport, problems: &[Problem]) {
    for r in &report.results {
        let at = format!("{}:{}", shown(dir, &r.file), r.line);
        if r.passed {
            println!("PASS {at} {}", r.name);
        } else {
            println!("FAIL {at} {}", r.name);
            print_failure(dir, r);
        }
    }
    for p in problems {
        println!("ERROR {p}");
    }
    if !report.unexercised.is_empty() {
        println!();
        println!(
            "policies no test exercised ({}): no case had them matching or deciding",
            report.unexercised.len()
        );
        for p in &report.unexercised {
            println!("  {} ({}:{})", p.id, shown(dir, &p.origin), p.line);
        }
    }
    println!();
    let mut summary = format!(
        "{} passed, {} failed",
        report.cases - report.failed,
        report.failed
    );
    if !problems.is_empty() {
        summary.push_str(&format!(", {} test file error(s)", problems.len()));
    }
    println!("policy tests: {summary}");
}

fn print_failure(dir: &Path, r: &CaseResult) {
    let show = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for d in &r.differences {
        println!("    {}:", d.field);
        println!("      expected: {}", show(&d.expected));
        println!("      actual:   {}", show(&d.actual));
        if let Some(note) = &d.note {
            println!("      note:     {note}");
        }
    }
    if !r.actual.errors.is_empty() && !r.differences.iter().any(|d| d.field == "errors") {
        for e in &r.actual.errors {
            println!("    error: {e}");
        }
    }
    if let Some(explanation) = &r.explanation {
        println!("    why: {}", explanation.summary);
        // The policies that bear on the failure: those that matched, failed or decided,
        // those the case names, and — when a permit was expected and none matched — the
        // permits that did not. `warden policy explain` and `--format json` show them all.
        let named: Vec<&str> = named_policies(&r.expected);
        let want_permit = r.expected.decision != Outcome::Deny && r.actual.reasons.is_empty();
        let relevant = |p: &PolicyExplanation| {
            p.status != PolicyStatus::NotMatched
                || p.determining
                || named.contains(&p.policy.id.as_str())
                || (want_permit && p.effect != PolicyEffect::Forbid)
        };
        let shown: Vec<&PolicyExplanation> = explanation
            .policies
            .iter()
            .filter(|p| relevant(p))
            .collect();
        for p in &shown {
            println!("      {}", explanation_line(dir, p));
        }
        let others = explanation.policies.len() - shown.len();
        if others > 0 {
            println!(
                "      and {others} other polic{} considered that did not match (`warden policy explain` shows all)",
                if others == 1 { "y" } else { "ies" }
            );
        }
    }
}

/// The policy ids a case's expectation names.
fn named_policies(e: &Expectation) -> Vec<&str> {
    let mut ids: Vec<&str> = e.policies.iter().flatten().map(String::as_str).collect();
    for o in e.obligations.iter().flatten() {
        match o {
            Obligation::Redact { policy, .. } => ids.push(policy),
            Obligation::Approval { policies } => ids.extend(policies.iter().map(String::as_str)),
        }
    }
    ids.extend(e.warnings.iter().flatten().map(|w| w.policy.as_str()));
    ids.extend(e.errors.iter().map(String::as_str));
    ids
}

// ---- explain ----

fn explain(dir: &Path, request: &Path, format: Format) -> u8 {
    if !dir.is_dir() {
        return usage(format_args!("{} is not a directory", dir.display()));
    }
    let name = request.display().to_string();
    let text = match std::fs::read_to_string(request) {
        Ok(t) => t,
        Err(e) => return usage(format_args!("{name}: cannot read: {e}")),
    };
    let req = match testing::parse_request(&name, None, &text) {
        Ok(r) => r,
        Err(errs) => {
            for e in errs {
                eprintln!("{e}");
            }
            return USAGE;
        }
    };
    let loaded = match load(dir) {
        Ok(l) => l,
        Err(problems) => return failed_to_load(&problems, format),
    };
    let decision = loaded.engine.decide(&req);
    let explanation = loaded.engine.explain(&req);
    match format {
        Format::Json => println!(
            "{}",
            json!({"decision": decision, "explanation": explanation})
        ),
        Format::Text => print_explanation(dir, &decision, &explanation),
    }
    0
}

fn print_explanation(dir: &Path, d: &Decision, e: &Explanation) {
    println!("decision: {}", d.outcome.as_str());
    println!("  {}", e.summary);
    for r in &d.reasons {
        if let Some(reason) = &r.reason {
            println!("  {}: {reason}", r.id);
        }
    }
    for o in &d.obligations {
        println!(
            "  obligation: {}",
            serde_json::to_string(o).unwrap_or_default()
        );
    }
    for w in &d.warnings {
        println!(
            "  warning: {} (warn mode) would have made it {}",
            w.policy.id,
            w.would.as_str()
        );
    }
    for err in &d.errors {
        println!("  error: {err}");
    }
    if e.refused.is_some() {
        return;
    }
    println!(
        "considered {} polic{} (those of the namespace chain for this action, principal and resource):",
        e.policies.len(),
        if e.policies.len() == 1 { "y" } else { "ies" }
    );
    for line in explanation_lines(dir, e) {
        println!("  {line}");
    }
}

/// One line per considered policy: what it is, what became of it, and why.
fn explanation_lines(dir: &Path, e: &Explanation) -> Vec<String> {
    e.policies
        .iter()
        .map(|p| explanation_line(dir, p))
        .collect()
}

fn explanation_line(dir: &Path, p: &PolicyExplanation) -> String {
    let mode = match p.mode {
        warden_core::PolicyMode::Warn => "warn-mode ",
        _ => "",
    };
    let mut line = format!(
        "{} ({mode}{}, {}:{})",
        p.policy.id,
        p.effect.as_str(),
        shown(dir, &p.policy.origin),
        p.policy.line
    );
    line.push_str(match p.status {
        PolicyStatus::Matched => ": matched",
        PolicyStatus::NotMatched => ": did not match",
        PolicyStatus::Error => ": failed",
    });
    if p.determining {
        line.push_str(", determining");
    }
    if let Some(f) = &p.failed {
        let what = match (p.status, f.clause) {
            (PolicyStatus::Error, _) => "could not be evaluated",
            (_, Clause::Unless) => "held",
            _ => "was false",
        };
        // The scope reads `principal …`, `action …` or `resource …` already.
        let clause = match f.clause {
            Clause::When | Clause::Unless => f.clause.as_str(),
            _ => "scope",
        };
        line.push_str(&format!(
            ": {clause} `{}` {what} ({}:{}:{})",
            f.text,
            shown(dir, &p.policy.origin),
            f.line,
            f.column
        ));
        if let Some(err) = &f.error {
            line.push_str(&format!(": {err}"));
        }
    }
    line
}
