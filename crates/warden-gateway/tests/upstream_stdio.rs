//! The stdio upstream against real MCP servers (`@modelcontextprotocol/server-everything`,
//! `@modelcontextprotocol/server-filesystem`, installed by scripts/install-peers.sh) and
//! against a small scripted server that misbehaves on request.

mod upstream_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use upstream_support::*;
use warden_gateway::upstream::stdio::StdioUpstream;
use warden_gateway::upstream::{Health, Transport, Upstream, UpstreamError};

async fn everything() -> Arc<StdioUpstream> {
    init_tracing();
    let config = stdio_config(
        "everything",
        peer_bin("mcp-server-everything"),
        &[],
        Duration::from_secs(20),
    );
    let upstream = StdioUpstream::spawn(config);
    wait_ready(&mut upstream.watch_health()).await;
    upstream
}

async fn scripted(dir: &tempfile::TempDir, timeout: Duration) -> Arc<StdioUpstream> {
    init_tracing();
    let script = write_script(dir.path(), "scripted.py", SCRIPTED_STDIO);
    let config = stdio_config("scripted", python(), &[script.to_str().unwrap()], timeout);
    let upstream = StdioUpstream::spawn(config);
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

/// Waits for a log notification (on the broadcast channel) whose data has `key`.
async fn next_log(
    notifications: &mut tokio::sync::broadcast::Receiver<warden_gateway::jsonrpc::Notification>,
    key: &str,
) -> Value {
    let wait = async {
        loop {
            let n = notifications
                .recv()
                .await
                .expect("the notification channel is open");
            if n.method == "notifications/message" {
                let data = n.params.unwrap()["data"].clone();
                if data.get(key).is_some() {
                    return data;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("no log notification with {key:?}"))
}

#[tokio::test]
async fn everything_initializes_and_lists_its_tools() {
    let upstream = everything().await;
    let info = upstream.server_info().expect("initialized");
    assert!(
        ["2025-11-25", "2025-06-18", "2025-03-26"].contains(&info.protocol_version.as_str()),
        "{}",
        info.protocol_version
    );
    assert!(
        info.capabilities.get("tools").is_some(),
        "{}",
        info.capabilities
    );
    assert!(info.server_info["name"].is_string(), "{}", info.server_info);
    assert_eq!(upstream.health(), Health::Ready);

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
        "get-sum",
        "trigger-long-running-operation",
        "trigger-sampling-request",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }

    let echoed = tool(upstream.as_ref(), "echo", json!({"message": "hello"}))
        .await
        .unwrap();
    assert_eq!(text_of(&echoed), "Echo: hello");

    // An error of the server's own comes back as Ok(Err(_)).
    let unknown = upstream.call("no/such/method", None, None).await.unwrap();
    assert_eq!(unknown.unwrap_err().code, -32601);
    upstream.shutdown().await;
}

#[tokio::test]
async fn concurrent_callers_with_the_same_progress_token_each_get_their_own_progress() {
    let upstream = everything().await;
    let call = |steps: u64| {
        let upstream = upstream.clone();
        async move {
            let (tx, rx) = mpsc::channel(64);
            let seen = answer_events(rx, "unused");
            let params = json!({
                "name": "trigger-long-running-operation",
                "arguments": {"duration": 0.3, "steps": steps},
                "_meta": {"progressToken": "same-token"},
            });
            let result = upstream.call("tools/call", Some(params), Some(tx)).await;
            (result, seen.await.unwrap())
        }
    };
    let ((a, seen_a), (b, seen_b)) = tokio::join!(call(2), call(3));
    assert!(text_of(&a.unwrap().unwrap()).contains("Steps: 2"));
    assert!(text_of(&b.unwrap().unwrap()).contains("Steps: 3"));
    for (seen, steps) in [(seen_a, 2), (seen_b, 3)] {
        let progress: Vec<&Value> = seen
            .notifications
            .iter()
            .filter(|n| n.method == "notifications/progress")
            .map(|n| n.params.as_ref().unwrap())
            .collect();
        assert_eq!(progress.len(), steps, "{progress:?}");
        for (i, p) in progress.iter().enumerate() {
            assert_eq!(
                p["progressToken"], "same-token",
                "the caller's token is restored"
            );
            assert_eq!(p["progress"], i as u64 + 1);
            assert_eq!(p["total"], steps as u64);
        }
    }
    assert_eq!(upstream.in_flight(), 0);
    upstream.shutdown().await;
}

#[tokio::test]
async fn a_sampling_request_from_the_server_reaches_the_caller_and_its_answer_the_tool() {
    let upstream = everything().await;
    let (tx, rx) = mpsc::channel(16);
    let seen = answer_events(rx, "the answer is forty-two");
    let params = json!({
        "name": "trigger-sampling-request",
        "arguments": {"prompt": "what is six times seven?", "maxTokens": 20},
    });
    let result = upstream
        .call("tools/call", Some(params), Some(tx))
        .await
        .unwrap()
        .unwrap();
    let seen = seen.await.unwrap();
    let sampling: Vec<_> = seen
        .requests
        .iter()
        .filter(|(method, _)| method == "sampling/createMessage")
        .collect();
    assert_eq!(sampling.len(), 1, "{:?}", seen.requests);
    let asked = sampling[0].1.as_ref().unwrap();
    assert!(
        asked["messages"][0]["content"]["text"]
            .as_str()
            .unwrap()
            .contains("six times seven")
    );
    assert!(
        text_of(&result).contains("the answer is forty-two"),
        "{result}"
    );
    upstream.shutdown().await;
}

#[tokio::test]
async fn filesystem_server_reads_a_file_in_its_allowed_directory() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().canonicalize().unwrap();
    std::fs::write(allowed.join("note.txt"), "governed contents\n").unwrap();
    let config = stdio_config(
        "filesystem",
        peer_bin("mcp-server-filesystem"),
        &[allowed.to_str().unwrap()],
        Duration::from_secs(20),
    );
    let upstream = StdioUpstream::spawn(config);
    wait_ready(&mut upstream.watch_health()).await;
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
    for expected in ["read_text_file", "list_directory", "write_file"] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let path = allowed.join("note.txt");
    let read = tool(upstream.as_ref(), "read_text_file", json!({"path": path}))
        .await
        .unwrap();
    assert!(text_of(&read).contains("governed contents"), "{read}");
    // Outside the allowed directory the server refuses (a tool error, not a transport one).
    let outside = tool(
        upstream.as_ref(),
        "read_text_file",
        json!({"path": "/etc/hostname"}),
    )
    .await
    .unwrap();
    assert_eq!(outside["isError"], true, "{outside}");
    upstream.shutdown().await;
}

#[tokio::test]
async fn progress_tokens_are_rewritten_on_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = scripted(&dir, Duration::from_secs(10)).await;
    let params =
        json!({"name": "meta", "arguments": {}, "_meta": {"progressToken": 7, "other": "kept"}});
    let first = upstream
        .call("tools/call", Some(params.clone()), None)
        .await
        .unwrap()
        .unwrap();
    let second = upstream
        .call("tools/call", Some(params), None)
        .await
        .unwrap()
        .unwrap();
    let first: Value = serde_json::from_str(text_of(&first)).unwrap();
    let second: Value = serde_json::from_str(text_of(&second)).unwrap();
    assert_eq!(first["other"], "kept");
    assert_ne!(
        first["progressToken"],
        json!(7),
        "the caller's token must not reach the server"
    );
    assert_ne!(first["progressToken"], second["progressToken"]);
    upstream.shutdown().await;
}

#[tokio::test]
async fn dropping_a_call_cancels_it_upstream_and_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = scripted(&dir, Duration::from_secs(30)).await;
    let mut notifications = upstream.subscribe();
    let call = upstream.call("tools/call", Some(json!({"name": "hang"})), None);
    let started = tokio::select! {
        _ = call => panic!("hang answered"),
        started = next_log(&mut notifications, "started") => started,
    };
    // The select dropped the call future.
    let cancelled = next_log(&mut notifications, "cancelled").await;
    assert_eq!(cancelled["cancelled"], started["started"]);
    assert!(cancelled["reason"].as_str().unwrap().contains("cancelled"));
    assert_eq!(upstream.in_flight(), 0);
    let echoed = tool(upstream.as_ref(), "echo", json!({"text": "still here"}))
        .await
        .unwrap();
    assert_eq!(text_of(&echoed), "still here");
    upstream.shutdown().await;
}

#[tokio::test]
async fn a_call_that_gets_no_answer_times_out_and_is_cancelled_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = scripted(&dir, Duration::from_secs(1)).await;
    let mut notifications = upstream.subscribe();
    let started = Instant::now();
    let err = upstream
        .call("tools/call", Some(json!({"name": "hang"})), None)
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(4));
    let announced = next_log(&mut notifications, "started").await;
    let cancelled = next_log(&mut notifications, "cancelled").await;
    assert_eq!(cancelled["cancelled"], announced["started"]);
    assert!(
        cancelled["reason"].as_str().unwrap().contains("timed out"),
        "{cancelled}"
    );
    assert_eq!(upstream.in_flight(), 0);
    upstream.shutdown().await;
}

#[tokio::test]
async fn a_crash_mid_call_fails_the_call_and_the_server_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = scripted(&dir, Duration::from_secs(10)).await;
    let mut health = upstream.watch_health();
    let (tx, _rx) = mpsc::channel(4);
    let err = upstream
        .call("tools/call", Some(json!({"name": "crash"})), Some(tx))
        .await
        .unwrap_err();
    let UpstreamError::Crashed { reason, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(reason.contains("status 3"), "{reason}");
    assert!(reason.contains("crashing on purpose"), "{reason}");
    let down = upstream.health();
    assert!(
        matches!(&down, Health::Down { restarts: 0, .. }),
        "{down:?}"
    );

    wait_health(&mut health, |h| *h == Health::Ready).await;
    let echoed = tool(upstream.as_ref(), "echo", json!({"text": "back"}))
        .await
        .unwrap();
    assert_eq!(text_of(&echoed), "back");
    assert_eq!(
        upstream.server_info().unwrap().server_info["name"],
        "scripted"
    );
    upstream.shutdown().await;
    assert!(
        matches!(upstream.health(), Health::Down { restarts: 1, .. }),
        "{:?}",
        upstream.health()
    );
}

#[tokio::test]
async fn invalid_lines_are_counted_and_a_malformed_response_fails_its_call() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = scripted(&dir, Duration::from_secs(1)).await;
    let after = tool(upstream.as_ref(), "garbage", json!({})).await.unwrap();
    assert_eq!(text_of(&after), "after garbage");
    assert_eq!(upstream.invalid_messages(), 1);

    let err = tool(upstream.as_ref(), "malformed", json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Protocol { .. }), "{err}");
    assert_eq!(upstream.invalid_messages(), 2);

    // A line that is not even JSON cannot be matched to a call: the call runs into its
    // timeout, and the connection stays usable.
    let err = tool(upstream.as_ref(), "garbage-only", json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Timeout { .. }), "{err}");
    assert_eq!(upstream.invalid_messages(), 3);
    let echoed = tool(upstream.as_ref(), "echo", json!({"text": "fine"}))
        .await
        .unwrap();
    assert_eq!(text_of(&echoed), "fine");
    upstream.shutdown().await;
}

#[tokio::test]
async fn server_requests_go_to_the_latest_call_with_events_or_are_answered_here() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = scripted(&dir, Duration::from_secs(10)).await;
    let ask =
        |method: &str| json!({"name": "ask", "arguments": {"method": method, "params": {"x": 1}}});

    // An older call with events is in flight (hang); the newer one gets the request.
    let (old_tx, mut old_rx) = mpsc::channel(4);
    let hanging = {
        let upstream = upstream.clone();
        tokio::spawn(async move {
            upstream
                .call("tools/call", Some(json!({"name": "hang"})), Some(old_tx))
                .await
        })
    };
    let mut notifications = upstream.subscribe();
    next_log(&mut notifications, "started").await;
    let (tx, rx) = mpsc::channel(4);
    let seen = answer_events(rx, "sampled text");
    let result = upstream
        .call("tools/call", Some(ask("sampling/createMessage")), Some(tx))
        .await
        .unwrap()
        .unwrap();
    let seen = seen.await.unwrap();
    assert_eq!(seen.requests.len(), 1);
    assert_eq!(seen.requests[0].0, "sampling/createMessage");
    assert_eq!(seen.requests[0].1, Some(json!({"x": 1})));
    let response: Value = serde_json::from_str(text_of(&result)).unwrap();
    assert_eq!(response["result"], sampling_answer("sampled text"));
    assert!(old_rx.try_recv().is_err(), "the older call got nothing");
    hanging.abort();

    // No call with events: ping is answered by the gateway, anything else is refused.
    let pinged = tool(upstream.as_ref(), "ask", json!({"method": "ping"}))
        .await
        .unwrap();
    let response: Value = serde_json::from_str(text_of(&pinged)).unwrap();
    assert_eq!(response["result"], json!({}));
    let refused = tool(upstream.as_ref(), "ask", json!({"method": "roots/list"}))
        .await
        .unwrap();
    let response: Value = serde_json::from_str(text_of(&refused)).unwrap();
    assert!(
        response["error"]["message"]
            .as_str()
            .unwrap()
            .contains("roots/list"),
        "{response}"
    );

    // A caller that drops the reply answers the server with an error.
    let (tx, mut rx) = mpsc::channel(4);
    let dropper = tokio::spawn(async move {
        if let Some(warden_gateway::upstream::ServerMessage::Request { reply, .. }) =
            rx.recv().await
        {
            drop(reply);
        }
    });
    let result = upstream
        .call("tools/call", Some(ask("elicitation/create")), Some(tx))
        .await
        .unwrap()
        .unwrap();
    dropper.await.unwrap();
    let response: Value = serde_json::from_str(text_of(&result)).unwrap();
    assert!(response["error"]["message"].is_string(), "{response}");
    upstream.shutdown().await;
}

#[tokio::test]
async fn the_child_gets_only_the_allowed_environment() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "scripted.py", SCRIPTED_STDIO);
    let mut config = stdio_config(
        "scripted",
        python(),
        &[script.to_str().unwrap()],
        Duration::from_secs(10),
    );
    let Transport::Stdio { env, cwd, .. } = &mut config.transport else {
        unreachable!()
    };
    *env = BTreeMap::from([("UPSTREAM_TOKEN".to_owned(), "for-the-server".to_owned())]);
    *cwd = Some(dir.path().to_owned());
    let upstream = StdioUpstream::spawn(config);
    wait_ready(&mut upstream.watch_health()).await;
    let result = tool(upstream.as_ref(), "env", json!({})).await.unwrap();
    let env: BTreeMap<String, String> = serde_json::from_str(text_of(&result)).unwrap();
    assert_eq!(
        env.get("UPSTREAM_TOKEN").map(String::as_str),
        Some("for-the-server")
    );
    assert!(env.contains_key("PATH"));
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    assert!(
        !env.contains_key("CARGO_MANIFEST_DIR"),
        "the gateway's environment leaked"
    );
    // Python itself may add LC_CTYPE (PEP 538); nothing else beyond the allowed names.
    for key in env.keys() {
        assert!(
            [
                "PATH",
                "HOME",
                "LANG",
                "TMPDIR",
                "UPSTREAM_TOKEN",
                "LC_CTYPE",
                "PWD"
            ]
            .contains(&key.as_str()),
            "unexpected variable {key}"
        );
    }
    upstream.shutdown().await;
}

#[tokio::test]
async fn a_server_that_cannot_start_is_down_and_calls_fail_fast() {
    init_tracing();
    let config = stdio_config(
        "missing",
        "/nonexistent/mcp-server",
        &[],
        Duration::from_secs(10),
    );
    let upstream = StdioUpstream::spawn(config);
    let down = wait_health(&mut upstream.watch_health(), |h| {
        matches!(h, Health::Down { .. })
    })
    .await;
    let Health::Down { reason, .. } = down else {
        unreachable!()
    };
    assert!(reason.contains("could not start"), "{reason}");
    let started = Instant::now();
    let err = upstream.call("tools/list", None, None).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Unavailable { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "calls fail fast while down"
    );
    upstream.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_the_child_and_pending_calls() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = scripted(&dir, Duration::from_secs(30)).await;
    let env = tool(upstream.as_ref(), "env", json!({})).await.unwrap();
    assert!(text_of(&env).contains("PATH"));
    let hanging = {
        let upstream = upstream.clone();
        tokio::spawn(async move {
            upstream
                .call("tools/call", Some(json!({"name": "hang"})), None)
                .await
        })
    };
    let mut notifications = upstream.subscribe();
    next_log(&mut notifications, "started").await;
    upstream.shutdown().await;
    let err = hanging.await.unwrap().unwrap_err();
    assert!(matches!(err, UpstreamError::Unavailable { .. }), "{err}");
    assert!(matches!(upstream.health(), Health::Down { .. }));
    let err = tool(upstream.as_ref(), "echo", json!({"text": "x"}))
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Unavailable { .. }), "{err}");
}

#[tokio::test]
async fn connect_dispatches_on_the_transport() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "scripted.py", SCRIPTED_STDIO);
    let config = stdio_config(
        "scripted",
        python(),
        &[script.to_str().unwrap()],
        Duration::from_secs(10),
    );
    let upstream = warden_gateway::upstream::connect(&config);
    assert_eq!(upstream.name(), "scripted");
    // Calls made while it starts wait for it.
    let echoed = tool(upstream.as_ref(), "echo", json!({"text": "early"}))
        .await
        .unwrap();
    assert_eq!(text_of(&echoed), "early");
    assert_eq!(
        upstream.server_info().unwrap().instructions.as_deref(),
        Some("misbehaves on request")
    );
    upstream.shutdown().await;
}
