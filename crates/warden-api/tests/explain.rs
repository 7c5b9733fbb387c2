//! `POST /api/v1/authorize?explain=true`: the decision, recorded as usual, plus an
//! explanation of it; documented in the OpenAPI document.

mod common;

use std::time::Duration;

use common::{TestServer, tool_call};
use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_core::Role;

const POLICIES: &str = r#"@id("tools")
permit (principal is Agent, action == Action::"call_tool", resource is Tool);

@id("no-shell")
@reason("no shell tools")
forbid (principal, action == Action::"call_tool", resource is Tool)
when { resource.name == "run_shell" };

@id("ask-deploy")
@effect("ask")
permit (principal is Agent, action == Action::"call_tool", resource is Tool)
when { resource.name == "trigger_deploy" };

@id("reads")
permit (principal is Agent, action == Action::"read", resource);
"#;

async fn server() -> (TestServer, String) {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("policies");
    std::fs::create_dir_all(pdir.join("acme/platform")).unwrap();
    std::fs::write(pdir.join("acme/platform/tools.cedar"), POLICIES).unwrap();
    let s = TestServer::start_in(dir, move |c| {
        c.policies = Some(pdir);
        c.policy_poll = Duration::from_millis(100);
    })
    .await;
    let t = s
        .agent_token("acme", "bot", "alice", "acme/platform/api")
        .await;
    (s, t)
}

async fn explained(s: &TestServer, token: &str, tool: &str) -> Value {
    let (status, v) = s
        .post(
            "/api/v1/authorize?explain=true",
            token,
            &tool_call(tool, "low", json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

fn considered<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["explanation"]["policies"]
        .as_array()
        .expect("explanation.policies")
        .iter()
        .find(|p| p["policy"]["id"] == id)
        .unwrap_or_else(|| panic!("{id} not considered: {v}"))
}

#[tokio::test]
async fn explain_adds_an_explanation_for_allow_deny_and_ask() {
    let (s, t) = server().await;

    let allow = explained(&s, &t, "git__status").await;
    assert_eq!(allow["decision"], "allow", "{allow}");
    assert_eq!(allow["explanation"]["outcome"], "allow", "{allow}");
    assert_eq!(
        allow["explanation"]["summary"], "allowed by tools",
        "{allow}"
    );
    assert_eq!(considered(&allow, "tools")["determining"], true);
    let shell = considered(&allow, "no-shell");
    assert_eq!(shell["status"], "not_matched", "{allow}");
    assert_eq!(shell["effect"], "forbid", "{allow}");
    assert_eq!(shell["failed"]["clause"], "when", "{allow}");
    assert_eq!(shell["failed"]["text"], r#"resource.name == "run_shell""#);
    assert_eq!(shell["failed"]["line"], 7, "{allow}");
    assert_eq!(shell["failed"]["column"], 8, "{allow}");
    // Only the call_tool policies of the chain were considered.
    assert_eq!(
        allow["explanation"]["policies"].as_array().unwrap().len(),
        3,
        "{allow}"
    );

    let deny = explained(&s, &t, "sh__run_shell").await;
    assert_eq!(deny["decision"], "deny", "{deny}");
    assert_eq!(
        deny["explanation"]["summary"], "denied by no-shell",
        "{deny}"
    );
    assert_eq!(considered(&deny, "no-shell")["determining"], true);
    assert_eq!(considered(&deny, "no-shell")["status"], "matched");
    assert_eq!(
        considered(&deny, "tools")["determining"],
        false,
        "an overruled permit does not decide"
    );

    let ask = explained(&s, &t, "deploy__trigger_deploy").await;
    assert_eq!(ask["decision"], "approval_required", "{ask}");
    assert_eq!(
        ask["explanation"]["summary"],
        "approval required by ask-deploy"
    );
    assert_eq!(considered(&ask, "ask-deploy")["effect"], "ask");
    assert_eq!(considered(&ask, "ask-deploy")["determining"], true);

    // The decision was recorded as any other.
    let auditor = s.token("acme", Role::Auditor, None, None, None).await;
    let (status, ev) = s
        .get(
            &format!(
                "/api/v1/audit/events/{}",
                deny["event_id"].as_str().unwrap()
            ),
            &auditor,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ev}");
    assert_eq!(ev["decision"]["outcome"], "deny", "{ev}");
}

#[tokio::test]
async fn without_explain_there_is_no_explanation_and_unknown_parameters_are_refused() {
    let (s, t) = server().await;
    for path in ["/api/v1/authorize", "/api/v1/authorize?explain=false"] {
        let (status, v) = s
            .post(path, &t, &tool_call("git__status", "low", json!({})))
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert!(v.get("explanation").is_none(), "{path}: {v}");
    }
    let (status, v) = s
        .post(
            "/api/v1/authorize?explian=true",
            &t,
            &tool_call("git__status", "low", json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("explian"), "{v}");
}

#[tokio::test]
async fn the_explain_parameter_and_the_explanation_are_documented() {
    let s = TestServer::start().await;
    let (_, doc) = s.get_text("/openapi.json", None).await;
    let doc: Value = serde_json::from_str(&doc).unwrap();
    let params = doc["paths"]["/api/v1/authorize"]["post"]["parameters"]
        .as_array()
        .expect("parameters of POST /api/v1/authorize");
    let explain = params
        .iter()
        .find(|p| p["name"] == "explain")
        .expect("the explain parameter is documented");
    assert_eq!(explain["in"], "query");
    assert!(
        explain["description"]
            .as_str()
            .unwrap()
            .contains("explanation")
    );
    let schemas = &doc["components"]["schemas"];
    assert!(
        schemas["AuthorizeResponse"]["properties"]
            .get("explanation")
            .is_some(),
        "{}",
        schemas["AuthorizeResponse"]
    );
    for schema in [
        "Explanation",
        "PolicyExplanation",
        "FailedCondition",
        "Clause",
        "PolicyStatus",
        "PolicyEffect",
    ] {
        assert!(schemas.get(schema).is_some(), "{schema} missing");
    }
}
