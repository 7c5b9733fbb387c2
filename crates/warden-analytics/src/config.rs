//! How to reach ClickHouse and how to feed it.

use std::time::Duration;

use warden_registry::model::SecretRef;

/// How the table is partitioned: by month (the default) or by day. Retention drops whole
/// partitions, so the partition is also the granularity of retention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Partition {
    #[default]
    Month,
    Day,
}

impl Partition {
    pub fn parse(s: &str) -> Result<Partition, String> {
        match s {
            "month" => Ok(Partition::Month),
            "day" => Ok(Partition::Day),
            other => Err(format!(
                "partition must be \"month\" or \"day\", not {other:?}"
            )),
        }
    }

    /// The `PARTITION BY` expression.
    pub fn expression(self) -> &'static str {
        match self {
            Partition::Month => "toYYYYMM(time)",
            Partition::Day => "toYYYYMMDD(time)",
        }
    }
}

#[derive(Clone, Debug)]
pub struct AnalyticsConfig {
    /// ClickHouse's HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub clickhouse_url: String,
    /// The database holding Warden's table (created if missing).
    pub database: String,
    pub partition: Partition,
    /// Most events per insert.
    pub batch: usize,
    /// How often the feeder looks for new events once it has caught up.
    pub interval: Duration,
    /// ClickHouse user [default: ClickHouse's `default`].
    pub user: Option<String>,
    /// The user's password, as a reference (`env:NAME` or `file:/path`), never the value.
    pub password: Option<SecretRef>,
    /// How long the feeder's lease (`analytics.feeder`, one feeding node per cluster) lasts
    /// unless renewed: another node takes over this long after the holder stopped renewing.
    /// `None`: [`AnalyticsConfig::lease_ttl`] derives it from `interval`.
    pub lease_ttl: Option<Duration>,
    /// Drop ClickHouse partitions wholly older than this many days (see
    /// [`crate::retention`]); `None` keeps them forever. One setting for the whole table:
    /// every partition holds every tenant's events.
    pub retention_days: Option<u32>,
}

pub const DEFAULT_DATABASE: &str = "warden";
pub const DEFAULT_BATCH: usize = 20_000;
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// The largest batch accepted: one insert stays one block of ClickHouse's default
/// `max_insert_block_size` (1,048,576 rows), so it lands whole or, split by partition, in
/// log order.
pub const MAX_BATCH: usize = 1_000_000;
/// The shortest derived lease: long enough that a node busy with one slow insert or a slow
/// store read does not lose its lease to a standby node in between.
pub const MIN_DERIVED_LEASE_TTL: Duration = Duration::from_secs(15);
/// A derived lease lasts this many feed intervals (at least [`MIN_DERIVED_LEASE_TTL`]).
pub const LEASE_INTERVALS: u32 = 10;

impl AnalyticsConfig {
    pub fn new(clickhouse_url: impl Into<String>) -> AnalyticsConfig {
        AnalyticsConfig {
            clickhouse_url: clickhouse_url.into(),
            database: DEFAULT_DATABASE.into(),
            partition: Partition::Month,
            batch: DEFAULT_BATCH,
            interval: DEFAULT_INTERVAL,
            user: None,
            password: None,
            lease_ttl: None,
            retention_days: None,
        }
    }

    /// The feeder's lease duration: as set, or [`LEASE_INTERVALS`] feed intervals and at
    /// least [`MIN_DERIVED_LEASE_TTL`]. The holder renews it before every pass and every
    /// batch, so it outlives a holder only by this much.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
            .unwrap_or_else(|| (self.interval * LEASE_INTERVALS).max(MIN_DERIVED_LEASE_TTL))
    }

    /// Checks what the settings can be checked for without connecting.
    pub fn validate(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.clickhouse_url)
            .map_err(|e| format!("clickhouse_url {:?} is not a URL: {e}", self.clickhouse_url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "clickhouse_url must be an http:// or https:// URL (ClickHouse's HTTP interface), not {:?}",
                self.clickhouse_url
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "clickhouse_url may not carry credentials; set `user` and `password` (a reference: env:NAME or file:/path)"
                    .into(),
            );
        }
        crate::schema::check_identifier(&self.database).map_err(|e| format!("database: {e}"))?;
        if self.batch == 0 || self.batch > MAX_BATCH {
            return Err(format!(
                "batch must be between 1 and {MAX_BATCH}, not {}",
                self.batch
            ));
        }
        if self.interval.is_zero() {
            return Err("interval must be longer than zero".into());
        }
        if let Some(ttl) = self.lease_ttl
            && ttl < self.interval * 2
        {
            return Err(format!(
                "lease_ttl ({ttl:?}) must be at least twice the interval ({:?}): the holder renews it once per pass",
                self.interval
            ));
        }
        if self.retention_days == Some(0) {
            return Err(
                "retention_days must be at least 1 (leave it out to keep the copy forever)".into(),
            );
        }
        Ok(())
    }
}
