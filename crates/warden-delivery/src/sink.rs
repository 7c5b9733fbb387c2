//! Where a batch goes: an HTTP webhook, the Splunk HEC, or a rotating local file. A sink
//! returns `Ok` only once the receiver acknowledged the whole batch (a 2xx answer; for a file,
//! the bytes written and synced), which is when the cursor may move past it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use warden_audit::export::{ExportFormat, ExportRecord};
use warden_store::StoredEvent;

use crate::secret::SecretRef;
use crate::sign;
use crate::spec::{DestinationKind, DestinationSpec, Settings};

pub enum Sink {
    Webhook {
        client: reqwest::Client,
        url: String,
        tenant: String,
        name: String,
        secret: SecretRef,
        verification_token: Option<SecretRef>,
        /// Literal values, or references resolved when sending.
        headers: Vec<(String, HeaderValue)>,
        format: ExportFormat,
    },
    SplunkHec {
        client: reqwest::Client,
        url: String,
        token: SecretRef,
    },
    File {
        path: PathBuf,
        rotate_bytes: u64,
        keep: u32,
        format: ExportFormat,
    },
}

pub enum HeaderValue {
    Literal(String),
    Secret(SecretRef),
}

fn records(events: &[StoredEvent]) -> impl Iterator<Item = ExportRecord<'_>> {
    events.iter().map(|e| ExportRecord {
        event: &e.event,
        seq: e.seq,
        payload_purged: e.payload_json.is_none(),
        payload_json: e.payload_json.as_deref(),
    })
}

impl Sink {
    /// The sink of a validated destination of `tenant`.
    pub fn new(tenant: &str, spec: &DestinationSpec, s: &Settings) -> Result<Sink, String> {
        let client = || {
            reqwest::Client::builder()
                .timeout(s.timeout)
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))
        };
        let reference = |v: &Option<String>, field: &str| {
            v.as_deref()
                .ok_or_else(|| format!("{field} is missing"))
                .and_then(SecretRef::parse)
        };
        Ok(match spec.kind {
            DestinationKind::Webhook => Sink::Webhook {
                client: client()?,
                url: spec.url.clone().ok_or("url is missing")?,
                tenant: tenant.to_owned(),
                name: spec.name.clone(),
                secret: reference(&spec.secret, "secret")?,
                verification_token: spec
                    .verification_token
                    .as_deref()
                    .map(SecretRef::parse)
                    .transpose()?,
                headers: spec
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        let value = match SecretRef::parse(v) {
                            Ok(r) => HeaderValue::Secret(r),
                            Err(_) => HeaderValue::Literal(v.clone()),
                        };
                        (k.clone(), value)
                    })
                    .collect(),
                format: s.format,
            },
            DestinationKind::SplunkHec => Sink::SplunkHec {
                client: client()?,
                url: spec.url.clone().ok_or("url is missing")?,
                token: reference(&spec.token, "token")?,
            },
            DestinationKind::File => Sink::File {
                path: PathBuf::from(spec.path.clone().ok_or("path is missing")?),
                rotate_bytes: s.rotate_bytes,
                keep: s.keep_files,
                format: s.format,
            },
        })
    }

    /// Sends one batch; `Err` says why it was not acknowledged.
    pub async fn send(&self, events: &[StoredEvent]) -> Result<(), String> {
        match self {
            Sink::Webhook {
                client,
                url,
                tenant,
                name,
                secret,
                verification_token,
                headers,
                format,
            } => {
                let body = webhook_body(tenant, name, *format, events);
                let key = secret.resolve()?;
                let ts = chrono::Utc::now().timestamp();
                let mut req = client
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(sign::TIMESTAMP_HEADER, ts.to_string())
                    .header(
                        sign::SIGNATURE_HEADER,
                        sign::signature(key.as_bytes(), ts, &body),
                    );
                if let Some(t) = verification_token {
                    req = req.header(sign::TOKEN_HEADER, t.resolve()?);
                }
                for (k, v) in headers {
                    let v = match v {
                        HeaderValue::Literal(s) => s.clone(),
                        HeaderValue::Secret(r) => r.resolve()?,
                    };
                    req = req.header(k.as_str(), v);
                }
                answer(req.body(body).send().await).await
            }
            Sink::SplunkHec { client, url, token } => {
                let mut body = Vec::with_capacity(events.len() * 1024);
                for r in records(events) {
                    ExportFormat::Hec.write(&mut body, &r);
                }
                let token = token.resolve()?;
                let req = client
                    .post(url)
                    .header(reqwest::header::AUTHORIZATION, format!("Splunk {token}"))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body);
                answer(req.send().await).await
            }
            Sink::File {
                path,
                rotate_bytes,
                keep,
                format,
            } => {
                let mut body = Vec::with_capacity(events.len() * 1024);
                for r in records(events) {
                    format.write(&mut body, &r);
                }
                let (path, rotate, keep) = (path.clone(), *rotate_bytes, *keep);
                tokio::task::spawn_blocking(move || append_rotating(&path, rotate, keep, &body))
                    .await
                    .map_err(|e| format!("file writer failed: {e}"))?
            }
        }
    }
}

/// `{"tenant":…,"destination":…,"events":[…]}`: the events as the format writes them, one
/// JSON value each.
pub fn webhook_body(
    tenant: &str,
    name: &str,
    format: ExportFormat,
    events: &[StoredEvent],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + events.len() * 1024);
    out.extend_from_slice(b"{\"tenant\":");
    serde_json::to_writer(&mut out, tenant).expect("a string serializes");
    out.extend_from_slice(b",\"destination\":");
    serde_json::to_writer(&mut out, name).expect("a string serializes");
    out.extend_from_slice(b",\"events\":[");
    for (i, r) in records(events).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        format.write(&mut out, &r);
        // Each JSON format writes one line; the newline has no place in an array.
        if out.last() == Some(&b'\n') {
            out.pop();
        }
    }
    out.extend_from_slice(b"]}");
    out
}

async fn answer(r: reqwest::Result<reqwest::Response>) -> Result<(), String> {
    let resp = r.map_err(|e| {
        if e.is_timeout() {
            "the receiver did not answer in time".to_owned()
        } else {
            format!("request failed: {e}")
        }
    })?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        let text = resp.text().await.unwrap_or_default();
        let text: String = text.chars().take(200).collect();
        Err(format!("the receiver answered {status}: {text}"))
    }
}

/// Appends `body` to `path`, first rotating when the file would grow past `rotate_bytes`:
/// `path.(keep-1)` → `path.keep` (the oldest dropped), …, `path` → `path.1`. Synced before
/// returning: the cursor moves only past bytes that are on disk.
pub fn append_rotating(
    path: &Path,
    rotate_bytes: u64,
    keep: u32,
    body: &[u8],
) -> Result<(), String> {
    let err = |what: &str, e: std::io::Error| format!("{what} {}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err("cannot create the folder of", e))?;
    }
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if size > 0 && size + body.len() as u64 > rotate_bytes {
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
        let _ = std::fs::remove_file(numbered(keep));
        for n in (1..keep).rev() {
            let from = numbered(n);
            if from.exists() {
                std::fs::rename(&from, numbered(n + 1)).map_err(|e| err("cannot rotate", e))?;
            }
        }
        std::fs::rename(path, numbered(1)).map_err(|e| err("cannot rotate", e))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| err("cannot open", e))?;
    f.write_all(body).map_err(|e| err("cannot write", e))?;
    f.sync_data().map_err(|e| err("cannot sync", e))
}
