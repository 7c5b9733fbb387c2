//! Audit events in the formats security teams ingest: Warden's own JSON (schema v1), OCSF API
//! Activity, the Splunk HTTP Event Collector envelope, CEF and CSV.
//!
//! Every format writes one event at a time into a caller's buffer, so an export of any size
//! streams in constant memory: the caller pages through the store, formats a page, sends it and
//! drops it. The same writers feed the on-demand export (`GET /api/v1/audit/export`, `warden
//! audit export`) and the streaming destinations (`warden-delivery`).

mod cef;
mod csv;
mod hec;
mod ocsf;

use serde::Serialize;
use serde_json::value::RawValue;
use warden_core::{AuditEvent, EventHeader, Outcome};

pub use ocsf::OCSF_VERSION;

/// One event as the store hands it out: the event and its place in the tenant's log.
#[derive(Clone, Copy, Debug)]
pub struct ExportRecord<'a> {
    /// The event; its `payload` is only read when `payload_json` is `None`.
    pub event: &'a AuditEvent,
    /// Position in the tenant's Merkle log.
    pub seq: u64,
    /// True once retention purged the payload (the header stays verifiable).
    pub payload_purged: bool,
    /// The payload as stored, when the caller has it: written as is, which spares parsing
    /// it and serializing it again for every exported event.
    pub payload_json: Option<&'a str>,
}

impl<'a> ExportRecord<'a> {
    /// The payload to write: the stored text when there is one, else the parsed value.
    pub(crate) fn payload(&self) -> Payload<'a> {
        match self
            .payload_json
            .and_then(|t| serde_json::from_str::<&RawValue>(t).ok())
        {
            Some(raw) => Payload::Stored(raw),
            None => Payload::Parsed(&self.event.payload),
        }
    }
}

/// A payload as an export writes it.
pub(crate) enum Payload<'a> {
    Stored(&'a RawValue),
    Parsed(&'a serde_json::Value),
}

impl Serialize for Payload<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Payload::Stored(raw) => raw.serialize(s),
            Payload::Parsed(v) => v.serialize(s),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// Warden JSON, schema v1: the event as the API returns it, one object per line.
    Ndjson,
    /// OCSF 1.3 API Activity (class 6003), one object per line.
    Ocsf,
    /// Splunk HEC event envelopes, one per line (HEC accepts them concatenated in one POST).
    Hec,
    /// ArcSight Common Event Format, one line per event.
    Cef,
    /// Comma-separated values with a header row (RFC 4180).
    Csv,
}

impl ExportFormat {
    pub const ALL: [ExportFormat; 5] = [
        ExportFormat::Ndjson,
        ExportFormat::Ocsf,
        ExportFormat::Hec,
        ExportFormat::Cef,
        ExportFormat::Csv,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "ndjson",
            ExportFormat::Ocsf => "ocsf",
            ExportFormat::Hec => "hec",
            ExportFormat::Cef => "cef",
            ExportFormat::Csv => "csv",
        }
    }

    pub fn parse(s: &str) -> Option<ExportFormat> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// `ndjson, ocsf, hec, cef, csv` — for error messages.
    pub fn names() -> String {
        Self::ALL.map(|f| f.as_str()).join(", ")
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Ndjson | ExportFormat::Ocsf | ExportFormat::Hec => "application/x-ndjson",
            ExportFormat::Cef => "text/plain; charset=utf-8",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }
    }

    /// What goes before the first event (the CSV header row); nothing for the others.
    pub fn preamble(self) -> &'static [u8] {
        match self {
            ExportFormat::Csv => csv::HEADER.as_bytes(),
            _ => b"",
        }
    }

    /// Appends one event, ending with a newline.
    pub fn write(self, out: &mut Vec<u8>, rec: &ExportRecord<'_>) {
        match self {
            ExportFormat::Ndjson => write_json_line(out, &WardenJson::from(rec)),
            ExportFormat::Ocsf => write_json_line(out, &ocsf::ApiActivity::from(rec)),
            ExportFormat::Hec => write_json_line(out, &hec::Envelope::from(rec)),
            ExportFormat::Cef => cef::write(out, rec),
            ExportFormat::Csv => csv::write(out, rec),
        }
    }
}

/// Warden JSON, schema v1: exactly what `GET /api/v1/audit/events/{id}` returns.
#[derive(Serialize)]
pub struct WardenJson<'a> {
    #[serde(flatten)]
    header: &'a EventHeader,
    payload: Payload<'a>,
    seq: u64,
    payload_purged: bool,
}

impl<'a> From<&ExportRecord<'a>> for WardenJson<'a> {
    fn from(r: &ExportRecord<'a>) -> Self {
        WardenJson {
            header: &r.event.header,
            payload: r.payload(),
            seq: r.seq,
            payload_purged: r.payload_purged,
        }
    }
}

fn write_json_line<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    // Serializing plain data into a Vec cannot fail: no I/O, no maps with non-string keys.
    serde_json::to_writer(&mut *out, value).expect("an audit event serializes");
    out.push(b'\n');
}

/// The outcome of a decision event, if it is one.
fn outcome(e: &AuditEvent) -> Option<Outcome> {
    e.header.decision.as_ref().map(|d| d.outcome)
}

/// The `@reason` of the first determining policy that gives one.
fn reason(e: &AuditEvent) -> Option<&str> {
    e.header
        .decision
        .as_ref()?
        .policies
        .iter()
        .find_map(|p| p.reason.as_deref())
}

/// Who the event is about, most specific first: the user an agent acts for, the principal,
/// the token.
fn user_of(e: &AuditEvent) -> Option<&str> {
    let a = &e.header.actor;
    a.on_behalf_of
        .as_deref()
        .or(a.principal.as_ref().map(|p| p.id.as_str()))
        .or(a.token_id.as_deref())
}

#[cfg(test)]
pub(crate) mod fixtures {
    use serde_json::json;
    use warden_core::{
        Actor, AuditEvent, ClientInfo, DecisionSummary, EntityRef, Outcome, PolicyRef, ResourceRef,
        TraceContext,
    };

    /// A gateway decision with every header field set and awkward characters everywhere a
    /// format has to escape them.
    pub fn decision(outcome: Outcome) -> AuditEvent {
        let mut e = AuditEvent::new(
            "acme",
            "acme/platform",
            "mcp.tool.call.decided",
            "warden.gateway",
            Actor {
                principal: Some(EntityRef::new("Agent", "claude-code")),
                agent: Some("claude-code".into()),
                on_behalf_of: Some("alice|ops=1\\x".into()),
                session: Some("s-1".into()),
                token_id: Some("tok_1".into()),
                role: Some("agent".into()),
            },
            json!({"request": {"arguments": {"title": "a,b \"c\"\nd"}}}),
        );
        e.header.action = Some("call_tool".into());
        e.header.resource = Some(ResourceRef {
            resource_type: "Tool".into(),
            id: "github__create_issue".into(),
        });
        e.header.decision = Some(DecisionSummary {
            outcome,
            policies: vec![PolicyRef {
                id: "no-prod=writes".into(),
                namespace: "acme".into(),
                origin: "acme/base.cedar".into(),
                line: 3,
                reason: Some("writes | need\nreview".into()),
            }],
            obligations: vec![],
            warnings: vec![],
            errors: vec![],
        });
        e.header.client = Some(ClientInfo {
            address: Some("10.0.0.7".into()),
            user_agent: Some("claude-code/1.0".into()),
        });
        e.header.trace = Some(TraceContext {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: Some("00f067aa0ba902b7".into()),
        });
        e.seal();
        e
    }

    /// An administrative event: no decision, no agent.
    pub fn admin() -> AuditEvent {
        AuditEvent::new(
            "acme",
            "acme",
            "token.created",
            "warden.cli",
            Actor {
                principal: None,
                agent: None,
                on_behalf_of: None,
                session: None,
                token_id: Some("tok_admin".into()),
                role: Some("admin".into()),
            },
            json!({"token": {"id": "tok_2", "role": "agent"}}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_core::Outcome;

    #[test]
    fn every_format_parses_from_its_name_and_writes_one_line_per_event() {
        let e = fixtures::decision(Outcome::Deny);
        for f in ExportFormat::ALL {
            assert_eq!(ExportFormat::parse(f.as_str()), Some(f));
            let mut out = Vec::new();
            f.write(
                &mut out,
                &ExportRecord {
                    event: &e,
                    seq: 7,
                    payload_purged: false,
                    payload_json: None,
                },
            );
            let text = String::from_utf8(out).unwrap();
            assert!(text.ends_with('\n'), "{f:?}");
            if f != ExportFormat::Csv {
                // CSV may hold line breaks inside quoted fields (the reason here); RFC 4180
                // readers handle that, see the csv tests.
                assert_eq!(text.matches('\n').count(), 1, "{f:?} wrote {text}");
            }
        }
        assert_eq!(ExportFormat::parse("xml"), None);
    }

    #[test]
    fn warden_json_is_the_event_with_its_log_position() {
        let e = fixtures::decision(Outcome::Allow);
        let mut out = Vec::new();
        ExportFormat::Ndjson.write(
            &mut out,
            &ExportRecord {
                event: &e,
                seq: 42,
                payload_purged: false,
                payload_json: None,
            },
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["seq"], 42);
        assert_eq!(v["payload_purged"], false);
        let back: AuditEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
