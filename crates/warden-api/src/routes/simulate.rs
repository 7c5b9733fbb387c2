//! `POST /api/v1/policies/simulate`: what a candidate set of policies would have changed over
//! the caller's recorded decisions.
//!
//! Reading the replayed requests is reading the audit trail, so the roles that may read it
//! (admin, policy_admin, auditor) may simulate; nothing is changed and nothing is recorded.
//! Only the caller's tenant's events are read, within the token's namespace scope.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use warden_core::NamespacePath;
use warden_core::simulation::SimulationReport;

use crate::extract::{Caller, JsonBody};
use crate::problem::{ApiResult, Problem};
use crate::simulation;
use crate::state::AppState;

/// Simulations run one at a time per server: one already uses every core, and a second would
/// only slow both (and the live decisions beside them).
static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulateRequest {
    pub candidate: CandidateBundle,
    /// Start of the window (inclusive), RFC 3339.
    #[schema(value_type = String, format = DateTime)]
    pub from: DateTime<Utc>,
    /// End of the window (exclusive), RFC 3339; now when left out.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub to: Option<DateTime<Utc>>,
    /// Replay only this namespace and everything below it; by default the whole tenant (or the
    /// token's namespace, for a confined token).
    #[serde(default)]
    pub namespace: Option<String>,
}

/// The candidate policies, laid out as in the policy directory.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CandidateBundle {
    /// Path → text: `<tenant>/<namespace…>/<name>.cedar` files of the caller's tenant, the
    /// optional `schema.cedarschema`, and policy tests (`*.test.yaml`, not read).
    pub files: BTreeMap<String, String>,
}

#[utoipa::path(
    post, path = "/api/v1/policies/simulate", tag = "policies",
    request_body = SimulateRequest,
    responses(
        (status = 200, description = "What would have changed; an empty window gives a report with `recorded: 0`", body = SimulationReport),
        (status = 400, description = "Invalid body or window, or candidate policies that do not load (every error with file:line:column in `errors`)", body = Problem),
        (status = 401, description = "Missing, unknown, expired or revoked token", body = Problem),
        (status = 403, description = "The token may not read the audit trail, or the namespace is outside its scope", body = Problem),
        (status = 404, description = "Namespace not found", body = Problem),
        (status = 503, description = "The audit trail cannot be read now", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn simulate(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<SimulateRequest>,
) -> ApiResult<Json<SimulationReport>> {
    caller.require(
        caller.role().can_read_audit(),
        "simulate policies over the audit trail",
    )?;
    let tenant = caller.token.tenant.clone();
    let namespace = match req.namespace.as_deref() {
        Some(raw) => {
            let ns = NamespacePath::parse(raw)?;
            caller.check_namespace(&ns)?;
            Some(ns)
        }
        None => caller.token.namespace.clone(),
    };
    let window = simulation::window(
        &tenant,
        req.from,
        req.to.unwrap_or_else(Utc::now),
        namespace,
    )?;
    let (sources, extension) = simulation::candidate_from_files(&tenant, &req.candidate.files)
        .map_err(|errors| invalid_candidate(errors, "files"))?;
    let engine = simulation::build_candidate(sources, extension)
        .await
        .map_err(|errors| invalid_candidate(errors, "policies"))?;
    let _turn = RUNNING
        .acquire()
        .await
        .map_err(|_| Problem::from(warden_core::Error::internal("simulation gate closed")))?;
    let report = simulation::simulate(state.store.clone(), Arc::new(engine), window, None).await?;
    Ok(Json(report))
}

fn invalid_candidate(errors: Vec<String>, what: &str) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-policy",
        format!(
            "the candidate {what} do not load: {} problem(s); nothing was simulated",
            errors.len()
        ),
    )
    .with_errors(errors)
}
