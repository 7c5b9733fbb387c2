//! `warden gateway stdio --remote`: the MCP server runs beside the agent, while a real
//! `warden serve` elsewhere identifies the token, decides, records and holds approvals. The
//! agent's client is the official Python SDK (or plain JSON-RPC lines where the exact error
//! matters); the servers are the reference server-everything and a small recording server.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{BIN, CliToken, Server, client, create_token, path_str, warden};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const POLICIES: &str = r#"
@id("list") permit (principal is Agent, action == Action::"list_tools", resource is Tool);

@id("read-only") @reason("Read-only tools are allowed.")
permit (principal is Agent, action == Action::"call_tool", resource is Tool)
when { resource has read_only && resource.read_only };

@id("echo") @reason("What is echoed is not kept.") @redact("args.message")
permit (principal is Agent, action == Action::"call_tool", resource == Tool::"everything__echo");

@id("no-env") @reason("Environment variables may hold secrets.")
forbid (principal, action == Action::"call_tool", resource == Tool::"everything__get-env");

@id("sum-ask") @effect("ask") @reason("Sums need a second pair of eyes.")
permit (principal is Agent, action == Action::"call_tool", resource == Tool::"everything__get-sum");

@id("touch") permit (principal is Agent, action == Action::"call_tool", resource == Tool::"recording__touch");
"#;

fn peers() -> PathBuf {
    let dir = std::env::var_os("WARDEN_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.peers"));
    assert!(
        dir.join("node_modules/.bin/mcp-server-everything").exists()
            && dir.join("venv/bin/python").exists(),
        "MCP test peers are missing at {}; run scripts/install-peers.sh",
        dir.display()
    );
    dir
}

fn interop(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/interop")
        .join(name)
}

struct Setup {
    dir: tempfile::TempDir,
    data: PathBuf,
    policies: PathBuf,
    agent: CliToken,
    admin: CliToken,
    auditor: CliToken,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server-data");
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(policies.join("acme")).unwrap();
    std::fs::write(policies.join("acme/tools.cedar"), POLICIES).unwrap();
    let agent = create_token(
        &data,
        &[
            "--tenant",
            "acme",
            "--role",
            "agent",
            "--agent",
            "remote-agent",
            "--on-behalf-of",
            "alice",
            "--namespace",
            "acme/platform",
        ],
    )
    .await;
    let admin = create_token(&data, &["--tenant", "acme", "--role", "admin"]).await;
    let auditor = create_token(&data, &["--tenant", "acme", "--role", "auditor"]).await;
    Setup {
        dir,
        data,
        policies,
        agent,
        admin,
        auditor,
    }
}

/// The command line an agent would configure: the wrapper, pointed at the server.
fn wrapper(remote: &str, token: &str, server: &str, command: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        BIN,
        "gateway",
        "stdio",
        "--remote",
        remote,
        "--token",
        token,
        "--remote-timeout",
        "5s",
        "--server",
        server,
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(command.iter().map(|s| s.to_string()));
    v
}

fn everything() -> String {
    path_str(&peers().join("node_modules/.bin/mcp-server-everything")).to_owned()
}

/// Approves the pending request for 20 + 22 through the server's approvals API, as a
/// person at the server would.
async fn approve_over_the_api(base: &str, admin: &str) {
    let http = client();
    for _ in 0..600 {
        let r = http
            .get(format!("{base}/api/v1/approvals?status=pending"))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap();
        let page: Value = r.json().await.unwrap();
        if let Some(a) = page["approvals"].as_array().and_then(|a| a.first()) {
            assert_eq!(a["arguments"], json!({"a": 20, "b": 22}), "{a}");
            assert_eq!(a["agent"], "remote-agent");
            let id = a["id"].as_str().unwrap();
            let r = http
                .post(format!("{base}/api/v1/approvals/{id}/approve"))
                .bearer_auth(admin)
                .json(&json!({"comment": "fine"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no approval request appeared at the server");
}

async fn events_of(base: &str, auditor: &str, kind: &str) -> Vec<Value> {
    let r = client()
        .get(format!("{base}/api/v1/audit/events?type={kind}&limit=100"))
        .bearer_auth(auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page: Value = r.json().await.unwrap();
    page["events"].as_array().cloned().unwrap_or_default()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn the_python_sdk_works_through_a_wrapper_governed_by_a_remote_server() {
    let s = setup().await;
    let mut server = Server::start_with(&s.data, &s.policies).await;
    // Redacted by the echo policy's obligation, and by the secret detectors.
    let canary = "canary-remote-6d02-never-stored";
    let secret = "ghp_REMOTEcanaryREMOTEcanaryREMOTE123456";
    let everything = everything();
    let mut child = tokio::process::Command::new(peers().join("venv/bin/python"))
        .arg(interop("python_stdio_roots.py"))
        .arg(canary)
        .arg(secret)
        .args(wrapper(
            &server.base,
            &s.agent.secret,
            "everything",
            &[&everything],
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let read = async {
        let mut steps = std::collections::HashMap::new();
        let mut lines = BufReader::new(stdout).lines();
        while let Some(line) = lines.next_line().await.unwrap() {
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("{line}"));
            steps.insert(v["step"].as_str().unwrap().to_owned(), v);
        }
        steps
    };
    let (steps, ()) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(read, approve_over_the_api(&server.base, &s.admin.secret))
    })
    .await
    .expect("the python client finishes");
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}\n{}", server.log());

    assert_eq!(steps["connected"]["server"], "warden", "{steps:?}");
    // The server asked for the roots right after it started, before the agent asked for
    // anything, and the agent's client answered through the wrapper.
    assert_eq!(steps["roots_at_start"]["asked"], 1, "{steps:?}\n{stderr}");
    let tools: Vec<String> = serde_json::from_value(steps["list"]["tools"].clone()).unwrap();
    assert!(tools.contains(&"echo".to_owned()), "{tools:?}");
    assert!(tools.contains(&"get-roots-list".to_owned()), "{tools:?}");
    assert!(!tools.contains(&"get-env".to_owned()), "{tools:?}");
    assert_eq!(steps["echo"]["is_error"], false, "{steps:?}");
    assert!(steps["echo"]["text"].as_str().unwrap().contains(canary));
    assert_eq!(steps["denied"]["is_error"], true);
    assert_eq!(
        steps["denied"]["text"],
        "denied by policy no-env in acme: Environment variables may hold secrets."
    );
    assert_eq!(steps["approved"]["is_error"], false, "{steps:?}");
    assert!(steps["approved"]["text"].as_str().unwrap().contains("42"));
    let roots = &steps["roots"];
    assert!(
        roots["text"]
            .as_str()
            .unwrap()
            .contains("file:///srv/warden-stdio-roots"),
        "{roots}"
    );
    // The server kept what it got at start: it did not have to ask again.
    assert_eq!(roots["asked"], 1, "{roots}");
    assert!(
        steps["unknown"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown tool")),
        "{:?}",
        steps["unknown"]
    );

    // Everything is in the server's audit trail, as the token's agent session.
    let auditor = &s.auditor.secret;
    for kind in [
        "mcp.session.started",
        "mcp.tools.listed",
        "mcp.tool.call.decided",
        "mcp.tool.call.completed",
        "mcp.request.refused",
        "approval.requested",
        "approval.granted",
        "approval.consumed",
        "mcp.session.ended",
    ] {
        assert!(
            !events_of(&server.base, auditor, kind).await.is_empty(),
            "no {kind} at the server"
        );
    }
    let decided = events_of(&server.base, auditor, "mcp.tool.call.decided").await;
    let outcome = |tool: &str| {
        let e = decided
            .iter()
            .find(|e| e["resource"]["id"] == tool)
            .unwrap_or_else(|| panic!("no decision on {tool}: {decided:?}"));
        assert_eq!(e["actor"]["agent"], "remote-agent");
        assert_eq!(e["actor"]["on_behalf_of"], "alice");
        assert_eq!(e["actor"]["session"], s.agent.id.as_str());
        assert_eq!(e["actor"]["token_id"], s.agent.id.as_str());
        assert_eq!(e["namespace"], "acme/platform");
        e["decision"]["outcome"].as_str().unwrap().to_owned()
    };
    assert_eq!(outcome("everything__echo"), "allow");
    assert_eq!(outcome("everything__get-env"), "deny");
    assert_eq!(outcome("everything__get-sum"), "approval_required");
    let completed = events_of(&server.base, auditor, "mcp.tool.call.completed").await;
    assert!(
        completed
            .iter()
            .any(|e| e["resource"]["id"] == "everything__get-sum"
                && e["payload"]["outcome"] == "success"),
        "{completed:?}"
    );

    // Stopped, the server's log verifies, and no canary is in its files or its export.
    assert!(server.terminate().await.success(), "{}", server.log());
    let verify = warden(&["audit", "verify", "--data-dir", path_str(&s.data)]).await;
    assert!(verify.success(), "{}", verify.text());
    let export = common::export(&s.data).await;
    let text = serde_json::to_string(&export).unwrap();
    assert!(
        !text.contains(canary) && !text.contains(secret),
        "in the export"
    );
    for file in files_under(&s.data) {
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        for c in [canary, secret] {
            assert!(
                !bytes.windows(c.len()).any(|w| w == c.as_bytes()),
                "{c} is in {}",
                file.display()
            );
        }
    }
    drop(s.dir);
}

/// A wrapper spoken to in plain JSON-RPC lines.
struct Wrapper {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Wrapper {
    fn spawn(args: &[String]) -> Wrapper {
        let mut child = tokio::process::Command::new(&args[0])
            .args(&args[1..])
            .env_remove("WARDEN_DATA_DIR")
            .env_remove("WARDEN_POLICIES")
            .env_remove("WARDEN_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Wrapper {
            child,
            stdin,
            lines,
        }
    }

    async fn send(&mut self, message: Value) {
        let mut line = message.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Sends a request and returns its response (skipping anything else on the way).
    async fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let line = self
                    .lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("the wrapper answers before it exits");
                let v: Value = serde_json::from_str(&line).unwrap();
                if v["id"] == json!(id) && (v.get("result").is_some() || v.get("error").is_some()) {
                    return v;
                }
            }
        })
        .await
        .expect("an answer within 30 s")
    }

    async fn start_session(&mut self) {
        let init = self
            .request(
                1,
                "initialize",
                json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
            )
            .await;
        assert!(init.get("result").is_some(), "{init}");
        self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
    }

    /// Closes stdin and waits for the exit; returns the status and stderr.
    async fn finish(self) -> (std::process::ExitStatus, String) {
        drop(self.stdin);
        let out = tokio::time::timeout(Duration::from_secs(30), self.child.wait_with_output())
            .await
            .expect("the wrapper exits once stdin is closed")
            .unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn recording(log: &Path) -> Vec<String> {
    vec![
        path_str(&peers().join("venv/bin/python")).to_owned(),
        path_str(&interop("recording_server.py")).to_owned(),
        path_str(log).to_owned(),
    ]
}

fn recorded(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

#[tokio::test]
async fn a_call_is_not_forwarded_once_the_server_is_gone() {
    let s = setup().await;
    let mut server = Server::start_with(&s.data, &s.policies).await;
    let log = s.dir.path().join("calls.log");
    let command = recording(&log);
    let refs: Vec<&str> = command.iter().map(String::as_str).collect();
    let mut w = Wrapper::spawn(&wrapper(&server.base, &s.agent.secret, "recording", &refs));
    w.start_session().await;
    let listed = w.request(2, "tools/list", json!({})).await;
    assert_eq!(listed["result"]["tools"][0]["name"], "touch", "{listed}");
    let first = w
        .request(
            3,
            "tools/call",
            json!({"name": "touch", "arguments": {"text": "first"}}),
        )
        .await;
    assert_eq!(first["result"]["content"][0]["text"], "first", "{first}");
    assert_eq!(recorded(&log), "first\n");

    // The server goes away without a word: nothing is decided or recorded any more, so
    // nothing is forwarded, and the agent is told why.
    server.kill9();
    let second = w
        .request(
            4,
            "tools/call",
            json!({"name": "touch", "arguments": {"text": "second"}}),
        )
        .await;
    assert_eq!(second["error"]["code"], -32012, "{second}");
    let message = second["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("was not carried out") && message.contains("cannot be reached"),
        "{message}"
    );
    let listed = w.request(5, "tools/list", json!({})).await;
    assert_eq!(listed["error"]["code"], -32012, "{listed}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recorded(&log), "first\n", "a call reached the server");
    let (status, _) = w.finish().await;
    assert!(status.success());
}

#[tokio::test]
async fn the_wrapper_does_not_start_without_a_working_server() {
    let s = setup().await;
    let log = s.dir.path().join("calls.log");
    let command = recording(&log);
    let refs: Vec<&str> = command.iter().map(String::as_str).collect();

    // Nobody listens.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let w = Wrapper::spawn(&wrapper(&closed, &s.agent.secret, "recording", &refs));
    let (status, stderr) = w.finish().await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot start") && stderr.contains("cannot be reached"),
        "{stderr}"
    );

    // Something listens, but answers 503.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broken = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"detail": "the store is down"})),
        )
    });
    let served = tokio::spawn(async move { axum::serve(listener, app).await });
    let w = Wrapper::spawn(&wrapper(&broken, &s.agent.secret, "recording", &refs));
    let (status, stderr) = w.finish().await;
    served.abort();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("answered 503") && stderr.contains("the store is down"),
        "{stderr}"
    );
    assert_eq!(recorded(&log), "", "the server was used without governance");
}

#[tokio::test]
async fn a_revoked_token_is_refused_at_start_and_during_a_session() {
    let s = setup().await;
    let server = Server::start_with(&s.data, &s.policies).await;
    let log = s.dir.path().join("calls.log");
    let command = recording(&log);
    let refs: Vec<&str> = command.iter().map(String::as_str).collect();

    let mut w = Wrapper::spawn(&wrapper(&server.base, &s.agent.secret, "recording", &refs));
    w.start_session().await;
    let listed = w.request(2, "tools/list", json!({})).await;
    assert!(listed.get("result").is_some(), "{listed}");

    let r = client()
        .delete(format!("{}/api/v1/tokens/{}", server.base, s.agent.id))
        .bearer_auth(&s.admin.secret)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let call = w
        .request(
            3,
            "tools/call",
            json!({"name": "touch", "arguments": {"text": "after"}}),
        )
        .await;
    assert_eq!(call["error"]["code"], -32012, "{call}");
    assert!(
        call["error"]["message"]
            .as_str()
            .unwrap()
            .contains("refused the token"),
        "{call}"
    );
    assert_eq!(recorded(&log), "");
    let _ = w.finish().await;

    // Started again with the revoked token: refused before the server is ever spawned.
    let w = Wrapper::spawn(&wrapper(&server.base, &s.agent.secret, "recording", &refs));
    let (status, stderr) = w.finish().await;
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("the token was refused"), "{stderr}");
}
