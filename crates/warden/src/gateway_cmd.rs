//! `warden gateway stdio`: the gateway for agents that spawn their MCP servers themselves.
//! The agent runs Warden in place of the server; Warden runs the server, and every message
//! between them passes the same governance as `/mcp`, recorded in the same store — or, with
//! `--remote`, decided, recorded and approved by a Warden server elsewhere.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use warden_gateway::upstream::{Transport, UpstreamConfig};
use warden_gateway::{Gateway, GatewayConfig};

use crate::config::ServeArgs;
use crate::remote::RemoteGovernor;

/// How long the records of completed calls may take to reach a remote server at exit.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(10);

#[derive(Subcommand, Debug)]
pub enum GatewayCommand {
    /// Govern an MCP server spoken to over stdio: `warden gateway stdio --token T -- npx server`.
    Stdio(StdioArgs),
}

#[derive(Args, Debug)]
pub struct StdioArgs {
    /// The agent token (an agent session) whose calls are governed.
    #[arg(long, env = "WARDEN_TOKEN", hide_env_values = true)]
    token: String,
    /// The server's name in policies and the audit trail (`Tool::"<server>__<tool>"`)
    /// [default: the command's file name].
    #[arg(long, env = "WARDEN_GATEWAY_SERVER")]
    server: Option<String>,
    /// A Warden server (`https://warden.example:8080`) that identifies the token, decides,
    /// records and holds approvals; the MCP server still runs here. Without it, the local
    /// data directory and policies are used.
    #[arg(long, env = "WARDEN_REMOTE", value_name = "URL")]
    remote: Option<String>,
    /// How long to wait for the remote server per request, e.g. 10s (long-polls for an
    /// approval wait longer).
    #[arg(long, env = "WARDEN_REMOTE_TIMEOUT", default_value = "10s", value_parser = crate::duration::parse)]
    remote_timeout: Duration,
    #[command(flatten)]
    settings: ServeArgs,
    /// The server command and its arguments (after `--`, or after the last option).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<String>,
}

pub async fn run(cmd: GatewayCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GatewayCommand::Stdio(args) => stdio(args).await,
    }
}

async fn stdio(args: StdioArgs) -> anyhow::Result<ExitCode> {
    let (program, rest) = args
        .command
        .split_first()
        .context("give the server command after `--`")?;
    let name = match args.server {
        Some(n) => n,
        None => server_name(&args.command),
    };
    let upstream = UpstreamConfig {
        name: name.clone(),
        transport: Transport::Stdio {
            command: program.clone(),
            args: rest.to_vec(),
            env: std::env::vars()
                .filter(|(k, _)| !k.starts_with("WARDEN_"))
                .collect(),
            cwd: None,
        },
        timeout: None,
    };
    if let Some(url) = &args.remote {
        if args.settings.any_local() {
            tracing::warn!(
                "--remote is set: the local settings (--config, --data-dir, --policies, …) are not used"
            );
        }
        return remote(url, &args.token, args.remote_timeout, upstream).await;
    }
    let (mut config, key) = args.settings.resolve()?;
    config.gateway.upstreams = vec![upstream];
    // Only this agent's session uses the server: it answers the server's own requests.
    config.gateway.one_session = true;
    config
        .gateway
        .validate()
        .map_err(|e| anyhow::anyhow!("{e} (choose one with --server)"))?;
    let state = warden_api::build_state(config, key).await?;
    let gateway = state.gateway().clone();
    let identity = match gateway.governor.authenticate(&args.token).await {
        Ok(i) => i,
        Err(e) => {
            warden_api::server::close(&state).await;
            anyhow::bail!("the token was refused: {e}");
        }
    };
    let served = warden_gateway::stdio::serve(
        gateway.clone(),
        identity,
        Some(name),
        tokio::io::stdin(),
        tokio::io::stdout(),
    )
    .await;
    gateway.shutdown().await;
    warden_api::server::close(&state).await;
    served.context("stdio transport failed")?;
    Ok(ExitCode::SUCCESS)
}

/// The remote mode: the server's identity of the token, its settings, decisions, records and
/// approvals; the MCP server and the session here.
async fn remote(
    url: &str,
    token: &str,
    timeout: Duration,
    upstream: UpstreamConfig,
) -> anyhow::Result<ExitCode> {
    let (governor, settings) = RemoteGovernor::connect(url, token, timeout)
        .await
        .map_err(|e| match e {
            warden_core::Error::Unauthenticated(m) | warden_core::Error::Forbidden(m) => {
                anyhow::anyhow!("the token was refused: {m}")
            }
            other => anyhow::anyhow!("cannot start: {other}"),
        })?;
    // The server's gateway settings apply, so that a call held here waits as long as one
    // held by the server would.
    let config = GatewayConfig {
        upstreams: vec![upstream],
        approval_timeout: Duration::try_from_secs_f64(settings.approval_timeout_secs)
            .unwrap_or(GatewayConfig::default().approval_timeout),
        progress_interval: Duration::try_from_secs_f64(settings.progress_interval_secs)
            .unwrap_or(GatewayConfig::default().progress_interval),
        elicitation_approvals: settings.elicitation_approvals,
        registry: settings.registry,
        one_session: true,
        ..GatewayConfig::default()
    };
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("{e} (choose one with --server)"))?;
    let identity = governor.identity().clone();
    let scope = config.upstreams[0].name.clone();
    let gateway = Gateway::start(
        config,
        governor.clone() as Arc<dyn warden_gateway::Governor>,
    );
    let served = warden_gateway::stdio::serve(
        gateway.clone(),
        identity,
        Some(scope),
        tokio::io::stdin(),
        tokio::io::stdout(),
    )
    .await;
    gateway.shutdown().await;
    governor.flush(FLUSH_AT_EXIT).await;
    served.context("stdio transport failed")?;
    Ok(ExitCode::SUCCESS)
}

/// Programs that run a server rather than being one: the name comes from their argument.
const LAUNCHERS: [&str; 9] = [
    "npx", "uvx", "node", "python", "python3", "deno", "bun", "pipx", "docker",
];

/// `npx -y @modelcontextprotocol/server-everything` → `server-everything`: a name usable as
/// a prefix (letters, digits, `-`).
fn server_name(command: &[String]) -> String {
    let base = command
        .iter()
        .map(|c| c.rsplit('/').next().unwrap_or(c))
        .find(|c| !c.starts_with('-') && !LAUNCHERS.contains(c) && *c != "run")
        .unwrap_or("server");
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = cleaned.trim_matches('-');
    if trimmed.is_empty() {
        "server".into()
    } else {
        trimmed.chars().take(64).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::server_name;

    fn name(parts: &[&str]) -> String {
        server_name(&parts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn names_come_from_the_server_not_the_launcher() {
        assert_eq!(
            name(&["npx", "-y", "@modelcontextprotocol/server-everything"]),
            "server-everything"
        );
        assert_eq!(
            name(&["/usr/local/bin/mcp-server-git", "--repo", "."]),
            "mcp-server-git"
        );
        assert_eq!(name(&["python3", "server.py"]), "server-py");
        assert_eq!(name(&["npx"]), "server");
    }
}
