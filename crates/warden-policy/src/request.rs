//! Turning a `DecisionRequest` into Cedar's request, entities and context.
//!
//! This runs for every decision and dominated its cost when built through Cedar's public
//! constructors (restricted expressions evaluated into values, then a generic transitive
//! closure over the entities). Here values are built directly, the namespace hierarchy (the
//! same for every request in a namespace) is built once per namespace and shared, and the
//! ancestors of the principal and resource are closed by Warden, which knows that the only
//! hierarchy in the request's entities is the namespace chain.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use cedar_policy::EntityTypeName;
use cedar_policy_core::ast::{
    self, Eid, EntityType, EntityUID, EntityUIDEntry, Name, PartialValue, RestrictedExpr, Value,
};
use cedar_policy_core::entities::{Entities, NoEntitiesSchema, TCComputation};
use cedar_policy_core::evaluator::RestrictedEvaluator;
use cedar_policy_core::extensions::Extensions;
use chrono::{Datelike, Timelike};
use serde_json::{Map, Value as Json};
use smol_str::SmolStr;
use warden_core::{DecisionRequest, EntityRef, Resource, SessionFacts};

/// Context keys Warden fills in itself; a caller may not send them.
pub const WARDEN_CONTEXT_KEYS: [&str; 4] = ["namespace", "time", "on_behalf_of", "session"];

/// How many namespaces' hierarchies are kept; past it the cache starts over.
const NAMESPACE_CACHE_CAP: usize = 4096;

/// How many sets of request entities are kept; past it the cache starts over. One set is a
/// few hundred bytes to a few KB, so this bounds the cache to a few tens of MB.
const ENTITIES_CACHE_CAP: usize = 8192;

/// `Namespace::"acme/platform/api"` in `Namespace::"acme/platform"` in `Namespace::"acme"` in
/// `Tenant::"acme"`, each entity with its ancestors already closed.
struct NamespaceEntities {
    uid: EntityUID,
    chain: Vec<Arc<ast::Entity>>,
}

/// The entities of one kind of request: its namespace chain, principal, resource and
/// on-behalf-of user, exactly as they were given, with what Cedar built from them.
struct RequestEntities {
    namespace: String,
    principal: Resource,
    resource: Resource,
    on_behalf_of: Option<EntityRef>,
    built: Built,
}

/// What Cedar needs of a request's entities.
#[derive(Clone)]
struct Built {
    entities: Arc<Entities>,
    /// `context.namespace` and `context.on_behalf_of`, as Cedar values.
    namespace: Value,
    user: Option<Value>,
    principal: EntityUID,
    resource: EntityUID,
}

impl RequestEntities {
    fn matches(&self, req: &DecisionRequest) -> bool {
        self.namespace == req.namespace.as_str()
            && self.principal == req.principal
            && self.resource == req.resource
            && self.on_behalf_of == req.on_behalf_of
    }
}

pub(crate) struct RequestBuilder {
    /// The schema's entity types, so request types need no parsing.
    types: rustc_hash::FxHashMap<String, EntityType>,
    namespaces: RwLock<HashMap<String, Arc<NamespaceEntities>>>,
    /// An agent calls the same few tools over and over: the entities of a request are the
    /// same each time and only the context (arguments, time, session) changes. Building
    /// them was most of a decision's cost, so they are built once per kind of request. An
    /// entry is used only when the request's entities equal the ones it was built from.
    entities: RwLock<rustc_hash::FxHashMap<u64, Arc<RequestEntities>>>,
}

/// What the evaluator needs for one decision.
pub(crate) struct Prepared {
    pub request: ast::Request,
    pub entities: Arc<Entities>,
}

impl RequestBuilder {
    pub(crate) fn new<'a>(types: impl Iterator<Item = (&'a String, &'a EntityTypeName)>) -> Self {
        RequestBuilder {
            types: types
                .map(|(n, t)| (n.clone(), AsRef::<EntityType>::as_ref(t).clone()))
                .collect(),
            namespaces: RwLock::new(HashMap::new()),
            entities: RwLock::new(Default::default()),
        }
    }

    pub(crate) fn build(
        &self,
        action: &EntityUID,
        req: &DecisionRequest,
    ) -> Result<Prepared, String> {
        let built = self.entities(req)?;
        let context = context(req, built.namespace, built.user)?;
        let request = ast::Request::new_unchecked(
            EntityUIDEntry::known(built.principal, None),
            EntityUIDEntry::known(action.clone(), None),
            EntityUIDEntry::known(built.resource, None),
            Some(context),
        );
        Ok(Prepared {
            request,
            entities: built.entities,
        })
    }

    fn entities(&self, req: &DecisionRequest) -> Result<Built, String> {
        let key = entities_key(req);
        if let Some(e) = self
            .entities
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            && e.matches(req)
        {
            return Ok(e.built.clone());
        }
        let built = self.build_entities(req)?;
        let entry = Arc::new(RequestEntities {
            namespace: req.namespace.as_str().to_owned(),
            principal: req.principal.clone(),
            resource: req.resource.clone(),
            on_behalf_of: req.on_behalf_of.clone(),
            built: built.clone(),
        });
        let mut cache = self.entities.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= ENTITIES_CACHE_CAP {
            cache.clear();
        }
        cache.insert(key, entry);
        Ok(built)
    }

    fn build_entities(&self, req: &DecisionRequest) -> Result<Built, String> {
        let ns = self.namespace(req)?;
        let principal_uid = self.uid(&req.principal.entity_type, &req.principal.id)?;
        let resource_uid = self.uid(&req.resource.entity_type, &req.resource.id)?;
        let user_uid = req
            .on_behalf_of
            .as_ref()
            .map(|u| self.uid(&u.entity_type, &u.id))
            .transpose()?;

        // Parents are closed against the namespace chain; a parent that is another entity of
        // this request (unusual) leaves the closure to Cedar.
        let mut needs_closure = false;
        let mut entity =
            |uid: &EntityUID, r: &Resource, role: &str| -> Result<ast::Entity, String> {
                let mut parents = HashSet::with_capacity(r.parents.len());
                let mut indirect = HashSet::new();
                for p in &r.parents {
                    let puid = self.uid_of(p)?;
                    if let Some(e) = ns.chain.iter().find(|e| e.uid() == &puid) {
                        indirect.extend(e.ancestors().cloned());
                    } else if puid == principal_uid
                        || puid == resource_uid
                        || Some(&puid) == user_uid.as_ref()
                    {
                        needs_closure = true;
                    }
                    parents.insert(puid);
                }
                indirect.retain(|a| !parents.contains(a));
                let mut attrs: Vec<(SmolStr, PartialValue)> =
                    Vec::with_capacity(r.attributes.len() + 2);
                for (k, v) in &r.attributes {
                    if let Some(v) = value(v).map_err(|e| format!("{role} attribute {k:?}: {e}"))? {
                        attrs.push((k.as_str().into(), PartialValue::Value(v)));
                    }
                }
                if r.entity_type == "Tool" {
                    tool_defaults(&r.id, &r.attributes, &mut attrs);
                }
                Ok(ast::Entity::new_with_attr_partial_value(
                    uid.clone(),
                    attrs,
                    indirect,
                    parents,
                    [],
                ))
            };
        let principal = entity(&principal_uid, &req.principal, "principal")?;
        let resource = entity(&resource_uid, &req.resource, "resource")?;

        let mut list: Vec<Arc<ast::Entity>> = Vec::with_capacity(ns.chain.len() + 3);
        list.extend(ns.chain.iter().cloned());
        list.push(Arc::new(principal));
        if resource_uid != principal_uid {
            list.push(Arc::new(resource));
        }
        if let Some(user) = &user_uid
            && *user != principal_uid
            && *user != resource_uid
        {
            list.push(Arc::new(ast::Entity::with_uid(user.clone())));
        }
        let closure = if needs_closure {
            TCComputation::ComputeNow
        } else {
            TCComputation::AssumeAlreadyComputed
        };
        let entities = Entities::new()
            .add_entities(
                list,
                None::<&NoEntitiesSchema>,
                closure,
                Extensions::all_available(),
            )
            .map_err(|e| format!("invalid request entities: {e}"))?;
        Ok(Built {
            entities: Arc::new(entities),
            namespace: Value::from(ns.uid.clone()),
            user: user_uid.map(Value::from),
            principal: principal_uid,
            resource: resource_uid,
        })
    }

    fn entity_type(&self, ty: &str) -> Result<EntityType, String> {
        match self.types.get(ty) {
            Some(t) => Ok(t.clone()),
            None => EntityTypeName::from_str(ty)
                .map(|t| AsRef::<EntityType>::as_ref(&t).clone())
                .map_err(|_| format!("invalid entity type {ty:?}")),
        }
    }

    fn uid(&self, ty: &str, id: &str) -> Result<EntityUID, String> {
        Ok(EntityUID::from_components(
            self.entity_type(ty)?,
            Eid::new(id),
            None,
        ))
    }

    fn uid_of(&self, r: &EntityRef) -> Result<EntityUID, String> {
        self.uid(&r.entity_type, &r.id)
    }

    fn namespace(&self, req: &DecisionRequest) -> Result<Arc<NamespaceEntities>, String> {
        let path = req.namespace.as_str();
        if let Some(ns) = self
            .namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
        {
            return Ok(ns.clone());
        }
        let ns = Arc::new(self.namespace_entities(req)?);
        let mut cache = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= NAMESPACE_CACHE_CAP {
            cache.clear();
        }
        cache.insert(path.to_owned(), ns.clone());
        Ok(ns)
    }

    fn namespace_entities(&self, req: &DecisionRequest) -> Result<NamespaceEntities, String> {
        let tenant = self.uid("Tenant", req.namespace.tenant().as_str())?;
        let mut ancestors: Vec<EntityUID> = vec![tenant.clone()];
        let mut chain = vec![Arc::new(ast::Entity::with_uid(tenant))];
        for path in req.namespace.chain() {
            let uid = self.uid("Namespace", path)?;
            let (parent, indirect) = ancestors.split_last().expect("the tenant is first");
            let attrs = [("path".into(), PartialValue::Value(Value::from(path)))];
            chain.push(Arc::new(ast::Entity::new_with_attr_partial_value(
                uid.clone(),
                attrs,
                indirect.iter().cloned().collect(),
                HashSet::from([parent.clone()]),
                [],
            )));
            ancestors.push(uid);
        }
        Ok(NamespaceEntities {
            uid: ancestors.pop().expect("a namespace has a segment"),
            chain,
        })
    }
}

/// A tool's `name` and `server` are required by the schema so that policies can read them
/// without `has`; when the caller did not send them they follow from the gateway's tool id
/// convention `<server>__<name>`.
fn tool_defaults(id: &str, given: &Map<String, Json>, attrs: &mut Vec<(SmolStr, PartialValue)>) {
    let (server, name) = id.split_once("__").unwrap_or(("", id));
    if !given.contains_key("name") {
        attrs.push(("name".into(), PartialValue::Value(Value::from(name))));
    }
    if !given.contains_key("server") {
        attrs.push(("server".into(), PartialValue::Value(Value::from(server))));
    }
}

/// Which cache entry a request's entities would be in; the entry says whether it fits.
fn entities_key(req: &DecisionRequest) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    static SEED: std::sync::LazyLock<std::collections::hash_map::RandomState> =
        std::sync::LazyLock::new(Default::default);
    let mut h = SEED.build_hasher();
    req.namespace.as_str().hash(&mut h);
    for r in [&req.principal, &req.resource] {
        r.entity_type.hash(&mut h);
        r.id.hash(&mut h);
        r.attributes.len().hash(&mut h);
        r.parents.hash(&mut h);
    }
    req.on_behalf_of.hash(&mut h);
    h.finish()
}

fn context(
    req: &DecisionRequest,
    namespace: Value,
    on_behalf_of: Option<Value>,
) -> Result<ast::Context, String> {
    let mut map: BTreeMap<SmolStr, Value> = BTreeMap::new();
    for (k, v) in &req.context {
        if WARDEN_CONTEXT_KEYS.contains(&k.as_str()) {
            return Err(reserved_key(k));
        }
        let v = match (k.as_str(), v) {
            // The schema types it `ipaddr`; callers send the address as a string.
            ("client_ip", Json::String(ip)) => {
                Some(extension("ip", ip).map_err(|e| format!("context key \"client_ip\": {e}"))?)
            }
            _ => value(v).map_err(|e| format!("context key {k:?}: {e}"))?,
        };
        if let Some(v) = v {
            map.insert(k.as_str().into(), v);
        }
    }
    map.entry("args".into())
        .or_insert_with(|| Value::empty_record(None));
    map.insert("namespace".into(), namespace);
    map.insert("time".into(), time_value(req.time));
    if let Some(user) = on_behalf_of {
        map.insert("on_behalf_of".into(), user);
    }
    if let Some(session) = &req.session {
        map.insert("session".into(), session_value(session, &req.facts));
    }
    Ok(ast::Context::Value(Arc::new(map)))
}

// Requests arrive many per second and an agent's session facts change only when it acts, so
// each thread keeps the last `context.time` and `context.session` it built and reuses them
// while they still describe the request (a Cedar value is shared, cloning it is a count).
thread_local! {
    static LAST_TIME: std::cell::RefCell<Option<(i64, Value)>> = const { std::cell::RefCell::new(None) };
    static LAST_SESSION: std::cell::RefCell<Option<(String, SessionFacts, Value)>> =
        const { std::cell::RefCell::new(None) };
}

fn time_value(t: chrono::DateTime<chrono::Utc>) -> Value {
    let unix = t.timestamp();
    LAST_TIME.with_borrow_mut(|last| {
        if let Some((at, v)) = last
            && *at == unix
        {
            return v.clone();
        }
        let v = Value::record(
            [
                ("unix", Value::from(unix)),
                ("hour", Value::from(i64::from(t.hour()))),
                (
                    "weekday",
                    Value::from(i64::from(t.weekday().num_days_from_monday())),
                ),
            ],
            None,
        );
        *last = Some((unix, v.clone()));
        v
    })
}

fn session_value(session: &str, facts: &SessionFacts) -> Value {
    LAST_SESSION.with_borrow_mut(|last| {
        if let Some((id, f, v)) = last
            && id == session
            && f == facts
        {
            return v.clone();
        }
        let strings = |set: &std::collections::BTreeSet<String>| {
            Value::set(set.iter().map(|s| Value::from(s.as_str())), None)
        };
        let count = |n: u64| Value::from(i64::try_from(n).unwrap_or(i64::MAX));
        let v = Value::record(
            [
                ("id", Value::from(session)),
                ("tools_called", strings(&facts.tools_called)),
                ("servers", strings(&facts.servers)),
                ("categories", strings(&facts.categories)),
                ("calls", count(facts.calls)),
                ("denied", count(facts.denied)),
            ],
            None,
        );
        *last = Some((session.to_owned(), facts.clone(), v.clone()));
        v
    })
}

pub(crate) fn reserved_key(k: &str) -> String {
    format!(
        "context key {k:?} is filled in by Warden and may not be sent by the caller (reserved: {})",
        WARDEN_CONTEXT_KEYS.join(", ")
    )
}

/// JSON to a Cedar value, following Cedar's JSON entity format: `{"__entity": {"type",
/// "id"}}` is an entity reference and `{"__extn": {"fn", "arg"}}` an extension value.
/// Cedar has no null and no fractions: `null` drops the attribute (so `has` is false) and a
/// non-integer number becomes its decimal text as a String.
fn value(v: &Json) -> Result<Option<Value>, String> {
    Ok(Some(match v {
        Json::Null => return Ok(None),
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::from(i),
            None => Value::from(n.to_string()),
        },
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.extend(value(item)?);
            }
            Value::set(out, None)
        }
        Json::Object(map) => {
            if map.len() == 1 {
                if let Some(e) = map.get("__entity") {
                    return entity_escape(e).map(Some);
                }
                if let Some(Json::Object(e)) = map.get("__extn") {
                    let (Some(Json::String(f)), Some(Json::String(arg))) =
                        (e.get("fn"), e.get("arg"))
                    else {
                        return Err("__extn needs string fields \"fn\" and \"arg\"".into());
                    };
                    return extension(f, arg).map(Some);
                }
            }
            let mut fields = BTreeMap::new();
            for (k, v) in map {
                if let Some(v) = value(v).map_err(|e| format!("{k}: {e}"))? {
                    fields.insert(SmolStr::from(k.as_str()), v);
                }
            }
            Value::record_arc(Arc::new(fields), None)
        }
    }))
}

fn entity_escape(v: &Json) -> Result<Value, String> {
    let (Some(Json::String(ty)), Some(Json::String(id))) = (v.get("type"), v.get("id")) else {
        return Err("__entity needs string fields \"type\" and \"id\"".into());
    };
    let ty = EntityTypeName::from_str(ty).map_err(|_| format!("invalid entity type {ty:?}"))?;
    Ok(Value::from(EntityUID::from_components(
        AsRef::<EntityType>::as_ref(&ty).clone(),
        Eid::new(id.as_str()),
        None,
    )))
}

/// `ip("10.0.0.1")`, `decimal("1.5")`, `datetime("2025-01-01")`, `duration("1h")`.
fn extension(f: &str, arg: &str) -> Result<Value, String> {
    if !matches!(f, "ip" | "decimal" | "datetime" | "duration") {
        return Err(format!("unknown extension function {f:?}"));
    }
    // Parsed once: running Cedar's parser for a function name on every request showed up in
    // the gateway's profile.
    static NAMES: std::sync::LazyLock<HashMap<&'static str, Name>> =
        std::sync::LazyLock::new(|| {
            ["ip", "decimal", "datetime", "duration"]
                .into_iter()
                .map(|f| {
                    let n = Name::parse_unqualified_name(f).expect("extension names parse");
                    (f, n)
                })
                .collect()
        });
    let name = NAMES
        .get(f)
        .cloned()
        .ok_or_else(|| format!("unknown extension function {f:?}"))?;
    let call = RestrictedExpr::call_extension_fn(name, [RestrictedExpr::val(arg)]);
    RestrictedEvaluator::new(Extensions::all_available())
        .interpret(call.as_borrowed())
        .map_err(|e| e.to_string())
}
