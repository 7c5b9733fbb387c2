//! A minimal MCP client over Streamable HTTP for protocol-level tests: it shows exactly
//! what goes over the wire (status codes, headers, SSE events), which a full SDK hides.
//! Interoperability with clients written by others is tested separately.

#![allow(dead_code)]

use std::path::PathBuf;

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_gateway::upstream::{Transport, UpstreamConfig};

use super::TestServer;

/// Where `scripts/install-peers.sh` put the MCP servers and clients written by others.
pub fn peers_dir() -> PathBuf {
    let dir = std::env::var_os("WARDEN_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.peers"));
    let marker = dir.join("node_modules/.bin/mcp-server-everything");
    assert!(
        marker.exists(),
        "MCP test peers are missing at {}; run scripts/install-peers.sh",
        dir.display()
    );
    dir
}

/// The Python interpreter of the peers' venv (with the official MCP SDK).
pub fn python() -> PathBuf {
    let python = peers_dir().join("venv/bin/python");
    assert!(
        python.exists(),
        "the Python MCP SDK venv is missing at {}; run scripts/install-peers.sh",
        python.display()
    );
    python
}

/// The interoperability scripts in `tests/interop`.
pub fn interop_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/interop")
        .join(name)
}

pub fn everything_bin() -> String {
    peers_dir()
        .join("node_modules/.bin/mcp-server-everything")
        .display()
        .to_string()
}

/// Policies for the gateway tests, about the tools of server-everything.
pub const POLICIES: &str = r#"
@id("mcp.list") @reason("Agents see the tools they could call.")
permit (principal is Agent, action == Action::"list_tools", resource is Tool);

@id("mcp.read-only") @reason("Read-only tools are allowed.")
permit (principal is Agent, action == Action::"call_tool", resource is Tool)
when { resource has read_only && resource.read_only };

@id("mcp.echo") @reason("Echo is harmless; what is echoed is not kept.") @redact("args.message")
permit (principal is Agent, action == Action::"call_tool", resource == Tool::"everything__echo");

@id("mcp.no-env") @reason("Environment variables may hold secrets.")
forbid (principal, action == Action::"call_tool", resource == Tool::"everything__get-env");

@id("mcp.sum-ask") @effect("ask") @reason("Sums need a second pair of eyes.")
permit (principal is Agent, action == Action::"call_tool", resource == Tool::"everything__get-sum");

@id("mcp.sampling") @reason("Sampling goes back to the agent's own model.")
permit (principal is Agent, action == Action::"call_tool", resource == Tool::"everything__trigger-sampling-request");
"#;

/// A server whose gateway has server-everything (stdio) as upstream `everything`.
pub async fn start_gateway() -> TestServer {
    start_gateway_with(|_| {}).await
}

/// [`start_gateway`] with more settings.
pub async fn start_gateway_with(
    configure: impl FnOnce(&mut warden_gateway::GatewayConfig) + Send + 'static,
) -> TestServer {
    let server = everything_bin();
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(policies.join("acme")).unwrap();
    std::fs::write(policies.join("acme/mcp.cedar"), POLICIES).unwrap();
    TestServer::start_in(dir, move |c| {
        c.policies = Some(policies);
        c.gateway.approval_timeout = Duration::from_secs(30);
        c.gateway.progress_interval = Duration::from_millis(200);
        c.gateway.upstreams = vec![UpstreamConfig {
            name: "everything".into(),
            transport: Transport::Stdio {
                command: server,
                args: vec![],
                env: Default::default(),
                cwd: None,
            },
            timeout: Some(Duration::from_secs(20)),
        }];
        configure(&mut c.gateway);
    })
    .await
}

pub struct Mcp {
    pub url: String,
    pub token: String,
    pub session: Option<String>,
    pub client: reqwest::Client,
    pub protocol: String,
}

/// What came back for one POST.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    /// Every JSON-RPC message received, in order (one for a JSON answer).
    pub messages: Vec<Value>,
}

impl Reply {
    /// The final response (the message with the request's id and a result or error).
    pub fn response(&self) -> &Value {
        self.messages
            .iter()
            .rev()
            .find(|m| m.get("result").is_some() || m.get("error").is_some())
            .unwrap_or_else(|| panic!("no response in {:?}", self.messages))
    }

    pub fn result(&self) -> &Value {
        let r = self.response();
        r.get("result")
            .unwrap_or_else(|| panic!("expected a result, got {r}"))
    }

    pub fn error(&self) -> &Value {
        let r = self.response();
        r.get("error")
            .unwrap_or_else(|| panic!("expected an error, got {r}"))
    }

    /// The text of a tool result's first content item.
    pub fn text(&self) -> String {
        self.result()["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Mcp {
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Mcp {
        Mcp {
            url: url.into(),
            token: token.into(),
            session: None,
            client: reqwest::Client::new(),
            protocol: "2025-11-25".into(),
        }
    }

    pub fn request_builder(&self, body: &Value) -> reqwest::RequestBuilder {
        let mut b = self
            .client
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .bearer_auth(&self.token)
            .body(body.to_string());
        if let Some(s) = &self.session {
            b = b
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", &self.protocol);
        }
        b
    }

    /// `initialize` + `notifications/initialized`; returns the initialize result.
    pub async fn initialize(&mut self, capabilities: Value) -> Value {
        let reply = self
            .send(&json!({
                "jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {
                    "protocolVersion": self.protocol,
                    "capabilities": capabilities,
                    "clientInfo": {"name": "warden-tests", "version": "1"}
                }
            }))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.messages);
        let session = reply
            .headers
            .get("mcp-session-id")
            .expect("initialize answers with MCP-Session-Id")
            .to_str()
            .unwrap()
            .to_owned();
        self.session = Some(session);
        let result = reply.result().clone();
        let ack = self
            .send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(ack.status, StatusCode::ACCEPTED);
        result
    }

    pub async fn call(&self, id: u64, method: &str, params: Value) -> Reply {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await
    }

    pub async fn tool(&self, id: u64, name: &str, args: Value) -> Reply {
        self.call(id, "tools/call", json!({"name": name, "arguments": args}))
            .await
    }

    pub async fn send(&self, body: &Value) -> Reply {
        self.send_with(body, |m| {
            panic!("unexpected request from the server: {m}");
        })
        .await
    }

    /// Sends one message; requests from the server arriving on the stream are answered with
    /// `answer` (its result is POSTed back as the response).
    pub async fn send_with(&self, body: &Value, mut answer: impl FnMut(&Value) -> Value) -> Reply {
        let r = self.request_builder(body).send().await.expect("request");
        let status = r.status();
        let headers = r.headers().clone();
        let ct = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut messages = Vec::new();
        if ct.starts_with("text/event-stream") {
            let mut stream = r.bytes_stream();
            let mut buf = String::new();
            while let Some(chunk) = stream.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk.expect("stream")));
                while let Some(end) = buf.find("\n\n") {
                    let event: String = buf.drain(..end + 2).collect();
                    let data: Vec<&str> = event
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(|l| l.strip_prefix(' ').unwrap_or(l))
                        .collect();
                    if data.is_empty() {
                        continue;
                    }
                    let m: Value =
                        serde_json::from_str(&data.join("\n")).expect("SSE data is JSON");
                    if m.get("method").is_some() && m.get("id").is_some() {
                        let result = answer(&m);
                        let reply = self
                            .request_builder(
                                &json!({"jsonrpc": "2.0", "id": m["id"], "result": result}),
                            )
                            .send()
                            .await
                            .expect("response to the server's request");
                        assert_eq!(reply.status(), StatusCode::ACCEPTED);
                    }
                    messages.push(m);
                }
            }
        } else {
            let text = r.text().await.expect("body");
            if !text.is_empty() {
                messages.push(serde_json::from_str(&text).unwrap_or(Value::String(text)));
            }
        }
        Reply {
            status,
            headers,
            messages,
        }
    }
}
