//! Agent-facing MCP sessions: who the agent is, what it negotiated, what it has done so far,
//! and the requests Warden relays to it from the servers (sampling, elicitation, roots).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use warden_core::{ClientInfo, SessionFacts};

use crate::governor::AgentIdentity;
use crate::jsonrpc::{Id, Message, RpcError};

/// One MCP session with one agent.
pub struct Session {
    /// The `MCP-Session-Id` (128 random bits, hex).
    pub id: String,
    pub identity: AgentIdentity,
    /// The single upstream this session is confined to (`/mcp/{server}`), if any.
    pub scope: Option<String>,
    pub protocol_version: String,
    pub client_info: Value,
    pub client_capabilities: Value,
    pub client: ClientInfo,
    initialized: AtomicBool,
    last_seen: Mutex<Instant>,
    facts: Mutex<SessionFacts>,
    /// The session-wide stream (HTTP `GET /mcp`, or stdout for stdio) for messages that
    /// belong to no request, e.g. `notifications/tools/list_changed`.
    stream: Mutex<Option<mpsc::Sender<Message>>>,
    /// Requests Warden sent to the agent, waiting for its response.
    outstanding: Mutex<HashMap<Id, oneshot::Sender<Result<Value, RpcError>>>>,
    next_id: AtomicU64,
    /// Requests of this session being handled, by the agent's request id, so that
    /// `notifications/cancelled` can stop them.
    in_flight: Mutex<HashMap<Id, tokio::task::AbortHandle>>,
}

impl Session {
    pub fn new(
        identity: AgentIdentity,
        scope: Option<String>,
        protocol_version: String,
        client_info: Value,
        client_capabilities: Value,
        client: ClientInfo,
    ) -> Session {
        Session {
            id: new_session_id(),
            identity,
            scope,
            protocol_version,
            client_info,
            client_capabilities,
            client,
            initialized: AtomicBool::new(false),
            last_seen: Mutex::new(Instant::now()),
            facts: Mutex::new(SessionFacts::default()),
            stream: Mutex::new(None),
            outstanding: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    pub fn touch(&self) {
        *lock(&self.last_seen) = Instant::now();
    }

    pub fn idle_for(&self) -> Duration {
        lock(&self.last_seen).elapsed()
    }

    pub fn mark_initialized(&self) {
        self.initialized.store(true, Ordering::Relaxed);
    }

    pub fn is_initialized(&self) -> bool {
        self.initialized.load(Ordering::Relaxed)
    }

    pub fn facts(&self) -> SessionFacts {
        lock(&self.facts).clone()
    }

    pub fn update_facts(&self, f: impl FnOnce(&mut SessionFacts)) {
        f(&mut lock(&self.facts));
    }

    /// Whether the client declared a capability (`sampling`, `elicitation`, `roots`).
    pub fn client_supports(&self, capability: &str) -> bool {
        self.client_capabilities
            .get(capability)
            .is_some_and(|v| !v.is_null())
    }

    /// Opens (or replaces) the session-wide stream.
    pub fn open_stream(&self) -> mpsc::Receiver<Message> {
        let (tx, rx) = mpsc::channel(64);
        *lock(&self.stream) = Some(tx);
        rx
    }

    /// Uses an existing channel as the session-wide stream (stdio: the agent's stdout).
    pub fn open_stream_into(&self, tx: mpsc::Sender<Message>) {
        *lock(&self.stream) = Some(tx);
    }

    /// Sends on the session-wide stream, if one is open; messages for a slow or absent
    /// reader are dropped (they are hints such as `list_changed`).
    pub fn push(&self, message: Message) -> bool {
        let stream = lock(&self.stream).clone();
        match stream {
            Some(tx) => tx.try_send(message).is_ok(),
            None => false,
        }
    }

    pub fn has_stream(&self) -> bool {
        lock(&self.stream)
            .as_ref()
            .is_some_and(|tx| !tx.is_closed())
    }

    /// Sends a request to the agent over `out` (or, without one, the session stream) and
    /// waits for the agent's response (delivered by [`Session::resolve`]).
    pub async fn ask_client(
        &self,
        method: &str,
        params: Option<Value>,
        out: Option<&mpsc::Sender<Message>>,
        timeout: Duration,
    ) -> Result<Value, RpcError> {
        let id = Id::String(format!(
            "warden-{}",
            self.next_id.fetch_add(1, Ordering::Relaxed)
        ));
        let (tx, rx) = oneshot::channel();
        lock(&self.outstanding).insert(id.clone(), tx);
        let message = Message::Request(crate::jsonrpc::Request {
            id: id.clone(),
            method: method.to_owned(),
            params,
        });
        let sent = match out {
            Some(out) => out.send(message).await.is_ok(),
            None => self.push(message),
        };
        if !sent {
            lock(&self.outstanding).remove(&id);
            return Err(RpcError::new(
                crate::jsonrpc::code::INTERNAL_ERROR,
                "the agent has no open stream to receive this request",
            ));
        }
        let answer = tokio::time::timeout(timeout, rx).await;
        lock(&self.outstanding).remove(&id);
        match answer {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(RpcError::new(
                crate::jsonrpc::code::INTERNAL_ERROR,
                "the agent's session ended before it answered",
            )),
            Err(_) => Err(RpcError::new(
                crate::jsonrpc::code::INTERNAL_ERROR,
                format!("the agent did not answer {method} within {timeout:?}"),
            )),
        }
    }

    /// Delivers the agent's response to a request Warden sent it. False if nothing waited.
    pub fn resolve(&self, id: &Id, result: Result<Value, RpcError>) -> bool {
        match lock(&self.outstanding).remove(id) {
            Some(tx) => tx.send(result).is_ok(),
            None => false,
        }
    }

    pub fn track(&self, id: Id, handle: tokio::task::AbortHandle) {
        lock(&self.in_flight).insert(id, handle);
    }

    pub fn untrack(&self, id: &Id) {
        lock(&self.in_flight).remove(id);
    }

    /// Stops the request the agent cancelled; dropping its upstream call tells the server.
    pub fn cancel(&self, id: &Id) -> bool {
        match lock(&self.in_flight).remove(id) {
            Some(h) => {
                h.abort();
                true
            }
            None => false,
        }
    }

    /// Ends everything in flight (session deleted or expired).
    pub fn close(&self) {
        for (_, h) in lock(&self.in_flight).drain() {
            h.abort();
        }
        lock(&self.outstanding).clear();
        *lock(&self.stream) = None;
    }
}

/// The open sessions of the gateway.
#[derive(Default)]
pub struct Sessions {
    map: RwLock<HashMap<String, Arc<Session>>>,
    /// Woken when a session is added or finishes initialising.
    changed: tokio::sync::Notify,
}

impl Sessions {
    pub fn insert(&self, session: Arc<Session>) {
        write(&self.map).insert(session.id.clone(), session);
        self.changed.notify_waiters();
    }

    /// Wakes [`Sessions::first_where`] waiters (a session finished initialising).
    pub fn touched(&self) {
        self.changed.notify_waiters();
    }

    /// Waits until a session satisfies `pred`, and returns it.
    pub async fn first_where(&self, pred: impl Fn(&Session) -> bool) -> Arc<Session> {
        loop {
            // Listen before looking, so a change in between still wakes.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(s) = read(&self.map).values().find(|s| pred(s)) {
                return s.clone();
            }
            changed.await;
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        read(&self.map).get(id).cloned()
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        write(&self.map).remove(id)
    }

    pub fn len(&self) -> usize {
        read(&self.map).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        read(&self.map).values().cloned().collect()
    }

    /// Removes and returns the sessions idle longer than `limit`.
    pub fn take_idle(&self, limit: Duration) -> Vec<Arc<Session>> {
        let mut map = write(&self.map);
        let idle: Vec<String> = map
            .iter()
            .filter(|(_, s)| s.idle_for() > limit)
            .map(|(k, _)| k.clone())
            .collect();
        idle.iter().filter_map(|k| map.remove(k)).collect()
    }
}

fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    hex::encode(bytes)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}
