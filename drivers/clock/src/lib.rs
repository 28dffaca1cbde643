//! tether-clock: a clock that keeps counting while the machine sleeps, on Linux, macOS and
//! Windows.
//!
//! tether's core notices a sleep by a timer handled far past its deadline, so its driver must
//! give it `Instant`s that advance while the machine is suspended. `std::time::Instant` does
//! on Windows only. [`Clock`] reads, per OS (docs/decisions.md D56 has the sources):
//!
//! - **Linux, Android**: `CLOCK_BOOTTIME`. clock_gettime(2): `CLOCK_MONOTONIC` (what `Instant`
//!   reads) "does not count time that the system is suspended"; `CLOCK_BOOTTIME` is the same
//!   clock except that it "also includes any time that the system is suspended".
//! - **macOS, iOS**: `CLOCK_MONOTONIC`. Apple's clock_gettime(3): it "will continue to increment
//!   while the system is asleep", unlike `CLOCK_UPTIME_RAW`, the `mach_absolute_time` clock
//!   that `Instant` reads.
//! - **Windows**: `Instant` itself. It reads `QueryPerformanceCounter`, whose count includes
//!   the time the machine was in standby, hibernate or connected standby (Microsoft,
//!   "Acquiring high-resolution time stamps").
//! - **Anything else**: `Instant`, whatever that does ([`COUNTS_SUSPEND`] is `false`).
//!
//! All of it is safe code (rustix on Unix, std on Windows). The per-OS code lives in this small
//! crate, with no C dependency, so that it compile-checks for every target from Linux.

#![warn(missing_docs)]

use std::time::{Duration, Instant};

pub use os::{COUNTS_SUSPEND, SOURCE};

// Kaiku ships to these three desktops, and DESIGN 3.2 wants a wake noticed on each: a build
// for one of them without a suspend-counting clock does not compile (CI checks all three).
#[cfg(any(target_os = "linux", target_os = "macos", target_os = "windows"))]
const _: () = assert!(
    COUNTS_SUSPEND,
    "this desktop needs a clock that counts suspend"
);

/// Produces `Instant`s that include the time spent suspended (see the crate docs per OS).
///
/// They are comparable with each other, not with `Instant::now()`: after a sleep they run
/// ahead of it by the time slept (on Linux and macOS).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base: Instant,
    /// The OS clock's reading at `base`; `None` where `Instant` itself is the clock.
    os_base: Option<Duration>,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock anchored now.
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            os_base: os::now(),
        }
    }

    /// The current instant, time asleep included. Never earlier than a previous reading.
    pub fn now(&self) -> Instant {
        match (self.os_base, os::now()) {
            (Some(base), Some(now)) => self.base + now.saturating_sub(base),
            _ => Instant::now().max(self.base),
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod os {
    use std::time::Duration;

    /// The clock [`Clock`](crate::Clock) reads on this platform, by its OS name.
    pub const SOURCE: &str = "CLOCK_BOOTTIME";
    /// Whether [`Clock`](crate::Clock) counts the time the machine spends asleep here.
    pub const COUNTS_SUSPEND: bool = true;

    pub(crate) fn now() -> Option<Duration> {
        Some(crate::duration(rustix::time::clock_gettime(
            rustix::time::ClockId::Boottime,
        )))
    }
}

#[cfg(target_vendor = "apple")]
mod os {
    use std::time::Duration;

    /// The clock [`Clock`](crate::Clock) reads on this platform, by its OS name.
    pub const SOURCE: &str = "CLOCK_MONOTONIC";
    /// Whether [`Clock`](crate::Clock) counts the time the machine spends asleep here.
    pub const COUNTS_SUSPEND: bool = true;

    pub(crate) fn now() -> Option<Duration> {
        // Darwin's CLOCK_MONOTONIC is its continuous clock (`mach_continuous_time`), unlike
        // Linux's: it keeps counting while the machine sleeps.
        Some(crate::duration(rustix::time::clock_gettime(
            rustix::time::ClockId::Monotonic,
        )))
    }
}

#[cfg(windows)]
mod os {
    use std::time::Duration;

    /// The clock [`Clock`](crate::Clock) reads on this platform, by its OS name.
    pub const SOURCE: &str = "QueryPerformanceCounter";
    /// Whether [`Clock`](crate::Clock) counts the time the machine spends asleep here.
    pub const COUNTS_SUSPEND: bool = true;

    /// `Instant` is QueryPerformanceCounter here, which counts sleep already.
    pub(crate) fn now() -> Option<Duration> {
        None
    }
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_vendor = "apple",
    windows
)))]
mod os {
    use std::time::Duration;

    /// The clock [`Clock`](crate::Clock) reads on this platform, by its OS name.
    pub const SOURCE: &str = "Instant";
    /// Whether [`Clock`](crate::Clock) counts the time the machine spends asleep here.
    pub const COUNTS_SUSPEND: bool = false;

    /// Nothing better than `Instant` is known here.
    pub(crate) fn now() -> Option<Duration> {
        None
    }
}

#[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
fn duration(ts: rustix::time::Timespec) -> Duration {
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_with_real_time() {
        let c = Clock::new();
        let a = c.now();
        std::thread::sleep(Duration::from_millis(20));
        let b = c.now();
        assert!(b - a >= Duration::from_millis(20));
        assert!(b - a < Duration::from_secs(5));
    }

    #[test]
    fn never_runs_backwards() {
        let c = Clock::new();
        let mut last = c.now();
        for _ in 0..10_000 {
            let now = c.now();
            assert!(now >= last);
            last = now;
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_reads_boottime_not_instant() {
        // Both clocks tick at the same rate while awake; what tells them apart is the source.
        assert_eq!(SOURCE, "CLOCK_BOOTTIME");
        let c = Clock::new();
        let before = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        let t = c.now();
        let after = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        let elapsed = t - c.base;
        let (before, after) = (duration(before), duration(after));
        let base = c.os_base.expect("Linux has an OS clock");
        assert!(elapsed >= before.saturating_sub(base));
        assert!(elapsed <= after.saturating_sub(base));
    }
}
