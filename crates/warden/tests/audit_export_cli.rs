//! `warden audit export --format …`: every format from the CLI, offline, over the data dir.

mod common;

use common::*;

#[tokio::test]
async fn every_format_exports_the_same_events_and_a_bad_format_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    agent_token(&data).await;
    auditor_token(&data).await;
    let events = export(&data).await;
    assert!(events.len() >= 2, "token creations are recorded");
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();

    let run = |format: &'static str| {
        let d = path_str(&data).to_owned();
        async move {
            let out = warden(&[
                "audit",
                "export",
                "--data-dir",
                &d,
                "--tenant",
                "acme",
                "--format",
                format,
            ])
            .await;
            assert!(out.success(), "{format}: {}", out.text());
            out.stdout
        }
    };

    let ocsf = run("ocsf").await;
    let ocsf: Vec<serde_json::Value> = ocsf
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ocsf.len(), events.len());
    for ((o, id), e) in ocsf.iter().zip(&ids).zip(&events) {
        assert_eq!(o["class_uid"], 6003);
        assert_eq!(o["metadata"]["uid"], *id);
        let operation = e.get("action").unwrap_or(&e["type"]);
        assert_eq!(&o["api"]["operation"], operation);
        assert_eq!(
            o["activity_id"], 1,
            "tenant and token creations are creates"
        );
    }

    let cef = run("cef").await;
    assert_eq!(cef.lines().count(), events.len());
    for (line, id) in cef.lines().zip(&ids) {
        assert!(line.contains(&format!("externalId={id}")), "{line}");
    }

    let hec = run("hec").await;
    assert_eq!(hec.lines().count(), events.len());

    let csv = run("csv").await;
    assert!(csv.starts_with("seq,id,time,tenant,"));
    assert_eq!(
        csv.split("\r\n").filter(|r| !r.is_empty()).count(),
        events.len() + 1
    );

    let out = warden(&[
        "audit",
        "export",
        "--data-dir",
        path_str(&data),
        "--tenant",
        "acme",
        "--format",
        "xml",
    ])
    .await;
    assert!(!out.success());
    assert!(
        out.stderr.contains("ndjson, ocsf, hec, cef, csv"),
        "{}",
        out.text()
    );
}
