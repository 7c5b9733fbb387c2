//! Reading the audit trail: query, fetch, export, proofs and checkpoints.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use warden_audit::export::{ExportFormat, ExportRecord};
use warden_audit::merkle::{consistency_plan, inclusion_plan};
use warden_core::{AuditEvent, Error, NamespacePath};
use warden_store::checkpointer::{checkpoint_tenant, origin};
use warden_store::{EventFilter, PageRequest, StoredCheckpoint, StoredEvent};

use crate::extract::{Caller, JsonBody};
use crate::problem::{ApiResult, Problem};
use crate::query::QueryParams;
use crate::state::AppState;

pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_PAGE: u32 = 1000;
const EXPORT_PAGE: u32 = 1000;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Events at or after this time (RFC 3339). No limit on the span.
    pub from: Option<DateTime<Utc>>,
    /// Events before this time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// A namespace and everything below it.
    pub namespace: Option<String>,
    /// Event type, e.g. `authz.decision`.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub agent: Option<String>,
    /// The on-behalf-of user.
    pub user: Option<String>,
    pub session: Option<String>,
    pub action: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    /// `allow`, `deny` or `approval_required`.
    pub decision: Option<String>,
    /// Page size (default 100, at most 1,000). Ignored by export.
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Export only: `ndjson` (default), `ocsf`, `hec`, `cef` or `csv`.
    pub format: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    #[serde(flatten)]
    pub event: AuditEvent,
    /// Position in the tenant's Merkle log.
    pub seq: u64,
    /// True once the payload was purged by retention (the header stays verifiable).
    pub payload_purged: bool,
}

impl From<StoredEvent> for EventView {
    fn from(s: StoredEvent) -> EventView {
        EventView {
            payload_purged: s.payload_json.is_none(),
            seq: s.seq,
            event: s.event,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    pub events: Vec<EventView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

fn can_read(caller: &Caller) -> Result<(), Problem> {
    caller.require(caller.role().can_read_audit(), "read the audit trail")
}

/// Turns query parameters into a store filter confined to the caller's tenant and scope.
fn filter_for(caller: &Caller, q: &EventQuery) -> Result<EventFilter, Problem> {
    let token = &caller.token;
    let namespace = match &q.namespace {
        Some(ns) => {
            let ns = NamespacePath::parse(ns)?;
            caller.check_namespace(&ns)?;
            Some(ns)
        }
        None => token.namespace.clone(),
    };
    if let Some(d) = &q.decision
        && warden_core::Outcome::parse(d).is_none()
    {
        return Err(Error::invalid(format!(
            "decision must be allow, deny or approval_required, not {d:?}"
        ))
        .into());
    }
    if let (Some(f), Some(t)) = (q.from, q.to)
        && f > t
    {
        return Err(Error::invalid("`from` is after `to`").into());
    }
    Ok(EventFilter {
        from: q.from,
        to: q.to,
        namespace,
        event_type: q.event_type.clone(),
        agent: q.agent.clone(),
        on_behalf_of: q.user.clone(),
        session: q.session.clone(),
        action: q.action.clone(),
        resource_type: q.resource_type.clone(),
        resource_id: q.resource_id.clone(),
        outcome: q.decision.clone(),
    })
}

fn parse_cursor(c: &Option<String>) -> Result<Option<u64>, Problem> {
    match c {
        None => Ok(None),
        Some(c) => c
            .strip_prefix("s")
            .and_then(|n| n.parse().ok())
            .map(Some)
            .ok_or_else(|| Error::invalid("`cursor` is not one this API returned").into()),
    }
}

#[utoipa::path(
    get, path = "/api/v1/audit/events", tag = "audit", params(EventQuery),
    responses((status = 200, description = "Newest first, keyset-paginated", body = EventPage),
              (status = 400, description = "Bad filter", body = Problem)),
    security(("bearer" = []))
)]
pub async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<EventQuery>,
) -> ApiResult<Json<EventPage>> {
    can_read(&caller)?;
    if q.format.is_some() {
        return Err(Error::invalid("`format` applies to /api/v1/audit/export only").into());
    }
    let filter = filter_for(&caller, &q)?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let page = PageRequest {
        after_seq: parse_cursor(&q.cursor)?,
        limit,
        oldest_first: false,
    };
    let rows = state
        .store
        .query_events(&caller.token.tenant, &filter, page)
        .await?;
    let next_cursor = (rows.len() as u32 == limit)
        .then(|| rows.last().map(|r| format!("s{}", r.seq)))
        .flatten();
    Ok(Json(EventPage {
        events: rows.into_iter().map(EventView::from).collect(),
        next_cursor,
    }))
}

async fn find_event(state: &AppState, caller: &Caller, id: &str) -> Result<StoredEvent, Problem> {
    let not_found = || Problem::from(Error::not_found(format!("event {id} not found")));
    uuid::Uuid::parse_str(id).map_err(|_| not_found())?;
    let e = state
        .store
        .get_event(&caller.token.tenant, id)
        .await?
        .ok_or_else(not_found)?;
    if let Some(scope) = &caller.token.namespace {
        let ns = NamespacePath::parse(&e.event.header.namespace).map_err(|_| not_found())?;
        if !ns.is_within(scope) {
            return Err(not_found());
        }
    }
    Ok(e)
}

#[utoipa::path(
    get, path = "/api/v1/audit/events/{id}", tag = "audit",
    params(("id" = String, Path, description = "Event id (UUID)")),
    responses((status = 200, body = EventView), (status = 404, body = Problem)),
    security(("bearer" = []))
)]
pub async fn get_event(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<EventView>> {
    can_read(&caller)?;
    Ok(Json(find_event(&state, &caller, &id).await?.into()))
}

#[utoipa::path(
    get, path = "/api/v1/audit/export", tag = "audit", params(EventQuery),
    responses((status = 200, description = "Every matching event, oldest first, streamed: `ndjson` (Warden JSON, one object per line), `ocsf` (OCSF API Activity, one object per line), `hec` (Splunk HEC envelopes, one per line), `cef` (one CEF line per event) or `csv` (header row, then one row per event)", content_type = "application/x-ndjson"),
              (status = 400, description = "Bad filter or unknown format", body = Problem)),
    security(("bearer" = []))
)]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<EventQuery>,
) -> ApiResult<Response> {
    can_read(&caller)?;
    let requested = q.format.as_deref().unwrap_or("ndjson");
    let format = ExportFormat::parse(requested).ok_or_else(|| {
        Error::invalid(format!(
            "unsupported export format {requested:?}; supported: {}",
            ExportFormat::names()
        ))
    })?;
    let filter = filter_for(&caller, &q)?;
    let tenant = caller.token.tenant.clone();
    // Page through the store with a keyset cursor: memory stays constant whatever matches.
    let preamble = futures::stream::once(async move {
        Ok::<_, std::io::Error>(Bytes::from_static(format.preamble()))
    });
    // The next page is read while this one is formatted: reading (on a blocking thread for
    // SQLite) and formatting then use both cores.
    let read = move |after: Option<u64>| {
        let (state, filter, tenant) = (state.clone(), filter.clone(), tenant.clone());
        tokio::spawn(async move {
            let page = PageRequest {
                after_seq: after,
                limit: EXPORT_PAGE,
                oldest_first: true,
            };
            state.store.export_events(&tenant, &filter, page).await
        })
    };
    let first = read(parse_cursor(&q.cursor)?);
    let pages = futures::stream::try_unfold(Some(first), move |pending| {
        let read = read.clone();
        async move {
            let Some(pending) = pending else {
                return Ok::<_, std::io::Error>(None);
            };
            let rows = pending
                .await
                .map_err(std::io::Error::other)?
                .map_err(std::io::Error::other)?;
            if rows.is_empty() {
                return Ok(None);
            }
            let next =
                (rows.len() as u32 == EXPORT_PAGE).then(|| rows.last().map(|r| read(Some(r.seq))));
            let mut buf = Vec::with_capacity(rows.len() * 1024);
            for r in &rows {
                format.write(
                    &mut buf,
                    &ExportRecord {
                        event: &r.event,
                        seq: r.seq,
                        payload_purged: r.payload_json.is_none(),
                        payload_json: r.payload_json.as_deref(),
                    },
                );
            }
            Ok(Some((Bytes::from(buf), next.flatten())))
        }
    });
    let stream = futures::StreamExt::chain(preamble, pages);
    let mut resp = Body::from_stream(stream).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    Ok(resp)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HashRequest {
    /// The value to look for. Strings are hashed as their UTF-8 bytes, other JSON values in
    /// canonical form — exactly as redaction hashed them.
    #[schema(value_type = Object)]
    pub value: Value,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HashResponse {
    /// `hmac-sha256:<hex>`, as it appears in redacted events.
    pub hash: String,
}

#[utoipa::path(
    post, path = "/api/v1/audit/hash", tag = "audit", request_body = HashRequest,
    responses((status = 200, body = HashResponse)),
    security(("bearer" = []))
)]
pub async fn hash_value(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<HashRequest>,
) -> ApiResult<Json<HashResponse>> {
    can_read(&caller)?;
    Ok(Json(HashResponse {
        hash: state
            .redactor(caller.token.tenant.as_str())
            .hash_value(&req.value),
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckpointView {
    pub size: u64,
    /// Hex SHA-256 Merkle root.
    pub root: String,
    pub time: DateTime<Utc>,
    /// The signed note (C2SP checkpoint format).
    pub note: String,
}

impl From<StoredCheckpoint> for CheckpointView {
    fn from(c: StoredCheckpoint) -> Self {
        CheckpointView {
            size: c.size,
            root: hex::encode(c.root),
            time: c.time,
            note: c.note,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckpointList {
    pub origin: String,
    /// The Ed25519 public key that verifies every note, in Warden's key-file form.
    pub public_key: String,
    /// Newest first.
    pub checkpoints: Vec<CheckpointView>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CheckpointQuery {
    /// How many (newest first, default 100, at most 1,000).
    pub limit: Option<u32>,
}

#[utoipa::path(
    get, path = "/api/v1/audit/checkpoints", tag = "audit", params(CheckpointQuery),
    responses((status = 200, body = CheckpointList)),
    security(("bearer" = []))
)]
pub async fn checkpoints(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<CheckpointQuery>,
) -> ApiResult<Json<CheckpointList>> {
    can_read(&caller)?;
    let tenant = &caller.token.tenant;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE) as usize;
    let mut all = state.store.checkpoints(tenant).await?;
    all.reverse();
    all.truncate(limit);
    Ok(Json(CheckpointList {
        origin: origin(tenant),
        public_key: state.verifier().to_key_file().trim().to_owned(),
        checkpoints: all.into_iter().map(CheckpointView::from).collect(),
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InclusionProof {
    #[schema(value_type = String, format = Uuid)]
    pub event_id: uuid::Uuid,
    /// The event's leaf index.
    pub seq: u64,
    /// Hex leaf hash: SHA-256(0x00 ‖ canonical header).
    pub leaf_hash: String,
    pub tree_size: u64,
    /// Hex Merkle root at `tree_size`.
    pub root: String,
    /// Hex sibling hashes, leaf to root (RFC 9162 inclusion proof).
    pub proof: Vec<String>,
    /// The signed checkpoint the proof leads to.
    pub checkpoint: String,
}

#[utoipa::path(
    get, path = "/api/v1/audit/events/{id}/proof", tag = "audit",
    params(("id" = String, Path, description = "Event id (UUID)")),
    responses((status = 200, description = "Inclusion proof against the latest checkpoint", body = InclusionProof), (status = 404, body = Problem)),
    security(("bearer" = []))
)]
pub async fn proof(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<InclusionProof>> {
    can_read(&caller)?;
    let ev = find_event(&state, &caller, &id).await?;
    let tenant = &caller.token.tenant;
    let mut cp = state.store.latest_checkpoint(tenant).await?;
    if cp.as_ref().is_none_or(|c| c.size <= ev.seq) {
        // The event is newer than the last checkpoint: sign one now rather than make the
        // caller wait for the next scheduled one.
        checkpoint_tenant(state.store.as_ref(), &state.signer, tenant).await?;
        cp = state.store.latest_checkpoint(tenant).await?;
    }
    let cp = cp.ok_or_else(|| Problem::from(Error::internal("no checkpoint could be made")))?;
    let plan = inclusion_plan(ev.seq, cp.size)
        .map_err(|e| Problem::from(Error::internal(format!("{e:?}"))))?;
    let proof = assemble(&state, tenant, &plan).await?;
    Ok(Json(InclusionProof {
        event_id: ev.event.header.id,
        seq: ev.seq,
        leaf_hash: hex::encode(ev.leaf_hash),
        tree_size: cp.size,
        root: hex::encode(cp.root),
        proof,
        checkpoint: cp.note,
    }))
}

async fn assemble(
    state: &AppState,
    tenant: &warden_core::TenantId,
    plan: &warden_audit::merkle::ProofPlan,
) -> Result<Vec<String>, Problem> {
    let ids = plan.node_ids();
    let nodes: std::collections::HashMap<_, _> = state
        .store
        .merkle_nodes(tenant, &ids)
        .await?
        .into_iter()
        .collect();
    let hashes = plan
        .assemble(|id| nodes.get(&id).copied())
        .map_err(|e| Problem::from(Error::internal(format!("{e:?}"))))?;
    Ok(hashes.iter().map(hex::encode).collect())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    /// The older tree size (a checkpoint's size).
    pub from: u64,
    /// The newer tree size; defaults to the latest checkpoint.
    pub to: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    /// Hex hashes (RFC 9162 consistency proof).
    pub proof: Vec<String>,
}

#[utoipa::path(
    get, path = "/api/v1/audit/consistency", tag = "audit", params(ConsistencyQuery),
    responses((status = 200, description = "Proof that the log at `to` extends the log at `from`", body = ConsistencyProof), (status = 400, body = Problem)),
    security(("bearer" = []))
)]
pub async fn consistency(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<ConsistencyQuery>,
) -> ApiResult<Json<ConsistencyProof>> {
    can_read(&caller)?;
    let tenant = &caller.token.tenant;
    let latest = state
        .store
        .latest_checkpoint(tenant)
        .await?
        .map(|c| c.size)
        .unwrap_or(0);
    let to = q.to.unwrap_or(latest);
    if q.from == 0 || q.from > to || to > latest {
        return Err(Error::invalid(format!(
            "need 0 < from <= to <= {latest} (the latest checkpoint's size); got from={} to={to}",
            q.from
        ))
        .into());
    }
    let plan = consistency_plan(q.from, to)
        .map_err(|e| Problem::from(Error::invalid(format!("{e:?}"))))?;
    Ok(Json(ConsistencyProof {
        from: q.from,
        to,
        proof: assemble(&state, tenant, &plan).await?,
    }))
}
