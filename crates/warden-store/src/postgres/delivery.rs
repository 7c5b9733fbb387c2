//! Delivery state in PostgreSQL (the queries are shared with SQLite, see `crate::delivery`).

crate::delivery::delivery_sql!(super::PgStore, sqlx::postgres::PgRow);
