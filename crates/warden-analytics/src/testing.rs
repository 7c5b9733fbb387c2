//! ClickHouse for tests (of this crate and of the crates that use it): a database of its own
//! on the test server, and a private server a test may stop and start.
//!
//! The test server is `WARDEN_TEST_CLICKHOUSE_URL` (default `http://127.0.0.1:18123`, what
//! `scripts/clickhouse.sh` starts). When it does not answer, a test fails if
//! `WARDEN_REQUIRE_BACKENDS=1` (as CI and `scripts/test.sh` set) and is skipped otherwise,
//! saying so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::client::ClickHouse;
use crate::config::AnalyticsConfig;

pub const DEFAULT_TEST_URL: &str = "http://127.0.0.1:18123";

pub fn test_url() -> String {
    std::env::var("WARDEN_TEST_CLICKHOUSE_URL").unwrap_or_else(|_| DEFAULT_TEST_URL.into())
}

fn required() -> bool {
    std::env::var("WARDEN_REQUIRE_BACKENDS").is_ok_and(|v| v == "1")
}

/// A database of its own on the test server, dropped when this goes.
pub struct TestClickHouse {
    pub url: String,
    pub database: String,
}

impl TestClickHouse {
    /// `None` (the test should return) when ClickHouse does not answer and backends are not
    /// required; panics when they are.
    pub async fn new() -> Option<TestClickHouse> {
        let url = test_url();
        let probe = ClickHouse::new(&AnalyticsConfig::new(&url)).expect("test URL");
        if let Err(e) = probe.ping().await {
            let msg = format!(
                "ClickHouse does not answer at {url}: {e}\n\
                 Start it with scripts/clickhouse.sh or point WARDEN_TEST_CLICKHOUSE_URL at one."
            );
            if required() {
                panic!(
                    "{msg}\nWARDEN_REQUIRE_BACKENDS=1: a backend that was not tested is never reported as passing."
                );
            }
            eprintln!("SKIPPED (set WARDEN_REQUIRE_BACKENDS=1 to fail instead): {msg}");
            return None;
        }
        Some(TestClickHouse {
            url,
            database: format!("warden_test_{}", uuid::Uuid::now_v7().simple()),
        })
    }

    /// Settings pointing at this database (feed every 50 ms, for tests).
    pub fn config(&self) -> AnalyticsConfig {
        let mut c = AnalyticsConfig::new(&self.url);
        c.database = self.database.clone();
        c.interval = Duration::from_millis(50);
        c
    }

    pub fn client(&self) -> ClickHouse {
        ClickHouse::new(&self.config()).expect("test config")
    }
}

impl Drop for TestClickHouse {
    fn drop(&mut self) {
        let config = self.config();
        let db = self.database.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(async move {
                    if let Ok(ch) = ClickHouse::new(&config) {
                        let _ = ch.execute(&format!("DROP DATABASE IF EXISTS {db}")).await;
                    }
                })
        })
        .join();
    }
}

/// `scripts/clickhouse.sh` of this repository.
pub fn start_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/clickhouse.sh")
}

/// A ClickHouse server of the test's own (its own ports and folder), started with
/// `scripts/clickhouse.sh`, that the test may stop and start again. Stopped when dropped.
pub struct PrivateClickHouse {
    pub http_port: u16,
    pub tcp_port: u16,
    pub dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PrivateClickHouse {
    /// Starts one; `None` when ClickHouse cannot run here and backends are not required
    /// (panics when they are).
    pub fn start() -> Option<PrivateClickHouse> {
        let ch = PrivateClickHouse {
            http_port: free_port(),
            tcp_port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        match ch.run_script() {
            Ok(()) => Some(ch),
            Err(msg) if required() => panic!("{msg}"),
            Err(msg) => {
                eprintln!("SKIPPED (set WARDEN_REQUIRE_BACKENDS=1 to fail instead): {msg}");
                None
            }
        }
    }

    fn run_script(&self) -> Result<(), String> {
        let out = Command::new("bash")
            .arg(start_script())
            .arg(self.http_port.to_string())
            .arg(self.tcp_port.to_string())
            .arg(self.dir.path())
            .output()
            .map_err(|e| format!("cannot run scripts/clickhouse.sh: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "scripts/clickhouse.sh could not start a private ClickHouse: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.path().join("server.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Stops the server (SIGTERM, then SIGKILL after 15 s) and waits until it is gone.
    pub fn stop(&self) {
        let Some(pid) = self.pid() else { return };
        let kill = |args: &[&str]| {
            Command::new("kill")
                .args(args)
                .arg(pid.to_string())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let alive = || kill(&["-0"]);
        kill(&["-TERM"]);
        for _ in 0..150 {
            if !alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        kill(&["-KILL"]);
        while alive() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts it again on the same ports and folder (its data kept).
    pub fn restart(&self) {
        self.run_script().unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        self.stop();
    }
}
