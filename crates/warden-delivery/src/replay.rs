//! Replay: sends a destination's dead letters again, oldest first, a batch at a time, and
//! removes each batch once the receiver acknowledged it. It stops at the first failure, so
//! what could not be delivered stays in the dead-letter store.

use serde::Serialize;
use warden_store::{Store, StoredDestination};

use crate::sink::Sink;
use crate::spec::DestinationSpec;

#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReplayReport {
    /// Dead letters delivered and removed.
    pub delivered: u64,
    /// Dead letters left (their events could not be delivered, or no longer exist).
    pub remaining: u64,
    /// Why the replay stopped early.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub async fn replay(store: &dyn Store, d: &StoredDestination) -> warden_core::Result<ReplayReport> {
    let spec: DestinationSpec = serde_json::from_value(d.spec.clone())
        .map_err(|e| warden_core::Error::internal(format!("stored destination: {e}")))?;
    let settings = spec.settings();
    let sink =
        Sink::new(d.tenant.as_str(), &spec, &settings).map_err(warden_core::Error::invalid)?;
    let mut report = ReplayReport::default();
    let mut after = None;
    loop {
        let letters = store
            .dead_letters(&d.tenant, &d.name, after, settings.batch_size)
            .await?;
        let Some(last) = letters.last() else { break };
        after = Some(last.seq);
        let mut events = Vec::with_capacity(letters.len());
        for l in &letters {
            // Dead letters are usually a contiguous run; one read per event keeps this simple
            // and replay is rare.
            if let Some(e) = store.events_in_order(&d.tenant, l.seq, 1).await?.pop()
                && e.seq == l.seq
            {
                events.push(e);
            }
        }
        if !events.is_empty()
            && let Err(e) = sink.send(&events).await
        {
            report.error = Some(e);
            break;
        }
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        report.delivered += store.remove_dead_letters(&d.tenant, &d.name, &seqs).await?;
    }
    report.remaining = store.delivery_state(&d.tenant, &d.name).await?.dead_letters;
    Ok(report)
}
