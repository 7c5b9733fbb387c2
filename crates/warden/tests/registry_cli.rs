//! `warden registry import|list|approve|block|unblock|review` on the data directory of a
//! running server: imports and state changes are visible to the server at once, refused
//! ones say why and change nothing, and every change is in the one audit log that still
//! verifies.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_api::registry::{DiscoveryInfo, Registry, Who};
use warden_core::TenantId;
use warden_registry::model::ServerName;
use warden_registry::pin::ToolDefinition;
use warden_store::{SqliteStore, Store};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../warden-registry/tests/fixtures/server-json"
);
const GITHUB: &str = "io.github.modelcontextprotocol/server-github";

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

async fn registry(data: &std::path::Path, args: &[&str]) -> Out {
    let mut all = vec!["registry", args[0], "--data-dir", path_str(data)];
    all.extend_from_slice(&args[1..]);
    warden(&all).await
}

async fn list_json(data: &std::path::Path, what: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["list", what, "--tenant", "acme", "--format", "json"];
    args.extend_from_slice(extra);
    let out = registry(data, &args).await;
    assert!(out.success(), "{}", out.text());
    serde_json::from_str::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_approve_and_list_from_the_cli_next_to_a_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start(&data).await;
    let auditor = auditor_token(&data).await;
    let client = client();
    let get = |path: String| {
        let (client, base, token) = (client.clone(), server.base.clone(), auditor.secret.clone());
        async move {
            let r = client
                .get(format!("{base}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let server_path = format!("/api/v1/registry/servers/{}", GITHUB.replace('/', "%2F"));

    // Import: registered in pending_review, owned as asked.
    let out = registry(
        &data,
        &[
            "import",
            &fixture("npm-github.json"),
            "--tenant",
            "acme",
            "--owner",
            "team:platform",
            "--by",
            "alice",
        ],
    )
    .await;
    assert!(out.success(), "{}", out.text());
    assert!(
        out.stdout
            .starts_with(&format!("registered {GITHUB} (alias server-github")),
        "{}",
        out.text()
    );
    assert!(out.stdout.contains("pending_review"), "{}", out.text());
    let (status, seen) = get(server_path.clone()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the server reads it at once: {seen}"
    );
    assert_eq!(seen["owner"], "team:platform");

    // Refused imports say why, with every problem's path, and store nothing.
    let again = registry(
        &data,
        &[
            "import",
            &fixture("npm-github.json"),
            "--tenant",
            "acme",
            "--by",
            "alice",
        ],
    )
    .await;
    assert!(!again.success());
    assert!(
        again.stderr.contains("already has a server named"),
        "{}",
        again.text()
    );
    let leaky = registry(
        &data,
        &[
            "import",
            &fixture("invalid-secrets.json"),
            "--tenant",
            "acme",
            "--by",
            "alice",
        ],
    )
    .await;
    assert!(!leaky.success());
    assert!(
        leaky.stderr.contains("nothing was stored"),
        "{}",
        leaky.text()
    );
    assert!(
        leaky
            .stderr
            .contains("$.packages[0].environmentVariables[1].value: isSecret is true"),
        "{}",
        leaky.text()
    );
    assert!(
        !leaky.stderr.contains("ghp_16C7e42F"),
        "the secret is not repeated"
    );
    let broken = tmp.path().join("broken.json");
    std::fs::write(&broken, "{\"name\": ").unwrap();
    let out = registry(
        &data,
        &[
            "import",
            broken.to_str().unwrap(),
            "--tenant",
            "acme",
            "--by",
            "alice",
        ],
    )
    .await;
    assert!(
        !out.success() && out.stderr.contains("line 1"),
        "{}",
        out.text()
    );
    let servers = list_json(&data, "servers", &[]).await;
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert_eq!(servers[0]["state"], "pending_review");

    // The server's tools, as a discovery would record them.
    let store = std::sync::Arc::new(
        SqliteStore::open(&warden_api::server::database_path(&data))
            .await
            .unwrap(),
    );
    let acme = TenantId::parse("acme").unwrap();
    let tools: Vec<ToolDefinition> = ["create_issue", "delete_repository"]
        .iter()
        .map(|n| {
            ToolDefinition::from_mcp(&json!({"name": n, "description": format!("{n} on GitHub"),
                "inputSchema": {"type": "object"}}))
            .unwrap()
        })
        .collect();
    Registry::load(store.clone())
        .await
        .unwrap()
        .record_discovery(
            &acme,
            &ServerName::parse(GITHUB).unwrap(),
            &tools,
            DiscoveryInfo::default(),
            &Who::cli("alice"),
        )
        .await
        .unwrap();

    // The table shows proposals as such (marked `?`).
    let table = registry(&data, &["list", "tools", "--tenant", "acme"]).await;
    assert!(table.success(), "{}", table.text());
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(
        lines[0].starts_with("SERVER") && lines[0].contains("RISK"),
        "{}",
        table.stdout
    );
    assert!(
        lines[2].contains("delete_repository") && lines[2].contains("high?"),
        "{}",
        table.stdout
    );

    // Approve the server with its pending tools: each is pinned.
    let out = registry(
        &data,
        &[
            "approve",
            "server",
            GITHUB,
            "--include-tools",
            "--tenant",
            "acme",
            "--reason",
            "reviewed the code",
            "--by",
            "bob",
        ],
    )
    .await;
    assert!(out.success(), "{}", out.text());
    assert!(
        out.stdout.contains("pending_review -> approved"),
        "{}",
        out.text()
    );
    assert!(
        out.stdout.contains("tool create_issue: approved, pinned"),
        "{}",
        out.text()
    );
    let tools = list_json(&data, "tools", &["--state", "approved", "--server", GITHUB]).await;
    assert_eq!(tools.len(), 2);
    assert!(
        tools
            .iter()
            .all(|t| t["pin"]["sha256"].as_str().unwrap().len() == 64)
    );
    let (_, seen) = get(server_path.clone()).await;
    assert_eq!(seen["state"], "approved");

    // One tool blocked, then back to review; refusals say why and change nothing.
    let tool_args = |verb: &'static str, by: &'static str| {
        vec![
            verb,
            "server",
            GITHUB,
            "--tool",
            "delete_repository",
            "--tenant",
            "acme",
            "--reason",
            "incident 42",
            "--by",
            by,
        ]
    };
    let out = registry(&data, &tool_args("block", "sec")).await;
    assert!(out.success(), "{}", out.text());
    assert!(out.stdout.contains("approved -> blocked"), "{}", out.text());
    let (_, t) = get(format!("{server_path}/tools/delete_repository")).await;
    assert_eq!(t["state"], "blocked");
    let before = export(&data).await.len();
    for (args, message) in [
        (
            tool_args("review", "sec"),
            "lift the block with `warden registry unblock`",
        ),
        (
            tool_args("approve", "sec"),
            "allowed targets are pending_review",
        ),
        (
            vec![
                "unblock", "server", GITHUB, "--tenant", "acme", "--reason", "x", "--by", "sec",
            ],
            "not blocked",
        ),
        (
            vec![
                "approve",
                "server",
                "io.github.acme/nope",
                "--tenant",
                "acme",
                "--reason",
                "x",
                "--by",
                "sec",
            ],
            "has no server io.github.acme/nope",
        ),
        (
            vec![
                "deprecate",
                "server",
                GITHUB,
                "--include-tools",
                "--tenant",
                "acme",
                "--reason",
                "x",
                "--by",
                "sec",
            ],
            "--include-tools applies only when approving",
        ),
        (
            vec!["list", "servers", "--tenant", "acme", "--state", "maybe"],
            "unknown state",
        ),
    ] {
        let out = registry(&data, &args).await;
        assert!(!out.success(), "{args:?} was accepted: {}", out.text());
        assert!(out.stderr.contains(message), "{args:?}: {}", out.text());
    }
    assert_eq!(export(&data).await.len(), before, "refusals record nothing");
    let out = registry(&data, &tool_args("unblock", "root")).await;
    assert!(out.success(), "{}", out.text());
    assert!(
        out.stdout.contains("blocked -> pending_review"),
        "{}",
        out.text()
    );
    let pending = list_json(&data, "tools", &["--state", "pending_review"]).await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["name"], "delete_repository");
    let agents = list_json(&data, "agents", &[]).await;
    assert!(agents.is_empty());

    // Every change is in the audit trail, which still verifies after the server stops.
    let status = server.terminate().await;
    assert!(status.success(), "SIGTERM exit: {status}\n{}", server.log());
    let out = verify(&data).await;
    assert!(out.success(), "{}", out.text());
    let events = export(&data).await;
    let registry_types: Vec<&str> = events
        .iter()
        .filter_map(|e| e["type"].as_str())
        .filter(|t| t.starts_with("registry."))
        .collect();
    assert_eq!(
        registry_types,
        [
            "registry.server.registered",
            "registry.tool.registered",
            "registry.tool.registered",
            "registry.discovery.completed",
            "registry.server.state_changed",
            "registry.tool.state_changed",
            "registry.tool.pinned",
            "registry.tool.state_changed",
            "registry.tool.pinned",
            "registry.tool.state_changed",
            "registry.tool.state_changed",
        ]
    );
    let approved = events
        .iter()
        .find(|e| e["type"] == "registry.server.state_changed")
        .unwrap();
    assert_eq!(approved["source"], "warden.cli");
    assert_eq!(approved["actor"]["on_behalf_of"], "bob");
    assert_eq!(approved["payload"]["reason"], "reviewed the code");
    assert_eq!(
        approved["resource"],
        json!({"type": "ToolServer", "id": GITHUB})
    );
    let history = store
        .registry_history(
            &acme,
            &warden_store::HistoryFilter {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(history.iter().all(|h| h.event_id.is_some()));
    assert_eq!(history[0].by, "cli:root");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_says_why_a_server_cannot_be_discovered_and_writes_no_tools() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // A Streamable HTTP server at an address where nothing listens.
    let doc = tmp.path().join("server.json");
    std::fs::write(
        &doc,
        json!({
            "$schema": "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json",
            "name": "io.github.acme/nowhere", "description": "Nobody home.", "version": "1.0.0",
            "remotes": [{"type": "streamable-http", "url": "http://127.0.0.1:9/mcp"}]
        })
        .to_string(),
    )
    .unwrap();
    for file in [path_str(&doc).to_owned(), fixture("remote-sse-legacy.json")] {
        let out = registry(
            &data,
            &["import", &file, "--tenant", "acme", "--by", "alice"],
        )
        .await;
        assert!(out.success(), "{}", out.text());
    }
    let out = registry(
        &data,
        &[
            "discover",
            "io.github.acme/nowhere",
            "--tenant",
            "acme",
            "--timeout",
            "3",
            "--by",
            "alice",
        ],
    )
    .await;
    assert!(!out.success(), "{}", out.text());
    assert!(out.stderr.contains("discovery failed"), "{}", out.text());

    let legacy: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("remote-sse-legacy.json")).unwrap())
            .unwrap();
    let legacy = legacy["name"].as_str().unwrap();
    let out = registry(
        &data,
        &["discover", legacy, "--tenant", "acme", "--by", "alice"],
    )
    .await;
    assert!(!out.success(), "{}", out.text());
    assert!(
        out.stderr.contains("legacy HTTP+SSE transport"),
        "{}",
        out.text()
    );
    assert!(list_json(&data, "tools", &[]).await.is_empty());
}
