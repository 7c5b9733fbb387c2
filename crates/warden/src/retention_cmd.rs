//! `warden audit retention apply|rules|set|remove` and `warden audit hold list|place|release`,
//! over the store directly like the other administrative commands: they work whether or not
//! a server runs. Every change goes through the same functions as the API
//! (`warden_api::retention_changes`), so it is validated the same way and recorded in the
//! audit trail before it takes effect.

use std::process::ExitCode;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::Subcommand;
use serde_json::json;
use uuid::Uuid;
use warden_api::retention_changes::{self, Author, NewHold};
use warden_api::routes::retention::HoldView;
use warden_core::retention::{LegalHold, RetentionRule};
use warden_core::{Actor, EntityRef, NamespacePath, TenantId};
use warden_store::Store;

use crate::token_cmd::StoreArgs;

#[derive(Subcommand, Debug)]
pub enum RetentionCommand {
    /// Apply every tenant's retention rules now (what the server's scheduled job does).
    Apply {
        #[command(flatten)]
        store: StoreArgs,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Who runs it, recorded as `cli:NAME` [default: the OS user, $USER].
        #[arg(long)]
        by: Option<String>,
    },
    /// List the retention rules, by tenant and namespace.
    Rules {
        #[command(flatten)]
        store: StoreArgs,
        /// Only this tenant's [default: every tenant that has a rule].
        #[arg(long)]
        tenant: Option<String>,
        /// `text` (a table) or `json`.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Set (or replace) the rule of a namespace subtree; a period left out keeps forever.
    Set {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        tenant: String,
        /// The subtree the rule covers; the tenant itself (e.g. `acme`) for the tenant-wide rule.
        #[arg(long)]
        namespace: String,
        /// Days an event's payload is kept.
        #[arg(long)]
        payload_days: Option<u32>,
        /// Days an event's header (its verifiable record) is kept; at least --payload-days.
        #[arg(long)]
        header_days: Option<u32>,
        /// Who sets it, recorded as `cli:NAME` [default: the OS user, $USER].
        #[arg(long)]
        by: Option<String>,
        /// `text` or `json`.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Remove the rule of a namespace subtree (its events follow the next rule above).
    Remove {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        namespace: String,
        /// Who removes it, recorded as `cli:NAME` [default: the OS user, $USER].
        #[arg(long)]
        by: Option<String>,
        /// `text` or `json`.
        #[arg(long, default_value = "text")]
        format: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum HoldCommand {
    /// List a tenant's legal holds, released ones too, oldest first.
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        tenant: String,
        /// Only holds still in force.
        #[arg(long)]
        active: bool,
        /// `text` (a table) or `json`.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Place a legal hold: nothing it covers is purged or deleted until it is released.
    Place {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        tenant: String,
        /// The subtree to hold [default: the whole tenant].
        #[arg(long)]
        namespace: Option<String>,
        /// Hold events at or after this time (RFC 3339).
        #[arg(long)]
        from: Option<DateTime<Utc>>,
        /// Hold events before this time (RFC 3339).
        #[arg(long)]
        to: Option<DateTime<Utc>>,
        /// Why (a case or matter reference); kept with the hold and in the audit trail.
        #[arg(long)]
        reason: String,
        /// Who places it, recorded as `cli:NAME` [default: the OS user, $USER].
        #[arg(long)]
        by: Option<String>,
        /// `text` or `json`.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Release a legal hold; retention applies to its events again from the next run.
    Release {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        tenant: String,
        /// The hold's id.
        id: String,
        /// Why it is released.
        #[arg(long)]
        reason: String,
        /// Who releases it, recorded as `cli:NAME` [default: the OS user, $USER].
        #[arg(long)]
        by: Option<String>,
        /// `text` or `json`.
        #[arg(long, default_value = "text")]
        format: String,
    },
}

/// `--format`: true for json.
fn json_format(format: &str) -> anyhow::Result<bool> {
    match format {
        "text" => Ok(false),
        "json" => Ok(true),
        other => anyhow::bail!("unknown format {other:?}; use text or json"),
    }
}

/// `--by`, or `$USER`.
fn who(by: Option<String>, doing: &str) -> anyhow::Result<String> {
    match by.or_else(|| std::env::var("USER").ok()) {
        Some(n) if !n.trim().is_empty() && !n.chars().any(char::is_control) => Ok(n),
        _ => anyhow::bail!("who is {doing}? pass --by NAME ($USER is not set)"),
    }
}

/// A person at a terminal, as the audit trail names them.
fn cli_actor(name: &str) -> Actor {
    Actor {
        principal: Some(EntityRef {
            entity_type: "User".into(),
            id: format!("cli:{name}"),
        }),
        ..Default::default()
    }
}

fn author(name: &str) -> Author {
    Author {
        actor: cli_actor(name),
        source: "warden.cli",
        by: format!("cli:{name}"),
    }
}

/// A change for a tenant that has recorded nothing is most likely a mistyped `--tenant`.
async fn known_tenant(store: &dyn Store, tenant: &TenantId) -> anyhow::Result<()> {
    if store.merkle_head(tenant).await?.size == 0 {
        anyhow::bail!("tenant {tenant} has no audit log here (is --tenant right?)");
    }
    Ok(())
}

fn days(d: Option<u32>) -> String {
    d.map_or_else(|| "forever".into(), |d| format!("{d} days"))
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

fn rule_json(r: &RetentionRule) -> serde_json::Value {
    json!({
        "tenant": r.tenant, "namespace": r.namespace, "payload_days": r.payload_days,
        "header_days": r.header_days, "updated_by": r.updated_by, "updated_at": r.updated_at,
    })
}

fn hold_json(h: &LegalHold) -> serde_json::Value {
    let mut v = serde_json::to_value(HoldView::from(h)).unwrap_or_default();
    v["tenant"] = json!(h.tenant);
    v
}

pub async fn run_retention(cmd: RetentionCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RetentionCommand::Apply { store, tenant, by } => {
            let name = who(by, "applying retention")?;
            let store = store.open_existing().await?;
            let actor = cli_actor(&name);
            let now = Utc::now();
            let outcomes = match tenant {
                Some(t) => vec![
                    warden_store::retention::apply_tenant(
                        store.as_ref(),
                        &TenantId::parse(&t)?,
                        now,
                        "warden.cli",
                        &actor,
                    )
                    .await?,
                ],
                None => {
                    warden_store::retention::apply_all(store.as_ref(), now, "warden.cli", &actor)
                        .await?
                }
            };
            for o in &outcomes {
                let blocked: u64 = o.blocked_by_holds.iter().map(|b| b.events).sum();
                println!(
                    "{}: {} payloads purged, {} headers deleted, {} events kept by legal holds",
                    o.tenant, o.payloads_purged, o.headers_deleted, blocked
                );
            }
            if outcomes.is_empty() {
                println!("no tenant has a retention rule");
            }
            Ok(ExitCode::SUCCESS)
        }
        RetentionCommand::Rules {
            store,
            tenant,
            format,
        } => {
            let as_json = json_format(&format)?;
            let tenant = tenant.as_deref().map(TenantId::parse).transpose()?;
            let store = store.open_existing().await?;
            let tenants = match tenant {
                Some(t) => vec![t],
                None => store.retention_tenants().await?,
            };
            let mut rules = Vec::new();
            for t in &tenants {
                rules.extend(store.retention_rules(t).await?);
            }
            if as_json {
                let all: Vec<_> = rules.iter().map(rule_json).collect();
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if rules.is_empty() {
                println!("no retention rule: events are kept forever");
            } else {
                println!(
                    "{:<12} {:<32} {:<14} {:<14} {:<20} UPDATED AT",
                    "TENANT", "NAMESPACE", "PAYLOAD", "HEADER", "UPDATED BY"
                );
                for r in &rules {
                    println!(
                        "{:<12} {:<32} {:<14} {:<14} {:<20} {}",
                        r.tenant.as_str(),
                        r.namespace.as_str(),
                        days(r.payload_days),
                        days(r.header_days),
                        r.updated_by,
                        time(Some(r.updated_at))
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        RetentionCommand::Set {
            store,
            tenant,
            namespace,
            payload_days,
            header_days,
            by,
            format,
        } => {
            let as_json = json_format(&format)?;
            let tenant = TenantId::parse(&tenant)?;
            let namespace = NamespacePath::parse(&namespace)?;
            let name = who(by, "setting the rule")?;
            let store = store.open_existing().await?;
            let store: &dyn Store = store.as_ref();
            known_tenant(store, &tenant).await?;
            let rule = retention_changes::set_rule(
                store,
                &tenant,
                namespace,
                payload_days,
                header_days,
                &author(&name),
                |e| async move { warden_store::append_one(store, e).await.map(|_| ()) },
            )
            .await?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&rule_json(&rule))?);
            } else {
                println!(
                    "{}: payloads kept {}, headers kept {}",
                    rule.namespace,
                    days(rule.payload_days),
                    days(rule.header_days)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        RetentionCommand::Remove {
            store,
            tenant,
            namespace,
            by,
            format,
        } => {
            let as_json = json_format(&format)?;
            let tenant = TenantId::parse(&tenant)?;
            let namespace = NamespacePath::parse(&namespace)?;
            let name = who(by, "removing the rule")?;
            let store = store.open_existing().await?;
            let store: &dyn Store = store.as_ref();
            let rule = retention_changes::remove_rule(
                store,
                &tenant,
                &namespace,
                &author(&name),
                |e| async move { warden_store::append_one(store, e).await.map(|_| ()) },
            )
            .await?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&rule_json(&rule))?);
            } else {
                println!(
                    "{}: rule removed (it kept payloads {}, headers {})",
                    rule.namespace,
                    days(rule.payload_days),
                    days(rule.header_days)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn run_hold(cmd: HoldCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        HoldCommand::List {
            store,
            tenant,
            active,
            format,
        } => {
            let as_json = json_format(&format)?;
            let tenant = TenantId::parse(&tenant)?;
            let store = store.open_existing().await?;
            let holds: Vec<LegalHold> = store
                .legal_holds(&tenant)
                .await?
                .into_iter()
                .filter(|h| !active || h.is_active())
                .collect();
            if as_json {
                let all: Vec<_> = holds.iter().map(hold_json).collect();
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if holds.is_empty() {
                println!("no legal hold");
            } else {
                println!(
                    "{:<36} {:<9} {:<24} {:<20} {:<20} REASON",
                    "ID", "STATE", "NAMESPACE", "FROM", "TO"
                );
                for h in &holds {
                    println!(
                        "{:<36} {:<9} {:<24} {:<20} {:<20} {}",
                        h.id,
                        if h.is_active() { "active" } else { "released" },
                        h.namespace
                            .as_ref()
                            .map_or_else(|| format!("{} (all)", h.tenant), |n| n.to_string()),
                        time(h.from),
                        time(h.to),
                        h.reason
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        HoldCommand::Place {
            store,
            tenant,
            namespace,
            from,
            to,
            reason,
            by,
            format,
        } => {
            let as_json = json_format(&format)?;
            let tenant = TenantId::parse(&tenant)?;
            let namespace = namespace.as_deref().map(NamespacePath::parse).transpose()?;
            let name = who(by, "placing the hold")?;
            let store = store.open_existing().await?;
            let store: &dyn Store = store.as_ref();
            known_tenant(store, &tenant).await?;
            let hold = retention_changes::place_hold(
                store,
                &tenant,
                NewHold {
                    namespace,
                    from,
                    to,
                    reason,
                },
                &author(&name),
                |e| async move { warden_store::append_one(store, e).await.map(|_| ()) },
            )
            .await?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&hold_json(&hold))?);
            } else {
                println!("{}", hold.id);
                eprintln!(
                    "legal hold placed on {}; release it with `warden audit hold release {} --tenant {} --reason …`",
                    hold.namespace
                        .as_ref()
                        .map_or_else(|| format!("all of {}", hold.tenant), |n| n.to_string()),
                    hold.id,
                    hold.tenant
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        HoldCommand::Release {
            store,
            tenant,
            id,
            reason,
            by,
            format,
        } => {
            let as_json = json_format(&format)?;
            let tenant = TenantId::parse(&tenant)?;
            let id = Uuid::parse_str(&id)
                .map_err(|_| anyhow::anyhow!("{id:?} is not a legal hold id (a UUID)"))?;
            let name = who(by, "releasing the hold")?;
            let store = store.open_existing().await?;
            let store: &dyn Store = store.as_ref();
            let hold = retention_changes::release_hold(
                store,
                &tenant,
                id,
                &reason,
                &author(&name),
                |e| async move { warden_store::append_one(store, e).await.map(|_| ()) },
            )
            .await?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&hold_json(&hold))?);
            } else {
                println!("released {}", hold.id);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
