//! `warden destinations list|replay`: over the store directly, so they work whether or not a
//! server runs (replay sends from this process; the change is recorded in the audit trail).

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;
use warden_core::{Actor, TenantId, catalog};

use crate::token_cmd::StoreArgs;

#[derive(Subcommand, Debug)]
pub enum DestinationsCommand {
    /// The destinations with their cursor, lag, circuit state and dead letters.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Only this tenant's [default: every tenant].
        #[arg(long)]
        tenant: Option<String>,
        /// One JSON object per destination instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send a destination's dead letters again; those acknowledged are removed.
    Replay {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        tenant: String,
        /// The destination's name.
        name: String,
        /// Who replays, recorded in the audit trail [default: the OS user, $USER].
        #[arg(long)]
        by: Option<String>,
    },
}

pub async fn run(cmd: DestinationsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DestinationsCommand::List {
            store,
            tenant,
            json: as_json,
        } => {
            let tenant = tenant.as_deref().map(TenantId::parse).transpose()?;
            let store = store.open_existing().await?;
            let all = store.list_destinations(tenant.as_ref()).await?;
            if !as_json {
                println!(
                    "{:<12} {:<20} {:<10} {:>10} {:>8} {:<9} {:>6}  LAST ERROR",
                    "TENANT", "NAME", "KIND", "NEXT SEQ", "LAG", "CIRCUIT", "DEAD"
                );
            }
            for d in all {
                let s = store.delivery_state(&d.tenant, &d.name).await?;
                let size = store.merkle_head(&d.tenant).await?.size;
                let kind = d.spec["kind"].as_str().unwrap_or("?").to_owned();
                let lag = size.saturating_sub(s.next_seq);
                if as_json {
                    println!(
                        "{}",
                        json!({"tenant": d.tenant, "name": d.name, "origin": d.origin, "settings": d.spec,
                            "next_seq": s.next_seq, "log_size": size, "lag": lag, "circuit": s.circuit,
                            "dead_letters": s.dead_letters, "last_error": s.last_error,
                            "lease_owner": s.lease_owner})
                    );
                } else {
                    println!(
                        "{:<12} {:<20} {:<10} {:>10} {:>8} {:<9} {:>6}  {}",
                        d.tenant.as_str(),
                        d.name,
                        kind,
                        s.next_seq,
                        lag,
                        s.circuit,
                        s.dead_letters,
                        s.last_error.as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DestinationsCommand::Replay {
            store,
            tenant,
            name,
            by,
        } => {
            let tenant = TenantId::parse(&tenant)?;
            let who = match by.or_else(|| std::env::var("USER").ok()) {
                Some(n) if !n.trim().is_empty() && !n.chars().any(char::is_control) => n,
                _ => anyhow::bail!("who is replaying? pass --by NAME ($USER is not set)"),
            };
            let store = store.open_existing().await?;
            let d = store
                .get_destination(&tenant, &name)
                .await?
                .ok_or_else(|| anyhow::anyhow!("tenant {tenant} has no destination {name}"))?;
            let report = warden_delivery::replay(store.as_ref(), &d).await?;
            let actor = Actor {
                role: Some("cli".into()),
                on_behalf_of: Some(who),
                ..Default::default()
            };
            let e = warden_api::routes::destinations::event(
                &tenant,
                catalog::DESTINATION_REPLAYED,
                "warden.cli",
                actor,
                json!({"destination": name, "delivered": report.delivered,
                    "remaining": report.remaining, "error": report.error}),
            );
            warden_store::append_one(store.as_ref(), e).await?;
            eprintln!(
                "replayed {} dead letters of {name}; {} remain",
                report.delivered, report.remaining
            );
            match report.error {
                Some(err) => {
                    eprintln!("stopped early: {err}");
                    Ok(ExitCode::FAILURE)
                }
                None => Ok(ExitCode::SUCCESS),
            }
        }
    }
}
