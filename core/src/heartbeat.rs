//! Heartbeat: a ping every interval, and a dead-link verdict when nothing arrives after one.

use std::time::{Duration, Instant};

/// Heartbeat settings.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeartbeatConfig {
    /// Time between pings. Default 30 s.
    pub interval: Duration,
    /// The link is dead when nothing at all arrives this long after a ping. Default 10 s.
    pub timeout: Duration,
    /// A timer handled this late means the machine slept. Default 5 s.
    pub wake_threshold: Duration,
    /// Deadline of the probe sent on waking. Default 5 s.
    pub wake_probe_timeout: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            wake_threshold: Duration::from_secs(5),
            wake_probe_timeout: Duration::from_secs(5),
        }
    }
}

/// What the heartbeat wants after a timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Nothing to do yet.
    Idle,
    /// Send a ping now.
    Ping,
    /// Nothing arrived in time: the link is dead.
    Dead,
}

/// Send instants kept for timing `pong`s: the latest this many pings. A `pong` answering an
/// older one (four pings unanswered: a link the deadline is about to call dead) is not timed.
const PINGS_TIMED: usize = 4;

/// The heartbeat of one live connection. It exists only inside the connected state.
///
/// Verbs: [`handle_activity`](Self::handle_activity) for any inbound frame,
/// [`handle_pong`](Self::handle_pong), [`handle_ping_sent`](Self::handle_ping_sent) for a ping
/// the heartbeat did not ask for, [`handle_timeout`](Self::handle_timeout),
/// [`probe`](Self::probe) after a sleep, [`set_paused`](Self::set_paused) for backpressure,
/// [`poll_timeout`](Self::poll_timeout).
///
/// Round trips: the server answers every `ping` with one `pong`, in order (the subscription
/// table relies on the same, D47), so each `pong` is timed against the ping it answers, the
/// heartbeat's own or another (the app's `ping`, a fence), never against the latest one.
#[derive(Clone, Debug)]
pub(crate) struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    next_ping: Instant,
    deadline: Option<Instant>,
    /// Pings sent on this link so far; the next `pong` answers ping number `answered`.
    sent: u64,
    answered: u64,
    /// When the latest pings left, by number (slot `number % PINGS_TIMED`).
    sent_at: [Option<Instant>; PINGS_TIMED],
    /// The driver stopped reading on purpose (the app is behind): silence proves nothing.
    paused: bool,
}

impl Heartbeat {
    /// A heartbeat whose first ping is due one interval after `now`.
    pub(crate) fn new(now: Instant, config: &HeartbeatConfig) -> Self {
        Self {
            interval: config.interval,
            timeout: config.timeout,
            next_ping: now + config.interval,
            deadline: None,
            sent: 0,
            answered: 0,
            sent_at: [None; PINGS_TIMED],
            paused: false,
        }
    }

    /// The driver stopped (`true`) or resumed (`false`) reading the socket for backpressure.
    /// While paused a missed deadline is not a dead link (the answer is waiting unread); on
    /// resume a pending ping gets a fresh deadline.
    pub(crate) fn set_paused(&mut self, now: Instant, paused: bool) {
        if self.paused
            && !paused
            && let Some(d) = self.deadline.as_mut()
        {
            *d = (*d).max(now + self.timeout);
        }
        self.paused = paused;
    }

    /// Something arrived: the link is alive.
    pub(crate) fn handle_activity(&mut self) {
        self.deadline = None;
    }

    /// A `pong` arrived: the link is alive; returns the round trip of the ping it answers
    /// (`None` for a `pong` that answers no ping, or one sent too long ago to be timed).
    pub(crate) fn handle_pong(&mut self, now: Instant) -> Option<Duration> {
        self.deadline = None;
        if self.answered >= self.sent {
            return None;
        }
        let number = self.answered;
        self.answered += 1;
        // Its slot was taken by a later ping when `PINGS_TIMED` or more followed it.
        if self.sent - number > PINGS_TIMED as u64 {
            return None;
        }
        self.sent_at[slot(number)].map(|at| now.saturating_duration_since(at))
    }

    /// A ping the heartbeat did not ask for went out on this link (the app's `ping`, a
    /// fence before a subscribe): its `pong` is timed too, and the heartbeat's own pings
    /// keep their place in line. It sets no dead-link deadline and moves no timer.
    pub(crate) fn handle_ping_sent(&mut self, now: Instant) {
        self.record(now);
    }

    /// Fires due timers. A returned `Ping` must be sent by the caller.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Beat {
        if self.deadline.is_some_and(|d| now >= d) {
            if self.paused {
                self.deadline = Some(now + self.timeout);
            } else {
                self.deadline = None;
                return Beat::Dead;
            }
        }
        if now >= self.next_ping {
            self.next_ping = now + self.interval;
            self.sent(now, self.timeout);
            return Beat::Ping;
        }
        Beat::Idle
    }

    /// The machine woke from sleep: ping now, with a short deadline, whatever was pending.
    pub(crate) fn probe(&mut self, now: Instant, timeout: Duration) {
        self.next_ping = now + self.interval;
        self.deadline = None;
        self.sent(now, timeout);
    }

    fn sent(&mut self, now: Instant, timeout: Duration) {
        self.record(now);
        // An unanswered earlier ping keeps its (earlier) deadline.
        if self.deadline.is_none() {
            self.deadline = Some(now + timeout);
        }
    }

    fn record(&mut self, now: Instant) {
        self.sent_at[slot(self.sent)] = Some(now);
        self.sent += 1;
    }

    /// The next instant this heartbeat needs [`handle_timeout`](Self::handle_timeout).
    pub(crate) fn poll_timeout(&self) -> Instant {
        match self.deadline {
            Some(d) => d.min(self.next_ping),
            None => self.next_ping,
        }
    }

    /// Whether a ping is waiting for an answer.
    pub(crate) fn is_awaiting(&self) -> bool {
        self.deadline.is_some()
    }
}

/// The `sent_at` slot of ping `number`.
fn slot(number: u64) -> usize {
    // The remainder is below `PINGS_TIMED`: it fits.
    (number % PINGS_TIMED as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    use std::time::Duration;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn pings_every_interval_while_answered() {
        let t = t0();
        let mut hb = Heartbeat::new(t, &HeartbeatConfig::default());
        assert_eq!(hb.poll_timeout(), t + 30 * S);
        assert_eq!(hb.handle_timeout(t + 29 * S), Beat::Idle);
        assert_eq!(hb.handle_timeout(t + 30 * S), Beat::Ping);
        assert_eq!(hb.poll_timeout(), t + 40 * S);
        assert_eq!(hb.handle_pong(t + 31 * S), Some(S));
        assert_eq!(hb.poll_timeout(), t + 60 * S);
        assert_eq!(hb.handle_timeout(t + 60 * S), Beat::Ping);
    }

    #[test]
    fn silence_after_a_ping_is_a_dead_link() {
        let t = t0();
        let mut hb = Heartbeat::new(t, &HeartbeatConfig::default());
        assert_eq!(hb.handle_timeout(t + 30 * S), Beat::Ping);
        assert_eq!(hb.handle_timeout(t + 39 * S), Beat::Idle);
        assert_eq!(hb.handle_timeout(t + 40 * S), Beat::Dead);
    }

    #[test]
    fn any_frame_counts_not_only_pong() {
        let t = t0();
        let mut hb = Heartbeat::new(t, &HeartbeatConfig::default());
        hb.handle_timeout(t + 30 * S);
        hb.handle_activity();
        assert!(!hb.is_awaiting());
        assert_eq!(hb.handle_timeout(t + 40 * S), Beat::Idle);
    }

    #[test]
    fn rtt_is_measured_even_when_other_frames_arrive_first() {
        let t = t0();
        let mut hb = Heartbeat::new(t, &HeartbeatConfig::default());
        hb.handle_timeout(t + 30 * S);
        hb.handle_activity();
        assert_eq!(hb.handle_pong(t + 30 * S + S / 2), Some(S / 2));
        assert_eq!(hb.handle_pong(t + 32 * S), None, "one answer per ping");
    }

    #[test]
    fn each_pong_is_timed_against_the_ping_it_answers() {
        let t = t0();
        let mut hb = Heartbeat::new(t, &HeartbeatConfig::default());
        // The app pings 100 ms before the heartbeat does; the server answers both, in order,
        // 150 ms after each.
        let app = t + 30 * S - S / 10;
        hb.handle_ping_sent(app);
        assert_eq!(hb.handle_timeout(t + 30 * S), Beat::Ping);
        let app_rtt = Duration::from_millis(150);
        assert_eq!(
            hb.handle_pong(app + app_rtt),
            Some(app_rtt),
            "the app's ping"
        );
        assert_eq!(
            hb.handle_pong(t + 30 * S + app_rtt),
            Some(app_rtt),
            "the heartbeat's own"
        );
        assert_eq!(
            hb.handle_pong(t + 31 * S),
            None,
            "a pong that answers nothing"
        );
        // An app ping arms no dead-link deadline.
        hb.handle_ping_sent(t + 40 * S);
        assert!(!hb.is_awaiting());
        assert_eq!(hb.handle_pong(t + 40 * S + S / 5), Some(S / 5));
    }

    #[test]
    fn pings_unanswered_during_backpressure_are_each_timed_once_answered() {
        let t = t0();
        let mut hb = Heartbeat::new(t, &HeartbeatConfig::default());
        hb.set_paused(t, true);
        assert_eq!(hb.handle_timeout(t + 30 * S), Beat::Ping);
        assert_eq!(hb.handle_timeout(t + 60 * S), Beat::Ping);
        hb.set_paused(t + 61 * S, false);
        // Both answers were waiting unread: the first answers the first ping.
        assert_eq!(hb.handle_pong(t + 61 * S), Some(31 * S));
        assert_eq!(hb.handle_pong(t + 61 * S), Some(S));
    }

    #[test]
    fn a_pong_for_a_ping_too_far_back_is_not_timed_and_the_rest_stay_in_line() {
        let t = t0();
        let mut hb = Heartbeat::new(t, &HeartbeatConfig::default());
        for k in 0..=PINGS_TIMED as u32 {
            hb.handle_ping_sent(t + k * S);
        }
        assert_eq!(
            hb.handle_pong(t + 10 * S),
            None,
            "its send instant was overwritten"
        );
        assert_eq!(hb.handle_pong(t + 10 * S), Some(9 * S), "the second ping");
    }

    #[test]
    fn silence_while_the_driver_is_not_reading_is_not_a_dead_link() {
        let t = t0();
        let mut hb = Heartbeat::new(t, &HeartbeatConfig::default());
        hb.set_paused(t, true);
        assert_eq!(hb.handle_timeout(t + 30 * S), Beat::Ping);
        assert_ne!(hb.handle_timeout(t + 40 * S), Beat::Dead);
        assert_ne!(hb.handle_timeout(t + 200 * S), Beat::Dead);
        hb.set_paused(t + 200 * S, false);
        assert_eq!(
            hb.poll_timeout(),
            t + 210 * S,
            "a fresh window after resuming"
        );
        assert_eq!(hb.handle_timeout(t + 210 * S), Beat::Dead);
    }

    #[test]
    fn probe_replaces_old_deadlines_with_a_short_one() {
        let t = t0();
        let mut hb = Heartbeat::new(t, &HeartbeatConfig::default());
        hb.handle_timeout(t + 30 * S);
        let woke = t + 3600 * S;
        hb.probe(woke, 5 * S);
        assert_eq!(hb.poll_timeout(), woke + 5 * S);
        assert_eq!(hb.handle_timeout(woke + 5 * S), Beat::Dead);
    }

    #[test]
    fn every_fired_timer_moves_the_deadline() {
        let t = t0();
        let mut hb = Heartbeat::new(t, &HeartbeatConfig::default());
        let mut now = t;
        for _ in 0..10 {
            let due = hb.poll_timeout();
            now = now.max(due);
            let beat = hb.handle_timeout(now);
            assert!(hb.poll_timeout() > now || beat == Beat::Dead);
            if beat == Beat::Dead {
                break;
            }
        }
    }

    /// The test's start: the one clock read (`crate::test_clock`).
    fn t0() -> Instant {
        crate::test_clock::start()
    }
}
