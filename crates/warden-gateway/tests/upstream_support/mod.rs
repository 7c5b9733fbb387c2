//! What the upstream tests share: finding the pinned MCP peers, small servers of our own
//! that misbehave on purpose, and helpers that answer the server's requests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use warden_gateway::jsonrpc::Notification;
use warden_gateway::upstream::{Health, ServerMessage, Transport, UpstreamConfig};

/// Where scripts/install-peers.sh put the peers.
pub fn peers_dir() -> PathBuf {
    match std::env::var_os("WARDEN_PEERS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.peers"),
    }
}

fn require(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "the MCP peers are missing ({} does not exist): run scripts/install-peers.sh \
         (or point WARDEN_PEERS_DIR at an installed peers folder)",
        path.display()
    );
    path
}

/// An executable of the npm peers, e.g. `mcp-server-everything`.
pub fn peer_bin(name: &str) -> PathBuf {
    require(peers_dir().join("node_modules/.bin").join(name))
}

/// The Python of the peers venv (with the `mcp` SDK).
pub fn venv_python() -> PathBuf {
    require(peers_dir().join("venv/bin/python"))
}

/// The real Python interpreter (not a version manager's shim, which adds variables of its
/// own to the environment), for the scripted servers.
pub fn python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let out = std::process::Command::new("python3")
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
                .expect("python3 is needed for the scripted test servers");
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        })
        .clone()
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

pub fn stdio_config(
    name: &str,
    command: impl AsRef<Path>,
    args: &[&str],
    timeout: Duration,
) -> UpstreamConfig {
    UpstreamConfig {
        name: name.into(),
        transport: Transport::Stdio {
            command: command.as_ref().to_string_lossy().into_owned(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Default::default(),
            cwd: None,
        },
        timeout: Some(timeout),
    }
}

pub fn http_config(name: &str, url: &str, timeout: Duration) -> UpstreamConfig {
    UpstreamConfig {
        name: name.into(),
        transport: Transport::Http {
            url: url.into(),
            headers: Default::default(),
        },
        timeout: Some(timeout),
    }
}

/// Waits (at most 20 s) until the health matches.
pub async fn wait_health(
    health: &mut watch::Receiver<Health>,
    want: impl Fn(&Health) -> bool,
) -> Health {
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        health.wait_for(|h| want(h)).await.map(|h| h.clone())
    })
    .await;
    match waited {
        Ok(seen) => seen.expect("the upstream went away"),
        Err(_) => panic!("health never matched; last: {:?}", *health.borrow()),
    }
}

pub async fn wait_ready(health: &mut watch::Receiver<Health>) {
    let health = wait_health(health, |h| *h != Health::Starting).await;
    assert_eq!(health, Health::Ready, "the upstream did not get ready");
}

/// What a call's events channel received.
#[derive(Debug, Default)]
pub struct Seen {
    pub notifications: Vec<Notification>,
    /// The server's requests, by method.
    pub requests: Vec<(String, Option<Value>)>,
}

/// The sampling answer the tests give.
pub fn sampling_answer(text: &str) -> Value {
    json!({
        "role": "assistant",
        "content": {"type": "text", "text": text},
        "model": "test-model",
        "stopReason": "endTurn",
    })
}

/// Drains an events channel, answering the server's requests as a client would: sampling
/// with `sampling_text`, `roots/list` with no roots, `ping` with `{}`, anything else with an
/// error. Returns everything seen once the channel closes.
pub fn answer_events(
    mut events: mpsc::Receiver<ServerMessage>,
    sampling_text: &str,
) -> tokio::task::JoinHandle<Seen> {
    let sampling_text = sampling_text.to_owned();
    tokio::spawn(async move {
        let mut seen = Seen::default();
        while let Some(message) = events.recv().await {
            match message {
                ServerMessage::Notification(n) => seen.notifications.push(n),
                ServerMessage::Request { request, reply } => {
                    let answer = match request.method.as_str() {
                        "sampling/createMessage" => Ok(sampling_answer(&sampling_text)),
                        "roots/list" => Ok(json!({"roots": []})),
                        "ping" => Ok(json!({})),
                        other => Err(warden_gateway::jsonrpc::RpcError::new(
                            -32601,
                            format!("no {other}"),
                        )),
                    };
                    seen.requests
                        .push((request.method.clone(), request.params.clone()));
                    let _ = reply.send(answer);
                }
            }
        }
        seen
    })
}

/// The text of a tool result's first content block.
pub fn text_of(result: &Value) -> &str {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text content in {result}"))
}

/// Writes a file into `dir` and returns its path.
pub fn write_script(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A stdio MCP server that misbehaves on request, in Python (stdlib only). Tools:
/// `echo` {text}; `hang` (announces `{"started": id}` as a log notification, never answers);
/// `crash` (writes to stderr and exits 3); `garbage` (a non-JSON line, then the answer);
/// `garbage-only` (a non-JSON line instead of the answer); `malformed` (a response with
/// both result and error); `ask` {method, params} (sends that request to the client and
/// answers with the client's response); `env` (its environment); `meta` (the `_meta` it
/// received). A `notifications/cancelled` is announced as `{"cancelled": id, "reason": …}`.
pub const SCRIPTED_STDIO: &str = r#"
import json, os, sys

def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()

def log(**data):
    send({"jsonrpc": "2.0", "method": "notifications/message",
          "params": {"level": "info", "data": data}})

def result(id, text):
    send({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": text}]}})

asked = {}
for line in sys.stdin:
    message = json.loads(line)
    method, id = message.get("method"), message.get("id")
    params = message.get("params") or {}
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": id, "result": {
            "protocolVersion": params["protocolVersion"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "scripted", "version": "1.0"},
            "instructions": "misbehaves on request"}})
    elif method == "notifications/cancelled":
        log(cancelled=params["requestId"], reason=params.get("reason"))
    elif method == "ping":
        send({"jsonrpc": "2.0", "id": id, "result": {}})
    elif method == "tools/call":
        name, args = params["name"], params.get("arguments") or {}
        if name == "echo":
            result(id, args.get("text", ""))
        elif name == "hang":
            log(started=id)
        elif name == "crash":
            sys.stderr.write("crashing on purpose\n")
            sys.stderr.flush()
            os._exit(3)
        elif name == "garbage":
            print("this is not json", flush=True)
            result(id, "after garbage")
        elif name == "garbage-only":
            print("{this is not json either", flush=True)
        elif name == "malformed":
            send({"jsonrpc": "2.0", "id": id, "result": {}, "error": {"code": 1, "message": "both"}})
        elif name == "ask":
            asked["s-%d" % id] = id
            send({"jsonrpc": "2.0", "id": "s-%d" % id, "method": args["method"],
                  "params": args.get("params") or {}})
        elif name == "env":
            result(id, json.dumps(dict(os.environ)))
        elif name == "meta":
            result(id, json.dumps(params.get("_meta")))
        else:
            send({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": "no tool " + name}})
    elif method is None and id in asked:
        call = asked.pop(id)
        result(call, json.dumps(message))
"#;

/// A Streamable HTTP server that misbehaves on request, in Python (stdlib only). It binds
/// 127.0.0.1 on a free port and prints `port N`. JSON answers, except the tools marked SSE.
/// Tools: `echo` {text}; `headers` (the request's headers); `expire` (answers, then forgets
/// the session: the next request gets 404); `fail` (HTTP 500 with a body); `sse` (an SSE
/// answer with comments, CRLF, multi-line data and a log notification before the
/// response); `cut` (an SSE answer that ends after a priming event id; a GET with that
/// `Last-Event-ID` gets the response); `hang` (an SSE answer that never ends); `cancels`
/// {at_least} (the `notifications/cancelled` received, once there are that many or after 5 s). GET without `Last-Event-ID` is 405;
/// DELETE is recorded and returned by `deleted` (also in a file named by argv[1]).
pub const SCRIPTED_HTTP: &str = r#"
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

state = {"session": None, "n": 0, "cancels": [], "cut": {}}
lock = threading.Lock()
changed = threading.Condition()
record = sys.argv[1]

def text_result(id, text):
    return {"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": text}]}}

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def reply(self, status, body=None, content_type="application/json", headers=()):
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def sse_start(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()

    def do_DELETE(self):
        sid = self.headers.get("Mcp-Session-Id")
        with open(record, "a") as f:
            f.write("DELETE %s\n" % sid)
        self.reply(200)

    def do_GET(self):
        last = self.headers.get("Last-Event-ID")
        if last is None:
            return self.reply(405)
        with lock:
            id = state["cut"].pop(last, None)
        if id is None:
            return self.reply(404)
        self.sse_start()
        self.wfile.write(("id: r2\ndata: %s\n\n" % json.dumps(text_result(id, "resumed"))).encode())

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        method, id = body.get("method"), body.get("id")
        params = body.get("params") or {}
        sid = self.headers.get("Mcp-Session-Id")
        if method == "initialize":
            with lock:
                state["n"] += 1
                state["session"] = "session-%d" % state["n"]
            return self.reply(200, {"jsonrpc": "2.0", "id": id, "result": {
                "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                "serverInfo": {"name": "scripted-http", "version": "1.0"}}},
                headers=[("Mcp-Session-Id", state["session"])])
        if sid != state["session"]:
            return self.reply(404, {"jsonrpc": "2.0", "id": id,
                                    "error": {"code": -32001, "message": "Session not found"}})
        if method == "notifications/cancelled":
            with changed:
                state["cancels"].append(params)
                changed.notify_all()
        if id is None:
            return self.reply(202)
        if method != "tools/call":
            return self.reply(200, {"jsonrpc": "2.0", "id": id, "result": {}})
        name, args = params["name"], params.get("arguments") or {}
        if name == "echo":
            return self.reply(200, text_result(id, args.get("text", "")))
        if name == "headers":
            return self.reply(200, text_result(id, json.dumps({k.lower(): v for k, v in self.headers.items()})))
        if name == "expire":
            with lock:
                state["session"] = "expired"
            return self.reply(200, text_result(id, "expired"))
        if name == "fail":
            return self.reply(500, b"boom: the database is on fire", "text/plain")
        if name == "cancels":
            with changed:
                changed.wait_for(lambda: len(state["cancels"]) >= args.get("at_least", 0), 5)
                cancels = list(state["cancels"])
            return self.reply(200, text_result(id, json.dumps(cancels)))
        if name == "deleted":
            return self.reply(200, text_result(id, open(record).read()))
        if name == "sse":
            self.sse_start()
            note = json.dumps({"jsonrpc": "2.0", "method": "notifications/message",
                               "params": {"level": "info", "data": "working"}})
            answer = json.dumps(text_result(id, "streamed"), indent=1).split("\n")
            out = ": keep-alive\r\n\r\nevent: message\r\ndata: " + note + "\r\n\r\n"
            out += "".join("data: %s\r\n" % line for line in answer) + "\r\n"
            for i in range(0, len(out), 7):
                self.wfile.write(out[i:i + 7].encode())
                self.wfile.flush()
            return
        if name == "cut":
            with lock:
                state["cut"]["prime-%d" % id] = id
            self.sse_start()
            self.wfile.write(("id: prime-%d\nretry: 10\ndata:\n\n" % id).encode())
            return
        if name == "hang":
            self.sse_start()
            self.wfile.write(b": started\n\n")
            self.wfile.flush()
            threading.Event().wait(30)
            return
        return self.reply(200, {"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": "no tool"}})

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print("port %d" % server.server_address[1], flush=True)
server.serve_forever()
"#;

/// A server process of a test; killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub port: u16,
}

impl ServerProcess {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a server and waits until it writes a line containing `ready` (on stdout or
/// stderr); returns the line.
pub async fn start_server(mut command: Command, ready: &str) -> (Child, String) {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("the test server starts");
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    for reader in [
        Box::new(out) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        Box::new(err),
    ] {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let wait = async {
        let mut seen = Vec::new();
        while let Some(line) = rx.recv().await {
            if line.contains(ready) {
                return line;
            }
            seen.push(line);
        }
        panic!("the test server ended before it was ready: {seen:?}");
    };
    let line = tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("the test server did not get ready within 30 s");
    (child, line)
}

/// `mcp-server-everything streamableHttp` on a free port.
pub async fn everything_http() -> ServerProcess {
    everything_http_on(free_port()).await
}

pub async fn everything_http_on(port: u16) -> ServerProcess {
    let mut command = Command::new(peer_bin("mcp-server-everything"));
    command.arg("streamableHttp").env("PORT", port.to_string());
    let (child, _) = start_server(command, "listening on port").await;
    ServerProcess { child, port }
}

/// The scripted HTTP server; `record` is the file where it notes DELETEs.
pub async fn scripted_http(dir: &Path) -> ServerProcess {
    let script = write_script(dir, "scripted_http.py", SCRIPTED_HTTP);
    let record = dir.join("deleted.txt");
    std::fs::write(&record, "").unwrap();
    let mut command = Command::new(python());
    command.arg(script).arg(record);
    let (child, line) = start_server(command, "port ").await;
    let port = line.trim_start_matches("port ").trim().parse().unwrap();
    ServerProcess { child, port }
}
