//! Liveness, readiness and Prometheus metrics.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;

use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process is alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// `ok`, or why the store cannot be written.
    pub store: String,
    /// `ok`, or the errors of the last refused policy change (the previous set stays in force).
    pub policies: String,
    pub policy_count: usize,
    pub policy_hash: String,
    pub audit_queue_depth: i64,
    /// Each MCP upstream and whether it is connected (informational: a server that is down
    /// fails only the calls to it, so it does not make Warden unready).
    #[schema(value_type = Object)]
    pub upstreams: std::collections::BTreeMap<String, serde_json::Value>,
}

#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Store writable and policies loaded", body = Readiness),
    (status = 503, description = "Not ready; the body says why", body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let store = match state.store.writable().await {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.to_string(),
    };
    let policies = match state.policies.last_error() {
        None => "ok".to_owned(),
        Some(errors) => format!(
            "last change refused, previous set in force: {}",
            errors.join("; ")
        ),
    };
    let ready = store == "ok";
    let body = Readiness {
        ready,
        store,
        policies,
        policy_count: state.policies.engine().policy_count(),
        policy_hash: state.policies.content_hash(),
        audit_queue_depth: state.pipeline.stats().queue_depth.load(Ordering::Relaxed),
        upstreams: state
            .gateway()
            .upstream_health()
            .into_iter()
            .map(|(name, h)| (name, serde_json::to_value(h).unwrap_or_default()))
            .collect(),
    };
    (
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(body),
    )
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let m = &state.metrics;
    let p = state.pipeline.stats();
    let mut out = String::with_capacity(4096);
    let mut counter = |name: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (labels, v) in samples {
            let braces = if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            };
            let _ = writeln!(out, "{name}{braces} {v}");
        }
    };
    counter(
        "warden_decisions_total",
        "Decisions answered, by outcome.",
        &[
            ("outcome=\"allow\"", m.decisions_allow.get()),
            ("outcome=\"deny\"", m.decisions_deny.get()),
            ("outcome=\"approval_required\"", m.decisions_ask.get()),
        ],
    );
    counter(
        "warden_decision_errors_total",
        "Decisions denied because a policy failed to evaluate.",
        &[("", m.decision_errors.get())],
    );
    counter(
        "warden_audit_events_appended_total",
        "Audit events durably appended.",
        &[("", p.appended.get())],
    );
    counter(
        "warden_audit_duplicates_total",
        "Re-sent events recognised and not stored again.",
        &[("", p.duplicates.get())],
    );
    counter(
        "warden_audit_batches_total",
        "Batches handed to the store (on SQLite, batches waiting for the writer share its next transaction).",
        &[("", p.batches.get())],
    );
    counter(
        "warden_audit_append_failures_total",
        "Batches the store refused (callers got 503).",
        &[("", p.failures.get())],
    );
    counter(
        "warden_audit_queue_rejections_total",
        "Requests refused because the audit queue was full.",
        &[("", p.rejected_full.get())],
    );
    counter(
        "warden_events_ingested_total",
        "CloudEvents accepted by POST /api/v1/events.",
        &[("", m.events_ingested.get())],
    );
    counter(
        "warden_events_rejected_total",
        "CloudEvents refused by POST /api/v1/events.",
        &[("", m.events_rejected.get())],
    );
    counter(
        "warden_policy_reloads_total",
        "Policy directory changes put in force.",
        &[("", m.policy_reloads.get())],
    );
    counter(
        "warden_policy_reload_failures_total",
        "Policy directory changes refused.",
        &[("", m.policy_reload_failures.get())],
    );
    let _ = writeln!(
        out,
        "# HELP warden_audit_queue_depth Events waiting to be written.\n# TYPE warden_audit_queue_depth gauge"
    );
    let _ = writeln!(
        out,
        "warden_audit_queue_depth {}",
        p.queue_depth.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP warden_policies Policies in force.\n# TYPE warden_policies gauge"
    );
    let _ = writeln!(
        out,
        "warden_policies {}",
        state.policies.engine().policy_count()
    );
    let _ = writeln!(
        out,
        "# HELP warden_decision_seconds Policy evaluation time per decision.\n# TYPE warden_decision_seconds histogram"
    );
    m.decision_latency()
        .render(&mut out, "warden_decision_seconds", "");
    let _ = writeln!(
        out,
        "# HELP warden_audit_append_seconds Time to commit one audit batch.\n# TYPE warden_audit_append_seconds histogram"
    );
    p.append_latency()
        .render(&mut out, "warden_audit_append_seconds", "");
    let shadow = m
        .shadow_disagreements
        .lock()
        .expect("shadow metrics")
        .clone();
    if !shadow.is_empty() {
        let _ = writeln!(
            out,
            "# HELP warden_policy_shadow_disagreements_total Live decisions the shadow bundle decided differently, by the shadow's determining policy.\n# TYPE warden_policy_shadow_disagreements_total counter"
        );
        for ([tenant, policy, from, to], n) in shadow {
            let _ = writeln!(
                out,
                "warden_policy_shadow_disagreements_total{{tenant=\"{}\",policy=\"{}\",from=\"{from}\",to=\"{to}\"}} {n}",
                label(&tenant),
                label(&policy),
            );
        }
    }
    state.gateway().render_metrics(&mut out);
    // Delivery to stream destinations
    state.delivery.metrics.render(&mut out);
    // Analytics
    if let Some(a) = &state.analytics {
        a.stats.render(&mut out);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
