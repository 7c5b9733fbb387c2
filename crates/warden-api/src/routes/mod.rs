//! HTTP handlers, one module per area of the API.

pub mod approvals;
pub mod audit;
// Delivery to stream destinations
pub mod authorize;
pub mod destinations;
pub mod discovery;
pub mod events;
pub mod gateway;
pub mod health;
pub mod policies;
pub mod registry;
pub mod reports;
pub mod simulate;
pub mod tokens;
// Retention
pub mod retention;
