//! Warden's HTTP server.
//!
//! The decision API (`/api/v1/authorize`), event ingest, the audit API (query, export,
//! proofs, checkpoints), policy bundles (versions, diff, rollback, shadow, promotion), tokens, approval requests, the registry of
//! tool servers, tools and agents, health and metrics,
//! and the OpenAPI document that describes them. Handlers stay small: authentication, JSON
//! parsing and error rendering live in extractors ([`extract`]) and one error type
//! ([`problem::Problem`]).

pub mod analytics;
pub mod approvals;
pub mod bundles;
pub mod discovery;
pub mod extract;
pub mod gateway;
pub mod keys;
pub mod openapi;
pub mod policies;
pub mod problem;
pub mod query;
pub mod registry;
pub mod routes;
pub mod server;
pub mod simulation;
pub mod state;
pub mod tokens;
// Retention
pub mod retention_changes;
pub mod retention_job;

pub use server::{Running, build_state, router, serve, start};
pub use state::ServerConfig;
