//! A destination's settings, as the API, the configuration file and the store hold them, and
//! their validation. Shape errors (unknown fields, wrong types) are the deserializer's;
//! everything else is [`DestinationSpec::validate`], which lists every problem at once.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use warden_audit::export::ExportFormat;
use warden_core::{NamespacePath, TenantId};

use crate::filter::{EventFilter, valid_type_pattern};
use crate::secret::SecretRef;

/// Most custom headers a webhook may send.
pub const MAX_HEADERS: usize = 20;
/// Largest batch of events in one request or write.
pub const MAX_BATCH: u32 = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DestinationKind {
    /// HTTP POST of signed JSON batches.
    Webhook,
    /// The Splunk HTTP Event Collector (`/services/collector/event`).
    SplunkHec,
    /// A local NDJSON file, rotated by size, for log shippers.
    File,
}

impl DestinationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Webhook => "webhook",
            DestinationKind::SplunkHec => "splunk_hec",
            DestinationKind::File => "file",
        }
    }
}

/// Where a new destination starts in its tenant's log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// At the first event: the tenant's whole history is delivered.
    #[default]
    Beginning,
    /// After the last event recorded when the destination is created.
    Now,
}

impl Start {
    pub fn delivery_start(self) -> warden_store::DeliveryStart {
        match self {
            Start::Beginning => warden_store::DeliveryStart::Beginning,
            Start::Now => warden_store::DeliveryStart::Now,
        }
    }
}

/// A destination. Secrets (`secret`, `token`, `verification_token`, secret-shaped headers)
/// are `env:NAME` or `file:/path` references; a literal value is refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    /// Lowercase letters, digits, `-` and `_`, at most 63; unique in the tenant.
    pub name: String,
    pub kind: DestinationKind,
    /// `webhook` and `splunk_hec`: where to send (http or https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `file`: the absolute path of the current file; rotated files get `.1`, `.2`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `ndjson` (Warden JSON, default), `ocsf`, `hec` (default and only choice of
    /// `splunk_hec`) or `cef` (`file` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `webhook`: the HMAC-SHA256 key of `X-Warden-Signature` (reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// `webhook`: sent as `X-Warden-Verification-Token` (reference), optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_token: Option<String>,
    /// `splunk_hec`: the HEC token, sent as `Authorization: Splunk <token>` (reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// `webhook`: up to 20 more headers. A header whose name looks secret (authorization,
    /// cookie, anything with token, key, secret, password) takes a reference.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Event types to send: exact names or `prefix.*`; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<String>,
    /// Only events in this namespace subtree (of the destination's tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Events per request or write (1–1000, default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// Per-request timeout in milliseconds (100–120000, default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Attempts of one batch before its events are dead-lettered (1–1000, default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// First retry delay bound in milliseconds (default 500); doubles per attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_initial_ms: Option<u64>,
    /// Largest retry delay bound in milliseconds (default 60000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_max_ms: Option<u64>,
    /// Consecutive failures that open the circuit breaker (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_failures: Option<u32>,
    /// How long the breaker stays open before one probe, in milliseconds (default 30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_cooldown_ms: Option<u64>,
    /// `file`: rotate when the current file would grow past this many bytes (default 100 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_bytes: Option<u64>,
    /// `file`: rotated files kept besides the current one (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_files: Option<u32>,
    /// Where the destination starts when it is created: `beginning` (default, the tenant's
    /// whole history) or `now` (only events recorded after its creation). Read at creation
    /// only: changing it later does not move the cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Start>,
}

/// The settings with defaults applied, as a worker uses them.
#[derive(Clone, Debug)]
pub struct Settings {
    pub format: ExportFormat,
    pub batch_size: u32,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    pub rotate_bytes: u64,
    pub keep_files: u32,
}

const SECRET_HEADER_WORDS: &[&str] = &[
    "authorization",
    "cookie",
    "token",
    "secret",
    "key",
    "password",
    "auth",
    "signature",
];
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
];

pub fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

fn header_name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

impl DestinationSpec {
    /// Every problem with these settings for a destination of `tenant`; empty when usable.
    /// Messages name the field, never a refused secret value.
    pub fn validate(&self, tenant: &TenantId) -> Vec<String> {
        let mut p = Vec::new();
        if !valid_name(&self.name) {
            p.push("name: use 1 to 63 lowercase letters, digits, '-' or '_', starting with a letter or digit".into());
        }
        let kind = self.kind;
        let needs_url = kind != DestinationKind::File;
        match (&self.url, needs_url) {
            (None, true) => p.push(format!("url: required for kind {}", kind.as_str())),
            (Some(_), false) => p.push("url: not used by kind file (use path)".into()),
            (Some(u), true) => match reqwest::Url::parse(u) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                    if !url.username().is_empty() || url.password().is_some() {
                        p.push(
                            "url: credentials in the URL are refused; use a secret reference"
                                .into(),
                        );
                    }
                }
                Ok(_) => p.push("url: must be an http:// or https:// URL with a host".into()),
                Err(e) => p.push(format!("url: not a URL ({e})")),
            },
            (None, false) => {}
        }
        match (&self.path, kind) {
            (None, DestinationKind::File) => p.push("path: required for kind file".into()),
            (Some(path), DestinationKind::File) => {
                if !path.starts_with('/')
                    || path.split('/').any(|s| s == "..")
                    || path.ends_with('/')
                {
                    p.push("path: must be an absolute file path without `..`".into());
                }
            }
            (Some(_), _) => p.push(format!("path: not used by kind {}", kind.as_str())),
            (None, _) => {}
        }
        let allowed: &[&str] = match kind {
            DestinationKind::Webhook => &["ndjson", "ocsf"],
            DestinationKind::SplunkHec => &["hec"],
            DestinationKind::File => &["ndjson", "ocsf", "hec", "cef"],
        };
        if let Some(f) = &self.format
            && !allowed.contains(&f.as_str())
        {
            p.push(format!(
                "format: {f:?} is not available for kind {}; choose one of {}",
                kind.as_str(),
                allowed.join(", ")
            ));
        }
        let mut secret =
            |field: &str, value: &Option<String>, required: bool, used: bool| match value {
                None if required => p.push(format!("{field}: required for kind {}", kind.as_str())),
                Some(_) if !used => p.push(format!("{field}: not used by kind {}", kind.as_str())),
                Some(v) => {
                    if let Err(e) = SecretRef::parse(v) {
                        p.push(format!("{field}: {e}"));
                    }
                }
                None => {}
            };
        let webhook = kind == DestinationKind::Webhook;
        let hec = kind == DestinationKind::SplunkHec;
        secret("secret", &self.secret, webhook, webhook);
        secret(
            "verification_token",
            &self.verification_token,
            false,
            webhook,
        );
        secret("token", &self.token, hec, hec);
        if !self.headers.is_empty() && !webhook {
            p.push(format!("headers: not used by kind {}", kind.as_str()));
        }
        if self.headers.len() > MAX_HEADERS {
            p.push(format!(
                "headers: {} given, at most {MAX_HEADERS} are allowed",
                self.headers.len()
            ));
        }
        for (name, value) in &self.headers {
            let lower = name.to_ascii_lowercase();
            if !header_name_ok(name) {
                p.push(format!("headers.{name}: not a valid header name"));
            } else if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("x-warden-") {
                p.push(format!("headers.{name}: set by Warden itself"));
            } else if SECRET_HEADER_WORDS.iter().any(|w| lower.contains(w)) {
                if let Err(e) = SecretRef::parse(value) {
                    p.push(format!("headers.{name}: this header carries a secret; {e}"));
                }
            } else if value.len() > 4096 || value.chars().any(char::is_control) {
                p.push(format!(
                    "headers.{name}: value must be printable, at most 4096 bytes"
                ));
            }
        }
        for t in &self.event_types {
            if !valid_type_pattern(t) {
                p.push(format!(
                    "event_types: {t:?} is neither an event type (e.g. authz.decision) nor a prefix pattern (e.g. registry.*)"
                ));
            }
        }
        if let Some(ns) = &self.namespace {
            match NamespacePath::parse(ns) {
                Ok(path) if path.tenant() == *tenant => {}
                Ok(_) => p.push(format!(
                    "namespace: {ns} is not a namespace of tenant {tenant}"
                )),
                Err(e) => p.push(format!("namespace: {e}")),
            }
        }
        let mut range = |field: &str, v: Option<u64>, lo: u64, hi: u64| {
            if let Some(v) = v
                && !(lo..=hi).contains(&v)
            {
                p.push(format!("{field}: {v} is outside {lo}..={hi}"));
            }
        };
        range(
            "batch_size",
            self.batch_size.map(u64::from),
            1,
            u64::from(MAX_BATCH),
        );
        range("timeout_ms", self.timeout_ms, 100, 120_000);
        range("max_attempts", self.max_attempts.map(u64::from), 1, 1000);
        range("backoff_initial_ms", self.backoff_initial_ms, 1, 3_600_000);
        range("backoff_max_ms", self.backoff_max_ms, 1, 3_600_000);
        range(
            "breaker_failures",
            self.breaker_failures.map(u64::from),
            1,
            1000,
        );
        range(
            "breaker_cooldown_ms",
            self.breaker_cooldown_ms,
            1,
            3_600_000,
        );
        range("rotate_bytes", self.rotate_bytes, 1024, 1 << 40);
        range("keep_files", self.keep_files.map(u64::from), 1, 1000);
        if !matches!(kind, DestinationKind::File)
            && (self.rotate_bytes.is_some() || self.keep_files.is_some())
        {
            p.push(format!(
                "rotate_bytes, keep_files: not used by kind {}",
                kind.as_str()
            ));
        }
        p
    }

    pub fn settings(&self) -> Settings {
        let default_format = match self.kind {
            DestinationKind::SplunkHec => ExportFormat::Hec,
            _ => ExportFormat::Ndjson,
        };
        let initial = self.backoff_initial_ms.unwrap_or(500);
        Settings {
            format: self
                .format
                .as_deref()
                .and_then(ExportFormat::parse)
                .unwrap_or(default_format),
            batch_size: self.batch_size.unwrap_or(100),
            timeout: Duration::from_millis(self.timeout_ms.unwrap_or(10_000)),
            max_attempts: self.max_attempts.unwrap_or(10),
            backoff_initial: Duration::from_millis(initial),
            backoff_max: Duration::from_millis(self.backoff_max_ms.unwrap_or(60_000).max(initial)),
            breaker_failures: self.breaker_failures.unwrap_or(5),
            breaker_cooldown: Duration::from_millis(self.breaker_cooldown_ms.unwrap_or(30_000)),
            rotate_bytes: self.rotate_bytes.unwrap_or(100 << 20),
            keep_files: self.keep_files.unwrap_or(5),
        }
    }

    /// The filter of this (validated) destination.
    pub fn filter(&self) -> EventFilter {
        EventFilter::new(
            &self.event_types,
            self.namespace
                .as_deref()
                .and_then(|n| NamespacePath::parse(n).ok()),
        )
    }
}
