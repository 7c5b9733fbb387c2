//! The MCP gateway's view of the server: tokens, policies, the audit pipeline and the
//! approval desk, behind the gateway's `Governor` trait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use uuid::Uuid;
use warden_audit::redact::Redactor;
use warden_core::{
    Approval, ApprovalAnswer, AuditEvent, Decision, DecisionRequest, Error, NamespacePath,
    NewApproval, Role, TenantId,
};
use warden_gateway::{AgentIdentity, Governor};

use crate::policies::Disagreement;
use crate::state::Inner;

/// Holds the server state weakly: the state owns the gateway, which owns this.
pub struct ServerGovernor {
    state: Weak<Inner>,
    /// Shadow disagreements waiting for the decision event they shadow: the gateway records
    /// the event after `decide`, and the disagreement names the event's id. Keyed by what
    /// both carry (see [`shadow_key`]).
    shadowed: Mutex<HashMap<String, (DecisionRequest, Decision, Disagreement)>>,
}

/// At most this many disagreements wait for their event; a decision whose event never
/// comes (a refused call) must not make the map grow without bound.
const MAX_PENDING_SHADOWED: usize = 10_000;

fn shadow_key(
    tenant: &str,
    session: Option<&str>,
    action: &str,
    resource: &str,
    time: &str,
) -> String {
    format!(
        "{tenant}\u{0}{}\u{0}{action}\u{0}{resource}\u{0}{time}",
        session.unwrap_or("")
    )
}

fn request_key(r: &DecisionRequest) -> String {
    shadow_key(
        r.tenant.as_str(),
        r.session.as_deref(),
        &r.action,
        &r.resource.id,
        &r.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    )
}

/// The key of a decision event recorded by the gateway (its payload keeps the request).
fn event_key(e: &AuditEvent) -> Option<String> {
    let req = e.payload.get("request")?;
    Some(shadow_key(
        &e.header.tenant,
        req.get("session").and_then(|s| s.as_str()),
        e.header.action.as_deref()?,
        &e.header.resource.as_ref()?.id,
        req.get("time")?.as_str()?,
    ))
}

impl ServerGovernor {
    pub fn new(state: &Arc<Inner>) -> ServerGovernor {
        ServerGovernor {
            state: Arc::downgrade(state),
            shadowed: Mutex::new(HashMap::new()),
        }
    }

    fn state(&self) -> Result<Arc<Inner>, Error> {
        self.state
            .upgrade()
            .ok_or_else(|| Error::unavailable("the server is shutting down", None))
    }

    /// The key of a decision event whose shadow disagreement waits for it, if one may.
    fn awaited(&self, event: &AuditEvent) -> Option<String> {
        if event.header.decision.is_none() || self.shadowed.lock().expect("shadowed").is_empty() {
            return None;
        }
        event_key(event)
    }

    /// After a decision event was recorded: record its shadow's disagreement, if one waits.
    fn shadow_recorded(&self, state: &Inner, key: &str, event_id: Uuid) {
        let pending = self.shadowed.lock().expect("shadowed").remove(key);
        if let Some((req, d, dis)) = pending {
            crate::bundles::record_disagreement(state, &req, &d, &dis, event_id);
        }
    }
}

#[async_trait::async_trait]
impl Governor for ServerGovernor {
    async fn authenticate(&self, bearer: &str) -> Result<AgentIdentity, Error> {
        let state = self.state()?;
        let token = state
            .tokens
            .authenticate(state.store.as_ref(), bearer)
            .await?;
        if token.role != Role::Agent {
            return Err(Error::forbidden(format!(
                "the MCP gateway takes agent tokens (an agent session); this token's role is {}",
                token.role
            )));
        }
        let namespace = match token.namespace.clone() {
            Some(ns) => ns,
            None => NamespacePath::parse(token.tenant.as_str())
                .map_err(|e| Error::internal(format!("tenant root namespace: {e}")))?,
        };
        Ok(AgentIdentity {
            tenant: token.tenant.clone(),
            token_id: token.id.clone(),
            agent: token.agent.clone().unwrap_or_default(),
            on_behalf_of: token.on_behalf_of.clone(),
            namespace,
        })
    }

    async fn decide(&self, request: &DecisionRequest) -> Decision {
        match self.state.upgrade() {
            Some(state) => {
                let (d, shadow) = state.policies.decide(request);
                if let Some(dis) = shadow {
                    let mut map = self.shadowed.lock().expect("shadowed");
                    if map.len() >= MAX_PENDING_SHADOWED {
                        map.clear();
                    }
                    map.insert(request_key(request), (request.clone(), d.clone(), dis));
                }
                state.metrics.count(d.outcome);
                if !d.errors.is_empty() {
                    state.metrics.decision_errors.inc();
                }
                d
            }
            None => Decision::deny_with_error("the server is shutting down"),
        }
    }

    fn redactor(&self, tenant: &str) -> Redactor {
        match self.state.upgrade() {
            Some(state) => state.redactor(tenant),
            // Nothing is recorded after shutdown; a random key keeps values unreadable.
            None => Redactor::new(rand_key()),
        }
    }

    async fn decide_many(&self, requests: &[DecisionRequest]) -> Vec<Decision> {
        // Listings have no decision event of their own to shadow: mode only.
        match self.state.upgrade() {
            Some(state) => requests
                .iter()
                .map(|r| state.policies.decide(r).0)
                .collect(),
            None => requests
                .iter()
                .map(|_| Decision::deny_with_error("the server is shutting down"))
                .collect(),
        }
    }

    async fn record(&self, event: AuditEvent) -> Result<(), Error> {
        let state = self.state()?;
        let awaited = self.awaited(&event);
        let id = event.header.id;
        state.pipeline.record(event).await?;
        if let Some(key) = awaited {
            self.shadow_recorded(&state, &key, id);
        }
        Ok(())
    }

    fn record_later(&self, event: AuditEvent) -> Result<(), Error> {
        let state = self.state()?;
        let id = event.header.id;
        let durable = state.pipeline.submit(event)?;
        tokio::spawn(async move {
            if let Err(e) = durable.await {
                tracing::error!(error = %e, event = %id, "an audit event could not be written");
            }
        });
        Ok(())
    }

    async fn open_approval(&self, request: NewApproval) -> Result<Approval, Error> {
        self.state()?.approvals.open(request).await
    }

    async fn consume_approval(
        &self,
        tenant: &TenantId,
        session: &str,
        resource_id: &str,
        args_sha256: &str,
    ) -> Result<Option<Approval>, Error> {
        self.state()?
            .approvals
            .consume(tenant, session, resource_id, args_sha256)
            .await
    }

    async fn wait_approval(
        &self,
        tenant: &TenantId,
        id: Uuid,
        deadline: Instant,
    ) -> Result<Approval, Error> {
        let state = self.state()?;
        state.approvals.wait(tenant, id, deadline).await
    }

    async fn expire_approval(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> Result<Option<Approval>, Error> {
        self.state()?.approvals.expire(tenant, id).await
    }

    fn registry(&self) -> Option<Arc<warden_registry::RegistrySnapshot>> {
        self.state.upgrade().map(|s| s.registry.snapshot())
    }

    async fn observe_tools(
        &self,
        tenant: &TenantId,
        server: &warden_registry::model::ServerName,
        listed: Vec<warden_registry::ToolDefinition>,
    ) -> Result<(), Error> {
        self.state()?
            .registry
            .observe_listing(tenant, server, &listed)
            .await
            .map(|_| ())
    }

    async fn answer_approval(
        &self,
        tenant: &TenantId,
        id: Uuid,
        answer: ApprovalAnswer,
    ) -> Result<Approval, Error> {
        self.state()?.approvals.answer(tenant, id, answer).await
    }
}

/// Keeps the gateway's registry upstreams in line with the registry: at start and after
/// every change (the snapshot is replaced after this server's own changes, and by the
/// server's refresher after changes made elsewhere — the CLI, another node).
pub fn spawn_registry_sync(state: &Arc<Inner>) {
    let weak = Arc::downgrade(state);
    tokio::spawn(async move {
        let mut synced: Option<Arc<warden_registry::RegistrySnapshot>> = None;
        loop {
            let Some(state) = weak.upgrade() else { return };
            let snapshot = state.registry.snapshot();
            if synced.as_ref().is_none_or(|s| !Arc::ptr_eq(s, &snapshot)) {
                state.gateway().sync_registry(&snapshot).await;
                synced = Some(snapshot);
            }
            drop(state);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
}

fn rand_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    let _ = getrandom::fill(&mut k);
    k
}
