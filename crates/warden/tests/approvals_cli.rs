//! `warden approvals list|approve|deny` against the data directory of a running server: the
//! answers are in force for the server at once, confined to the tenant, refused when they
//! come too late or twice, and recorded in the one audit log that still verifies.

mod common;

use std::process::{Command, Stdio};

use chrono::Utc;
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_core::{Approval, NewApproval, TenantId};
use warden_store::{SqliteStore, Store};

fn held(tenant: &str, namespace: &str, args: &str, expires_in: chrono::Duration) -> NewApproval {
    NewApproval {
        tenant: tenant.into(),
        namespace: namespace.into(),
        session: "tok_session".into(),
        agent: Some("claude-code".into()),
        on_behalf_of: Some("alice".into()),
        action: "call_tool".into(),
        resource_type: "Tool".into(),
        resource_id: "deploy__trigger_deploy".into(),
        args_sha256: args.into(),
        arguments: json!({"environment": "production"}),
        policies: vec!["ask-production-deploys".into()],
        reason: None,
        decision_event: None,
        expires_at: Utc::now() + expires_in,
    }
}

/// Runs `warden ARGS` with `USER` set to `user`, or removed.
async fn warden_as(user: Option<&str>, args: &[&str]) -> Out {
    let mut c = Command::new(BIN);
    c.args(args)
        .stdin(Stdio::null())
        .env_remove("WARDEN_DATA_DIR");
    match user {
        Some(u) => c.env("USER", u),
        None => c.env_remove("USER"),
    };
    let o = tokio::task::spawn_blocking(move || c.output().expect("the warden binary runs"))
        .await
        .unwrap();
    Out {
        status: o.status,
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_answered_from_the_cli_are_in_force_for_a_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = path_str(&data);
    let mut server = Server::start(&data).await;
    let approver = create_token(&data, &["--tenant", "acme", "--role", "approver"]).await;

    // Held actions, written next to the running server (as its gateway would).
    let store = SqliteStore::open(&warden_api::server::database_path(&data))
        .await
        .unwrap();
    store
        .ensure_tenant(&TenantId::parse("globex").unwrap())
        .await
        .unwrap();
    let minutes = chrono::Duration::minutes(10);
    let deploy: Approval = store
        .create_approval(&held("acme", "acme/platform/api", "d1", minutes))
        .await
        .unwrap();
    let rollback = store
        .create_approval(&held("acme", "acme/platform/web", "d2", minutes))
        .await
        .unwrap();
    let late = store
        .create_approval(&held(
            "acme",
            "acme/platform/api",
            "d3",
            -chrono::Duration::seconds(1),
        ))
        .await
        .unwrap();
    let theirs = store
        .create_approval(&held("globex", "globex/app", "g1", minutes))
        .await
        .unwrap();

    // The table: a header, then newest first; a request past its expiry shows as expired.
    let list = warden(&["approvals", "list", "--data-dir", d, "--tenant", "acme"]).await;
    assert!(list.success(), "{}", list.text());
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATUS"),
        "{}",
        list.stdout
    );
    let order: Vec<String> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    assert_eq!(
        order,
        [late.id, rollback.id, deploy.id].map(|i| i.to_string()),
        "{}",
        list.stdout
    );
    assert!(lines[1].contains(" expired "), "{}", lines[1]);
    assert!(lines[3].contains(" pending ") && lines[3].contains("claude-code (for alice)"));
    assert!(
        !list.stdout.contains(&theirs.id.to_string()),
        "another tenant's approval"
    );

    let json_list = warden(&[
        "approvals",
        "list",
        "--data-dir",
        d,
        "--tenant",
        "acme",
        "--status",
        "pending",
        "--namespace",
        "acme/platform/api",
        "--format",
        "json",
    ])
    .await;
    assert!(json_list.success(), "{}", json_list.text());
    let v: Value = serde_json::from_str(&json_list.stdout).unwrap();
    let v = v.as_array().unwrap();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0]["id"], deploy.id.to_string());
    assert_eq!(v[0]["arguments"], json!({"environment": "production"}));

    // Approve as bob; the running server sees it on its next read.
    let ok = warden(&[
        "approvals",
        "approve",
        "--data-dir",
        d,
        "--tenant",
        "acme",
        &deploy.id.to_string(),
        "--by",
        "bob",
        "--comment",
        "release window",
    ])
    .await;
    assert!(ok.success(), "{}", ok.text());
    assert!(
        ok.stdout.starts_with(&format!("approved {}", deploy.id)),
        "{}",
        ok.text()
    );
    let client = client();
    let r = client
        .get(format!("{}/api/v1/approvals/{}", server.base, deploy.id))
        .bearer_auth(&approver.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["status"], "approved");
    assert_eq!(seen["resolved_by"], "cli:bob");
    assert_eq!(seen["resolved_via"], "cli");
    assert_eq!(seen["comment"], "release window");

    // Deny as the OS user when --by is not given.
    let no = warden_as(
        Some("carol"),
        &[
            "approvals",
            "deny",
            "--data-dir",
            d,
            "--tenant",
            "acme",
            &rollback.id.to_string(),
        ],
    )
    .await;
    assert!(no.success(), "{}", no.text());
    assert!(no.stdout.starts_with(&format!("denied {}", rollback.id)));
    let a = store
        .get_approval(&TenantId::parse("acme").unwrap(), rollback.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.resolved_by.as_deref(), Some("cli:carol"));

    // Refusals say why and change nothing.
    let before = export(&data).await.len();
    let (deploy_id, rollback_id) = (deploy.id.to_string(), rollback.id.to_string());
    let (late_id, theirs_id) = (late.id.to_string(), theirs.id.to_string());
    let refused: [(Option<&str>, Vec<&str>, &str); 8] = [
        (
            Some("bob"),
            vec!["approve", &deploy_id],
            "already answered and is now approved",
        ),
        (
            Some("bob"),
            vec!["deny", &deploy_id],
            "already answered and is now approved",
        ),
        (
            Some("bob"),
            vec!["approve", &late_id],
            "expired before it was answered",
        ),
        (
            Some("bob"),
            vec!["approve", &theirs_id],
            "tenant acme has no approval",
        ),
        (
            Some("bob"),
            vec!["approve", "0197aaaa-0000-7000-8000-000000000000"],
            "has no approval",
        ),
        (
            Some("bob"),
            vec!["approve", "not-a-uuid"],
            "is not an approval id",
        ),
        (
            Some("bob"),
            vec!["list", "--status", "maybe"],
            "unknown status \"maybe\"",
        ),
        (None, vec!["approve", &rollback_id], "pass --by NAME"),
    ];
    for (user, verb, message) in refused {
        let mut args = vec!["approvals", verb[0], "--data-dir", d, "--tenant", "acme"];
        args.extend(verb[1..].iter().copied());
        let out = warden_as(user, &args).await;
        assert!(!out.success(), "{args:?} was accepted: {}", out.text());
        assert!(
            out.stderr.contains(message),
            "{args:?}: expected {message:?}: {}",
            out.text()
        );
    }
    assert_eq!(export(&data).await.len(), before, "refusals record nothing");
    let theirs_now = store
        .get_approval(&TenantId::parse("globex").unwrap(), theirs.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(theirs_now.status, warden_core::ApprovalStatus::Pending);

    let status = server.terminate().await;
    assert!(status.success(), "SIGTERM exit: {status}\n{}", server.log());
    let out = verify(&data).await;
    assert!(out.success(), "{}", out.text());

    let events = export(&data).await;
    let of = |ty: &str| -> Vec<&Value> { events.iter().filter(|e| e["type"] == ty).collect() };
    let granted = of("approval.granted");
    assert_eq!(granted.len(), 1);
    assert_eq!(granted[0]["source"], "warden.cli");
    assert_eq!(granted[0]["actor"]["role"], "cli");
    assert_eq!(granted[0]["actor"]["on_behalf_of"], "bob");
    assert_eq!(
        granted[0]["resource"],
        json!({"type": "Approval", "id": deploy.id.to_string()})
    );
    assert_eq!(granted[0]["payload"]["answer"]["comment"], "release window");
    let denied = of("approval.denied");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["payload"]["answer"]["by"], "cli:carol");
}
