//! The analytics table and its retention.
//!
//! One table, `audit_events`, holds every tenant's events: one row per event with the columns
//! reports filter and group on, flattened from the header, and the redacted payload as text.
//!
//! - `ReplacingMergeTree` with the event id last in the sorting key: rows with the same key
//!   (the same event sent twice) collapse into one when parts merge. Until then a re-sent
//!   event may be present twice, so exact queries read with `FINAL` (or count `uniqExact(id)`).
//!   A re-sent event always lands in the same partition (its time does not change), where the
//!   merge can see both copies.
//! - Partitioned by month (`toYYYYMM(time)`) or day (`toYYYYMMDD(time)`); retention drops
//!   whole partitions ([`drop_partitions_before`]) — ClickHouse 18.16 has no TTL.
//! - Sorted by `(tenant, namespace, time, id)`: every report names its tenant, most a
//!   namespace subtree (a key range) and a time window.
//!
//! Nothing here needs more than ClickHouse 18.16: no TTL, CODEC, DateTime64, Map,
//! LowCardinality or projections.

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use crate::client::{ClickHouse, ClickHouseError, as_string, quote};
use crate::config::Partition;

/// The table's name inside Warden's database.
pub const TABLE: &str = "audit_events";

/// A database name: letters, digits and `_`, not starting with a digit (used unquoted in
/// statements).
pub fn check_identifier(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a plain identifier (letters, digits and _, not starting with a digit, at most 64)"
        ))
    }
}

/// The `CREATE TABLE` statement.
pub fn create_table_sql(database: &str, partition: Partition) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {database}.{TABLE} (
    tenant        String,
    seq           UInt64,
    id            UUID,
    time          DateTime('UTC'),
    time_us       Int64,
    namespace     String,
    event_type    String,
    source        String,
    principal     String,
    agent         String,
    user          String,
    session       String,
    action        String,
    resource_type String,
    resource_id   String,
    tool          String,
    server        String,
    outcome       String,
    policies      Array(String),
    payload       String
) ENGINE = ReplacingMergeTree()
PARTITION BY {}
ORDER BY (tenant, namespace, time, id)",
        partition.expression()
    )
}

/// Creates the database and the table if they do not exist. An existing table is kept as it
/// is (its partitioning too).
pub async fn create(ch: &ClickHouse, partition: Partition) -> Result<(), ClickHouseError> {
    ch.execute(&format!("CREATE DATABASE IF NOT EXISTS {}", ch.database()))
        .await?;
    ch.execute(&create_table_sql(ch.database(), partition))
        .await
}

/// The partitions of the table that hold data, by ClickHouse's partition id (`YYYYMM` or
/// `YYYYMMDD`), oldest first.
pub async fn partitions(ch: &ClickHouse) -> Result<Vec<String>, ClickHouseError> {
    let rows = ch
        .rows(&format!(
            "SELECT DISTINCT partition_id FROM system.parts WHERE database = {} AND table = {} AND active ORDER BY partition_id",
            quote(ch.database()),
            quote(TABLE)
        ))
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.first().and_then(as_string))
        .collect())
}

/// The first instant of a partition (`YYYYMM` → the month's first day, `YYYYMMDD` → the
/// day), or `None` for an id of another shape.
pub fn partition_start(id: &str) -> Option<DateTime<Utc>> {
    let day = match id.len() {
        6 => NaiveDate::parse_from_str(&format!("{id}01"), "%Y%m%d").ok()?,
        8 => NaiveDate::parse_from_str(id, "%Y%m%d").ok()?,
        _ => return None,
    };
    Some(day.and_hms_opt(0, 0, 0)?.and_utc())
}

/// The first instant after a partition (`YYYYMM` → the next month's first day, `YYYYMMDD` →
/// the next day), or `None` for an id of another shape.
pub fn partition_end(id: &str) -> Option<DateTime<Utc>> {
    let day = match id.len() {
        6 => {
            let start = NaiveDate::parse_from_str(&format!("{id}01"), "%Y%m%d").ok()?;
            let (y, m) = if start.month() == 12 {
                (start.year() + 1, 1)
            } else {
                (start.year(), start.month() + 1)
            };
            NaiveDate::from_ymd_opt(y, m, 1)?
        }
        8 => NaiveDate::parse_from_str(id, "%Y%m%d").ok()?.succ_opt()?,
        _ => return None,
    };
    Some(day.and_hms_opt(0, 0, 0)?.and_utc())
}

/// Retention: drops every partition that lies entirely before `cutoff` (events older than it
/// go, a partition straddling it stays whole until it is all older). Returns the dropped
/// partition ids. The system of record keeps its own copy under its own retention. The
/// scheduled retention ([`crate::retention`]) goes through [`drop_partitions_before_except`]
/// to spare partitions under a legal hold.
pub async fn drop_partitions_before(
    ch: &ClickHouse,
    cutoff: DateTime<Utc>,
) -> Result<Vec<String>, ClickHouseError> {
    drop_partitions_before_except(ch, cutoff, |_, _, _| false).await
}

/// [`drop_partitions_before`], keeping every partition for whose id and time range
/// `[start, end)` `keep(id, start, end)` is true.
pub async fn drop_partitions_before_except(
    ch: &ClickHouse,
    cutoff: DateTime<Utc>,
    keep: impl Fn(&str, DateTime<Utc>, DateTime<Utc>) -> bool,
) -> Result<Vec<String>, ClickHouseError> {
    let mut dropped = Vec::new();
    for id in partitions(ch).await? {
        let (Some(start), Some(end)) = (partition_start(&id), partition_end(&id)) else {
            continue;
        };
        if end <= cutoff && !keep(&id, start, end) {
            ch.execute(&format!(
                "ALTER TABLE {} DROP PARTITION ID {}",
                ch.table(TABLE),
                quote(&id)
            ))
            .await?;
            dropped.push(id);
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_ends() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(partition_end("202611"), Some(at("2026-12-01T00:00:00Z")));
        assert_eq!(partition_end("202612"), Some(at("2027-01-01T00:00:00Z")));
        assert_eq!(partition_end("20261130"), Some(at("2026-12-01T00:00:00Z")));
        assert_eq!(partition_end("all"), None);
        assert_eq!(partition_start("202612"), Some(at("2026-12-01T00:00:00Z")));
        assert_eq!(
            partition_start("20261130"),
            Some(at("2026-11-30T00:00:00Z"))
        );
        assert_eq!(partition_start("all"), None);
    }

    #[test]
    fn identifiers() {
        assert!(check_identifier("warden").is_ok());
        assert!(check_identifier("warden_test_1").is_ok());
        for bad in ["", "1db", "a-b", "a.b", "a b", "a;DROP"] {
            assert!(check_identifier(bad).is_err(), "{bad}");
        }
    }
}
