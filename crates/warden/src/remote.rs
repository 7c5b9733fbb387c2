//! The gateway's [`Governor`] over a remote Warden server's HTTP API, for
//! `warden gateway stdio --remote URL`: the MCP server runs on the agent's machine and its
//! traffic is governed there, but who the token is, what the policies decide, the audit
//! trail and approvals all live on the server (`/api/v1/gateway/…`, with the agent's token).
//!
//! Fail closed: a decision the server did not give is a deny, and an event the server did
//! not acknowledge as durable is an error, so the gateway does not forward the call. The
//! tenant's redaction key stays on the server: events leave here unredacted (over the
//! connection the operator chose, TLS for anything but loopback) and are redacted there
//! before they are stored.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;
use warden_api::routes::gateway::{
    GatewayAnswer, GatewayConsume, GatewayDecide, GatewayDecision, GatewayDecisionRequest,
    GatewayDecisions, GatewayEvent, GatewayEvents, GatewayMaybeApproval, GatewayOpenApproval,
    GatewayRecorded, GatewayRegistry, GatewaySession, GatewaySettings,
};
use warden_audit::redact::Redactor;
use warden_core::{
    Approval, ApprovalAnswer, AuditEvent, Decision, DecisionRequest, Error, NamespacePath,
    NewApproval, Outcome, TenantId, canonical,
};
use warden_gateway::{AgentIdentity, Governor};
use warden_registry::RegistrySnapshot;

/// How often the registry is fetched again (an unchanged one costs a 304).
pub const REGISTRY_REFRESH: Duration = Duration::from_secs(5);
/// Longest one long-poll for an approval's answer.
const APPROVAL_POLL: Duration = Duration::from_secs(30);
/// Most decisions per request (the server's batch limit).
const DECISION_BATCH: usize = 1000;
/// Seals kept for decisions not yet recorded.
const SEALS_KEPT: usize = 10_000;
/// Attempts to deliver the record of a call that already happened.
const LATER_ATTEMPTS: u32 = 4;

/// A Warden server, as the gateway's governor.
pub struct RemoteGovernor {
    http: reqwest::Client,
    base: String,
    token: String,
    timeout: Duration,
    identity: AgentIdentity,
    registry: RwLock<Option<Arc<RegistrySnapshot>>>,
    registry_etag: Mutex<Option<String>>,
    seals: Mutex<Seals>,
    later: Mutex<tokio::task::JoinSet<()>>,
}

/// The server's seals on decisions this process asked for, by what the decided event will
/// say (action, resource, decision): the event carries its seal back, so the server can
/// tell its own allow from an invented one.
#[derive(Default)]
struct Seals {
    by_key: HashMap<Vec<u8>, String>,
    order: VecDeque<Vec<u8>>,
}

/// The canonical JSON of what a seal covers besides the token.
fn seal_key(action: &str, resource_type: &str, resource_id: &str, d: &Decision) -> Vec<u8> {
    let v = serde_json::json!({
        "action": action,
        "resource": {"type": resource_type, "id": resource_id},
        "outcome": d.outcome,
        "policies": d.reasons,
        "obligations": d.obligations,
        "warnings": d.warnings,
        "errors": d.errors,
    });
    canonical::to_vec(&v)
}

fn event_seal_key(e: &AuditEvent) -> Option<Vec<u8>> {
    let h = &e.header;
    let (action, resource, d) = (
        h.action.as_ref()?,
        h.resource.as_ref()?,
        h.decision.as_ref()?,
    );
    let decision = Decision {
        outcome: d.outcome,
        reasons: d.policies.clone(),
        obligations: d.obligations.clone(),
        warnings: d.warnings.clone(),
        errors: d.errors.clone(),
        evaluated: 0,
    };
    Some(seal_key(
        action,
        &resource.resource_type,
        &resource.id,
        &decision,
    ))
}

impl RemoteGovernor {
    /// Asks the server who `token` is (and its gateway settings), then fetches the tenant's
    /// registry. Errors say which: the server cannot be reached or answers 5xx
    /// (`Unavailable`), the token is unknown, expired or revoked (`Unauthenticated`), or it
    /// is not an agent token (`Forbidden`).
    pub async fn connect(
        base: &str,
        token: &str,
        timeout: Duration,
    ) -> Result<(Arc<RemoteGovernor>, GatewaySettings), Error> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::invalid(format!(
                "--remote must be an http:// or https:// URL, not {base:?}"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .user_agent(concat!("warden-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::internal(format!("HTTP client: {e}")))?;
        if base.starts_with("http://") && !is_loopback(&base) {
            tracing::warn!(
                remote = %base,
                "the agent's token and its tool arguments go to the Warden server unencrypted; use https://"
            );
        }
        let session: GatewaySession = fetch(
            &base,
            token,
            timeout,
            http.get(format!("{base}/api/v1/gateway/session")),
        )
        .await?;
        let (identity, settings) = identity_of(session)?;
        let governor = Arc::new(RemoteGovernor {
            http,
            base,
            token: token.to_owned(),
            timeout,
            identity,
            registry: RwLock::new(None),
            registry_etag: Mutex::new(None),
            seals: Mutex::new(Seals::default()),
            later: Mutex::new(tokio::task::JoinSet::new()),
        });
        governor.refresh_registry().await?;
        let weak = Arc::downgrade(&governor);
        tokio::spawn(keep_registry(weak));
        Ok((governor, settings))
    }

    /// The agent session of the token given to [`RemoteGovernor::connect`].
    pub fn identity(&self) -> &AgentIdentity {
        &self.identity
    }

    /// Waits (until `deadline`) for the records of calls that already happened to reach
    /// the server; what is still undelivered then is logged.
    pub async fn flush(&self, deadline: Duration) {
        let mut pending = std::mem::take(&mut *lock(&self.later));
        let drained = tokio::time::timeout(deadline, async {
            while pending.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::error!(
                undelivered = pending.len(),
                "records of completed calls did not reach the Warden server before exit"
            );
        }
    }

    /// Fetches the tenant's registry when it changed, and builds the snapshot the gateway
    /// consults per call.
    async fn refresh_registry(&self) -> Result<(), Error> {
        let mut req = self
            .http
            .get(format!("{}/api/v1/gateway/registry", self.base));
        if let Some(etag) = lock(&self.registry_etag).clone() {
            req = req.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        let resp = self.send(req, self.timeout).await?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(());
        }
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: GatewayRegistry = self.read(resp).await?;
        let tenant = &self.identity.tenant;
        let snapshot = RegistrySnapshot::build(
            body.servers
                .into_iter()
                .map(|s| (tenant.clone(), s))
                .collect(),
            body.tools
                .into_iter()
                .map(|t| (tenant.clone(), t))
                .collect(),
            body.agents
                .into_iter()
                .map(|a| (tenant.clone(), a))
                .collect(),
        );
        *self.registry.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(snapshot));
        *lock(&self.registry_etag) = etag;
        Ok(())
    }

    /// Sends a request with the token; a non-2xx answer (other than 304) becomes the error
    /// it stands for.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<reqwest::Response, Error> {
        send(&self.base, &self.token, timeout, req).await
    }

    async fn read<T: DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T, Error> {
        read(&self.base, resp).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Error> {
        let req = self.http.post(format!("{}{path}", self.base)).json(body);
        let resp = self.send(req, self.timeout).await?;
        self.read(resp).await
    }

    async fn decisions(&self, requests: &[DecisionRequest]) -> Result<Vec<GatewayDecision>, Error> {
        let body = GatewayDecide {
            requests: requests
                .iter()
                .map(|r| GatewayDecisionRequest {
                    action: r.action.clone(),
                    resource: r.resource.clone(),
                    context: r.context.clone(),
                    facts: r.facts.clone(),
                })
                .collect(),
        };
        let answer: GatewayDecisions = self.post("/api/v1/gateway/decisions", &body).await?;
        if answer.decisions.len() != requests.len() {
            return Err(Error::unavailable(
                format!(
                    "the Warden server at {} answered {} decisions for {} requests",
                    self.base,
                    answer.decisions.len(),
                    requests.len()
                ),
                None,
            ));
        }
        Ok(answer.decisions)
    }

    fn keep_seal(&self, r: &DecisionRequest, d: &GatewayDecision) {
        if d.decision.outcome == Outcome::Deny {
            return; // a deny needs none
        }
        let key = seal_key(
            &r.action,
            &r.resource.entity_type,
            &r.resource.id,
            &d.decision,
        );
        let mut seals = lock(&self.seals);
        if seals.by_key.insert(key.clone(), d.seal.clone()).is_none() {
            seals.order.push_back(key);
        }
        while seals.order.len() > SEALS_KEPT {
            if let Some(old) = seals.order.pop_front() {
                seals.by_key.remove(&old);
            }
        }
    }

    fn wire_event(&self, event: AuditEvent) -> GatewayEvent {
        let seal = event_seal_key(&event).and_then(|k| lock(&self.seals).by_key.get(&k).cloned());
        GatewayEvent { event, seal }
    }

    async fn record_now(&self, events: Vec<GatewayEvent>) -> Result<(), Error> {
        let _: GatewayRecorded = self
            .post("/api/v1/gateway/events", &GatewayEvents { events })
            .await?;
        Ok(())
    }

    fn approval_path(id: Uuid) -> String {
        format!("/api/v1/gateway/approvals/{id}")
    }
}

fn identity_of(session: GatewaySession) -> Result<(AgentIdentity, GatewaySettings), Error> {
    let identity = AgentIdentity {
        tenant: TenantId::parse(&session.tenant)
            .map_err(|e| Error::internal(format!("the server's tenant: {e}")))?,
        token_id: session.token_id,
        agent: session.agent,
        on_behalf_of: session.on_behalf_of,
        namespace: NamespacePath::parse(&session.namespace)
            .map_err(|e| Error::internal(format!("the server's namespace: {e}")))?,
    };
    Ok((identity, session.settings))
}

/// `http://localhost…`, `http://127.…`, `http://[::1]…`: traffic that stays on the machine.
fn is_loopback(base: &str) -> bool {
    let host = base
        .split_once("://")
        .map_or(base, |(_, rest)| rest)
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = if host.starts_with('[') {
        host.split(']')
            .next()
            .map(|h| h.trim_start_matches('['))
            .unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or_default()
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Keeps the registry snapshot current while the governor lives.
async fn keep_registry(governor: Weak<RemoteGovernor>) {
    let mut tick = tokio::time::interval(REGISTRY_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(g) = governor.upgrade() else { return };
        if let Err(e) = g.refresh_registry().await {
            // The last snapshot stays in force; decisions and records fail on their own if
            // the server is gone.
            tracing::warn!(error = %e, "could not refresh the registry from the Warden server");
        }
    }
}

async fn fetch<T: DeserializeOwned>(
    base: &str,
    token: &str,
    timeout: Duration,
    req: reqwest::RequestBuilder,
) -> Result<T, Error> {
    let resp = send(base, token, timeout, req).await?;
    read(base, resp).await
}

async fn send(
    base: &str,
    token: &str,
    timeout: Duration,
    req: reqwest::RequestBuilder,
) -> Result<reqwest::Response, Error> {
    let resp = req
        .bearer_auth(token)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| transport_error(base, timeout, &e))?;
    let status = resp.status();
    if status.is_success() || status == StatusCode::NOT_MODIFIED {
        return Ok(resp);
    }
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = resp.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
        .unwrap_or_else(|| text.chars().take(300).collect());
    Err(match status {
        StatusCode::UNAUTHORIZED => Error::unauthenticated(format!(
            "the Warden server at {base} refused the token (unknown, expired or revoked): {detail}"
        )),
        StatusCode::FORBIDDEN => Error::forbidden(detail),
        StatusCode::NOT_FOUND => Error::not_found(detail),
        StatusCode::CONFLICT => Error::Conflict(detail),
        s if s.is_client_error() => Error::invalid(format!(
            "the Warden server at {base} refused the request ({s}): {detail}"
        )),
        s => Error::unavailable(
            format!("the Warden server at {base} answered {s}: {detail}"),
            retry_after,
        ),
    })
}

async fn read<T: DeserializeOwned>(base: &str, resp: reqwest::Response) -> Result<T, Error> {
    resp.json::<T>().await.map_err(|e| {
        Error::unavailable(
            format!("the answer of the Warden server at {base} could not be read: {e}"),
            None,
        )
    })
}

fn transport_error(base: &str, timeout: Duration, e: &reqwest::Error) -> Error {
    if e.is_timeout() {
        return Error::unavailable(
            format!("the Warden server at {base} did not answer within {timeout:?}"),
            None,
        );
    }
    // reqwest's own message names only the URL; the cause (refused, DNS, TLS) is below it.
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    let cause = if cause.is_empty() {
        e.to_string()
    } else {
        cause
    };
    Error::unavailable(
        format!("the Warden server at {base} cannot be reached: {cause}"),
        None,
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait::async_trait]
impl Governor for RemoteGovernor {
    async fn authenticate(&self, bearer: &str) -> Result<AgentIdentity, Error> {
        if bearer == self.token {
            return Ok(self.identity.clone());
        }
        let session: GatewaySession = fetch(
            &self.base,
            bearer,
            self.timeout,
            self.http
                .get(format!("{}/api/v1/gateway/session", self.base)),
        )
        .await?;
        identity_of(session).map(|(identity, _)| identity)
    }

    async fn decide(&self, request: &DecisionRequest) -> Decision {
        match self.decisions(std::slice::from_ref(request)).await {
            Ok(mut answer) => match answer.pop() {
                Some(d) => {
                    self.keep_seal(request, &d);
                    d.decision
                }
                None => Decision::deny_with_error("no decision from the server"),
            },
            Err(e) => Decision::deny_with_error(format!("no decision from the server: {e}")),
        }
    }

    async fn decide_many(&self, requests: &[DecisionRequest]) -> Vec<Decision> {
        let mut out = Vec::with_capacity(requests.len());
        for chunk in requests.chunks(DECISION_BATCH) {
            match self.decisions(chunk).await {
                // Listing decisions are never recorded as decided events: no seals kept.
                Ok(answer) => out.extend(answer.into_iter().map(|d| d.decision)),
                Err(e) => {
                    let why = format!("no decision from the server: {e}");
                    out.extend(chunk.iter().map(|_| Decision::deny_with_error(why.clone())));
                }
            }
        }
        out
    }

    fn redactor(&self, _tenant: &str) -> Redactor {
        Redactor::deferred()
    }

    async fn record(&self, event: AuditEvent) -> Result<(), Error> {
        let event = self.wire_event(event);
        self.record_now(vec![event]).await
    }

    fn record_later(&self, event: AuditEvent) -> Result<(), Error> {
        let event = self.wire_event(event);
        let this = RemoteSender {
            http: self.http.clone(),
            base: self.base.clone(),
            token: self.token.clone(),
            timeout: self.timeout,
        };
        lock(&self.later).spawn(async move {
            let id = event.event.header.id;
            let body = GatewayEvents {
                events: vec![event],
            };
            let mut delay = Duration::from_millis(500);
            for attempt in 1..=LATER_ATTEMPTS {
                // The server records an id once, so a retry after a lost answer is safe.
                match this.post_events(&body).await {
                    Ok(()) => return,
                    Err(e) if attempt == LATER_ATTEMPTS => {
                        tracing::error!(error = %e, event = %id, "the record of a completed call could not be delivered to the Warden server");
                    }
                    Err(Error::Unavailable { .. }) => {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, event = %id, "the Warden server refused the record of a completed call");
                        return;
                    }
                }
            }
        });
        Ok(())
    }

    async fn open_approval(&self, request: NewApproval) -> Result<Approval, Error> {
        let decision_event = request.decision_event.ok_or_else(|| {
            Error::invalid("a remote approval needs the decision event that asked for it")
        })?;
        let body = GatewayOpenApproval {
            action: request.action,
            resource_type: request.resource_type,
            resource_id: request.resource_id,
            args_sha256: request.args_sha256,
            arguments: request.arguments,
            policies: request.policies,
            reason: request.reason,
            decision_event,
            expires_at: request.expires_at,
        };
        self.post("/api/v1/gateway/approvals", &body).await
    }

    async fn consume_approval(
        &self,
        _tenant: &TenantId,
        _session: &str,
        resource_id: &str,
        args_sha256: &str,
    ) -> Result<Option<Approval>, Error> {
        // The session is the token's: the server takes it from there.
        let body = GatewayConsume {
            resource_id: resource_id.to_owned(),
            args_sha256: args_sha256.to_owned(),
        };
        let answer: GatewayMaybeApproval = self
            .post("/api/v1/gateway/approvals/consume", &body)
            .await?;
        Ok(answer.approval)
    }

    async fn wait_approval(
        &self,
        _tenant: &TenantId,
        id: Uuid,
        deadline: Instant,
    ) -> Result<Approval, Error> {
        loop {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(APPROVAL_POLL);
            let req = self.http.get(format!(
                "{}{}?wait_ms={}",
                self.base,
                Self::approval_path(id),
                wait.as_millis()
            ));
            // The server holds the request for up to `wait`; the timeout covers the rest.
            let resp = self.send(req, wait + self.timeout).await?;
            let approval: Approval = self.read(resp).await?;
            if approval.status_at(chrono::Utc::now()) != warden_core::ApprovalStatus::Pending
                || Instant::now() >= deadline
            {
                return Ok(approval);
            }
        }
    }

    async fn expire_approval(
        &self,
        _tenant: &TenantId,
        id: Uuid,
    ) -> Result<Option<Approval>, Error> {
        let path = format!("{}/expire", Self::approval_path(id));
        let answer: GatewayMaybeApproval = self.post(&path, &serde_json::json!({})).await?;
        Ok(answer.approval)
    }

    fn registry(&self) -> Option<Arc<RegistrySnapshot>> {
        self.registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn answer_approval(
        &self,
        _tenant: &TenantId,
        id: Uuid,
        answer: ApprovalAnswer,
    ) -> Result<Approval, Error> {
        // Who answered (the session's user, in the agent's client) is the server's to say.
        let body = GatewayAnswer {
            approve: answer.approve,
            comment: answer.comment,
        };
        let path = format!("{}/answer", Self::approval_path(id));
        self.post(&path, &body).await
    }
}

/// What a background delivery needs, without holding the governor.
struct RemoteSender {
    http: reqwest::Client,
    base: String,
    token: String,
    timeout: Duration,
}

impl RemoteSender {
    async fn post_events(&self, body: &GatewayEvents) -> Result<(), Error> {
        let req = self
            .http
            .post(format!("{}/api/v1/gateway/events", self.base))
            .json(body);
        let resp = send(&self.base, &self.token, self.timeout, req).await?;
        let _: GatewayRecorded = read(&self.base, resp).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_addresses_are_recognised() {
        for local in [
            "http://localhost:8080",
            "http://127.0.0.1:9/x",
            "http://[::1]:8080",
            "http://user@127.0.0.2",
        ] {
            assert!(is_loopback(local), "{local}");
        }
        for remote in [
            "http://warden.example:8080",
            "http://10.0.0.1",
            "http://localhost.example.com",
            "http://[2001:db8::1]:80",
        ] {
            assert!(!is_loopback(remote), "{remote}");
        }
    }
}
