//! ArcSight Common Event Format:
//! `CEF:0|Vendor|Product|Version|SignatureID|Name|Severity|key=value …`.
//!
//! Escaping follows the CEF specification: in the header `\` and `|` are escaped with a
//! backslash; in extension values `\` and `=` are, and line breaks become the two characters
//! `\n` / `\r`, so one event is always one line. Header fields cannot hold a line break at all,
//! so one there becomes a space.

use std::fmt::Write as _;

use warden_core::Outcome;

use super::ExportRecord;

pub fn write(out: &mut Vec<u8>, r: &ExportRecord<'_>) {
    let e = r.event;
    let h = &e.header;
    let outcome = super::outcome(e);
    let mut line = String::with_capacity(512);
    line.push_str("CEF:0|Warden|Warden|");
    header_field(&mut line, env!("CARGO_PKG_VERSION"));
    line.push('|');
    header_field(&mut line, &h.event_type);
    line.push('|');
    let mut name = h.action.clone().unwrap_or_else(|| h.event_type.clone());
    if let Some(o) = outcome {
        name.push(' ');
        name.push_str(o.as_str());
    }
    header_field(&mut line, &name);
    line.push('|');
    // CEF severity 0–10.
    let severity = match outcome {
        Some(Outcome::Deny) => 7,
        Some(Outcome::ApprovalRequired) => 5,
        _ => 3,
    };
    let _ = write!(line, "{severity}|");

    let mut ext = Extension(&mut line);
    ext.pair("rt", &h.time.timestamp_millis().to_string());
    ext.pair("externalId", &h.id.to_string());
    ext.pair("cat", &h.event_type);
    if let Some(a) = &h.action {
        ext.pair("act", a);
    }
    if let Some(o) = outcome {
        ext.pair("outcome", o.as_str());
    }
    if let Some(u) = super::user_of(e) {
        ext.pair("suser", u);
    }
    if let Some(c) = &h.client {
        if let Some(ip) = c
            .address
            .as_deref()
            .filter(|a| a.parse::<std::net::IpAddr>().is_ok())
        {
            ext.pair("src", ip);
        }
        if let Some(ua) = &c.user_agent {
            ext.pair("requestClientApplication", ua);
        }
    }
    ext.pair("cn1Label", "seq");
    ext.pair("cn1", &r.seq.to_string());
    ext.pair("cs1Label", "tenant");
    ext.pair("cs1", &h.tenant);
    ext.pair("cs2Label", "namespace");
    ext.pair("cs2", &h.namespace);
    if let Some(agent) = &h.actor.agent {
        ext.pair("cs3Label", "agent");
        ext.pair("cs3", agent);
    }
    if let Some(session) = &h.actor.session {
        ext.pair("cs4Label", "session");
        ext.pair("cs4", session);
    }
    if let Some(res) = &h.resource {
        ext.pair("cs5Label", "resource");
        ext.pair("cs5", &format!("{}::{}", res.resource_type, res.id));
    }
    if let Some(d) = &h.decision
        && !d.policies.is_empty()
    {
        let ids: Vec<&str> = d.policies.iter().map(|p| p.id.as_str()).collect();
        ext.pair("cs6Label", "policies");
        ext.pair("cs6", &ids.join(","));
    }
    if let Some(reason) = super::reason(e) {
        ext.pair("reason", reason);
    }
    ext.pair("deviceProcessName", &h.source);
    line.push('\n');
    out.extend_from_slice(line.as_bytes());
}

fn header_field(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
}

/// Writes `key=value` pairs separated by spaces.
struct Extension<'a>(&'a mut String);

impl Extension<'_> {
    fn pair(&mut self, key: &str, value: &str) {
        if !self.0.ends_with('|') {
            self.0.push(' ');
        }
        self.0.push_str(key);
        self.0.push('=');
        for c in value.chars() {
            match c {
                '\\' => self.0.push_str("\\\\"),
                '=' => self.0.push_str("\\="),
                '\n' => self.0.push_str("\\n"),
                '\r' => self.0.push_str("\\r"),
                c => self.0.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use warden_core::Outcome;

    use super::super::{ExportFormat, ExportRecord, fixtures};

    fn cef(event: &warden_core::AuditEvent) -> String {
        let mut out = Vec::new();
        ExportFormat::Cef.write(
            &mut out,
            &ExportRecord {
                event,
                seq: 5,
                payload_purged: false,
                payload_json: None,
            },
        );
        String::from_utf8(out).unwrap()
    }

    /// Splits a CEF line back into its 7 header fields and its extension pairs, undoing the
    /// escapes, the way a CEF consumer does.
    fn parse(line: &str) -> (Vec<String>, Vec<(String, String)>) {
        let line = line.strip_suffix('\n').unwrap();
        let mut header = Vec::new();
        let mut cur = String::new();
        let mut chars = line.chars();
        while header.len() < 7 {
            match chars.next().expect("7 header fields") {
                '\\' => cur.push(chars.next().unwrap()),
                '|' => header.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        let rest: String = chars.collect();
        // Keys are unescaped words followed by `=`; an escaped `\=` belongs to the value.
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut value = String::new();
        let mut word = String::new();
        let mut it = rest.chars().peekable();
        let mut key: Option<String> = None;
        while let Some(c) = it.next() {
            match c {
                '\\' => {
                    let esc = it.next().unwrap();
                    let real = match esc {
                        'n' => '\n',
                        'r' => '\r',
                        other => other,
                    };
                    value.push_str(&word);
                    word.clear();
                    value.push(real);
                }
                ' ' => {
                    value.push_str(&word);
                    word.clear();
                    value.push(' ');
                }
                '=' => {
                    // `word` is the next key; what came before it is the previous value.
                    if let Some(k) = key.take() {
                        let v = value.strip_suffix(' ').unwrap_or(&value).to_owned();
                        pairs.push((k, v));
                    }
                    key = Some(std::mem::take(&mut word));
                    value.clear();
                }
                c => word.push(c),
            }
        }
        value.push_str(&word);
        pairs.push((key.unwrap(), value));
        (header, pairs)
    }

    fn get<'p>(pairs: &'p [(String, String)], k: &str) -> &'p str {
        &pairs.iter().find(|(key, _)| key == k).unwrap().1
    }

    #[test]
    fn escapes_pipes_backslashes_equals_and_newlines() {
        let e = fixtures::decision(Outcome::Deny);
        let line = cef(&e);
        assert_eq!(line.matches('\n').count(), 1, "one event, one line: {line}");
        assert!(line.contains(r"suser=alice|ops\=1\\x"), "{line}");
        assert!(line.contains(r"reason=writes | need\nreview"), "{line}");
        assert!(line.contains(r"cs6=no-prod\=writes"), "{line}");

        let (header, pairs) = parse(&line);
        assert_eq!(header[0], "CEF:0");
        assert_eq!(header[1], "Warden");
        assert_eq!(header[4], "mcp.tool.call.decided");
        assert_eq!(header[5], "call_tool deny");
        assert_eq!(header[6], "7");
        assert_eq!(get(&pairs, "suser"), "alice|ops=1\\x");
        assert_eq!(get(&pairs, "reason"), "writes | need\nreview");
        assert_eq!(get(&pairs, "cs6"), "no-prod=writes");
        assert_eq!(get(&pairs, "outcome"), "deny");
        assert_eq!(get(&pairs, "externalId"), e.header.id.to_string());
        assert_eq!(
            get(&pairs, "rt"),
            e.header.time.timestamp_millis().to_string()
        );
        assert_eq!(get(&pairs, "src"), "10.0.0.7");
        assert_eq!(get(&pairs, "cn1"), "5");
        assert_eq!(get(&pairs, "cs2"), "acme/platform");
    }

    #[test]
    fn header_fields_escape_pipes_and_drop_line_breaks() {
        let mut e = fixtures::admin();
        e.header.event_type = "x|y\\z\nw".into();
        let line = cef(&e);
        assert!(line.starts_with(r"CEF:0|Warden|Warden|"), "{line}");
        assert!(line.contains(r"|x\|y\\z w|"), "{line}");
        let (header, pairs) = parse(&line);
        assert_eq!(header[4], "x|y\\z w");
        assert_eq!(get(&pairs, "cat"), "x|y\\z\nw");
        assert_eq!(get(&pairs, "suser"), "tok_admin");
    }
}
