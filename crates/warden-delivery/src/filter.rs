//! Which events a destination receives: event types (exact names or `prefix.*`) and a
//! namespace subtree. An empty list of types means every type.

use warden_core::{AuditEvent, NamespacePath};

#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    exact: Vec<String>,
    prefixes: Vec<String>,
    namespace: Option<NamespacePath>,
}

impl EventFilter {
    /// From already validated settings (see `spec`).
    pub fn new(types: &[String], namespace: Option<NamespacePath>) -> EventFilter {
        let mut f = EventFilter {
            namespace,
            ..EventFilter::default()
        };
        for t in types {
            match t.strip_suffix('*') {
                // `registry.*` matches `registry.tool.pinned`, not `registryx`.
                Some(prefix) => f.prefixes.push(prefix.to_owned()),
                None => f.exact.push(t.clone()),
            }
        }
        f
    }

    pub fn matches(&self, e: &AuditEvent) -> bool {
        let h = &e.header;
        let type_ok = (self.exact.is_empty() && self.prefixes.is_empty())
            || self.exact.contains(&h.event_type)
            || self.prefixes.iter().any(|p| h.event_type.starts_with(p));
        let ns_ok = self
            .namespace
            .as_ref()
            .is_none_or(|ns| NamespacePath::parse(&h.namespace).is_ok_and(|own| own.is_within(ns)));
        type_ok && ns_ok
    }
}

/// True for `a.b`, `a.b.*`: dot-separated lowercase words, an optional trailing `.*`.
pub fn valid_type_pattern(t: &str) -> bool {
    let body = t.strip_suffix(".*").unwrap_or(t);
    !body.is_empty()
        && body.len() <= 200
        && body.split('.').all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        })
}
