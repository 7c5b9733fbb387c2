//! One audit event as a row of the analytics table (`RowBinary`).

use std::borrow::Cow;

use serde::Deserialize;
use warden_store::outbox::OutboxRow;

/// The separator between server and tool in the tool names the gateway decides on
/// (`<server>__<tool>`).
const SERVER_TOOL_SEPARATOR: &str = "__";

/// The tool a decision was about: the resource id of a `Tool` resource.
pub fn tool_of<'a>(resource_type: Option<&str>, resource_id: Option<&'a str>) -> &'a str {
    match resource_type {
        Some("Tool") => resource_id.unwrap_or_default(),
        _ => "",
    }
}

/// The server of a gateway tool name (`<server>__<tool>`), empty for other names.
pub fn server_of(tool: &str) -> &str {
    tool.split_once(SERVER_TOOL_SEPARATOR)
        .map(|(server, _)| server)
        .unwrap_or_default()
}

/// What a row needs from the header beyond the query columns; the rest of it is skipped
/// unparsed.
#[derive(Deserialize)]
struct HeaderPart<'a> {
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(default, borrow)]
    decision: Option<DecisionPart<'a>>,
}

#[derive(Deserialize)]
struct DecisionPart<'a> {
    #[serde(default, borrow)]
    policies: Vec<PolicyPart<'a>>,
}

#[derive(Deserialize)]
struct PolicyPart<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
}

/// The table's columns in the order [`encode`] writes them (the `INSERT` names them, so the
/// table's own column order does not matter).
pub const COLUMNS: &str = "tenant, seq, id, time, time_us, namespace, event_type, source, \
     principal, agent, user, session, action, resource_type, resource_id, tool, server, outcome, \
     policies, payload";

/// Appends `e` of `tenant` as one row in ClickHouse's `RowBinary` format: numbers little-endian,
/// strings as their length (LEB128) and bytes. Nothing is escaped, so a payload of JSON text
/// costs a copy, not an escape on one side and an unescape on the other (as a JSON string). Missing values are
/// empty strings (the report shows them as `null`), so that columns need not be `Nullable`.
pub fn encode(tenant: &str, e: &OutboxRow, out: &mut Vec<u8>) -> Result<(), String> {
    let c = &e.columns;
    let h: HeaderPart = serde_json::from_str(&e.header)
        .map_err(|err| format!("stored header of event {} does not parse: {err}", c.id))?;
    let seconds = u32::try_from(c.time_micros.div_euclid(1_000_000))
        .map_err(|_| format!("event {} has a time out of range", c.id))?;
    let tool = tool_of(c.resource_type.as_deref(), c.resource_id.as_deref());
    string(out, tenant);
    out.extend_from_slice(&e.seq.to_le_bytes());
    uuid(out, &c.id);
    out.extend_from_slice(&seconds.to_le_bytes());
    out.extend_from_slice(&c.time_micros.to_le_bytes());
    string(out, &c.namespace);
    string(out, &c.event_type);
    string(out, &h.source);
    string(out, c.principal.as_deref().unwrap_or_default());
    string(out, c.agent.as_deref().unwrap_or_default());
    string(out, c.on_behalf_of.as_deref().unwrap_or_default());
    string(out, c.session.as_deref().unwrap_or_default());
    string(out, c.action.as_deref().unwrap_or_default());
    string(out, c.resource_type.as_deref().unwrap_or_default());
    string(out, c.resource_id.as_deref().unwrap_or_default());
    string(out, tool);
    string(out, server_of(tool));
    string(out, c.outcome.as_deref().unwrap_or_default());
    let policies = h.decision.as_ref().map_or(&[][..], |d| &d.policies[..]);
    varint(out, policies.len() as u64);
    for p in policies {
        string(out, &p.id);
    }
    // A payload purged by retention in the system of record before it was fed is empty.
    string(out, e.payload.as_deref().unwrap_or_default());
    Ok(())
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn string(out: &mut Vec<u8>, s: &str) {
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// ClickHouse keeps a UUID as two 64-bit numbers, the first eight bytes the high one; each is
/// written little-endian.
fn uuid(out: &mut Vec<u8>, id: &uuid::Uuid) {
    let b = id.as_bytes();
    for half in [&b[..8], &b[8..]] {
        let n = u64::from_be_bytes(half.try_into().expect("eight bytes"));
        out.extend_from_slice(&n.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_and_servers() {
        assert_eq!(
            tool_of(Some("Tool"), Some("github__create_issue")),
            "github__create_issue"
        );
        assert_eq!(tool_of(Some("Repo"), Some("x")), "");
        assert_eq!(server_of("github__create_issue"), "github");
        assert_eq!(server_of("github.create_issue"), "");
    }
}

#[cfg(test)]
mod binary {
    use super::*;

    #[test]
    fn varints_and_uuids() {
        let mut out = Vec::new();
        varint(&mut out, 0);
        varint(&mut out, 127);
        varint(&mut out, 128);
        varint(&mut out, 300);
        assert_eq!(out, [0, 127, 0x80, 1, 0xac, 2]);
        let mut out = Vec::new();
        uuid(
            &mut out,
            &uuid::Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap(),
        );
        assert_eq!(
            out,
            [
                0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00, 0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa,
                0x99, 0x88
            ]
        );
    }
}
