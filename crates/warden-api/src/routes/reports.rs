//! `GET /api/v1/reports/usage`: decisions by outcome per agent, tool, user, namespace or
//! outcome over a window.
//!
//! With `[analytics]` configured the report reads ClickHouse, as long as the feeder has copied
//! the tenant's whole log there (at its last look, at most one feed interval ago) and the
//! window starts within ClickHouse's `retention_days`; otherwise, or when ClickHouse fails,
//! the system of record. Both give the same answer for the same
//! events: ClickHouse is read with `FINAL`, which collapses re-sent events.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use warden_core::{Error, NamespacePath, Role};
use warden_store::usage::{UsageGroupBy, UsageQuery, UsageRow};

use crate::extract::Caller;
use crate::problem::{ApiResult, Problem};
use crate::query::QueryParams;
use crate::state::AppState;

/// The window when `from` is left out: the 30 days before `to`.
pub const DEFAULT_WINDOW_DAYS: i64 = 30;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// Decisions at or after this time (RFC 3339) [default: 30 days before `to`].
    pub from: Option<DateTime<Utc>>,
    /// Decisions before this time (RFC 3339) [default: now].
    pub to: Option<DateTime<Utc>>,
    /// A namespace and everything below it [default: the whole tenant, or the token's
    /// namespace for a confined token].
    pub namespace: Option<String>,
    /// `agent`, `tool`, `user`, `namespace` or `outcome`.
    pub group_by: String,
    /// `auto` (default): ClickHouse when configured and caught up, the system of record
    /// otherwise; `store` or `clickhouse` to choose.
    pub source: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageReport {
    #[schema(value_type = String, format = DateTime)]
    pub from: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub to: DateTime<Utc>,
    pub namespace: Option<String>,
    /// What the rows are grouped by.
    pub group_by: String,
    /// Which copy answered: `clickhouse` or `store`.
    pub source: &'static str,
    /// One row per group, ordered by key (no key first).
    pub rows: Vec<UsageRow>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Auto,
    Store,
    ClickHouse,
}

#[utoipa::path(
    get, path = "/api/v1/reports/usage", tag = "reports", params(UsageParams),
    responses(
        (status = 200, description = "Decisions by outcome per group", body = UsageReport),
        (status = 400, description = "Unknown parameter, bad time, `group_by` or `source`, or `from` after `to`", body = Problem),
        (status = 401, description = "Missing, unknown, expired or revoked token", body = Problem),
        (status = 403, description = "Not an admin or auditor token, or a namespace outside the token's scope", body = Problem),
        (status = 404, description = "A namespace of another tenant", body = Problem),
        (status = 409, description = "`source=clickhouse` but analytics is not configured", body = Problem),
        (status = 503, description = "`source=clickhouse` and ClickHouse failed", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(p): QueryParams<UsageParams>,
) -> ApiResult<Json<UsageReport>> {
    caller.require(
        matches!(caller.role(), Role::Admin | Role::Auditor),
        "read reports",
    )?;
    let group_by = UsageGroupBy::parse(&p.group_by)?;
    let source = match p.source.as_deref() {
        None | Some("auto") => Source::Auto,
        Some("store") => Source::Store,
        Some("clickhouse") => Source::ClickHouse,
        Some(other) => {
            return Err(Error::invalid(format!(
                "source must be auto, store or clickhouse, not {other:?}"
            ))
            .into());
        }
    };
    let namespace = match &p.namespace {
        Some(ns) => {
            let ns = NamespacePath::parse(ns)?;
            caller.check_namespace(&ns)?;
            Some(ns)
        }
        None => caller.token.namespace.clone(),
    };
    let to = p.to.unwrap_or_else(Utc::now);
    let from = p
        .from
        .unwrap_or(to - chrono::Duration::days(DEFAULT_WINDOW_DAYS));
    if from > to {
        return Err(Error::invalid("`from` is after `to`").into());
    }
    let tenant = caller.token.tenant.clone();
    let query = UsageQuery {
        from,
        to,
        namespace: namespace.clone(),
        group_by,
    };
    let analytics = state.analytics.as_ref();
    let use_clickhouse = match (source, analytics) {
        (Source::Store, _) => false,
        (Source::ClickHouse, None) => {
            return Err(Error::Conflict(
                "analytics is not configured on this server ([analytics] clickhouse_url); use source=store or auto".into(),
            )
            .into());
        }
        (Source::ClickHouse, Some(_)) => true,
        (Source::Auto, None) => false,
        // A window reaching back before ClickHouse's retention goes to the system of record.
        (Source::Auto, Some(a)) => a.stats.is_current(tenant.as_str()) && a.holds_since(from),
    };
    let mut answered_by = "store";
    let mut rows = None;
    if use_clickhouse && let Some(a) = analytics {
        match warden_analytics::report::usage(&a.clickhouse, &tenant, &query).await {
            Ok(r) => {
                rows = Some(r);
                answered_by = "clickhouse";
            }
            Err(e) if source == Source::ClickHouse => {
                return Err(Error::unavailable(format!("ClickHouse failed: {e}"), None).into());
            }
            Err(e) => {
                tracing::warn!(error = %e, "usage report from ClickHouse failed; answering from the system of record");
            }
        }
    }
    let rows = match rows {
        Some(r) => r,
        None => state.store.usage_report(&tenant, &query).await?,
    };
    Ok(Json(UsageReport {
        from,
        to,
        namespace: namespace.map(|n| n.to_string()),
        group_by: group_by.as_str().to_owned(),
        source: answered_by,
        rows,
    }))
}
