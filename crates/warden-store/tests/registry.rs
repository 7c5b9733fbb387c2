//! The registry in the store, on SQLite and PostgreSQL (the same tests on each): changes
//! apply whole or not at all, concurrent changes from the same version cannot both win, names
//! and aliases are unique per tenant, lists filter and page by keyset, and one tenant never
//! sees another's records.

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use common::{Backend, TestDb};
use serde_json::json;
use uuid::Uuid;
use warden_core::{Actor, AuditEvent, Error, TenantId};
use warden_registry::model::{
    Agent, Category, Owner, PinPolicy, RiskLevel, ServerName, Source, State, Tool, ToolServer,
};
use warden_registry::pin::{ToolDefinition, digest};
use warden_store::{
    AgentFilter, ChangeKind, HistoryEntry, HistoryFilter, RegistryChange, RegistryWrite,
    ServerFilter, Store, SubjectKind, ToolFilter,
};

async fn store(b: Backend) -> (TestDb, Arc<dyn Store>) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    (db, store)
}

fn tenant(t: &str) -> TenantId {
    TenantId::parse(t).unwrap()
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap()
}

fn server(name: &str, alias: &str) -> ToolServer {
    ToolServer {
        name: ServerName::parse(name).unwrap(),
        alias: alias.into(),
        title: None,
        description: "a server".into(),
        version: "1.0.0".into(),
        owner: Some(Owner::parse("team:platform").unwrap()),
        source: Source::default(),
        transport: None,
        state: State::PendingReview,
        scopes: vec![],
        pin_policy: PinPolicy::Block,
        created_at: now(),
        updated_at: now(),
    }
}

fn definition(name: &str, description: &str) -> ToolDefinition {
    ToolDefinition::from_mcp(&json!({
        "name": name, "description": description, "inputSchema": {"type": "object"}
    }))
    .unwrap()
}

fn tool(server: &str, name: &str) -> Tool {
    Tool::discovered(
        ServerName::parse(server).unwrap(),
        &definition(name, "does things"),
    )
}

fn agent(name: &str) -> Agent {
    Agent {
        name: name.into(),
        owner: Owner::parse("bob").unwrap(),
        description: None,
        version: None,
        models: vec![],
        scopes: vec![],
        created_at: now(),
        updated_at: now(),
    }
}

fn history(
    kind: SubjectKind,
    subject: &str,
    tool: Option<&str>,
    change: ChangeKind,
) -> HistoryEntry {
    HistoryEntry {
        id: Uuid::now_v7(),
        subject_kind: kind,
        subject: subject.into(),
        tool: tool.map(str::to_owned),
        kind: change,
        from_state: None,
        to_state: None,
        reason: Some("test".into()),
        by: "cli:alice".into(),
        at: now(),
        detail: json!({}),
        event_id: None,
    }
}

fn event(tenant: &str) -> AuditEvent {
    AuditEvent::new(
        tenant,
        tenant,
        warden_core::catalog::REGISTRY_SERVER_REGISTERED,
        "warden.cli",
        Actor::default(),
        json!({"test": true}),
    )
}

fn change(t: &str, writes: Vec<RegistryWrite>) -> RegistryChange {
    RegistryChange {
        tenant: tenant(t),
        writes,
        history: vec![],
        events: vec![],
    }
}

async fn insert_server(s: &Arc<dyn Store>, t: &str, name: &str, alias: &str) {
    s.registry_apply(&change(
        t,
        vec![RegistryWrite::InsertServer(server(name, alias))],
    ))
    .await
    .unwrap();
}

fn conflict(r: warden_core::Result<()>) -> String {
    match r {
        Err(Error::Conflict(m)) => m,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

async fn records_round_trip_with_their_columns(b: Backend) {
    let (_db, s) = store(b).await;
    let acme = tenant("acme");
    let srv = server("io.github.acme/deploy", "deploy");
    let mut t = tool("io.github.acme/deploy", "delete_env");
    t.risk = Some(RiskLevel::High);
    t.categories = BTreeSet::from([Category::Delete, Category::Write]);
    let seen = definition("delete_env", "does things");
    let bot = agent("ci-bot");
    s.registry_apply(&RegistryChange {
        tenant: acme.clone(),
        writes: vec![
            RegistryWrite::InsertServer(srv.clone()),
            RegistryWrite::InsertTool {
                tool: t.clone(),
                observed: Some(seen.clone()),
            },
            RegistryWrite::InsertAgent(bot.clone()),
        ],
        history: vec![history(
            SubjectKind::Server,
            "io.github.acme/deploy",
            None,
            ChangeKind::Registered,
        )],
        events: vec![event("acme")],
    })
    .await
    .unwrap();

    let got = s
        .get_server(&acme, "io.github.acme/deploy")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.server, got.version), (srv, 1));
    let got = s
        .get_tool(&acme, "io.github.acme/deploy", "delete_env")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.tool, t);
    assert_eq!(got.observed.as_ref(), Some(&seen));
    assert_eq!(got.observed_sha256, Some(digest(&seen)));
    assert_eq!(got.version, 1);
    assert_eq!(
        s.get_agent(&acme, "ci-bot").await.unwrap().unwrap().agent,
        bot
    );
    // The event went into the tenant's Merkle log with the change.
    assert_eq!(s.merkle_head(&acme).await.unwrap().size, 1);
    let rows = s.registry_all().await.unwrap();
    assert_eq!(
        (rows.servers.len(), rows.tools.len(), rows.agents.len()),
        (1, 1, 1)
    );
    assert!(s.registry_stamp().await.unwrap().is_some());
}

async fn duplicates_are_conflicts_that_say_what_is_taken(b: Backend) {
    let (_db, s) = store(b).await;
    insert_server(&s, "acme", "io.github.acme/deploy", "deploy").await;
    let m = conflict(
        s.registry_apply(&change(
            "acme",
            vec![RegistryWrite::InsertServer(server(
                "io.github.acme/deploy",
                "other",
            ))],
        ))
        .await,
    );
    assert!(
        m.contains("already has a server named io.github.acme/deploy"),
        "{m}"
    );
    let m = conflict(
        s.registry_apply(&change(
            "acme",
            vec![RegistryWrite::InsertServer(server(
                "io.github.other/deploy",
                "deploy",
            ))],
        ))
        .await,
    );
    assert!(
        m.contains("alias \"deploy\" is already used by server io.github.acme/deploy"),
        "{m}"
    );
    // The same name and alias in another tenant are fine.
    insert_server(&s, "globex", "io.github.acme/deploy", "deploy").await;

    let t = tool("io.github.acme/deploy", "run");
    let insert = || {
        change(
            "acme",
            vec![RegistryWrite::InsertTool {
                tool: t.clone(),
                observed: None,
            }],
        )
    };
    s.registry_apply(&insert()).await.unwrap();
    let m = conflict(s.registry_apply(&insert()).await);
    assert!(m.contains("already has a tool named \"run\""), "{m}");
    // A tool of an unknown server.
    let orphan = change(
        "acme",
        vec![RegistryWrite::InsertTool {
            tool: tool("io.github.acme/nope", "run"),
            observed: None,
        }],
    );
    assert!(matches!(
        s.registry_apply(&orphan).await,
        Err(Error::NotFound(_))
    ));
    s.registry_apply(&change(
        "acme",
        vec![RegistryWrite::InsertAgent(agent("ci-bot"))],
    ))
    .await
    .unwrap();
    let m = conflict(
        s.registry_apply(&change(
            "acme",
            vec![RegistryWrite::InsertAgent(agent("ci-bot"))],
        ))
        .await,
    );
    assert!(m.contains("already has an agent named \"ci-bot\""), "{m}");
}

async fn two_changes_from_the_same_version_cannot_both_win(b: Backend) {
    let (_db, s) = store(b).await;
    let acme = tenant("acme");
    insert_server(&s, "acme", "io.github.acme/deploy", "deploy").await;
    let read = s
        .get_server(&acme, "io.github.acme/deploy")
        .await
        .unwrap()
        .unwrap();
    let mut approve = read.server.clone();
    approve.state = State::Approved;
    let mut block = read.server.clone();
    block.state = State::Blocked;
    let writes = |srv: ToolServer| {
        change(
            "acme",
            vec![RegistryWrite::UpdateServer {
                server: srv,
                expected_version: read.version,
            }],
        )
    };
    // Concurrently: exactly one applies.
    let (first, second) = (writes(approve), writes(block));
    let (a, b) = tokio::join!(s.registry_apply(&first), s.registry_apply(&second));
    assert_eq!(
        [a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(),
        1,
        "{a:?} {b:?}"
    );
    let loser = if a.is_ok() { b } else { a };
    let m = conflict(loser);
    assert!(
        m.contains("changed by someone else meanwhile") && m.contains("version 2"),
        "{m}"
    );
    let now = s
        .get_server(&acme, "io.github.acme/deploy")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.version, 2);
    assert_ne!(now.server.state, State::PendingReview);

    // An update of something that does not exist is NotFound, not a conflict.
    let ghost = change(
        "acme",
        vec![RegistryWrite::UpdateServer {
            server: server("io.github.acme/ghost", "ghost"),
            expected_version: 1,
        }],
    );
    assert!(matches!(
        s.registry_apply(&ghost).await,
        Err(Error::NotFound(_))
    ));

    // Tools and agents are conditional the same way.
    let t = tool("io.github.acme/deploy", "run");
    s.registry_apply(&change(
        "acme",
        vec![RegistryWrite::InsertTool {
            tool: t.clone(),
            observed: None,
        }],
    ))
    .await
    .unwrap();
    let update = |v: i64| {
        change(
            "acme",
            vec![RegistryWrite::UpdateTool {
                tool: t.clone(),
                observed: Some(definition("run", "new")),
                expected_version: v,
            }],
        )
    };
    s.registry_apply(&update(1)).await.unwrap();
    conflict(s.registry_apply(&update(1)).await);
    let stored = s
        .get_tool(&acme, "io.github.acme/deploy", "run")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(
        stored.observed_sha256,
        Some(digest(&definition("run", "new")))
    );
    s.registry_apply(&change(
        "acme",
        vec![RegistryWrite::InsertAgent(agent("ci-bot"))],
    ))
    .await
    .unwrap();
    let agent_update = |v: i64| {
        change(
            "acme",
            vec![RegistryWrite::UpdateAgent {
                agent: agent("ci-bot"),
                expected_version: v,
            }],
        )
    };
    s.registry_apply(&agent_update(1)).await.unwrap();
    conflict(s.registry_apply(&agent_update(1)).await);
}

async fn a_change_applies_whole_or_not_at_all(b: Backend) {
    let (_db, s) = store(b).await;
    let acme = tenant("acme");
    insert_server(&s, "acme", "io.github.acme/deploy", "deploy").await;
    let stamp = s.registry_stamp().await.unwrap();
    // The second write is stale: the first write, the history row and the event are dropped.
    let mut approved = server("io.github.acme/deploy", "deploy");
    approved.state = State::Approved;
    let bad = RegistryChange {
        tenant: acme.clone(),
        writes: vec![
            RegistryWrite::InsertServer(server("io.github.acme/other", "other")),
            RegistryWrite::UpdateServer {
                server: approved,
                expected_version: 7,
            },
        ],
        history: vec![history(
            SubjectKind::Server,
            "io.github.acme/other",
            None,
            ChangeKind::Registered,
        )],
        events: vec![event("acme")],
    };
    conflict(s.registry_apply(&bad).await);
    assert!(
        s.get_server(&acme, "io.github.acme/other")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(s.merkle_head(&acme).await.unwrap().size, 0, "no event");
    let all = HistoryFilter {
        limit: 100,
        ..Default::default()
    };
    assert!(s.registry_history(&acme, &all).await.unwrap().is_empty());
    assert_eq!(s.registry_stamp().await.unwrap(), stamp);

    // An event of another tenant is refused outright.
    let mut cross = change("acme", vec![]);
    cross.events.push(event("globex"));
    assert!(s.registry_apply(&cross).await.is_err());
}

async fn lists_filter_and_page_by_keyset(b: Backend) {
    let (_db, s) = store(b).await;
    let acme = tenant("acme");
    let mut writes = Vec::new();
    for i in 0..25 {
        let mut srv = server(
            &format!("io.github.acme/srv-{i:02}"),
            &format!("srv-{i:02}"),
        );
        if i % 5 == 0 {
            srv.state = State::Approved;
        }
        if i % 2 == 0 {
            srv.owner = Some(Owner::parse("alice").unwrap());
        }
        writes.push(RegistryWrite::InsertServer(srv));
    }
    writes.push(RegistryWrite::InsertServer(server(
        "com.example/zed",
        "zed",
    )));
    for (srv, name, risk, cats) in [
        (
            "io.github.acme/srv-00",
            "read_file",
            RiskLevel::Low,
            vec![Category::Read],
        ),
        (
            "io.github.acme/srv-00",
            "write_file",
            RiskLevel::Medium,
            vec![Category::Write],
        ),
        (
            "io.github.acme/srv-01",
            "delete_all",
            RiskLevel::High,
            vec![Category::Delete, Category::Write],
        ),
        (
            "io.github.acme/srv-01",
            "read_secret",
            RiskLevel::Critical,
            vec![Category::Read, Category::Secrets],
        ),
        (
            "io.github.acme/srv-02",
            "read_mail",
            RiskLevel::Low,
            vec![Category::Read, Category::Pii],
        ),
    ] {
        let mut t = tool(srv, name);
        t.risk = Some(risk);
        t.categories = cats.into_iter().collect();
        writes.push(RegistryWrite::InsertTool {
            tool: t,
            observed: None,
        });
    }
    s.registry_apply(&change("acme", writes)).await.unwrap();

    // Pages of 10 by name, each starting after the last name of the one before.
    let mut names = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .list_servers(
                &acme,
                &ServerFilter {
                    after: after.clone(),
                    limit: 10,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        names.extend(page.iter().map(|p| p.server.name.to_string()));
        if page.len() < 10 {
            break;
        }
        after = page.last().map(|p| p.server.name.to_string());
    }
    assert_eq!(names.len(), 26);
    assert_eq!(names[0], "com.example/zed");
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "in name order, none twice");

    let servers = |f: ServerFilter| {
        let s = s.clone();
        let acme = acme.clone();
        async move {
            s.list_servers(&acme, &ServerFilter { limit: 100, ..f })
                .await
                .unwrap()
                .into_iter()
                .map(|p| p.server.name.to_string())
                .collect::<Vec<_>>()
        }
    };
    let approved = servers(ServerFilter {
        state: Some(State::Approved),
        ..Default::default()
    })
    .await;
    assert_eq!(
        approved,
        [
            "io.github.acme/srv-00",
            "io.github.acme/srv-05",
            "io.github.acme/srv-10",
            "io.github.acme/srv-15",
            "io.github.acme/srv-20"
        ]
    );
    let alices = servers(ServerFilter {
        owner: Some("alice".into()),
        state: Some(State::Approved),
        ..Default::default()
    })
    .await;
    assert_eq!(
        alices,
        [
            "io.github.acme/srv-00",
            "io.github.acme/srv-10",
            "io.github.acme/srv-20"
        ]
    );
    let prefixed = servers(ServerFilter {
        name_prefix: Some("io.github.acme/srv-1".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(prefixed.len(), 10);
    // A prefix is literal: '_' and '%' are no wildcards.
    assert!(
        servers(ServerFilter {
            name_prefix: Some("io.github.acme/srv_".into()),
            ..Default::default()
        })
        .await
        .is_empty()
    );

    let tools = |f: ToolFilter| {
        let s = s.clone();
        let acme = acme.clone();
        async move {
            s.list_tools(&acme, &ToolFilter { limit: 100, ..f })
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.tool.name)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        tools(ToolFilter {
            category: Some(Category::Read),
            ..Default::default()
        })
        .await,
        ["read_file", "read_secret", "read_mail"],
        "by server, then name"
    );
    assert_eq!(
        tools(ToolFilter {
            category: Some(Category::Write),
            server: Some("io.github.acme/srv-01".into()),
            ..Default::default()
        })
        .await,
        ["delete_all"]
    );
    assert_eq!(
        tools(ToolFilter {
            risk: Some(RiskLevel::Critical),
            ..Default::default()
        })
        .await,
        ["read_secret"]
    );
    assert_eq!(
        tools(ToolFilter {
            name_prefix: Some("read".into()),
            state: Some(State::PendingReview),
            ..Default::default()
        })
        .await
        .len(),
        3
    );
    // Keyset over (server, name): two at a time.
    let first = s
        .list_tools(
            &acme,
            &ToolFilter {
                limit: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let last = first.last().unwrap();
    let next = s
        .list_tools(
            &acme,
            &ToolFilter {
                after: Some((last.tool.server.to_string(), last.tool.name.clone())),
                limit: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let names: Vec<_> = first
        .iter()
        .chain(&next)
        .map(|t| t.tool.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["read_file", "write_file", "delete_all", "read_secret"]
    );

    let agents = s
        .list_agents(
            &acme,
            &AgentFilter {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(agents.is_empty());
}

async fn tenants_never_see_each_other(b: Backend) {
    let (_db, s) = store(b).await;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    insert_server(&s, "acme", "io.github.acme/deploy", "deploy").await;
    let mut c = change(
        "acme",
        vec![
            RegistryWrite::InsertTool {
                tool: tool("io.github.acme/deploy", "run"),
                observed: None,
            },
            RegistryWrite::InsertAgent(agent("ci-bot")),
        ],
    );
    c.history.push(history(
        SubjectKind::Tool,
        "io.github.acme/deploy",
        Some("run"),
        ChangeKind::Registered,
    ));
    s.registry_apply(&c).await.unwrap();

    assert!(
        s.get_server(&globex, "io.github.acme/deploy")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.get_tool(&globex, "io.github.acme/deploy", "run")
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.get_agent(&globex, "ci-bot").await.unwrap().is_none());
    let everything = |limit| ServerFilter {
        limit,
        ..Default::default()
    };
    assert!(
        s.list_servers(&globex, &everything(100))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.list_servers(&acme, &everything(100)).await.unwrap().len(),
        1
    );
    let all_tools = ToolFilter {
        limit: 100,
        ..Default::default()
    };
    assert!(s.list_tools(&globex, &all_tools).await.unwrap().is_empty());
    let all_agents = AgentFilter {
        limit: 100,
        ..Default::default()
    };
    assert!(
        s.list_agents(&globex, &all_agents)
            .await
            .unwrap()
            .is_empty()
    );
    let all = HistoryFilter {
        limit: 100,
        ..Default::default()
    };
    assert!(s.registry_history(&globex, &all).await.unwrap().is_empty());
    assert_eq!(s.registry_history(&acme, &all).await.unwrap().len(), 1);

    // An update naming globex cannot touch acme's server.
    let mut srv = server("io.github.acme/deploy", "deploy");
    srv.state = State::Blocked;
    let cross = change(
        "globex",
        vec![RegistryWrite::UpdateServer {
            server: srv,
            expected_version: 1,
        }],
    );
    assert!(matches!(
        s.registry_apply(&cross).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        s.get_server(&acme, "io.github.acme/deploy")
            .await
            .unwrap()
            .unwrap()
            .server
            .state,
        State::PendingReview
    );
}

async fn history_filters_and_pages_newest_first(b: Backend) {
    let (_db, s) = store(b).await;
    let acme = tenant("acme");
    insert_server(&s, "acme", "io.github.acme/deploy", "deploy").await;
    let mut entries = Vec::new();
    for (kind, tool, change) in [
        (SubjectKind::Server, None, ChangeKind::Registered),
        (SubjectKind::Tool, Some("run"), ChangeKind::Registered),
        (SubjectKind::Tool, Some("run"), ChangeKind::Transition),
        (SubjectKind::Tool, Some("run"), ChangeKind::Pin),
        (
            SubjectKind::Tool,
            Some("run"),
            ChangeKind::DefinitionChanged,
        ),
        (SubjectKind::Tool, Some("other"), ChangeKind::Pin),
        (SubjectKind::Server, None, ChangeKind::Scope),
    ] {
        let mut h = history(kind, "io.github.acme/deploy", tool, change);
        h.from_state = Some(State::PendingReview);
        h.to_state = Some(State::Approved);
        h.detail = json!({"n": entries.len()});
        entries.push(h);
    }
    let mut c = change("acme", vec![]);
    c.history = entries.clone();
    s.registry_apply(&c).await.unwrap();

    let pins = s
        .registry_history(
            &acme,
            &HistoryFilter {
                subject_kind: Some(SubjectKind::Tool),
                subject: Some("io.github.acme/deploy".into()),
                tool: Some("run".into()),
                kinds: vec![ChangeKind::Pin, ChangeKind::DefinitionChanged],
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(pins, vec![entries[4].clone(), entries[3].clone()]);

    let page1 = s
        .registry_history(
            &acme,
            &HistoryFilter {
                limit: 4,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let page2 = s
        .registry_history(
            &acme,
            &HistoryFilter {
                before: Some(page1.last().unwrap().id),
                limit: 4,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ids: Vec<Uuid> = page1.iter().chain(&page2).map(|h| h.id).collect();
    let mut expected: Vec<Uuid> = entries.iter().map(|h| h.id).collect();
    expected.reverse();
    assert_eq!(ids, expected);
    assert_eq!(
        s.registry_stamp().await.unwrap(),
        Some(entries.last().unwrap().id.to_string())
    );
}

/// A registry change records its audit event in its own transaction, under the log's lock,
/// while the audit pipeline keeps writing to the same log: every change and every event gets
/// in, and the log stays one sequence.
async fn registry_changes_and_the_audit_pipeline_share_one_log(b: Backend) {
    use warden_store::pipeline::{AuditPipeline, PipelineConfig};
    let (_db, s) = store(b).await;
    let pipeline = Arc::new(AuditPipeline::start(s.clone(), PipelineConfig::default()));
    let mut tasks = Vec::new();
    for n in 0..400usize {
        let p = pipeline.clone();
        tasks.push(tokio::spawn(async move {
            let mut e = event("acme");
            e.header.event_type = "authz.decision".into();
            e.payload = json!({ "n": n });
            p.record(e).await.unwrap();
        }));
    }
    let changes = {
        let s = s.clone();
        tokio::spawn(async move {
            for n in 0..30 {
                let mut c = change(
                    "acme",
                    vec![RegistryWrite::InsertServer(server(
                        &format!("io.github.acme/s{n}"),
                        &format!("s{n}"),
                    ))],
                );
                c.events = vec![event("acme")];
                s.registry_apply(&c).await.unwrap();
            }
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    changes.await.unwrap();
    pipeline.shutdown().await;
    let acme = tenant("acme");
    assert_eq!(s.merkle_head(&acme).await.unwrap().size, 430);
    let mut seq = 0;
    loop {
        let page = s.events_in_order(&acme, seq, 500).await.unwrap();
        let Some(last) = page.last() else { break };
        for (i, e) in page.iter().enumerate() {
            assert_eq!(e.seq, seq + i as u64, "no gap");
        }
        seq = last.seq + 1;
    }
    assert_eq!(seq, 430);
}

on_both_backends!(
    registry_changes_and_the_audit_pipeline_share_one_log,
    records_round_trip_with_their_columns,
    duplicates_are_conflicts_that_say_what_is_taken,
    two_changes_from_the_same_version_cannot_both_win,
    a_change_applies_whole_or_not_at_all,
    lists_filter_and_page_by_keyset,
    tenants_never_see_each_other,
    history_filters_and_pages_newest_first,
);
