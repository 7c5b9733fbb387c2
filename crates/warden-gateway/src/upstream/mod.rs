//! Connections from the gateway to the MCP servers it governs ("upstreams").
//!
//! One connection per configured server, shared by every agent session: the gateway
//! rewrites request ids and progress tokens so that calls of different agents never collide
//! on the wire, and routes what the server sends back (responses, progress, and requests
//! from server to client such as sampling or elicitation) to the call it belongs to.
//!
//! Two transports: a child process speaking newline-delimited JSON-RPC on stdio (restarted
//! with backoff when it dies) and a remote Streamable HTTP server (with headers that Warden
//! holds; the agent's own token never goes upstream).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::jsonrpc::{Notification, Request, RpcError};

pub mod http;
mod mux;
pub mod sse;
pub mod stdio;

/// How to reach one upstream server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "transport", rename_all = "snake_case", deny_unknown_fields)]
pub enum Transport {
    /// A child process speaking MCP over stdin/stdout.
    Stdio {
        command: String,
        #[serde(default)]
        args: Vec<String>,
        /// Extra environment for the child (the gateway's own environment is not inherited
        /// beyond `PATH`, `HOME`, `LANG` and `TMPDIR`, so that Warden's secrets stay out).
        #[serde(default)]
        env: BTreeMap<String, String>,
        #[serde(default)]
        cwd: Option<PathBuf>,
    },
    /// A remote server speaking Streamable HTTP.
    Http {
        url: String,
        /// Headers sent with every request (credentials for the upstream).
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
}

/// One upstream as configured. Read through [`RawUpstream`]: serde cannot refuse unknown
/// keys of a flattened enum, and a misspelt key must not be silently ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawUpstream")]
pub struct UpstreamConfig {
    /// The server's name in the gateway: tools appear to agents as `<name>__<tool>`.
    /// Letters, digits, `-` and `_`... but never `__`.
    pub name: String,
    #[serde(flatten)]
    pub transport: Transport,
    /// How long one request may take before the agent gets an error (default 60 s).
    #[serde(default, serialize_with = "opt_secs::serialize")]
    pub timeout: Option<Duration>,
}

/// An upstream as written in the configuration file, every key known.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: String,
    transport: String,
    command: Option<String>,
    args: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    cwd: Option<PathBuf>,
    url: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    timeout: Option<f64>,
}

impl TryFrom<RawUpstream> for UpstreamConfig {
    type Error = String;

    fn try_from(r: RawUpstream) -> Result<Self, String> {
        let name = r.name;
        let foreign = |keys: &[(&str, bool)], transport: &str| -> Result<(), String> {
            match keys.iter().find(|(_, present)| *present) {
                Some((key, _)) => Err(format!(
                    "upstream {name:?}: `{key}` does not apply to transport \"{transport}\""
                )),
                None => Ok(()),
            }
        };
        let transport = match r.transport.as_str() {
            "stdio" => {
                foreign(
                    &[("url", r.url.is_some()), ("headers", r.headers.is_some())],
                    "stdio",
                )?;
                Transport::Stdio {
                    command: r
                        .command
                        .ok_or_else(|| format!("upstream {name:?}: stdio needs `command`"))?,
                    args: r.args.unwrap_or_default(),
                    env: r.env.unwrap_or_default(),
                    cwd: r.cwd,
                }
            }
            "http" => {
                foreign(
                    &[
                        ("command", r.command.is_some()),
                        ("args", r.args.is_some()),
                        ("env", r.env.is_some()),
                        ("cwd", r.cwd.is_some()),
                    ],
                    "http",
                )?;
                Transport::Http {
                    url: r
                        .url
                        .ok_or_else(|| format!("upstream {name:?}: http needs `url`"))?,
                    headers: r.headers.unwrap_or_default(),
                }
            }
            other => {
                return Err(format!(
                    "upstream {name:?}: unknown transport {other:?} (use \"stdio\" or \"http\")"
                ));
            }
        };
        let timeout = r
            .timeout
            .map(|s| {
                Duration::try_from_secs_f64(s).map_err(|_| {
                    format!("upstream {name:?}: timeout must be a positive number of seconds")
                })
            })
            .transpose()?;
        Ok(UpstreamConfig {
            name,
            transport,
            timeout,
        })
    }
}

impl UpstreamConfig {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Self::DEFAULT_TIMEOUT)
    }
}

mod opt_secs {
    use std::time::Duration;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}

/// Something the upstream sent during a call that is not the call's final response.
#[derive(Debug)]
pub enum ServerMessage {
    /// A notification related to the call, e.g. `notifications/progress` (with the agent's
    /// own progress token restored) or `notifications/message`.
    Notification(Notification),
    /// A request from server to client (`sampling/createMessage`, `elicitation/create`,
    /// `roots/list`, `ping`). The gateway forwards it to the agent and sends the agent's
    /// answer through `reply`; dropping `reply` answers the server with an error.
    Request {
        request: Request,
        reply: oneshot::Sender<Result<Value, RpcError>>,
    },
}

/// Why a call got no answer from the server.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {server} did not answer within {timeout:?}")]
    Timeout { server: String, timeout: Duration },
    #[error("upstream {server} is unavailable: {reason}")]
    Unavailable { server: String, reason: String },
    #[error("upstream {server} closed the connection during the call: {reason}")]
    Crashed { server: String, reason: String },
    #[error("upstream {server} sent an invalid message: {reason}")]
    Protocol { server: String, reason: String },
}

/// The health of an upstream, for `/readyz`, `/metrics` and the agents' tool lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Health {
    Starting,
    Ready,
    /// Down; the transport is retrying (`restarts` so far).
    Down {
        reason: String,
        restarts: u64,
    },
}

/// What the server said about itself in `initialize`.
#[derive(Clone, Debug, Default)]
pub struct ServerInfo {
    pub protocol_version: String,
    pub capabilities: Value,
    pub server_info: Value,
    pub instructions: Option<String>,
}

/// A live connection to one upstream server. Implementations initialise the MCP session
/// themselves (and again after a restart), declaring the client capabilities the gateway
/// forwards: sampling, elicitation, roots.
#[async_trait::async_trait]
pub trait Upstream: Send + Sync {
    fn name(&self) -> &str;

    /// Sends a request and waits for its response. `events` receives what the server sends
    /// about this call before answering (progress, logging, server-to-client requests). If
    /// the returned future is dropped before the answer, the server is sent
    /// `notifications/cancelled` for the call. `Ok(Err(_))` is the server's own JSON-RPC
    /// error; `Err(_)` means no answer came.
    async fn call(
        &self,
        method: &str,
        params: Option<Value>,
        events: Option<mpsc::Sender<ServerMessage>>,
    ) -> Result<Result<Value, RpcError>, UpstreamError>;

    /// Sends a notification (e.g. `notifications/roots/list_changed`).
    async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), UpstreamError>;

    /// Notifications that belong to no call (`notifications/tools/list_changed`,
    /// `notifications/resources/updated`, …), for every subscriber.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Notification>;

    /// Where the server's requests that belong to no call go (e.g. the `roots/list` a
    /// server sends right after `initialize`), instead of being refused. `ping` is always
    /// answered by the connection itself.
    fn serve_unrelated(&self, _requests: mpsc::Sender<ServerMessage>) {}

    /// What `initialize` returned, once connected.
    fn server_info(&self) -> Option<ServerInfo>;

    fn health(&self) -> Health;

    /// Stops the connection (terminates a child process, ends the HTTP session).
    async fn shutdown(&self);
}

/// Connects to an upstream as configured; returns at once, the connection is made (and
/// remade) in the background. Use [`Upstream::health`] to see whether it is ready.
pub fn connect(config: &UpstreamConfig) -> std::sync::Arc<dyn Upstream> {
    match &config.transport {
        Transport::Stdio { .. } => stdio::StdioUpstream::start(config.clone()),
        Transport::Http { .. } => http::HttpUpstream::start(config.clone()),
    }
}
