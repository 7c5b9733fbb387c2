//! `warden registry import|list|approve|deprecate|block|unblock|review`: the registry of tool
//! servers, tools and agents from a terminal. Works on the data directory's store, whether or
//! not the server is running: each change is written with its history and audit events in
//! one transaction (as the REST API does), and a running server picks it up within a second.
//! The person at the terminal acts as the tenant's administrator and is recorded as `cli:NAME`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use serde_json::Value;
use warden_api::registry::{ImportError, Registry, Who};
use warden_core::TenantId;
use warden_registry::model::{Owner, ServerName, State};
use warden_registry::server_json;
use warden_store::{AgentFilter, ServerFilter, ToolFilter};

use crate::token_cmd::StoreArgs;

/// Most records one `list` prints.
const LIST_MAX: u32 = 1000;

#[derive(Subcommand, Debug)]
pub enum RegistryCommand {
    /// Import an official MCP registry server.json: the server is registered in
    /// pending_review (every problem of an invalid file is listed with its JSON path).
    Import {
        #[command(flatten)]
        store: StoreArgs,
        /// The server.json file.
        file: PathBuf,
        #[arg(long)]
        tenant: String,
        /// Who owns it: a user id or team:<name> [default: --by].
        #[arg(long)]
        owner: Option<String>,
        /// The gateway alias (agents see <alias>__<tool>) [default: from the name].
        #[arg(long)]
        alias: Option<String>,
        #[command(flatten)]
        by: ByArgs,
    },
    /// List a tenant's servers, tools or agents.
    List {
        #[command(flatten)]
        store: StoreArgs,
        what: ListWhat,
        #[arg(long)]
        tenant: String,
        /// pending_review, approved, deprecated or blocked (servers and tools).
        #[arg(long)]
        state: Option<String>,
        /// Only this server's tools.
        #[arg(long)]
        server: Option<String>,
        /// `text` (a table) or `json`.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Approve a server or one of its tools (approving a tool pins its definition).
    Approve(TransitionArgs),
    /// Deprecate an approved server or tool.
    Deprecate(TransitionArgs),
    /// Block a server or tool everywhere.
    Block(TransitionArgs),
    /// Lift a block: the server or tool goes back to pending_review.
    Unblock(TransitionArgs),
    /// Send an approved or deprecated server or tool back to pending_review.
    Review(TransitionArgs),
    /// Connect to a registered server, run initialize and tools/list, and record its tools
    /// (new ones in pending_review, with proposed categories).
    Discover {
        #[command(flatten)]
        store: StoreArgs,
        /// The server's name (io.github.acme/deploy).
        name: String,
        #[arg(long)]
        tenant: String,
        /// Seconds to wait for the server to list its tools.
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
        #[command(flatten)]
        by: ByArgs,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ListWhat {
    Servers,
    Tools,
    Agents,
}

/// What a transition is about: a server (and with --tool, one of its tools).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Kind {
    Server,
}

#[derive(clap::Args, Debug)]
pub struct ByArgs {
    /// Who makes the change, recorded as `cli:NAME` [default: the OS user, $USER].
    #[arg(long)]
    by: Option<String>,
}

impl ByArgs {
    fn name(&self) -> anyhow::Result<String> {
        match self.by.clone().or_else(|| std::env::var("USER").ok()) {
            Some(n) if !n.trim().is_empty() && !n.chars().any(char::is_control) => {
                Ok(n.trim().to_owned())
            }
            _ => anyhow::bail!("who makes this change? pass --by NAME ($USER is not set)"),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct TransitionArgs {
    #[command(flatten)]
    store: StoreArgs,
    kind: Kind,
    /// The server's name (io.github.acme/deploy).
    name: String,
    /// A tool of the server instead of the server itself.
    #[arg(long)]
    tool: Option<String>,
    /// When approving a server: approve and pin its pending_review tools as well.
    #[arg(long)]
    include_tools: bool,
    #[arg(long)]
    tenant: String,
    /// Why; kept in the history and the audit trail.
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    by: ByArgs,
}

pub async fn run(cmd: RegistryCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RegistryCommand::Import {
            store,
            file,
            tenant,
            owner,
            alias,
            by,
        } => import(store, file, tenant, owner, alias, by).await,
        RegistryCommand::List {
            store,
            what,
            tenant,
            state,
            server,
            format,
        } => list(store, what, tenant, state, server, format).await,
        RegistryCommand::Approve(a) => transition(a, Verb::Approve).await,
        RegistryCommand::Deprecate(a) => transition(a, Verb::Deprecate).await,
        RegistryCommand::Block(a) => transition(a, Verb::Block).await,
        RegistryCommand::Unblock(a) => transition(a, Verb::Unblock).await,
        RegistryCommand::Review(a) => transition(a, Verb::Review).await,
        RegistryCommand::Discover {
            store,
            name,
            tenant,
            timeout,
            by,
        } => {
            let tenant = TenantId::parse(&tenant)?;
            let name = ServerName::parse(&name).map_err(anyhow::Error::msg)?;
            if !(timeout > 0.0 && timeout <= 300.0) {
                anyhow::bail!("--timeout must be more than 0 and at most 300 seconds");
            }
            let who = Who::cli(&by.name()?);
            let registry = Registry::load(store.open_existing().await?).await?;
            let report = warden_api::discovery::discover(
                &registry,
                &tenant,
                &name,
                &who,
                std::time::Duration::from_secs_f64(timeout),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "server {name}: {} new tool(s) in pending_review{}{}",
                report.new.len(),
                if report.new.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", report.new.join(", "))
                },
                if report.changed.is_empty() {
                    String::new()
                } else {
                    format!("; changed since approval: {}", report.changed.join(", "))
                },
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn import(
    store: StoreArgs,
    file: PathBuf,
    tenant: String,
    owner: Option<String>,
    alias: Option<String>,
    by: ByArgs,
) -> anyhow::Result<ExitCode> {
    let tenant = TenantId::parse(&tenant)?;
    let who = Who::cli(&by.name()?);
    let owner = owner
        .as_deref()
        .map(Owner::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let document: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(_) => {
            // The import reports a syntax error with its line and column.
            let problems = server_json::import(&text, None, chrono::Utc::now())
                .err()
                .unwrap_or_default();
            return refused(&file, &problems);
        }
    };
    let registry = Registry::load(store.open().await?).await?;
    match registry
        .import_server_json(&tenant, &document, owner, alias, &who)
        .await
    {
        Ok((stored, imported)) => {
            let s = &stored.server;
            println!(
                "registered {} (alias {}, version {}, owner {}) in tenant {tenant}: {}",
                s.name,
                s.alias,
                s.version,
                s.owner.as_ref().map(|o| o.as_str()).unwrap_or("-"),
                s.state
            );
            match (&s.transport, &imported.transport_from) {
                (Some(t), Some(from)) => eprintln!("transport: {} (from {from})", t.kind()),
                _ => eprintln!("no transport Warden can start or reach; set one before use"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(ImportError::Problems(problems)) => refused(&file, &problems),
        Err(ImportError::Other(e)) => Err(anyhow::anyhow!("{}: {e}", file.display())),
    }
}

fn refused(file: &std::path::Path, problems: &[server_json::Problem]) -> anyhow::Result<ExitCode> {
    eprintln!(
        "{} was not imported: {} problem(s); nothing was stored",
        file.display(),
        problems.len()
    );
    for p in problems {
        eprintln!("  {p}");
    }
    Ok(ExitCode::FAILURE)
}

fn parse_state(s: &str) -> anyhow::Result<State> {
    State::parse(s).with_context(|| {
        format!("unknown state {s:?}; use pending_review, approved, deprecated or blocked")
    })
}

async fn list(
    store: StoreArgs,
    what: ListWhat,
    tenant: String,
    state: Option<String>,
    server: Option<String>,
    format: String,
) -> anyhow::Result<ExitCode> {
    let tenant = TenantId::parse(&tenant)?;
    let state = state.as_deref().map(parse_state).transpose()?;
    if !matches!(format.as_str(), "text" | "json") {
        anyhow::bail!("unknown format {format:?}; use text or json");
    }
    if server.is_some() && !matches!(what, ListWhat::Tools) {
        anyhow::bail!("--server only applies to `list tools`");
    }
    if state.is_some() && matches!(what, ListWhat::Agents) {
        anyhow::bail!("agents have no state; their scopes say where they are enabled");
    }
    let store = store.open_existing().await?;
    // One more than shown, to tell whether there are more.
    let limit = LIST_MAX + 1;
    let (json, rows): (Value, Vec<Vec<String>>) = match what {
        ListWhat::Servers => {
            let servers = store
                .list_servers(
                    &tenant,
                    &ServerFilter {
                        state,
                        limit,
                        ..Default::default()
                    },
                )
                .await?;
            let rows = servers
                .iter()
                .map(|s| {
                    let s = &s.server;
                    vec![
                        s.name.to_string(),
                        s.alias.clone(),
                        s.state.to_string(),
                        s.version.clone(),
                        s.owner
                            .as_ref()
                            .map(|o| o.to_string())
                            .unwrap_or("-".into()),
                        s.transport
                            .as_ref()
                            .map(|t| t.kind().to_owned())
                            .unwrap_or("-".into()),
                    ]
                })
                .collect::<Vec<_>>();
            let records: Vec<_> = servers.into_iter().map(|s| s.server).collect();
            (
                serde_json::to_value(&records)?,
                header(
                    &["NAME", "ALIAS", "STATE", "VERSION", "OWNER", "TRANSPORT"],
                    rows,
                ),
            )
        }
        ListWhat::Tools => {
            let server = server
                .as_deref()
                .map(ServerName::parse)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let tools = store
                .list_tools(
                    &tenant,
                    &ToolFilter {
                        server: server.map(|s| s.to_string()),
                        state,
                        limit,
                        ..Default::default()
                    },
                )
                .await?;
            let rows = tools
                .iter()
                .map(|t| {
                    let pinned = match (&t.tool.pin, &t.observed_sha256) {
                        (Some(p), Some(o)) if &p.sha256 != o => "changed".to_owned(),
                        (Some(p), _) => p.sha256[..12].to_owned(),
                        (None, _) => "-".to_owned(),
                    };
                    let tool = &t.tool;
                    vec![
                        tool.server.to_string(),
                        tool.name.clone(),
                        tool.state.to_string(),
                        tool.risk
                            .map(|r| r.as_str().to_owned())
                            .or_else(|| {
                                tool.proposal
                                    .as_ref()
                                    .map(|p| format!("{}?", p.risk.as_str()))
                            })
                            .unwrap_or("-".into()),
                        categories(tool),
                        pinned,
                    ]
                })
                .collect::<Vec<_>>();
            let records: Vec<_> = tools.into_iter().map(|t| t.tool).collect();
            (
                serde_json::to_value(&records)?,
                header(
                    &["SERVER", "TOOL", "STATE", "RISK", "CATEGORIES", "PIN"],
                    rows,
                ),
            )
        }
        ListWhat::Agents => {
            let agents = store
                .list_agents(
                    &tenant,
                    &AgentFilter {
                        limit,
                        ..Default::default()
                    },
                )
                .await?;
            let rows = agents
                .iter()
                .map(|a| {
                    let a = &a.agent;
                    vec![
                        a.name.clone(),
                        a.owner.to_string(),
                        a.version.clone().unwrap_or("-".into()),
                        if a.models.is_empty() {
                            "-".into()
                        } else {
                            a.models.join(",")
                        },
                        a.scopes
                            .iter()
                            .map(|s| format!("{}:{}", s.effect.as_str(), s.namespace))
                            .collect::<Vec<_>>()
                            .join(" "),
                    ]
                })
                .collect::<Vec<_>>();
            let records: Vec<_> = agents.into_iter().map(|a| a.agent).collect();
            (
                serde_json::to_value(&records)?,
                header(&["NAME", "OWNER", "VERSION", "MODELS", "SCOPES"], rows),
            )
        }
    };
    let shown = rows.len().saturating_sub(1);
    let more = shown > LIST_MAX as usize;
    if format == "json" {
        let mut json = json;
        if let Some(a) = json.as_array_mut() {
            a.truncate(LIST_MAX as usize);
        }
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        let mut rows = rows;
        rows.truncate(LIST_MAX as usize + 1);
        print!("{}", table(&rows));
    }
    if more {
        eprintln!(
            "showing the first {LIST_MAX}; filter (--state, --server) or use the REST API to page"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What a tool's categories are: confirmed, or proposed (marked `?`).
fn categories(t: &warden_registry::model::Tool) -> String {
    let (list, proposed): (Vec<&str>, bool) = match (&t.proposal, t.categories.is_empty()) {
        (Some(p), true) => (p.categories.iter().map(|c| c.as_str()).collect(), true),
        _ => (t.categories.iter().map(|c| c.as_str()).collect(), false),
    };
    if list.is_empty() {
        return "-".into();
    }
    let s = list.join(",");
    if proposed { format!("{s}?") } else { s }
}

fn header(names: &[&str], mut rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    rows.insert(0, names.iter().map(|h| h.to_string()).collect());
    rows
}

/// A plain table, columns padded to their widest value.
fn table(lines: &[Vec<String>]) -> String {
    let cols = lines.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verb {
    Approve,
    Deprecate,
    Block,
    Unblock,
    Review,
}

impl Verb {
    fn target(self) -> State {
        match self {
            Verb::Approve => State::Approved,
            Verb::Deprecate => State::Deprecated,
            Verb::Block => State::Blocked,
            Verb::Unblock | Verb::Review => State::PendingReview,
        }
    }

    /// Unblock and review both lead to pending_review; each only from where its name says.
    fn check_from(self, what: &str, from: State) -> anyhow::Result<()> {
        match (self, from) {
            (Verb::Unblock, s) if s != State::Blocked => {
                anyhow::bail!("{what} is {s}, not blocked: there is nothing to unblock")
            }
            (Verb::Review, State::Blocked) => anyhow::bail!(
                "{what} is blocked; lift the block with `warden registry unblock`, which sends it \
                 back to review"
            ),
            _ => Ok(()),
        }
    }
}

async fn transition(args: TransitionArgs, verb: Verb) -> anyhow::Result<ExitCode> {
    let Kind::Server = args.kind;
    let tenant = TenantId::parse(&args.tenant)?;
    let name = ServerName::parse(&args.name).map_err(anyhow::Error::msg)?;
    let who = Who::cli(&args.by.name()?);
    if args.include_tools && (verb != Verb::Approve || args.tool.is_some()) {
        anyhow::bail!("--include-tools applies only when approving a server");
    }
    let registry = Registry::load(args.store.open_existing().await?).await?;
    let to = verb.target();
    match &args.tool {
        Some(tool) => {
            let what = format!("tool {tool} of server {name}");
            let current = registry
                .store()
                .get_tool(&tenant, name.as_str(), tool)
                .await?
                .with_context(|| format!("tenant {tenant} has no {what}"))?;
            verb.check_from(&what, current.tool.state)?;
            let t = registry
                .transition_tool(&tenant, &name, tool, to, &args.reason, &who)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let pinned = match (&t.tool.pin, to) {
                (Some(p), State::Approved) => format!("; pinned {}", &p.sha256[..12]),
                _ => String::new(),
            };
            println!("{what}: {} -> {}{pinned}", current.tool.state, t.tool.state);
        }
        None => {
            let what = format!("server {name}");
            let current = registry
                .store()
                .get_server(&tenant, name.as_str())
                .await?
                .with_context(|| format!("tenant {tenant} has no {what}"))?;
            verb.check_from(&what, current.server.state)?;
            let t = registry
                .transition_server(&tenant, &name, to, &args.reason, args.include_tools, &who)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "{what}: {} -> {}",
                current.server.state, t.server.server.state
            );
            for tool in &t.tools {
                let sha = tool
                    .tool
                    .pin
                    .as_ref()
                    .map(|p| &p.sha256[..12])
                    .unwrap_or("-");
                println!("  tool {}: approved, pinned {sha}", tool.tool.name);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
