//! Delivery of the audit log to the tools a security team already uses: HTTP webhooks
//! (signed JSON batches), the Splunk HTTP Event Collector and rotating local NDJSON files.
//!
//! The audit log is the outbox. A tenant's events are numbered without gaps; each destination
//! keeps in the store how far it got (`next_seq`) and moves it only after the receiver
//! acknowledged a batch, so delivery is at-least-once and in log order per tenant (receivers
//! deduplicate on the event id). One node at a time delivers a destination: it holds a lease
//! row, renewed while it works and taken over by another node once it has expired.
//!
//! A batch that fails is retried with exponential backoff and full jitter; consecutive
//! failures open a circuit breaker that lets one probe through after a cool-down. A batch
//! that failed `max_attempts` times goes to the dead-letter store and the cursor moves on;
//! [`replay`] re-delivers dead letters and removes those the receiver acknowledged.

pub mod breaker;
pub mod engine;
pub mod filter;
pub mod metrics;
pub mod replay;
pub mod secret;
pub mod sign;
pub mod sink;
pub mod spec;
mod worker;

pub use engine::{DeliveryConfig, Engine};
pub use metrics::DeliveryMetrics;
pub use replay::{ReplayReport, replay};
pub use spec::{DestinationKind, DestinationSpec, Start};
