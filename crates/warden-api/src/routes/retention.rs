//! Retention rules and legal holds of the caller's tenant: admins change them, auditors read
//! them; every change is an audit event recorded before it takes effect.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use warden_core::retention::{LegalHold, RetentionRule};
use warden_core::{AuditEvent, Error, NamespacePath, Role};
use warden_store::retention::{RetentionOutcome, apply_tenant};

use crate::extract::{Caller, JsonBody};
use crate::problem::{ApiResult, Problem};
use crate::query::QueryParams;
use crate::retention_changes::{self, Author, NewHold};
use crate::state::AppState;

pub use crate::retention_changes::MAX_REASON_BYTES;

fn can_change(caller: &Caller) -> Result<(), Problem> {
    caller.require(
        caller.role() == Role::Admin,
        "change retention or legal holds",
    )
}

fn can_read(caller: &Caller) -> Result<(), Problem> {
    caller.require(
        matches!(caller.role(), Role::Admin | Role::Auditor),
        "read retention or legal holds",
    )
}

/// Retention applies to a tenant's whole log: a token confined to a namespace may not change
/// it, since its rules reach events it cannot see.
fn whole_tenant(caller: &Caller) -> Result<(), Problem> {
    match &caller.token.namespace {
        Some(scope) => Err(Error::forbidden(format!(
            "this token is confined to namespace {scope}; retention and legal holds need a tenant-wide token"
        ))
        .into()),
        None => Ok(()),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RuleView {
    pub namespace: String,
    /// Days a payload is kept; absent: forever.
    pub payload_days: Option<u32>,
    /// Days a header (the verifiable record) is kept; absent: forever.
    pub header_days: Option<u32>,
    pub updated_by: String,
    pub updated_at: DateTime<Utc>,
}

impl From<&RetentionRule> for RuleView {
    fn from(r: &RetentionRule) -> Self {
        RuleView {
            namespace: r.namespace.to_string(),
            payload_days: r.payload_days,
            header_days: r.header_days,
            updated_by: r.updated_by.clone(),
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRule {
    /// The subtree the rule covers; the tenant root for the tenant-wide rule.
    #[schema(value_type = String)]
    pub namespace: NamespacePath,
    #[serde(default)]
    pub payload_days: Option<u32>,
    #[serde(default)]
    pub header_days: Option<u32>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RuleQuery {
    /// The namespace whose rule to remove.
    pub namespace: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HoldView {
    pub id: Uuid,
    /// The subtree held; absent: the whole tenant.
    pub namespace: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub reason: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub active: bool,
    pub released_by: Option<String>,
    pub released_reason: Option<String>,
    pub released_at: Option<DateTime<Utc>>,
}

impl From<&LegalHold> for HoldView {
    fn from(h: &LegalHold) -> Self {
        HoldView {
            id: h.id,
            namespace: h.namespace.as_ref().map(|n| n.to_string()),
            from: h.from,
            to: h.to,
            reason: h.reason.clone(),
            created_by: h.created_by.clone(),
            created_at: h.created_at,
            active: h.is_active(),
            released_by: h.released_by.clone(),
            released_reason: h.released_reason.clone(),
            released_at: h.released_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceHold {
    /// The subtree to hold; absent: the whole tenant.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub namespace: Option<NamespacePath>,
    /// Hold events at or after this time.
    #[serde(default)]
    pub from: Option<DateTime<Utc>>,
    /// Hold events before this time.
    #[serde(default)]
    pub to: Option<DateTime<Utc>>,
    pub reason: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseHold {
    pub reason: String,
}

fn author(caller: &Caller) -> Author {
    Author {
        actor: caller.actor(),
        source: "warden.api",
        by: format!("token:{}", caller.token.id),
    }
}

/// Records through the server's audit pipeline.
fn recorder(state: &AppState) -> impl FnOnce(AuditEvent) -> RecordFuture {
    let pipeline = state.pipeline.clone();
    move |e| Box::pin(async move { pipeline.record(e).await.map(|_| ()) })
}

type RecordFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = warden_core::Result<()>> + Send>>;

#[utoipa::path(
    get, path = "/api/v1/retention", tag = "retention",
    responses((status = 200, body = Vec<RuleView>), (status = 403, body = Problem)),
    security(("bearer" = []))
)]
pub async fn list_rules(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<RuleView>>> {
    can_read(&caller)?;
    let rules = state.store.retention_rules(&caller.token.tenant).await?;
    Ok(Json(rules.iter().map(RuleView::from).collect()))
}

#[utoipa::path(
    put, path = "/api/v1/retention", tag = "retention", request_body = PutRule,
    responses((status = 200, body = RuleView), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []))
)]
pub async fn put_rule(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<PutRule>,
) -> ApiResult<Json<RuleView>> {
    can_change(&caller)?;
    whole_tenant(&caller)?;
    caller.check_namespace(&req.namespace)?;
    let rule = retention_changes::set_rule(
        state.store.as_ref(),
        &caller.token.tenant,
        req.namespace,
        req.payload_days,
        req.header_days,
        &author(&caller),
        recorder(&state),
    )
    .await?;
    Ok(Json((&rule).into()))
}

#[utoipa::path(
    delete, path = "/api/v1/retention", tag = "retention", params(RuleQuery),
    responses((status = 200, body = RuleView), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []))
)]
pub async fn delete_rule(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<RuleQuery>,
) -> ApiResult<Json<RuleView>> {
    can_change(&caller)?;
    whole_tenant(&caller)?;
    let ns = NamespacePath::parse(&q.namespace)?;
    caller.check_namespace(&ns)?;
    let existing = retention_changes::remove_rule(
        state.store.as_ref(),
        &caller.token.tenant,
        &ns,
        &author(&caller),
        recorder(&state),
    )
    .await?;
    Ok(Json((&existing).into()))
}

#[utoipa::path(
    post, path = "/api/v1/retention/apply", tag = "retention",
    responses((status = 200, body = RetentionOutcome), (status = 403, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = []))
)]
pub async fn apply(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<RetentionOutcome>> {
    can_change(&caller)?;
    whole_tenant(&caller)?;
    let outcome = apply_tenant(
        state.store.as_ref(),
        &caller.token.tenant,
        Utc::now(),
        "warden.api",
        &caller.actor(),
    )
    .await?;
    Ok(Json(outcome))
}

#[utoipa::path(
    get, path = "/api/v1/legal-holds", tag = "retention",
    responses((status = 200, body = Vec<HoldView>), (status = 403, body = Problem)),
    security(("bearer" = []))
)]
pub async fn list_holds(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<HoldView>>> {
    can_read(&caller)?;
    let holds = state.store.legal_holds(&caller.token.tenant).await?;
    Ok(Json(holds.iter().map(HoldView::from).collect()))
}

#[utoipa::path(
    post, path = "/api/v1/legal-holds", tag = "retention", request_body = PlaceHold,
    responses((status = 201, body = HoldView), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []))
)]
pub async fn place_hold(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<PlaceHold>,
) -> ApiResult<(StatusCode, Json<HoldView>)> {
    can_change(&caller)?;
    whole_tenant(&caller)?;
    if let Some(ns) = &req.namespace {
        caller.check_namespace(ns)?;
    }
    let hold = retention_changes::place_hold(
        state.store.as_ref(),
        &caller.token.tenant,
        NewHold {
            namespace: req.namespace,
            from: req.from,
            to: req.to,
            reason: req.reason,
        },
        &author(&caller),
        recorder(&state),
    )
    .await?;
    Ok((StatusCode::CREATED, Json((&hold).into())))
}

#[utoipa::path(
    post, path = "/api/v1/legal-holds/{id}/release", tag = "retention", request_body = ReleaseHold,
    params(("id" = Uuid, Path, description = "Hold id")),
    responses((status = 200, body = HoldView), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = []))
)]
pub async fn release_hold(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<ReleaseHold>,
) -> ApiResult<Json<HoldView>> {
    can_change(&caller)?;
    whole_tenant(&caller)?;
    // An id that is not a UUID names no hold.
    let uuid =
        Uuid::parse_str(&id).map_err(|_| Error::not_found(format!("legal hold {id} not found")))?;
    let released = retention_changes::release_hold(
        state.store.as_ref(),
        &caller.token.tenant,
        uuid,
        &req.reason,
        &author(&caller),
        recorder(&state),
    )
    .await?;
    Ok(Json((&released).into()))
}
