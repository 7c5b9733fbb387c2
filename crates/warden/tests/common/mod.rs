//! Helpers for tests that run the real `warden` binary: a server child process on a free
//! port over a data directory in a temporary folder, CLI invocations, and a load generator.

#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_warden");

/// How long a server may take to start or to stop before the test gives up.
pub const PROCESS_DEADLINE: Duration = Duration::from_secs(20);

/// Settings the binary would otherwise pick up from the environment of whoever runs the tests.
const WARDEN_ENV: &[&str] = &[
    "WARDEN_CONFIG",
    "WARDEN_LISTEN",
    "WARDEN_DATA_DIR",
    "WARDEN_DATABASE",
    "WARDEN_MIGRATE_ON_START",
    "WARDEN_POLICIES",
    "WARDEN_CHECKPOINT_KEY",
    "WARDEN_MAX_BODY_BYTES",
    "WARDEN_AUDIT_QUEUE_CAPACITY",
    "WARDEN_CHECKPOINT_EVERY_EVENTS",
    "WARDEN_CHECKPOINT_INTERVAL",
    "WARDEN_LOG",
];

pub fn example_policies() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/policies"
    ))
}

fn command(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    for v in WARDEN_ENV {
        c.env_remove(v);
    }
    c
}

/// What a finished `warden` command printed.
#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Both streams, for assertion messages.
    pub fn text(&self) -> String {
        format!(
            "[{}]\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `warden ARGS` to completion (blocking).
pub fn warden_sync(args: &[&str]) -> Out {
    let o = command(args)
        .stdin(Stdio::null())
        .output()
        .expect("the warden binary runs");
    Out {
        status: o.status,
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Runs `warden ARGS` to completion without blocking the async runtime.
pub async fn warden(args: &[&str]) -> Out {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        warden_sync(&refs)
    })
    .await
    .expect("command task")
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// A token made with `warden token create`: the secret (stdout) and its id (stderr).
#[derive(Clone, Debug)]
pub struct CliToken {
    pub secret: String,
    pub id: String,
}

pub async fn create_token(data_dir: &Path, extra: &[&str]) -> CliToken {
    let mut args = vec!["token", "create", "--data-dir", path_str(data_dir)];
    args.extend_from_slice(extra);
    let out = warden(&args).await;
    assert!(out.success(), "token create failed: {}", out.text());
    let id = out
        .stderr
        .split_whitespace()
        .skip_while(|w| *w != "token")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    assert!(
        id.starts_with("tok_"),
        "no token id on stderr: {}",
        out.text()
    );
    CliToken {
        secret: out.stdout.trim().to_owned(),
        id,
    }
}

/// The agent of the README examples: claude-code acting for alice in acme/platform/api.
pub async fn agent_token(data_dir: &Path) -> CliToken {
    create_token(
        data_dir,
        &[
            "--tenant",
            "acme",
            "--role",
            "agent",
            "--agent",
            "claude-code",
            "--on-behalf-of",
            "alice",
            "--namespace",
            "acme/platform/api",
        ],
    )
    .await
}

pub async fn auditor_token(data_dir: &Path) -> CliToken {
    create_token(data_dir, &["--tenant", "acme", "--role", "auditor"]).await
}

/// `warden audit verify --data-dir D`.
pub async fn verify(data_dir: &Path) -> Out {
    warden(&["audit", "verify", "--data-dir", path_str(data_dir)]).await
}

/// Every event of tenant acme, oldest first, via `warden audit export`.
pub async fn export(data_dir: &Path) -> Vec<Value> {
    let out = warden(&[
        "audit",
        "export",
        "--data-dir",
        path_str(data_dir),
        "--tenant",
        "acme",
    ])
    .await;
    assert!(out.success(), "export failed: {}", out.text());
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("export lines are JSON"))
        .collect()
}

pub fn ids_of(events: &[Value]) -> HashSet<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().expect("event id").to_owned())
        .collect()
}

/// The three README requests, by index: allow, deny, approval_required.
pub fn decision_request(i: usize) -> (Value, &'static str) {
    match i % 3 {
        0 => (
            json!({"action":"call_tool","resource":{"type":"Tool","id":"github__get_file_contents",
                "attributes":{"name":"get_file_contents","server":"github","risk":"low","categories":["read"]}}}),
            "allow",
        ),
        1 => (
            json!({"action":"call_tool","resource":{"type":"Tool","id":"github__delete_repository",
                "attributes":{"name":"delete_repository","server":"github","risk":"critical","categories":["delete"]}}}),
            "deny",
        ),
        _ => (
            json!({"action":"call_tool","resource":{"type":"Tool","id":"deploy__trigger_deploy",
                "attributes":{"name":"trigger_deploy","server":"deploy","risk":"high","categories":["execute"]}},
                "context":{"args":{"environment":"production"}}}),
            "approval_required",
        ),
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client")
}

/// `POST /api/v1/authorize`; the status and the parsed body.
pub async fn authorize(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    body: &Value,
) -> reqwest::Result<(StatusCode, Value)> {
    let r = client
        .post(format!("{base}/api/v1/authorize"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await?;
    let status = r.status();
    let body = r.json::<Value>().await?;
    Ok((status, body))
}

/// A `warden serve` child process. Dropping it kills the process.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub data_dir: PathBuf,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `warden serve` with the example policies on a port the kernel picks, and waits
    /// until `/healthz` answers.
    pub async fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, &example_policies()).await
    }

    /// [`Server::start`] with the policies of another directory.
    pub async fn start_with(data_dir: &Path, policies: &Path) -> Server {
        Self::start_args(data_dir, policies, &[]).await
    }

    /// [`Server::start_with`] with more `serve` arguments (`--database …`).
    pub async fn start_args(data_dir: &Path, policies: &Path, extra: &[&str]) -> Server {
        let mut args = vec![
            "serve",
            "--data-dir",
            path_str(data_dir),
            "--policies",
            path_str(policies),
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let mut child = command(&args)
            .env("WARDEN_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("warden serve starts");

        // Keep draining stderr for the whole life of the process (a full pipe would block
        // it), remember it for failure messages, and pick out the address it listens on.
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = mpsc::channel::<String>();
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.trim().strip_prefix("warden listening on ") {
                    let _ = addr_tx.send(addr.to_owned());
                }
                let mut l = sink.lock().expect("log lock");
                l.push_str(&line);
                l.push('\n');
            }
        });

        let mut server = Server {
            child: Some(child),
            base: String::new(),
            data_dir: data_dir.to_path_buf(),
            log,
        };
        let deadline = Instant::now() + PROCESS_DEADLINE;
        loop {
            if let Ok(addr) = addr_rx.try_recv() {
                server.base = addr;
                break;
            }
            if let Some(status) = server.child_mut().try_wait().expect("try_wait") {
                panic!(
                    "warden serve exited with {status} before listening:\n{}",
                    server.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "warden serve did not listen within {PROCESS_DEADLINE:?}:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let client = client();
        loop {
            let ok = client
                .get(format!("{}/healthz", server.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "/healthz did not answer within {PROCESS_DEADLINE:?}:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("server process")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server process").id()
    }

    /// Everything the server wrote on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill9(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server process");
        child.kill().expect("SIGKILL");
        child.wait().expect("wait")
    }

    /// Sends SIGTERM without waiting.
    pub fn send_sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits (bounded) for the process to exit on its own.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PROCESS_DEADLINE;
        loop {
            if let Some(status) = self.child_mut().try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                let log = self.log();
                self.kill9();
                panic!("warden serve did not exit within {PROCESS_DEADLINE:?}:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits for the graceful shutdown to finish.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.send_sigterm();
        self.wait_exit().await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the load generator saw.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Event ids of every 200 answer, in the order they arrived.
    pub acknowledged: Vec<String>,
    /// 503 answers (shutting down, queue full): allowed, never acknowledged.
    pub unavailable: usize,
    /// Any other status, with the body.
    pub unexpected: Vec<(StatusCode, Value)>,
    /// Transport errors before the server was told to stop.
    pub errors_before_stop: Vec<String>,
    /// Transport errors after it (expected: connections refused or cut).
    pub errors_after_stop: usize,
}

/// Concurrent clients sending decisions in a loop until the server goes away.
pub struct Load {
    /// Set right before the server is signalled or killed.
    pub stopping: Arc<AtomicBool>,
    /// Set to make the clients stop sending while the server keeps running.
    halt: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<LoadResult>>,
}

impl Load {
    pub fn start(base: &str, token: &str, workers: usize) -> Load {
        let stopping = Arc::new(AtomicBool::new(false));
        let halt = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let client = client();
        let tasks = (0..workers)
            .map(|w| {
                let (client, base, token) = (client.clone(), base.to_owned(), token.to_owned());
                let (stopping, halt, acked) = (stopping.clone(), halt.clone(), acked.clone());
                tokio::spawn(async move {
                    let mut r = LoadResult::default();
                    let mut i = w;
                    while !halt.load(Ordering::SeqCst) {
                        let (body, _) = decision_request(i);
                        i += 1;
                        match authorize(&client, &base, &token, &body).await {
                            Ok((StatusCode::OK, v)) => {
                                let id = v["event_id"].as_str().expect("event_id").to_owned();
                                acked.lock().expect("acked lock").push(id.clone());
                                r.acknowledged.push(id);
                            }
                            Ok((StatusCode::SERVICE_UNAVAILABLE, _)) => r.unavailable += 1,
                            Ok(other) => r.unexpected.push(other),
                            Err(e) => {
                                if stopping.load(Ordering::SeqCst) {
                                    r.errors_after_stop += 1;
                                    break;
                                }
                                r.errors_before_stop.push(e.to_string());
                                if r.errors_before_stop.len() > 20 {
                                    break;
                                }
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                        if r.unexpected.len() > 20 {
                            break;
                        }
                    }
                    r
                })
            })
            .collect();
        Load {
            stopping,
            halt,
            acked,
            tasks,
        }
    }

    pub fn acknowledged_so_far(&self) -> usize {
        self.acked.lock().expect("acked lock").len()
    }

    /// Waits until `count` answers were acknowledged or `after` has passed, whichever comes
    /// first (and at least until one answer arrived, bounded by the process deadline).
    pub async fn wait_for(&self, count: usize, after: Duration) {
        let started = Instant::now();
        loop {
            let n = self.acknowledged_so_far();
            if n >= count || (started.elapsed() >= after && n > 0) {
                return;
            }
            assert!(
                started.elapsed() < PROCESS_DEADLINE,
                "no decision was acknowledged within {PROCESS_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Marks the point after which transport errors are expected.
    pub fn mark_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Stops the clients while the server keeps running; waits for their last answers.
    pub async fn halt(self) -> LoadResult {
        self.halt.store(true, Ordering::SeqCst);
        self.finish().await
    }

    /// Waits (bounded) for every client to notice the server is gone.
    pub async fn finish(self) -> LoadResult {
        let mut total = LoadResult::default();
        for t in self.tasks {
            let r = tokio::time::timeout(PROCESS_DEADLINE, t)
                .await
                .expect("load clients stop once the server is gone")
                .expect("load client task");
            total.acknowledged.extend(r.acknowledged);
            total.unavailable += r.unavailable;
            total.unexpected.extend(r.unexpected);
            total.errors_before_stop.extend(r.errors_before_stop);
            total.errors_after_stop += r.errors_after_stop;
        }
        total
    }
}

/// A policy directory with the example schema and the given `(relative path, text)` files.
pub fn policy_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        example_policies().join("schema.cedarschema"),
        dir.path().join("schema.cedarschema"),
    )
    .unwrap();
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

/// The one JSON document a command printed on stdout.
pub fn json_of(out: &Out) -> Value {
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", out.text()))
}
