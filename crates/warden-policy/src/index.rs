//! The policy index: which policies can apply to a request, found without evaluating any.
//!
//! Evaluation cost grows with the policies evaluated, so the index narrows a tenant's
//! policies to those attached to the request's namespace chain whose scope names the
//! request's action (or no action), and names the request's principal and resource, their
//! types, or no particular one. Only that slice is evaluated. The slice for a given
//! namespace, action, principal and resource is the same for every request, so it is
//! computed once and cached.

use rustc_hash::FxHashMap as HashMap;
use std::sync::{Arc, RwLock};

use cedar_policy::{
    ActionConstraint, EntityTypeName, EntityUid, Policy, PrincipalConstraint, ResourceConstraint,
};

use crate::schema::CompiledSchema;

/// How many slices are kept; past it the cache starts over. A slice is a short list of
/// policy numbers, so this bounds memory for tenants with many principals and resources.
const SLICE_CACHE_CAP: usize = 16_384;

/// How a policy's scope names the principal or the resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Target {
    /// Unconstrained, or `in X`: may be any entity (ancestry is only known per request).
    Any,
    /// `is T`, `is T in X`, by type number.
    Type(u32),
    /// `== T::"id"`, by the uid's number in `Index::uids`.
    Uid(u32),
}

/// Policies of one namespace that name one action, by (principal target, resource target).
type Bucket = HashMap<(Target, Target), Vec<u32>>;

struct NamespaceNode {
    /// Namespaces of the chain down to and including this one that have policies, root
    /// first; these are the namespaces whose policies apply to a request here.
    chain: Vec<u32>,
    /// Per action number.
    buckets: Vec<Bucket>,
}

/// Identifies a slice: the deepest namespace of the request's chain that has policies, the
/// action, and the principal's and resource's type and uid (when some policy names it).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct SliceKey {
    namespace: u32,
    action: u32,
    principal: (u32, u32),
    resource: (u32, u32),
}

const NONE: u32 = u32::MAX;

/// The policies that can apply to one kind of request, by policy number, in source order.
pub(crate) type Slice = [u32];

/// The principal or resource of a request, as the index looks it up.
#[derive(Clone, Copy)]
pub(crate) struct Subject<'a> {
    pub type_number: Option<u32>,
    pub entity_type: &'a str,
    pub id: &'a str,
}

/// What the index needs to know of one policy.
pub(crate) struct Entry<'a> {
    pub namespace: &'a str,
    /// `None` for policies that are not evaluated (`@mode("off")`).
    pub policy: Option<&'a Policy>,
}

pub(crate) struct Index {
    namespaces: HashMap<String, u32>,
    nodes: Vec<NamespaceNode>,
    /// Principal and resource uids named in some policy scope: type → id → number.
    uids: HashMap<String, HashMap<String, u32>>,
    cache: RwLock<HashMap<SliceKey, Arc<Slice>>>,
    empty: Arc<Slice>,
}

impl Index {
    /// Indexes `entries`; a policy's number is its position.
    pub(crate) fn build(schema: &CompiledSchema, entries: &[Entry<'_>]) -> Index {
        let action_count = schema.actions.len();
        let mut paths: Vec<&str> = entries
            .iter()
            .filter(|e| e.policy.is_some())
            .map(|e| e.namespace)
            .collect();
        paths.sort_unstable();
        paths.dedup();
        let namespaces: HashMap<String, u32> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| ((*p).to_owned(), i as u32))
            .collect();
        let mut nodes: Vec<NamespaceNode> = paths
            .iter()
            .map(|p| NamespaceNode {
                chain: chain_of(p)
                    .filter_map(|a| namespaces.get(a).copied())
                    .collect(),
                buckets: (0..action_count).map(|_| Bucket::default()).collect(),
            })
            .collect();
        let mut uids: HashMap<String, HashMap<String, u32>> = HashMap::default();
        let mut uid_count = 0u32;
        let mut uid_number = |uid: &EntityUid| {
            let ids = uids.entry(uid.type_name().to_string()).or_default();
            *ids.entry(uid.id().unescaped().to_owned())
                .or_insert_with(|| {
                    uid_count += 1;
                    uid_count - 1
                })
        };
        let type_target = |t: &EntityTypeName| {
            schema
                .types
                .get(&t.to_string())
                .map_or(Target::Any, |(i, _)| Target::Type(*i))
        };

        for (n, entry) in entries.iter().enumerate() {
            let Some(policy) = entry.policy else { continue };
            let actions: Vec<u32> = match policy.action_constraint() {
                ActionConstraint::Any => (0..action_count as u32).collect(),
                ActionConstraint::Eq(a) => schema.actions_within(&a),
                ActionConstraint::In(list) => {
                    let mut v: Vec<u32> =
                        list.iter().flat_map(|a| schema.actions_within(a)).collect();
                    v.sort_unstable();
                    v.dedup();
                    v
                }
            };
            let principal = match policy.principal_constraint() {
                PrincipalConstraint::Any | PrincipalConstraint::In(_) => Target::Any,
                PrincipalConstraint::Is(t) | PrincipalConstraint::IsIn(t, _) => type_target(&t),
                PrincipalConstraint::Eq(uid) => Target::Uid(uid_number(&uid)),
            };
            let resource = match policy.resource_constraint() {
                ResourceConstraint::Any | ResourceConstraint::In(_) => Target::Any,
                ResourceConstraint::Is(t) | ResourceConstraint::IsIn(t, _) => type_target(&t),
                ResourceConstraint::Eq(uid) => Target::Uid(uid_number(&uid)),
            };
            let node = &mut nodes[namespaces[entry.namespace] as usize];
            for a in actions {
                node.buckets[a as usize]
                    .entry((principal, resource))
                    .or_default()
                    .push(n as u32);
            }
        }

        Index {
            namespaces,
            nodes,
            uids,
            cache: RwLock::new(HashMap::default()),
            empty: Arc::from([]),
        }
    }

    /// The slice for a request in `namespace` (within its tenant by construction: a chain
    /// only holds paths that start with the tenant's segment).
    pub(crate) fn slice(
        &self,
        namespace: &str,
        action: u32,
        principal: Subject<'_>,
        resource: Subject<'_>,
    ) -> Arc<Slice> {
        let Some(deepest) = chain_of(namespace)
            .rev()
            .find_map(|p| self.namespaces.get(p).copied())
        else {
            return self.empty.clone();
        };
        let key = SliceKey {
            namespace: deepest,
            action,
            principal: (
                principal.type_number.unwrap_or(NONE),
                self.uid_number(principal),
            ),
            resource: (
                resource.type_number.unwrap_or(NONE),
                self.uid_number(resource),
            ),
        };
        if let Some(slice) = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return slice.clone();
        }
        let slice: Arc<Slice> = self.build_slice(key).into();
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= SLICE_CACHE_CAP {
            cache.clear();
        }
        cache.insert(key, slice.clone());
        slice
    }

    fn uid_number(&self, s: Subject<'_>) -> u32 {
        self.uids
            .get(s.entity_type)
            .and_then(|ids| ids.get(s.id))
            .copied()
            .unwrap_or(NONE)
    }

    fn build_slice(&self, key: SliceKey) -> Vec<u32> {
        let targets = |(t, u): (u32, u32)| {
            [
                Some(Target::Any),
                (t != NONE).then_some(Target::Type(t)),
                (u != NONE).then_some(Target::Uid(u)),
            ]
        };
        let mut members: Vec<u32> = Vec::new();
        for &ns in &self.nodes[key.namespace as usize].chain {
            let bucket = &self.nodes[ns as usize].buckets[key.action as usize];
            for p in targets(key.principal).into_iter().flatten() {
                for r in targets(key.resource).into_iter().flatten() {
                    if let Some(v) = bucket.get(&(p, r)) {
                        members.extend(v);
                    }
                }
            }
        }
        members.sort_unstable();
        members.dedup();
        members
    }
}

/// True when the index alone decides whether the policy's scope matches a request: the slice
/// holds the policy only for its actions and for its principal and resource by uid or type.
/// Such a policy's scope need not be evaluated again; only its `when`/`unless` clauses.
/// `in` constraints depend on the request's entity hierarchy, which the index does not see.
pub(crate) fn scope_decided_by_index(schema: &CompiledSchema, policy: &Policy) -> bool {
    let known = |t: &EntityTypeName| schema.types.contains_key(&t.to_string());
    let principal = match policy.principal_constraint() {
        PrincipalConstraint::Any | PrincipalConstraint::Eq(_) => true,
        PrincipalConstraint::Is(t) => known(&t),
        PrincipalConstraint::In(_) | PrincipalConstraint::IsIn(..) => false,
    };
    let resource = match policy.resource_constraint() {
        ResourceConstraint::Any | ResourceConstraint::Eq(_) => true,
        ResourceConstraint::Is(t) => known(&t),
        ResourceConstraint::In(_) | ResourceConstraint::IsIn(..) => false,
    };
    principal && resource
}

/// `acme/platform/api` → `acme`, `acme/platform`, `acme/platform/api`.
fn chain_of(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.match_indices('/')
        .map(move |(i, _)| &path[..i])
        .chain(std::iter::once(path))
}
