//! HTTP load generator for the decision API: `POST /api/v1/authorize` over keep-alive
//! connections, every answer durably recorded before it is sent.
//!
//! By default it starts a server in this process (127.0.0.1, random port, a temporary data
//! directory, the example policies of `examples/policies`), creates an agent token
//! (`claude-code` acting for `alice` in `acme/platform/api`) and drives it with the three
//! requests of the README in turn — allow, deny, approval required — from C connections for
//! D seconds. It then prints decisions per second, latency percentiles and errors. The load
//! generator and the server share the machine's CPUs in this mode.
//!
//! To measure a separately started (release) server instead, give its URL and an agent token:
//!
//! ```sh
//! WARDEN_BENCH_URL=http://127.0.0.1:8080 WARDEN_BENCH_TOKEN=wdn_... \
//!   cargo bench -p warden-api --bench authorize_http
//! ```
//!
//! Settings (environment):
//! - `WARDEN_BENCH_SECONDS` — measured duration (default 10);
//! - `WARDEN_BENCH_WARMUP_SECONDS` — load before measuring starts (default 2);
//! - `WARDEN_BENCH_CONCURRENCY` — connections, each with one request in flight (default 64);
//! - `WARDEN_BENCH_URL`, `WARDEN_BENCH_TOKEN` — an external server and an agent token for
//!   `acme/platform/api` whose agent acts for a user (`--agent claude-code --on-behalf-of alice`).
//!
//! The client is a minimal HTTP/1.1 writer/reader over Tokio sockets (one pre-encoded request
//! per shape, `Content-Length` responses) so that as little CPU as possible goes to the load
//! generator. It stops by itself after warm-up + D seconds. Run without `--bench` (as
//! `cargo test --benches` does) it only makes a one-second smoke run.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warden_api::tokens::{TokenSpec, create_token};
use warden_api::{Running, ServerConfig};
use warden_core::{Actor, NamespacePath, Role, TenantId};

/// The allocator the `warden` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The README's three requests and the decision the example policies give each.
const SHAPES: [(&str, &str); 3] = [
    (
        "allow",
        r#"{"action":"call_tool","resource":{"type":"Tool","id":"github__get_file_contents","attributes":{"name":"get_file_contents","server":"github","risk":"low","categories":["read"]}}}"#,
    ),
    (
        "deny",
        r#"{"action":"call_tool","resource":{"type":"Tool","id":"github__delete_repository","attributes":{"name":"delete_repository","server":"github","risk":"critical","categories":["delete"]}}}"#,
    ),
    (
        "approval_required",
        r#"{"action":"call_tool","resource":{"type":"Tool","id":"deploy__trigger_deploy","attributes":{"name":"trigger_deploy","server":"deploy","risk":"high","categories":["execute"]}},"context":{"args":{"environment":"production"}}}"#,
    ),
];

struct Settings {
    seconds: f64,
    warmup: f64,
    concurrency: usize,
    external: Option<(String, String)>,
}

fn env_num(name: &str, default: f64) -> anyhow::Result<f64> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .with_context(|| format!("{name}={v:?} is not a non-negative number")),
        Err(_) => Ok(default),
    }
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let bench_mode = std::env::args().any(|a| a == "--bench");
        let (seconds, warmup, concurrency) = if bench_mode {
            (
                env_num("WARDEN_BENCH_SECONDS", 10.0)?,
                env_num("WARDEN_BENCH_WARMUP_SECONDS", 2.0)?,
                env_num("WARDEN_BENCH_CONCURRENCY", 64.0)? as usize,
            )
        } else {
            (1.0, 0.0, 4)
        };
        if seconds <= 0.0 || seconds > 3600.0 {
            bail!("WARDEN_BENCH_SECONDS must be in (0, 3600]");
        }
        if !(1..=10_000).contains(&concurrency) {
            bail!("WARDEN_BENCH_CONCURRENCY must be in 1..=10000");
        }
        let external = match (
            std::env::var("WARDEN_BENCH_URL"),
            std::env::var("WARDEN_BENCH_TOKEN"),
        ) {
            (Ok(url), Ok(token)) => Some((url, token)),
            (Err(_), Err(_)) => None,
            _ => bail!("set both WARDEN_BENCH_URL and WARDEN_BENCH_TOKEN, or neither"),
        };
        Ok(Settings {
            seconds,
            warmup: warmup.min(600.0),
            concurrency,
            external,
        })
    }
}

/// A server started by the load generator, with its temporary data directory.
struct InProcess {
    running: Running,
    _dir: tempfile::TempDir,
}

async fn start_in_process() -> anyhow::Result<(InProcess, String)> {
    let dir = tempfile::tempdir()?;
    let policies = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies");
    let mut config = ServerConfig::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".into();
    config.policies = Some(policies.canonicalize().context("examples/policies")?);
    let running = warden_api::start(config, None).await?;
    let spec = TokenSpec {
        tenant: TenantId::parse("acme")?,
        role: Role::Agent,
        agent: Some("claude-code".into()),
        on_behalf_of: Some("alice".into()),
        namespace: Some(NamespacePath::parse("acme/platform/api")?),
        ttl: None,
        description: Some("load generator".into()),
    };
    let by = Actor {
        role: Some("admin".into()),
        ..Default::default()
    };
    let token = create_token(running.state.store.as_ref(), &spec, by, "warden.cli").await?;
    Ok((InProcess { running, _dir: dir }, token.secret))
}

/// `http://host:port[/]` → a socket address (plain HTTP only).
async fn resolve(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("WARDEN_BENCH_URL={url:?}: only http:// URLs are supported"))?;
    let host = rest.split('/').next().unwrap_or_default();
    let addr = tokio::net::lookup_host(host)
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    Ok((addr, host.to_owned()))
}

fn post(host: &str, token: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /api/v1/authorize HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nUser-Agent: warden-loadgen\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn get(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: warden-loadgen\r\n\r\n")
        .into_bytes()
}

struct Response {
    status: u16,
    body_start: usize,
    close: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends one request and reads one `Content-Length` response into `buf`.
async fn exchange(stream: &mut TcpStream, buf: &mut Vec<u8>, req: &[u8]) -> io::Result<Response> {
    buf.clear();
    stream.write_all(req).await?;
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p + 4;
        }
        buf.reserve(4096);
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
    let mut length = None;
    let mut close = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            close = true;
        }
    }
    let length = length.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "response without Content-Length",
        )
    })?;
    while buf.len() < head_end + length {
        buf.reserve(head_end + length - buf.len());
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(Response {
        status,
        body_start: head_end,
        close,
    })
}

async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One request outside the measurement (sanity checks, metrics).
async fn once(addr: SocketAddr, req: &[u8]) -> anyhow::Result<(u16, String)> {
    let mut s = connect(addr).await?;
    let mut buf = Vec::new();
    let r = exchange(&mut s, &mut buf, req).await?;
    Ok((
        r.status,
        String::from_utf8_lossy(&buf[r.body_start..]).into_owned(),
    ))
}

/// Audit counters from `/metrics`: (events appended, batches committed).
async fn audit_counters(addr: SocketAddr, host: &str) -> Option<(u64, u64)> {
    let (status, text) = once(addr, &get(host, "/metrics")).await.ok()?;
    if status != 200 {
        return None;
    }
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    Some((
        value("warden_audit_events_appended_total")?,
        value("warden_audit_batches_total")?,
    ))
}

#[derive(Default)]
struct Tally {
    /// Latencies (ns) of requests started inside the measured window.
    latencies: Vec<u64>,
    /// Answers with the expected decision, per shape, inside the window.
    ok: [u64; 3],
    /// 200 answers over the whole run, warm-up included (each one is an audit event).
    answered_total: u64,
    status_errors: Vec<(u16, String)>,
    wrong_decision: u64,
    io_errors: u64,
    last_done: Option<Instant>,
}

impl Tally {
    fn errors(&self) -> u64 {
        self.status_errors.len() as u64 + self.wrong_decision + self.io_errors
    }
}

async fn worker(
    addr: SocketAddr,
    requests: Arc<Vec<Vec<u8>>>,
    expected: Arc<Vec<Vec<u8>>>,
    offset: usize,
    measure_from: Instant,
    until: Instant,
) -> Tally {
    let mut t = Tally {
        latencies: Vec::with_capacity(1 << 14),
        ..Default::default()
    };
    let mut buf = Vec::with_capacity(8192);
    let mut stream: Option<TcpStream> = None;
    let mut i = offset;
    while Instant::now() < until {
        let s = match stream.as_mut() {
            Some(s) => s,
            None => match connect(addr).await {
                Ok(s) => stream.insert(s),
                Err(_) => {
                    t.io_errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let k = i % requests.len();
        i += 1;
        let started = Instant::now();
        let result = exchange(s, &mut buf, &requests[k]).await;
        let done = Instant::now();
        let measured = started >= measure_from;
        match result {
            Ok(r) => {
                if r.status == 200 {
                    t.answered_total += 1;
                }
                if measured {
                    t.latencies.push((done - started).as_nanos() as u64);
                    t.last_done = Some(done);
                    let body = &buf[r.body_start..];
                    if r.status != 200 {
                        if t.status_errors.len() < 10_000 {
                            t.status_errors
                                .push((r.status, String::from_utf8_lossy(body).into_owned()));
                        }
                    } else if find(body, &expected[k]).is_some() {
                        t.ok[k] += 1;
                    } else {
                        t.wrong_decision += 1;
                    }
                }
                if r.close {
                    stream = None;
                }
            }
            Err(_) => {
                if measured {
                    t.io_errors += 1;
                }
                stream = None;
            }
        }
    }
    t
}

/// CPU time (user + system) this process has used so far, where Linux reports it.
fn own_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

fn percentile(sorted: &[u64], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Duration::from_nanos(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (server, addr, host, token) = match &settings.external {
        Some((url, token)) => {
            let (addr, host) = resolve(url).await?;
            (None, addr, host, token.clone())
        }
        None => {
            let (server, token) = start_in_process().await?;
            let addr = server.running.addr;
            (Some(server), addr, addr.to_string(), token)
        }
    };
    let requests: Vec<Vec<u8>> = SHAPES.iter().map(|(_, b)| post(&host, &token, b)).collect();
    let expected: Vec<Vec<u8>> = SHAPES
        .iter()
        .map(|(d, _)| format!("\"decision\":\"{d}\"").into_bytes())
        .collect();
    for (k, (decision, _)) in SHAPES.iter().enumerate() {
        let (status, body) = once(addr, &requests[k]).await?;
        if status != 200 || find(body.as_bytes(), &expected[k]).is_none() {
            bail!("the {decision} request got {status}: {body}");
        }
    }

    println!("warden decision API load: POST /api/v1/authorize, keep-alive HTTP/1.1");
    match &server {
        Some(_) => println!(
            "server: in this process on {addr} (example policies, temporary SQLite, synchronous=FULL); \
             load generator and server share the same {cpus} CPU(s)"
        ),
        None => println!(
            "server: external at {addr}; load generator runs on {cpus} CPU(s) (pin the two apart with taskset to separate them)"
        ),
    }
    println!(
        "connections: {}, warm-up: {}s, measured: {}s, mix: allow / deny / approval_required in turn",
        settings.concurrency, settings.warmup, settings.seconds
    );

    let before = audit_counters(addr, &host).await;
    let cpu_before = own_cpu_time();
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(settings.warmup);
    let until = measure_from + Duration::from_secs_f64(settings.seconds);
    let requests = Arc::new(requests);
    let expected = Arc::new(expected);
    let tasks: Vec<_> = (0..settings.concurrency)
        .map(|c| {
            tokio::spawn(worker(
                addr,
                requests.clone(),
                expected.clone(),
                c,
                measure_from,
                until,
            ))
        })
        .collect();
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await?;
        all.latencies.extend(t.latencies);
        for k in 0..3 {
            all.ok[k] += t.ok[k];
        }
        all.answered_total += t.answered_total;
        all.status_errors.extend(t.status_errors);
        all.wrong_decision += t.wrong_decision;
        all.io_errors += t.io_errors;
        all.last_done = all.last_done.max(t.last_done);
    }
    let cpu_after = own_cpu_time();
    let wall = start.elapsed();
    let after = audit_counters(addr, &host).await;

    let elapsed = all.last_done.map_or(Duration::ZERO, |d| {
        d.saturating_duration_since(measure_from)
    });
    let mut lat = std::mem::take(&mut all.latencies);
    lat.sort_unstable();
    let ok: u64 = all.ok.iter().sum();
    let rate = ok as f64 / elapsed.as_secs_f64().max(1e-9);
    println!();
    println!(
        "decisions: {ok} in {:.2}s = {rate:.0} decisions/s (allow {}, deny {}, approval_required {})",
        elapsed.as_secs_f64(),
        all.ok[0],
        all.ok[1],
        all.ok[2]
    );
    println!(
        "latency:   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n = {})",
        ms(percentile(&lat, 50.0)),
        ms(percentile(&lat, 90.0)),
        ms(percentile(&lat, 99.0)),
        ms(percentile(&lat, 99.9)),
        ms(lat
            .last()
            .map_or(Duration::ZERO, |n| Duration::from_nanos(*n))),
        lat.len()
    );
    println!(
        "errors:    {} (non-200: {}, wrong decision: {}, connection: {})",
        all.errors(),
        all.status_errors.len(),
        all.wrong_decision,
        all.io_errors
    );
    if let Some((status, body)) = all.status_errors.first() {
        println!("           first non-200: {status} {body}");
    }
    if let (Some((a0, b0)), Some((a1, b1))) = (before, after) {
        let (events, batches) = (a1 - a0, b1 - b0);
        println!(
            "audit:     {events} events durably appended in {batches} batches ({:.1} per batch) for {} answered decisions (warm-up included)",
            events as f64 / batches.max(1) as f64,
            all.answered_total
        );
        if events < all.answered_total {
            bail!("fewer audit events than answered decisions: the trail is missing records");
        }
    }
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        let used = b.saturating_sub(a);
        let label = if server.is_some() {
            "server and load generator"
        } else {
            "load generator"
        };
        println!(
            "cpu:       {label} used {:.1} s of CPU in {:.1} s (warm-up included), {:.0} µs per request",
            used.as_secs_f64(),
            wall.as_secs_f64(),
            used.as_secs_f64() * 1e6 / (all.answered_total.max(1)) as f64
        );
    }
    println!(
        "summary: concurrency={} decisions_per_s={rate:.0} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} max_ms={:.3} errors={}",
        settings.concurrency,
        percentile(&lat, 50.0).as_secs_f64() * 1e3,
        percentile(&lat, 90.0).as_secs_f64() * 1e3,
        percentile(&lat, 99.0).as_secs_f64() * 1e3,
        lat.last().map_or(0.0, |n| *n as f64 / 1e6),
        all.errors()
    );

    if let Some(server) = server {
        server.running.stop().await?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(settings))
}
