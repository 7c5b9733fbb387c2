-- Warden system of record, SQLite flavour. Times are microseconds since the Unix epoch (UTC).

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    created_us  INTEGER NOT NULL
);

-- API tokens. Only the SHA-256 of the secret is kept; the secret is shown once at creation.
CREATE TABLE tokens (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL REFERENCES tenants(id),
    secret_sha256 TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    agent         TEXT,
    on_behalf_of  TEXT,
    namespace     TEXT,
    description   TEXT,
    created_us    INTEGER NOT NULL,
    expires_us    INTEGER,
    revoked_us    INTEGER
);
CREATE INDEX tokens_tenant ON tokens(tenant, created_us);

-- API-managed policy texts, one row per version; text NULL marks a deletion.
CREATE TABLE policy_versions (
    tenant      TEXT NOT NULL REFERENCES tenants(id),
    namespace   TEXT NOT NULL,
    version     INTEGER NOT NULL,
    text        TEXT,
    sha256      TEXT,
    author      TEXT NOT NULL,
    message     TEXT,
    created_us  INTEGER NOT NULL,
    PRIMARY KEY (tenant, namespace, version)
);

-- The audit trail. seq is the event's leaf index in its tenant's Merkle log.
-- The flattened columns serve queries; verification checks them against the header.
CREATE TABLE audit_events (
    tenant        TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    id            TEXT NOT NULL,
    time_us       INTEGER NOT NULL,
    namespace     TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    principal     TEXT,
    agent         TEXT,
    on_behalf_of  TEXT,
    session       TEXT,
    action        TEXT,
    resource_type TEXT,
    resource_id   TEXT,
    outcome       TEXT,
    header        TEXT NOT NULL,
    payload       TEXT,
    leaf_hash     BLOB NOT NULL,
    PRIMARY KEY (tenant, seq)
);
CREATE UNIQUE INDEX audit_events_id ON audit_events(tenant, id);
CREATE INDEX audit_events_time ON audit_events(tenant, time_us);
CREATE INDEX audit_events_namespace ON audit_events(tenant, namespace, seq);

-- Per-tenant Merkle head: tree size and the right frontier (concatenated 32-byte hashes),
-- read and updated inside every append transaction so that any writer continues the same tree.
CREATE TABLE merkle_heads (
    tenant    TEXT PRIMARY KEY,
    size      INTEGER NOT NULL,
    frontier  BLOB NOT NULL
);

-- Perfect subtree hashes from level 4 up; lower levels are recomputed from leaf hashes.
CREATE TABLE merkle_nodes (
    tenant  TEXT NOT NULL,
    level   INTEGER NOT NULL,
    idx     INTEGER NOT NULL,
    hash    BLOB NOT NULL,
    PRIMARY KEY (tenant, level, idx)
);

CREATE TABLE checkpoints (
    tenant   TEXT NOT NULL,
    size     INTEGER NOT NULL,
    root     BLOB NOT NULL,
    time_us  INTEGER NOT NULL,
    note     TEXT NOT NULL,
    PRIMARY KEY (tenant, size)
);
