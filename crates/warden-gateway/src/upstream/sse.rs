//! Server-Sent Events as the HTML standard defines them, for the Streamable HTTP transport:
//! lines end with CRLF, LF or CR; `data` lines of one event are joined with `\n`; lines that
//! start with `:` are comments (keep-alives); an empty line ends an event; the `id` field sets
//! the last event id even on an event without data (servers "prime" a stream that way so that
//! it can be resumed), and `retry` sets the reconnection delay.

use std::collections::VecDeque;
use std::time::Duration;

use futures::{Stream, StreamExt};

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event` field; `None` means the default type, `message`.
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    /// Whether the event carries a JSON-RPC message (MCP sends them as `message` events).
    pub fn is_message(&self) -> bool {
        matches!(self.event.as_deref(), None | Some("message"))
    }
}

/// An incremental parser: feed it bytes as they arrive, take events as they complete.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended with CR: a LF at the start of the next one belongs to it.
    after_cr: bool,
    started: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    last_event_id: Option<String>,
    retry: Option<Duration>,
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// The id of the last event that had one (for `Last-Event-ID` when resuming).
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// The reconnection delay the server asked for, if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Parses `chunk`, appending the events it completes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut VecDeque<SseEvent>) {
        let mut rest = chunk;
        if !self.started && !rest.is_empty() {
            self.started = true;
            // A UTF-8 byte order mark may start the stream.
            if let Some(stripped) = rest.strip_prefix(b"\xEF\xBB\xBF".as_slice()) {
                rest = stripped;
            }
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(stripped) = rest.strip_prefix(b"\n".as_slice()) {
                rest = stripped;
            }
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..pos]);
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, out);
            let cr = rest[pos] == b'\r';
            rest = &rest[pos + 1..];
            if cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.line.extend_from_slice(rest);
    }

    fn process_line(&mut self, line: &[u8], out: &mut VecDeque<SseEvent>) {
        if line.is_empty() {
            if self.has_data {
                let mut data = std::mem::take(&mut self.data);
                if data.ends_with('\n') {
                    data.pop();
                }
                out.push_back(SseEvent {
                    event: self.event.take(),
                    data,
                });
            }
            self.data.clear();
            self.has_data = false;
            self.event = None;
            return;
        }
        if line[0] == b':' {
            return; // a comment, e.g. a keep-alive
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.find(':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (&line[..], ""),
        };
        match field {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_owned()),
            "id" if !value.contains('\0') => self.last_event_id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse::<u64>() {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
    }
}

/// Events read from a byte stream (an HTTP response body).
pub struct SseStream<S> {
    inner: S,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
    done: bool,
}

impl<S, B, E> SseStream<S>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
{
    pub fn new(inner: S) -> SseStream<S> {
        SseStream {
            inner,
            parser: SseParser::new(),
            ready: VecDeque::new(),
            done: false,
        }
    }

    pub fn parser(&self) -> &SseParser {
        &self.parser
    }

    /// The next complete event; `None` at the end of the stream (an unfinished event at the
    /// end is discarded, as the standard says).
    pub async fn next_event(&mut self) -> Option<Result<SseEvent, E>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            match self.inner.next().await {
                Some(Ok(chunk)) => self.parser.feed(chunk.as_ref(), &mut self.ready),
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                None => self.done = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> (Vec<SseEvent>, SseParser) {
        let mut parser = SseParser::new();
        let mut out = VecDeque::new();
        for chunk in chunks {
            parser.feed(chunk, &mut out);
        }
        (out.into_iter().collect(), parser)
    }

    fn ev(data: &str) -> SseEvent {
        SseEvent {
            event: None,
            data: data.into(),
        }
    }

    #[test]
    fn multi_line_data_comments_and_every_line_ending() {
        let text =
            b"\xEF\xBB\xBF: keep-alive\r\nevent: message\r\ndata: {\"a\":\r\ndata:  1}\r\n\r\n\
                     data: two\rdata: lines\r\rid: 7\nretry: 1500\n\n";
        let (events, parser) = parse_chunks(&[text]);
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: Some("message".into()),
                    data: "{\"a\":\n 1}".into()
                },
                ev("two\nlines"),
            ]
        );
        assert_eq!(parser.last_event_id(), Some("7"));
        assert_eq!(parser.retry(), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn events_split_anywhere_across_chunks() {
        let text: &[u8] = b"id: e1\r\ndata: hello\r\n\r\ndata: world\r\n\r\n";
        for split in 0..text.len() {
            let (a, b) = text.split_at(split);
            let (events, parser) = parse_chunks(&[a, b]);
            assert_eq!(events, vec![ev("hello"), ev("world")], "split at {split}");
            assert_eq!(parser.last_event_id(), Some("e1"));
        }
    }

    #[test]
    fn priming_event_sets_the_id_without_dispatching() {
        let (events, parser) = parse_chunks(&[b"id: prime-1\ndata:\n\nid: p2\n\n"]);
        // `data:` with an empty value is still data: an empty event is dispatched.
        assert_eq!(events, vec![ev("")]);
        assert_eq!(parser.last_event_id(), Some("p2"));
    }

    #[test]
    fn unfinished_event_and_unknown_fields_are_ignored() {
        let (events, _) = parse_chunks(&[b"foo: bar\ndata\n\nevent: ping\ndata: x\n\ndata: cut"]);
        assert_eq!(
            events,
            vec![
                ev(""),
                SseEvent {
                    event: Some("ping".into()),
                    data: "x".into()
                }
            ]
        );
        assert!(!events[1].is_message());
    }
}
