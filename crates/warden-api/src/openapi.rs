//! The OpenAPI 3.1 document for every REST route, served at `/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    approvals, audit, authorize, destinations, events, gateway, health, policies, registry, tokens,
};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A Warden API token (wdn_…)"))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Warden", description = "Governance for AI agents: decide, record and prove every agent action. Errors are RFC 9457 problem+json."),
    paths(
        health::healthz, health::readyz, health::metrics,
        authorize::authorize, authorize::authorize_batch,
        events::ingest,
        audit::list_events, audit::get_event, audit::proof, audit::export, audit::hash_value, audit::checkpoints, audit::consistency,
        policies::overview, policies::versions, policies::version, policies::diff_versions,
        policies::put_bundle, policies::rollback, policies::promote,
        policies::get_shadow, policies::put_shadow, policies::delete_shadow,
        policies::get_policy, policies::put_policy, policies::delete_policy,
        crate::routes::simulate::simulate,
        tokens::create, tokens::list, tokens::revoke,
        approvals::list, approvals::get, approvals::approve, approvals::deny,
        registry::list_servers, registry::create_server, registry::get_server, registry::patch_server,
        crate::routes::discovery::discover_server,
        registry::transition_server, registry::put_server_scope, registry::delete_server_scope,
        registry::list_server_tools, registry::create_tool, registry::list_tools,
        registry::get_tool, registry::patch_tool, registry::transition_tool,
        registry::put_tool_scope, registry::delete_tool_scope, registry::tool_pins,
        registry::list_agents, registry::create_agent, registry::get_agent, registry::patch_agent,
        registry::put_agent_scope, registry::delete_agent_scope, registry::history,
        gateway::session, gateway::registry, gateway::decide, gateway::record,
        gateway::open_approval, gateway::consume_approval, gateway::get_approval,
        gateway::expire_approval, gateway::answer_approval,
        // Analytics
        crate::routes::reports::usage,
        serve,
        // Retention
        crate::routes::retention::list_rules, crate::routes::retention::put_rule,
        crate::routes::retention::delete_rule, crate::routes::retention::apply,
        crate::routes::retention::list_holds, crate::routes::retention::place_hold,
        crate::routes::retention::release_hold,
        // Delivery to stream destinations
        destinations::list, destinations::create, destinations::get, destinations::replace,
        destinations::delete, destinations::replay,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "decisions", description = "Ask whether an agent may act"),
        (name = "audit", description = "The tamper-evident audit trail"),
        (name = "policies", description = "Policy bundles: versions, diffs, rollback, shadow and promotion; the per-namespace routes edit one file of the bundle"),
        (name = "tokens", description = "API tokens"),
        (name = "approvals", description = "Held agent actions waiting for a person"),
        (name = "registry", description = "Tool servers, tools and agents: lifecycle, namespace scopes, pins and history. Server names go in paths with their `/` percent-encoded (`io.github.acme%2Fdeploy`)."),
        (name = "gateway", description = "For a remote MCP gateway (`warden gateway stdio --remote`), with an agent token: the session, the registry, decisions, the session's events, its approvals"),
        (name = "operations", description = "Health, readiness, metrics"),
        (name = "retention", description = "How long payloads and headers are kept per namespace subtree, legal holds, and running retention now"),
        (name = "destinations", description = "Stream destinations of the audit log (webhook, Splunk HEC, rotating file): settings, delivery state, replay of dead letters"),
        (name = "reports", description = "Usage reports over recorded decisions, from ClickHouse when configured, the system of record otherwise"),
    )
)]
pub struct ApiDoc;

#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "This document")))]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
