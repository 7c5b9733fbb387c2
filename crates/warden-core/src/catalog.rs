//! The catalog of event types Warden emits. `docs/audit.md` and the JSON Schema list the same
//! entries; a test keeps them in step.

/// Which part of Warden emits an event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Door {
    /// `POST /api/v1/authorize` and the rest of the REST API.
    Api,
    /// The MCP gateway.
    Gateway,
    /// Administrative actions from the API or the CLI.
    Admin,
    /// Warden itself (policy reloads, checkpoints).
    System,
}

#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct EventType {
    pub name: &'static str,
    pub description: &'static str,
    /// What the event's `namespace` refers to.
    pub scope: &'static str,
    pub door: Door,
}

pub const AUTHZ_DECISION: &str = "authz.decision";
pub const TENANT_CREATED: &str = "tenant.created";
pub const TOKEN_CREATED: &str = "token.created";
pub const TOKEN_REVOKED: &str = "token.revoked";
pub const POLICY_UPDATED: &str = "policy.updated";
pub const POLICY_DELETED: &str = "policy.deleted";
pub const POLICY_RELOADED: &str = "policy.reloaded";
pub const POLICY_RELOAD_FAILED: &str = "policy.reload_failed";
pub const EVENTS_INGESTED: &str = "audit.ingested";
pub const APPROVAL_REQUESTED: &str = "approval.requested";
pub const APPROVAL_GRANTED: &str = "approval.granted";
pub const APPROVAL_DENIED: &str = "approval.denied";
pub const APPROVAL_EXPIRED: &str = "approval.expired";
pub const APPROVAL_CONSUMED: &str = "approval.consumed";
pub const MCP_SESSION_STARTED: &str = "mcp.session.started";
pub const MCP_SESSION_ENDED: &str = "mcp.session.ended";
pub const MCP_TOOLS_LISTED: &str = "mcp.tools.listed";
pub const MCP_TOOL_CALL_DECIDED: &str = "mcp.tool.call.decided";
pub const MCP_TOOL_CALL_COMPLETED: &str = "mcp.tool.call.completed";
pub const MCP_RESOURCE_READ_DECIDED: &str = "mcp.resource.read.decided";
pub const MCP_PROMPT_GET_DECIDED: &str = "mcp.prompt.get.decided";
pub const MCP_REQUEST_REFUSED: &str = "mcp.request.refused";

pub const CATALOG: &[EventType] = &[
    EventType {
        name: AUTHZ_DECISION,
        description: "A decision made for one action through the decision API: principal, action, resource, outcome, determining policies, obligations and warnings; the payload holds the redacted request context.",
        scope: "the namespace the action was requested in",
        door: Door::Api,
    },
    EventType {
        name: TENANT_CREATED,
        description: "A tenant came into existence (first token created for it).",
        scope: "the tenant's root namespace",
        door: Door::Admin,
    },
    EventType {
        name: TOKEN_CREATED,
        description: "An API token was created: its id, role, agent, on-behalf-of user, namespace scope and expiry (never the secret).",
        scope: "the token's namespace scope, or the tenant root",
        door: Door::Admin,
    },
    EventType {
        name: TOKEN_REVOKED,
        description: "An API token was revoked.",
        scope: "the token's namespace scope, or the tenant root",
        door: Door::Admin,
    },
    EventType {
        name: POLICY_UPDATED,
        description: "The API-managed policy text of a namespace was set: new version, author and a unified diff from the previous text.",
        scope: "the namespace the policies are attached to",
        door: Door::Admin,
    },
    EventType {
        name: POLICY_DELETED,
        description: "The API-managed policy text of a namespace was removed.",
        scope: "the namespace the policies were attached to",
        door: Door::Admin,
    },
    EventType {
        name: POLICY_RELOADED,
        description: "The policy directory was (re)loaded and a new set is in force: file count, policy count and content hash.",
        scope: "the tenant root",
        door: Door::System,
    },
    EventType {
        name: POLICY_RELOAD_FAILED,
        description: "A change to the policy directory was refused (parse or validation errors with file:line); the previous set stays in force.",
        scope: "the tenant root",
        door: Door::System,
    },
    EventType {
        name: EVENTS_INGESTED,
        description: "Not emitted itself: ingested CloudEvents keep their own `type` and `source`; this entry documents that such events are stored with the producer's type.",
        scope: "the namespace named by the CloudEvent's `warden_namespace` extension, or the tenant root",
        door: Door::Api,
    },
    EventType {
        name: APPROVAL_REQUESTED,
        description: "An action was held for a person's approval: the approval id, the agent session, the tool, the SHA-256 of its arguments and the redacted arguments, the policies that asked and the expiry.",
        scope: "the namespace the held action was requested in",
        door: Door::Gateway,
    },
    EventType {
        name: APPROVAL_GRANTED,
        description: "A person approved a held action (API, CLI or elicitation): who, through which channel, the comment. Recorded before the approval takes effect.",
        scope: "the namespace the held action was requested in",
        door: Door::Admin,
    },
    EventType {
        name: APPROVAL_DENIED,
        description: "A person denied a held action: who, through which channel, the comment. Recorded before the answer takes effect.",
        scope: "the namespace the held action was requested in",
        door: Door::Admin,
    },
    EventType {
        name: APPROVAL_EXPIRED,
        description: "Nobody answered an approval request before its expiry; the held action does not proceed.",
        scope: "the namespace the held action was requested in",
        door: Door::Gateway,
    },
    EventType {
        name: APPROVAL_CONSUMED,
        description: "A granted approval was used by the one action it was bound to (same session, tool and arguments); it cannot be used again.",
        scope: "the namespace the held action was requested in",
        door: Door::Gateway,
    },
    EventType {
        name: MCP_SESSION_STARTED,
        description: "An agent initialised an MCP session with the gateway: MCP session id, protocol version, client info and capabilities.",
        scope: "the agent session's namespace",
        door: Door::Gateway,
    },
    EventType {
        name: MCP_SESSION_ENDED,
        description: "An MCP session ended (closed by the client, idle, or server shutdown), with what the session did (tools called, servers, counts).",
        scope: "the agent session's namespace",
        door: Door::Gateway,
    },
    EventType {
        name: MCP_TOOLS_LISTED,
        description: "An agent listed tools: how many were shown, which were hidden by policy, which servers were unavailable.",
        scope: "the agent session's namespace",
        door: Door::Gateway,
    },
    EventType {
        name: MCP_TOOL_CALL_DECIDED,
        description: "A tool call through the gateway was decided: tool, outcome, determining policies, obligations; the payload holds the whole redacted request so it can be decided again.",
        scope: "the agent session's namespace",
        door: Door::Gateway,
    },
    EventType {
        name: MCP_TOOL_CALL_COMPLETED,
        description: "A forwarded tool call finished: success or tool error, duration, size and SHA-256 of the result, or the upstream's error (timeout, crash, unavailable).",
        scope: "the agent session's namespace",
        door: Door::Gateway,
    },
    EventType {
        name: MCP_RESOURCE_READ_DECIDED,
        description: "A resources/read through the gateway was decided (action read_resource on McpResource::\"<uri>\").",
        scope: "the agent session's namespace",
        door: Door::Gateway,
    },
    EventType {
        name: MCP_PROMPT_GET_DECIDED,
        description: "A prompts/get through the gateway was decided (action get_prompt on Prompt::\"<server>__<prompt>\").",
        scope: "the agent session's namespace",
        door: Door::Gateway,
    },
    EventType {
        name: MCP_REQUEST_REFUSED,
        description: "A gateway request was refused before any decision: unknown tool or prompt, arguments that do not fit the tool's schema, an upstream that could not list its tools.",
        scope: "the agent session's namespace",
        door: Door::Gateway,
    },
];

pub fn lookup(name: &str) -> Option<&'static EventType> {
    CATALOG.iter().find(|e| e.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalog_entry_is_documented_and_in_the_schema() {
        let doc = include_str!("../../../docs/audit.md");
        for e in CATALOG {
            assert!(
                doc.contains(&format!("| `{}` |", e.name)),
                "{} is missing from docs/audit.md",
                e.name
            );
        }
        let names: Vec<_> = CATALOG.iter().map(|e| e.name).collect();
        let mut sorted = names.clone();
        sorted.dedup();
        assert_eq!(names.len(), sorted.len(), "duplicate catalog entries");
        assert!(lookup(AUTHZ_DECISION).is_some());
    }
}
