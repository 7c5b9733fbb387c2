//! Interoperability with MCP software we did not write: the official Python SDK as the
//! agent's client against Warden's `/mcp`, with the reference server-everything behind it.
//! (The MCP Inspector CLI, which cannot send a bearer token over HTTP, is tested through
//! `warden gateway stdio` in the `warden` crate.)

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::TestServer;
use common::mcp::{interop_script, python, start_gateway};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use warden_core::Role;

/// Answers held calls as a person would: approve the 20 + 22 sum, deny any other.
async fn approver(server: &TestServer, admin: &str, mut remaining: usize) {
    while remaining > 0 {
        let (status, page) = server.get("/api/v1/approvals?status=pending", admin).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for a in page["approvals"].as_array().cloned().unwrap_or_default() {
            let verb = if a["arguments"] == json!({"a": 20, "b": 22}) {
                "approve"
            } else {
                "deny"
            };
            let (status, body) = server
                .post(
                    &format!("/api/v1/approvals/{}/{verb}", a["id"].as_str().unwrap()),
                    admin,
                    &json!({"comment": format!("{verb} from the interop test")}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            remaining -= 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_official_python_sdk_lists_calls_is_denied_and_is_held() {
    let server = start_gateway().await;
    let token = server
        .agent_token("acme", "python-agent", "alice", "acme/platform")
        .await;
    let admin = server.token("acme", Role::Admin, None, None, None).await;
    let mut child = tokio::process::Command::new(python())
        .arg(interop_script("python_client.py"))
        .args(["http", &format!("{}/mcp", server.base), &token])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python runs");
    let stdout = child.stdout.take().unwrap();
    let client = async {
        let mut steps = std::collections::HashMap::new();
        let mut lines = BufReader::new(stdout).lines();
        while let Some(line) = lines.next_line().await.unwrap() {
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("{line}"));
            steps.insert(v["step"].as_str().unwrap().to_owned(), v);
        }
        steps
    };
    let (steps, ()) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(client, approver(&server, &admin, 2))
    })
    .await
    .expect("the python client finishes");
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert_eq!(steps["connected"]["server"], "warden");
    let tools: Vec<String> = serde_json::from_value(steps["list"]["tools"].clone()).unwrap();
    assert!(tools.contains(&"everything__echo".to_owned()), "{tools:?}");
    assert!(
        !tools.contains(&"everything__get-env".to_owned()),
        "{tools:?}"
    );
    assert_eq!(steps["echo"]["is_error"], false);
    assert!(
        steps["echo"]["text"]
            .as_str()
            .unwrap()
            .contains("hello from python")
    );
    assert_eq!(steps["denied"]["is_error"], true);
    assert_eq!(
        steps["denied"]["text"],
        "denied by policy mcp.no-env in acme: Environment variables may hold secrets."
    );
    assert_eq!(steps["approved"]["is_error"], false);
    assert!(
        steps["approved"]["text"].as_str().unwrap().contains("42"),
        "{:?}",
        steps["approved"]
    );
    assert_eq!(steps["refused"]["is_error"], true);
    assert!(
        steps["refused"]["text"]
            .as_str()
            .unwrap()
            .contains("deny from the interop test"),
        "{:?}",
        steps["refused"]
    );
    assert_eq!(steps["sampling"]["is_error"], false);
    assert!(
        steps["sampling"]["text"]
            .as_str()
            .unwrap()
            .contains("sampled by the python client"),
        "{:?}",
        steps["sampling"]
    );
    server.stop().await;
}
