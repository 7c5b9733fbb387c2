//! The agent-facing Streamable HTTP endpoint: `POST`, `GET` and `DELETE` on `/mcp` (all
//! servers, tools named `<server>__<tool>`) and `/mcp/{server}` (one server, its own names).
//!
//! Rules from the MCP specification, each answered as it says: a bearer token is required
//! (401 with `WWW-Authenticate`); `Origin` must be a loopback origin or configured (403);
//! `MCP-Protocol-Version` must be one Warden speaks (400); `MCP-Session-Id` must name a live
//! session of the same token (404, so the client starts a new session); one JSON-RPC message
//! per POST (a batch is 400); notifications and responses get 202.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use warden_core::{ClientInfo, Error};

use crate::config::PROTOCOL_VERSIONS;
use crate::gateway::{EndReason, Gateway};
use crate::jsonrpc::{self, Id, Invalid, Message, RpcError, code};
use crate::session::Session;

pub const SESSION_HEADER: &str = "mcp-session-id";
pub const VERSION_HEADER: &str = "mcp-protocol-version";

/// Methods whose answer may be preceded by messages from the server (progress, sampling,
/// elicitation, approval progress): answered as an SSE stream when the client accepts one.
const STREAMED: [&str; 3] = ["tools/call", "resources/read", "prompts/get"];

pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/mcp", any(all_servers))
        .route("/mcp/{server}", any(one_server))
        .with_state(gw)
}

async fn all_servers(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    endpoint(gw, None, req).await
}

async fn one_server(
    State(gw): State<Arc<Gateway>>,
    Path(server): Path<String>,
    req: Request,
) -> Response {
    endpoint(gw, Some(server), req).await
}

async fn endpoint(gw: Arc<Gateway>, scope: Option<String>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    if let Err(r) = check_origin(&gw, &headers) {
        return *r;
    }
    if let Some(v) = headers.get(VERSION_HEADER) {
        let ok = v
            .to_str()
            .is_ok_and(|v| PROTOCOL_VERSIONS.contains(&v.trim()));
        if !ok {
            return rpc_status(
                StatusCode::BAD_REQUEST,
                None,
                RpcError::new(
                    code::INVALID_REQUEST,
                    format!(
                        "unsupported MCP-Protocol-Version {:?}; supported: {}",
                        v.to_str().unwrap_or("?"),
                        PROTOCOL_VERSIONS.join(", ")
                    ),
                ),
            );
        }
    }
    let identity = match authenticate(&gw, &headers).await {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let addr = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let client = ClientInfo {
        address: addr.map(|a| a.ip().to_string()),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect()),
    };
    match parts.method {
        axum::http::Method::POST => {
            let body = match axum::body::to_bytes(body, gw.config.max_message_bytes).await {
                Ok(b) => b,
                Err(_) => {
                    return rpc_status(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        None,
                        RpcError::new(
                            code::INVALID_REQUEST,
                            format!("message larger than {} bytes", gw.config.max_message_bytes),
                        ),
                    );
                }
            };
            post(gw, scope, headers, identity, client, body).await
        }
        axum::http::Method::GET => {
            let session = match find_session(&gw, &headers, &identity, scope.as_deref()) {
                Ok(s) => s,
                Err(r) => return *r,
            };
            if !accepts(&headers, "text/event-stream") {
                return rpc_status(
                    StatusCode::NOT_ACCEPTABLE,
                    None,
                    RpcError::new(
                        code::INVALID_REQUEST,
                        "GET opens an event stream; send Accept: text/event-stream",
                    ),
                );
            }
            let rx = session.open_stream();
            sse(receive(rx)).into_response()
        }
        axum::http::Method::DELETE => {
            let session = match find_session(&gw, &headers, &identity, scope.as_deref()) {
                Ok(s) => s,
                Err(r) => return *r,
            };
            if gw.sessions.remove(&session.id).is_some() {
                gw.end(&session, EndReason::Closed).await;
            }
            StatusCode::NO_CONTENT.into_response()
        }
        _ => {
            let mut r = rpc_status(
                StatusCode::METHOD_NOT_ALLOWED,
                None,
                RpcError::new(code::INVALID_REQUEST, "use POST, GET or DELETE"),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
            r
        }
    }
}

async fn post(
    gw: Arc<Gateway>,
    scope: Option<String>,
    headers: HeaderMap,
    identity: crate::AgentIdentity,
    client: ClientInfo,
    body: Bytes,
) -> Response {
    let message = match Message::parse(&body) {
        Ok(m) => m,
        Err(invalid) => {
            gw.metrics.malformed.inc();
            return invalid_message(invalid);
        }
    };
    let request = match message {
        Message::Request(r) if r.method == "initialize" => {
            return match gw.initialize(identity, scope, &r, client).await {
                Ok((session, result)) => {
                    let body = Message::Response(jsonrpc::Response {
                        id: r.id,
                        result: Ok(result),
                    });
                    let mut resp = json_response(StatusCode::OK, &body.to_value());
                    if let Ok(v) = HeaderValue::from_str(&session.id) {
                        resp.headers_mut().insert(SESSION_HEADER, v);
                    }
                    resp
                }
                Err(e) => rpc_status(StatusCode::OK, Some(r.id), e),
            };
        }
        Message::Request(r) => r,
        other => {
            let session = match find_session(&gw, &headers, &identity, scope.as_deref()) {
                Ok(s) => s,
                Err(r) => return *r,
            };
            match other {
                Message::Notification(n) => gw.notify(&session, n).await,
                Message::Response(r) => gw.respond(&session, r),
                Message::Request(_) => unreachable!("handled above"),
            }
            return StatusCode::ACCEPTED.into_response();
        }
    };
    let session = match find_session(&gw, &headers, &identity, scope.as_deref()) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let id = request.id.clone();
    let streamed =
        STREAMED.contains(&request.method.as_str()) && accepts(&headers, "text/event-stream");
    if streamed {
        let (tx, rx) = mpsc::channel::<Message>(32);
        let task_gw = gw.clone();
        let task_session = session.clone();
        let out = tx.clone();
        let task = tokio::spawn(async move {
            let response = task_gw
                .handle(&task_session, request, Some(out.clone()))
                .await;
            task_session.untrack(&response.id);
            let _ = out.send(Message::Response(response)).await;
        });
        session.track(id, task.abort_handle());
        drop(tx);
        sse(receive(rx)).into_response()
    } else {
        let task_gw = gw.clone();
        let task_session = session.clone();
        let task = tokio::spawn(async move { task_gw.handle(&task_session, request, None).await });
        session.track(id.clone(), task.abort_handle());
        let response = match task.await {
            Ok(r) => r,
            Err(_) => jsonrpc::Response {
                id: id.clone(),
                result: Err(RpcError::new(code::INTERNAL_ERROR, "request cancelled")),
            },
        };
        session.untrack(&id);
        json_response(StatusCode::OK, &Message::Response(response).to_value())
    }
}

fn sse(
    messages: impl futures::Stream<Item = Message> + Send + 'static,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    Sse::new(messages.map(|m| Ok(Event::default().event("message").data(m.to_json()))))
        .keep_alive(KeepAlive::default())
}

fn receive(rx: mpsc::Receiver<Message>) -> impl futures::Stream<Item = Message> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
}

fn find_session(
    gw: &Gateway,
    headers: &HeaderMap,
    identity: &crate::AgentIdentity,
    scope: Option<&str>,
) -> Result<Arc<Session>, Box<Response>> {
    let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return Err(Box::new(rpc_status(
            StatusCode::BAD_REQUEST,
            None,
            RpcError::new(
                code::INVALID_REQUEST,
                "missing MCP-Session-Id header; send initialize first",
            ),
        )));
    };
    // Another token's session, or one made for another endpoint, looks like no session.
    match gw.sessions.get(id.trim()) {
        Some(s) if s.identity.token_id == identity.token_id && s.scope.as_deref() == scope => Ok(s),
        _ => Err(Box::new(rpc_status(
            StatusCode::NOT_FOUND,
            None,
            RpcError::new(
                code::INVALID_REQUEST,
                "unknown or expired MCP session; initialize a new one",
            ),
        ))),
    }
}

async fn authenticate(
    gw: &Gateway,
    headers: &HeaderMap,
) -> Result<crate::AgentIdentity, Box<Response>> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(bearer) = bearer else {
        return Err(Box::new(unauthorized(
            "an agent token is required: send Authorization: Bearer <token>",
        )));
    };
    match gw.governor.authenticate(bearer).await {
        Ok(i) => Ok(i),
        Err(Error::Unauthenticated(m)) => Err(Box::new(unauthorized(&m))),
        Err(Error::Forbidden(m)) => Err(Box::new(rpc_status(
            StatusCode::FORBIDDEN,
            None,
            RpcError::new(code::INVALID_REQUEST, m),
        ))),
        Err(e) => Err(Box::new(rpc_status(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            RpcError::new(code::INTERNAL_ERROR, e.to_string()),
        ))),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut r = rpc_status(
        StatusCode::UNAUTHORIZED,
        None,
        RpcError::new(code::INVALID_REQUEST, message),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"warden\""),
    );
    r
}

/// Browsers send `Origin`; a page of another site must not drive an agent session (DNS
/// rebinding). Clients that are not browsers send none.
fn check_origin(gw: &Gateway, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    if origin_allowed(origin, &gw.config.allowed_origins) {
        return Ok(());
    }
    Err(Box::new(rpc_status(
        StatusCode::FORBIDDEN,
        None,
        RpcError::new(
            code::INVALID_REQUEST,
            format!("origin {origin:?} is not allowed; add it to gateway.allowed_origins"),
        ),
    )))
}

pub fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    if allowed.iter().any(|a| a == origin) {
        return true;
    }
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = if let Some(v6) = rest.strip_prefix('[') {
        v6.split(']').next().map(|h| format!("[{h}]"))
    } else {
        rest.split(':').next().map(str::to_owned)
    };
    matches!(
        host.as_deref(),
        Some("localhost") | Some("127.0.0.1") | Some("[::1]")
    )
}

fn accepts(headers: &HeaderMap, mime: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(mime) || v.contains("*/*"))
}

fn invalid_message(invalid: Box<Invalid>) -> Response {
    json_response(StatusCode::BAD_REQUEST, &jsonrpc::error_response(&invalid))
}

fn rpc_status(status: StatusCode, id: Option<Id>, error: RpcError) -> Response {
    let body = json!({
        "jsonrpc": "2.0",
        "id": id.as_ref().map_or(Value::Null, Id::to_value),
        "error": error,
    });
    json_response(status, &body)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::origin_allowed;

    #[test]
    fn loopback_and_configured_origins_only() {
        assert!(origin_allowed("http://localhost:6274", &[]));
        assert!(origin_allowed("http://127.0.0.1", &[]));
        assert!(origin_allowed("http://[::1]:8080", &[]));
        assert!(!origin_allowed("http://evil.example", &[]));
        assert!(!origin_allowed("http://localhost.evil.example", &[]));
        assert!(!origin_allowed("null", &[]));
        let allowed = vec!["https://console.acme.example".to_owned()];
        assert!(origin_allowed("https://console.acme.example", &allowed));
    }
}
