-- Retention: how long each namespace subtree keeps payloads and headers, legal holds that stop
-- every deletion they cover, and the leaf hashes of events whose rows retention deleted.

-- One rule per (tenant, namespace); the tenant-wide rule has the tenant root as namespace.
-- NULL days = keep forever.
CREATE TABLE retention_rules (
    tenant        TEXT NOT NULL,
    namespace     TEXT NOT NULL,
    payload_days  INTEGER CHECK (payload_days IS NULL OR payload_days > 0),
    header_days   INTEGER CHECK (header_days IS NULL OR header_days > 0),
    updated_by    TEXT NOT NULL,
    updated_us    INTEGER NOT NULL,
    PRIMARY KEY (tenant, namespace)
);

-- A hold covers a namespace subtree (NULL: the whole tenant) and a time range of event times
-- (either end open). Released holds stay, with who released them and why.
CREATE TABLE legal_holds (
    id              TEXT PRIMARY KEY,
    tenant          TEXT NOT NULL,
    namespace       TEXT,
    from_us         INTEGER,
    to_us           INTEGER,
    reason          TEXT NOT NULL,
    created_by      TEXT NOT NULL,
    created_us      INTEGER NOT NULL,
    released_by     TEXT,
    released_reason TEXT,
    released_us     INTEGER
);
CREATE INDEX legal_holds_tenant ON legal_holds(tenant, created_us);

-- The leaf hash of every event whose row a retention run deleted: the Merkle tree's lowest
-- level, kept so that roots, checkpoints and inclusion proofs of the remaining events still
-- compute. A hash reveals nothing of the header.
CREATE TABLE audit_expired_leaves (
    tenant     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    leaf_hash  BLOB NOT NULL,
    PRIMARY KEY (tenant, seq)
);
