//! Named leases in PostgreSQL (the queries are shared with SQLite, see `crate::lease`).

crate::lease::lease_sql!(super::PgStore);
