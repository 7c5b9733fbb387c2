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
}

pub const DEFAULT_DATABASE: &str = "warden";
pub const DEFAULT_BATCH: usize = 20_000;
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// The largest batch accepted: one insert stays one block of ClickHouse's default
/// `max_insert_block_size` (1,048,576 rows), so it lands whole or, split by partition, in
/// log order.
pub const MAX_BATCH: usize = 1_000_000;

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
        }
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
        Ok(())
    }
}
