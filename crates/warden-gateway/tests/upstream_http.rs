//! The Streamable HTTP upstream against real MCP servers (`@modelcontextprotocol/server-everything`
//! in `streamableHttp` mode, and a server built with the Python SDK `mcp` answering in JSON;
//! both installed by scripts/install-peers.sh) and against a small scripted server that
//! misbehaves on request.

mod upstream_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::Command;
use tokio::sync::mpsc;
use upstream_support::*;
use warden_gateway::upstream::http::HttpUpstream;
use warden_gateway::upstream::{Health, Transport, Upstream, UpstreamConfig, UpstreamError};

async fn connect(config: UpstreamConfig) -> Arc<HttpUpstream> {
    init_tracing();
    let upstream = HttpUpstream::spawn(config);
    wait_ready(&mut upstream.watch_health()).await;
    upstream
}

async fn tool(
    upstream: &dyn Upstream,
    name: &str,
    arguments: Value,
) -> Result<Value, UpstreamError> {
    let result = upstream
        .call(
            "tools/call",
            Some(json!({"name": name, "arguments": arguments})),
            None,
        )
        .await?;
    Ok(result.unwrap_or_else(|e| panic!("{name} failed: {e}")))
}

/// Ends a session from outside, as a server restart or an expiry would.
async fn delete_session(url: &str, session: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .delete(url)
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap()
        .status()
}

/// A server written with the Python SDK (`mcp`), answering POSTs with JSON bodies.
const PYTHON_SDK_SERVER: &str = r#"
import sys
from mcp.server.mcpserver import MCPServer

app = MCPServer("python-sdk-peer")

@app.tool()
def add(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b

app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]), json_response=True)
"#;

async fn python_sdk_server(dir: &std::path::Path) -> ServerProcess {
    let script = write_script(dir, "python_sdk_server.py", PYTHON_SDK_SERVER);
    let port = free_port();
    let mut command = Command::new(venv_python());
    command.arg(script).arg(port.to_string());
    let (child, _) = start_server(command, "Uvicorn running on").await;
    ServerProcess { child, port }
}

#[tokio::test]
async fn everything_over_http_initializes_lists_and_echoes() {
    let server = everything_http().await;
    let upstream = connect(http_config(
        "everything",
        &server.url(),
        Duration::from_secs(20),
    ))
    .await;
    let info = upstream.server_info().expect("initialized");
    assert_eq!(info.protocol_version, "2025-11-25");
    assert!(info.capabilities.get("tools").is_some());
    assert!(
        upstream.session_id().is_some(),
        "the server assigns a session"
    );

    let tools = upstream
        .call("tools/list", None, None)
        .await
        .unwrap()
        .unwrap();
    let names: Vec<&str> = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for expected in [
        "echo",
        "trigger-long-running-operation",
        "trigger-sampling-request",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let echoed = tool(upstream.as_ref(), "echo", json!({"message": "over http"}))
        .await
        .unwrap();
    assert_eq!(text_of(&echoed), "Echo: over http");
    let sum = tool(upstream.as_ref(), "get-sum", json!({"a": 2, "b": 40}))
        .await
        .unwrap();
    assert!(text_of(&sum).contains("42"), "{sum}");
    upstream.shutdown().await;
    server.stop().await;
}

#[tokio::test]
async fn everything_over_http_routes_progress_per_caller_with_the_same_token() {
    let server = everything_http().await;
    let upstream = connect(http_config(
        "everything",
        &server.url(),
        Duration::from_secs(20),
    ))
    .await;
    let call = |steps: u64| {
        let upstream = upstream.clone();
        async move {
            let (tx, rx) = mpsc::channel(64);
            let seen = answer_events(rx, "unused");
            let params = json!({
                "name": "trigger-long-running-operation",
                "arguments": {"duration": 0.3, "steps": steps},
                "_meta": {"progressToken": "shared"},
            });
            let result = upstream.call("tools/call", Some(params), Some(tx)).await;
            (result, seen.await.unwrap())
        }
    };
    let ((a, seen_a), (b, seen_b)) = tokio::join!(call(2), call(3));
    assert!(text_of(&a.unwrap().unwrap()).contains("Steps: 2"));
    assert!(text_of(&b.unwrap().unwrap()).contains("Steps: 3"));
    for (seen, steps) in [(seen_a, 2u64), (seen_b, 3)] {
        let progress: Vec<&Value> = seen
            .notifications
            .iter()
            .filter(|n| n.method == "notifications/progress")
            .map(|n| n.params.as_ref().unwrap())
            .collect();
        assert_eq!(progress.len() as u64, steps, "{progress:?}");
        assert!(
            progress
                .iter()
                .all(|p| p["progressToken"] == "shared" && p["total"] == steps)
        );
    }
    upstream.shutdown().await;
    server.stop().await;
}

#[tokio::test]
async fn everything_over_http_sampling_comes_on_the_calls_own_stream() {
    let server = everything_http().await;
    let upstream = connect(http_config(
        "everything",
        &server.url(),
        Duration::from_secs(20),
    ))
    .await;
    // Another call with an events channel is in flight: on HTTP the request still goes to
    // the call whose stream carried it, not to the most recent one.
    let (busy_tx, busy_rx) = mpsc::channel(64);
    let busy_seen = answer_events(busy_rx, "wrong call");
    let busy = {
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let params = json!({
                "name": "trigger-long-running-operation",
                "arguments": {"duration": 1.0, "steps": 2},
            });
            upstream
                .call("tools/call", Some(params), Some(busy_tx))
                .await
        })
    };
    let (tx, rx) = mpsc::channel(16);
    let seen = answer_events(rx, "sampled over http");
    let params =
        json!({"name": "trigger-sampling-request", "arguments": {"prompt": "hi", "maxTokens": 5}});
    let result = upstream
        .call("tools/call", Some(params), Some(tx))
        .await
        .unwrap()
        .unwrap();
    assert!(text_of(&result).contains("sampled over http"), "{result}");
    let seen = seen.await.unwrap();
    assert_eq!(seen.requests.len(), 1, "{:?}", seen.requests);
    assert_eq!(seen.requests[0].0, "sampling/createMessage");
    busy.await.unwrap().unwrap().unwrap();
    assert!(busy_seen.await.unwrap().requests.is_empty());
    upstream.shutdown().await;
    server.stop().await;
}

#[tokio::test]
async fn everything_over_http_a_lost_session_is_initialised_anew() {
    let server = everything_http().await;
    let upstream = connect(http_config(
        "everything",
        &server.url(),
        Duration::from_secs(20),
    ))
    .await;
    let first = upstream.session_id().unwrap();
    assert!(delete_session(&server.url(), &first).await.is_success());
    // This server answers an unknown session with 400 ("No valid session ID provided").
    let echoed = tool(upstream.as_ref(), "echo", json!({"message": "again"}))
        .await
        .unwrap();
    assert_eq!(text_of(&echoed), "Echo: again");
    let second = upstream.session_id().unwrap();
    assert_ne!(first, second);
    assert_eq!(upstream.health(), Health::Ready);

    // Shutdown ends the session: the server no longer knows it.
    upstream.shutdown().await;
    assert!(matches!(upstream.health(), Health::Down { .. }));
    let status = delete_session(&server.url(), &second).await;
    assert_eq!(
        status,
        reqwest::StatusCode::BAD_REQUEST,
        "the session should be gone"
    );
    server.stop().await;
}

#[tokio::test]
async fn python_sdk_server_with_json_answers_and_404_for_a_lost_session() {
    let dir = tempfile::tempdir().unwrap();
    let server = python_sdk_server(dir.path()).await;
    let upstream = connect(http_config(
        "python",
        &server.url(),
        Duration::from_secs(20),
    ))
    .await;
    assert_eq!(
        upstream.server_info().unwrap().server_info["name"],
        "python-sdk-peer"
    );
    let sum = tool(upstream.as_ref(), "add", json!({"a": 20, "b": 22}))
        .await
        .unwrap();
    assert_eq!(text_of(&sum), "42");

    let first = upstream.session_id().unwrap();
    assert!(delete_session(&server.url(), &first).await.is_success());
    let sum = tool(upstream.as_ref(), "add", json!({"a": 1, "b": 2}))
        .await
        .unwrap();
    assert_eq!(text_of(&sum), "3");
    assert_ne!(upstream.session_id().unwrap(), first);
    upstream.shutdown().await;
    server.stop().await;
}

#[tokio::test]
async fn headers_versions_and_a_404_retry_against_the_scripted_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = scripted_http(dir.path()).await;
    let mut config = http_config("scripted", &server.url(), Duration::from_secs(10));
    let Transport::Http { headers, .. } = &mut config.transport else {
        unreachable!()
    };
    *headers = BTreeMap::from([(
        "Authorization".to_owned(),
        "Bearer upstream-secret".to_owned(),
    )]);
    let upstream = connect(config).await;
    assert_eq!(
        upstream.server_info().unwrap().protocol_version,
        "2025-06-18"
    );

    let seen = tool(upstream.as_ref(), "headers", json!({})).await.unwrap();
    let seen: Value = serde_json::from_str(text_of(&seen)).unwrap();
    assert_eq!(seen["authorization"], "Bearer upstream-secret");
    assert_eq!(seen["mcp-session-id"], "session-1");
    assert_eq!(seen["mcp-protocol-version"], "2025-06-18");
    assert_eq!(seen["accept"], "application/json, text/event-stream");
    assert_eq!(seen["content-type"], "application/json");

    // The server forgets the session: the next call gets 404, the gateway initialises
    // again and retries once.
    tool(upstream.as_ref(), "expire", json!({})).await.unwrap();
    let echoed = tool(upstream.as_ref(), "echo", json!({"text": "retried"}))
        .await
        .unwrap();
    assert_eq!(text_of(&echoed), "retried");
    assert_eq!(upstream.session_id().as_deref(), Some("session-2"));

    upstream.shutdown().await;
    let deleted = std::fs::read_to_string(dir.path().join("deleted.txt")).unwrap();
    assert_eq!(deleted, "DELETE session-2\n");
    server.stop().await;
}

#[tokio::test]
async fn a_non_2xx_answer_is_unavailable_with_status_and_body() {
    let dir = tempfile::tempdir().unwrap();
    let server = scripted_http(dir.path()).await;
    let upstream = connect(http_config(
        "scripted",
        &server.url(),
        Duration::from_secs(10),
    ))
    .await;
    let err = tool(upstream.as_ref(), "fail", json!({}))
        .await
        .unwrap_err();
    let UpstreamError::Unavailable { reason, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(reason.contains("500"), "{reason}");
    assert!(reason.contains("the database is on fire"), "{reason}");
    assert_eq!(upstream.in_flight(), 0);
    // One failed call does not take the upstream down.
    assert_eq!(upstream.health(), Health::Ready);
    upstream.shutdown().await;
    server.stop().await;
}

#[tokio::test]
async fn sse_answers_with_comments_crlf_and_multi_line_data_and_a_related_notification() {
    let dir = tempfile::tempdir().unwrap();
    let server = scripted_http(dir.path()).await;
    let upstream = connect(http_config(
        "scripted",
        &server.url(),
        Duration::from_secs(10),
    ))
    .await;
    let (tx, rx) = mpsc::channel(8);
    let seen = answer_events(rx, "unused");
    let mut broadcast = upstream.subscribe();
    let result = upstream
        .call("tools/call", Some(json!({"name": "sse"})), Some(tx))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text_of(&result), "streamed");
    let seen = seen.await.unwrap();
    assert_eq!(seen.notifications.len(), 1);
    assert_eq!(seen.notifications[0].method, "notifications/message");
    assert_eq!(
        seen.notifications[0].params.as_ref().unwrap()["data"],
        "working"
    );
    assert!(
        broadcast.try_recv().is_err(),
        "a notification of a call is not broadcast"
    );

    // Without an events channel, the call's notification goes to the subscribers.
    let result = tool(upstream.as_ref(), "sse", json!({})).await.unwrap();
    assert_eq!(text_of(&result), "streamed");
    let n = broadcast
        .try_recv()
        .expect("the notification was broadcast");
    assert_eq!(n.params.unwrap()["data"], "working");
    upstream.shutdown().await;
    server.stop().await;
}

#[tokio::test]
async fn a_response_stream_cut_short_is_resumed_with_last_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = scripted_http(dir.path()).await;
    let upstream = connect(http_config(
        "scripted",
        &server.url(),
        Duration::from_secs(10),
    ))
    .await;
    let result = tool(upstream.as_ref(), "cut", json!({})).await.unwrap();
    assert_eq!(text_of(&result), "resumed");
    upstream.shutdown().await;
    server.stop().await;
}

#[tokio::test]
async fn http_timeout_cancels_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let server = scripted_http(dir.path()).await;
    let upstream = connect(http_config(
        "scripted",
        &server.url(),
        Duration::from_secs(1),
    ))
    .await;
    let started = Instant::now();
    let err = tool(upstream.as_ref(), "hang", json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(upstream.in_flight(), 0);
    // The cancellation is sent in the background; the server answers once it has it.
    let seen = tool(upstream.as_ref(), "cancels", json!({"at_least": 1}))
        .await
        .unwrap();
    let cancels: Vec<Value> = serde_json::from_str(text_of(&seen)).unwrap();
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    assert!(cancels[0]["requestId"].is_i64());
    assert!(cancels[0]["reason"].as_str().unwrap().contains("timed out"));

    // Dropping a call cancels it too.
    let call = tool(upstream.as_ref(), "hang", json!({}));
    let _ = tokio::time::timeout(Duration::from_millis(100), call).await;
    assert_eq!(upstream.in_flight(), 0);
    let seen = tool(upstream.as_ref(), "cancels", json!({"at_least": 2}))
        .await
        .unwrap();
    let cancels: Vec<Value> = serde_json::from_str(text_of(&seen)).unwrap();
    assert_eq!(cancels.len(), 2, "{cancels:?}");
    assert!(cancels[1]["reason"].as_str().unwrap().contains("cancelled"));
    upstream.shutdown().await;
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_server_is_down_calls_fail_fast_and_it_recovers() {
    init_tracing();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let upstream = HttpUpstream::spawn(http_config("later", &url, Duration::from_secs(10)));
    let mut health = upstream.watch_health();
    let down = wait_health(&mut health, |h| matches!(h, Health::Down { .. })).await;
    let Health::Down { reason, .. } = down else {
        unreachable!()
    };
    assert!(reason.contains("initialize failed"), "{reason}");
    let started = Instant::now();
    let err = upstream.call("tools/list", None, None).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Unavailable { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "calls fail fast while down"
    );

    // The server comes up: the supervisor connects on its next try.
    let server = everything_http_on(port).await;
    wait_health(&mut health, |h| *h == Health::Ready).await;
    let echoed = tool(upstream.as_ref(), "echo", json!({"message": "up"}))
        .await
        .unwrap();
    assert_eq!(text_of(&echoed), "Echo: up");

    // It goes away: the upstream is marked down; it comes back: ready again.
    server.stop().await;
    wait_health(&mut health, |h| matches!(h, Health::Down { .. })).await;
    let server = everything_http_on(port).await;
    wait_health(&mut health, |h| *h == Health::Ready).await;
    let echoed = tool(upstream.as_ref(), "echo", json!({"message": "again"}))
        .await
        .unwrap();
    assert_eq!(text_of(&echoed), "Echo: again");
    upstream.shutdown().await;
    server.stop().await;
}
