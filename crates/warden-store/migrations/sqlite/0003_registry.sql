-- The registry of tool servers, their tools and agents, and the history of every change to
-- them. Written in SQL that PostgreSQL runs as well (BIGINT times, JSON as TEXT, no
-- SQLite-specific functions), so the PostgreSQL store can take this file as it is.
--
-- Each record is kept whole as JSON (`record`, the warden-registry type serialized); the
-- columns beside it are copies of the fields lists filter on, written from the record in one
-- place (the store's registry module) on every write.
--
-- Every change is one conditional write: an update names the `version` it read and bumps it,
-- so of two changes made from the same version exactly one applies. Inserts rely on the
-- primary keys and the unique alias.

CREATE TABLE registry_servers (
    tenant      TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,               -- reverse-DNS `namespace/name` (server.json)
    alias       TEXT NOT NULL,               -- the gateway prefix agents see: <alias>__<tool>
    state       TEXT NOT NULL
        CHECK (state IN ('pending_review', 'approved', 'deprecated', 'blocked')),
    owner       TEXT,
    record      TEXT NOT NULL,               -- JSON ToolServer (secret references only)
    version     BIGINT NOT NULL,
    created_us  BIGINT NOT NULL,             -- microseconds since the Unix epoch (UTC)
    updated_us  BIGINT NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE UNIQUE INDEX registry_servers_alias ON registry_servers(tenant, alias);
CREATE INDEX registry_servers_state ON registry_servers(tenant, state, name);
CREATE INDEX registry_servers_owner ON registry_servers(tenant, owner, name);

CREATE TABLE registry_tools (
    tenant           TEXT NOT NULL,
    server           TEXT NOT NULL,
    name             TEXT NOT NULL,          -- as the server lists it
    state            TEXT NOT NULL
        CHECK (state IN ('pending_review', 'approved', 'deprecated', 'blocked')),
    risk             TEXT CHECK (risk IN ('low', 'medium', 'high', 'critical')),
    categories       TEXT NOT NULL,          -- ',read,write,' (empty: ','), for LIKE '%,read,%'
    owner            TEXT,
    record           TEXT NOT NULL,          -- JSON Tool, including its pin
    observed         TEXT,                   -- JSON ToolDefinition as last listed by the server
    observed_sha256  TEXT,                   -- its pin digest
    version          BIGINT NOT NULL,
    created_us       BIGINT NOT NULL,
    updated_us       BIGINT NOT NULL,
    PRIMARY KEY (tenant, server, name),
    FOREIGN KEY (tenant, server) REFERENCES registry_servers(tenant, name)
);
CREATE INDEX registry_tools_state ON registry_tools(tenant, state, server, name);
CREATE INDEX registry_tools_risk ON registry_tools(tenant, risk, server, name);

CREATE TABLE registry_agents (
    tenant      TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    owner       TEXT NOT NULL,
    record      TEXT NOT NULL,               -- JSON Agent
    version     BIGINT NOT NULL,
    created_us  BIGINT NOT NULL,
    updated_us  BIGINT NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE INDEX registry_agents_owner ON registry_agents(tenant, owner, name);

-- What changed, when, by whom and why: one row per change of a server, tool or agent, written
-- in the same transaction as the change and its audit event. Rows of kind `pin` and
-- `definition_changed` are a tool's pin history.
CREATE TABLE registry_history (
    id            TEXT PRIMARY KEY,          -- UUIDv7: time-ordered, the list's keyset
    tenant        TEXT NOT NULL REFERENCES tenants(id),
    subject_kind  TEXT NOT NULL CHECK (subject_kind IN ('server', 'tool', 'agent')),
    subject       TEXT NOT NULL,             -- the server's name (also for its tools) or the agent's
    tool          TEXT,                      -- the tool's name, for subject_kind 'tool'
    kind          TEXT NOT NULL
        CHECK (kind IN ('registered', 'update', 'transition', 'scope', 'pin', 'definition_changed')),
    from_state    TEXT,
    to_state      TEXT,
    reason        TEXT,
    changed_by    TEXT NOT NULL,             -- token:<id>, cli:<user>, or warden
    at_us         BIGINT NOT NULL,
    detail        TEXT NOT NULL,             -- JSON
    event_id      TEXT                       -- the audit event that records the change
);
CREATE INDEX registry_history_tenant ON registry_history(tenant, id);
CREATE INDEX registry_history_subject ON registry_history(tenant, subject_kind, subject, tool, id);
