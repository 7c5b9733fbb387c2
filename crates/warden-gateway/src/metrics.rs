//! The gateway's Prometheus metrics, rendered into the server's `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use warden_core::metrics::{Counter, Histogram};

use crate::upstream::Health;

pub struct GatewayMetrics {
    /// Tool calls by server, tool and outcome (`allowed`, `denied`, `approved`,
    /// `approval_denied`, `approval_expired`, `refused`, `upstream_error`).
    calls: Mutex<BTreeMap<(String, String, &'static str), u64>>,
    pub decision_latency: Histogram,
    pub upstream_latency: Histogram,
    pub held: AtomicI64,
    pub sessions_started: Counter,
    pub malformed: Counter,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        GatewayMetrics {
            calls: Mutex::new(BTreeMap::new()),
            decision_latency: Histogram::latency(),
            upstream_latency: Histogram::latency(),
            held: AtomicI64::new(0),
            sessions_started: Counter::default(),
            malformed: Counter::default(),
        }
    }
}

/// Counts a held approval for as long as it lives.
pub struct HeldGuard<'a>(&'a AtomicI64);

impl Drop for HeldGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl GatewayMetrics {
    pub fn call(&self, server: &str, tool: &str, outcome: &'static str) {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        *calls
            .entry((server.to_owned(), tool.to_owned(), outcome))
            .or_default() += 1;
    }

    pub fn hold(&self) -> HeldGuard<'_> {
        self.held.fetch_add(1, Ordering::Relaxed);
        HeldGuard(&self.held)
    }

    pub fn render(&self, out: &mut String, sessions: usize, upstreams: &[(String, Health)]) {
        let _ = writeln!(
            out,
            "# HELP warden_gateway_tool_calls_total Tool calls through the gateway, by server, tool and outcome.\n# TYPE warden_gateway_tool_calls_total counter"
        );
        for ((server, tool, outcome), n) in
            self.calls.lock().unwrap_or_else(|e| e.into_inner()).iter()
        {
            let _ = writeln!(
                out,
                "warden_gateway_tool_calls_total{{server=\"{}\",tool=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(server),
                escape(tool)
            );
        }
        let _ = writeln!(
            out,
            "# HELP warden_gateway_decision_seconds Policy evaluation time per gateway decision.\n# TYPE warden_gateway_decision_seconds histogram"
        );
        self.decision_latency
            .render(out, "warden_gateway_decision_seconds", "");
        let _ = writeln!(
            out,
            "# HELP warden_gateway_upstream_seconds Time the upstream server took to answer a tool call.\n# TYPE warden_gateway_upstream_seconds histogram"
        );
        self.upstream_latency
            .render(out, "warden_gateway_upstream_seconds", "");
        let _ = writeln!(
            out,
            "# HELP warden_gateway_held_calls Tool calls waiting for a person's approval.\n# TYPE warden_gateway_held_calls gauge\nwarden_gateway_held_calls {}",
            self.held.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP warden_gateway_sessions Open MCP sessions.\n# TYPE warden_gateway_sessions gauge\nwarden_gateway_sessions {sessions}"
        );
        let _ = writeln!(
            out,
            "# HELP warden_gateway_sessions_started_total MCP sessions started.\n# TYPE warden_gateway_sessions_started_total counter\nwarden_gateway_sessions_started_total {}",
            self.sessions_started.get()
        );
        let _ = writeln!(
            out,
            "# HELP warden_gateway_malformed_messages_total Messages from agents that were not valid JSON-RPC.\n# TYPE warden_gateway_malformed_messages_total counter\nwarden_gateway_malformed_messages_total {}",
            self.malformed.get()
        );
        let _ = writeln!(
            out,
            "# HELP warden_gateway_upstream_up Whether an upstream server is connected (1) or not (0).\n# TYPE warden_gateway_upstream_up gauge"
        );
        for (name, health) in upstreams {
            let up = u8::from(matches!(health, Health::Ready));
            let _ = writeln!(
                out,
                "warden_gateway_upstream_up{{server=\"{}\"}} {up}",
                escape(name)
            );
        }
        let _ = writeln!(
            out,
            "# HELP warden_gateway_upstream_restarts Times an upstream server was restarted or reconnected.\n# TYPE warden_gateway_upstream_restarts gauge"
        );
        for (name, health) in upstreams {
            let restarts = match health {
                Health::Down { restarts, .. } => *restarts,
                _ => 0,
            };
            let _ = writeln!(
                out,
                "warden_gateway_upstream_restarts{{server=\"{}\"}} {restarts}",
                escape(name)
            );
        }
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
