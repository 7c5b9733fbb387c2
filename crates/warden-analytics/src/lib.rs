//! Warden's analytics copy of the audit trail, in ClickHouse.
//!
//! The system of record (SQLite or PostgreSQL) stays the only authority: its audit log is the
//! outbox. The [`feeder`] copies each tenant's events in log order into one ClickHouse table,
//! in batches, and resumes from the highest sequence ClickHouse holds; delivery is
//! at-least-once. The table ([`schema`]) is a `ReplacingMergeTree` whose sorting key ends in
//! the event id, so a re-sent event collapses into the one already there; queries that must be
//! exact read it with `FINAL` (see [`report`]). Nothing here is on the decision path: a
//! ClickHouse that is down delays the copy, never a decision.
//!
//! Everything runs over ClickHouse's HTTP interface ([`client`]) and works on the ClickHouse
//! that Debian packages (18.16) as on current releases: no TTL, codecs, `DateTime64`, `Map` or
//! projections; retention drops whole partitions ([`schema::drop_partitions_before`]), and
//! the system of record's payload purges reach the copy as mutations ([`retention`]).

pub mod client;
pub mod config;
pub mod feeder;
pub mod report;
pub mod retention;
pub mod row;
pub mod schema;
pub mod testing;

pub use client::{ClickHouse, ClickHouseError};
pub use config::{AnalyticsConfig, Partition};
pub use feeder::{FeedStats, Feeder};
