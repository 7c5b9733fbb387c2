//! `warden serve` settings: command-line flag, then `WARDEN_*` environment variable, then
//! the TOML file given by `--config`, then the default.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use warden_api::ServerConfig;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (flags and environment win over it).
    #[arg(long, env = "WARDEN_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "WARDEN_LISTEN")]
    listen: Option<String>,
    /// Folder for the keys, the default SQLite database and everything else that must
    /// persist [default: ./warden-data].
    #[arg(long, env = "WARDEN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The system of record: postgres://USER@HOST:PORT/DB or sqlite://PATH
    /// [default: DATA_DIR/warden.db].
    #[arg(long, env = "WARDEN_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// Apply pending PostgreSQL migrations on start; with false, a database that is not
    /// migrated to this version is refused (run `warden migrate`) [default: true].
    #[arg(long, env = "WARDEN_MIGRATE_ON_START", value_name = "BOOL")]
    migrate_on_start: Option<bool>,
    /// Policy directory: POLICIES/<namespace path>/*.cedar, watched for changes.
    #[arg(long, env = "WARDEN_POLICIES")]
    policies: Option<PathBuf>,
    /// Ed25519 checkpoint signing key file [default: DATA_DIR/keys/checkpoint.key, created if absent].
    #[arg(long, env = "WARDEN_CHECKPOINT_KEY")]
    checkpoint_key: Option<PathBuf>,
    /// Largest accepted request body in bytes [default: 2097152].
    #[arg(long, env = "WARDEN_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// Audit events that may wait to be written before requests get 503 [default: 50000].
    #[arg(long, env = "WARDEN_AUDIT_QUEUE_CAPACITY")]
    audit_queue_capacity: Option<usize>,
    /// Sign a checkpoint after this many events [default: 10000].
    #[arg(long, env = "WARDEN_CHECKPOINT_EVERY_EVENTS")]
    checkpoint_every_events: Option<u64>,
    /// Sign a checkpoint at least this often, e.g. 10s [default: 10s].
    #[arg(long, env = "WARDEN_CHECKPOINT_INTERVAL")]
    checkpoint_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database: Option<String>,
    migrate_on_start: Option<bool>,
    policies: Option<PathBuf>,
    checkpoint_key: Option<PathBuf>,
    max_body_bytes: Option<usize>,
    audit_queue_capacity: Option<usize>,
    checkpoint_every_events: Option<u64>,
    checkpoint_interval: Option<String>,
    /// The MCP gateway: `[gateway]` settings and `[[gateway.upstream]]` servers.
    gateway: Option<warden_gateway::GatewayConfig>,
    // Analytics
    /// `[analytics]`: the ClickHouse copy of the audit trail.
    analytics: Option<AnalyticsFile>,
    // Retention
    /// `[retention]`: the scheduled retention run.
    retention: Option<RetentionFile>,
    // Delivery to stream destinations
    /// `[delivery]`: whether this node delivers, how often it polls, its lease.
    delivery: Option<DeliveryFile>,
    /// `[[destinations]]`: each a destination's settings plus its `tenant`.
    destinations: Option<Vec<toml::Table>>,
}

// Analytics
/// `[analytics]` in the config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnalyticsFile {
    /// ClickHouse's HTTP interface, e.g. `http://127.0.0.1:8123`.
    clickhouse_url: String,
    /// [default: warden]
    database: Option<String>,
    /// `month` (default) or `day`: the table's partitions, and so retention's granularity.
    partition: Option<String>,
    /// Most events per insert [default: 20000].
    batch: Option<usize>,
    /// How often to look for new events once caught up, e.g. `1s` [default: 1s].
    interval: Option<String>,
    user: Option<String>,
    /// A reference to the password (`env:NAME` or `file:/path`), never the password.
    password: Option<warden_registry::model::SecretRef>,
    /// How long the feeder's lease lasts unless renewed, e.g. `30s` [default: 10 intervals,
    /// at least 15s].
    lease_ttl: Option<String>,
    /// Drop ClickHouse partitions wholly older than this many days [default: keep forever].
    retention_days: Option<u32>,
}

impl AnalyticsFile {
    fn resolve(self) -> anyhow::Result<warden_analytics::AnalyticsConfig> {
        let mut c = warden_analytics::AnalyticsConfig::new(self.clickhouse_url);
        if let Some(d) = self.database {
            c.database = d;
        }
        if let Some(p) = self.partition {
            c.partition = warden_analytics::Partition::parse(&p).map_err(anyhow::Error::msg)?;
        }
        if let Some(b) = self.batch {
            c.batch = b;
        }
        if let Some(i) = self.interval {
            c.interval = crate::duration::parse(&i).map_err(anyhow::Error::msg)?;
        }
        c.user = self.user;
        c.password = self.password;
        if let Some(t) = self.lease_ttl {
            c.lease_ttl = Some(crate::duration::parse(&t).map_err(anyhow::Error::msg)?);
        }
        c.retention_days = self.retention_days;
        c.validate().map_err(anyhow::Error::msg)?;
        Ok(c)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionFile {
    /// Apply retention rules on a schedule [default: true].
    enabled: Option<bool>,
    /// How often, e.g. 1h [default: 1h].
    interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryFile {
    enabled: Option<bool>,
    /// e.g. `1s`, `250ms`.
    poll_interval: Option<String>,
    /// e.g. `30s`: how long after a node stops renewing another takes over.
    lease_ttl: Option<String>,
}

impl ServeArgs {
    /// Whether any setting of a local server was given (flag or environment).
    pub fn any_local(&self) -> bool {
        self.config.is_some()
            || self.listen.is_some()
            || self.data_dir.is_some()
            || self.database.is_some()
            || self.migrate_on_start.is_some()
            || self.policies.is_some()
            || self.checkpoint_key.is_some()
            || self.max_body_bytes.is_some()
            || self.audit_queue_capacity.is_some()
            || self.checkpoint_every_events.is_some()
            || self.checkpoint_interval.is_some()
    }

    pub fn resolve(self) -> anyhow::Result<(ServerConfig, Option<PathBuf>)> {
        let file: FileConfig = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("config {} is not valid", path.display()))?
            }
            None => FileConfig::default(),
        };
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./warden-data"));
        let mut c = ServerConfig::new(data_dir);
        c.database = self
            .database
            .or(file.database)
            .map(|d| warden_store::Database::parse(&d))
            .transpose()?;
        if let Some(m) = self.migrate_on_start.or(file.migrate_on_start) {
            c.migrate_on_start = m;
        }
        if let Some(l) = self.listen.or(file.listen) {
            c.listen = l;
        }
        c.policies = self.policies.or(file.policies);
        if let Some(p) = &c.policies
            && !p.is_dir()
        {
            anyhow::bail!("policy directory {} does not exist", p.display());
        }
        if let Some(n) = self.max_body_bytes.or(file.max_body_bytes) {
            c.max_body_bytes = n;
        }
        if let Some(n) = self.audit_queue_capacity.or(file.audit_queue_capacity) {
            c.pipeline.queue_capacity = n.max(1);
        }
        if let Some(n) = self
            .checkpoint_every_events
            .or(file.checkpoint_every_events)
        {
            c.checkpoints.every_events = n.max(1);
        }
        if let Some(s) = self.checkpoint_interval.or(file.checkpoint_interval) {
            c.checkpoints.every = crate::duration::parse(&s).map_err(anyhow::Error::msg)?;
        }
        if let Some(g) = file.gateway {
            g.validate()
                .map_err(|e| anyhow::anyhow!("[gateway] in the config file: {e}"))?;
            c.gateway = g;
        }
        if let Some(r) = file.retention {
            if let Some(e) = r.enabled {
                c.retention.enabled = e;
            }
            if let Some(s) = r.interval {
                c.retention.interval = crate::duration::parse(&s)
                    .map_err(|e| anyhow::anyhow!("[retention] interval in the config file: {e}"))?;
            }
        }
        // Delivery to stream destinations
        if let Some(d) = file.delivery {
            if let Some(e) = d.enabled {
                c.delivery.enabled = e;
            }
            if let Some(p) = d.poll_interval {
                c.delivery.poll_interval = delivery_duration(&p)
                    .map_err(|e| anyhow::anyhow!("[delivery] poll_interval: {e}"))?;
            }
            if let Some(t) = d.lease_ttl {
                c.delivery.lease_ttl = delivery_duration(&t)
                    .map_err(|e| anyhow::anyhow!("[delivery] lease_ttl: {e}"))?;
            }
        }
        for (i, mut table) in file
            .destinations
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let tenant = match table.remove("tenant") {
                Some(toml::Value::String(t)) => warden_core::TenantId::parse(&t)?,
                _ => anyhow::bail!(
                    "[[destinations]] entry {}: `tenant` (a string) is required",
                    i + 1
                ),
            };
            let spec: warden_delivery::DestinationSpec = toml::Value::Table(table)
                .try_into()
                .with_context(|| format!("[[destinations]] entry {}", i + 1))?;
            let problems = spec.validate(&tenant);
            if !problems.is_empty() {
                anyhow::bail!(
                    "[[destinations]] {} of tenant {tenant}: {}",
                    spec.name,
                    problems.join("; ")
                );
            }
            c.destinations.push((tenant, spec));
        }
        if let Some(a) = file.analytics {
            c.analytics = Some(
                a.resolve()
                    .context("[analytics] in the config file is not valid")?,
            );
        }
        c.policy_poll = Duration::from_secs(1);
        Ok((c, self.checkpoint_key.or(file.checkpoint_key)))
    }
}

/// `250ms` besides the units of [`crate::duration::parse`]: polling runs below a second.
fn delivery_duration(s: &str) -> Result<Duration, String> {
    match s.trim().strip_suffix("ms") {
        Some(n) => match n.parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
            _ => Err(format!("{s:?} is not a duration like 250ms or 2s")),
        },
        None => crate::duration::parse(s),
    }
}

// Analytics
#[cfg(test)]
mod analytics_tests {
    use super::*;

    fn analytics(toml_text: &str) -> anyhow::Result<warden_analytics::AnalyticsConfig> {
        let file: FileConfig = toml::from_str(toml_text)?;
        file.analytics.expect("[analytics]").resolve()
    }

    #[test]
    fn analytics_section_reads_every_setting() {
        let c = analytics(
            r#"
            [analytics]
            clickhouse_url = "http://127.0.0.1:8123"
            database = "audit"
            partition = "day"
            batch = 5000
            interval = "5s"
            user = "warden"
            password = "env:CLICKHOUSE_PASSWORD"
            lease_ttl = "1m"
            retention_days = 400
            "#,
        )
        .unwrap();
        assert_eq!(c.database, "audit");
        assert_eq!(c.partition, warden_analytics::Partition::Day);
        assert_eq!(c.batch, 5000);
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!(c.user.as_deref(), Some("warden"));
        assert_eq!(c.lease_ttl, Some(Duration::from_secs(60)));
        assert_eq!(c.retention_days, Some(400));
        let defaults = analytics("[analytics]\nclickhouse_url = \"http://ch:8123\"").unwrap();
        assert_eq!(defaults.database, "warden");
        assert_eq!(defaults.partition, warden_analytics::Partition::Month);
        assert_eq!(defaults.retention_days, None, "kept forever");
        assert_eq!(defaults.lease_ttl(), Duration::from_secs(15));
    }

    #[test]
    fn analytics_section_refuses_bad_settings() {
        for (bad, why) in [
            (
                "clickhouse_url = \"http://ch:8123\"\npassword = \"hunter2\"",
                "secret",
            ),
            (
                "clickhouse_url = \"http://ch:8123\"\npartition = \"week\"",
                "partition",
            ),
            ("clickhouse_url = \"ftp://ch\"", "http"),
            ("clickhouse_url = \"http://u:p@ch:8123\"", "credentials"),
            (
                "clickhouse_url = \"http://ch:8123\"\ndatabase = \"a;b\"",
                "identifier",
            ),
            ("clickhouse_url = \"http://ch:8123\"\nbatch = 0", "batch"),
            (
                "clickhouse_url = \"http://ch:8123\"\nretention_days = 0",
                "retention_days",
            ),
            (
                "clickhouse_url = \"http://ch:8123\"\ninterval = \"10s\"\nlease_ttl = \"15s\"",
                "lease_ttl",
            ),
            (
                "clickhouse_url = \"http://ch:8123\"\nretention = 3",
                "unknown field",
            ),
        ] {
            let err = analytics(&format!("[analytics]\n{bad}")).unwrap_err();
            assert!(format!("{err:#}").contains(why), "{bad}: {err:#}");
        }
    }
}
