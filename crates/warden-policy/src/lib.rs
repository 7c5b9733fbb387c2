//! Warden's policy engine: decides whether an agent action is allowed, denied or needs a
//! person's approval, by evaluating the tenant's Cedar policies.
//!
//! Policies are Cedar, validated strictly against Warden's schema ([`Engine::schema_text`],
//! optionally extended by the tenant to type tool arguments). Policies attach to a
//! namespace and apply to it and everything below it; a request is decided by the policies
//! of its namespace chain, together, so a `forbid` above cannot be undone below. Annotations
//! carry what Cedar's permit/forbid cannot: `@effect("ask")` (approval required),
//! `@redact("args.token")` (redaction obligations), `@mode("warn")` / `@mode("off")`
//! (report only / ignore), `@id` and `@reason` (how a decision names its policies).
//!
//! Decision time stays flat as a tenant's policies grow: the engine indexes policies by
//! namespace, action and resource and evaluates only the slice that can apply.
//!
//! The crate does no I/O: callers hand over policy texts and get an immutable [`Engine`].

mod annotations;
pub mod bundle;
mod engine;
mod explain;
mod format;
mod index;
mod literals;
pub mod memo;
mod reads;
mod request;
mod schema;
pub mod simulate;
mod source;
pub mod testing;

pub use bundle::{Bundle, BundleDiff, BundleMode};
pub use engine::Engine;
pub use format::format_policies;
pub use literals::{EntityLiteral, entity_literals};
pub use reads::ContextReads;
pub use request::WARDEN_CONTEXT_KEYS;
pub use schema::SCHEMA_EXTENSION_ORIGIN;
pub use source::{PolicyError, PolicySource};
