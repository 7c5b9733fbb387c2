//! How the allocator gives memory back to the operating system.
//!
//! mimalloc returns freed pages to the OS ("purges" them) only after a delay (1 s by default),
//! and a delayed purge runs only when some thread next allocates or frees. A server that has
//! gone quiet therefore keeps everything its start-up and its last burst of requests freed:
//! measured on an idle gateway, 54 MB resident with the default against 43 MB with purges done
//! at once, for the same calls per second under load (docs/benchmarks.md). The Warden process
//! purges at once unless the operator chose otherwise with `MIMALLOC_PURGE_DELAY`.

use libmimalloc_sys::mi_option_t;

/// The environment variable through which mimalloc takes an operator's own purge delay.
const PURGE_DELAY_VAR: &str = "MIMALLOC_PURGE_DELAY";

/// `mi_option_purge_delay` in mimalloc.h, which the bindings do not name.
const PURGE_DELAY: mi_option_t = 15;

/// Freed pages go back to the OS when they are freed, not a second later.
pub fn purge_at_once() {
    if std::env::var_os(PURGE_DELAY_VAR).is_some() {
        return;
    }
    // SAFETY: setting an option has no preconditions; mimalloc reads this one each time it
    // decides whether to purge, so it applies from here on.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purges_at_once_unless_the_operator_set_a_delay() {
        // The test binary's environment does not set the variable (it would be the
        // operator's choice, which this must leave alone).
        assert!(std::env::var_os(PURGE_DELAY_VAR).is_none());
        // SAFETY: reading an option has no preconditions.
        let delay = || unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        // mimalloc's default purge delay: the option number names the right option.
        assert_eq!(delay(), 1000);
        purge_at_once();
        assert_eq!(delay(), 0);
    }
}
