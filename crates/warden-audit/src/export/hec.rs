//! Splunk HTTP Event Collector envelopes (`/services/collector/event`).
//!
//! One envelope per line; HEC accepts many envelopes concatenated in one request body. The
//! event itself is Warden JSON (schema v1), so a Splunk search sees exactly the fields of the
//! API; `fields` repeats the few that searches filter on as indexed fields.

use serde::Serialize;

use super::{ExportRecord, WardenJson};

pub const SOURCETYPE: &str = "warden:audit";

#[derive(Serialize)]
pub struct Envelope<'a> {
    /// Epoch seconds with milliseconds, as HEC expects.
    time: f64,
    source: &'a str,
    sourcetype: &'static str,
    event: WardenJson<'a>,
    fields: Fields<'a>,
}

#[derive(Serialize)]
struct Fields<'a> {
    tenant: &'a str,
    namespace: &'a str,
    event_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<&'static str>,
}

impl<'a> From<&ExportRecord<'a>> for Envelope<'a> {
    fn from(r: &ExportRecord<'a>) -> Self {
        let h = &r.event.header;
        Envelope {
            // Milliseconds keep 13 significant digits: exact in an f64.
            time: h.time.timestamp_millis() as f64 / 1000.0,
            source: &h.source,
            sourcetype: SOURCETYPE,
            event: WardenJson::from(r),
            fields: Fields {
                tenant: &h.tenant,
                namespace: &h.namespace,
                event_type: &h.event_type,
                decision: super::outcome(r.event).map(|o| o.as_str()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use warden_core::{AuditEvent, Outcome};

    use super::super::{ExportFormat, ExportRecord, fixtures};

    #[test]
    fn envelope_has_hec_fields_and_the_whole_event() {
        let e = fixtures::decision(Outcome::Deny);
        let mut out = Vec::new();
        ExportFormat::Hec.write(
            &mut out,
            &ExportRecord {
                event: &e,
                seq: 3,
                payload_purged: false,
                payload_json: None,
            },
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        let millis = e.header.time.timestamp_millis();
        assert_eq!(v["time"].as_f64().unwrap(), millis as f64 / 1000.0);
        assert_eq!(v["sourcetype"], "warden:audit");
        assert_eq!(v["source"], "warden.gateway");
        assert_eq!(v["fields"]["decision"], "deny");
        assert_eq!(v["fields"]["namespace"], "acme/platform");
        assert_eq!(v["event"]["seq"], 3);
        let back: AuditEvent = serde_json::from_value(v["event"].clone()).unwrap();
        assert_eq!(back, e);
    }
}
