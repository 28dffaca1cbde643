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
pub enum Beat {
    /// Nothing to do yet.
    Idle,
    /// Send a ping now.
    Ping,
    /// Nothing arrived in time: the link is dead.
    Dead,
}

/// The heartbeat of one live connection. It exists only inside the connected state.
///
/// Verbs: [`handle_activity`](Self::handle_activity) for any inbound frame,
/// [`handle_pong`](Self::handle_pong), [`handle_timeout`](Self::handle_timeout),
/// [`probe`](Self::probe) after a sleep, [`set_paused`](Self::set_paused) for backpressure,
/// [`poll_timeout`](Self::poll_timeout).
#[derive(Clone, Debug)]
pub struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    next_ping: Instant,
    deadline: Option<Instant>,
    ping_sent_at: Option<Instant>,
    /// The driver stopped reading on purpose (the app is behind): silence proves nothing.
    paused: bool,
}

impl Heartbeat {
    /// A heartbeat whose first ping is due one interval after `now`.
    pub fn new(now: Instant, config: &HeartbeatConfig) -> Self {
        Self {
            interval: config.interval,
            timeout: config.timeout,
            next_ping: now + config.interval,
            deadline: None,
            ping_sent_at: None,
            paused: false,
        }
    }

    /// The driver stopped (`true`) or resumed (`false`) reading the socket for backpressure.
    /// While paused a missed deadline is not a dead link (the answer is waiting unread); on
    /// resume a pending ping gets a fresh deadline.
    pub fn set_paused(&mut self, now: Instant, paused: bool) {
        if self.paused
            && !paused
            && let Some(d) = self.deadline.as_mut()
        {
            *d = (*d).max(now + self.timeout);
        }
        self.paused = paused;
    }

    /// Something arrived: the link is alive.
    pub fn handle_activity(&mut self) {
        self.deadline = None;
    }

    /// A `pong` arrived: the link is alive; returns the round trip of the last ping.
    pub fn handle_pong(&mut self, now: Instant) -> Option<Duration> {
        self.deadline = None;
        self.ping_sent_at
            .take()
            .map(|sent| now.saturating_duration_since(sent))
    }

    /// Fires due timers. A returned `Ping` must be sent by the caller.
    pub fn handle_timeout(&mut self, now: Instant) -> Beat {
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
    pub fn probe(&mut self, now: Instant, timeout: Duration) {
        self.next_ping = now + self.interval;
        self.deadline = None;
        self.sent(now, timeout);
    }

    fn sent(&mut self, now: Instant, timeout: Duration) {
        self.ping_sent_at = Some(now);
        // An unanswered earlier ping keeps its (earlier) deadline.
        if self.deadline.is_none() {
            self.deadline = Some(now + timeout);
        }
    }

    /// The next instant this heartbeat needs [`handle_timeout`](Self::handle_timeout).
    pub fn poll_timeout(&self) -> Instant {
        match self.deadline {
            Some(d) => d.min(self.next_ping),
            None => self.next_ping,
        }
    }

    /// Whether a ping is waiting for an answer.
    pub fn is_awaiting(&self) -> bool {
        self.deadline.is_some()
    }
}
