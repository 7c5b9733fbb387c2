//! The scheduled retention run: every `[retention] interval` each node applies every
//! tenant's rules (see `warden_store::retention`). Several nodes may run it at the same time:
//! each run records what it may remove before removing it, and removing what is already gone
//! is a no-op.

use std::time::Duration;

use warden_core::{Actor, EntityRef};

use crate::state::AppState;

/// `[retention]` in the configuration file.
#[derive(Clone, Copy, Debug)]
pub struct RetentionSchedule {
    pub enabled: bool,
    pub interval: Duration,
}

impl Default for RetentionSchedule {
    fn default() -> Self {
        RetentionSchedule {
            enabled: true,
            interval: Duration::from_secs(3600),
        }
    }
}

/// The actor of scheduled runs.
pub fn system_actor() -> Actor {
    Actor {
        principal: Some(EntityRef {
            entity_type: "System".into(),
            id: "retention".into(),
        }),
        ..Default::default()
    }
}

/// Applies retention every interval until `stop` changes; the first run comes one interval
/// after start, so a restart loop cannot turn into a deletion loop.
pub async fn run(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let schedule = state.config.retention;
    if !schedule.enabled {
        return;
    }
    let mut tick = tokio::time::interval(schedule.interval.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let now = chrono::Utc::now();
        if let Err(e) = warden_store::retention::apply_all(
            state.store.as_ref(),
            now,
            "warden.system",
            &system_actor(),
        )
        .await
        {
            tracing::warn!(error = %e, "retention run failed; retrying at the next interval");
        }
    }
}
