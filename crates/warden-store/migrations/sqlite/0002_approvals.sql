-- Approval requests: an agent action held until a person answers. Written in SQL that
-- PostgreSQL runs as well (BIGINT times, JSON as TEXT, no SQLite-specific functions), so the
-- PostgreSQL store can take this file as it is.
--
-- One row per request. Its status only moves forward:
--   pending → approved → consumed,  pending → denied,  pending → expired.
-- A pending row past expires_us counts as expired even before anyone writes that down.

CREATE TABLE approvals (
    id             TEXT PRIMARY KEY,            -- UUIDv7: time-ordered, the list's keyset
    tenant         TEXT NOT NULL REFERENCES tenants(id),
    namespace      TEXT NOT NULL,
    session        TEXT NOT NULL,               -- the agent session (token id)
    agent          TEXT,
    on_behalf_of   TEXT,
    action         TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    resource_id    TEXT NOT NULL,               -- e.g. the gateway's tool name server__tool
    args_sha256    TEXT NOT NULL,               -- hex SHA-256 of the canonical arguments
    arguments      TEXT NOT NULL,               -- JSON, already redacted
    policies       TEXT NOT NULL,               -- JSON array of policy ids
    reason         TEXT,
    decision_event TEXT,                        -- the audit event of the decision that asked
    status         TEXT NOT NULL
        CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'consumed')),
    requested_us   BIGINT NOT NULL,             -- microseconds since the Unix epoch (UTC)
    expires_us     BIGINT NOT NULL,
    resolved_by    TEXT,                        -- token:<id>, cli:<user>, or the elicited user
    resolved_via   TEXT CHECK (resolved_via IN ('api', 'cli', 'elicitation')),
    resolved_us    BIGINT,
    comment        TEXT,
    consumed_us    BIGINT
);
-- Listing a tenant's approvals newest first, optionally by namespace subtree.
CREATE INDEX approvals_tenant ON approvals(tenant, id);
CREATE INDEX approvals_namespace ON approvals(tenant, namespace, id);
-- Finding the grant for exactly this action when it is retried.
CREATE INDEX approvals_binding ON approvals(tenant, session, resource_id, args_sha256, status);
