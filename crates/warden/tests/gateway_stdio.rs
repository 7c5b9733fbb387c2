//! `warden gateway stdio` with MCP software we did not write on both sides: the official
//! Python SDK and the MCP Inspector CLI as the agent's client, the reference
//! server-everything as the server; held calls answered with `warden approvals`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{BIN, create_token, path_str, warden};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const POLICIES: &str = r#"
@id("list") permit (principal is Agent, action == Action::"list_tools", resource is Tool);

@id("read-only") @reason("Read-only tools are allowed.")
permit (principal is Agent, action == Action::"call_tool", resource is Tool)
when { resource has read_only && resource.read_only };

@id("echo") permit (principal is Agent, action == Action::"call_tool", resource == Tool::"everything__echo");

@id("no-env") @reason("Environment variables may hold secrets.")
forbid (principal, action == Action::"call_tool", resource == Tool::"everything__get-env");

@id("sum-ask") @effect("ask") @reason("Sums need a second pair of eyes.")
permit (principal is Agent, action == Action::"call_tool", resource == Tool::"everything__get-sum");

@id("sampling")
permit (principal is Agent, action == Action::"call_tool", resource == Tool::"everything__trigger-sampling-request");
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

struct Setup {
    _dir: tempfile::TempDir,
    data: PathBuf,
    policies: PathBuf,
    token: String,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(policies.join("acme")).unwrap();
    std::fs::write(policies.join("acme/tools.cedar"), POLICIES).unwrap();
    let token = create_token(
        &data,
        &[
            "--tenant",
            "acme",
            "--role",
            "agent",
            "--agent",
            "stdio-agent",
            "--on-behalf-of",
            "alice",
            "--namespace",
            "acme/platform",
        ],
    )
    .await;
    Setup {
        _dir: dir,
        data,
        policies,
        token: token.secret,
    }
}

/// The command line an agent would configure for its server.
fn wrapper(s: &Setup) -> Vec<String> {
    let server = peers().join("node_modules/.bin/mcp-server-everything");
    [
        BIN,
        "gateway",
        "stdio",
        "--token",
        &s.token,
        "--data-dir",
        path_str(&s.data),
        "--policies",
        path_str(&s.policies),
        "--server",
        "everything",
        "--",
        path_str(&server),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Approves the pending request for 20 + 22 with the CLI, as a person at the server would.
async fn approve_with_cli(data: &Path) {
    for _ in 0..600 {
        let out = warden(&[
            "approvals",
            "list",
            "--data-dir",
            path_str(data),
            "--tenant",
            "acme",
            "--status",
            "pending",
            "--format",
            "json",
        ])
        .await;
        assert!(out.success(), "{}", out.text());
        let pending: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
        if let Some(a) = pending.first() {
            assert_eq!(a["arguments"], serde_json::json!({"a": 20, "b": 22}));
            let out = warden(&[
                "approvals",
                "approve",
                a["id"].as_str().unwrap(),
                "--data-dir",
                path_str(data),
                "--tenant",
                "acme",
                "--by",
                "tester",
                "--comment",
                "ok",
            ])
            .await;
            assert!(out.success(), "{}", out.text());
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no approval request appeared");
}

#[tokio::test]
async fn the_python_sdk_speaks_stdio_to_warden_which_governs_the_server() {
    let s = setup().await;
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/python_client.py");
    let mut child = tokio::process::Command::new(peers().join("venv/bin/python"))
        .arg(script)
        .arg("stdio")
        .args(wrapper(&s))
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
        tokio::join!(read, approve_with_cli(&s.data))
    })
    .await
    .expect("the python client finishes");
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert_eq!(steps["connected"]["server"], "warden");
    let tools: Vec<String> = serde_json::from_value(steps["list"]["tools"].clone()).unwrap();
    assert!(tools.contains(&"echo".to_owned()), "{tools:?}");
    assert!(!tools.contains(&"get-env".to_owned()), "{tools:?}");
    assert_eq!(steps["echo"]["is_error"], false);
    assert_eq!(steps["denied"]["is_error"], true);
    assert_eq!(
        steps["denied"]["text"],
        "denied by policy no-env in acme: Environment variables may hold secrets."
    );
    assert_eq!(steps["approved"]["is_error"], false);
    assert!(steps["approved"]["text"].as_str().unwrap().contains("42"));
    assert!(
        steps["sampling"]["text"]
            .as_str()
            .unwrap()
            .contains("sampled by the python client"),
        "{:?}",
        steps["sampling"]
    );

    // Everything was recorded in the store the wrapper was given, and the log verifies.
    let verify = warden(&["audit", "verify", "--data-dir", path_str(&s.data)]).await;
    assert!(verify.success(), "{}", verify.text());
    let export = warden(&[
        "audit",
        "export",
        "--data-dir",
        path_str(&s.data),
        "--tenant",
        "acme",
    ])
    .await;
    assert!(export.success(), "{}", export.text());
    let types: Vec<String> = export
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    for t in [
        "mcp.session.started",
        "mcp.tools.listed",
        "mcp.tool.call.decided",
        "mcp.tool.call.completed",
        "approval.requested",
        "approval.granted",
        "approval.consumed",
        "mcp.session.ended",
    ] {
        assert!(types.iter().any(|x| x == t), "{t} missing from {types:?}");
    }
}

#[tokio::test]
async fn the_mcp_inspector_cli_lists_and_calls_tools_through_the_stdio_gateway() {
    let s = setup().await;
    let inspector = peers().join("node_modules/.bin/mcp-inspector");
    let server = peers().join("node_modules/.bin/mcp-server-everything");
    // The inspector passes its own environment to the command it spawns; the settings go
    // there, since it would take the wrapper's options for its own.
    let run = |method: &[&str]| {
        // Command first: after a `--`, the inspector would read the command as values of
        // a variadic option such as --tool-arg.
        let mut args: Vec<String> = ["--cli", BIN, "gateway", "stdio", path_str(&server)]
            .map(String::from)
            .to_vec();
        args.extend(method.iter().map(|s| s.to_string()));
        let inspector = inspector.clone();
        let (token, data, policies) = (s.token.clone(), s.data.clone(), s.policies.clone());
        async move {
            let out = tokio::process::Command::new(inspector)
                .args(args)
                .env("WARDEN_TOKEN", token)
                .env("WARDEN_DATA_DIR", data)
                .env("WARDEN_POLICIES", policies)
                .env("WARDEN_GATEWAY_SERVER", "everything")
                .output()
                .await
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "inspector failed: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_str::<Value>(&stdout).unwrap_or_else(|_| panic!("not JSON: {stdout}"))
        }
    };
    let listed = run(&["--method", "tools/list"]).await;
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"echo"), "{names:?}");
    assert!(!names.contains(&"get-env"), "{names:?}");
    let called = run(&[
        "--method",
        "tools/call",
        "--tool-name",
        "echo",
        "--tool-arg",
        "message=through the inspector",
    ])
    .await;
    assert!(
        called.to_string().contains("through the inspector"),
        "{called}"
    );
    let denied = run(&["--method", "tools/call", "--tool-name", "get-env"]).await;
    assert_eq!(denied["isError"], true, "{denied}");
    assert!(denied.to_string().contains("no-env"), "{denied}");
}
