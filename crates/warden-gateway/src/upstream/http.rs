//! The Streamable HTTP transport: every message is POSTed to the server's endpoint, which
//! answers a request with either one JSON body or an SSE stream that carries, before the
//! response, what the server sends about that request (progress, log messages, its own
//! requests to the client). A standalone GET stream, when the server offers one (405 means
//! it does not), carries what belongs to no request.
//!
//! * Every POST sends `Accept: application/json, text/event-stream`, the configured headers,
//!   `MCP-Session-Id` once the server assigned one and `MCP-Protocol-Version` after
//!   `initialize`.
//! * Routing follows [`super::mux`], with an exact relation: a server request or a
//!   notification read on a POST's stream belongs to that POST's call; one read on the GET
//!   stream belongs to none (notifications go to [`Upstream::subscribe`], requests are
//!   answered with an error, `ping` with `{}`).
//! * A response stream that ends before the response is resumed with a GET carrying
//!   `Last-Event-ID`, when the server gave its events ids; otherwise the call fails with
//!   [`UpstreamError::Crashed`].
//! * A session the server no longer knows — 404 to a request that carried a session id, or a
//!   400 whose body mentions the session (which is how some reference servers answer an
//!   unknown session) — is initialised anew, and the request retried once.
//! * Any other non-2xx answer fails the call with [`UpstreamError::Unavailable`] naming the
//!   status and the start of the body. A connection failure also marks the upstream
//!   [`Health::Down`]: a supervisor re-initialises it with backoff (0.5 s doubling to 30 s),
//!   and calls made meanwhile fail at once.
//! * [`Upstream::shutdown`] ends the session with DELETE.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::mux::{self, Mux, Origin, Outbound, Outcome};
use super::sse::SseStream;
use super::{
    Health, ServerInfo, ServerMessage, Transport, Upstream, UpstreamConfig, UpstreamError,
};
use crate::jsonrpc::{Id, Message, Notification, RpcError};

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const LAST_EVENT_ID: &str = "last-event-id";
/// How many times one response stream is resumed before the call is given up.
const MAX_RESUMES: u32 = 3;
/// The wait before resuming a stream when the server named none (`retry`).
const DEFAULT_RETRY: Duration = Duration::from_millis(100);
/// How long shutdown waits for the server to acknowledge DELETE.
const DELETE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct HttpUpstream {
    shared: Arc<Shared>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

/// The MCP session with the server.
#[derive(Clone, Debug, Default)]
struct Session {
    id: Option<String>,
    /// The negotiated protocol version, sent as `MCP-Protocol-Version` (not for 2025-03-26,
    /// which predates the header).
    version: Option<String>,
    /// Counts initialisations: a failure reported for an older session is stale.
    generation: u64,
}

struct Shared {
    me: Weak<Shared>,
    name: String,
    url: String,
    headers: HeaderMap,
    config_error: Option<String>,
    timeout: Duration,
    client: reqwest::Client,
    mux: Arc<Mux>,
    session: Mutex<Session>,
    /// Held while (re)initialising, so that concurrent calls that find the session gone
    /// initialise it once.
    reinit: tokio::sync::Mutex<()>,
    health: watch::Sender<Health>,
    info: Mutex<Option<ServerInfo>>,
    shutdown: watch::Sender<bool>,
    /// The generation of the latest session found broken (connection failures), with why.
    lost: watch::Sender<(u64, String)>,
    /// The generation of the latest session the GET stream found expired.
    expired: watch::Sender<u64>,
    get_stream: Mutex<Option<JoinHandle<()>>>,
}

enum PostError {
    /// The server could not be reached, or the connection broke.
    Transport(String),
    /// The server no longer knows the session.
    SessionLost,
    /// Any other non-2xx answer.
    Status(String),
}

impl HttpUpstream {
    /// Starts the connection in the background (see [`super::connect`]).
    pub fn start(config: UpstreamConfig) -> Arc<dyn Upstream> {
        HttpUpstream::spawn(config)
    }

    /// Like [`HttpUpstream::start`], keeping the concrete type.
    ///
    /// # Panics
    /// If the configuration is not an HTTP one.
    pub fn spawn(config: UpstreamConfig) -> Arc<HttpUpstream> {
        let Transport::Http { url, headers } = config.transport.clone() else {
            panic!(
                "HttpUpstream needs an http transport, got {:?}",
                config.transport
            );
        };
        let mut header_map = HeaderMap::new();
        let mut config_error = None;
        for (name, value) in &headers {
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                (Ok(name), Ok(mut value)) => {
                    value.set_sensitive(true);
                    header_map.insert(name, value);
                }
                _ => config_error = Some(format!("the configured header {name:?} is not valid")),
            }
        }
        let timeout = config.timeout();
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build();
        let client = match client {
            Ok(client) => client,
            Err(e) => {
                config_error = Some(format!("the HTTP client could not be built: {e}"));
                reqwest::Client::new()
            }
        };
        let name = config.name.clone();
        let shared = Arc::new_cyclic(|me| Shared {
            me: me.clone(),
            url,
            headers: header_map,
            config_error,
            timeout,
            client,
            mux: Mux::new(&name),
            session: Mutex::new(Session::default()),
            reinit: tokio::sync::Mutex::new(()),
            health: watch::channel(Health::Starting).0,
            info: Mutex::new(None),
            shutdown: watch::channel(false).0,
            lost: watch::channel((0, String::new())).0,
            expired: watch::channel(0).0,
            get_stream: Mutex::new(None),
            name,
        });
        let supervisor = tokio::spawn(supervise(shared.clone()));
        Arc::new(HttpUpstream {
            shared,
            supervisor: Mutex::new(Some(supervisor)),
        })
    }

    /// Health changes as they happen.
    pub fn watch_health(&self) -> watch::Receiver<Health> {
        self.shared.health.subscribe()
    }

    /// The session id the server assigned, if any.
    pub fn session_id(&self) -> Option<String> {
        self.shared.session().id
    }

    /// Calls waiting for their response.
    pub fn in_flight(&self) -> usize {
        self.shared.mux.in_flight()
    }
}

impl Drop for HttpUpstream {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}

#[async_trait::async_trait]
impl Upstream for HttpUpstream {
    fn name(&self) -> &str {
        &self.shared.name
    }

    async fn call(
        &self,
        method: &str,
        params: Option<Value>,
        events: Option<mpsc::Sender<ServerMessage>>,
    ) -> Result<Result<Value, RpcError>, UpstreamError> {
        let shared = &self.shared;
        let deadline = Instant::now() + shared.timeout;
        let mut health = shared.health.subscribe();
        match tokio::time::timeout_at(deadline, mux::wait_ready(&shared.name, &mut health)).await {
            Ok(ready) => ready?,
            Err(_) => return Err(shared.timeout_error()),
        }
        let mut pending = shared.mux.begin(shared.outbound(), method, params, events);
        let exchange = shared.exchange(&pending.message, pending.wire_id, &mut pending.response);
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => {
                pending
                    .guard
                    .set_reason(format!("timed out after {:?}", shared.timeout));
                Err(shared.timeout_error())
            }
        }
    }

    async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), UpstreamError> {
        let shared = &self.shared;
        if *shared.health.borrow() != Health::Ready {
            return Err(shared.unavailable("the server is not ready"));
        }
        let message = Message::Notification(Notification {
            method: method.to_owned(),
            params,
        });
        let mut retried = false;
        loop {
            let session = shared.session();
            match shared.post(&message, &session).await {
                Ok(_) => return Ok(()),
                Err(PostError::SessionLost) if !retried => {
                    retried = true;
                    shared.reinitialize(session.generation).await?;
                }
                Err(PostError::SessionLost) => {
                    return Err(shared.unavailable("the server lost the new session too"));
                }
                Err(PostError::Status(s)) => return Err(shared.unavailable(s)),
                Err(PostError::Transport(e)) => {
                    shared.report_lost(session.generation, &e);
                    return Err(shared.unavailable(e));
                }
            }
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.shared.mux.subscribe()
    }

    fn serve_unrelated(&self, requests: mpsc::Sender<ServerMessage>) {
        self.shared.mux.set_fallback(requests);
    }

    fn server_info(&self) -> Option<ServerInfo> {
        self.shared
            .info
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn health(&self) -> Health {
        self.shared.health.borrow().clone()
    }

    async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        let supervisor = self
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(supervisor) = supervisor {
            let _ = supervisor.await;
        }
    }
}

impl Outbound for Shared {
    fn send_detached(&self, message: Message) {
        let Some(me) = self.me.upgrade() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let session = me.session();
            let sent = tokio::time::timeout(me.timeout, me.post(&message, &session)).await;
            let error = match sent {
                Ok(Ok(_)) => return,
                Ok(Err(PostError::SessionLost)) => "the server lost the session".to_owned(),
                Ok(Err(PostError::Status(s) | PostError::Transport(s))) => s,
                Err(_) => "timed out".to_owned(),
            };
            tracing::debug!(target: "warden::upstream", server = %me.name, %error,
                "could not send a message to the server");
        });
    }
}

impl Shared {
    fn outbound(&self) -> Arc<dyn Outbound> {
        self.me
            .upgrade()
            .expect("the connection is alive while it is used")
    }

    fn session(&self) -> Session {
        self.session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_health(&self, health: Health) {
        self.health.send_replace(health);
    }

    fn unavailable(&self, reason: impl Into<String>) -> UpstreamError {
        UpstreamError::Unavailable {
            server: self.name.clone(),
            reason: reason.into(),
        }
    }

    fn timeout_error(&self) -> UpstreamError {
        UpstreamError::Timeout {
            server: self.name.clone(),
            timeout: self.timeout,
        }
    }

    /// A connection failure on session `generation`: the supervisor reconnects.
    fn report_lost(&self, generation: u64, reason: &str) {
        self.lost.send_if_modified(|lost| {
            if generation > lost.0 || (generation == lost.0 && lost.1.is_empty()) {
                *lost = (generation, reason.to_owned());
                true
            } else {
                false
            }
        });
    }

    fn request_headers(&self, session: &Session) -> HeaderMap {
        let mut headers = self.headers.clone();
        if let Some(id) = session
            .id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            headers.insert(SESSION_HEADER, id);
        }
        if let Some(version) = session.version.as_deref()
            && version != "2025-03-26"
            && let Ok(version) = HeaderValue::from_str(version)
        {
            headers.insert(VERSION_HEADER, version);
        }
        headers
    }

    /// POSTs one message; `Ok` for any 2xx answer.
    async fn post(
        &self,
        message: &Message,
        session: &Session,
    ) -> Result<reqwest::Response, PostError> {
        let response = self
            .client
            .post(&self.url)
            .headers(self.request_headers(session))
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .body(message.to_json())
            .send()
            .await
            .map_err(|e| PostError::Transport(error_chain(&e)))?;
        check_status(response, session.id.is_some()).await
    }

    /// Opens a GET stream (the standalone one, or to resume a response stream).
    async fn get(
        &self,
        session: &Session,
        last_event_id: Option<&str>,
    ) -> Result<reqwest::Response, PostError> {
        let mut request = self
            .client
            .get(&self.url)
            .headers(self.request_headers(session))
            .header(ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header(LAST_EVENT_ID, id);
        }
        let response = request
            .send()
            .await
            .map_err(|e| PostError::Transport(error_chain(&e)))?;
        if response.status() == StatusCode::METHOD_NOT_ALLOWED {
            return Err(PostError::Status(
                "HTTP 405: the server offers no GET stream".into(),
            ));
        }
        check_status(response, session.id.is_some()).await
    }

    /// Sends a registered request and waits for its outcome, initialising a lost session
    /// anew and retrying once.
    async fn exchange(
        &self,
        message: &Message,
        wire_id: i64,
        response: &mut oneshot::Receiver<Outcome>,
    ) -> Outcome {
        let mut retried = false;
        loop {
            let session = self.session();
            let error = match self.post(message, &session).await {
                Ok(answer) => return self.read_answer(answer, wire_id, response, &session).await,
                Err(PostError::SessionLost) if !retried => {
                    retried = true;
                    tracing::info!(target: "warden::upstream", server = %self.name,
                        "the server no longer knows the session; initialising a new one");
                    match self.reinitialize(session.generation).await {
                        Ok(()) => continue,
                        Err(e) => e,
                    }
                }
                Err(PostError::SessionLost) => {
                    self.unavailable("the server lost the new session too")
                }
                Err(PostError::Status(s)) => self.unavailable(s),
                Err(PostError::Transport(e)) => {
                    self.report_lost(session.generation, &e);
                    self.unavailable(e)
                }
            };
            return self.settle(wire_id, error, response).await;
        }
    }

    /// Ends call `wire_id` with `error` unless its outcome already came, and returns the
    /// outcome.
    async fn settle(
        &self,
        wire_id: i64,
        error: UpstreamError,
        response: &mut oneshot::Receiver<Outcome>,
    ) -> Outcome {
        self.mux.finish(wire_id, Err(error));
        self.receive(response).await
    }

    async fn receive(&self, response: &mut oneshot::Receiver<Outcome>) -> Outcome {
        response.await.unwrap_or_else(|_| {
            Err(UpstreamError::Crashed {
                server: self.name.clone(),
                reason: "the connection was dropped".into(),
            })
        })
    }

    /// Reads the answer to the POST of call `wire_id` until the call's outcome is known.
    async fn read_answer(
        &self,
        answer: reqwest::Response,
        wire_id: i64,
        response: &mut oneshot::Receiver<Outcome>,
        session: &Session,
    ) -> Outcome {
        if answer.status() == StatusCode::ACCEPTED {
            // Accepted without an answer: the response comes on another stream.
            return self.receive(response).await;
        }
        let content_type = answer
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if !content_type.starts_with("text/event-stream") {
            let body = match answer.bytes().await {
                Ok(body) => body,
                Err(e) => {
                    let error = UpstreamError::Crashed {
                        server: self.name.clone(),
                        reason: format!("reading the answer failed: {}", error_chain(&e)),
                    };
                    return self.settle(wire_id, error, response).await;
                }
            };
            self.route_text(&body, Origin::Call(wire_id));
            return match response.try_recv() {
                Ok(outcome) => outcome,
                Err(oneshot::error::TryRecvError::Empty) => {
                    let error = UpstreamError::Protocol {
                        server: self.name.clone(),
                        reason: format!(
                            "the answer ({content_type}) did not hold the response: {}",
                            excerpt(&String::from_utf8_lossy(&body))
                        ),
                    };
                    self.settle(wire_id, error, response).await
                }
                Err(oneshot::error::TryRecvError::Closed) => self.receive(response).await,
            };
        }
        let mut stream = SseStream::new(Box::pin(answer.bytes_stream()));
        let mut last_event_id: Option<String> = None;
        let mut retry = DEFAULT_RETRY;
        let mut resumes = 0;
        loop {
            let ended = self
                .pump(&mut stream, Origin::Call(wire_id), Some(&mut *response))
                .await;
            if let Some(outcome) = ended.outcome {
                return outcome;
            }
            if let Some(id) = stream.parser().last_event_id() {
                last_event_id = Some(id.to_owned());
            }
            retry = stream.parser().retry().unwrap_or(retry);
            let cause = ended.error.unwrap_or_else(|| "the server closed it".into());
            let Some(last) = last_event_id.as_deref().filter(|_| resumes < MAX_RESUMES) else {
                let error = UpstreamError::Crashed {
                    server: self.name.clone(),
                    reason: format!("the response stream ended before the response: {cause}"),
                };
                return self.settle(wire_id, error, response).await;
            };
            resumes += 1;
            tracing::debug!(target: "warden::upstream", server = %self.name, wire_id,
                last_event_id = last, %cause, "resuming the response stream");
            tokio::time::sleep(retry).await;
            match self.get(session, Some(last)).await {
                Ok(answer) => stream = SseStream::new(Box::pin(answer.bytes_stream())),
                Err(PostError::SessionLost) => {
                    let error = UpstreamError::Crashed {
                        server: self.name.clone(),
                        reason: "the server lost the session during the call".into(),
                    };
                    return self.settle(wire_id, error, response).await;
                }
                Err(PostError::Status(s) | PostError::Transport(s)) => {
                    let error = UpstreamError::Crashed {
                        server: self.name.clone(),
                        reason: format!(
                            "the response stream ended ({cause}) and could not be resumed: {s}"
                        ),
                    };
                    return self.settle(wire_id, error, response).await;
                }
            }
        }
    }

    /// Routes the messages of an SSE stream until it ends or, with `response`, until that
    /// outcome arrives.
    async fn pump<S, B>(
        &self,
        stream: &mut SseStream<S>,
        origin: Origin,
        mut response: Option<&mut oneshot::Receiver<Outcome>>,
    ) -> Pumped
    where
        S: futures::Stream<Item = Result<B, reqwest::Error>> + Unpin,
        B: AsRef<[u8]>,
    {
        loop {
            let event = match response.as_deref_mut() {
                Some(response) => tokio::select! {
                    biased;
                    outcome = &mut *response => {
                        return Pumped {
                            outcome: Some(outcome.unwrap_or_else(|_| Err(UpstreamError::Crashed {
                                server: self.name.clone(),
                                reason: "the connection was dropped".into(),
                            }))),
                            error: None,
                        };
                    }
                    event = stream.next_event() => event,
                },
                None => stream.next_event().await,
            };
            match event {
                Some(Ok(event)) => {
                    if event.is_message() && !event.data.trim().is_empty() {
                        self.route_text(event.data.as_bytes(), origin);
                    }
                }
                Some(Err(e)) => {
                    return Pumped {
                        outcome: None,
                        error: Some(error_chain(&e)),
                    };
                }
                None => {
                    return Pumped {
                        outcome: None,
                        error: None,
                    };
                }
            }
        }
    }

    /// Routes one JSON-RPC message, or each of a batch.
    fn route_text(&self, text: &[u8], origin: Origin) {
        let values = match serde_json::from_slice::<Value>(text) {
            Ok(Value::Array(values)) => values,
            Ok(value) => vec![value],
            Err(e) => {
                tracing::warn!(target: "warden::upstream", server = %self.name, error = %e,
                    text = %excerpt(&String::from_utf8_lossy(text)),
                    "the server sent something that is not JSON");
                return;
            }
        };
        let out = self.outbound();
        for value in values {
            match Message::from_value(value) {
                Ok(message) => self.mux.route(&out, message, origin, self.timeout),
                Err(invalid) => {
                    tracing::warn!(target: "warden::upstream", server = %self.name,
                        error = %invalid.error, "the server sent an invalid JSON-RPC message");
                    if let Some(Id::Number(wire_id)) = invalid.id {
                        self.mux.finish(
                            wire_id,
                            Err(UpstreamError::Protocol {
                                server: self.name.clone(),
                                reason: invalid.error.message,
                            }),
                        );
                    }
                }
            }
        }
    }

    /// Initialises a new session unless the one of `generation` was already replaced.
    async fn reinitialize(&self, generation: u64) -> Result<(), UpstreamError> {
        let _one_at_a_time = self.reinit.lock().await;
        if self.session().generation != generation {
            return Ok(());
        }
        self.set_health(Health::Starting);
        match self.initialize(generation).await {
            Ok(()) => {
                self.set_health(Health::Ready);
                Ok(())
            }
            Err(e) => {
                self.report_lost(generation, &mux::reason(&e));
                self.set_health(Health::Down {
                    reason: mux::reason(&e),
                    restarts: 0,
                });
                Err(e)
            }
        }
    }

    /// `initialize` + `notifications/initialized`, then the GET stream.
    async fn initialize(&self, generation: u64) -> Result<(), UpstreamError> {
        if let Some(stream) = self
            .get_stream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            stream.abort();
        }
        let deadline = Instant::now() + self.timeout;
        let mut pending = self.mux.begin(
            self.outbound(),
            "initialize",
            Some(mux::initialize_params()),
            None,
        );
        pending.guard.no_cancel();
        let fresh = Session::default();
        let answer =
            match tokio::time::timeout_at(deadline, self.post(&pending.message, &fresh)).await {
                Err(_) => return Err(self.unavailable("initialize timed out")),
                Ok(Err(PostError::Transport(e) | PostError::Status(e))) => {
                    return Err(self.unavailable(format!("initialize failed: {e}")));
                }
                Ok(Err(PostError::SessionLost)) => unreachable!("no session id was sent"),
                Ok(Ok(answer)) => answer,
            };
        let session_id = answer
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut session = Session {
            id: session_id,
            version: None,
            generation: generation + 1,
        };
        let read = self.read_answer(answer, pending.wire_id, &mut pending.response, &session);
        let result = match tokio::time::timeout_at(deadline, read).await {
            Err(_) => return Err(self.unavailable("initialize timed out")),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Err(e))) => return Err(self.unavailable(format!("initialize was refused: {e}"))),
            Ok(Ok(Ok(result))) => result,
        };
        let info = mux::parse_initialize(&self.name, result)?;
        session.version = Some(info.protocol_version.clone());
        let initialized = Message::Notification(Notification {
            method: "notifications/initialized".into(),
            params: None,
        });
        match tokio::time::timeout_at(deadline, self.post(&initialized, &session)).await {
            Err(_) => return Err(self.unavailable("notifications/initialized timed out")),
            Ok(Err(PostError::SessionLost)) => {
                return Err(self.unavailable("the server forgot the session it just created"));
            }
            Ok(Err(PostError::Transport(e) | PostError::Status(e))) => {
                return Err(self.unavailable(format!("notifications/initialized failed: {e}")));
            }
            Ok(Ok(_)) => {}
        }
        tracing::info!(target: "warden::upstream", server = %self.name,
            protocol = %info.protocol_version, session = ?session.id, "upstream ready");
        *self.info.lock().unwrap_or_else(|e| e.into_inner()) = Some(info);
        *self.session.lock().unwrap_or_else(|e| e.into_inner()) = session.clone();
        if let Some(me) = self.me.upgrade() {
            let listener = tokio::spawn(listen(me, session.generation));
            *self.get_stream.lock().unwrap_or_else(|e| e.into_inner()) = Some(listener);
        }
        Ok(())
    }

    /// Ends the session (DELETE); a server that does not allow it answers 405.
    async fn end_session(&self) {
        if let Some(stream) = self
            .get_stream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            stream.abort();
        }
        let session = std::mem::take(&mut *self.session.lock().unwrap_or_else(|e| e.into_inner()));
        if session.id.is_none() {
            return;
        }
        let request = self
            .client
            .delete(&self.url)
            .headers(self.request_headers(&session))
            .timeout(DELETE_TIMEOUT)
            .send();
        match request.await {
            Ok(r) if r.status().is_success() || r.status() == StatusCode::METHOD_NOT_ALLOWED => {}
            Ok(r) => tracing::debug!(target: "warden::upstream", server = %self.name,
                status = %r.status(), "ending the session was refused"),
            Err(e) => tracing::debug!(target: "warden::upstream", server = %self.name,
                error = %error_chain(&e), "ending the session failed"),
        }
    }
}

/// How a stream ended: with the call's outcome, or without it (`error` when it broke).
struct Pumped {
    outcome: Option<Outcome>,
    error: Option<String>,
}

/// The standalone GET stream of session `generation`: messages that belong to no call.
/// Reconnects (with `Last-Event-ID`) when the server closes it; ends when the session
/// changes, when the server has none (405), or when the server cannot be reached (then the
/// supervisor reconnects everything).
async fn listen(shared: Arc<Shared>, generation: u64) {
    let mut last_event_id: Option<String> = None;
    let mut delay = mux::BACKOFF_START;
    loop {
        let session = shared.session();
        if session.generation != generation {
            return;
        }
        match shared.get(&session, last_event_id.as_deref()).await {
            Ok(answer) => {
                let opened = Instant::now();
                let mut stream = SseStream::new(Box::pin(answer.bytes_stream()));
                let ended = shared.pump(&mut stream, Origin::NoCall, None).await;
                if let Some(id) = stream.parser().last_event_id() {
                    last_event_id = Some(id.to_owned());
                }
                if opened.elapsed() > mux::BACKOFF_RESET_AFTER {
                    delay = mux::BACKOFF_START;
                }
                let retry = stream.parser().retry().unwrap_or(delay);
                tracing::debug!(target: "warden::upstream", server = %shared.name,
                    error = ?ended.error, "the GET stream ended; reopening it");
                tokio::time::sleep(retry).await;
                delay = (delay * 2).min(mux::BACKOFF_MAX);
            }
            Err(PostError::Status(s)) if s.starts_with("HTTP 405") => {
                tracing::debug!(target: "warden::upstream", server = %shared.name,
                    "the server offers no GET stream");
                return;
            }
            Err(PostError::SessionLost) => {
                // Re-initialising replaces this task: the supervisor does it.
                shared.expired.send_if_modified(|g| {
                    let newer = generation > *g;
                    if newer {
                        *g = generation;
                    }
                    newer
                });
                return;
            }
            Err(PostError::Transport(e)) => {
                shared.report_lost(generation, &e);
                return;
            }
            Err(PostError::Status(s)) => {
                tracing::debug!(target: "warden::upstream", server = %shared.name, status = %s,
                    "the GET stream was refused; trying again later");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(mux::BACKOFF_MAX);
            }
        }
    }
}

async fn supervise(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut lost = shared.lost.subscribe();
    if let Some(reason) = shared.config_error.clone() {
        shared.set_health(Health::Down {
            reason,
            restarts: 0,
        });
        let _ = shutdown.wait_for(|s| *s).await;
        return;
    }
    let mut expired = shared.expired.subscribe();
    let mut restarts = 0u64;
    let mut backoff = mux::BACKOFF_START;
    'connect: loop {
        let generation = shared.session().generation;
        let connected = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            connected = shared.reinitialize(generation) => connected,
        };
        let reason = match connected {
            Err(e) => e.to_string(),
            Ok(()) => {
                let ready_at = Instant::now();
                let reason = loop {
                    let current = shared.session().generation;
                    let woke = tokio::select! {
                        biased;
                        _ = shutdown.wait_for(|s| *s) => break 'connect,
                        lost = lost.wait_for(|(g, _)| *g >= current) => match lost {
                            Ok(lost) => Err(lost.1.clone()),
                            Err(_) => break 'connect,
                        },
                        _ = expired.wait_for(|g| *g >= current) => Ok(()),
                    };
                    match woke {
                        Err(reason) => break reason,
                        Ok(()) => {
                            tracing::info!(target: "warden::upstream", server = %shared.name,
                                "the server no longer knows the session; initialising a new one");
                            if let Err(e) = shared.reinitialize(current).await {
                                break mux::reason(&e);
                            }
                        }
                    }
                };
                if ready_at.elapsed() >= mux::BACKOFF_RESET_AFTER {
                    backoff = mux::BACKOFF_START;
                }
                reason
            }
        };
        tracing::warn!(target: "warden::upstream", server = %shared.name, %reason, restarts,
            retry_in = ?backoff, "upstream down");
        shared.set_health(Health::Down { reason, restarts });
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(mux::BACKOFF_MAX);
        restarts += 1;
    }
    shared.end_session().await;
    shared.mux.fail_all(|| UpstreamError::Unavailable {
        server: shared.name.clone(),
        reason: "the connection was shut down".into(),
    });
    shared.set_health(Health::Down {
        reason: "shut down".into(),
        restarts,
    });
}

async fn check_status(
    response: reqwest::Response,
    sent_session: bool,
) -> Result<reqwest::Response, PostError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    if sent_session
        && (status == StatusCode::NOT_FOUND
            || (status == StatusCode::BAD_REQUEST && body.to_ascii_lowercase().contains("session")))
    {
        return Err(PostError::SessionLost);
    }
    Err(PostError::Status(format!(
        "HTTP {}: {}",
        status.as_u16(),
        excerpt(body.trim())
    )))
}

/// An error with its causes ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn excerpt(text: &str) -> String {
    const MAX: usize = 300;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
