//! Token administration for a tenant's admins: create (secret shown once), list, revoke.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use warden_core::{Error, NamespacePath, Role, catalog};
use warden_store::TokenRecord;

use crate::extract::{Caller, JsonBody};
use crate::problem::{ApiResult, Problem};
use crate::state::AppState;
use crate::tokens::{TokenSpec, mint, token_event};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub role: Role,
    /// The agent (agent tokens only).
    #[serde(default)]
    pub agent: Option<String>,
    /// The user the agent acts for (agent tokens only).
    #[serde(default)]
    pub on_behalf_of: Option<String>,
    /// Confine the token to this namespace and below.
    #[serde(default)]
    pub namespace: Option<NamespacePath>,
    /// Lifetime in seconds; no expiry when absent.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenView {
    pub id: String,
    pub role: Role,
    pub agent: Option<String>,
    pub on_behalf_of: Option<String>,
    pub namespace: Option<String>,
    pub description: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<&TokenRecord> for TokenView {
    fn from(t: &TokenRecord) -> Self {
        TokenView {
            id: t.id.clone(),
            role: t.role,
            agent: t.agent.clone(),
            on_behalf_of: t.on_behalf_of.clone(),
            namespace: t.namespace.as_ref().map(|n| n.to_string()),
            description: t.description.clone(),
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: TokenView,
    /// The secret. Shown this once; Warden keeps only its hash.
    pub token: String,
}

#[utoipa::path(
    post, path = "/api/v1/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<CreateToken>,
) -> ApiResult<(axum::http::StatusCode, Json<CreatedToken>)> {
    caller.require(caller.role().can_manage_tokens(), "manage tokens")?;
    let spec = TokenSpec {
        tenant: caller.token.tenant.clone(),
        role: req.role,
        agent: req.agent,
        on_behalf_of: req.on_behalf_of,
        namespace: req.namespace,
        ttl: req.ttl_seconds.map(Duration::from_secs),
        description: req.description,
    };
    if let (Some(scope), Some(ns)) = (&caller.token.namespace, &spec.namespace)
        && !ns.is_within(scope)
    {
        return Err(
            Error::forbidden(format!("this token is confined to namespace {scope}")).into(),
        );
    }
    let minted = mint(&spec, chrono::Utc::now())?;
    // Recorded before the token exists: if the audit trail cannot record, no token is made.
    state
        .pipeline
        .record(token_event(
            catalog::TOKEN_CREATED,
            &minted.record,
            caller.actor(),
            "warden.api",
        ))
        .await?;
    state.store.insert_token(&minted.record).await?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(CreatedToken {
            info: (&minted.record).into(),
            token: minted.secret,
        }),
    ))
}

#[utoipa::path(
    get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, body = Vec<TokenView>)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<TokenView>>> {
    caller.require(caller.role().can_manage_tokens(), "manage tokens")?;
    let tokens = state.store.list_tokens(&caller.token.tenant).await?;
    Ok(Json(tokens.iter().map(TokenView::from).collect()))
}

#[utoipa::path(
    delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "Token id (tok_…)")),
    responses((status = 200, body = TokenView), (status = 404, body = Problem)),
    security(("bearer" = []))
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenView>> {
    caller.require(caller.role().can_manage_tokens(), "manage tokens")?;
    let tenant = &caller.token.tenant;
    let existing = state
        .store
        .list_tokens(tenant)
        .await?
        .into_iter()
        .find(|t| t.id == id);
    let existing =
        existing.ok_or_else(|| Problem::from(Error::not_found(format!("token {id} not found"))))?;
    state
        .pipeline
        .record(token_event(
            catalog::TOKEN_REVOKED,
            &existing,
            caller.actor(),
            "warden.api",
        ))
        .await?;
    let revoked = state
        .store
        .revoke_token(tenant, &id)
        .await?
        .ok_or_else(|| Problem::from(Error::not_found(format!("token {id} not found"))))?;
    state.tokens.forget(&id);
    Ok(Json((&revoked).into()))
}
