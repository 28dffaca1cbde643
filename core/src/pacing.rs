//! Pacing of REST reads, and the server's clock as the client can know it (DESIGN 3.5).
//!
//! A Kaiku server limits REST requests per user and says so in every answer
//! (`x-ratelimit-remaining`, `x-ratelimit-reset`). Message history is in its *write*
//! category: 30 requests per 60 s, shared with posting, editing and reacting. [`Pacer`] owns
//! every read the core makes: at most `max_in_flight` at once, never into the
//! [`reserve`](PacingConfig::reserve) the app keeps for its own writes, and after a 429 or a
//! 503 on *any* request, the app's included, no read until the wait has passed (longer at
//! each refusal in a row). The first read of a window that follows a spent one goes alone: a
//! server whose announced reset is early refuses one read, not four. [`ServerClock`] turns
//! the HTTP `Date` header into a lower bound of the server's time at any local instant: the
//! reset instants of the budget are computed from it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::timestamp::Timestamp;

/// Settings of the read pacing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PacingConfig {
    /// Reads in flight at once. Default 4.
    pub max_in_flight: usize,
    /// Requests per window when the server sends no budget headers: a mirror of the server's
    /// default for history (Kaiku: 30 per 60 s, the *write* budget that posting shares).
    /// Default 30.
    pub budget: u32,
    /// The window of [`budget`](Self::budget). Default 60 s.
    pub window: Duration,
    /// Requests of each window the catch-up leaves to the app: its reads stop while no more
    /// than this many remain, so a post right after a reconnect is never refused because a
    /// catch-up spent the budget. At most a quarter of the window's limit, so a server with
    /// a small budget still leaves the catch-up most of it. Default 5 (of Kaiku's 30).
    pub reserve: u32,
    /// A read not answered after this long no longer counts as in flight (the drivers' REST
    /// client gives up after 30 s). Default 35 s.
    pub request_timeout: Duration,
    /// How far before a subscription, as the message clock places it, a walk of a channel
    /// with no message anchor reads (on top of `CatchUpConfig::late_margin`): the travel of
    /// the `subscribe` and of the message that read the clock. Default 2 s.
    pub clock_margin: Duration,
}

impl Default for PacingConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 4,
            budget: 30,
            window: Duration::from_secs(60),
            reserve: 5,
            request_timeout: Duration::from_secs(35),
            clock_margin: Duration::from_secs(2),
        }
    }
}

/// How much later than announced a server's window is taken to end. Kaiku announces
/// `floor(now) + TTL`, the key's time to live rounded to a whole second: up to 1.5 s early.
pub(crate) const RESET_SLACK: Duration = Duration::from_secs(2);

/// How far apart two answers of one window can name its reset: Kaiku computes it as
/// `floor(now) + round(TTL)`, which moves by a second between answers of one window. Resets
/// this close name the same window.
const RESET_JITTER: Duration = Duration::from_secs(1);

/// Whether reset `a` names a later window than reset `b`: more than [`RESET_JITTER`] after it.
fn later_window(a: Timestamp, b: Timestamp) -> bool {
    let jitter = i64::try_from(RESET_JITTER.as_nanos()).unwrap_or(i64::MAX);
    a.unix_nanos() > b.unix_nanos().saturating_add(jitter)
}

/// The first wait of a refusal that names none (a 429 or 503 without `Retry-After`).
const DEFAULT_REFUSAL_WAIT: Duration = Duration::from_secs(5);

/// The longest wait refusals in a row grow to on their own (a server's `Retry-After` can ask
/// for more).
const MAX_REFUSAL_BACKOFF: Duration = Duration::from_secs(60);

/// What an answer to a REST read said about the server's budget and clock.
///
/// Drivers build it with [`ReadHeaders::from_headers`] from the HTTP answer and report it
/// with [`Connection::handle_history_headers`](crate::Connection::handle_history_headers)
/// for the core's own history reads, and with
/// [`Connection::handle_app_request`](crate::Connection::handle_app_request) for the app's: the
/// server counts both against one budget.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadHeaders {
    /// The HTTP status (0 when there was no answer).
    pub status: u16,
    /// `Date`: the server's clock when it answered (whole seconds).
    pub date: Option<Timestamp>,
    /// `x-ratelimit-limit`.
    pub limit: Option<u32>,
    /// `x-ratelimit-remaining`.
    pub remaining: Option<u32>,
    /// `x-ratelimit-reset` as epoch seconds: when the budget's window ends.
    pub reset: Option<Timestamp>,
    /// `x-ratelimit-reset` as seconds until the window ends (the IETF draft's
    /// `RateLimit-Reset` form), counted from the answer's receipt. A value below
    /// [`DELTA_RESET_BELOW`](Self::DELTA_RESET_BELOW) is read this way, never as an epoch:
    /// no answer written today ends its window in 2001.
    pub reset_in: Option<Duration>,
    /// `Retry-After`, in seconds, or as an HTTP date counted from the answer's own `Date`
    /// (wherever it stands in the header list; without `Date`, the date form is left out).
    pub retry_after: Option<Duration>,
}

impl ReadHeaders {
    /// An `x-ratelimit-reset` below this (10^9 s: September 2001) is seconds until the
    /// window ends, not an epoch second.
    pub const DELTA_RESET_BELOW: u64 = 1_000_000_000;

    /// Reads the headers that matter from an HTTP answer (names are matched without case;
    /// values that do not parse are ignored).
    pub fn from_headers<'a>(
        status: u16,
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Self {
        let mut h = Self {
            status,
            ..Self::default()
        };
        // The HTTP-date form of `Retry-After` counts from `Date`, which may come after it
        // (hyper writes `Date` last).
        let mut retry_at = None;
        for (name, value) in headers {
            let Ok(value) = std::str::from_utf8(value) else {
                continue;
            };
            let value = value.trim();
            let number = || value.parse::<u64>().ok();
            if name.eq_ignore_ascii_case("date") {
                h.date = parse_http_date(value);
            } else if name.eq_ignore_ascii_case("x-ratelimit-limit") {
                h.limit = number().map(|n| u32::try_from(n).unwrap_or(u32::MAX));
            } else if name.eq_ignore_ascii_case("x-ratelimit-remaining") {
                h.remaining = number().map(|n| u32::try_from(n).unwrap_or(u32::MAX));
            } else if name.eq_ignore_ascii_case("x-ratelimit-reset") {
                (h.reset, h.reset_in) = match number() {
                    Some(n) if n < Self::DELTA_RESET_BELOW => {
                        (None, Some(crate::close::clamp_wait(Duration::from_secs(n))))
                    }
                    n => (n.and_then(epoch_seconds), None),
                };
            } else if name.eq_ignore_ascii_case("retry-after") {
                h.retry_after = number().map(Duration::from_secs);
                retry_at = h
                    .retry_after
                    .is_none()
                    .then(|| parse_http_date(value))
                    .flatten();
            }
        }
        if let (Some(at), Some(date)) = (retry_at, h.date) {
            h.retry_after = Some(Duration::from_nanos(
                u64::try_from(at.unix_nanos().saturating_sub(date.unix_nanos())).unwrap_or(0),
            ));
        }
        h.retry_after = h.retry_after.map(crate::close::clamp_wait);
        h
    }

    /// The answer asks every request to wait: a 429, or a 503 with or without `Retry-After`
    /// (Kaiku answers 503 with none when its rate limiter's store is down).
    pub fn is_rate_limited(&self) -> bool {
        matches!(self.status, 429 | 503)
    }
}

fn epoch_seconds(secs: u64) -> Option<Timestamp> {
    let nanos = i64::try_from(secs).ok()?.checked_mul(1_000_000_000)?;
    Some(Timestamp::from_unix_nanos(nanos))
}

/// Parses an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, and the two obsolete forms).
pub fn parse_http_date(value: &str) -> Option<Timestamp> {
    let t = httpdate::parse_http_date(value).ok()?;
    let since = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    epoch_seconds(since.as_secs())
}

/// The server's `Date` clock, from the latest `Date` header: it turns the budget's reset
/// (epoch seconds) into a local instant. It never places a message in time: `created_at`
/// comes from another clock (D68, `message_clock.rs`).
///
/// An answer stamped `D` (whole seconds, rounded down) and received at local instant `r` was
/// written at a server time `>= D`, no later than `r`; so at any local instant `x` the
/// server's clock read at least `D + (x - r)`. The latest sample is kept: drift between the
/// two clocks grows with a sample's age.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ServerClock {
    sample: Option<(Instant, Timestamp)>,
}

impl ServerClock {
    /// An answer received at `now` carried `Date: date`.
    pub(crate) fn handle_date(&mut self, now: Instant, date: Timestamp) {
        self.sample = Some((now, date));
    }

    /// A local instant by which the server's clock has surely reached `server_time`, seen
    /// from an answer received at `now` (stamped `date` when it had a `Date`). `None` when no
    /// clock is known.
    fn instant_of(
        &self,
        now: Instant,
        date: Option<Timestamp>,
        server_time: Timestamp,
    ) -> Option<Instant> {
        let (received, date) = match date {
            Some(d) => (now, d),
            None => self.sample?,
        };
        let ahead = server_time.unix_nanos().saturating_sub(date.unix_nanos());
        let ahead = Duration::from_nanos(u64::try_from(ahead).unwrap_or(0));
        Some(received + crate::close::clamp_wait(ahead))
    }
}

/// The read budget of the current window, as far as the client can tell.
#[derive(Clone, Copy, Debug)]
struct Window {
    /// Reads left.
    remaining: u32,
    /// When the window ends; `None`: it starts with the next read.
    resets_at: Option<Instant>,
    /// `resets_at` is the client's guess (the mirror's window, or a refill before the
    /// server's next answer), which the server's own reset replaces.
    reset_guessed: bool,
    /// The budget of a fresh window: the server's `x-ratelimit-limit` once seen.
    limit: u32,
    /// Budget headers were seen: the server's window, not the local mirror.
    from_server: bool,
    /// The lowest `x-ratelimit-remaining` the server gave in this window: exact once every
    /// read has been answered (answers can arrive out of order; the lowest is the latest).
    server_low: Option<u32>,
    /// Reads of this window whose answer never came (a network error, a timeout): the server
    /// may well have counted them, after the answers seen so far.
    lost: u32,
    /// Reads sent after the server's announced reset, in the slack before the refill: they
    /// may count in the next window, and are taken from it.
    past_reset: u32,
    /// The raw `x-ratelimit-reset` of the window these figures belong to; `None` once it
    /// has ended here (or before any).
    server_reset: Option<Timestamp>,
    /// The latest raw `x-ratelimit-reset` seen. A window is named by its reset, give or take
    /// [`RESET_JITTER`]: an answer naming an earlier one, or the one that has ended, is stale
    /// and says nothing about the budget now. Raw values, because two answers of one window
    /// can estimate its end a second apart (`Date` is whole seconds).
    latest_reset: Option<Timestamp>,
}

/// Why reads are held back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// `max_in_flight` reads are out; the next answer frees a slot.
    InFlight,
    /// The server asked for a wait, or the budget is spent: until this instant.
    Until(Instant),
}

/// The first read of a window that follows a spent one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    /// The window is proven open (or was never spent).
    Off,
    /// The next read goes alone.
    Ready,
    /// Read `id` went alone; the others wait for its answer.
    Sent(u64),
}

/// Paces every REST read the core makes. Verbs: [`try_send`](Self::try_send) before a read;
/// [`handle_answer`](Self::handle_answer), [`handle_lost`](Self::handle_lost),
/// [`handle_refused`](Self::handle_refused) or [`handle_success`](Self::handle_success) as it
/// ends; [`handle_headers`](Self::handle_headers) for any answer's headers (the app's too);
/// [`pause`](Self::pause) when a refusal came without headers.
#[derive(Clone, Debug)]
pub(crate) struct Pacer {
    config: PacingConfig,
    /// Reads in flight, by request id, with the instant they stop counting.
    in_flight: BTreeMap<u64, Instant>,
    /// No read before this (a 429 or a 503).
    paused_until: Option<Instant>,
    /// Reads in flight whose refusal was applied from their headers: their answer must not
    /// count it again.
    refused: BTreeSet<u64>,
    /// Refusals (429, 503) since the core's last read that succeeded: each waits twice as
    /// long as the one before, whatever the server's `Retry-After` says (it can say 0).
    refusals: u32,
    /// The window refilled after it was spent: one read goes alone until an answer proves the
    /// new window open (a reset announced early refuses one read, not `max_in_flight`).
    probe: Probe,
    window: Window,
    /// Reads sent, and answers that asked to wait.
    reads: u64,
    rate_limited: u64,
}

impl Pacer {
    /// Nothing in flight, a full budget.
    pub(crate) fn new(config: PacingConfig) -> Self {
        let budget = config.budget.max(1);
        Self {
            window: Window {
                remaining: budget,
                resets_at: None,
                reset_guessed: false,
                limit: budget,
                from_server: false,
                server_low: None,
                lost: 0,
                past_reset: 0,
                server_reset: None,
                latest_reset: None,
            },
            config,
            in_flight: BTreeMap::new(),
            paused_until: None,
            refused: BTreeSet::new(),
            refusals: 0,
            probe: Probe::Off,
            reads: 0,
            rate_limited: 0,
        }
    }

    fn expire(&mut self, now: Instant) {
        let before = self.in_flight.len();
        self.in_flight.retain(|_, until| *until > now);
        let expired = u32::try_from(before - self.in_flight.len()).unwrap_or(u32::MAX);
        if let Probe::Sent(id) = self.probe
            && !self.in_flight.contains_key(&id)
        {
            self.probe = Probe::Ready;
        }
        self.window.lost = self.window.lost.saturating_add(expired);
        if self.paused_until.is_some_and(|t| t <= now) {
            self.paused_until = None;
        }
        if let Some(at) = self.window.resets_at
            && at <= now
        {
            if self.is_spent() {
                self.probe = Probe::Ready;
            }
            // Reads sent after the server's announced reset counted in its next window.
            self.window.remaining = self
                .window
                .limit
                .saturating_sub(std::mem::take(&mut self.window.past_reset));
            self.window.resets_at = None;
            self.window.reset_guessed = false;
            self.window.server_low = None;
            self.window.server_reset = None;
            self.window.lost = 0;
        }
    }

    /// What holds reads back at `now`, if anything.
    pub(crate) fn blocked(&mut self, now: Instant) -> Option<Blocked> {
        self.expire(now);
        if let Some(t) = self.paused_until {
            return Some(Blocked::Until(t));
        }
        if self.is_spent() {
            // Spent only with a window in force (a refill clears it).
            let until = match self.window.resets_at {
                Some(t) => t,
                None => {
                    self.window.reset_guessed = true;
                    now + self.mirror_window()
                }
            };
            self.window.resets_at = Some(until);
            return Some(Blocked::Until(until));
        }
        if self.slots_full() {
            return Some(Blocked::InFlight);
        }
        None
    }

    /// No read may go until one in flight is answered: `max_in_flight` are out, or the read
    /// probing a refilled window is.
    fn slots_full(&self) -> bool {
        matches!(self.probe, Probe::Sent(_))
            || self.in_flight.len() >= self.config.max_in_flight.max(1)
    }

    /// The requests of a window kept for the app: the configured reserve, at most a quarter
    /// of the window's limit.
    fn reserve(&self) -> u32 {
        self.config.reserve.min(self.window.limit / 4)
    }

    /// The catch-up may not read again in this window: what is left is the app's.
    fn is_spent(&self) -> bool {
        self.window.remaining <= self.reserve()
    }

    /// Takes a slot and a unit of budget for read `id`, if pacing allows one now.
    pub(crate) fn try_send(&mut self, now: Instant, id: u64) -> bool {
        if self.blocked(now).is_some() {
            return false;
        }
        if self.window.resets_at.is_none() {
            // The local mirror's window starts with its first read; a server's headers
            // replace it with the real one.
            self.window.resets_at = Some(now + self.mirror_window());
            self.window.reset_guessed = true;
        }
        self.window.remaining -= 1;
        if self.window.from_server
            && !self.window.reset_guessed
            && self
                .window
                .resets_at
                .is_some_and(|end| now + RESET_SLACK >= end)
        {
            // Past the reset the server announced, inside the slack: the server may count
            // this read in its next window, and the refill will too.
            self.window.past_reset = self.window.past_reset.saturating_add(1);
        }
        if self.probe == Probe::Ready {
            self.probe = Probe::Sent(id);
        }
        self.in_flight.insert(id, now + self.config.request_timeout);
        self.reads += 1;
        true
    }

    /// Read `id` was answered (or failed): its slot is free. Unknown ids are ignored.
    pub(crate) fn handle_answer(&mut self, id: u64) {
        self.in_flight.remove(&id);
        self.refused.remove(&id);
        self.unprobe(id);
    }

    /// Read `id` is no longer in flight: if it was the probe and nothing proved the window
    /// open, the next read probes again.
    fn unprobe(&mut self, id: u64) {
        if self.probe == Probe::Sent(id) {
            self.probe = Probe::Ready;
        }
    }

    /// Read `id` was refused with a 429 or 503 (`spent`: a 429): every read waits, unless its
    /// headers already said so.
    pub(crate) fn handle_refused(
        &mut self,
        now: Instant,
        id: u64,
        retry_after: Option<Duration>,
        spent: bool,
    ) {
        if !self.refused.remove(&id) {
            self.pause(now, retry_after, spent);
        }
    }

    /// A read was answered with a success: the server serves again, so a later refusal
    /// starts its backoff over, and a refilled window is proven open.
    pub(crate) fn handle_success(&mut self) {
        self.refusals = 0;
        self.probe = Probe::Off;
    }

    /// Read `id` got no answer (a network error, a timeout): its slot is free, and the server
    /// may have counted it all the same, so it stays spent until the window ends, whatever a
    /// late or repeated answer of the window says.
    pub(crate) fn handle_lost(&mut self, id: u64) {
        self.refused.remove(&id);
        self.unprobe(id);
        if self.in_flight.remove(&id).is_some() {
            self.window.lost = self.window.lost.saturating_add(1);
        }
    }

    /// The headers of an answer received at `now`: to the core's own read `request`, or to
    /// one of the app's requests (`None`).
    pub(crate) fn handle_headers(
        &mut self,
        now: Instant,
        headers: &ReadHeaders,
        clock: &ServerClock,
        request: Option<u64>,
    ) {
        self.expire(now);
        let own = request.filter(|id| self.in_flight.contains_key(id));
        // Reads still out may or may not have been counted by the server yet: assume they
        // were not, which errs towards fewer reads.
        let others = u32::try_from(
            self.in_flight
                .len()
                .saturating_sub(usize::from(own.is_some())),
        )
        .unwrap_or(u32::MAX);
        if headers.is_rate_limited() {
            if let Some(id) = own {
                self.refused.insert(id);
            }
            self.rate_limited += 1;
            let wait = headers.retry_after.or(headers.reset_in).or_else(|| {
                let reset = clock.instant_of(now, headers.date, headers.reset?)?;
                Some(reset.saturating_duration_since(now))
            });
            self.pause(now, wait, headers.status == 429);
            return;
        }
        // Only the core's own read proves the server serves again: an app's answer may be to
        // a request sent before the refusal. Without budget headers it proves the window too.
        let served = own.is_some() && (200..300).contains(&headers.status);
        if served && headers.remaining.is_none() {
            self.handle_success();
        }
        if let Some(limit) = headers.limit.filter(|l| *l > 0) {
            self.window.limit = limit;
        }
        let Some(remaining) = headers.remaining else {
            if !self.window.from_server && own.is_none() {
                // The app's read against a server that sends no headers: it spent budget.
                if self.window.resets_at.is_none() {
                    self.window.resets_at = Some(now + self.mirror_window());
                    self.window.reset_guessed = true;
                }
                self.window.remaining = self.window.remaining.saturating_sub(1);
            }
            return;
        };
        if let (Some(raw), Some(latest)) = (headers.reset, self.window.latest_reset)
            && (later_window(latest, raw)
                || (!later_window(raw, latest) && self.window.server_reset.is_none()))
        {
            // An answer of a window that has ended here: its figures are not today's. But the
            // core's own read sent after that end, counted in it with nothing left, shows the
            // end was placed early (a reset announced early, a `Date` long stale): the window
            // is not open yet. Reads wait a second and probe again.
            if served && remaining == 0 && !later_window(latest, raw) {
                let wait = self.refuse();
                self.window.remaining = 0;
                self.window.resets_at = Some(now + wait);
                self.window.reset_guessed = true;
            }
            return;
        }
        if served {
            self.handle_success();
        }
        // A reset counted in seconds from the answer ends at most that long after it was
        // received (it was written a little earlier): an estimate, which names no window.
        // Either form can be early by a rounding: the window is taken to end a slack later.
        let reset = match headers.reset {
            Some(r) => clock.instant_of(now, headers.date, r),
            None => headers.reset_in.map(|d| now + d),
        }
        .map(|at| at + RESET_SLACK);
        // The first headers replace the local mirror's guess. After that, a window is newer
        // when it names a later reset; without a raw reset, when its estimated end is later
        // (`Date` and the reset are whole seconds: the same window can look a second apart).
        let first = !std::mem::replace(&mut self.window.from_server, true);
        let newer_window = first
            || match (headers.reset, self.window.server_reset) {
                (Some(raw), Some(current)) => later_window(raw, current),
                (Some(_), None) => true,
                (None, _) => match (reset, self.window.resets_at) {
                    (_, None) => true,
                    (Some(new), Some(old)) => {
                        self.window.reset_guessed || new > old + Duration::from_secs(1)
                    }
                    (None, Some(_)) => false,
                },
            };
        if let Some(raw) = headers.reset {
            self.window.server_reset = if newer_window {
                Some(raw)
            } else {
                self.window.server_reset.max(Some(raw))
            };
            self.window.latest_reset = self.window.latest_reset.max(Some(raw));
        }
        let low = match self.window.server_low {
            Some(low) if !newer_window => low.min(remaining),
            _ => remaining,
        };
        if newer_window {
            self.window.lost = 0;
            self.window.past_reset = 0;
        }
        self.window.server_low = Some(low);
        self.window.remaining = low.saturating_sub(others.saturating_add(self.window.lost));
        self.window.resets_at = match (reset, self.window.resets_at) {
            (Some(new), Some(old)) if !newer_window => Some(new.max(old)),
            (Some(new), _) => Some(new),
            (None, Some(old)) => Some(old),
            (None, None) => {
                self.window.reset_guessed = true;
                Some(now + self.mirror_window())
            }
        };
        if reset.is_some() {
            self.window.reset_guessed = false;
        }
    }

    /// The local mirror's window, with a second of slack: the server's window starts when
    /// the first read *arrives*, a little after it left, and ends that much later too.
    fn mirror_window(&self) -> Duration {
        self.config.window + Duration::from_secs(1)
    }

    /// One more refusal in a row: the least it waits, 1 s doubled for each refusal before
    /// it, up to a minute.
    fn refuse(&mut self) -> Duration {
        self.refusals = self.refusals.saturating_add(1);
        Duration::from_secs(1)
            .saturating_mul(1 << self.refusals.saturating_sub(1).min(6))
            .min(MAX_REFUSAL_BACKOFF)
    }

    /// Every read waits until `retry_after` has passed (5 s when the server gave none), and
    /// at least a second, doubled at each refusal in a row up to a minute: a server that
    /// says `Retry-After: 0`, or refuses with no wait at all, does not get a storm.
    ///
    /// `spent` (a 429): the server's budget is spent, whatever the client counted, until the
    /// wait ends or the window it announced ends, whichever is later. Otherwise (a 503: an
    /// overloaded server, or a rate limiter that is down) the budget is as it was: the wait is not the
    /// window's, and a short one must not refill a window the server announced spent.
    pub(crate) fn pause(&mut self, now: Instant, retry_after: Option<Duration>, spent: bool) {
        self.expire(now);
        let backoff = self.refuse();
        let wait = crate::close::clamp_wait(retry_after.unwrap_or(DEFAULT_REFUSAL_WAIT));
        let until = now + wait.max(backoff);
        let until = self.paused_until.map_or(until, |t| t.max(until));
        self.paused_until = Some(until);
        if spent {
            let announced = self.window.resets_at.filter(|_| !self.window.reset_guessed);
            self.window.remaining = 0;
            // Answers of this window that the server counted before the refusal say more.
            self.window.server_low = Some(0);
            self.window.resets_at = Some(announced.map_or(until, |t| t.max(until)));
            self.window.reset_guessed = false;
        }
    }

    /// When waiting reads should look again: the end of a pause or of a spent window, or,
    /// with every slot taken, the earliest unanswered read's timeout. May be in the past
    /// until the next [`try_send`](Self::try_send) or [`blocked`](Self::blocked) notices.
    pub(crate) fn wake_at(&self) -> Option<Instant> {
        if let Some(t) = self.paused_until {
            return Some(t);
        }
        if self.is_spent() {
            return self.window.resets_at;
        }
        if self.slots_full() {
            return self.next_expiry();
        }
        None
    }

    /// When the earliest in-flight read stops counting (an unanswered read).
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.in_flight.values().min().copied()
    }

    /// Reads sent so far.
    pub(crate) fn reads(&self) -> u64 {
        self.reads
    }

    /// Answers that asked every read to wait (429 or 503).
    pub(crate) fn rate_limited(&self) -> u64 {
        self.rate_limited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)], status: u16) -> ReadHeaders {
        ReadHeaders::from_headers(status, pairs.iter().map(|(n, v)| (*n, v.as_bytes())))
    }

    fn pacer(max: usize, budget: u32) -> Pacer {
        Pacer::new(PacingConfig {
            max_in_flight: max,
            budget,
            // Most tests look at the window alone; the reserve has its own.
            reserve: 0,
            ..PacingConfig::default()
        })
    }

    #[test]
    fn headers_are_read_without_case_and_garbage_is_ignored() {
        let h = headers(
            &[
                ("Date", "Wed, 25 Nov 2026 17:46:42 GMT"),
                ("X-RateLimit-Limit", "200"),
                ("x-ratelimit-remaining", "nope"),
                ("x-ratelimit-reset", "1795629176"),
                ("Retry-After", "99999999999"),
            ],
            429,
        );
        assert_eq!(h.date, Timestamp::parse("2026-11-25T17:46:42Z"));
        assert_eq!(h.limit, Some(200));
        assert_eq!(h.remaining, None);
        assert_eq!(
            h.reset.map(|t| t.unix_nanos()),
            Some(1_795_629_176_000_000_000)
        );
        assert_eq!(h.retry_after, Some(crate::close::MAX_SERVER_WAIT));
        assert!(h.is_rate_limited());
        assert!(!headers(&[], 500).is_rate_limited());
        assert!(headers(&[], 503).is_rate_limited(), "Kaiku's limiter down");
        assert!(headers(&[("retry-after", "3")], 503).is_rate_limited());
    }

    #[test]
    fn retry_after_as_an_http_date_is_read_whatever_the_header_order() {
        let date = ("date", "Wed, 25 Nov 2026 17:46:42 GMT");
        let retry = ("retry-after", "Wed, 25 Nov 2026 17:47:12 GMT");
        // hyper writes `Date` last; a proxy may put it anywhere.
        for pairs in [[date, retry], [retry, date]] {
            assert_eq!(
                headers(&pairs, 429).retry_after,
                Some(Duration::from_secs(30)),
                "{pairs:?}"
            );
        }
        // A date already past asks for no wait; without `Date` there is nothing to count from.
        let past = ("retry-after", "Wed, 25 Nov 2026 17:46:00 GMT");
        assert_eq!(
            headers(&[past, date], 429).retry_after,
            Some(Duration::ZERO)
        );
        assert_eq!(headers(&[retry], 429).retry_after, None);
    }

    #[test]
    fn a_reset_in_seconds_until_the_window_ends_is_not_taken_for_an_epoch() {
        // The IETF draft's form (`RateLimit-Reset: 30`): far below any epoch second of today.
        let h = headers(&[("x-ratelimit-reset", "30")], 200);
        assert_eq!(h.reset, None);
        assert_eq!(h.reset_in, Some(Duration::from_secs(30)));
        let h = headers(&[("x-ratelimit-reset", "1795629176")], 200);
        assert_eq!(h.reset_in, None);
        assert!(h.reset.is_some());
    }

    #[test]
    fn a_server_counting_down_to_its_reset_is_followed_to_the_end_of_its_window() {
        let t0 = crate::test_clock::start();
        let mut p = pacer(1, 200);
        let clock = ServerClock::default();
        // Three reads a second apart; each answer counts the seconds to the window's end.
        for (k, (remaining, reset)) in [("2", "30"), ("1", "29"), ("0", "28")].iter().enumerate() {
            let at = t0 + Duration::from_secs(k as u64);
            assert!(p.try_send(at, k as u64), "read {k}: budget left");
            let h = headers(
                &[
                    ("date", "Wed, 25 Nov 2026 17:46:42 GMT"),
                    ("x-ratelimit-limit", "3"),
                    ("x-ratelimit-remaining", remaining),
                    ("x-ratelimit-reset", reset),
                ],
                200,
            );
            p.handle_headers(at, &h, &clock, Some(k as u64));
            p.handle_answer(k as u64);
        }
        let at = t0 + Duration::from_secs(2);
        // Not stale, not a window that already ended: spent until 28 s from the last answer,
        // and the slack.
        let end = at + Duration::from_secs(28) + RESET_SLACK;
        assert_eq!(p.blocked(at), Some(Blocked::Until(end)));
        assert!(p.try_send(end, 9), "a fresh window");
    }

    #[test]
    fn a_429_with_a_reset_in_seconds_waits_for_it() {
        let t0 = crate::test_clock::start();
        let mut p = pacer(4, 200);
        let clock = ServerClock::default();
        let h = headers(
            &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "20")],
            429,
        );
        p.handle_headers(t0, &h, &clock, None);
        assert!(!p.try_send(t0 + Duration::from_secs(19), 1));
        assert!(p.try_send(t0 + Duration::from_secs(20), 1));
    }

    #[test]
    fn no_more_than_max_in_flight() {
        let t0 = crate::test_clock::start();
        let mut p = pacer(2, 100);
        assert!(p.try_send(t0, 1) && p.try_send(t0, 2));
        assert!(!p.try_send(t0, 3));
        assert_eq!(p.blocked(t0), Some(Blocked::InFlight));
        p.handle_answer(1);
        assert!(p.try_send(t0, 3));
    }

    #[test]
    fn an_unanswered_read_stops_counting_after_the_request_timeout() {
        let t0 = crate::test_clock::start();
        let mut p = pacer(1, 100);
        assert!(p.try_send(t0, 1));
        assert!(!p.try_send(t0 + Duration::from_secs(34), 2));
        assert_eq!(p.next_expiry(), Some(t0 + Duration::from_secs(35)));
        assert!(p.try_send(t0 + Duration::from_secs(35), 2));
    }

    #[test]
    fn the_local_mirror_spends_its_budget_then_waits_for_the_window() {
        let t0 = crate::test_clock::start();
        let mut p = pacer(100, 3);
        for id in 0..3 {
            assert!(p.try_send(t0, id));
        }
        assert!(!p.try_send(t0, 9));
        // The window, plus a second for the server's window starting on arrival.
        assert_eq!(
            p.blocked(t0),
            Some(Blocked::Until(t0 + Duration::from_secs(61)))
        );
        assert!(!p.try_send(t0 + Duration::from_secs(60), 9));
        assert!(p.try_send(t0 + Duration::from_secs(61), 9));
    }

    #[test]
    fn server_headers_replace_the_mirror_and_convert_the_reset_with_the_date() {
        let t0 = crate::test_clock::start();
        let mut p = pacer(100, 200);
        let clock = ServerClock::default();
        assert!(p.try_send(t0, 1));
        let h = headers(
            &[
                ("date", "Sun, 09 Sep 2001 02:03:20 GMT"), // 1_000_001_000 s
                ("x-ratelimit-limit", "30"),
                ("x-ratelimit-remaining", "1"),
                ("x-ratelimit-reset", "1000001010"),
            ],
            200,
        );
        p.handle_headers(t0, &h, &clock, Some(1));
        p.handle_answer(1);
        assert!(p.try_send(t0, 2));
        assert!(!p.try_send(t0, 3));
        let later = t0 + Duration::from_secs(10) + RESET_SLACK;
        assert_eq!(p.blocked(t0), Some(Blocked::Until(later)));
        // A fresh window holds the server's limit, not the configured mirror's.
        for id in 10..40 {
            assert!(p.try_send(later, id));
            p.handle_answer(id);
        }
        assert!(!p.try_send(later, 99));
    }

    #[test]
    fn each_new_server_window_takes_the_servers_reset_not_the_mirrors_guess() {
        let t0 = crate::test_clock::start();
        let mut p = pacer(100, 200); // the mirror would guess 61 s windows
        let clock = ServerClock::default();
        let h = |date: &str, reset: &str, remaining: &str| {
            headers(
                &[
                    ("date", date),
                    ("x-ratelimit-limit", "2"),
                    ("x-ratelimit-remaining", remaining),
                    ("x-ratelimit-reset", reset),
                ],
                200,
            )
        };
        // Two windows of 2 reads, 3 s each (epoch 1_000_001_000 s and 1_000_001_003 s).
        for (k, (date, reset)) in [
            ("Sun, 09 Sep 2001 02:03:20 GMT", "1000001003"),
            ("Sun, 09 Sep 2001 02:03:23 GMT", "1000001006"),
        ]
        .into_iter()
        .enumerate()
        {
            let at = t0 + (Duration::from_secs(3) + RESET_SLACK) * k as u32;
            for i in 0..2u64 {
                let id = 10 * k as u64 + i;
                assert!(p.try_send(at, id), "window {k}, read {i}");
                p.handle_headers(
                    at,
                    &h(date, reset, if i == 0 { "1" } else { "0" }),
                    &clock,
                    Some(id),
                );
                p.handle_answer(id);
            }
            assert_eq!(
                p.blocked(at),
                Some(Blocked::Until(at + Duration::from_secs(3) + RESET_SLACK)),
                "window {k} ends at the server's reset"
            );
        }
    }

    #[test]
    fn reads_in_flight_are_assumed_uncounted() {
        let t0 = crate::test_clock::start();
        let mut p = pacer(10, 200);
        let clock = ServerClock::default();
        for id in 0..4 {
            assert!(p.try_send(t0, id));
        }
        // The first answer says 3 left; the other three reads may not be counted yet.
        let h = headers(&[("x-ratelimit-remaining", "3")], 200);
        p.handle_headers(t0, &h, &clock, Some(0));
        p.handle_answer(0);
        assert!(!p.try_send(t0, 9));
    }

    #[test]
    fn once_every_read_is_answered_the_lowest_remaining_is_exact() {
        let t0 = crate::test_clock::start();
        let mut p = pacer(10, 200);
        let clock = ServerClock::default();
        for id in 0..2 {
            assert!(p.try_send(t0, id));
        }
        // Answers out of order: the server counted read 0 (5 left), then read 1 (4 left).
        p.handle_headers(
            t0,
            &headers(&[("x-ratelimit-remaining", "4")], 200),
            &clock,
            Some(1),
        );
        p.handle_answer(1);
        p.handle_headers(
            t0,
            &headers(&[("x-ratelimit-remaining", "5")], 200),
            &clock,
            Some(0),
        );
        p.handle_answer(0);
        for id in 10..14 {
            assert!(p.try_send(t0, id), "read {id}");
        }
        assert!(!p.try_send(t0, 14), "exactly the 4 left");
    }

    #[test]
    fn a_429_on_any_read_pauses_every_read_for_its_retry_after() {
        let t0 = crate::test_clock::start();
        let mut p = pacer(4, 200);
        let clock = ServerClock::default();
        // The app's read, not ours.
        p.handle_headers(t0, &headers(&[("retry-after", "7")], 429), &clock, None);
        assert_eq!(p.rate_limited(), 1);
        assert!(!p.try_send(t0 + Duration::from_millis(6999), 1));
        assert!(p.try_send(t0 + Duration::from_secs(7), 1));
    }

    #[test]
    fn the_apps_reads_spend_the_mirrors_budget() {
        let t0 = crate::test_clock::start();
        let mut p = pacer(4, 2);
        let clock = ServerClock::default();
        p.handle_headers(t0, &headers(&[], 200), &clock, None);
        assert!(p.try_send(t0, 1));
        assert!(!p.try_send(t0, 2));
    }

    /// The budget headers of an answer written at server second 1000 + `date`.
    fn budget(date: u64, remaining: u32, reset: u64) -> ReadHeaders {
        let date = httpdate::fmt_http_date(
            std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000 + date),
        );
        headers(
            &[
                ("date", &date),
                ("x-ratelimit-limit", "10"),
                ("x-ratelimit-remaining", &remaining.to_string()),
                ("x-ratelimit-reset", &(1_000_000_000 + reset).to_string()),
            ],
            200,
        )
    }

    #[test]
    fn a_short_wait_does_not_refill_a_window_announced_spent() {
        let t0 = crate::test_clock::start();
        let mut p = pacer(4, 200);
        let clock = ServerClock::default();
        assert!(p.try_send(t0, 1));
        p.handle_headers(t0, &budget(0, 0, 40), &clock, Some(1));
        p.handle_answer(1);
        // A proxy's 429 and an overloaded server's 503, each for 2 s.
        let proxy = headers(&[("retry-after", "2")], 429);
        p.handle_headers(t0, &proxy, &clock, None);
        let busy = headers(&[("retry-after", "2")], 503);
        p.handle_headers(t0, &busy, &clock, None);
        assert!(
            !p.try_send(t0 + Duration::from_secs(10), 2),
            "spent for 40 s"
        );
        let end = t0 + Duration::from_secs(40) + RESET_SLACK;
        assert_eq!(p.wake_at(), Some(end));
        assert!(p.try_send(end, 2), "a fresh window");
    }

    #[test]
    fn a_503_wait_keeps_the_budget_a_429_spends_it() {
        let t0 = crate::test_clock::start();
        let clock = ServerClock::default();
        let mut p = pacer(4, 200);
        p.handle_headers(t0, &budget(0, 5, 40), &clock, None);
        p.handle_headers(t0, &headers(&[("retry-after", "2")], 503), &clock, None);
        assert!(!p.try_send(t0 + Duration::from_millis(1999), 1), "paused");
        assert!(p.try_send(t0 + Duration::from_secs(2), 1), "5 were left");
        let mut p = pacer(4, 200);
        p.handle_headers(t0, &budget(0, 5, 40), &clock, None);
        p.handle_headers(t0, &headers(&[("retry-after", "2")], 429), &clock, None);
        // An answer of the same window that the server counted before the refusal.
        p.handle_headers(t0 + Duration::from_secs(1), &budget(1, 3, 40), &clock, None);
        assert!(
            !p.try_send(t0 + Duration::from_secs(2), 1),
            "refused: none left"
        );
        assert!(p.try_send(t0 + Duration::from_secs(40) + RESET_SLACK, 1));
    }

    #[test]
    fn a_window_is_named_by_its_raw_reset_not_by_the_estimate() {
        let t0 = crate::test_clock::start();
        let clock = ServerClock::default();
        let mut p = pacer(4, 200);
        // 1 left, written at second 10; then, 70 ms later, an older answer written at second 9
        // (the server counted it first: 2 left). Its estimate of the reset is over a second
        // later.
        p.handle_headers(t0, &budget(10, 1, 30), &clock, None);
        let later = t0 + Duration::from_millis(70);
        p.handle_headers(later, &budget(9, 2, 30), &clock, None);
        assert!(p.try_send(later, 1));
        assert!(!p.try_send(later, 2), "one was left");
        // Once the window has ended here, its late answers are stale.
        let end = t0 + Duration::from_secs(24);
        assert!(p.try_send(end, 3), "a fresh window");
        // Its first read, answered.
        p.handle_success();
        p.handle_answer(3);
        p.handle_headers(end, &budget(29, 0, 30), &clock, None);
        assert!(
            p.try_send(end, 4),
            "an answer of the ended window says nothing now"
        );
        // The next window's answers count.
        p.handle_headers(end, &budget(31, 0, 90), &clock, None);
        assert!(!p.try_send(end, 5), "the new window is spent");
    }

    #[test]
    fn the_catch_up_leaves_the_reserve_to_the_apps_writes() {
        let t0 = crate::test_clock::start();
        let clock = ServerClock::default();
        // The mirror of Kaiku's write budget: 30 a minute, 5 of them the app's.
        let mut p = Pacer::new(PacingConfig {
            max_in_flight: 100,
            ..PacingConfig::default()
        });
        for id in 0..25 {
            assert!(p.try_send(t0, id), "read {id}");
        }
        assert!(!p.try_send(t0, 25), "the last 5 are the app's");
        // With the server's figures: 6 left is one for the catch-up, 5 is none.
        let kaiku = |remaining: u32| {
            let mut h = budget(0, remaining, 40);
            h.limit = Some(30);
            h
        };
        let mut p = Pacer::new(PacingConfig::default());
        p.handle_headers(t0, &kaiku(6), &clock, None);
        assert!(p.try_send(t0, 1));
        p.handle_headers(t0, &kaiku(5), &clock, Some(1));
        p.handle_answer(1);
        assert!(!p.try_send(t0, 2));
        assert!(p.try_send(t0 + Duration::from_secs(40) + RESET_SLACK, 2));
        // A window of three requests keeps nothing back: a quarter of it is none.
        let mut p = Pacer::new(PacingConfig {
            budget: 3,
            max_in_flight: 100,
            ..PacingConfig::default()
        });
        for id in 0..3 {
            assert!(p.try_send(t0, id));
        }
    }

    #[test]
    fn refusals_in_a_row_wait_longer_each_time_whatever_retry_after_says() {
        let t0 = crate::test_clock::start();
        let clock = ServerClock::default();
        let mut p = pacer(4, 200);
        let mut at = t0;
        // `Retry-After: 0` (Kaiku's, under half a second before its key expires), three times.
        for wait in [1, 2, 4] {
            p.handle_headers(at, &headers(&[("retry-after", "0")], 429), &clock, None);
            let until = at + Duration::from_secs(wait);
            assert_eq!(p.blocked(at), Some(Blocked::Until(until)), "{wait} s");
            at = until;
        }
        // A success starts over.
        assert!(p.try_send(at, 1));
        p.handle_headers(at, &headers(&[], 200), &clock, Some(1));
        p.handle_answer(1);
        p.handle_headers(at, &headers(&[("retry-after", "0")], 429), &clock, None);
        assert_eq!(
            p.blocked(at),
            Some(Blocked::Until(at + Duration::from_secs(1)))
        );
    }

    #[test]
    fn a_503_without_retry_after_pauses_with_backoff_and_keeps_the_budget() {
        let t0 = crate::test_clock::start();
        let clock = ServerClock::default();
        let mut p = pacer(4, 200);
        p.handle_headers(t0, &budget(0, 9, 40), &clock, None);
        // Kaiku with its rate limiter's store down: 503, no `Retry-After`.
        p.handle_headers(t0, &headers(&[], 503), &clock, None);
        assert_eq!(
            p.blocked(t0),
            Some(Blocked::Until(t0 + DEFAULT_REFUSAL_WAIT))
        );
        let at = t0 + DEFAULT_REFUSAL_WAIT;
        assert!(p.try_send(at, 1), "the budget was not spent");
        // The same answer to the core's own read, reported again as a failed read: once.
        p.handle_headers(at, &headers(&[], 503), &clock, Some(1));
        p.handle_refused(at, 1, None, false);
        p.handle_answer(1);
        assert_eq!(
            p.blocked(at),
            Some(Blocked::Until(at + DEFAULT_REFUSAL_WAIT)),
            "the second refusal: max(5 s, 2 s)"
        );
        assert_eq!(p.rate_limited(), 2);
    }

    #[test]
    fn the_first_read_of_a_window_after_a_spent_one_goes_alone() {
        let t0 = crate::test_clock::start();
        let clock = ServerClock::default();
        let mut p = pacer(4, 200);
        p.handle_headers(t0, &budget(0, 0, 10), &clock, None);
        // The announced reset, and the slack for a reset announced early.
        let at = t0 + Duration::from_secs(10) + RESET_SLACK;
        assert!(!p.try_send(at - Duration::from_millis(1), 1));
        assert!(p.try_send(at, 1));
        assert_eq!(p.blocked(at), Some(Blocked::InFlight), "one probe");
        // Refused after all: the pause, then one probe again.
        p.handle_headers(at, &headers(&[("retry-after", "1")], 429), &clock, Some(1));
        p.handle_answer(1);
        let at = at + Duration::from_secs(1);
        assert!(p.try_send(at, 2));
        assert!(!p.try_send(at, 3), "still probing");
        p.handle_headers(at, &budget(12, 9, 70), &clock, Some(2));
        p.handle_answer(2);
        for id in 3..7 {
            assert!(p.try_send(at, id), "open: {id}");
        }
    }

    #[test]
    fn resets_a_second_apart_name_one_window() {
        // Kaiku's reset is `floor(now) + round(TTL)`: two answers of one window can name it a
        // second apart. The older answer (4 left) comes last and names the later second: it
        // is not a new window, and the lower figure stands.
        let t0 = crate::test_clock::start();
        let clock = ServerClock::default();
        let mut p = pacer(10, 200);
        p.handle_headers(t0, &budget(10, 2, 30), &clock, None);
        p.handle_headers(t0, &budget(10, 4, 31), &clock, None);
        assert!(p.try_send(t0, 1) && p.try_send(t0, 2));
        assert!(!p.try_send(t0, 3), "two were left, not four");
        // A reset a second later still is the same window; two seconds later, another.
        p.handle_headers(t0, &budget(12, 7, 32), &clock, Some(1));
        p.handle_answer(1);
        assert!(p.try_send(t0, 4), "one left: two, less read 2 in flight");
        assert!(!p.try_send(t0, 5));
        p.handle_headers(t0, &budget(12, 7, 34), &clock, Some(4));
        p.handle_answer(4);
        for id in 10..16 {
            assert!(p.try_send(t0, id), "a new window: 7 less read 2 in flight");
        }
        assert!(!p.try_send(t0, 16));
    }

    #[test]
    fn a_probe_counted_in_the_window_that_should_have_ended_waits_and_probes_again() {
        // The simulation's seed 11331: no `Date` on the answers, a stale sample of the
        // server's clock, so the window's end was placed early. The probe is counted in the
        // old window (0 left, the same reset): the others must not follow it.
        let t0 = crate::test_clock::start();
        let clock = ServerClock::default();
        let mut p = pacer(4, 200);
        p.handle_headers(t0, &budget(0, 0, 10), &clock, None);
        let at = t0 + Duration::from_secs(10) + RESET_SLACK;
        assert!(p.try_send(at, 1), "the probe");
        let mut h = budget(0, 0, 10);
        h.date = None;
        p.handle_headers(at, &h, &clock, Some(1));
        p.handle_answer(1);
        assert!(!p.try_send(at, 2), "no storm behind the probe");
        assert!(
            p.try_send(at + Duration::from_secs(1), 2),
            "a probe a second later"
        );
        assert!(!p.try_send(at + Duration::from_secs(1), 3), "alone");
    }

    #[test]
    fn reads_sent_inside_the_slack_are_taken_from_the_next_window() {
        // The simulation's seed 23847: a read sent after the announced reset, before the
        // slack's end, counted in the old window here and in the new one at the server: the
        // refill gave four reads where three were left, and the app's post was refused.
        let t0 = crate::test_clock::start();
        let clock = ServerClock::default();
        let mut p = Pacer::new(PacingConfig {
            max_in_flight: 10,
            reserve: 1,
            ..PacingConfig::default()
        });
        let mut h = budget(0, 3, 10);
        h.limit = Some(4);
        p.handle_headers(t0, &h, &clock, None);
        let inside = t0 + Duration::from_secs(10) + Duration::from_millis(500);
        assert!(p.try_send(inside, 1), "the old window has 3 left");
        let refill = t0 + Duration::from_secs(10) + RESET_SLACK;
        let mut sent = 0;
        for id in 2..10 {
            if p.try_send(refill, id) {
                sent += 1;
            }
        }
        assert_eq!(
            sent, 2,
            "4, less the read inside the slack, less the reserve"
        );
    }
}
