//! Policy simulation speed: the full replay (`warden_api::simulation::simulate`, as
//! `warden policy simulate` and `POST /api/v1/policies/simulate` run it) over N recorded
//! decision events in a real SQLite store.
//!
//! It first records N decision events (default 1,000,000) into a store in a temporary folder:
//! 20 agents in 5 namespaces of `acme` calling 100 tools with registry-like attributes and
//! arguments, half through the decision API's event layout (`authz.decision`), half through
//! the gateway's (`mcp.tool.call.decided`, with session facts), each decided by the example
//! policies (`examples/policies`) as the door would have. Then it replays the whole window
//! under a candidate — the example policies plus one forbid — R times (default 3) and prints
//! decisions per second for each run. Every run must replay all N and find exactly the changes
//! computed while recording, or the bench fails.
//!
//! ```sh
//! cargo bench -p warden-api --bench simulate
//! ```
//!
//! Settings (environment):
//! - `WARDEN_BENCH_EVENTS` — recorded decisions (default 1,000,000);
//! - `WARDEN_BENCH_RUNS` — replays measured (default 3);
//! - `WARDEN_BENCH_SIM_DIR` — keep the generated store in this folder and reuse it on the
//!   next run (generating 1M events takes about half a minute); by default a temporary folder.
//!
//! Run without `--bench` (as `cargo test --benches` does) it records 10,000 events and
//! replays them once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use warden_core::{
    Actor, AuditEvent, DecisionRequest, DecisionSummary, EntityRef, NamespacePath, Outcome,
    Resource, ResourceRef, SessionFacts, TenantId, catalog,
};
use warden_policy::Engine;
use warden_policy::simulate::Window;
use warden_store::{EncodedEvent, SqliteStore, Store};

/// The allocator the `warden` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NAMESPACES: [&str; 5] = [
    "acme/platform",
    "acme/platform/api",
    "acme/ops",
    "acme/data",
    "acme/web",
];
const SERVERS: [&str; 5] = ["github", "deploy", "jira", "slack", "postgres"];
const VERBS: [&str; 20] = [
    "get_file",
    "list_issues",
    "search_code",
    "create_issue",
    "update_page",
    "push_files",
    "merge_pull_request",
    "delete_branch",
    "trigger_deploy",
    "run_query",
    "get_user",
    "list_channels",
    "post_message",
    "delete_repository",
    "get_logs",
    "create_branch",
    "read_table",
    "drop_table",
    "list_pipelines",
    "search_users",
];
const RISKS: [&str; 4] = ["low", "medium", "high", "critical"];
const CATEGORIES: [&[&str]; 5] = [
    &["read"],
    &["write"],
    &["delete"],
    &["execute"],
    &["read", "network"],
];

/// The one change the candidate makes.
const CANDIDATE_POLICY: &str = r#"@id("acme.no-high-risk-in-data")
@reason("High-risk tools are not used in acme/data any more.")
forbid (principal, action == Action::"call_tool", resource is Tool)
when { resource has risk && resource.risk == "high" && context.namespace in Namespace::"acme/data" };
"#;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies")
}

fn load(dir: &Path, extra: Option<&str>) -> anyhow::Result<Engine> {
    let mut snap =
        warden_api::policies::read_dir(dir).map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?;
    if let Some(text) = extra {
        snap.sources.push(warden_policy::PolicySource::new(
            NamespacePath::parse("acme")?,
            "acme/candidate.cedar",
            text,
        ));
    }
    Engine::build(snap.sources, snap.schema_extension.as_deref()).map_err(|e| {
        anyhow::anyhow!(
            "{}",
            e.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap()
}

/// Recorded decision number `i`: its request, as a door would have built it.
fn request(i: u64) -> DecisionRequest {
    let agent = (i * 7 + i / 13) % 20;
    let ns = NamespacePath::parse(NAMESPACES[(agent % 5) as usize]).unwrap();
    let tool = (i * 31 + i / 7) % 100;
    let server = SERVERS[(tool % 5) as usize];
    let verb = VERBS[(tool / 5) as usize];
    let mut attrs = serde_json::Map::new();
    attrs.insert("name".into(), json!(verb));
    attrs.insert("server".into(), json!(server));
    attrs.insert("risk".into(), json!(RISKS[(tool % 4) as usize]));
    attrs.insert("categories".into(), json!(CATEGORIES[(tool % 5) as usize]));
    attrs.insert(
        "approval_state".into(),
        json!(if tool.is_multiple_of(10) {
            "deprecated"
        } else {
            "approved"
        }),
    );
    attrs.insert("registered".into(), json!(true));
    let args = if verb == "trigger_deploy" {
        json!({"environment": if i.is_multiple_of(3) { "production" } else { "staging" }})
    } else {
        json!({"owner": "acme", "repo": format!("repo-{}", i % 50), "path": "src/main.rs", "branch": "main"})
    };
    let time = base_time() + Duration::milliseconds(i as i64 * 40);
    DecisionRequest {
        tenant: TenantId::parse("acme").unwrap(),
        namespace: ns,
        principal: Resource {
            entity_type: "Agent".into(),
            id: format!("agent-{agent:02}"),
            attributes: json!({"registered": true, "approval_state": "approved", "models": ["claude-sonnet"]})
                .as_object()
                .unwrap()
                .clone(),
            parents: vec![],
        },
        on_behalf_of: Some(EntityRef::new("User", format!("user-{}", agent % 7))),
        session: Some(format!("tok_{agent:02}_{}", i / 500)),
        facts: if i % 2 == 1 {
            SessionFacts {
                tools_called: ["github__get_file".to_owned()].into(),
                servers: ["github".to_owned()].into(),
                categories: ["read".to_owned()].into(),
                calls: (i % 500) + 1,
                denied: i % 3,
            }
        } else {
            SessionFacts::default()
        },
        action: "call_tool".into(),
        resource: Resource {
            entity_type: "Tool".into(),
            id: format!("{server}__{verb}"),
            attributes: attrs,
            parents: vec![],
        },
        context: json!({"args": args}).as_object().unwrap().clone(),
        time,
    }
}

/// The event a door records for request `i` under `engine`; and whether `candidate` decides
/// it otherwise.
fn event(i: u64, engine: &Engine, candidate: &Engine) -> (EncodedEvent, bool) {
    let req = request(i);
    let d = engine.decide(&req);
    let changed = candidate.decide(&req).outcome != d.outcome;
    let gateway = i % 2 == 1;
    let mut request = json!({
        "principal": req.principal,
        "on_behalf_of": req.on_behalf_of,
        "session": req.session,
        "action": req.action,
        "resource": req.resource,
        "context": req.context,
        "time": req.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    });
    let mut payload = json!({"evaluated": d.evaluated});
    if gateway {
        request["facts"] = serde_json::to_value(&req.facts).unwrap();
        payload["mcp"] = json!({
            "mcp.method.name": "tools/call",
            "mcp.session.id": req.session,
            "mcp.protocol.version": "2025-06-18",
            "jsonrpc.request.id": i.to_string(),
            "gen_ai.tool.name": req.resource.id,
            "gen_ai.operation.name": "execute_tool",
        });
    }
    payload["request"] = request;
    let agent = req.principal.id.clone();
    let mut e = AuditEvent::new(
        "acme",
        req.namespace.as_str(),
        if gateway {
            catalog::MCP_TOOL_CALL_DECIDED
        } else {
            catalog::AUTHZ_DECISION
        },
        if gateway {
            "warden.gateway"
        } else {
            "warden.api"
        },
        Actor {
            principal: Some(req.principal.as_ref()),
            agent: Some(agent),
            on_behalf_of: req.on_behalf_of.as_ref().map(|u| u.id.clone()),
            session: req.session.clone(),
            token_id: req.session.clone(),
            role: Some("agent".into()),
        },
        payload,
    );
    e.header.time = req.time;
    e.header.action = Some(req.action.clone());
    e.header.resource = Some(ResourceRef {
        resource_type: "Tool".into(),
        id: req.resource.id.clone(),
    });
    e.header.decision = Some(DecisionSummary {
        outcome: d.outcome,
        policies: d.reasons,
        obligations: d.obligations,
        warnings: d.warnings,
        errors: d.errors,
    });
    (EncodedEvent::of(&e, false), changed)
}

/// Records `n` decision events into the store (both cores encode, one writer appends);
/// returns how many the candidate changes.
async fn generate(
    store: &SqliteStore,
    n: u64,
    engine: &Engine,
    candidate: &Engine,
) -> anyhow::Result<u64> {
    const BATCH: u64 = 10_000;
    let started = Instant::now();
    let mut changed = 0;
    let mut next = 0;
    while next < n {
        let end = (next + BATCH).min(n);
        let mid = next + (end - next) / 2;
        let (mut first, second) = std::thread::scope(|s| {
            let half = |from: u64, to: u64| {
                (from..to)
                    .map(|i| event(i, engine, candidate))
                    .collect::<Vec<_>>()
            };
            let other = s.spawn(move || half(mid, end));
            let first = half(next, mid);
            (first, other.join().expect("generator thread"))
        });
        first.extend(second);
        changed += first.iter().filter(|(_, c)| *c).count() as u64;
        store
            .append_encoded(first.into_iter().map(|(e, _)| e).collect())
            .await
            .context("append")?;
        next = end;
        if next.is_multiple_of(100_000) {
            eprintln!(
                "  recorded {next} of {n} ({:.0}/s)",
                next as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(changed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let env_u64 = |k: &str, d: u64| -> anyhow::Result<u64> {
        std::env::var(k).map_or(Ok(d), |v| v.parse().with_context(|| format!("{k}={v}")))
    };
    let n = env_u64(
        "WARDEN_BENCH_EVENTS",
        if bench_mode { 1_000_000 } else { 10_000 },
    )?;
    let runs = env_u64("WARDEN_BENCH_RUNS", if bench_mode { 3 } else { 1 })?;
    let temp = tempfile::tempdir()?;
    let dir = match std::env::var("WARDEN_BENCH_SIM_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => temp.path().to_path_buf(),
    };
    std::fs::create_dir_all(&dir)?;
    let engine = load(&examples(), None)?;
    let candidate = Arc::new(load(&examples(), Some(CANDIDATE_POLICY))?);

    let marker = dir.join(format!("simulate-bench-{n}.changed"));
    let store = SqliteStore::open(&warden_api::server::database_path(&dir)).await?;
    let expected = match std::fs::read_to_string(&marker) {
        Ok(c) => {
            eprintln!("reusing {n} recorded decisions in {}", dir.display());
            c.trim().parse::<u64>()?
        }
        Err(_) => {
            if store.merkle_head(&TenantId::parse("acme")?).await?.size > 0 {
                bail!(
                    "{} holds another history; use an empty folder",
                    dir.display()
                );
            }
            eprintln!("recording {n} decisions into {} …", dir.display());
            let started = Instant::now();
            let changed = generate(&store, n, &engine, &candidate).await?;
            eprintln!(
                "recorded {n} decisions in {:.1} s; the candidate changes {changed}",
                started.elapsed().as_secs_f64()
            );
            std::fs::write(&marker, changed.to_string())?;
            changed
        }
    };
    let store: Arc<dyn Store> = Arc::new(store);
    let window = Window {
        tenant: TenantId::parse("acme")?,
        from: base_time(),
        to: base_time() + Duration::days(30),
        namespace: None,
    };
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut rates = Vec::new();
    for run in 1..=runs {
        let started = Instant::now();
        let r = warden_api::simulation::simulate(
            store.clone(),
            candidate.clone(),
            window.clone(),
            None,
        )
        .await?;
        let secs = started.elapsed().as_secs_f64();
        if r.replayed != n || r.changed != expected {
            bail!(
                "run {run}: replayed {} (expected {n}), changed {} (expected {expected})",
                r.replayed,
                r.changed
            );
        }
        let rate = n as f64 / secs;
        println!(
            "simulate/replay run {run}: {n} recorded decisions in {secs:.2} s = {rate:.0} decisions/s ({} changed, {} allow→deny)",
            r.changed,
            r.directions
                .iter()
                .find(|d| d.from == Outcome::Allow && d.to == Outcome::Deny)
                .map_or(0, |d| d.count)
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!(
        "summary: {n} decisions, median {median:.0} decisions/s, best {:.0}/s over {runs} run(s), {cores} cores; load avg before: {}",
        rates.last().copied().unwrap_or_default(),
        loadavg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}
