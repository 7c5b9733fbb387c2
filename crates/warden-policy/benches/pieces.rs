use cedar_policy::*;
use criterion::{Criterion, criterion_group, criterion_main};
use std::collections::HashMap;
use std::hint::black_box;
use std::str::FromStr;

thread_local! { static TYPES: std::cell::RefCell<HashMap<String, EntityTypeName>> = Default::default(); }
fn uid(t: &str, id: &str) -> EntityUid {
    let tn = TYPES.with(|m| {
        m.borrow_mut()
            .entry(t.to_owned())
            .or_insert_with(|| EntityTypeName::from_str(t).unwrap())
            .clone()
    });
    EntityUid::from_type_name_and_id(tn, EntityId::new(id))
}

fn pieces(c: &mut Criterion) {
    let ns_list = || {
        let mut v = vec![Entity::with_uid(uid("Tenant", "acme"))];
        let mut parent = uid("Tenant", "acme");
        for p in ["acme", "acme/team-3", "acme/team-3/api"] {
            let u = uid("Namespace", p);
            v.push(
                Entity::new(
                    u.clone(),
                    HashMap::from([(
                        "path".to_owned(),
                        RestrictedExpression::new_string(p.into()),
                    )]),
                    [parent].into(),
                )
                .unwrap(),
            );
            parent = u;
        }
        v
    };
    let ns_entities = Entities::from_entities(ns_list(), None).unwrap();
    let principal = || {
        Entity::new_with_tags(uid("Agent", "agent-3-6"), [], [uid("Team", "team-3")], []).unwrap()
    };
    let resource = || {
        Entity::new_with_tags(
            uid("Tool", "srv-3__tool-4"),
            [
                (
                    "risk".to_owned(),
                    RestrictedExpression::new_string("medium".into()),
                ),
                (
                    "read_only".to_owned(),
                    RestrictedExpression::new_bool(false),
                ),
                (
                    "name".to_owned(),
                    RestrictedExpression::new_string("tool-4".into()),
                ),
                (
                    "server".to_owned(),
                    RestrictedExpression::new_string("srv-3".into()),
                ),
                (
                    "categories".to_owned(),
                    RestrictedExpression::new_set([
                        RestrictedExpression::new_string("repo".into()),
                        RestrictedExpression::new_string("write".into()),
                    ]),
                ),
            ],
            [uid("ToolServer", "srv-3")],
            [],
        )
        .unwrap()
    };
    c.bench_function("p/principal", |b| b.iter(|| black_box(principal())));
    c.bench_function("p/resource", |b| b.iter(|| black_box(resource())));
    c.bench_function("p/ns_clone_add", |b| {
        b.iter(|| {
            black_box(
                ns_entities
                    .clone()
                    .add_entities(
                        [
                            principal(),
                            resource(),
                            Entity::with_uid(uid("User", "alice")),
                        ],
                        None,
                    )
                    .unwrap(),
            )
        })
    });
    c.bench_function("p/from_entities_all", |b| {
        b.iter(|| {
            black_box(
                Entities::from_entities(
                    ns_list().into_iter().chain([
                        principal(),
                        resource(),
                        Entity::with_uid(uid("User", "alice")),
                    ]),
                    None,
                )
                .unwrap(),
            )
        })
    });
    c.bench_function("p/from_entities_3", |b| {
        b.iter(|| {
            black_box(
                Entities::from_entities(
                    [
                        principal(),
                        resource(),
                        Entity::with_uid(uid("User", "alice")),
                    ],
                    None,
                )
                .unwrap(),
            )
        })
    });
    let ctx = || {
        let args = RestrictedExpression::new_record([
            (
                "branch".to_owned(),
                RestrictedExpression::new_string("feature/x".into()),
            ),
            (
                "environment".to_owned(),
                RestrictedExpression::new_string("staging".into()),
            ),
            (
                "command".to_owned(),
                RestrictedExpression::new_string("make test".into()),
            ),
        ])
        .unwrap();
        let time = RestrictedExpression::new_record([
            ("unix".to_owned(), RestrictedExpression::new_long(1)),
            ("hour".to_owned(), RestrictedExpression::new_long(1)),
            ("weekday".to_owned(), RestrictedExpression::new_long(1)),
        ])
        .unwrap();
        Context::from_pairs([
            ("args".to_owned(), args),
            ("time".to_owned(), time),
            (
                "namespace".to_owned(),
                RestrictedExpression::new_entity_uid(uid("Namespace", "acme/team-3/api")),
            ),
            (
                "on_behalf_of".to_owned(),
                RestrictedExpression::new_entity_uid(uid("User", "alice")),
            ),
            (
                "session".to_owned(),
                RestrictedExpression::new_string("01J8ZK4X".into()),
            ),
        ])
        .unwrap()
    };
    c.bench_function("p/context", |b| b.iter(|| black_box(ctx())));
    let cj = serde_json::json!({"args": {"branch": "feature/x", "environment": "staging", "command": "make test"}, "time": {"unix": 1, "hour": 1, "weekday": 1}, "namespace": {"__entity": {"type": "Namespace", "id": "acme/team-3/api"}}, "on_behalf_of": {"__entity": {"type": "User", "id": "alice"}}, "session": "01J8ZK4X"});
    c.bench_function("p/context_json", |b| {
        b.iter(|| black_box(Context::from_json_value(cj.clone(), None).unwrap()))
    });
    let ents = ns_entities
        .clone()
        .add_entities(
            [
                principal(),
                resource(),
                Entity::with_uid(uid("User", "alice")),
            ],
            None,
        )
        .unwrap();
    let req = Request::new(
        uid("Agent", "agent-3-6"),
        uid("Action", "call_tool"),
        uid("Tool", "srv-3__tool-4"),
        ctx(),
        None,
    )
    .unwrap();
    let auth = Authorizer::new();
    for n in [0usize, 1, 7] {
        let text: String = (0..n).map(|i| format!("permit (principal, action == Action::\"call_tool\", resource) when {{ context.args has environment && context.args.environment like \"prod*\" && resource has risk && resource.risk != \"critical{i}\" }};\n")).collect();
        let ps = PolicySet::from_str(&text).unwrap();
        c.bench_function(&format!("p/authorize_{n}"), |b| {
            b.iter(|| black_box(auth.is_authorized(&req, &ps, &ents)))
        });
    }
    c.bench_function("p/request_new", |b| {
        let cx = ctx();
        b.iter(|| {
            black_box(
                Request::new(
                    uid("Agent", "agent-3-6"),
                    uid("Action", "call_tool"),
                    uid("Tool", "srv-3__tool-4"),
                    cx.clone(),
                    None,
                )
                .unwrap(),
            )
        })
    });
}
criterion_group! { name = benches; config = Criterion::default().sample_size(20); targets = pieces }
criterion_main!(benches);
