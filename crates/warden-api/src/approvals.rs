//! Approval requests: where a held agent action waits for a person.
//!
//! The [`ApprovalDesk`] is the one place the server opens, answers, expires and uses up
//! approvals, each step recorded in the audit trail. The gateway holds a tool call with
//! [`ApprovalDesk::open`] and [`ApprovalDesk::wait`]s; a person answers over the API (or the
//! CLI, which writes the store directly); the retried call proceeds once through
//! [`ApprovalDesk::consume`].
//!
//! **Ordering, and why.** An answer is a grant to act, so it must never be in force
//! unrecorded. Every channel answers through [`answer_recorded`]: check that the approval can
//! still be answered, record the event (durable before anything else happens), then apply the
//! answer with the store's conditional update. If the event cannot be recorded, nothing is
//! applied and the person is told (fail closed). The other order — apply, then record — would
//! leave a grant that a waiting gateway could act on, or a crash could keep, without its
//! record. The price of this order is a race that can only over-record: when two people answer
//! the same approval in the same instant from different processes, both answers are in the
//! trail and the store applies the first; the approval's `resolved_by` names the one that
//! counts, and the other person gets 409. Answers through one server are serialised, so it
//! cannot happen between two API callers.
//!
//! Expiry follows the same order (record, then write down). Using a grant is the other way
//! round: the grant is taken first (atomically, so it serves one action), then recorded; if
//! recording fails the caller gets the error and must not act — the grant is spent and the
//! agent has to ask again, which is the safe side.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::Notify;
use uuid::Uuid;
use warden_core::{
    Actor, Approval, ApprovalAnswer, ApprovalChannel, ApprovalStatus, AuditEvent, EntityRef, Error,
    NewApproval, ResourceRef, TenantId, catalog,
};
use warden_store::pipeline::AuditPipeline;
use warden_store::{AnswerError, Store};

/// How often a waiter re-reads the store, to notice answers written by another process (the
/// CLI, another node). Answers through this process wake waiters at once.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Who answered: `token:<id>` for the API.
pub fn api_answerer(token_id: &str) -> String {
    format!("token:{token_id}")
}

/// Who answered: `cli:<name>` for the CLI.
pub fn cli_answerer(name: &str) -> String {
    format!("cli:{name}")
}

/// The approval as a reader should see it at `now`: a pending approval past its expiry is
/// shown as expired, whether or not that has been written down.
pub fn as_of(mut approval: Approval, now: DateTime<Utc>) -> Approval {
    approval.status = approval.status_at(now);
    approval
}

/// The `source` of an event written through a channel.
fn source_of(via: ApprovalChannel) -> &'static str {
    match via {
        ApprovalChannel::Api => "warden.api",
        ApprovalChannel::Cli => "warden.cli",
        ApprovalChannel::Elicitation => "warden.gateway",
    }
}

/// The agent session whose action is held.
fn session_actor(a: &Approval) -> Actor {
    Actor {
        principal: a.agent.as_ref().map(|agent| EntityRef::new("Agent", agent)),
        agent: a.agent.clone(),
        on_behalf_of: a.on_behalf_of.clone(),
        session: Some(a.session.clone()),
        token_id: None,
        role: None,
    }
}

/// The person behind an answer, when only the answer itself is known.
fn answer_actor(answer: &ApprovalAnswer) -> Actor {
    match answer.via {
        ApprovalChannel::Api => Actor {
            token_id: Some(
                answer
                    .by
                    .strip_prefix("token:")
                    .unwrap_or(&answer.by)
                    .to_owned(),
            ),
            ..Default::default()
        },
        ApprovalChannel::Cli => Actor {
            role: Some("cli".into()),
            on_behalf_of: Some(
                answer
                    .by
                    .strip_prefix("cli:")
                    .unwrap_or(&answer.by)
                    .to_owned(),
            ),
            ..Default::default()
        },
        ApprovalChannel::Elicitation => Actor {
            principal: Some(EntityRef::new("User", &answer.by)),
            on_behalf_of: Some(answer.by.clone()),
            ..Default::default()
        },
    }
}

/// What every approval event says about the held action.
fn summary(a: &Approval) -> Value {
    json!({
        "id": a.id,
        "session": a.session,
        "agent": a.agent,
        "on_behalf_of": a.on_behalf_of,
        "action": a.action,
        "resource_type": a.resource_type,
        "resource_id": a.resource_id,
        "args_sha256": a.args_sha256,
        "policies": a.policies,
        "reason": a.reason,
        "decision_event": a.decision_event,
        "requested_at": a.requested_at,
        "expires_at": a.expires_at,
    })
}

/// An approval event: filed under the held action's namespace, about the `Approval` resource
/// (so `resource_id=<approval id>` finds one approval's whole history).
pub fn approval_event(
    event_type: &str,
    approval: &Approval,
    actor: Actor,
    source: &str,
    payload: Value,
) -> AuditEvent {
    let mut e = AuditEvent::new(
        &approval.tenant,
        &approval.namespace,
        event_type,
        source,
        actor,
        payload,
    );
    e.header.action = Some(
        match event_type {
            catalog::APPROVAL_REQUESTED => "request",
            catalog::APPROVAL_GRANTED => "grant",
            catalog::APPROVAL_DENIED => "deny",
            catalog::APPROVAL_EXPIRED => "expire",
            _ => "consume",
        }
        .into(),
    );
    e.header.resource = Some(ResourceRef {
        resource_type: "Approval".into(),
        id: approval.id.to_string(),
    });
    e
}

/// Answers an approval: check, record, apply (see the module documentation for why in this
/// order). `record` makes the event durable — the server's audit pipeline, or a direct append
/// for the CLI. Errors: `NotFound`; `Conflict` when it was already answered or has expired;
/// whatever `record` or the store return.
pub async fn answer_recorded<F, Fut>(
    store: &dyn Store,
    tenant: &TenantId,
    id: Uuid,
    answer: &ApprovalAnswer,
    actor: Actor,
    record: F,
) -> Result<Approval, Error>
where
    F: FnOnce(AuditEvent) -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    // One `now` for the check and the update: the expiry cannot slip between them.
    let now = Utc::now();
    let current = store
        .get_approval(tenant, id)
        .await?
        .ok_or_else(|| Error::not_found(format!("approval {id} not found")))?;
    match current.status_at(now) {
        ApprovalStatus::Pending => {}
        ApprovalStatus::Expired => return Err(AnswerError::Expired.into()),
        answered => return Err(AnswerError::AlreadyAnswered(answered).into()),
    }
    let event_type = if answer.approve {
        catalog::APPROVAL_GRANTED
    } else {
        catalog::APPROVAL_DENIED
    };
    let payload = json!({
        "approval": summary(&current),
        "answer": {
            "approve": answer.approve,
            "by": answer.by,
            "via": answer.via,
            "comment": answer.comment,
        },
    });
    record(approval_event(
        event_type,
        &current,
        actor,
        source_of(answer.via),
        payload,
    ))
    .await?;
    store
        .answer_approval(tenant, id, answer, now)
        .await
        .map_err(|e| {
            if !matches!(e, AnswerError::Store(_)) {
                tracing::warn!(approval = %id, by = %answer.by, reason = %e,
                    "an answer was recorded but another answer came first; the first one counts");
            }
            match e {
                AnswerError::NotFound => Error::not_found(format!("approval {id} not found")),
                e => e.into(),
            }
        })
}

/// The server's approvals: opened by the gateway, answered by people, used once.
pub struct ApprovalDesk {
    store: Arc<dyn Store>,
    pipeline: Arc<AuditPipeline>,
    /// One wake-up per approval somebody is waiting for.
    waiters: Mutex<HashMap<Uuid, Arc<Notify>>>,
    /// Answers and expiries through this process, one at a time (see the module docs).
    changing: tokio::sync::Mutex<()>,
}

impl ApprovalDesk {
    pub fn new(store: Arc<dyn Store>, pipeline: Arc<AuditPipeline>) -> ApprovalDesk {
        ApprovalDesk {
            store,
            pipeline,
            waiters: Mutex::new(HashMap::new()),
            changing: tokio::sync::Mutex::new(()),
        }
    }

    async fn record(&self, event: AuditEvent) -> Result<(), Error> {
        self.pipeline.record(event).await.map(|_| ())
    }

    /// Opens a pending approval and records `approval.requested`. If the event cannot be
    /// recorded the approval is closed (denied by `warden`) before the error is returned, so
    /// a request nobody knows about can never be granted.
    pub async fn open(&self, request: NewApproval) -> Result<Approval, Error> {
        let approval = self.store.create_approval(&request).await?;
        let mut payload = json!({ "approval": summary(&approval) });
        payload["approval"]["arguments"] = approval.arguments.clone();
        let event = approval_event(
            catalog::APPROVAL_REQUESTED,
            &approval,
            session_actor(&approval),
            "warden.gateway",
            payload,
        );
        if let Err(e) = self.record(event).await {
            let tenant = TenantId::parse(&approval.tenant)?;
            let close = ApprovalAnswer {
                approve: false,
                by: "warden".into(),
                via: ApprovalChannel::Api,
                comment: Some("the audit trail could not record the request".into()),
            };
            if let Err(close_err) = self
                .store
                .answer_approval(&tenant, approval.id, &close, Utc::now())
                .await
            {
                tracing::error!(approval = %approval.id, error = %close_err,
                    "an unrecorded approval request could not be closed");
            }
            return Err(e);
        }
        Ok(approval)
    }

    /// Uses up the grant for exactly this action, if there is one, and records
    /// `approval.consumed`. On `Err` the action must not run (the grant may be spent).
    pub async fn consume(
        &self,
        tenant: &TenantId,
        session: &str,
        resource_id: &str,
        args_sha256: &str,
    ) -> Result<Option<Approval>, Error> {
        let Some(used) = self
            .store
            .consume_approval(tenant, session, resource_id, args_sha256, Utc::now())
            .await?
        else {
            return Ok(None);
        };
        let mut payload = json!({ "approval": summary(&used) });
        payload["approval"]["granted_by"] = json!(used.resolved_by);
        payload["approval"]["granted_via"] = json!(used.resolved_via);
        payload["approval"]["granted_at"] = json!(used.resolved_at);
        self.record(approval_event(
            catalog::APPROVAL_CONSUMED,
            &used,
            session_actor(&used),
            "warden.gateway",
            payload,
        ))
        .await?;
        Ok(Some(used))
    }

    /// Returns the approval as soon as it is answered — at once when answered through this
    /// process, within [`POLL_INTERVAL`] when answered by another — or once it is past its
    /// expiry (its `status_at` is then `Expired`; [`expire`](Self::expire) writes that down),
    /// or, at `deadline`, as it then is (still pending). `NotFound` for an unknown id.
    pub async fn wait(
        &self,
        tenant: &TenantId,
        id: Uuid,
        deadline: Instant,
    ) -> Result<Approval, Error> {
        let waiter = self.waiter(id);
        loop {
            // Listen before reading, so an answer between the read and the sleep still wakes.
            let woken = waiter.notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let approval = self
                .store
                .get_approval(tenant, id)
                .await?
                .ok_or_else(|| Error::not_found(format!("approval {id} not found")))?;
            let now = Utc::now();
            let instant = Instant::now();
            if approval.status_at(now) != ApprovalStatus::Pending || instant >= deadline {
                return Ok(approval);
            }
            let to_expiry = (approval.expires_at - now).to_std().unwrap_or_default();
            let next = deadline
                .min(instant + POLL_INTERVAL)
                .min(instant + to_expiry);
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep_until(next.into()) => {}
            }
        }
    }

    /// Answers an approval and wakes whoever waits for it. The answer's `by` and `via` name
    /// the person in the audit event (`approval.granted` / `approval.denied`).
    pub async fn answer(
        &self,
        tenant: &TenantId,
        id: Uuid,
        answer: ApprovalAnswer,
    ) -> Result<Approval, Error> {
        let actor = answer_actor(&answer);
        self.answer_as(tenant, id, answer, actor).await
    }

    /// As [`answer`](Self::answer), with the actor of the request that answered.
    pub(crate) async fn answer_as(
        &self,
        tenant: &TenantId,
        id: Uuid,
        answer: ApprovalAnswer,
        actor: Actor,
    ) -> Result<Approval, Error> {
        let answered = {
            let _one_at_a_time = self.changing.lock().await;
            answer_recorded(self.store.as_ref(), tenant, id, &answer, actor, |e| {
                self.record(e)
            })
            .await?
        };
        self.wake(id);
        Ok(answered)
    }

    /// Writes down that a pending approval passed its expiry, recording `approval.expired`
    /// first. `None` when there is nothing to write down (unknown, answered, not yet due, or
    /// already expired).
    pub async fn expire(&self, tenant: &TenantId, id: Uuid) -> Result<Option<Approval>, Error> {
        let expired = {
            let _one_at_a_time = self.changing.lock().await;
            let now = Utc::now();
            let Some(current) = self.store.get_approval(tenant, id).await? else {
                return Ok(None);
            };
            if current.status != ApprovalStatus::Pending
                || current.status_at(now) != ApprovalStatus::Expired
            {
                return Ok(None);
            }
            let actor = Actor {
                role: Some("system".into()),
                ..Default::default()
            };
            self.record(approval_event(
                catalog::APPROVAL_EXPIRED,
                &current,
                actor,
                "warden.gateway",
                json!({ "approval": summary(&current) }),
            ))
            .await?;
            self.store.expire_approval(tenant, id, now).await?
        };
        self.wake(id);
        Ok(expired)
    }

    fn waiter(&self, id: Uuid) -> Waiter<'_> {
        let notify = self
            .waiters
            .lock()
            .expect("waiters lock")
            .entry(id)
            .or_default()
            .clone();
        Waiter {
            desk: self,
            id,
            notify,
        }
    }

    fn wake(&self, id: Uuid) {
        if let Some(n) = self.waiters.lock().expect("waiters lock").get(&id) {
            n.notify_waiters();
        }
    }
}

/// A registered waiter; the last one to leave removes the approval's entry.
struct Waiter<'a> {
    desk: &'a ApprovalDesk,
    id: Uuid,
    notify: Arc<Notify>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut map = self.desk.waiters.lock().expect("waiters lock");
        // The map's reference and ours: nobody else waits.
        if Arc::strong_count(&self.notify) == 2 {
            map.remove(&self.id);
        }
    }
}
