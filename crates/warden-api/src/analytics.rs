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
    feeder: Mutex<Option<Feeder>>,
}

impl Analytics {
    /// Checks the settings; connects to nothing (ClickHouse may be down when Warden starts).
    pub fn new(store: Arc<dyn Store>, config: AnalyticsConfig) -> Result<Analytics, String> {
        let feeder = Feeder::new(store, config)?;
        Ok(Analytics {
            clickhouse: feeder.clickhouse().clone(),
            stats: feeder.stats(),
            feeder: Mutex::new(Some(feeder)),
        })
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
