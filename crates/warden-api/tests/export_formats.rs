//! `GET /api/v1/audit/export` in every format: the same events, streamed across pages,
//! parseable by what a SIEM runs.

mod common;

use common::{TestServer, example_policies, tool_call};
use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_core::{Actor, AuditEvent, Role};
use warden_store::NewEvent;

/// More events than one export page (1,000), so every format is checked across a page
/// boundary.
const BULK: usize = 1_100;

async fn server_with_history() -> (TestServer, String) {
    let s = TestServer::start_with(|c| c.policies = Some(example_policies())).await;
    let agent = s
        .agent_token("acme", "claude-code", "alice", "acme/platform/api")
        .await;
    for tool in [
        "github__get_file_contents",
        "github__delete_repository",
        "deploy__trigger_deploy",
    ] {
        let (status, _) = s
            .post(
                "/api/v1/authorize",
                &agent,
                &tool_call(tool, "high", json!({"note": "a,b \"c\"\nd|e=f\\g"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let bulk: Vec<NewEvent> = (0..BULK)
        .map(|i| NewEvent {
            event: AuditEvent::new(
                "acme",
                "acme/platform",
                "custom.build.finished",
                "ci",
                Actor {
                    agent: Some(format!("=cmd|' /C calc'!A{i}")),
                    ..Actor::default()
                },
                json!({"i": i}),
            ),
            dedupe: false,
        })
        .collect();
    s.state().store.append_events(&bulk).await.unwrap();
    let auditor = s.token("acme", Role::Auditor, None, None, None).await;
    (s, auditor)
}

async fn export(s: &TestServer, token: &str, format: &str) -> (StatusCode, String, String) {
    let r = s
        .client
        .get(format!("{}/api/v1/audit/export?format={format}", s.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

#[tokio::test]
async fn every_format_exports_every_event_once_in_log_order() {
    let (s, auditor) = server_with_history().await;
    let (status, ct, ndjson) = export(&s, &auditor, "ndjson").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct, "application/x-ndjson");
    let events: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.len() > BULK + 3, "{} events", events.len());
    let ids: Vec<String> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let decisions: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "authz.decision")
        .collect();
    assert_eq!(decisions.len(), 3);

    // OCSF: one API Activity per event, same order, the decision in actor.authorizations.
    let (status, ct, text) = export(&s, &auditor, "ocsf").await;
    assert_eq!(
        (status, ct.as_str()),
        (StatusCode::OK, "application/x-ndjson")
    );
    let ocsf: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ocsf.len(), events.len());
    for (o, e) in ocsf.iter().zip(&events) {
        assert_eq!(o["class_uid"], 6003);
        assert_eq!(o["metadata"]["uid"], e["id"]);
        assert_eq!(o["metadata"]["sequence"], e["seq"]);
        if let Some(outcome) = e["decision"]["outcome"].as_str() {
            let word = match outcome {
                "allow" => "allowed",
                "deny" => "denied",
                _ => "approval required",
            };
            let auths = o["actor"]["authorizations"].as_array().unwrap();
            assert!(!auths.is_empty());
            assert!(auths.iter().all(|a| a["decision"] == word), "{o}");
        }
    }

    // HEC: envelopes around the Warden JSON.
    let (status, _, text) = export(&s, &auditor, "hec").await;
    assert_eq!(status, StatusCode::OK);
    let hec_ids: Vec<String> = text
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["sourcetype"], "warden:audit");
            assert!(v["time"].is_f64());
            v["event"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(hec_ids, ids);

    // CEF: one line per event, whatever the arguments held.
    let (status, ct, text) = export(&s, &auditor, "cef").await;
    assert_eq!(
        (status, ct.as_str()),
        (StatusCode::OK, "text/plain; charset=utf-8")
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), events.len());
    for (line, id) in lines.iter().zip(&ids) {
        assert!(line.starts_with("CEF:0|Warden|Warden|"), "{line}");
        assert!(line.contains(&format!("externalId={id}")), "{line}");
    }

    // CSV: one header row, then one row per event; formulas neutralised.
    let (status, ct, text) = export(&s, &auditor, "csv").await;
    assert_eq!(
        (status, ct.as_str()),
        (StatusCode::OK, "text/csv; charset=utf-8")
    );
    assert_eq!(text.matches("seq,id,time,tenant").count(), 1);
    let rows: Vec<&str> = text.split("\r\n").filter(|r| !r.is_empty()).collect();
    // Rows of decisions hold a quoted line break inside the payload column: count by id.
    for id in &ids {
        assert_eq!(text.matches(id.as_str()).count(), 1, "{id} once");
    }
    assert!(rows.len() > BULK);
    assert!(
        !text.contains(",=cmd"),
        "a formula reached the CSV unquoted"
    );
    assert!(text.contains("\"'=cmd|' /C calc'!A0\""));
}

#[tokio::test]
async fn an_unknown_format_is_a_clear_400_and_other_tenants_see_nothing() {
    let (s, auditor) = server_with_history().await;
    let r = s
        .client
        .get(format!("{}/api/v1/audit/export?format=xml", s.base))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    let (status, body) = common::read(r).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("ndjson, ocsf, hec, cef, csv"), "{detail}");

    let globex = s.token("globex", Role::Auditor, None, None, None).await;
    // globex's own log holds only the creation of its token; nothing of acme's.
    for format in ["ndjson", "ocsf", "hec", "cef", "csv"] {
        let (status, _, text) = export(&s, &globex, format).await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("globex"), "{format}: {text}");
        assert!(
            !text.contains("acme"),
            "{format} leaks another tenant: {text}"
        );
        assert!(!text.contains("custom.build.finished"), "{format}: {text}");
    }
}
