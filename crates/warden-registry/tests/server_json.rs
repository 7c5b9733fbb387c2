//! Imports of realistic `server.json` files (fixtures under `tests/fixtures/server-json`):
//! the mapped registry record for the valid ones, every problem with its path for the
//! invalid ones.

use chrono::{DateTime, Utc};
use warden_registry::model::{EnvValue, Owner, SecretRef, State, Transport};
use warden_registry::server_json::{ImportedServer, Problem, SCHEMA_URLS, import};

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/server-json/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn now() -> DateTime<Utc> {
    "2026-02-01T09:30:00Z".parse().unwrap()
}

fn ok(name: &str) -> ImportedServer {
    let owner = Owner::parse("team:platform").unwrap();
    match import(&fixture(name), Some(owner), now()) {
        Ok(s) => s,
        Err(problems) => panic!("{name}: {problems:#?}"),
    }
}

fn problems(name: &str) -> Vec<Problem> {
    match import(&fixture(name), None, now()) {
        Ok(s) => panic!("{name} was accepted: {s:#?}"),
        Err(p) => p,
    }
}

fn sorted_paths(p: &[Problem]) -> Vec<&str> {
    let mut v: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
    v.sort();
    v
}

fn stdio(t: &Option<Transport>) -> (&str, Vec<&str>, &[warden_registry::EnvVar]) {
    match t {
        Some(Transport::Stdio { command, args, env }) => (
            command.as_str(),
            args.iter().map(String::as_str).collect(),
            env.as_slice(),
        ),
        other => panic!("expected stdio, got {other:?}"),
    }
}

#[test]
fn npm_server_with_a_secret_environment_variable() {
    let s = ok("npm-github.json");
    let srv = &s.server;
    assert_eq!(
        srv.name.as_str(),
        "io.github.modelcontextprotocol/server-github"
    );
    assert_eq!(srv.alias, "server-github");
    assert_eq!(srv.title.as_deref(), Some("GitHub"));
    assert_eq!(srv.version, "2025.4.8");
    assert_eq!(srv.state, State::PendingReview);
    assert_eq!(srv.owner.as_ref().unwrap().as_str(), "team:platform");
    assert_eq!((srv.created_at, srv.updated_at), (now(), now()));
    assert!(srv.scopes.is_empty());
    assert_eq!(
        srv.source.repository_url.as_deref(),
        Some("https://github.com/modelcontextprotocol/servers")
    );
    assert_eq!(srv.source.repository_source.as_deref(), Some("github"));
    let pkg = srv.source.package.as_ref().unwrap();
    assert_eq!(
        (pkg.registry_type.as_str(), pkg.identifier.as_str()),
        ("npm", "@modelcontextprotocol/server-github")
    );
    assert_eq!(pkg.version.as_deref(), Some("2025.4.8"));

    let (command, args, env) = stdio(&srv.transport);
    assert_eq!(command, "npx");
    assert_eq!(args, ["-y", "@modelcontextprotocol/server-github@2025.4.8"]);
    assert_eq!(env.len(), 2);
    assert_eq!(env[0].name, "GITHUB_PERSONAL_ACCESS_TOKEN");
    assert!(env[0].is_secret && env[0].is_required);
    assert_eq!(env[0].value, None, "the operator supplies the reference");
    assert_eq!(env[1].name, "GITHUB_API_URL");
    assert_eq!(
        env[1].value,
        Some(EnvValue::Literal("https://api.github.com".into()))
    );
    assert_eq!(s.transport_from.as_deref(), Some("$.packages[0]"));
    assert_eq!(s.schema, SCHEMA_URLS[0]);
    assert!(
        s.meta
            .as_ref()
            .unwrap()
            .contains_key("io.modelcontextprotocol.registry/publisher-provided")
    );
    assert!(srv.validate().is_ok());
}

#[test]
fn pypi_server_with_a_named_argument() {
    let s = ok("pypi-time.json");
    assert_eq!(s.server.alias, "time");
    assert_eq!(s.schema, SCHEMA_URLS[1]);
    assert!(s.server.title.is_none());
    let (command, args, env) = stdio(&s.server.transport);
    assert_eq!(command, "uvx");
    assert_eq!(args, ["mcp-server-time==0.6.2", "--local-timezone", "UTC"]);
    assert!(env.is_empty());
    assert!(s.server.validate().is_ok());
}

#[test]
fn oci_server_passes_its_variables_to_the_container() {
    let s = ok("oci-github.json");
    assert_eq!(s.server.alias, "github-mcp-server");
    let (command, args, env) = stdio(&s.server.transport);
    assert_eq!(command, "docker");
    assert_eq!(
        args,
        [
            "run",
            "-i",
            "--rm",
            "--read-only",
            "-e",
            "GITHUB_PERSONAL_ACCESS_TOKEN",
            "-e",
            "GITHUB_HOST",
            "ghcr.io/github/github-mcp-server:0.24.1",
            "stdio",
            "--toolsets",
            "repos,issues,pull_requests"
        ]
    );
    // A secret given as a reference is kept as one.
    assert_eq!(
        env[0].value,
        Some(EnvValue::Secret(SecretRef::Env("GITHUB_PAT_WARDEN".into())))
    );
    assert_eq!(env[1].value, Some(EnvValue::Literal("github.com".into())));
    let pkg = s.server.source.package.as_ref().unwrap();
    assert_eq!(pkg.version, None);
    assert_eq!(s.icons.len(), 1);
    assert!(s.server.validate().is_ok());
}

#[test]
fn remote_only_server_with_a_secret_authorization_header() {
    let s = ok("remote-insights.json");
    assert_eq!(s.server.alias, "analytics");
    assert!(s.server.source.package.is_none());
    assert!(s.server.source.repository_url.is_none());
    assert_eq!(
        s.website_url.as_deref(),
        Some("https://insights.example.com/docs/mcp")
    );
    let Some(Transport::StreamableHttp { url, headers }) = &s.server.transport else {
        panic!("{:?}", s.server.transport)
    };
    assert_eq!(url, "https://mcp.insights.example.com/mcp");
    assert_eq!(headers.len(), 2);
    assert_eq!(headers[0].name, "Authorization");
    assert!(headers[0].is_secret);
    assert_eq!(headers[0].value, None);
    assert_eq!(headers[1].name, "X-Insights-Project");
    assert!(!headers[1].is_secret);
    assert_eq!(
        headers[1].value,
        Some(EnvValue::Literal("production".into()))
    );
    assert_eq!(s.transport_from.as_deref(), Some("$.remotes[0]"));
    assert!(s.server.validate().is_ok());
}

#[test]
fn package_and_remotes_prefer_the_first_startable_stdio_package() {
    let s = ok("hybrid-tickets.json");
    assert_eq!(s.schema, SCHEMA_URLS[2]);
    // The mcpb bundle cannot be started by a command; the npm package can.
    assert_eq!(s.transport_from.as_deref(), Some("$.packages[1]"));
    let (command, args, env) = stdio(&s.server.transport);
    assert_eq!(command, "npx");
    assert_eq!(args, ["-y", "@acme-corp/tickets-mcp@1.5.0", "{workspace}"]);
    assert_eq!(
        env[0].value,
        Some(EnvValue::Secret(SecretRef::File(
            "/run/secrets/helpdesk".into()
        )))
    );
    assert_eq!(
        s.server.source.package.as_ref().unwrap().registry_type,
        "npm"
    );
    // Everything is kept as given.
    assert_eq!(s.packages.len(), 2);
    assert_eq!(s.packages[0].registry_type.as_deref(), Some("mcpb"));
    assert_eq!(s.remotes.len(), 2);
    assert_eq!(s.remotes[1].kind.as_deref(), Some("sse"));
    assert_eq!(
        s.remotes[0].headers[0].value.as_deref(),
        Some("Bearer {token}")
    );
    assert!(s.server.validate().is_ok());
}

#[test]
fn legacy_sse_remote_stays_sse() {
    let s = ok("remote-sse-legacy.json");
    let Some(Transport::Sse { url, headers }) = &s.server.transport else {
        panic!("{:?}", s.server.transport)
    };
    assert_eq!(url, "https://weather.legacy.example/sse");
    assert_eq!(
        headers[0].value,
        Some(EnvValue::Secret(SecretRef::Env("WEATHER_API_KEY".into())))
    );
}

#[test]
fn every_imported_fixture_round_trips_through_serde() {
    for name in [
        "npm-github.json",
        "pypi-time.json",
        "oci-github.json",
        "remote-insights.json",
        "hybrid-tickets.json",
        "remote-sse-legacy.json",
    ] {
        let s = ok(name);
        let v = serde_json::to_value(&s).unwrap();
        let back: ImportedServer = serde_json::from_value(v).unwrap();
        assert_eq!(back, s, "{name}");
    }
}

#[test]
fn secrets_in_clear_are_refused_wherever_they_are() {
    let p = problems("invalid-secrets.json");
    assert_eq!(
        sorted_paths(&p),
        [
            "$.packages[0].environmentVariables[1].value",
            "$.packages[0].environmentVariables[2].default",
            "$.packages[0].packageArguments[0].variables.password.default",
            "$.packages[0].runtimeArguments[0].value",
            "$.remotes[0].headers[0].value",
        ],
        "{p:#?}"
    );
    for problem in &p {
        assert!(
            problem.message.contains(
                "secret values may not be stored; reference one with env:NAME or file:/path"
            ),
            "{problem}"
        );
        for leaked in ["sk-live", "hunter2", "ghp_", "rt-0b1c", "eyJhbGci"] {
            assert!(!problem.message.contains(leaked), "{problem}");
        }
    }
}

#[test]
fn a_malformed_file_reports_every_problem_at_once() {
    let p = problems("invalid-shape.json");
    assert_eq!(
        sorted_paths(&p),
        [
            "$.description",
            "$.name",
            "$.packages[0].environmentVariables[0].isSecrett",
            "$.packages[0].environmentVariables[0].name",
            "$.packages[0].registryType",
            "$.packages[0].registry_type",
            "$.packages[0].transport.type",
            "$.packages[0].version",
            "$.remotes[0].url",
            "$.remotes[1].url",
            "$.remotes[2].type",
            "$.repository.source",
            "$.status",
            "$.version",
            "$.websiteUrl",
            "$['$schema']",
        ],
        "{p:#?}"
    );
    let msg = |path: &str| {
        p.iter()
            .find(|p| p.path == path)
            .map(|p| p.message.as_str())
            .unwrap()
    };
    assert!(msg("$.status").starts_with("unknown field `status`"));
    assert!(msg("$.status").contains("_meta"));
    assert!(msg("$.packages[0].registry_type").contains("registryType"));
    assert!(msg("$.version").contains("version range"));
    assert!(msg("$.packages[0].transport.type").contains("\"websocket\""));
    assert!(msg("$.remotes[2].type").contains("streamable-http or sse"));
    assert!(msg("$['$schema']").contains("2025-12-11"));
    assert_eq!(msg("$.description"), "required");
}

#[test]
fn wrong_types_and_missing_members_are_reported_with_their_paths() {
    let p = problems("invalid-types.json");
    assert_eq!(
        sorted_paths(&p),
        [
            "$._meta",
            "$.description",
            "$.icons[0].src",
            "$.packages[0].fileSha256",
            "$.packages[1].fileSha256",
            "$.packages[1].transport.url",
            "$.packages[1].version",
            "$.packages[2].environmentVariables[0].isRequired",
            "$.packages[3].packageArguments[0]",
            "$.packages[3].packageArguments[1].name",
            "$.packages[3].packageArguments[2].type",
            "$.packages[3].transport.url",
            "$.remotes",
            "$.title",
            "$.version",
        ],
        "{p:#?}"
    );
    let msg = |path: &str| {
        p.iter()
            .find(|p| p.path == path)
            .map(|p| p.message.as_str())
            .unwrap()
    };
    assert!(msg("$.description").contains("at most 100"));
    assert!(msg("$.version").contains("latest"));
    assert!(
        msg("$.title").contains("expected a string"),
        "{}",
        msg("$.title")
    );
    assert_eq!(msg("$.remotes"), "must be an array");
    assert!(msg("$.packages[0].fileSha256").contains("mcpb"));
}
