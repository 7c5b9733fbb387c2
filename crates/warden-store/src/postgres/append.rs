//! Audit appends on PostgreSQL, and how one node keeps several batches of the same log in flight.
//!
//! A tenant's head row (`merkle_heads`) is the sequencer of its log: every append ends by
//! writing the new head, and a transaction that holds the row holds the log.
//!
//! Taking the head before writing would make one node's batches strictly serial: the
//! database inserts while Warden waits, then Warden prepares while the database waits. So
//! the [`Appender`] numbers a batch from its tenants' *tips* — the heads this node's earlier
//! batches will leave, committed or not — and writes its rows at once, while the batch
//! before it commits. Only then, once that batch is over, does it update each head, on the
//! condition that the head is exactly the tip it was numbered from (size and frontier); a
//! transaction of another node holding the row makes the update wait and check the head that
//! one committed. If the head is anything else (the batch before failed; another node, or a
//! registry change, extended the log in between) the batch is *stale*: it rolls back, and is
//! numbered again from the locked head. An equal size and frontier mean the same tree (the
//! frontier commits to every leaf), so a batch numbered from a tip never extends another tree
//! than the one it continues. A tenant that went stale is appended the locking way for a
//! while, so two nodes writing to one log take turns instead of undoing each other's work.
//!
//! [`append_in`] is the locking way on its own, for appends inside a caller's transaction.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use warden_core::{Error, Result};

use super::{db_err, frontier_from, head_from_row};
use crate::numbering::{Numbered, by_tenant, number};
use crate::{Appended, EncodedEvent, MerkleHead};

/// Batches one node's pipeline keeps in flight at most: while one commits, the next ones
/// write their rows, each in a backend of its own. Four against two: the same on short
/// bursts, a few percent more on long ones, where more rows wait than one backend inserts
/// (docs/benchmarks.md).
const IN_FLIGHT: usize = 4;

/// The batches in flight for a pool of `max_connections`: a quarter of the pool at most, so
/// that the writer never takes the connections that reads, the checkpointer and the
/// registry's writes need; one where the pool is too small to spare more.
pub(crate) fn in_flight(max_connections: u32) -> usize {
    (max_connections as usize / 4).clamp(1, IN_FLIGHT)
}

/// How long a tenant whose tip went stale is appended the locking way.
const CONTENDED_FOR: Duration = Duration::from_secs(2);

/// Attempts at a batch before its callers are told to retry: the first from the tips, the
/// rest from the locked heads, which only a deadlock with another node can undo.
const ATTEMPTS: usize = 4;

/// This node's audit writer on PostgreSQL (see the module documentation).
#[derive(Default)]
pub(crate) struct Appender {
    /// Batches are numbered one at a time, in the order they come.
    numbering: tokio::sync::Mutex<()>,
    tenants: Mutex<HashMap<String, TenantState>>,
}

#[derive(Default)]
struct TenantState {
    /// The head after every batch numbered so far, if the next one may continue from it.
    tip: Option<MerkleHead>,
    /// The ids of deduplicated events in batches numbered and not yet committed: the
    /// database cannot show them to a later batch.
    pending: HashMap<String, usize>,
    /// Appended the locking way until then.
    contended_until: Option<Instant>,
    /// Closes when the last batch numbered for this tenant has committed or failed.
    last: Option<watch::Receiver<()>>,
}

/// One tenant's part of a batch, numbered.
struct Planned<'a> {
    tenant: String,
    /// The head it was numbered from; the head row must still hold it.
    from: MerkleHead,
    /// Numbered from the head read under its lock, which the transaction holds.
    locked: bool,
    /// The batch numbered before it for this tenant, to be done before this one locks the
    /// head: that batch may not have taken the lock yet.
    after: Option<watch::Receiver<()>>,
    numbered: Numbered<&'a EncodedEvent>,
    /// Deduplicated ids this batch holds pending.
    pending: Vec<String>,
}

enum Failure {
    /// Numbered from a head the log no longer has: number again.
    Stale(String),
    Failed(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Failed(e)
    }
}

/// Errors that mean another writer got there first: a row this batch wrote already exists,
/// or the database broke a lock cycle with another node.
fn stale_or_failed(e: sqlx::Error) -> Failure {
    if let sqlx::Error::Database(db) = &e
        && matches!(db.code().as_deref(), Some("23505" | "40P01" | "40001"))
    {
        return Failure::Stale(db.message().to_owned());
    }
    Failure::Failed(db_err(e))
}

impl Appender {
    /// Appends a batch in one transaction: durable when this returns.
    pub(crate) async fn append(
        &self,
        pool: &PgPool,
        batch: Vec<EncodedEvent>,
    ) -> Result<Vec<Appended>> {
        let mut why = String::new();
        for _ in 0..ATTEMPTS {
            match self.attempt(pool, &batch).await {
                Ok(out) => return Ok(out),
                Err(Failure::Stale(w)) => {
                    tracing::debug!(reason = %w, "audit batch numbered from a stale head; again");
                    why = w;
                }
                Err(Failure::Failed(e)) => return Err(e),
            }
        }
        Err(Error::unavailable(
            format!("the audit log kept moving under this batch: {why}"),
            Some(Duration::from_secs(1)),
        ))
    }

    async fn attempt(
        &self,
        pool: &PgPool,
        batch: &[EncodedEvent],
    ) -> std::result::Result<Vec<Appended>, Failure> {
        let mut tx = pool.begin().await.map_err(db_err)?;
        room_for_rows(&mut tx, batch).await.map_err(db_err)?;
        let (mut out, mut groups) = by_tenant(batch.iter());
        // Head rows are locked in one global order (by tenant), so two nodes whose batches
        // hold the same tenants can never each wait for a row the other holds.
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        let mut plans = Vec::with_capacity(groups.len());
        // Dropped when this attempt is over, which tells the batches numbered after it.
        let (done, done_rx) = watch::channel(());
        let numbered = async {
            let _turn = self.numbering.lock().await;
            for (tenant, events) in groups {
                let (tip, after) = self.follow(&tenant, &done_rx);
                let locked = tip.is_none();
                let from = match tip {
                    Some(tip) => tip,
                    None => {
                        // Behind this node's own batch in flight, which is yet to take the lock.
                        wait(after.clone()).await;
                        lock_head(&mut tx, &tenant).await?
                    }
                };
                // Pending ids first, the database after: an id that leaves the pending set
                // in between does so because its batch committed, and the query sees it.
                // (Not before the wait above: a batch that failed there leaves it unrecorded.)
                let pending_before = self.pending_among(&tenant, &events);
                let mut existing = existing_ids(&mut tx, &tenant, &events)
                    .await
                    .map_err(stale_or_failed)?;
                existing.extend(pending_before);
                let (numbered, pending) = {
                    let mut tenants = self.tenants.lock().expect("appender state");
                    let state = tenants.entry(tenant.clone()).or_default();
                    let numbered = number(&tenant, events, from.clone(), &existing, &mut out)?;
                    let pending: Vec<String> = numbered
                        .rows
                        .iter()
                        .filter(|r| r.event.dedupe)
                        .map(|r| r.event.columns.id.to_string())
                        .collect();
                    for id in &pending {
                        *state.pending.entry(id.clone()).or_default() += 1;
                    }
                    if let Some(h) = &numbered.head
                        && !state.contended()
                    {
                        state.tip = Some(MerkleHead {
                            size: h.size,
                            frontier: frontier_from(&h.frontier, &tenant)?,
                        });
                    }
                    (numbered, pending)
                };
                plans.push(Planned {
                    tenant,
                    from,
                    locked,
                    after,
                    numbered,
                    pending,
                });
            }
            Ok::<_, Failure>(())
        }
        .await;
        let written = match numbered {
            Ok(()) => self.write(&mut tx, &plans).await,
            Err(f) => Err(f),
        };
        let committed = match written {
            Ok(()) => tx.commit().await.map_err(stale_or_failed),
            Err(f) => Err(f),
        };
        self.settle(
            &plans,
            committed.is_ok(),
            matches!(committed, Err(Failure::Stale(_))),
        );
        drop(done);
        committed.map(|()| out)
    }

    /// Which of these deduplicated events a batch in flight holds.
    fn pending_among(&self, tenant: &str, events: &[(usize, &EncodedEvent)]) -> Vec<String> {
        let tenants = self.tenants.lock().expect("appender state");
        let Some(state) = tenants.get(tenant).filter(|s| !s.pending.is_empty()) else {
            return vec![];
        };
        events
            .iter()
            .filter(|(_, e)| e.dedupe)
            .map(|(_, e)| e.columns.id.to_string())
            .filter(|id| state.pending.contains_key(id))
            .collect()
    }

    /// Makes the batch whose end `done` signals the tenant's last, and returns the tip to
    /// number from (unless the head must be read under its lock) and the batch before.
    fn follow(
        &self,
        tenant: &str,
        done: &watch::Receiver<()>,
    ) -> (Option<MerkleHead>, Option<watch::Receiver<()>>) {
        let mut tenants = self.tenants.lock().expect("appender state");
        let state = tenants.entry(tenant.to_owned()).or_default();
        let after = state.last.replace(done.clone());
        let tip = if state.contended() {
            None
        } else {
            state.tip.clone()
        };
        (tip, after)
    }

    async fn write(
        &self,
        tx: &mut PgConnection,
        plans: &[Planned<'_>],
    ) -> std::result::Result<(), Failure> {
        for p in plans {
            if p.numbered.head.is_some() {
                insert_events(tx, &p.tenant, &p.numbered)
                    .await
                    .map_err(stale_or_failed)?;
            }
        }
        for p in plans {
            let Some(head) = &p.numbered.head else {
                continue;
            };
            let moved = if p.locked {
                sqlx::query("UPDATE merkle_heads SET size = $2, frontier = $3 WHERE tenant = $1")
                    .bind(&p.tenant)
                    .bind(head.size as i64)
                    .bind(&head.frontier)
                    .execute(&mut *tx)
                    .await
            } else {
                // This node's batch before is over, so the statement sees the head it left.
                // Another node's transaction on the row makes the statement wait for it and
                // then check the head that one committed.
                wait(p.after.clone()).await;
                sqlx::query(
                    "UPDATE merkle_heads SET size = $2, frontier = $3 \
                     WHERE tenant = $1 AND size = $4 AND frontier = $5",
                )
                .bind(&p.tenant)
                .bind(head.size as i64)
                .bind(&head.frontier)
                .bind(p.from.size as i64)
                .bind(p.from.frontier.concat())
                .execute(&mut *tx)
                .await
            };
            if moved.map_err(stale_or_failed)?.rows_affected() != 1 {
                return Err(Failure::Stale(format!(
                    "the log of {} is no longer at size {}",
                    p.tenant, p.from.size
                )));
            }
            insert_nodes(tx, &p.tenant, &p.numbered)
                .await
                .map_err(stale_or_failed)?;
        }
        Ok(())
    }

    /// After a batch: its pending ids are pending no more; if it did not commit, no later
    /// batch may continue from its tips, and a stale one marks its tenants contended.
    fn settle(&self, plans: &[Planned<'_>], committed: bool, stale: bool) {
        let mut tenants = self.tenants.lock().expect("appender state");
        for p in plans {
            let Some(state) = tenants.get_mut(&p.tenant) else {
                continue;
            };
            for id in &p.pending {
                if let Some(n) = state.pending.get_mut(id) {
                    *n -= 1;
                    if *n == 0 {
                        state.pending.remove(id);
                    }
                }
            }
            if !committed {
                state.tip = None;
                if stale {
                    state.contended_until = Some(Instant::now() + CONTENDED_FOR);
                }
            }
        }
    }
}

/// The size of a batch's rows past which the server would spill them to a temporary file.
///
/// `INSERT … SELECT FROM UNNEST` first collects the rows the function returns in a
/// tuplestore, which goes to a temporary file beyond `work_mem` (4 MB by default): a batch
/// of a few thousand events was written to disk and read back before its insert. The bytes
/// of the rows are close to the events' text.
const SPILL_AT: usize = 2 << 20;

/// Lets a large batch's rows stay in memory for this transaction only ([`work_mem_mb`]).
/// Smaller batches, the common case, cost no extra round trip.
async fn room_for_rows(
    tx: &mut PgConnection,
    batch: &[EncodedEvent],
) -> std::result::Result<(), sqlx::Error> {
    let Some(mb) = work_mem_mb(batch) else {
        return Ok(());
    };
    sqlx::query("SELECT set_config('work_mem', $1, true)")
        .bind(format!("{mb}MB"))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The `work_mem` a batch's rows need to stay in memory, if more than the default: about
/// twice their size, at most [`WORK_MEM_MAX_MB`]. The server allocates it only as the rows
/// come.
fn work_mem_mb(batch: &[EncodedEvent]) -> Option<usize> {
    let bytes: usize = batch
        .iter()
        .map(|e| e.header.len() + e.payload.as_ref().map_or(0, String::len) + 256)
        .sum();
    (bytes >= SPILL_AT).then(|| ((bytes * 2) >> 20).clamp(4, WORK_MEM_MAX_MB))
}

/// The most `work_mem` an append asks for: a larger batch (events with very large payloads)
/// spills what is beyond it, as before.
const WORK_MEM_MAX_MB: usize = 64;

/// Waits until the batch behind `after` is over, committed or not.
async fn wait(after: Option<watch::Receiver<()>>) {
    if let Some(mut rx) = after {
        // Nothing is ever sent: this returns when the sender is dropped.
        let _ = rx.changed().await;
    }
}

impl TenantState {
    fn contended(&self) -> bool {
        self.contended_until.is_some_and(|t| Instant::now() < t)
    }
}

/// Locks the tenant's Merkle head row for the rest of the transaction and returns the head.
///
/// This is the per-tenant sequencer of a deployment with several nodes: the upsert creates
/// the row on the first append and otherwise waits for any other transaction holding it,
/// then returns the head as that transaction left it (an `ON CONFLICT DO UPDATE` works on
/// the latest committed row version, even under READ COMMITTED). Two nodes appending to one
/// tenant therefore take turns, each continuing the tree the other committed.
async fn lock_head(
    tx: &mut PgConnection,
    tenant: &str,
) -> std::result::Result<MerkleHead, LockError> {
    let row = sqlx::query(
        "INSERT INTO merkle_heads (tenant, size, frontier) VALUES ($1, 0, ''::bytea) \
         ON CONFLICT (tenant) DO UPDATE SET size = merkle_heads.size RETURNING size, frontier",
    )
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await?;
    Ok(head_from_row(&row, tenant)?)
}

/// What reading under a lock can fail with: the database (a lock cycle included), or a
/// head that does not decode.
enum LockError {
    Db(sqlx::Error),
    Head(Error),
}

impl From<sqlx::Error> for LockError {
    fn from(e: sqlx::Error) -> LockError {
        LockError::Db(e)
    }
}

impl From<Error> for LockError {
    fn from(e: Error) -> LockError {
        LockError::Head(e)
    }
}

impl From<LockError> for Failure {
    fn from(e: LockError) -> Failure {
        match e {
            LockError::Db(e) => stale_or_failed(e),
            LockError::Head(e) => Failure::Failed(e),
        }
    }
}

impl From<LockError> for Error {
    fn from(e: LockError) -> Error {
        match e {
            LockError::Db(e) => db_err(e),
            LockError::Head(e) => e,
        }
    }
}

/// Appends a batch inside the caller's transaction, the locking way: for each tenant, lock
/// its head ([`lock_head`]), drop duplicates, number the events, insert them and the new
/// stored Merkle nodes, and write the new head.
pub(crate) async fn append_in(
    tx: &mut PgConnection,
    batch: Vec<EncodedEvent>,
) -> Result<Vec<Appended>> {
    let (mut out, mut groups) = by_tenant(batch.into_iter());
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    for (tenant, events) in groups {
        let head = lock_head(&mut *tx, &tenant).await?;
        let existing = existing_ids(&mut *tx, &tenant, &events)
            .await
            .map_err(db_err)?;
        let numbered = number(&tenant, events, head, &existing, &mut out)?;
        let Some(new_head) = &numbered.head else {
            continue;
        };
        insert_events(&mut *tx, &tenant, &numbered)
            .await
            .map_err(db_err)?;
        insert_nodes(&mut *tx, &tenant, &numbered)
            .await
            .map_err(db_err)?;
        sqlx::query("UPDATE merkle_heads SET size = $2, frontier = $3 WHERE tenant = $1")
            .bind(&tenant)
            .bind(new_head.size as i64)
            .bind(&new_head.frontier)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
    }
    Ok(out)
}

/// Inserts a tenant's numbered events with one multi-row statement: arrays bound as
/// parameters and UNNESTed, one statement text for every batch size. The columns borrow the
/// events' text: nothing is copied before the driver encodes it. The only unique key here
/// holds the event's time, so rows written ahead of the head's lock never make another
/// writer wait.
async fn insert_events<E: Borrow<EncodedEvent>>(
    tx: &mut PgConnection,
    tenant: &str,
    numbered: &Numbered<E>,
) -> std::result::Result<(), sqlx::Error> {
    let mut rows = EventColumns::with_capacity(numbered.rows.len());
    for r in &numbered.rows {
        rows.push(r.seq, r.event.borrow());
    }
    sqlx::query(
        "INSERT INTO audit_events (tenant, seq, id, time_us, namespace, event_type, principal, agent, \
         on_behalf_of, session, action, resource_type, resource_id, outcome, header, payload, leaf_hash) \
         SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[], \
         $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], \
         $14::text[], $15::text[], $16::text[], $17::bytea[])",
    )
    .bind(tenant)
    .bind(rows.seq)
    .bind(rows.id)
    .bind(rows.time_us)
    .bind(rows.namespace)
    .bind(rows.event_type)
    .bind(rows.principal)
    .bind(rows.agent)
    .bind(rows.on_behalf_of)
    .bind(rows.session)
    .bind(rows.action)
    .bind(rows.resource_type)
    .bind(rows.resource_id)
    .bind(rows.outcome)
    .bind(rows.header)
    .bind(rows.payload)
    .bind(rows.leaf_hash)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Inserts the Merkle nodes a tenant's numbered events complete. Their keys are positions
/// in the log, which only the holder of the head may write: this runs under the head's lock.
async fn insert_nodes<E>(
    tx: &mut PgConnection,
    tenant: &str,
    numbered: &Numbered<E>,
) -> std::result::Result<(), sqlx::Error> {
    if !numbered.nodes.is_empty() {
        let mut nodes = NodeColumns::default();
        for (node, h) in &numbered.nodes {
            nodes.level.push(node.level as i64);
            nodes.idx.push(node.index as i64);
            nodes.hash.push(&h[..]);
        }
        sqlx::query(
            "INSERT INTO merkle_nodes (tenant, level, idx, hash) \
             SELECT $1, * FROM UNNEST($2::bigint[], $3::bigint[], $4::bytea[])",
        )
        .bind(tenant)
        .bind(nodes.level)
        .bind(nodes.idx)
        .bind(nodes.hash)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// One array per column of `audit_events`, bound as statement parameters.
#[derive(Default)]
struct EventColumns<'a> {
    seq: Vec<i64>,
    id: Vec<String>,
    time_us: Vec<i64>,
    namespace: Vec<&'a str>,
    event_type: Vec<&'a str>,
    principal: Vec<Option<&'a str>>,
    agent: Vec<Option<&'a str>>,
    on_behalf_of: Vec<Option<&'a str>>,
    session: Vec<Option<&'a str>>,
    action: Vec<Option<&'a str>>,
    resource_type: Vec<Option<&'a str>>,
    resource_id: Vec<Option<&'a str>>,
    outcome: Vec<Option<&'a str>>,
    header: Vec<&'a str>,
    payload: Vec<Option<&'a str>>,
    leaf_hash: Vec<&'a [u8]>,
}

impl<'a> EventColumns<'a> {
    fn with_capacity(n: usize) -> EventColumns<'a> {
        EventColumns {
            seq: Vec::with_capacity(n),
            id: Vec::with_capacity(n),
            time_us: Vec::with_capacity(n),
            namespace: Vec::with_capacity(n),
            event_type: Vec::with_capacity(n),
            principal: Vec::with_capacity(n),
            agent: Vec::with_capacity(n),
            on_behalf_of: Vec::with_capacity(n),
            session: Vec::with_capacity(n),
            action: Vec::with_capacity(n),
            resource_type: Vec::with_capacity(n),
            resource_id: Vec::with_capacity(n),
            outcome: Vec::with_capacity(n),
            header: Vec::with_capacity(n),
            payload: Vec::with_capacity(n),
            leaf_hash: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, seq: i64, e: &'a EncodedEvent) {
        let c = &e.columns;
        self.seq.push(seq);
        self.id.push(c.id.to_string());
        self.time_us.push(c.time_micros);
        self.namespace.push(&c.namespace);
        self.event_type.push(&c.event_type);
        self.principal.push(c.principal.as_deref());
        self.agent.push(c.agent.as_deref());
        self.on_behalf_of.push(c.on_behalf_of.as_deref());
        self.session.push(c.session.as_deref());
        self.action.push(c.action.as_deref());
        self.resource_type.push(c.resource_type.as_deref());
        self.resource_id.push(c.resource_id.as_deref());
        self.outcome.push(c.outcome.as_deref());
        self.header.push(&e.header);
        self.payload.push(e.payload.as_deref());
        self.leaf_hash.push(&e.leaf[..]);
    }
}

#[derive(Default)]
struct NodeColumns<'a> {
    level: Vec<i64>,
    idx: Vec<i64>,
    hash: Vec<&'a [u8]>,
}

async fn existing_ids<E: Borrow<EncodedEvent>>(
    conn: &mut PgConnection,
    tenant: &str,
    events: &[(usize, E)],
) -> std::result::Result<HashSet<String>, sqlx::Error> {
    let ids: Vec<String> = events
        .iter()
        .map(|(_, e)| e.borrow())
        .filter(|e| e.dedupe)
        .map(|e| e.columns.id.to_string())
        .collect();
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let found: Vec<String> =
        sqlx::query_scalar("SELECT id FROM audit_events WHERE tenant = $1 AND id = ANY($2)")
            .bind(tenant)
            .bind(ids)
            .fetch_all(&mut *conn)
            .await?;
    Ok(found.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_takes_a_quarter_of_the_pool_at_most() {
        assert_eq!(in_flight(16), 4);
        assert_eq!(in_flight(100), 4);
        assert_eq!(in_flight(8), 2);
        assert_eq!(in_flight(4), 1);
        assert_eq!(in_flight(1), 1);
    }

    fn batch(events: usize, payload: usize) -> Vec<EncodedEvent> {
        let event = warden_core::AuditEvent::new(
            "acme",
            "acme",
            "authz.decision",
            "warden.api",
            warden_core::Actor::default(),
            serde_json::json!({ "blob": "x".repeat(payload) }),
        );
        vec![EncodedEvent::of(&event, false); events]
    }

    #[test]
    fn only_a_batch_that_would_spill_raises_work_mem() {
        assert_eq!(work_mem_mb(&batch(1, 100)), None);
        assert_eq!(work_mem_mb(&batch(100, 1_000)), None);
        // 2,000 rows of a little over 2 kB: about 4.5 MB, twice that asked for.
        let mb = work_mem_mb(&batch(2_000, 2_000)).unwrap();
        assert!((8..=10).contains(&mb), "{mb} MB");
        assert_eq!(work_mem_mb(&batch(100, 1 << 20)), Some(WORK_MEM_MAX_MB));
    }
}
