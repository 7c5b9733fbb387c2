//! Policy bundles as a service: apply (validate, test, store, put in force, record), roll
//! back, shadow, promote; the policy directory's changes as versions; the record of what a
//! shadow bundle would have decided differently.
//!
//! Every change goes through [`apply`]: nothing is stored unless every file parses and
//! validates and (unless the caller accepts failures) every policy test passes; nothing is
//! put in force unless it was stored; an applied change whose audit event cannot be written
//! is reverted.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;
use warden_core::{
    Actor, AuditEvent, Decision, DecisionRequest, Error, NamespacePath, TenantId, catalog,
};
use warden_policy::bundle::{BundleDiff, diff};
use warden_policy::testing::{self, TestReport};
use warden_policy::{Bundle, BundleMode};
use warden_store::{BundleVersion, NewBundleVersion, Store};

use crate::policies::{ApiBundle, Disagreement, PolicyRuntime, Shadow};
use crate::problem::Problem;
use crate::state::AppState;

/// Where a bundle comes from.
pub const SOURCE_API: &str = "api";
pub const SOURCE_DIRECTORY: &str = "directory";
/// The author of versions recorded from the policy directory.
pub const DIRECTORY_AUTHOR: &str = "directory";

/// What a failing policy test does to a bundle change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestGate {
    /// A failing test refuses the change (422).
    Refuse,
    /// The change is applied; the failures are reported in the answer and the audit event.
    Warn,
    /// Tests are not run (a rollback or promotion of what was already tested).
    Skip,
}

/// A change of a tenant's API-managed bundle.
pub struct BundleChange {
    pub tenant: TenantId,
    pub bundle: Bundle,
    pub mode: BundleMode,
    pub author: String,
    pub actor: Actor,
    pub message: Option<String>,
    pub expected_version: Option<i64>,
    pub tests: TestGate,
    /// The audit event recording the change.
    pub event_type: &'static str,
    /// Its namespace (the tenant root unless the change concerns one namespace).
    pub event_namespace: Option<NamespacePath>,
    /// Fields added to the event's payload (e.g. the version rolled back to).
    pub extra: Value,
}

/// An applied change.
pub struct Applied {
    pub version: BundleVersion,
    pub previous: Option<i64>,
    pub diff: BundleDiff,
    pub tests: Option<TestReport>,
}

/// The 409 for an API write to a tenant whose folder is in the policy directory.
pub fn directory_managed(runtime: &PolicyRuntime, tenant: &TenantId) -> Problem {
    let dir = runtime
        .dir
        .as_ref()
        .map(|d| d.join(tenant.as_str()).display().to_string())
        .unwrap_or_else(|| format!("<policy directory>/{tenant}"));
    Problem::new(
        StatusCode::CONFLICT,
        "directory-managed",
        format!(
            "the policies of tenant {tenant} are managed in the policy directory ({dir}); change the files there, or remove the folder to manage them through the API"
        ),
    )
}

/// The failed cases of a test report, for answers and audit events.
pub fn failures(report: &TestReport) -> Value {
    Value::Array(
        report
            .results
            .iter()
            .filter(|r| !r.passed)
            .map(|r| {
                json!({
                    "file": r.file,
                    "line": r.line,
                    "name": r.name,
                    "differences": r.differences,
                })
            })
            .collect(),
    )
}

fn invalid(tenant: &TenantId, errors: Vec<String>) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-policy",
        format!(
            "the policy bundle of {tenant} was not applied: {} problem(s)",
            errors.len()
        ),
    )
    .with_errors(errors)
}

/// Validates `bundle` and runs its tests; the report when there are tests.
pub fn check(
    runtime: &PolicyRuntime,
    tenant: &TenantId,
    bundle: &Bundle,
    gate: TestGate,
) -> Result<(warden_policy::Engine, Option<TestReport>), Problem> {
    let engine = runtime
        .compile_bundle(tenant.as_str(), bundle)
        .map_err(|e| invalid(tenant, e))?;
    let tests = bundle
        .tests()
        .map_err(|e| invalid(tenant, e.iter().map(ToString::to_string).collect()))?;
    if gate == TestGate::Skip || tests.is_empty() {
        return Ok((engine, None));
    }
    let report = testing::run(&engine, &tests);
    if !report.passed && gate == TestGate::Refuse {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "policy-tests-failed",
            format!(
                "{} of {} policy test case(s) failed; nothing was applied. Fix the policies or the tests, or pass ?tests=warn to apply anyway",
                report.failed, report.cases
            ),
        )
        .with_errors(
            report
                .results
                .iter()
                .filter(|r| !r.passed)
                .map(|r| format!("{}:{}: {}", r.file, r.line, r.name))
                .collect(),
        )
        .with_report(serde_json::to_value(&report).unwrap_or_default()));
    }
    Ok((engine, Some(report)))
}

/// Validates, tests, stores, puts in force and records a change of an API-managed bundle.
pub async fn apply(state: &AppState, change: BundleChange) -> Result<Applied, Problem> {
    let runtime = &state.policies;
    let tenant = change.tenant.clone();
    if runtime.dir_manages(tenant.as_str()) {
        return Err(directory_managed(runtime, &tenant));
    }
    let _order = runtime.changes.lock().await;
    let (_, report) = check(runtime, &tenant, &change.bundle, change.tests)?;
    let test_failures = report.as_ref().filter(|r| !r.passed).map(failures);
    let previous = runtime.api_bundle(tenant.as_str());
    let version = state
        .store
        .append_bundle_version(NewBundleVersion {
            tenant: tenant.clone(),
            files: change.bundle.files.clone(),
            sha256: change.bundle.content_hash(),
            mode: change.mode.as_str().into(),
            source: SOURCE_API.into(),
            author: change.author.clone(),
            message: change.message.clone(),
            test_failures: test_failures.clone(),
            expected_version: change.expected_version,
        })
        .await
        .map_err(Problem::from)?;
    runtime
        .apply_api_bundle(
            tenant.as_str(),
            ApiBundle {
                bundle: change.bundle.clone(),
                mode: change.mode,
                version: version.version,
            },
        )
        .map_err(|e| Problem::from(Error::internal(e.join("; "))))?;
    let empty = Bundle::default();
    let before = previous.as_ref().map_or(&empty, |p| &p.bundle);
    let d = diff(before, &change.bundle);
    let mut payload = json!({
        "version": version.version,
        "previous_version": previous.as_ref().map(|p| p.version),
        "sha256": version.sha256,
        "source": SOURCE_API,
        "mode": version.mode,
        "message": change.message,
        "added": d.added,
        "removed": d.removed,
        "changed": d.changed,
        "diff": d.files,
    });
    if let Some(f) = &test_failures {
        payload["test_failures"] = f.clone();
    }
    if let (Value::Object(p), Value::Object(extra)) = (&mut payload, change.extra) {
        p.extend(extra);
    }
    let namespace = change
        .event_namespace
        .as_ref()
        .map_or(tenant.as_str(), |n| n.as_str());
    let mut event = AuditEvent::new(
        tenant.as_str(),
        namespace,
        change.event_type,
        "warden.api",
        change.actor,
        payload,
    );
    event.header.resource = Some(warden_core::ResourceRef {
        resource_type: "PolicyBundle".into(),
        id: tenant.to_string(),
    });
    if let Err(e) = state.pipeline.record(event).await {
        // An administrative change must not stay in force unrecorded: put the previous
        // bundle back (as a new version, so the history stays append-only).
        let back = previous.clone().unwrap_or(ApiBundle {
            bundle: Bundle::default(),
            mode: BundleMode::Enforce,
            version: 0,
        });
        let reverted = state
            .store
            .append_bundle_version(NewBundleVersion {
                tenant: tenant.clone(),
                sha256: back.bundle.content_hash(),
                files: back.bundle.files.clone(),
                mode: back.mode.as_str().into(),
                source: SOURCE_API.into(),
                author: "warden".into(),
                message: Some("reverted: the audit trail could not record the change".into()),
                test_failures: None,
                expected_version: Some(version.version),
            })
            .await;
        if let Ok(v) = reverted {
            let _ = runtime.apply_api_bundle(
                tenant.as_str(),
                ApiBundle {
                    version: v.version,
                    ..back
                },
            );
        }
        return Err(e.into());
    }
    Ok(Applied {
        previous: previous.map(|p| p.version),
        version,
        diff: d,
        tests: report,
    })
}

/// Starts a shadow bundle for a tenant (replacing one that runs), after it validated and
/// (per `gate`) its tests passed.
pub async fn start_shadow(
    state: &AppState,
    tenant: &TenantId,
    bundle: Bundle,
    author: String,
    actor: Actor,
    message: Option<String>,
    gate: TestGate,
) -> Result<(std::sync::Arc<Shadow>, Option<TestReport>), Problem> {
    let runtime = &state.policies;
    let _order = runtime.changes.lock().await;
    let (engine, report) = check(runtime, tenant, &bundle, gate)?;
    let based_on = current_version(state, tenant).await?;
    let shadow = Shadow {
        engine,
        sha256: bundle.content_hash(),
        bundle,
        author,
        message: message.clone(),
        based_on,
        since: chrono::Utc::now(),
    };
    let mut payload = json!({
        "sha256": shadow.sha256,
        "based_on": based_on,
        "message": message,
        "files": shadow.bundle.files.keys().collect::<Vec<_>>(),
    });
    if let Some(f) = report.as_ref().filter(|r| !r.passed).map(failures) {
        payload["test_failures"] = f;
    }
    let event = admin_event(tenant, catalog::POLICY_SHADOW_STARTED, actor, payload);
    // Recorded first: a shadow never acts, so there is nothing to revert if this fails.
    state.pipeline.record(event).await?;
    runtime.set_shadow(tenant.as_str(), Some(shadow));
    let started = runtime
        .shadow(tenant.as_str())
        .ok_or_else(|| Problem::from(Error::internal("the shadow bundle was not kept")))?;
    Ok((started, report))
}

/// Stops the tenant's shadow bundle; 404 when none runs.
pub async fn stop_shadow(state: &AppState, tenant: &TenantId, actor: Actor) -> Result<(), Problem> {
    let runtime = &state.policies;
    let _order = runtime.changes.lock().await;
    let Some(shadow) = runtime.shadow(tenant.as_str()) else {
        return Err(Error::not_found(format!("tenant {tenant} has no shadow bundle")).into());
    };
    let event = admin_event(
        tenant,
        catalog::POLICY_SHADOW_STOPPED,
        actor,
        json!({"sha256": shadow.sha256}),
    );
    state.pipeline.record(event).await?;
    runtime.set_shadow(tenant.as_str(), None);
    Ok(())
}

fn admin_event(tenant: &TenantId, event_type: &str, actor: Actor, payload: Value) -> AuditEvent {
    let mut e = AuditEvent::new(
        tenant.as_str(),
        tenant.as_str(),
        event_type,
        "warden.api",
        actor,
        payload,
    );
    e.header.resource = Some(warden_core::ResourceRef {
        resource_type: "PolicyBundle".into(),
        id: tenant.to_string(),
    });
    e
}

/// The tenant's current version number (0 when it has none).
pub async fn current_version(state: &AppState, tenant: &TenantId) -> Result<i64, Problem> {
    if let Some(b) = state.policies.api_bundle(tenant.as_str()) {
        return Ok(b.version);
    }
    Ok(state
        .store
        .bundle_versions(tenant)
        .await?
        .first()
        .map_or(0, |v| v.version))
}

/// Counts and records a shadow disagreement. The audit event names the decision event it
/// shadows; it is written in the background: a shadow observes, it never holds up a
/// decision.
pub fn record_disagreement(
    state: &crate::state::Inner,
    req: &DecisionRequest,
    enforced: &Decision,
    dis: &Disagreement,
    decision_event: Uuid,
) {
    let from = enforced.outcome.as_str();
    let to = dis.shadow.outcome.as_str();
    let policies = dis.policies();
    for p in &policies {
        state
            .metrics
            .shadow_disagreement(req.tenant.as_str(), p, from, to);
    }
    let actor = Actor {
        role: Some("system".into()),
        ..Default::default()
    };
    let mut e = AuditEvent::new(
        req.tenant.as_str(),
        req.namespace.as_str(),
        catalog::POLICY_SHADOW_DISAGREEMENT,
        "warden.system",
        actor,
        json!({
            "decision_event": decision_event.to_string(),
            "shadow_sha256": dis.shadow_sha256,
            "enforced": {"outcome": from, "policies": enforced.reasons.iter().map(|r| &r.id).collect::<Vec<_>>()},
            "shadow": {"outcome": to, "policies": policies, "errors": dis.shadow.errors},
        }),
    );
    e.header.action = Some(req.action.clone());
    e.header.resource = Some(warden_core::ResourceRef {
        resource_type: req.resource.entity_type.clone(),
        id: req.resource.id.clone(),
    });
    match state.pipeline.submit(e) {
        Ok(durable) => {
            tokio::spawn(async move {
                if let Err(e) = durable.await {
                    tracing::warn!(error = %e, "a shadow disagreement could not be recorded");
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "a shadow disagreement could not be recorded"),
    }
}

/// Records a version for every directory-managed tenant whose files differ from its latest
/// version, and an empty API version for a tenant whose folder was removed (it is
/// API-managed from then on, with no policies until some are applied).
pub async fn sync_directory(state: &AppState) {
    if state.policies.dir.is_none() {
        return;
    }
    if let Err(e) = sync_directory_versions(state.store.as_ref(), &state.policies, |e| {
        let pipeline = state.pipeline.clone();
        async move { pipeline.record(e).await.map(|_| ()) }
    })
    .await
    {
        tracing::error!(error = %e, "could not record the policy directory's versions");
    }
}

async fn sync_directory_versions<F, Fut>(
    store: &dyn Store,
    runtime: &PolicyRuntime,
    record: F,
) -> warden_core::Result<()>
where
    F: Fn(AuditEvent) -> Fut,
    Fut: std::future::Future<Output = warden_core::Result<()>>,
{
    let dir_bundles = runtime.dir_bundles();
    let latest: BTreeMap<String, BundleVersion> = store
        .latest_bundle_versions()
        .await?
        .into_iter()
        .map(|v| (v.tenant.as_str().to_owned(), v))
        .collect();
    let mut changes: Vec<(TenantId, Bundle, &str, String)> = Vec::new();
    for (tenant, bundle) in &dir_bundles {
        let stored = latest.get(tenant);
        if stored.is_some_and(|v| v.source == SOURCE_DIRECTORY && v.sha256 == bundle.content_hash())
        {
            continue;
        }
        changes.push((
            TenantId::parse(tenant)?,
            bundle.clone(),
            SOURCE_DIRECTORY,
            "the policy directory changed".into(),
        ));
    }
    for (tenant, v) in &latest {
        if v.source == SOURCE_DIRECTORY && !dir_bundles.contains_key(tenant) {
            changes.push((
                v.tenant.clone(),
                Bundle::default(),
                SOURCE_API,
                "the tenant's folder was removed from the policy directory; its policies are managed through the API from now on".into(),
            ));
        }
    }
    for (tenant, bundle, source, message) in changes {
        let before = match latest.get(tenant.as_str()) {
            Some(v) => Bundle::new(v.files.clone()),
            None => Bundle::default(),
        };
        let v = store
            .append_bundle_version(NewBundleVersion {
                tenant: tenant.clone(),
                sha256: bundle.content_hash(),
                files: bundle.files.clone(),
                mode: BundleMode::Enforce.as_str().into(),
                source: source.into(),
                author: DIRECTORY_AUTHOR.into(),
                message: Some(message.clone()),
                test_failures: None,
                expected_version: None,
            })
            .await?;
        if source == SOURCE_API {
            runtime
                .apply_api_bundle(
                    tenant.as_str(),
                    ApiBundle {
                        bundle: bundle.clone(),
                        mode: BundleMode::Enforce,
                        version: v.version,
                    },
                )
                .map_err(|e| Error::internal(e.join("; ")))?;
        }
        let d = diff(&before, &bundle);
        let actor = Actor {
            role: Some("system".into()),
            ..Default::default()
        };
        let mut e = AuditEvent::new(
            tenant.as_str(),
            tenant.as_str(),
            catalog::POLICY_BUNDLE_APPLIED,
            "warden.system",
            actor,
            json!({
                "version": v.version,
                "previous_version": latest.get(tenant.as_str()).map(|p| p.version),
                "sha256": v.sha256,
                "source": source,
                "mode": v.mode,
                "author": DIRECTORY_AUTHOR,
                "message": message,
                "added": d.added,
                "removed": d.removed,
                "changed": d.changed,
                "diff": d.files,
            }),
        );
        e.header.resource = Some(warden_core::ResourceRef {
            resource_type: "PolicyBundle".into(),
            id: tenant.to_string(),
        });
        record(e).await?;
    }
    Ok(())
}

/// Stored versions this node could not put in force, reported once rather than at every poll.
#[derive(Default)]
pub struct Refused(std::collections::HashSet<(String, i64)>);

/// Puts in force the API-managed bundles stored since this node last looked — applied,
/// rolled back or promoted through another node of the cluster. A version this node cannot
/// compile (its policy directory's schema extension differs, say) leaves the previous one in
/// force and is reported once.
pub async fn sync_api_bundles(state: &AppState, refused: &mut Refused) {
    let heads = match state.store.bundle_heads().await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the stored policy bundle versions");
            return;
        }
    };
    let runtime = &state.policies;
    let loaded = |tenant: &TenantId| runtime.api_bundle(tenant.as_str()).map_or(0, |b| b.version);
    for (tenant, head) in heads {
        if head <= loaded(&tenant)
            || runtime.dir_manages(tenant.as_str())
            || refused.0.contains(&(tenant.as_str().to_owned(), head))
        {
            continue;
        }
        // Taken as a local change does, so a change this node is applying right now is
        // finished (and found in force below) before a newer one is looked at.
        let _order = runtime.changes.lock().await;
        if head <= loaded(&tenant) {
            continue;
        }
        let stored = match state.store.bundle_version(&tenant, head).await {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(%tenant, version = head, error = %e, "cannot read a stored policy bundle");
                continue;
            }
        };
        let bundle = ApiBundle {
            bundle: Bundle::new(stored.files),
            mode: BundleMode::parse(&stored.mode).unwrap_or_default(),
            version: stored.version,
        };
        match runtime.apply_api_bundle(tenant.as_str(), bundle) {
            Ok(()) => tracing::info!(
                %tenant,
                version = head,
                author = %stored.author,
                "policy bundle applied elsewhere is now in force here"
            ),
            Err(errors) => {
                tracing::error!(
                    %tenant,
                    version = head,
                    errors = %errors.join("; "),
                    "a stored policy bundle does not compile on this node; the previous one stays in force"
                );
                refused.0.insert((tenant.as_str().to_owned(), head));
            }
        }
    }
}

/// At start: imports per-namespace policies stored before bundles existed (once, as a
/// tenant's first version), then puts every API-managed tenant's latest bundle in force.
pub async fn load_api_bundles(store: &dyn Store, runtime: &PolicyRuntime) -> anyhow::Result<()> {
    let latest: BTreeMap<String, BundleVersion> = store
        .latest_bundle_versions()
        .await?
        .into_iter()
        .map(|v| (v.tenant.as_str().to_owned(), v))
        .collect();
    let mut legacy: BTreeMap<String, (TenantId, BTreeMap<String, String>)> = BTreeMap::new();
    for p in store.current_policies().await? {
        if latest.contains_key(p.tenant.as_str()) {
            continue;
        }
        if let Some(text) = p.text {
            legacy
                .entry(p.tenant.as_str().to_owned())
                .or_insert_with(|| (p.tenant.clone(), BTreeMap::new()))
                .1
                .insert(format!("{}/{NAMESPACE_FILE}", p.namespace), text);
        }
    }
    for (tenant, files) in legacy.into_values() {
        let bundle = Bundle::new(files);
        store
            .append_bundle_version(NewBundleVersion {
                tenant,
                sha256: bundle.content_hash(),
                files: bundle.files,
                mode: BundleMode::Enforce.as_str().into(),
                source: SOURCE_API.into(),
                author: "warden".into(),
                message: Some(
                    "imported from the per-namespace policies stored before bundles".into(),
                ),
                test_failures: None,
                expected_version: Some(0),
            })
            .await?;
    }
    let mut api = BTreeMap::new();
    for v in store.latest_bundle_versions().await? {
        if runtime.dir_manages(v.tenant.as_str()) {
            continue;
        }
        let mode = BundleMode::parse(&v.mode).unwrap_or_default();
        api.insert(
            v.tenant.as_str().to_owned(),
            ApiBundle {
                bundle: Bundle::new(v.files),
                mode,
                version: v.version,
            },
        );
    }
    runtime.set_api_bundles(api).map_err(|e| {
        anyhow::anyhow!(
            "stored API-managed policy bundles do not load:\n  {}",
            e.join("\n  ")
        )
    })
}

/// The file a namespace's policies live in when set through the per-namespace routes.
pub const NAMESPACE_FILE: &str = "policies.cedar";
