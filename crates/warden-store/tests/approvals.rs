//! Approval requests in the store, on SQLite and PostgreSQL (the same tests on each): one
//! action, one grant, used once; answers that race, expire or cross tenants are refused.

#[macro_use]
mod common;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use common::{Backend, TestDb};
use serde_json::json;
use uuid::Uuid;
use warden_core::{
    ApprovalAnswer, ApprovalChannel, ApprovalStatus, NamespacePath, NewApproval, TenantId,
};
use warden_store::{AnswerError, ApprovalFilter, Store};

async fn store(b: Backend) -> (TestDb, Arc<dyn Store>) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    for t in ["acme", "globex"] {
        store.ensure_tenant(&tenant(t)).await.unwrap();
    }
    (db, store)
}

fn tenant(t: &str) -> TenantId {
    TenantId::parse(t).unwrap()
}

fn request(tenant: &str, namespace: &str, args: &str, expires_at: DateTime<Utc>) -> NewApproval {
    NewApproval {
        tenant: tenant.into(),
        namespace: namespace.into(),
        session: "tok_session1".into(),
        agent: Some("claude-code".into()),
        on_behalf_of: Some("alice".into()),
        action: "call_tool".into(),
        resource_type: "Tool".into(),
        resource_id: "deploy__trigger_deploy".into(),
        args_sha256: args.into(),
        arguments: json!({"environment": "production", "token": "hmac-sha256:ab"}),
        policies: vec!["ask-production-deploys".into()],
        reason: Some("production deploys need a person".into()),
        decision_event: Some(Uuid::now_v7()),
        expires_at,
    }
}

fn soon() -> DateTime<Utc> {
    Utc::now() + Duration::minutes(10)
}

fn answer(approve: bool) -> ApprovalAnswer {
    ApprovalAnswer {
        approve,
        by: "token:tok_approver".into(),
        via: ApprovalChannel::Api,
        comment: Some("looks right".into()),
    }
}

async fn a_request_is_stored_pending_and_read_back_as_written(b: Backend) {
    let (_db, s) = store(b).await;
    let new = request("acme", "acme/platform/api", "a1", soon());
    let a = s.create_approval(&new).await.unwrap();
    assert_eq!(a.id.get_version_num(), 7, "UUIDv7 ids");
    assert_eq!(a.status, ApprovalStatus::Pending);
    assert!(a.resolved_by.is_none() && a.resolved_at.is_none() && a.comment.is_none());
    assert_eq!(
        (&a.namespace, &a.arguments, &a.policies),
        (&new.namespace, &new.arguments, &new.policies)
    );
    let read = s
        .get_approval(&tenant("acme"), a.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, a, "what create returns is what a read gives");

    assert!(
        s.create_approval(&request("acme", "globex/app", "a1", soon()))
            .await
            .is_err(),
        "a namespace of another tenant is refused"
    );
}

async fn answers_apply_once_and_say_why_they_were_refused(b: Backend) {
    let (_db, s) = store(b).await;
    let acme = tenant("acme");
    let now = Utc::now();
    let a = s
        .create_approval(&request("acme", "acme/x", "a1", soon()))
        .await
        .unwrap();
    let granted = s
        .answer_approval(&acme, a.id, &answer(true), now)
        .await
        .unwrap();
    assert_eq!(granted.status, ApprovalStatus::Approved);
    assert_eq!(granted.resolved_by.as_deref(), Some("token:tok_approver"));
    assert_eq!(granted.resolved_via, Some(ApprovalChannel::Api));
    assert_eq!(granted.comment.as_deref(), Some("looks right"));
    assert!(granted.resolved_at.is_some());

    // A second answer, either way, is refused and changes nothing.
    for approve in [true, false] {
        match s.answer_approval(&acme, a.id, &answer(approve), now).await {
            Err(AnswerError::AlreadyAnswered(ApprovalStatus::Approved)) => {}
            other => panic!("second answer: {other:?}"),
        }
    }
    assert_eq!(s.get_approval(&acme, a.id).await.unwrap().unwrap(), granted);

    let d = s
        .create_approval(&request("acme", "acme/x", "a2", soon()))
        .await
        .unwrap();
    let denied = s
        .answer_approval(&acme, d.id, &answer(false), now)
        .await
        .unwrap();
    assert_eq!(denied.status, ApprovalStatus::Denied);
    assert!(matches!(
        s.answer_approval(&acme, d.id, &answer(true), now).await,
        Err(AnswerError::AlreadyAnswered(ApprovalStatus::Denied))
    ));

    // Past its expiry nobody can answer it, whether or not the expiry was written down.
    let late = s
        .create_approval(&request("acme", "acme/x", "a3", now - Duration::seconds(1)))
        .await
        .unwrap();
    assert!(matches!(
        s.answer_approval(&acme, late.id, &answer(true), now).await,
        Err(AnswerError::Expired)
    ));
    s.expire_approval(&acme, late.id, now)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        s.answer_approval(&acme, late.id, &answer(true), now).await,
        Err(AnswerError::Expired)
    ));

    assert!(matches!(
        s.answer_approval(&acme, Uuid::now_v7(), &answer(true), now)
            .await,
        Err(AnswerError::NotFound)
    ));
    // The messages a person sees.
    let e: warden_core::Error = AnswerError::AlreadyAnswered(ApprovalStatus::Consumed).into();
    assert!(
        matches!(e, warden_core::Error::Conflict(m) if m.contains("already answered and is now consumed"))
    );
    let e: warden_core::Error = AnswerError::Expired.into();
    assert!(matches!(e, warden_core::Error::Conflict(m) if m.contains("expired")));
}

async fn two_answers_racing_exactly_one_wins(b: Backend) {
    let (_db, s) = store(b).await;
    let acme = tenant("acme");
    for _ in 0..5 {
        let a = s
            .create_approval(&request("acme", "acme/x", "race", soon()))
            .await
            .unwrap();
        let answers = (0..8).map(|i| {
            let (s, acme) = (s.clone(), acme.clone());
            tokio::spawn(async move {
                s.answer_approval(&acme, a.id, &answer(i % 2 == 0), Utc::now())
                    .await
            })
        });
        let results = futures::future::join_all(answers).await;
        let won: Vec<_> = results
            .into_iter()
            .map(|r| r.unwrap())
            .filter_map(|r| match r {
                Ok(a) => Some(a),
                Err(AnswerError::AlreadyAnswered(_)) => None,
                Err(e) => panic!("unexpected: {e:?}"),
            })
            .collect();
        assert_eq!(won.len(), 1, "exactly one answer applies");
        let stored = s.get_approval(&acme, a.id).await.unwrap().unwrap();
        assert_eq!(stored.status, won[0].status);
    }
}

async fn a_grant_serves_exactly_its_own_action_once(b: Backend) {
    let (_db, s) = store(b).await;
    let acme = tenant("acme");
    let now = Utc::now();
    let a = s
        .create_approval(&request("acme", "acme/x", "args-1", soon()))
        .await
        .unwrap();
    let consume = |session: &'static str, tool: &'static str, args: &'static str| {
        let (s, acme) = (s.clone(), acme.clone());
        async move {
            s.consume_approval(&acme, session, tool, args, now)
                .await
                .unwrap()
        }
    };
    let tool = "deploy__trigger_deploy";
    assert!(
        consume("tok_session1", tool, "args-1").await.is_none(),
        "pending is not granted"
    );
    s.answer_approval(&acme, a.id, &answer(true), now)
        .await
        .unwrap();
    assert!(
        consume("tok_session1", tool, "args-2").await.is_none(),
        "other arguments"
    );
    assert!(
        consume("tok_session2", tool, "args-1").await.is_none(),
        "another session"
    );
    assert!(
        consume("tok_session1", "deploy__rollback", "args-1")
            .await
            .is_none(),
        "another tool"
    );
    assert!(
        s.consume_approval(&tenant("globex"), "tok_session1", tool, "args-1", now)
            .await
            .unwrap()
            .is_none(),
        "another tenant"
    );
    assert!(
        s.consume_approval(&acme, "tok_session1", tool, "args-1", a.expires_at)
            .await
            .unwrap()
            .is_none(),
        "after expiry"
    );
    let used = consume("tok_session1", tool, "args-1").await.unwrap();
    assert_eq!((used.id, used.status), (a.id, ApprovalStatus::Consumed));
    assert_eq!(
        used.resolved_by,
        Some("token:tok_approver".into()),
        "who granted stays"
    );
    assert!(
        consume("tok_session1", tool, "args-1").await.is_none(),
        "second use"
    );
    assert!(matches!(
        s.answer_approval(&acme, a.id, &answer(true), now).await,
        Err(AnswerError::AlreadyAnswered(ApprovalStatus::Consumed))
    ));

    // Denied and expired grants are never used.
    let d = s
        .create_approval(&request("acme", "acme/x", "args-d", soon()))
        .await
        .unwrap();
    s.answer_approval(&acme, d.id, &answer(false), now)
        .await
        .unwrap();
    assert!(consume("tok_session1", tool, "args-d").await.is_none());
    let short = s
        .create_approval(&request(
            "acme",
            "acme/x",
            "args-e",
            now + Duration::seconds(2),
        ))
        .await
        .unwrap();
    s.answer_approval(&acme, short.id, &answer(true), now)
        .await
        .unwrap();
    assert!(
        s.consume_approval(
            &acme,
            "tok_session1",
            tool,
            "args-e",
            now + Duration::seconds(3)
        )
        .await
        .unwrap()
        .is_none(),
        "a grant past the approval's expiry is not used"
    );
}

async fn concurrent_consumers_take_a_grant_once(b: Backend) {
    let (_db, s) = store(b).await;
    let acme = tenant("acme");
    let a = s
        .create_approval(&request("acme", "acme/x", "once", soon()))
        .await
        .unwrap();
    s.answer_approval(&acme, a.id, &answer(true), Utc::now())
        .await
        .unwrap();
    let tries = (0..8).map(|_| {
        let (s, acme) = (s.clone(), acme.clone());
        tokio::spawn(async move {
            s.consume_approval(
                &acme,
                "tok_session1",
                "deploy__trigger_deploy",
                "once",
                Utc::now(),
            )
            .await
            .unwrap()
        })
    });
    let used = futures::future::join_all(tries)
        .await
        .into_iter()
        .filter(|r| r.as_ref().unwrap().is_some())
        .count();
    assert_eq!(used, 1);
}

async fn expiry_is_written_down_only_for_pending_requests_past_due(b: Backend) {
    let (_db, s) = store(b).await;
    let acme = tenant("acme");
    let now = Utc::now();
    let a = s
        .create_approval(&request("acme", "acme/x", "e1", now + Duration::seconds(5)))
        .await
        .unwrap();
    assert!(
        s.expire_approval(&acme, a.id, now).await.unwrap().is_none(),
        "not yet due"
    );
    assert!(
        s.expire_approval(&tenant("globex"), a.id, now + Duration::seconds(6))
            .await
            .unwrap()
            .is_none(),
        "another tenant"
    );
    let e = s
        .expire_approval(&acme, a.id, now + Duration::seconds(6))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.status, ApprovalStatus::Expired);
    assert!(e.resolved_by.is_none(), "nobody answered it");
    assert!(
        s.expire_approval(&acme, a.id, now + Duration::seconds(7))
            .await
            .unwrap()
            .is_none(),
        "already written down"
    );
    let g = s
        .create_approval(&request("acme", "acme/x", "e2", now + Duration::seconds(5)))
        .await
        .unwrap();
    s.answer_approval(&acme, g.id, &answer(true), now)
        .await
        .unwrap();
    assert!(
        s.expire_approval(&acme, g.id, now + Duration::seconds(6))
            .await
            .unwrap()
            .is_none(),
        "an answered request does not expire"
    );
    assert!(
        s.expire_approval(&acme, Uuid::now_v7(), now)
            .await
            .unwrap()
            .is_none()
    );
}

async fn listing_filters_by_status_as_of_now_and_namespace_and_pages_newest_first(b: Backend) {
    let (_db, s) = store(b).await;
    let acme = tenant("acme");
    let now = Utc::now();
    let mut ids = Vec::new();
    for (i, ns) in ["acme/a", "acme/a/b", "acme/ab", "acme/c"]
        .iter()
        .enumerate()
    {
        let a = s
            .create_approval(&request("acme", ns, &format!("l{i}"), soon()))
            .await
            .unwrap();
        ids.push(a.id);
    }
    let overdue = s
        .create_approval(&request(
            "acme",
            "acme/a",
            "late",
            now - Duration::seconds(1),
        ))
        .await
        .unwrap();
    s.answer_approval(&acme, ids[3], &answer(false), now)
        .await
        .unwrap();
    s.create_approval(&request("globex", "globex/a", "g", soon()))
        .await
        .unwrap();

    let list = |f: ApprovalFilter| {
        let (s, acme) = (s.clone(), acme.clone());
        async move {
            s.list_approvals(&acme, &f)
                .await
                .unwrap()
                .into_iter()
                .map(|a| a.id)
                .collect::<Vec<_>>()
        }
    };
    let all = list(ApprovalFilter::all(now, 100)).await;
    assert_eq!(
        all,
        [overdue.id, ids[3], ids[2], ids[1], ids[0]],
        "newest first, one tenant"
    );

    let with_status = |st| ApprovalFilter {
        status: Some(st),
        ..ApprovalFilter::all(now, 100)
    };
    assert_eq!(
        list(with_status(ApprovalStatus::Pending)).await,
        [ids[2], ids[1], ids[0]],
        "a pending request past its expiry is not pending"
    );
    assert_eq!(
        list(with_status(ApprovalStatus::Expired)).await,
        [overdue.id],
        "it is expired, though nobody wrote that down"
    );
    assert_eq!(list(with_status(ApprovalStatus::Denied)).await, [ids[3]]);
    assert!(list(with_status(ApprovalStatus::Approved)).await.is_empty());
    // Once written down it is still listed as expired.
    s.expire_approval(&acme, overdue.id, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        list(with_status(ApprovalStatus::Expired)).await,
        [overdue.id]
    );

    let under = |ns: &str| ApprovalFilter {
        namespace: Some(NamespacePath::parse(ns).unwrap()),
        ..ApprovalFilter::all(now, 100)
    };
    assert_eq!(
        list(under("acme/a")).await,
        [overdue.id, ids[1], ids[0]],
        "the subtree, not a name prefix (acme/ab is outside acme/a)"
    );
    assert!(list(under("globex")).await.is_empty());

    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = list(ApprovalFilter {
            before,
            ..ApprovalFilter::all(now, 2)
        })
        .await;
        if page.is_empty() {
            break;
        }
        before = page.last().copied();
        pages.extend(page);
    }
    assert_eq!(pages, all, "keyset pages cover everything once");
}

async fn another_tenants_approval_does_not_exist(b: Backend) {
    let (_db, s) = store(b).await;
    let a = s
        .create_approval(&request("acme", "acme/x", "t1", soon()))
        .await
        .unwrap();
    let globex = tenant("globex");
    assert!(s.get_approval(&globex, a.id).await.unwrap().is_none());
    assert!(matches!(
        s.answer_approval(&globex, a.id, &answer(true), Utc::now())
            .await,
        Err(AnswerError::NotFound)
    ));
    assert!(
        s.list_approvals(&globex, &ApprovalFilter::all(Utc::now(), 100))
            .await
            .unwrap()
            .is_empty()
    );
    let still = s
        .get_approval(&tenant("acme"), a.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(still.status, ApprovalStatus::Pending, "untouched");
}

async fn approvals_survive_reopening_the_database(b: Backend) {
    let db = TestDb::new(b).await;
    let id = {
        let s = db.open().await;
        s.ensure_tenant(&tenant("acme")).await.unwrap();
        let a = s
            .create_approval(&request("acme", "acme/x", "p", soon()))
            .await
            .unwrap();
        s.answer_approval(&tenant("acme"), a.id, &answer(true), Utc::now())
            .await
            .unwrap();
        a.id
    };
    // A second handle, as the CLI has next to a running server.
    let s = db.open().await;
    let a = s.get_approval(&tenant("acme"), id).await.unwrap().unwrap();
    assert_eq!(a.status, ApprovalStatus::Approved);
}

on_both_backends!(
    a_request_is_stored_pending_and_read_back_as_written,
    answers_apply_once_and_say_why_they_were_refused,
    two_answers_racing_exactly_one_wins,
    a_grant_serves_exactly_its_own_action_once,
    concurrent_consumers_take_a_grant_once,
    expiry_is_written_down_only_for_pending_requests_past_due,
    listing_filters_by_status_as_of_now_and_namespace_and_pages_newest_first,
    another_tenants_approval_does_not_exist,
    approvals_survive_reopening_the_database,
);
