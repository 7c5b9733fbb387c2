//! Decision semantics through a real server: permit, forbid-overrides, namespace inheritance,
//! ask, warn, redaction obligations, evaluation errors, hot reload, API-managed policies.

mod common;

use std::time::Duration;

use common::{TestServer, tool_call};
use reqwest::StatusCode;
use serde_json::json;
use warden_core::Role;

const BASE: &str = r#"
@id("root.forbid-delete-secrets")
@reason("secrets are never deleted")
forbid (principal, action == Action::"delete", resource is Secret);

@id("root.read-everything")
permit (principal is Agent, action == Action::"read", resource);

@id("root.warn-on-high-risk")
@mode("warn")
@reason("high-risk tools will soon be blocked")
forbid (principal, action == Action::"call_tool", resource is Tool)
when { resource has risk && resource.risk == "high" };
"#;

const PLATFORM: &str = r#"
@id("platform.tools")
permit (principal is Agent, action == Action::"call_tool", resource is Tool);

@id("platform.delete-secrets")
permit (principal is Agent, action == Action::"delete", resource is Secret);

@id("platform.forbid-shell")
@reason("no shell tools")
forbid (principal, action == Action::"call_tool", resource is Tool)
when { resource.name == "run_shell" };

@id("platform.ask-deploy")
@effect("ask")
@reason("deploys need a person")
permit (principal is Agent, action == Action::"call_tool", resource is Tool)
when { resource.name == "trigger_deploy" };

@id("platform.redact-token")
@redact("args.token")
permit (principal, action == Action::"call_tool", resource is Tool)
when { context.args has token };

@id("platform.erroring-forbid")
@reason("branch checks")
forbid (principal, action == Action::"call_tool", resource is Tool)
when { resource.name == "push" && context.args has count && context.args.count + 9223372036854775807 > 0 };
"#;

fn write_policies(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.join("acme/platform")).unwrap();
    std::fs::write(dir.join("acme/base.cedar"), BASE).unwrap();
    std::fs::write(dir.join("acme/platform/tools.cedar"), PLATFORM).unwrap();
    std::fs::write(
        dir.join("schema.cedarschema"),
        "type Args = { token?: String, branch?: String, count?: Long };",
    )
    .unwrap();
}

async fn server_with_policies() -> (TestServer, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("policies");
    write_policies(&pdir);
    let p = pdir.clone();
    let s = TestServer::start_in(dir, move |c| {
        c.policies = Some(p);
        c.policy_poll = Duration::from_millis(100);
    })
    .await;
    let t = s
        .agent_token("acme", "bot", "alice", "acme/platform/api")
        .await;
    (s, pdir, t)
}

async fn decide(s: &TestServer, token: &str, body: serde_json::Value) -> serde_json::Value {
    let (status, v) = s.post("/api/v1/authorize", token, &body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

#[tokio::test]
async fn permit_allows_and_names_the_policy() {
    let (s, _, t) = server_with_policies().await;
    let v = decide(&s, &t, tool_call("git__status", "low", json!({}))).await;
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["reasons"][0]["id"], "platform.tools");
    assert_eq!(v["reasons"][0]["origin"], "acme/platform/tools.cedar");
    assert!(v["event_id"].as_str().unwrap().len() == 36);
}

#[tokio::test]
async fn forbid_overrides_permit_with_its_reason() {
    let (s, _, t) = server_with_policies().await;
    let v = decide(&s, &t, tool_call("sh__run_shell", "low", json!({}))).await;
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["reasons"][0]["id"], "platform.forbid-shell");
    assert_eq!(v["reasons"][0]["reason"], "no shell tools");
}

#[tokio::test]
async fn parent_forbid_beats_child_permit() {
    let (s, _, t) = server_with_policies().await;
    let body = json!({"action": "delete", "resource": {"type": "Secret", "id": "db-password"}});
    let v = decide(&s, &t, body).await;
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["reasons"][0]["id"], "root.forbid-delete-secrets");
}

#[tokio::test]
async fn sibling_namespace_policies_do_not_apply() {
    let (s, _, _) = server_with_policies().await;
    let other = s.agent_token("acme", "bot", "alice", "acme/other").await;
    let v = decide(&s, &other, tool_call("git__status", "low", json!({}))).await;
    assert_eq!(
        v["decision"], "deny",
        "platform's permit must not reach acme/other: {v}"
    );
    assert_eq!(v["reasons"], json!([]));
    let read = decide(
        &s,
        &other,
        json!({"action": "read", "resource": {"type": "Repository", "id": "r"}}),
    )
    .await;
    assert_eq!(
        read["decision"], "allow",
        "the root permit applies below the root"
    );
}

#[tokio::test]
async fn ask_requires_approval() {
    let (s, _, t) = server_with_policies().await;
    let v = decide(
        &s,
        &t,
        tool_call("deploy__trigger_deploy", "medium", json!({})),
    )
    .await;
    assert_eq!(v["decision"], "approval_required");
    assert_eq!(v["obligations"][0]["type"], "approval");
    assert_eq!(v["obligations"][0]["policies"][0], "platform.ask-deploy");
}

#[tokio::test]
async fn warn_mode_reports_without_denying() {
    let (s, _, t) = server_with_policies().await;
    let v = decide(&s, &t, tool_call("git__status", "high", json!({}))).await;
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["warnings"][0]["policy"]["id"], "root.warn-on-high-risk");
    assert_eq!(v["warnings"][0]["would"], "deny");
    let (_, ev) = s
        .get(
            &format!("/api/v1/audit/events/{}", v["event_id"].as_str().unwrap()),
            &s.token("acme", Role::Auditor, None, None, None).await,
        )
        .await;
    assert_eq!(
        ev["decision"]["warnings"][0]["would"], "deny",
        "the audit event records the warning: {ev}"
    );
}

#[tokio::test]
async fn redact_obligation_hides_the_value_in_the_audit_trail() {
    let (s, _, t) = server_with_policies().await;
    let canary = "canary-value-7c1d";
    let v = decide(
        &s,
        &t,
        tool_call("git__status", "low", json!({"token": canary})),
    )
    .await;
    assert_eq!(v["obligations"][0]["type"], "redact");
    assert_eq!(v["obligations"][0]["path"], "args.token");
    let auditor = s.token("acme", Role::Auditor, None, None, None).await;
    let (_, ev) = s
        .get(
            &format!("/api/v1/audit/events/{}", v["event_id"].as_str().unwrap()),
            &auditor,
        )
        .await;
    let stored = ev["payload"]["request"]["context"]["args"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(stored.starts_with("hmac-sha256:"), "{ev}");
    let (_, h) = s
        .post("/api/v1/audit/hash", &auditor, &json!({"value": canary}))
        .await;
    assert_eq!(
        h["hash"], stored,
        "an auditor can search for the value by its hash"
    );
}

#[tokio::test]
async fn evaluation_error_denies_and_says_why() {
    let (s, _, t) = server_with_policies().await;
    // Validation cannot rule out arithmetic overflow: the forbid errors at run time, and an
    // erroring forbid must deny rather than be skipped.
    let v = decide(&s, &t, tool_call("git__push", "low", json!({"count": 1}))).await;
    assert_eq!(v["decision"], "deny", "{v}");
    let errors = v["errors"].as_array().expect("errors listed");
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().unwrap().contains("platform.erroring-forbid")),
        "{v}"
    );
}

#[tokio::test]
async fn hot_reload_applies_good_changes_and_keeps_the_old_set_on_a_bad_file() {
    let (s, pdir, t) = server_with_policies().await;
    let file = pdir.join("acme/platform/tools.cedar");
    // A good change: shell is now allowed (forbid removed).
    std::fs::write(
        &file,
        PLATFORM.replace(
            "resource.name == \"run_shell\"",
            "resource.name == \"nothing\"",
        ),
    )
    .unwrap();
    let mut allowed = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let v = decide(&s, &t, tool_call("sh__run_shell", "low", json!({}))).await;
        if v["decision"] == "allow" {
            allowed = true;
            break;
        }
    }
    assert!(allowed, "the good change was not picked up");
    // A bad change: does not parse. The previous (good) set stays in force.
    std::fs::write(&file, "permit (principal, action, resource) when {").unwrap();
    let mut reported = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, ready) = s.get("/readyz", &t).await;
        if ready["policies"].as_str().unwrap_or("ok") != "ok" {
            assert!(
                ready["policies"]
                    .as_str()
                    .unwrap()
                    .contains("acme/platform/tools.cedar:1"),
                "{ready}"
            );
            reported = true;
            break;
        }
    }
    assert!(reported, "the bad file was not reported in /readyz");
    let v = decide(&s, &t, tool_call("sh__run_shell", "low", json!({}))).await;
    assert_eq!(
        v["decision"], "allow",
        "the last good set must stay in force"
    );
    let auditor = s.token("acme", Role::Auditor, None, None, None).await;
    let (_, page) = s
        .get("/api/v1/audit/events?type=policy.reload_failed", &auditor)
        .await;
    assert!(
        !page["events"].as_array().unwrap().is_empty(),
        "a refused reload is an audit event: {page}"
    );
}

#[tokio::test]
async fn api_managed_policies_are_validated_versioned_and_audited() {
    let s = TestServer::start().await;
    let admin = s.token("globex", Role::Admin, None, None, None).await;
    let agent = s.agent_token("globex", "bot", "bob", "globex/team").await;
    let body = tool_call("git__status", "low", json!({}));
    let (_, v) = s.post("/api/v1/authorize", &agent, &body).await;
    assert_eq!(v["decision"], "deny", "no policies: default deny");

    let (status, p) = s
        .put_text(
            "/api/v1/policies/globex/team",
            &admin,
            "permit (principal, action, resource) when { nonsense };",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{p}");
    assert!(
        p["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("globex/team/policies.cedar:1:"),
        "{p}"
    );

    let (status, p) = s
        .put_text("/api/v1/policies/globex/team", &admin, "@id(\"allow-all\")\npermit (principal is Agent, action == Action::\"call_tool\", resource);")
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(p["version"], 1);
    let (_, v) = s.post("/api/v1/authorize", &agent, &body).await;
    assert_eq!(v["decision"], "allow", "{v}");
    assert_eq!(v["reasons"][0]["origin"], "globex/team/policies.cedar");

    // Optimistic concurrency: a writer based on version 0 loses.
    let (status, _) = s
        .post_raw(
            "/api/v1/authorize",
            Some(&agent),
            "application/json",
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let r = s
        .client
        .put(format!("{}/api/v1/policies/globex/team", s.base))
        .bearer_auth(&admin)
        .json(&json!({"text": "forbid (principal, action, resource);", "expected_version": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);

    let (_, versions) = s.get("/api/v1/policies/versions", &admin).await;
    assert_eq!(versions.as_array().unwrap().len(), 1, "{versions}");
    let (_, events) = s
        .get("/api/v1/audit/events?type=policy.updated", &admin)
        .await;
    let e = &events["events"][0];
    assert!(
        e["payload"]["diff"][0]["diff"]
            .as_str()
            .unwrap()
            .contains("+permit"),
        "{e}"
    );
    assert!(e["actor"]["token_id"].as_str().unwrap().starts_with("tok_"));

    // An agent may not change policies.
    let (status, _) = s
        .put_text(
            "/api/v1/policies/globex/team",
            &agent,
            "forbid (principal, action, resource);",
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn directory_managed_tenants_refuse_api_changes() {
    let (s, _, _) = server_with_policies().await;
    let admin = s.token("acme", Role::Admin, None, None, None).await;
    let (status, p) = s
        .put_text(
            "/api/v1/policies/acme/platform",
            &admin,
            "permit (principal, action, resource);",
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("policy directory"));
}

#[tokio::test]
async fn batch_answers_each_request_on_its_own() {
    let (s, _, t) = server_with_policies().await;
    let good = tool_call("git__status", "low", json!({}));
    let bad_ns = json!({"namespace": "globex/x", "action": "call_tool", "resource": {"type": "Tool", "id": "x"}});
    let bad_action = json!({"action": "fly", "resource": {"type": "Tool", "id": "x"}});
    let (status, v) = s
        .post(
            "/api/v1/authorize/batch",
            &t,
            &json!({"requests": [good, bad_ns, bad_action]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let r = v["results"].as_array().unwrap();
    assert_eq!(r[0]["status"], 200);
    assert_eq!(r[0]["result"]["decision"], "allow");
    assert_eq!(r[1]["status"], 404);
    assert_eq!(r[2]["status"], 400);
}
