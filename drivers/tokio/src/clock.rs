//! Time for the driver: a clock that keeps counting while the machine sleeps, and a watchdog
//! that notices, within about a second, that it did.
//!
//! The core detects a sleep by a timer handled far past its deadline, so the driver feeds it
//! [`Clock`]'s `Instant`s, which include suspended time on Linux, macOS and Windows (the
//! per-OS choice lives in the `tether-clock` crate, where CI compile-checks it for each OS).
//!
//! That alone is late: the driver's tokio timer runs on `Instant`, which stops during suspend
//! on Linux and macOS, so the core would hear of the wake only when its next deadline came
//! round, up to a heartbeat interval later. Hence the watchdog: one thread per process, shared
//! by every client, looks at the clock every second. When more time passed than it slept, the
//! process did not run for the difference (the machine slept, or the process or its VM was
//! frozen), and every client that wants to know is told at once.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use tether_clock::Clock;
use tokio::sync::watch;

/// How often the watchdog looks at the clock: a wake is noticed at most this long after the
/// process runs again (DESIGN 3.2 asks for 2 s).
pub(crate) const WATCHDOG_PERIOD: Duration = Duration::from_secs(1);

/// Lost time below this is scheduling noise on a busy machine, not worth waking clients for;
/// each client then applies its own `wake_threshold` (5 s by default).
const NOISE: Duration = Duration::from_secs(1);

/// A stretch of time the process did not run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Wake {
    /// Counts the wakes seen by this watchdog (the value changes with every one).
    pub seq: u64,
    /// How long the process did not run, by the suspend-counting clock.
    pub lost: Duration,
}

/// Compares the suspend-counting clock between two looks that were `period` apart by the
/// sleeping thread's own clock.
#[derive(Debug)]
struct Gap {
    last: Instant,
    period: Duration,
}

impl Gap {
    fn new(now: Instant, period: Duration) -> Self {
        Self { last: now, period }
    }

    /// The time lost since the last look, when it is more than noise.
    fn look(&mut self, now: Instant) -> Option<Duration> {
        let lost = now
            .saturating_duration_since(self.last)
            .saturating_sub(self.period);
        self.last = now;
        (lost >= NOISE).then_some(lost)
    }
}

/// The running watchdog's sender, while one runs.
static WATCHDOG: Mutex<Option<Arc<watch::Sender<Wake>>>> = Mutex::new(None);

/// Subscribes to the process's watchdog, starting its thread when none runs. `None` when the
/// thread cannot be started (the client then runs without it). The thread ends by itself
/// once no subscriber is left.
pub(crate) fn watch_wakes() -> Option<watch::Receiver<Wake>> {
    let mut slot = WATCHDOG.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(tx) = slot.as_ref() {
        return Some(tx.subscribe());
    }
    let (tx, rx) = watch::channel(Wake::default());
    let tx = Arc::new(tx);
    let theirs = tx.clone();
    match std::thread::Builder::new()
        .name("tether-wake".into())
        .spawn(move || run_watchdog(&theirs))
    {
        Ok(_) => {
            *slot = Some(tx);
            Some(rx)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the wake watchdog; wakes are noticed late");
            None
        }
    }
}

fn run_watchdog(tx: &Arc<watch::Sender<Wake>>) {
    let clock = Clock::new();
    let mut gap = Gap::new(clock.now(), WATCHDOG_PERIOD);
    loop {
        // Sleeps on the clock that stops in suspend (Linux, macOS) or that wakes at once
        // after it: either way the look after a wake comes within a period.
        std::thread::sleep(WATCHDOG_PERIOD);
        {
            let mut slot = WATCHDOG.lock().unwrap_or_else(PoisonError::into_inner);
            if tx.receiver_count() == 0 {
                // Under the lock: a client subscribing now starts a new thread.
                if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, tx)) {
                    *slot = None;
                }
                return;
            }
        }
        if let Some(lost) = gap.look(clock.now()) {
            tracing::debug!(lost_ms = lost.as_millis() as u64, "the process did not run");
            tx.send_modify(|w| {
                w.seq += 1;
                w.lost = lost;
            });
        }
    }
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
    fn a_look_on_time_loses_nothing() {
        let t0 = Instant::now();
        let mut gap = Gap::new(t0, WATCHDOG_PERIOD);
        for i in 1..=60 {
            // A little late each time, as a sleeping thread is.
            let now = t0 + WATCHDOG_PERIOD * i + Duration::from_millis(3 * u64::from(i));
            assert_eq!(gap.look(now), None);
        }
    }

    #[test]
    fn a_look_long_after_the_last_reports_the_time_lost() {
        let t0 = Instant::now();
        let mut gap = Gap::new(t0, WATCHDOG_PERIOD);
        let woke = t0 + WATCHDOG_PERIOD + Duration::from_secs(45);
        assert_eq!(gap.look(woke), Some(Duration::from_secs(45)));
        // Measured from the wake on: the next look on time is quiet again.
        assert_eq!(gap.look(woke + WATCHDOG_PERIOD), None);
    }

    #[test]
    fn one_watchdog_serves_every_subscriber_and_stops_without_them() {
        let a = watch_wakes().expect("watchdog");
        let b = watch_wakes().expect("watchdog");
        assert!(a.same_channel(&b));
        drop((a, b));
        // The thread notices within a period that nobody listens, and clears the slot.
        let deadline = Instant::now() + WATCHDOG_PERIOD * 5;
        while WATCHDOG
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
        {
            assert!(
                Instant::now() < deadline,
                "the watchdog outlived its subscribers"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // And a new subscriber gets a new one.
        let c = watch_wakes().expect("watchdog");
        assert!(!c.has_changed().unwrap_or(true));
    }
}
