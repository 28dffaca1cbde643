//! The Kaiku server's rules that both reference models apply: the deterministic simulation
//! (`core/tests/simulation.rs`) and the fuzz [`World`](super::World). Written once, so a rule
//! added to one cannot be missing from the other.
//!
//! What is here, each as Kaiku does it:
//! - the clock: [`SERVER_EPOCH`], [`created_at`], [`http_date`], [`date`];
//! - a socket's session: [`Session`] (subscriptions that take effect at the frame, so a
//!   broadcast can overtake a late `subscribed`; the replies to every client frame);
//! - tokens: [`Tokens`] (access tokens that expire, refresh tokens that rotate);
//! - the write limit: [`ReadLimiter`] (Kaiku's `write` category: history reads and the app's
//!   posts spend one window; Kaiku's header rounding and a limiter store that is down, issue
//!   21);
//! - a `subscribe`'s other answers ([`Verdict`]): a transient `forbidden` (a database error in
//!   the permission check, [`DbErrors`]) and the unnamed `message_error` when
//!   looking the channel up fails;
//! - uploads ([`attach`]) and thread replies ([`thread_reply_new`]);
//! - the shapes: [`Message`], [`message_new`], [`history_body`], [`page_limit`];
//! - how a history read is answered: [`history_page`] under [`HistoryRules`] (Kaiku's
//!   blocked-author filter, an older server's clamped `limit`, a `before` cursor resolved by
//!   a subquery).
//!
//! Time here is the model's own: a `Duration` since the run's start.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::{Credentials, RefreshError, Timestamp};

/// What the app is promised of each window of the budget history shares with its posts
/// (D74): this many requests, at most a quarter of the window's limit. The models hold the
/// core to this figure, not to the core's own configuration: a core that keeps no reserve
/// fails them.
pub const APP_RESERVE: u32 = 5;

/// The app's share of a window of `limit` requests ([`APP_RESERVE`]).
pub fn app_reserve(limit: u32) -> u32 {
    APP_RESERVE.min(limit / 4)
}

/// The server's clock at a run's start, in Unix seconds: 2026-11-25T17:00:00Z.
pub const SERVER_EPOCH: u64 = 1_795_626_000;

/// The server's clock `at` into the run, in Unix nanoseconds.
pub fn wall_nanos(at: Duration) -> i64 {
    let since = i64::try_from(at.as_nanos()).unwrap_or(i64::MAX / 4);
    (SERVER_EPOCH as i64)
        .saturating_mul(1_000_000_000)
        .saturating_add(since)
}

/// A message's `created_at` stamped `at` into the run: RFC 3339, microseconds, `Z`.
pub fn created_at(at: Duration) -> String {
    Timestamp::from_unix_nanos(wall_nanos(at)).to_rfc3339()
}

/// The database's clock, which stamps `created_at` (Kaiku: Postgres `DEFAULT NOW()`, on the
/// database host): another host than the app server that writes `Date`, so it reads the app
/// server's clock ([`wall_nanos`]) plus an offset of its own and a slow drift.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageClock {
    /// How far ahead of the app server's clock it is at the run's start (negative: behind).
    pub offset_nanos: i64,
    /// It gains this many millionths of the time elapsed (negative: loses).
    pub drift_ppm: i64,
    /// Stepped once (NTP `makestep`, a VM moved to another host): from this instant of the
    /// run on it reads this many nanoseconds more (negative: stepped back).
    pub step: Option<(Duration, i64)>,
}

impl MessageClock {
    /// Its reading `at` into the run, in Unix nanoseconds.
    pub fn at(&self, at: Duration) -> i64 {
        let millis = i64::try_from(at.as_millis()).unwrap_or(i64::MAX / 4);
        let stepped = self
            .step
            .filter(|(when, _)| at >= *when)
            .map_or(0, |(_, by)| by);
        wall_nanos(at)
            .saturating_add(self.offset_nanos)
            .saturating_add(millis.saturating_mul(self.drift_ppm))
            .saturating_add(stepped)
    }
}

/// The HTTP `Date` header at whole second `secs` of the run (Kaiku's clock rounded down).
pub fn http_date(secs: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(SERVER_EPOCH + secs))
}

/// The `Date` of whole second `secs`, as a driver reports it to the core.
pub fn date(secs: u64) -> Timestamp {
    let secs = i64::try_from(SERVER_EPOCH.saturating_add(secs)).unwrap_or(i64::MAX / 4);
    Timestamp::from_unix_nanos(secs.saturating_mul(1_000_000_000))
}

/// The `ready` frame Kaiku sends once it has loaded the user's state.
pub fn ready(user_id: &str) -> String {
    format!(r#"{{"type":"ready","user_id":"{user_id}"}}"#)
}

/// The error Kaiku answers a `subscribe` to a channel it refuses with (as recorded: it names
/// no channel).
pub const CHANNEL_NOT_FOUND: &str =
    r#"{"type":"error","code":"channel_not_found","message":"Channel not found"}"#;

/// What Kaiku answers a `subscribe` when its permission check meets a database error (and to
/// a channel the user may not read): `forbidden`, naming no channel.
pub const FORBIDDEN: &str =
    r#"{"type":"error","code":"forbidden","message":"You do not have access to this channel"}"#;

/// What Kaiku answers a frame whose handling failed (here: looking a `subscribe`'s channel up
/// met a database error): the unnamed `message_error`, and nothing else for that frame.
pub const MESSAGE_ERROR: &str =
    r#"{"type":"error","code":"message_error","message":"Database error"}"#;

/// How the server answers one `subscribe` (issue 21: Kaiku's answers besides `subscribed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The subscription takes effect: `subscribed`.
    Accept,
    /// No such channel: [`CHANNEL_NOT_FOUND`].
    NotFound,
    /// A database error in the permission check: [`FORBIDDEN`], though the channel is
    /// allowed (transient: [`DbErrors`]).
    Forbidden,
    /// Looking the channel up failed: [`MESSAGE_ERROR`], the subscription does not take effect
    /// and nothing else answers the frame.
    LookupFailed,
}

/// The database errors Kaiku meets while handling a `subscribe` (issue 21): its permission
/// check answers `forbidden` on an error ([`Verdict::Forbidden`]), and looking the channel up
/// answers the unnamed `message_error` ([`Verdict::LookupFailed`]). Database errors are
/// transient: a channel never meets two in a row (the `subscribe` after an error is answered
/// truly, however late it comes) nor two within `gap` (longer than the client's
/// `refusal_confirm_delay`), so a client that asks again after its confirm delay gets the
/// true answer.
#[derive(Clone, Debug)]
pub struct DbErrors {
    gap: Duration,
    last: BTreeMap<String, Duration>,
    /// Channels whose latest `subscribe` met an error.
    erred: BTreeSet<String>,
    /// `forbidden`s given for allowed channels.
    pub forbidden: u64,
    /// `message_error`s given.
    pub lookups: u64,
}

impl DbErrors {
    /// No error yet; two errors for one channel at least `gap` apart.
    pub fn new(gap: Duration) -> Self {
        Self {
            gap,
            last: BTreeMap::new(),
            erred: BTreeSet::new(),
            forbidden: 0,
            lookups: 0,
        }
    }

    /// How the `subscribe` of allowed `channel` handled at `now` is answered, given what the
    /// dice said of a failed lookup (`lookup`) and of a failed permission check (`forbid`):
    /// an error only if the channel's previous `subscribe` met none, nor any within the gap.
    pub fn verdict(&mut self, channel: &str, now: Duration, lookup: bool, forbid: bool) -> Verdict {
        let recent = self
            .last
            .get(channel)
            .is_some_and(|at| now < *at + self.gap);
        let in_a_row = self.erred.remove(channel);
        if in_a_row || recent || !(lookup || forbid) {
            return Verdict::Accept;
        }
        self.erred.insert(channel.to_owned());
        self.last.insert(channel.to_owned(), now);
        if lookup {
            self.lookups += 1;
            Verdict::LookupFailed
        } else {
            self.forbidden += 1;
            Verdict::Forbidden
        }
    }
}

/// One socket's session on the server: the channels it is subscribed to.
///
/// Kaiku handles a socket's frames in order. A `subscribe` takes effect when its frame is
/// handled: from then on the channel's broadcasts reach the socket, while the `subscribed`
/// reply may leave later (the recorded server registers and replies under two locks), so a
/// broadcast can overtake it. Replies keep their order among themselves.
#[derive(Clone, Debug, Default)]
pub struct Session {
    channels: BTreeSet<String>,
}

/// What the server did with one client frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Handled {
    /// The reply frame, if the frame has one.
    pub reply: Option<String>,
    /// The frame was a `subscribe` to this channel, accepted: its broadcasts reach the
    /// socket from now on (whether or not they did before).
    pub subscribed: Option<String>,
    /// The frame was a `subscribe` the server refused.
    pub refused: bool,
    /// The frame was a `subscribe` answered [`Verdict::Forbidden`] or
    /// [`Verdict::LookupFailed`]: the channel is allowed, the server failed.
    pub failed: Option<Verdict>,
}

impl Session {
    /// A new socket's session: no channel.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles client frame `text` as Kaiku does. A `subscribe` to a channel `admits` takes
    /// effect now and is answered `subscribed`; any other is answered [`CHANNEL_NOT_FOUND`].
    /// `unsubscribe` ends the subscription (`unsubscribed`), `ping` gets `pong`, `set_status`
    /// a `presence_update` for `user_id`; the rest (typing, voice, custom events) gets no reply.
    /// A frame that is not JSON gets nothing.
    pub fn handle(
        &mut self,
        text: &str,
        user_id: &str,
        admits: impl FnOnce(&str) -> bool,
    ) -> Handled {
        self.handle_verdict(text, user_id, |c| {
            if admits(c) {
                Verdict::Accept
            } else {
                Verdict::NotFound
            }
        })
    }

    /// As [`Session::handle`], with every answer Kaiku gives a `subscribe`: `verdict` decides
    /// (a transient [`FORBIDDEN`], a [`MESSAGE_ERROR`] that leaves the socket unsubscribed).
    pub fn handle_verdict(
        &mut self,
        text: &str,
        user_id: &str,
        verdict: impl FnOnce(&str) -> Verdict,
    ) -> Handled {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
            return Handled::default();
        };
        let channel = v["channel_id"].as_str().unwrap_or_default();
        let mut handled = Handled::default();
        handled.reply = match v["type"].as_str().unwrap_or_default() {
            "subscribe" => match verdict(channel) {
                Verdict::Accept => {
                    self.channels.insert(channel.to_owned());
                    handled.subscribed = Some(channel.to_owned());
                    Some(format!(
                        r#"{{"type":"subscribed","channel_id":"{channel}"}}"#
                    ))
                }
                Verdict::NotFound => {
                    handled.refused = true;
                    Some(CHANNEL_NOT_FOUND.to_owned())
                }
                Verdict::Forbidden => {
                    handled.refused = true;
                    handled.failed = Some(Verdict::Forbidden);
                    Some(FORBIDDEN.to_owned())
                }
                Verdict::LookupFailed => {
                    handled.failed = Some(Verdict::LookupFailed);
                    Some(MESSAGE_ERROR.to_owned())
                }
            },
            "unsubscribe" => {
                self.channels.remove(channel);
                Some(format!(
                    r#"{{"type":"unsubscribed","channel_id":"{channel}"}}"#
                ))
            }
            "ping" => Some(r#"{"type":"pong"}"#.to_owned()),
            "set_status" => Some(format!(
                r#"{{"type":"presence_update","user_id":"{user_id}","status":"{}"}}"#,
                v["status"].as_str().unwrap_or("online")
            )),
            _ => None,
        };
        handled
    }

    /// Whether the channel's broadcasts reach this socket.
    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.channels.contains(channel)
    }
}

/// Kaiku's tokens: an access token lives `life` (the server refuses it after that, whatever
/// the client was told); a refresh token works once, since a refresh rotates it (the old
/// session is deleted in the same transaction).
#[derive(Clone, Debug)]
pub struct Tokens {
    life: Duration,
    /// Tell clients a near-infinite lifetime on one token in ten (a careless server): the
    /// client then learns of the expiry from a 401.
    overclaim: bool,
    /// Valid access tokens and their expiry.
    access: BTreeMap<String, Duration>,
    /// Refresh tokens not used yet.
    refresh: BTreeSet<String>,
    issued: u64,
}

impl Tokens {
    /// No token issued yet.
    pub fn new(life: Duration, overclaim: bool) -> Self {
        Self {
            life,
            overclaim,
            access: BTreeMap::new(),
            refresh: BTreeSet::new(),
            issued: 0,
        }
    }

    /// `POST /auth/login` at `now`: a new token pair.
    pub fn login(&mut self, now: Duration) -> Credentials {
        self.pair(now)
    }

    /// `POST /auth/refresh` at `now`: a new pair for a refresh token never used, which
    /// is used up; anything else is rejected.
    pub fn refresh(
        &mut self,
        refresh_token: &str,
        now: Duration,
    ) -> Result<Credentials, RefreshError> {
        if self.refresh.remove(refresh_token) {
            Ok(self.pair(now))
        } else {
            Err(RefreshError::Rejected)
        }
    }

    /// Ends the session of `refresh_token` (a logout elsewhere): it is rejected from now on.
    pub fn revoke(&mut self, refresh_token: &str) {
        self.refresh.remove(refresh_token);
    }

    /// Every access token issued so far is refused from now on (a server whose clock jumped,
    /// keys rotated): clients learn it from a 401.
    pub fn expire_access(&mut self) {
        self.access.clear();
    }

    /// Every session ends (a logout everywhere): no refresh token issued so far works.
    pub fn revoke_all(&mut self) {
        self.refresh.clear();
    }

    fn pair(&mut self, now: Duration) -> Credentials {
        self.issued += 1;
        let n = self.issued;
        let (access, refresh) = (format!("eyJ.access-{n}.sig"), format!("refresh-{n}"));
        self.access.insert(access.clone(), now + self.life);
        self.refresh.insert(refresh.clone());
        let claimed = if self.overclaim && n % 10 == 3 {
            Duration::MAX
        } else {
            self.life
        };
        Credentials::new(access)
            .with_refresh_token(refresh)
            .with_expires_in(claimed)
    }

    /// Whether `access` is a token this server issued that has not expired at `now`.
    pub fn is_valid(&self, access: Option<&str>, now: Duration) -> bool {
        access
            .and_then(|t| self.access.get(t))
            .is_some_and(|expiry| now < *expiry)
    }

    /// The access token an upgrade carries in `Sec-WebSocket-Protocol` (the
    /// `access_token.<token>` entry).
    pub fn of_protocols<'a>(protocols: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
        protocols
            .into_iter()
            .find_map(|p| p.strip_prefix("access_token."))
    }
}

/// Kaiku's per-user limit on its `write` category, which history reads share with the app's
/// posts (the README's correction): a fixed window that starts with the first request after
/// the previous window ended and lasts `window`; at most `budget` requests are counted in it.
/// A request over the budget is refused with 429 and `Retry-After` (whole seconds left, at
/// least one) and is not counted. Counted answers carry `x-ratelimit-limit`,
/// `x-ratelimit-remaining` and `x-ratelimit-reset` (the window's end, epoch seconds rounded
/// up) when `headers` is on. [`ReadLimiter::kaiku_rounding`] and
/// [`ReadLimiter::store_down`] add the real server's quirks (issue 21).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimit {
    /// Reads counted per window.
    pub budget: u32,
    /// The window's length.
    pub window: Duration,
    /// Counted answers announce the budget in headers.
    pub headers: bool,
}

/// The limiter's verdict on one read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Counted in `window` (windows are numbered from 1 in the order they start): reads left,
    /// and the window's end in whole seconds since the run's start, rounded up.
    Counted {
        /// The window's number.
        window: u64,
        /// Reads left in it.
        remaining: u32,
        /// Its end, whole seconds since the run's start, rounded up.
        reset: u64,
    },
    /// The budget of `window` is spent: 429, `Retry-After: retry_after` seconds.
    Refused {
        /// The window's number.
        window: u64,
        /// Whole seconds until it ends, at least one (with Kaiku's rounding: rounded to the
        /// nearest, so possibly 0).
        retry_after: u64,
    },
    /// The limiter's store (Kaiku: Redis) is down and `fail_open` is off: 503 without
    /// `Retry-After`, nothing counted.
    StoreDown,
}

/// Kaiku's read limiter, as both models run it.
#[derive(Clone, Debug)]
pub struct ReadLimiter {
    limit: ReadLimit,
    /// The current window: its number, start and reads counted.
    current: Option<(u64, Duration, u32)>,
    /// Windows started so far.
    windows: u64,
    /// Windows whose whole budget was counted.
    budgets_spent: u64,
    /// Kaiku's rounding of the headers.
    kaiku: bool,
    /// Periods (from, until) when the limiter's store is down.
    outages: Vec<(Duration, Duration)>,
}

impl ReadLimiter {
    /// No read counted yet.
    pub fn new(limit: ReadLimit) -> Self {
        Self {
            limit,
            current: None,
            windows: 0,
            budgets_spent: 0,
            kaiku: false,
            outages: Vec::new(),
        }
    }

    /// Kaiku's header arithmetic (issue 21): it reads the window key's TTL in whole seconds, so
    /// `x-ratelimit-reset` is `floor(now) + round(TTL)` (up to 1.5 s before the window truly
    /// ends) and `Retry-After` is `round(TTL)`, which can be 0.
    pub fn kaiku_rounding(mut self) -> Self {
        self.kaiku = true;
        self
    }

    /// The limiter's store is down from `from` until `until`: every request then answers 503
    /// without `Retry-After` (Kaiku with Redis down and `fail_open` off).
    pub fn store_down(mut self, from: Duration, until: Duration) -> Self {
        self.outages.push((from, until));
        self
    }

    /// Whether the store is down at `now`.
    pub fn is_store_down(&self, now: Duration) -> bool {
        self.outages.iter().any(|(a, b)| *a <= now && now < *b)
    }

    /// When the current window truly ends, if one has started.
    pub fn window_end(&self) -> Option<(u64, Duration)> {
        self.current
            .map(|(id, start, _)| (id, start + self.limit.window))
    }

    /// The limit it applies.
    pub fn limit(&self) -> ReadLimit {
        self.limit
    }

    /// Counts a read arriving at `now` against the budget.
    pub fn admit(&mut self, now: Duration) -> Admission {
        if self.is_store_down(now) {
            return Admission::StoreDown;
        }
        let limit = self.limit;
        let (window, start, count) = match self.current {
            Some((id, start, count)) if now < start + limit.window => (id, start, count),
            _ => {
                self.windows += 1;
                (self.windows, now, 0)
            }
        };
        let ends = start + limit.window;
        let ttl = ends.saturating_sub(now);
        if count >= limit.budget {
            self.current = Some((window, start, count));
            let retry_after = if self.kaiku {
                round_secs(ttl)
            } else {
                ceil_secs(ttl).max(1)
            };
            return Admission::Refused {
                window,
                retry_after,
            };
        }
        let count = count + 1;
        self.current = Some((window, start, count));
        self.budgets_spent += u64::from(count == limit.budget);
        let reset = if self.kaiku {
            now.as_secs() + round_secs(ttl)
        } else {
            ceil_secs(ends)
        };
        Admission::Counted {
            window,
            remaining: limit.budget - count,
            reset,
        }
    }

    /// Windows started so far.
    pub fn windows(&self) -> u64 {
        self.windows
    }

    /// Windows whose whole budget was counted.
    pub fn budgets_spent(&self) -> u64 {
        self.budgets_spent
    }
}

/// A chat message, for the two shapes Kaiku writes it in. `content` is already escaped for a
/// JSON string; `created_at` is RFC 3339 with microseconds (`Timestamp::to_rfc3339`).
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    /// The message id.
    pub id: &'a str,
    /// Its channel.
    pub channel_id: &'a str,
    /// The author: id, username, display name.
    pub author: (&'a str, &'a str, &'a str),
    /// The text, JSON-escaped.
    pub content: &'a str,
    /// When it was created.
    pub created_at: &'a str,
}

impl Message<'_> {
    fn author_json(&self) -> String {
        let (id, username, display) = self.author;
        format!(
            r#"{{"avatar_url":null,"display_name":"{display}","id":"{id}","status":"online","username":"{username}"}}"#
        )
    }

    /// As the socket sends it in `message_new`: keys in alphabetical order, with
    /// `mention_type` (as recorded from the real server).
    pub fn live(&self) -> String {
        let Self {
            id,
            channel_id,
            content,
            created_at,
            ..
        } = self;
        let author = self.author_json();
        format!(
            r#"{{"attachments":[],"author":{author},"channel_id":"{channel_id}","content":"{content}","created_at":"{created_at}","edited_at":null,"encrypted":false,"id":"{id}","mention_type":null,"message_type":"user","parent_id":null,"pinned":false,"reply_to":null,"thread_last_reply_at":null,"thread_reply_count":0}}"#
        )
    }

    /// As a REST history page returns it: the model's field order, no `mention_type`.
    pub fn rest(&self) -> String {
        let Self {
            id,
            channel_id,
            content,
            created_at,
            ..
        } = self;
        let author = self.author_json();
        format!(
            r#"{{"id":"{id}","channel_id":"{channel_id}","author":{author},"content":"{content}","encrypted":false,"attachments":[],"reply_to":null,"parent_id":null,"thread_reply_count":0,"thread_last_reply_at":null,"edited_at":null,"created_at":"{created_at}","pinned":false,"message_type":"user"}}"#
        )
    }
}

/// The `message_new` frame that carries a message in its live shape.
pub fn message_new(channel_id: &str, live: &str) -> String {
    format!(r#"{{"type":"message_new","channel_id":"{channel_id}","message":{live}}}"#)
}

/// A stored message, as a history read sees it.
pub trait Stored {
    /// Its id (a `before` cursor names it).
    fn id(&self) -> &str;
    /// Its JSON in the REST shape ([`Message::rest`]).
    fn rest(&self) -> &str;
    /// Deleted: left out of history, still usable as a cursor (a soft delete).
    fn is_deleted(&self) -> bool {
        false
    }
    /// Its `created_at`, as history orders by it (Unix nanoseconds of the *message* clock,
    /// stamped when the inserting transaction began). Unique within a channel.
    fn created(&self) -> i64;
    /// Whether its transaction had committed at `now` (the model's time): only committed
    /// messages are in history.
    fn is_visible(&self, now: Duration) -> bool {
        let _ = now;
        true
    }
    /// Its author's id (history leaves out the authors the reader blocked).
    fn author(&self) -> &str {
        ""
    }
}

/// How a server answers history reads, beyond the shape. The default is Kaiku as the
/// project's decisions describe it (D61): deleted messages left out and still usable as
/// cursors, a 400 for an unknown cursor, `limit` clamped to 1..=100, nobody blocked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryRules {
    /// `{items, has_more, next_cursor}` (current Kaiku), else a bare array.
    pub envelope: bool,
    /// The reader blocked this author: as Kaiku's `chat/messages.rs`, the server reads
    /// `limit + 1` rows, drops this author's, and computes `has_more` after the filter, so a
    /// page with one of them says `has_more: false` (and no `next_cursor`) while older
    /// messages exist.
    pub blocked_author: Option<&'static str>,
    /// An older server answers at most this many items, whatever `limit` asked.
    pub max_limit: Option<u32>,
    /// `before` is resolved by `created_at < (SELECT created_at FROM messages WHERE id =
    /// $1)` over rows that exist (a hard delete): for a deleted or unknown cursor the
    /// subquery is NULL and the page is empty, with `has_more: false`.
    pub cursor_subquery: bool,
}

/// Kaiku's `GET /api/messages/channel/{id}?limit=&before=` over one channel's messages at
/// `now`: as Kaiku's `ORDER BY created_at DESC`, the newest [`page_limit`]`(limit)` committed,
/// not deleted messages whose `created_at` is older than `before`'s (or all), newest first,
/// with the page's oldest id as `next_cursor` when older ones remain ([`history_body`]). A
/// `before` that names no message of the channel is a 400. `list` may be in any order (ids
/// are random: only `created_at` orders). `rules` turns the server's doubts on
/// ([`HistoryRules`]).
pub fn history_page<M: Stored>(
    list: &[M],
    before: Option<&str>,
    limit: u32,
    rules: HistoryRules,
    now: Duration,
) -> Result<String, u16> {
    let below = match (before, rules.cursor_subquery) {
        (None, _) => None,
        (Some(b), false) => Some(list.iter().find(|m| m.id() == b).ok_or(400_u16)?.created()),
        (Some(b), true) => match list.iter().find(|m| m.id() == b && !m.is_deleted()) {
            Some(m) => Some(m.created()),
            // `created_at < NULL` holds for no row.
            None => return Ok(history_body([], None, rules.envelope)),
        },
    };
    let mut older: Vec<&M> = list
        .iter()
        .filter(|m| !m.is_deleted() && m.is_visible(now))
        .filter(|m| below.is_none_or(|b| m.created() < b))
        .collect();
    older.sort_by_key(|m| std::cmp::Reverse(m.created()));
    let n = rules
        .max_limit
        .map_or(page_limit(limit), |max| page_limit(limit.min(max)));
    // `limit + 1` rows, then the blocked author's left out: `has_more` after the filter.
    older.truncate(n + 1);
    older.retain(|m| rules.blocked_author.is_none_or(|a| m.author() != a));
    let has_more = older.len() > n;
    older.truncate(n);
    let cursor = older.last().filter(|_| has_more).map(|m| m.id());
    Ok(history_body(
        older.iter().map(|m| m.rest()),
        cursor,
        rules.envelope,
    ))
}

/// Kaiku clamps a history read's `?limit=` to 1..=100.
pub fn page_limit(asked: u32) -> usize {
    asked.clamp(1, 100) as usize
}

/// The body of a history answer, newest first: `{items, has_more, next_cursor}` (current
/// Kaiku, `next_cursor` only when there is more: the oldest item's id) or, from an older
/// server, a bare array.
pub fn history_body<'a>(
    items: impl IntoIterator<Item = &'a str>,
    next_cursor: Option<&str>,
    envelope: bool,
) -> String {
    let body = items.into_iter().collect::<Vec<_>>().join(",");
    if !envelope {
        return format!("[{body}]");
    }
    let has_more = next_cursor.is_some();
    let cursor = next_cursor.map_or_else(String::new, |id| format!(r#","next_cursor":"{id}""#));
    format!(r#"{{"items":[{body}],"has_more":{has_more}{cursor}}}"#)
}

/// Whole seconds in `d`, rounded up (Kaiku's `Retry-After` and `x-ratelimit-reset`).
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Whole seconds in `d`, rounded to the nearest (Redis' `TTL` as Kaiku reads it).
pub fn round_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() >= 500_000_000)
}

/// `json` (a message in either shape, written with `"attachments":[]`) with one attachment:
/// an upload's message once its file is stored (issue 21: Kaiku inserts the message, stores
/// the file, then broadcasts; history shows `[]` until then).
pub fn attach(json: &str, file_id: &str) -> String {
    json.replacen(
        r#""attachments":[]"#,
        &format!(
            r#""attachments":[{{"filename":"photo.png","id":"{file_id}","mime_type":"image/png","size":48213,"url":"/api/messages/attachments/{file_id}"}}]"#
        ),
        1,
    )
}

/// Whether a message's JSON (either shape) carries an attachment.
pub fn has_attachment(json: &str) -> bool {
    json.contains(r#""attachments":[{"#)
}

/// Kaiku's broadcast of a thread reply (issue 21): `live` replies to `parent_id`; it is not in
/// channel history, and a catch-up does not cover it.
pub fn thread_reply_new(channel_id: &str, parent_id: &str, live: &str) -> String {
    format!(
        r#"{{"type":"thread_reply_new","channel_id":"{channel_id}","parent_id":"{parent_id}","message":{live}}}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const BARE: HistoryRules = HistoryRules {
        envelope: false,
        blocked_author: None,
        max_limit: None,
        cursor_subquery: false,
    };
    const ENVELOPE: HistoryRules = HistoryRules {
        envelope: true,
        ..BARE
    };

    #[test]
    fn the_epoch_is_the_date_it_names() {
        let t = crate::Timestamp::parse("2026-11-25T17:00:00Z").map(crate::Timestamp::unix_nanos);
        assert_eq!(t, Some(SERVER_EPOCH as i64 * 1_000_000_000));
    }

    #[test]
    fn a_subscribe_takes_effect_at_its_frame_and_replies_keep_order() {
        let mut s = Session::new();
        let h = s.handle(r#"{"type":"subscribe","channel_id":"a"}"#, "me", |_| true);
        assert_eq!(h.subscribed.as_deref(), Some("a"));
        assert!(s.is_subscribed("a"));
        assert_eq!(
            h.reply.as_deref(),
            Some(r#"{"type":"subscribed","channel_id":"a"}"#)
        );
        // Subscribing again is answered again.
        let again = s.handle(r#"{"type":"subscribe","channel_id":"a"}"#, "me", |_| true);
        assert_eq!(
            (again.subscribed.as_deref(), again.refused),
            (Some("a"), false)
        );
        let refused = s.handle(r#"{"type":"subscribe","channel_id":"x"}"#, "me", |_| false);
        assert!(refused.refused && !s.is_subscribed("x"));
        assert_eq!(refused.reply.as_deref(), Some(CHANNEL_NOT_FOUND));
        let h = s.handle(r#"{"type":"unsubscribe","channel_id":"a"}"#, "me", |_| true);
        assert!(!s.is_subscribed("a"));
        assert_eq!(
            h.reply.as_deref(),
            Some(r#"{"type":"unsubscribed","channel_id":"a"}"#)
        );
        let ping = s.handle(r#"{"type":"ping"}"#, "me", |_| true);
        assert_eq!(ping.reply.as_deref(), Some(r#"{"type":"pong"}"#));
        assert_eq!(s.handle("{", "me", |_| true), Handled::default());
        assert_eq!(
            s.handle(r#"{"type":"typing","channel_id":"a"}"#, "me", |_| true)
                .reply,
            None
        );
    }

    #[test]
    fn access_tokens_expire_and_refresh_tokens_work_once() {
        let mut t = Tokens::new(900 * S, false);
        let first = t.login(Duration::ZERO);
        let access = first.access_token.expose().to_owned();
        assert!(t.is_valid(Some(&access), 899 * S));
        assert!(!t.is_valid(Some(&access), 900 * S));
        assert!(!t.is_valid(None, S) && !t.is_valid(Some("forged"), S));
        let refresh = first
            .refresh_token
            .as_ref()
            .map(|r| r.expose().to_owned())
            .unwrap();
        let second = t
            .refresh(&refresh, 10 * S)
            .expect("a fresh refresh token works");
        assert_ne!(second.refresh_token, first.refresh_token, "rotated");
        assert!(
            matches!(t.refresh(&refresh, 11 * S), Err(RefreshError::Rejected)),
            "used up"
        );
        let next = second
            .refresh_token
            .as_ref()
            .map(|r| r.expose().to_owned())
            .unwrap();
        t.revoke(&next);
        assert!(
            matches!(t.refresh(&next, 12 * S), Err(RefreshError::Rejected)),
            "revoked"
        );
        let protocols = ["access_token.eyJ.a.b", "access_token"];
        assert_eq!(Tokens::of_protocols(protocols), Some("eyJ.a.b"));
    }

    #[test]
    fn the_clock_stamps_messages_and_dates() {
        assert_eq!(
            created_at(Duration::from_micros(1_500_001)),
            "2026-11-25T17:00:01.500001Z"
        );
        assert_eq!(http_date(61), "Wed, 25 Nov 2026 17:01:01 GMT");
        assert_eq!(
            date(1).unix_nanos(),
            (SERVER_EPOCH as i64 + 1) * 1_000_000_000
        );
    }

    struct M(&'static str, &'static str, bool);

    impl Stored for M {
        fn id(&self) -> &str {
            self.0
        }
        fn rest(&self) -> &str {
            self.1
        }
        fn is_deleted(&self) -> bool {
            self.2
        }
        fn created(&self) -> i64 {
            self.1.parse().unwrap()
        }
    }

    #[test]
    fn history_pages_walk_back_past_deleted_messages() {
        let list = [
            M("m1", "1", false),
            M("m2", "2", true),
            M("m3", "3", false),
            M("m4", "4", false),
        ];
        let first = history_page(&list, None, 2, ENVELOPE, Duration::ZERO);
        assert_eq!(
            first.as_deref(),
            Ok(r#"{"items":[4,3],"has_more":true,"next_cursor":"m3"}"#)
        );
        // The deleted m2 is skipped; m1 is the last page.
        let next = history_page(&list, Some("m3"), 2, ENVELOPE, Duration::ZERO);
        assert_eq!(next.as_deref(), Ok(r#"{"items":[1],"has_more":false}"#));
        // A deleted message still works as a cursor.
        assert_eq!(
            history_page(&list, Some("m2"), 5, BARE, Duration::ZERO).as_deref(),
            Ok("[1]")
        );
        assert_eq!(
            history_page(&list, Some("nope"), 5, BARE, Duration::ZERO),
            Err(400)
        );
    }

    #[test]
    fn history_orders_by_created_at_and_shows_only_committed_messages() {
        struct T(&'static str, &'static str, i64, Duration);
        impl Stored for T {
            fn id(&self) -> &str {
                self.0
            }
            fn rest(&self) -> &str {
                self.1
            }
            fn created(&self) -> i64 {
                self.2
            }
            fn is_visible(&self, now: Duration) -> bool {
                self.3 <= now
            }
        }
        // Stored in start order; m2's transaction began before m3's and commits after it.
        let list = [
            T("m1", "1", 10, S),
            T("m2", "2", 20, 5 * S),
            T("m3", "3", 30, 3 * S),
        ];
        let at = |now| history_page(&list, None, 5, BARE, now);
        assert_eq!(at(4 * S).as_deref(), Ok("[3,1]"), "m2 not committed yet");
        assert_eq!(
            at(5 * S).as_deref(),
            Ok("[3,2,1]"),
            "by created_at, not commit"
        );
        assert_eq!(
            history_page(&list, Some("m3"), 1, ENVELOPE, 5 * S).as_deref(),
            Ok(r#"{"items":[2],"has_more":true,"next_cursor":"m2"}"#)
        );
        let clock = MessageClock {
            offset_nanos: -5_000_000_000,
            drift_ppm: 100,
            step: None,
        };
        assert_eq!(
            clock.at(1_000 * S),
            wall_nanos(1_000 * S) - 5_000_000_000 + 100_000_000
        );
    }

    struct A(&'static str, i64, &'static str, bool);

    impl Stored for A {
        fn id(&self) -> &str {
            self.0
        }
        fn rest(&self) -> &str {
            self.0
        }
        fn created(&self) -> i64 {
            self.1
        }
        fn author(&self) -> &str {
            self.2
        }
        fn is_deleted(&self) -> bool {
            self.3
        }
    }

    #[test]
    fn a_blocked_author_in_the_extra_row_makes_has_more_lie() {
        let list = [
            A("1", 1, "bob", false),
            A("2", 2, "eve", false),
            A("3", 3, "bob", false),
            A("4", 4, "bob", false),
        ];
        let rules = HistoryRules {
            blocked_author: Some("eve"),
            ..ENVELOPE
        };
        // Rows 4, 3, 2 read; eve's 2 dropped: two left, no more (but 1 exists).
        assert_eq!(
            history_page(&list, None, 2, rules, Duration::ZERO).as_deref(),
            Ok(r#"{"items":[4,3],"has_more":false}"#)
        );
        assert_eq!(
            history_page(&list, Some("3"), 2, rules, Duration::ZERO).as_deref(),
            Ok(r#"{"items":[1],"has_more":false}"#)
        );
    }

    #[test]
    fn an_older_server_clamps_limit_and_a_subquery_cursor_can_vanish() {
        let list = [
            A("1", 1, "bob", false),
            A("2", 2, "bob", true),
            A("3", 3, "bob", false),
            A("4", 4, "bob", false),
        ];
        let clamped = HistoryRules {
            max_limit: Some(1),
            ..BARE
        };
        assert_eq!(
            history_page(&list, None, 50, clamped, Duration::ZERO).as_deref(),
            Ok("[4]")
        );
        let subquery = HistoryRules {
            cursor_subquery: true,
            ..ENVELOPE
        };
        assert_eq!(
            history_page(&list, Some("2"), 5, subquery, Duration::ZERO).as_deref(),
            Ok(r#"{"items":[],"has_more":false}"#),
            "a deleted cursor: NULL, an empty last page"
        );
        assert_eq!(
            history_page(&list, Some("3"), 5, subquery, Duration::ZERO).as_deref(),
            Ok(r#"{"items":[1],"has_more":false}"#)
        );
        let stepped = MessageClock {
            step: Some((10 * S, -60_000_000_000)),
            ..MessageClock::default()
        };
        assert_eq!(stepped.at(11 * S), wall_nanos(11 * S) - 60_000_000_000);
        assert_eq!(stepped.at(9 * S), wall_nanos(9 * S));
    }

    #[test]
    fn history_bodies_in_both_shapes() {
        assert_eq!(history_body(["{}", "{}"], None, false), "[{},{}]");
        assert_eq!(
            history_body(["{}"], Some("m1"), true),
            r#"{"items":[{}],"has_more":true,"next_cursor":"m1"}"#
        );
        assert_eq!(
            history_body([], None, true),
            r#"{"items":[],"has_more":false}"#
        );
        assert_eq!((page_limit(0), page_limit(500)), (1, 100));
    }

    #[test]
    fn a_fixed_window_from_the_first_read_counts_the_budget_then_refuses() {
        let mut l = ReadLimiter::new(ReadLimit {
            budget: 2,
            window: 10 * S,
            headers: true,
        });
        let half = Duration::from_millis(500);
        assert_eq!(
            l.admit(3 * S + half),
            Admission::Counted {
                window: 1,
                remaining: 1,
                reset: 14
            }
        );
        assert_eq!(
            l.admit(4 * S),
            Admission::Counted {
                window: 1,
                remaining: 0,
                reset: 14
            }
        );
        assert_eq!(
            l.admit(12 * S),
            Admission::Refused {
                window: 1,
                retry_after: 2
            }
        );
        assert_eq!(l.budgets_spent(), 1);
        // The next window starts with the first read after this one ended.
        assert_eq!(
            l.admit(20 * S),
            Admission::Counted {
                window: 2,
                remaining: 1,
                reset: 30
            }
        );
        assert_eq!(l.windows(), 2);
    }
}
