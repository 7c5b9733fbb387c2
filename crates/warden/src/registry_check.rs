//! `warden policy validate DIR --server URL --token T`: the entities policies name, checked
//! against the tenant's registry on a running server. Cedar's schema knows entity types, not
//! entities: `Tool::"githb__get_file_contents"` validates, and the policy then silently never
//! matches anything. Here every `Tool::"…"`, `ToolServer::"…"` and `Agent::"…"` literal (in a
//! scope, a condition or a set) must name an entity the tenant's registry knows, and one the
//! registry blocks where the policy applies is reported, because no call to it can ever be
//! allowed there.
//!
//! How the ids are formed is how the gateway forms them for decisions: a tool is
//! `Tool::"<server alias>__<tool name>"`, a server is `ToolServer::"<registry name>"` (or
//! `ToolServer::"<alias>"`, the name the gateway gives it), an agent is `Agent::"<name>"`.
//!
//! The registry is read over the REST API (`GET /api/v1/registry/servers`, `…/tools`,
//! `…/agents`, every page), with any token that may read it: `auditor`, `approver`,
//! `policy_admin` or `admin` of the tenant, not confined to a namespace. The token says which
//! tenant; the directory may hold others, whose policies are then not checked.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use clap::Args;
use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use warden_core::NamespacePath;
use warden_policy::EntityLiteral;
use warden_registry::Effective;
use warden_registry::model::{ScopeEntry, State};
use warden_registry::scope;

/// The environment variable the token is read from when `--token` is not given.
const TOKEN_ENV: &str = "WARDEN_TOKEN";
/// Records per page asked for (the API's default; pages are followed to the end).
const PAGE: u32 = 100;
/// Longest wait for one answer.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Where the registry to check against is. Without `--server`, validation is offline.
#[derive(Args, Debug, Clone, Default)]
pub struct RegistryArgs {
    /// Also check the entities the policies name (`Tool::"…"`, `ToolServer::"…"`,
    /// `Agent::"…"`) against the tenant's registry on this Warden server.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// With --server: a token of the tenant that may read its registry (`auditor`,
    /// `approver`, `policy_admin` or `admin`) [default: $WARDEN_TOKEN].
    #[arg(long, requires = "server")]
    pub token: Option<String>,
}

impl RegistryArgs {
    /// The server and token to check against; `None` for an offline validation. The
    /// environment's token is read only when `--server` asks for the check, so an exported
    /// `WARDEN_TOKEN` does not change what an offline validation does.
    pub fn target(&self) -> Result<Option<(String, String)>, String> {
        let Some(server) = &self.server else {
            return Ok(None);
        };
        let server = server.trim_end_matches('/').to_owned();
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(format!(
                "--server must be an http:// or https:// URL, not {server:?}"
            ));
        }
        let token = match &self.token {
            Some(t) => t.clone(),
            None => std::env::var(TOKEN_ENV)
                .ok()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    format!(
                        "--server needs a token: --token or the {TOKEN_ENV} environment variable"
                    )
                })?,
        };
        Ok(Some((server, token)))
    }
}

/// What is wrong with a literal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The registry does not know the entity: an error.
    Unknown,
    /// The registry blocks it wherever the policy applies: a warning.
    Blocked,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Unknown => "unknown_entity",
            Kind::Blocked => "blocked_entity",
        }
    }
}

pub struct Finding {
    pub literal: EntityLiteral,
    pub kind: Kind,
    pub message: String,
}

/// The outcome of a check.
pub struct Report {
    pub server: String,
    /// The token's tenant; `None` when the directory holds no policies to check.
    pub tenant: Option<String>,
    /// Literals of registry entities that were checked.
    pub checked: usize,
    pub findings: Vec<Finding>,
    /// Tenants of the directory whose policies were not checked (the token is another's).
    pub unchecked_tenants: Vec<String>,
}

/// Checks the `Tool`, `ToolServer` and `Agent` literals of the token's tenant against its
/// registry on `server`. `tenants` are those the directory holds policies for. `Err` when the
/// check could not be made (server unreachable, token refused, token of none of `tenants`).
pub fn check(
    server: &str,
    token: &str,
    tenants: &BTreeSet<String>,
    literals: &[EntityLiteral],
) -> Result<Report, String> {
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(async {
            let client = Client::new(server, token)?;
            // Reachable, the token valid and allowed to read: otherwise stop here, clearly.
            let _: Value = client
                .get("/servers", &[("limit", "1".to_owned())])
                .await?
                .ok_or_else(|| client.no_registry_api())?;
            if tenants.is_empty() {
                return Ok(Report {
                    server: server.to_owned(),
                    tenant: None,
                    checked: 0,
                    findings: Vec::new(),
                    unchecked_tenants: Vec::new(),
                });
            }
            let tenant = client.token_tenant(tenants).await?;
            let registry = Registry::fetch(&client).await?;
            let mut checked = 0;
            let mut findings = Vec::new();
            for l in literals.iter().filter(|l| tenant_of(l) == tenant) {
                if let Some(outcome) = registry.judge(l) {
                    checked += 1;
                    if let Some((kind, why)) = outcome {
                        let message = match kind {
                            Kind::Unknown => format!(
                                "unknown {} {:?} (not in the registry of tenant {tenant} on {server})",
                                l.entity_type, l.id
                            ),
                            Kind::Blocked => format!(
                                "{} {:?} {why} (registry of tenant {tenant} on {server})",
                                l.entity_type, l.id
                            ),
                        };
                        findings.push(Finding {
                            literal: l.clone(),
                            kind,
                            message,
                        });
                    }
                }
            }
            Ok(Report {
                server: server.to_owned(),
                unchecked_tenants: tenants.iter().filter(|t| **t != tenant).cloned().collect(),
                tenant: Some(tenant),
                checked,
                findings,
            })
        })
    })
}

fn tenant_of(l: &EntityLiteral) -> &str {
    l.namespace.split('/').next().unwrap_or_default()
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(base: &str, token: &str) -> Result<Client, String> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        Ok(Client {
            http,
            base: base.to_owned(),
            token: token.to_owned(),
        })
    }

    /// `GET /api/v1/registry{path}`: `Ok(None)` for a 404 (asked about something that is not
    /// the token's), `Err` for anything else that is not an answer.
    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Option<T>, String> {
        let url = format!("{}/api/v1/registry{path}", self.base);
        let with_query = reqwest::Url::parse_with_params(&url, query)
            .map_err(|e| format!("{url} is not a usable URL: {e}"))?;
        let response = self
            .http
            .get(with_query)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let detail = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["detail"].as_str().map(str::to_owned))
                .unwrap_or_else(|| body.chars().take(300).collect());
            return Err(match status {
                StatusCode::UNAUTHORIZED => format!(
                    "the Warden server at {} refused the token (unknown, expired or revoked): {detail}",
                    self.base
                ),
                StatusCode::FORBIDDEN => format!(
                    "the Warden server at {} does not let this token read the registry: {detail} \
                     (use a token of the tenant with role auditor, approver, policy_admin or admin, \
                     not confined to a namespace)",
                    self.base
                ),
                s => format!("the Warden server at {} answered {s}: {detail}", self.base),
            });
        }
        serde_json::from_str(&body).map(Some).map_err(|e| {
            format!(
                "the answer of the Warden server at {} to GET {url} could not be read: {e}",
                self.base
            )
        })
    }

    fn no_registry_api(&self) -> String {
        format!(
            "the Warden server at {} has no registry API (GET /api/v1/registry/servers answered 404)",
            self.base
        )
    }

    fn unreachable(&self, e: &reqwest::Error) -> String {
        if e.is_timeout() {
            return format!(
                "cannot reach the Warden server at {}: no answer within {TIMEOUT:?}",
                self.base
            );
        }
        // reqwest's own message names only the URL; the cause (refused, DNS, TLS) is below.
        let mut cause = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            cause = s.to_string();
            source = s.source();
        }
        format!("cannot reach the Warden server at {}: {cause}", self.base)
    }

    /// Which of `tenants` the token belongs to. The API has no "who am I": a namespace of
    /// another tenant is not found (404), its own is answered.
    async fn token_tenant(&self, tenants: &BTreeSet<String>) -> Result<String, String> {
        for t in tenants {
            let answer: Option<Value> = self
                .get(
                    "/servers",
                    &[("limit", "1".to_owned()), ("namespace", t.clone())],
                )
                .await?;
            if answer.is_some() {
                return Ok(t.clone());
            }
        }
        let listed = tenants.iter().cloned().collect::<Vec<_>>().join(", ");
        Err(format!(
            "the token is not one of tenant {listed}, whose policies the directory holds: \
             use a token of the tenant whose policies are to be checked"
        ))
    }

    /// Every record of a list, page after page.
    async fn all<T: DeserializeOwned>(&self, path: &str, key: &str) -> Result<Vec<T>, String> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("limit", PAGE.to_string())];
            if let Some(c) = &cursor {
                query.push(("cursor", c.clone()));
            }
            let mut page: Value = self
                .get(path, &query)
                .await?
                .ok_or_else(|| self.no_registry_api())?;
            let items = serde_json::from_value::<Vec<T>>(page[key].take()).map_err(|e| {
                format!(
                    "the list of {key} of the Warden server at {} could not be read: {e}",
                    self.base
                )
            })?;
            out.extend(items);
            match page["next_cursor"].as_str() {
                Some(next) if cursor.as_deref() != Some(next) => cursor = Some(next.to_owned()),
                _ => return Ok(out),
            }
        }
    }
}

// What the check needs of each record; the rest of the record is ignored.

#[derive(Deserialize)]
struct ServerRecord {
    name: String,
    alias: String,
    state: State,
    #[serde(default)]
    scopes: Vec<ScopeEntry>,
}

#[derive(Deserialize)]
struct ToolRecord {
    server: String,
    name: String,
    state: State,
    #[serde(default)]
    scopes: Vec<ScopeEntry>,
}

#[derive(Deserialize)]
struct AgentRecord {
    name: String,
    #[serde(default)]
    scopes: Vec<ScopeEntry>,
}

/// The tenant's registry as the check reads it.
struct Registry {
    servers: HashMap<String, ServerRecord>,
    /// Alias → registry name.
    aliases: HashMap<String, String>,
    /// (server name, tool name) → tool.
    tools: HashMap<(String, String), ToolRecord>,
    agents: HashMap<String, AgentRecord>,
}

/// What a check of one literal found: `None` fine, else the kind and (for a block) why.
type Outcome = Option<(Kind, String)>;

impl Registry {
    async fn fetch(client: &Client) -> Result<Registry, String> {
        let servers: Vec<ServerRecord> = client.all("/servers", "servers").await?;
        let tools: Vec<ToolRecord> = client.all("/tools", "tools").await?;
        let agents: Vec<AgentRecord> = client.all("/agents", "agents").await?;
        Ok(Registry {
            aliases: servers
                .iter()
                .map(|s| (s.alias.clone(), s.name.clone()))
                .collect(),
            servers: servers.into_iter().map(|s| (s.name.clone(), s)).collect(),
            tools: tools
                .into_iter()
                .map(|t| ((t.server.clone(), t.name.clone()), t))
                .collect(),
            agents: agents.into_iter().map(|a| (a.name.clone(), a)).collect(),
        })
    }

    fn server(&self, name_or_alias: &str) -> Option<&ServerRecord> {
        self.servers.get(name_or_alias).or_else(|| {
            self.aliases
                .get(name_or_alias)
                .and_then(|n| self.servers.get(n))
        })
    }

    /// `None` for a literal that does not name a registry entity (`Action::"…"`,
    /// `Namespace::"…"`, …); otherwise what its check found.
    fn judge(&self, l: &EntityLiteral) -> Option<Outcome> {
        let unknown = Some((Kind::Unknown, String::new()));
        // The policy applies in its namespace and below: a block there or above covers it.
        let ns = NamespacePath::parse(&l.namespace).ok();
        let blocked = |state: State, scopes: &[ScopeEntry]| {
            ns.as_ref()
                .and_then(|ns| match scope::effective(state, scopes, ns) {
                    Effective::Blocked { at } => Some(where_blocked(at, ns)),
                    _ => None,
                })
        };
        Some(match l.entity_type.as_str() {
            "Tool" => {
                // An alias has no "__" and does not end with '_': the first "__" separates.
                let found = l.id.split_once("__").and_then(|(alias, name)| {
                    let server = self.servers.get(self.aliases.get(alias)?)?;
                    let tool = self.tools.get(&(server.name.clone(), name.to_owned()))?;
                    Some((server, tool))
                });
                match found {
                    None => unknown,
                    Some((server, tool)) => blocked(tool.state, &tool.scopes)
                        .map(|at| format!("can never be called: it is blocked{at}"))
                        .or_else(|| {
                            blocked(server.state, &server.scopes).map(|at| {
                                format!(
                                    "can never be called: its server {} is blocked{at}",
                                    server.name
                                )
                            })
                        })
                        .map(|why| (Kind::Blocked, why)),
                }
            }
            "ToolServer" => match self.server(&l.id) {
                None => unknown,
                Some(s) => blocked(s.state, &s.scopes).map(|at| {
                    (
                        Kind::Blocked,
                        format!("can never be called: it is blocked{at}"),
                    )
                }),
            },
            "Agent" => match self.agents.get(&l.id) {
                None => unknown,
                // Agents have no lifecycle state: only their scopes can block them.
                Some(a) => blocked(State::Approved, &a.scopes)
                    .map(|at| (Kind::Blocked, format!("can never act: it is blocked{at}"))),
            },
            _ => return None,
        })
    }
}

/// ` at acme/platform, which covers acme/platform/api` for a block by scope; nothing for a
/// block everywhere.
fn where_blocked(at: Option<String>, ns: &NamespacePath) -> String {
    match at {
        Some(at) if at == ns.as_str() => format!(" at {at}, the policy's namespace"),
        Some(at) => format!(" at {at}, which covers the policy's namespace {ns}"),
        None => String::new(),
    }
}
