//! The outbox read on SQLite: the log in order with nothing parsed (see [`crate::outbox`]),
//! through the direct [`Reader`](super::reader::Reader): the feeder and the destinations read
//! every event once more, by the thousand.

use warden_audit::index::IndexedColumns;
use warden_core::{Error, Result, TenantId};

use super::SqliteStore;
use crate::outbox::{COLUMNS, OutboxRow};

pub(super) async fn rows(
    store: &SqliteStore,
    tenant: &TenantId,
    from_seq: u64,
    limit: u32,
) -> Result<Vec<OutboxRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_events WHERE tenant = ? AND seq >= ? ORDER BY seq LIMIT ?"
    );
    let tenant = tenant.as_str().to_owned();
    let rows = store
        .reader
        .read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(rusqlite::params![tenant, from_seq as i64, limit])?;
            let mut out = Vec::with_capacity(crate::page_capacity(limit));
            while let Some(r) = rows.next()? {
                out.push(unparsed(r)?);
            }
            Ok(out)
        })
        .await?;
    rows.into_iter().map(Unparsed::into_row).collect()
}

/// The leading columns of [`COLUMNS`] (which the event queries select first as well), as
/// read: the id is checked after the read, since a conversion error inside it would be
/// reported as the database being unreadable.
pub(super) struct Unparsed {
    pub id: String,
    pub row: OutboxRow,
}

impl Unparsed {
    /// The row, its id parsed.
    pub fn into_row(self) -> Result<OutboxRow> {
        let mut row = self.row;
        row.columns.id = uuid::Uuid::parse_str(&self.id)
            .map_err(|e| Error::internal(format!("stored id {:?}: {e}", self.id)))?;
        Ok(row)
    }
}

/// Reads the columns of [`COLUMNS`] from the start of `r`.
pub(super) fn unparsed(r: &rusqlite::Row<'_>) -> rusqlite::Result<Unparsed> {
    Ok(Unparsed {
        id: r.get(1)?,
        row: OutboxRow {
            seq: r.get::<_, i64>(0)? as u64,
            columns: IndexedColumns {
                id: uuid::Uuid::nil(),
                time_micros: r.get(2)?,
                namespace: r.get(3)?,
                event_type: r.get(4)?,
                principal: r.get(5)?,
                agent: r.get(6)?,
                on_behalf_of: r.get(7)?,
                session: r.get(8)?,
                action: r.get(9)?,
                resource_type: r.get(10)?,
                resource_id: r.get(11)?,
                outcome: r.get(12)?,
            },
            header: r.get(13)?,
            payload: r.get(14)?,
        },
    })
}
