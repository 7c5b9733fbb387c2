//! Changes of a tenant's retention rules and legal holds, one function each, shared by the API
//! (`/api/v1/retention`, `/api/v1/legal-holds`) and the CLI (`warden audit retention`,
//! `warden audit hold`) so that the two cannot disagree: validate, record the audit event,
//! then store. An event that cannot be recorded leaves the change unmade.
//!
//! Who may make a change is the caller's business (token roles in the API, write access to
//! the store for the CLI); these functions only keep every namespace inside `tenant`.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;
use warden_core::retention::{LegalHold, RetentionRule, validate_days};
use warden_core::{Actor, AuditEvent, Error, NamespacePath, Result, TenantId, catalog};
use warden_store::Store;

use crate::routes::retention::HoldView;

/// Longest reason accepted for a hold or its release, in bytes.
pub const MAX_REASON_BYTES: usize = 4096;

/// Who makes a change, as the audit event and the stored row name them.
#[derive(Clone, Debug)]
pub struct Author {
    /// The event's actor.
    pub actor: Actor,
    /// The event's source: `warden.api` or `warden.cli`.
    pub source: &'static str,
    /// Stored with the rule or hold: `token:ID` or `cli:NAME`.
    pub by: String,
}

/// A legal hold to place.
#[derive(Clone, Debug)]
pub struct NewHold {
    /// The subtree to hold; `None`: the whole tenant.
    pub namespace: Option<NamespacePath>,
    /// Hold events at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Hold events before this time.
    pub to: Option<DateTime<Utc>>,
    pub reason: String,
}

pub fn check_reason(reason: &str) -> Result<()> {
    if reason.trim().is_empty() {
        return Err(Error::invalid("reason must not be empty"));
    }
    if reason.len() > MAX_REASON_BYTES {
        return Err(Error::invalid(format!(
            "reason is longer than {MAX_REASON_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Another tenant's namespace is as unknown as one that does not exist.
fn of_tenant(tenant: &TenantId, ns: &NamespacePath) -> Result<()> {
    if ns.tenant() != *tenant {
        return Err(Error::not_found(format!("namespace {ns} not found")));
    }
    Ok(())
}

fn event(
    tenant: &TenantId,
    ns: &NamespacePath,
    event_type: &str,
    action: &str,
    who: &Author,
    payload: serde_json::Value,
) -> AuditEvent {
    let mut e = AuditEvent::new(
        tenant.as_str(),
        ns.as_str(),
        event_type,
        who.source,
        who.actor.clone(),
        payload,
    );
    e.header.action = Some(action.into());
    e
}

/// Sets (or replaces) the rule of `namespace`; returns the rule now in force.
pub async fn set_rule<F, Fut>(
    store: &dyn Store,
    tenant: &TenantId,
    namespace: NamespacePath,
    payload_days: Option<u32>,
    header_days: Option<u32>,
    who: &Author,
    record: F,
) -> Result<RetentionRule>
where
    F: FnOnce(AuditEvent) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    of_tenant(tenant, &namespace)?;
    validate_days(payload_days, header_days)?;
    let rule = RetentionRule {
        tenant: tenant.clone(),
        namespace,
        payload_days,
        header_days,
        updated_by: who.by.clone(),
        updated_at: Utc::now(),
    };
    let before = store
        .retention_rules(tenant)
        .await?
        .into_iter()
        .find(|r| r.namespace == rule.namespace);
    // Recorded before the rule is stored: no rule takes effect unrecorded.
    record(event(
        tenant,
        &rule.namespace,
        catalog::AUDIT_RETENTION_RULE_SET,
        "update",
        who,
        json!({
            "namespace": rule.namespace,
            "before": before.as_ref().map(|b| json!({"payload_days": b.payload_days, "header_days": b.header_days})),
            "after": {"payload_days": rule.payload_days, "header_days": rule.header_days},
        }),
    ))
    .await?;
    store.put_retention_rule(&rule).await?;
    Ok(rule)
}

/// Removes the rule of `namespace`; returns it (`NotFound` when there is none).
pub async fn remove_rule<F, Fut>(
    store: &dyn Store,
    tenant: &TenantId,
    namespace: &NamespacePath,
    who: &Author,
    record: F,
) -> Result<RetentionRule>
where
    F: FnOnce(AuditEvent) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    of_tenant(tenant, namespace)?;
    let Some(existing) = store
        .retention_rules(tenant)
        .await?
        .into_iter()
        .find(|r| r.namespace == *namespace)
    else {
        return Err(Error::not_found(format!(
            "no retention rule for namespace {namespace}"
        )));
    };
    record(event(
        tenant,
        namespace,
        catalog::AUDIT_RETENTION_RULE_DELETED,
        "delete",
        who,
        json!({
            "namespace": namespace,
            "before": {"payload_days": existing.payload_days, "header_days": existing.header_days},
        }),
    ))
    .await?;
    store.delete_retention_rule(tenant, namespace).await?;
    Ok(existing)
}

/// Places a legal hold; returns it with its new id.
pub async fn place_hold<F, Fut>(
    store: &dyn Store,
    tenant: &TenantId,
    new: NewHold,
    who: &Author,
    record: F,
) -> Result<LegalHold>
where
    F: FnOnce(AuditEvent) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    if let Some(ns) = &new.namespace {
        of_tenant(tenant, ns)?;
    }
    if let (Some(from), Some(to)) = (new.from, new.to)
        && from >= to
    {
        return Err(Error::invalid("from must be before to"));
    }
    check_reason(&new.reason)?;
    let hold = LegalHold {
        id: Uuid::now_v7(),
        tenant: tenant.clone(),
        namespace: new.namespace,
        from: new.from,
        to: new.to,
        reason: new.reason,
        created_by: who.by.clone(),
        created_at: Utc::now(),
        released_by: None,
        released_reason: None,
        released_at: None,
    };
    let ns = hold
        .namespace
        .clone()
        .unwrap_or_else(|| tenant.root_namespace());
    record(event(
        tenant,
        &ns,
        catalog::AUDIT_LEGAL_HOLD_PLACED,
        "create",
        who,
        json!({"hold": HoldView::from(&hold)}),
    ))
    .await?;
    store.place_legal_hold(&hold).await?;
    Ok(hold)
}

/// Releases an active hold; returns it released. `NotFound` when the tenant has no such
/// hold, `Conflict` when it was already released.
pub async fn release_hold<F, Fut>(
    store: &dyn Store,
    tenant: &TenantId,
    id: Uuid,
    reason: &str,
    who: &Author,
    record: F,
) -> Result<LegalHold>
where
    F: FnOnce(AuditEvent) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let not_found = || Error::not_found(format!("legal hold {id} not found"));
    check_reason(reason)?;
    let Some(hold) = store
        .legal_holds(tenant)
        .await?
        .into_iter()
        .find(|h| h.id == id)
    else {
        return Err(not_found());
    };
    if !hold.is_active() {
        return Err(Error::Conflict(format!(
            "legal hold {id} was already released"
        )));
    }
    let ns = hold
        .namespace
        .clone()
        .unwrap_or_else(|| tenant.root_namespace());
    // Recorded before the release: until the event is durable the hold stays in force.
    record(event(
        tenant,
        &ns,
        catalog::AUDIT_LEGAL_HOLD_RELEASED,
        "update",
        who,
        json!({"hold": {"id": hold.id}, "reason": reason}),
    ))
    .await?;
    store
        .release_legal_hold(tenant, id, &who.by, reason, Utc::now())
        .await?
        .ok_or_else(not_found)
}
