//! `warden audit verify` and `warden audit export`, reading the store directly (offline);
//! retention and legal holds are in [`crate::retention_cmd`].

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use warden_audit::checkpoint::CheckpointVerifier;
use warden_audit::export::{ExportFormat, ExportRecord};
use warden_audit::merkle::CompactRange;
use warden_audit::verify::{LogVerifier, StoredCheckpoint};
use warden_core::{NamespacePath, TenantId};
use warden_store::{EventFilter, PageRequest, Store};

use crate::retention_cmd::{HoldCommand, RetentionCommand};
use crate::token_cmd::StoreArgs;

const PAGE: u32 = 5000;

fn parse_format(s: &str) -> Result<ExportFormat, String> {
    ExportFormat::parse(s)
        .ok_or_else(|| format!("unknown format {s:?}; supported: {}", ExportFormat::names()))
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute every tenant's Merkle log and check every checkpoint signature.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Public key file [default: DATA_DIR/keys/checkpoint.pub].
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Check hashes even when no public key is available (signatures are then not checked).
        #[arg(long)]
        allow_unsigned: bool,
    },
    /// Write every matching event, oldest first, as Warden JSON (NDJSON), OCSF, Splunk HEC,
    /// CEF or CSV.
    Export {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        tenant: String,
        /// A namespace and everything below it.
        #[arg(long)]
        namespace: Option<String>,
        /// Event type, e.g. authz.decision.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// RFC 3339 lower bound (inclusive).
        #[arg(long)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// RFC 3339 upper bound (exclusive).
        #[arg(long)]
        to: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        decision: Option<String>,
        /// ndjson (Warden JSON, schema v1), ocsf, hec, cef or csv.
        #[arg(long, default_value = "ndjson", value_parser = parse_format)]
        format: ExportFormat,
        /// Output file [default: stdout].
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    // Retention
    /// Retention rules: list, set, remove; apply them now.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Legal holds: list, place, release.
    #[command(subcommand)]
    Hold(HoldCommand),
}

pub async fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Retention(cmd) => crate::retention_cmd::run_retention(cmd).await,
        AuditCommand::Hold(cmd) => crate::retention_cmd::run_hold(cmd).await,
        AuditCommand::Verify {
            store: args,
            tenant,
            public_key,
            allow_unsigned,
        } => {
            let store = args.open_existing().await?;
            let key_path = public_key
                .unwrap_or_else(|| args.data_dir.join(warden_api::keys::CHECKPOINT_PUBLIC_KEY));
            let verifier = match std::fs::read_to_string(&key_path) {
                Ok(t) => Some(
                    CheckpointVerifier::from_key_file(t.trim())
                        .map_err(|e| anyhow::anyhow!("{}: {e:?}", key_path.display()))?,
                ),
                // Without the key a forged log with forged checkpoints would pass, so a
                // missing key fails unless the caller explicitly accepts unsigned checks.
                Err(_) if allow_unsigned => {
                    eprintln!(
                        "warning: no public key at {}; checkpoint signatures are not checked",
                        key_path.display()
                    );
                    None
                }
                Err(e) => anyhow::bail!(
                    "cannot read the checkpoint public key {}: {e}; give it with --public-key, or pass --allow-unsigned to check hashes only",
                    key_path.display()
                ),
            };
            let logs = store.log_tenants().await?;
            let tenants = match tenant {
                Some(t) => {
                    let t = TenantId::parse(&t)?;
                    if !logs.contains(&t) {
                        println!("{t}: FAILED — there is no audit log for this tenant");
                        return Ok(ExitCode::FAILURE);
                    }
                    vec![t]
                }
                None => logs,
            };
            if tenants.is_empty() {
                println!("no audit logs in {}", args.describe());
            }
            let mut failed = false;
            for t in tenants {
                match verify_tenant(store.as_ref(), &t, verifier.clone()).await {
                    Ok(line) => println!("{t}: ok — {line}"),
                    Err(e) => {
                        println!("{t}: FAILED — {e}");
                        failed = true;
                    }
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        AuditCommand::Export {
            store,
            tenant,
            namespace,
            event_type,
            from,
            to,
            agent,
            decision,
            format,
            output,
        } => {
            let tenant = TenantId::parse(&tenant)?;
            let filter = EventFilter {
                from,
                to,
                namespace: namespace.as_deref().map(NamespacePath::parse).transpose()?,
                event_type,
                agent,
                outcome: decision,
                ..Default::default()
            };
            let store = store.open_existing().await?;
            let mut out: Box<dyn Write> = match &output {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let bar = if std::io::stderr().is_terminal() {
                let b = indicatif::ProgressBar::new_spinner();
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} {pos} events exported ({per_sec})",
                    )
                    .expect("template"),
                );
                b
            } else {
                indicatif::ProgressBar::hidden()
            };
            out.write_all(format.preamble())?;
            let mut cursor = None;
            let mut n = 0u64;
            loop {
                let page = PageRequest {
                    after_seq: cursor,
                    limit: PAGE,
                    oldest_first: true,
                };
                let rows = store.export_events(&tenant, &filter, page).await?;
                let full = rows.len() as u32 == PAGE;
                let mut buf = Vec::with_capacity(rows.len() * 1024);
                for r in &rows {
                    format.write(
                        &mut buf,
                        &ExportRecord {
                            event: &r.event,
                            seq: r.seq,
                            payload_purged: r.payload_json.is_none(),
                            payload_json: r.payload_json.as_deref(),
                        },
                    );
                }
                out.write_all(&buf)?;
                n += rows.len() as u64;
                bar.set_position(n);
                cursor = rows.last().map(|r| r.seq);
                if !full {
                    break;
                }
            }
            out.flush()?;
            bar.finish_and_clear();
            eprintln!("exported {n} events");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn verify_tenant(
    store: &dyn Store,
    tenant: &TenantId,
    verifier: Option<CheckpointVerifier>,
) -> anyhow::Result<String> {
    let checkpoints: Vec<StoredCheckpoint> = store
        .checkpoints(tenant)
        .await?
        .into_iter()
        .map(|c| StoredCheckpoint {
            size: c.size,
            root: c.root,
            note: c.note,
        })
        .collect();
    let records = retention_records(store, tenant).await?;
    let mut v = LogVerifier::new(tenant.as_str(), verifier, checkpoints)
        .with_retention_records(records)
        .map_err(|f| anyhow::anyhow!("{f}"))?;
    // Positions whose rows retention deleted, merged into the stream by position.
    let mut expired = ExpiredLeaves::default();
    let mut next = 0u64;
    loop {
        let rows = store.log_rows(tenant, next, PAGE).await?;
        let full = rows.len() as u32 == PAGE;
        for r in rows {
            expired.feed_before(store, tenant, r.seq, &mut v).await?;
            next = r.seq + 1;
            v.event(r).map_err(|f| anyhow::anyhow!("{f}"))?;
        }
        if !full {
            break;
        }
    }
    expired.feed_before(store, tenant, u64::MAX, &mut v).await?;
    let summary = v.finish().map_err(|f| anyhow::anyhow!("{f}"))?;
    // The stored head must describe exactly the events found: a head larger than the log
    // means events were removed from the tail after the last checkpoint.
    let head = store.merkle_head(tenant).await?;
    if head.size != summary.events {
        anyhow::bail!(
            "the log head records {} events but {} were found: events are missing or were added outside Warden",
            head.size,
            summary.events
        );
    }
    let head_root = CompactRange::from_frontier(head.size, head.frontier)
        .map_err(|e| anyhow::anyhow!("corrupt head: {e:?}"))?
        .root();
    if head_root != summary.root {
        anyhow::bail!("the log head's root does not match the recomputed root");
    }
    Ok(format!(
        "{} events, {} checkpoints verified (signatures {}), {} payloads purged, {} headers expired, {} events after the last checkpoint, root {}",
        summary.events,
        summary.checkpoints_verified,
        if summary.signatures_checked {
            "checked"
        } else {
            "NOT checked"
        },
        summary.payloads_purged,
        summary.headers_expired,
        summary.events_after_last_checkpoint,
        hex::encode(summary.root)
    ))
}

// Retention

/// The tenant's retention records (position, payload as stored), oldest first.
async fn retention_records(
    store: &dyn Store,
    tenant: &TenantId,
) -> anyhow::Result<Vec<(u64, String)>> {
    let filter = EventFilter {
        event_type: Some(warden_core::catalog::AUDIT_RETENTION_APPLIED.into()),
        ..Default::default()
    };
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = PageRequest {
            after_seq: after,
            limit: PAGE,
            oldest_first: true,
        };
        let rows = store.query_events(tenant, &filter, page).await?;
        let full = rows.len() as u32 == PAGE;
        for r in rows {
            after = Some(r.seq);
            // A record without its payload explains nothing; verify then fails on it.
            if let Some(p) = r.payload_json {
                out.push((r.seq, p));
            }
        }
        if !full {
            return Ok(out);
        }
    }
}

/// Pages through the leaf hashes of deleted rows alongside the event stream.
#[derive(Default)]
struct ExpiredLeaves {
    buf: std::collections::VecDeque<(u64, warden_audit::merkle::Hash)>,
    next: u64,
    done: bool,
}

impl ExpiredLeaves {
    /// Feeds the verifier every deleted position before `seq`.
    async fn feed_before(
        &mut self,
        store: &dyn Store,
        tenant: &TenantId,
        seq: u64,
        v: &mut LogVerifier,
    ) -> anyhow::Result<()> {
        loop {
            if self.buf.is_empty() && !self.done {
                let page = store.expired_leaves(tenant, self.next, PAGE).await?;
                self.done = (page.len() as u32) < PAGE;
                if let Some((last, _)) = page.last() {
                    self.next = last + 1;
                }
                self.buf.extend(page);
            }
            match self.buf.front() {
                Some(&(s, leaf)) if s < seq => {
                    self.buf.pop_front();
                    v.expired(s, leaf).map_err(|f| anyhow::anyhow!("{f}"))?;
                }
                _ => return Ok(()),
            }
        }
    }
}
