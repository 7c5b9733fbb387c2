//! `warden token create|list|revoke`: works whether or not the server is running (the store
//! serialises writers, and every change is recorded in the audit trail).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use warden_core::{Actor, NamespacePath, Role, TenantId, catalog};
use warden_store::{Database, OpenOptions, Store};

#[derive(Args, Debug)]
pub struct StoreArgs {
    /// The server's data directory (keys; the default SQLite database).
    #[arg(long, env = "WARDEN_DATA_DIR", default_value = "./warden-data")]
    pub data_dir: PathBuf,
    /// The system of record: postgres://USER@HOST:PORT/DB or sqlite://PATH
    /// [default: DATA_DIR/warden.db].
    #[arg(long, env = "WARDEN_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
}

impl StoreArgs {
    pub fn database(&self) -> anyhow::Result<Database> {
        Ok(Database::or_data_dir(
            self.database.as_deref(),
            &self.data_dir,
        )?)
    }

    /// Opens the store, creating the data directory and an SQLite database on first use.
    /// A PostgreSQL database must already be migrated (`warden migrate`): only `serve` and
    /// `migrate` change its schema.
    pub async fn open(&self) -> anyhow::Result<Arc<dyn Store>> {
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("cannot create {}", self.data_dir.display()))?;
        self.connect().await
    }

    /// Opens an existing store. A data directory without a database is an error, not a new
    /// empty store: otherwise a mistyped `--data-dir` would verify, export or list nothing
    /// and succeed.
    pub async fn open_existing(&self) -> anyhow::Result<Arc<dyn Store>> {
        if let Database::Sqlite(path) = self.database()?
            && !path.is_file()
        {
            anyhow::bail!(
                "no Warden database at {} (is --data-dir or --database right?)",
                path.display()
            );
        }
        self.connect().await
    }

    async fn connect(&self) -> anyhow::Result<Arc<dyn Store>> {
        let db = self.database()?;
        warden_store::open(
            &db,
            OpenOptions {
                migrate: false,
                ..OpenOptions::default()
            },
        )
        .await
        .with_context(|| format!("cannot open the system of record {db}"))
    }

    /// Where the audit trail lives, for messages.
    pub fn describe(&self) -> String {
        match self.database() {
            Ok(db) => db.to_string(),
            Err(_) => self.data_dir.display().to_string(),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token and print it on stdout (shown once; only its hash is kept).
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// Tenant (created if new).
        #[arg(long)]
        tenant: String,
        /// admin, policy_admin, auditor, approver, agent or service.
        #[arg(long)]
        role: String,
        /// The agent an agent token stands for.
        #[arg(long)]
        agent: Option<String>,
        /// The user the agent acts for.
        #[arg(long)]
        on_behalf_of: Option<String>,
        /// Confine the token to this namespace and below.
        #[arg(long)]
        namespace: Option<String>,
        /// Lifetime, e.g. 30m, 12h, 7d (no expiry when absent).
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List a tenant's tokens (never their secrets).
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a token by id.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        tenant: String,
        id: String,
    },
}

fn cli_actor() -> Actor {
    let user = std::env::var("USER").ok();
    Actor {
        role: Some("cli".into()),
        on_behalf_of: user,
        ..Default::default()
    }
}

pub async fn run(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create {
            store,
            tenant,
            role,
            agent,
            on_behalf_of,
            namespace,
            ttl,
            description,
        } => {
            let tenant = TenantId::parse(&tenant)?;
            let role = Role::parse(&role).with_context(|| {
                format!("unknown role {role:?}; use admin, policy_admin, auditor, approver, agent or service")
            })?;
            let namespace = namespace.as_deref().map(NamespacePath::parse).transpose()?;
            let ttl = ttl
                .as_deref()
                .map(crate::duration::parse)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let spec = warden_api::tokens::TokenSpec {
                tenant,
                role,
                agent,
                on_behalf_of,
                namespace,
                ttl,
                description,
            };
            let store = store.open().await?;
            let minted =
                warden_api::tokens::create_token(store.as_ref(), &spec, cli_actor(), "warden.cli")
                    .await?;
            eprintln!(
                "created token {} ({}) for tenant {}",
                minted.record.id, role, spec.tenant
            );
            println!("{}", minted.secret);
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::List { store, tenant } => {
            let tenant = TenantId::parse(&tenant)?;
            let store = store.open_existing().await?;
            for t in store.list_tokens(&tenant).await? {
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else if !t.is_live(chrono::Utc::now()) {
                    "expired"
                } else {
                    "live"
                };
                println!(
                    "{}\t{}\t{}\tagent={}\tuser={}\tnamespace={}",
                    t.id,
                    t.role,
                    state,
                    t.agent.as_deref().unwrap_or("-"),
                    t.on_behalf_of.as_deref().unwrap_or("-"),
                    t.namespace.as_ref().map(|n| n.as_str()).unwrap_or("-")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke { store, tenant, id } => {
            let tenant = TenantId::parse(&tenant)?;
            let store = store.open_existing().await?;
            let existing = store
                .list_tokens(&tenant)
                .await?
                .into_iter()
                .find(|t| t.id == id);
            let Some(existing) = existing else {
                anyhow::bail!("tenant {tenant} has no token {id}");
            };
            let e = warden_api::tokens::token_event(
                catalog::TOKEN_REVOKED,
                &existing,
                cli_actor(),
                "warden.cli",
            );
            warden_store::append_one(store.as_ref(), e).await?;
            store.revoke_token(&tenant, &id).await?;
            eprintln!("revoked {id} (running servers stop accepting it within a few seconds)");
            Ok(ExitCode::SUCCESS)
        }
    }
}
