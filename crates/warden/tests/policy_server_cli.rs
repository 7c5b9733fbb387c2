//! `warden policy versions|show|diff|apply|rollback|promote` against a running server: the
//! GitOps path of an API-managed tenant (a pipeline applies a directory), with history,
//! diff, optimistic concurrency, refusal of a bad bundle with file:line, and rollback — each
//! change in force at once.

mod common;

use std::path::Path;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;

const ALLOW_READS: &str = "@id(\"globex.reads\")\npermit (principal, action == Action::\"call_tool\", resource is Tool)\nwhen { resource has categories && resource.categories.contains(\"read\") };\n";
const FREEZE: &str =
    "@id(\"globex.freeze\")\n@reason(\"change freeze\")\nforbid (principal, action, resource);\n";

fn write_policy(dir: &Path, text: &str) {
    let folder = dir.join("globex");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("policies.cedar"), text).unwrap();
}

async fn policy(server: &Server, token: &str, args: &[&str]) -> Out {
    let mut all = vec!["policy"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--server", &server.base, "--token", token]);
    warden(&all).await
}

async fn decision(server: &Server, agent: &str) -> Value {
    let (request, _) = decision_request(0);
    let (status, v) = authorize(&client(), &server.base, agent, &request)
        .await
        .expect("authorize");
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_applies_diffs_and_rolls_back_a_tenants_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let candidate = tmp.path().join("policies");
    let admin = create_token(&data, &["--tenant", "globex", "--role", "policy_admin"]).await;
    let agent = create_token(
        &data,
        &[
            "--tenant",
            "globex",
            "--role",
            "agent",
            "--agent",
            "ci-bot",
            "--on-behalf-of",
            "bob",
            "--namespace",
            "globex/builds",
        ],
    )
    .await;
    let mut server = Server::start(&data).await;
    let t = admin.secret.as_str();

    let out = policy(&server, t, &["versions"]).await;
    assert!(out.success(), "{}", out.text());
    assert!(out.stdout.contains("no versions"), "{}", out.text());

    write_policy(&candidate, ALLOW_READS);
    let dir = path_str(&candidate);
    let out = policy(
        &server,
        t,
        &[
            "apply",
            dir,
            "--tenant",
            "globex",
            "--message",
            "reads only",
        ],
    )
    .await;
    assert!(out.success(), "{}", out.text());
    assert!(out.stdout.contains("applied: version 1"), "{}", out.text());
    assert_eq!(decision(&server, &agent.secret).await["decision"], "allow");

    write_policy(&candidate, FREEZE);
    let out = policy(&server, t, &["apply", dir, "--tenant", "globex"]).await;
    assert!(out.success(), "{}", out.text());
    assert!(out.stdout.contains("applied: version 2"), "{}", out.text());
    assert_eq!(decision(&server, &agent.secret).await["decision"], "deny");

    // A change based on a version that is no longer current is refused.
    let out = policy(
        &server,
        t,
        &["apply", dir, "--tenant", "globex", "--base-version", "1"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    assert!(out.stderr.contains("409"), "{}", out.text());

    // A bundle that does not validate is refused with file:line, and nothing changes.
    write_policy(
        &candidate,
        "permit (principal, action == Action::\"nope\", resource);\n",
    );
    let out = policy(&server, t, &["apply", dir, "--tenant", "globex"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    assert!(
        out.stderr.contains("globex/policies.cedar:1:"),
        "file:line in the refusal: {}",
        out.text()
    );

    let out = policy(&server, t, &["diff", "--from", "1", "--to", "2"]).await;
    assert!(out.success(), "{}", out.text());
    assert!(out.stdout.contains("1 changed"), "{}", out.text());
    assert!(
        out.stdout.contains("+@id(\"globex.freeze\")"),
        "{}",
        out.text()
    );
    assert!(
        out.stdout.contains("-@id(\"globex.reads\")"),
        "{}",
        out.text()
    );

    let out = policy(&server, t, &["rollback", "1"]).await;
    assert!(out.success(), "{}", out.text());
    assert!(out.stdout.contains("applied: version 3"), "{}", out.text());
    assert_eq!(
        decision(&server, &agent.secret).await["decision"],
        "allow",
        "version 1's policies are in force again"
    );

    let out = policy(&server, t, &["versions", "--format", "json"]).await;
    assert!(out.success(), "{}", out.text());
    let versions: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let listed: Vec<(i64, String)> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().unwrap(),
                v["message"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(listed[0], (3, "rollback to version 1".into()));
    assert_eq!(listed[2], (1, "reads only".into()));

    let out = policy(&server, t, &["show", "3"]).await;
    assert!(out.success(), "{}", out.text());
    assert!(
        out.stdout.contains("globex/policies.cedar"),
        "{}",
        out.text()
    );

    let out = policy(&server, t, &["rollback", "9"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    assert!(out.stderr.contains("404"), "{}", out.text());

    // Nothing to promote: the bundle is enforced and no shadow runs.
    let out = policy(&server, t, &["promote"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    assert!(out.stderr.contains("nothing to promote"), "{}", out.text());

    // An agent token may not change policies.
    write_policy(&candidate, ALLOW_READS);
    let out = policy(
        &server,
        &agent.secret,
        &["apply", dir, "--tenant", "globex"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    assert!(out.stderr.contains("403"), "{}", out.text());

    assert!(server.terminate().await.success(), "{}", server.log());

    // A server that does not answer: the command could not run.
    let out = warden(&[
        "policy",
        "versions",
        "--server",
        "http://127.0.0.1:9",
        "--token",
        t,
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", out.text());
    assert!(out.stderr.contains("cannot reach"), "{}", out.text());
}
