//! Signs a checkpoint of each tenant's Merkle log every N events or T seconds, whichever
//! comes first, so that tampering with anything already checkpointed is caught offline.

use std::sync::Arc;
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use warden_audit::checkpoint::{Checkpoint, CheckpointSigner};
use warden_audit::merkle::CompactRange;
use warden_core::{Error, Result, TenantId};

use crate::pipeline::AuditPipeline;
use crate::{Store, StoredCheckpoint};

#[derive(Clone, Copy, Debug)]
pub struct CheckpointPolicy {
    pub every_events: u64,
    pub every: Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            every_events: 10_000,
            every: Duration::from_secs(10),
        }
    }
}

pub fn origin(tenant: &TenantId) -> String {
    format!("warden/{tenant}")
}

/// Signs the tenant's current tree head if it is larger than the last checkpoint.
pub async fn checkpoint_tenant(
    store: &dyn Store,
    signer: &CheckpointSigner,
    tenant: &TenantId,
) -> Result<Option<StoredCheckpoint>> {
    let head = store.merkle_head(tenant).await?;
    let latest = store.latest_checkpoint(tenant).await?;
    if head.size == 0 || latest.as_ref().is_some_and(|c| c.size >= head.size) {
        return Ok(None);
    }
    let range = CompactRange::from_frontier(head.size, head.frontier)
        .map_err(|e| Error::internal(format!("merkle head of {tenant} is corrupt: {e:?}")))?;
    let cp = Checkpoint {
        origin: origin(tenant),
        size: head.size,
        root: range.root(),
        time: Utc::now().trunc_subsecs(0),
    };
    let stored = StoredCheckpoint {
        size: cp.size,
        root: cp.root,
        time: cp.time,
        note: signer.sign(&cp),
    };
    store.insert_checkpoint(tenant, &stored).await?;
    Ok(Some(stored))
}

/// Checkpoints every tenant that has grown since its last checkpoint.
pub async fn checkpoint_all(store: &dyn Store, signer: &CheckpointSigner) -> Result<usize> {
    let mut n = 0;
    for t in store.log_tenants().await? {
        if checkpoint_tenant(store, signer, &t).await?.is_some() {
            n += 1;
        }
    }
    Ok(n)
}

/// Runs until `stop` changes: on a timer, and early when enough events were committed.
pub async fn run(
    store: Arc<dyn Store>,
    signer: Arc<CheckpointSigner>,
    pipeline: Arc<AuditPipeline>,
    policy: CheckpointPolicy,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut last_count = pipeline.stats().appended.get();
    let mut timer = tokio::time::interval(policy.every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = timer.tick() => {}
            _ = pipeline.committed.notified() => {
                if pipeline.stats().appended.get().saturating_sub(last_count) < policy.every_events {
                    continue;
                }
            }
        }
        last_count = pipeline.stats().appended.get();
        if let Err(e) = checkpoint_all(store.as_ref(), &signer).await {
            tracing::warn!(error = %e, "checkpoint failed; will retry");
        }
    }
}
