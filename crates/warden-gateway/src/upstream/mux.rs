//! What both transports share: one connection carries the calls of many agents, so the
//! connection owns the wire. [`Mux`] gives every call a request id of its own (a counter)
//! and a connection-unique progress token, and routes what the server sends back:
//!
//! * a response goes to the call with that wire id;
//! * `notifications/progress` goes to the call whose (rewritten) token it carries, with the
//!   caller's own token restored; progress for a call that is gone is dropped;
//! * `notifications/cancelled` for a request the server sent us goes to the call that
//!   received that request;
//! * any other notification goes to the call it is related to when the transport knows one
//!   ([`Origin::Call`]: on HTTP, the SSE stream of that call's POST) and that call has an
//!   events channel; otherwise to every subscriber ([`Mux::subscribe`]);
//! * a request from the server goes, as [`ServerMessage::Request`], to the call it belongs
//!   to — on HTTP the call whose stream carried it; on stdio, where nothing on the wire
//!   relates it to a call, the most recently started call still in flight that has an
//!   events channel. With no such call, `ping` is answered here and anything else goes to
//!   the fallback the gateway set ([`Mux::set_fallback`]: it relays to the one agent
//!   session that owns the upstream, or refuses), or without one gets a JSON-RPC error.
//!   The answer is sent back under the server's own id.
//!
//! Events are handed over with `try_send`, in the order they arrive and before the call's
//! response is released, so a caller that drains its channel sees every event before the
//! result. The reading side never waits for a slow caller: a notification that does not fit
//! in a full channel is dropped (and logged), a server request waits in a task of its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::{Health, ServerInfo, ServerMessage, UpstreamError};
use crate::jsonrpc::{Id, Message, Notification, Request, Response, RpcError, code};

/// The protocol version the gateway asks for.
pub const PROTOCOL_VERSION: &str = "2025-11-25";
/// The versions the gateway accepts when the server answers with another one.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];

/// First delay before reconnecting; it doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_START: Duration = Duration::from_millis(500);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection that stayed ready this long starts over at [`BACKOFF_START`] when it fails.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);

/// What a call ends with.
pub type Outcome = Result<Result<Value, RpcError>, UpstreamError>;

/// The `initialize` parameters the gateway sends: the client capabilities it forwards to
/// agents.
pub fn initialize_params() -> Value {
    json!({
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {
            "sampling": {},
            "elicitation": {},
            "roots": {"listChanged": true},
        },
        "clientInfo": {"name": "warden-gateway", "version": env!("CARGO_PKG_VERSION")},
    })
}

/// Reads an `initialize` result; refuses a protocol version the gateway does not speak.
pub fn parse_initialize(server: &str, result: Value) -> Result<ServerInfo, UpstreamError> {
    let protocol = |reason: String| UpstreamError::Protocol {
        server: server.to_owned(),
        reason,
    };
    let Value::Object(mut result) = result else {
        return Err(protocol("the initialize result is not an object".into()));
    };
    let version = match result.remove("protocolVersion") {
        Some(Value::String(v)) => v,
        _ => {
            return Err(protocol(
                "the initialize result has no protocolVersion".into(),
            ));
        }
    };
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return Err(protocol(format!(
            "the server speaks MCP {version}; the gateway supports {}",
            SUPPORTED_VERSIONS.join(", ")
        )));
    }
    Ok(ServerInfo {
        protocol_version: version,
        capabilities: result.remove("capabilities").unwrap_or_else(|| json!({})),
        server_info: result.remove("serverInfo").unwrap_or(Value::Null),
        instructions: match result.remove("instructions") {
            Some(Value::String(s)) => Some(s),
            _ => None,
        },
    })
}

/// The reason in an error, without the server's name (for [`Health::Down`]).
pub fn reason(error: &UpstreamError) -> String {
    match error {
        UpstreamError::Timeout { timeout, .. } => format!("no answer within {timeout:?}"),
        UpstreamError::Unavailable { reason, .. }
        | UpstreamError::Crashed { reason, .. }
        | UpstreamError::Protocol { reason, .. } => reason.clone(),
    }
}

/// Waits until `health` is Ready (`Ok`) or Down (`Err`, fail fast: the transport is
/// retrying in the background). The caller bounds the wait with its own deadline.
pub async fn wait_ready(
    server: &str,
    health: &mut watch::Receiver<Health>,
) -> Result<(), UpstreamError> {
    loop {
        match &*health.borrow_and_update() {
            Health::Ready => return Ok(()),
            Health::Down { reason, .. } => {
                return Err(UpstreamError::Unavailable {
                    server: server.to_owned(),
                    reason: reason.clone(),
                });
            }
            Health::Starting => {}
        }
        if health.changed().await.is_err() {
            return Err(UpstreamError::Unavailable {
                server: server.to_owned(),
                reason: "the connection was shut down".into(),
            });
        }
    }
}

/// How a transport sends what the mux itself must send: answers to the server's requests
/// and cancellations. It never waits for the outcome (failures are logged).
pub trait Outbound: Send + Sync + 'static {
    fn send_detached(&self, message: Message);
}

/// Where the transport read a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// stdio: nothing on the wire relates a message to a call.
    Unrelated,
    /// HTTP: the response stream of the POST that carried call `wire id`.
    Call(i64),
    /// HTTP: the standalone GET stream, which belongs to no call.
    NoCall,
}

struct Slot {
    done: oneshot::Sender<Outcome>,
    events: Option<mpsc::Sender<ServerMessage>>,
    /// The wire token, when the call carried a progress token, and the caller's own token.
    token: Option<(String, Value)>,
}

#[derive(Default)]
struct State {
    /// In-flight calls by wire id (ascending: the last one is the most recent).
    calls: BTreeMap<i64, Slot>,
    /// Wire progress token → wire id.
    tokens: HashMap<String, i64>,
    /// The server's requests being answered → the wire id of the call that received them.
    server_requests: HashMap<Id, i64>,
}

/// The request ids, progress tokens and routes of one upstream connection (kept across
/// reconnects: wire ids keep counting up).
pub struct Mux {
    server: String,
    next_id: AtomicI64,
    next_token: AtomicU64,
    state: Mutex<State>,
    notifications: broadcast::Sender<Notification>,
    /// Where a server request that belongs to no call goes (`roots/list` at start).
    fallback: Mutex<Option<mpsc::Sender<ServerMessage>>>,
}

/// A registered call: send `message`, then wait on `response`. Dropping `guard` before the
/// response arrives frees the slot and tells the server the call is cancelled.
pub struct Pending {
    pub wire_id: i64,
    pub message: Message,
    pub response: oneshot::Receiver<Outcome>,
    pub guard: CallGuard,
}

impl Mux {
    pub fn new(server: &str) -> Arc<Mux> {
        Arc::new(Mux {
            server: server.to_owned(),
            next_id: AtomicI64::new(1),
            next_token: AtomicU64::new(1),
            state: Mutex::new(State::default()),
            notifications: broadcast::channel(256).0,
            fallback: Mutex::new(None),
        })
    }

    /// Sends server requests that belong to no call (other than `ping`) to `requests`.
    pub fn set_fallback(&self, requests: mpsc::Sender<ServerMessage>) {
        *self.fallback.lock().unwrap_or_else(|e| e.into_inner()) = Some(requests);
    }

    fn fallback(&self) -> Option<mpsc::Sender<ServerMessage>> {
        self.fallback
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.notifications.subscribe()
    }

    /// How many calls are waiting for their response.
    pub fn in_flight(&self) -> usize {
        self.lock().calls.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a call and builds its wire request: the wire id replaces the caller's, and
    /// `params._meta.progressToken`, when present, becomes a token unique to this connection.
    pub fn begin(
        self: &Arc<Self>,
        out: Arc<dyn Outbound>,
        method: &str,
        mut params: Option<Value>,
        events: Option<mpsc::Sender<ServerMessage>>,
    ) -> Pending {
        let wire_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut token = None;
        if let Some(slot) = params
            .as_mut()
            .and_then(|p| p.get_mut("_meta"))
            .and_then(|m| m.get_mut("progressToken"))
        {
            let wire = format!("p{}", self.next_token.fetch_add(1, Ordering::Relaxed));
            let original = std::mem::replace(slot, Value::String(wire.clone()));
            token = Some((wire, original));
        }
        let (done, response) = oneshot::channel();
        {
            let mut state = self.lock();
            if let Some((wire, _)) = &token {
                state.tokens.insert(wire.clone(), wire_id);
            }
            state.calls.insert(
                wire_id,
                Slot {
                    done,
                    events,
                    token,
                },
            );
        }
        Pending {
            wire_id,
            message: Message::Request(Request {
                id: Id::Number(wire_id),
                method: method.to_owned(),
                params,
            }),
            response,
            guard: CallGuard {
                mux: self.clone(),
                out,
                wire_id,
                reason: None,
                cancel: true,
            },
        }
    }

    fn remove(&self, state: &mut State, wire_id: i64) -> Option<Slot> {
        let slot = state.calls.remove(&wire_id)?;
        if let Some((wire, _)) = &slot.token {
            state.tokens.remove(wire);
        }
        Some(slot)
    }

    /// Ends one call with `outcome` (if it is still in flight).
    pub fn finish(&self, wire_id: i64, outcome: Outcome) -> bool {
        let slot = {
            let mut state = self.lock();
            self.remove(&mut state, wire_id)
        };
        match slot {
            Some(slot) => {
                let _ = slot.done.send(outcome);
                true
            }
            None => false,
        }
    }

    /// Ends every call in flight (the connection is gone), with `error()` each.
    pub fn fail_all(&self, error: impl Fn() -> UpstreamError) {
        let slots: Vec<Slot> = {
            let mut state = self.lock();
            state.tokens.clear();
            state.server_requests.clear();
            std::mem::take(&mut state.calls).into_values().collect()
        };
        for slot in slots {
            let _ = slot.done.send(Err(error()));
        }
    }

    /// Routes one message from the server. `reply_timeout` bounds how long a server request
    /// waits for the agent's answer.
    pub fn route(
        self: &Arc<Self>,
        out: &Arc<dyn Outbound>,
        message: Message,
        origin: Origin,
        reply_timeout: Duration,
    ) {
        match message {
            Message::Response(response) => self.route_response(response),
            Message::Notification(n) => self.route_notification(n, origin),
            Message::Request(r) => self.route_request(out, r, origin, reply_timeout),
        }
    }

    fn route_response(&self, response: Response) {
        let Id::Number(wire_id) = response.id else {
            tracing::warn!(target: "warden::upstream", server = %self.server, id = %response.id,
                "response with an id the gateway never sent");
            return;
        };
        if !self.finish(wire_id, Ok(response.result)) {
            tracing::debug!(target: "warden::upstream", server = %self.server, wire_id,
                "response for a call that is no longer waiting (cancelled or timed out)");
        }
    }

    fn deliver_notification(&self, events: &mpsc::Sender<ServerMessage>, n: Notification) -> bool {
        match events.try_send(ServerMessage::Notification(n)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(ServerMessage::Notification(n))) => {
                tracing::warn!(target: "warden::upstream", server = %self.server, method = %n.method,
                    "the caller's events channel is full; notification dropped");
                true
            }
            Err(_) => false,
        }
    }

    fn route_notification(&self, mut n: Notification, origin: Origin) {
        if n.method == "notifications/progress" {
            let token = n
                .params
                .as_ref()
                .and_then(|p| p.get("progressToken"))
                .and_then(Value::as_str);
            let target = token.and_then(|t| {
                let state = self.lock();
                let wire_id = state.tokens.get(t)?;
                let slot = state.calls.get(wire_id)?;
                Some((slot.events.clone(), slot.token.as_ref()?.1.clone()))
            });
            match target {
                Some((Some(events), original)) => {
                    if let Some(Value::Object(p)) = n.params.as_mut() {
                        p.insert("progressToken".into(), original);
                    }
                    self.deliver_notification(&events, n);
                }
                Some((None, _)) => {} // the caller did not ask for events
                None => tracing::debug!(target: "warden::upstream", server = %self.server,
                    "progress for a call that is no longer waiting"),
            }
            return;
        }
        let events = {
            let state = self.lock();
            let wire_id = if n.method == "notifications/cancelled" {
                n.params
                    .as_ref()
                    .and_then(|p| p.get("requestId"))
                    .and_then(|id| serde_json::from_value::<Id>(id.clone()).ok())
                    .and_then(|id| state.server_requests.get(&id).copied())
            } else {
                match origin {
                    Origin::Call(wire_id) => Some(wire_id),
                    Origin::Unrelated | Origin::NoCall => None,
                }
            };
            wire_id
                .and_then(|id| state.calls.get(&id))
                .and_then(|slot| slot.events.clone())
        };
        if let Some(events) = events
            && self.deliver_notification(&events, n.clone())
        {
            return;
        }
        if n.method == "notifications/cancelled" {
            return; // about a request nobody is answering any more
        }
        let _ = self.notifications.send(n);
    }

    fn route_request(
        self: &Arc<Self>,
        out: &Arc<dyn Outbound>,
        request: Request,
        origin: Origin,
        reply_timeout: Duration,
    ) {
        let target = {
            let state = self.lock();
            match origin {
                Origin::Call(wire_id) => state
                    .calls
                    .get(&wire_id)
                    .and_then(|s| s.events.clone())
                    .map(|e| (wire_id, e)),
                Origin::Unrelated => state
                    .calls
                    .iter()
                    .rev()
                    .find_map(|(id, s)| s.events.clone().map(|e| (*id, e))),
                Origin::NoCall => None,
            }
        };
        let target = match target {
            Some((wire_id, events)) => Some((Some(wire_id), events)),
            None if request.method != "ping" => self.fallback().map(|events| (None, events)),
            None => None,
        };
        let server_id = request.id.clone();
        let unanswered = |request: &Request| -> Response {
            Response {
                id: request.id.clone(),
                result: if request.method == "ping" {
                    Ok(json!({}))
                } else {
                    Err(RpcError::new(
                        code::INTERNAL_ERROR,
                        format!(
                            "no client request is in flight through the gateway to answer {}",
                            request.method
                        ),
                    ))
                },
            }
        };
        let Some((wire_id, events)) = target else {
            out.send_detached(Message::Response(unanswered(&request)));
            return;
        };
        let (reply, answer) = oneshot::channel();
        let message = ServerMessage::Request {
            request: request.clone(),
            reply,
        };
        let queued = match events.try_send(message) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(message)) => Some(message),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                out.send_detached(Message::Response(unanswered(&request)));
                return;
            }
        };
        if let Some(wire_id) = wire_id {
            self.lock()
                .server_requests
                .insert(server_id.clone(), wire_id);
        }
        let out = out.clone();
        let server = self.server.clone();
        let mux = Arc::downgrade(self);
        tokio::spawn(async move {
            let result = tokio::time::timeout(reply_timeout, async {
                if let Some(message) = queued
                    && events.send(message).await.is_err()
                {
                    return Err(RpcError::new(code::INTERNAL_ERROR, "the client went away"));
                }
                answer.await.unwrap_or_else(|_| {
                    Err(RpcError::new(
                        code::INTERNAL_ERROR,
                        "the client did not answer the request",
                    ))
                })
            })
            .await
            .unwrap_or_else(|_| {
                Err(RpcError::new(
                    code::INTERNAL_ERROR,
                    format!("the client did not answer within {reply_timeout:?}"),
                ))
            });
            if let Some(mux) = mux.upgrade() {
                mux.lock().server_requests.remove(&server_id);
            }
            tracing::debug!(target: "warden::upstream", server = %server, id = %server_id,
                ok = result.is_ok(), "answering the server's request");
            out.send_detached(Message::Response(Response {
                id: server_id,
                result,
            }));
        });
    }
}

/// Frees a call's slot when dropped before its response, and sends the server
/// `notifications/cancelled` for it.
pub struct CallGuard {
    mux: Arc<Mux>,
    out: Arc<dyn Outbound>,
    wire_id: i64,
    reason: Option<String>,
    cancel: bool,
}

impl CallGuard {
    /// The reason given to the server if the call is cancelled.
    pub fn set_reason(&mut self, reason: impl Into<String>) {
        self.reason = Some(reason.into());
    }

    /// Frees the slot without telling the server (`initialize`, which must not be cancelled,
    /// or a request that never reached it).
    pub fn no_cancel(&mut self) {
        self.cancel = false;
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let slot = {
            let mut state = self.mux.lock();
            self.mux.remove(&mut state, self.wire_id)
        };
        if slot.is_some() && self.cancel {
            let reason = self
                .reason
                .take()
                .unwrap_or_else(|| "the client cancelled the request".into());
            self.out.send_detached(Message::Notification(Notification {
                method: "notifications/cancelled".into(),
                params: Some(json!({"requestId": self.wire_id, "reason": reason})),
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what the mux sends by itself.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Message>>);

    impl Outbound for Recorder {
        fn send_detached(&self, message: Message) {
            self.0.lock().unwrap().push(message);
        }
    }

    impl Recorder {
        fn take(&self) -> Vec<Message> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    fn setup() -> (Arc<Mux>, Arc<Recorder>, Arc<dyn Outbound>) {
        let recorder = Arc::new(Recorder::default());
        let out: Arc<dyn Outbound> = recorder.clone();
        (Mux::new("test"), recorder, out)
    }

    fn parse(text: &str) -> Message {
        Message::parse(text.as_bytes()).unwrap()
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn ids_and_progress_tokens_are_the_connections_own() {
        let (mux, _, out) = setup();
        let params = json!({"name": "x", "_meta": {"progressToken": "mine"}});
        let (tx_a, mut rx_a) = mpsc::channel(4);
        let (tx_b, mut rx_b) = mpsc::channel(4);
        let a = mux.begin(out.clone(), "tools/call", Some(params.clone()), Some(tx_a));
        let b = mux.begin(out.clone(), "tools/call", Some(params), Some(tx_b));
        let token = |p: &Pending| match &p.message {
            Message::Request(r) => r.params.as_ref().unwrap()["_meta"]["progressToken"].clone(),
            _ => unreachable!(),
        };
        assert_ne!(a.wire_id, b.wire_id);
        assert_ne!(token(&a), json!("mine"));
        assert_ne!(token(&a), token(&b));

        let progress = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{},"progress":1}}}}"#,
            token(&b)
        );
        mux.route(&out, parse(&progress), Origin::Unrelated, T);
        let Ok(ServerMessage::Notification(n)) = rx_b.try_recv() else {
            panic!("b got no progress")
        };
        assert_eq!(n.params.unwrap()["progressToken"], "mine");
        assert!(rx_a.try_recv().is_err());

        let response = format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{{"ok":true}}}}"#,
            b.wire_id
        );
        mux.route(&out, parse(&response), Origin::Unrelated, T);
        let mut b = b;
        assert_eq!(
            b.response.try_recv().unwrap().unwrap().unwrap(),
            json!({"ok": true})
        );
        // Progress for a finished call goes nowhere.
        mux.route(&out, parse(&progress), Origin::Unrelated, T);
        assert!(rx_b.try_recv().is_err());
        drop(b.guard);
        assert_eq!(mux.in_flight(), 1);
        drop(a);
    }

    #[tokio::test]
    async fn dropping_a_pending_call_cancels_it_once() {
        let (mux, recorder, out) = setup();
        let mut pending = mux.begin(out.clone(), "tools/call", None, None);
        pending.guard.set_reason("timed out");
        let wire_id = pending.wire_id;
        drop(pending);
        let sent = recorder.take();
        assert_eq!(sent.len(), 1);
        assert_eq!(
            sent[0].to_value(),
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                   "params": {"requestId": wire_id, "reason": "timed out"}})
        );
        assert_eq!(mux.in_flight(), 0);

        // A call that already ended is not cancelled; neither is one marked no_cancel.
        let pending = mux.begin(out.clone(), "tools/call", None, None);
        mux.finish(pending.wire_id, Ok(Ok(json!({}))));
        drop(pending);
        let mut quiet = mux.begin(out.clone(), "initialize", None, None);
        quiet.guard.no_cancel();
        drop(quiet);
        assert!(recorder.take().is_empty());
    }

    #[tokio::test]
    async fn server_requests_follow_the_origin_or_the_latest_call_with_events() {
        let (mux, recorder, out) = setup();
        let (tx_old, mut rx_old) = mpsc::channel(4);
        let (tx_new, mut rx_new) = mpsc::channel(4);
        let old = mux.begin(out.clone(), "tools/call", None, Some(tx_old));
        let new = mux.begin(out.clone(), "tools/call", None, Some(tx_new));
        let _no_events = mux.begin(out.clone(), "tools/call", None, None);
        let sampling =
            r#"{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{}}"#;

        // stdio: the most recent call that has an events channel.
        mux.route(&out, parse(sampling), Origin::Unrelated, T);
        let Ok(ServerMessage::Request { request, reply }) = rx_new.try_recv() else {
            panic!("the newest call got nothing")
        };
        assert_eq!(request.id, Id::String("s1".into()));
        reply.send(Ok(json!({"answer": 1}))).unwrap();
        tokio::task::yield_now().await;
        let answered = tokio::time::timeout(T, async {
            loop {
                let sent = recorder.take();
                if !sent.is_empty() {
                    return sent;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        assert_eq!(
            answered[0].to_value(),
            json!({"jsonrpc": "2.0", "id": "s1", "result": {"answer": 1}})
        );

        // HTTP: exactly the call whose stream carried it.
        mux.route(&out, parse(sampling), Origin::Call(old.wire_id), T);
        assert!(matches!(
            rx_old.try_recv(),
            Ok(ServerMessage::Request { .. })
        ));
        assert!(rx_new.try_recv().is_err());

        // The GET stream: no call; ping is answered here, the rest refused.
        mux.route(
            &out,
            parse(r#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#),
            Origin::NoCall,
            T,
        );
        mux.route(&out, parse(sampling), Origin::NoCall, T);
        let sent: Vec<Value> = recorder.take().iter().map(Message::to_value).collect();
        assert_eq!(sent[0], json!({"jsonrpc": "2.0", "id": 9, "result": {}}));
        assert_eq!(sent[1]["error"]["code"], code::INTERNAL_ERROR);
        drop((old, new));
    }

    #[tokio::test]
    async fn requests_of_no_call_go_to_the_fallback_except_ping() {
        let (mux, recorder, out) = setup();
        let (tx, mut rx) = mpsc::channel(4);
        mux.set_fallback(tx);
        let roots = r#"{"jsonrpc":"2.0","id":"r1","method":"roots/list"}"#;
        mux.route(&out, parse(roots), Origin::Unrelated, T);
        let Ok(ServerMessage::Request { request, reply }) = rx.try_recv() else {
            panic!("the fallback got nothing")
        };
        assert_eq!(request.method, "roots/list");
        reply.send(Ok(json!({"roots": []}))).unwrap();
        let answered = tokio::time::timeout(T, async {
            loop {
                let sent = recorder.take();
                if !sent.is_empty() {
                    return sent;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        assert_eq!(
            answered[0].to_value(),
            json!({"jsonrpc": "2.0", "id": "r1", "result": {"roots": []}})
        );
        // Ping never needs anybody.
        mux.route(
            &out,
            parse(r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#),
            Origin::NoCall,
            T,
        );
        assert!(rx.try_recv().is_err());
        assert_eq!(
            recorder.take()[0].to_value(),
            json!({"jsonrpc": "2.0", "id": 2, "result": {}})
        );
    }

    #[tokio::test]
    async fn notifications_go_to_their_call_or_to_subscribers() {
        let (mux, _, out) = setup();
        let mut subscribers = mux.subscribe();
        let (tx, mut rx) = mpsc::channel(4);
        let call = mux.begin(out.clone(), "tools/call", None, Some(tx));
        let log = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}"#;
        mux.route(&out, parse(log), Origin::Call(call.wire_id), T);
        assert!(matches!(rx.try_recv(), Ok(ServerMessage::Notification(_))));
        assert!(subscribers.try_recv().is_err());
        // On stdio nothing relates it to the call.
        mux.route(&out, parse(log), Origin::Unrelated, T);
        assert!(rx.try_recv().is_err());
        assert_eq!(
            subscribers.try_recv().unwrap().method,
            "notifications/message"
        );
        drop(call);
    }

    #[test]
    fn initialize_results_are_checked() {
        let info = parse_initialize(
            "s",
            json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                   "serverInfo": {"name": "n"}, "instructions": "be nice"}),
        )
        .unwrap();
        assert_eq!(info.protocol_version, "2025-06-18");
        assert_eq!(info.instructions.as_deref(), Some("be nice"));
        let err = parse_initialize("s", json!({"protocolVersion": "2024-11-05"})).unwrap_err();
        assert!(matches!(err, UpstreamError::Protocol { .. }), "{err}");
        assert_eq!(initialize_params()["clientInfo"]["name"], "warden-gateway");
        assert_eq!(
            initialize_params()["capabilities"]["roots"]["listChanged"],
            true
        );
    }
}
