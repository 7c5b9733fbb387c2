//! Delivery state in SQLite (the queries are shared with PostgreSQL, see `crate::delivery`).

crate::delivery::delivery_sql!(super::SqliteStore, sqlx::sqlite::SqliteRow);
