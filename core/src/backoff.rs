//! Reconnect backoff: capped exponential with "equal jitter" and a stability window.

use std::time::{Duration, Instant};

use crate::rng::Rng;

/// Backoff settings. Retry `n` (1-based) waits a delay drawn uniformly from `[cap/2, cap]`
/// with `cap = min(max, base * 2^(n-1))`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackoffConfig {
    /// Cap of the first retry. Default 1 s.
    pub base: Duration,
    /// Largest cap. Default 30 s.
    pub max: Duration,
    /// The retry count resets only once a connection has stayed up this long. Default 10 s.
    pub reset_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(10),
        }
    }
}

/// Counts retries and draws their delays.
///
/// Verbs: [`next_delay`](Self::next_delay) when a connection is lost or refused,
/// [`handle_stable`](Self::handle_stable) once a connection has lasted `reset_after`.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    config: BackoffConfig,
    retries: u32,
}

impl Backoff {
    /// A backoff with no retries yet.
    pub(crate) fn new(config: BackoffConfig) -> Self {
        Self { config, retries: 0 }
    }

    /// Retries since the last stable connection.
    pub(crate) fn retries(&self) -> u32 {
        self.retries
    }

    /// The cap for retry `n` (1-based).
    pub(crate) fn cap(&self, n: u32) -> Duration {
        let shift = n.saturating_sub(1).min(31);
        self.config
            .base
            .checked_mul(1u32 << shift)
            .unwrap_or(self.config.max)
            .min(self.config.max)
    }

    /// Counts one more retry and draws its delay from `[cap/2, cap]`.
    pub(crate) fn next_delay(&mut self, rng: &mut Rng) -> Duration {
        self.retries = self.retries.saturating_add(1);
        let cap = self.cap(self.retries);
        rng.duration_between(cap / 2, cap)
    }

    /// When a connection established at `since` becomes stable.
    pub(crate) fn stable_at(&self, since: Instant) -> Instant {
        since + self.config.reset_after
    }

    /// The connection lasted `reset_after`: the next loss starts again from retry 1.
    pub(crate) fn handle_stable(&mut self) {
        self.retries = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_follow_the_capped_doubling_with_equal_jitter() {
        let mut b = Backoff::new(BackoffConfig::default());
        let mut rng = Rng::new(3);
        let caps = [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
        for (i, cap) in caps.iter().enumerate() {
            let d = b.next_delay(&mut rng);
            assert_eq!(b.retries(), i as u32 + 1);
            assert!(d >= ms(cap / 2) && d <= ms(*cap), "retry {}: {d:?}", i + 1);
        }
    }

    #[test]
    fn huge_retry_counts_saturate_at_max() {
        let b = Backoff::new(BackoffConfig::default());
        assert_eq!(b.cap(u32::MAX), Duration::from_secs(30));
        assert_eq!(b.cap(1), Duration::from_secs(1));
        assert_eq!(b.cap(0), Duration::from_secs(1));
    }

    #[test]
    fn only_a_stable_connection_resets_the_count() {
        let mut b = Backoff::new(BackoffConfig::default());
        let mut rng = Rng::new(1);
        b.next_delay(&mut rng);
        b.next_delay(&mut rng);
        assert_eq!(b.retries(), 2);
        b.handle_stable();
        assert_eq!(b.retries(), 0);
        let d = b.next_delay(&mut rng);
        assert!(d <= ms(1000));
    }

    #[test]
    fn two_seeds_give_two_schedules() {
        let mut a = Backoff::new(BackoffConfig::default());
        let mut b = Backoff::new(BackoffConfig::default());
        let da = a.next_delay(&mut Rng::new(1));
        let db = b.next_delay(&mut Rng::new(2));
        assert_ne!(da, db);
    }
}
