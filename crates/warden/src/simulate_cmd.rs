//! `warden policy simulate`: replay the recorded decisions of a window under a candidate
//! policy directory and report what would change, reading the store directly (offline).
//!
//! Exit codes as the other `warden policy` commands: 0 the simulation ran (whatever it found,
//! an empty window included); 1 the candidate policies do not load (file:line errors, as
//! `validate` prints them); 2 the command could not run as asked (no such directory or
//! database, an empty or unreadable window, a tenant that cannot be told).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::{Value, json};
use warden_core::simulation::{Examples, Group, SimulationReport};
use warden_core::{NamespacePath, TenantId};
use warden_policy::Engine;

use crate::policy_cmd::Format;
use crate::token_cmd::StoreArgs;

const FAILED: u8 = 1;
const USAGE: u8 = 2;

/// Groups printed per heading in the text report (the JSON has them all).
const TEXT_GROUPS: usize = 10;

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// The candidate policy directory (laid out as the server's: <tenant>/<namespace…>/*.cedar).
    #[arg(long)]
    pub candidate: PathBuf,
    /// Start of the window (inclusive): RFC 3339, or a duration ago (`24h`, `7d`).
    #[arg(long)]
    pub from: String,
    /// End of the window (exclusive): RFC 3339, or a duration ago [default: now].
    #[arg(long)]
    pub to: Option<String>,
    /// Replay only this namespace and everything below it.
    #[arg(long)]
    pub namespace: Option<String>,
    /// The tenant whose decisions are replayed [default: the namespace's, or the candidate's
    /// only tenant].
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    #[command(flatten)]
    pub store: StoreArgs,
}

fn usage(message: impl std::fmt::Display) -> u8 {
    eprintln!("error: {message}");
    USAGE
}

/// Runs on the caller's (multi-threaded) runtime; `warden policy` commands are synchronous.
pub fn run(args: SimulateArgs) -> u8 {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(simulate(args)))
}

/// RFC 3339, or a duration before `now`.
fn instant(raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    match crate::duration::parse(raw) {
        Ok(d) => chrono::Duration::from_std(d)
            .map(|d| now - d)
            .map_err(|e| format!("{raw:?}: {e}")),
        Err(_) => Err(format!(
            "{raw:?} is neither an RFC 3339 time (2026-11-01T00:00:00Z) nor a duration ago (24h, 7d)"
        )),
    }
}

async fn simulate(args: SimulateArgs) -> u8 {
    let now = Utc::now();
    let from = match instant(&args.from, now) {
        Ok(t) => t,
        Err(e) => return usage(format_args!("--from: {e}")),
    };
    let to = match args.to.as_deref().map(|t| instant(t, now)).transpose() {
        Ok(t) => t.unwrap_or(now),
        Err(e) => return usage(format_args!("--to: {e}")),
    };
    let namespace = match args
        .namespace
        .as_deref()
        .map(NamespacePath::parse)
        .transpose()
    {
        Ok(n) => n,
        Err(e) => return usage(format_args!("--namespace: {e}")),
    };
    let dir = &args.candidate;
    if !dir.is_dir() {
        return usage(format_args!("{} is not a directory", dir.display()));
    }
    let snap = match warden_api::policies::read_dir(dir) {
        Ok(s) => s,
        Err(errs) => {
            let problems: Vec<Problem> = errs.iter().map(|e| Problem::unlocated(dir, e)).collect();
            return failed(&problems, args.format);
        }
    };
    let tenants = snap.tenants();
    let tenant = match (&args.tenant, &namespace) {
        (Some(t), _) => match TenantId::parse(t) {
            Ok(t) => t,
            Err(e) => return usage(format_args!("--tenant: {e}")),
        },
        (None, Some(ns)) => ns.tenant(),
        (None, None) if tenants.len() == 1 => {
            TenantId::parse(tenants.first().expect("one")).expect("a namespace's tenant")
        }
        (None, None) => {
            return usage(format_args!(
                "give --tenant: the candidate holds policies of {}",
                if tenants.is_empty() {
                    "no tenant".to_owned()
                } else {
                    tenants.iter().cloned().collect::<Vec<_>>().join(", ")
                }
            ));
        }
    };
    if !tenants.contains(tenant.as_str()) {
        return usage(format_args!(
            "{} holds no policies for tenant {tenant} (expected {}/{tenant}/…/*.cedar); with no policies every decision would be denied",
            dir.display(),
            dir.display()
        ));
    }
    let window = match warden_api::simulation::window(&tenant, from, to, namespace) {
        Ok(w) => w,
        Err(e) => return usage(e),
    };
    let engine = match Engine::build(snap.sources, snap.schema_extension.as_deref()) {
        Ok(e) => e,
        Err(errs) => {
            let problems: Vec<Problem> = errs
                .iter()
                .map(|e| Problem {
                    file: shown(dir, &e.origin),
                    line: Some(e.line),
                    column: Some(e.column),
                    message: e.message.clone(),
                })
                .collect();
            return failed(&problems, args.format);
        }
    };
    let store = match args.store.open_existing().await {
        Ok(s) => s,
        Err(e) => return usage(format_args!("{e:#}")),
    };

    let progress = Arc::new(warden_api::simulation::Progress::default());
    let bar = progress_bar();
    let ticker = {
        let (bar, progress, window) = (bar.clone(), progress.clone(), window.clone());
        tokio::spawn(async move {
            loop {
                bar.set_position((progress.fraction(&window) * 1000.0) as u64);
                bar.set_message(format!(
                    "{} decisions replayed",
                    progress.replayed.load(std::sync::atomic::Ordering::Relaxed)
                ));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let result = warden_api::simulation::simulate(
        store,
        Arc::new(engine),
        window.clone(),
        Some(progress.clone()),
    )
    .await;
    ticker.abort();
    bar.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(e) => return usage(format_args!("cannot read the audit trail: {e}")),
    };
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serializes")
        ),
        Format::Text => print!("{}", text_report(dir, &report)),
    }
    0
}

/// A bar over the window's time span on a terminal; nothing otherwise (pipes, CI logs).
fn progress_bar() -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(1000);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {percent:>3}% of the window · {msg} ({elapsed})",
        )
        .expect("template"),
    );
    bar
}

// ---- problems with the candidate, printed as `validate` prints them ----

struct Problem {
    file: String,
    line: Option<u32>,
    column: Option<u32>,
    message: String,
}

impl Problem {
    /// The directory reader's errors read `<relative path>: <message>`.
    fn unlocated(dir: &Path, e: &str) -> Problem {
        let (origin, message) = e.split_once(": ").unwrap_or(("", e));
        Problem {
            file: shown(dir, origin),
            line: None,
            column: None,
            message: message.to_owned(),
        }
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
    dir.join(origin).display().to_string()
}

fn failed(problems: &[Problem], format: Format) -> u8 {
    match format {
        Format::Json => {
            let errors: Vec<Value> = problems
                .iter()
                .map(|p| json!({"file": p.file, "line": p.line, "column": p.column, "message": p.message}))
                .collect();
            println!("{}", json!({"valid": false, "errors": errors}));
        }
        Format::Text => {
            for p in problems {
                eprintln!("{p}");
            }
            eprintln!(
                "{} error(s): the candidate policies do not load; nothing was simulated",
                problems.len()
            );
        }
    }
    FAILED
}

// ---- the text report ----

fn direction(from: &str, to: &str) -> String {
    format!("{from} → {to}")
}

fn examples(ids: &[String]) -> String {
    if ids.is_empty() {
        String::new()
    } else {
        format!("  e.g. {}", ids.join(", "))
    }
}

fn directions_of(g: &std::collections::BTreeMap<String, u64>) -> String {
    g.iter()
        .map(|(k, n)| {
            let (from, to) = k.split_once("_to_").unwrap_or((k, ""));
            format!("{} {n}", direction(from, to))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn groups(out: &mut String, title: &str, groups: &[Group]) {
    use std::fmt::Write;
    if groups.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nBy {title}:");
    for g in groups.iter().take(TEXT_GROUPS) {
        let _ = writeln!(
            out,
            "  {:<32} {:>8}  {}{}",
            g.key,
            g.count,
            directions_of(&g.directions),
            examples(&g.examples)
        );
    }
    if groups.len() > TEXT_GROUPS {
        let _ = writeln!(
            out,
            "  … and {} more (--format json lists them all)",
            groups.len() - TEXT_GROUPS
        );
    }
}

fn note(out: &mut String, what: &Examples, text: &str) {
    use std::fmt::Write;
    if what.count > 0 {
        let _ = writeln!(out, "  {} {text}{}", what.count, examples(&what.examples));
    }
}

fn text_report(dir: &Path, r: &SimulationReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let scope = match &r.namespace {
        Some(ns) => format!("namespace {ns}"),
        None => format!("tenant {}", r.tenant),
    };
    let (from, to) = (
        r.from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        r.to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    if r.recorded == 0 {
        let _ = writeln!(
            out,
            "no recorded decisions between {from} and {to} in {scope}: nothing to replay"
        );
        return out;
    }
    let _ = writeln!(
        out,
        "Replayed {} of {} recorded decisions in {scope} between {from} and {to} under {} ({} policies, {}), in {:.1} s",
        r.replayed,
        r.recorded,
        dir.display(),
        r.candidate.policies,
        &r.candidate.content_hash[..12.min(r.candidate.content_hash.len())],
        r.duration_ms as f64 / 1000.0
    );
    if r.changed == 0 {
        let _ = writeln!(
            out,
            "\nNo decision would change: all {} replayed decisions keep their outcome.",
            r.replayed
        );
    } else {
        let share = 100.0 * r.changed as f64 / r.replayed.max(1) as f64;
        let _ = writeln!(
            out,
            "\n{} decisions would change ({share:.2}% of those replayed), {} would not:",
            r.changed, r.unchanged
        );
        for d in &r.directions {
            let _ = writeln!(
                out,
                "  {:<32} {:>8}{}",
                direction(d.from.as_str(), d.to.as_str()),
                d.count,
                examples(&d.examples)
            );
        }
        let _ = writeln!(
            out,
            "\nBy policy (a change counts for each policy that decided it, before or now):"
        );
        for p in r.by_policy.iter().take(TEXT_GROUPS) {
            let _ = writeln!(
                out,
                "  {:<32} {:>8}  (decided {} before, decides {} now)  {}{}",
                p.policy,
                p.count,
                p.determined_before,
                p.determines_now,
                directions_of(&p.directions),
                examples(&p.examples)
            );
        }
        if r.by_policy.len() > TEXT_GROUPS {
            let _ = writeln!(
                out,
                "  … and {} more (--format json lists them all)",
                r.by_policy.len() - TEXT_GROUPS
            );
        }
        groups(&mut out, "agent", &r.by_agent);
        groups(&mut out, "tool", &r.by_tool);
        groups(&mut out, "namespace", &r.by_namespace);
    }
    let notes = r.not_replayed.registry_refused.count
        + r.not_replayed.request_missing.count
        + r.candidate_errors.count
        + r.changed_with_redacted_values.count;
    if notes > 0 {
        let _ = writeln!(out, "\nNotes:");
        note(
            &mut out,
            &r.not_replayed.registry_refused,
            "not replayed: refused by the registry before any policy was asked",
        );
        note(
            &mut out,
            &r.not_replayed.request_missing,
            "not replayed: the recorded request was purged or cannot be read",
        );
        note(
            &mut out,
            &r.candidate_errors,
            "replays in which a candidate policy failed to evaluate (denied)",
        );
        note(
            &mut out,
            &r.changed_with_redacted_values,
            "changed decisions had redacted values in their request: a policy reading one sees its keyed hash, not the value",
        );
    }
    out
}
