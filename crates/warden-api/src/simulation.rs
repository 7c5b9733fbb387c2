//! Policy simulation over the audit trail: every recorded decision of a window decided again
//! under candidate policies (`warden policy simulate`, `POST /api/v1/policies/simulate`).
//!
//! One reader pages through the store ([`Store::recorded_decisions`], unparsed rows) while a
//! worker thread per core parses and decides; each worker keeps its own
//! [`Tally`] and the tallies are merged at the end, so workers share nothing but the
//! candidate engine and a queue of pages. The deciding and counting is
//! [`warden_policy::simulate`]'s; each worker decides each distinct request once
//! ([`warden_policy::memo`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use warden_core::simulation::SimulationReport;
use warden_core::{Error, NamespacePath, TenantId};
use warden_policy::memo::Memo;
use warden_policy::simulate::{Recorded, Tally, Window};
use warden_policy::{Engine, PolicySource};
use warden_store::{DecisionWindow, RecordedDecision, Store};

use crate::policies::SCHEMA_EXTENSION_FILE;

/// Recorded decisions per page read from the store: large enough that a page's round trip is
/// small beside its replay, small enough that a few pages in flight stay a few MB.
pub const PAGE: u32 = 2048;

/// Pages read ahead of the workers.
const PAGES_IN_FLIGHT_PER_WORKER: usize = 2;

/// How far a running simulation got, for a progress bar.
#[derive(Debug, Default)]
pub struct Progress {
    /// Recorded decisions replayed so far.
    pub replayed: AtomicU64,
    /// The time (µs since the epoch) of the last event read: pages come in time order, so
    /// it tells how much of the window is behind.
    pub reached_us: AtomicI64,
}

impl Progress {
    /// The share of `window` read so far, 0 to 1.
    pub fn fraction(&self, window: &Window) -> f64 {
        let from = window.from.timestamp_micros();
        let span = (window.to.timestamp_micros() - from).max(1) as f64;
        let at = self.reached_us.load(Ordering::Relaxed);
        if at == 0 {
            return 0.0;
        }
        ((at - from) as f64 / span).clamp(0.0, 1.0)
    }
}

/// Replays `window` under `candidate`. Fails only when the store cannot be read.
pub async fn simulate(
    store: Arc<dyn Store>,
    candidate: Arc<Engine>,
    window: Window,
    progress: Option<Arc<Progress>>,
) -> Result<SimulationReport, Error> {
    let started = Instant::now();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(16));
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Vec<RecordedDecision>>(workers * PAGES_IN_FLIGHT_PER_WORKER);
    let rx = Arc::new(Mutex::new(rx));
    let mut handles = Vec::with_capacity(workers);
    for n in 0..workers {
        let rx = rx.clone();
        let engine = candidate.clone();
        let tenant = window.tenant.clone();
        let progress = progress.clone();
        let handle = std::thread::Builder::new()
            .name(format!("warden-simulate-{n}"))
            .spawn(move || replay_pages(&engine, &tenant, &rx, progress.as_deref()))
            .map_err(|e| Error::internal(format!("cannot start a simulation worker: {e}")))?;
        handles.push(handle);
    }

    let read = read_pages(store.as_ref(), &window, tx, progress.as_deref()).await;
    let tallies = tokio::task::spawn_blocking(move || {
        handles
            .into_iter()
            .map(|h| h.join())
            .collect::<Vec<std::thread::Result<Tally>>>()
    })
    .await
    .map_err(|e| Error::internal(format!("simulation workers: {e}")))?;
    read?;
    let mut total = Tally::new(&window.tenant);
    for t in tallies {
        total.merge(t.map_err(|_| Error::internal("a simulation worker panicked"))?);
    }
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(total.report(window, &candidate, ms))
}

/// Reads every page of the window into the queue; stops early if the workers are gone.
async fn read_pages(
    store: &dyn Store,
    window: &Window,
    tx: tokio::sync::mpsc::Sender<Vec<RecordedDecision>>,
    progress: Option<&Progress>,
) -> Result<(), Error> {
    let w = DecisionWindow {
        from: window.from,
        to: window.to,
        namespace: window.namespace.clone(),
    };
    let mut after = None;
    loop {
        let page = store
            .recorded_decisions(&window.tenant, &w, after, PAGE)
            .await?;
        if let (Some(p), Some(last)) = (progress, page.decisions.last()) {
            p.reached_us.store(last.time_us, Ordering::Relaxed);
        }
        if !page.decisions.is_empty() && tx.send(page.decisions).await.is_err() {
            return Ok(());
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(()),
        }
    }
}

/// One worker: takes pages off the queue until it is closed and empty.
fn replay_pages(
    engine: &Engine,
    tenant: &TenantId,
    rx: &Mutex<tokio::sync::mpsc::Receiver<Vec<RecordedDecision>>>,
    progress: Option<&Progress>,
) -> Tally {
    let mut tally = Tally::new(tenant);
    let mut memo = Memo::new(engine);
    loop {
        let page = rx.lock().unwrap_or_else(|e| e.into_inner()).blocking_recv();
        let Some(page) = page else {
            return tally;
        };
        for d in &page {
            tally.record_with(
                engine,
                Some(&mut memo),
                &Recorded {
                    id: &d.id,
                    time_us: d.time_us,
                    seq: d.seq,
                    namespace: &d.namespace,
                    outcome: d.outcome.as_deref(),
                    header: &d.header,
                    payload: d.payload.as_deref(),
                },
            );
        }
        if let Some(p) = progress {
            p.replayed.fetch_add(page.len() as u64, Ordering::Relaxed);
        }
    }
}

/// A window that can be replayed: `from` before `to`, the namespace (if any) in the tenant.
pub fn window(
    tenant: &TenantId,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    namespace: Option<NamespacePath>,
) -> Result<Window, Error> {
    if from >= to {
        return Err(Error::invalid(format!(
            "the window is empty: from ({}) must be earlier than to ({})",
            from.to_rfc3339(),
            to.to_rfc3339()
        )));
    }
    if let Some(ns) = &namespace
        && ns.tenant() != *tenant
    {
        return Err(Error::not_found(format!("namespace {ns} not found")));
    }
    Ok(Window {
        tenant: tenant.clone(),
        from,
        to,
        namespace,
    })
}

/// The candidate policies of a bundle sent as JSON (`path → text`), laid out as in the policy
/// directory: `<tenant>/<namespace…>/<name>.cedar`, with the optional `schema.cedarschema` at
/// the root. Policy tests (`*.test.yaml`, `*.test.json`) may come along and are not read. Every
/// problem is reported, each naming its path.
pub fn candidate_from_files(
    tenant: &TenantId,
    files: &BTreeMap<String, String>,
) -> Result<(Vec<PolicySource>, Option<String>), Vec<String>> {
    let mut sources = Vec::new();
    let mut extension = None;
    let mut errors = Vec::new();
    for (path, text) in files {
        if path == SCHEMA_EXTENSION_FILE {
            extension = Some(text.clone());
            continue;
        }
        if path.ends_with(".test.yaml") || path.ends_with(".test.json") {
            continue;
        }
        if !path.ends_with(".cedar") {
            errors.push(format!(
                "{path}: not a policy file (expected <namespace>/<name>.cedar, {SCHEMA_EXTENSION_FILE} or a policy test)"
            ));
            continue;
        }
        let Some((folder, _)) = path.rsplit_once('/') else {
            errors.push(format!(
                "{path}: policy files must sit in a namespace folder, e.g. {tenant}/{path}"
            ));
            continue;
        };
        match NamespacePath::parse(folder) {
            Ok(ns) if ns.tenant() != *tenant => errors.push(format!(
                "{path}: outside tenant {tenant}; a candidate holds only its own tenant's policies"
            )),
            Ok(namespace) => sources.push(PolicySource {
                namespace,
                origin: path.clone(),
                text: text.clone(),
            }),
            Err(e) => errors.push(format!("{path}: folder is not a valid namespace: {e}")),
        }
    }
    if sources.is_empty() && errors.is_empty() {
        errors.push(format!(
            "the candidate holds no policy file for tenant {tenant} (expected {tenant}/…/*.cedar); \
             with no policies every decision would be denied"
        ));
    }
    if errors.is_empty() {
        Ok((sources, extension))
    } else {
        Err(errors)
    }
}

/// Builds the candidate engine off the async runtime (a large set takes a while); errors are
/// `file:line:column: message`.
pub async fn build_candidate(
    sources: Vec<PolicySource>,
    extension: Option<String>,
) -> Result<Engine, Vec<String>> {
    tokio::task::spawn_blocking(move || {
        Engine::build(sources, extension.as_deref())
            .map_err(|errs| errs.iter().map(ToString::to_string).collect())
    })
    .await
    .unwrap_or_else(|e| Err(vec![format!("building the candidate failed: {e}")]))
}
