//! Shared server state and the configuration it was built from.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use warden_audit::checkpoint::{CheckpointSigner, CheckpointVerifier};
use warden_audit::redact::{Redactor, tenant_key};
use warden_core::metrics::{Counter, Histogram};
use warden_store::Store;
use warden_store::checkpointer::CheckpointPolicy;
use warden_store::pipeline::{AuditPipeline, PipelineConfig};

use crate::approvals::ApprovalDesk;
use crate::policies::PolicyRuntime;
use crate::registry::Registry;
use crate::tokens::TokenCache;

/// Largest request body accepted by default (2 MiB): room for a batch of 1,000 decisions.
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Most items in one batch (`/authorize/batch`, `/events`).
pub const MAX_BATCH_ITEMS: usize = 1000;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: String,
    /// Keys and everything else that must persist besides the database.
    pub data_dir: PathBuf,
    /// The system of record; `None`: the SQLite file in the data directory.
    pub database: Option<warden_store::Database>,
    /// Apply pending PostgreSQL migrations on start; when false, a database that lacks one is
    /// refused (run `warden migrate`).
    pub migrate_on_start: bool,
    pub policies: Option<PathBuf>,
    pub max_body_bytes: usize,
    pub pipeline: PipelineConfig,
    pub checkpoints: CheckpointPolicy,
    /// How often the policy directory is checked for changes.
    pub policy_poll: Duration,
    /// How long a write waits for the database lock before the request fails with 503.
    pub store_busy_timeout: Duration,
    /// The MCP gateway: upstream servers and session settings.
    pub gateway: warden_gateway::GatewayConfig,
    // Retention
    /// When and whether the server applies retention rules.
    pub retention: crate::retention_job::RetentionSchedule,
    // Delivery to stream destinations
    pub delivery: warden_delivery::DeliveryConfig,
    /// `[[destinations]]` of the configuration file: (tenant, settings).
    pub destinations: Vec<(warden_core::TenantId, warden_delivery::DestinationSpec)>,
    // Analytics
    /// The ClickHouse copy of the audit trail (`[analytics]`); `None`: reports read the
    /// system of record.
    pub analytics: Option<warden_analytics::AnalyticsConfig>,
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            data_dir,
            database: None,
            migrate_on_start: true,
            policies: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            pipeline: PipelineConfig::default(),
            checkpoints: CheckpointPolicy::default(),
            policy_poll: Duration::from_secs(1),
            store_busy_timeout: warden_store::sqlite::DEFAULT_BUSY_TIMEOUT,
            gateway: warden_gateway::GatewayConfig::default(),
            retention: Default::default(),
            delivery: warden_delivery::DeliveryConfig::default(),
            destinations: Vec::new(),
            analytics: None,
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    pub decisions_allow: Counter,
    pub decisions_deny: Counter,
    pub decisions_ask: Counter,
    pub decision_errors: Counter,
    pub decision_latency: std::sync::OnceLock<Histogram>,
    pub policy_reloads: Counter,
    pub policy_reload_failures: Counter,
    pub events_ingested: Counter,
    pub events_rejected: Counter,
    /// Shadow disagreements by (tenant, policy, from, to).
    pub shadow_disagreements: std::sync::Mutex<std::collections::BTreeMap<[String; 4], u64>>,
}

impl Metrics {
    pub fn decision_latency(&self) -> &Histogram {
        self.decision_latency.get_or_init(Histogram::latency)
    }
    pub fn shadow_disagreement(&self, tenant: &str, policy: &str, from: &str, to: &str) {
        let mut m = self.shadow_disagreements.lock().expect("shadow metrics");
        *m.entry([tenant.into(), policy.into(), from.into(), to.into()])
            .or_default() += 1;
    }
    pub fn count(&self, o: warden_core::Outcome) {
        match o {
            warden_core::Outcome::Allow => self.decisions_allow.inc(),
            warden_core::Outcome::Deny => self.decisions_deny.inc(),
            warden_core::Outcome::ApprovalRequired => self.decisions_ask.inc(),
        }
    }
}

pub struct Inner {
    pub config: ServerConfig,
    pub store: Arc<dyn Store>,
    pub pipeline: Arc<AuditPipeline>,
    pub policies: Arc<PolicyRuntime>,
    pub tokens: TokenCache,
    /// Approval requests: held actions waiting for a person.
    pub approvals: ApprovalDesk,
    /// The registry of tool servers, tools and agents, and its in-memory snapshot.
    pub registry: Arc<Registry>,
    pub redaction_master: [u8; 32],
    pub signer: Arc<CheckpointSigner>,
    pub metrics: Metrics,
    pub started: Instant,
    /// The MCP gateway, set once right after the state is built (it refers back to it).
    pub gateway: std::sync::OnceLock<Arc<warden_gateway::Gateway>>,
    // Delivery to stream destinations
    pub delivery: Arc<warden_delivery::Engine>,
    // Analytics
    /// The ClickHouse feeder and reports, when `[analytics]` is configured.
    pub analytics: Option<crate::analytics::Analytics>,
}

pub type AppState = Arc<Inner>;

impl Inner {
    pub fn gateway(&self) -> &Arc<warden_gateway::Gateway> {
        self.gateway
            .get()
            .expect("the gateway is started with the state")
    }

    pub fn redactor(&self, tenant: &str) -> Redactor {
        Redactor::new(tenant_key(&self.redaction_master, tenant))
    }

    pub fn verifier(&self) -> CheckpointVerifier {
        self.signer.verifier()
    }
}
