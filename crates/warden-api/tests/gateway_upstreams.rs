//! One gateway, several upstreams of every kind: the reference server-everything over
//! Streamable HTTP, server-filesystem over stdio, and a server that misbehaves (hangs,
//! crashes, writes garbage). Each failure reaches only the call it concerns, as a tool error
//! the agent can read, and is recorded; everyone else keeps being served.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::TestServer;
use common::mcp::{Mcp, peers_dir};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use warden_core::Role;
use warden_gateway::upstream::{Transport, UpstreamConfig};

const POLICIES: &str = r#"
@id("list") permit (principal is Agent, action == Action::"list_tools", resource is Tool);
@id("call") permit (principal is Agent, action == Action::"call_tool", resource is Tool);
"#;

/// An MCP server on stdio whose tools fail in the ways real servers do.
const FLAKY: &str = r#"
import json, sys
def send(m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()
for line in sys.stdin:
    m = json.loads(line)
    method, mid = m.get("method"), m.get("id")
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": mid, "result": {"protocolVersion": m["params"]["protocolVersion"],
              "capabilities": {"tools": {}}, "serverInfo": {"name": "flaky", "version": "1"}}})
    elif method == "tools/list":
        tool = lambda n: {"name": n, "inputSchema": {"type": "object"}}
        send({"jsonrpc": "2.0", "id": mid, "result": {"tools": [tool("hang"), tool("crash"), tool("ok")]}})
    elif method == "tools/call":
        name = m["params"]["name"]
        if name == "hang":
            continue
        if name == "crash":
            sys.exit(3)
        send({"jsonrpc": "2.0", "id": mid, "result": {"content": [{"type": "text", "text": "fine"}]}})
    elif mid is not None:
        send({"jsonrpc": "2.0", "id": mid, "result": {}})
"#;

async fn everything_over_http() -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child =
        tokio::process::Command::new(peers_dir().join("node_modules/.bin/mcp-server-everything"))
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for r in [
        Box::new(out) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        Box::new(err),
    ] {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = tx.send(l);
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = rx.recv().await {
            if l.contains("listening on port") {
                return;
            }
        }
        panic!("server-everything ended before listening");
    })
    .await
    .expect("server-everything listens");
    (child, format!("http://127.0.0.1:{port}/mcp"))
}

fn stdio(name: &str, command: &Path, args: Vec<String>, timeout: Duration) -> UpstreamConfig {
    UpstreamConfig {
        name: name.into(),
        transport: Transport::Stdio {
            command: command.display().to_string(),
            args,
            env: Default::default(),
            cwd: None,
        },
        timeout: Some(timeout),
    }
}

#[tokio::test]
async fn every_kind_of_upstream_behind_one_gateway_and_failures_stay_local() {
    let (_everything, url) = everything_over_http().await;
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("hello.txt"), "hello from the filesystem").unwrap();
    let flaky = dir.path().join("flaky.py");
    std::fs::write(&flaky, FLAKY).unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(policies.join("acme")).unwrap();
    std::fs::write(policies.join("acme/all.cedar"), POLICIES).unwrap();
    let peers = peers_dir();
    let files_arg = files.display().to_string();
    let server = TestServer::start_in(tempfile::tempdir().unwrap(), move |c| {
        c.policies = Some(policies);
        c.gateway.upstreams = vec![
            UpstreamConfig {
                name: "remote".into(),
                transport: Transport::Http {
                    url,
                    headers: Default::default(),
                },
                timeout: Some(Duration::from_secs(20)),
            },
            stdio(
                "files",
                &peers.join("node_modules/.bin/mcp-server-filesystem"),
                vec![files_arg],
                Duration::from_secs(20),
            ),
            stdio(
                "flaky",
                Path::new("python3"),
                vec![flaky.display().to_string()],
                Duration::from_secs(1),
            ),
        ];
    })
    .await;
    let token = server
        .agent_token("acme", "claude-code", "alice", "acme/platform")
        .await;
    let mut mcp = Mcp::new(format!("{}/mcp", server.base), &token);
    mcp.initialize(json!({})).await;

    let listed = mcp.call(1, "tools/list", json!({})).await;
    let names: Vec<&str> = listed.result()["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for expected in [
        "remote__echo",
        "files__read_text_file",
        "flaky__hang",
        "flaky__ok",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }

    let echoed = mcp
        .tool(2, "remote__echo", json!({"message": "over http"}))
        .await;
    assert!(echoed.text().contains("over http"), "{:?}", echoed.messages);
    let path = files.join("hello.txt").display().to_string();
    let read = mcp
        .tool(3, "files__read_text_file", json!({"path": path}))
        .await;
    assert!(
        read.text().contains("hello from the filesystem"),
        "{:?}",
        read.messages
    );
    let outside = mcp
        .tool(4, "files__read_text_file", json!({"path": "/etc/hostname"}))
        .await;
    assert_eq!(outside.result()["isError"], true, "{:?}", outside.messages);

    // A hanging server: the agent gets a tool error after the upstream's timeout, and a
    // call to another server made meanwhile is answered at once.
    let (hung, other) = tokio::join!(
        mcp.tool(5, "flaky__hang", json!({})),
        mcp.tool(6, "remote__echo", json!({"message": "not blocked"}))
    );
    assert_eq!(hung.result()["isError"], true);
    assert!(
        hung.text().contains("did not answer within"),
        "{}",
        hung.text()
    );
    assert!(other.text().contains("not blocked"));

    // A crash mid-call: a tool error naming it; the server is restarted for later calls.
    let crashed = mcp.tool(7, "flaky__crash", json!({})).await;
    assert_eq!(crashed.result()["isError"], true);
    assert!(crashed.text().contains("flaky"), "{}", crashed.text());
    let mut later = None;
    for i in 0..50 {
        let r = mcp.tool(100 + i, "flaky__ok", json!({})).await;
        if r.result()["isError"] != true {
            later = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        later.expect("flaky comes back after its restart").text(),
        "fine"
    );

    let auditor = server.token("acme", Role::Auditor, None, None, None).await;
    // Outcomes are written right after the answers leave; wait until all are there.
    let mut outcomes: Vec<(String, String)> = Vec::new();
    for _ in 0..100 {
        let (status, page) = server
            .get(
                "/api/v1/audit/events?type=mcp.tool.call.completed&limit=100",
                &auditor,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        outcomes = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e: &Value| {
                (
                    e["resource"]["id"].as_str().unwrap().to_owned(),
                    e["payload"]["outcome"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        if outcomes.iter().any(|(t, _)| t == "flaky__ok") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        outcomes.contains(&("flaky__hang".into(), "timeout".into())),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&("flaky__crash".into(), "crashed".into())),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&("remote__echo".into(), "success".into())),
        "{outcomes:?}"
    );
    server.stop().await;
}
