//! Reaching a server the registry describes: its upstream configuration (with secret
//! references resolved at the moment of connecting, never stored), and discovery — connect,
//! `initialize`, list every tool, disconnect — with a deadline, so that a server that hangs
//! or answers garbage gives a clear error and nothing half-done.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use warden_registry::model::{EnvValue, SecretRef, ToolServer, Transport as RegistryTransport};

use crate::upstream::{self, ServerInfo, Transport, UpstreamConfig};

/// Most tool-list pages read from a server being discovered.
const MAX_PAGES: usize = 100;

fn resolve(value: &EnvValue, what: &str) -> Result<String, String> {
    match value {
        EnvValue::Literal(v) => Ok(v.clone()),
        EnvValue::Secret(SecretRef::Env(name)) => std::env::var(name)
            .map_err(|_| format!("{what}: the environment variable {name} is not set for Warden")),
        EnvValue::Secret(SecretRef::File(path)) => std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|e| format!("{what}: cannot read the secret file {path}: {e}")),
    }
}

/// The gateway's upstream for a registered server, named by its alias.
pub fn upstream_config(
    server: &ToolServer,
    timeout: Option<Duration>,
) -> Result<UpstreamConfig, String> {
    let name = server.alias.clone();
    let transport = match &server.transport {
        None => {
            return Err(format!(
                "server {} has no transport in the registry: say how to reach it (a stdio command or a URL)",
                server.name.as_str()
            ));
        }
        Some(RegistryTransport::Stdio { command, args, env }) => {
            let mut vars = BTreeMap::new();
            for v in env {
                match &v.value {
                    Some(value) => {
                        vars.insert(
                            v.name.clone(),
                            resolve(value, &format!("variable {}", v.name))?,
                        );
                    }
                    None if v.is_required => {
                        return Err(format!(
                            "variable {} is required by {} but has no value or secret reference",
                            v.name,
                            server.name.as_str()
                        ));
                    }
                    None => {}
                }
            }
            Transport::Stdio {
                command: command.clone(),
                args: args.clone(),
                env: vars,
                cwd: None,
            }
        }
        Some(RegistryTransport::StreamableHttp { url, headers }) => {
            let mut map = BTreeMap::new();
            for h in headers {
                if let Some(value) = &h.value {
                    map.insert(
                        h.name.clone(),
                        resolve(value, &format!("header {}", h.name))?,
                    );
                }
            }
            Transport::Http {
                url: url.clone(),
                headers: map,
            }
        }
        Some(RegistryTransport::Sse { url, .. }) => {
            return Err(format!(
                "server {} uses the legacy HTTP+SSE transport ({url}), which the gateway does not speak; use its Streamable HTTP endpoint",
                server.name.as_str()
            ));
        }
    };
    Ok(UpstreamConfig {
        name,
        transport,
        timeout,
    })
}

/// What discovery found.
#[derive(Debug)]
pub struct Discovered {
    pub info: Option<ServerInfo>,
    /// Every tool the server listed, as it listed them.
    pub tools: Vec<Value>,
}

/// Connects, lists every tool and disconnects, within `deadline`.
pub async fn discover(config: UpstreamConfig, deadline: Duration) -> Result<Discovered, String> {
    let name = config.name.clone();
    let upstream = upstream::connect(&config);
    let listing = async {
        let mut tools = Vec::new();
        let mut cursor: Option<Value> = None;
        for _ in 0..MAX_PAGES {
            let params = cursor.take().map(|c| json!({ "cursor": c }));
            let result = upstream
                .call("tools/list", params, None)
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("tools/list failed: {}", e.message))?;
            match result.get("tools") {
                Some(Value::Array(page)) => tools.extend(page.iter().cloned()),
                _ => return Err("tools/list returned no `tools` array".to_owned()),
            }
            match result.get("nextCursor") {
                Some(c) if !c.is_null() => cursor = Some(c.clone()),
                _ => return Ok(tools),
            }
        }
        Err(format!("tools/list did not end after {MAX_PAGES} pages"))
    };
    let outcome = tokio::time::timeout(deadline, listing).await;
    let info = upstream.server_info();
    upstream.shutdown().await;
    match outcome {
        Err(_) => Err(format!(
            "server {name} did not list its tools within {} s",
            deadline.as_secs_f64()
        )),
        Ok(Err(e)) => Err(format!("server {name}: {e}")),
        Ok(Ok(tools)) => Ok(Discovered { info, tools }),
    }
}
