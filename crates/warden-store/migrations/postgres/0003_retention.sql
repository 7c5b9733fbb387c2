-- Retention (see the SQLite migration 0005): rules per namespace subtree, legal holds, and the
-- leaf hashes of events whose rows retention deleted.

CREATE TABLE retention_rules (
    tenant        TEXT COLLATE "C" NOT NULL,
    namespace     TEXT COLLATE "C" NOT NULL,
    payload_days  BIGINT CHECK (payload_days IS NULL OR payload_days > 0),
    header_days   BIGINT CHECK (header_days IS NULL OR header_days > 0),
    updated_by    TEXT NOT NULL,
    updated_us    BIGINT NOT NULL,
    PRIMARY KEY (tenant, namespace)
);

CREATE TABLE legal_holds (
    id              TEXT COLLATE "C" PRIMARY KEY,
    tenant          TEXT COLLATE "C" NOT NULL,
    namespace       TEXT COLLATE "C",
    from_us         BIGINT,
    to_us           BIGINT,
    reason          TEXT NOT NULL,
    created_by      TEXT NOT NULL,
    created_us      BIGINT NOT NULL,
    released_by     TEXT,
    released_reason TEXT,
    released_us     BIGINT
);
CREATE INDEX legal_holds_tenant ON legal_holds(tenant, created_us);

-- Not partitioned: a hash per deleted event, kept for as long as the tree is.
CREATE TABLE audit_expired_leaves (
    tenant     TEXT COLLATE "C" NOT NULL,
    seq        BIGINT NOT NULL,
    leaf_hash  BYTEA NOT NULL,
    PRIMARY KEY (tenant, seq)
);
