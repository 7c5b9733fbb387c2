//! `warden approvals list|approve|deny`: answer held agent actions from a terminal. Works
//! whether or not the server is running: the store serialises writers, the answer is recorded
//! in the audit trail before it takes effect, and a server waiting on the approval notices it
//! within a second.

use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Subcommand;
use uuid::Uuid;
use warden_api::approvals::{answer_recorded, as_of, cli_answerer};
use warden_core::{
    Actor, Approval, ApprovalAnswer, ApprovalChannel, ApprovalStatus, Error, NamespacePath,
    TenantId,
};
use warden_store::{ApprovalFilter, Store};

use crate::token_cmd::StoreArgs;

#[derive(Subcommand, Debug)]
pub enum ApprovalsCommand {
    /// List a tenant's approval requests, newest first.
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        tenant: String,
        /// pending, approved, denied, expired or consumed.
        #[arg(long)]
        status: Option<String>,
        /// A namespace and everything below it.
        #[arg(long)]
        namespace: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// `text` (a table) or `json`.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Approve a held action: it may then proceed, once.
    Approve(AnswerArgs),
    /// Deny a held action.
    Deny(AnswerArgs),
}

#[derive(clap::Args, Debug)]
pub struct AnswerArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[arg(long)]
    tenant: String,
    /// The approval id.
    id: String,
    /// Why; kept with the approval and in the audit trail.
    #[arg(long)]
    comment: Option<String>,
    /// Who answers, recorded as `cli:NAME` [default: the OS user, $USER].
    #[arg(long)]
    by: Option<String>,
}

pub async fn run(cmd: ApprovalsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ApprovalsCommand::List {
            store,
            tenant,
            status,
            namespace,
            limit,
            format,
        } => {
            let tenant = TenantId::parse(&tenant)?;
            let status = status
                .as_deref()
                .map(|s| {
                    ApprovalStatus::parse(s).with_context(|| {
                        format!(
                            "unknown status {s:?}; use pending, approved, denied, expired or consumed"
                        )
                    })
                })
                .transpose()?;
            let namespace = namespace.as_deref().map(NamespacePath::parse).transpose()?;
            if let Some(ns) = &namespace
                && ns.tenant() != tenant
            {
                anyhow::bail!("namespace {ns} does not belong to tenant {tenant}");
            }
            if !matches!(format.as_str(), "text" | "json") {
                anyhow::bail!("unknown format {format:?}; use text or json");
            }
            let limit = limit.max(1);
            let store = store.open_existing().await?;
            let now = Utc::now();
            let filter = ApprovalFilter {
                status,
                namespace,
                before: None,
                // One more than shown, to tell whether there are more.
                limit: limit.saturating_add(1),
                now,
            };
            let mut rows: Vec<Approval> = store
                .list_approvals(&tenant, &filter)
                .await?
                .into_iter()
                .map(|a| as_of(a, now))
                .collect();
            let more = rows.len() > limit as usize;
            rows.truncate(limit as usize);
            if format == "json" {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", table(&rows));
            }
            if more {
                eprintln!("showing the newest {limit}; raise --limit or filter to see more");
            }
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCommand::Approve(args) => answer(args, true).await,
        ApprovalsCommand::Deny(args) => answer(args, false).await,
    }
}

async fn answer(args: AnswerArgs, approve: bool) -> anyhow::Result<ExitCode> {
    let tenant = TenantId::parse(&args.tenant)?;
    let id = Uuid::parse_str(&args.id)
        .map_err(|_| anyhow::anyhow!("{:?} is not an approval id (a UUID)", args.id))?;
    let name = match args.by.or_else(|| std::env::var("USER").ok()) {
        Some(n) if !n.trim().is_empty() && !n.chars().any(char::is_control) => n,
        _ => anyhow::bail!("who is answering? pass --by NAME ($USER is not set)"),
    };
    let answer = ApprovalAnswer {
        approve,
        by: cli_answerer(&name),
        via: ApprovalChannel::Cli,
        comment: args.comment.filter(|c| !c.trim().is_empty()),
    };
    let actor = Actor {
        role: Some("cli".into()),
        on_behalf_of: Some(name),
        ..Default::default()
    };
    let store = args.store.open_existing().await?;
    let store: &dyn Store = store.as_ref();
    let answered = answer_recorded(store, &tenant, id, &answer, actor, |e| async move {
        warden_store::append_one(store, e).await.map(|_| ())
    })
    .await
    .map_err(|e| match e {
        Error::NotFound(_) => anyhow::anyhow!("tenant {tenant} has no approval {id}"),
        e => anyhow::anyhow!("approval {id}: {e}"),
    })?;
    println!(
        "{} {}: {} {} for {} in {}",
        answered.status.as_str(),
        answered.id,
        answered.action,
        answered.resource_id,
        who(&answered),
        answered.namespace
    );
    Ok(ExitCode::SUCCESS)
}

/// The agent and the user it acts for: `claude-code (for alice)`.
fn who(a: &Approval) -> String {
    let agent = a.agent.as_deref().unwrap_or(&a.session);
    match &a.on_behalf_of {
        Some(user) => format!("{agent} (for {user})"),
        None => agent.to_owned(),
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A plain table, one approval a line, columns padded to their widest value.
fn table(rows: &[Approval]) -> String {
    let header = [
        "ID",
        "STATUS",
        "NAMESPACE",
        "AGENT",
        "TOOL",
        "REQUESTED",
        "EXPIRES",
        "ANSWERED BY",
    ];
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for a in rows {
        lines.push(vec![
            a.id.to_string(),
            a.status.as_str().to_owned(),
            a.namespace.clone(),
            who(a),
            a.resource_id.clone(),
            time(a.requested_at),
            time(a.expires_at),
            a.resolved_by.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
