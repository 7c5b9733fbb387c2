//! The canonical bytes of an [`EventHeader`], written directly.
//!
//! Every event's Merkle leaf is taken over these bytes, so they are computed once per event on
//! the hot path of both doors. Going through `serde_json::Value` (a map and a string per field)
//! and sorting cost several microseconds; writing the fields in their canonical order costs a
//! fraction of that. The generic form stays the definition: in debug builds (every test run)
//! each header is written both ways and compared, so a field added to the header but not here
//! cannot go unnoticed.

use chrono::SecondsFormat;

use crate::event::{Actor, ClientInfo, DecisionSummary, EventHeader, ResourceRef, TraceContext};
use crate::{EntityRef, Obligation, PolicyRef, Warning};

/// Writes a JSON object whose keys the caller gives in canonical (sorted) order.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
    #[cfg(debug_assertions)]
    last: &'static str,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut Vec<u8>) -> Object<'a> {
        out.push(b'{');
        Object {
            out,
            first: true,
            #[cfg(debug_assertions)]
            last: "",
        }
    }

    /// Starts a member; `key` is ASCII without characters JSON escapes.
    fn key(&mut self, key: &'static str) -> &mut Vec<u8> {
        #[cfg(debug_assertions)]
        {
            debug_assert!(self.last < key, "{key} written after {}", self.last);
            self.last = key;
        }
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    fn str(&mut self, key: &'static str, value: &str) {
        string(self.key(key), value);
    }

    fn opt_str(&mut self, key: &'static str, value: Option<&String>) {
        if let Some(v) = value {
            self.str(key, v);
        }
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    crate::canonical::write_str(s, out);
}

fn array<T>(out: &mut Vec<u8>, items: &[T], mut write: impl FnMut(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, item);
    }
    out.push(b']');
}

pub(crate) fn write(h: &EventHeader, out: &mut Vec<u8>) {
    let mut o = Object::open(out);
    o.opt_str("action", h.action.as_ref());
    actor(o.key("actor"), &h.actor);
    if let Some(c) = &h.client {
        client(o.key("client"), c);
    }
    if let Some(d) = &h.decision {
        decision(o.key("decision"), d);
    }
    let mut id = uuid::Uuid::encode_buffer();
    o.str("id", h.id.hyphenated().encode_lower(&mut id));
    o.str("namespace", &h.namespace);
    o.str("payload_sha256", &h.payload_sha256);
    if let Some(r) = &h.resource {
        resource(o.key("resource"), r);
    }
    serde_json::to_writer(&mut *o.key("schema_version"), &h.schema_version)
        .expect("a number serializes");
    o.str("source", &h.source);
    o.str("tenant", &h.tenant);
    o.str("time", &h.time.to_rfc3339_opts(SecondsFormat::Micros, true));
    if let Some(t) = &h.trace {
        trace(o.key("trace"), t);
    }
    o.str("type", &h.event_type);
    o.close();
}

fn actor(out: &mut Vec<u8>, a: &Actor) {
    let mut o = Object::open(out);
    o.opt_str("agent", a.agent.as_ref());
    o.opt_str("on_behalf_of", a.on_behalf_of.as_ref());
    if let Some(p) = &a.principal {
        entity(o.key("principal"), p);
    }
    o.opt_str("role", a.role.as_ref());
    o.opt_str("session", a.session.as_ref());
    o.opt_str("token_id", a.token_id.as_ref());
    o.close();
}

fn entity(out: &mut Vec<u8>, e: &EntityRef) {
    let mut o = Object::open(out);
    o.str("id", &e.id);
    o.str("type", &e.entity_type);
    o.close();
}

fn client(out: &mut Vec<u8>, c: &ClientInfo) {
    let mut o = Object::open(out);
    o.opt_str("address", c.address.as_ref());
    o.opt_str("user_agent", c.user_agent.as_ref());
    o.close();
}

fn decision(out: &mut Vec<u8>, d: &DecisionSummary) {
    let mut o = Object::open(out);
    if !d.errors.is_empty() {
        array(o.key("errors"), &d.errors, |out, e| string(out, e));
    }
    if !d.obligations.is_empty() {
        array(o.key("obligations"), &d.obligations, obligation);
    }
    o.str("outcome", d.outcome.as_str());
    array(o.key("policies"), &d.policies, policy);
    if !d.warnings.is_empty() {
        array(o.key("warnings"), &d.warnings, warning);
    }
    o.close();
}

fn policy(out: &mut Vec<u8>, p: &PolicyRef) {
    let mut o = Object::open(out);
    o.str("id", &p.id);
    serde_json::to_writer(&mut *o.key("line"), &p.line).expect("a number serializes");
    o.str("namespace", &p.namespace);
    o.str("origin", &p.origin);
    o.opt_str("reason", p.reason.as_ref());
    o.close();
}

fn obligation(out: &mut Vec<u8>, ob: &Obligation) {
    let mut o = Object::open(out);
    match ob {
        Obligation::Redact { path, policy } => {
            o.str("path", path);
            o.str("policy", policy);
            o.str("type", "redact");
        }
        Obligation::Approval { policies } => {
            array(o.key("policies"), policies, |out, p| string(out, p));
            o.str("type", "approval");
        }
    }
    o.close();
}

fn warning(out: &mut Vec<u8>, w: &Warning) {
    let mut o = Object::open(out);
    policy(o.key("policy"), &w.policy);
    o.str("would", w.would.as_str());
    o.close();
}

fn resource(out: &mut Vec<u8>, r: &ResourceRef) {
    let mut o = Object::open(out);
    o.str("id", &r.id);
    o.str("type", &r.resource_type);
    o.close();
}

fn trace(out: &mut Vec<u8>, t: &TraceContext) {
    let mut o = Object::open(out);
    o.opt_str("span_id", t.span_id.as_ref());
    o.str("trace_id", &t.trace_id);
    o.close();
}
