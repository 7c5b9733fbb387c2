//! A tiny MCP server speaking Streamable HTTP, used only by the gateway benchmark as a fast
//! upstream: one tool, `echo`, that returns its `message` argument as text.
//!
//! `POST /mcp` answers `initialize` (the client's protocol version when it is one of
//! 2025-11-25, 2025-06-18, 2025-03-26, else the newest; capabilities `{tools:{}}`; an
//! `Mcp-Session-Id` header), `ping`, `tools/list` and `tools/call` with one JSON body each;
//! notifications and responses get 202. `GET /mcp` is 405 (no standalone stream), `DELETE`
//! is 204. Sessions are not checked: the server keeps no state besides counters.
//!
//! Requests are parsed into borrowed fields (no tree of `Value`s) and answers are written
//! straight into one buffer, so that the upstream costs as little CPU as possible next to
//! the gateway it stands behind.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use serde::Deserialize;

const VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];

const TOOLS: &str = r#"{"tools":[{"name":"echo","description":"Returns its message.","inputSchema":{"type":"object","properties":{"message":{"type":"string"}},"required":["message"]},"annotations":{"readOnlyHint":true}}]}"#;

/// What the server counted since it started.
#[derive(Default)]
pub struct Counters {
    pub calls: AtomicU64,
    pub sessions: AtomicU64,
}

pub struct Echo {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `listen` (e.g. `127.0.0.1:0`) and serves until dropped. Needs a Tokio runtime.
pub async fn start(listen: &str) -> io::Result<Echo> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let listener = listener.tap_io(|s| {
        let _ = s.set_nodelay(true);
    });
    let counters = Arc::new(Counters::default());
    let app = Router::new()
        .route(
            "/mcp",
            post(handle)
                .get(|| async {
                    (
                        StatusCode::METHOD_NOT_ALLOWED,
                        [(header::ALLOW, "POST, DELETE")],
                    )
                })
                .delete(|| async { StatusCode::NO_CONTENT }),
        )
        .with_state(counters.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Echo {
        addr,
        counters,
        task,
    })
}

#[derive(Deserialize)]
struct Rpc<'a> {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    params: Option<Params<'a>>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Arguments<'a>>,
    #[serde(default, borrow, rename = "protocolVersion")]
    protocol_version: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Arguments<'a> {
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

async fn handle(State(counters): State<Arc<Counters>>, body: Bytes) -> Response {
    let rpc: Rpc<'_> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let mut out = Vec::with_capacity(128);
            out.extend_from_slice(
                br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"#,
            );
            write_str(&mut out, &e.to_string());
            out.extend_from_slice(b"}}");
            return json(StatusCode::BAD_REQUEST, out);
        }
    };
    let (Some(id), Some(method)) = (rpc.id.as_ref(), rpc.method.as_deref()) else {
        // A notification or a response.
        return StatusCode::ACCEPTED.into_response();
    };
    let params = rpc.params.as_ref();
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    let _ = serde_json::to_writer(&mut out, id);
    match method {
        "tools/call" => {
            let message = params
                .filter(|p| p.name.as_deref() == Some("echo"))
                .and_then(|p| p.arguments.as_ref()?.message.as_deref());
            let Some(message) = message else {
                out.extend_from_slice(
                    br#","error":{"code":-32602,"message":"call the tool echo with a string message"}}"#,
                );
                return json(StatusCode::OK, out);
            };
            counters.calls.fetch_add(1, Ordering::Relaxed);
            out.extend_from_slice(br#","result":{"content":[{"type":"text","text":"#);
            write_str(&mut out, message);
            out.extend_from_slice(b"}]}}");
            json(StatusCode::OK, out)
        }
        "tools/list" => {
            out.extend_from_slice(br#","result":"#);
            out.extend_from_slice(TOOLS.as_bytes());
            out.push(b'}');
            json(StatusCode::OK, out)
        }
        "ping" => {
            out.extend_from_slice(br#","result":{}}"#);
            json(StatusCode::OK, out)
        }
        "initialize" => {
            let asked = params.and_then(|p| p.protocol_version.as_deref());
            let version = VERSIONS
                .iter()
                .find(|v| Some(**v) == asked)
                .unwrap_or(&VERSIONS[0]);
            out.extend_from_slice(br#","result":{"protocolVersion":""#);
            out.extend_from_slice(version.as_bytes());
            out.extend_from_slice(
                br#"","capabilities":{"tools":{}},"serverInfo":{"name":"warden-bench-echo","version":"1.0.0"}}}"#,
            );
            let n = counters.sessions.fetch_add(1, Ordering::Relaxed) + 1;
            let mut r = json(StatusCode::OK, out);
            if let Ok(v) = HeaderValue::from_str(&format!("echo-{n}")) {
                r.headers_mut().insert("mcp-session-id", v);
            }
            r
        }
        _ => {
            out.extend_from_slice(br#","error":{"code":-32601,"message":"method not found"}}"#);
            json(StatusCode::OK, out)
        }
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(out, s);
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}
