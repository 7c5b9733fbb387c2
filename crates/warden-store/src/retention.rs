//! Applying retention to a tenant's audit log, the same way on every store.
//!
//! A run reads the tenant's rules and active holds, walks the events old enough for some rule
//! (oldest position first), and sorts each into keep, purge the payload, or delete the row —
//! the most specific rule decides, an active hold covering the event keeps it. It then
//! **first** appends `audit.retention.applied` naming the position ranges it will touch, and
//! only then purges and deletes inside them. A crash between the two leaves a record that
//! permits more than was done, never a deletion without a record; the next run finishes it.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use uuid::Uuid;
use warden_core::retention::{
    BlockedBy, LegalHold, RetentionRecord, RuleSummary, SeqRange, Verdict, is_exempt, push_seq,
    rule_for, verdict,
};
use warden_core::{Actor, AuditEvent, Result, TenantId, catalog};

use crate::{Store, append_one};

/// How many candidate events a run reads per page.
const PAGE: u32 = 5_000;

/// An event old enough that some rule might remove part of it.
#[derive(Clone, Debug)]
pub struct RetentionCandidate {
    pub seq: u64,
    pub namespace: String,
    pub time: DateTime<Utc>,
    pub event_type: String,
    pub payload_present: bool,
}

/// What one run did for one tenant.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct RetentionOutcome {
    pub tenant: String,
    /// Position of the `audit.retention.applied` event; absent when the tenant has no rule.
    pub event_seq: Option<u64>,
    pub payloads_purged: u64,
    pub headers_deleted: u64,
    /// Holds that kept events the rules would have removed, with how many.
    #[schema(value_type = Vec<Object>)]
    pub blocked_by_holds: Vec<BlockedBy>,
}

/// Applies retention to every tenant that has a rule.
pub async fn apply_all(
    store: &dyn Store,
    now: DateTime<Utc>,
    source: &str,
    actor: &Actor,
) -> Result<Vec<RetentionOutcome>> {
    let mut out = Vec::new();
    for tenant in store.retention_tenants().await? {
        out.push(apply_tenant(store, &tenant, now, source, actor).await?);
    }
    // Storage every tenant's retention has emptied goes as a whole. Each tenant's removals
    // are recorded and done by now; a failure here only leaves empty partitions behind for
    // the next run.
    match store.drop_emptied_partitions(now).await {
        Ok(dropped) if !dropped.is_empty() => {
            tracing::info!(?dropped, "retention dropped emptied audit partitions");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot drop emptied audit partitions; the next run tries again")
        }
    }
    Ok(out)
}

/// Applies the tenant's rules as of `now`.
pub async fn apply_tenant(
    store: &dyn Store,
    tenant: &TenantId,
    now: DateTime<Utc>,
    source: &str,
    actor: &Actor,
) -> Result<RetentionOutcome> {
    let rules = store.retention_rules(tenant).await?;
    let mut outcome = RetentionOutcome {
        tenant: tenant.to_string(),
        event_seq: None,
        payloads_purged: 0,
        headers_deleted: 0,
        blocked_by_holds: Vec::new(),
    };
    if rules.is_empty() {
        return Ok(outcome);
    }
    let holds: Vec<LegalHold> = store
        .legal_holds(tenant)
        .await?
        .into_iter()
        .filter(LegalHold::is_active)
        .collect();
    let hold_ids: Vec<Uuid> = holds.iter().map(|h| h.id).collect();
    let mut blocked = vec![0u64; holds.len()];
    let mut purged: Vec<SeqRange> = Vec::new();
    let mut deleted: Vec<SeqRange> = Vec::new();
    let (mut n_purged, mut n_deleted) = (0u64, 0u64);

    // Only events older than the shortest period in any rule can be touched.
    let shortest = rules
        .iter()
        .flat_map(|r| [r.payload_days, r.header_days])
        .flatten()
        .min();
    if let Some(days) = shortest {
        let before = now - Duration::days(days as i64);
        let mut after = None;
        loop {
            let page = store
                .retention_candidates(tenant, before, after, PAGE)
                .await?;
            let full = page.len() as u32 == PAGE;
            for c in &page {
                after = Some(c.seq);
                if is_exempt(&c.event_type) {
                    continue;
                }
                let v = verdict(rule_for(&rules, &c.namespace), c.time, now);
                if v == Verdict::Keep || (v == Verdict::PurgePayload && !c.payload_present) {
                    continue;
                }
                let mut held = false;
                for (i, h) in holds.iter().enumerate() {
                    if h.covers(&c.namespace, c.time) {
                        blocked[i] += 1;
                        held = true;
                    }
                }
                if held {
                    continue;
                }
                if v == Verdict::DeleteHeader {
                    push_seq(&mut deleted, c.seq);
                    n_deleted += 1;
                } else {
                    push_seq(&mut purged, c.seq);
                    n_purged += 1;
                }
            }
            if !full {
                break;
            }
        }
    }

    let record = RetentionRecord {
        payloads_purged: n_purged,
        headers_deleted: n_deleted,
        purged_ranges: purged,
        deleted_ranges: deleted,
        blocked_by_holds: holds
            .iter()
            .zip(&blocked)
            .filter(|(_, n)| **n > 0)
            .map(|(h, n)| BlockedBy {
                hold: h.id,
                events: *n,
            })
            .collect(),
        rules: rules
            .iter()
            .map(|r| RuleSummary {
                namespace: r.namespace.to_string(),
                payload_days: r.payload_days,
                header_days: r.header_days,
            })
            .collect(),
        now,
    };
    let mut event = AuditEvent::new(
        tenant.as_str(),
        tenant.root_namespace().as_str(),
        catalog::AUDIT_RETENTION_APPLIED,
        source,
        actor.clone(),
        serde_json::to_value(&record)
            .map_err(|e| warden_core::Error::internal(format!("retention record: {e}")))?,
    );
    event.header.action = Some("delete".into());
    // Recorded before anything is removed: the record is what makes the removal verifiable.
    let seq = append_one(store, event).await?;
    let (p, d) = store
        .apply_retention_ranges(
            tenant,
            &record.purged_ranges,
            &record.deleted_ranges,
            &hold_ids,
        )
        .await?;
    outcome.event_seq = Some(seq);
    outcome.payloads_purged = p;
    outcome.headers_deleted = d;
    outcome.blocked_by_holds = record.blocked_by_holds;
    if p + d > 0 {
        tracing::info!(tenant = %tenant, payloads_purged = p, headers_deleted = d, "retention applied");
    }
    Ok(outcome)
}
