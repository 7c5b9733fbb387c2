//! The gateway: upstream servers, sessions, and the handling of every MCP method an agent
//! may send. Transport-neutral: the Streamable HTTP endpoint ([`crate::http`]) and the stdio
//! wrapper ([`crate::stdio`]) both hand messages to [`Gateway::handle`].

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use warden_core::{ClientInfo, Error, TraceContext};

use crate::catalog::{Catalog, Listing, Server, exposed_name, upstream_error};
use crate::config::{GatewayConfig, PROTOCOL_VERSIONS};
use crate::events;
use crate::governor::{AgentIdentity, Governor};
use crate::jsonrpc::{Id, Message, Notification, Request, Response, RpcError, code};
use crate::metrics::GatewayMetrics;
use crate::session::{Session, Sessions};
use crate::upstream::{self, Health, UpstreamConfig};

pub struct Gateway {
    pub config: GatewayConfig,
    pub governor: Arc<dyn Governor>,
    pub catalog: Catalog,
    pub sessions: Sessions,
    pub metrics: GatewayMetrics,
    pub observer: crate::registry::Observer,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Why a session ended.
#[derive(Clone, Copy, Debug)]
pub enum EndReason {
    /// The client sent `DELETE` (or closed stdin).
    Closed,
    Idle,
    Shutdown,
}

impl EndReason {
    fn as_str(self) -> &'static str {
        match self {
            EndReason::Closed => "closed",
            EndReason::Idle => "idle",
            EndReason::Shutdown => "shutdown",
        }
    }
}

impl Gateway {
    /// Connects to every configured upstream (in the background) and starts the session
    /// reaper. Must run inside a Tokio runtime.
    pub fn start(config: GatewayConfig, governor: Arc<dyn Governor>) -> Arc<Gateway> {
        let upstreams = config.upstreams.clone();
        let gw = Arc::new(Gateway {
            config,
            governor,
            catalog: Catalog::default(),
            sessions: Sessions::default(),
            metrics: GatewayMetrics::default(),
            observer: Default::default(),
            tasks: std::sync::Mutex::new(Vec::new()),
        });
        for u in upstreams {
            gw.add_upstream(u);
        }
        let weak = Arc::downgrade(&gw);
        let reaper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(15));
            loop {
                tick.tick().await;
                let Some(gw) = weak.upgrade() else { return };
                for s in gw.sessions.take_idle(gw.config.session_idle_timeout) {
                    gw.end(&s, EndReason::Idle).await;
                }
            }
        });
        gw.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(reaper);
        gw
    }

    /// Adds (or replaces) an upstream server shared by every tenant.
    pub fn add_upstream(self: &Arc<Self>, config: UpstreamConfig) -> Arc<Server> {
        self.add_server(None, config)
    }

    /// Adds (or replaces) an upstream; `tenant` as in [`Server::tenant`].
    pub fn add_server(
        self: &Arc<Self>,
        tenant: Option<warden_core::TenantId>,
        config: UpstreamConfig,
    ) -> Arc<Server> {
        let upstream = upstream::connect(&config);
        let server = self.catalog.add(tenant, config, upstream);
        let mut notes = server.upstream.subscribe();
        let weak = Arc::downgrade(self);
        let name = server.key();
        let task = tokio::spawn(async move {
            loop {
                let n = match notes.recv().await {
                    Ok(n) => n,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                let Some(gw) = weak.upgrade() else { return };
                gw.on_upstream_notification(&name, n).await;
            }
        });
        let (requests, mut unrelated) = mpsc::channel::<upstream::ServerMessage>(16);
        server.upstream.serve_unrelated(requests);
        let weak = Arc::downgrade(self);
        let owner = Arc::downgrade(&server);
        let unrelated_task = tokio::spawn(async move {
            while let Some(message) = unrelated.recv().await {
                let upstream::ServerMessage::Request { request, mut reply } = message else {
                    continue;
                };
                let (Some(gw), Some(server)) = (weak.upgrade(), owner.upgrade()) else {
                    return;
                };
                tokio::spawn(async move {
                    let answer = tokio::select! {
                        answer = gw.answer_unrelated(&server, request) => answer,
                        // The connection stopped waiting (its reply timeout).
                        _ = reply.closed() => return,
                    };
                    let _ = reply.send(answer);
                });
            }
        });
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([task, unrelated_task]);
        server
    }

    /// A request from a server that belongs to no call the gateway made (a server asks for
    /// the client's roots right after `initialize`, before any agent has called anything).
    /// When the gateway serves one agent session, which owns the upstream, the agent
    /// answers: the request waits until that session has initialised, then is relayed like
    /// one made during a call. A shared upstream has no single session to ask — another
    /// agent's roots or model must not answer for everyone — so it gets an error.
    async fn answer_unrelated(
        &self,
        server: &Arc<Server>,
        request: Request,
    ) -> Result<Value, RpcError> {
        let capability = match request.method.as_str() {
            "roots/list" => "roots",
            "sampling/createMessage" => "sampling",
            "elicitation/create" => "elicitation",
            other => {
                return Err(RpcError::new(
                    code::METHOD_NOT_FOUND,
                    format!("the gateway does not relay {other:?} outside a request"),
                ));
            }
        };
        if !self.config.one_session {
            return Err(RpcError::new(
                code::INTERNAL_ERROR,
                format!(
                    "{} outside any request: upstream {} is shared by every agent session, and \
                     no single agent can answer for the others",
                    request.method,
                    server.name()
                ),
            ));
        }
        let session = self
            .sessions
            .first_where(|s| {
                s.is_initialized()
                    && self
                        .catalog
                        .in_scope(&s.identity.tenant, s.scope.as_deref())
                        .iter()
                        .any(|v| Arc::ptr_eq(v, server))
            })
            .await;
        if !session.client_supports(capability) {
            return Err(RpcError::new(
                code::METHOD_NOT_FOUND,
                format!("the agent's client does not support {capability}"),
            ));
        }
        session
            .ask_client(
                &request.method,
                request.params,
                None,
                server.config.timeout(),
            )
            .await
    }

    /// Brings the tenants' own upstreams in line with the registry: each registered server
    /// with a transport whose state is `approved` or `deprecated` runs as an upstream that
    /// only its tenant's agents see; the others are stopped. A configured upstream of the
    /// same name takes precedence (the registry entry then describes that upstream).
    pub async fn sync_registry(self: &Arc<Self>, snapshot: &warden_registry::RegistrySnapshot) {
        use warden_registry::model::State;
        let shared: std::collections::HashSet<String> = self
            .catalog
            .all()
            .iter()
            .filter(|s| s.tenant.is_none())
            .map(|s| s.name().to_owned())
            .collect();
        let mut desired = std::collections::HashMap::new();
        for tenant in snapshot.tenants() {
            for server in snapshot.servers(tenant) {
                let runs = matches!(server.state, State::Approved | State::Deprecated)
                    && server.transport.is_some()
                    && !shared.contains(&server.alias);
                if !runs {
                    continue;
                }
                match crate::discover::upstream_config(server, None) {
                    Ok(config) => {
                        desired.insert(
                            format!("{tenant}/{}", server.alias),
                            (tenant.clone(), config),
                        );
                    }
                    Err(e) => {
                        tracing::warn!(tenant = %tenant, server = server.name.as_str(), error = %e,
                            "a registered server cannot be started")
                    }
                }
            }
        }
        for s in self.catalog.all() {
            if s.tenant.is_none() {
                continue;
            }
            let key = s.key();
            let keep = desired.get(&key).is_some_and(|(_, c)| *c == s.config);
            if keep {
                desired.remove(&key);
            } else if let Some(old) = self.catalog.remove(&key) {
                tracing::info!(server = %key, "registry upstream stopped");
                old.upstream.shutdown().await;
            }
        }
        for (key, (tenant, config)) in desired {
            tracing::info!(server = %key, "registry upstream started");
            self.add_server(Some(tenant), config);
        }
    }

    pub fn upstream_health(&self) -> Vec<(String, Health)> {
        self.catalog
            .all()
            .iter()
            .map(|s| (s.name().to_owned(), s.upstream.health()))
            .collect()
    }

    pub fn render_metrics(&self, out: &mut String) {
        self.metrics
            .render(out, self.sessions.len(), &self.upstream_health());
    }

    /// Ends every session and disconnects every upstream.
    pub async fn shutdown(&self) {
        for s in self.sessions.all() {
            self.sessions.remove(&s.id);
            self.end(&s, EndReason::Shutdown).await;
        }
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
        for s in self.catalog.all() {
            s.upstream.shutdown().await;
        }
    }

    /// Handles `initialize`: a new session for an authenticated agent.
    pub async fn initialize(
        &self,
        identity: AgentIdentity,
        scope: Option<String>,
        request: &Request,
        client: ClientInfo,
    ) -> Result<(Arc<Session>, Value), RpcError> {
        if let Some(name) = &scope
            && self.catalog.get(&identity.tenant, name).is_none()
        {
            return Err(RpcError::new(
                code::INVALID_PARAMS,
                format!("no upstream server is named {name:?}"),
            ));
        }
        if self.sessions.len() >= self.config.max_sessions {
            return Err(RpcError::new(
                code::INTERNAL_ERROR,
                format!(
                    "the gateway has reached its limit of {} sessions; retry later",
                    self.config.max_sessions
                ),
            ));
        }
        let params = request.params.clone().unwrap_or(json!({}));
        let asked = params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                RpcError::new(
                    code::INVALID_PARAMS,
                    "initialize needs params.protocolVersion",
                )
            })?;
        // Answer with the client's version when we speak it, else our newest (the client
        // then decides whether it can go on).
        let version = PROTOCOL_VERSIONS
            .iter()
            .find(|v| **v == asked)
            .unwrap_or(&PROTOCOL_VERSIONS[0]);
        let session = Arc::new(Session::new(
            identity,
            scope,
            (*version).to_owned(),
            params.get("clientInfo").cloned().unwrap_or(Value::Null),
            params.get("capabilities").cloned().unwrap_or(json!({})),
            client,
        ));
        let started = events::session_event(
            &session,
            events::SESSION_STARTED,
            json!({
                "mcp": events::mcp_attributes(&session, "initialize", Some(&request.id)),
                "client_info": session.client_info,
                "client_capabilities": session.client_capabilities,
                "requested_protocol_version": asked,
            }),
            events::trace_of(request.params.as_ref()),
        );
        self.governor.record(started).await.map_err(audit_error)?;
        self.sessions.insert(session.clone());
        self.metrics.sessions_started.inc();

        let instructions = match &session.scope {
            Some(name) => format!(
                "Tools of {name}, governed by Warden: calls are checked against your \
                 organisation's policies, may need a person's approval, and are recorded."
            ),
            None => "Tools of several servers, governed by Warden: each tool is named \
                     <server>__<tool>; calls are checked against your organisation's \
                     policies, may need a person's approval, and are recorded."
                .to_owned(),
        };
        let result = json!({
            "protocolVersion": version,
            "capabilities": {
                "tools": {"listChanged": true},
                "prompts": {"listChanged": true},
                "resources": {"listChanged": true, "subscribe": true},
                "completions": {},
                "logging": {},
            },
            "serverInfo": {
                "name": "warden",
                "title": "Warden MCP gateway",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "instructions": instructions,
        });
        Ok((session, result))
    }

    /// Ends a session (already removed from the table) and records it.
    pub async fn end(&self, session: &Arc<Session>, reason: EndReason) {
        session.close();
        let e = events::session_event(
            session,
            events::SESSION_ENDED,
            json!({
                "mcp": events::mcp_attributes(session, "session/end", None),
                "reason": reason.as_str(),
                "facts": session.facts(),
            }),
            None,
        );
        if let Err(err) = self.governor.record(e).await {
            tracing::error!(error = %err, session = %session.id, "could not record the end of an MCP session");
        }
    }

    /// Handles one request of an initialised session. `out` carries what must reach the
    /// agent before the response (progress, requests from the server); without it those
    /// are dropped (and server requests answered with an error).
    pub async fn handle(
        self: &Arc<Self>,
        session: &Arc<Session>,
        request: Request,
        out: Option<mpsc::Sender<Message>>,
    ) -> Response {
        session.touch();
        let result = self.dispatch(session, &request, out.as_ref()).await;
        Response {
            id: request.id,
            result,
        }
    }

    async fn dispatch(
        self: &Arc<Self>,
        session: &Arc<Session>,
        request: &Request,
        out: Option<&mpsc::Sender<Message>>,
    ) -> Result<Value, RpcError> {
        match request.method.as_str() {
            "ping" => Ok(json!({})),
            "initialize" => Err(RpcError::new(
                code::INVALID_REQUEST,
                "this session is already initialised; start a new session to initialise again",
            )),
            "tools/list" => self.list_tools(session, request).await,
            "tools/call" => crate::govern::call_tool(self, session, request, out).await,
            "prompts/list" => self.list_plain(session, request, Listing::Prompts).await,
            "resources/list" => self.list_plain(session, request, Listing::Resources).await,
            "resources/templates/list" => {
                self.list_plain(session, request, Listing::ResourceTemplates)
                    .await
            }
            "resources/read" => crate::govern::read_resource(self, session, request, out).await,
            "prompts/get" => crate::govern::get_prompt(self, session, request, out).await,
            "resources/subscribe" | "resources/unsubscribe" => {
                let uri = param_str(request, "uri")?;
                let server = self
                    .catalog
                    .resource_owner(&session.identity.tenant, session.scope.as_deref(), &uri)
                    .await
                    .ok_or_else(|| unknown_resource(&uri))?;
                forward(&server, &request.method, request.params.clone(), None).await
            }
            "completion/complete" => self.complete(session, request).await,
            "logging/setLevel" => {
                for s in self
                    .catalog
                    .in_scope(&session.identity.tenant, session.scope.as_deref())
                {
                    let offers = s
                        .upstream
                        .server_info()
                        .is_some_and(|i| i.capabilities.get("logging").is_some());
                    if offers {
                        let _ = s
                            .upstream
                            .call("logging/setLevel", request.params.clone(), None)
                            .await;
                    }
                }
                Ok(json!({}))
            }
            other => Err(RpcError::new(
                code::METHOD_NOT_FOUND,
                format!("method {other:?} is not supported by this gateway"),
            )),
        }
    }

    /// A notification from the agent.
    pub async fn notify(&self, session: &Arc<Session>, n: Notification) {
        session.touch();
        match n.method.as_str() {
            "notifications/initialized" => {
                session.mark_initialized();
                self.sessions.touched();
            }
            "notifications/cancelled" => {
                let id = n
                    .params
                    .as_ref()
                    .and_then(|p| p.get("requestId"))
                    .and_then(|v| serde_json::from_value::<Id>(v.clone()).ok());
                if let Some(id) = id {
                    session.cancel(&id);
                }
            }
            "notifications/roots/list_changed" => {
                for s in self
                    .catalog
                    .in_scope(&session.identity.tenant, session.scope.as_deref())
                {
                    let _ = s.upstream.notify(&n.method, n.params.clone()).await;
                }
            }
            _ => {}
        }
    }

    /// A response from the agent to a request Warden relayed to it.
    pub fn respond(&self, session: &Session, r: Response) {
        session.touch();
        if !session.resolve(&r.id, r.result) {
            tracing::debug!(session = %session.id, id = %r.id, "response to no outstanding request");
        }
    }

    async fn on_upstream_notification(&self, server: &str, n: Notification) {
        let Some(s) = self.catalog.by_key(server) else {
            return;
        };
        let listing = [Listing::Tools, Listing::Prompts, Listing::Resources]
            .into_iter()
            .find(|l| l.changed_notification() == Some(n.method.as_str()));
        if let Some(listing) = listing {
            s.invalidate(listing).await;
        } else if n.method != "notifications/resources/updated" {
            tracing::debug!(server, method = %n.method, "upstream notification not relayed");
            return;
        }
        for session in self.sessions.all() {
            let sees = self
                .catalog
                .in_scope(&session.identity.tenant, session.scope.as_deref())
                .iter()
                .any(|v| Arc::ptr_eq(v, &s));
            if sees {
                session.push(Message::Notification(n.clone()));
            }
        }
    }

    /// `tools/list`: the tools of every server in scope that the agent may see.
    async fn list_tools(
        &self,
        session: &Arc<Session>,
        request: &Request,
    ) -> Result<Value, RpcError> {
        let scope = session.scope.as_deref();
        let servers = self.catalog.in_scope(&session.identity.tenant, scope);
        let lists = futures::future::join_all(servers.iter().map(|s| s.list(Listing::Tools))).await;
        let mut visible = Vec::new();
        let mut hidden = Vec::new();
        let mut unavailable = Vec::new();
        let mut candidates = Vec::new();
        let snapshot = self.governor.registry();
        // An agent the registry blocks here sees no tools.
        let (principal, agent_refused) = crate::govern::principal(session, snapshot.as_deref());
        for (server, list) in servers.iter().zip(lists) {
            let tools = match list {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(server = server.name(), error = %e.message, "tools/list failed; its tools are left out");
                    unavailable.push(json!({"server": server.name(), "error": e.message}));
                    continue;
                }
            };
            for tool in tools.iter() {
                let Some(name) = tool.get("name").and_then(Value::as_str) else {
                    continue;
                };
                let exposed = exposed_name(scope, server.name(), name);
                let standing = crate::govern::standing(
                    self,
                    session,
                    server,
                    &tools,
                    tool,
                    snapshot.as_deref(),
                );
                if agent_refused.is_none() && standing.usable() {
                    let resource = crate::govern::registered_tool(server.name(), tool, &standing);
                    candidates.push((tool.clone(), exposed, resource));
                } else {
                    hidden.push(exposed);
                }
            }
        }
        // The policies are asked about every candidate at once (one round trip when they
        // live on a remote server).
        let (tools, resources): (Vec<_>, Vec<_>) = candidates
            .into_iter()
            .map(|(tool, exposed, resource)| ((tool, exposed), resource))
            .unzip();
        let shown = crate::govern::may_list(self, session, &principal, resources).await;
        for ((mut tool, exposed), shown) in tools.into_iter().zip(shown) {
            if shown {
                tool["name"] = json!(exposed);
                visible.push(tool);
            } else {
                hidden.push(exposed);
            }
        }
        let e = events::session_event(
            session,
            events::TOOLS_LISTED,
            json!({
                "mcp": events::mcp_attributes(session, "tools/list", Some(&request.id)),
                "listed": visible.len(),
                "hidden": hidden,
                "unavailable": unavailable,
            }),
            events::trace_of(request.params.as_ref()),
        );
        self.governor.record(e).await.map_err(audit_error)?;
        page(self.config.page_size, request, "tools", visible)
    }

    /// `prompts/list`, `resources/list`, `resources/templates/list`: every server's items
    /// (prompts renamed `<server>__<prompt>`); using one is governed, listing is not.
    async fn list_plain(
        &self,
        session: &Arc<Session>,
        request: &Request,
        listing: Listing,
    ) -> Result<Value, RpcError> {
        let scope = session.scope.as_deref();
        let servers = self.catalog.in_scope(&session.identity.tenant, scope);
        let lists = futures::future::join_all(servers.iter().map(|s| s.list(listing))).await;
        let mut items = Vec::new();
        for (server, list) in servers.iter().zip(lists) {
            let Ok(list) = list else { continue };
            if listing == Listing::Resources {
                let uris = list
                    .iter()
                    .filter_map(|r| r.get("uri").and_then(Value::as_str).map(str::to_owned));
                self.catalog.note_resources(&server.key(), uris);
            }
            for item in list.iter() {
                let mut item = item.clone();
                if listing == Listing::Prompts
                    && let Some(name) = item.get("name").and_then(Value::as_str)
                {
                    item["name"] = json!(exposed_name(scope, server.name(), name));
                }
                items.push(item);
            }
        }
        page(self.config.page_size, request, listing.key(), items)
    }

    /// `completion/complete`: routed by the prompt's name or the resource's URI.
    async fn complete(&self, session: &Arc<Session>, request: &Request) -> Result<Value, RpcError> {
        let mut params = request.params.clone().unwrap_or(json!({}));
        let r = params.get("ref").cloned().unwrap_or(Value::Null);
        let scope = session.scope.as_deref();
        let server = match r.get("type").and_then(Value::as_str) {
            Some("ref/prompt") => {
                let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
                let (server, upstream_name) = self
                    .catalog
                    .resolve(&session.identity.tenant, scope, name)
                    .ok_or_else(|| unknown_prompt(name))?;
                params["ref"]["name"] = json!(upstream_name);
                server
            }
            Some("ref/resource") => {
                let uri = r.get("uri").and_then(Value::as_str).unwrap_or_default();
                self.catalog
                    .resource_owner(&session.identity.tenant, scope, uri)
                    .await
                    .ok_or_else(|| unknown_resource(uri))?
            }
            _ => {
                return Err(RpcError::new(
                    code::INVALID_PARAMS,
                    "completion/complete needs params.ref of type ref/prompt or ref/resource",
                ));
            }
        };
        forward(&server, "completion/complete", Some(params), None).await
    }
}

/// Forwards a request to a server as is, and returns its answer.
pub async fn forward(
    server: &Server,
    method: &str,
    params: Option<Value>,
    events: Option<mpsc::Sender<upstream::ServerMessage>>,
) -> Result<Value, RpcError> {
    server
        .upstream
        .call(method, params, events)
        .await
        .map_err(|e| upstream_error(&e))?
}

/// One page of an aggregated listing; the cursor is the offset, opaque to clients.
fn page(size: usize, request: &Request, key: &str, items: Vec<Value>) -> Result<Value, RpcError> {
    let start = match request.params.as_ref().and_then(|p| p.get("cursor")) {
        None | Some(Value::Null) => 0,
        Some(Value::String(c)) => c
            .strip_prefix("offset:")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n <= items.len())
            .ok_or_else(|| RpcError::new(code::INVALID_PARAMS, format!("invalid cursor {c:?}")))?,
        Some(other) => {
            return Err(RpcError::new(
                code::INVALID_PARAMS,
                format!("invalid cursor {other}"),
            ));
        }
    };
    let end = (start + size).min(items.len());
    let mut result = json!({ key: items[start..end] });
    if end < items.len() {
        result["nextCursor"] = json!(format!("offset:{end}"));
    }
    Ok(result)
}

pub fn param_str(request: &Request, key: &str) -> Result<String, RpcError> {
    request
        .params
        .as_ref()
        .and_then(|p| p.get(key))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            RpcError::new(
                code::INVALID_PARAMS,
                format!("{} needs params.{key} (a string)", request.method),
            )
        })
}

pub fn unknown_resource(uri: &str) -> RpcError {
    RpcError::new(
        code::RESOURCE_NOT_FOUND,
        format!("no server in this session offers resource {uri:?}"),
    )
    .with_data(json!({"uri": uri}))
}

pub fn unknown_prompt(name: &str) -> RpcError {
    RpcError::new(
        code::INVALID_PARAMS,
        format!("unknown prompt {name:?}; prompts/list shows the prompts of this session"),
    )
}

/// The audit trail could not record: nothing happened, and the agent is told so.
pub fn audit_error(e: Error) -> RpcError {
    RpcError::new(
        code::AUDIT_UNAVAILABLE,
        format!("the audit trail cannot record this request, so it was not carried out: {e}"),
    )
}

pub fn trace(request: &Request) -> Option<TraceContext> {
    events::trace_of(request.params.as_ref())
}
