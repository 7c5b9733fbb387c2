//! `warden policy versions|show|diff|apply|rollback|promote`: a tenant's policy bundle on a
//! running server, from a terminal or a CI pipeline. These talk to the server's REST API
//! (`/api/v1/policies/…`) with a token rather than to the store, because a change must be
//! validated, tested, stored, put in force and recorded in one step — which only the server
//! does; every node of a cluster then enforces it within a poll interval.
//!
//! Exit codes as for every `warden policy` command: 0 done; 1 the server refused (the answer's
//! problem is printed, with file:line errors or failed tests); 2 the command could not run
//! (bad arguments, server unreachable).

use std::path::{Path, PathBuf};

use clap::Args;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::policy_cmd::Format;

const FAILED: u8 = 1;
const USAGE: u8 = 2;

/// Where the server is and who asks.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// The Warden server's base URL.
    #[arg(long, env = "WARDEN_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// A token of the tenant (`policy_admin` or `admin` to change, `auditor` to read).
    #[arg(long, env = "WARDEN_TOKEN", hide_env_values = true)]
    pub token: String,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// What to do with the tenant's bundle.
#[derive(Debug)]
pub enum Op {
    Versions,
    Show {
        version: i64,
    },
    Diff {
        from: i64,
        to: i64,
    },
    Apply {
        dir: PathBuf,
        tenant: String,
        mode: Option<String>,
        message: Option<String>,
        base_version: Option<i64>,
        tests_warn: bool,
    },
    Rollback {
        version: i64,
        message: Option<String>,
        base_version: Option<i64>,
    },
    Promote {
        message: Option<String>,
        base_version: Option<i64>,
    },
}

pub fn run(server: ServerArgs, op: Op) -> u8 {
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(async move {
            let client = Client::new(server);
            match client.run(op).await {
                Ok(code) => code,
                Err(Failure::Usage(m)) => {
                    eprintln!("error: {m}");
                    USAGE
                }
                Err(Failure::Refused(status, problem)) => {
                    print_problem(status, &problem);
                    FAILED
                }
            }
        })
    })
}

enum Failure {
    Usage(String),
    Refused(StatusCode, Value),
}

struct Client {
    http: reqwest::Client,
    args: ServerArgs,
}

impl Client {
    fn new(args: ServerArgs) -> Client {
        Client {
            http: reqwest::Client::new(),
            args,
        }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/api/v1/policies{path}",
            self.args.server.trim_end_matches('/')
        )
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let response = request
            .bearer_auth(&self.args.token)
            .send()
            .await
            .map_err(|e| Failure::Usage(format!("cannot reach {}: {e}", self.args.server)))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        if status.is_success() {
            Ok(value)
        } else {
            Err(Failure::Refused(status, value))
        }
    }

    async fn get(&self, path: &str) -> Result<Value, Failure> {
        self.send(self.http.get(self.url(path))).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, Failure> {
        self.send(self.http.post(self.url(path)).json(&body)).await
    }

    async fn run(&self, op: Op) -> Result<u8, Failure> {
        let json_out = self.args.format == Format::Json;
        let answer = match op {
            Op::Versions => {
                let v = self.get("/versions").await?;
                if !json_out {
                    print_versions(&v);
                    return Ok(0);
                }
                v
            }
            Op::Show { version } => {
                let v = self.get(&format!("/versions/{version}")).await?;
                if !json_out {
                    print_version(&v);
                    return Ok(0);
                }
                v
            }
            Op::Diff { from, to } => {
                let v = self.get(&format!("/diff?from={from}&to={to}")).await?;
                if !json_out {
                    print_diff(&v);
                    return Ok(0);
                }
                v
            }
            Op::Apply {
                dir,
                tenant,
                mode,
                message,
                base_version,
                tests_warn,
            } => {
                let files = read_bundle(&dir, &tenant)?;
                let base = match base_version {
                    Some(b) => b,
                    None => current_version(&self.get("/versions").await?),
                };
                let mut body = json!({"files": files, "base_version": base});
                if let Some(m) = mode {
                    body["mode"] = json!(m);
                }
                if let Some(m) = message {
                    body["message"] = json!(m);
                }
                let query = if tests_warn { "?tests=warn" } else { "" };
                let request = self
                    .http
                    .put(self.url(&format!("/bundle{query}")))
                    .json(&body);
                self.send(request).await?
            }
            Op::Rollback {
                version,
                message,
                base_version,
            } => {
                self.post(
                    "/rollback",
                    json!({"version": version, "message": message, "base_version": base_version}),
                )
                .await?
            }
            Op::Promote {
                message,
                base_version,
            } => {
                self.post(
                    "/promote",
                    json!({"message": message, "base_version": base_version}),
                )
                .await?
            }
        };
        if json_out {
            println!("{answer}");
        } else {
            print_applied(&answer);
        }
        Ok(0)
    }
}

/// The tenant's files of a policy directory laid out as the server's
/// (`<tenant>/<namespace…>/*.cedar` and `*.test.yaml`), read as the server reads its own.
fn read_bundle(dir: &Path, tenant: &str) -> Result<Value, Failure> {
    if !dir.is_dir() {
        return Err(Failure::Usage(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let snapshot =
        warden_api::policies::read_dir(dir).map_err(|errors| Failure::Usage(errors.join("\n")))?;
    let bundle = snapshot.bundle(tenant);
    if bundle.files.is_empty() {
        return Err(Failure::Usage(format!(
            "{} has no policy files for tenant {tenant} (expected {}/{tenant}/…)",
            dir.display(),
            dir.display()
        )));
    }
    Ok(json!(bundle.files))
}

/// The newest version in a `/versions` answer (0 when there is none).
fn current_version(versions: &Value) -> i64 {
    versions
        .as_array()
        .and_then(|a| a.first())
        .and_then(|v| v["version"].as_i64())
        .unwrap_or(0)
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn print_versions(v: &Value) {
    let Some(list) = v.as_array().filter(|l| !l.is_empty()) else {
        println!("no versions");
        return;
    };
    println!(
        "{:>7}  {:<20}  {:<7}  {:<9}  {:<24}  MESSAGE",
        "VERSION", "CREATED", "MODE", "SOURCE", "AUTHOR"
    );
    for e in list {
        let created = text(&e["created_at"]);
        println!(
            "{:>7}  {:<20}  {:<7}  {:<9}  {:<24}  {}",
            e["version"],
            created.get(..19).unwrap_or(created),
            text(&e["mode"]),
            text(&e["source"]),
            text(&e["author"]),
            text(&e["message"]),
        );
    }
}

fn print_files_diff(d: &Value) {
    for f in d["files"].as_array().into_iter().flatten() {
        println!("--- {} ({})", text(&f["path"]), text(&f["status"]));
        print!("{}", text(&f["diff"]));
    }
}

fn print_diff(d: &Value) {
    let count = |k: &str| d[k].as_array().map_or(0, Vec::len);
    println!(
        "version {} → {}: {} added, {} removed, {} changed",
        d["from"],
        d["to"],
        count("added"),
        count("removed"),
        count("changed")
    );
    print_files_diff(d);
}

fn print_version(v: &Value) {
    println!(
        "version {} ({}, {}) by {} at {}: {}",
        v["version"],
        text(&v["mode"]),
        text(&v["source"]),
        text(&v["author"]),
        text(&v["created_at"]),
        text(&v["message"])
    );
    println!("sha256 {}", text(&v["sha256"]));
    for path in v["files"].as_object().into_iter().flat_map(|m| m.keys()) {
        println!("  {path}");
    }
    print_diff(&v["diff"]);
}

fn print_applied(a: &Value) {
    let v = &a["version"];
    println!(
        "applied: version {} ({}), {}",
        v["version"],
        text(&v["mode"]),
        text(&v["message"])
    );
    print_diff(&a["diff"]);
    if let Some(t) = a.get("tests").filter(|t| !t.is_null()) {
        println!(
            "tests: {} case(s), {} failed",
            t["cases"].as_u64().unwrap_or(0),
            t["failed"].as_u64().unwrap_or(0)
        );
    }
}

fn print_problem(status: StatusCode, p: &Value) {
    match p["detail"].as_str() {
        Some(detail) => eprintln!("error: {status}: {detail}"),
        None => eprintln!("error: {status}: {p}"),
    }
    for e in p["errors"].as_array().into_iter().flatten() {
        eprintln!(
            "  {}",
            e.as_str().map_or_else(|| e.to_string(), str::to_owned)
        );
    }
    if let Some(results) = p["report"]["results"].as_array() {
        for r in results.iter().filter(|r| r["passed"] == false) {
            eprintln!(
                "  failed: {}:{}: {}",
                text(&r["file"]),
                r["line"],
                text(&r["name"])
            );
        }
    }
}
