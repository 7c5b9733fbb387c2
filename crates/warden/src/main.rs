//! `warden`: one binary for the server and every administrative command.

mod approvals_cmd;
mod audit_cmd;
mod config;
mod duration;
mod gateway_cmd;
mod memory;
mod migrate_cmd;
mod policy_cmd;
mod policy_server_cmd;
mod registry_check;
mod registry_cmd;
mod remote;
mod retention_cmd;
mod simulate_cmd;
mod token_cmd;
// Delivery to stream destinations
mod destinations_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Many small allocations are made on request tasks and freed on the audit writer's thread
/// (and the reverse); mimalloc handles that far better than glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "warden",
    version,
    about = "Governance for AI agents: decide, record and prove every agent action."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (decision API, MCP gateway, audit API, metrics).
    Serve(config::ServeArgs),
    /// Run the MCP gateway for one agent over stdio.
    #[command(subcommand)]
    Gateway(gateway_cmd::GatewayCommand),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(token_cmd::TokenCommand),
    /// Verify and export the audit trail.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// Check policies before they go live.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCommand),
    /// List, approve and deny held agent actions.
    #[command(subcommand)]
    Approvals(approvals_cmd::ApprovalsCommand),
    /// The registry of tool servers, tools and agents: import, list, lifecycle.
    #[command(subcommand)]
    Registry(registry_cmd::RegistryCommand),
    /// Apply the database migrations this version needs (PostgreSQL or SQLite).
    Migrate(migrate_cmd::MigrateArgs),
    /// Stream destinations of the audit log: state, and replay of dead letters.
    #[command(subcommand)]
    Destinations(destinations_cmd::DestinationsCommand),
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    memory::purge_at_once();
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                let (config, key) = args.resolve()?;
                warden_api::serve(config, key)
                    .await
                    .map(|_| ExitCode::SUCCESS)
            }
            Command::Token(cmd) => token_cmd::run(cmd).await,
            Command::Audit(cmd) => audit_cmd::run(cmd).await,
            Command::Policy(cmd) => policy_cmd::run(cmd),
            Command::Approvals(cmd) => approvals_cmd::run(cmd).await,
            Command::Registry(cmd) => registry_cmd::run(cmd).await,
            Command::Gateway(cmd) => gateway_cmd::run(cmd).await,
            Command::Migrate(args) => migrate_cmd::run(args).await,
            Command::Destinations(cmd) => destinations_cmd::run(cmd).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
