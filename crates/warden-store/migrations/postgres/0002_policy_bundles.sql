-- Policy bundles: every applied set of a tenant's policy files and tests, one row per
-- version. `files` is a JSON object (path -> text) kept as written; diffs are computed from
-- two rows.
CREATE TABLE policy_bundles (
    tenant        TEXT COLLATE "C" NOT NULL,
    version       BIGINT NOT NULL,
    sha256        TEXT NOT NULL,
    files         TEXT NOT NULL,
    mode          TEXT NOT NULL,               -- enforce | warn | off
    source        TEXT NOT NULL,               -- api | directory
    author        TEXT NOT NULL,
    message       TEXT,
    -- Policy test failures the bundle was applied with (`?tests=warn`), JSON; NULL if none.
    test_failures TEXT,
    created_us    BIGINT NOT NULL,
    PRIMARY KEY (tenant, version)
);
