//! The upstream servers and what they offer: tool, prompt and resource listings fetched
//! from each server (every page), cached until the server says its list changed, and the
//! names agents see for them.
//!
//! Naming: on `/mcp` a tool or prompt `t` of server `s` is `s__t` (server names may not
//! contain `__`; tool names may, so the split is at the first `__`). The names stay stable
//! when servers are added or removed. On `/mcp/{server}` names are the server's own.
//! Resources keep their URIs; the gateway remembers which server listed which URI.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::{Value, json};
use tokio::sync::Mutex;

use warden_core::TenantId;

use crate::config::NAME_SEPARATOR;
use crate::jsonrpc::{RpcError, code};
use crate::upstream::{Upstream, UpstreamConfig, UpstreamError};

/// The listings a server can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Listing {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl Listing {
    pub fn method(self) -> &'static str {
        match self {
            Listing::Tools => "tools/list",
            Listing::Prompts => "prompts/list",
            Listing::Resources => "resources/list",
            Listing::ResourceTemplates => "resources/templates/list",
        }
    }

    /// The member of the result holding the items.
    pub fn key(self) -> &'static str {
        match self {
            Listing::Tools => "tools",
            Listing::Prompts => "prompts",
            Listing::Resources => "resources",
            Listing::ResourceTemplates => "resourceTemplates",
        }
    }

    /// The server capability that announces it.
    pub fn capability(self) -> &'static str {
        match self {
            Listing::Tools => "tools",
            Listing::Prompts => "prompts",
            Listing::Resources | Listing::ResourceTemplates => "resources",
        }
    }

    pub fn changed_notification(self) -> Option<&'static str> {
        match self {
            Listing::Tools => Some("notifications/tools/list_changed"),
            Listing::Prompts => Some("notifications/prompts/list_changed"),
            Listing::Resources => Some("notifications/resources/list_changed"),
            Listing::ResourceTemplates => None,
        }
    }
}

/// Most pages fetched from one server for one listing: a server that keeps returning
/// cursors is broken, not large.
const MAX_PAGES: usize = 1000;

/// Pin digests of a listing's tools, by tool name.
pub type Digests = Arc<HashMap<String, String>>;

pub struct Server {
    pub config: UpstreamConfig,
    /// `None`: a server of the configuration file, shared by every tenant. `Some`: a
    /// server from that tenant's registry, which only its agents see.
    pub tenant: Option<TenantId>,
    pub upstream: Arc<dyn Upstream>,
    cache: Mutex<HashMap<Listing, Arc<Vec<Value>>>>,
    /// Pin digests of the tools of one tools listing, computed once per listing: every call
    /// compares the called tool with its pin, and hashing the canonical definition each time
    /// would cost more than the decision.
    digests: std::sync::Mutex<Option<(Arc<Vec<Value>>, Digests)>>,
}

impl Server {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Unique among all servers: the name, prefixed by the tenant for a tenant's own.
    pub fn key(&self) -> String {
        match &self.tenant {
            None => self.config.name.clone(),
            Some(t) => format!("{t}/{}", self.config.name),
        }
    }

    /// Whether an agent of `tenant` sees the server.
    pub fn visible_to(&self, tenant: &TenantId) -> bool {
        self.tenant.as_ref().is_none_or(|t| t == tenant)
    }

    /// Whether the server announced the capability for a listing (assumed when it has not
    /// initialised yet, so that the first call finds out).
    pub fn offers(&self, listing: Listing) -> bool {
        match self.upstream.server_info() {
            Some(info) => info
                .capabilities
                .get(listing.capability())
                .is_some_and(|v| !v.is_null()),
            None => true,
        }
    }

    /// Every item of a listing, all pages, from the cache when it is fresh.
    pub async fn list(&self, listing: Listing) -> Result<Arc<Vec<Value>>, RpcError> {
        let mut cache = self.cache.lock().await;
        if let Some(items) = cache.get(&listing) {
            return Ok(items.clone());
        }
        if !self.offers(listing) {
            return Ok(Arc::new(Vec::new()));
        }
        let mut items = Vec::new();
        let mut cursor: Option<Value> = None;
        for _ in 0..MAX_PAGES {
            let params = cursor.take().map(|c| json!({ "cursor": c }));
            let result = self
                .upstream
                .call(listing.method(), params, None)
                .await
                .map_err(|e| upstream_error(&e))?
                .map_err(|e| {
                    RpcError::new(
                        code::UPSTREAM_UNAVAILABLE,
                        format!(
                            "{} of {} failed: {}",
                            listing.method(),
                            self.name(),
                            e.message
                        ),
                    )
                })?;
            match result.get(listing.key()) {
                Some(Value::Array(page)) => items.extend(page.iter().cloned()),
                _ => {
                    return Err(RpcError::new(
                        code::UPSTREAM_UNAVAILABLE,
                        format!(
                            "{} of {} returned no `{}` array",
                            listing.method(),
                            self.name(),
                            listing.key()
                        ),
                    ));
                }
            }
            match result.get("nextCursor") {
                Some(c) if !c.is_null() => cursor = Some(c.clone()),
                _ => {
                    let items = Arc::new(items);
                    cache.insert(listing, items.clone());
                    return Ok(items);
                }
            }
        }
        Err(RpcError::new(
            code::UPSTREAM_UNAVAILABLE,
            format!(
                "{} of {} did not end after {MAX_PAGES} pages",
                listing.method(),
                self.name()
            ),
        ))
    }

    /// The pin digest of each tool of `tools` (a listing this server returned), by name.
    pub fn digests(&self, tools: &Arc<Vec<Value>>) -> Digests {
        let mut memo = self.digests.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((listing, digests)) = memo.as_ref()
            && Arc::ptr_eq(listing, tools)
        {
            return digests.clone();
        }
        let digests: Digests = Arc::new(
            tools
                .iter()
                .filter_map(|t| {
                    let d = warden_registry::ToolDefinition::from_mcp(t).ok()?;
                    Some((d.name.clone(), warden_registry::pin::digest(&d)))
                })
                .collect(),
        );
        *memo = Some((tools.clone(), digests.clone()));
        digests
    }

    pub async fn invalidate(&self, listing: Listing) {
        self.cache.lock().await.remove(&listing);
    }

    pub async fn invalidate_all(&self) {
        self.cache.lock().await.clear();
    }

    /// A tool's definition by its upstream name, if the server lists it. A name missing
    /// from the cached list is looked up once more in a fresh list: the server may have
    /// added it since (its `list_changed` can still be on the way).
    pub async fn tool(&self, name: &str) -> Result<Option<Value>, RpcError> {
        let find = |tools: &[Value]| {
            tools
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some(name))
                .cloned()
        };
        if let Some(t) = find(&self.list(Listing::Tools).await?) {
            return Ok(Some(t));
        }
        self.invalidate(Listing::Tools).await;
        Ok(find(&self.list(Listing::Tools).await?))
    }
}

pub fn upstream_error(e: &UpstreamError) -> RpcError {
    RpcError::new(code::UPSTREAM_UNAVAILABLE, e.to_string())
}

/// All upstream servers.
#[derive(Default)]
pub struct Catalog {
    servers: RwLock<Vec<Arc<Server>>>,
    /// Which server listed a resource URI (for `resources/read` and subscriptions).
    resource_owners: RwLock<HashMap<String, String>>,
}

impl Catalog {
    /// Adds (or replaces) a server; `tenant` as in [`Server::tenant`].
    pub fn add(
        &self,
        tenant: Option<TenantId>,
        config: UpstreamConfig,
        upstream: Arc<dyn Upstream>,
    ) -> Arc<Server> {
        let server = Arc::new(Server {
            config,
            tenant,
            upstream,
            cache: Mutex::new(HashMap::new()),
            digests: std::sync::Mutex::new(None),
        });
        let mut servers = self.servers.write().unwrap_or_else(|e| e.into_inner());
        let key = server.key();
        servers.retain(|s| s.key() != key);
        servers.push(server.clone());
        servers.sort_by_key(|s| s.key());
        server
    }

    /// Takes a server out (its connection is the caller's to shut down).
    pub fn remove(&self, key: &str) -> Option<Arc<Server>> {
        let mut servers = self.servers.write().unwrap_or_else(|e| e.into_inner());
        let at = servers.iter().position(|s| s.key() == key)?;
        Some(servers.remove(at))
    }

    /// A server by its key ([`Server::key`]).
    pub fn by_key(&self, key: &str) -> Option<Arc<Server>> {
        self.all().into_iter().find(|s| s.key() == key)
    }

    /// The server an agent of `tenant` knows by `name`: the configuration file's, else the
    /// tenant's own.
    pub fn get(&self, tenant: &TenantId, name: &str) -> Option<Arc<Server>> {
        let all = self.all();
        let mut named = all
            .into_iter()
            .filter(|s| s.name() == name && s.visible_to(tenant));
        let first = named.next()?;
        Some(match first.tenant {
            None => first,
            Some(_) => named.find(|s| s.tenant.is_none()).unwrap_or(first),
        })
    }

    pub fn all(&self) -> Vec<Arc<Server>> {
        self.servers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The servers a session of `tenant` sees: all those visible to it, or the one it is
    /// confined to. A tenant's own server never shadows a configured one of the same name.
    pub fn in_scope(&self, tenant: &TenantId, scope: Option<&str>) -> Vec<Arc<Server>> {
        match scope {
            Some(name) => self.get(tenant, name).into_iter().collect(),
            None => {
                let all = self.all();
                let shared: std::collections::HashSet<String> = all
                    .iter()
                    .filter(|s| s.tenant.is_none())
                    .map(|s| s.name().to_owned())
                    .collect();
                all.into_iter()
                    .filter(|s| {
                        s.tenant.is_none() || (s.visible_to(tenant) && !shared.contains(s.name()))
                    })
                    .collect()
            }
        }
    }

    /// Splits an agent-facing name into server and upstream name.
    pub fn resolve(
        &self,
        tenant: &TenantId,
        scope: Option<&str>,
        exposed: &str,
    ) -> Option<(Arc<Server>, String)> {
        match scope {
            Some(name) => Some((self.get(tenant, name)?, exposed.to_owned())),
            None => {
                let (server, name) = exposed.split_once(NAME_SEPARATOR)?;
                if name.is_empty() {
                    return None;
                }
                Some((self.get(tenant, server)?, name.to_owned()))
            }
        }
    }

    /// Remembers which server (by key) listed which resource URIs.
    pub fn note_resources(&self, server: &str, uris: impl Iterator<Item = String>) {
        let mut owners = self
            .resource_owners
            .write()
            .unwrap_or_else(|e| e.into_inner());
        for uri in uris {
            owners.insert(uri, server.to_owned());
        }
    }

    /// The server that owns a resource URI: the one that listed it, or one whose resource
    /// template's fixed prefix it starts with, or the only server in scope.
    pub async fn resource_owner(
        &self,
        tenant: &TenantId,
        scope: Option<&str>,
        uri: &str,
    ) -> Option<Arc<Server>> {
        let servers = self.in_scope(tenant, scope);
        if servers.len() == 1 {
            return servers.into_iter().next();
        }
        let listed = self
            .resource_owners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(uri)
            .cloned();
        if let Some(key) = listed {
            return servers.into_iter().find(|s| s.key() == key);
        }
        for s in &servers {
            if let Ok(templates) = s.list(Listing::ResourceTemplates).await {
                let matches = templates.iter().any(|t| {
                    t.get("uriTemplate")
                        .and_then(Value::as_str)
                        .map(|tpl| tpl.split('{').next().unwrap_or(tpl))
                        .is_some_and(|prefix| !prefix.is_empty() && uri.starts_with(prefix))
                });
                if matches {
                    return Some(s.clone());
                }
            }
            if let Ok(resources) = s.list(Listing::Resources).await {
                let uris = resources
                    .iter()
                    .filter_map(|r| r.get("uri").and_then(Value::as_str).map(str::to_owned));
                self.note_resources(&s.key(), uris);
                if resources
                    .iter()
                    .any(|r| r.get("uri").and_then(Value::as_str) == Some(uri))
                {
                    return Some(s.clone());
                }
            }
        }
        None
    }
}

/// The name an agent sees for an item of `server`.
pub fn exposed_name(scope: Option<&str>, server: &str, name: &str) -> String {
    match scope {
        Some(_) => name.to_owned(),
        None => format!("{server}{NAME_SEPARATOR}{name}"),
    }
}
