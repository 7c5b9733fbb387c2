//! Stream destinations under `/api/v1/destinations`: where the tenant's audit log is pushed
//! (webhooks, the Splunk HEC, rotating files), each with its own cursor on the log.
//!
//! `admin` manages them; `admin` and `auditor` read them. A token confined to a namespace may
//! not touch them: a destination exports the tenant's whole log unless filtered. Destinations
//! declared in a node's configuration file are read-only here (409). Every change is recorded
//! in the audit trail before it is applied. Settings that cannot be used (a bad URL, a secret
//! value where only a reference belongs, more than 20 headers) are `422` with every problem
//! listed; unknown fields are `400`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use warden_core::{AuditEvent, Error, Role, catalog};
use warden_delivery::{DestinationSpec, ReplayReport};
use warden_store::StoredDestination;

use crate::extract::{Caller, JsonBody};
use crate::problem::{ApiResult, Problem};
use crate::state::AppState;

/// `api` or `config`.
pub const ORIGIN_API: &str = "api";
pub const ORIGIN_CONFIG: &str = "config";

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DestinationView {
    #[serde(flatten)]
    pub spec: DestinationSpec,
    /// `api` or `config` (declared in a node's configuration file; read-only here).
    pub origin: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DestinationList {
    pub destinations: Vec<DestinationView>,
}

/// Where a destination stands in the tenant's log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryStateView {
    pub tenant: String,
    /// Every event below this position was delivered or dead-lettered.
    pub next_seq: u64,
    /// Events in the tenant's log.
    pub log_size: u64,
    /// `log_size - next_seq`: events not yet delivered.
    pub lag: u64,
    /// `closed`, `open` or `half_open`, as the delivering node last reported it.
    pub circuit: String,
    pub dead_letters: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// The node delivering it, and until when its lease runs.
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DestinationDetail {
    #[serde(flatten)]
    pub destination: DestinationView,
    /// One entry per tenant the destination reads (a destination belongs to one tenant).
    pub state: Vec<DeliveryStateView>,
}

fn view(d: StoredDestination) -> Result<DestinationView, Problem> {
    let spec = serde_json::from_value(d.spec)
        .map_err(|e| Error::internal(format!("stored destination {}: {e}", d.name)))?;
    Ok(DestinationView {
        spec,
        origin: d.origin,
        created_at: d.created_at,
        updated_at: d.updated_at,
    })
}

fn reader(caller: &Caller) -> Result<(), Problem> {
    caller.require(
        matches!(caller.role(), Role::Admin | Role::Auditor),
        "read destinations",
    )?;
    unconfined(caller)
}

fn writer(caller: &Caller) -> Result<(), Problem> {
    caller.require(caller.role() == Role::Admin, "manage destinations")?;
    unconfined(caller)
}

fn unconfined(caller: &Caller) -> Result<(), Problem> {
    match &caller.token.namespace {
        Some(scope) => Err(Error::forbidden(format!(
            "this token is confined to namespace {scope}; destinations export the tenant's whole log and need an unconfined token"
        ))
        .into()),
        None => Ok(()),
    }
}

/// Settings that parse but cannot be used: 422 with every problem.
pub fn check(spec: &DestinationSpec, tenant: &warden_core::TenantId) -> Result<(), Problem> {
    let problems = spec.validate(tenant);
    if problems.is_empty() {
        return Ok(());
    }
    Err(Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-destination",
        format!(
            "destination {:?} is not usable ({} problem{}); nothing was stored",
            spec.name,
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        ),
    )
    .with_errors(problems))
}

/// The event of a destination change (its settings hold only secret references).
pub fn event(
    tenant: &warden_core::TenantId,
    event_type: &str,
    source: &str,
    actor: warden_core::Actor,
    payload: serde_json::Value,
) -> AuditEvent {
    let root = tenant.root_namespace();
    let mut e = AuditEvent::new(
        tenant.as_str(),
        root.as_str(),
        event_type,
        source,
        actor,
        payload,
    );
    e.header.action = Some(
        event_type
            .rsplit('.')
            .next()
            .unwrap_or(event_type)
            .to_owned(),
    );
    e
}

async fn find(state: &AppState, caller: &Caller, name: &str) -> Result<StoredDestination, Problem> {
    state
        .store
        .get_destination(&caller.token.tenant, name)
        .await?
        .ok_or_else(|| Error::not_found(format!("destination {name} not found")).into())
}

fn api_managed(d: &StoredDestination) -> Result<(), Problem> {
    if d.origin == ORIGIN_CONFIG {
        return Err(Error::Conflict(format!(
            "destination {} is declared in the configuration file of a node; change it there",
            d.name
        ))
        .into());
    }
    Ok(())
}

#[utoipa::path(
    get, path = "/api/v1/destinations", tag = "destinations",
    responses((status = 200, body = DestinationList), (status = 403, body = Problem)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<DestinationList>> {
    reader(&caller)?;
    let all = state
        .store
        .list_destinations(Some(&caller.token.tenant))
        .await?;
    Ok(Json(DestinationList {
        destinations: all.into_iter().map(view).collect::<Result<_, _>>()?,
    }))
}

#[utoipa::path(
    post, path = "/api/v1/destinations", tag = "destinations", request_body = DestinationSpec,
    responses(
        (status = 201, body = DestinationView),
        (status = 400, description = "Not JSON of this shape (e.g. an unknown field)", body = Problem),
        (status = 403, body = Problem),
        (status = 409, description = "A destination of that name exists", body = Problem),
        (status = 422, description = "Not usable: `errors` lists every problem (bad URL, a secret value instead of an env:/file: reference, more than 20 headers, …)", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(spec): JsonBody<DestinationSpec>,
) -> ApiResult<(StatusCode, Json<DestinationView>)> {
    writer(&caller)?;
    let tenant = caller.token.tenant.clone();
    check(&spec, &tenant)?;
    let exists = || {
        Error::Conflict(format!(
            "destination {} exists; PUT /api/v1/destinations/{} replaces it",
            spec.name, spec.name
        ))
    };
    if state
        .store
        .get_destination(&tenant, &spec.name)
        .await?
        .is_some()
    {
        return Err(exists().into());
    }
    let now = Utc::now();
    let stored = StoredDestination {
        tenant: tenant.clone(),
        name: spec.name.clone(),
        spec: serde_json::to_value(&spec).map_err(|e| Error::internal(e.to_string()))?,
        origin: ORIGIN_API.into(),
        created_at: now,
        updated_at: now,
    };
    // Recorded before it exists: if the audit trail cannot record, nothing is stored.
    state
        .pipeline
        .record(event(
            &tenant,
            catalog::DESTINATION_CREATED,
            "warden.api",
            caller.actor(),
            json!({"destination": stored.spec}),
        ))
        .await?;
    // The cursor is placed with the creation, so `start: now` misses nothing recorded after.
    let start = spec.start.unwrap_or_default().delivery_start();
    if !state.store.create_destination(&stored, start).await? {
        return Err(exists().into());
    }
    Ok((StatusCode::CREATED, Json(view(stored)?)))
}

#[utoipa::path(
    get, path = "/api/v1/destinations/{name}", tag = "destinations",
    params(("name" = String, Path)),
    responses((status = 200, body = DestinationDetail), (status = 404, body = Problem)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<DestinationDetail>> {
    reader(&caller)?;
    let d = find(&state, &caller, &name).await?;
    let tenant = d.tenant.clone();
    let s = state.store.delivery_state(&tenant, &name).await?;
    let log_size = state.store.merkle_head(&tenant).await?.size;
    Ok(Json(DestinationDetail {
        destination: view(d)?,
        state: vec![DeliveryStateView {
            tenant: tenant.to_string(),
            next_seq: s.next_seq,
            log_size,
            lag: log_size.saturating_sub(s.next_seq),
            circuit: s.circuit,
            dead_letters: s.dead_letters,
            last_error: s.last_error,
            last_error_at: s.last_error_at,
            lease_owner: s.lease_owner,
            lease_expires_at: s.lease_expires_at,
        }],
    }))
}

#[utoipa::path(
    put, path = "/api/v1/destinations/{name}", tag = "destinations",
    params(("name" = String, Path)), request_body = DestinationSpec,
    responses(
        (status = 200, body = DestinationView),
        (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "Declared in a configuration file", body = Problem),
        (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn replace(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(spec): JsonBody<DestinationSpec>,
) -> ApiResult<Json<DestinationView>> {
    writer(&caller)?;
    if spec.name != name {
        return Err(Error::invalid(format!(
            "the body names destination {:?}, the path {name:?}; a destination cannot be renamed",
            spec.name
        ))
        .into());
    }
    let before = find(&state, &caller, &name).await?;
    api_managed(&before)?;
    check(&spec, &before.tenant)?;
    let stored = StoredDestination {
        spec: serde_json::to_value(&spec).map_err(|e| Error::internal(e.to_string()))?,
        updated_at: Utc::now(),
        ..before.clone()
    };
    state
        .pipeline
        .record(event(
            &before.tenant,
            catalog::DESTINATION_UPDATED,
            "warden.api",
            caller.actor(),
            json!({"before": before.spec, "after": stored.spec}),
        ))
        .await?;
    state.store.put_destination(&stored).await?;
    Ok(Json(view(stored)?))
}

#[utoipa::path(
    delete, path = "/api/v1/destinations/{name}", tag = "destinations",
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    writer(&caller)?;
    let before = find(&state, &caller, &name).await?;
    api_managed(&before)?;
    let dropped = state
        .store
        .delivery_state(&before.tenant, &name)
        .await?
        .dead_letters;
    state
        .pipeline
        .record(event(
            &before.tenant,
            catalog::DESTINATION_DELETED,
            "warden.api",
            caller.actor(),
            json!({"destination": before.spec, "dead_letters_dropped": dropped}),
        ))
        .await?;
    state
        .store
        .delete_destination(&before.tenant, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/api/v1/destinations/{name}/replay", tag = "destinations",
    params(("name" = String, Path)),
    responses((status = 200, description = "What was re-delivered; `error` says why it stopped early", body = ReplayReport), (status = 404, body = Problem)),
    security(("bearer" = []))
)]
pub async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ReplayReport>> {
    writer(&caller)?;
    let d = find(&state, &caller, &name).await?;
    let report = warden_delivery::replay(state.store.as_ref(), &d).await?;
    state
        .pipeline
        .record(event(
            &d.tenant,
            catalog::DESTINATION_REPLAYED,
            "warden.api",
            caller.actor(),
            json!({"destination": name, "delivered": report.delivered, "remaining": report.remaining, "error": report.error}),
        ))
        .await?;
    Ok(Json(report))
}

/// Puts the destinations of the configuration file in the store (origin `config`), recording
/// each one that is new or changed. Several nodes with the same file agree: an unchanged
/// destination is left alone.
pub async fn declare_configured(state: &AppState) -> anyhow::Result<()> {
    for (tenant, spec) in &state.config.destinations {
        let problems = spec.validate(tenant);
        if !problems.is_empty() {
            anyhow::bail!(
                "[[destinations]] {} of tenant {tenant}: {}",
                spec.name,
                problems.join("; ")
            );
        }
        let value = serde_json::to_value(spec)?;
        state.store.ensure_tenant(tenant).await?;
        let before = state.store.get_destination(tenant, &spec.name).await?;
        if before
            .as_ref()
            .is_some_and(|b| b.spec == value && b.origin == ORIGIN_CONFIG)
        {
            continue;
        }
        let now = Utc::now();
        let stored = StoredDestination {
            tenant: tenant.clone(),
            name: spec.name.clone(),
            spec: value,
            origin: ORIGIN_CONFIG.into(),
            created_at: before.as_ref().map_or(now, |b| b.created_at),
            updated_at: now,
        };
        let actor = warden_core::Actor {
            role: Some("system".into()),
            ..Default::default()
        };
        let (event_type, payload) = match &before {
            None => (
                catalog::DESTINATION_CREATED,
                json!({"destination": stored.spec}),
            ),
            Some(b) => (
                catalog::DESTINATION_UPDATED,
                json!({"before": b.spec, "after": stored.spec}),
            ),
        };
        state
            .pipeline
            .record(event(tenant, event_type, "warden.config", actor, payload))
            .await?;
        if before.is_none() {
            let start = spec.start.unwrap_or_default().delivery_start();
            // false: another node with the same file created it meanwhile.
            state.store.create_destination(&stored, start).await?;
        } else {
            state.store.put_destination(&stored).await?;
        }
        tracing::info!(%tenant, destination = %spec.name, "destination from the configuration file");
    }
    Ok(())
}
