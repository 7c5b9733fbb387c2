//! Wiring: open the store, load keys and policies, start the audit pipeline and the
//! background tasks, serve HTTP, and shut down without losing anything acknowledged.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use warden_core::{Actor, AuditEvent, catalog};
use warden_store::pipeline::AuditPipeline;
use warden_store::{Database, OpenOptions, Store, checkpointer};

use crate::routes::retention;

use crate::approvals::ApprovalDesk;
use crate::policies::{PolicyRuntime, Reload};
use crate::problem::Problem;
use crate::registry::Registry;
use crate::routes::{
    approvals, audit, authorize, destinations, events, health, policies, registry, tokens,
};
use crate::state::{AppState, Inner, Metrics, ServerConfig};
use crate::tokens::TokenCache;

pub use warden_store::database::DATABASE_FILE;

/// The default system of record: the SQLite file in the data directory.
pub fn database_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join(DATABASE_FILE)
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(crate::openapi::serve))
        .route("/api/v1/authorize", post(authorize::authorize))
        .route("/api/v1/authorize/batch", post(authorize::authorize_batch))
        .route("/api/v1/events", post(events::ingest))
        .route("/api/v1/audit/events", get(audit::list_events))
        .route("/api/v1/audit/events/{id}", get(audit::get_event))
        .route("/api/v1/audit/events/{id}/proof", get(audit::proof))
        .route("/api/v1/audit/export", get(audit::export))
        .route("/api/v1/audit/hash", post(audit::hash_value))
        .route("/api/v1/audit/checkpoints", get(audit::checkpoints))
        .route("/api/v1/audit/consistency", get(audit::consistency))
        .route("/api/v1/policies", get(policies::overview))
        .route("/api/v1/policies/versions", get(policies::versions))
        .route(
            "/api/v1/policies/simulate",
            post(crate::routes::simulate::simulate),
        )
        .route(
            "/api/v1/policies/versions/{version}",
            get(policies::version),
        )
        .route("/api/v1/policies/diff", get(policies::diff_versions))
        .route(
            "/api/v1/policies/bundle",
            axum::routing::put(policies::put_bundle),
        )
        .route("/api/v1/policies/rollback", post(policies::rollback))
        .route("/api/v1/policies/promote", post(policies::promote))
        .route(
            "/api/v1/policies/shadow",
            get(policies::get_shadow)
                .put(policies::put_shadow)
                .delete(policies::delete_shadow),
        )
        .route(
            "/api/v1/policies/{*namespace}",
            get(policies::get_policy)
                .put(policies::put_policy)
                .delete(policies::delete_policy),
        )
        .route("/api/v1/tokens", post(tokens::create).get(tokens::list))
        .route("/api/v1/tokens/{id}", axum::routing::delete(tokens::revoke))
        .route("/api/v1/approvals", get(approvals::list))
        .route("/api/v1/approvals/{id}", get(approvals::get))
        .route("/api/v1/approvals/{id}/approve", post(approvals::approve))
        .route("/api/v1/approvals/{id}/deny", post(approvals::deny))
        // Retention
        .route(
            "/api/v1/retention",
            get(retention::list_rules)
                .put(retention::put_rule)
                .delete(retention::delete_rule),
        )
        .route("/api/v1/retention/apply", post(retention::apply))
        .route(
            "/api/v1/legal-holds",
            get(retention::list_holds).post(retention::place_hold),
        )
        .route(
            "/api/v1/legal-holds/{id}/release",
            post(retention::release_hold),
        )
        // Analytics
        .route("/api/v1/reports/usage", get(crate::routes::reports::usage))
        .merge(registry_routes())
        // Delivery to stream destinations
        .route(
            "/api/v1/destinations",
            get(destinations::list).post(destinations::create),
        )
        .route(
            "/api/v1/destinations/{name}",
            get(destinations::get)
                .put(destinations::replace)
                .delete(destinations::delete),
        )
        .route(
            "/api/v1/destinations/{name}/replay",
            post(destinations::replay),
        )
        .merge(gateway_routes())
        .fallback(|| async {
            Problem::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "no such route; see /openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "method not allowed on this route; see /openapi.json",
            )
        })
        // Bodies are bounded by our own extractors (problem+json 413); this is the backstop.
        .layer(DefaultBodyLimit::disable())
        .with_state(state.clone())
        .merge(warden_gateway::http::router(state.gateway().clone()))
}

/// The registry, under `/api/v1/registry`. Server names travel as one path segment with
/// their `/` percent-encoded (`io.github.acme%2Fdeploy`): routing matches the encoded path,
/// and `Path` decodes the segment.
fn registry_routes() -> Router<AppState> {
    const R: &str = "/api/v1/registry";
    Router::new()
        .route(
            &format!("{R}/servers"),
            get(registry::list_servers).post(registry::create_server),
        )
        .route(
            &format!("{R}/servers/{{name}}"),
            get(registry::get_server).patch(registry::patch_server),
        )
        .route(
            &format!("{R}/servers/{{name}}/discover"),
            post(crate::routes::discovery::discover_server),
        )
        .route(
            &format!("{R}/servers/{{name}}/transitions"),
            post(registry::transition_server),
        )
        .route(
            &format!("{R}/servers/{{name}}/scopes"),
            axum::routing::put(registry::put_server_scope).delete(registry::delete_server_scope),
        )
        .route(
            &format!("{R}/servers/{{name}}/tools"),
            get(registry::list_server_tools).post(registry::create_tool),
        )
        .route(
            &format!("{R}/servers/{{name}}/tools/{{tool}}"),
            get(registry::get_tool).patch(registry::patch_tool),
        )
        .route(
            &format!("{R}/servers/{{name}}/tools/{{tool}}/transitions"),
            post(registry::transition_tool),
        )
        .route(
            &format!("{R}/servers/{{name}}/tools/{{tool}}/scopes"),
            axum::routing::put(registry::put_tool_scope).delete(registry::delete_tool_scope),
        )
        .route(
            &format!("{R}/servers/{{name}}/tools/{{tool}}/pins"),
            get(registry::tool_pins),
        )
        .route(&format!("{R}/tools"), get(registry::list_tools))
        .route(
            &format!("{R}/agents"),
            get(registry::list_agents).post(registry::create_agent),
        )
        .route(
            &format!("{R}/agents/{{name}}"),
            get(registry::get_agent).patch(registry::patch_agent),
        )
        .route(
            &format!("{R}/agents/{{name}}/scopes"),
            axum::routing::put(registry::put_agent_scope).delete(registry::delete_agent_scope),
        )
        .route(&format!("{R}/history"), get(registry::history))
}

/// What a remote gateway (`warden gateway stdio --remote`) calls, with an agent token.
fn gateway_routes() -> Router<AppState> {
    use crate::routes::gateway as g;
    Router::new()
        .route("/api/v1/gateway/session", get(g::session))
        .route("/api/v1/gateway/registry", get(g::registry))
        .route("/api/v1/gateway/decisions", post(g::decide))
        .route("/api/v1/gateway/events", post(g::record))
        .route("/api/v1/gateway/approvals", post(g::open_approval))
        .route(
            "/api/v1/gateway/approvals/consume",
            post(g::consume_approval),
        )
        .route("/api/v1/gateway/approvals/{id}", get(g::get_approval))
        .route(
            "/api/v1/gateway/approvals/{id}/expire",
            post(g::expire_approval),
        )
        .route(
            "/api/v1/gateway/approvals/{id}/answer",
            post(g::answer_approval),
        )
}

/// A server started in this process.
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: Arc<Notify>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops accepting, finishes in-flight requests, drains the audit queue, signs a final
    /// checkpoint.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.notify_one();
        self.task.await?
    }
}

/// Builds the state from the configuration: store, keys, policies, pipeline.
pub async fn build_state(
    config: ServerConfig,
    checkpoint_key: Option<PathBuf>,
) -> anyhow::Result<AppState> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let database = config
        .database
        .clone()
        .unwrap_or_else(|| Database::in_data_dir(&config.data_dir));
    let store: Arc<dyn Store> = warden_store::open(
        &database,
        OpenOptions {
            migrate: config.migrate_on_start,
            busy_timeout: config.store_busy_timeout,
        },
    )
    .await
    .with_context(|| format!("cannot open the system of record {database}"))?;
    tracing::info!(%database, "system of record open");
    let signer = Arc::new(crate::keys::checkpoint_signer(
        &config.data_dir,
        checkpoint_key.as_deref(),
    )?);
    let redaction_master = crate::keys::redaction_master(&config.data_dir)?;

    let runtime = Arc::new(PolicyRuntime::new(config.policies.clone()));
    if config.policies.is_some()
        && let Reload::Failed { errors, .. } = runtime.reload_dir(true)
    {
        anyhow::bail!(
            "the policy directory does not load:\n  {}",
            errors.join("\n  ")
        );
    }
    crate::bundles::load_api_bundles(store.as_ref(), &runtime).await?;

    config
        .gateway
        .validate()
        .map_err(|e| anyhow::anyhow!("gateway configuration: {e}"))?;
    let pipeline = Arc::new(AuditPipeline::start(store.clone(), config.pipeline));
    let approvals = ApprovalDesk::new(store.clone(), pipeline.clone());
    let registry = Arc::new(
        Registry::load(store.clone())
            .await
            .context("cannot load the registry")?,
    );
    let gateway_config = config.gateway.clone();
    let delivery = Arc::new(warden_delivery::Engine::new(
        store.clone(),
        config.delivery.clone(),
    ));
    // Analytics: the settings are checked now; ClickHouse itself may be down (the feeder
    // retries, decisions never wait on it).
    let analytics = match &config.analytics {
        Some(a) => Some(
            crate::analytics::Analytics::new(store.clone(), a.clone(), &delivery.node)
                .map_err(|e| anyhow::anyhow!("[analytics]: {e}"))?,
        ),
        None => None,
    };
    let state = Arc::new(Inner {
        config,
        store,
        pipeline,
        policies: runtime,
        tokens: TokenCache::default(),
        approvals,
        registry,
        redaction_master,
        signer,
        metrics: Metrics::default(),
        started: Instant::now(),
        gateway: std::sync::OnceLock::new(),
        delivery,
        analytics,
    });
    let governor = Arc::new(crate::gateway::ServerGovernor::new(&state));
    let gateway = warden_gateway::Gateway::start(gateway_config, governor);
    let _ = state.gateway.set(gateway);
    crate::gateway::spawn_registry_sync(&state);
    // The directory as loaded at start is a version too (when it differs from the last one).
    crate::bundles::sync_directory(&state).await;
    // Delivery: the configuration file's destinations
    destinations::declare_configured(&state)
        .await
        .context("cannot declare the configured destinations")?;
    Ok(state)
}

/// Stops what `build_state` started when no HTTP server runs (the stdio gateway): ends the
/// MCP sessions, writes whatever is queued, and signs a final checkpoint.
pub async fn close(state: &AppState) {
    state.gateway().shutdown().await;
    state.pipeline.shutdown().await;
    if let Err(e) = checkpointer::checkpoint_all(state.store.as_ref(), &state.signer).await {
        tracing::warn!(error = %e, "final checkpoint failed");
    }
}

/// Starts serving on the configured address (port 0 picks a free one).
pub async fn start(
    config: ServerConfig,
    checkpoint_key: Option<PathBuf>,
) -> anyhow::Result<Running> {
    let listen = config.listen.clone();
    let state = build_state(config, checkpoint_key).await?;
    let listener = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let shutdown = Arc::new(Notify::new());
    let task = tokio::spawn(run(state.clone(), listener, shutdown.clone()));
    Ok(Running {
        addr,
        state,
        shutdown,
        task,
    })
}

async fn run(state: AppState, listener: TcpListener, shutdown: Arc<Notify>) -> anyhow::Result<()> {
    let (stop_background, stop_rx) = tokio::sync::watch::channel(false);
    let checkpoints = tokio::spawn(checkpointer::run(
        state.store.clone(),
        state.signer.clone(),
        state.pipeline.clone(),
        state.config.checkpoints,
        stop_rx.clone(),
    ));
    let watcher = tokio::spawn(watch_policies(state.clone(), stop_rx.clone()));
    // Retention
    let retention = tokio::spawn(crate::retention_job::run(state.clone(), stop_rx.clone()));
    // Delivery to stream destinations
    let delivery = tokio::spawn(state.delivery.clone().run(stop_rx.clone()));
    // Analytics
    let feeder = state
        .analytics
        .as_ref()
        .and_then(|a| a.spawn_feeder(stop_rx.clone()));
    let registry = tokio::spawn(refresh_registry(state.clone(), stop_rx));

    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    // Answers (SSE above all) go out in several writes; without TCP_NODELAY the last one
    // waits for the client's delayed ACK, some 40 ms.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let signal = shutdown.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { signal.notified().await })
        .await
        .context("HTTP server failed")?;

    // Every request has been answered; end the MCP sessions (recorded), write whatever is
    // still queued, then seal it.
    state.gateway().shutdown().await;
    state.pipeline.shutdown().await;
    let _ = stop_background.send(true);
    let _ = checkpoints.await;
    let _ = watcher.await;
    let _ = registry.await;
    let _ = retention.await;
    let _ = delivery.await;
    // The feeder stops at once (what it has not copied yet stays in the audit log, where the
    // next holder resumes) and gives its lease up, so that another node takes over without
    // waiting for it to expire; a store too slow to answer is not waited for.
    if let Some(mut f) = feeder
        && tokio::time::timeout(FEEDER_STOP, &mut f).await.is_err()
    {
        f.abort();
    }
    if let Err(e) = checkpointer::checkpoint_all(state.store.as_ref(), &state.signer).await {
        tracing::warn!(error = %e, "final checkpoint failed");
    }
    Ok(())
}

/// How long a stopping server waits for the analytics feeder to give its lease up.
const FEEDER_STOP: std::time::Duration = std::time::Duration::from_secs(5);

/// How often the registry checks for changes made by another process (`warden registry`).
pub const REGISTRY_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps the registry snapshot current with changes made outside this server.
async fn refresh_registry(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(REGISTRY_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = state.registry.refresh().await {
            tracing::warn!(error = %e, "could not refresh the registry");
        }
    }
}

/// Polls the policy directory (and reloads at once on SIGHUP), and the store for API-managed
/// bundles applied through another node or the CLI, so that every node of a cluster enforces
/// a change within one poll interval.
async fn watch_policies(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut refused = crate::bundles::Refused::default();
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(state.config.policy_poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let hup_signal = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup_signal = std::future::pending::<()>();
        let force = tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => false,
            _ = hup_signal => true,
        };
        if state.policies.dir.is_some() {
            let runtime = state.policies.clone();
            let outcome = tokio::task::spawn_blocking(move || runtime.reload_dir(force)).await;
            if let Ok(outcome) = outcome {
                let applied = matches!(outcome, Reload::Applied { .. });
                record_reload(&state, outcome).await;
                if applied {
                    crate::bundles::sync_directory(&state).await;
                }
            }
        }
        crate::bundles::sync_api_bundles(&state, &mut refused).await;
    }
}

async fn record_reload(state: &AppState, outcome: Reload) {
    let (event_type, tenants, payload) = match outcome {
        Reload::Unchanged => return,
        Reload::Applied {
            files,
            policies,
            hash,
            tenants,
        } => {
            state.metrics.policy_reloads.inc();
            tracing::info!(files, policies, %hash, "policy directory reloaded");
            (
                catalog::POLICY_RELOADED,
                tenants,
                json!({"files": files, "policies": policies, "content_hash": hash}),
            )
        }
        Reload::Failed { errors, tenants } => {
            state.metrics.policy_reload_failures.inc();
            for e in &errors {
                tracing::error!(error = %e, "policy change refused; previous policies stay in force");
            }
            (
                catalog::POLICY_RELOAD_FAILED,
                tenants,
                json!({"errors": errors}),
            )
        }
    };
    for tenant in tenants {
        let actor = Actor {
            role: Some("system".into()),
            ..Default::default()
        };
        let e = AuditEvent::new(
            &tenant,
            &tenant,
            event_type,
            "warden.system",
            actor,
            payload.clone(),
        );
        if let Err(err) = state.pipeline.record(e).await {
            tracing::error!(error = %err, tenant, "could not record policy reload");
        }
    }
}

/// Resolves when the process is asked to stop (SIGINT or SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Runs until SIGINT/SIGTERM, then shuts down gracefully.
pub async fn serve(config: ServerConfig, checkpoint_key: Option<PathBuf>) -> anyhow::Result<()> {
    let running = start(config, checkpoint_key).await?;
    tracing::info!(addr = %running.addr, "warden is serving");
    eprintln!("warden listening on http://{}", running.addr);
    shutdown_signal().await;
    tracing::info!("shutting down: finishing requests and draining the audit queue");
    running.stop().await
}
