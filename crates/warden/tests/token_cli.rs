//! `warden token create|list|revoke` against the data directory of a running server: tokens
//! take effect at once, revocations within the cache lifetime, and the CLI and the server
//! extend one Merkle log that still verifies.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;

fn list_line<'a>(list: &'a str, id: &str) -> &'a str {
    list.lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("token {id} is not listed:\n{list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_made_by_the_cli_work_against_a_running_server_until_revoked() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = path_str(&data);
    let mut server = Server::start(&data).await;
    let client = client();
    let (allow, _) = decision_request(0);

    // Created while the server runs, usable on the very next request; stdout holds the
    // token and nothing else, so that `TOKEN=$(warden token create …)` works.
    let out = warden(&[
        "token",
        "create",
        "--data-dir",
        d,
        "--tenant",
        "acme",
        "--role",
        "agent",
        "--agent",
        "claude-code",
        "--on-behalf-of",
        "alice",
        "--namespace",
        "acme/platform/api",
    ])
    .await;
    assert!(out.success(), "{}", out.text());
    let secret = out.stdout.strip_suffix('\n').unwrap_or_default();
    assert!(
        secret.starts_with("wdn_")
            && secret.len() > 20
            && secret
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "stdout holds exactly the token: {:?}",
        out.stdout
    );
    let first = CliToken {
        secret: secret.to_owned(),
        id: String::new(),
    };
    let (status, v) = authorize(&client, &server.base, &first.secret, &allow)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["decision"], "allow");

    // The CLI writes its audit events while the server writes decisions.
    let load = Load::start(&server.base, &first.secret, 2);
    let second = agent_token(&data).await;
    let auditor = auditor_token(&data).await;
    load.wait_for(20, Duration::from_millis(300)).await;
    let result = load.halt().await;
    assert!(
        result.unexpected.is_empty() && result.errors_before_stop.is_empty(),
        "decisions failed while the CLI wrote: {:?} {:?}\n{}",
        result.unexpected,
        result.errors_before_stop,
        server.log()
    );
    let during = result.acknowledged.len();

    let list = warden(&["token", "list", "--data-dir", d, "--tenant", "acme"]).await;
    assert!(list.success(), "{}", list.text());
    assert!(
        !list.stdout.contains("wdn_"),
        "list never shows secrets: {}",
        list.stdout
    );
    assert!(list_line(&list.stdout, &second.id).contains("\tlive\t"));
    assert!(list_line(&list.stdout, &auditor.id).contains("\tauditor\t"));

    let (status, _) = authorize(&client, &server.base, &second.secret, &allow)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);

    // Revoked by the CLI: the running server refuses it within a few seconds.
    let revoke = warden(&[
        "token",
        "revoke",
        "--data-dir",
        d,
        "--tenant",
        "acme",
        &second.id,
    ])
    .await;
    assert!(revoke.success(), "{}", revoke.text());
    let revoked_at = Instant::now();
    loop {
        let (status, v) = authorize(&client, &server.base, &second.secret, &allow)
            .await
            .unwrap();
        if status == StatusCode::UNAUTHORIZED {
            println!(
                "revoked token refused after {:?}: {v}",
                revoked_at.elapsed()
            );
            break;
        }
        assert_eq!(status, StatusCode::OK, "{v}");
        assert!(
            revoked_at.elapsed() < Duration::from_secs(10),
            "a revoked token was still accepted after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = authorize(&client, &server.base, &first.secret, &allow)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "other tokens keep working");
    let list = warden(&["token", "list", "--data-dir", d, "--tenant", "acme"]).await;
    assert!(list_line(&list.stdout, &second.id).contains("\trevoked\t"));

    let unknown = warden(&[
        "token",
        "revoke",
        "--data-dir",
        d,
        "--tenant",
        "acme",
        "tok_nope",
    ])
    .await;
    assert!(!unknown.success(), "{}", unknown.text());
    assert!(
        unknown.stderr.contains("no token tok_nope"),
        "{}",
        unknown.text()
    );

    // Refused commands say why, print no token and record nothing.
    let before = export(&data).await.len();
    let refused = [
        (
            vec!["--tenant", "acme", "--role", "superuser"],
            r#"unknown role "superuser""#,
        ),
        (
            vec![
                "--tenant",
                "acme",
                "--role",
                "agent",
                "--on-behalf-of",
                "alice",
            ],
            "needs the agent it stands for (--agent",
        ),
        (
            vec![
                "--tenant",
                "acme",
                "--role",
                "auditor",
                "--agent",
                "claude-code",
            ],
            "agent tokens only",
        ),
        (
            vec![
                "--tenant",
                "acme",
                "--role",
                "agent",
                "--agent",
                "x",
                "--namespace",
                "globex/app",
            ],
            "does not belong to tenant acme",
        ),
        (
            vec!["--tenant", "acme", "--role", "auditor", "--ttl", "1w"],
            "unknown unit",
        ),
    ];
    for (extra, message) in refused {
        let mut args = vec!["token", "create", "--data-dir", d];
        args.extend(extra.iter().copied());
        let out = warden(&args).await;
        assert!(!out.success(), "{extra:?} was accepted: {}", out.text());
        assert!(
            out.stdout.trim().is_empty(),
            "{extra:?} printed: {}",
            out.text()
        );
        assert!(
            out.stderr.contains(message),
            "{extra:?}: expected {message:?}: {}",
            out.text()
        );
    }
    assert_eq!(export(&data).await.len(), before, "refusals record nothing");

    let status = server.terminate().await;
    assert!(status.success(), "SIGTERM exit: {status}\n{}", server.log());
    let out = verify(&data).await;
    assert!(out.success(), "{}", out.text());

    // One log, written by both processes, in one sequence.
    let events = export(&data).await;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i as u64, "the log has no gaps: {e}");
    }
    let count = |ty: &str, source: &str| {
        events
            .iter()
            .filter(|e| e["type"] == ty && e["source"] == source)
            .count()
    };
    assert_eq!(count("tenant.created", "warden.cli"), 1);
    assert_eq!(count("token.created", "warden.cli"), 3);
    assert_eq!(count("token.revoked", "warden.cli"), 1);
    assert!(count("authz.decision", "warden.api") >= during + 3);
    let first_api = events.iter().position(|e| e["source"] == "warden.api");
    let last_cli = events.iter().rposition(|e| e["source"] == "warden.cli");
    assert!(
        first_api < last_cli,
        "server and CLI events interleave in one log"
    );
    println!("{}", out.stdout.trim());
}
