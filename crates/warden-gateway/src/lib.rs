//! Warden's MCP gateway.
//!
//! Agents point their MCP client at Warden's `/mcp` (Streamable HTTP) or run
//! `warden gateway stdio`; Warden connects to the real servers ("upstreams"), shows each
//! agent only the tools its policies allow, and decides, records and — where a person must
//! agree — holds every tool call before it reaches the server.
//!
//! Code map: [`jsonrpc`] (messages), [`upstream`] (connections to servers), [`catalog`]
//! (what the servers offer, and the names agents see), [`session`] (agent sessions),
//! [`gateway`] (method handling), [`govern`] (decide, record, hold, forward), [`http`]
//! (the agent-facing Streamable HTTP endpoint), [`governor`] (what the gateway needs from
//! the rest of Warden), [`registry`] (what the registry says about a tool or agent here).

pub mod args;
pub mod catalog;
pub mod config;
pub mod discover;
pub mod events;
pub mod gateway;
pub mod govern;
pub mod governor;
pub mod http;
pub mod jsonrpc;
pub mod metrics;
pub mod registry;
pub mod session;
pub mod stdio;
pub mod upstream;

pub use config::GatewayConfig;
pub use gateway::Gateway;
pub use governor::{AgentIdentity, Governor};
