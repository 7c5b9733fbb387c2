//! Export throughput and memory: `GET /api/v1/audit/export` over N recorded events.
//!
//! Starts a server in this process (127.0.0.1, random port, a temporary data directory),
//! records N decision events shaped like the gateway's (header with agent, user, session,
//! tool, decision and policy; a redacted request as payload) straight into the store, then
//! streams the whole export over HTTP and counts the events that arrive. It prints events per
//! second and how much the process's peak resident memory grew during the export (the peak is
//! reset just before it starts), which stays flat whatever N is: the server holds one page.
//!
//! ```sh
//! cargo bench -p warden-api --bench export_http
//! WARDEN_BENCH_EVENTS=100000 WARDEN_BENCH_FORMAT=cef cargo bench -p warden-api --bench export_http
//! ```
//!
//! Settings (environment): `WARDEN_BENCH_EVENTS` (default 1,000,000), `WARDEN_BENCH_FORMAT`
//! (`ocsf` by default; `ndjson`, `hec`, `cef`, `csv`). Run without `--bench` (as
//! `cargo test --benches` does) it makes a small smoke run.

use std::time::Instant;

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::json;
use warden_api::tokens::{TokenSpec, create_token};
use warden_api::{Running, ServerConfig};
use warden_core::{
    Actor, AuditEvent, ClientInfo, DecisionSummary, EntityRef, Outcome, PolicyRef, ResourceRef,
    Role, TenantId,
};
use warden_store::NewEvent;

/// The allocator the `warden` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 10_000;

fn event(i: usize) -> AuditEvent {
    let (outcome, tool) = match i % 3 {
        0 => (Outcome::Allow, "github__get_file_contents"),
        1 => (Outcome::Deny, "github__delete_repository"),
        _ => (Outcome::ApprovalRequired, "deploy__trigger_deploy"),
    };
    let mut e = AuditEvent::new(
        "acme",
        "acme/platform/api",
        "mcp.tool.call.decided",
        "warden.gateway",
        Actor {
            principal: Some(EntityRef::new("Agent", "claude-code")),
            agent: Some("claude-code".into()),
            on_behalf_of: Some(format!("user{}", i % 50)),
            session: Some(format!("s-{}", i / 100)),
            token_id: Some("tok_0123456789".into()),
            role: Some("agent".into()),
        },
        json!({"request": {
            "action": "call_tool",
            "resource": {"type": "Tool", "id": tool, "attributes": {"risk": "high", "server": "github"}},
            "context": {"args": {"repo": "acme/api", "path": format!("src/file{i}.rs"), "token": "hmac-sha256:9f2c0e"}},
        }}),
    );
    e.header.action = Some("call_tool".into());
    e.header.resource = Some(ResourceRef {
        resource_type: "Tool".into(),
        id: tool.into(),
    });
    e.header.decision = Some(DecisionSummary {
        outcome,
        policies: vec![PolicyRef {
            id: "platform-tools".into(),
            namespace: "acme/platform".into(),
            origin: "acme/platform/tools.cedar".into(),
            line: 12,
            reason: Some("production changes need a reviewer".into()),
        }],
        obligations: vec![],
        warnings: vec![],
        errors: vec![],
    });
    e.header.client = Some(ClientInfo {
        address: Some("10.1.2.3".into()),
        user_agent: Some("claude-code/2.0".into()),
    });
    e.seal();
    e
}

/// Peak resident set size of this process, in KiB.
fn peak_rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmHWM in /proc/self/status")
}

async fn run(events: usize, format: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = ServerConfig::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".into();
    let running: Running = warden_api::start(config, None).await?;
    let store = running.state.store.clone();

    let started = Instant::now();
    let mut done = 0;
    while done < events {
        let n = BATCH.min(events - done);
        let batch: Vec<NewEvent> = (done..done + n)
            .map(|i| NewEvent {
                event: event(i),
                dedupe: false,
            })
            .collect();
        store.append_events(&batch).await?;
        done += n;
    }
    eprintln!(
        "recorded {events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let spec = TokenSpec {
        tenant: TenantId::parse("acme")?,
        role: Role::Auditor,
        agent: None,
        on_behalf_of: None,
        namespace: None,
        ttl: None,
        description: Some("export benchmark".into()),
    };
    let by = Actor {
        role: Some("admin".into()),
        ..Default::default()
    };
    let token = create_token(store.as_ref(), &spec, by, "warden.cli").await?;

    // Reset the peak so that it measures the export alone (Linux: "5" clears VmHWM).
    std::fs::write("/proc/self/clear_refs", "5").context("reset peak RSS")?;
    let before = peak_rss_kib()?;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let resp = client
        .get(format!(
            "http://{}/api/v1/audit/export?format={format}&type=mcp.tool.call.decided",
            running.addr
        ))
        .bearer_auth(&token.secret)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("export answered {}", resp.status());
    }
    let mut body = resp.bytes_stream();
    let (mut lines, mut bytes) = (0u64, 0u64);
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    let peak = peak_rss_kib()?;
    // CSV starts with a header row; CSV payloads may hold quoted line breaks, so count is
    // only exact for the line-per-event formats.
    let exported = if format == "csv" { lines - 1 } else { lines };
    if format != "csv" && exported != events as u64 {
        bail!("exported {exported} events, expected {events}");
    }
    println!(
        "export format={format}: {exported} events, {:.0} MB in {secs:.2} s = {:.0} events/s, \
         {:.1} MB/s; peak RSS during export {:.1} MB (+{:.1} MB over the {:.1} MB before)",
        bytes as f64 / 1e6,
        exported as f64 / secs,
        bytes as f64 / 1e6 / secs,
        peak as f64 / 1024.0,
        peak.saturating_sub(before) as f64 / 1024.0,
        before as f64 / 1024.0,
    );
    running.stop().await?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let events = match std::env::var("WARDEN_BENCH_EVENTS") {
        Ok(v) => v.parse().context("WARDEN_BENCH_EVENTS")?,
        Err(_) if bench_mode => 1_000_000,
        Err(_) => 5_000,
    };
    let format = std::env::var("WARDEN_BENCH_FORMAT").unwrap_or_else(|_| "ocsf".into());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(events, &format))
}
