//! Deciding each distinct recorded request once.
//!
//! Recorded histories repeat: a few agents call a few tools with a few kinds of arguments,
//! and what differs from one call to the next (the time to the microsecond, a file name, a
//! call counter) is mostly what no policy reads. By [`ContextReads`] a decision depends only
//! on the request's entities, action and the context paths the policies read, so a replay
//! keys each recorded request on exactly those — taken from the payload's text, without
//! parsing it into a request — and decides a key once.
//!
//! The key is built from the recorded JSON texts themselves: two requests whose texts agree
//! are the same request. Texts that differ but mean the same (another key order, say) only
//! cost a second decision. A payload the key cannot describe safely — a context key that
//! Warden fills in itself, a value Warden converts and could reject (`client_ip`, entity
//! and extension escapes) — is decided in full, as is everything when the policies read the
//! context whole.

use std::borrow::Cow;

use chrono::{Datelike, Timelike};
use rustc_hash::FxHashMap;
use serde::Deserialize;
use serde_json::value::RawValue;
use smol_str::SmolStr;
use warden_core::Outcome;

use crate::reads::ContextPath;
use crate::request::WARDEN_CONTEXT_KEYS;
use crate::{ContextReads, Engine};

/// Distinct requests kept; past it the memo starts over (a key is a few hundred bytes).
const CAPACITY: usize = 65_536;

/// What a replay needs of a decision: its outcome and the determining policies' ids.
#[derive(Clone, Debug)]
pub struct Decided {
    pub outcome: Outcome,
    /// Sorted, without duplicates.
    pub policies: Vec<String>,
    pub errors: bool,
    /// The principal's and resource's group keys (see the simulation report).
    pub agent: String,
    pub tool: String,
}

/// The payload as the key reads it: texts, borrowed.
#[derive(Deserialize)]
struct RawPayload<'a> {
    #[serde(borrow)]
    request: Option<RawRequest<'a>>,
}

#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(borrow)]
    principal: &'a RawValue,
    #[serde(default, borrow)]
    on_behalf_of: Option<&'a RawValue>,
    #[serde(default, borrow)]
    session: Option<&'a RawValue>,
    #[serde(default, borrow)]
    facts: Option<&'a RawValue>,
    #[serde(borrow)]
    action: &'a RawValue,
    #[serde(borrow)]
    resource: &'a RawValue,
    #[serde(default, borrow)]
    context: Option<&'a RawValue>,
    #[serde(borrow)]
    time: Cow<'a, str>,
}

type RawMap<'a> = FxHashMap<Cow<'a, str>, &'a RawValue>;

/// One worker's memo for one candidate engine.
pub struct Memo {
    /// `None` when the policies read the context whole: every request is decided.
    paths: Option<Vec<ContextPath>>,
    decided: FxHashMap<Box<[u8]>, Decided>,
    key: Vec<u8>,
    hits: u64,
}

impl Memo {
    pub fn new(candidate: &Engine) -> Memo {
        Memo {
            paths: match candidate.context_reads() {
                ContextReads::Paths(p) => Some(p.clone()),
                ContextReads::All => None,
            },
            decided: FxHashMap::default(),
            key: Vec::with_capacity(1024),
            hits: 0,
        }
    }

    /// How many requests were answered from the memo.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// The decision already made for a request equal to this payload's, if any. When there
    /// is none but the payload has a key, it is kept for [`Memo::remember`].
    pub fn recall(&mut self, namespace: &str, payload: &str) -> Option<&Decided> {
        self.key.clear();
        if self.paths.is_none() || !key(self, namespace, payload) {
            self.key.clear();
            return None;
        }
        let found = self.decided.get(self.key.as_slice());
        if found.is_some() {
            self.hits += 1;
        }
        found
    }

    /// Keeps the decision of the request [`Memo::recall`] last missed.
    pub fn remember(&mut self, decided: &Decided) {
        if self.key.is_empty() || decided.errors {
            return;
        }
        if self.decided.len() >= CAPACITY {
            self.decided.clear();
        }
        self.decided
            .insert(self.key.as_slice().into(), decided.clone());
    }
}

/// Writes the key of `payload`'s request into `memo.key`; false when it has none.
fn key(memo: &mut Memo, namespace: &str, payload: &str) -> bool {
    // Values Warden converts and may refuse: a request carrying one is decided in full, so
    // that a refusal is never answered by another request's decision.
    if payload.contains("\"__entity\"")
        || payload.contains("\"__extn\"")
        || payload.contains("client_ip")
    {
        return false;
    }
    let Ok(RawPayload { request: Some(r) }) = serde_json::from_str::<RawPayload>(payload) else {
        return false;
    };
    let context: RawMap = match r.context {
        Some(c) => match serde_json::from_str(c.get()) {
            Ok(m) => m,
            Err(_) => return false,
        },
        None => RawMap::default(),
    };
    if WARDEN_CONTEXT_KEYS.iter().any(|k| context.contains_key(*k)) {
        return false;
    }
    let out = &mut memo.key;
    let mut part = |s: &[u8]| {
        out.extend_from_slice(s);
        out.push(0);
    };
    part(namespace.as_bytes());
    part(r.action.get().as_bytes());
    part(r.principal.get().as_bytes());
    part(r.resource.get().as_bytes());
    part(r.on_behalf_of.map_or("-", |v| v.get()).as_bytes());
    let mut time = None;
    let mut facts: Option<RawMap> = None;
    for path in memo.paths.as_deref().unwrap_or_default() {
        let (first, rest) = path.attrs.split_first().expect("a path has an attribute");
        match first.as_str() {
            // In the key already.
            "namespace" | "on_behalf_of" => {}
            // Always there.
            "time" if path.presence => {}
            "time" => {
                let t = match time {
                    Some(t) => t,
                    None => match chrono::DateTime::parse_from_rfc3339(&r.time) {
                        Ok(t) => *time.insert(t.with_timezone(&chrono::Utc)),
                        Err(_) => return false,
                    },
                };
                let v = match rest.first().map(SmolStr::as_str) {
                    Some("hour") => i64::from(t.hour()),
                    Some("weekday") => i64::from(t.weekday().num_days_from_monday()),
                    _ => t.timestamp(),
                };
                out.extend_from_slice(&v.to_le_bytes());
                out.push(0);
            }
            "session" => {
                let Some(session) = r.session.filter(|s| s.get() != "null") else {
                    out.extend_from_slice(b"-\0");
                    continue;
                };
                // Every field of `context.session` is there whenever the session is.
                if path.presence {
                    out.extend_from_slice(b"+\0");
                    continue;
                }
                match rest.first().map(SmolStr::as_str) {
                    None => {
                        out.extend_from_slice(session.get().as_bytes());
                        out.push(0);
                        out.extend_from_slice(r.facts.map_or("-", |f| f.get()).as_bytes());
                    }
                    Some("id") => out.extend_from_slice(session.get().as_bytes()),
                    Some(field) => {
                        if facts.is_none() {
                            facts = Some(match r.facts {
                                Some(f) => match serde_json::from_str(f.get()) {
                                    Ok(m) => m,
                                    Err(_) => return false,
                                },
                                None => RawMap::default(),
                            });
                        }
                        let v = facts.as_ref().and_then(|f| f.get(field));
                        out.extend_from_slice(v.map_or("-", |v| v.get()).as_bytes());
                    }
                }
                out.push(0);
            }
            _ => {
                if !value_at(&context, path, out) {
                    return false;
                }
            }
        }
    }
    true
}

/// Writes the text at `path` in the caller's context (`-` where it is absent; for a
/// presence test only `+` or `-`); false when it cannot be followed. Warden drops `null`
/// values when it builds the context, so `null` is absent.
fn value_at(context: &RawMap, path: &ContextPath, out: &mut Vec<u8>) -> bool {
    let attrs = &path.attrs;
    let mut at = context.get(attrs[0].as_str()).copied();
    let mut followed = true;
    for attr in &attrs[1..] {
        let Some(v) = at.filter(|v| v.get() != "null") else {
            at = None;
            break;
        };
        if !v.get().starts_with('{') {
            // Not a record: its text decides whatever is read below it.
            followed = false;
            break;
        }
        let Ok(map) = serde_json::from_str::<RawMap>(v.get()) else {
            return false;
        };
        at = map.get(attr.as_str()).copied();
    }
    let at = at.filter(|v| v.get() != "null");
    match at {
        Some(_) if path.presence && followed => out.push(b'+'),
        Some(v) => out.extend_from_slice(v.get().as_bytes()),
        None => out.push(b'-'),
    }
    out.push(0);
    true
}
