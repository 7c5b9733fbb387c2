//! Delivery to stream destinations, as stored: the destinations of each tenant, where each one
//! stands in its tenant's log (the cursor), who delivers it (the lease) and the events that
//! failed every attempt (dead letters).
//!
//! The audit log is the outbox: a tenant's events carry gap-free sequence numbers, so a
//! destination's whole progress is one number, `next_seq` — every event below it was
//! delivered (acknowledged by the receiver) or dead-lettered. The cursor moves only for the
//! node holding the lease and only from the value that node read (compare and set), so a node
//! that lost its lease while a batch was in flight cannot move it back or past another's.
//!
//! The SQL is the same on SQLite and PostgreSQL; [`delivery_sql!`] writes it once for both.

use chrono::{DateTime, Utc};
use serde::Serialize;
use warden_core::{AuditEvent, TenantId};

/// A destination as stored: settings are opaque JSON here (the delivery crate owns their
/// shape); they never hold a secret value, only `env:`/`file:` references.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredDestination {
    pub tenant: TenantId,
    pub name: String,
    pub spec: serde_json::Value,
    /// `api` or `config`.
    pub origin: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Where a new destination's cursor starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeliveryStart {
    /// At the first event of the tenant's log: the whole history is delivered.
    #[default]
    Beginning,
    /// After the last event committed when the destination is created.
    Now,
}

/// Where a destination stands. A destination never delivered has `next_seq` 0 and no lease.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DeliveryState {
    pub next_seq: u64,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// `closed`, `open` or `half_open`, as the delivering node last wrote it.
    pub circuit: String,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub dead_letters: u64,
}

/// An event to put in the dead-letter store.
#[derive(Clone, Debug, PartialEq)]
pub struct NewDeadLetter {
    pub seq: u64,
    pub event_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeadLetter {
    pub seq: u64,
    pub event_id: String,
    pub attempts: u32,
    pub error: String,
    pub created_at: DateTime<Utc>,
}

/// A batch that failed every attempt: its events go to the dead-letter store and the cursor
/// moves from `from` to `to`, past them.
#[derive(Clone, Debug)]
pub struct DeadLetterBatch<'a> {
    pub from: u64,
    pub to: u64,
    pub letters: &'a [NewDeadLetter],
    pub attempts: u32,
    pub error: &'a str,
    /// The audit event that records the dead-lettering, appended to the tenant's log in the
    /// same transaction: it exists exactly when the batch was dead-lettered.
    pub record: Option<&'a AuditEvent>,
}

/// The lease and cursor operations of one node on one destination.
#[derive(Clone, Debug)]
pub struct LeaseKey<'a> {
    pub tenant: &'a TenantId,
    pub destination: &'a str,
    /// This node's id.
    pub owner: &'a str,
}

/// Implements the delivery queries on a store type with a `pool` field (`$1`-style
/// parameters, which SQLite accepts as well).
macro_rules! delivery_sql {
    ($store:ty, $row:ty) => {
        use chrono::{DateTime, Utc};
        use sqlx::Row;
        use warden_core::{Error, Result, TenantId};

        use super::{append_in, db_err, from_us, us};
        use crate::EncodedEvent;
        use crate::delivery::{
            DeadLetter, DeadLetterBatch, DeliveryStart, DeliveryState, LeaseKey,
            StoredDestination,
        };

        fn destination_from_row(r: &$row) -> Result<StoredDestination> {
            let spec: String = r.get("spec");
            Ok(StoredDestination {
                tenant: TenantId::parse(r.get::<&str, _>("tenant"))?,
                name: r.get("name"),
                spec: serde_json::from_str(&spec)
                    .map_err(|e| Error::internal(format!("stored destination: {e}")))?,
                origin: r.get("origin"),
                created_at: from_us(r.get("created_us")),
                updated_at: from_us(r.get("updated_us")),
            })
        }

        impl $store {
            /// Creates a destination unless the name is taken (false); with
            /// [`DeliveryStart::Now`] its cursor is written at the log head in the same
            /// transaction.
            pub(crate) async fn dest_create(
                &self,
                d: &StoredDestination,
                start: DeliveryStart,
            ) -> Result<bool> {
                let mut tx = self.pool.begin().await.map_err(db_err)?;
                // The insert first: it takes the write lock, so the head read below is the
                // head as of the creation.
                let r = sqlx::query(
                    "INSERT INTO destinations (tenant, name, spec, origin, created_us, updated_us) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, name) DO NOTHING",
                )
                .bind(d.tenant.as_str())
                .bind(&d.name)
                .bind(d.spec.to_string())
                .bind(&d.origin)
                .bind(us(d.created_at))
                .bind(us(d.updated_at))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                if r.rows_affected() != 1 {
                    return Ok(false);
                }
                if start == DeliveryStart::Now {
                    // `WHERE true`: SQLite needs it to read ON CONFLICT after a SELECT.
                    sqlx::query(
                        "INSERT INTO delivery_state (tenant, destination, next_seq, circuit) \
                         SELECT $1, $2, COALESCE((SELECT size FROM merkle_heads WHERE tenant = $1), 0), 'closed' \
                         WHERE true ON CONFLICT (tenant, destination) DO UPDATE SET next_seq = excluded.next_seq",
                    )
                    .bind(d.tenant.as_str())
                    .bind(&d.name)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                }
                tx.commit().await.map_err(db_err)?;
                Ok(true)
            }

            /// Inserts or replaces a destination; the previous one, if any.
            pub(crate) async fn dest_put(
                &self,
                d: &StoredDestination,
            ) -> Result<Option<StoredDestination>> {
                let before = self.dest_get(&d.tenant, &d.name).await?;
                sqlx::query(
                    "INSERT INTO destinations (tenant, name, spec, origin, created_us, updated_us) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, name) DO UPDATE SET \
                     spec = excluded.spec, origin = excluded.origin, updated_us = excluded.updated_us",
                )
                .bind(d.tenant.as_str())
                .bind(&d.name)
                .bind(d.spec.to_string())
                .bind(&d.origin)
                .bind(us(d.created_at))
                .bind(us(d.updated_at))
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
                Ok(before)
            }

            /// Removes a destination with its cursor, lease and dead letters.
            pub(crate) async fn dest_delete(
                &self,
                tenant: &TenantId,
                name: &str,
            ) -> Result<Option<StoredDestination>> {
                let before = self.dest_get(tenant, name).await?;
                if before.is_none() {
                    return Ok(None);
                }
                let mut tx = self.pool.begin().await.map_err(db_err)?;
                for sql in [
                    "DELETE FROM destinations WHERE tenant = $1 AND name = $2",
                    "DELETE FROM delivery_state WHERE tenant = $1 AND destination = $2",
                    "DELETE FROM dead_letters WHERE tenant = $1 AND destination = $2",
                ] {
                    sqlx::query(sql)
                        .bind(tenant.as_str())
                        .bind(name)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                }
                tx.commit().await.map_err(db_err)?;
                Ok(before)
            }

            pub(crate) async fn dest_get(
                &self,
                tenant: &TenantId,
                name: &str,
            ) -> Result<Option<StoredDestination>> {
                let row = sqlx::query("SELECT * FROM destinations WHERE tenant = $1 AND name = $2")
                    .bind(tenant.as_str())
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_err)?;
                row.as_ref().map(destination_from_row).transpose()
            }

            pub(crate) async fn dest_list(
                &self,
                tenant: Option<&TenantId>,
            ) -> Result<Vec<StoredDestination>> {
                let rows = sqlx::query(
                    "SELECT * FROM destinations WHERE ($1 IS NULL OR tenant = $1) ORDER BY tenant, name",
                )
                .bind(tenant.map(|t| t.as_str().to_owned()))
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
                rows.iter().map(destination_from_row).collect()
            }

            pub(crate) async fn dest_state(
                &self,
                tenant: &TenantId,
                name: &str,
            ) -> Result<DeliveryState> {
                let row = sqlx::query(
                    "SELECT * FROM delivery_state WHERE tenant = $1 AND destination = $2",
                )
                .bind(tenant.as_str())
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
                let count: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM dead_letters WHERE tenant = $1 AND destination = $2",
                )
                .bind(tenant.as_str())
                .bind(name)
                .fetch_one(&self.pool)
                .await
                .map_err(db_err)?;
                let mut s = DeliveryState {
                    circuit: "closed".into(),
                    dead_letters: count as u64,
                    ..DeliveryState::default()
                };
                if let Some(r) = row {
                    s.next_seq = r.get::<i64, _>("next_seq") as u64;
                    s.lease_owner = r.get("lease_owner");
                    s.lease_expires_at =
                        r.get::<Option<i64>, _>("lease_expires_us").map(from_us);
                    s.circuit = r.get("circuit");
                    s.last_error = r.get("last_error");
                    s.last_error_at = r.get::<Option<i64>, _>("last_error_us").map(from_us);
                }
                Ok(s)
            }

            /// Takes or renews the lease until `expires`: true when this node holds it now
            /// (it had it, nobody had it, or the holder's lease ran out before `now`). Only for
            /// a destination that exists: a worker still running after its destination was
            /// deleted cannot leave a cursor behind for a new destination of that name.
            pub(crate) async fn dest_lease(
                &self,
                k: &LeaseKey<'_>,
                now: DateTime<Utc>,
                expires: DateTime<Utc>,
            ) -> Result<bool> {
                let r = sqlx::query(
                    "INSERT INTO delivery_state (tenant, destination, next_seq, lease_owner, lease_expires_us, circuit) \
                     SELECT $1, $2, 0, $3, $4, 'closed' WHERE EXISTS \
                     (SELECT 1 FROM destinations WHERE tenant = $1 AND name = $2) \
                     ON CONFLICT (tenant, destination) DO UPDATE SET \
                     lease_owner = excluded.lease_owner, lease_expires_us = excluded.lease_expires_us \
                     WHERE delivery_state.lease_owner IS NULL OR delivery_state.lease_owner = excluded.lease_owner \
                     OR delivery_state.lease_expires_us < $5",
                )
                .bind(k.tenant.as_str())
                .bind(k.destination)
                .bind(k.owner)
                .bind(us(expires))
                .bind(us(now))
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
                Ok(r.rows_affected() == 1)
            }

            pub(crate) async fn dest_release(&self, k: &LeaseKey<'_>) -> Result<()> {
                sqlx::query(
                    "UPDATE delivery_state SET lease_owner = NULL, lease_expires_us = NULL \
                     WHERE tenant = $1 AND destination = $2 AND lease_owner = $3",
                )
                .bind(k.tenant.as_str())
                .bind(k.destination)
                .bind(k.owner)
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
                Ok(())
            }

            /// Moves the cursor from `from` to `to` if this node holds the lease and the
            /// cursor is still at `from`; false otherwise (nothing written).
            pub(crate) async fn dest_advance(
                &self,
                k: &LeaseKey<'_>,
                from: u64,
                to: u64,
            ) -> Result<bool> {
                let r = sqlx::query(
                    "UPDATE delivery_state SET next_seq = $5 \
                     WHERE tenant = $1 AND destination = $2 AND lease_owner = $3 AND next_seq = $4",
                )
                .bind(k.tenant.as_str())
                .bind(k.destination)
                .bind(k.owner)
                .bind(from as i64)
                .bind(to as i64)
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
                Ok(r.rows_affected() == 1)
            }

            /// Dead-letters the batch's letters, moves the cursor from `from` to `to` and
            /// appends its record, in one transaction, under the same conditions as
            /// [`Self::dest_advance`].
            pub(crate) async fn dest_dead_letter(
                &self,
                k: &LeaseKey<'_>,
                b: &DeadLetterBatch<'_>,
            ) -> Result<bool> {
                if let Some(e) = b.record
                    && e.header.tenant != k.tenant.as_str()
                {
                    return Err(Error::internal(format!(
                        "a dead letter of tenant {} carries an event of tenant {}",
                        k.tenant, e.header.tenant
                    )));
                }
                // Encoded before the write lock is taken, as the audit pipeline does.
                let encoded: Vec<EncodedEvent> =
                    b.record.iter().map(|e| EncodedEvent::of(e, false)).collect();
                let mut tx = self.pool.begin().await.map_err(db_err)?;
                // The conditional update first: it takes the write lock, and decides.
                let r = sqlx::query(
                    "UPDATE delivery_state SET next_seq = $5 \
                     WHERE tenant = $1 AND destination = $2 AND lease_owner = $3 AND next_seq = $4",
                )
                .bind(k.tenant.as_str())
                .bind(k.destination)
                .bind(k.owner)
                .bind(b.from as i64)
                .bind(b.to as i64)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                if r.rows_affected() != 1 {
                    return Ok(false);
                }
                let now = us(Utc::now());
                for l in b.letters {
                    sqlx::query(
                        "INSERT INTO dead_letters (tenant, destination, seq, event_id, attempts, error, created_us) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant, destination, seq) DO NOTHING",
                    )
                    .bind(k.tenant.as_str())
                    .bind(k.destination)
                    .bind(l.seq as i64)
                    .bind(&l.event_id)
                    .bind(i64::from(b.attempts))
                    .bind(b.error)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                }
                // The Merkle head is read under the write lock the update above holds.
                append_in(&mut tx, encoded).await?;
                tx.commit().await.map_err(db_err)?;
                Ok(true)
            }

            /// What the delivering node reports: circuit state and, when given, the last error.
            pub(crate) async fn dest_status(
                &self,
                k: &LeaseKey<'_>,
                circuit: &str,
                error: Option<&str>,
            ) -> Result<()> {
                sqlx::query(
                    "UPDATE delivery_state SET circuit = $4, \
                     last_error = COALESCE($5, last_error), \
                     last_error_us = CASE WHEN $5 IS NULL THEN last_error_us ELSE $6 END \
                     WHERE tenant = $1 AND destination = $2 AND lease_owner = $3",
                )
                .bind(k.tenant.as_str())
                .bind(k.destination)
                .bind(k.owner)
                .bind(circuit)
                .bind(error)
                .bind(us(Utc::now()))
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
                Ok(())
            }

            /// Oldest first, after `after_seq`, at most `limit`.
            pub(crate) async fn dest_dead_letters(
                &self,
                tenant: &TenantId,
                name: &str,
                after_seq: Option<u64>,
                limit: u32,
            ) -> Result<Vec<DeadLetter>> {
                let rows = sqlx::query(
                    "SELECT * FROM dead_letters WHERE tenant = $1 AND destination = $2 AND seq > $3 \
                     ORDER BY seq LIMIT $4",
                )
                .bind(tenant.as_str())
                .bind(name)
                .bind(after_seq.map_or(-1, |s| s as i64))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
                Ok(rows
                    .iter()
                    .map(|r| DeadLetter {
                        seq: r.get::<i64, _>("seq") as u64,
                        event_id: r.get("event_id"),
                        attempts: r.get::<i64, _>("attempts") as u32,
                        error: r.get("error"),
                        created_at: from_us(r.get("created_us")),
                    })
                    .collect())
            }

            pub(crate) async fn dest_remove_dead_letters(
                &self,
                tenant: &TenantId,
                name: &str,
                seqs: &[u64],
            ) -> Result<u64> {
                let mut tx = self.pool.begin().await.map_err(db_err)?;
                let mut removed = 0;
                for s in seqs {
                    removed += sqlx::query(
                        "DELETE FROM dead_letters WHERE tenant = $1 AND destination = $2 AND seq = $3",
                    )
                    .bind(tenant.as_str())
                    .bind(name)
                    .bind(*s as i64)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?
                    .rows_affected();
                }
                tx.commit().await.map_err(db_err)?;
                Ok(removed)
            }
        }
    };
}

pub(crate) use delivery_sql;
