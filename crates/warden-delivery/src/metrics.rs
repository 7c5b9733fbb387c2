//! Per-destination figures for `/metrics`: events delivered, failed attempts, events
//! dead-lettered, lag (events of the tenant's log not yet past the cursor) and circuit state.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

#[derive(Clone, Copy, Debug, Default)]
pub struct DestinationFigures {
    pub delivered: u64,
    pub failed_attempts: u64,
    pub dead_lettered: u64,
    pub lag: u64,
    /// 0 closed, 1 open, 2 half-open.
    pub circuit: u64,
}

/// Name, type, help, and how to read the figure.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&DestinationFigures) -> u64,
);

#[derive(Default)]
pub struct DeliveryMetrics {
    by_destination: Mutex<BTreeMap<(String, String), DestinationFigures>>,
}

impl DeliveryMetrics {
    pub fn update(&self, tenant: &str, name: &str, f: impl FnOnce(&mut DestinationFigures)) {
        let mut m = self.by_destination.lock().expect("delivery metrics");
        f(m.entry((tenant.to_owned(), name.to_owned())).or_default());
    }

    pub fn get(&self, tenant: &str, name: &str) -> DestinationFigures {
        let m = self.by_destination.lock().expect("delivery metrics");
        m.get(&(tenant.to_owned(), name.to_owned()))
            .copied()
            .unwrap_or_default()
    }

    /// Appends the Prometheus text of every destination this node has worked on.
    pub fn render(&self, out: &mut String) {
        let m = self.by_destination.lock().expect("delivery metrics");
        let series: [Series; 5] = [
            (
                "warden_delivery_events_delivered_total",
                "counter",
                "Events acknowledged by the destination.",
                |f| f.delivered,
            ),
            (
                "warden_delivery_failed_attempts_total",
                "counter",
                "Batch attempts that failed (error, timeout or refusal by the receiver).",
                |f| f.failed_attempts,
            ),
            (
                "warden_delivery_dead_letters_total",
                "counter",
                "Events moved to the dead-letter store after every attempt failed.",
                |f| f.dead_lettered,
            ),
            (
                "warden_delivery_lag_events",
                "gauge",
                "Events of the tenant's log not yet delivered to the destination.",
                |f| f.lag,
            ),
            (
                "warden_delivery_circuit_state",
                "gauge",
                "Circuit breaker: 0 closed, 1 open, 2 half-open.",
                |f| f.circuit,
            ),
        ];
        for (name, kind, help, get) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((tenant, dest), f) in m.iter() {
                let _ = writeln!(
                    out,
                    "{name}{{tenant=\"{}\",destination=\"{}\"}} {}",
                    escape(tenant),
                    escape(dest),
                    get(f)
                );
            }
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
