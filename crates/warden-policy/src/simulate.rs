//! Simulation: decide recorded requests again under candidate policies and count what would
//! change.
//!
//! Every decision event keeps the whole (redacted) request in its payload — principal with its
//! attributes and parents, on-behalf-of user, session and its facts, action, resource with its
//! attributes and parents, context and time — so a request can be decided again exactly as it
//! was asked. The resource's attributes are the registry's facts *of that time* (the door
//! added them before deciding), which is what a replay should see: not today's registry.
//!
//! A [`Tally`] replays one recorded decision at a time and counts; tallies of several workers
//! are merged, and the merge is independent of the order the work was split in (examples are
//! the earliest events by time and log position), so a report is the same however many
//! threads produced it. Reading the events is the caller's business: this crate does no I/O.

use rustc_hash::FxHashMap;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};
use warden_core::simulation::{
    CandidateSummary, DirectionGroup, EXAMPLES_PER_GROUP, Examples, Group, NotReplayed,
    PolicyGroup, SimulationReport, direction_key,
};
use warden_core::{
    DecisionRequest, EntityRef, NamespacePath, Outcome, Resource, SessionFacts, TenantId,
};

use crate::Engine;
use crate::memo::{Decided, Memo};

/// How a redacted value starts (`warden_audit::redact::HASH_PREFIX`; this crate does not
/// depend on the audit crate, a test in the API keeps the two equal).
pub const REDACTED_PREFIX: &str = "hmac-sha256:";

/// One recorded decision event, as the replay needs it: a few indexed columns and the stored
/// texts, borrowed from wherever the caller read them.
#[derive(Clone, Copy, Debug)]
pub struct Recorded<'a> {
    pub id: &'a str,
    /// The event's time (µs since the epoch) and log position: the order examples are kept in.
    pub time_us: i64,
    pub seq: u64,
    pub namespace: &'a str,
    /// The recorded outcome (`allow`, `deny`, `approval_required`).
    pub outcome: Option<&'a str>,
    /// The canonical header JSON; read only for decisions that changed.
    pub header: &'a str,
    /// The payload JSON; `None` once purged.
    pub payload: Option<&'a str>,
}

/// The part of a decision event's payload a replay reads; everything else is skipped unparsed.
#[derive(Deserialize)]
struct Payload {
    request: Option<RecordedRequest>,
    #[serde(default)]
    mcp: Option<McpNote>,
}

#[derive(Deserialize)]
struct RecordedRequest {
    principal: Resource,
    #[serde(default)]
    on_behalf_of: Option<EntityRef>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    facts: SessionFacts,
    action: String,
    resource: Resource,
    #[serde(default)]
    context: Map<String, Value>,
    time: chrono::DateTime<chrono::Utc>,
}

/// The gateway notes a registry refusal under `mcp["warden.registry"].refused`.
#[derive(Deserialize)]
struct McpNote {
    #[serde(rename = "warden.registry", default)]
    registry: Option<RegistryNote>,
}

#[derive(Deserialize)]
struct RegistryNote {
    #[serde(default)]
    refused: Option<IgnoredAny>,
}

/// The recorded determining policies, from the header.
#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    decision: Option<HeaderDecision>,
}

#[derive(Deserialize)]
struct HeaderDecision {
    #[serde(default)]
    policies: Vec<PolicyId>,
}

#[derive(Deserialize)]
struct PolicyId {
    id: String,
}

/// Examples are kept in this order: time, then log position.
type Order = (i64, u64);

#[derive(Default)]
struct ExampleSet {
    count: u64,
    /// Sorted by order, at most [`EXAMPLES_PER_GROUP`].
    examples: Vec<(Order, String)>,
}

impl ExampleSet {
    fn add(&mut self, order: Order, id: &str) {
        self.count += 1;
        self.keep(order, || id.to_owned());
    }

    /// Keeps the example if it is among the earliest; the id is copied only then.
    fn keep(&mut self, order: Order, id: impl FnOnce() -> String) {
        if self.examples.len() == EXAMPLES_PER_GROUP {
            match self.examples.last() {
                Some((last, _)) if order < *last => {
                    self.examples.pop();
                }
                _ => return,
            }
        }
        let at = self.examples.partition_point(|(o, _)| *o < order);
        self.examples.insert(at, (order, id()));
    }

    fn merge(&mut self, other: ExampleSet) {
        self.count += other.count;
        for (order, id) in other.examples {
            self.keep(order, || id);
        }
    }

    fn view(self) -> Examples {
        Examples {
            count: self.count,
            examples: self.examples.into_iter().map(|(_, id)| id).collect(),
        }
    }
}

fn index(o: Outcome) -> usize {
    match o {
        Outcome::Allow => 0,
        Outcome::Deny => 1,
        Outcome::ApprovalRequired => 2,
    }
}

const OUTCOMES: [Outcome; 3] = [Outcome::Allow, Outcome::Deny, Outcome::ApprovalRequired];

#[derive(Default)]
struct GroupTally {
    set: ExampleSet,
    /// Counts by direction, `from * 3 + to`.
    directions: [u64; 9],
}

impl GroupTally {
    fn add(&mut self, order: Order, id: &str, from: Outcome, to: Outcome) {
        self.set.add(order, id);
        self.directions[index(from) * 3 + index(to)] += 1;
    }

    fn merge(&mut self, other: GroupTally) {
        self.set.merge(other.set);
        for (a, b) in self.directions.iter_mut().zip(other.directions) {
            *a += b;
        }
    }

    fn directions(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        for from in OUTCOMES {
            for to in OUTCOMES {
                let n = self.directions[index(from) * 3 + index(to)];
                if n > 0 {
                    out.insert(direction_key(from, to), n);
                }
            }
        }
        out
    }

    fn view(self, key: String) -> Group {
        let directions = self.directions();
        let set = self.set.view();
        Group {
            key,
            count: set.count,
            directions,
            examples: set.examples,
        }
    }
}

#[derive(Default)]
struct PolicyTally {
    group: GroupTally,
    before: u64,
    now: u64,
}

/// Counts of one worker's share of a replay; merge the workers' tallies, then make the report.
pub struct Tally {
    /// Reused from one event to the next: only what the event names is replaced.
    request: DecisionRequest,
    recorded: u64,
    unchanged: u64,
    changed: u64,
    registry_refused: ExampleSet,
    request_missing: ExampleSet,
    candidate_errors: ExampleSet,
    redacted: ExampleSet,
    directions: [ExampleSet; 9],
    policies: FxHashMap<String, PolicyTally>,
    agents: FxHashMap<String, GroupTally>,
    tools: FxHashMap<String, GroupTally>,
    namespaces: FxHashMap<String, GroupTally>,
}

impl Tally {
    pub fn new(tenant: &TenantId) -> Tally {
        Tally {
            request: DecisionRequest {
                tenant: tenant.clone(),
                namespace: NamespacePath::parse(tenant.as_str())
                    .expect("a tenant id is a namespace"),
                principal: Resource::default(),
                on_behalf_of: None,
                session: None,
                facts: SessionFacts::default(),
                action: String::new(),
                resource: Resource::default(),
                context: Map::new(),
                time: chrono::DateTime::UNIX_EPOCH,
            },
            recorded: 0,
            unchanged: 0,
            changed: 0,
            registry_refused: ExampleSet::default(),
            request_missing: ExampleSet::default(),
            candidate_errors: ExampleSet::default(),
            redacted: ExampleSet::default(),
            directions: Default::default(),
            policies: FxHashMap::default(),
            agents: FxHashMap::default(),
            tools: FxHashMap::default(),
            namespaces: FxHashMap::default(),
        }
    }

    /// Decides one recorded request again under `candidate` and counts the result.
    pub fn record(&mut self, candidate: &Engine, r: &Recorded<'_>) {
        self.record_with(candidate, None, r);
    }

    /// As [`Tally::record`], deciding each distinct request once with `memo` (made for the
    /// same `candidate`).
    pub fn record_with(&mut self, candidate: &Engine, memo: Option<&mut Memo>, r: &Recorded<'_>) {
        self.recorded += 1;
        let order = (r.time_us, r.seq);
        let (Some(recorded), Some(payload)) = (r.outcome.and_then(Outcome::parse), r.payload)
        else {
            self.request_missing.add(order, r.id);
            return;
        };
        let mut memo = memo;
        if let Some(m) = memo.as_deref_mut()
            && let Some(d) = m.recall(r.namespace, payload)
        {
            // A memo entry is only made from a request that was replayed (not refused by the
            // registry, not missing), so the same text needs no second look.
            let d = d.clone();
            self.count(order, r, recorded, payload, &d);
            return;
        }
        let Ok(parsed) = serde_json::from_str::<Payload>(payload) else {
            self.request_missing.add(order, r.id);
            return;
        };
        if parsed
            .mcp
            .as_ref()
            .and_then(|m| m.registry.as_ref())
            .is_some_and(|n| n.refused.is_some())
        {
            self.registry_refused.add(order, r.id);
            return;
        }
        let Some(asked) = parsed.request else {
            self.request_missing.add(order, r.id);
            return;
        };
        if self.request.namespace.as_str() != r.namespace {
            match NamespacePath::parse(r.namespace) {
                Ok(ns) => self.request.namespace = ns,
                Err(_) => {
                    self.request_missing.add(order, r.id);
                    return;
                }
            }
        }
        let req = &mut self.request;
        req.principal = asked.principal;
        req.on_behalf_of = asked.on_behalf_of;
        req.session = asked.session;
        req.facts = asked.facts;
        req.action = asked.action;
        req.resource = asked.resource;
        req.context = asked.context;
        req.time = asked.time;

        let d = candidate.decide(req);
        let mut policies: Vec<String> = d.reasons.into_iter().map(|p| p.id).collect();
        policies.sort_unstable();
        policies.dedup();
        let decided = Decided {
            outcome: d.outcome,
            policies,
            errors: !d.errors.is_empty(),
            agent: key_of(&req.principal, "Agent"),
            tool: key_of(&req.resource, "Tool"),
        };
        if let Some(m) = memo {
            m.remember(&decided);
        }
        self.count(order, r, recorded, payload, &decided);
    }

    /// Counts one replayed request decided `d`, recorded as `recorded`.
    fn count(
        &mut self,
        order: Order,
        r: &Recorded<'_>,
        recorded: Outcome,
        payload: &str,
        d: &Decided,
    ) {
        if d.errors {
            self.candidate_errors.add(order, r.id);
        }
        if d.outcome == recorded {
            self.unchanged += 1;
            return;
        }
        self.changed += 1;
        let (from, to) = (recorded, d.outcome);
        self.directions[index(from) * 3 + index(to)].add(order, r.id);
        if payload.contains(REDACTED_PREFIX) {
            self.redacted.add(order, r.id);
        }

        let before: Vec<String> = serde_json::from_str::<Header>(r.header)
            .ok()
            .and_then(|h| h.decision)
            .map(|d| d.policies.into_iter().map(|p| p.id).collect())
            .unwrap_or_default();
        let now = &d.policies;
        let mut involved: Vec<&str> = now
            .iter()
            .map(String::as_str)
            .chain(before.iter().map(String::as_str))
            .collect();
        involved.sort_unstable();
        involved.dedup();
        for id in involved {
            let p = entry(&mut self.policies, id);
            p.group.add(order, r.id, from, to);
            if before.iter().any(|b| b == id) {
                p.before += 1;
            }
            if now.binary_search_by(|n| n.as_str().cmp(id)).is_ok() {
                p.now += 1;
            }
        }
        entry(&mut self.agents, &d.agent).add(order, r.id, from, to);
        entry(&mut self.tools, &d.tool).add(order, r.id, from, to);
        entry(&mut self.namespaces, r.namespace).add(order, r.id, from, to);
    }

    /// Adds another worker's counts.
    pub fn merge(&mut self, other: Tally) {
        self.recorded += other.recorded;
        self.unchanged += other.unchanged;
        self.changed += other.changed;
        self.registry_refused.merge(other.registry_refused);
        self.request_missing.merge(other.request_missing);
        self.candidate_errors.merge(other.candidate_errors);
        self.redacted.merge(other.redacted);
        for (mine, theirs) in self.directions.iter_mut().zip(other.directions) {
            mine.merge(theirs);
        }
        for (k, p) in other.policies {
            let mine = self.policies.entry(k).or_default();
            mine.group.merge(p.group);
            mine.before += p.before;
            mine.now += p.now;
        }
        for (mine, theirs) in [
            (&mut self.agents, other.agents),
            (&mut self.tools, other.tools),
            (&mut self.namespaces, other.namespaces),
        ] {
            for (k, g) in theirs {
                mine.entry(k).or_default().merge(g);
            }
        }
    }

    /// How many recorded decisions this tally has seen.
    pub fn recorded(&self) -> u64 {
        self.recorded
    }

    /// The report over everything tallied.
    pub fn report(self, window: Window, candidate: &Engine, duration_ms: u64) -> SimulationReport {
        let mut directions: Vec<DirectionGroup> = Vec::new();
        let mut sets = self.directions.into_iter();
        for from in OUTCOMES {
            for to in OUTCOMES {
                let set = sets.next().expect("nine directions").view();
                if set.count > 0 {
                    directions.push(DirectionGroup {
                        from,
                        to,
                        count: set.count,
                        examples: set.examples,
                    });
                }
            }
        }
        directions.sort_by_key(|d| std::cmp::Reverse(d.count));
        let mut by_policy: Vec<PolicyGroup> = self
            .policies
            .into_iter()
            .map(|(policy, p)| {
                let g = p.group.view(policy);
                PolicyGroup {
                    policy: g.key,
                    count: g.count,
                    determined_before: p.before,
                    determines_now: p.now,
                    directions: g.directions,
                    examples: g.examples,
                }
            })
            .collect();
        by_policy.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.policy.cmp(&b.policy)));
        let groups = |m: FxHashMap<String, GroupTally>| {
            let mut v: Vec<Group> = m.into_iter().map(|(k, g)| g.view(k)).collect();
            v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
            v
        };
        let registry_refused = self.registry_refused.view();
        let request_missing = self.request_missing.view();
        SimulationReport {
            tenant: window.tenant.as_str().to_owned(),
            namespace: window.namespace.map(|n| n.as_str().to_owned()),
            from: window.from,
            to: window.to,
            candidate: CandidateSummary {
                policies: candidate.policy_count(),
                content_hash: candidate.content_hash(),
            },
            recorded: self.recorded,
            replayed: self.recorded - registry_refused.count - request_missing.count,
            unchanged: self.unchanged,
            changed: self.changed,
            not_replayed: NotReplayed {
                registry_refused,
                request_missing,
            },
            candidate_errors: self.candidate_errors.view(),
            changed_with_redacted_values: self.redacted.view(),
            directions,
            by_policy,
            by_agent: groups(self.agents),
            by_tool: groups(self.tools),
            by_namespace: groups(self.namespaces),
            duration_ms,
        }
    }
}

/// The part of the history a simulation replays.
#[derive(Clone, Debug)]
pub struct Window {
    pub tenant: TenantId,
    /// Inclusive.
    pub from: chrono::DateTime<chrono::Utc>,
    /// Exclusive.
    pub to: chrono::DateTime<chrono::Utc>,
    /// A namespace and everything below it; `None` for the whole tenant.
    pub namespace: Option<NamespacePath>,
}

/// The group of an entity: its id when it has the expected type, else `Type::"id"`.
fn key_of(r: &Resource, expected: &str) -> String {
    if r.entity_type == expected {
        r.id.clone()
    } else {
        format!("{}::{:?}", r.entity_type, r.id)
    }
}

fn entry<'m, T: Default>(map: &'m mut FxHashMap<String, T>, key: &str) -> &'m mut T {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), T::default());
    }
    map.get_mut(key).expect("just inserted")
}
