//! The MCP gateway end to end: a real Warden server, the reference server
//! `@modelcontextprotocol/server-everything` as its stdio upstream, and the wire protocol
//! checked message by message.

mod common;

use std::time::Duration;

use common::TestServer;
use common::mcp::{Mcp, start_gateway as start, start_gateway_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_core::Role;

async fn agent(server: &TestServer) -> Mcp {
    let token = server
        .agent_token("acme", "claude-code", "alice", "acme/platform")
        .await;
    let mut mcp = Mcp::new(format!("{}/mcp", server.base), token);
    mcp.initialize(json!({"sampling": {}})).await;
    mcp
}

fn names(reply: &common::mcp::Reply) -> Vec<String> {
    reply.result()["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The events of a type once at least `n` are there: a call's outcome is written right
/// after the answer leaves, not before.
async fn at_least(server: &TestServer, auditor: &str, kind: &str, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let events = events_of(server, auditor, kind).await;
        if events.len() >= n {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} {kind} events");
}

async fn events_of(server: &TestServer, auditor: &str, kind: &str) -> Vec<Value> {
    let (status, page) = server
        .get(
            &format!("/api/v1/audit/events?type={kind}&limit=100"),
            auditor,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn tools_are_listed_by_policy_and_allowed_calls_are_forwarded_and_recorded() {
    let server = start().await;
    let mcp = agent(&server).await;
    let listed = mcp.call(1, "tools/list", json!({})).await;
    let tools = names(&listed);
    assert!(tools.contains(&"everything__echo".to_owned()), "{tools:?}");
    assert!(
        tools.contains(&"everything__get-sum".to_owned()),
        "{tools:?}"
    );
    // Forbidden outright: not even listed.
    assert!(!tools.iter().any(|t| t.ends_with("get-env")), "{tools:?}");

    let canary = "canary-7f3a9c-never-stored";
    let echoed = mcp
        .tool(2, "everything__echo", json!({"message": canary}))
        .await;
    assert_ne!(echoed.result()["isError"], true);
    assert!(echoed.text().contains(canary), "{:?}", echoed.messages);

    let auditor = server.token("acme", Role::Auditor, None, None, None).await;
    let decided = events_of(&server, &auditor, "mcp.tool.call.decided").await;
    let echo = decided
        .iter()
        .find(|e| e["resource"]["id"] == "everything__echo")
        .expect("the echo decision is recorded");
    assert_eq!(echo["decision"]["outcome"], "allow");
    assert_eq!(echo["actor"]["agent"], "claude-code");
    assert_eq!(echo["actor"]["on_behalf_of"], "alice");
    assert_eq!(
        echo["payload"]["mcp"]["gen_ai.tool.name"],
        "everything__echo"
    );
    assert_eq!(echo["payload"]["mcp"]["jsonrpc.request.id"], "2");
    let completed = at_least(&server, &auditor, "mcp.tool.call.completed", 1).await;
    let done = completed
        .iter()
        .find(|e| e["resource"]["id"] == "everything__echo")
        .expect("the echo outcome is recorded");
    assert_eq!(done["payload"]["outcome"], "success");
    assert_eq!(done["payload"]["result_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(
        events_of(&server, &auditor, "mcp.tools.listed").await.len(),
        1
    );

    // The canary was redacted before storage: it is nowhere in the database files.
    let dir = server.stop().await;
    for entry in std::fs::read_dir(dir.path().join("data")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
                "the canary is in {}",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn a_denied_call_never_reaches_the_server_and_says_why() {
    let server = start().await;
    let mcp = agent(&server).await;
    let denied = mcp.tool(1, "everything__get-env", json!({})).await;
    assert_eq!(denied.result()["isError"], true);
    assert_eq!(
        denied.text(),
        "denied by policy mcp.no-env in acme: Environment variables may hold secrets."
    );
    // A tool no policy allows is denied by default, also with a reason.
    let default = mcp
        .tool(2, "everything__toggle-simulated-logging", json!({}))
        .await;
    assert_eq!(default.result()["isError"], true);
    assert!(
        default
            .text()
            .starts_with("denied: no policy in acme/platform allows"),
        "{}",
        default.text()
    );
    let auditor = server.token("acme", Role::Auditor, None, None, None).await;
    let completed = events_of(&server, &auditor, "mcp.tool.call.completed").await;
    assert!(completed.is_empty(), "nothing was forwarded: {completed:?}");
    let decided = events_of(&server, &auditor, "mcp.tool.call.decided").await;
    assert_eq!(decided.len(), 2);
    assert!(decided.iter().all(|e| e["decision"]["outcome"] == "deny"));
    server.stop().await;
}

async fn pending_approval(server: &TestServer, admin: &str) -> Value {
    for _ in 0..200 {
        let (status, page) = server.get("/api/v1/approvals?status=pending", admin).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        if let Some(a) = page["approvals"].as_array().and_then(|a| a.first()) {
            return a.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no approval request appeared");
}

#[tokio::test]
async fn held_calls_wait_for_a_person_then_proceed_or_fail() {
    let server = start().await;
    let mcp = agent(&server).await;
    let admin = server.token("acme", Role::Admin, None, None, None).await;

    // Approved: the held call goes through with the server's answer.
    let call = mcp.call(
        1,
        "tools/call",
        json!({"name": "everything__get-sum", "arguments": {"a": 2, "b": 3}, "_meta": {"progressToken": "wait-1"}}),
    );
    let approve = async {
        let a = pending_approval(&server, &admin).await;
        assert_eq!(a["resource_id"], "everything__get-sum");
        assert_eq!(a["arguments"], json!({"a": 2, "b": 3}));
        assert_eq!(a["reason"], "Sums need a second pair of eyes.");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, body) = server
            .post(
                &format!("/api/v1/approvals/{}/approve", a["id"].as_str().unwrap()),
                &admin,
                &json!({"comment": "fine"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    };
    let (reply, ()) = tokio::join!(call, approve);
    assert!(reply.text().contains('5'), "{:?}", reply.messages);
    assert_ne!(reply.result()["isError"], true);
    // While held, the client that asked for progress got it.
    assert!(
        reply
            .messages
            .iter()
            .any(|m| m["method"] == "notifications/progress"
                && m["params"]["progressToken"] == "wait-1"),
        "{:?}",
        reply.messages
    );

    // Denied: the call fails with the approver's comment, and nothing is forwarded.
    let call = mcp.tool(2, "everything__get-sum", json!({"a": 1, "b": 1}));
    let deny = async {
        let a = pending_approval(&server, &admin).await;
        let (status, body) = server
            .post(
                &format!("/api/v1/approvals/{}/deny", a["id"].as_str().unwrap()),
                &admin,
                &json!({"comment": "not today"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    };
    let (reply, ()) = tokio::join!(call, deny);
    assert_eq!(reply.result()["isError"], true);
    assert!(reply.text().contains("not today"), "{}", reply.text());

    // The first grant was used up: the same arguments are held again.
    let again = mcp.tool(3, "everything__get-sum", json!({"a": 2, "b": 3}));
    let check = async {
        let a = pending_approval(&server, &admin).await;
        assert_eq!(a["arguments"], json!({"a": 2, "b": 3}));
        server
            .post(
                &format!("/api/v1/approvals/{}/deny", a["id"].as_str().unwrap()),
                &admin,
                &json!({}),
            )
            .await;
    };
    let (reply, ()) = tokio::join!(again, check);
    assert_eq!(reply.result()["isError"], true);

    let auditor = server.token("acme", Role::Auditor, None, None, None).await;
    let completed = at_least(&server, &auditor, "mcp.tool.call.completed", 1).await;
    assert_eq!(completed.len(), 1, "only the approved call was forwarded");
    server.stop().await;
}

#[tokio::test]
async fn server_requests_and_progress_reach_the_agent() {
    let server = start().await;
    let mcp = agent(&server).await;
    let reply = mcp
        .send_with(
            &json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
                "name": "everything__trigger-sampling-request",
                "arguments": {"prompt": "say hi", "maxTokens": 10}
            }}),
            |request| {
                assert_eq!(request["method"], "sampling/createMessage");
                json!({"role": "assistant", "content": {"type": "text", "text": "hello from the agent's model"}, "model": "test-model", "stopReason": "endTurn"})
            },
        )
        .await;
    assert!(
        reply
            .messages
            .iter()
            .any(|m| m["method"] == "sampling/createMessage"),
        "{:?}",
        reply.messages
    );
    let text = reply.result()["content"].to_string();
    assert!(text.contains("hello from the agent's model"), "{text}");

    let progress = mcp
        .call(
            8,
            "tools/call",
            json!({"name": "everything__trigger-long-running-operation", "arguments": {"duration": 1, "steps": 2}, "_meta": {"progressToken": 42}}),
        )
        .await;
    let ticks: Vec<&Value> = progress
        .messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert!(!ticks.is_empty(), "{:?}", progress.messages);
    assert!(ticks.iter().all(|m| m["params"]["progressToken"] == 42));
    server.stop().await;
}

#[tokio::test]
async fn protocol_errors_get_clear_answers() {
    let server = start().await;
    let token = server
        .agent_token("acme", "claude-code", "alice", "acme/platform")
        .await;
    let url = format!("{}/mcp", server.base);
    let client = reqwest::Client::new();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});

    // No token: 401 with a challenge.
    let r = client.post(&url).json(&init).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get("www-authenticate").is_some());
    // A token that is not an agent session: 403.
    let admin = server.token("acme", Role::Admin, None, None, None).await;
    let r = client
        .post(&url)
        .bearer_auth(&admin)
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // A foreign page: 403.
    let r = client
        .post(&url)
        .bearer_auth(&token)
        .header("origin", "https://evil.example")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // An unsupported protocol version header: 400.
    let r = client
        .post(&url)
        .bearer_auth(&token)
        .header("mcp-protocol-version", "1999-01-01")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let mut mcp = Mcp::new(&url, &token);
    mcp.protocol = "2025-06-18".into();
    let result = mcp.initialize(json!({})).await;
    assert_eq!(result["protocolVersion"], "2025-06-18");
    assert_eq!(result["serverInfo"]["name"], "warden");

    // Malformed JSON, a batch, a null id: 400 with a JSON-RPC error.
    for (body, code) in [
        ("{not json", -32700),
        (
            "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]",
            -32600,
        ),
        (
            "{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"ping\"}",
            -32600,
        ),
    ] {
        let r = mcp
            .client
            .post(&url)
            .bearer_auth(&token)
            .header("mcp-session-id", mcp.session.as_ref().unwrap())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{body}: {v}");
    }
    // Unknown method, unknown tool, arguments that do not fit the tool's schema.
    assert_eq!(
        mcp.call(2, "tools/nope", json!({})).await.error()["code"],
        -32601
    );
    let unknown = mcp.tool(3, "everything__nope", json!({})).await;
    assert_eq!(unknown.error()["code"], -32602);
    let bad = mcp
        .tool(4, "everything__get-sum", json!({"a": "two"}))
        .await;
    let message = bad.error()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("arguments.a: expected number, got string"),
        "{message}"
    );
    assert!(
        message.contains("missing required field \"b\""),
        "{message}"
    );
    assert_eq!(mcp.call(5, "ping", json!({})).await.result(), &json!({}));

    // Another agent's token cannot use this session: it looks like no session.
    let other = server
        .agent_token("acme", "other-agent", "bob", "acme/platform")
        .await;
    let mut thief = Mcp::new(&url, &other);
    thief.session = mcp.session.clone();
    assert_eq!(
        thief.call(6, "tools/list", json!({})).await.status,
        StatusCode::NOT_FOUND
    );
    // Without a session id: 400; with an unknown one: 404.
    let mut none = Mcp::new(&url, &token);
    assert_eq!(
        none.call(7, "tools/list", json!({})).await.status,
        StatusCode::BAD_REQUEST
    );
    none.session = Some("0123456789abcdef".into());
    assert_eq!(
        none.call(8, "tools/list", json!({})).await.status,
        StatusCode::NOT_FOUND
    );

    // DELETE ends the session.
    let r = mcp
        .client
        .delete(&url)
        .bearer_auth(&token)
        .header("mcp-session-id", mcp.session.as_ref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        mcp.call(9, "ping", json!({})).await.status,
        StatusCode::NOT_FOUND
    );

    let auditor = server.token("acme", Role::Auditor, None, None, None).await;
    let refused = events_of(&server, &auditor, "mcp.request.refused").await;
    assert_eq!(
        refused.len(),
        2,
        "unknown tool and bad arguments are recorded: {refused:?}"
    );
    assert_eq!(
        events_of(&server, &auditor, "mcp.session.ended")
            .await
            .len(),
        1
    );
    server.stop().await;
}

#[tokio::test]
async fn one_server_endpoint_uses_the_servers_own_names() {
    let server = start().await;
    let token = server
        .agent_token("acme", "claude-code", "alice", "acme/platform")
        .await;
    let mut mcp = Mcp::new(format!("{}/mcp/everything", server.base), token.clone());
    mcp.initialize(json!({})).await;
    let tools = names(&mcp.call(1, "tools/list", json!({})).await);
    assert!(tools.contains(&"echo".to_owned()), "{tools:?}");
    let echoed = mcp.tool(2, "echo", json!({"message": "hi"})).await;
    assert!(echoed.text().contains("hi"));
    // Policies still name the tool with its server.
    let denied = mcp.tool(3, "get-env", json!({})).await;
    assert!(denied.text().contains("mcp.no-env"), "{}", denied.text());

    let mut missing = Mcp::new(format!("{}/mcp/nope", server.base), token);
    let reply = missing
        .send(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}))
        .await;
    assert_eq!(reply.error()["code"], -32602);
    missing.session = None;
    server.stop().await;
}

#[tokio::test]
async fn the_user_can_approve_a_held_call_in_their_own_client() {
    let server = start_gateway_with(|g| g.elicitation_approvals = true).await;
    let token = server
        .agent_token("acme", "claude-code", "alice", "acme/platform")
        .await;
    let mut mcp = Mcp::new(format!("{}/mcp", server.base), token);
    mcp.initialize(json!({"elicitation": {}})).await;
    let reply = mcp
        .send_with(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                "name": "everything__get-sum", "arguments": {"a": 4, "b": 5}
            }}),
            |request| {
                assert_eq!(request["method"], "elicitation/create");
                let message = request["params"]["message"].as_str().unwrap();
                assert!(message.contains("everything__get-sum"), "{message}");
                json!({"action": "accept", "content": {"approve": true, "comment": "mine"}})
            },
        )
        .await;
    assert!(reply.text().contains('9'), "{:?}", reply.messages);
    assert_ne!(reply.result()["isError"], true);

    let admin = server.token("acme", Role::Admin, None, None, None).await;
    let (status, page) = server.get("/api/v1/approvals", &admin).await;
    assert_eq!(status, StatusCode::OK);
    let a = &page["approvals"][0];
    assert_eq!(a["status"], "consumed", "{a}");
    assert_eq!(a["resolved_via"], "elicitation");
    assert_eq!(a["resolved_by"], "user:alice");
    assert_eq!(a["comment"], "mine");

    // Declined in the client: the call fails and nothing is forwarded.
    let reply = mcp
        .send_with(
            &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": "everything__get-sum", "arguments": {"a": 1, "b": 2}
            }}),
            |_| json!({"action": "decline"}),
        )
        .await;
    assert_eq!(reply.result()["isError"], true);
    assert!(
        reply.text().contains("denied by approver user:alice"),
        "{}",
        reply.text()
    );
    server.stop().await;
}
