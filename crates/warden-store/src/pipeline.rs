//! The audit pipeline: bounded queue → one writer with group commit → system of record.
//! The writer has one batch in flight, or more where the store keeps each log in order by
//! itself ([`Store::appends_in_flight`]); callers are answered in batch order.
//!
//! A caller's event is acknowledged only after the transaction holding it has committed
//! (`synchronous=FULL` on SQLite), so an acknowledged event survives a crash. Many events
//! share one transaction and one fsync, which is where the throughput comes from. When the
//! queue is full the caller is told to come back later (503 + Retry-After) instead of memory
//! growing without bound; when the store fails, every caller in the batch gets an error and
//! nothing proceeds unrecorded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use warden_core::metrics::{Counter, Histogram};
use warden_core::{AuditEvent, Error, Result};

use crate::{Appended, EncodedEvent, NewEvent, Store};

#[derive(Clone, Copy, Debug)]
pub struct PipelineConfig {
    /// Events waiting to be written; beyond this, callers get 503 with Retry-After.
    pub queue_capacity: usize,
    /// Most events committed in one transaction.
    pub max_batch: usize,
    /// How long events nobody waits for may wait for one somebody waits for
    /// ([`UNAWAITED_WAIT`] by default).
    pub unawaited_wait: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            queue_capacity: 50_000,
            max_batch: 4_096,
            unawaited_wait: UNAWAITED_WAIT,
        }
    }
}

#[derive(Default)]
pub struct PipelineStats {
    pub queue_depth: AtomicI64,
    pub appended: Counter,
    pub duplicates: Counter,
    pub batches: Counter,
    pub failures: Counter,
    pub rejected_full: Counter,
    append_latency: std::sync::OnceLock<Histogram>,
}

impl PipelineStats {
    /// Time from a batch's start of write to its commit.
    pub fn append_latency(&self) -> &Histogram {
        self.append_latency.get_or_init(Histogram::latency)
    }
}

struct Job {
    event: EncodedEvent,
    ack: oneshot::Sender<Result<Appended>>,
    /// Someone waits for this commit (a decision about to be answered or acted on).
    awaited: bool,
}

/// How long events nobody waits for (see [`AuditPipeline::submit`]) may wait for an event
/// somebody does wait for, so that both share one commit. A governed tool call records its
/// decision (awaited) and then its outcome (not awaited): written on its own, each outcome is
/// a commit of its own that the next call's decision may find in progress and wait behind.
/// Shorter than any retry or shutdown deadline; a graceful shutdown does not wait for it.
pub const UNAWAITED_WAIT: Duration = Duration::from_millis(10);

pub struct AuditPipeline {
    sender: mpsc::Sender<Job>,
    writer: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<PipelineStats>,
    /// Woken after each committed batch (the checkpointer listens).
    pub committed: Arc<Notify>,
    closed: Arc<AtomicBool>,
}

impl AuditPipeline {
    pub fn start(store: Arc<dyn Store>, config: PipelineConfig) -> AuditPipeline {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let stats = Arc::new(PipelineStats::default());
        let committed = Arc::new(Notify::new());
        let closed = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(write_loop(
            store,
            rx,
            config.max_batch.max(1),
            config.unawaited_wait,
            stats.clone(),
            committed.clone(),
            closed.clone(),
        ));
        AuditPipeline {
            sender: tx,
            writer: Mutex::new(Some(writer)),
            stats,
            committed,
            closed,
        }
    }

    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }

    /// Records one event; returns once it is durable.
    pub async fn record(&self, event: AuditEvent) -> Result<Appended> {
        let mut acks = self.enqueue(
            vec![NewEvent {
                event,
                dedupe: false,
            }],
            true,
        )?;
        await_ack(acks.pop().expect("one ack")).await
    }

    /// Queues one event now and returns what resolves once it is durable. For records
    /// nobody waits on (the outcome of an action already taken): the event is in the queue
    /// when this returns, so a graceful shutdown still writes it. Its commit may wait up to
    /// [`UNAWAITED_WAIT`] for an awaited event to share.
    pub fn submit(
        &self,
        event: AuditEvent,
    ) -> Result<impl std::future::Future<Output = Result<Appended>> + Send + 'static> {
        let mut acks = self.enqueue(
            vec![NewEvent {
                event,
                dedupe: false,
            }],
            false,
        )?;
        Ok(await_ack(acks.pop().expect("one ack")))
    }

    /// Records many events; all enter the queue or none does. Each gets its own result.
    pub async fn record_many(&self, events: Vec<NewEvent>) -> Result<Vec<Result<Appended>>> {
        let acks = self.enqueue(events, true)?;
        let mut out = Vec::with_capacity(acks.len());
        for a in acks {
            out.push(await_ack(a).await);
        }
        Ok(out)
    }

    fn enqueue(
        &self,
        events: Vec<NewEvent>,
        awaited: bool,
    ) -> Result<Vec<oneshot::Receiver<Result<Appended>>>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::unavailable(
                "Warden is shutting down; retry on another node",
                Some(Duration::from_secs(1)),
            ));
        }
        if events.is_empty() {
            return Ok(vec![]);
        }
        // Encoded here, on the caller's task, so that many callers encode at once on all
        // cores and the single writer spends its time on the database alone.
        let events: Vec<EncodedEvent> = events.iter().map(EncodedEvent::from).collect();
        let permits = self
            .sender
            .try_reserve_many(events.len())
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    self.stats.rejected_full.inc();
                    Error::unavailable(
                        "the audit queue is full; retry shortly",
                        Some(Duration::from_secs(1)),
                    )
                }
                mpsc::error::TrySendError::Closed(_) => Error::unavailable(
                    "the audit pipeline is stopped",
                    Some(Duration::from_secs(1)),
                ),
            })?;
        let mut acks = Vec::with_capacity(events.len());
        self.stats
            .queue_depth
            .fetch_add(events.len() as i64, Ordering::Relaxed);
        for (permit, event) in permits.zip(events) {
            let (ack, rx) = oneshot::channel();
            permit.send(Job {
                event,
                ack,
                awaited,
            });
            acks.push(rx);
        }
        Ok(acks)
    }

    /// Stops taking events, writes everything already queued, and waits for the writer.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(w) = self.writer.lock().await.take() {
            let _ = w.await;
        }
    }
}

async fn await_ack(rx: oneshot::Receiver<Result<Appended>>) -> Result<Appended> {
    rx.await.unwrap_or_else(|_| {
        Err(Error::unavailable(
            "the audit writer stopped before recording",
            None,
        ))
    })
}

/// The callers waiting for a batch's commit, one per event.
type Acks = Vec<oneshot::Sender<Result<Appended>>>;

/// A written batch: what the store answered, its callers, and when it started.
type Written = (Result<Vec<Appended>>, Acks, Instant);

/// A batch being written.
type Writing = std::pin::Pin<Box<dyn std::future::Future<Output = Written> + Send>>;

async fn write_loop(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
    unawaited_wait: Duration,
    stats: Arc<PipelineStats>,
    committed: Arc<Notify>,
    closed: Arc<AtomicBool>,
) {
    // Batches are acknowledged in the order they were started, whatever order they finish.
    let mut writing: FuturesOrdered<Writing> = FuturesOrdered::new();
    let in_flight = store.appends_in_flight().max(1);
    let mut jobs: Vec<Job> = Vec::with_capacity(max_batch);
    loop {
        // Once shutdown is asked for, finish what is queued, then stop.
        if closed.load(Ordering::Acquire) && rx.is_empty() && writing.is_empty() {
            break;
        }
        if writing.len() >= in_flight {
            if let Some(done) = writing.next().await {
                finish(done, &stats, &committed);
            }
            continue;
        }
        let received = if writing.is_empty() {
            match tokio::time::timeout(
                Duration::from_millis(50),
                rx.recv_many(&mut jobs, max_batch),
            )
            .await
            {
                Ok(n) => n,
                Err(_) => continue,
            }
        } else {
            // A batch is being written: take the next one as soon as events come, and see
            // to the written one as soon as it is done. (`recv_many` loses nothing when the
            // other branch wins.)
            tokio::select! {
                biased;
                Some(done) = writing.next() => {
                    finish(done, &stats, &committed);
                    continue;
                }
                n = rx.recv_many(&mut jobs, max_batch) => n,
            }
        };
        if received == 0 {
            // Every sender is gone: write nothing more, but see the batches in flight home.
            while let Some(done) = writing.next().await {
                finish(done, &stats, &committed);
            }
            break;
        }
        // Let the tasks that are ready run first: under load, the requests among them add
        // their events to this commit instead of waiting a whole commit for the next one.
        if jobs.len() < max_batch {
            tokio::task::yield_now().await;
            while jobs.len() < max_batch {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        // Nobody waits for any of these yet: give an awaited event the chance to come and
        // share the commit. Batches in flight meanwhile are answered as they finish: their
        // callers do wait.
        let deadline = tokio::time::Instant::now() + unawaited_wait;
        while !jobs.iter().any(|j| j.awaited)
            && jobs.len() < max_batch
            && !closed.load(Ordering::Acquire)
        {
            let room = max_batch - jobs.len();
            tokio::select! {
                biased;
                Some(done) = writing.next() => finish(done, &stats, &committed),
                received = tokio::time::timeout_at(deadline, rx.recv_many(&mut jobs, room)) => {
                    match received {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            }
        }
        // The events move into the batch and the acknowledgements wait beside it: nothing is
        // copied on the way to the store.
        let mut batch = Vec::with_capacity(jobs.len());
        let mut acks = Vec::with_capacity(jobs.len());
        for job in jobs.drain(..) {
            batch.push(job.event);
            acks.push(job.ack);
        }
        // Polled first at the next turn of the loop (every branch that can start another
        // batch polls `writing` before), so a store sees the batches in the order they were
        // started.
        let store = store.clone();
        writing.push_back(Box::pin(async move {
            let started = Instant::now();
            (store.append_encoded(batch).await, acks, started)
        }));
    }
}

/// Answers a written batch's callers and counts it.
fn finish((result, mut acks, started): Written, stats: &PipelineStats, committed: &Notify) {
    stats.append_latency().observe(started.elapsed());
    stats
        .queue_depth
        .fetch_sub(acks.len() as i64, Ordering::Relaxed);
    stats.batches.inc();
    match result {
        Ok(outcomes) => {
            for (ack, outcome) in acks.drain(..).zip(outcomes) {
                match outcome {
                    Appended::Stored { .. } => stats.appended.inc(),
                    Appended::Duplicate => stats.duplicates.inc(),
                }
                let _ = ack.send(Ok(outcome));
            }
            committed.notify_waiters();
        }
        Err(e) => {
            stats.failures.inc();
            tracing::error!(error = %e, events = acks.len(), "audit batch could not be recorded");
            let msg = format!("the audit trail cannot record right now: {e}");
            for ack in acks.drain(..) {
                let _ = ack.send(Err(Error::unavailable(
                    msg.clone(),
                    Some(Duration::from_secs(1)),
                )));
            }
        }
    }
}
