//! Durable audit append: how many `authz.decision` events per second reach a real SQLite file
//! (WAL, `synchronous=FULL`) and are acknowledged.
//!
//! - `pipeline/*`: 10,000 events (`WARDEN_BENCH_PIPELINE_EVENTS`, at most the queue's 50,000)
//!   submitted concurrently through the [`AuditPipeline`] (bounded queue, one writer, group
//!   commit), timed until the last acknowledgement. Each event is acknowledged only after the
//!   transaction holding it committed, as in the server. Each run also prints the CPU time
//!   the timed part used per event (on Linux): all cores, this process's share, and the rest
//!   (PostgreSQL's, for `postgres/*`), and how many of the cores were busy.
//!   - `record_tasks`: one task per event calling `record` (like 10,000 concurrent requests to
//!     `POST /api/v1/authorize`);
//!   - `record_many_100`: 100 tasks calling `record_many` with 100 events each (like
//!     `POST /api/v1/authorize/batch`).
//! - `store/append_events/N`: `SqliteStore::append_events` called directly with a batch of N
//!   events (1, 10, 100, 1,000), one transaction and one fsync each: the speed of the store
//!   alone, and what a commit costs whatever its size.
//! - `store/encode/1000`: the CPU part of an append without SQLite — canonical header JSON,
//!   Merkle leaf hash, payload JSON, query columns — for 1,000 events.
//! - `store/events_in_order/1000`: a page of 1,000 events read back in log order, header and
//!   payload parsed (how stream destinations read the log); `store/log_rows/1000`: the same
//!   page as stored, nothing parsed (how `warden audit verify` reads it).
//!
//! - `postgres/*`: the same pipeline runs and direct appends against a fresh database on the
//!   PostgreSQL server at `WARDEN_TEST_POSTGRES_URL` (default
//!   `postgres://postgres@127.0.0.1:5432/postgres`), created for the run and dropped after it.
//!   Multi-row inserts bind one array per column (`UNNEST`), one transaction per batch; a
//!   commit waits for the WAL flush (`synchronous_commit = on`).
//!
//! Events are built like the decision API builds them (header with actor, action, resource and
//! decision; payload with the redacted request and a context of about 400 bytes) before the
//! clock starts: building them is the door's work, not the store's.
//!
//! ```sh
//! cargo bench -p warden-store --bench append
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use warden_audit::redact::{Redactor, tenant_key};
use warden_core::{
    Actor, AuditEvent, ClientInfo, DecisionSummary, EntityRef, Obligation, Outcome, PolicyRef,
    ResourceRef, TenantId, TraceContext, catalog,
};
use warden_store::pipeline::{AuditPipeline, PipelineConfig};
use warden_store::postgres::{PgStore, Schema};
use warden_store::{Appended, EncodedEvent, NewEvent, SqliteStore, Store};

/// The allocator the `warden` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Events per pipeline iteration: 10,000, or `WARDEN_BENCH_PIPELINE_EVENTS`. Larger bursts
/// weigh the start and the end of a burst less (the first batch waits for events to come,
/// the last commits alone).
fn pipeline_events() -> usize {
    std::env::var("WARDEN_BENCH_PIPELINE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// CPU time used during the timed parts of a benchmark, from `/proc` (Linux; nothing
/// elsewhere), in clock ticks.
#[derive(Default)]
struct CpuUse {
    /// Every core's busy time.
    busy: u64,
    /// This process's.
    own: u64,
    wall: Duration,
    events: u64,
}

impl CpuUse {
    /// Runs `f`, which handles `events` events, and adds what it used.
    fn measure<T>(&mut self, events: usize, f: impl FnOnce() -> T) -> (T, Duration) {
        let before = cpu_ticks();
        let started = Instant::now();
        let out = f();
        let took = started.elapsed();
        if let (Some(a), Some(b)) = (before, cpu_ticks()) {
            self.busy += b.0.saturating_sub(a.0);
            self.own += b.1.saturating_sub(a.1);
            self.wall += took;
            self.events += events as u64;
        }
        (out, took)
    }

    fn report(&self, name: &str) {
        if self.events == 0 {
            return;
        }
        // Clock ticks are 1/100 s on Linux.
        let per_event = |ticks: u64| ticks as f64 * 10_000.0 / self.events as f64;
        // The system-wide count and this process's are read from two files at two moments,
        // so on a machine where nothing else runs this process can seem to have used more.
        let rest = self.busy.saturating_sub(self.own);
        eprintln!(
            "{name}: CPU {:.1} µs per event ({:.1} this process, {:.1} the rest), {:.2} cores busy",
            per_event(self.busy),
            per_event(self.own),
            per_event(rest),
            self.busy as f64 / 100.0 / self.wall.as_secs_f64(),
        );
    }
}

/// Busy ticks of all cores and ticks of this process, from `/proc/stat` and
/// `/proc/self/stat`.
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let all: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // idle and iowait are the fourth and fifth.
    let busy = all.iter().sum::<u64>() - all.get(3)? - all.get(4)?;
    let me = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name: state is the first field, utime and stime the 12th and 13th.
    let fields: Vec<&str> = me[me.rfind(')')? + 2..].split_whitespace().collect();
    let own = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((busy, own))
}
/// Events per direct store call: one transaction (and one fsync) each.
const STORE_BATCHES: [usize; 4] = [1, 10, 100, 1_000];
/// Events per iteration of the encoding measurement.
const ENCODE_BATCH: usize = 1_000;
/// Events per page when the log is read back in order.
const READ_PAGE: u32 = 1_000;

const TENANT: &str = "acme";
const NAMESPACE: &str = "acme/platform/api";
const TOKEN_ID: &str = "tok_0192f0c4a3b87d11a0e3c5d2b4f6a718";

/// The three requests of the README (allow, deny, approval required), as decided by the
/// example policies.
struct Shape {
    tool: &'static str,
    name: &'static str,
    server: &'static str,
    risk: &'static str,
    category: &'static str,
    args: Value,
    outcome: Outcome,
    policy: (&'static str, &'static str, &'static str, u32, &'static str),
    redact: Option<&'static str>,
}

fn shapes() -> Vec<Shape> {
    vec![
        Shape {
            tool: "github__get_file_contents",
            name: "get_file_contents",
            server: "github",
            risk: "low",
            category: "read",
            args: json!({
                "owner": "acme",
                "repo": "platform-api",
                "path": "services/billing/src/handlers/invoices.rs",
                "ref": "refs/heads/feature/invoice-rounding",
                "token": "ghp_Zx81kQp0aTq5mN2vB7cR4yH9wL3dF6sJ1eU0",
                "reason": "Reading the invoice handler to explain the rounding bug reported in issue 4312.",
            }),
            outcome: Outcome::Allow,
            policy: (
                "platform.github-token-redacted",
                "acme/platform",
                "acme/platform/tools.cedar",
                14,
                "GitHub tools may receive a token; it is never stored in clear.",
            ),
            redact: Some("args.token"),
        },
        Shape {
            tool: "github__delete_repository",
            name: "delete_repository",
            server: "github",
            risk: "critical",
            category: "delete",
            args: json!({
                "owner": "acme",
                "repo": "platform-api-legacy",
                "confirm": true,
                "reason": "The legacy repository was archived two years ago and is no longer referenced by any deployment pipeline.",
                "requested_in": "https://chat.example.com/platform/threads/8812",
            }),
            outcome: Outcome::Deny,
            policy: (
                "acme.no-repository-deletion",
                "acme",
                "acme/base.cedar",
                8,
                "Deleting a repository is irreversible and is never done by an agent.",
            ),
            redact: None,
        },
        Shape {
            tool: "deploy__trigger_deploy",
            name: "trigger_deploy",
            server: "deploy",
            risk: "high",
            category: "execute",
            args: json!({
                "environment": "production",
                "service": "billing-api",
                "version": "2026.11.27-3f9c2ab",
                "strategy": "canary",
                "canary_percent": 10,
                "change_ticket": "CHG-20931",
                "notes": "Ships the invoice rounding fix; rollback plan in the ticket.",
            }),
            outcome: Outcome::ApprovalRequired,
            policy: (
                "platform.production-deploy-ask",
                "acme/platform",
                "acme/platform/tools.cedar",
                33,
                "Deploying to production needs a person's approval.",
            ),
            redact: None,
        },
    ]
}

/// One `authz.decision` event, built as `routes/authorize.rs::decision_event` builds it.
fn decision_event(shape: &Shape, redactor: &Redactor) -> AuditEvent {
    let principal = EntityRef::new("Agent", "claude-code");
    let resource = json!({
        "type": "Tool",
        "id": shape.tool,
        "attributes": {
            "name": shape.name,
            "server": shape.server,
            "risk": shape.risk,
            "categories": [shape.category],
        },
    });
    let mut payload = json!({
        "request": {
            "principal": {"type": "Agent", "id": "claude-code"},
            "on_behalf_of": {"type": "User", "id": "alice"},
            "session": TOKEN_ID,
            "action": "call_tool",
            "resource": resource,
            "context": {"args": shape.args},
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        },
        "evaluated": 6,
    });
    let paths: Vec<String> = shape
        .redact
        .iter()
        .map(|p| format!("request.context.{p}"))
        .collect();
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    redactor.redact(&mut payload, &refs);
    let actor = Actor {
        principal: Some(principal),
        agent: Some("claude-code".into()),
        on_behalf_of: Some("alice".into()),
        session: Some(TOKEN_ID.into()),
        token_id: Some(TOKEN_ID.into()),
        role: Some("agent".into()),
    };
    let mut e = AuditEvent::new(
        TENANT,
        NAMESPACE,
        catalog::AUTHZ_DECISION,
        "warden.api",
        actor,
        payload,
    );
    let (id, namespace, origin, line, reason) = shape.policy;
    e.header.action = Some("call_tool".into());
    e.header.resource = Some(ResourceRef {
        resource_type: "Tool".into(),
        id: shape.tool.into(),
    });
    e.header.decision = Some(DecisionSummary {
        outcome: shape.outcome,
        policies: vec![PolicyRef {
            id: id.into(),
            namespace: namespace.into(),
            origin: origin.into(),
            line,
            reason: Some(reason.into()),
        }],
        obligations: match (shape.outcome, shape.redact) {
            (_, Some(path)) => vec![Obligation::Redact {
                path: path.into(),
                policy: id.into(),
            }],
            (Outcome::ApprovalRequired, _) => vec![Obligation::Approval {
                policies: vec![id.into()],
            }],
            _ => vec![],
        },
        warnings: vec![],
        errors: vec![],
    });
    e.header.client = Some(ClientInfo {
        address: Some("127.0.0.1".into()),
        user_agent: Some("claude-code/1.0.43 (warden-client)".into()),
    });
    e.header.trace =
        TraceContext::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    e
}

struct Events {
    shapes: Vec<Shape>,
    redactor: Redactor,
}

impl Events {
    fn new() -> Events {
        Events {
            shapes: shapes(),
            redactor: Redactor::new(tenant_key(&[7u8; 32], TENANT)),
        }
    }

    /// `n` fresh events (new ids), cycling through allow, deny and approval required.
    fn make(&self, n: usize) -> Vec<AuditEvent> {
        (0..n)
            .map(|i| decision_event(&self.shapes[i % self.shapes.len()], &self.redactor))
            .collect()
    }

    fn describe(&self) {
        for s in &self.shapes {
            let e = decision_event(s, &self.redactor);
            let context = serde_json::to_string(&e.payload["request"]["context"]).unwrap();
            let payload = serde_json::to_string(&e.payload).unwrap();
            eprintln!(
                "event {:<18} header {} B, payload {} B (context {} B)",
                e.header.decision.as_ref().unwrap().outcome.as_str(),
                e.header.canonical_bytes().len(),
                payload.len(),
                context.len(),
            );
        }
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn open_store(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
    Arc::new(
        SqliteStore::open(&dir.path().join("warden.db"))
            .await
            .expect("open store"),
    )
}

fn db_size(dir: &tempfile::TempDir) -> u64 {
    ["warden.db", "warden.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum()
}

#[derive(Clone, Copy)]
enum Submit {
    /// One task per event, each calling `record`.
    RecordTasks,
    /// Tasks calling `record_many` with this many events each.
    RecordMany(usize),
}

async fn submit(pipeline: &Arc<AuditPipeline>, events: Vec<AuditEvent>, how: Submit) -> usize {
    let mut stored = 0;
    match how {
        Submit::RecordTasks => {
            let tasks: Vec<_> = events
                .into_iter()
                .map(|e| {
                    let p = pipeline.clone();
                    tokio::spawn(async move { p.record(e).await })
                })
                .collect();
            for r in futures::future::join_all(tasks).await {
                if let Appended::Stored { .. } = r.expect("task").expect("recorded") {
                    stored += 1;
                }
            }
        }
        Submit::RecordMany(chunk) => {
            let mut events = events.into_iter().peekable();
            let mut tasks = Vec::new();
            while events.peek().is_some() {
                let batch: Vec<NewEvent> = events
                    .by_ref()
                    .take(chunk)
                    .map(|event| NewEvent {
                        event,
                        dedupe: false,
                    })
                    .collect();
                let p = pipeline.clone();
                tasks.push(tokio::spawn(async move { p.record_many(batch).await }));
            }
            for r in futures::future::join_all(tasks).await {
                for one in r.expect("task").expect("enqueued") {
                    if let Appended::Stored { .. } = one.expect("recorded") {
                        stored += 1;
                    }
                }
            }
        }
    }
    stored
}

/// `iters` bursts of `n` events through `pipeline`, each timed until its last
/// acknowledgement; their total time.
fn bursts(
    rt: &Runtime,
    pipeline: &Arc<AuditPipeline>,
    events: &Events,
    n: usize,
    how: Submit,
    cpu: &mut CpuUse,
    iters: u64,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let batch = events.make(n);
        let (stored, took) = cpu.measure(n, || rt.block_on(submit(pipeline, batch, how)));
        total += took;
        assert_eq!(stored, n);
    }
    total
}

fn pipeline(c: &mut Criterion) {
    let events = Events::new();
    events.describe();
    let mut group = c.benchmark_group("pipeline");
    let n = pipeline_events();
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(10);
    for (name, how) in [
        ("record_tasks", Submit::RecordTasks),
        ("record_many_100", Submit::RecordMany(100)),
    ] {
        let rt = runtime();
        let dir = tempfile::tempdir().expect("temp dir");
        let store = rt.block_on(open_store(&dir));
        let pipeline = Arc::new(rt.block_on(async {
            AuditPipeline::start(store.clone() as Arc<dyn Store>, PipelineConfig::default())
        }));
        let mut cpu = CpuUse::default();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| bursts(&rt, &pipeline, &events, n, how, &mut cpu, iters))
        });
        cpu.report(&format!("pipeline/{name}"));
        let stats = pipeline.stats();
        let (appended, batches) = (stats.appended.get(), stats.batches.get());
        if appended > 0 {
            eprintln!(
                "pipeline/{name}: {appended} events in {batches} batches ({:.0} per batch), database {} MiB",
                appended as f64 / batches.max(1) as f64,
                db_size(&dir) >> 20,
            );
        }
        rt.block_on(pipeline.shutdown());
    }
    group.finish();
}

fn store(c: &mut Criterion) {
    let events = Events::new();
    let mut group = c.benchmark_group("store");
    group.sample_size(20);
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = rt.block_on(open_store(&dir));
    for size in STORE_BATCHES {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(BenchmarkId::new("append_events", size), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let batch: Vec<NewEvent> = events
                        .make(size)
                        .into_iter()
                        .map(|event| NewEvent {
                            event,
                            dedupe: false,
                        })
                        .collect();
                    let started = Instant::now();
                    let out = rt.block_on(store.append_events(&batch)).expect("append");
                    total += started.elapsed();
                    black_box(out);
                }
                total
            })
        });
    }
    if db_size(&dir) > 1 << 20 {
        eprintln!("store: database {} MiB", db_size(&dir) >> 20);
    }

    // The log read back in order, as `warden audit verify` and stream destinations read it.
    let tenant = TenantId::parse(TENANT).expect("tenant id");
    let head = rt.block_on(store.merkle_head(&tenant)).expect("head");
    if head.size < READ_PAGE as u64 {
        let batch: Vec<NewEvent> = (events.make(READ_PAGE as usize).into_iter())
            .map(|event| NewEvent {
                event,
                dedupe: false,
            })
            .collect();
        rt.block_on(store.append_events(&batch)).expect("append");
    }
    group.throughput(Throughput::Elements(u64::from(READ_PAGE)));
    group.bench_function(BenchmarkId::new("events_in_order", READ_PAGE), |b| {
        b.iter(|| {
            let page = rt
                .block_on(store.events_in_order(&tenant, 0, READ_PAGE))
                .expect("read");
            assert_eq!(page.len(), READ_PAGE as usize);
            black_box(page)
        })
    });
    group.bench_function(BenchmarkId::new("log_rows", READ_PAGE), |b| {
        b.iter(|| {
            let page = rt
                .block_on(store.log_rows(&tenant, 0, READ_PAGE))
                .expect("read");
            assert_eq!(page.len(), READ_PAGE as usize);
            black_box(page)
        })
    });

    // The CPU part of an append, without SQLite: canonical header, leaf hash, payload text and
    // query columns, as the pipeline computes them on the caller's task.
    group.throughput(Throughput::Elements(ENCODE_BATCH as u64));
    group.bench_function(BenchmarkId::new("encode", ENCODE_BATCH), |b| {
        b.iter_batched(
            || events.make(ENCODE_BATCH),
            |batch| {
                for e in &batch {
                    black_box(EncodedEvent::of(e, false));
                }
                batch
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn postgres_admin_url() -> String {
    std::env::var("WARDEN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Runs `sql` on the PostgreSQL server's admin database.
fn postgres_admin(rt: &Runtime, sql: String) {
    use sqlx::Connection;
    rt.block_on(async {
        let url = postgres_admin_url();
        let mut conn = sqlx::PgConnection::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {url}: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .expect("admin statement");
    });
}

fn postgres(c: &mut Criterion) {
    use std::str::FromStr;
    let events = Events::new();
    let rt = runtime();
    let name = format!("warden_bench_{}", uuid::Uuid::now_v7().simple());
    postgres_admin(&rt, format!("CREATE DATABASE {name}"));
    let opts = sqlx::postgres::PgConnectOptions::from_str(&postgres_admin_url())
        .expect("URL")
        .database(&name);
    let store: Arc<dyn Store> = Arc::new(
        rt.block_on(PgStore::connect_with(opts, Schema::Migrate, 16))
            .expect("connect"),
    );
    let mut group = c.benchmark_group("postgres");
    group.sample_size(10);
    let n = pipeline_events();
    group.throughput(Throughput::Elements(n as u64));
    for (bench, how) in [
        ("pipeline/record_tasks", Submit::RecordTasks),
        ("pipeline/record_many_100", Submit::RecordMany(100)),
    ] {
        let pipeline =
            Arc::new(rt.block_on(async {
                AuditPipeline::start(store.clone(), PipelineConfig::default())
            }));
        let mut cpu = CpuUse::default();
        group.bench_function(bench, |b| {
            b.iter_custom(|iters| bursts(&rt, &pipeline, &events, n, how, &mut cpu, iters))
        });
        cpu.report(&format!("postgres/{bench}"));
        let stats = pipeline.stats();
        let (appended, batches) = (stats.appended.get(), stats.batches.get());
        if appended > 0 {
            eprintln!(
                "postgres/{bench}: {appended} events in {batches} batches ({:.0} per batch)",
                appended as f64 / batches.max(1) as f64,
            );
        }
        rt.block_on(pipeline.shutdown());
    }
    for size in [1usize, 1_000] {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(BenchmarkId::new("store/append_events", size), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let batch: Vec<NewEvent> = events
                        .make(size)
                        .into_iter()
                        .map(|event| NewEvent {
                            event,
                            dedupe: false,
                        })
                        .collect();
                    let started = Instant::now();
                    let out = rt.block_on(store.append_events(&batch)).expect("append");
                    total += started.elapsed();
                    black_box(out);
                }
                total
            })
        });
    }
    group.finish();
    drop(store);
    postgres_admin(&rt, format!("DROP DATABASE {name} WITH (FORCE)"));
}

criterion_group!(benches, pipeline, store, postgres);
criterion_main!(benches);
