//! The feeder: copies the system of record's audit log into ClickHouse.
//!
//! The audit log is the outbox. Each tenant's log is a sequence (`seq` 0, 1, 2, …), so the
//! feeder's whole state is, per tenant, the next sequence to send — kept in memory, and
//! recovered at start from ClickHouse itself (`max(seq)` per tenant). Events go in batches of
//! several tenants' events, each tenant's in log order; while one batch is being inserted the
//! next is read from the store.
//!
//! Delivery is at-least-once:
//! - a failed insert is sent again, the same batch, with a growing backoff, until it succeeds;
//!   one that partly applied before failing is harmless to send again;
//! - at start the feeder resumes one batch *before* ClickHouse's highest sequence, since the
//!   last insert of a previous run may have applied only in part (one partition written,
//!   another not) and left a gap below that sequence;
//! - a node that lost the feeder's lease while an insert was in flight has sent events the
//!   new holder sends as well.
//!
//! Every duplicate has the same sorting key as its original, so the `ReplacingMergeTree`
//! collapses them; exact queries read with `FINAL` (see [`crate::report`]).
//!
//! One node of a cluster feeds: [`Feeder::run`] takes the store's lease [`LEASE`] before each
//! pass and renews it before each batch, and feeds only while it holds it; the other nodes
//! stand by, look at how far ClickHouse got (for their reports) and try again each interval.
//! The holder also keeps the copy's retention ([`crate::retention`]): partitions past
//! `retention_days`, and the removals recorded by the system of record's retention runs.
//!
//! Decisions never wait on any of this: the feeder only reads the store.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use warden_core::TenantId;
use warden_store::Store;

use crate::client::{ClickHouse, ClickHouseError, as_string, as_u64};
use crate::config::AnalyticsConfig;
use crate::retention::{self, Expired, RecordedRemoval};
use crate::schema::{self, TABLE};

/// The store lease that makes one node of a cluster the feeder.
pub const LEASE: &str = "analytics.feeder";
/// How often a standby node reads how far ClickHouse got, for its own reports' choice of copy
/// (at least every feed interval).
pub const STANDBY_LOOK: Duration = Duration::from_secs(5);

/// Most events read from the store at once. A batch larger than this is read page by page:
/// the rows of a page, as stored (about 2 KB each), live only until they are encoded (about
/// 0.5 KB each), so a large batch costs its encoded size in memory, not its stored size.
pub const PAGE: usize = 20_000;

/// First wait after a failure; it doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(250);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    ClickHouse(#[from] ClickHouseError),
    #[error("cannot read the audit log: {0}")]
    Store(#[from] warden_core::Error),
    #[error("{0}")]
    Record(String),
}

/// What the feeder did, for `/metrics` and for choosing where a report reads.
#[derive(Default)]
pub struct FeedStats {
    /// Events inserted into ClickHouse (re-sent ones included).
    pub fed: AtomicU64,
    pub batches: AtomicU64,
    /// Failed attempts (ClickHouse refused or unreachable, or the store unreadable).
    pub errors: AtomicU64,
    /// Unix time of the last successful insert or of the last pass that found nothing to do;
    /// 0 before the first.
    pub last_success_unix: AtomicI64,
    /// 1 while this node holds the feeder's lease (and feeds), 0 while it stands by.
    pub active: AtomicI64,
    /// ClickHouse partitions dropped by retention.
    pub partitions_dropped: AtomicU64,
    /// Mutations sent to apply the system of record's retention runs (blanked payloads,
    /// deleted rows).
    pub removal_mutations: AtomicU64,
    tenants: Mutex<BTreeMap<String, TenantFeed>>,
}

#[derive(Clone, Copy, Debug, Default)]
struct TenantFeed {
    /// Events in the store that ClickHouse is not known to hold yet. Until the feeder has
    /// reached ClickHouse once, every event of the log.
    behind: u64,
    /// Whether ClickHouse held all of the tenant's log at the last look.
    current: bool,
}

impl FeedStats {
    /// Events of `tenant` not yet in ClickHouse at the last look.
    pub fn lag(&self, tenant: &str) -> Option<u64> {
        self.tenants
            .lock()
            .expect("feed stats")
            .get(tenant)
            .map(|t| t.behind)
    }

    /// Events of all tenants not yet in ClickHouse at the last look.
    pub fn total_lag(&self) -> u64 {
        self.tenants
            .lock()
            .expect("feed stats")
            .values()
            .map(|t| t.behind)
            .sum()
    }

    /// True when ClickHouse held every event of the tenant's log at the feeder's last look
    /// (at most one feed interval ago): reports may read ClickHouse for it.
    pub fn is_current(&self, tenant: &str) -> bool {
        self.tenants
            .lock()
            .expect("feed stats")
            .get(tenant)
            .is_some_and(|t| t.current)
    }

    fn set(&self, tenant: &str, behind: u64, known: bool) {
        self.tenants.lock().expect("feed stats").insert(
            tenant.to_owned(),
            TenantFeed {
                behind,
                current: known && behind == 0,
            },
        );
    }

    fn succeeded(&self) {
        self.last_success_unix
            .store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
    }

    /// Appends the feeder's metrics in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let mut line = |s: String| {
            let _ = writeln!(out, "{s}");
        };
        line("# HELP warden_analytics_events_fed_total Audit events inserted into ClickHouse (re-sent ones included).\n# TYPE warden_analytics_events_fed_total counter".into());
        line(format!(
            "warden_analytics_events_fed_total {}",
            self.fed.load(Ordering::Relaxed)
        ));
        line("# HELP warden_analytics_batches_total Inserts into ClickHouse that succeeded.\n# TYPE warden_analytics_batches_total counter".into());
        line(format!(
            "warden_analytics_batches_total {}",
            self.batches.load(Ordering::Relaxed)
        ));
        line("# HELP warden_analytics_errors_total Feed attempts that failed (ClickHouse unreachable or refusing, store unreadable); each is retried.\n# TYPE warden_analytics_errors_total counter".into());
        line(format!(
            "warden_analytics_errors_total {}",
            self.errors.load(Ordering::Relaxed)
        ));
        line("# HELP warden_analytics_last_success_timestamp_seconds Unix time of the feeder's last successful insert or check (0: never).\n# TYPE warden_analytics_last_success_timestamp_seconds gauge".into());
        line(format!(
            "warden_analytics_last_success_timestamp_seconds {}",
            self.last_success_unix.load(Ordering::Relaxed)
        ));
        line("# HELP warden_analytics_feeder_active 1 while this node holds the feeder's lease and feeds ClickHouse, 0 while it stands by.\n# TYPE warden_analytics_feeder_active gauge".into());
        line(format!(
            "warden_analytics_feeder_active {}",
            self.active.load(Ordering::Relaxed)
        ));
        line("# HELP warden_analytics_partitions_dropped_total ClickHouse partitions dropped by retention (retention_days).\n# TYPE warden_analytics_partitions_dropped_total counter".into());
        line(format!(
            "warden_analytics_partitions_dropped_total {}",
            self.partitions_dropped.load(Ordering::Relaxed)
        ));
        line("# HELP warden_analytics_removal_mutations_total Mutations that applied the system of record's payload purges and row deletions to ClickHouse.\n# TYPE warden_analytics_removal_mutations_total counter".into());
        line(format!(
            "warden_analytics_removal_mutations_total {}",
            self.removal_mutations.load(Ordering::Relaxed)
        ));
        let tenants = self.tenants.lock().expect("feed stats").clone();
        line("# HELP warden_analytics_lag_events Audit events recorded but not yet in ClickHouse, by tenant.\n# TYPE warden_analytics_lag_events gauge".into());
        for (tenant, t) in &tenants {
            line(format!(
                "warden_analytics_lag_events{{tenant=\"{}\"}} {}",
                label(tenant),
                t.behind
            ));
        }
        line("# HELP warden_analytics_lag_events_overall Audit events recorded but not yet in ClickHouse, all tenants.\n# TYPE warden_analytics_lag_events_overall gauge".into());
        line(format!(
            "warden_analytics_lag_events_overall {}",
            tenants.values().map(|t| t.behind).sum::<u64>()
        ));
    }
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Events read from the store and encoded, waiting to be inserted.
struct Batch {
    body: Bytes,
    events: u64,
    /// Per tenant, the next sequence once this batch is in.
    advances: Vec<(TenantId, u64)>,
    /// Removals recorded by retention runs in this batch, applied once it is in.
    removals: Vec<(TenantId, RecordedRemoval)>,
}

pub struct Feeder {
    store: Arc<dyn Store>,
    ch: ClickHouse,
    config: AnalyticsConfig,
    stats: Arc<FeedStats>,
    /// Whether the schema exists and the cursors were read from ClickHouse.
    connected: bool,
    /// Per tenant, the next sequence ClickHouse is not known to hold.
    confirmed: BTreeMap<TenantId, u64>,
    /// Per tenant, the next sequence to read (ahead of `confirmed` by the queued batches).
    reading: BTreeMap<TenantId, u64>,
    /// Batches read but not yet inserted, oldest first; the front one is sent again after a
    /// failure.
    queue: VecDeque<Batch>,
    /// This node's lease owner id.
    node: String,
    /// Whether passes take and renew the lease ([`Feeder::run`] does; a bare [`Feeder::pass`]
    /// does not).
    leased: bool,
    /// Whether this node held the lease at the last attempt.
    holding: bool,
    /// When partitions past retention are next looked for (`None`: at the next pass).
    retention_due: Option<tokio::time::Instant>,
    /// Events not to send, as of the last look at retention.
    expired: Option<Expired>,
}

impl Feeder {
    pub fn new(store: Arc<dyn Store>, config: AnalyticsConfig) -> Result<Feeder, String> {
        let ch = ClickHouse::new(&config)?;
        Ok(Feeder {
            store,
            ch,
            config,
            stats: Arc::new(FeedStats::default()),
            connected: false,
            confirmed: BTreeMap::new(),
            reading: BTreeMap::new(),
            queue: VecDeque::new(),
            node: format!("node-{}", uuid::Uuid::now_v7()),
            leased: false,
            holding: false,
            retention_due: None,
            expired: None,
        })
    }

    /// Sets this node's lease owner id (the server passes the id its delivery engine uses).
    pub fn owned_by(mut self, node: impl Into<String>) -> Feeder {
        self.node = node.into();
        self
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Takes or renews the feeder's lease for [`AnalyticsConfig::lease_ttl`]; true when this
    /// node holds it. A node that comes to hold it reads where ClickHouse stands again (the
    /// previous holder fed meanwhile). When the store cannot say, this node does not hold it.
    pub async fn take_lease(&mut self) -> Result<bool, FeedError> {
        let now = chrono::Utc::now();
        let ttl = chrono::Duration::from_std(self.config.lease_ttl())
            .unwrap_or(chrono::Duration::days(1));
        let held = match self
            .store
            .acquire_lease(LEASE, &self.node, now, now + ttl)
            .await
        {
            Ok(held) => held,
            Err(e) => {
                self.set_holding(false);
                return Err(e.into());
            }
        };
        if held && !self.holding {
            self.connected = false;
            self.retention_due = None;
        }
        self.set_holding(held);
        Ok(held)
    }

    fn set_holding(&mut self, held: bool) {
        if held != self.holding {
            if held {
                tracing::info!(node = %self.node, "analytics: this node holds the feeder's lease and feeds ClickHouse");
            } else {
                tracing::info!(node = %self.node, "analytics: another node feeds ClickHouse; this one stands by");
            }
        }
        self.holding = held;
        self.stats.active.store(i64::from(held), Ordering::Relaxed);
    }

    /// Gives the lease up (graceful stop), so that another node takes over at once.
    pub async fn release_lease(&mut self) {
        if self.holding {
            if let Err(e) = self.store.release_lease(LEASE, &self.node).await {
                tracing::warn!(error = %e, "analytics: could not release the feeder's lease; another node takes over when it expires");
            }
            self.set_holding(false);
        }
    }

    pub fn stats(&self) -> Arc<FeedStats> {
        self.stats.clone()
    }

    pub fn clickhouse(&self) -> &ClickHouse {
        &self.ch
    }

    /// Feeds until `stop` turns true, while this node holds the feeder's lease: a pass at
    /// once, then again right away while there was something to send, every `interval` once
    /// caught up, and after a failure with a backoff from [`MIN_BACKOFF`] doubling to
    /// [`MAX_BACKOFF`]. Without the lease it stands by and tries again every `interval`.
    /// Gives the lease up when stopped.
    pub async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        self.leased = true;
        let mut backoff = MIN_BACKOFF;
        let mut standby_look: Option<tokio::time::Instant> = None;
        'feed: loop {
            if *stop.borrow() {
                break;
            }
            let wait = match self.take_lease().await {
                Ok(true) => {
                    standby_look = None;
                    // Dropped at once when stopped: what was in flight is sent again by the
                    // next holder.
                    let result = tokio::select! {
                        _ = stop.changed() => break,
                        r = self.hold_pass() => r,
                    };
                    match result {
                        Ok(0) => {
                            backoff = MIN_BACKOFF;
                            self.config.interval
                        }
                        Ok(_) => {
                            backoff = MIN_BACKOFF;
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, retry_in = ?backoff, "analytics feed failed; will retry");
                            let retry_at = tokio::time::Instant::now() + backoff;
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                            // Keep the lag current while waiting: it grows as long as
                            // ClickHouse is away, and that is what an operator watches.
                            while tokio::time::Instant::now() + self.config.interval < retry_at {
                                tokio::select! {
                                    _ = stop.changed() => break 'feed,
                                    _ = tokio::time::sleep(self.config.interval) => {}
                                }
                                let _ = self.heads(self.connected).await;
                            }
                            retry_at.saturating_duration_since(tokio::time::Instant::now())
                        }
                    }
                }
                Ok(false) => {
                    if standby_look.is_none_or(|t| t.elapsed() >= STANDBY_LOOK) {
                        standby_look = Some(tokio::time::Instant::now());
                        self.look().await;
                    }
                    self.config.interval
                }
                Err(e) => {
                    tracing::warn!(error = %e, "analytics: cannot take the feeder's lease; not feeding");
                    let _ = self.heads(false).await;
                    self.config.interval
                }
            };
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        self.release_lease().await;
    }

    /// The holder's pass: retention of the copy when due, then [`Feeder::pass`]. A failed
    /// retention is tried again a minute later and does not hold the feed up.
    async fn hold_pass(&mut self) -> Result<u64, FeedError> {
        let now = tokio::time::Instant::now();
        if let Some(days) = self.config.retention_days
            && self.retention_due.is_none_or(|due| now >= due)
        {
            let next = match self.drop_expired_partitions(chrono::Utc::now(), days).await {
                Ok(_) => retention::PARTITION_CHECK_EVERY,
                Err(e) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "analytics: retention of the ClickHouse copy failed; dropping nothing, will retry");
                    retention::PARTITION_CHECK_RETRY
                }
            };
            self.retention_due = Some(now + next);
        }
        self.pass().await
    }

    /// Retention of the copy: drops the partitions wholly older than `now − days` that no
    /// active legal hold of any tenant reaches into, logs and counts them.
    pub async fn drop_expired_partitions(
        &mut self,
        now: chrono::DateTime<chrono::Utc>,
        days: u32,
    ) -> Result<retention::PartitionsDropped, FeedError> {
        let r = retention::drop_expired_partitions(
            &self.ch,
            self.store.as_ref(),
            self.config.partition,
            now,
            days,
        )
        .await?;
        self.expired = Some(r.expired.clone());
        if !r.dropped.is_empty() {
            tracing::info!(partitions = ?r.dropped, retention_days = days, "analytics: dropped ClickHouse partitions past retention");
            self.stats
                .partitions_dropped
                .fetch_add(r.dropped.len() as u64, Ordering::Relaxed);
        }
        if !r.held.is_empty() {
            tracing::info!(partitions = ?r.held, "analytics: ClickHouse partitions past retention kept for legal holds");
        }
        Ok(r)
    }

    /// A standby node's look at how far ClickHouse got, so that its reports read ClickHouse
    /// for tenants it holds whole. Not feeding, it forgets any cursor of its own.
    async fn look(&mut self) {
        self.connected = false;
        self.queue.clear();
        match self.clickhouse_ends().await {
            Ok(ends) => {
                self.confirmed = ends;
                let _ = self.heads(true).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "analytics: standby cannot read ClickHouse");
                self.confirmed.clear();
                let _ = self.heads(false).await;
            }
        }
    }

    /// Per tenant, one past the highest sequence ClickHouse holds.
    async fn clickhouse_ends(&self) -> Result<BTreeMap<TenantId, u64>, FeedError> {
        let rows = self
            .ch
            .rows(&format!(
                "SELECT tenant, max(seq) FROM {} GROUP BY tenant",
                self.ch.table(TABLE)
            ))
            .await?;
        let mut ends = BTreeMap::new();
        for r in rows {
            let (Some(tenant), Some(max)) =
                (r.first().and_then(as_string), r.get(1).and_then(as_u64))
            else {
                return Err(ClickHouseError::Answer(format!("unexpected row {r:?}")).into());
            };
            let Ok(tenant) = TenantId::parse(&tenant) else {
                tracing::warn!(
                    tenant,
                    "ClickHouse holds rows of a tenant id Warden would not write; ignored"
                );
                continue;
            };
            ends.insert(tenant, max + 1);
        }
        Ok(ends)
    }

    /// Creates the schema if needed and reads where each tenant's copy ends.
    async fn connect(&mut self) -> Result<(), FeedError> {
        schema::create(&self.ch, self.config.partition).await?;
        let ends = self.clickhouse_ends().await?;
        // One batch back: the previous run's last insert may have left a gap below the end.
        self.confirmed = ends
            .into_iter()
            .map(|(t, end)| (t, end.saturating_sub(self.config.batch as u64)))
            .collect();
        self.reading = self.confirmed.clone();
        self.queue.clear();
        self.connected = true;
        Ok(())
    }

    /// Each tenant's log size, and the lag metrics updated from it (`known`: whether
    /// `confirmed` says where ClickHouse stands).
    async fn heads(&self, known: bool) -> Result<BTreeMap<TenantId, u64>, FeedError> {
        let mut heads = BTreeMap::new();
        for tenant in self.store.log_tenants().await? {
            let size = self.store.merkle_head(&tenant).await?.size;
            let done = self.confirmed.get(&tenant).copied().unwrap_or(0);
            self.stats
                .set(tenant.as_str(), size.saturating_sub(done), known);
            heads.insert(tenant, size);
        }
        Ok(heads)
    }

    /// Sends everything recorded up to now; returns how many events went. Stops at the first
    /// failure, keeping the batch that failed to send it first next time.
    pub async fn pass(&mut self) -> Result<u64, FeedError> {
        let result = self.try_pass().await;
        if let Err(e) = &result {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            // A ClickHouse that lost the table or the database (a new, empty server) gets them
            // again before the batch is retried (codes 60 and 81: unknown table, database).
            if let FeedError::ClickHouse(ClickHouseError::Refused { message, .. }) = e
                && (message.starts_with("Code: 60,") || message.starts_with("Code: 81,"))
            {
                let _ = schema::create(&self.ch, self.config.partition).await;
            }
            // The lag keeps growing while ClickHouse is away; show it.
            let _ = self.heads(self.connected).await;
        }
        result
    }

    /// Queues a batch read; the next read starts after it.
    fn enqueue(&mut self, batch: Batch) {
        for (tenant, to) in &batch.advances {
            self.reading.insert(tenant.clone(), *to);
        }
        self.queue.push_back(batch);
    }

    async fn try_pass(&mut self) -> Result<u64, FeedError> {
        if !self.connected {
            self.connect().await?;
        }
        let heads = self.heads(self.connected).await?;
        let limit = self.config.batch;
        let mut fed = 0;
        loop {
            if self.queue.is_empty() {
                match collect(
                    self.store.as_ref(),
                    &self.reading,
                    &heads,
                    limit,
                    PAGE,
                    self.expired.as_ref(),
                )
                .await?
                {
                    Some(b) => self.enqueue(b),
                    None => break,
                }
            }
            // The lease is renewed before every batch: a long catch-up keeps it, and a node
            // that lost it (paused, cut off from the store) stops before sending more.
            if self.leased && !self.take_lease().await? {
                return Ok(fed);
            }
            let body = self.queue.front().expect("a batch is queued").body.clone();
            let read_next = self.queue.len() < 2;
            let (ch, store, reading, expired) = (
                &self.ch,
                self.store.as_ref(),
                &self.reading,
                self.expired.as_ref(),
            );
            // Insert this batch while reading the next one.
            let (sent, next) = tokio::join!(
                async {
                    // A batch of events retention removed only moves the cursors on.
                    if body.is_empty() {
                        Ok(())
                    } else {
                        ch.insert_binary_rows(TABLE, crate::row::COLUMNS, body)
                            .await
                    }
                },
                async {
                    if read_next {
                        collect(store, reading, &heads, limit, PAGE, expired).await
                    } else {
                        Ok(None)
                    }
                }
            );
            let next = next.map(|b| b.map(|b| self.enqueue(b)));
            sent?;
            // Retention runs recorded in this batch reach the copy now that every event they
            // name is in it (the log is copied in order). A failure keeps the batch: it is
            // sent again, and its mutations with it.
            let front = self.queue.front().expect("the batch just sent");
            if !front.removals.is_empty() {
                let n = retention::apply_records(&self.ch, &front.removals).await?;
                self.stats.removal_mutations.fetch_add(n, Ordering::Relaxed);
                tracing::info!(
                    records = front.removals.len(),
                    mutations = n,
                    "analytics: applied recorded payload purges and row deletions to ClickHouse"
                );
            }
            let done = self.queue.pop_front().expect("the batch just sent");
            for (tenant, to) in done.advances {
                self.confirmed.insert(tenant, to);
            }
            fed += done.events;
            self.stats.fed.fetch_add(done.events, Ordering::Relaxed);
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            self.stats.succeeded();
            next?;
        }
        // Up to date as of `heads`. Events appended during the pass are still to come: the
        // heads are read again so that the lag says so (a pass that began before the last
        // events must not report none); if they cannot be read, as of `heads`.
        if self.heads(true).await.is_err() {
            for (tenant, size) in &heads {
                let done = self.confirmed.get(tenant).copied().unwrap_or(0);
                self.stats
                    .set(tenant.as_str(), size.saturating_sub(done), true);
            }
        }
        if fed == 0 {
            self.stats.succeeded();
        }
        Ok(fed)
    }
}

/// Reads and encodes the next batch: each tenant's events from where reading stopped up to
/// its head, at most `limit` in all, read `page` at a time, leaving out those retention
/// removed from the copy (`expired`). `None` when nothing is left. The caller moves `reading`
/// on by the batch's advances when it queues it.
async fn collect(
    store: &dyn Store,
    reading: &BTreeMap<TenantId, u64>,
    heads: &BTreeMap<TenantId, u64>,
    limit: usize,
    page: usize,
    expired: Option<&Expired>,
) -> Result<Option<Batch>, FeedError> {
    let mut body = Vec::new();
    let mut events = 0usize;
    let mut encoded = 0u64;
    let mut advances = Vec::new();
    let mut removals = Vec::new();
    for (tenant, &head) in heads {
        let start = reading.get(tenant).copied().unwrap_or(0);
        let mut at = start;
        while at < head && events < limit {
            let want = (limit - events).min((head - at) as usize).min(page) as u32;
            let rows = store.outbox_rows(tenant, at, want).await?;
            let Some(last) = rows.last() else { break };
            at = last.seq + 1;
            events += rows.len();
            body.reserve(rows.len() * 768);
            for e in &rows {
                // Its removals still apply, whatever the record's own age.
                if let Some(r) = retention::recorded_removal(e).map_err(FeedError::Record)? {
                    removals.push((tenant.clone(), r));
                }
                if expired.is_some_and(|x| {
                    chrono::DateTime::from_timestamp_micros(e.columns.time_micros)
                        .is_some_and(|t| x.covers(t))
                }) {
                    continue;
                }
                crate::row::encode(tenant.as_str(), e, &mut body)
                    .map_err(warden_core::Error::internal)?;
                encoded += 1;
            }
        }
        if at != start {
            advances.push((tenant.clone(), at));
        }
        if events >= limit {
            break;
        }
    }
    Ok((events > 0).then(|| Batch {
        body: Bytes::from(body),
        events: encoded,
        advances,
        removals,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use warden_core::{Actor, AuditEvent};
    use warden_store::{NewEvent, SqliteStore};

    use super::*;

    /// A batch larger than a page is read page by page, and is the same batch: every event of
    /// every tenant up to the limit, in log order, and the cursors moved on to match.
    #[tokio::test]
    async fn a_batch_is_read_page_by_page() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("warden.db"))
            .await
            .unwrap();
        let events: Vec<NewEvent> = (0..25)
            .map(|i| {
                let tenant = if i % 5 == 0 { "globex" } else { "acme" };
                NewEvent {
                    event: AuditEvent::new(
                        tenant,
                        tenant,
                        "authz.decision",
                        "warden.api",
                        Actor::default(),
                        json!({ "i": i }),
                    ),
                    dedupe: false,
                }
            })
            .collect();
        store.append_events(&events).await.unwrap();
        let (acme, globex) = (
            TenantId::parse("acme").unwrap(),
            TenantId::parse("globex").unwrap(),
        );
        let heads = BTreeMap::from([(acme.clone(), 20), (globex.clone(), 5)]);
        let reading = BTreeMap::from([(acme.clone(), 3)]);

        // What one read of each tenant's whole remaining log would send.
        let mut expected = Vec::new();
        for r in store.outbox_rows(&acme, 3, 100).await.unwrap() {
            crate::row::encode("acme", &r, &mut expected).unwrap();
        }
        for r in store.outbox_rows(&globex, 0, 100).await.unwrap() {
            crate::row::encode("globex", &r, &mut expected).unwrap();
        }

        for page in [1, 4, 17, 1_000] {
            let batch = collect(&store, &reading, &heads, 1_000, page, None)
                .await
                .unwrap()
                .expect("events to send");
            assert_eq!(batch.events, 22, "page {page}");
            assert_eq!(batch.body.as_ref(), expected.as_slice(), "page {page}");
            assert_eq!(batch.advances, [(acme.clone(), 20), (globex.clone(), 5)]);
        }

        // A limit that ends inside a page still stops at the limit.
        let batch = collect(&store, &reading, &heads, 10, 4, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(batch.events, 10);
        assert_eq!(batch.advances, [(acme.clone(), 13)]);
    }
}
