//! `warden audit verify` against a log written by a real server: it passes on the intact
//! log, and every kind of change made behind Warden's back to the
//! SQLite file or the key folder makes it exit non-zero and name the problem.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use common::*;
use reqwest::StatusCode;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Row, SqliteConnection};
use warden_audit::checkpoint::CheckpointSigner;
use warden_audit::merkle::leaf_hash;

const DECISIONS: usize = 40;

/// A closed data directory holding a server-written log, and facts about it.
struct Fixture {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    /// A deny decision in the middle of the log, covered by a checkpoint.
    target: u64,
    /// Number of events; the final checkpoint covers all of them.
    events: u64,
    /// Sizes of the stored checkpoints, ascending.
    checkpoints: Vec<u64>,
}

impl Fixture {
    /// The smallest checkpoint that covers event `seq`.
    fn covering(&self, seq: u64) -> u64 {
        *self
            .checkpoints
            .iter()
            .find(|&&s| s > seq)
            .expect("a checkpoint covers the event")
    }
}

async fn open(data: &Path) -> SqlitePool {
    let opts = SqliteConnectOptions::new().filename(data.join("warden.db"));
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .expect("open the database copy")
}

/// Tokens from the CLI, decisions through a running server, then a graceful stop.
async fn build_log() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let agent = agent_token(&data).await;
    let mut server = Server::start(&data).await;
    let client = client();
    for i in 0..DECISIONS {
        let (body, expected) = decision_request(i);
        let (status, v) = authorize(&client, &server.base, &agent.secret, &body)
            .await
            .expect("decision");
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["decision"], expected, "{v}");
    }
    let status = server.terminate().await;
    assert!(status.success(), "SIGTERM exit: {status}\n{}", server.log());

    let pool = open(&data).await;
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    let checkpoints: Vec<i64> = sqlx::query_scalar("SELECT size FROM checkpoints ORDER BY size")
        .fetch_all(&pool)
        .await
        .unwrap();
    let denies: Vec<i64> = sqlx::query_scalar(
        "SELECT seq FROM audit_events WHERE outcome = 'deny' AND seq > ? ORDER BY seq",
    )
    .bind(checkpoints[0])
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    let events = events as u64;
    let checkpoints: Vec<u64> = checkpoints.into_iter().map(|s| s as u64).collect();
    assert_eq!(
        checkpoints.last(),
        Some(&events),
        "graceful shutdown signs a checkpoint over the whole log"
    );
    let target = denies[denies.len() / 2] as u64;
    assert!(target + 2 < events, "the target is in the middle");
    Fixture {
        _tmp: tmp,
        data,
        target,
        events,
        checkpoints,
    }
}

/// A fresh copy of the database (with its WAL, whatever was not checkpointed into the main
/// file yet) and the key folder.
fn copy_data(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("keys")).unwrap();
    for f in ["warden.db", "warden.db-wal", "warden.db-shm"] {
        if from.join(f).exists() {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
    }
    for entry in std::fs::read_dir(from.join("keys")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join("keys").join(entry.file_name())).unwrap();
    }
}

#[derive(Clone, Copy, Debug)]
enum Tamper {
    Nothing,
    HeaderField,
    ForgedHeader,
    OutcomeColumn,
    Payload,
    DeleteMiddle,
    SwapSeq,
    InsertMiddle,
    AppendAfterCheckpoint,
    DeleteLast,
    DeleteLastAndItsCheckpoint,
    CheckpointRoot,
    NoteSignature,
    PublicKey,
    PurgePayload,
}

async fn exec(conn: &mut SqliteConnection, sql: &str, seq: u64) -> u64 {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(seq as i64)
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .rows_affected()
}

/// Copies row `seq` under a new event id, with a header, leaf hash and id column that agree
/// with each other: what a careful forger would write.
async fn forged_copy(conn: &mut SqliteConnection, seq: u64, new_seq: u64) {
    let row = sqlx::query("SELECT id, header FROM audit_events WHERE seq = ?")
        .bind(seq as i64)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let old_id: String = row.get("id");
    let new_id = uuid::Uuid::now_v7().to_string();
    let header: String = row.get::<String, _>("header").replace(&old_id, &new_id);
    let leaf = leaf_hash(header.as_bytes()).to_vec();
    sqlx::query(
        "INSERT INTO audit_events SELECT tenant, ?, ?, time_us, namespace, event_type, principal, agent, \
         on_behalf_of, session, action, resource_type, resource_id, outcome, ?, payload, ? \
         FROM audit_events WHERE seq = ?",
    )
    .bind(new_seq as i64)
    .bind(&new_id)
    .bind(&header)
    .bind(leaf)
    .bind(seq as i64)
    .execute(&mut *conn)
    .await
    .unwrap();
}

async fn apply(t: Tamper, fx: &Fixture, data: &Path) {
    let (seq, last) = (fx.target, fx.events - 1);
    let pool = open(data).await;
    let mut conn = pool.acquire().await.unwrap();
    let changed = match t {
        Tamper::Nothing => 1,
        Tamper::HeaderField => {
            exec(
                &mut conn,
                r#"UPDATE audit_events SET header = replace(header, '"outcome":"deny"', '"outcome":"allow"') WHERE seq = ? AND header LIKE '%"outcome":"deny"%'"#,
                seq,
            )
            .await
        }
        Tamper::ForgedHeader => {
            let header: String = sqlx::query_scalar("SELECT header FROM audit_events WHERE seq = ?")
                .bind(seq as i64)
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            let forged = header.replace(r#""outcome":"deny""#, r#""outcome":"allow""#);
            assert_ne!(header, forged);
            sqlx::query(
                "UPDATE audit_events SET header = ?, leaf_hash = ?, outcome = 'allow' WHERE seq = ?",
            )
            .bind(&forged)
            .bind(leaf_hash(forged.as_bytes()).to_vec())
            .bind(seq as i64)
            .execute(&mut *conn)
            .await
            .unwrap()
            .rows_affected()
        }
        Tamper::OutcomeColumn => {
            exec(
                &mut conn,
                "UPDATE audit_events SET outcome = 'allow' WHERE seq = ? AND outcome = 'deny'",
                seq,
            )
            .await
        }
        Tamper::Payload => {
            exec(
                &mut conn,
                "UPDATE audit_events SET payload = replace(payload, '\"alice\"', '\"mallory\"') \
                 WHERE seq = ? AND payload LIKE '%\"alice\"%'",
                seq,
            )
            .await
        }
        Tamper::DeleteMiddle => exec(&mut conn, "DELETE FROM audit_events WHERE seq = ?", seq).await,
        Tamper::SwapSeq => {
            exec(&mut conn, "UPDATE audit_events SET seq = -1 WHERE seq = ?", seq).await;
            exec(&mut conn, "UPDATE audit_events SET seq = seq - 1 WHERE seq = ?", seq + 1).await;
            exec(&mut conn, "UPDATE audit_events SET seq = ? + 1 WHERE seq = -1", seq).await
        }
        Tamper::InsertMiddle => {
            // Make room at `seq` (in two steps: the primary key is checked row by row).
            exec(&mut conn, "UPDATE audit_events SET seq = seq + 1000000 WHERE seq >= ?", seq).await;
            exec(&mut conn, "UPDATE audit_events SET seq = seq - 999999 WHERE seq >= ? + 1000000", seq).await;
            forged_copy(&mut conn, seq + 1, seq).await;
            1
        }
        Tamper::AppendAfterCheckpoint => {
            forged_copy(&mut conn, seq, last + 1).await;
            1
        }
        Tamper::DeleteLast => exec(&mut conn, "DELETE FROM audit_events WHERE seq = ?", last).await,
        Tamper::DeleteLastAndItsCheckpoint => {
            exec(&mut conn, "DELETE FROM audit_events WHERE seq = ?", last).await;
            exec(&mut conn, "DELETE FROM checkpoints WHERE size = ? + 1", last).await
        }
        Tamper::CheckpointRoot => {
            exec(&mut conn, "UPDATE checkpoints SET root = randomblob(32) WHERE size = ?", fx.events).await
        }
        Tamper::NoteSignature => {
            let note: String = sqlx::query_scalar("SELECT note FROM checkpoints WHERE size = ?")
                .bind(fx.events as i64)
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            let (text, sig) = note.trim_end().rsplit_once(' ').expect("a signature line");
            let mut sig = sig.as_bytes().to_vec();
            // Past the 4-byte key id: inside the Ed25519 signature itself.
            sig[20] = if sig[20] == b'A' { b'B' } else { b'A' };
            let forged = format!("{text} {}\n", String::from_utf8(sig).unwrap());
            sqlx::query("UPDATE checkpoints SET note = ? WHERE size = ?")
                .bind(forged)
                .bind(fx.events as i64)
                .execute(&mut *conn)
                .await
                .unwrap()
                .rows_affected()
        }
        Tamper::PublicKey => {
            let stranger = CheckpointSigner::generate().verifier().to_key_file();
            std::fs::write(data.join("keys/checkpoint.pub"), stranger + "\n").unwrap();
            1
        }
        Tamper::PurgePayload => {
            exec(&mut conn, "UPDATE audit_events SET payload = NULL WHERE seq = ?", seq).await
        }
    };
    drop(conn);
    pool.close().await;
    assert!(changed > 0, "{t:?} changed nothing");
}

/// Either verification fails with all of the given pieces in its report, or it passes with
/// them in its summary.
enum Expect {
    Fails(Vec<String>),
    Passes(Vec<String>),
}

fn s(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_catches_and_names_every_kind_of_tampering() {
    let fx = build_log().await;
    let out = verify(&fx.data).await;
    assert!(out.success(), "the untouched log verifies: {}", out.text());
    let d = path_str(&fx.data);
    let out = warden(&["audit", "verify", "--data-dir", d, "--tenant", "acem"]).await;
    assert!(
        !out.success() && out.stdout.contains("acem: FAILED — there is no audit log"),
        "a tenant without a log does not verify: {}",
        out.text()
    );
    let missing_key = fx.data.join("no-such-key.pub");
    let k = path_str(&missing_key);
    let out = warden(&["audit", "verify", "--data-dir", d, "--public-key", k]).await;
    assert!(
        !out.success() && out.text().contains("--allow-unsigned"),
        "without the public key verification fails closed: {}",
        out.text()
    );
    let out = warden(&[
        "audit",
        "verify",
        "--data-dir",
        d,
        "--public-key",
        k,
        "--allow-unsigned",
    ])
    .await;
    assert!(
        out.success() && out.text().contains("signatures NOT checked"),
        "hashes only, when explicitly asked: {}",
        out.text()
    );

    let t = fx.target;
    let n = fx.events;
    let at = |seq: u64| format!("event #{seq} ");
    let cp = |size: u64| format!("checkpoint at size {size}:");
    let cases: Vec<(&str, Tamper, Expect)> = vec![
        (
            "an untouched copy verifies",
            Tamper::Nothing,
            Expect::Passes(s(&[
                "0 payloads purged",
                "0 events after the last checkpoint",
            ])),
        ),
        (
            "(a) a field changed inside an event's header",
            Tamper::HeaderField,
            Expect::Fails(vec![at(t), "[leaf_hash]".into()]),
        ),
        (
            "(a') a header changed with a matching leaf hash and columns",
            Tamper::ForgedHeader,
            Expect::Fails(vec![cp(fx.covering(t)), "[checkpoint_root]".into()]),
        ),
        (
            "(b) only the queried outcome column changed",
            Tamper::OutcomeColumn,
            Expect::Fails(vec![at(t), "outcome".into(), "[columns]".into()]),
        ),
        (
            "(c) a payload changed",
            Tamper::Payload,
            Expect::Fails(vec![at(t), "[payload_digest]".into()]),
        ),
        (
            "(d) a middle row deleted",
            Tamper::DeleteMiddle,
            Expect::Fails(vec![at(t + 1), "missing".into(), "[sequence]".into()]),
        ),
        (
            "(e) the seq of two rows swapped",
            Tamper::SwapSeq,
            Expect::Fails(vec![cp(fx.covering(t)), "[checkpoint_root]".into()]),
        ),
        (
            "(f) a forged row inserted in the middle, later rows renumbered",
            Tamper::InsertMiddle,
            Expect::Fails(vec![cp(fx.covering(t)), "[checkpoint_root]".into()]),
        ),
        (
            "(f') a forged row appended after the last checkpoint",
            Tamper::AppendAfterCheckpoint,
            Expect::Fails(s(&[&format!(
                "the log head records {n} events but {} were found",
                n + 1
            )])),
        ),
        (
            "(g) the last row deleted (covered by the final checkpoint)",
            Tamper::DeleteLast,
            Expect::Fails(vec![cp(n), "[truncated]".into()]),
        ),
        (
            "(g') the last row deleted together with its checkpoint",
            Tamper::DeleteLastAndItsCheckpoint,
            Expect::Fails(s(&[&format!(
                "the log head records {n} events but {} were found",
                n - 1
            )])),
        ),
        (
            "(h) a checkpoint's root altered",
            Tamper::CheckpointRoot,
            Expect::Fails(vec![cp(n), "[checkpoint_root]".into()]),
        ),
        (
            "(i) a checkpoint's note signature altered",
            Tamper::NoteSignature,
            Expect::Fails(vec![cp(n), "[checkpoint_signature]".into()]),
        ),
        (
            "(j) the public key file replaced with another key",
            Tamper::PublicKey,
            Expect::Fails(vec![cp(fx.checkpoints[0]), "[checkpoint_key]".into()]),
        ),
        (
            // A purge is legitimate only when a retention run recorded it (see
            // tests/retention.rs); one made by hand is a removal behind Warden's back.
            "(k) a payload purged by hand, with no retention run",
            Tamper::PurgePayload,
            Expect::Fails(vec![at(t), "[unexplained_removal]".into()]),
        ),
    ];

    let mut report = String::new();
    let mut failures = Vec::new();
    for (i, (name, tamper, expect)) in cases.iter().enumerate() {
        let copy = fx._tmp.path().join(format!("case-{i}"));
        copy_data(&fx.data, &copy);
        apply(*tamper, &fx, &copy).await;
        let out = verify(&copy).await;
        let (want_success, parts) = match expect {
            Expect::Fails(p) => (false, p),
            Expect::Passes(p) => (true, p),
        };
        let missing: Vec<&String> = parts.iter().filter(|p| !out.stdout.contains(*p)).collect();
        let ok = out.success() == want_success
            && (want_success || out.stdout.contains("acme: FAILED — "))
            && missing.is_empty();
        let _ = writeln!(
            report,
            "{} {name}: {}",
            if ok { "ok  " } else { "FAIL" },
            out.stdout.trim()
        );
        if !ok {
            failures.push(format!(
                "{name}: expected {} with {parts:?} (missing {missing:?}), got {}",
                if want_success { "success" } else { "failure" },
                out.text()
            ));
        }
    }
    println!("{report}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test]
async fn commands_that_read_the_store_refuse_a_data_dir_without_a_database() {
    let tmp = tempfile::tempdir().unwrap();
    let wrong = tmp.path().join("warden-dta");
    let d = path_str(&wrong);
    for args in [
        vec!["audit", "verify", "--data-dir", d],
        vec!["audit", "export", "--data-dir", d, "--tenant", "acme"],
        vec!["token", "list", "--data-dir", d, "--tenant", "acme"],
        vec![
            "token",
            "revoke",
            "--data-dir",
            d,
            "--tenant",
            "acme",
            "tok_x",
        ],
    ] {
        let out = warden(&args).await;
        assert!(
            !out.success(),
            "{args:?} succeeded on nothing: {}",
            out.text()
        );
        assert!(
            out.stderr.contains("no Warden database at"),
            "{args:?}: {}",
            out.text()
        );
        assert!(!wrong.exists(), "{args:?} created {d}");
    }
}
