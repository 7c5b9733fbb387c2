//! Load generator for the MCP gateway: `tools/call` through Warden's `/mcp` and, in the same
//! run, directly against the upstream Warden forwards to, so that the cost Warden adds can be
//! read off side by side.
//!
//! The upstream is a tiny MCP server in this process (`echo_upstream`: one tool, `echo`,
//! Streamable HTTP on 127.0.0.1). Warden is the real `warden` binary in its own process
//! (built with the same optimised profile as this benchmark), started with a temporary data
//! directory (SQLite, `synchronous=FULL`: every answered call is durably recorded first), a
//! policy that lets agents list and call every tool, a configuration file with the echo
//! server as upstream `echo`, and an agent token (`bench-agent` acting for `alice` in
//! namespace `bench`). Agents see the tool as `echo__echo`.
//!
//! Phases, in one run:
//!
//! 1. **idle memory** — Warden's resident set size (`VmRSS`) once it is ready and connected
//!    to the upstream;
//! 2. **fixed rate** — open loop at `WARDEN_BENCH_RATE` calls/s (default 1,000): first
//!    directly against the echo server, then through Warden. Each call has a scheduled send
//!    time and its latency is measured from that time, not from when it was actually sent, so
//!    a stall delays (and counts against) every call scheduled during it (no coordinated
//!    omission). The *added latency* is the gateway's percentile minus the direct
//!    percentile, both taken at the same rate with the same sessions and the same client;
//!    it is a difference of two distributions, not a per-call difference;
//! 3. **maximum throughput** — closed loop through Warden: `WARDEN_BENCH_CONCURRENCY`
//!    connections (default 32), each with one call in flight;
//! 4. **durability** — `warden_audit_events_appended_total` from `/metrics` before phase 2's
//!    gateway part and after phase 3: every governed call records two events
//!    (`mcp.tool.call.decided` before forwarding, `mcp.tool.call.completed` after), so the
//!    run fails if fewer than twice the answered calls were appended;
//! 5. **sessions** — opens `WARDEN_BENCH_OPEN_SESSIONS` MCP sessions (default 1,000; each
//!    `initialize` + `notifications/initialized`, none closed) and reads `VmRSS` again.
//!
//! Every call must come back as a result (not a JSON-RPC error, not `isError`) whose text is
//! the message sent, which is unique per call; anything else counts as an error.
//!
//! Settings (environment):
//! - `WARDEN_BENCH_SECONDS` — measured duration of each load phase (default 10);
//! - `WARDEN_BENCH_WARMUP_SECONDS` — load before each measurement starts (default 2);
//! - `WARDEN_BENCH_RATE` — calls per second of the fixed-rate phase (default 1000);
//! - `WARDEN_BENCH_CONCURRENCY` — connections of the throughput phase (default 32);
//! - `WARDEN_BENCH_SESSIONS` — MCP sessions the load phases spread calls over (default 4);
//! - `WARDEN_BENCH_OPEN_SESSIONS` — sessions opened in the last phase (default 1000);
//! - `WARDEN_BENCH_ACCEPT` — `sse` (default): send `Accept: application/json,
//!   text/event-stream` as the MCP specification requires of clients, so Warden answers
//!   `tools/call` as an event stream; `json`: send `Accept: application/json` only;
//! - `WARDEN_BENCH_URL`, `WARDEN_BENCH_TOKEN` — drive an already running Warden instead (its
//!   base URL and an agent token). Its configuration must have an upstream named `echo` at
//!   `http://<WARDEN_BENCH_ECHO_LISTEN>/mcp` (default `127.0.0.1:8931`), and its policies
//!   must let the token's agent list and call `echo__echo`. Memory is not measured then, and
//!   the session phase is skipped.
//!
//! The client is a minimal HTTP/1.1 writer/reader (pre-encoded headers per session,
//! `Content-Length` and chunked answers). The fixed-rate phase runs one OS thread per
//! connection with blocking sockets and precise sleeps, so that the send schedule does not
//! depend on a timer wheel's millisecond ticks; the throughput phase runs on Tokio. The load
//! generator and the echo server share the machine's CPUs with Warden. Run without `--bench`
//! (as `cargo test --benches` does) it only makes a short smoke run.

mod echo_upstream;

use std::fmt::Write as _;
use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The protocol version the client speaks.
const PROTOCOL_VERSION: &str = "2025-11-25";
/// Connections (threads) of the fixed-rate phase; more than ever needed at once, so that a
/// call is late only when Warden (or the machine) is.
const OPEN_LOOP_CONNECTIONS: usize = 16;
/// Connections used to open sessions in the last phase.
const SESSION_OPENERS: usize = 8;

struct Settings {
    seconds: f64,
    warmup: f64,
    rate: f64,
    concurrency: usize,
    sessions: usize,
    open_sessions: usize,
    sse: bool,
    external: Option<(String, String)>,
    echo_listen: String,
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
        let (seconds, warmup, concurrency, open_sessions) = if bench_mode {
            (
                env_num("WARDEN_BENCH_SECONDS", 10.0)?,
                env_num("WARDEN_BENCH_WARMUP_SECONDS", 2.0)?,
                env_num("WARDEN_BENCH_CONCURRENCY", 32.0)? as usize,
                env_num("WARDEN_BENCH_OPEN_SESSIONS", 1000.0)? as usize,
            )
        } else {
            (1.0, 0.0, 4, 20)
        };
        let rate = env_num("WARDEN_BENCH_RATE", 1000.0)?;
        let sessions = env_num("WARDEN_BENCH_SESSIONS", 4.0)? as usize;
        if seconds <= 0.0 || seconds > 3600.0 {
            bail!("WARDEN_BENCH_SECONDS must be in (0, 3600]");
        }
        if !(1.0..=100_000.0).contains(&rate) {
            bail!("WARDEN_BENCH_RATE must be in [1, 100000]");
        }
        if !(1..=10_000).contains(&concurrency) {
            bail!("WARDEN_BENCH_CONCURRENCY must be in 1..=10000");
        }
        if !(1..=1_000).contains(&sessions) {
            bail!("WARDEN_BENCH_SESSIONS must be in 1..=1000");
        }
        if open_sessions > 100_000 {
            bail!("WARDEN_BENCH_OPEN_SESSIONS must be at most 100000");
        }
        let sse = match std::env::var("WARDEN_BENCH_ACCEPT").as_deref() {
            Ok("sse") | Err(_) => true,
            Ok("json") => false,
            Ok(other) => bail!("WARDEN_BENCH_ACCEPT={other:?}: use sse or json"),
        };
        let external = match (
            std::env::var("WARDEN_BENCH_URL"),
            std::env::var("WARDEN_BENCH_TOKEN"),
        ) {
            (Ok(url), Ok(token)) => Some((url, token)),
            (Err(_), Err(_)) => None,
            _ => bail!("set both WARDEN_BENCH_URL and WARDEN_BENCH_TOKEN, or neither"),
        };
        let echo_listen = std::env::var("WARDEN_BENCH_ECHO_LISTEN").unwrap_or_else(|_| {
            if external.is_some() {
                "127.0.0.1:8931".into()
            } else {
                "127.0.0.1:0".into()
            }
        });
        Ok(Settings {
            seconds,
            warmup: warmup.min(600.0),
            rate,
            concurrency,
            sessions,
            open_sessions,
            sse,
            external,
            echo_listen,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Warden as a child process

/// A `warden serve` started by the benchmark, with its temporary directory. Killed when
/// dropped unless it was stopped.
struct WardenProcess {
    child: Child,
    dir: tempfile::TempDir,
}

impl WardenProcess {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("warden.log")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Fails with the end of Warden's log if it has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "warden exited ({status}); the end of its log:\n{}",
                self.log_tail()
            );
        }
        Ok(())
    }

    /// SIGTERM (graceful: drain, final checkpoint), then waits.
    fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!(
                        "warden stopped with {status}; the end of its log:\n{}",
                        self.log_tail()
                    );
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("warden did not stop within 60 s of SIGTERM")
    }
}

impl Drop for WardenProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The policy: agents may list and call every tool.
const POLICY: &str = r#"// Gateway benchmark: every agent may list and call every tool.
@id("bench.tools")
permit (principal is Agent, action in [Action::"list_tools", Action::"call_tool"], resource is Tool);
"#;

/// Writes the policy, the configuration and a token, then starts `warden serve`.
fn start_warden(echo: SocketAddr) -> anyhow::Result<(WardenProcess, SocketAddr, String)> {
    let exe = env!("CARGO_BIN_EXE_warden");
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(policies.join("bench"))?;
    std::fs::write(policies.join("bench/tools.cedar"), POLICY)?;
    let config = dir.path().join("warden.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\n\n[[gateway.upstream]]\nname = \"echo\"\ntransport = \"http\"\n\
             url = \"http://{echo}/mcp\"\n"
        ),
    )?;
    let out = Command::new(exe)
        .args(["token", "create", "--data-dir"])
        .arg(&data)
        .args([
            "--tenant",
            "bench",
            "--role",
            "agent",
            "--agent",
            "bench-agent",
            "--on-behalf-of",
            "alice",
            "--namespace",
            "bench",
            "--description",
            "gateway load generator",
        ])
        .output()
        .with_context(|| format!("cannot run {exe}"))?;
    if !out.status.success() {
        bail!(
            "warden token create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let token = String::from_utf8(out.stdout)?.trim().to_owned();
    if token.is_empty() || token.contains(char::is_whitespace) {
        bail!("warden token create printed {token:?}, not a token");
    }
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let log = std::fs::File::create(dir.path().join("warden.log"))?;
    let child = Command::new(exe)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .arg("--policies")
        .arg(&policies)
        .arg("--listen")
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {exe} serve"))?;
    Ok((WardenProcess { child, dir }, addr, token))
}

/// `(VmRSS, VmHWM)` of a process, in bytes.
fn rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| {
        status.lines().find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    Some((kb("VmRSS:")? * 1024, kb("VmHWM:")? * 1024))
}

/// CPU time (user + system) a process has used so far.
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

/// Megabytes (10^6 bytes), the unit of the goals.
fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

// ---------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client

/// Where requests go and how they are framed.
struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
    token: Option<String>,
    accept: &'static str,
}

impl Target {
    /// Everything of a POST up to `Content-Length: `.
    fn prefix(&self, session: Option<&str>) -> Vec<u8> {
        let mut s = format!("POST {} HTTP/1.1\r\nHost: {}\r\n", self.path, self.host);
        if let Some(t) = &self.token {
            let _ = write!(s, "Authorization: Bearer {t}\r\n");
        }
        let _ = write!(
            s,
            "Content-Type: application/json\r\nAccept: {}\r\nUser-Agent: warden-loadgen\r\n",
            self.accept
        );
        if let Some(id) = session {
            let _ = write!(
                s,
                "MCP-Protocol-Version: {PROTOCOL_VERSION}\r\nMcp-Session-Id: {id}\r\n"
            );
        }
        s.push_str("Content-Length: ");
        s.into_bytes()
    }

    fn post(&self, session: Option<&str>, body: &str) -> Vec<u8> {
        let mut req = self.prefix(session);
        finish(&mut req, body.as_bytes());
        req
    }

    fn get(&self, path: &str) -> Vec<u8> {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: warden-loadgen\r\n\r\n",
            self.host
        )
        .into_bytes()
    }

    fn delete(&self, session: &str) -> Vec<u8> {
        let mut s = format!("DELETE {} HTTP/1.1\r\nHost: {}\r\n", self.path, self.host);
        if let Some(t) = &self.token {
            let _ = write!(s, "Authorization: Bearer {t}\r\n");
        }
        let _ = write!(
            s,
            "MCP-Protocol-Version: {PROTOCOL_VERSION}\r\nMcp-Session-Id: {session}\r\n\r\n"
        );
        s.into_bytes()
    }
}

/// Appends `<len>\r\n\r\n<body>` to a prefix.
fn finish(req: &mut Vec<u8>, body: &[u8]) {
    let _ = write!(req, "{}\r\n\r\n", body.len());
    req.extend_from_slice(body);
}

/// The body of call number `n`; its message is `bench-<n>`.
fn call_body(out: &mut Vec<u8>, tool: &str, n: u64) {
    let _ = write!(
        out,
        r#"{{"jsonrpc":"2.0","id":{n},"method":"tools/call","params":{{"name":"{tool}","arguments":{{"message":"bench-{n}"}}}}}}"#
    );
}

/// Whether a `tools/call` answer body (JSON, or an event stream of JSON messages) is a
/// successful result carrying message `bench-<n>`.
fn call_succeeded(body: &[u8], expected: &mut Vec<u8>, n: u64) -> bool {
    expected.clear();
    let _ = write!(expected, "\"bench-{n}\"");
    find(body, expected).is_some()
        && find(body, b"\"result\"").is_some()
        && find(body, b"\"isError\":true").is_none()
}

struct Parsed {
    status: u16,
    close: bool,
    session: Option<String>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// Whether `buf` holds a whole response; if so its body (de-chunked) is put in `body`.
fn parse(buf: &[u8], body: &mut Vec<u8>) -> io::Result<Option<Parsed>> {
    let Some(p) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head_end = p + 4;
    let head =
        std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let (mut length, mut chunked, mut close, mut session) = (None, false, false, None);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("mcp-session-id") {
            session = Some(value.to_owned());
        }
    }
    let parsed = Parsed {
        status,
        close,
        session,
    };
    body.clear();
    if chunked {
        let mut pos = head_end;
        loop {
            let Some(eol) = find(&buf[pos..], b"\r\n") else {
                return Ok(None);
            };
            let line = std::str::from_utf8(&buf[pos..pos + eol])
                .map_err(|_| bad("bad chunk size line"))?;
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("bad chunk size"))?;
            pos += eol + 2;
            if size == 0 {
                // Trailers (none expected) end with an empty line.
                loop {
                    let Some(eol) = find(&buf[pos..], b"\r\n") else {
                        return Ok(None);
                    };
                    pos += eol + 2;
                    if eol == 0 {
                        return Ok(Some(parsed));
                    }
                }
            }
            if buf.len() < pos + size + 2 {
                return Ok(None);
            }
            body.extend_from_slice(&buf[pos..pos + size]);
            pos += size + 2;
        }
    }
    match length {
        Some(n) if buf.len() >= head_end + n => {
            body.extend_from_slice(&buf[head_end..head_end + n]);
            Ok(Some(parsed))
        }
        Some(_) => Ok(None),
        None if status == 204 || status == 304 || status < 200 => Ok(Some(parsed)),
        None => Err(bad("response without Content-Length nor chunked encoding")),
    }
}

/// A blocking connection (fixed-rate phase).
struct SyncConn {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
    body: Vec<u8>,
}

impl SyncConn {
    fn connect(addr: SocketAddr) -> io::Result<SyncConn> {
        let stream = std::net::TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(SyncConn {
            stream,
            buf: Vec::with_capacity(8192),
            body: Vec::with_capacity(4096),
        })
    }

    fn exchange(&mut self, req: &[u8]) -> io::Result<Parsed> {
        self.buf.clear();
        self.stream.write_all(req)?;
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(p) = parse(&self.buf, &mut self.body)? {
                return Ok(p);
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A Tokio connection (throughput and session phases).
struct AsyncConn {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
    body: Vec<u8>,
}

impl AsyncConn {
    async fn connect(addr: SocketAddr) -> io::Result<AsyncConn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(AsyncConn {
            stream,
            buf: Vec::with_capacity(8192),
            body: Vec::with_capacity(4096),
        })
    }

    async fn exchange(&mut self, req: &[u8]) -> io::Result<Parsed> {
        self.buf.clear();
        self.stream.write_all(req).await?;
        loop {
            if let Some(p) = parse(&self.buf, &mut self.body)? {
                return Ok(p);
            }
            self.buf.reserve(4096);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request outside the measurement: (status, body).
async fn once(addr: SocketAddr, req: &[u8]) -> anyhow::Result<(u16, String)> {
    let mut c = AsyncConn::connect(addr).await?;
    let p = c.exchange(req).await?;
    Ok((p.status, c.body_text()))
}

/// `initialize` then `notifications/initialized`; returns the session id.
async fn open_session(c: &mut AsyncConn, target: &Target) -> anyhow::Result<String> {
    let init = target.post(
        None,
        &format!(
            r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{PROTOCOL_VERSION}","capabilities":{{}},"clientInfo":{{"name":"warden-loadgen","version":"1.0.0"}}}}}}"#
        ),
    );
    let p = c.exchange(&init).await?;
    if p.status != 200 || find(&c.body, b"\"result\"").is_none() {
        bail!("initialize got {}: {}", p.status, c.body_text());
    }
    let Some(session) = p.session else {
        bail!("initialize answered without an Mcp-Session-Id header");
    };
    let note = target.post(
        Some(&session),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    let p = c.exchange(&note).await?;
    if p.status != 202 {
        bail!(
            "notifications/initialized got {} (202 expected): {}",
            p.status,
            c.body_text()
        );
    }
    Ok(session)
}

async fn open_sessions(target: &Target, n: usize) -> anyhow::Result<Vec<String>> {
    let mut c = AsyncConn::connect(target.addr).await?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(open_session(&mut c, target).await?);
    }
    Ok(out)
}

async fn close_session(target: &Target, session: &str) {
    let _ = once(target.addr, &target.delete(session)).await;
}

/// Whether a new session's `tools/list` names `tool`.
async fn lists_tool(target: &Target, tool: &str) -> anyhow::Result<bool> {
    let mut c = AsyncConn::connect(target.addr).await?;
    let session = open_session(&mut c, target).await?;
    let p = c
        .exchange(&target.post(
            Some(&session),
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#,
        ))
        .await?;
    let listed = p.status == 200 && find(&c.body, format!("\"{tool}\"").as_bytes()).is_some();
    close_session(target, &session).await;
    Ok(listed)
}

/// Counters from Warden's `/metrics`.
async fn metric(target: &Target, name: &str) -> Option<f64> {
    let (status, text) = once(target.addr, &target.get("/metrics")).await.ok()?;
    if status != 200 {
        return None;
    }
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        // `name value` or `name{labels} value`: only the unlabelled series.
        rest.strip_prefix(' ')?.trim().parse::<f64>().ok()
    })
}

// ---------------------------------------------------------------------------------------
// Measurement

#[derive(Default)]
struct Errors {
    /// Non-200 answers (status and the start of the body of the first few).
    status: u64,
    samples: Vec<String>,
    /// 200 answers that were not a result carrying the message.
    wrong: u64,
    io: u64,
}

impl Errors {
    fn total(&self) -> u64 {
        self.status + self.wrong + self.io
    }

    fn add(&mut self, o: Errors) {
        self.status += o.status;
        self.wrong += o.wrong;
        self.io += o.io;
        for s in o.samples {
            if self.samples.len() < 3 {
                self.samples.push(s);
            }
        }
    }

    fn sample(&mut self, what: String) {
        if self.samples.len() < 3 {
            self.samples.push(what.chars().take(300).collect());
        }
    }

    fn line(&self) -> String {
        let mut s = format!(
            "{} (non-200: {}, not the echoed result: {}, connection: {})",
            self.total(),
            self.status,
            self.wrong,
            self.io
        );
        for sample in &self.samples {
            let _ = write!(s, "\n             e.g. {sample}");
        }
        s
    }
}

#[derive(Default)]
struct Tally {
    /// Latencies (ns) of calls counted in the measured window.
    latencies: Vec<u64>,
    /// For the fixed rate: how late each measured call was actually sent (ns).
    send_lag: Vec<u64>,
    /// Successful calls in the measured window.
    ok: u64,
    /// Successful calls over the whole phase, warm-up included.
    ok_total: u64,
    errors: Errors,
    last_done: Option<Instant>,
    /// From the start of the measured window to the last answer in it.
    window: Duration,
}

impl Tally {
    fn add(&mut self, t: Tally) {
        self.latencies.extend(t.latencies);
        self.send_lag.extend(t.send_lag);
        self.ok += t.ok;
        self.ok_total += t.ok_total;
        self.errors.add(t.errors);
        self.last_done = self.last_done.max(t.last_done);
    }

    fn sorted(mut self) -> Tally {
        self.latencies.sort_unstable();
        self.send_lag.sort_unstable();
        self
    }
}

fn percentile(sorted: &[u64], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Duration::from_nanos(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn max(sorted: &[u64]) -> Duration {
    sorted
        .last()
        .map_or(Duration::ZERO, |n| Duration::from_nanos(*n))
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn msf(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Signed difference in milliseconds.
fn diff_ms(a: Duration, b: Duration) -> f64 {
    msf(a) - msf(b)
}

fn latency_line(t: &Tally) -> String {
    let l = &t.latencies;
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n = {})",
        ms(percentile(l, 50.0)),
        ms(percentile(l, 90.0)),
        ms(percentile(l, 99.0)),
        ms(percentile(l, 99.9)),
        ms(max(l)),
        l.len()
    )
}

#[derive(Clone, Copy)]
struct FixedRate {
    rate: f64,
    warmup: Duration,
    measured: Duration,
}

/// Open loop: call `n` is due at `start + n / rate`; whichever connection is free takes the
/// next due call, sleeps until it is due, sends it and waits for the answer. The latency is
/// counted from the due time.
fn fixed_rate(
    target: Arc<Target>,
    sessions: &[String],
    tool: &str,
    spec: &FixedRate,
    first_id: u64,
) -> Tally {
    let warm_calls = (spec.warmup.as_secs_f64() * spec.rate).round() as u64;
    let total = warm_calls + (spec.measured.as_secs_f64() * spec.rate).round() as u64;
    let prefixes: Vec<Vec<u8>> = sessions.iter().map(|s| target.prefix(Some(s))).collect();
    let next = AtomicU64::new(0);
    let start = Instant::now() + Duration::from_millis(50);
    let mut all = Tally::default();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..OPEN_LOOP_CONNECTIONS)
            .map(|_| {
                let (target, prefixes, next) = (&target, &prefixes, &next);
                scope.spawn(move || {
                    let mut t = Tally {
                        latencies: Vec::with_capacity((total / 4) as usize),
                        send_lag: Vec::with_capacity((total / 4) as usize),
                        ..Default::default()
                    };
                    let mut conn: Option<SyncConn> = None;
                    let (mut req, mut body, mut expected) = (Vec::new(), Vec::new(), Vec::new());
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if k >= total {
                            break;
                        }
                        let due = start + Duration::from_secs_f64(k as f64 / spec.rate);
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        let n = first_id + k;
                        body.clear();
                        call_body(&mut body, tool, n);
                        req.clear();
                        req.extend_from_slice(&prefixes[k as usize % prefixes.len()]);
                        finish(&mut req, &body);
                        let measured = k >= warm_calls;
                        let sent = Instant::now();
                        let c = match conn.as_mut() {
                            Some(c) => c,
                            None => match SyncConn::connect(target.addr) {
                                Ok(c) => conn.insert(c),
                                Err(e) => {
                                    if measured {
                                        t.errors.io += 1;
                                        t.errors.sample(format!("connect: {e}"));
                                    }
                                    continue;
                                }
                            },
                        };
                        let result = c.exchange(&req);
                        let done = Instant::now();
                        let ok = match &result {
                            Ok(p) if p.status == 200 => call_succeeded(&c.body, &mut expected, n),
                            _ => false,
                        };
                        if ok {
                            t.ok_total += 1;
                        }
                        if measured {
                            t.latencies.push((done - due).as_nanos() as u64);
                            t.send_lag
                                .push(sent.saturating_duration_since(due).as_nanos() as u64);
                            t.last_done = Some(done);
                            match &result {
                                _ if ok => t.ok += 1,
                                Ok(p) if p.status == 200 => {
                                    t.errors.wrong += 1;
                                    t.errors.sample(String::from_utf8_lossy(&c.body).into());
                                }
                                Ok(p) => {
                                    t.errors.status += 1;
                                    t.errors.sample(format!(
                                        "{} {}",
                                        p.status,
                                        String::from_utf8_lossy(&c.body)
                                    ));
                                }
                                Err(e) => {
                                    t.errors.io += 1;
                                    t.errors.sample(format!("connection: {e}"));
                                }
                            }
                        }
                        match result {
                            Ok(p) if !p.close => {}
                            _ => conn = None,
                        }
                    }
                    t
                })
            })
            .collect();
        for w in workers {
            all.add(w.join().expect("a load thread panicked"));
        }
    });
    all.window = all.last_done.map_or(Duration::ZERO, |d| {
        d.saturating_duration_since(start + Duration::from_secs_f64(warm_calls as f64 / spec.rate))
    });
    all.sorted()
}

/// Closed loop: `concurrency` connections, each sending its next call when the previous one
/// was answered, for warm-up + measured seconds.
async fn max_throughput(
    target: Arc<Target>,
    sessions: Arc<Vec<String>>,
    tool: &'static str,
    concurrency: usize,
    warmup: Duration,
    measured: Duration,
    first_id: u64,
) -> anyhow::Result<(Tally, Duration)> {
    let start = Instant::now();
    let measure_from = start + warmup;
    let until = measure_from + measured;
    let tasks: Vec<_> = (0..concurrency)
        .map(|c| {
            let (target, sessions) = (target.clone(), sessions.clone());
            tokio::spawn(async move {
                let mut t = Tally {
                    latencies: Vec::with_capacity(1 << 14),
                    ..Default::default()
                };
                let prefix = target.prefix(Some(&sessions[c % sessions.len()]));
                let (mut req, mut body, mut expected) = (Vec::new(), Vec::new(), Vec::new());
                let mut conn: Option<AsyncConn> = None;
                let mut n = first_id + (c as u64) * 1_000_000_000;
                while Instant::now() < until {
                    let c = match conn.as_mut() {
                        Some(c) => c,
                        None => match AsyncConn::connect(target.addr).await {
                            Ok(c) => conn.insert(c),
                            Err(e) => {
                                t.errors.io += 1;
                                t.errors.sample(format!("connect: {e}"));
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                        },
                    };
                    n += 1;
                    body.clear();
                    call_body(&mut body, tool, n);
                    req.clear();
                    req.extend_from_slice(&prefix);
                    finish(&mut req, &body);
                    let started = Instant::now();
                    let result = c.exchange(&req).await;
                    let done = Instant::now();
                    let ok = match &result {
                        Ok(p) if p.status == 200 => call_succeeded(&c.body, &mut expected, n),
                        _ => false,
                    };
                    if ok {
                        t.ok_total += 1;
                    }
                    if started >= measure_from {
                        t.latencies.push((done - started).as_nanos() as u64);
                        t.last_done = Some(done);
                        match &result {
                            _ if ok => t.ok += 1,
                            Ok(p) if p.status == 200 => {
                                t.errors.wrong += 1;
                                t.errors.sample(String::from_utf8_lossy(&c.body).into());
                            }
                            Ok(p) => {
                                t.errors.status += 1;
                                t.errors.sample(format!(
                                    "{} {}",
                                    p.status,
                                    String::from_utf8_lossy(&c.body)
                                ));
                            }
                            Err(e) => {
                                t.errors.io += 1;
                                t.errors.sample(format!("connection: {e}"));
                            }
                        }
                    }
                    match result {
                        Ok(p) if !p.close => {}
                        _ => conn = None,
                    }
                }
                t
            })
        })
        .collect();
    let mut all = Tally::default();
    for task in tasks {
        all.add(task.await?);
    }
    let elapsed = all.last_done.map_or(Duration::ZERO, |d| {
        d.saturating_duration_since(measure_from)
    });
    Ok((all.sorted(), elapsed))
}

// ---------------------------------------------------------------------------------------

/// The rate a fixed-rate phase actually sustained.
fn achieved(t: &Tally) -> String {
    format!(
        "{:.0} calls/s achieved",
        t.ok as f64 / t.window.as_secs_f64().max(1e-9)
    )
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "?".into(),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

fn goal(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let accept = if settings.sse {
        "application/json, text/event-stream"
    } else {
        "application/json"
    };
    let echo = echo_upstream::start(&settings.echo_listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.echo_listen))?;
    let direct = Arc::new(Target {
        addr: echo.addr,
        host: echo.addr.to_string(),
        path: "/mcp".into(),
        token: None,
        accept,
    });

    let (mut warden, gateway) = match &settings.external {
        Some((url, token)) => {
            let rest = url.strip_prefix("http://").with_context(|| {
                format!("WARDEN_BENCH_URL={url:?}: only http:// URLs are supported")
            })?;
            let host = rest.split('/').next().unwrap_or_default().to_owned();
            let addr = tokio::net::lookup_host(&host)
                .await
                .with_context(|| format!("cannot resolve {host}"))?
                .next()
                .with_context(|| format!("{host} has no address"))?;
            (
                None,
                Target {
                    addr,
                    host,
                    path: "/mcp".into(),
                    token: Some(token.clone()),
                    accept,
                },
            )
        }
        None => {
            let (process, addr, token) = start_warden(echo.addr)?;
            (
                Some(process),
                Target {
                    addr,
                    host: addr.to_string(),
                    path: "/mcp".into(),
                    token: Some(token),
                    accept,
                },
            )
        }
    };
    let gateway = Arc::new(gateway);

    // Ready, and connected to the upstream (its tool is listed).
    let ready_by = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(w) = warden.as_mut() {
            w.check_alive()?;
        }
        let ready = matches!(
            once(gateway.addr, &gateway.get("/readyz")).await,
            Ok((200, _))
        );
        if ready && lists_tool(&gateway, "echo__echo").await.unwrap_or(false) {
            break;
        }
        if Instant::now() > ready_by {
            let hint = match &warden {
                Some(w) => format!("; the end of its log:\n{}", w.log_tail()),
                None => format!(
                    "; is its upstream `echo` configured as http://{}/mcp and its token an agent \
                     token whose policies allow listing and calling echo__echo?",
                    echo.addr
                ),
            };
            bail!(
                "Warden at {} did not list echo__echo within 60 s{hint}",
                gateway.addr
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    println!("warden MCP gateway load: tools/call through /mcp and directly against the upstream");
    match &warden {
        Some(w) => println!(
            "warden: {} serve (pid {}) on {}, temporary SQLite (synchronous=FULL), log {}",
            env!("CARGO_BIN_EXE_warden"),
            w.pid(),
            gateway.addr,
            w.log_path().display()
        ),
        None => println!("warden: external at {}", gateway.addr),
    }
    println!(
        "upstream: in-process echo server on {} (tool echo, seen through Warden as echo__echo); \
         load generator, echo server and Warden share the same {cpus} CPU(s)",
        echo.addr
    );
    println!(
        "client: Accept: {accept}; {} session(s) per target; warm-up {}s, measured {}s per phase",
        settings.sessions, settings.warmup, settings.seconds
    );
    println!("load average at start: {}", load_average());

    // 1. Idle memory.
    println!();
    let mut rss_idle = None;
    if let Some(w) = &warden {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some((now, _)) = rss(w.pid()) {
            println!(
                "[1] idle:        Warden RSS {:.1} MB (ready, upstream connected, no session open)",
                mb(now)
            );
            rss_idle = Some(now);
        }
    } else {
        println!("[1] idle:        skipped (external Warden)");
    }

    // 2. Fixed rate, direct then through Warden.
    let spec = FixedRate {
        rate: settings.rate,
        warmup: Duration::from_secs_f64(settings.warmup),
        measured: Duration::from_secs_f64(settings.seconds),
    };
    let direct_sessions = open_sessions(&direct, settings.sessions).await?;
    let gateway_sessions = open_sessions(&gateway, settings.sessions).await?;
    let echo_calls = |e: &echo_upstream::Echo| e.counters.calls.load(Ordering::Relaxed);

    let direct_tally = {
        let (target, sessions) = (direct.clone(), direct_sessions.clone());
        tokio::task::spawn_blocking(move || fixed_rate(target, &sessions, "echo", &spec, 0)).await?
    };
    println!(
        "[2] fixed rate {:.0} calls/s, latency from the scheduled send time:",
        spec.rate
    );
    println!("    direct:      {}", latency_line(&direct_tally));
    println!(
        "                 {} ok ({}), errors {}",
        direct_tally.ok,
        achieved(&direct_tally),
        direct_tally.errors.line()
    );

    let events_before = metric(&gateway, "warden_audit_events_appended_total").await;
    let echo_before = echo_calls(&echo);
    let warden_pid = warden.as_ref().map(|w| w.pid().to_string());
    let gw_tally = {
        let (target, sessions) = (gateway.clone(), gateway_sessions.clone());
        tokio::task::spawn_blocking(move || fixed_rate(target, &sessions, "echo__echo", &spec, 0))
            .await?
    };
    println!("    via Warden:  {}", latency_line(&gw_tally));
    println!(
        "                 {} ok ({}), errors {}",
        gw_tally.ok,
        achieved(&gw_tally),
        gw_tally.errors.line()
    );
    let (dl, gl) = (&direct_tally.latencies, &gw_tally.latencies);
    let added = |p: f64| diff_ms(percentile(gl, p), percentile(dl, p));
    println!(
        "    added:       p50 {:+.3} ms  p90 {:+.3} ms  p99 {:+.3} ms  max {:+.3} ms \
         (via-Warden percentile minus direct percentile)",
        added(50.0),
        added(90.0),
        added(99.0),
        diff_ms(max(gl), max(dl))
    );
    println!(
        "    send lag:    direct p50 {} p99 {}, via Warden p50 {} p99 {} (how late calls left \
         the generator; included in the latencies above)",
        ms(percentile(&direct_tally.send_lag, 50.0)),
        ms(percentile(&direct_tally.send_lag, 99.0)),
        ms(percentile(&gw_tally.send_lag, 50.0)),
        ms(percentile(&gw_tally.send_lag, 99.0)),
    );

    // 3. Maximum throughput through Warden.
    let cpu_before = warden_pid.as_deref().and_then(cpu_time);
    let own_before = cpu_time("self");
    let (max_tally, elapsed) = max_throughput(
        gateway.clone(),
        Arc::new(gateway_sessions.clone()),
        "echo__echo",
        settings.concurrency,
        Duration::from_secs_f64(settings.warmup),
        Duration::from_secs_f64(settings.seconds),
        1_000_000_000_000,
    )
    .await?;
    let cpu_after = warden_pid.as_deref().and_then(cpu_time);
    let own_after = cpu_time("self");
    let throughput = max_tally.ok as f64 / elapsed.as_secs_f64().max(1e-9);
    println!(
        "[3] max throughput via Warden, {} connections: {} calls in {:.2}s = {throughput:.0} calls/s",
        settings.concurrency,
        max_tally.ok,
        elapsed.as_secs_f64()
    );
    println!("    latency:     {}", latency_line(&max_tally));
    println!("    errors:      {}", max_tally.errors.line());
    let phase3_calls = max_tally.ok_total.max(1) as f64;
    let mut warden_cpu_per_call = None;
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        let used = b.saturating_sub(a);
        let per_call = used.as_secs_f64() / phase3_calls;
        warden_cpu_per_call = Some(per_call);
        println!(
            "    cpu:         Warden {:.1} s of CPU for {} calls (warm-up included) = {:.0} µs per call",
            used.as_secs_f64(),
            max_tally.ok_total,
            per_call * 1e6
        );
    }
    if let (Some(a), Some(b)) = (own_before, own_after) {
        let used = b.saturating_sub(a);
        println!(
            "                 load generator + echo server {:.1} s of CPU = {:.0} µs per call",
            used.as_secs_f64(),
            used.as_secs_f64() * 1e6 / phase3_calls
        );
    }

    // 4. Durability. Each call's decision is durable before it is answered; its outcome is
    // queued before the answer leaves and written just after, so give the queue a moment.
    let answered = gw_tally.ok_total + max_tally.ok_total;
    let mut events_after = metric(&gateway, "warden_audit_events_appended_total").await;
    for _ in 0..50 {
        match (events_before, events_after) {
            (Some(a), Some(b)) if (b - a) as u64 >= 2 * answered => break,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        events_after = metric(&gateway, "warden_audit_events_appended_total").await;
    }
    let echo_after = echo_calls(&echo);
    let mut audit_events = None;
    match (events_before, events_after) {
        (Some(a), Some(b)) => {
            let events = (b - a) as u64;
            audit_events = Some(events);
            println!(
                "[4] audit:       {events} events durably appended during phases 2-3 for {answered} \
                 answered calls (warm-up included; 2 per call = {} expected at least); the \
                 upstream saw {} calls",
                2 * answered,
                echo_after - echo_before
            );
            if events < 2 * answered {
                bail!(
                    "fewer audit events ({events}) than twice the answered calls ({answered}): \
                     the trail is missing records"
                );
            }
        }
        _ => println!("[4] audit:       /metrics has no warden_audit_events_appended_total"),
    }
    if let Some(w) = &warden
        && let Some((now, hwm)) = rss(w.pid())
    {
        println!(
            "    memory:      Warden RSS {:.1} MB after load (peak so far {:.1} MB)",
            mb(now),
            mb(hwm)
        );
    }

    // 5. Many open sessions.
    let mut rss_sessions = None;
    if let Some(w) = &warden {
        let before = metric(&gateway, "warden_gateway_sessions").await;
        let t = Instant::now();
        let per = settings.open_sessions.div_ceil(SESSION_OPENERS);
        let openers: Vec<_> = (0..SESSION_OPENERS)
            .map(|i| {
                let target = gateway.clone();
                let n = per.min(settings.open_sessions.saturating_sub(i * per));
                tokio::spawn(async move { open_sessions(&target, n).await })
            })
            .collect();
        let mut opened = 0;
        for o in openers {
            opened += o.await??.len();
        }
        let took = t.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let live = metric(&gateway, "warden_gateway_sessions").await;
        if let Some((now, hwm)) = rss(w.pid()) {
            println!(
                "[5] sessions:    opened {opened} more in {:.2}s (live sessions {} → {}): Warden RSS \
                 {:.1} MB (peak {:.1} MB)",
                took.as_secs_f64(),
                before.map_or("?".into(), |v| format!("{v:.0}")),
                live.map_or("?".into(), |v| format!("{v:.0}")),
                mb(now),
                mb(hwm)
            );
            rss_sessions = Some(now);
        }
    } else {
        println!("[5] sessions:    skipped (external Warden)");
    }

    println!("load average at end: {}", load_average());

    // Goals.
    let rate_label = format!("{:.0}", settings.rate);
    let total_errors =
        direct_tally.errors.total() + gw_tally.errors.total() + max_tally.errors.total();
    println!();
    println!(
        "goals (machine shared with other work; {cpus} CPU(s) for Warden, the echo server and the load generator together):"
    );
    println!(
        "    added p50 ≤ 0.3 ms at {rate_label} calls/s: {:+.3} ms — {}",
        added(50.0),
        goal(added(50.0) <= 0.3)
    );
    println!(
        "    added p99 ≤ 1 ms at {rate_label} calls/s:   {:+.3} ms — {}",
        added(99.0),
        goal(added(99.0) <= 1.0)
    );
    println!(
        "    ≥ 5,000 governed calls/s, audit durable: {throughput:.0} calls/s — {}",
        goal(throughput >= 5000.0)
    );
    if let Some(per_call) = warden_cpu_per_call {
        println!(
            "        (Warden alone used {:.0} µs of CPU per call: {:.0} calls/s if it had both cores)",
            per_call * 1e6,
            2.0 / per_call
        );
    }
    if let Some(idle) = rss_idle {
        println!(
            "    RSS idle ≤ 50 MB:                {:.1} MB — {}",
            mb(idle),
            goal(idle <= 50_000_000)
        );
    }
    if let Some(s) = rss_sessions {
        println!(
            "    RSS with {} sessions ≤ 300 MB: {:.1} MB — {}",
            settings.open_sessions,
            mb(s),
            goal(s <= 300_000_000)
        );
    }

    let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
    println!(
        "summary: rate={rate_label} direct_p50_ms={:.3} direct_p99_ms={:.3} gateway_p50_ms={:.3} \
         gateway_p99_ms={:.3} added_p50_ms={:.3} added_p99_ms={:.3} concurrency={} \
         max_calls_per_s={throughput:.0} max_p50_ms={:.3} max_p99_ms={:.3} errors={total_errors} \
         audit_events={} answered={answered} rss_idle_mb={} rss_{}_sessions_mb={}",
        msf(percentile(dl, 50.0)),
        msf(percentile(dl, 99.0)),
        msf(percentile(gl, 50.0)),
        msf(percentile(gl, 99.0)),
        added(50.0),
        added(99.0),
        settings.concurrency,
        msf(percentile(&max_tally.latencies, 50.0)),
        msf(percentile(&max_tally.latencies, 99.0)),
        audit_events.map_or("-".into(), |e| e.to_string()),
        opt(rss_idle.map(mb)),
        settings.open_sessions,
        opt(rss_sessions.map(mb)),
    );

    if let Some(w) = warden {
        w.stop()?;
    }
    drop(echo);
    if total_errors > 0 {
        bail!("{total_errors} calls failed");
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
