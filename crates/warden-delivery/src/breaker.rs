//! Retry timing: exponential backoff with full jitter, and a circuit breaker.
//!
//! Full jitter (a delay drawn uniformly from zero to the exponential bound) spreads the
//! retries of many senders instead of having them hit a recovering receiver together. The
//! breaker stops hammering a receiver that is down: after `failures` consecutive failures it
//! opens; after `cooldown` it lets one probe through (half-open); the probe's success closes
//! it, its failure opens it again.

use std::time::{Duration, Instant};

/// The delay before retry number `attempt` (1 = after the first failure): uniform in
/// `[0, min(max, initial * 2^(attempt-1))]`.
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let bound = exp.min(max).as_millis() as u64;
    Duration::from_millis(random_below(bound + 1))
}

fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    // Jitter needs no cryptographic quality; without randomness it degrades to no delay.
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b) % n.max(1)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }

    /// For the metric: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> u64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    consecutive: u32,
    state: CircuitState,
    opened_at: Option<Instant>,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            consecutive: 0,
            state: CircuitState::Closed,
            opened_at: None,
        }
    }

    pub fn state(&self) -> CircuitState {
        self.state
    }

    /// How long to wait before the next attempt may go out; when the cool-down is over the
    /// breaker turns half-open and the next attempt is the probe.
    pub fn wait(&mut self, now: Instant) -> Duration {
        match (self.state, self.opened_at) {
            (CircuitState::Open, Some(at)) => {
                let ready = at + self.cooldown;
                if now >= ready {
                    self.state = CircuitState::HalfOpen;
                    Duration::ZERO
                } else {
                    ready - now
                }
            }
            _ => Duration::ZERO,
        }
    }

    pub fn success(&mut self) {
        self.consecutive = 0;
        self.state = CircuitState::Closed;
        self.opened_at = None;
    }

    pub fn failure(&mut self, now: Instant) {
        self.consecutive = self.consecutive.saturating_add(1);
        if self.state == CircuitState::HalfOpen || self.consecutive >= self.threshold {
            self.state = CircuitState::Open;
            self.opened_at = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_the_exponential_bound() {
        let (i, m) = (Duration::from_millis(100), Duration::from_millis(1000));
        for attempt in 1..30 {
            let bound = (100u64 << (attempt - 1).min(20)).min(1000);
            assert!(backoff(attempt, i, m) <= Duration::from_millis(bound));
        }
    }

    #[test]
    fn breaker_opens_after_k_failures_and_probes_after_the_cooldown() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(10));
        b.failure(t0);
        b.failure(t0);
        assert_eq!(b.state(), CircuitState::Closed);
        b.failure(t0);
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(b.wait(t0), Duration::from_secs(10));
        assert_eq!(b.wait(t0 + Duration::from_secs(10)), Duration::ZERO);
        assert_eq!(b.state(), CircuitState::HalfOpen);
        b.failure(t0 + Duration::from_secs(10));
        assert_eq!(
            b.state(),
            CircuitState::Open,
            "a failed probe opens it again"
        );
        assert_eq!(b.wait(t0 + Duration::from_secs(20)), Duration::ZERO);
        b.success();
        assert_eq!(b.state(), CircuitState::Closed);
    }
}
