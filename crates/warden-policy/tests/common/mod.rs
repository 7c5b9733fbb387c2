#![allow(dead_code)]

use chrono::{TimeZone, Utc};
use serde_json::{Map, Value};
use warden_core::{DecisionRequest, EntityRef, NamespacePath, Resource, TenantId};
use warden_policy::{Engine, PolicyError, PolicySource};

pub fn source(namespace: &str, origin: &str, text: &str) -> PolicySource {
    PolicySource::new(NamespacePath::parse(namespace).unwrap(), origin, text)
}

pub fn engine(sources: &[(&str, &str)]) -> Engine {
    engine_with(sources, None)
}

pub fn engine_with(sources: &[(&str, &str)], schema: Option<&str>) -> Engine {
    try_engine(sources, schema).unwrap_or_else(|errs| {
        panic!(
            "build failed:\n{}",
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

/// Each source's origin is `<namespace>/policies.cedar`.
pub fn try_engine(
    sources: &[(&str, &str)],
    schema: Option<&str>,
) -> Result<Engine, Vec<PolicyError>> {
    Engine::build(
        sources
            .iter()
            .map(|(ns, text)| source(ns, &format!("{ns}/policies.cedar"), text))
            .collect(),
        schema,
    )
}

pub fn build_errors(sources: &[(&str, &str)], schema: Option<&str>) -> Vec<PolicyError> {
    match try_engine(sources, schema) {
        Ok(_) => panic!("expected the build to fail"),
        Err(e) => e,
    }
}

/// A tool call by `Agent::"ci-bot"` for `User::"alice"`, Wednesday 10:00 UTC.
pub fn call_tool(namespace: &str, tool: &str) -> DecisionRequest {
    let ns = NamespacePath::parse(namespace).unwrap();
    DecisionRequest {
        tenant: ns.tenant(),
        namespace: ns,
        principal: Resource {
            entity_type: "Agent".into(),
            id: "ci-bot".into(),
            ..Default::default()
        },
        on_behalf_of: Some(EntityRef::new("User", "alice")),
        session: Some("sess-1".into()),
        facts: Default::default(),
        action: "call_tool".into(),
        resource: Resource {
            entity_type: "Tool".into(),
            id: tool.into(),
            ..Default::default()
        },
        context: Map::new(),
        time: Utc.with_ymd_and_hms(2025, 6, 4, 10, 0, 0).unwrap(),
    }
}

pub fn with_args(mut req: DecisionRequest, args: Value) -> DecisionRequest {
    req.context.insert("args".into(), args);
    req
}

pub fn with_tool_attrs(mut req: DecisionRequest, attrs: Value) -> DecisionRequest {
    req.resource.attributes = attrs.as_object().unwrap().clone();
    req
}

pub fn request(
    namespace: &str,
    principal: (&str, &str),
    action: &str,
    resource: (&str, &str),
) -> DecisionRequest {
    let ns = NamespacePath::parse(namespace).unwrap();
    DecisionRequest {
        tenant: TenantId::parse(ns.tenant().as_str()).unwrap(),
        namespace: ns,
        principal: Resource {
            entity_type: principal.0.into(),
            id: principal.1.into(),
            ..Default::default()
        },
        on_behalf_of: None,
        session: None,
        facts: Default::default(),
        action: action.into(),
        resource: Resource {
            entity_type: resource.0.into(),
            id: resource.1.into(),
            ..Default::default()
        },
        context: Map::new(),
        time: Utc.with_ymd_and_hms(2025, 6, 4, 10, 0, 0).unwrap(),
    }
}

pub fn ids(refs: &[warden_core::PolicyRef]) -> Vec<&str> {
    refs.iter().map(|r| r.id.as_str()).collect()
}
