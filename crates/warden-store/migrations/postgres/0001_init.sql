-- Warden system of record, PostgreSQL flavour: the same tables as the SQLite migrations
-- (0001–0003 there), with PostgreSQL types. Times are microseconds since the Unix epoch (UTC).
--
-- Every text column compares byte-wise (COLLATE "C") whatever the database's collation: the
-- stores page by keyset on text (UUIDv7 ids, names) and select a namespace subtree as the
-- range ['ns/', 'ns0'), which holds only when '/' sorts before '0' as it does in ASCII.

CREATE TABLE tenants (
    id          TEXT COLLATE "C" PRIMARY KEY,
    created_us  BIGINT NOT NULL
);

-- API tokens. Only the SHA-256 of the secret is kept; the secret is shown once at creation.
CREATE TABLE tokens (
    id            TEXT COLLATE "C" PRIMARY KEY,
    tenant        TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    secret_sha256 TEXT COLLATE "C" NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    agent         TEXT,
    on_behalf_of  TEXT,
    namespace     TEXT COLLATE "C",
    description   TEXT,
    created_us    BIGINT NOT NULL,
    expires_us    BIGINT,
    revoked_us    BIGINT
);
CREATE INDEX tokens_tenant ON tokens(tenant, created_us);

-- API-managed policy texts, one row per version; text NULL marks a deletion.
CREATE TABLE policy_versions (
    tenant      TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    namespace   TEXT COLLATE "C" NOT NULL,
    version     BIGINT NOT NULL,
    text        TEXT,
    sha256      TEXT,
    author      TEXT NOT NULL,
    message     TEXT,
    created_us  BIGINT NOT NULL,
    PRIMARY KEY (tenant, namespace, version)
);

-- The audit trail. seq is the event's leaf index in its tenant's Merkle log.
-- The flattened columns serve queries; verification checks them against the header.
--
-- Partitioned by month of the event's time (time_us), so that retention drops whole
-- partitions instead of deleting rows. A primary key of a partitioned table must hold the
-- partition key, hence (tenant, seq, time_us); one seq per tenant and one id per tenant are
-- guaranteed by the append transaction, which holds the tenant's Merkle head row locked
-- while it numbers and deduplicates the events (and merkle_nodes, not partitioned, would
-- refuse a second tree with its primary key).
CREATE TABLE audit_events (
    tenant        TEXT COLLATE "C" NOT NULL,
    seq           BIGINT NOT NULL,
    id            TEXT COLLATE "C" NOT NULL,
    time_us       BIGINT NOT NULL,
    namespace     TEXT COLLATE "C" NOT NULL,
    event_type    TEXT COLLATE "C" NOT NULL,
    principal     TEXT COLLATE "C",
    agent         TEXT COLLATE "C",
    on_behalf_of  TEXT COLLATE "C",
    session       TEXT COLLATE "C",
    action        TEXT COLLATE "C",
    resource_type TEXT COLLATE "C",
    resource_id   TEXT COLLATE "C",
    outcome       TEXT COLLATE "C",
    header        TEXT NOT NULL,
    payload       TEXT,
    leaf_hash     BYTEA NOT NULL,
    PRIMARY KEY (tenant, seq, time_us)
) PARTITION BY RANGE (time_us);
CREATE INDEX audit_events_id ON audit_events(tenant, id);
CREATE INDEX audit_events_time ON audit_events(tenant, time_us);
CREATE INDEX audit_events_namespace ON audit_events(tenant, namespace, seq);

-- Catches any event whose month has no partition (a clock far off, a partition not yet
-- created), so that no append can fail for want of one.
CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;

-- Creates the monthly partitions audit_events_YYYYMM from the current month to
-- `months_ahead` months ahead, those that do not exist yet; returns how many it created.
-- Run at start and periodically by every node; concurrent runs are serialised by an
-- advisory lock. A month whose events already went to the default partition is skipped with
-- a warning (its rows stay readable there; see docs/operations.md).
CREATE FUNCTION warden_create_audit_partitions(months_ahead INTEGER) RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    month   DATE := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    created INTEGER := 0;
    part    TEXT;
    lo      BIGINT;
    hi      BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('warden.audit_partitions', 0));
    FOR i IN 0..months_ahead LOOP
        part := 'audit_events_' || to_char(month, 'YYYYMM');
        IF to_regclass(part) IS NULL THEN
            lo := (extract(epoch FROM month::timestamp) * 1000000)::bigint;
            hi := (extract(epoch FROM (month + interval '1 month')::timestamp) * 1000000)::bigint;
            BEGIN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF audit_events FOR VALUES FROM (%s) TO (%s)',
                    part, lo, hi);
                created := created + 1;
            EXCEPTION WHEN check_violation THEN
                RAISE WARNING 'audit partition % not created: the default partition holds events of that month', part;
            END;
        END IF;
        month := (month + interval '1 month')::date;
    END LOOP;
    RETURN created;
END
$$;

-- Per-tenant Merkle head: tree size and the right frontier (concatenated 32-byte hashes).
-- Every append transaction locks its tenant's row (INSERT … ON CONFLICT DO UPDATE) before it
-- reads the head, so appends of several nodes to one tenant's log are serialised: one tree,
-- no fork, no gap.
CREATE TABLE merkle_heads (
    tenant    TEXT COLLATE "C" PRIMARY KEY,
    size      BIGINT NOT NULL,
    frontier  BYTEA NOT NULL
);

-- Perfect subtree hashes from level 4 up; lower levels are recomputed from leaf hashes.
CREATE TABLE merkle_nodes (
    tenant  TEXT COLLATE "C" NOT NULL,
    level   BIGINT NOT NULL,
    idx     BIGINT NOT NULL,
    hash    BYTEA NOT NULL,
    PRIMARY KEY (tenant, level, idx)
);

CREATE TABLE checkpoints (
    tenant   TEXT COLLATE "C" NOT NULL,
    size     BIGINT NOT NULL,
    root     BYTEA NOT NULL,
    time_us  BIGINT NOT NULL,
    note     TEXT NOT NULL,
    PRIMARY KEY (tenant, size)
);

-- Approval requests (see the SQLite migration 0002 for the life of a row).
CREATE TABLE approvals (
    id             TEXT COLLATE "C" PRIMARY KEY,
    tenant         TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    namespace      TEXT COLLATE "C" NOT NULL,
    session        TEXT COLLATE "C" NOT NULL,
    agent          TEXT,
    on_behalf_of   TEXT,
    action         TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    resource_id    TEXT COLLATE "C" NOT NULL,
    args_sha256    TEXT COLLATE "C" NOT NULL,
    arguments      TEXT NOT NULL,
    policies       TEXT NOT NULL,
    reason         TEXT,
    decision_event TEXT,
    status         TEXT NOT NULL
        CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'consumed')),
    requested_us   BIGINT NOT NULL,
    expires_us     BIGINT NOT NULL,
    resolved_by    TEXT,
    resolved_via   TEXT CHECK (resolved_via IN ('api', 'cli', 'elicitation')),
    resolved_us    BIGINT,
    comment        TEXT,
    consumed_us    BIGINT
);
CREATE INDEX approvals_tenant ON approvals(tenant, id);
CREATE INDEX approvals_namespace ON approvals(tenant, namespace, id);
CREATE INDEX approvals_binding ON approvals(tenant, session, resource_id, args_sha256, status);

-- The registry (see the SQLite migration 0003).
CREATE TABLE registry_servers (
    tenant      TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    name        TEXT COLLATE "C" NOT NULL,
    alias       TEXT COLLATE "C" NOT NULL,
    state       TEXT COLLATE "C" NOT NULL
        CHECK (state IN ('pending_review', 'approved', 'deprecated', 'blocked')),
    owner       TEXT COLLATE "C",
    record      TEXT NOT NULL,
    version     BIGINT NOT NULL,
    created_us  BIGINT NOT NULL,
    updated_us  BIGINT NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE UNIQUE INDEX registry_servers_alias ON registry_servers(tenant, alias);
CREATE INDEX registry_servers_state ON registry_servers(tenant, state, name);
CREATE INDEX registry_servers_owner ON registry_servers(tenant, owner, name);

CREATE TABLE registry_tools (
    tenant           TEXT COLLATE "C" NOT NULL,
    server           TEXT COLLATE "C" NOT NULL,
    name             TEXT COLLATE "C" NOT NULL,
    state            TEXT COLLATE "C" NOT NULL
        CHECK (state IN ('pending_review', 'approved', 'deprecated', 'blocked')),
    risk             TEXT COLLATE "C" CHECK (risk IN ('low', 'medium', 'high', 'critical')),
    categories       TEXT COLLATE "C" NOT NULL,
    owner            TEXT COLLATE "C",
    record           TEXT NOT NULL,
    observed         TEXT,
    observed_sha256  TEXT,
    version          BIGINT NOT NULL,
    created_us       BIGINT NOT NULL,
    updated_us       BIGINT NOT NULL,
    PRIMARY KEY (tenant, server, name),
    FOREIGN KEY (tenant, server) REFERENCES registry_servers(tenant, name)
);
CREATE INDEX registry_tools_state ON registry_tools(tenant, state, server, name);
CREATE INDEX registry_tools_risk ON registry_tools(tenant, risk, server, name);

CREATE TABLE registry_agents (
    tenant      TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    name        TEXT COLLATE "C" NOT NULL,
    owner       TEXT COLLATE "C" NOT NULL,
    record      TEXT NOT NULL,
    version     BIGINT NOT NULL,
    created_us  BIGINT NOT NULL,
    updated_us  BIGINT NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE INDEX registry_agents_owner ON registry_agents(tenant, owner, name);

CREATE TABLE registry_history (
    id            TEXT COLLATE "C" PRIMARY KEY,
    tenant        TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    subject_kind  TEXT COLLATE "C" NOT NULL CHECK (subject_kind IN ('server', 'tool', 'agent')),
    subject       TEXT COLLATE "C" NOT NULL,
    tool          TEXT COLLATE "C",
    kind          TEXT COLLATE "C" NOT NULL
        CHECK (kind IN ('registered', 'update', 'transition', 'scope', 'pin', 'definition_changed')),
    from_state    TEXT,
    to_state      TEXT,
    reason        TEXT,
    changed_by    TEXT NOT NULL,
    at_us         BIGINT NOT NULL,
    detail        TEXT NOT NULL,
    event_id      TEXT
);
CREATE INDEX registry_history_tenant ON registry_history(tenant, id);
CREATE INDEX registry_history_subject ON registry_history(tenant, subject_kind, subject, tool, id);
