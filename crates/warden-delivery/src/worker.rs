//! One destination's delivery loop on one node: hold the lease, read the next batch past the
//! cursor, send it (retrying with backoff, behind the circuit breaker), then move the cursor —
//! or, after the last attempt, dead-letter the batch and move the cursor past it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use tokio::sync::watch;
use warden_core::{Actor, AuditEvent, EntityRef, TenantId, catalog};
use warden_store::{
    DeadLetterBatch, LeaseKey, NewDeadLetter, Store, StoredDestination, StoredEvent,
};

use crate::breaker::{Breaker, backoff};
use crate::engine::DeliveryConfig;
use crate::metrics::DeliveryMetrics;
use crate::sink::Sink;
use crate::spec::DestinationSpec;

pub(crate) struct Worker {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<DeliveryMetrics>,
    pub config: DeliveryConfig,
    pub node: String,
    pub destination: StoredDestination,
    pub stop: watch::Receiver<bool>,
}

/// Why a wait ended early.
enum Interrupted {
    Stopped,
    LeaseLost,
}

impl Worker {
    pub async fn run(mut self) {
        let tenant = self.destination.tenant.clone();
        let name = self.destination.name.clone();
        let spec: DestinationSpec = match serde_json::from_value(self.destination.spec.clone()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%tenant, destination = %name, error = %e, "stored destination does not parse; not delivering it");
                return;
            }
        };
        let settings = spec.settings();
        let filter = spec.filter();
        let sink = match Sink::new(tenant.as_str(), &spec, &settings) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%tenant, destination = %name, error = %e, "destination is not usable; not delivering it");
                return;
            }
        };
        let mut breaker = Breaker::new(settings.breaker_failures, settings.breaker_cooldown);
        let node = self.node.clone();
        let key = LeaseKey {
            tenant: &tenant,
            destination: &name,
            owner: &node,
        };
        let mut holding = false;
        loop {
            if *self.stop.borrow() {
                break;
            }
            if !self.lease(&key).await {
                if holding {
                    tracing::info!(%tenant, destination = %name, "delivery lease lost to another node");
                }
                holding = false;
                if self.pause(self.config.poll_interval).await {
                    break;
                }
                continue;
            }
            if !holding {
                tracing::info!(%tenant, destination = %name, node = %node, "delivering");
                holding = true;
            }
            let next = match self.store.delivery_state(&tenant, &name).await {
                Ok(s) => s.next_seq,
                Err(e) => {
                    tracing::warn!(%tenant, destination = %name, error = %e, "cannot read the delivery cursor");
                    if self.pause(self.config.poll_interval).await {
                        break;
                    }
                    continue;
                }
            };
            self.update_lag(&tenant, &name, next).await;
            let events = match self
                .store
                .events_in_order(&tenant, next, settings.batch_size)
                .await
            {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(%tenant, destination = %name, error = %e, "cannot read the audit log");
                    if self.pause(self.config.poll_interval).await {
                        break;
                    }
                    continue;
                }
            };
            let Some(last) = events.last() else {
                if self.pause(self.config.poll_interval).await {
                    break;
                }
                continue;
            };
            let end = last.seq + 1;
            let selected: Vec<StoredEvent> = events
                .into_iter()
                .filter(|e| filter.matches(&e.event))
                .collect();
            let outcome = if selected.is_empty() {
                Ok(Delivered::Skipped)
            } else {
                self.deliver(&key, &sink, &mut breaker, &settings, &selected, next, end)
                    .await
            };
            match outcome {
                Ok(Delivered::Acknowledged) | Ok(Delivered::Skipped) => {
                    match self.store.advance_delivery_cursor(&key, next, end).await {
                        Ok(true) => {
                            if !selected.is_empty() {
                                self.metrics.update(tenant.as_str(), &name, |f| {
                                    f.delivered += selected.len() as u64
                                });
                            }
                        }
                        Ok(false) => {
                            holding = false;
                            tracing::info!(%tenant, destination = %name, "cursor moved elsewhere; re-reading it");
                        }
                        Err(e) => {
                            tracing::warn!(%tenant, destination = %name, error = %e, "cannot move the delivery cursor; the batch will be sent again");
                        }
                    }
                }
                Ok(Delivered::DeadLettered) => {}
                Err(Interrupted::LeaseLost) => holding = false,
                Err(Interrupted::Stopped) => break,
            }
            self.update_lag(&tenant, &name, end).await;
        }
        // Let another node take over at once instead of after the lease expires.
        let _ = self.store.release_delivery_lease(&key).await;
    }

    async fn lease(&self, key: &LeaseKey<'_>) -> bool {
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(self.config.lease_ttl).unwrap_or_default();
        match self.store.acquire_delivery_lease(key, now, now + ttl).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(tenant = %key.tenant, destination = key.destination, error = %e, "cannot take the delivery lease");
                false
            }
        }
    }

    /// Sleeps `d` or until stopped (true).
    async fn pause(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = self.stop.changed() => true,
        }
    }

    /// Sleeps `d` while renewing the lease at a third of its lifetime.
    async fn wait_holding(&mut self, key: &LeaseKey<'_>, d: Duration) -> Result<(), Interrupted> {
        let deadline = Instant::now() + d;
        let slice = self.config.lease_ttl / 3;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            if self.pause((deadline - now).min(slice)).await {
                return Err(Interrupted::Stopped);
            }
            if !self.lease(key).await {
                return Err(Interrupted::LeaseLost);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn deliver(
        &mut self,
        key: &LeaseKey<'_>,
        sink: &Sink,
        breaker: &mut Breaker,
        settings: &crate::spec::Settings,
        events: &[StoredEvent],
        from: u64,
        to: u64,
    ) -> Result<Delivered, Interrupted> {
        let (tenant, name) = (key.tenant.as_str(), key.destination);
        let mut attempt = 0u32;
        loop {
            let wait = breaker.wait(Instant::now());
            if !wait.is_zero() {
                self.wait_holding(key, wait).await?;
                breaker.wait(Instant::now());
                self.report(key, breaker, None).await;
            }
            if *self.stop.borrow() {
                return Err(Interrupted::Stopped);
            }
            if !self.lease(key).await {
                return Err(Interrupted::LeaseLost);
            }
            attempt += 1;
            let sent = tokio::select! {
                r = sink.send(events) => r,
                _ = self.stop.changed() => return Err(Interrupted::Stopped),
            };
            match sent {
                Ok(()) => {
                    let was = breaker.state();
                    breaker.success();
                    if was != breaker.state() || attempt > 1 {
                        self.report(key, breaker, None).await;
                    }
                    return Ok(Delivered::Acknowledged);
                }
                Err(error) => {
                    breaker.failure(Instant::now());
                    self.metrics
                        .update(tenant, name, |f| f.failed_attempts += 1);
                    tracing::warn!(tenant, destination = name, attempt, %error, "delivery attempt failed");
                    self.report(key, breaker, Some(&error)).await;
                    if attempt >= settings.max_attempts {
                        let letters: Vec<NewDeadLetter> = events
                            .iter()
                            .map(|e| NewDeadLetter {
                                seq: e.seq,
                                event_id: e.event.header.id.to_string(),
                            })
                            .collect();
                        let record =
                            dead_letter_record(key, &self.node, events, from, to, attempt, &error);
                        let batch = DeadLetterBatch {
                            from,
                            to,
                            letters: &letters,
                            attempts: attempt,
                            error: &error,
                            record: record.as_ref(),
                        };
                        return match self.store.dead_letter(key, &batch).await {
                            Ok(true) => {
                                tracing::error!(
                                    tenant,
                                    destination = name,
                                    events = letters.len(),
                                    "batch dead-lettered after every attempt failed"
                                );
                                self.metrics.update(tenant, name, |f| {
                                    f.dead_lettered += letters.len() as u64
                                });
                                Ok(Delivered::DeadLettered)
                            }
                            Ok(false) => Err(Interrupted::LeaseLost),
                            Err(e) => {
                                tracing::warn!(tenant, destination = name, error = %e, "cannot dead-letter the batch; it will be tried again");
                                Err(Interrupted::LeaseLost)
                            }
                        };
                    }
                    let delay = backoff(attempt, settings.backoff_initial, settings.backoff_max);
                    self.wait_holding(key, delay).await?;
                }
            }
        }
    }

    async fn report(&self, key: &LeaseKey<'_>, breaker: &Breaker, error: Option<&str>) {
        let state = breaker.state();
        self.metrics
            .update(key.tenant.as_str(), key.destination, |f| {
                f.circuit = state.gauge()
            });
        if let Err(e) = self
            .store
            .record_delivery_status(key, state.as_str(), error)
            .await
        {
            tracing::warn!(error = %e, "cannot record the delivery status");
        }
    }

    async fn update_lag(&self, tenant: &TenantId, name: &str, next: u64) {
        if let Ok(head) = self.store.merkle_head(tenant).await {
            let lag = head.size.saturating_sub(next);
            self.metrics.update(tenant.as_str(), name, |f| f.lag = lag);
        }
    }
}

/// Longest error text a dead-letter record carries (the dead-letter store keeps it whole).
const MAX_RECORDED_ERROR: usize = 1024;

/// The audit record of a dead-lettered batch, or `None` for a batch made only of such
/// records. That exception is what stops a feedback loop: each record enters the log, and
/// so the outbox of every destination of the tenant, where a receiver that is still down
/// would dead-letter it in turn. A batch holding other events gets one record — at most one
/// per batch those events passed through — and a batch of records alone gets none, so once
/// the tenant records nothing else the log stops growing (even with two failing
/// destinations feeding each other's records).
fn dead_letter_record(
    key: &LeaseKey<'_>,
    node: &str,
    events: &[StoredEvent],
    from: u64,
    to: u64,
    attempts: u32,
    error: &str,
) -> Option<AuditEvent> {
    if events
        .iter()
        .all(|e| e.event.header.event_type == catalog::DESTINATION_DEAD_LETTERED)
    {
        return None;
    }
    let mut error = error.to_owned();
    if error.len() > MAX_RECORDED_ERROR {
        let mut cut = MAX_RECORDED_ERROR;
        while !error.is_char_boundary(cut) {
            cut -= 1;
        }
        error.truncate(cut);
        error.push('…');
    }
    let actor = Actor {
        principal: Some(EntityRef {
            entity_type: "System".into(),
            id: "delivery".into(),
        }),
        role: Some("system".into()),
        ..Default::default()
    };
    let mut e = AuditEvent::new(
        key.tenant.as_str(),
        key.tenant.root_namespace().as_str(),
        catalog::DESTINATION_DEAD_LETTERED,
        "warden.delivery",
        actor,
        json!({
            "destination": key.destination,
            "events": events.len(),
            "first_seq": events.first().map(|e| e.seq),
            "last_seq": events.last().map(|e| e.seq),
            "cursor": {"from": from, "to": to},
            "attempts": attempts,
            "error": error,
            "node": node,
        }),
    );
    e.header.action = Some("dead_letter".into());
    Some(e)
}

enum Delivered {
    Acknowledged,
    Skipped,
    DeadLettered,
}
