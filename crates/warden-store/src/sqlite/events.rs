//! Audit event queries on SQLite (the query API, exports), read through the direct
//! [`Reader`](super::reader::Reader): an export reads every event of a tenant, a page at a
//! time, and with sqlx most of its time went to handing rows between threads. Rows are
//! parsed on the reading thread, beside the caller's formatting of the page before.

use rusqlite::types::Value;
use warden_audit::verify::StoredEvent as LogRow;
use warden_core::{AuditEvent, Error, EventHeader, Result, TenantId};

use super::outbox::{Unparsed, unparsed};
use super::{EVENT_COLUMNS, SqliteStore, hash_from, us};
use crate::{EventFilter, PageRequest, StoredEvent};

pub(super) async fn query(
    store: &SqliteStore,
    tenant: &TenantId,
    f: &EventFilter,
    page: PageRequest,
    parse_payload: bool,
) -> Result<Vec<StoredEvent>> {
    read_rows(
        store,
        statement(tenant, f, page),
        page.limit,
        move |r, leaf| parse(r, leaf, parse_payload),
    )
    .await
}

/// A tenant's log in order from `from_seq`, parsed (see [`crate::Store::events_in_order`]).
/// Stream destinations read every event of a log this way, and through sqlx most of that
/// time went to handing rows between threads.
pub(super) async fn in_order(
    store: &SqliteStore,
    tenant: &TenantId,
    from_seq: u64,
    limit: u32,
) -> Result<Vec<StoredEvent>> {
    query(
        store,
        tenant,
        &EventFilter::default(),
        log_page(from_seq, limit),
        true,
    )
    .await
}

/// A tenant's log in order from `from_seq`, nothing parsed (see [`crate::Store::log_rows`]).
pub(super) async fn log_rows(
    store: &SqliteStore,
    tenant: &TenantId,
    from_seq: u64,
    limit: u32,
) -> Result<Vec<LogRow>> {
    let statement = statement(tenant, &EventFilter::default(), log_page(from_seq, limit));
    read_rows(store, statement, limit, |r, leaf| {
        let row = r.into_row()?;
        Ok(LogRow {
            seq: row.seq,
            leaf_hash: hash_from(&leaf)?,
            header_json: row.header,
            payload_json: row.payload,
            columns: row.columns,
        })
    })
    .await
}

/// The page of a log from `from_seq` on, in order.
fn log_page(from_seq: u64, limit: u32) -> PageRequest {
    PageRequest {
        after_seq: from_seq.checked_sub(1),
        limit,
        oldest_first: true,
    }
}

/// The rows of an event statement, each made into a `T` on the reading thread once the
/// statement is done.
async fn read_rows<T: Send + 'static>(
    store: &SqliteStore,
    (sql, params): (String, Vec<Value>),
    limit: u32,
    make: impl Fn(Unparsed, Vec<u8>) -> Result<T> + Send + 'static,
) -> Result<Vec<T>> {
    let rows = store
        .reader
        .read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
            let mut out = Vec::with_capacity(crate::page_capacity(limit));
            while let Some(r) = rows.next()? {
                // The event columns start with the outbox's; the leaf hash follows.
                out.push((unparsed(r)?, r.get::<_, Vec<u8>>(15)?));
            }
            Ok(out
                .into_iter()
                .map(|(r, leaf)| make(r, leaf))
                .collect::<Vec<_>>())
        })
        .await?;
    rows.into_iter().collect()
}

/// The stored event of a row as read; its payload left null (the text kept) unless
/// `parse_payload`.
fn parse(r: Unparsed, leaf_hash: Vec<u8>, parse_payload: bool) -> Result<StoredEvent> {
    let row = r.into_row()?;
    let header: EventHeader = serde_json::from_str(&row.header)
        .map_err(|e| Error::internal(format!("stored event header does not parse: {e}")))?;
    let payload = match &row.payload {
        Some(p) if parse_payload => serde_json::from_str(p)
            .map_err(|e| Error::internal(format!("stored payload does not parse: {e}")))?,
        _ => serde_json::Value::Null,
    };
    Ok(StoredEvent {
        seq: row.seq,
        event: AuditEvent { header, payload },
        header_json: row.header,
        payload_json: row.payload,
        leaf_hash: hash_from(&leaf_hash)?,
        columns: row.columns,
    })
}

/// The query's statement and its parameters, in order.
fn statement(tenant: &TenantId, f: &EventFilter, page: PageRequest) -> (String, Vec<Value>) {
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM audit_events WHERE tenant = ?");
    let mut params = vec![Value::Text(tenant.as_str().to_owned())];
    if let Some(t) = f.from {
        sql.push_str(" AND time_us >= ?");
        params.push(Value::Integer(us(t)));
    }
    if let Some(t) = f.to {
        sql.push_str(" AND time_us < ?");
        params.push(Value::Integer(us(t)));
    }
    if let Some(ns) = &f.namespace {
        // Subtree as a range, not LIKE: '_' is legal in namespace names and a LIKE wildcard.
        sql.push_str(" AND (namespace = ? OR (namespace >= ? AND namespace < ?))");
        params.push(Value::Text(ns.as_str().to_owned()));
        params.push(Value::Text(format!("{ns}/")));
        params.push(Value::Text(format!("{ns}0")));
    }
    let eq = [
        ("event_type", &f.event_type),
        ("agent", &f.agent),
        ("on_behalf_of", &f.on_behalf_of),
        ("session", &f.session),
        ("action", &f.action),
        ("resource_type", &f.resource_type),
        ("resource_id", &f.resource_id),
        ("outcome", &f.outcome),
    ];
    for (col, v) in eq {
        if let Some(v) = v {
            sql.push_str(&format!(" AND {col} = ?"));
            params.push(Value::Text(v.clone()));
        }
    }
    if let Some(after) = page.after_seq {
        sql.push_str(if page.oldest_first {
            " AND seq > ?"
        } else {
            " AND seq < ?"
        });
        params.push(Value::Integer(after as i64));
    }
    sql.push_str(if page.oldest_first {
        " ORDER BY seq ASC LIMIT ?"
    } else {
        " ORDER BY seq DESC LIMIT ?"
    });
    params.push(Value::Integer(i64::from(page.limit)));
    (sql, params)
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_columns_start_with_the_outbox_columns() {
        // `query` reads the outbox's columns by position, then the leaf hash.
        assert_eq!(
            super::EVENT_COLUMNS,
            format!("{}, leaf_hash", crate::outbox::COLUMNS)
        );
    }
}
