-- Named leases: one node of a cluster at a time does a piece of work that concerns the whole
-- cluster (e.g. `analytics.feeder`, the copy of the audit log to ClickHouse). A lease is held
-- by `owner` until `expires_us`; another owner may take it only once it has expired. The
-- names are Warden's own, not a tenant's: these rows hold no tenant data.
CREATE TABLE leases (
    name        TEXT COLLATE "C" PRIMARY KEY,
    owner       TEXT NOT NULL,
    expires_us  BIGINT NOT NULL
);
