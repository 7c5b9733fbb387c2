//! CSV, RFC 4180: a header row, then one row per event.
//!
//! A field is quoted when it holds a comma, a quote or a line break (quotes doubled). Because
//! exports are opened in spreadsheets, a field that starts with `=`, `+`, `-`, `@`, a tab or a
//! carriage return is prefixed with `'` so that it is never run as a formula (an agent controls
//! tool names and arguments, and would otherwise control a formula on an auditor's machine).
//! The payload column is the redacted payload as JSON.

use super::ExportRecord;

pub const HEADER: &str = "seq,id,time,tenant,namespace,type,source,principal,agent,on_behalf_of,\
session,token_id,action,resource_type,resource_id,decision,policies,reason,payload_sha256,\
payload_purged,payload\r\n";

pub fn write(out: &mut Vec<u8>, r: &ExportRecord<'_>) {
    let e = r.event;
    let h = &e.header;
    let a = &h.actor;
    let principal = a
        .principal
        .as_ref()
        .map(|p| format!("{}::{:?}", p.entity_type, p.id));
    let policies = h.decision.as_ref().map(|d| {
        d.policies
            .iter()
            .map(|p| p.id.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    });
    let payload = if r.payload_purged {
        String::new()
    } else {
        match r.payload_json {
            Some(text) => text.to_owned(),
            None => e.payload.to_string(),
        }
    };
    let fields: [&str; 21] = [
        &r.seq.to_string(),
        &h.id.to_string(),
        &h.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        &h.tenant,
        &h.namespace,
        &h.event_type,
        &h.source,
        principal.as_deref().unwrap_or(""),
        a.agent.as_deref().unwrap_or(""),
        a.on_behalf_of.as_deref().unwrap_or(""),
        a.session.as_deref().unwrap_or(""),
        a.token_id.as_deref().unwrap_or(""),
        h.action.as_deref().unwrap_or(""),
        h.resource
            .as_ref()
            .map(|x| x.resource_type.as_str())
            .unwrap_or(""),
        h.resource.as_ref().map(|x| x.id.as_str()).unwrap_or(""),
        super::outcome(e).map(|o| o.as_str()).unwrap_or(""),
        policies.as_deref().unwrap_or(""),
        super::reason(e).unwrap_or(""),
        &h.payload_sha256,
        if r.payload_purged { "true" } else { "false" },
        &payload,
    ];
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        field(out, f);
    }
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, v: &str) {
    let formula = v.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = formula || v.contains([',', '"', '\n', '\r']);
    if !quote {
        out.extend_from_slice(v.as_bytes());
        return;
    }
    out.push(b'"');
    if formula {
        out.push(b'\'');
    }
    for b in v.bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use warden_core::Outcome;

    use super::super::{ExportFormat, ExportRecord, fixtures};

    /// An RFC 4180 reader, enough to check what we write.
    fn read(text: &str) -> Vec<Vec<String>> {
        let mut rows = vec![];
        let mut row = vec![];
        let mut cur = String::new();
        let mut quoted = false;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    cur.push('"');
                }
                (true, '"') => quoted = false,
                (true, c) => cur.push(c),
                (false, '"') => quoted = true,
                (false, ',') => row.push(std::mem::take(&mut cur)),
                (false, '\r') => {}
                (false, '\n') => {
                    row.push(std::mem::take(&mut cur));
                    rows.push(std::mem::take(&mut row));
                }
                (false, c) => cur.push(c),
            }
        }
        rows
    }

    #[test]
    fn rows_round_trip_through_an_rfc4180_reader() {
        let e = fixtures::decision(Outcome::Deny);
        let mut out = ExportFormat::Csv.preamble().to_vec();
        ExportFormat::Csv.write(
            &mut out,
            &ExportRecord {
                event: &e,
                seq: 11,
                payload_purged: false,
                payload_json: None,
            },
        );
        let rows = read(std::str::from_utf8(&out).unwrap());
        assert_eq!(rows.len(), 2);
        let header = &rows[0];
        assert_eq!(header.len(), 21);
        let row = &rows[1];
        assert_eq!(row.len(), 21, "{row:?}");
        let col = |name: &str| &row[header.iter().position(|h| h == name).unwrap()];
        assert_eq!(col("seq"), "11");
        assert_eq!(col("decision"), "deny");
        assert_eq!(col("on_behalf_of"), "alice|ops=1\\x");
        assert_eq!(col("reason"), "writes | need\nreview");
        assert_eq!(col("principal"), "Agent::\"claude-code\"");
        let payload: serde_json::Value = serde_json::from_str(col("payload")).unwrap();
        assert_eq!(payload, e.payload);
    }

    #[test]
    fn formulas_are_neutralised() {
        let mut e = fixtures::decision(Outcome::Allow);
        e.header.resource.as_mut().unwrap().id = "=HYPERLINK(\"http://x\")".into();
        e.header.actor.agent = Some("@agent".into());
        let mut out = Vec::new();
        ExportFormat::Csv.write(
            &mut out,
            &ExportRecord {
                event: &e,
                seq: 1,
                payload_purged: true,
                payload_json: None,
            },
        );
        let text = String::from_utf8(out).unwrap();
        let row = &read(&text)[0];
        assert!(
            row.contains(&"'=HYPERLINK(\"http://x\")".to_owned()),
            "{row:?}"
        );
        assert!(row.contains(&"'@agent".to_owned()), "{row:?}");
        assert_eq!(row[19], "true");
        assert_eq!(row[20], "", "a purged payload is left empty");
    }
}
