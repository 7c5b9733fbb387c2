//! `POST /api/v1/registry/servers/{name}/discover`.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use warden_registry::model::ServerName;

use crate::discovery::{self, DEFAULT_DEADLINE};
use crate::extract::Caller;
use crate::problem::{ApiResult, Problem};
use crate::query::QueryParams;
use crate::registry::{DiscoveryReport, Who};
use crate::state::AppState;

/// Longest discovery a caller may ask for.
const MAX_DEADLINE_SECS: f64 = 300.0;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DiscoverQuery {
    /// Seconds to wait for the server to initialise and list its tools (default 30, at
    /// most 300).
    pub timeout: Option<f64>,
}

#[utoipa::path(
    post, path = "/api/v1/registry/servers/{name}/discover", tag = "registry",
    params(("name" = String, Path, description = "Server name, `/` percent-encoded"), DiscoverQuery),
    responses(
        (status = 200, description = "Connected, listed the tools, and recorded them: new tools in pending_review with proposed categories", body = DiscoveryReport),
        (status = 403, description = "Role may not change the registry", body = Problem),
        (status = 404, description = "No such server in the caller's tenant", body = Problem),
        (status = 422, description = "The server has no usable transport (none, legacy SSE, a secret reference that cannot be read)", body = Problem),
        (status = 503, description = "The server could not be reached, did not answer in time, or answered something that is not a tool list; recorded as registry.discovery.failed, nothing else written", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn discover_server(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<DiscoverQuery>,
) -> ApiResult<Json<DiscoveryReport>> {
    let name = ServerName::parse(&name).map_err(|e| {
        Problem::from(warden_core::Error::not_found(format!(
            "server {name:?} not found: {e}"
        )))
    })?;
    let deadline = match q.timeout {
        None => DEFAULT_DEADLINE,
        Some(t) if t > 0.0 && t <= MAX_DEADLINE_SECS => Duration::from_secs_f64(t),
        Some(_) => {
            return Err(Problem::from(warden_core::Error::invalid(format!(
                "timeout must be more than 0 and at most {MAX_DEADLINE_SECS} seconds"
            ))));
        }
    };
    let who = Who::token(&caller.token);
    let report =
        discovery::discover(&state.registry, &caller.token.tenant, &name, &who, deadline).await?;
    Ok(Json(report))
}
