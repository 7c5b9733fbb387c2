//! Replaying recorded decisions under candidate policies (`warden_policy::simulate`): events
//! shaped as the decision API and the gateway record them, decided again and counted.

mod common;

use common::*;
use serde_json::{Value, json};
use warden_core::simulation::SimulationReport;
use warden_core::{Actor, AuditEvent, DecisionSummary, Outcome, PolicyRef, TenantId};
use warden_policy::Engine;
use warden_policy::memo::Memo;
use warden_policy::simulate::{Recorded, Tally, Window};

const RECORDED: &str = r#"
@id("tools")
permit (principal is Agent, action == Action::"call_tool", resource is Tool);

@id("no-shell")
forbid (principal, action == Action::"call_tool", resource is Tool)
when { resource.name == "run_shell" };
"#;

/// `no-shell` now also forbids deleting repositories.
const CANDIDATE: &str = r#"
@id("tools")
permit (principal is Agent, action == Action::"call_tool", resource is Tool);

@id("no-shell")
forbid (principal, action == Action::"call_tool", resource is Tool)
when { resource.name == "run_shell" || resource.name == "delete_repository" };
"#;

/// One stored decision event: (id, time µs, seq, namespace, outcome, header, payload).
struct Stored {
    id: String,
    time_us: i64,
    seq: u64,
    namespace: String,
    outcome: Option<String>,
    header: String,
    payload: Option<String>,
}

impl Stored {
    fn recorded(&self) -> Recorded<'_> {
        Recorded {
            id: &self.id,
            time_us: self.time_us,
            seq: self.seq,
            namespace: &self.namespace,
            outcome: self.outcome.as_deref(),
            header: &self.header,
            payload: self.payload.as_deref(),
        }
    }
}

/// A decision as the door records it: the request decided by `engine`, kept whole in the
/// payload (the gateway's layout when `gateway` is set, with session facts and MCP notes).
fn record(engine: &Engine, seq: u64, agent: &str, ns: &str, tool: &str, gateway: bool) -> Stored {
    let mut req = call_tool(ns, tool);
    req.principal.id = agent.into();
    req.context = json!({"args": {"path": "README.md"}})
        .as_object()
        .unwrap()
        .clone();
    let d = engine.decide(&req);
    let mut request = json!({
        "principal": req.principal,
        "on_behalf_of": req.on_behalf_of,
        "session": req.session,
        "action": req.action,
        "resource": req.resource,
        "context": req.context,
        "time": req.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    });
    let mut payload = json!({"evaluated": d.evaluated});
    if gateway {
        request["facts"] = json!({"tools_called": ["gh__read_file"], "calls": 1});
        payload["mcp"] = json!({"mcp.method.name": "tools/call", "gen_ai.tool.name": tool});
    }
    payload["request"] = request;
    let mut e = AuditEvent::new(
        "acme",
        ns,
        if gateway {
            "mcp.tool.call.decided"
        } else {
            "authz.decision"
        },
        "warden.api",
        Actor::default(),
        payload.clone(),
    );
    e.header.decision = Some(DecisionSummary {
        outcome: d.outcome,
        policies: d.reasons.clone(),
        obligations: vec![],
        warnings: vec![],
        errors: d.errors.clone(),
    });
    Stored {
        id: e.header.id.to_string(),
        time_us: 1_000_000 + seq as i64,
        seq,
        namespace: ns.into(),
        outcome: Some(d.outcome.as_str().into()),
        header: serde_json::to_string(&e.header).unwrap(),
        payload: Some(payload.to_string()),
    }
}

/// A deterministic history: two agents in two namespaces calling four tools, through both
/// doors, 24 decisions.
fn history(engine: &Engine) -> Vec<Stored> {
    let calls = [
        ("bot-a", "acme/platform", "gh__read_file"),
        ("bot-a", "acme/platform", "gh__delete_repository"),
        ("bot-b", "acme/ops", "sh__run_shell"),
        ("bot-b", "acme/ops", "gh__delete_repository"),
        ("bot-b", "acme/ops", "gh__read_file"),
        ("bot-a", "acme/platform", "deploy__trigger_deploy"),
    ];
    (0..24u64)
        .map(|seq| {
            let (agent, ns, tool) = calls[seq as usize % calls.len()];
            record(engine, seq, agent, ns, tool, seq % 2 == 1)
        })
        .collect()
}

fn window() -> Window {
    Window {
        tenant: TenantId::parse("acme").unwrap(),
        from: chrono::DateTime::from_timestamp(0, 0).unwrap(),
        to: chrono::DateTime::from_timestamp(10, 0).unwrap(),
        namespace: None,
    }
}

/// The report of `events` replayed under `candidate`, checked to be the same whether each
/// request is decided in full or each distinct request once through the memo.
fn replay(candidate: &Engine, events: &[&Stored]) -> SimulationReport {
    let (full, memoized, _) = replay_both(candidate, events);
    assert_eq!(
        serde_json::to_value(&full).unwrap(),
        serde_json::to_value(&memoized).unwrap(),
        "the memo changed the report"
    );
    full
}

/// The report without and with the memo, and the memo's hits.
fn replay_both(
    candidate: &Engine,
    events: &[&Stored],
) -> (SimulationReport, SimulationReport, u64) {
    let tenant = TenantId::parse("acme").unwrap();
    let mut full = Tally::new(&tenant);
    let mut memoized = Tally::new(&tenant);
    let mut memo = Memo::new(candidate);
    for e in events {
        full.record(candidate, &e.recorded());
        memoized.record_with(candidate, Some(&mut memo), &e.recorded());
    }
    (
        full.report(window(), candidate, 0),
        memoized.report(window(), candidate, 0),
        memo.hits(),
    )
}

#[test]
fn one_changed_policy_changes_exactly_the_decisions_it_now_forbids() {
    let recorded = engine(&[("acme", RECORDED)]);
    let candidate = engine(&[("acme", CANDIDATE)]);
    let events = history(&recorded);
    let all: Vec<&Stored> = events.iter().collect();
    let r = replay(&candidate, &all);

    // Deletions are calls 1 and 3 of every six: seqs 1, 3, 7, 9, 13, 15, 19, 21.
    let deletions: Vec<&Stored> = events
        .iter()
        .filter(|e| matches!(e.seq % 6, 1 | 3))
        .collect();
    let ids = |es: &[&Stored]| es.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(
        (r.recorded, r.replayed, r.changed, r.unchanged),
        (24, 24, 8, 16)
    );
    assert_eq!(r.directions.len(), 1);
    let d = &r.directions[0];
    assert_eq!((d.from, d.to, d.count), (Outcome::Allow, Outcome::Deny, 8));
    assert_eq!(d.examples, ids(&deletions[..5]));

    // The forbid decides them now; the permit decided them before.
    let policies: Vec<(&str, u64, u64, u64)> = r
        .by_policy
        .iter()
        .map(|p| {
            (
                p.policy.as_str(),
                p.count,
                p.determined_before,
                p.determines_now,
            )
        })
        .collect();
    assert_eq!(policies, [("no-shell", 8, 0, 8), ("tools", 8, 8, 0)]);
    assert_eq!(r.by_policy[0].directions["allow_to_deny"], 8);

    let keys = |g: &[warden_core::simulation::Group]| {
        g.iter()
            .map(|g| (g.key.clone(), g.count))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(&r.by_agent),
        [("bot-a".to_owned(), 4), ("bot-b".to_owned(), 4)]
    );
    assert_eq!(keys(&r.by_tool), [("gh__delete_repository".to_owned(), 8)]);
    assert_eq!(
        keys(&r.by_namespace),
        [("acme/ops".to_owned(), 4), ("acme/platform".to_owned(), 4)]
    );
    let ops: Vec<&Stored> = deletions
        .iter()
        .copied()
        .filter(|e| e.namespace == "acme/ops")
        .collect();
    assert_eq!(r.by_namespace[0].examples, ids(&ops));
    assert_eq!(r.candidate_errors.count, 0);
    assert_eq!(r.changed_with_redacted_values.count, 0);
    assert_eq!(r.candidate.policies, 2);
}

#[test]
fn the_recorded_policies_change_nothing() {
    let recorded = engine(&[("acme", RECORDED)]);
    let events = history(&recorded);
    let all: Vec<&Stored> = events.iter().collect();
    let r = replay(&recorded, &all);
    assert_eq!((r.replayed, r.changed, r.unchanged), (24, 0, 24));
    assert!(r.directions.is_empty() && r.by_policy.is_empty() && r.by_agent.is_empty());
}

#[test]
fn a_report_does_not_depend_on_how_the_work_was_split() {
    let recorded = engine(&[("acme", RECORDED)]);
    let candidate = engine(&[("acme", CANDIDATE)]);
    let events = history(&recorded);
    let all: Vec<&Stored> = events.iter().collect();
    let whole = replay(&candidate, &all);

    // Two workers, each with every other page of three, merged in reverse order.
    let tenant = TenantId::parse("acme").unwrap();
    let (mut a, mut b) = (Tally::new(&tenant), Tally::new(&tenant));
    for (page, chunk) in events.chunks(3).enumerate() {
        let t = if page.is_multiple_of(2) {
            &mut a
        } else {
            &mut b
        };
        for e in chunk.iter().rev() {
            t.record(&candidate, &e.recorded());
        }
    }
    b.merge(a);
    assert_eq!(b.report(window(), &candidate, 0), whole);
}

#[test]
fn registry_refusals_and_purged_requests_are_counted_not_replayed() {
    let recorded = engine(&[("acme", RECORDED)]);
    let candidate = engine(&[("acme", CANDIDATE)]);
    let mut refused = record(
        &recorded,
        0,
        "bot-a",
        "acme/platform",
        "gh__read_file",
        true,
    );
    // The gateway refused the tool from the registry: deny, no policy asked. Even a candidate
    // that would allow it cannot change that.
    let mut payload: Value = serde_json::from_str(refused.payload.as_deref().unwrap()).unwrap();
    payload["mcp"]["warden.registry"] = json!({"status": "blocked", "refused": "blocked in acme"});
    refused.payload = Some(payload.to_string());
    refused.outcome = Some("deny".into());
    let mut purged = record(
        &recorded,
        1,
        "bot-a",
        "acme/platform",
        "gh__read_file",
        false,
    );
    purged.payload = None;
    let mut garbled = record(
        &recorded,
        2,
        "bot-a",
        "acme/platform",
        "gh__read_file",
        false,
    );
    garbled.payload = Some("{\"request\": 42}".into());
    let r = replay(&candidate, &[&refused, &purged, &garbled]);
    assert_eq!((r.recorded, r.replayed, r.changed), (3, 0, 0));
    assert_eq!(r.not_replayed.registry_refused.count, 1);
    assert_eq!(
        r.not_replayed.registry_refused.examples,
        [refused.id.clone()]
    );
    assert_eq!(r.not_replayed.request_missing.count, 2);
    assert_eq!(
        r.not_replayed.request_missing.examples,
        [purged.id.clone(), garbled.id.clone()]
    );
}

#[test]
fn redacted_values_are_replayed_as_recorded_and_flagged() {
    // A policy reading an argument that was redacted sees its keyed hash in the replay.
    let recorded = engine(&[("acme", RECORDED)]);
    let candidate = engine_with(
        &[(
            "acme",
            r#"@id("tools")
permit (principal is Agent, action == Action::"call_tool", resource is Tool)
when { context.args has path && context.args.path == "README.md" };"#,
        )],
        Some("type Args = { path?: String };"),
    );
    let mut e = record(
        &recorded,
        0,
        "bot-a",
        "acme/platform",
        "gh__read_file",
        false,
    );
    let mut payload: Value = serde_json::from_str(e.payload.as_deref().unwrap()).unwrap();
    payload["request"]["context"]["args"]["path"] = json!("hmac-sha256:0123abcd");
    e.payload = Some(payload.to_string());
    let r = replay(&candidate, &[&e]);
    assert_eq!(r.changed, 1);
    assert_eq!(r.directions[0].from, Outcome::Allow);
    assert_eq!(r.directions[0].to, Outcome::Deny);
    assert_eq!(r.changed_with_redacted_values.count, 1);
    assert_eq!(r.changed_with_redacted_values.examples, vec![e.id.clone()]);
}

#[test]
fn a_candidate_that_fails_to_evaluate_is_reported() {
    let recorded = engine(&[("acme", RECORDED)]);
    // Valid, but overflows at evaluation: the replay denies, as the server would.
    let candidate = engine(&[(
        "acme",
        r#"@id("tools")
permit (principal is Agent, action == Action::"call_tool", resource is Tool)
when { context.time.unix * 100000000000 > 0 };"#,
    )]);
    let e = record(
        &recorded,
        0,
        "bot-a",
        "acme/platform",
        "gh__read_file",
        false,
    );
    let r = replay(&candidate, &[&e]);
    assert_eq!(r.candidate_errors.count, 1);
    assert_eq!(r.candidate_errors.examples, vec![e.id.clone()]);
    assert_eq!(r.changed, 1, "an evaluation error denies");
    assert_eq!(r.by_policy[0].policy, "tools");
    assert_eq!(
        r.by_policy[0].determines_now, 1,
        "the failing policy is named"
    );
}

#[test]
fn policy_refs_name_the_recorded_policies() {
    // Guard for the header layout the replay reads its "before" policies from.
    let r = PolicyRef {
        id: "x".into(),
        namespace: "acme".into(),
        origin: "acme/p.cedar".into(),
        line: 1,
        reason: None,
    };
    let v = serde_json::to_value(DecisionSummary {
        outcome: Outcome::Allow,
        policies: vec![r],
        obligations: vec![],
        warnings: vec![],
        errors: vec![],
    })
    .unwrap();
    assert_eq!(v["policies"][0]["id"], "x");
}

/// Policies that read the time, the arguments and the session's facts.
const CONTEXT_CANDIDATE: &str = r#"
@id("tools")
permit (principal is Agent, action == Action::"call_tool", resource is Tool);

@id("night")
@effect("ask")
permit (principal, action == Action::"call_tool", resource is Tool)
when { context.time.hour < 7 };

@id("prod")
forbid (principal, action == Action::"call_tool", resource is Tool)
when { context.args has environment && context.args.environment == "production" };

@id("busy")
forbid (principal, action == Action::"call_tool", resource is Tool)
when { context has session && context.session.calls > 3 };
"#;

const ARGS_SCHEMA: &str = "type Args = { environment?: String, path?: String };";

/// Requests that differ in what the candidate reads (hour, environment, call count, with and
/// without a session) and in what it does not (minutes, paths): the memo answers the
/// repeats, and every answer is the one a full decision gives.
#[test]
fn deciding_each_distinct_request_once_changes_nothing() {
    let recorded = engine(&[("acme", RECORDED)]);
    let candidate = engine_with(&[("acme", CONTEXT_CANDIDATE)], Some(ARGS_SCHEMA));
    let mut events = Vec::new();
    for seq in 0..240u64 {
        let mut req = call_tool(
            "acme/platform",
            ["gh__read_file", "sh__run_shell"][seq as usize % 2],
        );
        req.time += chrono::Duration::minutes(seq as i64 * 17);
        let args = match seq % 4 {
            0 => json!({"environment": "production", "path": format!("f{seq}")}),
            1 => json!({"environment": "staging", "path": format!("f{seq}")}),
            2 => json!({"path": format!("f{seq}")}),
            _ => json!({"environment": null}),
        };
        req.context = json!({"args": args}).as_object().unwrap().clone();
        if seq % 5 == 0 {
            req.session = None;
        }
        let d = recorded.decide(&req);
        let mut request = json!({
            "principal": req.principal,
            "on_behalf_of": req.on_behalf_of,
            "session": req.session,
            "action": req.action,
            "resource": req.resource,
            "context": req.context,
            "time": req.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        });
        request["facts"] = json!({"calls": seq % 6, "tools_called": [format!("t{seq}")]});
        let mut e = AuditEvent::new(
            "acme",
            "acme/platform",
            "mcp.tool.call.decided",
            "warden.api",
            Actor::default(),
            json!({"request": request}),
        );
        e.header.decision = Some(DecisionSummary {
            outcome: d.outcome,
            policies: d.reasons.clone(),
            obligations: vec![],
            warnings: vec![],
            errors: d.errors.clone(),
        });
        events.push(Stored {
            id: e.header.id.to_string(),
            time_us: 1_000_000 + seq as i64,
            seq,
            namespace: "acme/platform".into(),
            outcome: Some(d.outcome.as_str().into()),
            header: serde_json::to_string(&e.header).unwrap(),
            payload: Some(serde_json::to_string(&e.payload).unwrap()),
        });
    }
    let refs: Vec<&Stored> = events.iter().collect();
    let (full, memoized, hits) = replay_both(&candidate, &refs);
    assert_eq!(
        serde_json::to_value(&full).unwrap(),
        serde_json::to_value(&memoized).unwrap()
    );
    // Every policy's reason for a change is there to be compared.
    assert!(full.changed > 50, "{} changed", full.changed);
    for id in ["night", "prod", "busy"] {
        assert!(
            full.by_policy.iter().any(|p| p.policy.ends_with(id)),
            "{id} changed nothing"
        );
    }
    // 2 tools x 24 hours x 4 argument shapes x (6 counts or no session): repeats exist.
    assert!(hits > 0 && hits < 240, "{hits} memo hits");
}
