//! `POST /api/v1/events`: ingest CloudEvents 1.0 produced by agent platforms.
//!
//! Each event is judged on its own: one bad event never sinks the batch. An event's identity
//! is its CloudEvents `(source, id)` pair; Warden derives its own UUIDv7 from that pair (and
//! the event time), so re-sending the same event is recognised and not stored twice.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use warden_core::{AuditEvent, Error, NamespacePath};
use warden_store::{Appended, NewEvent};

use crate::extract::{Caller, JsonBody};
use crate::problem::{ApiResult, Problem};
use crate::state::{AppState, MAX_BATCH_ITEMS};

/// CloudEvents extension attribute naming the Warden namespace (extension names are
/// lower-case letters and digits only).
pub const NAMESPACE_EXTENSION: &str = "wardennamespace";

const REQUIRED: [&str; 4] = ["specversion", "id", "source", "type"];
const KNOWN: [&str; 8] = [
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "subject",
    "datacontenttype",
    "dataschema",
];

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub index: usize,
    /// The CloudEvent's own id.
    pub id: String,
    /// The Warden event id it is stored under.
    #[schema(value_type = String, format = Uuid)]
    pub event_id: Uuid,
    /// True when this event had been received before and was not stored again.
    pub duplicate: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Rejected {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub error: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IngestResponse {
    pub accepted: Vec<Accepted>,
    pub rejected: Vec<Rejected>,
}

/// The UUIDv7 an ingested event is stored under: time-ordered by the event's own time, its
/// random bits taken from a hash of tenant, source and id so a re-send maps to the same id.
pub fn ingest_id(tenant: &str, source: &str, id: &str, time: Option<DateTime<Utc>>) -> Uuid {
    let digest = Sha256::new()
        .chain_update(tenant.as_bytes())
        .chain_update([0])
        .chain_update(source.as_bytes())
        .chain_update([0])
        .chain_update(id.as_bytes())
        .finalize();
    let mut rand = [0u8; 10];
    rand.copy_from_slice(&digest[..10]);
    let millis = time
        .map(|t| t.timestamp_millis().max(0) as u64)
        .unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &rand).into_uuid()
}

fn field<'a>(obj: &'a serde_json::Map<String, Value>, name: &str) -> Result<&'a str, String> {
    match obj.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(format!("`{name}` must not be empty")),
        Some(_) => Err(format!("`{name}` must be a string")),
        None => Err(format!("`{name}` is required")),
    }
}

fn convert(state: &AppState, caller: &Caller, v: &Value) -> Result<AuditEvent, String> {
    let obj = v.as_object().ok_or("a CloudEvent must be a JSON object")?;
    for name in REQUIRED {
        field(obj, name)?;
    }
    let spec = field(obj, "specversion")?;
    if spec != "1.0" {
        return Err(format!(
            "unsupported specversion {spec:?}; only \"1.0\" is accepted"
        ));
    }
    for (k, val) in obj {
        if KNOWN.contains(&k.as_str()) || k == "data" || k == "data_base64" {
            continue;
        }
        // Extension attributes: lower-case alphanumeric names, scalar values (CloudEvents 1.0 §3.1).
        if k.is_empty()
            || k.len() > 20
            || !k
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(format!(
                "`{k}` is not a valid CloudEvents attribute name (lower-case letters and digits, at most 20)"
            ));
        }
        if val.is_object() || val.is_array() {
            return Err(format!(
                "extension attribute `{k}` must be a string, number or boolean"
            ));
        }
    }
    let time = match obj.get("time") {
        None => None,
        Some(Value::String(s)) => Some(
            DateTime::parse_from_rfc3339(s)
                .map_err(|e| format!("`time` is not an RFC 3339 timestamp: {e}"))?
                .with_timezone(&Utc),
        ),
        Some(_) => return Err("`time` must be an RFC 3339 string".into()),
    };
    let token = &caller.token;
    let namespace = match obj.get(NAMESPACE_EXTENSION) {
        Some(Value::String(s)) => NamespacePath::parse(s).map_err(|e| e.to_string())?,
        Some(_) => return Err(format!("`{NAMESPACE_EXTENSION}` must be a string")),
        None => token
            .namespace
            .clone()
            .unwrap_or_else(|| token.tenant.root_namespace()),
    };
    caller
        .check_namespace(&namespace)
        .map_err(|e| e.to_string())?;
    let ce_type = field(obj, "type")?;
    if reserved_type(ce_type) {
        return Err(format!(
            "`type` {ce_type:?} is reserved for events Warden records itself; name producer events in reverse-DNS style (e.g. com.example.tool.used)"
        ));
    }
    let source = field(obj, "source")?;
    let ce_id = field(obj, "id")?;
    let mut payload = json!({ "cloudevent": v });
    state
        .redactor(token.tenant.as_str())
        .redact(&mut payload, &[]);
    let mut e = AuditEvent::new(
        token.tenant.as_str(),
        namespace.as_str(),
        ce_type,
        source,
        caller.actor(),
        payload,
    );
    e.header.id = ingest_id(token.tenant.as_str(), source, ce_id, time);
    if let Some(t) = time {
        e.header.time = t.trunc_subsecs(6);
    }
    if let Some(Value::String(subject)) = obj.get("subject") {
        e.header.resource = Some(warden_core::ResourceRef {
            resource_type: "subject".into(),
            id: subject.clone(),
        });
    }
    Ok(e)
}

/// The families of Warden's own event types. An ingested event may not take one of these
/// names: it would read as a decision, call or change that Warden recorded.
const RESERVED_FAMILIES: [&str; 8] = [
    "authz.",
    "mcp.",
    "approval.",
    "registry.",
    "token.",
    "policy.",
    "tenant.",
    "audit.",
];

fn reserved_type(t: &str) -> bool {
    warden_core::catalog::lookup(t).is_some() || RESERVED_FAMILIES.iter().any(|f| t.starts_with(f))
}

#[utoipa::path(
    post, path = "/api/v1/events", tag = "audit",
    request_body(content = Vec<Object>, description = "A JSON array of up to 1,000 CloudEvents 1.0 (structured mode)", content_type = "application/cloudevents-batch+json"),
    responses(
        (status = 200, description = "Per-event outcome", body = IngestResponse),
        (status = 400, description = "Not a JSON array, or more than 1,000 events", body = Problem),
        (status = 503, description = "The audit trail cannot take the batch now", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn ingest(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<IngestResponse>> {
    caller.require(caller.role().can_ingest_events(), "ingest events")?;
    let items = match body {
        Value::Array(items) => items,
        _ => {
            return Err(Error::invalid("expected a JSON array of CloudEvents (batch mode)").into());
        }
    };
    if items.len() > MAX_BATCH_ITEMS {
        return Err(Error::invalid(format!(
            "at most {MAX_BATCH_ITEMS} events per request, got {}",
            items.len()
        ))
        .into());
    }
    let mut rejected = Vec::new();
    let mut good: Vec<(usize, String, NewEvent)> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let id = item.get("id").and_then(Value::as_str).map(str::to_owned);
        match convert(&state, &caller, item) {
            Ok(event) => good.push((
                index,
                id.unwrap_or_default(),
                NewEvent {
                    event,
                    dedupe: true,
                },
            )),
            Err(error) => rejected.push(Rejected { index, id, error }),
        }
    }
    state.metrics.events_rejected.add(rejected.len() as u64);
    let ids: Vec<Uuid> = good.iter().map(|g| g.2.event.header.id).collect();
    let meta: Vec<(usize, String)> = good.iter().map(|g| (g.0, g.1.clone())).collect();
    let outcomes = state
        .pipeline
        .record_many(good.into_iter().map(|g| g.2).collect())
        .await?;
    // Re-sending is idempotent, so when part of the batch could not be recorded the whole
    // batch is refused and the producer simply sends it again.
    if let Some(Err(_)) = outcomes.iter().find(|o| o.is_err()) {
        let e = outcomes
            .into_iter()
            .find_map(Result::err)
            .expect("found above");
        return Err(e.into());
    }
    let mut accepted = Vec::new();
    for (((index, id), event_id), outcome) in meta.into_iter().zip(ids).zip(outcomes) {
        match outcome {
            Ok(a) => {
                state.metrics.events_ingested.inc();
                accepted.push(Accepted {
                    index,
                    id,
                    event_id,
                    duplicate: a == Appended::Duplicate,
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    rejected.sort_by_key(|r| r.index);
    Ok(Json(IngestResponse { accepted, rejected }))
}
