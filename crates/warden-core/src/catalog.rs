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
pub const POLICY_BUNDLE_APPLIED: &str = "policy.bundle.applied";
pub const POLICY_BUNDLE_ROLLED_BACK: &str = "policy.bundle.rolled_back";
pub const POLICY_BUNDLE_PROMOTED: &str = "policy.bundle.promoted";
pub const POLICY_SHADOW_STARTED: &str = "policy.shadow.started";
pub const POLICY_SHADOW_STOPPED: &str = "policy.shadow.stopped";
pub const POLICY_SHADOW_DISAGREEMENT: &str = "policy.shadow.disagreement";
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
pub const REGISTRY_SERVER_REGISTERED: &str = "registry.server.registered";
pub const REGISTRY_SERVER_UPDATED: &str = "registry.server.updated";
pub const REGISTRY_SERVER_STATE_CHANGED: &str = "registry.server.state_changed";
pub const REGISTRY_SERVER_SCOPE_CHANGED: &str = "registry.server.scope_changed";
pub const REGISTRY_TOOL_REGISTERED: &str = "registry.tool.registered";
pub const REGISTRY_TOOL_UPDATED: &str = "registry.tool.updated";
pub const REGISTRY_TOOL_STATE_CHANGED: &str = "registry.tool.state_changed";
pub const REGISTRY_TOOL_SCOPE_CHANGED: &str = "registry.tool.scope_changed";
pub const REGISTRY_TOOL_PINNED: &str = "registry.tool.pinned";
pub const REGISTRY_TOOL_DEFINITION_CHANGED: &str = "registry.tool.definition_changed";
pub const REGISTRY_TOOL_APPEARED: &str = "registry.tool.appeared";
pub const REGISTRY_AGENT_REGISTERED: &str = "registry.agent.registered";
pub const REGISTRY_AGENT_UPDATED: &str = "registry.agent.updated";
pub const REGISTRY_AGENT_SCOPE_CHANGED: &str = "registry.agent.scope_changed";
pub const REGISTRY_DISCOVERY_COMPLETED: &str = "registry.discovery.completed";
pub const REGISTRY_DISCOVERY_FAILED: &str = "registry.discovery.failed";
// Retention
pub const AUDIT_RETENTION_APPLIED: &str = "audit.retention.applied";
pub const AUDIT_RETENTION_RULE_SET: &str = "audit.retention.rule_set";
pub const AUDIT_RETENTION_RULE_DELETED: &str = "audit.retention.rule_deleted";
pub const AUDIT_LEGAL_HOLD_PLACED: &str = "audit.legal_hold.placed";
pub const AUDIT_LEGAL_HOLD_RELEASED: &str = "audit.legal_hold.released";
// Delivery to stream destinations
pub const DESTINATION_CREATED: &str = "destination.created";
pub const DESTINATION_UPDATED: &str = "destination.updated";
pub const DESTINATION_DELETED: &str = "destination.deleted";
pub const DESTINATION_REPLAYED: &str = "destination.replayed";
pub const DESTINATION_DEAD_LETTERED: &str = "destination.dead_lettered";

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
        name: POLICY_BUNDLE_APPLIED,
        description: "A new version of a tenant's policy bundle is in force (through the API, or a changed policy directory with author `directory`): version, content hash, source, mode, author, message, the files added, removed and changed with unified diffs, and the policy test failures it was applied with (`?tests=warn`).",
        scope: "the tenant root",
        door: Door::Admin,
    },
    EventType {
        name: POLICY_BUNDLE_ROLLED_BACK,
        description: "A tenant's policy bundle was rolled back: a new version equal to an earlier one is in force; the payload names both and holds the diff.",
        scope: "the tenant root",
        door: Door::Admin,
    },
    EventType {
        name: POLICY_BUNDLE_PROMOTED,
        description: "A shadow bundle, or a bundle in warn mode, was promoted to enforce: a new version is in force; the payload says from what and holds the diff.",
        scope: "the tenant root",
        door: Door::Admin,
    },
    EventType {
        name: POLICY_SHADOW_STARTED,
        description: "A candidate bundle started running in shadow beside the one in force (evaluated on live traffic, never acting): its content hash, files and the version it is based on.",
        scope: "the tenant root",
        door: Door::Admin,
    },
    EventType {
        name: POLICY_SHADOW_STOPPED,
        description: "The shadow bundle of a tenant was stopped.",
        scope: "the tenant root",
        door: Door::Admin,
    },
    EventType {
        name: POLICY_SHADOW_DISAGREEMENT,
        description: "The shadow bundle decided a live request differently from the bundle in force: the id of the decision event it shadows, both outcomes and the shadow's determining policies.",
        scope: "the namespace the action was requested in",
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
    EventType {
        name: REGISTRY_SERVER_REGISTERED,
        description: "A tool server was added to the registry (API, CLI or server.json import): name, alias, version, owner, source, transport kind (secret references only, never values); it starts in pending_review.",
        scope: "the tenant root",
        door: Door::Admin,
    },
    EventType {
        name: REGISTRY_SERVER_UPDATED,
        description: "A registered server's metadata or transport was changed: who, and the fields before and after (secret references only).",
        scope: "the tenant root",
        door: Door::Admin,
    },
    EventType {
        name: REGISTRY_SERVER_STATE_CHANGED,
        description: "A server's lifecycle state changed (approve, deprecate, undeprecate, re-review, block, unblock): from, to, the transition, who, their role and the reason.",
        scope: "the tenant root",
        door: Door::Admin,
    },
    EventType {
        name: REGISTRY_SERVER_SCOPE_CHANGED,
        description: "A server was enabled or blocked in a namespace, or such an entry was removed: effect, who and the reason.",
        scope: "the namespace whose scope entry changed",
        door: Door::Admin,
    },
    EventType {
        name: REGISTRY_TOOL_REGISTERED,
        description: "A tool was added to the registry (discovery or API): server, name, definition digest and the proposed categories and risk (marked as a proposal); it starts in pending_review.",
        scope: "the tenant root",
        door: Door::Admin,
    },
    EventType {
        name: REGISTRY_TOOL_UPDATED,
        description: "A tool's Warden metadata was changed (risk, categories, classification, owner, notes): who, and the fields before and after.",
        scope: "the tenant root",
        door: Door::Admin,
    },
    EventType {
        name: REGISTRY_TOOL_STATE_CHANGED,
        description: "A tool's lifecycle state changed (approve, deprecate, undeprecate, re-review, block, unblock): from, to, the transition, who, their role and the reason.",
        scope: "the tenant root",
        door: Door::Admin,
    },
    EventType {
        name: REGISTRY_TOOL_SCOPE_CHANGED,
        description: "A tool was enabled or blocked in a namespace, or such an entry was removed: effect, who and the reason.",
        scope: "the namespace whose scope entry changed",
        door: Door::Admin,
    },
    EventType {
        name: REGISTRY_TOOL_PINNED,
        description: "A tool's definition was pinned on approval: SHA-256 over the canonical JSON of its name, description, input and output schemas and annotations.",
        scope: "the tenant root",
        door: Door::Admin,
    },
    EventType {
        name: REGISTRY_TOOL_DEFINITION_CHANGED,
        description: "A server listed a pinned tool with a different definition: old and new SHA-256, a readable diff, and what the server's pin policy did (block: back to pending_review, hidden and refused; warn: still usable).",
        scope: "the tenant root",
        door: Door::Gateway,
    },
    EventType {
        name: REGISTRY_TOOL_APPEARED,
        description: "A tool that the registry does not know appeared on an approved server: name and definition digest; it is pending_review until approved.",
        scope: "the tenant root",
        door: Door::Gateway,
    },
    EventType {
        name: REGISTRY_AGENT_REGISTERED,
        description: "An agent was added to the catalog: name, owner, version, models.",
        scope: "the tenant root",
        door: Door::Admin,
    },
    EventType {
        name: REGISTRY_AGENT_UPDATED,
        description: "An agent's catalog entry was changed: who, and the fields before and after.",
        scope: "the tenant root",
        door: Door::Admin,
    },
    EventType {
        name: REGISTRY_AGENT_SCOPE_CHANGED,
        description: "An agent was enabled or blocked in a namespace, or such an entry was removed: effect, who and the reason.",
        scope: "the namespace whose scope entry changed",
        door: Door::Admin,
    },
    EventType {
        name: REGISTRY_DISCOVERY_COMPLETED,
        description: "Warden connected to a registered server and listed its tools: server info, protocol version, tools found, new, changed and removed.",
        scope: "the tenant root",
        door: Door::Admin,
    },
    EventType {
        name: REGISTRY_DISCOVERY_FAILED,
        description: "Discovery of a registered server failed (could not start or connect, timeout, invalid answer); nothing was written to the registry.",
        scope: "the tenant root",
        door: Door::Admin,
    },
    // Retention
    EventType {
        name: AUDIT_RETENTION_APPLIED,
        description: "A retention run for the tenant, recorded before it deletes anything: payloads purged and headers deleted, the sequence ranges it may purge or delete, the holds that kept events, the rules in force. `warden audit verify` accepts a removal only inside these ranges.",
        scope: "the tenant root",
        door: Door::System,
    },
    EventType {
        name: AUDIT_RETENTION_RULE_SET,
        description: "A retention rule was set for a namespace subtree: payload and header days before and after, who.",
        scope: "the namespace of the rule",
        door: Door::Admin,
    },
    EventType {
        name: AUDIT_RETENTION_RULE_DELETED,
        description: "A namespace's retention rule was removed (its events follow the next rule above): the rule removed, who.",
        scope: "the namespace of the rule",
        door: Door::Admin,
    },
    EventType {
        name: AUDIT_LEGAL_HOLD_PLACED,
        description: "A legal hold was placed on a namespace subtree and/or a time range: id, range, reason, who. Nothing it covers is purged or deleted until it is released.",
        scope: "the held namespace or the tenant root",
        door: Door::Admin,
    },
    EventType {
        name: AUDIT_LEGAL_HOLD_RELEASED,
        description: "A legal hold was released: id, reason, who. Retention applies to its events again from the next run.",
        scope: "the held namespace or the tenant root",
        door: Door::Admin,
    },
    // Delivery to stream destinations
    EventType {
        name: DESTINATION_CREATED,
        description: "A stream destination was added (API or configuration file): name, kind and settings; secrets appear only as env:/file: references.",
        scope: "the tenant root",
        door: Door::Admin,
    },
    EventType {
        name: DESTINATION_UPDATED,
        description: "A stream destination's settings were replaced: the settings before and after (secrets as references).",
        scope: "the tenant root",
        door: Door::Admin,
    },
    EventType {
        name: DESTINATION_DELETED,
        description: "A stream destination was removed with its cursor and dead letters: its last settings and how many dead letters were dropped.",
        scope: "the tenant root",
        door: Door::Admin,
    },
    EventType {
        name: DESTINATION_REPLAYED,
        description: "The dead letters of a destination were sent again (API or CLI): how many were delivered and removed, how many remain, and why a replay stopped early.",
        scope: "the tenant root",
        door: Door::Admin,
    },
    EventType {
        name: DESTINATION_DEAD_LETTERED,
        description: "A batch failed every attempt and went to the dead-letter store (recorded in the same transaction): destination, how many events, their first and last position, attempts, the last error, the node. A batch made only of such records gets no record of its own, so a receiver that is down cannot make the log grow by itself.",
        scope: "the tenant root",
        door: Door::System,
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
