//! Warden on PostgreSQL, end to end with the real binary: `warden migrate`, tokens, `warden
//! serve --database postgres://…` answering decisions, `warden audit verify` over the same
//! database; and two server processes on one database under concurrent load, whose tenant
//! log stays one sequence with no gap and no fork.
//!
//! Each test creates a database of its own on the server at `WARDEN_TEST_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`) and drops it afterwards. An
//! unreachable server fails the test.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use sqlx::Connection;

fn admin_url() -> String {
    std::env::var("WARDEN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database, dropped (whatever still holds a connection) when this goes.
struct PgDatabase {
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create() -> PgDatabase {
        let admin = admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is not reachable at {admin}: {e}\n\
                     These tests run Warden on PostgreSQL and do not skip: start it \
                     (`pg_ctlcluster 15 main start`) or set WARDEN_TEST_POSTGRES_URL."
                )
            });
        let name = format!("warden_test_{}", uuid::Uuid::now_v7().simple());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let base = admin.split('?').next().unwrap_or(&admin);
        let host_end = base
            .find("://")
            .and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j))
            .unwrap_or(base.len());
        let url = format!("{}/{name}", &base[..host_end]);
        PgDatabase { name, url }
    }

    async fn connect(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&self.url)
            .await
            .expect("connect to the test database")
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url()).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            })
        })
        .join();
    }
}

async fn token(data: &Path, url: &str, role: &[&str]) -> CliToken {
    let mut args = vec!["--database", url, "--tenant", "acme"];
    args.extend_from_slice(role);
    create_token(data, &args).await
}

async fn agent(data: &Path, url: &str) -> CliToken {
    token(
        data,
        url,
        &[
            "--role",
            "agent",
            "--agent",
            "claude-code",
            "--on-behalf-of",
            "alice",
            "--namespace",
            "acme/platform/api",
        ],
    )
    .await
}

async fn verify_on(data: &Path, url: &str) -> Out {
    warden(&[
        "audit",
        "verify",
        "--data-dir",
        path_str(data),
        "--database",
        url,
    ])
    .await
}

/// Ids of every event of tenant acme, as `warden audit export` gives them.
async fn exported_ids(data: &Path, url: &str) -> HashSet<String> {
    let out = warden(&[
        "audit",
        "export",
        "--data-dir",
        path_str(data),
        "--database",
        url,
        "--tenant",
        "acme",
    ])
    .await;
    assert!(out.success(), "{}", out.text());
    out.stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON lines");
            v["id"].as_str().expect("id").to_owned()
        })
        .collect()
}

/// (events, lowest seq, highest seq, distinct seqs, distinct ids) of tenant acme's log.
async fn log_shape(db: &PgDatabase) -> (i64, i64, i64, i64, i64) {
    let mut conn = db.connect().await;
    sqlx::query_as(
        "SELECT count(*), coalesce(min(seq), -1), coalesce(max(seq), -1), count(DISTINCT seq), \
         count(DISTINCT id) FROM audit_events WHERE tenant = 'acme'",
    )
    .fetch_one(&mut conn)
    .await
    .expect("log shape")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_postgres_decides_records_and_verifies() {
    let db = PgDatabase::create().await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");

    // The CLI does not change a schema: an unmigrated database is refused with what to do.
    let out = warden(&[
        "token",
        "create",
        "--data-dir",
        path_str(&data),
        "--database",
        &db.url,
        "--tenant",
        "acme",
        "--role",
        "auditor",
    ])
    .await;
    assert!(!out.success(), "{}", out.text());
    assert!(out.stderr.contains("warden migrate"), "{}", out.text());

    let out = warden(&["migrate", "--database", &db.url]).await;
    assert!(out.success(), "{}", out.text());
    assert!(out.stdout.contains("schema at version"), "{}", out.text());

    let agent = agent(&data, &db.url).await;
    let mut server = Server::start_args(&data, &example_policies(), &["--database", &db.url]).await;
    let client = client();
    for i in 0..3 {
        let (body, expected) = decision_request(i);
        let (status, v) = authorize(&client, &server.base, &agent.secret, &body)
            .await
            .expect("authorize");
        assert_eq!(status, StatusCode::OK, "{v}\n{}", server.log());
        assert_eq!(v["decision"], expected, "{v}");
    }
    let status = server.terminate().await;
    assert!(status.success(), "{}", server.log());

    // Everything went to PostgreSQL: no SQLite file beside the keys.
    assert!(
        !data.join("warden.db").exists(),
        "an SQLite file was created"
    );
    let out = verify_on(&data, &db.url).await;
    assert!(out.success(), "{}", out.text());
    assert!(out.stdout.contains("acme: ok"), "{}", out.text());
    let (events, lo, hi, seqs, ids) = log_shape(&db).await;
    assert!(
        events >= 4,
        "3 decisions and the token's creation: {events}"
    );
    assert_eq!((lo, hi, seqs, ids), (0, events - 1, events, events));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_database_keep_one_log_under_load() {
    let db = PgDatabase::create().await;
    let tmp = tempfile::tempdir().unwrap();
    // The nodes share the keys (checkpoint signing, redaction): here the same data dir.
    let data = tmp.path().join("data");
    let out = warden(&["migrate", "--database", &db.url]).await;
    assert!(out.success(), "{}", out.text());
    let agent = agent(&data, &db.url).await;

    let one = Server::start_args(
        &data,
        &example_policies(),
        &["--database", &db.url, "--checkpoint-every-events", "200"],
    )
    .await;
    // The second node may not migrate: the schema is current, so it starts.
    let two = Server::start_args(
        &data,
        &example_policies(),
        &[
            "--database",
            &db.url,
            "--migrate-on-start",
            "false",
            "--checkpoint-every-events",
            "200",
        ],
    )
    .await;
    let load_one = Load::start(&one.base, &agent.secret, 4);
    let load_two = Load::start(&two.base, &agent.secret, 4);
    load_one.wait_for(400, Duration::from_secs(4)).await;
    load_two.wait_for(400, Duration::from_secs(4)).await;
    let (r1, r2) = (load_one.halt().await, load_two.halt().await);
    for (n, r) in [(1, &r1), (2, &r2)] {
        assert!(
            r.unexpected.is_empty() && r.errors_before_stop.is_empty(),
            "node {n}: {:?} {:?}",
            r.unexpected,
            r.errors_before_stop
        );
    }
    let (mut one, mut two) = (one, two);
    assert!(one.terminate().await.success(), "{}", one.log());
    assert!(two.terminate().await.success(), "{}", two.log());

    let acknowledged: HashSet<String> = r1
        .acknowledged
        .iter()
        .chain(&r2.acknowledged)
        .cloned()
        .collect();
    let (events, lo, hi, seqs, ids) = log_shape(&db).await;
    println!(
        "node 1 acknowledged {}, node 2 {}; the log holds {events} events, seq {lo}..={hi}",
        r1.acknowledged.len(),
        r2.acknowledged.len()
    );
    assert!(!r1.acknowledged.is_empty() && !r2.acknowledged.is_empty());
    assert_eq!(
        (lo, hi, seqs, ids),
        (0, events - 1, events, events),
        "one sequence: no gap, no seq or id twice"
    );
    let exported = exported_ids(&data, &db.url).await;
    assert!(
        acknowledged.is_subset(&exported),
        "{} acknowledged decisions are not in the log",
        acknowledged.difference(&exported).count()
    );
    let out = verify_on(&data, &db.url).await;
    assert!(out.success(), "{}", out.text());
    assert!(out.stdout.contains("acme: ok"), "{}", out.text());
}

/// The decision on `request` at `base`, asked again until it is `want` or `within` passed.
async fn decision_becomes(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    request: &serde_json::Value,
    want: &str,
    within: Duration,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, v) = authorize(client, base, token, request)
            .await
            .expect("authorize");
        assert_eq!(status, StatusCode::OK, "{v}");
        if v["decision"] == want || tokio::time::Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn put_bundle(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    policy: &str,
    base_version: i64,
) -> serde_json::Value {
    let r = client
        .put(format!("{base}/api/v1/policies/bundle"))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "files": {"globex/policies.cedar": policy},
            "base_version": base_version,
        }))
        .send()
        .await
        .expect("put bundle");
    let status = r.status();
    let v: serde_json::Value = r.json().await.expect("JSON");
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_applied_on_one_node_is_enforced_by_the_other() {
    let db = PgDatabase::create().await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = warden(&["migrate", "--database", &db.url]).await;
    assert!(out.success(), "{}", out.text());
    let globex = |role: &'static [&'static str]| {
        let mut args = vec!["--database", db.url.as_str(), "--tenant", "globex"];
        args.extend_from_slice(role);
        args
    };
    let admin = create_token(&data, &globex(&["--role", "policy_admin"])).await;
    let agent = create_token(
        &data,
        &globex(&[
            "--role",
            "agent",
            "--agent",
            "ci-bot",
            "--on-behalf-of",
            "bob",
            "--namespace",
            "globex/builds",
        ]),
    )
    .await;
    let mut one = Server::start_args(&data, &example_policies(), &["--database", &db.url]).await;
    let mut two = Server::start_args(
        &data,
        &example_policies(),
        &["--database", &db.url, "--migrate-on-start", "false"],
    )
    .await;
    let client = client();
    let (request, _) = decision_request(0);

    // globex has no policies yet (the example directory manages only acme): denied on both.
    for node in [&one, &two] {
        let (_, v) = authorize(&client, &node.base, &agent.secret, &request)
            .await
            .expect("authorize");
        assert_eq!(v["decision"], "deny", "{v}");
    }

    let permit = "@id(\"globex.tools\")\npermit (principal, action == Action::\"call_tool\", resource is Tool);\n";
    let applied = put_bundle(&client, &one.base, &admin.secret, permit, 0).await;
    assert_eq!(applied["version"]["version"], 1, "{applied}");
    let v = decision_becomes(
        &client,
        &two.base,
        &agent.secret,
        &request,
        "allow",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        v["decision"],
        "allow",
        "node two still enforces the old bundle: {v}\n{}",
        two.log()
    );

    // And the other way round, through node two.
    let forbid = "@id(\"globex.frozen\")\n@reason(\"change freeze\")\nforbid (principal, action, resource);\n";
    put_bundle(&client, &two.base, &admin.secret, forbid, 1).await;
    let v = decision_becomes(
        &client,
        &one.base,
        &agent.secret,
        &request,
        "deny",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(v["decision"], "deny", "{v}\n{}", one.log());
    assert!(
        v.to_string().contains("globex.frozen"),
        "denied by the new policy: {v}"
    );
    assert!(one.terminate().await.success(), "{}", one.log());
    assert!(two.terminate().await.success(), "{}", two.log());
}

/// A TCP relay between Warden and PostgreSQL that can cut the line: every open connection is
/// dropped and new ones are closed on arrival, as when the database host goes away, until the
/// line is restored. The database itself is the real server throughout.
struct Line {
    addr: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    relays: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Line {
    async fn to(target: std::net::SocketAddr) -> Line {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let relays = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, relays2) = (up.clone(), relays.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                relays2.lock().unwrap().push(relay.abort_handle());
            }
        });
        Line {
            addr,
            up,
            relays,
            accept,
        }
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for relay in self.relays.lock().unwrap().drain(..) {
            relay.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_postgres_mid_write_refuses_with_503_and_loses_nothing_acknowledged() {
    let db = PgDatabase::create().await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = warden(&["migrate", "--database", &db.url]).await;
    assert!(out.success(), "{}", out.text());
    let agent = agent(&data, &db.url).await;

    let direct = host_port(&db.url);
    let target: std::net::SocketAddr = tokio::net::lookup_host(direct.as_str())
        .await
        .expect("resolve the PostgreSQL host")
        .next()
        .expect("an address");
    let line = Line::to(target).await;
    let via_line = db.url.replacen(direct.as_str(), &line.addr.to_string(), 1);
    let mut server = Server::start_args(
        &data,
        &example_policies(),
        &["--database", &via_line, "--migrate-on-start", "false"],
    )
    .await;
    let client = client();

    let load = Load::start(&server.base, &agent.secret, 4);
    load.wait_for(300, Duration::from_secs(3)).await;

    // The database goes away under load.
    line.cut();
    let before_cut = load.acknowledged_so_far();
    // The door refuses, saying when to come back, instead of answering without a record.
    let (request, _) = decision_request(1);
    let mut refused = None;
    for _ in 0..40 {
        let r = client
            .post(format!("{}/api/v1/authorize", server.base))
            .bearer_auth(&agent.secret)
            .json(&request)
            .send()
            .await
            .expect("the server still answers while the database is gone");
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = refused
        .unwrap_or_else(|| panic!("no 503 while PostgreSQL was unreachable\n{}", server.log()));
    assert!(
        refused.headers().get("retry-after").is_some(),
        "a refusal says when to retry: {:?}",
        refused.headers()
    );
    let ready = client
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during_cut = load.acknowledged_so_far();

    // The database comes back: service resumes without a restart.
    line.restore();
    load.wait_for(during_cut + 300, Duration::from_secs(60))
        .await;
    let result = load.halt().await;
    let after = result.acknowledged.len();
    println!(
        "acknowledged {before_cut} before the cut, {} while cut, {after} in all; \
         {} refused with 503",
        during_cut - before_cut,
        result.unavailable
    );
    assert!(
        after >= during_cut + 300,
        "service did not resume after the database came back\n{}",
        server.log()
    );
    assert!(
        result.unavailable > 0,
        "no refusal while the database was gone"
    );
    assert!(
        result.unexpected.is_empty() && result.errors_before_stop.is_empty(),
        "{:?} {:?}",
        result.unexpected,
        result.errors_before_stop
    );
    assert!(server.terminate().await.success(), "{}", server.log());

    // Every acknowledged decision is in the log, which is still one verifiable sequence.
    let exported = exported_ids(&data, &db.url).await;
    let acknowledged: HashSet<String> = result.acknowledged.into_iter().collect();
    assert!(
        acknowledged.is_subset(&exported),
        "{} acknowledged decisions are not in the log",
        acknowledged.difference(&exported).count()
    );
    let (events, lo, hi, seqs, ids) = log_shape(&db).await;
    assert_eq!((lo, hi, seqs, ids), (0, events - 1, events, events));
    let out = verify_on(&data, &db.url).await;
    assert!(out.success(), "{}", out.text());
    assert!(out.stdout.contains("acme: ok"), "{}", out.text());
}

/// The `host:port` part of a database URL (which names its port explicitly).
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = authority.rsplit('@').next().unwrap_or(authority);
    assert!(
        host.contains(':'),
        "the test database URL names its port: {url}"
    );
    host.to_owned()
}
