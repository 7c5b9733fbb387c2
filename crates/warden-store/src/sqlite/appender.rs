//! The audit pipeline's writes on SQLite, through the C library on a thread of their own.
//!
//! sqlx runs a SQLite connection on a worker thread and hands every statement to it over a
//! channel, and every answer back: an append of one event (begin, head, insert, head,
//! commit) costs five round trips between threads before the commit's fsync even starts,
//! and under load each round trip waits for a scheduler. Here one thread owns the
//! connection and runs a whole batch — the transaction, cached prepared statements, the
//! commit — and hands back only the result: one hand-over each way per batch. That is what
//! keeps a governed call's wait for its decision record close to the fsync itself.
//!
//! The connection is the only one the pipeline writes with, always the same one: SQLite
//! drops a connection's page cache whenever another connection has written, so a writer
//! that changed connections would read the indexes it appends to back from the file. Other
//! writes (tokens, policies, the registry's changes with their events) go through the pool;
//! `BEGIN IMMEDIATE` on both sides keeps them from extending a tree from the same head.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;
use warden_core::{Error, Result};

use super::wal::{WAL_KEEP_BYTES, WalTail};
use super::{EVENT_COLUMNS, UPSERT_HEAD, head_from};
use crate::numbering::{by_tenant, number};
use crate::{Appended, EncodedEvent};

struct Job {
    batch: Vec<EncodedEvent>,
    done: oneshot::Sender<Result<Vec<Appended>>>,
}

/// The writing thread's inbox. The thread ends (and closes its connection) when the last
/// store handle holding this goes.
pub(crate) struct Appender {
    jobs: mpsc::Sender<Job>,
}

impl Appender {
    /// Opens the connection (the file exists and is migrated: the pool did both) and starts
    /// the thread.
    pub(super) fn open(
        path: &Path,
        busy_timeout: Duration,
        tail: Arc<WalTail>,
    ) -> Result<Appender> {
        let conn = connect(path, busy_timeout).map_err(|e| {
            Error::unavailable(
                format!("cannot open database {}: {e}", path.display()),
                None,
            )
        })?;
        let (jobs, inbox) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("warden-sqlite-appender".into())
            .spawn(move || run(conn, inbox, &tail))
            .map_err(|e| Error::internal(format!("cannot start the audit writer thread: {e}")))?;
        Ok(Appender { jobs })
    }

    /// Appends a batch in one transaction; returns once it has committed (or failed).
    pub(crate) async fn append(&self, batch: Vec<EncodedEvent>) -> Result<Vec<Appended>> {
        let (done, result) = oneshot::channel();
        self.jobs.send(Job { batch, done }).map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Error {
    Error::unavailable(
        "the audit writer stopped before recording",
        Some(Duration::from_secs(1)),
    )
}

fn connect(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(busy_timeout)?;
    // As the pool's connections (see `SqliteStore::open_with`): the file is already in WAL
    // mode; a commit is on disk before it returns; checkpoints run beside the writer.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "cache_size", -16384)?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", WAL_KEEP_BYTES)?;
    conn.set_prepared_statement_cache_capacity(16);
    Ok(conn)
}

fn run(mut conn: Connection, inbox: mpsc::Receiver<Job>, tail: &WalTail) {
    while let Ok(first) = inbox.recv() {
        // Every batch that came while the last one committed shares this commit (the
        // pipeline's and direct appends, which would otherwise each wait for a commit of
        // their own), so this thread goes from one commit straight to the next.
        let Job {
            mut batch,
            done: first_done,
        } = first;
        let mut sizes = vec![batch.len()];
        let mut dones = vec![first_done];
        while let Ok(job) = inbox.try_recv() {
            sizes.push(job.batch.len());
            batch.extend(job.batch);
            dones.push(job.done);
        }
        let result = append(&mut conn, batch).map_err(write_err);
        answer(result, &sizes, dones);
        // Between two batches nothing else commits, so this copy of the log's tail completes
        // and the next commit starts the log over (see `wal`). Passive: a reader still using
        // old frames keeps them, and the checkpointer hands the tail over again.
        if tail.take()
            && let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "the audit writer could not copy the log's tail");
        }
    }
}

/// Hands each batch of a shared commit its own results, in order. The callers may have gone
/// (their requests cancelled): their events are written either way.
fn answer(
    result: Result<Vec<Appended>>,
    sizes: &[usize],
    dones: Vec<oneshot::Sender<Result<Vec<Appended>>>>,
) {
    match result {
        Ok(all) => {
            let mut all = all.into_iter();
            for (&size, done) in sizes.iter().zip(dones) {
                let _ = done.send(Ok(all.by_ref().take(size).collect()));
            }
        }
        Err(e) => {
            for done in dones {
                let _ = done.send(Err(e.clone()));
            }
        }
    }
}

/// Why an append's rusqlite step failed; `Other` carries our own errors through.
enum Failure {
    Sqlite(rusqlite::Error),
    Other(Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Failure {
        Failure::Sqlite(e)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Other(e)
    }
}

/// The same answer sqlx's errors get from `db_err`: the door turns it into 503.
fn write_err(e: Failure) -> Error {
    match e {
        Failure::Other(e) => e,
        Failure::Sqlite(e) => Error::unavailable(
            format!("the system of record cannot be used: {e}"),
            Some(Duration::from_secs(1)),
        ),
    }
}

fn append(
    conn: &mut Connection,
    batch: Vec<EncodedEvent>,
) -> std::result::Result<Vec<Appended>, Failure> {
    if batch.is_empty() {
        return Ok(vec![]);
    }
    // IMMEDIATE takes the write lock before the head is read, so two writers (this thread and
    // a CLI command, or the pool) can never extend the same tree from the same head.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (mut out, groups) = by_tenant(batch.into_iter());
    for (tenant, events) in groups {
        let tenant = tenant.as_str();
        let mut existing = HashSet::new();
        if events.iter().any(|(_, e)| e.dedupe) {
            let mut find =
                tx.prepare_cached("SELECT 1 FROM audit_events WHERE tenant = ?1 AND id = ?2")?;
            for (_, e) in events.iter().filter(|(_, e)| e.dedupe) {
                let id = e.columns.id.to_string();
                if find.exists(params![tenant, id])? {
                    existing.insert(id);
                }
            }
        }
        let head = tx
            .prepare_cached("SELECT size, frontier FROM merkle_heads WHERE tenant = ?1")?
            .query_row([tenant], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .optional()?;
        let head = match head {
            Some((size, frontier)) => head_from(tenant, size, &frontier)?,
            None => Default::default(),
        };
        let numbered = number(tenant, events, head, &existing, &mut out)?;
        let mut insert = tx.prepare_cached(&format!(
            "INSERT INTO audit_events (tenant, {EVENT_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
        ))?;
        for r in &numbered.rows {
            let (c, e) = (&r.event.columns, &r.event);
            insert.execute(params![
                tenant,
                r.seq,
                c.id.to_string(),
                c.time_micros,
                c.namespace,
                c.event_type,
                c.principal,
                c.agent,
                c.on_behalf_of,
                c.session,
                c.action,
                c.resource_type,
                c.resource_id,
                c.outcome,
                e.header,
                e.payload,
                &e.leaf[..],
            ])?;
        }
        if !numbered.nodes.is_empty() {
            let mut node = tx.prepare_cached(
                "INSERT INTO merkle_nodes (tenant, level, idx, hash) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (n, h) in &numbered.nodes {
                node.execute(params![tenant, n.level as i64, n.index as i64, &h[..]])?;
            }
        }
        if let Some(head) = numbered.head {
            tx.prepare_cached(UPSERT_HEAD)?.execute(params![
                tenant,
                head.size as i64,
                head.frontier
            ])?;
        }
    }
    tx.commit()?;
    Ok(out)
}
