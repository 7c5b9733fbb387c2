//! The server's side of analytics: the ClickHouse feeder started with the server, and which
//! copy a report reads.

use std::sync::{Arc, Mutex};

use warden_analytics::{AnalyticsConfig, ClickHouse, FeedStats, Feeder};
use warden_store::Store;

/// Analytics as configured (`[analytics]`): the ClickHouse handle reports read through, the
/// feeder's statistics, and the feeder itself until the server starts it.
pub struct Analytics {
    pub clickhouse: ClickHouse,
    pub stats: Arc<FeedStats>,
    /// `[analytics] retention_days`: ClickHouse holds every event from this many days ago on
    /// (older partitions may have been dropped).
    pub retention_days: Option<u32>,
    feeder: Mutex<Option<Feeder>>,
}

impl Analytics {
    /// Checks the settings; connects to nothing (ClickHouse may be down when Warden starts).
    /// `node` is this node's lease owner id: of the nodes sharing a database, the one holding
    /// the feeder's lease feeds.
    pub fn new(
        store: Arc<dyn Store>,
        config: AnalyticsConfig,
        node: &str,
    ) -> Result<Analytics, String> {
        let retention_days = config.retention_days;
        let feeder = Feeder::new(store, config)?.owned_by(node);
        Ok(Analytics {
            clickhouse: feeder.clickhouse().clone(),
            stats: feeder.stats(),
            retention_days,
            feeder: Mutex::new(Some(feeder)),
        })
    }

    /// Whether ClickHouse still holds every event from `from` on: partitions are dropped only
    /// when wholly older than `retention_days` before the moment they are dropped.
    pub fn holds_since(&self, from: chrono::DateTime<chrono::Utc>) -> bool {
        self.retention_days
            .is_none_or(|days| from >= chrono::Utc::now() - chrono::Duration::days(i64::from(days)))
    }

    /// Starts the feeder (once) as a background task that stops when `stop` turns true.
    pub fn spawn_feeder(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let feeder = self.feeder.lock().expect("feeder").take()?;
        Some(tokio::spawn(feeder.run(stop)))
    }
}
