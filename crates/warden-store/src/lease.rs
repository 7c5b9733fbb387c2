//! Named leases: one node of a cluster at a time does work that concerns the whole cluster
//! rather than one tenant (the analytics feeder: `analytics.feeder`).
//!
//! A lease is a row (name, owner, expiry). Taking it and renewing it are one conditional
//! upsert — written when nobody holds the name, when this owner does, or when the holder's
//! expiry has passed — so two nodes racing for it cannot both succeed. A holder that stops
//! renewing (a crashed node) loses it at expiry; a graceful stop releases it at once.
//!
//! The SQL is the same on SQLite and PostgreSQL; [`lease_sql!`] writes it once for both.

/// Implements the lease queries on a store type with a `pool` field (`$1`-style parameters,
/// which SQLite accepts as well).
macro_rules! lease_sql {
    ($store:ty) => {
        use chrono::{DateTime, Utc};
        use warden_core::Result;

        use super::{db_err, us};

        impl $store {
            /// Takes or renews lease `name` for `owner` until `expires`: true when `owner`
            /// holds it now (it had it, nobody had it, or the holder's expiry is before `now`).
            pub(crate) async fn lease_acquire(
                &self,
                name: &str,
                owner: &str,
                now: DateTime<Utc>,
                expires: DateTime<Utc>,
            ) -> Result<bool> {
                let r = sqlx::query(
                    "INSERT INTO leases (name, owner, expires_us) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET \
                     owner = excluded.owner, expires_us = excluded.expires_us \
                     WHERE leases.owner = excluded.owner OR leases.expires_us < $4",
                )
                .bind(name)
                .bind(owner)
                .bind(us(expires))
                .bind(us(now))
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
                Ok(r.rows_affected() == 1)
            }

            /// Gives lease `name` up, if `owner` holds it (another owner's is left alone).
            pub(crate) async fn lease_release(&self, name: &str, owner: &str) -> Result<()> {
                sqlx::query("DELETE FROM leases WHERE name = $1 AND owner = $2")
                    .bind(name)
                    .bind(owner)
                    .execute(&self.pool)
                    .await
                    .map_err(db_err)?;
                Ok(())
            }
        }
    };
}

pub(crate) use lease_sql;
