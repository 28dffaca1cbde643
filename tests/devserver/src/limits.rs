//! Rate limits as the real Kaiku server applies them, and the log of REST reads that tests
//! and benchmarks check a client's pacing against.
//!
//! Kaiku counts requests in Redis: one key per category and identifier (the user on
//! authenticated routes, the IP on login and refresh), created by the first request after the
//! previous key expired and living one window. A request over the budget is refused with 429
//! and is not counted (Kaiku's Lua script checks before it increments). The limiter here is
//! the same fixed window, kept in memory, with time passed in so its unit tests need no clock.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::Method;

/// A budget: `requests` per `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Requests allowed in one window.
    pub requests: u32,
    /// How long a window lasts from its first request. Shorter than a second works (the
    /// headers still speak whole seconds; see [`RateLimits::kaiku_headers`] for how).
    pub window: Duration,
}

impl Limit {
    /// `requests` per `window`.
    pub const fn new(requests: u32, window: Duration) -> Self {
        Self { requests, window }
    }

    const fn per_minute(requests: u32) -> Self {
        Self::new(requests, Duration::from_secs(60))
    }
}

/// Which requests are limited, and how much. `None` leaves a category unlimited.
///
/// The default limits nothing, so tests that do not ask for limits never meet one;
/// [`RateLimits::kaiku`] is what a real Kaiku server applies out of the box.
///
/// The categories are Kaiku's at d74233d6 (its `api/mod.rs` and `auth/mod.rs`): every
/// request under `/api/channels`, `/api/messages` and `/api/guilds`, GETs included, is a
/// write, so message history spends the posting budget. Kaiku's `read` category is
/// configured but attached to no route; here it covers the other GETs (`/auth/me`), which a
/// real server leaves unlimited ([`RateLimits::kaiku`] leaves it `None`), for tests that want
/// a server that limits them anyway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimits {
    /// GETs outside the write routes (`/auth/me`; never `/health`). Per user. No route of
    /// the real server is in Kaiku's `read` category, so [`RateLimits::kaiku`] leaves it off.
    pub read: Option<Limit>,
    /// Every request under `/api/channels`, `/api/messages` and `/api/guilds`, whatever its
    /// method: history reads share this budget with posting, editing and deleting, as on
    /// Kaiku. Per user.
    pub write: Option<Limit>,
    /// `POST /auth/refresh` (Kaiku's `auth_other`). Per IP, as Kaiku keys it: the request
    /// carries no access token.
    pub refresh: Option<Limit>,
    /// `POST /auth/login` (`auth_login`). Per IP.
    pub login: Option<Limit>,
    /// Compute the budget headers as Kaiku does from Redis, instead of exactly. Off,
    /// `x-ratelimit-reset` is the window's end rounded up and `Retry-After` is the time left
    /// at the answer rounded up, at least 1: a client that trusts them never comes early.
    /// On, `x-ratelimit-reset` is `floor(now) + TTL` and `Retry-After` is the TTL, where the
    /// TTL is the key's time to live in whole seconds as Redis's `TTL` answers it (rounded to
    /// the nearest second, read when the request is counted): the announced reset can be up
    /// to 1.5 s before the window really ends (and up to 0.5 s after), and `Retry-After`
    /// can be `0` while the window still runs. A client that waits exactly what it is told
    /// meets a 429 now and then. On in [`RateLimits::kaiku`].
    pub kaiku_headers: bool,
}

impl RateLimits {
    /// Kaiku's defaults: write 30, refresh 20 and login 3 requests per 60 s, no read limit
    /// (Kaiku attaches its `read` category to no route), headers computed as Kaiku's.
    pub const fn kaiku() -> Self {
        Self {
            read: None,
            write: Some(Limit::per_minute(30)),
            refresh: Some(Limit::per_minute(20)),
            login: Some(Limit::per_minute(3)),
            kaiku_headers: true,
        }
    }

    /// Whether any category is limited.
    pub fn any(&self) -> bool {
        self.read.is_some()
            || self.write.is_some()
            || self.refresh.is_some()
            || self.login.is_some()
    }

    pub(crate) fn of(&self, category: Category) -> Option<Limit> {
        match category {
            Category::Read => self.read,
            Category::Write => self.write,
            Category::AuthOther => self.refresh,
            Category::AuthLogin => self.login,
        }
    }
}

/// A rate-limit category, named as Kaiku's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Category {
    Read,
    Write,
    AuthOther,
    AuthLogin,
}

impl Category {
    /// The category of a REST request; `None` for the ones no limit applies to. As Kaiku's
    /// router: everything under `/api/channels`, `/api/messages` and `/api/guilds` is a write,
    /// GETs included; login and refresh are their own; `/auth/me` and `/auth/logout` sit
    /// behind no limiter on Kaiku (other GETs fall in `Read`, which Kaiku leaves unused).
    pub fn of(method: &Method, path: &str) -> Option<Self> {
        let under = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if ["/api/channels", "/api/messages", "/api/guilds"]
            .into_iter()
            .any(under)
        {
            return Some(Self::Write);
        }
        match (method, path) {
            (_, "/health") => None,
            (&Method::GET, _) => Some(Self::Read),
            (&Method::POST, "/auth/login") => Some(Self::AuthLogin),
            (&Method::POST, "/auth/refresh") => Some(Self::AuthOther),
            _ => None,
        }
    }

    /// Whether Kaiku counts it per user (falling back to the IP without a valid token).
    pub fn per_user(self) -> bool {
        matches!(self, Self::Read | Self::Write)
    }
}

/// One window of one key: when it started and how many requests it has taken.
#[derive(Clone, Copy, Debug)]
struct Window {
    started: Instant,
    /// `started` on the wall clock, for `x-ratelimit-reset`.
    started_wall: SystemTime,
    count: u32,
}

/// The limiter's answer to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    pub allowed: bool,
    pub limit: u32,
    /// What is left of the budget after this request.
    pub remaining: u32,
    /// When the window ends.
    pub ends: Instant,
    /// The same on the wall clock.
    pub ends_wall: SystemTime,
    /// When the request was counted, on the wall clock.
    pub at_wall: SystemTime,
}

impl Decision {
    /// `x-ratelimit-reset`: the window's end in epoch seconds, rounded up.
    pub fn reset_epoch_secs(&self) -> u64 {
        ceil_secs(
            self.ends_wall
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        )
    }

    /// `Retry-After` at `now`: whole seconds until the window ends, rounded up, at least 1.
    pub fn retry_after_secs(&self, now: Instant) -> u64 {
        ceil_secs(self.ends.saturating_duration_since(now)).max(1)
    }

    /// The key's time to live when the request was counted, as Redis's `TTL` answers it:
    /// whole seconds, rounded to the nearest (`(ms + 500) / 1000`). Kaiku's `Retry-After`.
    pub fn redis_ttl_secs(&self) -> u64 {
        let left = self
            .ends_wall
            .duration_since(self.at_wall)
            .unwrap_or_default();
        u64::try_from((left.as_millis() + 500) / 1000).unwrap_or(u64::MAX)
    }

    /// Kaiku's `x-ratelimit-reset`: the epoch second the request was counted in, rounded
    /// down, plus [`redis_ttl_secs`](Self::redis_ttl_secs).
    pub fn kaiku_reset_epoch_secs(&self) -> u64 {
        let now = self
            .at_wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        now.saturating_add(self.redis_ttl_secs())
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A read the log is waiting to hear the answer to.
#[derive(Debug)]
pub(crate) struct ReadTicket {
    user_id: Option<String>,
    /// Where its record is in the user's log, in the log's `generation`.
    index: usize,
    generation: u64,
}

/// A REST read as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadRecord {
    /// When the request arrived (and was counted against the limit), before any latency.
    pub arrived: Instant,
    /// When its answer left; `None` while in flight, or when the client went away first.
    pub answered: Option<Instant>,
    /// Path and query, as requested (`/api/messages/channel/ID?limit=50`).
    pub path: String,
    /// The status answered; `None` while in flight or abandoned.
    pub status: Option<u16>,
    /// Answered 429, by the limiter or by the `rate_limit_rest` fault.
    pub rate_limited: bool,
    /// The `Retry-After` sent with a 429.
    pub retry_after: Option<Duration>,
}

/// A read that arrived while the client should have been waiting out a 429.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PauseViolation {
    /// The 429 whose `Retry-After` asked for the pause (which starts when it was answered).
    pub refused: ReadRecord,
    /// The read that arrived inside the pause.
    pub read: ReadRecord,
    /// How long before the pause's end it arrived.
    pub early_by: Duration,
}

/// Every read that arrived inside the `Retry-After` pause of an earlier 429 in `log` (one
/// user's reads, in arrival order). A pause runs from the moment the 429 was answered, not
/// sent: reads already on their way then were not the client's choice.
pub(crate) fn pause_violations(log: &[ReadRecord]) -> Vec<PauseViolation> {
    let mut found = Vec::new();
    for refused in log.iter().filter(|r| r.rate_limited) {
        let (Some(start), Some(pause)) = (refused.answered, refused.retry_after) else {
            continue;
        };
        let end = start + pause;
        for read in log.iter().filter(|r| r.arrived >= start && r.arrived < end) {
            found.push(PauseViolation {
                refused: refused.clone(),
                read: read.clone(),
                early_by: end - read.arrived,
            });
        }
    }
    found
}

#[derive(Debug, Default)]
struct UserReads {
    log: Vec<ReadRecord>,
    in_flight: usize,
    max_in_flight: usize,
}

/// The windows of every key, and the read log.
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    windows: HashMap<(Category, String), Window>,
    reads: HashMap<String, UserReads>,
    reads_total: u64,
    reads_rejected: u64,
    /// Bumped by [`reset_reads`](Self::reset_reads), so an answer to a read logged before
    /// does not land in the new log.
    generation: u64,
}

impl Limiter {
    /// Counts a request under `key` at `now` (`wall` is the same moment on the wall clock).
    /// A request over the budget is refused and not counted, as Kaiku's script does.
    pub fn check(
        &mut self,
        now: Instant,
        wall: SystemTime,
        category: Category,
        key: &str,
        limit: Limit,
    ) -> Decision {
        let window = self
            .windows
            .entry((category, key.to_owned()))
            .or_insert(Window {
                started: now,
                started_wall: wall,
                count: 0,
            });
        if now >= window.started + limit.window {
            *window = Window {
                started: now,
                started_wall: wall,
                count: 0,
            };
        }
        let allowed = window.count < limit.requests;
        if allowed {
            window.count += 1;
        }
        Decision {
            allowed,
            limit: limit.requests,
            remaining: limit.requests.saturating_sub(window.count),
            ends: window.started + limit.window,
            ends_wall: window.started_wall + limit.window,
            at_wall: wall,
        }
    }

    /// Logs a read's arrival and counts it in flight until [`end_read`](Self::end_read).
    pub fn begin_read(&mut self, now: Instant, user_id: Option<&str>, path: &str) -> ReadTicket {
        self.reads_total += 1;
        let index = user_id.map_or(0, |u| {
            let user = self.reads.entry(u.to_owned()).or_default();
            user.in_flight += 1;
            user.max_in_flight = user.max_in_flight.max(user.in_flight);
            user.log.push(ReadRecord {
                arrived: now,
                answered: None,
                path: path.to_owned(),
                status: None,
                rate_limited: false,
                retry_after: None,
            });
            user.log.len() - 1
        });
        ReadTicket {
            user_id: user_id.map(str::to_owned),
            index,
            generation: self.generation,
        }
    }

    /// Ends a read: with its answer (status and `Retry-After`), or `None` when the client
    /// went away before it.
    pub fn end_read(
        &mut self,
        ticket: &ReadTicket,
        now: Instant,
        answer: Option<(u16, Option<Duration>)>,
    ) {
        let rate_limited = matches!(answer, Some((429, _)));
        if rate_limited {
            self.reads_rejected += 1;
        }
        let Some(user) = ticket.user_id.as_ref().and_then(|u| self.reads.get_mut(u)) else {
            return;
        };
        user.in_flight = user.in_flight.saturating_sub(1);
        if ticket.generation != self.generation {
            return;
        }
        if let (Some(record), Some((status, retry_after))) =
            (user.log.get_mut(ticket.index), answer)
        {
            record.answered = Some(now);
            record.status = Some(status);
            record.rate_limited = rate_limited;
            record.retry_after = retry_after;
        }
    }

    /// One user's reads, in arrival order.
    pub fn read_log(&self, user_id: &str) -> Vec<ReadRecord> {
        self.reads
            .get(user_id)
            .map(|u| u.log.clone())
            .unwrap_or_default()
    }

    /// The most reads of one user in flight at once.
    pub fn max_in_flight(&self, user_id: &str) -> usize {
        self.reads.get(user_id).map_or(0, |u| u.max_in_flight)
    }

    /// Reads so far, every user (and none) together.
    pub fn reads_total(&self) -> u64 {
        self.reads_total
    }

    /// Reads answered 429 so far.
    pub fn reads_rejected(&self) -> u64 {
        self.reads_rejected
    }

    /// Forgets the read log, the counters and the maxima (reads in flight stay counted).
    pub fn reset_reads(&mut self) {
        self.generation += 1;
        self.reads_total = 0;
        self.reads_rejected = 0;
        for user in self.reads.values_mut() {
            user.log.clear();
            user.max_in_flight = user.in_flight;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_PER_2S: Limit = Limit::new(5, Duration::from_secs(2));

    fn check(l: &mut Limiter, t0: Instant, at_ms: u64, key: &str) -> Decision {
        let d = Duration::from_millis(at_ms);
        l.check(t0 + d, UNIX_EPOCH + d, Category::Read, key, FIVE_PER_2S)
    }

    #[test]
    fn a_budget_counts_down_then_refuses_until_the_window_ends() {
        let (mut l, t0) = (Limiter::default(), Instant::now());
        let remaining: Vec<u32> = (0..5)
            .map(|i| check(&mut l, t0, i, "u").remaining)
            .collect();
        assert_eq!(remaining, [4, 3, 2, 1, 0]);
        let refused = check(&mut l, t0, 1999, "u");
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.ends, t0 + Duration::from_secs(2));
        let fresh = check(&mut l, t0, 2000, "u");
        assert!(fresh.allowed);
        assert_eq!(fresh.remaining, 4);
        assert_eq!(fresh.ends, t0 + Duration::from_secs(4));
    }

    #[test]
    fn a_window_starts_at_the_first_request_after_the_last_one_ended() {
        let (mut l, t0) = (Limiter::default(), Instant::now());
        check(&mut l, t0, 0, "u");
        // Idle past the end: the next window starts with this request, not on a grid.
        let d = check(&mut l, t0, 3300, "u");
        assert_eq!(d.ends, t0 + Duration::from_millis(5300));
        assert_eq!(d.reset_epoch_secs(), 6, "5.3 s rounds up");
    }

    #[test]
    fn refused_requests_are_not_counted_and_keys_are_separate() {
        let (mut l, t0) = (Limiter::default(), Instant::now());
        for i in 0..20 {
            check(&mut l, t0, i, "u");
        }
        assert_eq!(check(&mut l, t0, 2000, "u").remaining, 4);
        assert_eq!(check(&mut l, t0, 0, "other").remaining, 4);
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        let (mut l, t0) = (Limiter::default(), Instant::now());
        let d = check(&mut l, t0, 0, "u");
        assert_eq!(d.retry_after_secs(t0 + Duration::from_millis(100)), 2);
        assert_eq!(d.retry_after_secs(t0 + Duration::from_millis(1000)), 1);
        assert_eq!(d.retry_after_secs(t0 + Duration::from_secs(9)), 1);
    }

    #[test]
    fn sub_second_windows_limit_and_report_whole_seconds() {
        let (mut l, t0) = (Limiter::default(), Instant::now());
        let limit = Limit::new(1, Duration::from_millis(300));
        let at = |ms| {
            (
                t0 + Duration::from_millis(ms),
                UNIX_EPOCH + Duration::from_millis(ms),
            )
        };
        let (now, wall) = at(0);
        assert!(l.check(now, wall, Category::Read, "u", limit).allowed);
        let (now, wall) = at(100);
        let refused = l.check(now, wall, Category::Read, "u", limit);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_secs(now), 1);
        assert_eq!(refused.reset_epoch_secs(), 1);
        let (now, wall) = at(300);
        assert!(l.check(now, wall, Category::Read, "u", limit).allowed);
    }

    #[test]
    fn requests_fall_in_kaikus_categories() {
        assert_eq!(Category::of(&Method::GET, "/health"), None);
        assert_eq!(Category::of(&Method::GET, "/auth/me"), Some(Category::Read));
        for path in [
            "/api/messages/channel/x",
            "/api/channels",
            "/api/channels/x",
            "/api/guilds",
        ] {
            assert_eq!(
                Category::of(&Method::GET, path),
                Some(Category::Write),
                "{path}"
            );
        }
        assert_eq!(
            Category::of(&Method::POST, "/api/messages/channel/x"),
            Some(Category::Write)
        );
        assert_eq!(
            Category::of(&Method::PATCH, "/api/messages/x"),
            Some(Category::Write)
        );
        assert_eq!(
            Category::of(&Method::GET, "/api/channelsx"),
            Some(Category::Read)
        );
        assert_eq!(
            Category::of(&Method::POST, "/auth/refresh"),
            Some(Category::AuthOther)
        );
        assert_eq!(
            Category::of(&Method::POST, "/auth/login"),
            Some(Category::AuthLogin)
        );
        assert_eq!(Category::of(&Method::POST, "/auth/register"), None);
        assert_eq!(Category::of(&Method::POST, "/auth/logout"), None);
    }

    #[test]
    fn kaikus_defaults_limit_no_read_and_compute_headers_as_redis() {
        let k = RateLimits::kaiku();
        assert_eq!(k.read, None);
        assert_eq!(k.write, Some(Limit::per_minute(30)));
        assert!(k.kaiku_headers);
        assert!(!RateLimits::default().kaiku_headers);
    }

    #[test]
    fn kaiku_headers_announce_a_reset_before_the_window_ends_and_retry_after_zero() {
        let (mut l, t0) = (Limiter::default(), Instant::now());
        // The window starts at 100.9 s on the wall clock and really ends at 102.9 s.
        let wall0 = UNIX_EPOCH + Duration::from_millis(100_900);
        let limit = Limit::new(1, Duration::from_secs(2));
        let at = |ms| {
            (
                t0 + Duration::from_millis(ms),
                wall0 + Duration::from_millis(ms),
            )
        };
        let (now, wall) = at(0);
        let first = l.check(now, wall, Category::Write, "u", limit);
        assert!(first.allowed);
        assert_eq!(first.kaiku_reset_epoch_secs(), 102, "floor(100.9) + TTL 2");
        assert_eq!(first.reset_epoch_secs(), 103, "exact: the end rounded up");
        // At the announced reset the window still runs: refused, 0.9 s left reads as 1.
        let (now, wall) = at(1100);
        let refused = l.check(now, wall, Category::Write, "u", limit);
        assert!(!refused.allowed);
        assert_eq!(refused.redis_ttl_secs(), 1);
        assert_eq!(refused.retry_after_secs(now), 1);
        // 0.4 s left: Redis's TTL says 0, and so does Kaiku's Retry-After.
        let (now, wall) = at(1600);
        let refused = l.check(now, wall, Category::Write, "u", limit);
        assert!(!refused.allowed);
        assert_eq!(refused.redis_ttl_secs(), 0);
        assert_eq!(refused.retry_after_secs(now), 1, "exact: never 0");
        let (now, wall) = at(2000);
        assert!(l.check(now, wall, Category::Write, "u", limit).allowed);
    }

    fn record(arrived: Instant, answered: Instant, retry_after: Option<u64>) -> ReadRecord {
        ReadRecord {
            arrived,
            answered: Some(answered),
            path: "/auth/me".into(),
            status: Some(if retry_after.is_some() { 429 } else { 200 }),
            rate_limited: retry_after.is_some(),
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn a_read_inside_a_pause_is_a_violation_and_one_sent_before_its_answer_is_not() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let log = [
            record(ms(0), ms(500), Some(2)),  // pause: 500 ms .. 2500 ms
            record(ms(100), ms(600), None),   // already in flight when the 429 left
            record(ms(2400), ms(2450), None), // 100 ms early
            record(ms(2500), ms(2550), None), // on time
        ];
        let found = pause_violations(&log);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].read.arrived, ms(2400));
        assert_eq!(found[0].early_by, Duration::from_millis(100));
    }

    #[test]
    fn the_log_tracks_answers_and_the_most_reads_in_flight() {
        let (mut l, t0) = (Limiter::default(), Instant::now());
        let a = l.begin_read(t0, Some("u"), "/a");
        let b = l.begin_read(t0, Some("u"), "/b");
        l.end_read(&a, t0, Some((429, Some(Duration::from_secs(1)))));
        let c = l.begin_read(t0, Some("u"), "/c");
        l.end_read(&b, t0, Some((200, None)));
        l.end_read(&c, t0, None);
        assert_eq!(l.max_in_flight("u"), 2);
        assert_eq!((l.reads_total(), l.reads_rejected()), (3, 1));
        let log = l.read_log("u");
        let paths: Vec<&str> = log.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/a", "/b", "/c"]);
        assert!(log[0].rate_limited);
        assert_eq!(log[1].status, Some(200));
        assert_eq!(log[2].answered, None, "abandoned");
        l.reset_reads();
        assert!(l.read_log("u").is_empty());
        assert_eq!((l.reads_total(), l.max_in_flight("u")), (0, 0));
    }
}
