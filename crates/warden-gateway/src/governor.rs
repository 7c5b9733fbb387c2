//! What the gateway needs from the rest of Warden, as one trait: who a token is, what the
//! policies decide, a durable audit trail, and approvals. The server implements it over its
//! store, policy engine and audit pipeline; `warden gateway stdio --remote` implements it
//! over the server's HTTP API. The gateway itself holds no policy or storage.

use std::time::Instant;

use uuid::Uuid;
use warden_audit::redact::Redactor;
use warden_core::{
    Approval, AuditEvent, Decision, DecisionRequest, Error, NamespacePath, NewApproval, TenantId,
};

/// The agent session behind a bearer token.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentIdentity {
    pub tenant: TenantId,
    /// The token's id: it names the agent session in decisions and the audit trail.
    pub token_id: String,
    pub agent: String,
    pub on_behalf_of: Option<String>,
    /// The namespace the session is scoped to.
    pub namespace: NamespacePath,
}

#[async_trait::async_trait]
pub trait Governor: Send + Sync + 'static {
    /// Resolves a bearer token to an agent session. Errors: `Unauthenticated` (unknown,
    /// expired, revoked), `Forbidden` (a valid token that is not an agent session).
    async fn authenticate(&self, bearer: &str) -> Result<AgentIdentity, Error>;

    /// Decides with the tenant's current policies. Never fails: errors deny. Async because
    /// the policies may live on another machine (a remote server).
    async fn decide(&self, request: &DecisionRequest) -> Decision;

    /// Decides many requests at once (`tools/list` decides per tool): one round trip for a
    /// remote governor. One decision per request, in order; never fails, errors deny.
    async fn decide_many(&self, requests: &[DecisionRequest]) -> Vec<Decision> {
        let mut out = Vec::with_capacity(requests.len());
        for r in requests {
            out.push(self.decide(r).await);
        }
        out
    }

    /// The tenant's redactor (obligation paths and secret detectors, HMAC with its key). A
    /// governor whose `record` redacts on the other side (the tenant's key never leaves the
    /// server) returns [`Redactor::deferred`].
    fn redactor(&self, tenant: &str) -> Redactor;

    /// Makes an event durable. `Ok` only once it is committed; on `Err` the action the event
    /// describes must not happen (fail closed).
    async fn record(&self, event: AuditEvent) -> Result<(), Error>;

    /// Queues an event without waiting for it to be durable: for records of what already
    /// happened (a forwarded call's outcome), so the agent does not wait on a second commit.
    /// The event is queued when this returns (a graceful shutdown writes it); a failure to
    /// write it later is logged and counted by the pipeline.
    fn record_later(&self, event: AuditEvent) -> Result<(), Error>;

    /// Opens an approval request (status pending).
    async fn open_approval(&self, request: NewApproval) -> Result<Approval, Error>;

    /// Uses up a granted, unexpired, unused approval bound to exactly this session, resource
    /// and argument digest, if there is one (then its status becomes `consumed`).
    async fn consume_approval(
        &self,
        tenant: &TenantId,
        session: &str,
        resource_id: &str,
        args_sha256: &str,
    ) -> Result<Option<Approval>, Error>;

    /// Waits until the approval is answered or `deadline` passes, and returns it as it then
    /// is (status `pending` if the deadline came first; the caller decides what that means).
    async fn wait_approval(
        &self,
        tenant: &TenantId,
        id: Uuid,
        deadline: Instant,
    ) -> Result<Approval, Error>;

    /// Writes down that a pending approval expired (nobody answered in time).
    async fn expire_approval(&self, tenant: &TenantId, id: Uuid)
    -> Result<Option<Approval>, Error>;

    /// The registry as it is now (servers, tools, agents of every tenant), if the server
    /// keeps one.
    fn registry(&self) -> Option<std::sync::Arc<warden_registry::RegistrySnapshot>> {
        None
    }

    /// Tells the registry what a server lists now: it records changed pinned definitions
    /// (and, by the server's pin policy, sends the tool back to review) and new tools.
    async fn observe_tools(
        &self,
        _tenant: &TenantId,
        _server: &warden_registry::model::ServerName,
        _listed: Vec<warden_registry::ToolDefinition>,
    ) -> Result<(), Error> {
        Ok(())
    }

    /// Answers an approval in the agent's own client (elicitation), as the on-behalf-of user.
    async fn answer_approval(
        &self,
        tenant: &TenantId,
        id: Uuid,
        answer: warden_core::ApprovalAnswer,
    ) -> Result<Approval, Error>;
}
