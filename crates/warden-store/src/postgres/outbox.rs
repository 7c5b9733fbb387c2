//! The outbox read on PostgreSQL: the log in order with nothing parsed (see [`crate::outbox`]).
//!
//! Rows come as the binary output of `COPY (SELECT …) TO STDOUT`, decoded here straight into
//! [`OutboxRow`]s. The outbox is read by the million (the analytics feeder catching up), and
//! the per-row work of a query result — a row object, a type check and a lookup per column —
//! cost more than the copy of the bytes themselves. `COPY` takes no parameters, so the tenant
//! is written into the statement as a literal, which [`literal`] allows only for the
//! characters a tenant id may hold.
//!
//! A large read is split in two halves by `seq`, read at once on two pooled connections: one
//! backend streams and one client decodes at a time otherwise, and the analytics feeder
//! catching up on a backlog waits on exactly that.

use futures::TryStreamExt;
use sqlx::postgres::PgPoolCopyExt;
use warden_audit::index::IndexedColumns;
use warden_core::{Error, Result, TenantId};

use super::{PgStore, db_err};
use crate::outbox::{COLUMNS, OutboxRow};

/// Below this many rows a read is one query: two round trips would cost more than they save.
const SPLIT_AT: u32 = 4_000;

/// The columns of [`COLUMNS`], which every row of the copy carries.
const FIELDS: usize = 15;

pub(super) async fn rows(
    store: &PgStore,
    tenant: &TenantId,
    from_seq: u64,
    limit: u32,
) -> Result<Vec<OutboxRow>> {
    if limit < SPLIT_AT {
        return read(store, tenant, from_seq, None, limit).await;
    }
    // The first half is every row with `seq` in [from, from + half): at most `half` of them,
    // fewer where retention deleted rows. The second continues at from + half. Together they
    // are a prefix of the log from `from_seq` in order, at most `limit` rows: what one query
    // would have returned, or a shorter page where the first range had gaps (a caller goes on
    // from the last row it got).
    let half = limit / 2;
    let middle = from_seq + u64::from(half);
    let (first, second) = tokio::join!(
        read(store, tenant, from_seq, Some(middle), half),
        read(store, tenant, middle, None, limit - half),
    );
    let mut rows = first?;
    rows.extend(second?);
    Ok(rows)
}

/// Rows with `from_seq <= seq < below` (no upper bound without `below`), in order, at most
/// `limit`.
async fn read(
    store: &PgStore,
    tenant: &TenantId,
    from_seq: u64,
    below: Option<u64>,
    limit: u32,
) -> Result<Vec<OutboxRow>> {
    let below = below.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
    let from = i64::try_from(from_seq).unwrap_or(i64::MAX);
    let sql = format!(
        "COPY (SELECT {COLUMNS} FROM audit_events \
         WHERE tenant = {} AND seq >= {from} AND seq < {below} ORDER BY seq LIMIT {limit}) \
         TO STDOUT (FORMAT binary)",
        literal(tenant.as_str())?
    );
    let mut stream = store.pool.copy_out_raw(&sql).await.map_err(db_err)?;
    let mut decoder = Decoder::default();
    let mut rows = Vec::with_capacity(crate::page_capacity(limit));
    while let Some(chunk) = stream.try_next().await.map_err(db_err)? {
        decoder.feed(&chunk, &mut rows)?;
    }
    decoder.finish()?;
    Ok(rows)
}

/// `s` as an SQL string literal, for the characters a tenant id may hold (letters, digits,
/// `-`, `_`, `.`); anything else is refused rather than escaped.
fn literal(s: &str) -> Result<String> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(Error::invalid(format!(
            "tenant id {s:?} cannot be read from the outbox"
        )));
    }
    Ok(format!("'{s}'"))
}

/// The binary `COPY` format (PostgreSQL manual, "COPY", Binary Format): an 11-byte signature,
/// a flags word and a header extension; then per row a field count and per field a length
/// (-1 for NULL) and the value in the type's binary form; a field count of -1 ends the data.
/// Decoded as it arrives: a chunk may hold several rows, or part of one.
#[derive(Default)]
struct Decoder {
    /// Bytes of a header or row not yet complete.
    pending: Vec<u8>,
    header_read: bool,
    ended: bool,
}

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// A decoding failure: the server sent what a binary copy of these columns cannot be.
fn malformed(why: impl std::fmt::Display) -> Error {
    Error::internal(format!(
        "the outbox copy from PostgreSQL is malformed: {why}"
    ))
}

impl Decoder {
    fn feed(&mut self, chunk: &[u8], rows: &mut Vec<OutboxRow>) -> Result<()> {
        if self.pending.is_empty() {
            let used = self.decode(chunk, rows)?;
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.pending);
            buf.extend_from_slice(chunk);
            let used = self.decode(&buf, rows)?;
            buf.drain(..used);
            self.pending = buf;
        }
        Ok(())
    }

    /// Decodes every complete row at the start of `buf`; returns how many bytes they took.
    fn decode(&mut self, buf: &[u8], rows: &mut Vec<OutboxRow>) -> Result<usize> {
        let mut at = 0;
        if !self.header_read {
            let Some(len) = header_len(buf)? else {
                return Ok(0);
            };
            self.header_read = true;
            at = len;
        }
        while at < buf.len() {
            if self.ended {
                return Err(malformed("data after the end marker"));
            }
            let Some(len) = row_len(&buf[at..])? else {
                break;
            };
            match decode_row(&buf[at..at + len])? {
                Some(row) => rows.push(row),
                None => self.ended = true,
            }
            at += len;
        }
        Ok(at)
    }

    fn finish(self) -> Result<()> {
        if !self.ended || !self.pending.is_empty() {
            return Err(malformed("the data ended early"));
        }
        Ok(())
    }
}

/// The header's length once `buf` holds all of it.
fn header_len(buf: &[u8]) -> Result<Option<usize>> {
    let fixed = SIGNATURE.len() + 8;
    let seen = buf.len().min(SIGNATURE.len());
    if buf[..seen] != SIGNATURE[..seen] {
        return Err(malformed("no binary copy signature"));
    }
    if buf.len() < fixed {
        return Ok(None);
    }
    let extension = usize::try_from(word(buf, SIGNATURE.len() + 4))
        .map_err(|_| malformed("a negative header extension length"))?;
    Ok((buf.len() >= fixed + extension).then_some(fixed + extension))
}

/// The length of the row (or end marker) at the start of `buf` once `buf` holds all of it.
fn row_len(buf: &[u8]) -> Result<Option<usize>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fields = i16::from_be_bytes([buf[0], buf[1]]);
    if fields == -1 {
        return Ok(Some(2));
    }
    if fields as usize != FIELDS {
        return Err(malformed(format!("{fields} fields in a row, not {FIELDS}")));
    }
    let mut at = 2;
    for _ in 0..FIELDS {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        at += 4 + usize::try_from(word(buf, at)).unwrap_or(0);
    }
    Ok((buf.len() >= at).then_some(at))
}

/// The row [`row_len`] measured, or `None` for the end marker.
fn decode_row(buf: &[u8]) -> Result<Option<OutboxRow>> {
    if buf.len() == 2 {
        return Ok(None);
    }
    let mut fields = Fields { buf, at: 2 };
    let seq = fields.int8()?;
    let id = fields
        .value()
        .ok_or_else(|| malformed("an event without id"))?;
    let id = uuid::Uuid::try_parse_ascii(id).map_err(|e| malformed(format!("stored id: {e}")))?;
    let row = OutboxRow {
        seq: u64::try_from(seq).map_err(|_| malformed("a negative seq"))?,
        columns: IndexedColumns {
            id,
            time_micros: fields.int8()?,
            namespace: fields.text()?,
            event_type: fields.text()?,
            principal: fields.optional_text()?,
            agent: fields.optional_text()?,
            on_behalf_of: fields.optional_text()?,
            session: fields.optional_text()?,
            action: fields.optional_text()?,
            resource_type: fields.optional_text()?,
            resource_id: fields.optional_text()?,
            outcome: fields.optional_text()?,
        },
        header: fields.text()?,
        payload: fields.optional_text()?,
    };
    Ok(Some(row))
}

/// The fields of one complete row, in order.
struct Fields<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    /// The next field's bytes; `None` for NULL. [`row_len`] checked that they are there.
    fn value(&mut self) -> Option<&'a [u8]> {
        let len = word(self.buf, self.at);
        self.at += 4;
        let len = usize::try_from(len).ok()?;
        let value = &self.buf[self.at..self.at + len];
        self.at += len;
        Some(value)
    }

    fn int8(&mut self) -> Result<i64> {
        let v = self.value().ok_or_else(|| malformed("a NULL number"))?;
        let v: [u8; 8] = v
            .try_into()
            .map_err(|_| malformed(format!("a bigint of {} bytes", v.len())))?;
        Ok(i64::from_be_bytes(v))
    }

    fn optional_text(&mut self) -> Result<Option<String>> {
        self.value()
            .map(|v| {
                std::str::from_utf8(v)
                    .map(str::to_owned)
                    .map_err(|e| malformed(format!("text that is not UTF-8: {e}")))
            })
            .transpose()
    }

    fn text(&mut self) -> Result<String> {
        self.optional_text()?
            .ok_or_else(|| malformed("NULL in a column that has a value"))
    }
}

/// The big-endian 32-bit word at `at`, which the caller made sure `buf` holds.
fn word(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(buf[at..at + 4].try_into().expect("four bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary copy of `rows` as PostgreSQL writes it: header, rows, end marker.
    fn copy_of(rows: &[[Option<&[u8]>; FIELDS]]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        // A header extension, which a reader must skip.
        out.extend_from_slice(&3u32.to_be_bytes());
        out.extend_from_slice(b"xyz");
        for row in rows {
            out.extend_from_slice(&(FIELDS as i16).to_be_bytes());
            for field in row {
                match field {
                    Some(v) => {
                        out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                        out.extend_from_slice(v);
                    }
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    fn sample(seq: i64, payload: Option<&'static [u8]>) -> [Option<&'static [u8]>; FIELDS] {
        let seq: &'static [u8] = Box::leak(Box::new(seq.to_be_bytes()));
        let time: &'static [u8] = Box::leak(Box::new(1_700_000_000_000_000i64.to_be_bytes()));
        [
            Some(seq),
            Some(b"0b6f1c4e-8f0e-4a8e-9a43-3f2d2f1f4b10"),
            Some(time),
            Some(b"acme/platform"),
            Some(b"authz.decision"),
            None,
            Some("agent-é".as_bytes()),
            None,
            None,
            Some(b"call_tool"),
            Some(b"Tool"),
            Some(b"github__create_issue"),
            Some(b"allow"),
            Some(b"{\"v\":1}"),
            payload,
        ]
    }

    fn decode_in(chunks: &[&[u8]]) -> Result<Vec<OutboxRow>> {
        let mut decoder = Decoder::default();
        let mut rows = Vec::new();
        for c in chunks {
            decoder.feed(c, &mut rows)?;
        }
        decoder.finish()?;
        Ok(rows)
    }

    #[test]
    fn rows_decode_however_the_bytes_are_split() {
        let data = copy_of(&[sample(7, Some(b"{\"a\":1}")), sample(8, None)]);
        let whole = decode_in(&[&data]).unwrap();
        assert_eq!(whole.len(), 2);
        let first = &whole[0];
        assert_eq!(first.seq, 7);
        assert_eq!(
            first.columns.id.to_string(),
            "0b6f1c4e-8f0e-4a8e-9a43-3f2d2f1f4b10"
        );
        assert_eq!(first.columns.time_micros, 1_700_000_000_000_000);
        assert_eq!(first.columns.namespace, "acme/platform");
        assert_eq!(first.columns.principal, None);
        assert_eq!(first.columns.agent.as_deref(), Some("agent-é"));
        assert_eq!(first.columns.outcome.as_deref(), Some("allow"));
        assert_eq!(first.header, "{\"v\":1}");
        assert_eq!(first.payload.as_deref(), Some("{\"a\":1}"));
        assert_eq!((whole[1].seq, whole[1].payload.as_deref()), (8, None));

        // Every split into two chunks, and one byte at a time, give the same rows.
        for cut in 0..=data.len() {
            let rows = decode_in(&[&data[..cut], &data[cut..]]).unwrap();
            assert_eq!(rows.len(), 2, "cut at {cut}");
            assert_eq!((rows[0].seq, rows[1].seq), (7, 8));
            assert_eq!(rows[1].columns.resource_id, first.columns.resource_id);
        }
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(decode_in(&bytes).unwrap().len(), 2);
    }

    #[test]
    fn the_query_selects_the_fields_the_decoder_reads() {
        assert_eq!(COLUMNS.split(',').count(), FIELDS);
    }

    #[test]
    fn an_empty_copy_is_no_rows() {
        assert!(decode_in(&[&copy_of(&[])]).unwrap().is_empty());
    }

    #[test]
    fn malformed_copies_are_errors() {
        let data = copy_of(&[sample(1, None)]);
        // Cut short: no end marker.
        let err = decode_in(&[&data[..data.len() - 2]]).unwrap_err();
        assert!(err.to_string().contains("ended early"), "{err}");
        // Not a binary copy.
        let err = decode_in(&[b"seq\tid\n1\tx\n"]).unwrap_err();
        assert!(err.to_string().contains("signature"), "{err}");
        // Another number of columns.
        let mut other = data.clone();
        let at = SIGNATURE.len() + 8 + 3;
        other[at..at + 2].copy_from_slice(&3i16.to_be_bytes());
        let err = decode_in(&[&other]).unwrap_err();
        assert!(err.to_string().contains("3 fields"), "{err}");
        // A bad id.
        let mut bad = sample(1, None);
        bad[1] = Some(b"not-a-uuid");
        assert!(decode_in(&[&copy_of(&[bad])]).is_err());
        // Text that is not UTF-8.
        let mut bad = sample(1, None);
        bad[3] = Some(b"\xff\xfe");
        let err = decode_in(&[&copy_of(&[bad])]).unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");
        // A NULL where the column always has a value.
        let mut bad = sample(1, None);
        bad[13] = None;
        assert!(decode_in(&[&copy_of(&[bad])]).is_err());
    }

    #[test]
    fn only_tenant_characters_become_literals() {
        assert_eq!(literal("acme-1_x.y").unwrap(), "'acme-1_x.y'");
        for bad in ["", "a'b", "a b", "a\\b", "a;b", "ä"] {
            assert!(literal(bad).is_err(), "{bad:?}");
        }
    }
}
