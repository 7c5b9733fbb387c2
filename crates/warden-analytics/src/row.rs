//! One audit event as a row of the analytics table (`JSONEachRow`).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use warden_store::outbox::OutboxRow;

/// The separator between server and tool in the tool names the gateway decides on
/// (`<server>__<tool>`).
const SERVER_TOOL_SEPARATOR: &str = "__";

#[derive(Serialize)]
struct Row<'a> {
    tenant: &'a str,
    seq: u64,
    id: String,
    /// `YYYY-MM-DD hh:mm:ss` in UTC, what a `DateTime('UTC')` column reads.
    time: String,
    time_us: i64,
    namespace: &'a str,
    event_type: &'a str,
    source: &'a str,
    principal: &'a str,
    agent: &'a str,
    user: &'a str,
    session: &'a str,
    action: &'a str,
    resource_type: &'a str,
    resource_id: &'a str,
    tool: &'a str,
    server: &'a str,
    outcome: &'a str,
    policies: Vec<&'a str>,
    payload: &'a str,
}

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

/// Appends `e` of `tenant` as one `JSONEachRow` line. Missing values are empty strings (the
/// report shows them as `null`), so that columns need not be `Nullable`.
pub fn encode(tenant: &str, e: &OutboxRow, out: &mut Vec<u8>) -> Result<(), String> {
    let c = &e.columns;
    let h: HeaderPart = serde_json::from_str(&e.header)
        .map_err(|err| format!("stored header of event {} does not parse: {err}", c.id))?;
    let tool = tool_of(c.resource_type.as_deref(), c.resource_id.as_deref());
    let time = chrono::DateTime::from_timestamp_micros(c.time_micros)
        .ok_or_else(|| format!("event {} has a time out of range", c.id))?;
    let row = Row {
        tenant,
        seq: e.seq,
        id: c.id.to_string(),
        time: time.format("%Y-%m-%d %H:%M:%S").to_string(),
        time_us: c.time_micros,
        namespace: &c.namespace,
        event_type: &c.event_type,
        source: &h.source,
        principal: c.principal.as_deref().unwrap_or_default(),
        agent: c.agent.as_deref().unwrap_or_default(),
        user: c.on_behalf_of.as_deref().unwrap_or_default(),
        session: c.session.as_deref().unwrap_or_default(),
        action: c.action.as_deref().unwrap_or_default(),
        resource_type: c.resource_type.as_deref().unwrap_or_default(),
        resource_id: c.resource_id.as_deref().unwrap_or_default(),
        tool,
        server: server_of(tool),
        outcome: c.outcome.as_deref().unwrap_or_default(),
        policies: h
            .decision
            .as_ref()
            .map(|d| d.policies.iter().map(|p| p.id.as_ref()).collect())
            .unwrap_or_default(),
        // A payload purged by retention in the system of record before it was fed is empty.
        payload: e.payload.as_deref().unwrap_or_default(),
    };
    serde_json::to_writer(&mut *out, &row).expect("a row serializes");
    out.push(b'\n');
    Ok(())
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
