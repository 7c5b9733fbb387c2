//! The stdio transport: the upstream is a child process speaking newline-delimited JSON-RPC
//! on stdin/stdout.
//!
//! * The child starts with an empty environment except `PATH`, `HOME`, `LANG` and `TMPDIR`
//!   (taken from the gateway's) and the configured `env`, so that Warden's own secrets never
//!   reach it. Its stderr lines are logged (target `warden::upstream`, field `server`).
//! * A supervisor task owns the child: it spawns it, runs `initialize` and
//!   `notifications/initialized`, and when the child exits fails every call in flight with
//!   [`UpstreamError::Crashed`], reports [`Health::Down`] and starts it again after a backoff
//!   (0.5 s doubling to 30 s, back to 0.5 s once a child stayed up for a minute). Calls made
//!   while it is down fail at once with [`UpstreamError::Unavailable`]; calls made while it
//!   is starting wait for it (within their timeout).
//! * Routing follows [`super::mux`]. Nothing on stdio relates a server-to-client request to
//!   a call, so such a request goes to the **most recently started call still in flight that
//!   has an events channel**; with none, `ping` is answered by the gateway and anything else
//!   gets a JSON-RPC error. Notifications other than progress and cancellation belong to no
//!   call on stdio and go to [`Upstream::subscribe`].
//! * A stdout line that is not a JSON-RPC message is logged and counted
//!   ([`StdioUpstream::invalid_messages`]). If it is JSON with the id of a call in flight, that
//!   call fails with [`UpstreamError::Protocol`]; if it is not even JSON, nothing tells which
//!   call it was meant for, so calls in flight keep waiting until their response or their
//!   timeout.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::mux::{self, Mux, Origin, Outbound, Outcome};
use super::{
    Health, ServerInfo, ServerMessage, Transport, Upstream, UpstreamConfig, UpstreamError,
};
use crate::jsonrpc::{Id, Message, Notification, RpcError};

/// Variables of the gateway's environment that a child inherits.
const INHERITED_ENV: [&str; 4] = ["PATH", "HOME", "LANG", "TMPDIR"];
/// How long a child may take to exit after its stdin is closed before it is killed.
const EXIT_GRACE: Duration = Duration::from_millis(500);
/// The longest line accepted from a server; a longer one means the stream is broken (the
/// child is restarted).
const MAX_LINE: usize = 64 << 20;
const STDOUT_CLOSED: &str = "the server closed its stdout";
/// How long the output of a child that ended is still read.
const READ_GRACE: Duration = Duration::from_millis(200);

/// Why a child's run ended.
enum End {
    Shutdown,
    Exited(std::io::Result<std::process::ExitStatus>),
    StdoutClosed(String),
    Failed(String),
}

pub struct StdioUpstream {
    shared: Arc<Shared>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    name: String,
    command: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    timeout: Duration,
    mux: Arc<Mux>,
    link: Arc<Link>,
    health: watch::Sender<Health>,
    info: Mutex<Option<ServerInfo>>,
    shutdown: watch::Sender<bool>,
    invalid_messages: AtomicU64,
    last_stderr: Mutex<Option<String>>,
}

/// The child's stdin, while there is a child.
struct Link {
    server: String,
    writer: Mutex<Option<mpsc::UnboundedSender<String>>>,
}

impl Link {
    fn send(&self, message: &Message) -> Result<(), UpstreamError> {
        let line = message.to_json();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        match writer.as_ref().map(|w| w.send(line)) {
            Some(Ok(())) => Ok(()),
            _ => Err(UpstreamError::Unavailable {
                server: self.server.clone(),
                reason: "the server process is not running".into(),
            }),
        }
    }

    fn connect(&self, writer: mpsc::UnboundedSender<String>) {
        *self.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(writer);
    }

    fn disconnect(&self) {
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

impl Outbound for Link {
    fn send_detached(&self, message: Message) {
        if let Err(e) = self.send(&message) {
            tracing::debug!(target: "warden::upstream", server = %self.server, error = %e,
                "could not send to the server");
        }
    }
}

impl StdioUpstream {
    /// Starts the connection in the background (see [`super::connect`]).
    pub fn start(config: UpstreamConfig) -> Arc<dyn Upstream> {
        StdioUpstream::spawn(config)
    }

    /// Like [`StdioUpstream::start`], keeping the concrete type.
    ///
    /// # Panics
    /// If the configuration is not a stdio one.
    pub fn spawn(config: UpstreamConfig) -> Arc<StdioUpstream> {
        let Transport::Stdio {
            command,
            args,
            env,
            cwd,
        } = config.transport.clone()
        else {
            panic!(
                "StdioUpstream needs a stdio transport, got {:?}",
                config.transport
            );
        };
        let name = config.name.clone();
        let shared = Arc::new(Shared {
            command,
            args,
            env: env.into_iter().collect(),
            cwd,
            timeout: config.timeout(),
            mux: Mux::new(&name),
            link: Arc::new(Link {
                server: name.clone(),
                writer: Mutex::new(None),
            }),
            health: watch::channel(Health::Starting).0,
            info: Mutex::new(None),
            shutdown: watch::channel(false).0,
            invalid_messages: AtomicU64::new(0),
            last_stderr: Mutex::new(None),
            name,
        });
        let supervisor = tokio::spawn(supervise(shared.clone()));
        Arc::new(StdioUpstream {
            shared,
            supervisor: Mutex::new(Some(supervisor)),
        })
    }

    /// Health changes as they happen.
    pub fn watch_health(&self) -> watch::Receiver<Health> {
        self.shared.health.subscribe()
    }

    /// Lines from the server that were not valid JSON-RPC messages, since the start.
    pub fn invalid_messages(&self) -> u64 {
        self.shared.invalid_messages.load(Ordering::Relaxed)
    }

    /// Calls waiting for their response.
    pub fn in_flight(&self) -> usize {
        self.shared.mux.in_flight()
    }
}

impl Drop for StdioUpstream {
    fn drop(&mut self) {
        // The supervisor kills the child when it sees this.
        self.shared.shutdown.send_replace(true);
    }
}

#[async_trait::async_trait]
impl Upstream for StdioUpstream {
    fn name(&self) -> &str {
        &self.shared.name
    }

    async fn call(
        &self,
        method: &str,
        params: Option<Value>,
        events: Option<mpsc::Sender<ServerMessage>>,
    ) -> Result<Result<Value, RpcError>, UpstreamError> {
        let shared = &self.shared;
        let deadline = Instant::now() + shared.timeout;
        let timeout = || UpstreamError::Timeout {
            server: shared.name.clone(),
            timeout: shared.timeout,
        };
        let mut health = shared.health.subscribe();
        match tokio::time::timeout_at(deadline, mux::wait_ready(&shared.name, &mut health)).await {
            Ok(ready) => ready?,
            Err(_) => return Err(timeout()),
        }
        shared.request(method, params, events, deadline).await
    }

    async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), UpstreamError> {
        if *self.shared.health.borrow() != Health::Ready {
            return Err(UpstreamError::Unavailable {
                server: self.shared.name.clone(),
                reason: "the server is not ready".into(),
            });
        }
        self.shared.link.send(&Message::Notification(Notification {
            method: method.to_owned(),
            params,
        }))
    }

    fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.shared.mux.subscribe()
    }

    fn serve_unrelated(&self, requests: mpsc::Sender<ServerMessage>) {
        self.shared.mux.set_fallback(requests);
    }

    fn server_info(&self) -> Option<ServerInfo> {
        self.shared
            .info
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn health(&self) -> Health {
        self.shared.health.borrow().clone()
    }

    async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        let supervisor = self
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(supervisor) = supervisor {
            let _ = supervisor.await;
        }
    }
}

impl Shared {
    fn outbound(&self) -> Arc<dyn Outbound> {
        self.link.clone()
    }

    /// Sends a request and waits for its outcome until `deadline` (then cancels it upstream).
    async fn request(
        &self,
        method: &str,
        params: Option<Value>,
        events: Option<mpsc::Sender<ServerMessage>>,
        deadline: Instant,
    ) -> Outcome {
        let mut pending = self.mux.begin(self.outbound(), method, params, events);
        if method == "initialize" {
            pending.guard.no_cancel();
        }
        if let Err(e) = self.link.send(&pending.message) {
            pending.guard.no_cancel();
            return Err(e);
        }
        match tokio::time::timeout_at(deadline, &mut pending.response).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(UpstreamError::Crashed {
                server: self.name.clone(),
                reason: "the connection was dropped".into(),
            }),
            Err(_) => {
                pending
                    .guard
                    .set_reason(format!("timed out after {:?}", self.timeout));
                Err(UpstreamError::Timeout {
                    server: self.name.clone(),
                    timeout: self.timeout,
                })
            }
        }
    }

    fn set_health(&self, health: Health) {
        self.health.send_replace(health);
    }

    fn spawn_child(&self) -> std::io::Result<Child> {
        let mut command = Command::new(&self.command);
        command
            .args(&self.args)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for key in INHERITED_ENV {
            if let Some(value) = std::env::var_os(key) {
                command.env(key, value);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        command.spawn()
    }

    /// Reads the child's stdout until it ends, routing each message; returns why it ended.
    async fn read_stdout(self: Arc<Self>, stdout: tokio::process::ChildStdout) -> String {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        let out = self.outbound();
        loop {
            line.clear();
            let limit = MAX_LINE as u64 + 1;
            match (&mut reader).take(limit).read_until(b'\n', &mut line).await {
                Ok(0) => return STDOUT_CLOSED.into(),
                Ok(n) if n > MAX_LINE && line.last() != Some(&b'\n') => {
                    self.invalid_messages.fetch_add(1, Ordering::Relaxed);
                    return format!("the server wrote a line longer than {MAX_LINE} bytes");
                }
                Ok(_) => {}
                Err(e) => return format!("reading the server's stdout failed: {e}"),
            }
            let text = line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            match Message::parse(text) {
                Ok(message) => self
                    .mux
                    .route(&out, message, Origin::Unrelated, self.timeout),
                Err(invalid) => {
                    self.invalid_messages.fetch_add(1, Ordering::Relaxed);
                    let excerpt = excerpt(&String::from_utf8_lossy(text));
                    tracing::warn!(target: "warden::upstream", server = %self.name,
                        error = %invalid.error, line = %excerpt,
                        "the server wrote a line that is not a JSON-RPC message");
                    if let Some(Id::Number(wire_id)) = invalid.id {
                        self.mux.finish(
                            wire_id,
                            Err(UpstreamError::Protocol {
                                server: self.name.clone(),
                                reason: format!("{}: {excerpt}", invalid.error.message),
                            }),
                        );
                    }
                }
            }
        }
    }

    async fn read_stderr(self: Arc<Self>, stderr: tokio::process::ChildStderr) {
        let mut lines = BufReader::new(stderr);
        let mut line = Vec::new();
        loop {
            line.clear();
            match lines.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(line.trim_ascii_end()).into_owned();
            if text.is_empty() {
                continue;
            }
            tracing::info!(target: "warden::upstream", server = %self.name, stderr = %text);
            *self.last_stderr.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
        }
    }

    /// `initialize`, then `notifications/initialized`.
    async fn handshake(&self) -> Result<ServerInfo, String> {
        let deadline = Instant::now() + self.timeout;
        let result = self
            .request("initialize", Some(mux::initialize_params()), None, deadline)
            .await
            .map_err(|e| format!("initialize failed: {}", mux::reason(&e)))?
            .map_err(|e| format!("initialize was refused: {e}"))?;
        let info = mux::parse_initialize(&self.name, result).map_err(|e| mux::reason(&e))?;
        self.link
            .send(&Message::Notification(Notification {
                method: "notifications/initialized".into(),
                params: None,
            }))
            .map_err(|e| mux::reason(&e))?;
        Ok(info)
    }

    /// Runs one child until it exits (or shutdown); returns why it ended and whether it got
    /// ready.
    async fn run_child(
        self: &Arc<Self>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> (String, Option<Instant>) {
        let mut child = match self.spawn_child() {
            Ok(child) => child,
            Err(e) => return (format!("could not start {:?}: {e}", self.command), None),
        };
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return ("the child's stdio could not be captured".into(), None);
        };
        *self.last_stderr.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let writer = tokio::spawn(async move {
            while let Some(mut line) = rx.recv().await {
                line.push('\n');
                if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
            // Dropping stdin closes it: a well-behaved server exits.
        });
        let stderr_task = tokio::spawn(self.clone().read_stderr(stderr));
        let mut reader = tokio::spawn(self.clone().read_stdout(stdout));
        self.link.connect(tx);

        let mut ready_at = None;
        let mut reader_done = false;
        let first = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => Err(End::Shutdown),
            status = child.wait() => Err(End::Exited(status)),
            closed = &mut reader => { reader_done = true; Err(End::StdoutClosed(reader_end(closed))) }
            handshake = self.handshake() => handshake.map_err(End::Failed),
        };
        let end = match first {
            Err(end) => end,
            Ok(info) => {
                tracing::info!(target: "warden::upstream", server = %self.name,
                    protocol = %info.protocol_version, "upstream ready");
                *self.info.lock().unwrap_or_else(|e| e.into_inner()) = Some(info);
                ready_at = Some(Instant::now());
                self.set_health(Health::Ready);
                tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|s| *s) => End::Shutdown,
                    status = child.wait() => End::Exited(status),
                    closed = &mut reader => { reader_done = true; End::StdoutClosed(reader_end(closed)) }
                }
            }
        };
        // No more writes (a call made from now on fails at once); stdin closes, and a
        // well-behaved server exits.
        self.link.disconnect();
        let was_shutdown = matches!(end, End::Shutdown);
        let reason = match end {
            End::Exited(status) => exit_reason(status),
            other => {
                let exited = tokio::time::timeout(EXIT_GRACE, child.wait()).await;
                if exited.is_err() {
                    let _ = child.kill().await;
                }
                match (other, exited) {
                    (End::StdoutClosed(reason), Ok(status)) if reason == STDOUT_CLOSED => {
                        exit_reason(status)
                    }
                    (End::StdoutClosed(reason) | End::Failed(reason), _) => reason,
                    _ => "the connection was shut down".to_owned(),
                }
            }
        };
        writer.abort();
        // What the child wrote before it went is still routed.
        if !reader_done && tokio::time::timeout(READ_GRACE, &mut reader).await.is_err() {
            reader.abort();
        }
        let _ = tokio::time::timeout(READ_GRACE, stderr_task).await;
        let last_stderr = self
            .last_stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let reason = match last_stderr {
            Some(line) if !was_shutdown => {
                format!("{reason} (last stderr line: {})", excerpt(&line))
            }
            _ => reason,
        };
        (reason, ready_at)
    }
}

async fn supervise(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut restarts = 0u64;
    let mut backoff = mux::BACKOFF_START;
    loop {
        if *shutdown.borrow() {
            break;
        }
        shared.set_health(Health::Starting);
        let (reason, ready_at) = shared.run_child(&mut shutdown).await;
        if *shutdown.borrow() {
            break;
        }
        tracing::warn!(target: "warden::upstream", server = %shared.name, %reason, restarts,
            retry_in = ?backoff, "upstream down");
        if ready_at.is_some_and(|t| t.elapsed() >= mux::BACKOFF_RESET_AFTER) {
            backoff = mux::BACKOFF_START;
        }
        shared.set_health(Health::Down {
            reason: reason.clone(),
            restarts,
        });
        shared.mux.fail_all(|| UpstreamError::Crashed {
            server: shared.name.clone(),
            reason: reason.clone(),
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        backoff = (backoff * 2).min(mux::BACKOFF_MAX);
        restarts += 1;
    }
    shared.link.disconnect();
    shared.mux.fail_all(|| UpstreamError::Unavailable {
        server: shared.name.clone(),
        reason: "the connection was shut down".into(),
    });
    shared.set_health(Health::Down {
        reason: "shut down".into(),
        restarts,
    });
}

fn reader_end(joined: Result<String, tokio::task::JoinError>) -> String {
    joined.unwrap_or_else(|e| format!("reading the server's stdout failed: {e}"))
}

fn exit_reason(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => match status.code() {
            Some(code) => format!("the server process exited with status {code}"),
            None => format!("the server process ended: {status}"),
        },
        Err(e) => format!("waiting for the server process failed: {e}"),
    }
}

fn excerpt(text: &str) -> String {
    const MAX: usize = 300;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
