//! A clock that keeps counting while the machine sleeps.
//!
//! `std::time::Instant` is `CLOCK_MONOTONIC` on Linux, which stops during suspend: after a
//! laptop sleeps for an hour, a heartbeat deadline would look as if no time had passed. The
//! core detects sleep by a timer handled far past its deadline, so the driver feeds it
//! `Instant`s that advance with `CLOCK_BOOTTIME` (which counts suspend). Elsewhere it falls
//! back to `Instant::now`.

use std::time::{Duration, Instant};

/// Produces `Instant`s that include time spent suspended, where the OS can tell.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base: Instant,
    #[cfg(target_os = "linux")]
    boot_base: Duration,
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
            #[cfg(target_os = "linux")]
            boot_base: boottime(),
        }
    }

    /// The current instant, suspend included.
    pub fn now(&self) -> Instant {
        #[cfg(target_os = "linux")]
        {
            self.base + boottime().saturating_sub(self.boot_base)
        }
        #[cfg(not(target_os = "linux"))]
        {
            Instant::now().max(self.base)
        }
    }
}

#[cfg(target_os = "linux")]
fn boottime() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
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
}
