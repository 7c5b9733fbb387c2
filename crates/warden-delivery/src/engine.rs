//! The delivery engine of one node: a worker per destination, kept in line with the
//! destinations in the store (added, changed or removed through any node, the CLI or the
//! configuration file) by polling.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use warden_store::Store;

use crate::metrics::DeliveryMetrics;
use crate::worker::Worker;

#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// Deliver on this node at all. A node with delivery off still serves the API.
    pub enabled: bool,
    /// How often an idle worker looks for new events, and the engine for changed destinations.
    pub poll_interval: Duration,
    /// How long a node's lease lasts unless renewed; another node takes over a destination
    /// this long after its node stopped renewing (crashed).
    pub lease_ttl: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            enabled: true,
            poll_interval: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(30),
        }
    }
}

pub struct Engine {
    pub store: Arc<dyn Store>,
    pub config: DeliveryConfig,
    pub metrics: Arc<DeliveryMetrics>,
    /// This node's lease owner id: new at every start, so a restarted node is a new owner.
    pub node: String,
}

struct Running {
    updated: DateTime<Utc>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, config: DeliveryConfig) -> Engine {
        Engine {
            store,
            config,
            metrics: Arc::new(DeliveryMetrics::default()),
            node: format!("node-{}", uuid::Uuid::now_v7()),
        }
    }

    /// Runs until `stop` turns true, then stops every worker (each releases its lease).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if !self.config.enabled {
            return;
        }
        let mut workers: HashMap<(String, String), Running> = HashMap::new();
        let mut tick = tokio::time::interval(self.config.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = tick.tick() => {}
            }
            let all = match self.store.list_destinations(None).await {
                Ok(all) => all,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list destinations");
                    continue;
                }
            };
            let mut seen = std::collections::HashSet::new();
            for d in all {
                let k = (d.tenant.as_str().to_owned(), d.name.clone());
                seen.insert(k.clone());
                let current = workers.get(&k).map(|r| r.updated);
                if current == Some(d.updated_at)
                    && workers.get(&k).is_some_and(|r| !r.task.is_finished())
                {
                    continue;
                }
                if current == Some(d.updated_at) {
                    // A worker that gave up (an unusable destination) is not restarted until
                    // the destination changes.
                    continue;
                }
                if let Some(old) = workers.remove(&k) {
                    stop_worker(old).await;
                }
                let (tx, rx) = watch::channel(false);
                let updated = d.updated_at;
                let worker = Worker {
                    store: self.store.clone(),
                    metrics: self.metrics.clone(),
                    config: self.config.clone(),
                    node: self.node.clone(),
                    destination: d,
                    stop: rx,
                };
                workers.insert(
                    k,
                    Running {
                        updated,
                        stop: tx,
                        task: tokio::spawn(worker.run()),
                    },
                );
            }
            let gone: Vec<_> = workers
                .keys()
                .filter(|k| !seen.contains(*k))
                .cloned()
                .collect();
            for k in gone {
                if let Some(old) = workers.remove(&k) {
                    stop_worker(old).await;
                }
            }
        }
        for (_, w) in workers.drain() {
            stop_worker(w).await;
        }
    }
}

async fn stop_worker(w: Running) {
    let _ = w.stop.send(true);
    // A worker stops at its next await point; one stuck in a slow store call is cut off.
    if tokio::time::timeout(Duration::from_secs(5), w.task)
        .await
        .is_err()
    {
        tracing::warn!("a delivery worker did not stop in time");
    }
}
