//! The clock that stamps messages, as live messages reveal it (DESIGN 3.5, D68).
//!
//! A server stamps `created_at` with its database's clock (Kaiku: Postgres `DEFAULT NOW()`,
//! the start of the inserting transaction, on the database host). That clock need not agree
//! with the HTTP `Date` header, which the app server or a proxy writes: a catch-up that
//! compares the two loses messages when they disagree. So the core reads the message clock
//! from messages alone: a live `message_new` stamped `c` that arrives at local instant `r`
//! was stamped before it arrived, so at any local instant `x` the message clock read at
//! least `c + (x - r)`. No `Date` is involved, and no offset between clocks is assumed.

use std::collections::VecDeque;
use std::time::Instant;

use crate::timestamp::Timestamp;

/// Readings kept: enough to place an instant of the last minutes between two of them.
const KEPT: usize = 32;

/// A lower bound of the message clock at any local instant, from live messages.
///
/// The reading nearest before the instant and the first one after it are both asked, and
/// the lower answer is kept: a database clock stepped back (NTP fixing a host) makes a
/// reading from before the step claim too much for an instant after it, and a clock stepped
/// ahead makes a reading from after the step claim too much for an instant before it. A
/// message broadcast late only makes its own reading looser (a bound further back), which
/// costs a catch-up a few more messages to compare, never a loss.
#[derive(Clone, Debug, Default)]
pub(crate) struct MessageClock {
    /// (received, stamped), oldest first.
    samples: VecDeque<(Instant, Timestamp)>,
}

impl MessageClock {
    /// A live message stamped `created_at` arrived at `now`.
    pub(crate) fn handle_message(&mut self, now: Instant, created_at: Timestamp) {
        // One reading per instant (a batch of 1,024 events arrives at one): the newest stamp
        // is the tightest of them, and the older readings stay to place earlier instants.
        if let Some(last) = self.samples.back_mut()
            && last.0 == now
        {
            last.1 = last.1.max(created_at);
            return;
        }
        if self.samples.len() == KEPT {
            self.samples.pop_front();
        }
        self.samples.push_back((now, created_at));
    }

    /// The message clock at local instant `at` read at least this; `None` before any live
    /// message.
    pub(crate) fn lower_bound(&self, at: Instant) -> Option<Timestamp> {
        let before = self.samples.iter().rev().find(|(r, _)| *r <= at);
        let after = self.samples.iter().find(|(r, _)| *r > at);
        let latest = self.samples.back();
        [before, after, latest]
            .into_iter()
            .flatten()
            .map(|&(received, stamp)| extrapolate(received, stamp, at))
            .min()
    }
}

/// A reading `stamp` taken at `received`, moved on (or back) to `at`.
fn extrapolate(received: Instant, stamp: Timestamp, at: Instant) -> Timestamp {
    let nanos = if at >= received {
        i64::try_from(at.duration_since(received).as_nanos()).unwrap_or(i64::MAX)
    } else {
        -i64::try_from(received.duration_since(at).as_nanos()).unwrap_or(i64::MAX)
    };
    Timestamp::from_unix_nanos(stamp.unix_nanos().saturating_add(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(sec: i64) -> Timestamp {
        Timestamp::from_unix_nanos(sec * 1_000_000_000)
    }

    #[test]
    fn unknown_until_a_live_message() {
        let c = MessageClock::default();
        assert_eq!(c.lower_bound(crate::test_clock::start()), None);
    }

    #[test]
    fn the_bound_moves_with_local_time_both_ways() {
        let t = crate::test_clock::start() + Duration::from_secs(100);
        let mut c = MessageClock::default();
        c.handle_message(t, at(1_000));
        assert_eq!(c.lower_bound(t + Duration::from_secs(5)), Some(at(1_005)));
        assert_eq!(c.lower_bound(t - Duration::from_secs(5)), Some(at(995)));
    }

    #[test]
    fn a_clock_stepped_back_is_followed_at_once() {
        let t = crate::test_clock::start() + Duration::from_secs(100);
        let mut c = MessageClock::default();
        c.handle_message(t, at(5_000));
        // The database host's clock was an hour ahead, then fixed.
        c.handle_message(t + Duration::from_secs(1), at(1_401));
        assert_eq!(c.lower_bound(t + Duration::from_secs(2)), Some(at(1_402)));
    }

    #[test]
    fn a_clock_stepped_ahead_does_not_move_an_earlier_instant() {
        let t = crate::test_clock::start() + Duration::from_secs(100);
        let mut c = MessageClock::default();
        c.handle_message(t, at(1_000));
        // Stepped a minute ahead 10 s later: read at t + 20 s, it says 1_080.
        c.handle_message(t + Duration::from_secs(20), at(1_080));
        // At t + 5 s the clock read 1_005, not 1_065.
        assert_eq!(c.lower_bound(t + Duration::from_secs(5)), Some(at(1_005)));
    }
}
