//! `warden migrate`: brings the system of record's schema up to this version of Warden.
//!
//! `warden serve` does the same on start unless `migrate_on_start = false`; with several
//! nodes on one PostgreSQL database, operators run this once before rolling out a new
//! version and start the nodes with migrations off.

use std::process::ExitCode;

use clap::Args;
use warden_store::{Database, OpenOptions};

use crate::token_cmd::StoreArgs;

#[derive(Args, Debug)]
pub struct MigrateArgs {
    #[command(flatten)]
    store: StoreArgs,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let db = args.store.database()?;
    if let Database::Sqlite(path) = &db
        && let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let store = warden_store::open(&db, OpenOptions::default()).await?;
    store.writable().await?;
    let versions = match &db {
        Database::Postgres(_) => warden_store::PgStore::migrations(),
        Database::Sqlite(_) => warden_store::SqliteStore::migrations(),
    };
    println!(
        "{db}: schema at version {} (migrations {})",
        versions.last().copied().unwrap_or(0),
        versions
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(ExitCode::SUCCESS)
}
