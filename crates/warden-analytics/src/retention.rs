//! Retention of the ClickHouse copy, done by the feeder that holds the lease.
//!
//! Two things keep the copy within what the system of record still holds:
//!
//! - **Partitions past `retention_days`** are dropped ([`drop_expired_partitions`]), at most
//!   once an hour. A partition holds every tenant's events, so the setting is the operator's,
//!   one for the whole table; and a partition that any active legal hold of any tenant reaches
//!   into (by time: a hold's namespace does not narrow a partition) is kept whole.
//! - **Retention runs of the system of record** reach the copy: each run first appends an
//!   `audit.retention.applied` event naming the positions it purges and deletes. The feeder
//!   copies that event after the events it names (the log is copied in order), and once it is
//!   in ClickHouse blanks the payloads of the purged positions and deletes the rows of the
//!   deleted ones ([`apply_records`]). Both are mutations keyed by (tenant, seq), idempotent,
//!   so a record copied twice is harmless; a failed mutation fails the batch, which is sent
//!   again with its mutations.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use warden_core::retention::SeqRange;
use warden_core::{TenantId, catalog};
use warden_store::Store;
use warden_store::outbox::OutboxRow;

use crate::client::{ClickHouse, ClickHouseError, quote};
use crate::config::Partition;
use crate::schema::{self, TABLE};

/// How often the lease holder looks for partitions past retention (and once when it starts
/// holding the lease).
pub const PARTITION_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
/// When a look at the partitions failed (ClickHouse away, legal holds unreadable), the next
/// one comes this much later.
pub const PARTITION_CHECK_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

/// Position ranges per mutation statement: each is some 40 bytes of SQL, and a statement must
/// stay well under ClickHouse's `max_query_size` (256 KiB by default).
const RANGES_PER_STATEMENT: usize = 2_000;

/// The time range of an active legal hold: events at or after `from`, before `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldTimes {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl HeldTimes {
    /// True when the hold reaches into `[start, end)`.
    pub fn overlaps(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
        self.from.is_none_or(|f| f < end) && self.to.is_none_or(|t| t > start)
    }
}

/// The time ranges of every active legal hold of every tenant with a log (the only tenants
/// the copy has rows of).
pub async fn held_times(store: &dyn Store) -> Result<Vec<HeldTimes>, warden_core::Error> {
    let mut held = Vec::new();
    for tenant in store.log_tenants().await? {
        for h in store.legal_holds(&tenant).await? {
            if h.is_active() {
                held.push(HeldTimes {
                    from: h.from,
                    to: h.to,
                });
            }
        }
    }
    Ok(held)
}

/// What one look at the partitions did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionsDropped {
    /// Partition ids dropped, oldest first.
    pub dropped: Vec<String>,
    /// Partitions past retention kept because a legal hold reaches into them.
    pub held: Vec<String>,
    /// What the feeder no longer sends.
    pub expired: Expired,
}

/// The events retention removed from the copy as of one look: those of a partition wholly
/// before `cutoff` that no active hold reached into. The feeder does not send them again
/// (a restarted feeder resends up to a batch back, and a tenant whose every row was dropped
/// from its start), so a dropped partition is not brought back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expired {
    pub cutoff: DateTime<Utc>,
    pub holds: Vec<HeldTimes>,
    pub partition: Partition,
}

impl Expired {
    /// True when an event of `time` belongs to a partition retention removes.
    pub fn covers(&self, time: DateTime<Utc>) -> bool {
        if time >= self.cutoff {
            return false;
        }
        let id = match self.partition {
            Partition::Month => time.format("%Y%m"),
            Partition::Day => time.format("%Y%m%d"),
        }
        .to_string();
        let (Some(start), Some(end)) = (schema::partition_start(&id), schema::partition_end(&id))
        else {
            return false;
        };
        end <= self.cutoff && !self.holds.iter().any(|h| h.overlaps(start, end))
    }
}

/// Drops every partition wholly older than `now − days` that no active legal hold reaches
/// into. Reads the holds first: when they cannot be read, nothing is dropped.
pub async fn drop_expired_partitions(
    ch: &ClickHouse,
    store: &dyn Store,
    partition: Partition,
    now: DateTime<Utc>,
    days: u32,
) -> Result<PartitionsDropped, crate::feeder::FeedError> {
    let holds = held_times(store).await?;
    let cutoff = now - chrono::Duration::days(i64::from(days));
    let held = std::sync::Mutex::new(Vec::new());
    let dropped = schema::drop_partitions_before_except(ch, cutoff, |id, start, end| {
        let kept = holds.iter().any(|h| h.overlaps(start, end));
        if kept {
            held.lock().expect("held").push(id.to_owned());
        }
        kept
    })
    .await?;
    Ok(PartitionsDropped {
        dropped,
        held: held.into_inner().expect("held"),
        expired: Expired {
            cutoff,
            holds,
            partition,
        },
    })
}

/// What an `audit.retention.applied` event asks of the copy. Only the ranges are read (a
/// record of a newer version with more fields still applies).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct RecordedRemoval {
    #[serde(default)]
    pub purged_ranges: Vec<SeqRange>,
    #[serde(default)]
    pub deleted_ranges: Vec<SeqRange>,
}

impl RecordedRemoval {
    fn is_empty(&self) -> bool {
        self.purged_ranges.is_empty() && self.deleted_ranges.is_empty()
    }
}

/// The removals `row` records, if it is an `audit.retention.applied` event that names any.
/// A record whose payload does not read is an error: the feeder must not go past a removal
/// it cannot apply.
pub fn recorded_removal(row: &OutboxRow) -> Result<Option<RecordedRemoval>, String> {
    if row.columns.event_type != catalog::AUDIT_RETENTION_APPLIED {
        return Ok(None);
    }
    let payload = row.payload.as_deref().ok_or_else(|| {
        format!(
            "retention record {} (position {}) has no payload",
            row.columns.id, row.seq
        )
    })?;
    let r: RecordedRemoval = serde_json::from_str(payload).map_err(|e| {
        format!(
            "retention record {} (position {}) does not read: {e}",
            row.columns.id, row.seq
        )
    })?;
    Ok((!r.is_empty()).then_some(r))
}

/// Applies recorded removals to the copy: blanks the payloads of the purged positions, deletes
/// the rows of the deleted ones. One mutation per kind and at most [`RANGES_PER_STATEMENT`]
/// ranges, for all the records given; returns how many statements ran.
pub async fn apply_records(
    ch: &ClickHouse,
    records: &[(TenantId, RecordedRemoval)],
) -> Result<u64, ClickHouseError> {
    let purged: Vec<(&TenantId, SeqRange)> = records
        .iter()
        .flat_map(|(t, r)| r.purged_ranges.iter().map(move |s| (t, *s)))
        .collect();
    let deleted: Vec<(&TenantId, SeqRange)> = records
        .iter()
        .flat_map(|(t, r)| r.deleted_ranges.iter().map(move |s| (t, *s)))
        .collect();
    let mut statements = 0;
    for chunk in purged.chunks(RANGES_PER_STATEMENT) {
        ch.execute(&format!(
            "ALTER TABLE {} UPDATE payload = '' WHERE {}",
            ch.table(TABLE),
            positions(chunk)
        ))
        .await?;
        statements += 1;
    }
    for chunk in deleted.chunks(RANGES_PER_STATEMENT) {
        ch.execute(&format!(
            "ALTER TABLE {} DELETE WHERE {}",
            ch.table(TABLE),
            positions(chunk)
        ))
        .await?;
        statements += 1;
    }
    Ok(statements)
}

/// `(tenant = 'a' AND seq BETWEEN 3 AND 9) OR …`: every condition names its tenant.
fn positions(ranges: &[(&TenantId, SeqRange)]) -> String {
    ranges
        .iter()
        .map(|(t, [a, b])| {
            format!(
                "(tenant = {} AND seq BETWEEN {a} AND {b})",
                quote(t.as_str())
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn holds_reach_into_partitions_by_time() {
        let (start, end) = (at("2026-01-01T00:00:00Z"), at("2026-02-01T00:00:00Z"));
        let hold = |from: Option<&str>, to: Option<&str>| HeldTimes {
            from: from.map(at),
            to: to.map(at),
        };
        assert!(hold(None, None).overlaps(start, end));
        assert!(hold(Some("2026-01-31T23:59:59Z"), None).overlaps(start, end));
        assert!(!hold(Some("2026-02-01T00:00:00Z"), None).overlaps(start, end));
        assert!(hold(None, Some("2026-01-01T00:00:01Z")).overlaps(start, end));
        assert!(!hold(None, Some("2026-01-01T00:00:00Z")).overlaps(start, end));
        assert!(
            hold(Some("2025-06-01T00:00:00Z"), Some("2026-06-01T00:00:00Z")).overlaps(start, end)
        );
        assert!(
            !hold(Some("2025-06-01T00:00:00Z"), Some("2025-12-01T00:00:00Z")).overlaps(start, end)
        );
    }

    #[test]
    fn expired_events_are_those_of_dropped_partitions() {
        let e = Expired {
            cutoff: at("2026-03-15T00:00:00Z"),
            holds: vec![HeldTimes {
                from: Some(at("2026-01-10T00:00:00Z")),
                to: Some(at("2026-01-11T00:00:00Z")),
            }],
            partition: Partition::Month,
        };
        assert!(e.covers(at("2026-02-28T23:59:59Z")));
        assert!(
            !e.covers(at("2026-03-01T00:00:00Z")),
            "March straddles the cutoff"
        );
        assert!(!e.covers(at("2026-01-20T00:00:00Z")), "January is held");
        assert!(e.covers(at("2025-12-31T00:00:00Z")));
        let by_day = Expired {
            partition: Partition::Day,
            ..e
        };
        assert!(by_day.covers(at("2026-01-20T00:00:00Z")));
        assert!(!by_day.covers(at("2026-01-10T12:00:00Z")));
    }

    #[test]
    fn removal_conditions_name_their_tenant() {
        let acme = TenantId::parse("acme").unwrap();
        let globex = TenantId::parse("globex").unwrap();
        assert_eq!(
            positions(&[(&acme, [3, 9]), (&globex, [0, 0])]),
            "(tenant = 'acme' AND seq BETWEEN 3 AND 9) OR (tenant = 'globex' AND seq BETWEEN 0 AND 0)"
        );
    }
}
