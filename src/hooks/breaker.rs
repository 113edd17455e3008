//! The hook's circuit breaker: after `hooks.breaker_failures` failures in
//! a row it opens, and for `hooks.breaker_open_for` every call fails at
//! once without asking the application (a down or overloaded app is not
//! kept busy, and clients get their answer now instead of after the
//! timeout). Then one call at a time is let through to try again; its
//! success closes the breaker, its failure opens it once more.
//!
//! A small state machine of our own, not a crate's: the maintained Rust
//! breakers wrap futures in their own types and policies (and bring their
//! own clocks and randomness) for the ~40 lines this needs.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// See the module docs.
#[derive(Debug)]
pub struct Breaker {
    /// Failures in a row that open it (0: never opens).
    threshold: u32,
    open_for: Duration,
    /// How long a trial call may take before another is let through (a
    /// trial whose caller went away never reports).
    trial_for: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    /// Open until then.
    open_until: Option<Instant>,
    /// When the trial call in flight (after an open period) started.
    trial_since: Option<Instant>,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration, trial_for: Duration) -> Self {
        Self {
            threshold,
            open_for,
            trial_for,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May a call go to the application now? `Err` is how long until one
    /// may.
    pub fn admit(&self, now: Instant) -> Result<(), Duration> {
        let mut state = self.state();
        match state.open_until {
            None => Ok(()),
            Some(until) if now < until => Err(until - now),
            Some(_) => match state.trial_since {
                Some(since) if now.duration_since(since) < self.trial_for => {
                    Err(self.trial_for - now.duration_since(since))
                }
                _ => {
                    state.trial_since = Some(now);
                    Ok(())
                }
            },
        }
    }

    /// Whether calls are refused at `now` (open, and not yet time for a
    /// trial).
    pub fn is_open(&self, now: Instant) -> bool {
        self.state().open_until.is_some_and(|until| now < until)
    }

    /// The application answered (an allow or a denial).
    pub fn succeeded(&self) {
        let mut state = self.state();
        *state = State::default();
    }

    /// The call failed; answers whether the breaker is open now.
    pub fn failed(&self, now: Instant) -> bool {
        let mut state = self.state();
        state.failures = state.failures.saturating_add(1);
        let trial = state.trial_since.take().is_some();
        if self.threshold > 0 && (trial || state.failures >= self.threshold) {
            state.open_until = Some(now + self.open_for);
        }
        state.open_until.is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Closed → open after the threshold → one trial → closed again on success,
    /// open again on failure.
    #[test]
    fn opens_and_closes() {
        let second = Duration::from_secs(1);
        let breaker = Breaker::new(2, 10 * second, 2 * second);
        let t0 = Instant::now();
        assert!(breaker.admit(t0).is_ok());
        assert!(!breaker.failed(t0));
        assert!(breaker.failed(t0), "two in a row open it");
        assert_eq!(breaker.admit(t0 + second), Err(9 * second));
        assert!(breaker.is_open(t0 + second));
        let later = t0 + 11 * second;
        assert!(breaker.admit(later).is_ok(), "one trial");
        assert!(breaker.admit(later).is_err(), "only one");
        assert!(breaker.failed(later), "a failed trial opens it again");
        assert!(breaker.admit(later + second).is_err());
        let after = later + 11 * second;
        assert!(breaker.admit(after).is_ok());
        breaker.succeeded();
        assert!(breaker.admit(after).is_ok());
        assert!(breaker.admit(after).is_ok(), "closed: every call goes");
    }

    /// A trial whose caller never reports lets another through after its time.
    #[test]
    fn a_lost_trial_is_replaced() {
        let second = Duration::from_secs(1);
        let breaker = Breaker::new(1, second, 2 * second);
        let t0 = Instant::now();
        breaker.failed(t0);
        assert!(breaker.admit(t0 + second).is_ok());
        assert!(breaker.admit(t0 + 2 * second).is_err());
        assert!(breaker.admit(t0 + 4 * second).is_ok());
    }

    /// A threshold of 0 never opens.
    #[test]
    fn zero_never_opens() {
        let breaker = Breaker::new(0, Duration::from_secs(1), Duration::from_secs(1));
        let now = Instant::now();
        for _ in 0..100 {
            assert!(!breaker.failed(now));
        }
        assert!(breaker.admit(now).is_ok());
    }
}
