//! `POST /api/v1/policies/simulate`: a deterministic history recorded through the real server,
//! replayed under a candidate with one policy changed; the exact changes, the tenant's
//! confinement, and bad windows and candidates.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{TestServer, tool_call};
use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_core::Role;

const RECORDED: &str = r#"@id("tools")
permit (principal is Agent, action == Action::"call_tool", resource is Tool);

@id("no-shell")
forbid (principal, action == Action::"call_tool", resource is Tool)
when { resource.name == "run_shell" };

@id("ask-deploy")
@effect("ask")
permit (principal is Agent, action == Action::"call_tool", resource is Tool)
when { resource.name == "trigger_deploy" };
"#;

/// The one change: `ask-deploy` now asks before deleting a repository instead of before a
/// deployment.
const CANDIDATE: &str = r#"@id("tools")
permit (principal is Agent, action == Action::"call_tool", resource is Tool);

@id("no-shell")
forbid (principal, action == Action::"call_tool", resource is Tool)
when { resource.name == "run_shell" };

@id("ask-deploy")
@effect("ask")
permit (principal is Agent, action == Action::"call_tool", resource is Tool)
when { resource.name == "delete_repository" };
"#;

const OTHER: &str = r#"@id("other-tools")
permit (principal is Agent, action == Action::"call_tool", resource is Tool);
"#;

struct History {
    s: TestServer,
    /// Event ids by (agent, tool), in the order they were recorded.
    ids: BTreeMap<(String, String), Vec<String>>,
    started: chrono::DateTime<chrono::Utc>,
}

impl History {
    fn of(&self, agent: &str, tool: &str) -> Vec<String> {
        self.ids
            .get(&(agent.to_owned(), tool.to_owned()))
            .cloned()
            .unwrap_or_default()
    }
}

/// Two agents of acme (one in acme/platform, one in acme/ops) and one of tenant `other` call
/// tools; every decision goes through `POST /api/v1/authorize` and is recorded.
async fn history() -> History {
    let started = chrono::Utc::now() - chrono::Duration::seconds(1);
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("policies");
    std::fs::create_dir_all(pdir.join("acme")).unwrap();
    std::fs::create_dir_all(pdir.join("other")).unwrap();
    std::fs::write(pdir.join("acme/tools.cedar"), RECORDED).unwrap();
    std::fs::write(pdir.join("other/tools.cedar"), OTHER).unwrap();
    let s = TestServer::start_in(dir, move |c| {
        c.policies = Some(pdir);
        c.policy_poll = Duration::from_millis(100);
    })
    .await;
    let a = s
        .agent_token("acme", "bot-a", "alice", "acme/platform")
        .await;
    let b = s.agent_token("acme", "bot-b", "bob", "acme/ops").await;
    let o = s.agent_token("other", "bot-o", "olga", "other/team").await;
    let calls: [(&str, &str, &str, usize); 9] = [
        (a.as_str(), "bot-a", "gh__read_file", 3),
        (a.as_str(), "bot-a", "gh__delete_repository", 2),
        (a.as_str(), "bot-a", "sh__run_shell", 1),
        (a.as_str(), "bot-a", "deploy__trigger_deploy", 1),
        (b.as_str(), "bot-b", "gh__read_file", 2),
        (b.as_str(), "bot-b", "gh__delete_repository", 1),
        (b.as_str(), "bot-b", "deploy__trigger_deploy", 2),
        (o.as_str(), "bot-o", "gh__delete_repository", 2),
        (o.as_str(), "bot-o", "deploy__trigger_deploy", 1),
    ];
    let mut ids: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (token, agent, tool, times) in calls {
        for _ in 0..times {
            let (status, v) = s
                .post(
                    "/api/v1/authorize",
                    token,
                    &tool_call(tool, "low", json!({})),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{v}");
            ids.entry((agent.to_owned(), tool.to_owned()))
                .or_default()
                .push(v["event_id"].as_str().unwrap().to_owned());
        }
    }
    History { s, ids, started }
}

fn body(files: &[(&str, &str)], from: &str, to: &str, namespace: Option<&str>) -> Value {
    let files: BTreeMap<&str, &str> = files.iter().copied().collect();
    let mut b = json!({"candidate": {"files": files}, "from": from, "to": to});
    if let Some(ns) = namespace {
        b["namespace"] = json!(ns);
    }
    b
}

fn window(h: &History) -> (String, String) {
    (
        h.started.to_rfc3339(),
        (chrono::Utc::now() + chrono::Duration::seconds(5)).to_rfc3339(),
    )
}

fn group<'a>(groups: &'a Value, key: &str) -> &'a Value {
    groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == key || g["policy"] == key)
        .unwrap_or_else(|| panic!("no group {key} in {groups}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn one_changed_policy_reports_exactly_the_decisions_it_changes() {
    let h = history().await;
    let admin = h.s.token("acme", Role::PolicyAdmin, None, None, None).await;
    let (from, to) = window(&h);
    let (status, r) =
        h.s.post(
            "/api/v1/policies/simulate",
            &admin,
            &body(&[("acme/tools.cedar", CANDIDATE)], &from, &to, None),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");

    // acme recorded 12 decisions (other's 3 are not read): 3 trigger_deploy asks become
    // allows, 3 delete_repository allows become asks, the 6 others keep their outcome.
    assert_eq!(r["tenant"], "acme");
    assert_eq!(r["recorded"], 12);
    assert_eq!(r["replayed"], 12);
    assert_eq!(r["changed"], 6);
    assert_eq!(r["unchanged"], 6);
    assert_eq!(r["candidate_errors"]["count"], 0);
    assert_eq!(r["not_replayed"]["registry_refused"]["count"], 0);
    assert_eq!(r["candidate"]["policies"], 3, "the candidate alone");

    let deletes = [
        h.of("bot-a", "gh__delete_repository"),
        h.of("bot-b", "gh__delete_repository"),
    ]
    .concat();
    let deploys = [
        h.of("bot-a", "deploy__trigger_deploy"),
        h.of("bot-b", "deploy__trigger_deploy"),
    ]
    .concat();
    let directions = r["directions"].as_array().unwrap();
    assert_eq!(directions.len(), 2, "{r}");
    let dir = |from: &str, to: &str| {
        directions
            .iter()
            .find(|d| d["from"] == from && d["to"] == to)
            .unwrap_or_else(|| panic!("no {from} → {to} in {r}"))
    };
    let to_ask = dir("allow", "approval_required");
    assert_eq!(to_ask["count"], 3);
    assert_eq!(strings(&to_ask["examples"]), deletes);
    let to_allow = dir("approval_required", "allow");
    assert_eq!(to_allow["count"], 3);
    assert_eq!(strings(&to_allow["examples"]), deploys);

    // Both changed policies' decisions name both policies, before and now.
    let ask = group(&r["by_policy"], "ask-deploy");
    assert_eq!(ask["count"], 6);
    assert_eq!(ask["determined_before"], 3);
    assert_eq!(ask["determines_now"], 3);
    assert_eq!(
        ask["directions"],
        json!({"allow_to_approval_required": 3, "approval_required_to_allow": 3})
    );
    let tools = group(&r["by_policy"], "tools");
    assert_eq!(
        (
            tools["count"].clone(),
            tools["determined_before"].clone(),
            tools["determines_now"].clone()
        ),
        (json!(6), json!(3), json!(3))
    );
    assert_eq!(
        r["by_policy"].as_array().unwrap().len(),
        2,
        "no-shell changed nothing"
    );

    let a = group(&r["by_agent"], "bot-a");
    assert_eq!(a["count"], 3);
    assert_eq!(
        a["directions"],
        json!({"allow_to_approval_required": 2, "approval_required_to_allow": 1})
    );
    let b = group(&r["by_agent"], "bot-b");
    assert_eq!(b["count"], 3);
    assert_eq!(
        b["directions"],
        json!({"allow_to_approval_required": 1, "approval_required_to_allow": 2})
    );
    assert_eq!(
        strings(&b["examples"]),
        [
            h.of("bot-b", "gh__delete_repository"),
            h.of("bot-b", "deploy__trigger_deploy")
        ]
        .concat()
    );

    assert_eq!(group(&r["by_tool"], "gh__delete_repository")["count"], 3);
    assert_eq!(group(&r["by_tool"], "deploy__trigger_deploy")["count"], 3);
    assert_eq!(r["by_tool"].as_array().unwrap().len(), 2);
    assert_eq!(group(&r["by_namespace"], "acme/platform")["count"], 3);
    assert_eq!(group(&r["by_namespace"], "acme/ops")["count"], 3);

    // The same window replayed under the policies in force changes nothing.
    let (status, same) =
        h.s.post(
            "/api/v1/policies/simulate",
            &admin,
            &body(&[("acme/tools.cedar", RECORDED)], &from, &to, None),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{same}");
    assert_eq!(
        (same["replayed"].clone(), same["changed"].clone()),
        (json!(12), json!(0))
    );

    // A namespace subtree replays only its own decisions.
    let (status, ops) =
        h.s.post(
            "/api/v1/policies/simulate",
            &admin,
            &body(
                &[("acme/tools.cedar", CANDIDATE)],
                &from,
                &to,
                Some("acme/ops"),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ops}");
    assert_eq!(ops["namespace"], "acme/ops");
    assert_eq!(
        (ops["recorded"].clone(), ops["changed"].clone()),
        (json!(5), json!(3))
    );
    assert_eq!(ops["by_agent"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_window_without_decisions_is_an_answer_not_an_error() {
    let h = history().await;
    let auditor = h.s.token("acme", Role::Auditor, None, None, None).await;
    let (status, r) =
        h.s.post(
            "/api/v1/policies/simulate",
            &auditor,
            &body(
                &[("acme/tools.cedar", CANDIDATE)],
                "2020-01-01T00:00:00Z",
                "2020-01-02T00:00:00Z",
                None,
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(
        (r["recorded"].clone(), r["changed"].clone()),
        (json!(0), json!(0))
    );
    assert!(r["directions"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn simulation_reads_only_the_callers_tenant() {
    let h = history().await;
    let (from, to) = window(&h);
    let other = h.s.token("other", Role::Admin, None, None, None).await;
    // other's own decisions: the acme-looking candidate would deny them all, but other's
    // candidate is its own files only; it sees its 3 decisions and none of acme's 12.
    let (status, r) =
        h.s.post(
            "/api/v1/policies/simulate",
            &other,
            &body(
                &[(
                    "other/tools.cedar",
                    "@id(\"x\")\nforbid (principal, action, resource);\n",
                )],
                &from,
                &to,
                None,
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["tenant"], "other");
    assert_eq!(
        (r["recorded"].clone(), r["changed"].clone()),
        (json!(3), json!(3))
    );
    let examples: Vec<String> = strings(&r["directions"][0]["examples"]);
    let acme_ids: Vec<String> = h
        .ids
        .iter()
        .filter(|((a, _), _)| a != "bot-o")
        .flat_map(|(_, v)| v.clone())
        .collect();
    assert!(examples.iter().all(|e| !acme_ids.contains(e)));

    // Another tenant's namespace is not found; another tenant's files are refused.
    let (status, p) =
        h.s.post(
            "/api/v1/policies/simulate",
            &other,
            &body(
                &[("other/tools.cedar", OTHER)],
                &from,
                &to,
                Some("acme/ops"),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{p}");
    let (status, p) =
        h.s.post(
            "/api/v1/policies/simulate",
            &other,
            &body(&[("acme/tools.cedar", CANDIDATE)], &from, &to, None),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{p}");
    assert!(
        p["errors"][0]
            .as_str()
            .unwrap()
            .contains("outside tenant other"),
        "{p}"
    );

    // A token confined to acme/ops replays acme/ops only, and may not ask for more.
    let confined =
        h.s.token("acme", Role::Auditor, None, None, Some("acme/ops"))
            .await;
    let (status, r) =
        h.s.post(
            "/api/v1/policies/simulate",
            &confined,
            &body(&[("acme/tools.cedar", CANDIDATE)], &from, &to, None),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(
        (r["namespace"].clone(), r["recorded"].clone()),
        (json!("acme/ops"), json!(5))
    );
    let (status, p) =
        h.s.post(
            "/api/v1/policies/simulate",
            &confined,
            &body(
                &[("acme/tools.cedar", CANDIDATE)],
                &from,
                &to,
                Some("acme/platform"),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{p}");

    // Agents and approvers may not read the audit trail, so may not simulate.
    let agent =
        h.s.agent_token("acme", "bot-a", "alice", "acme/platform")
            .await;
    let (status, _) =
        h.s.post(
            "/api/v1/policies/simulate",
            &agent,
            &body(&[("acme/tools.cedar", CANDIDATE)], &from, &to, None),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn bad_windows_and_candidates_are_400_problems() {
    let h = history().await;
    let admin = h.s.token("acme", Role::Admin, None, None, None).await;
    let (from, to) = window(&h);
    let post = |b: Value| {
        let s = &h.s;
        let admin = admin.clone();
        async move { s.post("/api/v1/policies/simulate", &admin, &b).await }
    };

    let (status, p) = post(body(&[("acme/tools.cedar", CANDIDATE)], &to, &from, None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("must be earlier than"),
        "{p}"
    );

    let (status, p) = post(body(
        &[("acme/tools.cedar", CANDIDATE)],
        "last tuesday",
        &to,
        None,
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("from"), "{p}");

    let (status, p) =
        post(json!({"candidate": {"files": {}}, "from": from, "to": to, "window": 1})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{p}");

    // A candidate that does not parse: every error with file:line:column, nothing simulated.
    let (status, p) = post(body(
        &[(
            "acme/tools.cedar",
            "@id(\"x\")\npermit (principal, action, resource)\nwhen { nope };\n",
        )],
        &from,
        &to,
        None,
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{p}");
    assert!(
        p["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("acme/tools.cedar:3:"),
        "{p}"
    );

    // One that does not validate against the schema.
    let (status, p) = post(body(
        &[(
            "acme/tools.cedar",
            "permit (principal, action == Action::\"fly\", resource);\n",
        )],
        &from,
        &to,
        None,
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{p}");
    assert!(
        p["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("acme/tools.cedar:1:"),
        "{p}"
    );

    // No policy files at all, or files outside any namespace folder.
    let (status, p) = post(body(&[], &from, &to, None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{p}");
    assert!(
        p["errors"][0].as_str().unwrap().contains("no policy file"),
        "{p}"
    );
    let (status, p) = post(body(
        &[("tools.cedar", CANDIDATE), ("acme/notes.txt", "")],
        &from,
        &to,
        None,
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{p}");
    assert_eq!(p["errors"].as_array().unwrap().len(), 2, "{p}");
}

#[test]
fn the_replay_recognises_warden_redacted_values() {
    assert_eq!(
        warden_policy::simulate::REDACTED_PREFIX,
        warden_audit::redact::HASH_PREFIX
    );
}

#[tokio::test]
async fn the_simulate_route_is_in_the_openapi_document() {
    let s = TestServer::start().await;
    let (_, doc) = s.get_text("/openapi.json", None).await;
    let doc: Value = serde_json::from_str(&doc).unwrap();
    let op = &doc["paths"]["/api/v1/policies/simulate"]["post"];
    assert!(
        op.is_object(),
        "POST /api/v1/policies/simulate missing from OpenAPI"
    );
    for status in ["200", "400", "403", "404"] {
        assert!(
            op["responses"][status].is_object(),
            "{status} undocumented: {op}"
        );
    }
    for schema in [
        "SimulateRequest",
        "CandidateBundle",
        "SimulationReport",
        "PolicyGroup",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} missing from the OpenAPI components"
        );
    }
}
