//! The registry as the doors read it at decision time: an immutable, in-memory view built
//! from the stored lists and replaced whole when something changes.
//!
//! Every lookup is a hash lookup (tenant, then server alias or name, then tool name), so
//! registry facts add no measurable time to a decision whatever the registry's size. The
//! parts of a tool's Cedar attributes that do not depend on the namespace are computed once,
//! at build time; only the effective status is computed per request, because it depends on
//! the namespace the request is made in.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use warden_core::{NamespacePath, TenantId};

use crate::model::{Agent, ServerName, Tool, ToolServer};
use crate::scope::{self, Effective};

/// What the policy engine learns about a tool in one namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolFacts {
    /// The server, for the tool entity's parent `ToolServer::"<name>"`.
    pub server: ServerName,
    /// Cedar entity attributes: `risk`, `categories`, `classification`, `owner` (the tool's,
    /// else its server's), `approval_state` (the effective status here), `pinned`,
    /// `read_only` / `destructive` / `idempotent` / `open_world` (the annotations the server
    /// gave), `registered` (always true). Attributes without a value are absent, as Cedar's
    /// optional attributes are (`resource has risk`).
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    pub effective: Effective,
}

struct ToolEntry {
    tool: Tool,
    /// The namespace-independent attributes.
    attributes: Map<String, Value>,
}

struct ServerEntry {
    server: ToolServer,
    /// By tool name, sorted.
    tools: Vec<ToolEntry>,
    tool_index: HashMap<String, usize>,
}

struct AgentEntry {
    agent: Agent,
    attributes: Map<String, Value>,
}

#[derive(Default)]
struct TenantView {
    /// Sorted by name.
    servers: Vec<ServerEntry>,
    by_name: HashMap<String, usize>,
    by_alias: HashMap<String, usize>,
    agents: HashMap<String, AgentEntry>,
}

/// The registry of every tenant, ready for lookups.
#[derive(Default)]
pub struct RegistrySnapshot {
    tenants: HashMap<TenantId, TenantView>,
    warnings: Vec<String>,
}

impl RegistrySnapshot {
    /// Builds the view. The store keeps names and aliases unique per tenant; should the lists
    /// still hold a duplicate, the first entry wins and `warnings` says what was dropped, as
    /// it does for a tool whose server is not in the list.
    pub fn build(
        servers: Vec<(TenantId, ToolServer)>,
        tools: Vec<(TenantId, Tool)>,
        agents: Vec<(TenantId, Agent)>,
    ) -> RegistrySnapshot {
        let mut warnings = Vec::new();
        let mut staged: HashMap<TenantId, Vec<ServerEntry>> = HashMap::new();
        let mut seen: HashSet<(TenantId, String)> = HashSet::new();
        for (tenant, server) in servers {
            if !seen.insert((tenant.clone(), server.name.as_str().to_owned())) {
                warnings.push(format!(
                    "tenant {tenant}: server {} is listed twice; the first entry is used",
                    server.name
                ));
                continue;
            }
            staged.entry(tenant).or_default().push(ServerEntry {
                server,
                tools: Vec::new(),
                tool_index: HashMap::new(),
            });
        }

        let mut tenants: HashMap<TenantId, TenantView> = HashMap::new();
        for (tenant, mut list) in staged {
            list.sort_by(|a, b| a.server.name.cmp(&b.server.name));
            let mut view = TenantView::default();
            for (i, entry) in list.iter().enumerate() {
                view.by_name
                    .insert(entry.server.name.as_str().to_owned(), i);
                if let Some(&other) = view.by_alias.get(&entry.server.alias) {
                    warnings.push(format!(
                        "tenant {tenant}: alias {:?} of server {} is already used by {}; it \
                         resolves to {}",
                        entry.server.alias,
                        entry.server.name,
                        list[other].server.name,
                        list[other].server.name
                    ));
                } else {
                    view.by_alias.insert(entry.server.alias.clone(), i);
                }
            }
            view.servers = list;
            tenants.insert(tenant, view);
        }

        for (tenant, tool) in tools {
            let Some(view) = tenants.get_mut(&tenant) else {
                warnings.push(format!(
                    "tenant {tenant}: tool {} of unknown server {} is left out",
                    tool.name, tool.server
                ));
                continue;
            };
            let Some(&i) = view.by_name.get(tool.server.as_str()) else {
                warnings.push(format!(
                    "tenant {tenant}: tool {} of unknown server {} is left out",
                    tool.name, tool.server
                ));
                continue;
            };
            let entry = &mut view.servers[i];
            if entry.tools.iter().any(|t| t.tool.name == tool.name) {
                warnings.push(format!(
                    "tenant {tenant}: tool {} of server {} is listed twice; the first entry is used",
                    tool.name, tool.server
                ));
                continue;
            }
            let attributes = tool_attributes(&entry.server, &tool);
            entry.tools.push(ToolEntry { tool, attributes });
        }
        for view in tenants.values_mut() {
            for entry in &mut view.servers {
                entry.tools.sort_by(|a, b| a.tool.name.cmp(&b.tool.name));
                entry.tool_index = entry
                    .tools
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.tool.name.clone(), i))
                    .collect();
            }
        }

        for (tenant, agent) in agents {
            let view = tenants.entry(tenant.clone()).or_default();
            if view.agents.contains_key(&agent.name) {
                warnings.push(format!(
                    "tenant {tenant}: agent {} is listed twice; the first entry is used",
                    agent.name
                ));
                continue;
            }
            let attributes = agent_attributes(&agent);
            view.agents
                .insert(agent.name.clone(), AgentEntry { agent, attributes });
        }

        RegistrySnapshot { tenants, warnings }
    }

    /// What `build` left out, and why.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn server_by_alias(&self, tenant: &TenantId, alias: &str) -> Option<&ToolServer> {
        let view = self.tenants.get(tenant)?;
        view.by_alias.get(alias).map(|&i| &view.servers[i].server)
    }

    pub fn server(&self, tenant: &TenantId, name: &str) -> Option<&ToolServer> {
        self.entry(tenant, name).map(|e| &e.server)
    }

    pub fn tool(&self, tenant: &TenantId, server_name: &str, tool_name: &str) -> Option<&Tool> {
        let entry = self.entry(tenant, server_name)?;
        entry
            .tool_index
            .get(tool_name)
            .map(|&i| &entry.tools[i].tool)
    }

    pub fn agent(&self, tenant: &TenantId, name: &str) -> Option<&Agent> {
        self.tenants.get(tenant)?.agents.get(name).map(|e| &e.agent)
    }

    /// The facts about tool `tool` of the server with gateway alias `alias`, in `namespace`.
    /// `None` when the registry does not know the tool (the caller decides what an
    /// unregistered tool means; policies see `registered` absent).
    pub fn tool_facts(
        &self,
        tenant: &TenantId,
        alias: &str,
        tool: &str,
        namespace: &NamespacePath,
    ) -> Option<ToolFacts> {
        let view = self.tenants.get(tenant)?;
        let entry = &view.servers[*view.by_alias.get(alias)?];
        let t = &entry.tools[*entry.tool_index.get(tool)?];
        let effective = scope::effective_tool(&entry.server, &t.tool, namespace);
        let mut attributes = t.attributes.clone();
        attributes.insert("approval_state".into(), json!(effective.as_str()));
        Some(ToolFacts {
            server: entry.server.name.clone(),
            attributes,
            effective,
        })
    }

    /// The agent's attributes (`owner`, `models`, `version`) and its status in `namespace`.
    pub fn agent_facts(
        &self,
        tenant: &TenantId,
        name: &str,
        namespace: &NamespacePath,
    ) -> Option<(Map<String, Value>, Effective)> {
        let entry = self.tenants.get(tenant)?.agents.get(name)?;
        Some((
            entry.attributes.clone(),
            scope::effective_agent(&entry.agent.scopes, namespace),
        ))
    }

    /// The tenants that have registered anything.
    pub fn tenants(&self) -> impl Iterator<Item = &TenantId> {
        self.tenants.keys()
    }

    /// The tenant's servers, by name.
    pub fn servers(&self, tenant: &TenantId) -> impl Iterator<Item = &ToolServer> {
        self.tenants
            .get(tenant)
            .into_iter()
            .flat_map(|v| v.servers.iter().map(|e| &e.server))
    }

    /// A server's tools, by name.
    pub fn tools_of(&self, tenant: &TenantId, server: &str) -> impl Iterator<Item = &Tool> {
        self.entry(tenant, server)
            .into_iter()
            .flat_map(|e| e.tools.iter().map(|t| &t.tool))
    }

    /// The tenant's agents, in no particular order.
    pub fn agents(&self, tenant: &TenantId) -> impl Iterator<Item = &Agent> {
        self.tenants
            .get(tenant)
            .into_iter()
            .flat_map(|v| v.agents.values().map(|e| &e.agent))
    }

    /// Servers and tools over all tenants.
    pub fn counts(&self) -> (usize, usize) {
        self.tenants
            .values()
            .flat_map(|v| &v.servers)
            .fold((0, 0), |(s, t), e| (s + 1, t + e.tools.len()))
    }

    fn entry(&self, tenant: &TenantId, name: &str) -> Option<&ServerEntry> {
        let view = self.tenants.get(tenant)?;
        view.by_name.get(name).map(|&i| &view.servers[i])
    }
}

fn tool_attributes(server: &ToolServer, tool: &Tool) -> Map<String, Value> {
    let mut a = Map::new();
    if let Some(r) = tool.risk {
        a.insert("risk".into(), json!(r.as_str()));
    }
    a.insert(
        "categories".into(),
        Value::Array(tool.categories.iter().map(|c| json!(c.as_str())).collect()),
    );
    if let Some(c) = tool.classification {
        a.insert("classification".into(), json!(c.as_str()));
    }
    if let Some(o) = tool.owner.as_ref().or(server.owner.as_ref()) {
        a.insert("owner".into(), json!(o.as_str()));
    }
    a.insert("pinned".into(), json!(tool.pin.is_some()));
    let ann = &tool.annotations;
    for (key, hint) in [
        ("read_only", ann.read_only_hint),
        ("destructive", ann.destructive_hint),
        ("idempotent", ann.idempotent_hint),
        ("open_world", ann.open_world_hint),
    ] {
        if let Some(h) = hint {
            a.insert(key.into(), json!(h));
        }
    }
    a.insert("registered".into(), json!(true));
    a
}

fn agent_attributes(agent: &Agent) -> Map<String, Value> {
    let mut a = Map::new();
    a.insert("owner".into(), json!(agent.owner.as_str()));
    a.insert("models".into(), json!(agent.models));
    if let Some(v) = &agent.version {
        a.insert("version".into(), json!(v));
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use crate::pin::{Pin, ToolDefinition};
    use chrono::Utc;
    use std::collections::BTreeSet;

    fn tenant(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }
    fn ns(s: &str) -> NamespacePath {
        NamespacePath::parse(s).unwrap()
    }
    fn enable(path: &str) -> ScopeEntry {
        ScopeEntry {
            namespace: ns(path),
            effect: ScopeEffect::Enable,
            reason: "rollout".into(),
            by: "alice".into(),
            at: Utc::now(),
        }
    }
    fn block(path: &str) -> ScopeEntry {
        ScopeEntry {
            effect: ScopeEffect::Block,
            ..enable(path)
        }
    }

    fn server(name: &str, alias: &str) -> ToolServer {
        ToolServer {
            name: ServerName::parse(name).unwrap(),
            alias: alias.into(),
            title: None,
            description: "test server".into(),
            version: "1.0.0".into(),
            owner: Some(Owner::parse("team:platform").unwrap()),
            source: Source::default(),
            transport: None,
            state: State::Approved,
            scopes: vec![enable("acme")],
            pin_policy: PinPolicy::Block,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn tool(server: &str, name: &str) -> Tool {
        let def = ToolDefinition::from_mcp(&json!({
            "name": name,
            "description": format!("{name} does things"),
            "inputSchema": {"type": "object"},
            "annotations": {"readOnlyHint": false, "destructiveHint": true}
        }))
        .unwrap();
        let mut t = Tool::discovered(ServerName::parse(server).unwrap(), &def);
        t.state = State::Approved;
        t.risk = Some(RiskLevel::High);
        t.categories = BTreeSet::from([Category::Delete, Category::Write]);
        t.pin = Some(Pin::new(def, Utc::now()));
        t
    }

    fn agent(name: &str) -> Agent {
        Agent {
            name: name.into(),
            owner: Owner::parse("bob").unwrap(),
            description: None,
            version: Some("2.1".into()),
            models: vec!["claude-sonnet-4-5".into()],
            scopes: vec![enable("acme/platform"), block("acme/platform/prod")],
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn a_thousand_servers_with_twenty_tools_each() {
        let acme = tenant("acme");
        let mut servers = Vec::new();
        let mut tools = Vec::new();
        for s in 0..1000 {
            let name = format!("io.github.acme/srv-{s:04}");
            servers.push((acme.clone(), server(&name, &format!("srv-{s:04}"))));
            for t in 0..20 {
                tools.push((acme.clone(), tool(&name, &format!("tool_{t:02}"))));
            }
        }
        let snap = RegistrySnapshot::build(servers, tools, vec![(acme.clone(), agent("ci-bot"))]);
        assert!(snap.warnings().is_empty(), "{:?}", snap.warnings());
        assert_eq!(snap.counts(), (1000, 20_000));
        assert_eq!(snap.servers(&acme).count(), 1000);
        assert_eq!(
            snap.servers(&acme).next().unwrap().name.as_str(),
            "io.github.acme/srv-0000"
        );

        let at = ns("acme/platform/api");
        for s in [0, 1, 499, 998, 999] {
            let alias = format!("srv-{s:04}");
            let name = format!("io.github.acme/srv-{s:04}");
            assert_eq!(
                snap.server_by_alias(&acme, &alias).unwrap().name.as_str(),
                name
            );
            assert_eq!(snap.server(&acme, &name).unwrap().alias, alias);
            let names: Vec<_> = snap
                .tools_of(&acme, &name)
                .map(|t| t.name.as_str())
                .collect();
            assert_eq!(names.len(), 20);
            assert_eq!((names[0], names[19]), ("tool_00", "tool_19"));
            for t in ["tool_00", "tool_07", "tool_19"] {
                assert_eq!(snap.tool(&acme, &name, t).unwrap().name, t);
                let facts = snap.tool_facts(&acme, &alias, t, &at).unwrap();
                assert_eq!(facts.server.as_str(), name);
                assert_eq!(facts.effective, Effective::Approved);
                assert_eq!(facts.attributes["approval_state"], "approved");
            }
            assert!(snap.tool_facts(&acme, &alias, "tool_20", &at).is_none());
        }
        assert!(snap.server_by_alias(&acme, "srv-1000").is_none());
        assert!(
            snap.tool_facts(&tenant("globex"), "srv-0001", "tool_00", &at)
                .is_none()
        );
        assert_eq!(snap.tools_of(&acme, "io.github.acme/nope").count(), 0);
        assert_eq!(snap.servers(&tenant("globex")).count(), 0);
        assert_eq!(snap.agents(&acme).count(), 1);
    }

    #[test]
    fn tool_facts_carry_the_cedar_attributes() {
        let acme = tenant("acme");
        let mut srv = server("io.github.acme/deploy", "deploy");
        srv.scopes.push(block("acme/secret"));
        let mut plain = tool("io.github.acme/deploy", "status");
        plain.risk = None;
        plain.categories.clear();
        plain.pin = None;
        plain.annotations = ToolAnnotations::default();
        plain.owner = Some(Owner::parse("carol").unwrap());
        let mut pending = tool("io.github.acme/deploy", "rollout");
        pending.state = State::PendingReview;
        pending.classification = Some(Classification::Confidential);
        let snap = RegistrySnapshot::build(
            vec![(acme.clone(), srv)],
            vec![
                (acme.clone(), tool("io.github.acme/deploy", "delete_env")),
                (acme.clone(), plain),
                (acme.clone(), pending),
            ],
            vec![],
        );
        let f = snap
            .tool_facts(&acme, "deploy", "delete_env", &ns("acme/platform"))
            .unwrap();
        assert_eq!(
            Value::Object(f.attributes),
            json!({
                "risk": "high",
                "categories": ["write", "delete"],
                "owner": "team:platform",
                "pinned": true,
                "read_only": false,
                "destructive": true,
                "registered": true,
                "approval_state": "approved"
            })
        );
        let f = snap
            .tool_facts(&acme, "deploy", "status", &ns("acme/platform"))
            .unwrap();
        assert_eq!(
            Value::Object(f.attributes),
            json!({
                "categories": [],
                "owner": "carol",
                "pinned": false,
                "registered": true,
                "approval_state": "approved"
            })
        );
        let f = snap
            .tool_facts(&acme, "deploy", "rollout", &ns("acme/platform"))
            .unwrap();
        assert_eq!(f.effective, Effective::PendingReview);
        assert_eq!(f.attributes["approval_state"], "pending_review");
        assert_eq!(f.attributes["classification"], "confidential");
        let f = snap
            .tool_facts(&acme, "deploy", "delete_env", &ns("acme/secret/x"))
            .unwrap();
        assert_eq!(
            f.effective,
            Effective::Blocked {
                at: Some("acme/secret".into())
            }
        );
        assert_eq!(f.attributes["approval_state"], "blocked");
    }

    #[test]
    fn agent_facts_follow_scopes() {
        let acme = tenant("acme");
        let snap = RegistrySnapshot::build(vec![], vec![], vec![(acme.clone(), agent("ci-bot"))]);
        let (attrs, eff) = snap
            .agent_facts(&acme, "ci-bot", &ns("acme/platform/api"))
            .unwrap();
        assert_eq!(
            Value::Object(attrs),
            json!({"owner": "bob", "models": ["claude-sonnet-4-5"], "version": "2.1"})
        );
        assert_eq!(eff, Effective::Approved);
        let (_, eff) = snap
            .agent_facts(&acme, "ci-bot", &ns("acme/platform/prod"))
            .unwrap();
        assert_eq!(eff.as_str(), "blocked");
        let (_, eff) = snap.agent_facts(&acme, "ci-bot", &ns("acme/data")).unwrap();
        assert_eq!(eff, Effective::NotEnabled);
        assert!(snap.agent_facts(&acme, "other", &ns("acme")).is_none());
        assert_eq!(snap.agent(&acme, "ci-bot").unwrap().owner.as_str(), "bob");
    }

    #[test]
    fn tenants_are_separate_and_duplicates_are_reported() {
        let (acme, globex) = (tenant("acme"), tenant("globex"));
        let snap = RegistrySnapshot::build(
            vec![
                (acme.clone(), server("io.github.acme/deploy", "deploy")),
                (globex.clone(), server("io.github.globex/deploy", "deploy")),
                (acme.clone(), server("io.github.acme/deploy", "other")),
                (acme.clone(), server("io.github.acme/deploy2", "deploy")),
            ],
            vec![
                (acme.clone(), tool("io.github.acme/deploy", "run")),
                (acme.clone(), tool("io.github.acme/deploy", "run")),
                (globex.clone(), tool("io.github.acme/deploy", "run")),
                (tenant("initech"), tool("io.github.acme/deploy", "run")),
            ],
            vec![(acme.clone(), agent("a")), (acme.clone(), agent("a"))],
        );
        assert_eq!(
            snap.server_by_alias(&acme, "deploy").unwrap().name.as_str(),
            "io.github.acme/deploy"
        );
        assert_eq!(
            snap.server_by_alias(&globex, "deploy")
                .unwrap()
                .name
                .as_str(),
            "io.github.globex/deploy"
        );
        assert!(snap.server_by_alias(&acme, "other").is_none());
        assert!(snap.tool(&globex, "io.github.acme/deploy", "run").is_none());
        assert_eq!(snap.warnings().len(), 6, "{:#?}", snap.warnings());
    }
}
