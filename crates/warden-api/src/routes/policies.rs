//! API-managed policies: `GET/PUT/DELETE /api/v1/policies/{namespace}` and their history.
//! Every change is validated against the whole set first, versioned, and recorded.

use axum::Json;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::json;
use warden_core::{AuditEvent, Error, NamespacePath, catalog};
use warden_store::{PolicyChange, PolicyVersion};

use crate::extract::{Caller, parse_json, read_body};
use crate::problem::{ApiResult, Problem};
use crate::query::QueryParams;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyPut {
    /// Cedar policy text for the namespace (replaces the previous text).
    pub text: String,
    /// Why the change is made; kept with the version.
    #[serde(default)]
    pub message: Option<String>,
    /// Optimistic concurrency: the version this change is based on (0 for the first).
    #[serde(default)]
    pub expected_version: Option<i64>,
}

/// The PUT body: Cedar text as `text/plain`, or JSON [`PolicyPut`].
pub struct PolicyBody(pub PolicyPut);

impl FromRequest<AppState> for PolicyBody {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Problem> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("text/plain")
            .to_ascii_lowercase();
        let expected = req
            .headers()
            .get(header::IF_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').parse::<i64>())
            .transpose()
            .map_err(|_| {
                Problem::from(Error::invalid("If-Match must be a policy version number"))
            })?;
        let bytes = read_body(req, state).await?;
        if ct.starts_with("application/json") {
            let mut p: PolicyPut = parse_json(&bytes)?;
            p.expected_version = p.expected_version.or(expected);
            Ok(PolicyBody(p))
        } else if ct.starts_with("text/plain") || ct.starts_with("application/cedar") {
            let text = String::from_utf8(bytes.to_vec())
                .map_err(|_| Problem::from(Error::invalid("policy text must be UTF-8")))?;
            Ok(PolicyBody(PolicyPut {
                text,
                message: None,
                expected_version: expected,
            }))
        } else {
            Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                format!("send Cedar text as text/plain, or JSON {{\"text\": …}}; got {ct}"),
            ))
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyView {
    pub namespace: String,
    pub version: i64,
    pub text: Option<String>,
    pub sha256: Option<String>,
    pub author: String,
    pub message: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<PolicyVersion> for PolicyView {
    fn from(v: PolicyVersion) -> Self {
        PolicyView {
            namespace: v.namespace,
            version: v.version,
            text: v.text,
            sha256: v.sha256,
            author: v.author,
            message: v.message,
            created_at: v.created_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyOverview {
    /// `directory` when this tenant's policies live in the policy directory, else `api`.
    pub managed_by: String,
    /// SHA-256 over every policy text in force (all tenants).
    pub content_hash: String,
    /// The API-managed namespaces and their current versions.
    pub namespaces: Vec<PolicyView>,
    /// Errors of the last refused policy-directory change, if any (the previous set stays in force).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Vec<String>>,
}

fn namespace_of(caller: &Caller, raw: &str) -> Result<NamespacePath, Problem> {
    let ns = NamespacePath::parse(raw)?;
    caller.check_namespace(&ns)?;
    Ok(ns)
}

fn author(caller: &Caller) -> String {
    format!("token:{}", caller.token.id)
}

#[utoipa::path(
    get, path = "/api/v1/policies", tag = "policies",
    responses((status = 200, body = PolicyOverview)),
    security(("bearer" = []))
)]
pub async fn overview(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<PolicyOverview>> {
    caller.require(caller.role().can_read_audit(), "read policies")?;
    let tenant = &caller.token.tenant;
    let current = state.store.current_policies().await?;
    Ok(Json(PolicyOverview {
        managed_by: if state.policies.dir_manages(tenant.as_str()) {
            "directory"
        } else {
            "api"
        }
        .into(),
        content_hash: state.policies.content_hash(),
        namespaces: current
            .into_iter()
            .filter(|p| &p.tenant == tenant)
            .map(PolicyView::from)
            .collect(),
        last_error: state.policies.last_error(),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VersionsQuery {
    /// Only this namespace's versions.
    pub namespace: Option<String>,
}

#[utoipa::path(
    get, path = "/api/v1/policies/versions", tag = "policies", params(VersionsQuery),
    responses((status = 200, description = "Every version, newest first per namespace", body = Vec<PolicyView>)),
    security(("bearer" = []))
)]
pub async fn versions(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<VersionsQuery>,
) -> ApiResult<Json<Vec<PolicyView>>> {
    caller.require(caller.role().can_read_audit(), "read policies")?;
    let ns = q
        .namespace
        .as_deref()
        .map(|n| namespace_of(&caller, n))
        .transpose()?;
    let history = state
        .store
        .policy_history(&caller.token.tenant, ns.as_ref().map(|n| n.as_str()))
        .await?;
    Ok(Json(history.into_iter().map(PolicyView::from).collect()))
}

#[utoipa::path(
    get, path = "/api/v1/policies/{namespace}", tag = "policies",
    params(("namespace" = String, Path, description = "Namespace path, e.g. acme/platform")),
    responses((status = 200, body = PolicyView), (status = 404, body = Problem)),
    security(("bearer" = []))
)]
pub async fn get_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<PolicyView>> {
    caller.require(caller.role().can_read_audit(), "read policies")?;
    let ns = namespace_of(&caller, &raw)?;
    let history = state
        .store
        .policy_history(&caller.token.tenant, Some(ns.as_str()))
        .await?;
    history
        .into_iter()
        .next()
        .filter(|v| v.text.is_some())
        .map(|v| Json(v.into()))
        .ok_or_else(|| Error::not_found(format!("no API-managed policies in {ns}")).into())
}

#[utoipa::path(
    put, path = "/api/v1/policies/{namespace}", tag = "policies",
    params(("namespace" = String, Path, description = "Namespace path, e.g. acme/platform")),
    request_body(content = String, description = "Cedar text (text/plain) or JSON PolicyPut", content_type = "text/plain"),
    responses(
        (status = 200, description = "Validated, stored, in force and recorded", body = PolicyView),
        (status = 400, description = "Does not parse or validate; `errors` lists file:line messages", body = Problem),
        (status = 409, description = "Version conflict, or the tenant is managed by the policy directory", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn put_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    PolicyBody(body): PolicyBody,
) -> ApiResult<Json<PolicyView>> {
    change(
        &state,
        &caller,
        &raw,
        Some(body.text),
        body.message,
        body.expected_version,
    )
    .await
    .map(Json)
}

#[utoipa::path(
    delete, path = "/api/v1/policies/{namespace}", tag = "policies",
    params(("namespace" = String, Path, description = "Namespace path")),
    responses((status = 200, description = "Removed (a new version with no text)", body = PolicyView), (status = 404, body = Problem)),
    security(("bearer" = []))
)]
pub async fn delete_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<PolicyView>> {
    change(&state, &caller, &raw, None, None, None)
        .await
        .map(Json)
}

async fn change(
    state: &AppState,
    caller: &Caller,
    raw: &str,
    text: Option<String>,
    message: Option<String>,
    expected_version: Option<i64>,
) -> Result<PolicyView, Problem> {
    caller.require(caller.role().can_write_policies(), "change policies")?;
    let ns = namespace_of(caller, raw)?;
    let tenant = caller.token.tenant.clone();
    if state.policies.dir_manages(tenant.as_str()) {
        return Err(Error::Conflict(format!(
            "the policies of tenant {tenant} are managed in the policy directory; change the files there"
        ))
        .into());
    }
    let previous = state
        .store
        .policy_history(&tenant, Some(ns.as_str()))
        .await?
        .into_iter()
        .next();
    let previous_text = previous.as_ref().and_then(|p| p.text.clone());
    if text.is_none() && previous_text.is_none() {
        return Err(Error::not_found(format!("no API-managed policies in {ns}")).into());
    }
    state
        .policies
        .try_api_change(&ns, text.as_deref())
        .map_err(|errors| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-policy",
                format!(
                    "the policies for {ns} were not applied: {} problem(s)",
                    errors.len()
                ),
            )
            .with_errors(errors)
        })?;
    let version = state
        .store
        .put_policy(PolicyChange {
            tenant: tenant.clone(),
            namespace: ns.clone(),
            text: text.clone(),
            author: author(caller),
            message: message.clone(),
            expected_version,
        })
        .await?;
    state
        .policies
        .apply_api_change(&ns, text.as_deref())
        .map_err(|e| Problem::from(Error::internal(e.join("; "))))?;

    let diff = similar::TextDiff::from_lines(
        previous_text.as_deref().unwrap_or(""),
        text.as_deref().unwrap_or(""),
    )
    .unified_diff()
    .context_radius(3)
    .header("previous", "new")
    .to_string();
    let event_type = if text.is_some() {
        catalog::POLICY_UPDATED
    } else {
        catalog::POLICY_DELETED
    };
    let mut event = AuditEvent::new(
        tenant.as_str(),
        ns.as_str(),
        event_type,
        "warden.api",
        caller.actor(),
        json!({ "version": version.version, "previous_version": previous.map(|p| p.version), "sha256": version.sha256, "message": message, "diff": diff }),
    );
    event.header.action = Some(if text.is_some() { "update" } else { "delete" }.into());
    event.header.resource = Some(warden_core::ResourceRef {
        resource_type: "PolicySet".into(),
        id: ns.to_string(),
    });
    if let Err(e) = state.pipeline.record(event).await {
        // An administrative change must not stay in force unrecorded: put the previous text
        // back before reporting the failure.
        let _ = state
            .store
            .put_policy(PolicyChange {
                tenant: tenant.clone(),
                namespace: ns.clone(),
                text: previous_text.clone(),
                author: "warden".into(),
                message: Some("reverted: the audit trail could not record the change".into()),
                expected_version: Some(version.version),
            })
            .await;
        let _ = state
            .policies
            .apply_api_change(&ns, previous_text.as_deref());
        return Err(e.into());
    }
    Ok(version.into())
}
