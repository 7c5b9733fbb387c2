//! The audit event, schema v1 (`schemas/audit-event.v1.json` documents it field by field).
//!
//! An event is a **header** and a **payload**. The header says who did what, where, when and
//! with which outcome; the payload holds the bulky, possibly sensitive detail (the redacted
//! request context). The header carries the SHA-256 of the payload and the Merkle leaf commits
//! to the header, so a payload can be purged for retention or erasure while the log still
//! verifies.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{EntityRef, Obligation, Outcome, PolicyRef, Warning, canonical};

pub const SCHEMA_VERSION: u32 = 1;

/// Who acted. For an agent session: the agent, the user it acts for and the session.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Actor {
    /// The principal as the policy engine saw it (`Agent::"ci-bot"`), or the token's role for
    /// administrative events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<EntityRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Id (never the secret) of the token that made the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResourceRef {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub id: String,
}

/// The decision as recorded: enough to know what happened and which policies were why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DecisionSummary {
    pub outcome: Outcome,
    pub policies: Vec<PolicyRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub obligations: Vec<Obligation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TraceContext {
    pub trace_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
}

impl TraceContext {
    /// Parses a W3C `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`).
    pub fn from_traceparent(v: &str) -> Option<TraceContext> {
        let parts: Vec<&str> = v.trim().split('-').collect();
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if parts.len() < 4 || !hex(parts[0], 2) || !hex(parts[1], 32) || !hex(parts[2], 16) {
            return None;
        }
        if parts[1].bytes().all(|b| b == b'0') {
            return None;
        }
        Some(TraceContext {
            trace_id: parts[1].to_ascii_lowercase(),
            span_id: Some(parts[2].to_ascii_lowercase()),
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClientInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// The verifiable part of an event. Its canonical JSON is what the Merkle leaf commits to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventHeader {
    pub schema_version: u32,
    /// UUIDv7: unique, time-ordered; every consumer deduplicates on it.
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    #[serde(with = "micros")]
    #[schema(value_type = String, format = DateTime)]
    pub time: DateTime<Utc>,
    pub tenant: String,
    pub namespace: String,
    /// Catalog name (`authz.decision`, `token.created`, …) or, for ingested CloudEvents,
    /// the CloudEvent's `type`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Which door or producer emitted it: `warden.api`, `warden.gateway`, `warden.cli`, or an
    /// ingested CloudEvent's `source`.
    pub source: String,
    pub actor: Actor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
    /// Lower-case hex SHA-256 of the canonical JSON of the payload.
    pub payload_sha256: String,
}

/// A complete event: header plus (redacted) payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    #[serde(flatten)]
    pub header: EventHeader,
    /// The redacted detail. `null` once purged by retention.
    #[schema(value_type = Object)]
    pub payload: Value,
}

impl AuditEvent {
    /// Builds an event with a fresh UUIDv7, the current time and the payload digest filled in.
    /// The payload must already be redacted: nothing downstream looks at it again.
    pub fn new(
        tenant: &str,
        namespace: &str,
        event_type: &str,
        source: &str,
        actor: Actor,
        payload: Value,
    ) -> AuditEvent {
        let header = EventHeader {
            schema_version: SCHEMA_VERSION,
            id: Uuid::now_v7(),
            time: Utc::now().trunc_subsecs(6),
            tenant: tenant.to_owned(),
            namespace: namespace.to_owned(),
            event_type: event_type.to_owned(),
            source: source.to_owned(),
            actor,
            action: None,
            resource: None,
            decision: None,
            client: None,
            trace: None,
            payload_sha256: payload_digest(&payload),
        };
        AuditEvent { header, payload }
    }

    /// Recomputes the payload digest; call after changing the payload.
    pub fn seal(&mut self) {
        self.header.payload_sha256 = payload_digest(&self.payload);
    }
}

impl EventHeader {
    /// The bytes the Merkle leaf commits to.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        crate::header_bytes::write(self, &mut out);
        #[cfg(debug_assertions)]
        {
            let generic = self.canonical_bytes_generic();
            assert!(
                out == generic,
                "the direct header writer disagrees with canonical JSON:\n{}\n{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&generic)
            );
        }
        out
    }

    /// The definition of the canonical bytes: the header as JSON, made canonical.
    /// [`EventHeader::canonical_bytes`] writes the same bytes directly.
    pub fn canonical_bytes_generic(&self) -> Vec<u8> {
        canonical::to_vec(&serde_json::to_value(self).expect("header serializes"))
    }
}

pub fn payload_digest(payload: &Value) -> String {
    canonical_digest(&canonical::to_vec(payload))
}

/// The digest of a payload already in canonical form: what [`payload_digest`] computes, from
/// the text that stores keep (see `EncodedEvent`), without parsing it.
pub fn canonical_digest(canonical_text: &[u8]) -> String {
    hex::encode(Sha256::digest(canonical_text))
}

/// Times are stored with microsecond precision in a fixed RFC 3339 form so that a header
/// always serializes to the same bytes.
pub mod micros {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn header_round_trips_to_identical_canonical_bytes() {
        let mut e = AuditEvent::new(
            "acme",
            "acme/x",
            "authz.decision",
            "warden.api",
            Actor::default(),
            json!({"a": 1}),
        );
        e.header.action = Some("call_tool".into());
        let bytes = e.header.canonical_bytes();
        let back: EventHeader = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.canonical_bytes(), bytes);
        let whole: AuditEvent = serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap();
        assert_eq!(whole, e);
    }

    /// The direct writer must produce the canonical JSON of the header for every shape: each
    /// optional part absent and present, every obligation and warning kind, and strings that
    /// JSON must escape. (Debug builds also compare the two on every header they write.)
    #[test]
    fn direct_header_bytes_equal_canonical_json() {
        use crate::{EntityRef, Obligation, Outcome, PolicyRef, Warning};
        let policy = |id: &str, reason: Option<&str>| PolicyRef {
            id: id.into(),
            namespace: "acme/ops".into(),
            origin: "acme/ops/tools.cedar".into(),
            line: 42,
            reason: reason.map(Into::into),
        };
        let bare = AuditEvent::new(
            "acme",
            "acme",
            "token.created",
            "warden.cli",
            Actor::default(),
            Value::Null,
        );
        let mut full = AuditEvent::new(
            "acme",
            "acme/ops/\u{e9}t\u{e9}",
            "authz.decision",
            "warden.api",
            Actor {
                principal: Some(EntityRef::new("Agent", "bot \"quoted\"\n")),
                agent: Some("bot".into()),
                on_behalf_of: Some("alice".into()),
                session: Some("tok_1".into()),
                token_id: Some("tok_1".into()),
                role: Some("agent".into()),
            },
            json!({"k": [1, 2.5, "\u{1F600}"]}),
        );
        full.header.action = Some("call_tool".into());
        full.header.resource = Some(ResourceRef {
            resource_type: "Tool".into(),
            id: "gh__delete\\repo\t".into(),
        });
        full.header.decision = Some(DecisionSummary {
            outcome: Outcome::ApprovalRequired,
            policies: vec![policy("a", Some("why \u{7f} \u{1}")), policy("b", None)],
            obligations: vec![
                Obligation::Redact {
                    path: "args.token".into(),
                    policy: "a".into(),
                },
                Obligation::Approval {
                    policies: vec!["a".into(), "b".into()],
                },
            ],
            warnings: vec![Warning {
                policy: policy("w", None),
                would: Outcome::Deny,
            }],
            errors: vec!["boom".into()],
        });
        full.header.client = Some(ClientInfo {
            address: Some("10.0.0.1".into()),
            user_agent: None,
        });
        full.header.trace = Some(TraceContext {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: None,
        });
        let mut empty_decision = full.clone();
        empty_decision.header.decision = Some(DecisionSummary {
            outcome: Outcome::Allow,
            policies: vec![],
            obligations: vec![],
            warnings: vec![],
            errors: vec![],
        });
        for e in [bare, full, empty_decision] {
            let mut direct = Vec::new();
            crate::header_bytes::write(&e.header, &mut direct);
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                String::from_utf8(e.header.canonical_bytes_generic()).unwrap()
            );
        }
    }

    #[test]
    fn traceparent_is_parsed_and_zero_trace_rejected() {
        let t = TraceContext::from_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .unwrap();
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(
            TraceContext::from_traceparent(
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
            )
            .is_none()
        );
        assert!(TraceContext::from_traceparent("garbage").is_none());
    }
}
