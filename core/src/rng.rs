//! A tiny seeded generator for jitter. Not cryptographic; reproducible from its seed.

use std::time::Duration;

/// SplitMix64 (Steele, Lea, Flood 2014): one `u64` of state, full period, good enough
/// statistics for spreading reconnects. Kept in-crate so the core needs no RNG dependency and
/// a seed replays the same schedule forever.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator with this seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A duration drawn uniformly from `[lo, hi]` (nanosecond resolution).
    pub fn duration_between(&mut self, lo: Duration, hi: Duration) -> Duration {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo).as_nanos();
        // Spans here are at most minutes (< 2^64 ns), so the modulo bias is negligible.
        let span = u64::try_from(span).unwrap_or(u64::MAX);
        let r = if span == u64::MAX {
            self.next_u64()
        } else {
            self.next_u64() % (span + 1)
        };
        lo + Duration::from_nanos(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn durations_stay_in_range_and_spread() {
        let mut r = Rng::new(42);
        let lo = Duration::from_millis(500);
        let hi = Duration::from_millis(1000);
        let (mut min, mut max) = (hi, lo);
        for _ in 0..10_000 {
            let d = r.duration_between(lo, hi);
            assert!(d >= lo && d <= hi);
            min = min.min(d);
            max = max.max(d);
        }
        assert!(min < Duration::from_millis(510) && max > Duration::from_millis(990));
        assert_eq!(r.duration_between(hi, lo), hi);
    }
}
