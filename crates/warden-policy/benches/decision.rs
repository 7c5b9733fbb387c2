//! Decision time as a tenant's policies grow from 10 to 10,000, spread over 100 team
//! namespaces, and the time to build an engine of 1,000 policies.
//!
//! The policy mix follows how a tenant grows: a few tenant-wide rules at the root, and per
//! team a generic rule or two plus many rules about particular tools and agents.

use std::hint::black_box;

use chrono::{TimeZone, Utc};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::{Map, json};
use warden_core::{DecisionRequest, EntityRef, NamespacePath, Resource};
use warden_policy::{Engine, PolicySource};

/// The allocator the `warden` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TEAMS: usize = 100;

const ROOT: &str = r#"
@id("root.critical") @reason("Critical tools only with a command review.")
forbid (principal, action == Action::"call_tool", resource is Tool)
when { resource has risk && resource.risk == "critical" && context.args has command && context.args.command like "*rm -rf*" };

@id("root.prod-ask") @effect("ask") @reason("Production changes need approval.")
permit (principal is Agent, action == Action::"call_tool", resource is Tool)
when { context.args has environment && context.args.environment == "production" };

@id("root.read") @reason("Read-only tools are fine.")
permit (principal is Agent, action == Action::"call_tool", resource is Tool)
when { resource has read_only && resource.read_only };
"#;

/// Policy `j` of team `k`.
fn team_policy(k: usize, j: usize) -> String {
    match (j, j % 4) {
        (0, _) => format!(
            "@id(\"t{k}.no-main\") @reason(\"No pushes to main.\")\n\
             forbid (principal, action == Action::\"call_tool\", resource is Tool)\n\
             when {{ context.args has branch && context.args.branch == \"main\" && resource.name like \"push_*\" }};\n"
        ),
        (1, _) => format!(
            "@id(\"t{k}.team-tools\") @mode(\"warn\")\n\
             forbid (principal, action == Action::\"call_tool\", resource is Tool)\n\
             when {{ context.time.hour < 6 && !(principal in Team::\"team-{k}\") }};\n"
        ),
        (_, 0) => format!(
            "@id(\"t{k}.tool-{j}\") @reason(\"Team tool.\")\n\
             permit (principal is Agent, action == Action::\"call_tool\", resource == Tool::\"srv-{k}__tool-{j}\")\n\
             when {{ resource has risk && resource.risk != \"critical\" }};\n"
        ),
        (_, 1) => format!(
            "@id(\"t{k}.deploy-{j}\") @effect(\"ask\")\n\
             permit (principal, action == Action::\"call_tool\", resource == Tool::\"deploy-{k}__env-{j}\")\n\
             when {{ context.args has environment && context.args.environment like \"prod*\" }};\n"
        ),
        (_, 2) => format!(
            "@id(\"t{k}.agent-{j}\")\n\
             permit (principal == Agent::\"agent-{k}-{j}\", action == Action::\"call_tool\", resource is Tool)\n\
             when {{ resource.server == \"srv-{k}\" && context has on_behalf_of }};\n"
        ),
        _ => format!(
            "@id(\"t{k}.repo-{j}\")\n\
             permit (principal, action == Action::\"read\", resource == Repository::\"repo-{k}-{j}\");\n\
             @id(\"t{k}.no-agent-{j}\")\n\
             forbid (principal == Agent::\"old-agent-{k}-{j}\", action, resource);\n"
        ),
    }
}

/// `n` policies: the root's three, the rest spread over the teams round-robin.
fn sources(n: usize) -> Vec<PolicySource> {
    let mut texts = vec![String::new(); TEAMS];
    let mut count = 3;
    let mut j = 0;
    'fill: loop {
        for (k, text) in texts.iter_mut().enumerate() {
            if count >= n {
                break 'fill;
            }
            let p = team_policy(k, j);
            count += p.matches("@id").count();
            text.push_str(&p);
        }
        j += 1;
    }
    let mut out = vec![PolicySource::new(
        NamespacePath::parse("acme").unwrap(),
        "acme/base.cedar",
        ROOT,
    )];
    for (k, text) in texts.into_iter().enumerate().filter(|(_, t)| !t.is_empty()) {
        let ns = format!("acme/team-{k}");
        out.push(PolicySource::new(
            NamespacePath::parse(&ns).unwrap(),
            format!("{ns}/policies.cedar"),
            text,
        ));
    }
    out
}

fn request() -> DecisionRequest {
    let ns = NamespacePath::parse("acme/team-3/api").unwrap();
    let attrs = json!({"risk": "medium", "read_only": false, "categories": ["repo", "write"]});
    let args = json!({"branch": "feature/x", "environment": "staging", "command": "make test"});
    let mut context = Map::new();
    context.insert("args".into(), args);
    DecisionRequest {
        tenant: ns.tenant(),
        namespace: ns,
        principal: Resource {
            entity_type: "Agent".into(),
            id: "agent-3-6".into(),
            parents: vec![EntityRef::new("Team", "team-3")],
            ..Default::default()
        },
        on_behalf_of: Some(EntityRef::new("User", "alice")),
        session: Some("01J8ZK4X".into()),
        facts: Default::default(),
        action: "call_tool".into(),
        resource: Resource {
            entity_type: "Tool".into(),
            id: "srv-3__tool-4".into(),
            attributes: attrs.as_object().unwrap().clone(),
            parents: vec![EntityRef::new("ToolServer", "srv-3")],
        },
        context,
        time: Utc.with_ymd_and_hms(2025, 6, 4, 10, 0, 0).unwrap(),
    }
}

fn decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("decision/policies");
    let req = request();
    for n in [10, 100, 1000, 10_000] {
        let engine = Engine::build(sources(n), None).unwrap_or_else(|e| panic!("{e:?}"));
        let d = engine.decide(&req);
        assert!(d.errors.is_empty(), "{d:?}");
        eprintln!(
            "{n} policies: outcome {:?}, {} evaluated",
            d.outcome, d.evaluated
        );
        group.bench_with_input(BenchmarkId::from_parameter(n), &engine, |b, engine| {
            b.iter(|| engine.decide(black_box(&req)))
        });
    }
    group.finish();
}

fn build(c: &mut Criterion) {
    let src = sources(1000);
    c.bench_function("decision/build/1000", |b| {
        b.iter(|| Engine::build(black_box(src.clone()), None).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = decision, build
}
criterion_main!(benches);
