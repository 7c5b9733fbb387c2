//! The MCP gateway's view of the server: tokens, policies, the audit pipeline and the
//! approval desk, behind the gateway's `Governor` trait.

use std::sync::{Arc, Weak};
use std::time::Instant;

use uuid::Uuid;
use warden_audit::redact::Redactor;
use warden_core::{
    Approval, ApprovalAnswer, AuditEvent, Decision, DecisionRequest, Error, NamespacePath,
    NewApproval, Role, TenantId,
};
use warden_gateway::{AgentIdentity, Governor};

use crate::state::Inner;

/// Holds the server state weakly: the state owns the gateway, which owns this.
pub struct ServerGovernor {
    state: Weak<Inner>,
}

impl ServerGovernor {
    pub fn new(state: &Arc<Inner>) -> ServerGovernor {
        ServerGovernor {
            state: Arc::downgrade(state),
        }
    }

    fn state(&self) -> Result<Arc<Inner>, Error> {
        self.state
            .upgrade()
            .ok_or_else(|| Error::unavailable("the server is shutting down", None))
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
                let d = state.policies.engine().decide(request);
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

    async fn record(&self, event: AuditEvent) -> Result<(), Error> {
        let state = self.state()?;
        state.pipeline.record(event).await.map(|_| ())
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
