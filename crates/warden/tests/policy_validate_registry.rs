//! `warden policy validate DIR --server URL --token T`: the `Tool::"…"`, `ToolServer::"…"` and
//! `Agent::"…"` literals of the token's tenant's policies checked against its registry on a
//! running server, with entries made through the registry API. An unknown entity is an error
//! at its file:line:column (exit 1), a blocked one a warning (exit 0); a check that cannot be
//! made (server unreachable, token refused or of another tenant) exits 2; without `--server`
//! nothing changes.

mod common;

use std::path::Path;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const REGISTRY: &str = "/api/v1/registry";
const DEPLOY: &str = "io.github.acme/deploy";

/// Policies that name what the registry holds: the agent (on the second page of agents),
/// the server by its registry name and one of its tools by the id the gateway gives it.
const KNOWN: &str = "@id(\"platform.release\")
permit (
  principal == Agent::\"release-bot\",
  action == Action::\"call_tool\",
  resource in ToolServer::\"io.github.acme/deploy\"
)
when { resource == Tool::\"deploy__trigger_deploy\" };
";

/// Names a tool the registry blocks.
const BLOCKED: &str = "@id(\"platform.rollbacks\")
permit (principal, action == Action::\"call_tool\", resource)
when { [Tool::\"deploy__rollback\"].contains(resource) };
";

/// Typos: an agent in the scope, a tool in a condition.
const TYPOS: &str = "@id(\"platform.typos\")
permit (principal == Agent::\"relase-bot\", action == Action::\"call_tool\", resource)
when { resource == Tool::\"deploy__trigger_deploi\" };
";

async fn post(base: &str, token: &str, path: &str, body: Value, media: &str) -> Value {
    let r = client()
        .post(format!("{base}{REGISTRY}{path}"))
        .bearer_auth(token)
        .header("content-type", media)
        .body(body.to_string())
        .send()
        .await
        .expect("registry API answers");
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::CREATED, "POST {path}: {v}");
    v
}

/// The deploy server with two tools, `rollback` blocked, and 101 agents, `release-bot`
/// sorting last: the check must follow the agents' pages to find it.
async fn fill_registry(base: &str, token: &str) {
    post(
        base,
        token,
        "/servers",
        json!({"name": DEPLOY, "alias": "deploy", "description": "Deploys services", "version": "1.0.0"}),
        "application/vnd.warden.server+json",
    )
    .await;
    let tools = format!("/servers/{}/tools", DEPLOY.replace('/', "%2F"));
    for name in ["trigger_deploy", "rollback"] {
        post(
            base,
            token,
            &tools,
            json!({"name": name, "description": "deploys", "inputSchema": {"type": "object"}}),
            "application/json",
        )
        .await;
    }
    let v = client()
        .post(format!("{base}{REGISTRY}{tools}/rollback/transitions"))
        .bearer_auth(token)
        .json(&json!({"to": "blocked", "reason": "rolls back without a ticket"}))
        .send()
        .await
        .unwrap();
    assert_eq!(v.status(), StatusCode::OK, "{}", v.text().await.unwrap());
    for i in 0..100 {
        post(
            base,
            token,
            "/agents",
            json!({"name": format!("bot-{i:03}")}),
            "application/json",
        )
        .await;
    }
    post(
        base,
        token,
        "/agents",
        json!({"name": "release-bot"}),
        "application/json",
    )
    .await;
}

async fn validate(dir: &Path, extra: &[&str]) -> Out {
    let mut args = vec!["policy", "validate", path_str(dir)];
    args.extend_from_slice(extra);
    warden(&args).await
}

fn write(dir: &Path, path: &str, text: &str) {
    let p = dir.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_are_checked_against_the_tenants_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let admin = create_token(&data, &["--tenant", "acme", "--role", "policy_admin"]).await;
    let auditor = auditor_token(&data).await;
    let agent = agent_token(&data).await;
    let stranger = create_token(&data, &["--tenant", "initech", "--role", "auditor"]).await;
    let mut server = Server::start(&data).await;
    let base = server.base.clone();
    fill_registry(&base, &admin.secret).await;

    let dir = policy_dir(&[
        ("acme/platform/release.cedar", KNOWN),
        ("acme/platform/rollbacks.cedar", BLOCKED),
        // Another tenant's policies: the token cannot read its registry.
        (
            "globex/other.cedar",
            "permit (principal, action, resource == Tool::\"nothing__here\");\n",
        ),
    ]);
    let online = [
        "--server",
        base.as_str(),
        "--token",
        auditor.secret.as_str(),
    ];

    // Known entities pass; the blocked tool is a warning; globex is not checked.
    let out = validate(dir.path(), &online).await;
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    assert!(
        out.stdout.starts_with(
            "ok: 3 policies in 3 files; 4 entities checked against the registry of tenant acme"
        ),
        "{}",
        out.text()
    );
    assert!(out.stdout.contains("1 warning(s)"), "{}", out.text());
    let warning = format!(
        "{}:3:9: warning: Tool \"deploy__rollback\" can never be called: it is blocked (registry of tenant acme on {base})",
        dir.path().join("acme/platform/rollbacks.cedar").display()
    );
    assert!(out.stderr.contains(&warning), "{}", out.text());
    assert!(
        out.stderr
            .contains("the policies of tenant globex were not checked"),
        "{}",
        out.text()
    );

    let mut json_args = online.to_vec();
    json_args.extend(["--format", "json"]);
    let out = validate(dir.path(), &json_args).await;
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let v = json_of(&out);
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["errors"], json!([]), "{v}");
    assert_eq!(v["registry"]["tenant"], "acme", "{v}");
    assert_eq!(v["registry"]["checked"], 4, "{v}");
    assert_eq!(v["registry"]["unchecked_tenants"], json!(["globex"]), "{v}");
    let w = &v["warnings"][0];
    assert_eq!(w["kind"], "blocked_entity", "{v}");
    assert_eq!(w["entity"], "Tool::\"deploy__rollback\"", "{v}");
    assert_eq!(
        (w["line"].as_u64(), w["column"].as_u64()),
        (Some(3), Some(9))
    );

    // Typos are errors at their file:line:column.
    write(dir.path(), "acme/platform/typos.cedar", TYPOS);
    let out = validate(dir.path(), &online).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let typos = dir.path().join("acme/platform/typos.cedar");
    for expected in [
        format!(
            "{}:2:22: unknown Agent \"relase-bot\" (not in the registry of tenant acme on {base})",
            typos.display()
        ),
        format!(
            "{}:3:20: unknown Tool \"deploy__trigger_deploi\" (not in the registry of tenant acme on {base})",
            typos.display()
        ),
    ] {
        assert!(out.stderr.contains(&expected), "{expected}\n{}", out.text());
    }
    assert!(
        out.stderr.contains("2 error(s); nothing would be applied"),
        "{}",
        out.text()
    );
    assert!(
        out.stderr.contains("warning: Tool \"deploy__rollback\""),
        "{}",
        out.text()
    );

    let out = validate(dir.path(), &json_args).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let v = json_of(&out);
    assert_eq!(v["valid"], false, "{v}");
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{v}");
    let e = &errors[1];
    assert_eq!(e["file"], typos.display().to_string(), "{v}");
    assert_eq!(
        (e["line"].as_u64(), e["column"].as_u64()),
        (Some(3), Some(20))
    );
    assert_eq!(e["kind"], "unknown_entity", "{v}");
    assert_eq!(e["entity"], "Tool::\"deploy__trigger_deploi\"", "{v}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("unknown Tool \"deploy__trigger_deploi\""),
        "{v}"
    );
    assert_eq!(v["warnings"].as_array().unwrap().len(), 1, "{v}");

    // Without --server nothing changes: the typos validate, and the output is as it was.
    let out = validate(dir.path(), &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    assert_eq!(
        out.stdout.trim(),
        "ok: 4 policies in 4 files",
        "{}",
        out.text()
    );
    assert!(out.stderr.is_empty(), "{}", out.text());
    let out = validate(dir.path(), &["--format", "json"]).await;
    let v = json_of(&out);
    assert!(
        v.get("warnings").is_none() && v.get("registry").is_none(),
        "{v}"
    );

    // A check that cannot be made is exit 2, with why.
    for (token, says) in [
        ("wdn_not_a_token", "refused the token"),
        (
            agent.secret.as_str(),
            "does not let this token read the registry",
        ),
        (
            stranger.secret.as_str(),
            "the token is not one of tenant acme, globex",
        ),
    ] {
        let out = validate(dir.path(), &["--server", &base, "--token", token]).await;
        assert_eq!(out.status.code(), Some(2), "{}", out.text());
        assert!(out.stderr.contains(says), "{says}: {}", out.text());
    }
    let out = validate(dir.path(), &["--token", &auditor.secret]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "--token needs --server: {}",
        out.text()
    );

    assert!(server.terminate().await.success(), "{}", server.log());
    let out = validate(dir.path(), &online).await;
    assert_eq!(out.status.code(), Some(2), "{}", out.text());
    assert!(
        out.stderr
            .contains(&format!("cannot reach the Warden server at {base}")),
        "{}",
        out.text()
    );
}
