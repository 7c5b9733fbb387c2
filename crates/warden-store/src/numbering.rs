//! Numbering a batch of audit events into each tenant's Merkle log, the same on every
//! backend: the backends lock and read the head, write what this returns, and differ only in
//! how they write it.

use std::borrow::Borrow;
use std::collections::HashSet;

use warden_audit::merkle::{CompactRange, Hash, NodeId};
use warden_core::{Error, Result};

use crate::{Appended, EncodedEvent, MerkleHead, STORED_NODE_MIN_LEVEL};

/// An event (owned, or borrowed by a writer that may need it again) with its leaf index in
/// its tenant's log.
pub(crate) struct LogRow<E = EncodedEvent> {
    pub(crate) seq: i64,
    pub(crate) event: E,
}

/// A batch's events grouped by tenant, arrival order kept inside each tenant's log, and one
/// result per event (`Duplicate` until numbering says otherwise).
pub(crate) type TenantGroups<E = EncodedEvent> = Vec<(String, Vec<(usize, E)>)>;

pub(crate) fn by_tenant<E: Borrow<EncodedEvent>>(
    batch: impl ExactSizeIterator<Item = E>,
) -> (Vec<Appended>, TenantGroups<E>) {
    let out = vec![Appended::Duplicate; batch.len()];
    let mut groups: TenantGroups<E> = Vec::new();
    for (i, e) in batch.enumerate() {
        let tenant = &e.borrow().tenant;
        match groups.iter_mut().find(|(t, _)| t == tenant) {
            Some((_, g)) => g.push((i, e)),
            None => groups.push((tenant.clone(), vec![(i, e)])),
        }
    }
    (out, groups)
}

/// What one tenant's part of a batch writes: the numbered rows, the Merkle nodes to store,
/// and the new head (`None` when every event was a duplicate).
pub(crate) struct Numbered<E = EncodedEvent> {
    pub(crate) rows: Vec<LogRow<E>>,
    pub(crate) nodes: Vec<(NodeId, Hash)>,
    pub(crate) head: Option<NewHead>,
}

pub(crate) struct NewHead {
    pub(crate) size: u64,
    pub(crate) frontier: Vec<u8>,
}

/// Numbers a tenant's events from its current head: drops duplicates (already stored, or
/// twice in the batch), gives each event its leaf index, and extends the tree. Pure: every
/// way of writing (SQLite's appender thread, appends inside another transaction, the
/// PostgreSQL store) writes what this returns.
pub(crate) fn number<E: Borrow<EncodedEvent>>(
    tenant: &str,
    events: Vec<(usize, E)>,
    head: MerkleHead,
    existing: &HashSet<String>,
    out: &mut [Appended],
) -> Result<Numbered<E>> {
    let mut range = CompactRange::from_frontier(head.size, head.frontier)
        .map_err(|e| Error::internal(format!("merkle head of {tenant} is corrupt: {e:?}")))?;
    let mut seen: HashSet<uuid::Uuid> = HashSet::new();
    let mut rows = Vec::with_capacity(events.len());
    let mut nodes: Vec<(NodeId, Hash)> = Vec::new();
    for (i, event) in events {
        let e = event.borrow();
        let id = e.columns.id;
        if e.dedupe && (existing.contains(&id.to_string()) || !seen.insert(id)) {
            continue;
        }
        let seq = range.size();
        for (node, h) in range.append(e.leaf) {
            if node.level >= STORED_NODE_MIN_LEVEL {
                nodes.push((node, h));
            }
        }
        rows.push(LogRow {
            seq: seq as i64,
            event,
        });
        out[i] = Appended::Stored { seq };
    }
    let head = (!rows.is_empty()).then(|| NewHead {
        size: range.size(),
        frontier: range.frontier().concat(),
    });
    Ok(Numbered { rows, nodes, head })
}
