//! The message clock: the one that stamps `created_at`, apart from the one that writes `Date`.
//!
//! On the real Kaiku server `created_at` is Postgres `DEFAULT NOW()`: the database host's
//! clock, read when the inserting transaction began. `Date` is written by the app server (or a
//! proxy in front of it). Two hosts, two clocks: a database host with broken NTP can be an
//! hour off. [`ClockOffset`] is how far the dev server's message clock is from its `Date`
//! clock, which stays the real one.

use std::fmt;
use std::time::{Duration, SystemTime};

/// How far the message clock (`created_at`) is from the `Date` clock: ahead or behind by a
/// duration. The default is no offset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockOffset {
    behind: bool,
    by: Duration,
}

impl ClockOffset {
    /// No offset: both clocks agree.
    pub const ZERO: Self = Self {
        behind: false,
        by: Duration::ZERO,
    };

    /// The message clock reads `by` later than the `Date` clock.
    pub const fn ahead(by: Duration) -> Self {
        Self { behind: false, by }
    }

    /// The message clock reads `by` earlier than the `Date` clock.
    pub const fn behind(by: Duration) -> Self {
        Self { behind: true, by }
    }

    /// `secs` seconds, positive ahead, negative behind, fractions allowed; `None` when not a
    /// finite number or beyond a year either way.
    pub fn from_secs_f64(secs: f64) -> Option<Self> {
        const YEAR: f64 = 365.0 * 86_400.0;
        if !secs.is_finite() || secs.abs() > YEAR {
            return None;
        }
        let by = Duration::from_secs_f64(secs.abs());
        Some(if secs < 0.0 {
            Self::behind(by)
        } else {
            Self::ahead(by)
        })
    }

    /// Whether the message clock reads earlier than the `Date` clock.
    pub fn is_behind(self) -> bool {
        self.behind && !self.by.is_zero()
    }

    /// How far apart the clocks are, whichever way.
    pub fn magnitude(self) -> Duration {
        self.by
    }

    /// What the message clock reads when the `Date` clock reads `t`.
    pub fn apply(self, t: SystemTime) -> SystemTime {
        if self.behind {
            t.checked_sub(self.by).unwrap_or(SystemTime::UNIX_EPOCH)
        } else {
            t.checked_add(self.by).unwrap_or(t)
        }
    }
}

impl fmt::Display for ClockOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.is_behind() { '-' } else { '+' };
        write!(f, "{sign}{}s", self.by.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_fractional_number_of_seconds_reads_as_ahead_or_behind() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let behind = ClockOffset::from_secs_f64(-5.5).expect("in range");
        assert!(behind.is_behind());
        assert_eq!(behind.apply(t), t - Duration::from_millis(5500));
        let ahead = ClockOffset::from_secs_f64(3600.0).expect("in range");
        assert!(!ahead.is_behind());
        assert_eq!(ahead.apply(t), t + Duration::from_secs(3600));
        assert_eq!(ClockOffset::from_secs_f64(0.0), Some(ClockOffset::ZERO));
        assert_eq!(
            ClockOffset::from_secs_f64(-0.0).map(|o| o.apply(t)),
            Some(t)
        );
        assert_eq!(ahead.to_string(), "+3600s");
        assert_eq!(behind.to_string(), "-5.5s");
    }

    #[test]
    fn nonsense_is_refused() {
        assert_eq!(ClockOffset::from_secs_f64(f64::NAN), None);
        assert_eq!(ClockOffset::from_secs_f64(f64::INFINITY), None);
        assert_eq!(ClockOffset::from_secs_f64(-4.0e7), None);
    }
}
