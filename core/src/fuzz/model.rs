//! The Kaiku server's rules that both reference models apply: the deterministic simulation
//! (`core/tests/simulation.rs`) and the fuzz [`World`](super::World). Written once, so a rule
//! added to one cannot be missing from the other.
//!
//! Time here is the model's own: a `Duration` since the run's start.

use std::time::Duration;

/// The server's clock at a run's start, in Unix seconds: 2026-11-25T17:00:00Z.
pub const SERVER_EPOCH: u64 = 1_795_626_000;

/// Kaiku's per-user limit on REST reads: a fixed window that starts with the first read after
/// the previous window ended and lasts `window`; at most `budget` reads are counted in it. A
/// read over the budget is refused with 429 and `Retry-After` (whole seconds left, at least
/// one) and is not counted. Counted answers carry `x-ratelimit-limit`, `x-ratelimit-remaining`
/// and `x-ratelimit-reset` (the window's end, epoch seconds rounded up) when `headers` is on.
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
        /// Whole seconds until it ends, at least one.
        retry_after: u64,
    },
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
}

impl ReadLimiter {
    /// No read counted yet.
    pub fn new(limit: ReadLimit) -> Self {
        Self {
            limit,
            current: None,
            windows: 0,
            budgets_spent: 0,
        }
    }

    /// The limit it applies.
    pub fn limit(&self) -> ReadLimit {
        self.limit
    }

    /// Counts a read arriving at `now` against the budget.
    pub fn admit(&mut self, now: Duration) -> Admission {
        let limit = self.limit;
        let (window, start, count) = match self.current {
            Some((id, start, count)) if now < start + limit.window => (id, start, count),
            _ => {
                self.windows += 1;
                (self.windows, now, 0)
            }
        };
        let ends = start + limit.window;
        if count >= limit.budget {
            self.current = Some((window, start, count));
            return Admission::Refused {
                window,
                retry_after: ceil_secs(ends.saturating_sub(now)).max(1),
            };
        }
        let count = count + 1;
        self.current = Some((window, start, count));
        self.budgets_spent += u64::from(count == limit.budget);
        Admission::Counted {
            window,
            remaining: limit.budget - count,
            reset: ceil_secs(ends),
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

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_epoch_is_the_date_it_names() {
        let t = crate::Timestamp::parse("2026-11-25T17:00:00Z").map(crate::Timestamp::unix_nanos);
        assert_eq!(t, Some(SERVER_EPOCH as i64 * 1_000_000_000));
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
