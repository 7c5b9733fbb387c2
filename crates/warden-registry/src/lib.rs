//! Warden's registry of tool servers, tools and agents: the model and the rules.
//!
//! Organisations need one place that knows which MCP servers, tools and agents exist, who owns
//! them, what they can touch and where they are approved for use; policies then speak in those
//! terms, and the gateway refuses a tool whose definition changed behind the approver's back.
//! This crate holds the records ([`model`]), the lifecycle and who may move it ([`lifecycle`]),
//! namespace scoping ([`scope`]), definition pins and their comparison ([`pin`]), import of the
//! official MCP registry's `server.json` ([`server_json`]), proposed categories and risk
//! ([`propose`]) and the in-memory view the doors read at decision time ([`snapshot`]).
//! It does no I/O: storage, the REST API, discovery and the gateway build on it.

pub mod lifecycle;
pub mod model;
pub mod pin;
pub mod propose;
pub mod scope;
pub mod server_json;
pub mod snapshot;

pub use lifecycle::{Transition, TransitionError};
pub use model::{
    Agent, Category, Classification, EnvValue, EnvVar, Header, Owner, Package, PinPolicy,
    RiskLevel, ScopeEffect, ScopeEntry, SecretRef, ServerName, Source, State, Tool,
    ToolAnnotations, ToolServer, Transport,
};
pub use pin::{Finding, Pin, ToolDefinition};
pub use propose::Proposal;
pub use scope::Effective;
pub use server_json::{ImportedServer, Problem};
pub use snapshot::{RegistrySnapshot, ToolFacts};

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::OpenApi;

    #[derive(OpenApi)]
    #[openapi(components(schemas(
        ToolServer,
        Tool,
        Agent,
        ImportedServer,
        Finding,
        Proposal,
        Effective,
        Problem,
        ToolFacts,
        TransitionRequestExample
    )))]
    struct Doc;

    /// Stands in for a REST body using the lifecycle types.
    #[derive(serde::Serialize, utoipa::ToSchema)]
    struct TransitionRequestExample {
        to: State,
        transition: Transition,
    }

    /// The REST API will list these types in `/openapi.json`; their schemas must say what
    /// the JSON looks like (snake_case, strings for names and references).
    #[test]
    fn schemas_describe_the_json() {
        let doc = serde_json::to_value(Doc::openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let server = &schemas["ToolServer"]["properties"];
        for field in [
            "name",
            "alias",
            "transport",
            "state",
            "scopes",
            "pin_policy",
        ] {
            assert!(server.get(field).is_some(), "ToolServer.{field}: {server}");
        }
        assert_eq!(server["name"]["$ref"], "#/components/schemas/ServerName");
        for name in ["ServerName", "Owner", "SecretRef", "NamespacePath"] {
            assert_eq!(schemas[name]["type"], "string", "{name}");
        }
        let state = serde_json::to_string(&schemas["State"]).unwrap();
        for s in ["pending_review", "approved", "deprecated", "blocked"] {
            assert!(state.contains(s), "{state}");
        }
        let tool = &schemas["Tool"]["properties"];
        assert!(tool.get("input_schema").is_some() && tool.get("pin").is_some());
        assert!(schemas.get("Transport").is_some() && schemas.get("EnvVar").is_some());
        let transport = serde_json::to_string(&schemas["Transport"]).unwrap();
        assert!(transport.contains("streamable_http"), "{transport}");
    }
}
