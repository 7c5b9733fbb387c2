//! Discovery: Warden connects to a registered server the way the gateway would, runs
//! `initialize` and `tools/list`, and fills the registry's tool inventory (new tools in
//! `pending_review` with proposed categories). A server that cannot be reached, hangs or
//! answers garbage gives a clear error, recorded as `registry.discovery.failed`, and
//! nothing of the inventory is written.

use std::time::Duration;

use warden_core::{Error, Result, TenantId};
use warden_registry::model::ServerName;

use crate::registry::{DiscoveryInfo, DiscoveryReport, Registry, Who};

/// How long discovery may take when the caller does not say.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

pub async fn discover(
    registry: &Registry,
    tenant: &TenantId,
    name: &ServerName,
    who: &Who,
    deadline: Duration,
) -> Result<DiscoveryReport> {
    who.require_write("discover servers")?;
    let stored = registry
        .store()
        .get_server(tenant, name.as_str())
        .await?
        .ok_or_else(|| Error::not_found(format!("server {} not found", name.as_str())))?;
    // The deadline covers the whole discovery; a single request never outlives it.
    let config = warden_gateway::discover::upstream_config(&stored.server, Some(deadline * 2))
        .map_err(Error::invalid)?;
    let found = match warden_gateway::discover::discover(config, deadline).await {
        Ok(found) => found,
        Err(e) => {
            registry
                .record_discovery_failed(tenant, name, &e, who)
                .await?;
            return Err(Error::unavailable(format!("discovery failed: {e}"), None));
        }
    };
    let mut listed = Vec::with_capacity(found.tools.len());
    let mut problems = Vec::new();
    for (i, t) in found.tools.iter().enumerate() {
        match warden_registry::ToolDefinition::from_mcp(t) {
            Ok(d) => listed.push(d),
            Err(e) => problems.push(format!("tools[{i}]: {e}")),
        }
    }
    if !problems.is_empty() {
        let e = format!(
            "the server listed tools Warden cannot read: {}",
            problems.join("; ")
        );
        registry
            .record_discovery_failed(tenant, name, &e, who)
            .await?;
        return Err(Error::unavailable(format!("discovery failed: {e}"), None));
    }
    let info = DiscoveryInfo {
        server_info: found.info.as_ref().map(|i| i.server_info.clone()),
        protocol_version: found.info.map(|i| i.protocol_version),
    };
    registry
        .record_discovery(tenant, name, &listed, info, who)
        .await
}
