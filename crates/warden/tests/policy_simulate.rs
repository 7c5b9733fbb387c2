//! `warden policy simulate`: decisions recorded by a real `warden serve`, replayed offline
//! under a candidate policy directory; text and JSON reports, an empty window, a bad
//! candidate, and the exit codes (0 ran, 1 candidate does not load, 2 cannot run as asked).

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// The one change: reading file contents is frozen in acme/platform/api.
const FREEZE: &str = r#"@id("acme.api.freeze-reads")
@reason("Reads are frozen during the audit.")
forbid (principal, action == Action::"call_tool", resource is Tool)
when { resource.name == "get_file_contents" };
"#;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The example policies plus `extra` files.
fn candidate(extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&example_policies(), dir.path());
    for (path, text) in extra {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

fn simulate(data_dir: &Path, candidate: &Path, extra: &[&str]) -> Out {
    let mut args = vec![
        "policy",
        "simulate",
        "--candidate",
        path_str(candidate),
        "--data-dir",
        path_str(data_dir),
    ];
    args.extend_from_slice(extra);
    warden_sync(&args)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_recorded_history_replayed_under_a_changed_policy() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path()).await;
    let token = agent_token(data.path()).await;
    let client = client();
    // The README's three requests three times each: allow, deny, approval_required.
    let mut allowed = Vec::new();
    for i in 0..9 {
        let (body, expected) = decision_request(i);
        let (status, v) = authorize(&client, &server.base, &token.secret, &body)
            .await
            .unwrap();
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["decision"], expected, "{v}");
        if expected == "allow" {
            allowed.push(v["event_id"].as_str().unwrap().to_owned());
        }
    }
    server.terminate().await;
    let frozen = candidate(&[("acme/platform/api/freeze.cedar", FREEZE)]);

    // JSON: exactly the three allowed reads become denies, decided by the new forbid.
    let out = simulate(
        data.path(),
        frozen.path(),
        &["--from", "1h", "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    assert!(
        !out.stderr.contains("replayed"),
        "no progress output off a terminal: {}",
        out.text()
    );
    let r = json_of(&out);
    assert_eq!(r["tenant"], "acme", "the candidate's only tenant");
    assert_eq!(
        (r["recorded"].clone(), r["replayed"].clone()),
        (9.into(), 9.into())
    );
    assert_eq!(
        (r["changed"].clone(), r["unchanged"].clone()),
        (3.into(), 6.into())
    );
    assert_eq!(r["directions"].as_array().unwrap().len(), 1);
    assert_eq!(r["directions"][0]["from"], "allow");
    assert_eq!(r["directions"][0]["to"], "deny");
    assert_eq!(strings(&r["directions"][0]["examples"]), allowed);
    let freeze = &r["by_policy"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["policy"] == "acme.api.freeze-reads")
        .unwrap_or_else(|| panic!("{r}"))
        .clone();
    assert_eq!(
        (
            freeze["count"].clone(),
            freeze["determined_before"].clone(),
            freeze["determines_now"].clone()
        ),
        (3.into(), 0.into(), 3.into())
    );
    assert_eq!(r["by_agent"][0]["key"], "claude-code");
    assert_eq!(r["by_tool"][0]["key"], "github__get_file_contents");
    assert_eq!(r["by_namespace"][0]["key"], "acme/platform/api");

    // Text: a readable report of the same.
    let out = simulate(
        data.path(),
        frozen.path(),
        &["--from", "1h", "--tenant", "acme"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    for needle in [
        "Replayed 9 of 9 recorded decisions in tenant acme",
        "3 decisions would change",
        "allow → deny",
        "acme.api.freeze-reads",
        "By agent:",
        "claude-code",
        "github__get_file_contents",
        &allowed[0],
    ] {
        assert!(
            out.stdout.contains(needle),
            "{needle:?} missing: {}",
            out.text()
        );
    }

    // Unchanged policies change nothing; another namespace holds none of these decisions.
    let same = simulate(
        data.path(),
        &example_policies(),
        &["--from", "1h", "--format", "json"],
    );
    assert_eq!(same.status.code(), Some(0), "{}", same.text());
    assert_eq!(json_of(&same)["changed"], 0);
    let ops = simulate(
        data.path(),
        frozen.path(),
        &[
            "--from",
            "1h",
            "--namespace",
            "acme/ops",
            "--format",
            "json",
        ],
    );
    assert_eq!(ops.status.code(), Some(0), "{}", ops.text());
    assert_eq!(json_of(&ops)["recorded"], 0);

    // An empty window is an answer, not an error.
    let empty = simulate(
        data.path(),
        frozen.path(),
        &[
            "--from",
            "2020-01-01T00:00:00Z",
            "--to",
            "2020-01-02T00:00:00Z",
        ],
    );
    assert_eq!(empty.status.code(), Some(0), "{}", empty.text());
    assert!(
        empty.stdout.contains(
            "no recorded decisions between 2020-01-01T00:00:00Z and 2020-01-02T00:00:00Z"
        ),
        "{}",
        empty.text()
    );

    // What cannot run as asked exits 2 with the reason.
    for (args, why) in [
        (
            vec![
                "--from",
                "2026-01-02T00:00:00Z",
                "--to",
                "2026-01-01T00:00:00Z",
            ],
            "must be earlier than",
        ),
        (vec!["--from", "yesterday"], "neither an RFC 3339 time"),
        (
            vec!["--from", "1h", "--tenant", "globex"],
            "no policies for tenant globex",
        ),
    ] {
        let out = simulate(data.path(), frozen.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.text());
        assert!(out.stderr.contains(why), "{args:?}: {}", out.text());
    }
    let nowhere = data.path().join("nowhere");
    let out = simulate(&nowhere, frozen.path(), &["--from", "1h"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.text());
    assert!(out.stderr.contains("no Warden database"), "{}", out.text());
}

#[test]
fn a_candidate_that_does_not_load_gives_file_line_errors_and_exit_1() {
    let data = tempfile::tempdir().unwrap();
    let bad = policy_dir(&[(
        "acme/bad.cedar",
        "@id(\"x\")\npermit (principal, action == Action::\"fly\", resource);\n",
    )]);
    let out = simulate(data.path(), bad.path(), &["--from", "1h"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let at = format!("{}:2:", bad.path().join("acme/bad.cedar").display());
    assert!(out.stderr.contains(&at), "{at} missing: {}", out.text());
    assert!(
        out.stderr.contains("nothing was simulated"),
        "{}",
        out.text()
    );

    let out = simulate(
        data.path(),
        bad.path(),
        &["--from", "1h", "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let v = json_of(&out);
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"][0]["line"], 2);
    assert_eq!(
        v["errors"][0]["file"],
        bad.path().join("acme/bad.cedar").display().to_string()
    );
}
