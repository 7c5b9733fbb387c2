//! The gateway's settings (the `[gateway]` table of the configuration file).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::upstream::UpstreamConfig;

/// Protocol versions the agent-facing endpoint speaks, newest first.
pub const PROTOCOL_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];

/// Separates a server's name from its tool's name in the aggregated tool list.
pub const NAME_SEPARATOR: &str = "__";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// The MCP servers the gateway governs.
    #[serde(rename = "upstream")]
    pub upstreams: Vec<UpstreamConfig>,
    /// How long a held call waits for a person before it fails (seconds; default 600).
    #[serde(with = "secs")]
    pub approval_timeout: Duration,
    /// Sessions idle longer than this are ended (seconds; default 3600).
    #[serde(with = "secs")]
    pub session_idle_timeout: Duration,
    /// Most open sessions; past it `initialize` is refused until one ends (default 10,000).
    pub max_sessions: usize,
    /// Largest JSON-RPC message accepted from an agent, in bytes (default 4 MiB).
    pub max_message_bytes: usize,
    /// Browser origins allowed to call `/mcp` besides the loopback ones (`http://localhost:*`,
    /// `http://127.0.0.1:*`, `http://[::1]:*`). A request with any other `Origin` gets 403.
    pub allowed_origins: Vec<String>,
    /// Offer the on-behalf-of user to approve a held call in the agent's own client (MCP
    /// elicitation), when the client supports it. The answer is recorded as such.
    pub elicitation_approvals: bool,
    /// Tools per `tools/list` page.
    pub page_size: usize,
    /// How often a held call reports progress to a client that asked for it (seconds).
    #[serde(with = "secs")]
    pub progress_interval: Duration,
    /// `optional` (default): a server the tenant has not registered is governed by policies
    /// alone; `required`: only registered, approved servers and tools are usable.
    pub registry: crate::registry::RegistryMode,
    /// The gateway serves exactly one agent session, which owns every upstream (`warden
    /// gateway stdio`): a server request that belongs to no call (the `roots/list` a server
    /// sends at start) is relayed to that session. Otherwise upstreams are shared and such a
    /// request is refused, since no single agent can answer for the others. Not a setting
    /// of the file: the transport decides it.
    #[serde(skip)]
    pub one_session: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            upstreams: Vec::new(),
            approval_timeout: Duration::from_secs(600),
            session_idle_timeout: Duration::from_secs(3600),
            max_sessions: 10_000,
            max_message_bytes: 4 * 1024 * 1024,
            allowed_origins: Vec::new(),
            elicitation_approvals: false,
            page_size: 200,
            progress_interval: Duration::from_secs(5),
            registry: Default::default(),
            one_session: false,
        }
    }
}

impl GatewayConfig {
    /// Checks what serde cannot: names usable as prefixes, no duplicates.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for u in &self.upstreams {
            let n = &u.name;
            let ok = !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !n.contains(NAME_SEPARATOR)
                && !n.starts_with('_')
                && !n.ends_with('_');
            if !ok {
                return Err(format!(
                    "upstream name {n:?} is not usable: 1-64 letters, digits, '-' or '_', \
                     without \"__\" and not starting or ending with '_' (tools appear as \
                     <server>__<tool>)"
                ));
            }
            if !seen.insert(n.as_str()) {
                return Err(format!("upstream {n:?} is declared twice"));
            }
        }
        if self.page_size == 0 {
            return Err("page_size must be at least 1".into());
        }
        Ok(())
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Duration::try_from_secs_f64(f64::deserialize(d)?)
            .map_err(|_| serde::de::Error::custom("expected a non-negative number of seconds"))
    }
}

#[cfg(test)]
mod tests {
    use super::GatewayConfig;
    use crate::upstream::Transport;

    #[derive(serde::Deserialize)]
    struct File {
        gateway: GatewayConfig,
    }

    fn parse(text: &str) -> Result<GatewayConfig, String> {
        toml::from_str::<File>(text)
            .map(|f| f.gateway)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn reads_upstreams_of_both_transports() {
        let g = parse(
            r#"
            [gateway]
            approval_timeout = 30
            [[gateway.upstream]]
            name = "everything"
            transport = "stdio"
            command = "npx"
            args = ["-y", "server"]
            env = { A = "1" }
            [[gateway.upstream]]
            name = "tickets"
            transport = "http"
            url = "https://mcp.example/mcp"
            headers = { Authorization = "Bearer x" }
            timeout = 5
            "#,
        )
        .unwrap();
        assert_eq!(g.approval_timeout.as_secs(), 30);
        assert!(
            matches!(&g.upstreams[0].transport, Transport::Stdio { command, args, .. } if command == "npx" && args.len() == 2)
        );
        assert!(
            matches!(&g.upstreams[1].transport, Transport::Http { url, .. } if url.ends_with("/mcp"))
        );
        assert_eq!(g.upstreams[1].timeout().as_secs(), 5);
        g.validate().unwrap();
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        for (text, expected) in [
            (
                "name = \"a\"\ntransport = \"stdio\"\ncomand = \"x\"",
                "unknown field `comand`",
            ),
            (
                "name = \"a\"\ntransport = \"stdio\"",
                "stdio needs `command`",
            ),
            (
                "name = \"a\"\ntransport = \"http\"\nurl = \"u\"\ncommand = \"x\"",
                "`command` does not apply",
            ),
            ("name = \"a\"\ntransport = \"ftp\"", "unknown transport"),
        ] {
            let e = parse(&format!("[gateway]\n[[gateway.upstream]]\n{text}")).unwrap_err();
            assert!(e.contains(expected), "{e}");
        }
        let e = parse("[gateway]\nbogus = 1").unwrap_err();
        assert!(e.contains("unknown field `bogus`"), "{e}");
        let dup = parse(
            "[gateway]\n[[gateway.upstream]]\nname = \"a__b\"\ntransport = \"http\"\nurl = \"u\"",
        )
        .unwrap();
        assert!(dup.validate().unwrap_err().contains("\"a__b\""));
    }
}
