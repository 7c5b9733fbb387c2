//! `warden gateway stdio`: the gateway for agents that spawn their MCP servers themselves.
//! The agent runs Warden in place of the server; Warden runs the server, and every message
//! between them passes the same governance as `/mcp`, recorded in the same store.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use warden_gateway::upstream::{Transport, UpstreamConfig};

use crate::config::ServeArgs;

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
    let (mut config, key) = args.settings.resolve()?;
    config.gateway.upstreams = vec![UpstreamConfig {
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
    }];
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
