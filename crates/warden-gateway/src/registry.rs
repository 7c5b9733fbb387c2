//! What the registry says about the servers, tools and agents the gateway meets, in the
//! session's tenant and namespace: whether a tool may be shown and called at all (its
//! lifecycle state, namespace scoping and pin), and the facts policies read about it.
//!
//! The registry is consulted in memory (a snapshot the server keeps current), so this costs
//! a few lookups per call. A definition that no longer matches its pin, or a tool the
//! registry has not seen, is refused at once from memory; the registry is told about it in
//! the background, once per definition, and records the change with its diff.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use warden_core::{EntityRef, NamespacePath, Resource, TenantId};
use warden_registry::model::{PinPolicy, ServerName};
use warden_registry::pin::{self, ToolDefinition};
use warden_registry::{Effective, RegistrySnapshot};

use crate::governor::Governor;

/// Whether servers the registry does not know may be used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistryMode {
    /// A server (config upstream) the tenant has not registered is usable, governed by
    /// policies alone; a registered server's tools follow the registry. For simple setups.
    #[default]
    Optional,
    /// Only registered, approved servers and tools are usable.
    Required,
}

/// Whether a tool may be used here, and what policies learn about it.
#[derive(Clone, Debug, PartialEq)]
pub enum Standing {
    /// The tenant has not registered the server (and registration is optional).
    Unregistered,
    /// Usable; `facts` become entity attributes and parents of the tool.
    Usable {
        server: ServerName,
        facts: Map<String, Value>,
        /// Set when the definition changed but the server's pin policy only warns.
        warning: Option<String>,
    },
    /// Hidden from `tools/list` and refused if called.
    Refused { status: &'static str, why: String },
}

impl Standing {
    pub fn usable(&self) -> bool {
        !matches!(self, Standing::Refused { .. })
    }
}

/// A tool as listed by its upstream, with the digest its pin is compared with.
pub struct Listed<'a> {
    pub alias: &'a str,
    pub tool: &'a Value,
    pub digest: Option<String>,
}

impl<'a> Listed<'a> {
    /// With the digest already known (the gateway computes them once per listing).
    pub fn with_digest(alias: &'a str, tool: &'a Value, digest: Option<String>) -> Listed<'a> {
        Listed {
            alias,
            tool,
            digest,
        }
    }

    pub fn new(alias: &'a str, tool: &'a Value) -> Listed<'a> {
        let digest = ToolDefinition::from_mcp(tool).ok().map(|d| pin::digest(&d));
        Listed {
            alias,
            tool,
            digest,
        }
    }

    fn name(&self) -> &str {
        self.tool
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// The standing of a listed tool for a tenant in a namespace.
pub fn standing(
    snapshot: Option<&RegistrySnapshot>,
    mode: RegistryMode,
    tenant: &TenantId,
    namespace: &NamespacePath,
    listed: &Listed<'_>,
) -> (Standing, Option<Observation>) {
    let unregistered = || match mode {
        RegistryMode::Optional => Standing::Unregistered,
        RegistryMode::Required => Standing::Refused {
            status: "unregistered",
            why: format!(
                "server {} is not in the registry of {tenant}, and only registered servers may be used",
                listed.alias
            ),
        },
    };
    let Some(snapshot) = snapshot else {
        return (unregistered(), None);
    };
    let Some(server) = snapshot.server_by_alias(tenant, listed.alias) else {
        return (unregistered(), None);
    };
    let name = listed.name();
    let observe = || {
        listed.digest.clone().map(|digest| Observation {
            tenant: tenant.clone(),
            server: server.name.clone(),
            tool: name.to_owned(),
            digest,
        })
    };
    let (Some(tool), Some(facts)) = (
        snapshot.tool(tenant, server.name.as_str(), name),
        snapshot.tool_facts(tenant, listed.alias, name, namespace),
    ) else {
        return (
            Standing::Refused {
                status: "pending_review",
                why: format!(
                    "tool {name} of {} is new to the registry and waits for review",
                    server.name
                ),
            },
            observe(),
        );
    };
    let changed = match (&tool.pin, &listed.digest) {
        (Some(p), Some(d)) => p.sha256 != *d,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let mut warning = None;
    let mut observation = None;
    if changed {
        observation = observe();
        let why = format!(
            "the definition of tool {name} of {} changed since it was approved",
            server.name
        );
        match server.pin_policy {
            PinPolicy::Block => {
                return (
                    Standing::Refused {
                        status: "pending_review",
                        why: format!("{why}; it waits for review again"),
                    },
                    observation,
                );
            }
            PinPolicy::Warn => warning = Some(why),
        }
    }
    if !facts.effective.usable() {
        return (
            Standing::Refused {
                status: facts.effective.as_str(),
                why: refusal_text(&facts.effective, name, server.name.as_str(), namespace),
            },
            observation,
        );
    }
    (
        Standing::Usable {
            server: server.name.clone(),
            facts: facts.attributes,
            warning,
        },
        observation,
    )
}

fn refusal_text(e: &Effective, tool: &str, server: &str, namespace: &NamespacePath) -> String {
    match e {
        Effective::Blocked { at: Some(at) } => {
            format!("tool {tool} of {server} is blocked in {at}, which covers {namespace}")
        }
        Effective::Blocked { at: None } => format!("tool {tool} of {server} is blocked"),
        Effective::NotEnabled => {
            format!("tool {tool} of {server} is not enabled in {namespace}")
        }
        Effective::PendingReview => {
            format!("tool {tool} of {server} is not approved yet (pending review)")
        }
        Effective::Approved | Effective::Deprecated => String::new(),
    }
}

/// Adds what the registry knows to a tool's policy resource: its attributes, and its
/// server's registry name as a parent (`resource in ToolServer::"io.github.acme/deploy"`).
pub fn enrich_tool(resource: &mut Resource, standing: &Standing) {
    if let Standing::Usable { server, facts, .. } = standing {
        add_tool_facts(resource, server, facts.clone());
    }
}

fn add_tool_facts(resource: &mut Resource, server: &ServerName, facts: Map<String, Value>) {
    resource.attributes.extend(facts);
    let parent = EntityRef::new("ToolServer", server.as_str());
    if !resource.parents.contains(&parent) {
        resource.parents.push(parent);
    }
}

/// The agent as a policy principal, with what the registry knows about it: `owner` (a
/// `User`, or the `Team` it belongs to for `team:` owners), `models`, `version`, and its
/// status in the namespace as `approval_state`. `Err` when the registry blocks the agent
/// here or it is registered but not enabled here.
pub fn agent_principal(
    snapshot: Option<&RegistrySnapshot>,
    tenant: &TenantId,
    namespace: &NamespacePath,
    agent: &str,
) -> Result<Resource, String> {
    let mut principal = Resource {
        entity_type: "Agent".into(),
        id: agent.into(),
        ..Default::default()
    };
    let Some((attrs, effective)) = snapshot.and_then(|s| s.agent_facts(tenant, agent, namespace))
    else {
        return Ok(principal);
    };
    match &effective {
        Effective::Blocked { at } => {
            return Err(match at {
                Some(at) => format!("agent {agent} is blocked in {at}, which covers {namespace}"),
                None => format!("agent {agent} is blocked"),
            });
        }
        Effective::NotEnabled => {
            return Err(format!("agent {agent} is not enabled in {namespace}"));
        }
        _ => {}
    }
    apply_agent_facts(&mut principal, attrs, &effective);
    Ok(principal)
}

/// Adds an agent's registry facts to its policy principal: `owner` as a `User` (a `team:`
/// owner makes the agent a member of that `Team`), the other attributes as they are, and its
/// status in the namespace as `approval_state`.
pub fn apply_agent_facts(
    principal: &mut Resource,
    attrs: Map<String, Value>,
    effective: &Effective,
) {
    for (k, v) in attrs {
        match (k.as_str(), &v) {
            ("owner", Value::String(o)) => match o.strip_prefix("team:") {
                Some(team) => principal.parents.push(EntityRef::new("Team", team)),
                None => {
                    principal
                        .attributes
                        .insert(k, json!({"__entity": {"type": "User", "id": o}}));
                }
            },
            _ => {
                principal.attributes.insert(k, v);
            }
        }
    }
    principal
        .attributes
        .insert("approval_state".into(), json!(effective.as_str()));
    principal
        .attributes
        .insert("registered".into(), json!(true));
}

/// Adds a tool's registry facts (`tool` of the server with gateway alias `alias`) to its
/// policy resource, for a door that has no listing to check against the pin (the decision
/// API): the registry's attributes win over the caller's, and the server is a parent.
pub fn apply_tool_facts(
    snapshot: &RegistrySnapshot,
    tenant: &TenantId,
    namespace: &NamespacePath,
    resource: &mut Resource,
) {
    let Some((alias, tool)) = resource.id.split_once(crate::config::NAME_SEPARATOR) else {
        return;
    };
    if let Some(facts) = snapshot.tool_facts(tenant, alias, tool, namespace) {
        add_tool_facts(resource, &facts.server, facts.attributes);
    }
}

/// A definition the registry should hear about: a changed pinned tool, or a new tool.
#[derive(Clone, Debug)]
pub struct Observation {
    pub tenant: TenantId,
    pub server: ServerName,
    pub tool: String,
    pub digest: String,
}

type Reported = HashSet<(TenantId, String, String, String)>;

/// Reports observations to the registry once per (tenant, server, tool, definition): the
/// registry records the change durably and the snapshot it then publishes reflects it.
#[derive(Default)]
pub struct Observer {
    reported: Arc<Mutex<Reported>>,
}

impl Observer {
    /// `listing` is the server's whole tool list as it is now, so the registry compares
    /// every tool at once.
    pub fn report(
        &self,
        governor: &Arc<dyn Governor>,
        observation: Observation,
        listing: impl FnOnce() -> Vec<ToolDefinition>,
    ) {
        let key = (
            observation.tenant.clone(),
            observation.server.as_str().to_owned(),
            observation.tool.clone(),
            observation.digest.clone(),
        );
        {
            let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
            if reported.len() > 100_000 {
                reported.clear();
            }
            if !reported.insert(key.clone()) {
                return;
            }
        }
        let listing = listing();
        let governor = governor.clone();
        let reported = self.reported.clone();
        tokio::spawn(async move {
            let Observation { tenant, server, .. } = observation;
            if let Err(e) = governor.observe_tools(&tenant, &server, listing).await {
                tracing::warn!(error = %e, server = %server.as_str(), tool = %key.2,
                    "the registry could not record a tool definition; it will be reported again");
                reported
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
            }
        });
    }
}

/// The definitions of a server's listed tools (those that parse).
pub fn definitions(tools: &[Value]) -> Vec<ToolDefinition> {
    tools
        .iter()
        .filter_map(|t| ToolDefinition::from_mcp(t).ok())
        .collect()
}
