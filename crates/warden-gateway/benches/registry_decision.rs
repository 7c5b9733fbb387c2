//! Decision time at the gateway with the registry loaded: 1,000 registered servers with 20
//! tools each (20,000 tools), 1,000 policies that read registry facts, and per call what the
//! gateway does before a decision — the tool's standing (lifecycle, scoping, pin), the
//! agent's registry facts, the policy resource with the tool's facts — then the decision.

use std::collections::BTreeSet;
use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Map, Value, json};
use warden_core::{DecisionRequest, EntityRef, NamespacePath, TenantId};
use warden_gateway::govern::tool_resource;
use warden_gateway::registry::{self, Listed, RegistryMode, Standing};
use warden_policy::{Engine, PolicySource};
use warden_registry::model::*;
use warden_registry::pin::{Pin, ToolDefinition};
use warden_registry::{RegistrySnapshot, model::ServerName};

/// The allocator the `warden` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SERVERS: usize = 1000;
const TOOLS: usize = 20;
const TEAMS: usize = 100;

fn scope(path: &str, effect: ScopeEffect) -> ScopeEntry {
    ScopeEntry {
        namespace: NamespacePath::parse(path).unwrap(),
        effect,
        reason: "rollout".into(),
        by: "alice".into(),
        at: Utc::now(),
    }
}

fn definition(s: usize, t: usize) -> Value {
    json!({
        "name": format!("tool-{t}"),
        "description": format!("Tool {t} of server {s}: does one thing well."),
        "inputSchema": {"type": "object", "properties": {"branch": {"type": "string"}}},
        "annotations": {"readOnlyHint": t.is_multiple_of(3), "destructiveHint": t.is_multiple_of(5)}
    })
}

fn snapshot(acme: &TenantId) -> RegistrySnapshot {
    let mut servers = Vec::new();
    let mut tools = Vec::new();
    for s in 0..SERVERS {
        let name = ServerName::parse(&format!("io.github.acme/srv-{s}")).unwrap();
        servers.push((
            acme.clone(),
            ToolServer {
                name: name.clone(),
                alias: format!("srv-{s}"),
                title: None,
                description: "a server".into(),
                version: "1.0.0".into(),
                owner: Some(Owner::parse(&format!("team:team-{}", s % TEAMS)).unwrap()),
                source: Source::default(),
                transport: None,
                state: State::Approved,
                scopes: vec![
                    scope("acme", ScopeEffect::Enable),
                    scope(
                        &format!("acme/team-{}/secret", s % TEAMS),
                        ScopeEffect::Block,
                    ),
                ],
                pin_policy: PinPolicy::Block,
                created_at: Utc::now(),
                updated_at: Utc::now(),
            },
        ));
        for t in 0..TOOLS {
            let def = ToolDefinition::from_mcp(&definition(s, t)).unwrap();
            let mut tool = Tool::discovered(name.clone(), &def);
            tool.state = State::Approved;
            tool.risk = Some([RiskLevel::Low, RiskLevel::Medium, RiskLevel::High][t % 3]);
            tool.categories = if t.is_multiple_of(5) {
                BTreeSet::from([Category::Delete, Category::Write])
            } else if t.is_multiple_of(3) {
                BTreeSet::from([Category::Read])
            } else {
                BTreeSet::from([Category::Write])
            };
            tool.pin = Some(Pin::new(def, Utc::now()));
            tools.push((acme.clone(), tool));
        }
    }
    let agents = vec![(
        acme.clone(),
        Agent {
            name: "agent-3".into(),
            owner: Owner::parse("alice").unwrap(),
            description: None,
            version: Some("1.2".into()),
            models: vec!["model-a".into()],
            scopes: vec![scope("acme", ScopeEffect::Enable)],
            created_at: Utc::now(),
            updated_at: Utc::now(),
        },
    )];
    RegistrySnapshot::build(servers, tools, agents)
}

/// 1,000 policies over 100 team namespaces, written against registry facts.
fn policies() -> Vec<PolicySource> {
    let root = r#"
@id("root.no-deletes") @reason("Deletes need a maintainer.")
forbid (principal, action == Action::"call_tool", resource is Tool)
when { resource has categories && resource.categories.contains("delete") && !(principal in Role::"maintainer") };
@id("root.critical") forbid (principal, action == Action::"call_tool", resource is Tool)
when { resource has risk && resource.risk == "critical" };
@id("root.writes-ask") @effect("ask")
permit (principal is Agent, action == Action::"call_tool", resource is Tool)
when { resource has categories && resource.categories.contains("write") && context.args has branch && context.args.branch == "main" };
"#;
    let mut out = vec![PolicySource::new(
        NamespacePath::parse("acme").unwrap(),
        "acme/base.cedar",
        root,
    )];
    for k in 0..TEAMS {
        let mut text = String::new();
        for j in 0..10 {
            let s = k + TEAMS * j;
            text.push_str(&format!(
                "@id(\"t{k}.srv-{s}\")\npermit (principal is Agent, action == Action::\"call_tool\", resource in ToolServer::\"io.github.acme/srv-{s}\")\nwhen {{ resource has risk && resource.risk != \"critical\" && resource has approval_state && resource.approval_state == \"approved\" }};\n"
            ));
        }
        out.push(PolicySource::new(
            NamespacePath::parse(&format!("acme/team-{k}")).unwrap(),
            format!("acme/team-{k}/policies.cedar"),
            text,
        ));
    }
    out
}

fn bench(c: &mut Criterion) {
    let acme = TenantId::parse("acme").unwrap();
    let snap = snapshot(&acme);
    let engine = Engine::build(policies(), None).unwrap_or_else(|e| panic!("{e:?}"));
    eprintln!(
        "registry: {:?} (servers, tools); {} policies",
        snap.counts(),
        engine.policy_count()
    );
    let ns = NamespacePath::parse("acme/team-3/api").unwrap();
    let tool = definition(203, 4);
    // The gateway hashes a listing's definitions once per listing, not per call.
    let digest = Listed::new("srv-203", &tool).digest;
    let decide = |snap: &RegistrySnapshot| {
        let listed = Listed::with_digest("srv-203", &tool, digest.clone());
        let (standing, _) =
            registry::standing(Some(snap), RegistryMode::Required, &acme, &ns, &listed);
        assert!(matches!(standing, Standing::Usable { .. }));
        let principal = registry::agent_principal(Some(snap), &acme, &ns, "agent-3").unwrap();
        let mut resource = tool_resource("srv-203", &tool);
        registry::enrich_tool(&mut resource, &standing);
        let mut context = Map::new();
        context.insert("args".into(), json!({"branch": "feature/x"}));
        let req = DecisionRequest {
            tenant: acme.clone(),
            namespace: ns.clone(),
            principal,
            on_behalf_of: Some(EntityRef::new("User", "alice")),
            session: Some("sess-1".into()),
            facts: Default::default(),
            action: "call_tool".into(),
            resource,
            context,
            time: Utc::now(),
        };
        engine.decide(&req)
    };
    let d = decide(&snap);
    eprintln!("outcome {:?}, {} evaluated", d.outcome, d.evaluated);
    assert!(d.errors.is_empty(), "{d:?}");
    c.bench_function("gateway/decision_with_registry/1000x20", |b| {
        b.iter(|| decide(black_box(&snap)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
