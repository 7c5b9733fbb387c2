//! The audit trail: every decision recorded, CloudEvents ingest, idempotency, redaction,
//! proofs that verify, export.

mod common;

use common::{TestServer, example_policies, tool_call};
use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_audit::merkle::{Hash, leaf_hash, verify_consistency, verify_inclusion};
use warden_core::Role;

async fn server() -> (TestServer, String, String) {
    let s = TestServer::start_with(|c| c.policies = Some(example_policies())).await;
    let agent = s
        .agent_token("acme", "claude-code", "alice", "acme/platform/api")
        .await;
    let auditor = s.token("acme", Role::Auditor, None, None, None).await;
    (s, agent, auditor)
}

fn hash(hex_str: &Value) -> Hash {
    hex::decode(hex_str.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

#[tokio::test]
async fn every_decision_is_in_the_trail_with_who_what_and_why() {
    let (s, agent, auditor) = server().await;
    let mut ids = Vec::new();
    for tool in [
        "github__get_file_contents",
        "github__delete_repository",
        "deploy__trigger_deploy",
    ] {
        let (_, v) = s
            .post(
                "/api/v1/authorize",
                &agent,
                &tool_call(tool, "low", json!({"environment": "production"})),
            )
            .await;
        ids.push((
            v["event_id"].as_str().unwrap().to_owned(),
            v["decision"].clone(),
        ));
    }
    for (id, decision) in &ids {
        let (status, e) = s.get(&format!("/api/v1/audit/events/{id}"), &auditor).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(e["type"], "authz.decision");
        assert_eq!(e["decision"]["outcome"], *decision);
        assert_eq!(e["actor"]["agent"], "claude-code");
        assert_eq!(e["actor"]["on_behalf_of"], "alice");
        assert_eq!(e["namespace"], "acme/platform/api");
        assert_eq!(e["payload"]["request"]["action"], "call_tool");
        assert_eq!(e["schema_version"], 1);
    }
    let (_, page) = s
        .get(
            "/api/v1/audit/events?type=authz.decision&decision=deny",
            &auditor,
        )
        .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(
        page["events"][0]["resource"]["id"],
        "github__delete_repository"
    );
}

#[tokio::test]
async fn cloudevents_batch_accepts_good_rejects_bad_and_resending_is_idempotent() {
    let (s, agent, auditor) = server().await;
    let batch = json!([
        {"specversion": "1.0", "id": "evt-1", "source": "https://ci.example/runner", "type": "com.example.tool.used",
         "time": "2026-11-27T10:00:00Z", "wardennamespace": "acme/platform/api", "data": {"tool": "git"}},
        {"specversion": "0.3", "id": "evt-2", "source": "s", "type": "t"},
        {"id": "evt-3", "source": "s", "type": "t"},
        {"specversion": "1.0", "id": "evt-4", "source": "s", "type": "t", "time": "yesterday"},
        {"specversion": "1.0", "id": "evt-5", "source": "s", "type": "t", "Bad_Name": 1},
        {"specversion": "1.0", "id": "evt-6", "source": "s", "type": "t", "wardennamespace": "globex/x"},
        "not an object",
        {"specversion": "1.0", "id": "evt-7", "source": "s", "type": "t", "data": {"password": "hunter2-canary"}},
        {"specversion": "1.0", "id": "evt-8", "source": "s", "type": "authz.decision", "data": {"decision": "allow"}},
        {"specversion": "1.0", "id": "evt-9", "source": "s", "type": "mcp.tool.call.anything"}
    ]);
    let (status, r) = s.post("/api/v1/events", &agent, &batch).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let accepted: Vec<usize> = r["accepted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["index"].as_u64().unwrap() as usize)
        .collect();
    let rejected: Vec<usize> = r["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["index"].as_u64().unwrap() as usize)
        .collect();
    assert_eq!(accepted, vec![0, 7]);
    assert_eq!(rejected, vec![1, 2, 3, 4, 5, 6, 8, 9]);
    // A producer cannot record what would read as Warden's own decision or gateway call.
    for i in [6, 7] {
        assert!(
            r["rejected"][i]["error"]
                .as_str()
                .unwrap()
                .contains("reserved"),
            "{r}"
        );
    }
    assert!(
        r["rejected"][0]["error"]
            .as_str()
            .unwrap()
            .contains("specversion")
    );

    let (_, again) = s.post("/api/v1/events", &agent, &batch).await;
    assert_eq!(again["accepted"][0]["duplicate"], true);
    assert_eq!(
        again["accepted"][0]["event_id"],
        r["accepted"][0]["event_id"]
    );
    let (_, page) = s
        .get("/api/v1/audit/events?type=com.example.tool.used", &auditor)
        .await;
    assert_eq!(
        page["events"].as_array().unwrap().len(),
        1,
        "re-sending stored nothing twice"
    );
    let e = &page["events"][0];
    assert_eq!(e["source"], "https://ci.example/runner");
    assert_eq!(e["namespace"], "acme/platform/api");
    assert_eq!(e["time"], "2026-11-27T10:00:00.000000Z");
}

#[tokio::test]
async fn a_canary_secret_never_reaches_the_database_file_or_exports() {
    let (s, agent, auditor) = server().await;
    let canary = "ghp_CANARYcanaryCANARYcanaryCANARY123456";
    let plain = "plain-canary-Zq81";
    let body = tool_call(
        "github__get_file_contents",
        "low",
        json!({"token": plain, "notes": format!("use {canary}")}),
    );
    let (_, v) = s.post("/api/v1/authorize", &agent, &body).await;
    let ce = json!([{"specversion": "1.0", "id": "c1", "source": "s", "type": "t", "data": {"headers": {"Authorization": format!("Bearer {canary}")}}}]);
    s.post("/api/v1/events", &agent, &ce).await;
    let (status, export) = s
        .get_text("/api/v1/audit/export?format=ndjson", Some(&auditor))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(export.contains(v["event_id"].as_str().unwrap()));
    assert!(
        !export.contains(canary) && !export.contains(plain),
        "secret in export"
    );
    let dir = s.stop().await;
    let mut found = Vec::new();
    for entry in walk(&dir.path().join("data")) {
        // The -wal and -shm files may vanish as the last connection closes.
        let Ok(bytes) = std::fs::read(&entry) else {
            continue;
        };
        for c in [canary, plain] {
            if bytes.windows(c.len()).any(|w| w == c.as_bytes()) {
                found.push(format!("{} in {}", c, entry.display()));
            }
        }
    }
    assert!(found.is_empty(), "secrets stored in clear: {found:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn inclusion_and_consistency_proofs_verify_against_signed_checkpoints() {
    let (s, agent, auditor) = server().await;
    let mut ids = Vec::new();
    for i in 0..21 {
        let (_, v) = s
            .post(
                "/api/v1/authorize",
                &agent,
                &tool_call("github__get_file_contents", "low", json!({"i": i})),
            )
            .await;
        ids.push(v["event_id"].as_str().unwrap().to_owned());
        if i == 9 {
            // A proof for a fresh event signs a checkpoint on demand: the first of two.
            let (status, _) = s
                .get(&format!("/api/v1/audit/events/{}/proof", ids[3]), &auditor)
                .await;
            assert_eq!(status, StatusCode::OK);
        }
    }
    for id in [&ids[0], &ids[7], &ids[20]] {
        let (status, p) = s
            .get(&format!("/api/v1/audit/events/{id}/proof"), &auditor)
            .await;
        assert_eq!(status, StatusCode::OK, "{p}");
        let (_, e) = s.get(&format!("/api/v1/audit/events/{id}"), &auditor).await;
        let mut header = e.clone();
        let obj = header.as_object_mut().unwrap();
        for k in ["payload", "seq", "payload_purged"] {
            obj.remove(k);
        }
        let leaf = leaf_hash(&warden_core::canonical::to_vec(&header));
        assert_eq!(
            hex::encode(leaf),
            p["leaf_hash"],
            "the leaf commits to the header as served"
        );
        let proof: Vec<Hash> = p["proof"].as_array().unwrap().iter().map(hash).collect();
        assert!(verify_inclusion(
            &leaf,
            p["seq"].as_u64().unwrap(),
            p["tree_size"].as_u64().unwrap(),
            &proof,
            &hash(&p["root"])
        ));
        let (_, cps) = s.get("/api/v1/audit/checkpoints", &auditor).await;
        let verifier =
            warden_audit::CheckpointVerifier::from_key_file(cps["public_key"].as_str().unwrap())
                .unwrap();
        let cp = verifier
            .verify(p["checkpoint"].as_str().unwrap())
            .expect("signed by the published key");
        assert_eq!(hex::encode(cp.root), p["root"]);
    }
    let (_, cps) = s.get("/api/v1/audit/checkpoints", &auditor).await;
    let list = cps["checkpoints"].as_array().unwrap();
    assert!(list.len() >= 2, "{cps}");
    let (new, old) = (&list[0], &list[list.len() - 1]);
    let (status, c) = s
        .get(
            &format!(
                "/api/v1/audit/consistency?from={}&to={}",
                old["size"], new["size"]
            ),
            &auditor,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    let proof: Vec<Hash> = c["proof"].as_array().unwrap().iter().map(hash).collect();
    assert!(verify_consistency(
        old["size"].as_u64().unwrap(),
        new["size"].as_u64().unwrap(),
        &hash(&old["root"]),
        &hash(&new["root"]),
        &proof
    ));
}

#[tokio::test]
async fn export_streams_every_match_oldest_first_and_pages_cover_everything() {
    let (s, agent, auditor) = server().await;
    for i in 0..250 {
        s.post(
            "/api/v1/authorize",
            &agent,
            &tool_call("github__get_file_contents", "low", json!({"i": i})),
        )
        .await;
    }
    let (_, text) = s
        .get_text("/api/v1/audit/export?type=authz.decision", Some(&auditor))
        .await;
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 250);
    assert!(
        lines
            .windows(2)
            .all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64())
    );
    let mut seen = 0;
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/api/v1/audit/events?type=authz.decision&limit=100&cursor={c}"),
            None => "/api/v1/audit/events?type=authz.decision&limit=100".into(),
        };
        let (_, page) = s.get(&q, &auditor).await;
        seen += page["events"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, 250);
}

#[tokio::test]
async fn token_and_policy_administration_is_audited() {
    let (s, _, auditor) = server().await;
    let admin = s.token("acme", Role::Admin, None, None, None).await;
    let (_, created) = s
        .post("/api/v1/tokens", &admin, &json!({"role": "auditor"}))
        .await;
    let (_, page) = s
        .get("/api/v1/audit/events?type=token.created", &auditor)
        .await;
    let events = page["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["resource"]["id"] == created["id"]));
    let secret = created["token"].as_str().unwrap();
    let (_, text) = s.get_text("/api/v1/audit/export", Some(&auditor)).await;
    assert!(!text.contains(secret), "a token's secret is never recorded");
}
