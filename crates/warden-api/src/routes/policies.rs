//! Policy bundles over HTTP: the bundle in force, its versions and their diffs, applying a
//! bundle (with optimistic concurrency and the policy-test gate), rollback, shadow and
//! promotion; and the per-namespace routes, which edit one file of the bundle
//! (`<namespace>/policies.cedar`).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use warden_core::{Error, NamespacePath, TenantId, catalog};
use warden_policy::bundle::{BundleDiff, diff};
use warden_policy::{Bundle, BundleMode};
use warden_store::BundleVersion;

use crate::bundles::{self, BundleChange, NAMESPACE_FILE, TestGate};
use crate::extract::{Caller, JsonBody, OptionalJsonBody, parse_json, read_body};
use crate::problem::{ApiResult, Problem};
use crate::query::QueryParams;
use crate::state::AppState;

// ---- views ---------------------------------------------------------------------------

/// One version of a tenant's bundle, without its files.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionSummary {
    pub version: i64,
    /// SHA-256 of the bundle's paths and texts.
    pub sha256: String,
    /// `enforce`, `warn` or `off`.
    pub mode: String,
    /// `api` or `directory`.
    pub source: String,
    /// `token:<id>` for an API change, `directory` for a change of the policy directory.
    pub author: String,
    pub message: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// How many files (policies and tests).
    pub file_count: usize,
    /// Policy test cases that failed when the version was applied with `?tests=warn`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub test_failures: Option<serde_json::Value>,
}

impl From<&BundleVersion> for VersionSummary {
    fn from(v: &BundleVersion) -> Self {
        VersionSummary {
            version: v.version,
            sha256: v.sha256.clone(),
            mode: v.mode.clone(),
            source: v.source.clone(),
            author: v.author.clone(),
            message: v.message.clone(),
            created_at: v.created_at,
            file_count: v.files.len(),
            test_failures: v.test_failures.clone(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FileDiffView {
    pub path: String,
    /// `added`, `removed` or `changed`.
    pub status: String,
    /// Unified diff, 3 lines of context.
    pub diff: String,
}

/// How one version differs from another, file by file.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DiffView {
    /// The older version (0: the empty bundle before the first version).
    pub from: i64,
    pub to: i64,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub files: Vec<FileDiffView>,
}

impl DiffView {
    fn new(from: i64, to: i64, d: BundleDiff) -> DiffView {
        DiffView {
            from,
            to,
            added: d.added,
            removed: d.removed,
            changed: d.changed,
            files: d
                .files
                .into_iter()
                .map(|f| FileDiffView {
                    path: f.path,
                    status: f.status.into(),
                    diff: f.diff,
                })
                .collect(),
        }
    }
}

/// One version with its files and its diff from the version before it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionView {
    #[serde(flatten)]
    pub summary: VersionSummary,
    /// Path (relative to the policy directory) → text.
    pub files: BTreeMap<String, String>,
    pub diff: DiffView,
}

/// The answer to a change: the new version, what changed, and the tests' outcome.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AppliedView {
    pub version: VersionSummary,
    pub diff: DiffView,
    /// The policy test report, when the bundle has tests.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub tests: Option<serde_json::Value>,
}

impl AppliedView {
    fn of(a: bundles::Applied) -> AppliedView {
        AppliedView {
            diff: DiffView::new(a.previous.unwrap_or(0), a.version.version, a.diff),
            version: VersionSummary::from(&a.version),
            tests: a.tests.map(|r| serde_json::to_value(r).unwrap_or_default()),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ShadowView {
    pub sha256: String,
    /// The version in force when the shadow started.
    pub based_on: i64,
    pub author: String,
    pub message: Option<String>,
    pub since: chrono::DateTime<chrono::Utc>,
    pub files: Vec<String>,
    /// The policy test report, when the bundle has tests (on `PUT` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub tests: Option<serde_json::Value>,
}

impl ShadowView {
    fn of(s: &crate::policies::Shadow) -> ShadowView {
        ShadowView {
            sha256: s.sha256.clone(),
            based_on: s.based_on,
            author: s.author.clone(),
            message: s.message.clone(),
            since: s.since,
            files: s.bundle.files.keys().cloned().collect(),
            tests: None,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyOverview {
    /// `directory` when this tenant's policies live in the policy directory, else `api`.
    pub managed_by: String,
    /// The tenant's current version (0: none yet).
    pub version: i64,
    /// `enforce`, `warn` or `off`.
    pub mode: String,
    /// The files of the bundle in force.
    pub files: Vec<String>,
    /// The shadow bundle evaluated beside it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowView>,
    /// SHA-256 over every policy text in force (all tenants).
    pub content_hash: String,
    /// Errors of the last refused policy-directory change, if any (the previous set stays in force).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Vec<String>>,
}

// ---- helpers -------------------------------------------------------------------------

fn author(caller: &Caller) -> String {
    format!("token:{}", caller.token.id)
}

fn if_match(headers: &HeaderMap) -> Result<Option<i64>, Problem> {
    headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .parse::<i64>()
        })
        .transpose()
        .map_err(|_| Problem::from(Error::invalid("If-Match must be a policy version number")))
}

fn require_write(caller: &Caller, state: &AppState) -> Result<TenantId, Problem> {
    caller.require(caller.role().can_write_policies(), "change policies")?;
    let tenant = caller.token.tenant.clone();
    if state.policies.dir_manages(tenant.as_str()) {
        return Err(bundles::directory_managed(&state.policies, &tenant));
    }
    // A token confined to a namespace may change that namespace's file, not the bundle.
    if caller.token.namespace.is_some() {
        return Err(Error::forbidden(
            "a token confined to a namespace may not change the tenant's whole bundle",
        )
        .into());
    }
    Ok(tenant)
}

fn require_read(caller: &Caller) -> Result<(), Problem> {
    caller.require(caller.role().can_read_audit(), "read policies")
}

async fn version_or_404(
    state: &AppState,
    tenant: &TenantId,
    version: i64,
) -> Result<BundleVersion, Problem> {
    state
        .store
        .bundle_version(tenant, version)
        .await?
        .ok_or_else(|| {
            Error::not_found(format!(
                "the policy bundle of {tenant} has no version {version}"
            ))
            .into()
        })
}

async fn files_of(state: &AppState, tenant: &TenantId, version: i64) -> Result<Bundle, Problem> {
    if version == 0 {
        return Ok(Bundle::default());
    }
    Ok(Bundle::new(
        version_or_404(state, tenant, version).await?.files,
    ))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TestsQuery {
    /// `refuse` (default): a failing policy test refuses the bundle (422). `warn`: apply
    /// anyway; the answer and the audit event carry the failures.
    pub tests: Option<String>,
}

impl TestsQuery {
    fn gate(&self) -> Result<TestGate, Problem> {
        match self.tests.as_deref() {
            None | Some("refuse") => Ok(TestGate::Refuse),
            Some("warn") => Ok(TestGate::Warn),
            Some(other) => Err(Error::invalid(format!(
                "tests={other:?}: expected \"refuse\" or \"warn\""
            ))
            .into()),
        }
    }
}

// ---- bundle routes -------------------------------------------------------------------

#[utoipa::path(
    get, path = "/api/v1/policies", tag = "policies",
    responses((status = 200, body = PolicyOverview)),
    security(("bearer" = []))
)]
pub async fn overview(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<PolicyOverview>> {
    require_read(&caller)?;
    let tenant = &caller.token.tenant;
    let dir = state.policies.dir_manages(tenant.as_str());
    let (version, mode, files) = match state.policies.api_bundle(tenant.as_str()) {
        Some(b) if !dir => (
            b.version,
            b.mode.as_str().to_owned(),
            b.bundle.files.into_keys().collect(),
        ),
        _ => (
            bundles::current_version(&state, tenant).await?,
            BundleMode::Enforce.as_str().to_owned(),
            state
                .policies
                .dir_bundles()
                .remove(tenant.as_str())
                .map(|b| b.files.into_keys().collect())
                .unwrap_or_default(),
        ),
    };
    Ok(Json(PolicyOverview {
        managed_by: if dir { "directory" } else { "api" }.into(),
        version,
        mode,
        files,
        shadow: state
            .policies
            .shadow(tenant.as_str())
            .map(|s| ShadowView::of(&s)),
        content_hash: state.policies.content_hash(),
        last_error: dir.then(|| state.policies.last_error()).flatten(),
    }))
}

#[utoipa::path(
    get, path = "/api/v1/policies/versions", tag = "policies",
    responses((status = 200, description = "Every version of the tenant's bundle, newest first", body = Vec<VersionSummary>)),
    security(("bearer" = []))
)]
pub async fn versions(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<VersionSummary>>> {
    require_read(&caller)?;
    let history = state.store.bundle_versions(&caller.token.tenant).await?;
    Ok(Json(history.iter().map(VersionSummary::from).collect()))
}

#[utoipa::path(
    get, path = "/api/v1/policies/versions/{version}", tag = "policies",
    params(("version" = i64, Path, description = "Version number")),
    responses((status = 200, body = VersionView), (status = 404, body = Problem)),
    security(("bearer" = []))
)]
pub async fn version(
    State(state): State<AppState>,
    caller: Caller,
    Path(version): Path<i64>,
) -> ApiResult<Json<VersionView>> {
    require_read(&caller)?;
    let tenant = &caller.token.tenant;
    let v = version_or_404(&state, tenant, version).await?;
    let before = files_of(&state, tenant, version - 1).await?;
    let bundle = Bundle::new(v.files.clone());
    Ok(Json(VersionView {
        summary: VersionSummary::from(&v),
        diff: DiffView::new(version - 1, version, diff(&before, &bundle)),
        files: v.files,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// The older version (0: the empty bundle).
    pub from: i64,
    /// The newer version.
    pub to: i64,
}

#[utoipa::path(
    get, path = "/api/v1/policies/diff", tag = "policies", params(DiffQuery),
    responses((status = 200, body = DiffView), (status = 404, body = Problem)),
    security(("bearer" = []))
)]
pub async fn diff_versions(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<DiffQuery>,
) -> ApiResult<Json<DiffView>> {
    require_read(&caller)?;
    let tenant = &caller.token.tenant;
    let from = files_of(&state, tenant, q.from).await?;
    let to = files_of(&state, tenant, q.to).await?;
    Ok(Json(DiffView::new(q.from, q.to, diff(&from, &to))))
}

/// A whole bundle.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BundlePut {
    /// Path (relative to the policy directory, starting with the tenant) → text. Policy
    /// files end in `.cedar`, policy tests in `.test.yaml`.
    pub files: BTreeMap<String, String>,
    /// `enforce` (default), `warn` or `off`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub mode: Option<BundleMode>,
    /// Why the change is made; kept with the version.
    #[serde(default)]
    pub message: Option<String>,
    /// The version this bundle is based on (0 for the first); or `If-Match`.
    #[serde(default)]
    pub base_version: Option<i64>,
}

#[utoipa::path(
    put, path = "/api/v1/policies/bundle", tag = "policies", params(TestsQuery),
    request_body = BundlePut,
    responses(
        (status = 200, description = "Validated, tested, stored, in force and recorded", body = AppliedView),
        (status = 400, description = "A file does not parse or validate; `errors` lists file:line:column messages", body = Problem),
        (status = 409, description = "The bundle is no longer at the base version, or the tenant is managed by the policy directory", body = Problem),
        (status = 422, description = "A policy test failed; `report` holds the test report", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn put_bundle(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    QueryParams(q): QueryParams<TestsQuery>,
    JsonBody(body): JsonBody<BundlePut>,
) -> ApiResult<Json<AppliedView>> {
    let tenant = require_write(&caller, &state)?;
    let gate = q.gate()?;
    let base = body.base_version.or(if_match(&headers)?).ok_or_else(|| {
        Problem::from(Error::invalid(
            "name the version your bundle is based on: `base_version` in the body or an If-Match header (0 for the first version)",
        ))
    })?;
    let applied = bundles::apply(
        &state,
        BundleChange {
            tenant,
            bundle: Bundle::new(body.files),
            mode: body.mode.unwrap_or_default(),
            author: author(&caller),
            actor: caller.actor(),
            message: body.message,
            expected_version: Some(base),
            tests: gate,
            event_type: catalog::POLICY_BUNDLE_APPLIED,
            event_namespace: None,
            extra: serde_json::json!({}),
        },
    )
    .await?;
    Ok(Json(AppliedView::of(applied)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version whose content becomes current again (as a new version).
    pub version: i64,
    #[serde(default)]
    pub message: Option<String>,
    /// Optional optimistic concurrency: the version the caller expects to be current.
    #[serde(default)]
    pub base_version: Option<i64>,
}

#[utoipa::path(
    post, path = "/api/v1/policies/rollback", tag = "policies",
    request_body = RollbackRequest,
    responses(
        (status = 200, description = "A new version equal to the old one is in force", body = AppliedView),
        (status = 404, description = "No such version", body = Problem),
        (status = 409, description = "Concurrent change, or the tenant is managed by the policy directory", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<RollbackRequest>,
) -> ApiResult<Json<AppliedView>> {
    let tenant = require_write(&caller, &state)?;
    let target = version_or_404(&state, &tenant, body.version).await?;
    let applied = bundles::apply(
        &state,
        BundleChange {
            tenant,
            bundle: Bundle::new(target.files),
            mode: BundleMode::parse(&target.mode).unwrap_or_default(),
            author: author(&caller),
            actor: caller.actor(),
            message: Some(
                body.message
                    .unwrap_or_else(|| format!("rollback to version {}", body.version)),
            ),
            expected_version: body.base_version,
            // What is rolled back to was applied before; its tests are not a gate now.
            tests: TestGate::Skip,
            event_type: catalog::POLICY_BUNDLE_ROLLED_BACK,
            event_namespace: None,
            extra: serde_json::json!({ "rolled_back_to": body.version }),
        },
    )
    .await?;
    Ok(Json(AppliedView::of(applied)))
}

/// A candidate bundle to run in shadow.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowPut {
    /// Path → text, as in `PUT /api/v1/policies/bundle`.
    pub files: BTreeMap<String, String>,
    #[serde(default)]
    pub message: Option<String>,
}

#[utoipa::path(
    put, path = "/api/v1/policies/shadow", tag = "policies", params(TestsQuery),
    request_body = ShadowPut,
    responses(
        (status = 200, description = "The candidate runs in shadow beside the bundle in force", body = ShadowView),
        (status = 400, description = "A file does not parse or validate", body = Problem),
        (status = 422, description = "A policy test failed", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn put_shadow(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<TestsQuery>,
    JsonBody(body): JsonBody<ShadowPut>,
) -> ApiResult<Json<ShadowView>> {
    // A shadow never acts, so a directory-managed tenant may run one too (to try a change
    // before committing it); it is promoted by committing the files.
    caller.require(caller.role().can_write_policies(), "change policies")?;
    if caller.token.namespace.is_some() {
        return Err(Error::forbidden(
            "a token confined to a namespace may not run a shadow bundle for the tenant",
        )
        .into());
    }
    let (shadow, report) = bundles::start_shadow(
        &state,
        &caller.token.tenant,
        Bundle::new(body.files),
        author(&caller),
        caller.actor(),
        body.message,
        q.gate()?,
    )
    .await?;
    Ok(Json(ShadowView {
        tests: report.map(|r| serde_json::to_value(r).unwrap_or_default()),
        ..ShadowView::of(&shadow)
    }))
}

#[utoipa::path(
    get, path = "/api/v1/policies/shadow", tag = "policies",
    responses((status = 200, body = ShadowView), (status = 404, description = "No shadow bundle", body = Problem)),
    security(("bearer" = []))
)]
pub async fn get_shadow(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<ShadowView>> {
    require_read(&caller)?;
    let tenant = &caller.token.tenant;
    state
        .policies
        .shadow(tenant.as_str())
        .map(|s| Json(ShadowView::of(&s)))
        .ok_or_else(|| Error::not_found(format!("tenant {tenant} has no shadow bundle")).into())
}

#[utoipa::path(
    delete, path = "/api/v1/policies/shadow", tag = "policies",
    responses((status = 204, description = "Stopped"), (status = 404, description = "No shadow bundle", body = Problem)),
    security(("bearer" = []))
)]
pub async fn delete_shadow(State(state): State<AppState>, caller: Caller) -> ApiResult<StatusCode> {
    caller.require(caller.role().can_write_policies(), "change policies")?;
    bundles::stop_shadow(&state, &caller.token.tenant, caller.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    #[serde(default)]
    pub message: Option<String>,
    /// Optional optimistic concurrency: the version the caller expects to be current.
    #[serde(default)]
    pub base_version: Option<i64>,
}

#[utoipa::path(
    post, path = "/api/v1/policies/promote", tag = "policies",
    request_body = PromoteRequest,
    responses(
        (status = 200, description = "The shadow bundle (or the bundle in warn mode) is enforced as a new version", body = AppliedView),
        (status = 409, description = "Nothing to promote, a concurrent change, or the tenant is managed by the policy directory", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn promote(
    State(state): State<AppState>,
    caller: Caller,
    OptionalJsonBody(body): OptionalJsonBody<PromoteRequest>,
) -> ApiResult<Json<AppliedView>> {
    let tenant = require_write(&caller, &state)?;
    let shadow = state.policies.shadow(tenant.as_str());
    let current = state.policies.api_bundle(tenant.as_str());
    let (bundle, from) = match (&shadow, &current) {
        (Some(s), _) => (s.bundle.clone(), "shadow"),
        (None, Some(c)) if c.mode != BundleMode::Enforce => (c.bundle.clone(), c.mode.as_str()),
        _ => {
            return Err(Error::Conflict(format!(
                "nothing to promote: tenant {tenant} has no shadow bundle and its bundle is enforced"
            ))
            .into());
        }
    };
    let applied = bundles::apply(
        &state,
        BundleChange {
            tenant: tenant.clone(),
            bundle,
            mode: BundleMode::Enforce,
            author: author(&caller),
            actor: caller.actor(),
            message: Some(
                body.message
                    .unwrap_or_else(|| format!("promoted from {from}")),
            ),
            expected_version: body.base_version,
            tests: TestGate::Skip,
            event_type: catalog::POLICY_BUNDLE_PROMOTED,
            event_namespace: None,
            extra: serde_json::json!({
                "promoted_from": from,
                "shadow_sha256": shadow.as_ref().map(|s| s.sha256.clone()),
            }),
        },
    )
    .await?;
    if let Some(s) = shadow {
        // The candidate is now the bundle in force; evaluating it twice would only ever agree.
        if state
            .policies
            .shadow(tenant.as_str())
            .is_some_and(|now| now.sha256 == s.sha256)
        {
            state.policies.set_shadow(tenant.as_str(), None);
        }
    }
    Ok(Json(AppliedView::of(applied)))
}

// ---- per-namespace routes ------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyPut {
    /// Cedar policy text for the namespace (replaces the previous text).
    pub text: String,
    /// Why the change is made; kept with the version.
    #[serde(default)]
    pub message: Option<String>,
    /// Optimistic concurrency: the bundle version this change is based on (0 for the first).
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
        let expected = if_match(req.headers())?;
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

/// A namespace's file of the bundle, as the per-namespace routes show it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyView {
    pub namespace: String,
    /// The bundle version.
    pub version: i64,
    /// The bundle file holding the namespace's text: `<namespace>/policies.cedar`.
    pub file: String,
    pub text: Option<String>,
    pub author: String,
    pub message: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

fn namespace_of(caller: &Caller, raw: &str) -> Result<NamespacePath, Problem> {
    let ns = NamespacePath::parse(raw)?;
    caller.check_namespace(&ns)?;
    Ok(ns)
}

fn namespace_file(ns: &NamespacePath) -> String {
    format!("{ns}/{NAMESPACE_FILE}")
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
    require_read(&caller)?;
    let ns = namespace_of(&caller, &raw)?;
    let tenant = &caller.token.tenant;
    let file = namespace_file(&ns);
    let missing = || Problem::from(Error::not_found(format!("no API-managed policies in {ns}")));
    let current = state
        .policies
        .api_bundle(tenant.as_str())
        .ok_or_else(missing)?;
    let text = current
        .bundle
        .files
        .get(&file)
        .cloned()
        .ok_or_else(missing)?;
    let v = version_or_404(&state, tenant, current.version).await?;
    Ok(Json(PolicyView {
        namespace: ns.to_string(),
        version: v.version,
        file,
        text: Some(text),
        author: v.author,
        message: v.message,
        created_at: v.created_at,
    }))
}

#[utoipa::path(
    put, path = "/api/v1/policies/{namespace}", tag = "policies",
    params(("namespace" = String, Path, description = "Namespace path, e.g. acme/platform")),
    request_body(content = String, description = "Cedar text (text/plain) or JSON PolicyPut", content_type = "text/plain"),
    responses(
        (status = 200, description = "Validated, stored as a new bundle version, in force and recorded", body = PolicyView),
        (status = 400, description = "Does not parse or validate; `errors` lists file:line messages", body = Problem),
        (status = 409, description = "Version conflict, or the tenant is managed by the policy directory", body = Problem),
        (status = 422, description = "A policy test of the bundle failed", body = Problem),
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
    responses((status = 200, description = "Removed (a new bundle version without the file)", body = PolicyView), (status = 404, body = Problem)),
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
        return Err(bundles::directory_managed(&state.policies, &tenant));
    }
    let file = namespace_file(&ns);
    let current = state.policies.api_bundle(tenant.as_str());
    let mode = current.as_ref().map(|c| c.mode).unwrap_or_default();
    let mut bundle = current.map(|c| c.bundle).unwrap_or_default();
    let event_type = match &text {
        Some(t) => {
            bundle.files.insert(file.clone(), t.clone());
            catalog::POLICY_UPDATED
        }
        None => {
            if bundle.files.remove(&file).is_none() {
                return Err(Error::not_found(format!("no API-managed policies in {ns}")).into());
            }
            catalog::POLICY_DELETED
        }
    };
    let applied = bundles::apply(
        state,
        BundleChange {
            tenant,
            bundle,
            mode,
            author: author(caller),
            actor: caller.actor(),
            message: message.clone(),
            expected_version,
            tests: TestGate::Refuse,
            event_type,
            event_namespace: Some(ns.clone()),
            extra: serde_json::json!({ "namespace": ns.as_str(), "file": file }),
        },
    )
    .await?;
    Ok(PolicyView {
        namespace: ns.to_string(),
        version: applied.version.version,
        file,
        text,
        author: applied.version.author,
        message,
        created_at: applied.version.created_at,
    })
}
