//! Named leases in SQLite (the queries are shared with PostgreSQL, see `crate::lease`).

crate::lease::lease_sql!(super::SqliteStore);
