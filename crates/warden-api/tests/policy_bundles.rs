//! Policy bundles through a real server: versions, diffs, rollback, optimistic concurrency,
//! the one-source rule, the policy-test gate, bundle modes, shadow bundles on live traffic
//! (decision API and MCP gateway) and promotion.

mod common;

use std::time::Duration;

use common::mcp::{Mcp, POLICIES as MCP_POLICIES, start_gateway};
use common::{TestServer, tool_call};
use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_core::Role;

const ALLOW_TOOLS: &str = r#"@id("team.tools")
permit (principal is Agent, action == Action::"call_tool", resource is Tool);
"#;

const NO_SHELL: &str = r#"@id("team.no-shell")
@reason("no shell tools")
forbid (principal, action == Action::"call_tool", resource is Tool)
when { resource.name == "run_shell" };
"#;

/// Policy tests of the team namespace: the shell is refused, git is allowed.
const TESTS: &str = r#"
defaults:
  principal: {type: Agent, id: bot}
  action: call_tool
cases:
  - name: shell is refused
    request:
      resource: {type: Tool, id: x__run_shell, attributes: {name: run_shell, server: x, risk: low, categories: []}}
    expect:
      decision: deny
  - name: git is allowed
    request:
      resource: {type: Tool, id: git__status, attributes: {name: status, server: git, risk: low, categories: []}}
    expect:
      decision: allow
"#;

struct Globex {
    s: TestServer,
    admin: String,
    agent: String,
}

async fn globex() -> Globex {
    let s = TestServer::start().await;
    let admin = s.token("globex", Role::Admin, None, None, None).await;
    let agent = s.agent_token("globex", "bot", "bob", "globex/team").await;
    Globex { s, admin, agent }
}

fn files(entries: &[(&str, &str)]) -> Value {
    Value::Object(
        entries
            .iter()
            .map(|(p, t)| (p.to_string(), json!(t)))
            .collect(),
    )
}

impl Globex {
    async fn put_bundle(&self, query: &str, body: Value) -> (StatusCode, Value) {
        self.s
            .put(
                &format!("/api/v1/policies/bundle{query}"),
                &self.admin,
                &body,
            )
            .await
    }

    async fn decision(&self, tool: &str) -> Value {
        let (status, v) = self
            .s
            .post(
                "/api/v1/authorize",
                &self.agent,
                &tool_call(tool, "low", json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v
    }

    async fn events(&self, kind: &str) -> Vec<Value> {
        let (status, page) = self
            .s
            .get(
                &format!("/api/v1/audit/events?type={kind}&limit=100"),
                &self.admin,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["events"].as_array().cloned().unwrap_or_default()
    }
}

/// The events of a type once there are at least `n` (some are written in the background).
async fn at_least(s: &TestServer, token: &str, kind: &str, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let (_, page) = s
            .get(
                &format!("/api/v1/audit/events?type={kind}&limit=100"),
                token,
            )
            .await;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        if events.len() >= n {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} {kind} events");
}

#[tokio::test]
async fn bundles_are_versioned_diffed_and_rolled_back() {
    let g = globex().await;
    let (status, p) = g
        .put_bundle(
            "",
            json!({"files": files(&[("globex/team/tools.cedar", ALLOW_TOOLS)])}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no base version: {p}");
    assert!(
        p["detail"].as_str().unwrap().contains("base_version"),
        "{p}"
    );

    let (status, v1) = g
        .put_bundle(
            "",
            json!({"files": files(&[("globex/team/tools.cedar", ALLOW_TOOLS)]), "base_version": 0, "message": "first"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v1}");
    assert_eq!(v1["version"]["version"], 1);
    assert_eq!(v1["diff"]["added"], json!(["globex/team/tools.cedar"]));
    assert_eq!(g.decision("x__run_shell").await["decision"], "allow");

    let (status, v2) = g
        .put_bundle(
            "",
            json!({"files": files(&[
                ("globex/team/tools.cedar", ALLOW_TOOLS),
                ("globex/team/shell.cedar", NO_SHELL),
            ]), "base_version": 1, "message": "no shell"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v2}");
    assert_eq!(v2["version"]["version"], 2);
    let d = g.decision("x__run_shell").await;
    assert_eq!(d["decision"], "deny");
    assert_eq!(d["reasons"][0]["origin"], "globex/team/shell.cedar");

    let (_, versions) = g.s.get("/api/v1/policies/versions", &g.admin).await;
    let list = versions.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["version"], 2, "newest first");
    assert_eq!(list[0]["source"], "api");
    assert_eq!(list[0]["message"], "no shell");
    assert!(
        list[0]["author"]
            .as_str()
            .unwrap()
            .starts_with("token:tok_")
    );
    assert_eq!(list[0]["sha256"].as_str().unwrap().len(), 64);
    assert_ne!(list[0]["sha256"], list[1]["sha256"]);

    let (status, one) = g.s.get("/api/v1/policies/versions/2", &g.admin).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["files"]["globex/team/shell.cedar"], NO_SHELL);
    assert_eq!(one["diff"]["from"], 1);
    assert_eq!(one["diff"]["added"], json!(["globex/team/shell.cedar"]));
    let patch = one["diff"]["files"][0]["diff"].as_str().unwrap();
    assert!(patch.contains("+++ b/globex/team/shell.cedar"), "{patch}");
    assert!(patch.contains("+@id(\"team.no-shell\")"), "{patch}");

    let (status, d) = g.s.get("/api/v1/policies/diff?from=2&to=1", &g.admin).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d["removed"], json!(["globex/team/shell.cedar"]));
    assert!(d["changed"].as_array().unwrap().is_empty());
    let (status, _) = g.s.get("/api/v1/policies/diff?from=1&to=9", &g.admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = g.s.get("/api/v1/policies/versions/9", &g.admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Rollback: a new version equal to the old one.
    let (status, p) =
        g.s.post(
            "/api/v1/policies/rollback",
            &g.admin,
            &json!({"version": 99}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{p}");
    let (status, v3) =
        g.s.post(
            "/api/v1/policies/rollback",
            &g.admin,
            &json!({"version": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v3}");
    assert_eq!(v3["version"]["version"], 3);
    assert_eq!(
        v3["version"]["sha256"], list[1]["sha256"],
        "same content as v1"
    );
    assert_eq!(v3["diff"]["removed"], json!(["globex/team/shell.cedar"]));
    assert_eq!(g.decision("x__run_shell").await["decision"], "allow");
    let rolled = g.events("policy.bundle.rolled_back").await;
    assert_eq!(rolled.len(), 1);
    assert_eq!(rolled[0]["payload"]["rolled_back_to"], 1);
    assert_eq!(rolled[0]["payload"]["version"], 3);
    let applied = g.events("policy.bundle.applied").await;
    assert_eq!(applied.len(), 2, "one event per applied version");
    assert!(
        applied.iter().any(|e| e["payload"]["diff"][0]["diff"]
            .as_str()
            .unwrap()
            .contains("no-shell")),
        "{applied:?}"
    );

    // Nothing is applied unless every file validates; every error located.
    let (status, p) = g
        .put_bundle(
            "",
            json!({"files": files(&[
                ("globex/team/tools.cedar", ALLOW_TOOLS),
                ("globex/team/bad.cedar", "permit (principal, action, resource) when { nonsense };"),
                ("globex/ops/typo.cedar", "permit (principal, action == Action::\"fly\", resource);"),
            ]), "base_version": 3}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{p}");
    let errors: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("globex/team/bad.cedar:1:")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("globex/ops/typo.cedar:1:")),
        "{errors:?}"
    );
    let (status, p) = g
        .put_bundle(
            "",
            json!({"files": files(&[("acme/x.cedar", ALLOW_TOOLS)]), "base_version": 3}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{p}");
    assert!(
        p["errors"][0].as_str().unwrap().contains("outside tenant"),
        "{p}"
    );
    let (_, versions) = g.s.get("/api/v1/policies/versions", &g.admin).await;
    assert_eq!(versions.as_array().unwrap().len(), 3, "nothing applied");

    // Another tenant sees none of it.
    let other = g.s.token("initech", Role::Admin, None, None, None).await;
    let (_, list) = g.s.get("/api/v1/policies/versions", &other).await;
    assert_eq!(list, json!([]));
    let (status, _) = g.s.get("/api/v1/policies/versions/1", &other).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) =
        g.s.post("/api/v1/policies/rollback", &other, &json!({"version": 1}))
            .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // An agent may not change the bundle.
    let (status, _) =
        g.s.put(
            "/api/v1/policies/bundle",
            &g.agent,
            &json!({"files": {}, "base_version": 3}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn of_two_writers_based_on_the_same_version_the_second_gets_409() {
    let g = globex().await;
    let body = |text: &str| json!({"files": files(&[("globex/team/tools.cedar", text)]), "base_version": 0});
    let (a, b) = tokio::join!(
        g.put_bundle("", body(ALLOW_TOOLS)),
        g.put_bundle("", body(NO_SHELL)),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "{a:?} {b:?}"
    );
    let conflict = if a.0 == StatusCode::CONFLICT {
        a.1
    } else {
        b.1
    };
    assert!(
        conflict["detail"]
            .as_str()
            .unwrap()
            .contains("version 1, not 0"),
        "{conflict}"
    );

    // If-Match names the base version too.
    let r =
        g.s.client
            .put(format!("{}/api/v1/policies/bundle", g.s.base))
            .bearer_auth(&g.admin)
            .header("if-match", "\"0\"")
            .json(&json!({"files": files(&[("globex/team/tools.cedar", ALLOW_TOOLS)])}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r =
        g.s.client
            .put(format!("{}/api/v1/policies/bundle", g.s.base))
            .bearer_auth(&g.admin)
            .header("if-match", "\"1\"")
            .json(&json!({"files": files(&[("globex/team/tools.cedar", ALLOW_TOOLS)])}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, versions) = g.s.get("/api/v1/policies/versions", &g.admin).await;
    assert_eq!(versions.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn the_policy_directory_manages_its_tenants_and_each_change_is_a_version() {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("policies");
    std::fs::create_dir_all(pdir.join("acme/team")).unwrap();
    std::fs::write(pdir.join("acme/team/tools.cedar"), ALLOW_TOOLS).unwrap();
    let p = pdir.clone();
    let s = TestServer::start_in(dir, move |c| {
        c.policies = Some(p);
        c.policy_poll = Duration::from_millis(100);
    })
    .await;
    let admin = s.token("acme", Role::Admin, None, None, None).await;
    let agent = s.agent_token("acme", "bot", "alice", "acme/team").await;
    let (_, versions) = s.get("/api/v1/policies/versions", &admin).await;
    assert_eq!(versions.as_array().unwrap().len(), 1, "{versions}");
    assert_eq!(versions[0]["author"], "directory");
    assert_eq!(versions[0]["source"], "directory");
    let (_, overview) = s.get("/api/v1/policies", &admin).await;
    assert_eq!(overview["managed_by"], "directory");
    assert_eq!(overview["files"], json!(["acme/team/tools.cedar"]));

    // API writes to a directory-managed tenant are refused, naming the directory.
    let folder = pdir.join("acme").display().to_string();
    for (method, path, body) in [
        (
            "PUT",
            "/api/v1/policies/bundle",
            json!({"files": {}, "base_version": 1}),
        ),
        ("POST", "/api/v1/policies/rollback", json!({"version": 1})),
        ("POST", "/api/v1/policies/promote", json!({})),
    ] {
        let (status, p) = if method == "PUT" {
            s.put(path, &admin, &body).await
        } else {
            s.post(path, &admin, &body).await
        };
        assert_eq!(status, StatusCode::CONFLICT, "{path}: {p}");
        assert!(p["detail"].as_str().unwrap().contains(&folder), "{p}");
        assert!(p["type"].as_str().unwrap().ends_with("/directory-managed"));
    }
    let (status, _) = s
        .put_text("/api/v1/policies/acme/team", &admin, ALLOW_TOOLS)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // A change of the files is picked up as a new version with author `directory`.
    std::fs::write(
        pdir.join("acme/team/tools.cedar"),
        format!("{ALLOW_TOOLS}\n{NO_SHELL}"),
    )
    .unwrap();
    std::fs::write(
        pdir.join("acme/team/tools.test.yaml"),
        TESTS.replace("globex", "acme"),
    )
    .unwrap();
    let mut versions = Value::Null;
    for _ in 0..100 {
        (_, versions) = s.get("/api/v1/policies/versions", &admin).await;
        if versions.as_array().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(versions.as_array().unwrap().len(), 2, "{versions}");
    assert_eq!(versions[0]["author"], "directory");
    assert_eq!(versions[0]["file_count"], 2);
    let (_, v2) = s.get("/api/v1/policies/versions/2", &admin).await;
    assert_eq!(v2["diff"]["changed"], json!(["acme/team/tools.cedar"]));
    assert_eq!(v2["diff"]["added"], json!(["acme/team/tools.test.yaml"]));
    let (_, d) = s
        .post(
            "/api/v1/authorize",
            &agent,
            &tool_call("x__run_shell", "low", json!({})),
        )
        .await;
    assert_eq!(d["decision"], "deny", "{d}");
    let applied = at_least(&s, &admin, "policy.bundle.applied", 2).await;
    assert_eq!(applied[0]["payload"]["author"], "directory");

    // An empty folder is enough to claim a tenant for the directory.
    let initech = s.token("initech", Role::Admin, None, None, None).await;
    let (status, _) = s
        .put(
            "/api/v1/policies/bundle",
            &initech,
            &json!({"files": {}, "base_version": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "initech is API-managed so far");
    std::fs::create_dir_all(pdir.join("initech")).unwrap();
    let mut status = StatusCode::OK;
    for _ in 0..100 {
        (status, _) = s
            .put(
                "/api/v1/policies/bundle",
                &initech,
                &json!({"files": {}, "base_version": 1}),
            )
            .await;
        if status == StatusCode::CONFLICT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn failing_policy_tests_refuse_a_bundle_unless_the_caller_accepts_them() {
    let g = globex().await;
    // The bundle forgets the shell forbid its tests expect.
    let broken = json!({"files": files(&[
        ("globex/team/tools.cedar", ALLOW_TOOLS),
        ("globex/team/tools.test.yaml", TESTS),
    ]), "base_version": 0});
    let (status, p) = g.put_bundle("", broken.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(p["report"]["failed"], 1, "{p}");
    assert_eq!(p["report"]["cases"], 2);
    assert!(
        p["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("globex/team/tools.test.yaml:"),
        "{p}"
    );
    let (_, versions) = g.s.get("/api/v1/policies/versions", &g.admin).await;
    assert_eq!(versions, json!([]), "nothing applied");

    let (status, v) = g.put_bundle("?tests=warn", broken).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["tests"]["passed"], false);
    assert_eq!(v["version"]["test_failures"][0]["name"], "shell is refused");
    let applied = g.events("policy.bundle.applied").await;
    assert_eq!(
        applied[0]["payload"]["test_failures"][0]["name"],
        "shell is refused"
    );
    let (status, _) = g
        .put_bundle("?tests=maybe", json!({"files": {}, "base_version": 1}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let fixed = json!({"files": files(&[
        ("globex/team/tools.cedar", ALLOW_TOOLS),
        ("globex/team/shell.cedar", NO_SHELL),
        ("globex/team/tools.test.yaml", TESTS),
    ]), "base_version": 1});
    let (status, v) = g.put_bundle("", fixed).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["tests"]["passed"], true);
    assert!(v["version"].get("test_failures").is_none());

    // A test file with an unknown field is an error, located.
    let (status, p) = g
        .put_bundle(
            "",
            json!({"files": files(&[
                ("globex/team/tools.cedar", ALLOW_TOOLS),
                ("globex/team/t.test.yaml", "cases:\n  - name: x\n    expect: {decision: allow}\n    surprise: 1\n"),
            ]), "base_version": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{p}");
    assert!(
        p["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("globex/team/t.test.yaml:"),
        "{p}"
    );
}

#[tokio::test]
async fn warn_and_off_bundles_on_live_decisions_and_promotion_of_warn() {
    let g = globex().await;
    let (status, v) = g
        .put_bundle(
            "",
            json!({"files": files(&[
                ("globex/team/tools.cedar", ALLOW_TOOLS),
                ("globex/team/shell.cedar", NO_SHELL),
            ]), "base_version": 0, "mode": "warn"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["version"]["mode"], "warn");
    let d = g.decision("x__run_shell").await;
    assert_eq!(d["decision"], "allow", "warn lets it through: {d}");
    assert_eq!(d["warnings"][0]["policy"]["id"], "team.no-shell");
    assert_eq!(d["warnings"][0]["would"], "deny");
    let (_, e) =
        g.s.get(
            &format!("/api/v1/audit/events/{}", d["event_id"].as_str().unwrap()),
            &g.admin,
        )
        .await;
    assert_eq!(e["decision"]["outcome"], "allow", "{e}");
    assert_eq!(e["decision"]["warnings"][0]["would"], "deny", "{e}");
    assert_eq!(g.decision("git__status").await["warnings"], json!([]));

    // A per-policy @mode("off") policy is not evaluated at all.
    let off_policy = NO_SHELL.replace("@reason", "@mode(\"off\")\n@reason");
    let (status, _) = g
        .put_bundle(
            "",
            json!({"files": files(&[
                ("globex/team/tools.cedar", ALLOW_TOOLS),
                ("globex/team/shell.cedar", &off_policy),
            ]), "base_version": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let d = g.decision("x__run_shell").await;
    assert_eq!(d["decision"], "allow");
    assert_eq!(d["warnings"], json!([]));

    // A bundle that is off: nothing evaluated, so nothing permits (fail closed).
    let (status, _) = g
        .put_bundle(
            "",
            json!({"files": files(&[("globex/team/tools.cedar", ALLOW_TOOLS)]), "base_version": 2, "mode": "off"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let d = g.decision("git__status").await;
    assert_eq!(d["decision"], "deny", "{d}");
    assert!(d["reasons"].as_array().unwrap().is_empty(), "{d}");

    // Back to warn, then promote: one audited step, a new version in enforce mode.
    let (status, _) = g
        .put_bundle(
            "",
            json!({"files": files(&[
                ("globex/team/tools.cedar", ALLOW_TOOLS),
                ("globex/team/shell.cedar", NO_SHELL),
            ]), "base_version": 3, "mode": "warn"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, v) =
        g.s.post(
            "/api/v1/policies/promote",
            &g.admin,
            &json!({"base_version": 4}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["version"]["version"], 5);
    assert_eq!(v["version"]["mode"], "enforce");
    assert!(
        v["diff"]["files"].as_array().unwrap().is_empty(),
        "same files"
    );
    assert_eq!(g.decision("x__run_shell").await["decision"], "deny");
    let promoted = g.events("policy.bundle.promoted").await;
    assert_eq!(promoted[0]["payload"]["promoted_from"], "warn");
    let (status, p) =
        g.s.post("/api/v1/policies/promote", &g.admin, &json!({}))
            .await;
    assert_eq!(status, StatusCode::CONFLICT, "nothing left to promote: {p}");
}

#[tokio::test]
async fn a_shadow_bundle_is_evaluated_on_live_decisions_and_promoted() {
    let g = globex().await;
    let (status, _) = g
        .put_bundle(
            "",
            json!({"files": files(&[("globex/team/tools.cedar", ALLOW_TOOLS)]), "base_version": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = g.s.delete("/api/v1/policies/shadow", &g.admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no shadow yet");

    // The shadow candidate's own tests gate it as well.
    let (status, p) =
        g.s.put(
            "/api/v1/policies/shadow",
            &g.admin,
            &json!({"files": files(&[
                ("globex/team/tools.cedar", ALLOW_TOOLS),
                ("globex/team/tools.test.yaml", TESTS),
            ])}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");

    let (status, shadow) =
        g.s.put(
            "/api/v1/policies/shadow",
            &g.admin,
            &json!({"files": files(&[
                ("globex/team/tools.cedar", ALLOW_TOOLS),
                ("globex/team/shell.cedar", NO_SHELL),
                ("globex/team/tools.test.yaml", TESTS),
            ]), "message": "try the shell ban"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{shadow}");
    assert_eq!(shadow["based_on"], 1);
    assert_eq!(shadow["tests"]["passed"], true);
    let (_, overview) = g.s.get("/api/v1/policies", &g.admin).await;
    assert_eq!(overview["shadow"]["sha256"], shadow["sha256"]);

    // Only the bundle in force acts; the disagreement is counted and recorded.
    let d = g.decision("x__run_shell").await;
    assert_eq!(d["decision"], "allow", "{d}");
    assert_eq!(g.decision("git__status").await["decision"], "allow");
    let found = at_least(&g.s, &g.admin, "policy.shadow.disagreement", 1).await;
    assert_eq!(found.len(), 1, "agreement is not recorded: {found:?}");
    let e = &found[0];
    assert_eq!(e["payload"]["decision_event"], d["event_id"]);
    assert_eq!(e["payload"]["enforced"]["outcome"], "allow");
    assert_eq!(e["payload"]["shadow"]["outcome"], "deny");
    assert_eq!(e["payload"]["shadow"]["policies"], json!(["team.no-shell"]));
    assert_eq!(e["namespace"], "globex/team");
    let (_, metrics) = g.s.get_text("/metrics", None).await;
    assert!(
        metrics.contains(
            "warden_policy_shadow_disagreements_total{tenant=\"globex\",policy=\"team.no-shell\",from=\"allow\",to=\"deny\"} 1"
        ),
        "{metrics}"
    );

    // Promotion: the candidate becomes the enforced bundle as a new version.
    let (status, v) =
        g.s.post(
            "/api/v1/policies/promote",
            &g.admin,
            &json!({"message": "ban shell"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["version"]["version"], 2);
    assert_eq!(v["version"]["sha256"], shadow["sha256"]);
    assert_eq!(v["version"]["message"], "ban shell");
    assert_eq!(
        v["diff"]["added"],
        json!(["globex/team/shell.cedar", "globex/team/tools.test.yaml"])
    );
    let (status, _) = g.s.get("/api/v1/policies/shadow", &g.admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the shadow was promoted");
    assert_eq!(g.decision("x__run_shell").await["decision"], "deny");
    let promoted = g.events("policy.bundle.promoted").await;
    assert_eq!(promoted[0]["payload"]["promoted_from"], "shadow");
    assert_eq!(g.events("policy.shadow.started").await.len(), 1);

    // Start and stop a shadow: both audited.
    let (status, _) =
        g.s.put(
            "/api/v1/policies/shadow",
            &g.admin,
            &json!({"files": files(&[("globex/team/tools.cedar", ALLOW_TOOLS)])}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = g.s.delete("/api/v1/policies/shadow", &g.admin).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(g.events("policy.shadow.stopped").await.len(), 1);
    assert_eq!(g.decision("x__run_shell").await["decision"], "deny");
    let found = at_least(&g.s, &g.admin, "policy.shadow.disagreement", 1).await;
    assert_eq!(found.len(), 1, "a stopped shadow records nothing");
}

#[tokio::test]
async fn shadow_and_warn_bundles_act_on_gateway_traffic() {
    let server = start_gateway().await;
    let admin = server.token("acme", Role::Admin, None, None, None).await;
    let auditor = server.token("acme", Role::Auditor, None, None, None).await;
    // acme is managed by the policy directory; a shadow never acts, so it may run one.
    let candidate = format!(
        "{MCP_POLICIES}\n@id(\"shadow.no-echo\")\nforbid (principal, action == Action::\"call_tool\", resource == Tool::\"everything__echo\");\n"
    );
    let (status, p) = server
        .put(
            "/api/v1/policies/shadow",
            &admin,
            &json!({"files": {"acme/mcp.cedar": candidate}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");

    let token = server
        .agent_token("acme", "claude-code", "alice", "acme/platform")
        .await;
    let mut mcp = Mcp::new(format!("{}/mcp", server.base), token);
    mcp.initialize(json!({})).await;
    let echoed = mcp
        .tool(2, "everything__echo", json!({"message": "still allowed"}))
        .await;
    assert!(
        echoed.text().contains("still allowed"),
        "{:?}",
        echoed.messages
    );

    let decided = at_least(&server, &auditor, "mcp.tool.call.decided", 1).await;
    let found = at_least(&server, &auditor, "policy.shadow.disagreement", 1).await;
    assert_eq!(found[0]["payload"]["decision_event"], decided[0]["id"]);
    assert_eq!(
        found[0]["payload"]["shadow"]["policies"],
        json!(["shadow.no-echo"])
    );
    let (_, metrics) = server.get_text("/metrics", None).await;
    assert!(
        metrics.contains("policy=\"shadow.no-echo\",from=\"allow\",to=\"deny\"} 1"),
        "{metrics}"
    );

    // An API-managed tenant in warn mode: the call goes through, with the warning recorded.
    let globex = server.token("globex", Role::Admin, None, None, None).await;
    let (status, p) = server
        .put(
            "/api/v1/policies/bundle",
            &globex,
            &json!({"files": {"globex/mcp.cedar": "@id(\"no-echo\")\nforbid (principal, action == Action::\"call_tool\", resource == Tool::\"everything__echo\");\n"}, "base_version": 0, "mode": "warn"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    let token = server.agent_token("globex", "bot", "bob", "globex").await;
    let mut mcp = Mcp::new(format!("{}/mcp", server.base), token);
    mcp.initialize(json!({})).await;
    let echoed = mcp
        .tool(2, "everything__echo", json!({"message": "warned only"}))
        .await;
    assert!(
        echoed.text().contains("warned only"),
        "{:?}",
        echoed.messages
    );
    let globex_auditor = server
        .token("globex", Role::Auditor, None, None, None)
        .await;
    let decided = at_least(&server, &globex_auditor, "mcp.tool.call.decided", 1).await;
    assert_eq!(decided[0]["decision"]["outcome"], "allow", "{}", decided[0]);
    assert_eq!(
        decided[0]["decision"]["warnings"][0]["policy"]["id"],
        "no-echo"
    );
    assert_eq!(decided[0]["decision"]["warnings"][0]["would"], "deny");
}
