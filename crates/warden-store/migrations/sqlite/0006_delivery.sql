-- Delivery to stream destinations. The audit log is the outbox: each tenant's events are
-- numbered without gaps (seq), and each destination keeps how far it got.

-- A destination of a tenant: its settings as JSON (secrets only as env:/file: references).
CREATE TABLE destinations (
    tenant      TEXT NOT NULL,
    name        TEXT NOT NULL,
    spec        TEXT NOT NULL,
    -- `api` or `config` (declared in the configuration file of a node).
    origin      TEXT NOT NULL,
    created_us  INTEGER NOT NULL,
    updated_us  INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);

-- Where a destination stands: every event below next_seq was delivered or dead-lettered.
-- The lease (owner, expiry) makes one node at a time deliver it; the cursor only moves for
-- the lease holder, and only from the value it read.
CREATE TABLE delivery_state (
    tenant           TEXT NOT NULL,
    destination      TEXT NOT NULL,
    next_seq         INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_us INTEGER,
    circuit          TEXT NOT NULL,
    last_error       TEXT,
    last_error_us    INTEGER,
    PRIMARY KEY (tenant, destination)
);

-- Events whose batch failed every attempt; replay re-delivers them, then removes them.
CREATE TABLE dead_letters (
    tenant       TEXT NOT NULL,
    destination  TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    event_id     TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    error        TEXT NOT NULL,
    created_us   INTEGER NOT NULL,
    PRIMARY KEY (tenant, destination, seq)
);
