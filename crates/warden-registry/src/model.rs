//! The registry's records: tool servers, their tools, agents, and the facts Warden keeps
//! about each (owner, risk, categories, lifecycle state, namespace scoping, pins).
//!
//! Values that have a syntax are types that can only hold a valid value (`ServerName`,
//! `Owner`, `SecretRef`), so the storage layer and the REST API cannot hand the gateway a
//! name it cannot route or a secret where only a reference belongs. The one rule that spans
//! fields — a secret environment variable or header never holds a literal value — is checked
//! when the record is deserialized, so a request body carrying a secret is refused before
//! anything is stored.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use warden_core::NamespacePath;

use crate::pin::Pin;
use crate::propose::Proposal;

/// Longest gateway alias: the gateway's own limit for a server name used as a tool prefix.
pub const MAX_ALIAS_LEN: usize = 64;
/// Separates a server's alias from its tool's name in the names agents see (`deploy__run`).
pub const ALIAS_SEPARATOR: &str = "__";

// --- Names ---------------------------------------------------------------------------------

/// A server's name as the official MCP registry's `server.json` spells it: reverse-DNS
/// namespace, one `/`, server name (`io.github.acme/deploy`). The same string identifies the
/// server in Warden's registry, in events and in policies (`ToolServer::"io.github.acme/deploy"`).
///
/// Valid names match `^[a-zA-Z0-9.-]+/[a-zA-Z0-9._-]+$` and are 3 to 200 characters long.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerName(String);

impl ServerName {
    pub const MIN_LEN: usize = 3;
    pub const MAX_LEN: usize = 200;

    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "invalid server name {s:?}: {why}; expected reverse-DNS `namespace/name` such as \
                 `io.github.acme/deploy` (letters, digits, '.', '-' before the '/', also '_' after it)"
            )
        };
        if s.len() < Self::MIN_LEN || s.len() > Self::MAX_LEN {
            return Err(bad(&format!(
                "length must be {} to {} characters",
                Self::MIN_LEN,
                Self::MAX_LEN
            )));
        }
        let Some((namespace, name)) = s.split_once('/') else {
            return Err(bad("it has no '/'"));
        };
        if namespace.is_empty() || name.is_empty() {
            return Err(bad("the part before or after '/' is empty"));
        }
        if !namespace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(bad(&format!(
                "namespace {namespace:?} has a character outside [a-zA-Z0-9.-]"
            )));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(bad(&format!(
                "name {name:?} has a character outside [a-zA-Z0-9._-]"
            )));
        }
        Ok(ServerName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The reverse-DNS part before the `/` (`io.github.acme`).
    pub fn namespace(&self) -> &str {
        self.0.split_once('/').map(|(ns, _)| ns).unwrap_or_default()
    }

    /// The part after the `/` (`deploy`).
    pub fn short_name(&self) -> &str {
        self.0.split_once('/').map(|(_, n)| n).unwrap_or(&self.0)
    }

    /// A default gateway alias for this server. Agents see tools as `<alias>__<tool>`, and MCP
    /// tool names may not contain `/`, so the full name cannot serve; the part after `/` is
    /// lowercased and reduced to `[a-z0-9_-]` ('.' and anything else become '-'), runs of '_'
    /// collapse (the alias may not contain the `__` separator), leading and trailing '_'/'-'
    /// are dropped and the result is cut to 64 characters. An operator may choose another
    /// alias when two servers' defaults collide.
    pub fn alias(&self) -> String {
        let mut out = String::with_capacity(self.short_name().len());
        for c in self.short_name().chars() {
            let c = c.to_ascii_lowercase();
            let c = if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                c
            } else {
                '-'
            };
            if c == '_' && out.ends_with('_') {
                continue;
            }
            out.push(c);
        }
        let mut alias: String = out
            .trim_matches(|c| c == '_' || c == '-')
            .chars()
            .take(MAX_ALIAS_LEN)
            .collect();
        while alias.ends_with('_') || alias.ends_with('-') {
            alias.pop();
        }
        if alias.is_empty() {
            "server".to_owned()
        } else {
            alias
        }
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a gateway alias: 1-64 of `[a-z0-9_-]`, no `__` (it separates alias from tool
/// name), not starting or ending with '_' — the same rule the gateway applies to the names of
/// configured upstreams, so a registry server and a configured one are named alike.
pub fn validate_alias(alias: &str) -> Result<(), String> {
    let ok = !alias.is_empty()
        && alias.len() <= MAX_ALIAS_LEN
        && alias
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !alias.contains(ALIAS_SEPARATOR)
        && !alias.starts_with('_')
        && !alias.ends_with('_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "alias {alias:?} is not usable: 1-{MAX_ALIAS_LEN} of lowercase letters, digits, '-' \
             or '_', without \"__\" and not starting or ending with '_' (agents see tools as \
             <alias>__<tool>)"
        ))
    }
}

/// Checks an agent's catalog name: the name agent tokens carry and policies read as
/// `Agent::"<name>"`. 1-128 characters, no whitespace or control characters.
pub fn validate_agent_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > 128 {
        return Err(format!("agent name {name:?} must be 1 to 128 characters"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "agent name {name:?} may not contain whitespace or control characters"
        ));
    }
    Ok(())
}

/// Who answers for a server, tool or agent: a user id, or `team:<name>` for a team.
/// Owners are who a reviewer asks and who a report lists; policies may read them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner(String);

impl Owner {
    pub const TEAM_PREFIX: &'static str = "team:";
    const MAX_LEN: usize = 200;

    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("owner is empty: give a user id or team:<name>".into());
        }
        if t.chars().count() > Self::MAX_LEN {
            return Err(format!("owner is longer than {} characters", Self::MAX_LEN));
        }
        if t.chars().any(char::is_control) {
            return Err("owner may not contain control characters".into());
        }
        if let Some(team) = t.strip_prefix(Self::TEAM_PREFIX)
            && team.trim().is_empty()
        {
            return Err("owner `team:` names no team: write team:<name>".into());
        }
        Ok(Owner(t.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The team's name when the owner is a team.
    pub fn team(&self) -> Option<&str> {
        self.0.strip_prefix(Self::TEAM_PREFIX)
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// --- Secrets -------------------------------------------------------------------------------

/// Where Warden finds a secret when it connects to a server — never the secret itself, so
/// the registry (its database, its API answers, its audit events) never holds one.
///
/// Written `env:NAME` (an environment variable of the Warden process) or `file:/abs/path`
/// (a file Warden reads; absolute, so it does not depend on the working directory).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SecretRef {
    Env(String),
    File(String),
}

impl SecretRef {
    /// Parses a reference. The error never repeats the input: a refused value may well be
    /// the secret someone pasted, and error messages end up in logs.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(name) = s.strip_prefix("env:") {
            if is_env_name(name) {
                return Ok(SecretRef::Env(name.to_owned()));
            }
            return Err(format!(
                "`env:` must be followed by an environment variable name ([A-Za-z_][A-Za-z0-9_]*). {}",
                SECRET_FORMS
            ));
        }
        if let Some(path) = s.strip_prefix("file:") {
            let ok = path.starts_with('/')
                && path.len() > 1
                && path.len() <= 4096
                && !path.chars().any(char::is_control)
                && !path.split('/').any(|seg| seg == "..");
            if ok {
                return Ok(SecretRef::File(path.to_owned()));
            }
            return Err(format!(
                "`file:` must be followed by an absolute path without `..`. {SECRET_FORMS}"
            ));
        }
        Err(format!("this is not a secret reference. {SECRET_FORMS}"))
    }

    /// True when `s` parses as a reference.
    pub fn is_reference(s: &str) -> bool {
        SecretRef::parse(s).is_ok()
    }
}

/// The explanation every refused secret carries.
pub const SECRET_FORMS: &str = "A secret value may not be stored in the registry; reference it \
     as env:NAME (an environment variable of the Warden process) or file:/absolute/path (a file \
     Warden reads when it connects)";

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 256
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(path) => write!(f, "file:{path}"),
        }
    }
}

impl Serialize for SecretRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SecretRef::parse(&s).map_err(serde::de::Error::custom)
    }
}

macro_rules! string_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$t>::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}
string_serde!(ServerName);
string_serde!(Owner);

macro_rules! string_schema {
    ($t:ty) => {
        impl utoipa::PartialSchema for $t {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                String::schema()
            }
        }
        impl utoipa::ToSchema for $t {}
    };
}
string_schema!(ServerName);
string_schema!(Owner);
string_schema!(SecretRef);

// --- Classifications -----------------------------------------------------------------------

/// How much harm a tool can do. Ordered: `low < medium < high < critical`, so a policy or a
/// report can ask for "high or above".
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    Low,
    Medium,
    High,
    Critical,
}

impl RiskLevel {
    pub const ALL: [RiskLevel; 4] = [
        RiskLevel::Low,
        RiskLevel::Medium,
        RiskLevel::High,
        RiskLevel::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
            RiskLevel::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// What a tool can touch. A tool has any number of categories; policies test them with
/// `resource.categories.contains("delete")`.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Read,
    Write,
    Delete,
    Execute,
    Network,
    Secrets,
    Pii,
}

impl Category {
    pub const ALL: [Category; 7] = [
        Category::Read,
        Category::Write,
        Category::Delete,
        Category::Execute,
        Category::Network,
        Category::Secrets,
        Category::Pii,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Read => "read",
            Category::Write => "write",
            Category::Delete => "delete",
            Category::Execute => "execute",
            Category::Network => "network",
            Category::Secrets => "secrets",
            Category::Pii => "pii",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The most sensitive data a tool handles. Ordered from `public` to `restricted`.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Classification {
    Public,
    Internal,
    Confidential,
    Restricted,
}

impl Classification {
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::Public => "public",
            Classification::Internal => "internal",
            Classification::Confidential => "confidential",
            Classification::Restricted => "restricted",
        }
    }
}

/// The global lifecycle state of a server or tool (see `lifecycle` for the transitions).
/// Namespace scoping (see `scope`) narrows where an approved item may be used.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// New, or changed since it was approved: not usable until a person approves it.
    #[default]
    PendingReview,
    /// Usable where it is enabled.
    Approved,
    /// Still usable where it is enabled, but on its way out; reports flag its use.
    Deprecated,
    /// Not usable anywhere.
    Blocked,
}

impl State {
    pub const ALL: [State; 4] = [
        State::PendingReview,
        State::Approved,
        State::Deprecated,
        State::Blocked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::PendingReview => "pending_review",
            State::Approved => "approved",
            State::Deprecated => "deprecated",
            State::Blocked => "blocked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// --- Namespace scoping ---------------------------------------------------------------------

/// Whether a scope entry enables or blocks an item in a namespace and below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScopeEffect {
    Enable,
    Block,
}

impl ScopeEffect {
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeEffect::Enable => "enable",
            ScopeEffect::Block => "block",
        }
    }
}

/// One namespace where an item is enabled or blocked, with who set it, when, and why (the
/// same facts the audit event carries, kept on the record so the API can show them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScopeEntry {
    /// Namespace path (`acme/platform`); the entry applies there and below.
    pub namespace: NamespacePath,
    pub effect: ScopeEffect,
    pub reason: String,
    /// Who set it (user or token id).
    pub by: String,
    #[schema(value_type = String, format = DateTime)]
    pub at: DateTime<Utc>,
}

// --- Transport -----------------------------------------------------------------------------

/// The value of an environment variable or header Warden sets when it connects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnvValue {
    /// A plain value; only for variables that are not secret.
    Literal(String),
    /// A reference to where Warden reads the value.
    Secret(SecretRef),
}

/// An environment variable a stdio server needs. A secret variable (`is_secret`) may only
/// hold a `SecretRef`; deserializing one with a literal value fails.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "EnvVarFields")]
pub struct EnvVar {
    pub name: String,
    pub description: Option<String>,
    pub is_required: bool,
    pub is_secret: bool,
    /// Unset: the operator still has to provide one (or the variable is optional).
    pub value: Option<EnvValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvVarFields {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    is_required: bool,
    #[serde(default)]
    is_secret: bool,
    #[serde(default)]
    value: Option<EnvValue>,
}

impl TryFrom<EnvVarFields> for EnvVar {
    type Error = String;
    fn try_from(f: EnvVarFields) -> Result<Self, String> {
        let v = EnvVar {
            name: f.name,
            description: f.description,
            is_required: f.is_required,
            is_secret: f.is_secret,
            value: f.value,
        };
        v.validate()?;
        Ok(v)
    }
}

impl EnvVar {
    pub fn validate(&self) -> Result<(), String> {
        if !is_env_name(&self.name) {
            return Err(format!(
                "environment variable name {:?} must match [A-Za-z_][A-Za-z0-9_]*",
                self.name
            ));
        }
        check_secret_value(
            &format!("environment variable {}", self.name),
            self.is_secret,
            self.value.as_ref(),
        )
    }
}

/// An HTTP header Warden sends to a remote server. A secret header (`is_secret`, e.g.
/// `Authorization`) may only hold a `SecretRef`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "HeaderFields")]
pub struct Header {
    pub name: String,
    pub is_secret: bool,
    pub value: Option<EnvValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderFields {
    name: String,
    #[serde(default)]
    is_secret: bool,
    #[serde(default)]
    value: Option<EnvValue>,
}

impl TryFrom<HeaderFields> for Header {
    type Error = String;
    fn try_from(f: HeaderFields) -> Result<Self, String> {
        let h = Header {
            name: f.name,
            is_secret: f.is_secret,
            value: f.value,
        };
        h.validate()?;
        Ok(h)
    }
}

impl Header {
    pub fn validate(&self) -> Result<(), String> {
        // RFC 9110 token characters.
        let token = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(format!(
                "header name {:?} is not a valid HTTP field name",
                self.name
            ));
        }
        check_secret_value(
            &format!("header {}", self.name),
            self.is_secret,
            self.value.as_ref(),
        )
    }
}

fn check_secret_value(what: &str, is_secret: bool, value: Option<&EnvValue>) -> Result<(), String> {
    if is_secret && matches!(value, Some(EnvValue::Literal(_))) {
        return Err(format!(
            "{what} is secret and holds a literal value. {SECRET_FORMS}"
        ));
    }
    Ok(())
}

/// How Warden reaches a server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Transport {
    /// Warden starts the server as a child process and speaks MCP over its stdin/stdout.
    Stdio {
        command: String,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        env: Vec<EnvVar>,
    },
    /// The current MCP HTTP transport.
    StreamableHttp {
        url: String,
        #[serde(default)]
        headers: Vec<Header>,
    },
    /// The legacy HTTP+SSE transport (MCP 2024-11-05). Kept apart from Streamable HTTP
    /// because a client must speak a different protocol to it.
    Sse {
        url: String,
        #[serde(default)]
        headers: Vec<Header>,
    },
}

impl Transport {
    pub fn kind(&self) -> &'static str {
        match self {
            Transport::Stdio { .. } => "stdio",
            Transport::StreamableHttp { .. } => "streamable_http",
            Transport::Sse { .. } => "sse",
        }
    }

    /// The URL of an HTTP transport.
    pub fn url(&self) -> Option<&str> {
        match self {
            Transport::Stdio { .. } => None,
            Transport::StreamableHttp { url, .. } | Transport::Sse { url, .. } => Some(url),
        }
    }

    /// Checks what deserialization does not: a command to run, an http(s) URL, and every
    /// variable and header.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Transport::Stdio { command, env, .. } => {
                if command.trim().is_empty() {
                    return Err("stdio transport has an empty command".into());
                }
                env.iter().try_for_each(EnvVar::validate)
            }
            Transport::StreamableHttp { url, headers } | Transport::Sse { url, headers } => {
                check_http_url(url)?;
                headers.iter().try_for_each(Header::validate)
            }
        }
    }
}

/// Accepts `http://host…` and `https://host…`. `{variables}` of URL templates are allowed.
pub fn check_http_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("URL {url:?} must start with http:// or https://"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("URL {url:?} has no host"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("URL {url:?} contains whitespace"));
    }
    Ok(())
}

// --- Servers, tools, agents ----------------------------------------------------------------

/// What to do when an approved tool's definition no longer matches its pin.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PinPolicy {
    /// The tool goes back to `pending_review`: hidden from agents and refused until approved
    /// again. The safe default: a definition changed behind the approver's back is exactly
    /// what a rug pull looks like.
    #[default]
    Block,
    /// The change is recorded and reported, and the tool stays usable.
    Warn,
}

/// A package the server is distributed as (from `server.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Package {
    /// `npm`, `pypi`, `oci`, `nuget`, `mcpb`, …
    pub registry_type: String,
    pub identifier: String,
    pub version: Option<String>,
    /// SHA-256 of the package file, where the publisher gave one.
    pub file_sha256: Option<String>,
}

/// Where a server comes from: enough for a reviewer to inspect the code that runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Source {
    pub repository_url: Option<String>,
    /// Hosting service (`github`, `gitlab`, …).
    pub repository_source: Option<String>,
    pub package: Option<Package>,
}

/// An MCP server in the registry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolServer {
    pub name: ServerName,
    /// The prefix agents see on its tools (`<alias>__<tool>`); unique in the tenant.
    pub alias: String,
    pub title: Option<String>,
    pub description: String,
    pub version: String,
    pub owner: Option<Owner>,
    pub source: Source,
    /// How to reach it; unset for a server that is catalogued but not connected.
    pub transport: Option<Transport>,
    pub state: State,
    pub scopes: Vec<ScopeEntry>,
    pub pin_policy: PinPolicy,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

impl ToolServer {
    /// Checks the parts whose types do not already guarantee them: the alias and the
    /// transport.
    pub fn validate(&self) -> Result<(), String> {
        validate_alias(&self.alias)?;
        if let Some(t) = &self.transport {
            t.validate()?;
        }
        Ok(())
    }
}

/// The MCP tool annotations: hints the server gives about its tool. They are the server's
/// claims, not facts, which is why Warden's own `risk` and `categories` sit beside them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolAnnotations {
    pub read_only_hint: Option<bool>,
    pub destructive_hint: Option<bool>,
    pub idempotent_hint: Option<bool>,
    pub open_world_hint: Option<bool>,
    pub title: Option<String>,
}

impl ToolAnnotations {
    /// Reads MCP's `annotations` object (`readOnlyHint`, …). Anything else in it is ignored
    /// here; the pin keeps the whole object.
    pub fn from_mcp(v: Option<&Value>) -> Self {
        let get = |k: &str| v.and_then(|v| v.get(k)).and_then(Value::as_bool);
        ToolAnnotations {
            read_only_hint: get("readOnlyHint"),
            destructive_hint: get("destructiveHint"),
            idempotent_hint: get("idempotentHint"),
            open_world_hint: get("openWorldHint"),
            title: v
                .and_then(|v| v.get("title"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    }
}

/// A tool of a registered server: what the server says about it, and what Warden decided.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tool {
    pub server: ServerName,
    /// The name the server lists it under.
    pub name: String,
    pub title: Option<String>,
    pub description: Option<String>,
    #[schema(value_type = Object)]
    pub input_schema: Value,
    #[schema(value_type = Option<Object>)]
    pub output_schema: Option<Value>,
    pub annotations: ToolAnnotations,
    /// Confirmed by a person; `None` until then (the proposal may suggest one).
    pub risk: Option<RiskLevel>,
    pub categories: BTreeSet<Category>,
    pub classification: Option<Classification>,
    pub owner: Option<Owner>,
    pub notes: Option<String>,
    /// What Warden proposed from annotations and names, kept until a person confirms.
    pub proposal: Option<Proposal>,
    pub state: State,
    pub scopes: Vec<ScopeEntry>,
    /// The definition as it was approved.
    pub pin: Option<Pin>,
}

impl Tool {
    /// A newly discovered tool: `pending_review`, with a proposal but no confirmed metadata.
    pub fn discovered(server: ServerName, def: &crate::pin::ToolDefinition) -> Tool {
        let annotations = ToolAnnotations::from_mcp(def.annotations.as_ref());
        Tool {
            server,
            name: def.name.clone(),
            title: annotations.title.clone(),
            description: def.description.clone(),
            input_schema: def.input_schema.clone(),
            output_schema: def.output_schema.clone(),
            annotations,
            risk: None,
            categories: BTreeSet::new(),
            classification: None,
            owner: None,
            notes: None,
            proposal: Some(crate::propose::propose(def)),
            state: State::PendingReview,
            scopes: Vec::new(),
            pin: None,
        }
    }
}

/// An agent in the catalog. Agents have no lifecycle state: where they may act is decided by
/// their namespace scopes (enabled at a group, blocked at a project).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Agent {
    /// The name agent tokens carry (`Agent::"<name>"` in policies).
    pub name: String,
    pub owner: Owner,
    pub description: Option<String>,
    pub version: Option<String>,
    /// Models it may use (`claude-sonnet-4-5`, …).
    pub models: Vec<String>,
    pub scopes: Vec<ScopeEntry>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_names_follow_the_registry_pattern() {
        for ok in [
            "io.github.acme/deploy",
            "com.example/x",
            "a/b",
            "io.github.user/my_server-2.0",
        ] {
            assert!(ServerName::parse(ok).is_ok(), "{ok} refused");
        }
        for bad in [
            "",
            "ab",
            "deploy",
            "io.github.acme/",
            "/deploy",
            "io.github.acme/a/b",
            "io_github/x",
            "io.github.acme/de ploy",
            "io.github.acme/dé",
        ] {
            assert!(ServerName::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("a/{}", "b".repeat(198));
        assert_eq!(long.len(), 200);
        assert!(ServerName::parse(&long).is_ok());
        assert!(ServerName::parse(&format!("{long}c")).is_err());
        let n = ServerName::parse("io.github.acme/deploy").unwrap();
        assert_eq!(
            (n.namespace(), n.short_name()),
            ("io.github.acme", "deploy")
        );
    }

    #[test]
    fn alias_is_a_usable_gateway_prefix() {
        let alias = |s: &str| ServerName::parse(s).unwrap().alias();
        assert_eq!(alias("io.github.acme/deploy"), "deploy");
        assert_eq!(alias("io.github.acme/GitHub.MCP"), "github-mcp");
        assert_eq!(alias("io.github.acme/a__b___c"), "a_b_c");
        assert_eq!(alias("io.github.acme/_x_"), "x");
        assert_eq!(alias("io.github.acme/..."), "server");
        assert_eq!(alias(&format!("a/{}", "x".repeat(100))).len(), 64);
        for s in [
            "io.github.acme/deploy",
            "io.github.acme/GitHub.MCP",
            "io.github.acme/a__b___c",
            "io.github.acme/-_-",
            "io.github.acme/x_______________________________________________________________-y",
        ] {
            let a = alias(s);
            assert!(validate_alias(&a).is_ok(), "{s} -> {a}");
        }
        assert!(validate_alias("a__b").is_err());
        assert!(validate_alias("_a").is_err());
        assert!(validate_alias("A").is_err());
        assert!(validate_alias("a/b").is_err());
    }

    #[test]
    fn owners_are_users_or_teams() {
        assert_eq!(Owner::parse(" alice ").unwrap().as_str(), "alice");
        assert_eq!(
            Owner::parse("team:platform").unwrap().team(),
            Some("platform")
        );
        assert!(Owner::parse("").is_err());
        assert!(Owner::parse("   ").is_err());
        assert!(Owner::parse("team:").is_err());
        assert!(serde_json::from_value::<Owner>(json!("")).is_err());
    }

    #[test]
    fn secret_refs_accept_only_the_two_forms_and_never_echo_the_value() {
        assert_eq!(
            SecretRef::parse("env:GITHUB_TOKEN").unwrap(),
            SecretRef::Env("GITHUB_TOKEN".into())
        );
        assert_eq!(
            SecretRef::parse("file:/run/secrets/gh").unwrap(),
            SecretRef::File("/run/secrets/gh".into())
        );
        for bad in [
            "ghp_abcdef0123456789",
            "env:",
            "env:1BAD",
            "env:A-B",
            "file:relative/path",
            "file:/a/../etc/shadow",
            "vault:kv/x",
        ] {
            let e = SecretRef::parse(bad).unwrap_err();
            assert!(e.contains("env:NAME") && e.contains("file:/"), "{e}");
            assert!(e.contains("may not be stored"), "{e}");
            if !bad.starts_with("env:") && !bad.starts_with("file:") {
                assert!(!e.contains(bad), "error repeats the value: {e}");
            }
        }
        let r = SecretRef::parse("env:X").unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap(), json!("env:X"));
        assert_eq!(
            serde_json::from_value::<SecretRef>(json!("env:X")).unwrap(),
            r
        );
    }

    #[test]
    fn a_secret_variable_or_header_refuses_a_literal_value() {
        let ok: EnvVar = serde_json::from_value(json!({
            "name": "GITHUB_TOKEN", "is_secret": true, "value": {"secret": "env:GH_TOKEN"}
        }))
        .unwrap();
        assert_eq!(
            ok.value,
            Some(EnvValue::Secret(SecretRef::Env("GH_TOKEN".into())))
        );
        let e = serde_json::from_value::<EnvVar>(json!({
            "name": "GITHUB_TOKEN", "is_secret": true, "value": {"literal": "ghp_x"}
        }))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("may not be stored") && !e.contains("ghp_x"),
            "{e}"
        );
        let e = serde_json::from_value::<EnvVar>(json!({
            "name": "GITHUB_TOKEN", "is_secret": true, "value": {"secret": "ghp_x"}
        }))
        .unwrap_err()
        .to_string();
        assert!(e.contains("env:NAME"), "{e}");
        let plain: EnvVar = serde_json::from_value(json!({
            "name": "LOG_LEVEL", "value": {"literal": "debug"}
        }))
        .unwrap();
        assert!(!plain.is_secret && plain.validate().is_ok());

        assert!(
            serde_json::from_value::<Header>(json!({
                "name": "Authorization", "is_secret": true, "value": {"literal": "Bearer x"}
            }))
            .is_err()
        );
        assert!(
            serde_json::from_value::<Header>(json!({
                "name": "Authorization", "is_secret": true, "value": {"secret": "file:/run/tok"}
            }))
            .is_ok()
        );
        assert!(serde_json::from_value::<Header>(json!({"name": "Bad Header"})).is_err());
    }

    #[test]
    fn transports_round_trip_and_validate() {
        let t = Transport::Stdio {
            command: "npx".into(),
            args: vec!["-y".into(), "@acme/deploy@1.2.3".into()],
            env: vec![EnvVar {
                name: "TOKEN".into(),
                description: None,
                is_required: true,
                is_secret: true,
                value: Some(EnvValue::Secret(SecretRef::Env("ACME_TOKEN".into()))),
            }],
        };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["type"], "stdio");
        assert_eq!(v["env"][0]["value"], json!({"secret": "env:ACME_TOKEN"}));
        assert_eq!(serde_json::from_value::<Transport>(v).unwrap(), t);
        assert!(t.validate().is_ok());

        let sse: Transport =
            serde_json::from_value(json!({"type": "sse", "url": "https://x.example/sse"})).unwrap();
        assert_eq!(sse.kind(), "sse");
        assert!(sse.validate().is_ok());
        let bad = Transport::StreamableHttp {
            url: "ftp://x".into(),
            headers: vec![],
        };
        assert!(bad.validate().is_err());
        assert!(check_http_url("https://{tenant}.example.com/mcp").is_ok());
        assert!(check_http_url("https://").is_err());
    }

    #[test]
    fn enums_are_snake_case_and_risk_is_ordered() {
        assert!(RiskLevel::Low < RiskLevel::Medium);
        assert!(RiskLevel::High < RiskLevel::Critical);
        assert_eq!(
            serde_json::to_value(State::PendingReview).unwrap(),
            json!("pending_review")
        );
        assert_eq!(serde_json::to_value(Category::Pii).unwrap(), json!("pii"));
        assert_eq!(
            serde_json::to_value(Classification::Confidential).unwrap(),
            json!("confidential")
        );
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
        }
        for c in Category::ALL {
            assert_eq!(Category::parse(c.as_str()), Some(c));
        }
        for r in RiskLevel::ALL {
            assert_eq!(RiskLevel::parse(r.as_str()), Some(r));
        }
        assert_eq!(PinPolicy::default(), PinPolicy::Block);
    }

    #[test]
    fn discovered_tools_await_review_with_a_proposal() {
        let def = crate::pin::ToolDefinition::from_mcp(&json!({
            "name": "delete_branch",
            "description": "Deletes a branch",
            "inputSchema": {"type": "object"},
            "annotations": {"destructiveHint": true, "title": "Delete branch"}
        }))
        .unwrap();
        let t = Tool::discovered(ServerName::parse("io.github.acme/git").unwrap(), &def);
        assert_eq!(t.state, State::PendingReview);
        assert_eq!(t.title.as_deref(), Some("Delete branch"));
        assert_eq!(t.annotations.destructive_hint, Some(true));
        assert!(t.risk.is_none() && t.categories.is_empty());
        let p = t.proposal.unwrap();
        assert!(p.proposed && p.categories.contains(&Category::Delete));
    }
}
