//! Catch-up of messages missed while disconnected, through REST history (DESIGN 3.5).
//!
//! Per channel the tracker keeps an *anchor* (the newest message delivered on it) and the ids
//! of recently delivered messages. After a reconnect it walks history pages newest-first until
//! it meets the anchor, holding every live event about the channel meanwhile (messages, edits,
//! deletes, reactions, typing), then delivers the gap oldest-first, then the held events, then
//! one `resynced`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::message_clock::MessageClock;
use crate::pacing::{Blocked, Pacer, PacingConfig, ReadHeaders, ServerClock};
use crate::secret::Secret;
use crate::text::Text;
use crate::timestamp::Timestamp;
use crate::wire::CopyFingerprint;
use crate::wire::{HistoryItem, HistoryPage, ServerEvent, ServerEventKind};

/// Pages a walk may read beyond what `max_messages` needs: end checks, pages of messages
/// already delivered.
const MORE_PAGES: u32 = 10;

/// `t` moved back by `by`.
fn earlier(t: Timestamp, by: Duration) -> Timestamp {
    let by = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
    Timestamp::from_unix_nanos(t.unix_nanos().saturating_sub(by))
}

/// Catch-up settings.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CatchUpConfig {
    /// `limit` of each history request. Default 50 (Kaiku allows up to 100).
    pub page_size: u32,
    /// A gap larger than this ends in `resynced { complete: false }`. Default 500.
    pub max_messages: usize,
    /// Live events held per channel during a catch-up before giving up on it. Default 4096.
    pub max_held: usize,
    /// Tries per history request before giving up on the channel. Default 3.
    pub max_attempts: u32,
    /// Delay before the first retry of a failed request (doubles each time). Default 1 s.
    pub retry_base: Duration,
    /// Delivered message ids remembered per channel for de-duplication. Default 1024.
    pub recent_ids: usize,
    /// Largest history body accepted. Default 8 MiB.
    pub max_body: usize,
    /// How much older than a later message a message may be, by `created_at`, and still
    /// become visible (in history and on the socket) after it: the inserting transaction's
    /// length (Kaiku stamps `NOW()`, the transaction's start), an upload stored before its
    /// message is broadcast. A walk reads this far past its anchor, and a channel's time
    /// bound is this much earlier. Default 10 s.
    pub late_margin: Duration,
}

impl Default for CatchUpConfig {
    fn default() -> Self {
        Self {
            page_size: 50,
            max_messages: 500,
            max_held: 4096,
            max_attempts: 3,
            retry_base: Duration::from_secs(1),
            recent_ids: 1024,
            max_body: 8 * 1024 * 1024,
            late_margin: Duration::from_secs(10),
        }
    }
}

/// Where a channel's catch-up stops: the message delivered on it last (D68). Ids are proof;
/// clocks are hints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Anchor {
    /// Its id.
    pub(crate) id: Text,
    /// Its creation time, when known (an app-given anchor has none until a walk meets it).
    pub(crate) created_at: Option<Timestamp>,
    /// The app named it (`subscribe_from`): the app shows everything older, as it was when
    /// it loaded, so no walk reads below it unless the subscription can be placed on the
    /// message clock.
    pub(crate) given: bool,
}

/// A request for one history page: `GET /api/messages/channel/{channel_id}?limit=&before=`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRequest {
    /// Pass back to [`Connection::handle_history`](crate::Connection::handle_history).
    pub id: u64,
    /// The channel.
    pub channel_id: Text,
    /// Only messages older than this id.
    pub before: Option<Text>,
    /// Page size.
    pub limit: u32,
    /// Bearer token to use (set by the connection; redacted in `Debug`).
    pub token: Option<Secret>,
}

/// Why a history request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// The server answered with an error status.
    #[error("history request failed with HTTP {status}")]
    Status {
        /// HTTP status.
        status: u16,
        /// `Retry-After`, when given.
        retry_after: Option<Duration>,
    },
    /// No answer (connect error, timeout, reset).
    #[error("history request failed: network error")]
    Network,
}

/// What the tracker wants done; drained by the connection.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum CatchUpOutput {
    /// Fetch a page.
    Fetch(HistoryRequest),
    /// Deliver this event to the app (a `message_new`, or an event held behind a catch-up).
    Deliver(ServerEvent),
    /// A channel finished catching up.
    Resynced {
        /// The channel.
        channel_id: Text,
        /// Messages delivered by the catch-up that had not arrived live.
        recovered: usize,
        /// False when the gap could not be closed: the app should reload the channel.
        complete: bool,
    },
    /// The REST history answered 401: the access token should be refreshed.
    TokenRejected,
}

/// What a failed request leads to.
enum Failure {
    /// The server asked every read to wait (a 429 or a 503): not a failure
    /// of this walk, which goes back in line.
    Paced,
    /// Try again after a backoff.
    Retry,
    /// The request cannot succeed (the channel is gone or forbidden).
    GiveUp,
}

/// Where a walk's next page stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Req {
    /// Waiting for the pacer.
    Queued,
    /// Sent as this request id; counted as failed if not answered by `until` (an answer the
    /// driver lost must not hold the channel's live events forever).
    InFlight { id: u64, until: Instant },
    /// Failed; in line again from this instant.
    RetryAt(Instant),
}

/// The proof that history ends at message `x`, the oldest a page held when it said there was
/// no more (D73). A server's `has_more` can lie (Kaiku computes it after filtering blocked
/// authors out), an older server returns fewer than `limit`, and a cursor deleted since it
/// was handed out leads to an empty page: no single answer proves an end.
#[derive(Clone, Debug, PartialEq, Eq)]
enum EndCheck {
    /// No end claimed.
    None,
    /// Read `before = x`: an empty answer says nothing is older than `x`, or that `x` is gone.
    Below(Text),
    /// That answer was empty; read again from above `x`: an answer that still holds `x`
    /// proves it was there, so nothing is older.
    Above(Text),
}

/// A catch-up in progress: history pages walked newest-first back to the anchor.
#[derive(Clone, Debug)]
struct Walk {
    req: Req,
    failures: u32,
    before: Option<Text>,
    gap: Vec<HistoryItem>,
    gap_ids: BTreeSet<Text>,
    /// The anchor was met (or a message older than it): what is left to read is the late
    /// margin below it.
    passed: bool,
    /// Where the proof of a claimed end of history stands (D73).
    end: EndCheck,
    /// Every id the walk's pages held, newest first: where to read from to see a message
    /// again.
    seen: Vec<Text>,
    /// Pages answered so far: a walk reads at most enough pages for `max_messages`, and a
    /// few more, however the server answers (no cycle of cursors can keep it going).
    pages: u32,
    /// Live events about the channel, held until the gap is delivered.
    held: Vec<ServerEvent>,
    /// Messages the app has whose history copy changed since the copy it got (an upload's
    /// attachment arrived, and its live broadcast was lost with a socket): delivered as
    /// updates after the gap.
    updates: Vec<HistoryItem>,
}

impl Walk {
    fn new(held: Vec<ServerEvent>) -> Self {
        Self {
            req: Req::Queued,
            failures: 0,
            before: None,
            gap: Vec::new(),
            gap_ids: BTreeSet::new(),
            passed: false,
            end: EndCheck::None,
            seen: Vec::new(),
            pages: 0,
            held,
            updates: Vec::new(),
        }
    }

    /// `item`, a message the app has: if history's copy changed since the copy the app got
    /// (an upload whose live broadcast went with a socket), it goes out as an update.
    fn note_changed_copy(
        &mut self,
        recent: &mut RecentIds,
        untracked: &mut RecentIds,
        item: &HistoryItem,
    ) {
        let id = &item.head().id;
        if copy_changed(Some(recent), untracked, id, item.copy_fingerprint())
            && self.gap_ids.insert(id.clone())
        {
            self.updates.push(item.clone());
        }
    }

    /// In line for a read at `now` (not in flight, not backing off).
    fn is_waiting(&self, now: Instant) -> bool {
        match self.req {
            Req::Queued => true,
            Req::RetryAt(at) => at <= now,
            Req::InFlight { .. } => false,
        }
    }
}

/// What a channel's next `subscribed` owes the app for the time it was not subscribed.
#[derive(Clone, Debug)]
enum Missed {
    /// Nothing: the channel was never subscribed on a socket before.
    Nothing,
    /// Messages may have been missed: walk history back to the anchor. Live events that
    /// arrive before `subscribed` wait here (a server may broadcast before it answers), so
    /// the anchor cannot move past the gap.
    Walk { early: Vec<ServerEvent> },
    /// Messages may have been missed, and nothing bounds them (more arrived before
    /// `subscribed` than can be held): the app must reload (`resynced { complete: false }`).
    Reload,
}

/// A channel's place in the catch-up lifecycle on the current socket (docs/state-machine.md
/// draws it). Each phase carries exactly the data that exists in it.
#[derive(Clone, Debug)]
enum Phase {
    /// No `subscribe` for it on the current socket yet.
    Idle { missed: Missed },
    /// Its `subscribe` went out on this socket; no `subscribed` yet.
    Subscribing { missed: Missed },
    /// Subscribed: events are delivered as they arrive.
    Live,
    /// Subscribed and walking history back to the anchor; live events are held.
    CatchingUp(Box<Walk>),
}

#[derive(Clone, Debug)]
struct Channel {
    /// The message delivered last, or the one the app said it shows.
    anchor: Option<Anchor>,
    /// When its first `subscribe` went out (local clock): every message that became visible
    /// after the server handled it was broadcast to us. A channel with no message anchor is
    /// bounded by this, read on the message clock; any walk stops a margin before it.
    since: Option<Instant>,
    /// The message clock at `since`, as the readings then placed it: kept, because the
    /// readings near `since` may be gone from the clock's memory when a walk asks.
    since_read: Option<Timestamp>,
    /// The app was told to reload the channel (`complete: false`) when this was its newest
    /// known message: what is older is in the reload, and no walk reads below it.
    reloaded: Option<Timestamp>,
    /// What incomplete walks fetched: in the app's reload, so no later walk delivers it as
    /// missed (a live copy still goes through: the app may not have reloaded yet).
    in_reload: RecentIds,
    recent: RecentIds,
    phase: Phase,
    /// Position in subscription order (earlier subscribed, earlier caught up).
    order: u64,
    /// When the app last focused it (0: never); the latest focused catch up first.
    focus: u64,
    /// A `message_new` for it arrived after its latest `subscribe` went out: the server has
    /// it subscribed, whatever it answered.
    heard_since_subscribe: bool,
}

impl Channel {
    /// What a drop costs this channel, given what it knows.
    fn missed(&self) -> Missed {
        if self.anchor.is_none() && self.since.is_none() {
            Missed::Reload
        } else {
            Missed::Walk { early: Vec::new() }
        }
    }

    /// Catch-up order: the latest focused first, then by subscription order.
    fn priority(&self) -> (bool, std::cmp::Reverse<u64>, u64) {
        (self.focus == 0, std::cmp::Reverse(self.focus), self.order)
    }
}

/// De-duplication memory: the last N delivered ids, with their creation times.
///
/// It also knows what it has forgotten: the newest `created_at` among the ids it let go.
/// Whatever is stamped after that and is not remembered was never delivered (the memory
/// forgets in delivery order, so a message delivered earlier would have been forgotten
/// first); an unremembered message stamped before it may have been, and is *in doubt*.
#[derive(Clone, Debug, Default)]
struct RecentIds {
    order: VecDeque<(Text, Option<Timestamp>)>,
    set: BTreeSet<Text>,
    cap: usize,
    /// Something was forgotten: the newest `created_at` among the forgotten (`None` inside:
    /// one of them had no time, so nothing can be placed after it).
    forgotten: Option<Option<Timestamp>>,
    /// The bodies of the remembered messages a catch-up delivered from history, hashed: a
    /// live copy that differs is an update, not a duplicate.
    copies: BTreeMap<Text, CopyFingerprint>,
}

impl RecentIds {
    fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            ..Self::default()
        }
    }

    fn contains(&self, id: &Text) -> bool {
        self.set.contains(id)
    }

    /// Whether a message stamped `at` that is not remembered may still have been delivered
    /// (and forgotten since).
    fn is_in_doubt(&self, id: &Text, at: Option<Timestamp>) -> bool {
        match self.forgotten {
            None => false,
            Some(newest) => {
                !self.set.contains(id)
                    && match (newest, at) {
                        (Some(newest), Some(at)) => at <= newest,
                        _ => true,
                    }
            }
        }
    }

    /// Takes in what another memory forgot.
    fn forgot(&mut self, forgotten: Option<Option<Timestamp>>) {
        let Some(newest) = forgotten else {
            return;
        };
        self.forgotten = Some(match (self.forgotten, newest) {
            (None, at) => at,
            (Some(Some(a)), Some(b)) => Some(a.max(b)),
            (Some(_), _) => None,
        });
    }

    /// Keeps the body of remembered message `id`, delivered from history.
    fn set_copy(&mut self, id: &Text, copy: CopyFingerprint) {
        if let Some(id) = self.set.get(id) {
            self.copies.insert(id.clone(), copy);
        }
    }

    /// Whether `live` is a changed copy of remembered message `id`'s last known copy; if so,
    /// `live` is the app's copy from now on (the same copy again is a duplicate, a further
    /// change another update).
    fn take_changed_copy(&mut self, id: &Text, live: Option<CopyFingerprint>) -> bool {
        match (self.copies.get_mut(id), live) {
            (Some(old), Some(new)) if old.differs(&new) => {
                *old = new;
                true
            }
            _ => false,
        }
    }

    /// Remembers `id`, stamped `at`; returns the copy kept (shared, so the caller can keep
    /// it too without another allocation).
    fn insert(&mut self, id: Text, at: Option<Timestamp>) -> Text {
        // Kept long: a copy, not a slice pinning the frame or page it came from.
        let id = id.detached();
        if self.set.insert(id.clone()) {
            self.order.push_back((id.clone(), at));
            if self.order.len() > self.cap
                && let Some((old, old_at)) = self.order.pop_front()
            {
                self.set.remove(&old);
                self.copies.remove(&old);
                self.forgotten = Some(match (self.forgotten, old_at) {
                    (None, at) => at,
                    (Some(Some(a)), Some(b)) => Some(a.max(b)),
                    (Some(_), _) => None,
                });
            }
        }
        id
    }
}

/// Whether `copy` is a changed copy of message `id` as the channel's memory (`recent`) or
/// the untracked one last knew it; it becomes the copy compared against from then on.
fn copy_changed(
    recent: Option<&mut RecentIds>,
    untracked: &mut RecentIds,
    id: &Text,
    copy: Option<CopyFingerprint>,
) -> bool {
    recent.is_some_and(|r| r.take_changed_copy(id, copy)) || untracked.take_changed_copy(id, copy)
}

/// Tracks every wanted channel's anchor and drives catch-ups through one read pacer.
///
/// Verbs: [`track`](Self::track) / [`forget`](Self::forget) / [`focus`](Self::focus) from
/// the app; [`handle_subscribe_sent`](Self::handle_subscribe_sent),
/// [`handle_subscribed`](Self::handle_subscribed), [`handle_event`](Self::handle_event),
/// [`handle_history`](Self::handle_history), [`handle_read_headers`](Self::handle_read_headers),
/// [`handle_server_date`](Self::handle_server_date),
/// [`handle_disconnect`](Self::handle_disconnect), [`handle_timeout`](Self::handle_timeout)
/// from the connection; [`poll_output`](Self::poll_output) and
/// [`poll_timeout`](Self::poll_timeout).
#[derive(Clone, Debug)]
pub(crate) struct CatchUp {
    config: CatchUpConfig,
    channels: BTreeMap<Text, Channel>,
    /// The walks' reads in flight: request id to channel. Cleared by a drop (a late answer
    /// then only frees its pacing slot).
    requests: BTreeMap<u64, Text>,
    pacer: Pacer,
    /// How long a read may go unanswered before it counts as failed.
    read_timeout: Duration,
    /// The `Date` clock, for the budget's resets.
    clock: ServerClock,
    /// The clock of `created_at`, for the time bounds of walks.
    messages: MessageClock,
    clock_margin: Duration,
    out: VecDeque<CatchUpOutput>,
    next_id: u64,
    next_order: u64,
    next_focus: u64,
    duplicates: u64,
    /// Recently forwarded message ids of channels not tracked (refused, or unsubscribed a
    /// moment ago while the server still sends): a message is forwarded once even there.
    untracked: RecentIds,
}

impl CatchUp {
    /// No channel tracked.
    pub(crate) fn new(config: CatchUpConfig, pacing: PacingConfig) -> Self {
        Self {
            untracked: RecentIds::new(config.recent_ids),
            clock_margin: pacing.clock_margin,
            read_timeout: pacing.request_timeout,
            pacer: Pacer::new(pacing),
            clock: ServerClock::default(),
            messages: MessageClock::default(),
            config,
            channels: BTreeMap::new(),
            requests: BTreeMap::new(),
            out: VecDeque::new(),
            next_id: 1,
            next_order: 0,
            next_focus: 0,
            duplicates: 0,
        }
    }

    /// Starts tracking a channel. `newest` is the newest message id the app already shows,
    /// if it knows one: the first `subscribed` then catches up from it.
    pub(crate) fn track(&mut self, channel: Text, newest: Option<Text>) {
        let recent = RecentIds::new(self.config.recent_ids);
        self.next_order += 1;
        let order = self.next_order;
        let entry = self.channels.entry(channel).or_insert(Channel {
            anchor: None,
            since: None,
            since_read: None,
            reloaded: None,
            in_reload: RecentIds::new(self.config.recent_ids),
            recent,
            phase: Phase::Idle {
                missed: Missed::Nothing,
            },
            order,
            focus: 0,
            heard_since_subscribe: false,
        });
        if let Some(id) = newest {
            entry.anchor = Some(Anchor {
                id,
                created_at: None,
                given: true,
            });
            if let Phase::Idle { missed } | Phase::Subscribing { missed } = &mut entry.phase
                && !matches!(missed, Missed::Walk { .. })
            {
                *missed = Missed::Walk { early: Vec::new() };
            }
        }
    }

    /// Stops tracking a channel (unsubscribed or refused); an ongoing catch-up is abandoned.
    pub(crate) fn forget(&mut self, channel: &Text) {
        // Its reads in flight are no longer anyone's: their answers only free their pacing
        // slots, and can never complete a walk of a later subscription.
        self.requests.retain(|_, ch| ch != channel);
        // What it delivered stays known: the server may still send (or repeat) its messages.
        if let Some(c) = self.channels.remove(channel) {
            // And what it forgot stays in doubt.
            self.untracked.forgot(c.recent.forgotten);
            for (id, at) in c.recent.order {
                self.untracked.insert(id, at);
            }
            for (id, copy) in c.recent.copies {
                self.untracked.set_copy(&id, copy);
            }
        }
    }

    /// The app is looking at this channel: its catch-up goes before the others' (the latest
    /// focused first).
    pub(crate) fn focus(&mut self, channel: &Text) {
        if let Some(c) = self.channels.get_mut(channel) {
            self.next_focus += 1;
            c.focus = self.next_focus;
        }
    }

    /// The channel's anchor.
    #[cfg(test)]
    pub(crate) fn anchor(&self, channel: &Text) -> Option<&Anchor> {
        self.channels.get(channel)?.anchor.as_ref()
    }

    /// Whether message `id` of `channel` was delivered lately (and is remembered).
    pub(crate) fn has_delivered(&self, channel: &Text, id: &Text) -> bool {
        self.channels
            .get(channel)
            .is_some_and(|c| c.recent.contains(id))
            || self.untracked.contains(id)
    }

    /// Whether the channel's live events are held: it is catching up, or a catch-up is due
    /// and waits for the channel's `subscribed`.
    pub(crate) fn is_catching_up(&self, channel: &Text) -> bool {
        self.channels.get(channel).is_some_and(|c| {
            matches!(
                c.phase,
                Phase::CatchingUp(_)
                    | Phase::Idle {
                        missed: Missed::Walk { .. }
                    }
                    | Phase::Subscribing {
                        missed: Missed::Walk { .. }
                    }
            )
        })
    }

    /// Duplicate message events suppressed so far.
    pub(crate) fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// History reads sent so far.
    pub(crate) fn reads(&self) -> u64 {
        self.pacer.reads()
    }

    /// Answers that asked every read to wait (429 or 503).
    pub(crate) fn rate_limited(&self) -> u64 {
        self.pacer.rate_limited()
    }

    /// An HTTP answer received at `now` carried `Date: date` (the WebSocket upgrade, a REST
    /// call): the server's clock, for time anchors and budget resets.
    pub(crate) fn handle_server_date(&mut self, now: Instant, date: Timestamp) {
        self.clock.handle_date(now, date);
    }

    /// The headers of an answer to a REST read: the core's own history read `request`, or
    /// (with `None`) a read the app made beside the core. The server counts both.
    pub(crate) fn handle_read_headers(
        &mut self,
        now: Instant,
        request: Option<u64>,
        h: &ReadHeaders,
    ) {
        // A refusal's `Date` may be a proxy's (a gateway's 429, a load balancer's 503): only
        // an answer the server itself produced sets its clock.
        if let Some(date) = h.date
            && (200..300).contains(&h.status)
        {
            self.clock.handle_date(now, date);
        }
        self.pacer.handle_headers(now, h, &self.clock, request);
        self.issue_due(now);
    }

    /// A `subscribe` for `channel` went out on the current socket at `now`. The first one
    /// bounds the channel in time: every message that becomes visible after the server
    /// handles it is either delivered live or part of a later gap.
    pub(crate) fn handle_subscribe_sent(&mut self, now: Instant, channel: &Text) {
        let Some(c) = self.channels.get_mut(channel) else {
            return;
        };
        if c.since.is_none() {
            c.since = Some(now);
            c.since_read = self.messages.lower_bound(now);
        }
        c.heard_since_subscribe = false;
        if let Phase::Idle { missed } = &mut c.phase {
            let missed = std::mem::replace(missed, Missed::Nothing);
            c.phase = Phase::Subscribing { missed };
        }
    }

    /// The server confirmed a subscription: start whatever this channel owes.
    pub(crate) fn handle_subscribed(&mut self, now: Instant, channel: &Text) {
        let Some(c) = self.channels.get_mut(channel) else {
            return;
        };
        let Phase::Subscribing { missed } = &mut c.phase else {
            // A repeated or stale `subscribed`: nothing changes.
            return;
        };
        match std::mem::replace(missed, Missed::Nothing) {
            Missed::Nothing => c.phase = Phase::Live,
            Missed::Reload => {
                c.phase = Phase::Live;
                c.reloaded = [
                    c.reloaded,
                    c.anchor.as_ref().and_then(|a| a.created_at),
                    self.messages.lower_bound(now),
                ]
                .into_iter()
                .flatten()
                .max();
                self.out.push_back(CatchUpOutput::Resynced {
                    channel_id: channel.clone(),
                    recovered: 0,
                    complete: false,
                });
            }
            Missed::Walk { early } => {
                c.phase = Phase::CatchingUp(Box::new(Walk::new(early)));
                self.issue_due(now);
            }
        }
    }

    /// Whether `channel` waits for its `subscribed` with a live message held that arrived
    /// after its `subscribe` went out: the server has it subscribed, whatever it answered.
    pub(crate) fn is_heard_unconfirmed(&self, channel: &Text) -> bool {
        self.channels.get(channel).is_some_and(|c| {
            c.heard_since_subscribe
                && matches!(&c.phase, Phase::Subscribing { missed: Missed::Walk { early } } if !early.is_empty())
        })
    }

    /// A live event about `channel`, received at `now`: held while the channel catches up or
    /// waits to (so edits, deletes and reactions cannot overtake the messages they refer
    /// to), else delivered, a `message_new` only once. Every live message, on any channel,
    /// is a reading of the message clock.
    pub(crate) fn handle_event(&mut self, now: Instant, channel: &Text, event: ServerEvent) {
        if let ServerEventKind::MessageNew { message, .. } = event.kind()
            && let Some(at) = message.created_at
        {
            self.messages.handle_message(now, at);
        }
        let max_held = self.config.max_held;
        let Some(c) = self.channels.get_mut(channel) else {
            // Not a tracked channel (e.g. unsubscribed a moment ago): forward, once.
            if let ServerEventKind::MessageNew { message, .. } = event.kind() {
                if self.untracked.contains(&message.id) {
                    Self::deliver_repeat(
                        None,
                        &mut self.untracked,
                        &mut self.out,
                        &mut self.duplicates,
                        event,
                    );
                    return;
                }
                self.untracked
                    .insert(message.id.clone(), message.created_at);
            }
            self.out.push_back(CatchUpOutput::Deliver(event));
            return;
        };
        if matches!(c.phase, Phase::Subscribing { .. })
            && matches!(event.kind(), ServerEventKind::MessageNew { .. })
        {
            c.heard_since_subscribe = true;
        }
        match &mut c.phase {
            Phase::CatchingUp(walk) => {
                walk.held.push(event);
                if walk.held.len() > max_held {
                    self.finish(now, channel, false);
                }
            }
            Phase::Idle { missed } | Phase::Subscribing { missed } => {
                let Missed::Walk { early } = missed else {
                    Self::deliver(
                        c,
                        &mut self.untracked,
                        &mut self.out,
                        &mut self.duplicates,
                        event,
                    );
                    return;
                };
                early.push(event);
                if early.len() > max_held {
                    // Too much before `subscribed`: deliver, and owe the app a reload, since
                    // the anchor now moves past a gap that will not be walked.
                    let early = std::mem::take(early);
                    *missed = Missed::Reload;
                    for e in early {
                        Self::deliver(
                            c,
                            &mut self.untracked,
                            &mut self.out,
                            &mut self.duplicates,
                            e,
                        );
                    }
                }
            }
            Phase::Live => {
                Self::deliver(
                    c,
                    &mut self.untracked,
                    &mut self.out,
                    &mut self.duplicates,
                    event,
                );
            }
        }
    }

    /// Delivers `event` on a tracked channel; a message only once (not already delivered on
    /// this channel, nor forwarded while the channel was not tracked).
    fn deliver(
        c: &mut Channel,
        untracked: &mut RecentIds,
        out: &mut VecDeque<CatchUpOutput>,
        duplicates: &mut u64,
        event: ServerEvent,
    ) {
        let ServerEventKind::MessageNew { message, .. } = event.kind() else {
            out.push_back(CatchUpOutput::Deliver(event));
            return;
        };
        // Delivered on this channel, or while it was tracked before (an unsubscribe, then
        // `subscribe_from`).
        if c.recent.contains(&message.id) || untracked.contains(&message.id) {
            Self::deliver_repeat(Some(&mut c.recent), untracked, out, duplicates, event);
            return;
        }
        // Whatever its timestamp says: a message that arrived is proof that the server's
        // history holds it, where a timestamp is only a reading of a clock (D68).
        let id = c.recent.insert(message.id.clone(), message.created_at);
        if event.is_recovered()
            && let Some(copy) = event.copy_fingerprint()
        {
            // History's copy: a live copy that differs later is an update.
            c.recent.set_copy(&id, copy);
        }
        c.anchor = Some(Anchor {
            id,
            created_at: message.created_at,
            given: false,
        });
        out.push_back(CatchUpOutput::Deliver(event));
    }

    /// A `message_new` for a message delivered before: a duplicate, unless it is a live copy
    /// that changed since the history copy the app got (an upload's attachment arrived):
    /// then the app replaces its copy.
    fn deliver_repeat(
        recent: Option<&mut RecentIds>,
        untracked: &mut RecentIds,
        out: &mut VecDeque<CatchUpOutput>,
        duplicates: &mut u64,
        event: ServerEvent,
    ) {
        let changed = match event.kind() {
            ServerEventKind::MessageNew { message, .. } if !event.is_recovered() => {
                copy_changed(recent, untracked, &message.id, event.copy_fingerprint())
            }
            _ => false,
        };
        if changed {
            out.push_back(CatchUpOutput::Deliver(event.into_update()));
        } else {
            *duplicates += 1;
        }
    }

    /// The connection is gone: every channel whose `subscribe` went out must catch up on the
    /// next `subscribed` (the server may have broadcast to us before the link died, even if
    /// its `subscribed` never arrived). Catch-ups in progress are abandoned; their held
    /// messages are dropped because the anchor did not move, so the next walk fetches them
    /// again.
    ///
    /// Held events other than messages (edits, deletes, reactions) are delivered now: REST
    /// history cannot replay them, and late is better than never (an edit or delete of a
    /// message the app has not seen yet is harmless; the refetched body shows the final
    /// text). Held typing is dropped: it is stale by now, and its `typing_stop` may never
    /// come. The connection drains these at once.
    pub(crate) fn handle_disconnect(&mut self) {
        self.requests.clear();
        for c in self.channels.values_mut() {
            let missed_if_sent = c.missed();
            let (missed, held) = match std::mem::replace(
                &mut c.phase,
                Phase::Idle {
                    missed: Missed::Nothing,
                },
            ) {
                Phase::Idle {
                    missed: Missed::Walk { early },
                }
                | Phase::Subscribing {
                    missed: Missed::Walk { early },
                } => (Missed::Walk { early: Vec::new() }, early),
                Phase::Idle { missed } => (missed, Vec::new()),
                Phase::Subscribing {
                    missed: Missed::Reload,
                } => (Missed::Reload, Vec::new()),
                Phase::Subscribing {
                    missed: Missed::Nothing,
                }
                | Phase::Live => (missed_if_sent, Vec::new()),
                Phase::CatchingUp(walk) => (Missed::Walk { early: Vec::new() }, walk.held),
            };
            c.phase = Phase::Idle { missed };
            for e in held {
                if !matches!(
                    e.kind(),
                    ServerEventKind::MessageNew { .. }
                        | ServerEventKind::TypingStart { .. }
                        | ServerEventKind::TypingStop { .. }
                ) {
                    self.out.push_back(CatchUpOutput::Deliver(e));
                }
            }
        }
    }

    /// A history response for request `id`. Its pacing slot is freed whatever it says; it is
    /// otherwise ignored unless it answers the read its channel's walk has in flight (not a
    /// walk abandoned by a drop or an unsubscribe, nor an answer given twice).
    pub(crate) fn handle_history(
        &mut self,
        now: Instant,
        id: u64,
        response: Result<Bytes, HistoryError>,
    ) {
        match &response {
            Ok(_) => self.pacer.handle_success(),
            Err(HistoryError::Status {
                status: status @ (429 | 503),
                retry_after,
            }) => {
                // Applied even when the driver did not report the headers.
                self.pacer
                    .handle_refused(now, id, *retry_after, *status == 429);
            }
            _ => {}
        }
        if let Err(HistoryError::Network) = response {
            self.pacer.handle_lost(id);
        } else {
            self.pacer.handle_answer(id);
        }
        let Some(channel) = self.take_awaited(id) else {
            self.issue_due(now);
            return;
        };
        let page = match response {
            // A body that is not a page (a proxy's HTML error, a truncated read) may not repeat.
            Ok(body) => HistoryPage::decode(body, self.config.max_body).map_err(|_| Failure::Retry),
            Err(HistoryError::Status { status, .. }) => {
                if status == 401 {
                    self.out.push_back(CatchUpOutput::TokenRejected);
                }
                Err(match status {
                    400 | 403 | 404 | 410 => Failure::GiveUp,
                    429 | 503 => Failure::Paced,
                    _ => Failure::Retry,
                })
            }
            Err(HistoryError::Network) => Err(Failure::Retry),
        };
        match page {
            Ok(page) => self.on_page(now, &channel, page),
            Err(failure) => self.on_failure(now, &channel, failure),
        }
        self.issue_due(now);
    }

    /// Read `id` was refused (401) for a token replaced since it went out: the walk reads the
    /// same page again as soon as pacing lets it, with the current token. No failure is
    /// counted and no refresh asked: the current token was never tried.
    pub(crate) fn handle_token_replaced(&mut self, now: Instant, id: u64) {
        self.pacer.handle_answer(id);
        if let Some(channel) = self.take_awaited(id)
            && let Some(Phase::CatchingUp(walk)) =
                self.channels.get_mut(&channel).map(|c| &mut c.phase)
        {
            walk.req = Req::Queued;
        }
        self.issue_due(now);
    }

    /// The channel whose walk has read `id` in flight, which the read no longer holds; `None`
    /// for a read abandoned (by a drop or an unsubscribe) or answered already.
    fn take_awaited(&mut self, id: u64) -> Option<Text> {
        self.requests.remove(&id).filter(|ch| {
            matches!(
                self.channels.get(ch).map(|c| &c.phase),
                Some(Phase::CatchingUp(w)) if matches!(w.req, Req::InFlight { id: sent, .. } if sent == id)
            )
        })
    }

    fn on_failure(&mut self, now: Instant, channel: &Text, failure: Failure) {
        let (base, attempts) = (self.config.retry_base, self.config.max_attempts);
        let Some(c) = self.channels.get_mut(channel) else {
            return;
        };
        let Phase::CatchingUp(walk) = &mut c.phase else {
            return;
        };
        match failure {
            // Waiting on the server's budget is not a failure: back in line, and the pacer
            // holds every read until the wait has passed.
            Failure::Paced => walk.req = Req::Queued,
            Failure::Retry if walk.failures + 1 < attempts => {
                walk.failures += 1;
                let backoff = base * 2u32.saturating_pow(walk.failures - 1);
                walk.req = Req::RetryAt(now + backoff);
            }
            Failure::Retry | Failure::GiveUp => self.finish(now, channel, false),
        }
    }

    /// The lowest `created_at` a walk of this channel must read down to (D68): the late
    /// margin below its anchor's time, for messages that became visible after it, but not
    /// below the channel's subscription as the message clock places it, less the clock
    /// margin and the late margin (a transaction that began before the subscription can
    /// commit after it, during a drop). With no message anchor, that subscription bound
    /// alone; never below the point of the app's last reload. `None` when nothing bounds the
    /// walk in time.
    ///
    /// What the subscription bound lets in from before the subscription (a margin's worth)
    /// is delivered once, possibly after newer messages: tether cannot tell it from a message
    /// that became visible late, and an app that loaded its history before subscribing may
    /// lack it.
    /// The message clock when the channel's first `subscribe` went out: the lower of what
    /// the readings said then and what they say now.
    fn subscribed_at(&self, c: &Channel) -> Option<Timestamp> {
        let now = c.since.and_then(|at| self.messages.lower_bound(at));
        match (c.since_read, now) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn floor(&self, c: &Channel) -> Option<Timestamp> {
        let subscribed = self
            .subscribed_at(c)
            .map(|t| earlier(t, self.clock_margin + self.config.late_margin));
        let floor = match &c.anchor {
            None => subscribed,
            Some(anchor) => {
                let late = anchor
                    .created_at
                    .map(|t| self.below_anchor(t, anchor.given, subscribed.is_some()));
                match (late, subscribed) {
                    (Some(a), Some(s)) => Some(a.max(s)),
                    (a, s) => a.or(s),
                }
            }
        };
        // A transaction that began before the reload can commit after it, like one that
        // began before the subscription.
        let reloaded = c.reloaded.map(|r| earlier(r, self.config.late_margin));
        match (floor, reloaded) {
            (Some(f), Some(r)) => Some(f.max(r)),
            (f, r) => f.or(r),
        }
    }

    /// How far below an anchor stamped `at` a walk reads: the late margin, except below an
    /// anchor the app gave when nothing places its subscription on the message clock.
    fn below_anchor(&self, at: Timestamp, given: bool, placed: bool) -> Timestamp {
        if given && !placed {
            at
        } else {
            earlier(at, self.config.late_margin)
        }
    }

    /// The oldest `created_at` of a message that, if this channel never delivered it, was
    /// missed: what became visible after its subscription or its last reload (less the
    /// margins). `None` when neither can be placed on the message clock, or below an anchor
    /// the app gave that cannot.
    fn owed_from(&self, c: &Channel) -> Option<Timestamp> {
        let subscribed = self
            .subscribed_at(c)
            .map(|t| earlier(t, self.clock_margin + self.config.late_margin));
        if c.anchor.as_ref().is_some_and(|a| a.given) && subscribed.is_none() {
            return None;
        }
        let reloaded = c.reloaded.map(|r| earlier(r, self.config.late_margin));
        match (subscribed, reloaded) {
            (Some(s), Some(r)) => Some(s.max(r)),
            (s, r) => s.or(r),
        }
    }

    fn on_page(&mut self, now: Instant, channel: &Text, page: HistoryPage) {
        let (limit, max) = (self.config.page_size, self.config.max_messages);
        let Some(c) = self.channels.get(channel) else {
            return;
        };
        let mut floor = self.floor(c);
        let owed_from = self.owed_from(c);
        let placed = self.subscribed_at(c).is_some();
        let Some(c) = self.channels.get_mut(channel) else {
            return;
        };
        let Phase::CatchingUp(walk) = &mut c.phase else {
            return;
        };
        let anchor = c.anchor.clone();
        // With no message anchor the walk is bounded by time alone, and with no reading of
        // the message clock it cannot be: nothing proves which messages the app lacks.
        if anchor.is_none() {
            walk.passed = true;
            if floor.is_none() && !page.items.is_empty() {
                // The app reloads; the newest message is what later walks start from, and
                // what the page holds is in the reload.
                walk.gap.extend(page.items.iter().cloned());
                self.finish(now, channel, false);
                return;
            }
        }
        // Where the page goes below the floor, if it does.
        let mut below: Option<usize> = None;
        // A message the de-duplication memory may have forgotten delivering.
        let mut in_doubt = false;
        for (pos, item) in page.items.iter().enumerate() {
            let h = item.head();
            if !walk.passed
                && let Some(a) = &anchor
            {
                if a.id == h.id {
                    walk.passed = true;
                    // The app has it: history's copy may have changed since (an upload's
                    // broadcast that went with a socket).
                    walk.note_changed_copy(&mut c.recent, &mut self.untracked, item);
                    if a.created_at.is_none()
                        && let (Some(Anchor { created_at, .. }), Some(t)) =
                            (&mut c.anchor, h.created_at)
                    {
                        // An app-given anchor: learn its time, so the late margin below it
                        // is read now and a later deletion is handled by time.
                        *created_at = Some(t);
                        let late = if a.given && !placed {
                            t
                        } else {
                            earlier(t, self.config.late_margin)
                        };
                        floor = Some(floor.map_or(late, |f| f.max(late)));
                    }
                    if self.config.late_margin.is_zero() {
                        // Nothing can become visible late: the anchor is the end.
                        below = Some(pos + 1);
                        break;
                    }
                    continue;
                }
                // Older than the anchor: the anchor was deleted, and this is below it.
                if let (Some(at), Some(created)) = (a.created_at, h.created_at)
                    && created < at
                {
                    walk.passed = true;
                }
            }
            if walk.passed {
                // An item without a time cannot be placed: compared like any other (read,
                // de-duplicated), never a reason to stop.
                if let (Some(f), Some(created)) = (floor, h.created_at)
                    && created < f
                {
                    below = Some(pos);
                    break;
                }
                if anchor.as_ref().is_some_and(|a| a.created_at.is_none()) && floor.is_none() {
                    // Past an anchor with no time and no clock: nothing to read below it.
                    below = Some(pos);
                    break;
                }
            }
            if c.recent.contains(&h.id) || self.untracked.contains(&h.id) {
                // Delivered. Its body may have changed since the copy the app got, when that
                // was history's (an upload whose live broadcast went with a socket).
                walk.note_changed_copy(&mut c.recent, &mut self.untracked, item);
                continue;
            }
            if c.in_reload.contains(&h.id) || anchor.as_ref().is_some_and(|a| a.id == h.id) {
                // In a reload, or the anchor itself (the app's, met again).
                continue;
            }
            if c.recent.is_in_doubt(&h.id, h.created_at)
                || self.untracked.is_in_doubt(&h.id, h.created_at)
            {
                in_doubt = true;
                break;
            }
            if walk.gap_ids.insert(h.id.clone()) {
                walk.gap.push(item.clone());
            }
        }
        if in_doubt {
            // Delivering it could deliver it twice, and leaving it out could lose it.
            self.finish(now, channel, false);
            return;
        }
        if let Some(rest) = below {
            // The rest of the page was read anyway. Ids over clocks: a message on it that this
            // channel never delivered, sitting above one it did deliver, or stamped after the
            // subscription, was missed however old its stamp looks (a transaction longer than
            // the late margin, a database clock stepped back).
            let rest = page.items.get(rest..).unwrap_or_default();
            let lowest_delivered = rest.iter().rposition(|i| c.recent.contains(&i.head().id));
            for (k, item) in rest.iter().enumerate() {
                let h = item.head();
                if c.recent.contains(&h.id)
                    || c.in_reload.contains(&h.id)
                    || self.untracked.contains(&h.id)
                    || anchor.as_ref().is_some_and(|a| a.id == h.id)
                    || c.recent.is_in_doubt(&h.id, h.created_at)
                    || self.untracked.is_in_doubt(&h.id, h.created_at)
                {
                    continue;
                }
                let above_delivered = lowest_delivered.is_some_and(|l| k < l);
                let since_subscribed =
                    matches!((owed_from, h.created_at), (Some(f), Some(t)) if t >= f);
                if (above_delivered || since_subscribed) && walk.gap_ids.insert(h.id.clone()) {
                    walk.gap.push(item.clone());
                }
            }
        }
        walk.pages += 1;
        let max_pages = u32::try_from(max / limit.max(1) as usize)
            .unwrap_or(u32::MAX)
            .saturating_add(MORE_PAGES);
        // Whether the page held anything the walk had not seen: a page of only seen messages
        // answering `before = x` comes from a server that ignores the cursor.
        let mut fresh = false;
        for item in &page.items {
            let id = &item.head().id;
            if !walk.seen.contains(id) {
                walk.seen.push(id.clone());
                fresh = true;
            }
        }
        let cursor = page.cursor();
        let progressed = cursor.is_some() && cursor != walk.before;
        let ends = !page.has_more_given(limit);
        // The answer to a read that checks an end.
        let check = std::mem::replace(&mut walk.end, EndCheck::None);
        let proven = match &check {
            EndCheck::Above(x) => page.items.iter().any(|i| &i.head().id == x),
            _ => false,
        };
        // The newest id above `x` among those seen, to read `x` again; `None` at the top.
        let above = |seen: &[Text], x: &Text| -> Option<Text> {
            let at = seen.iter().position(|id| id == x)?;
            seen.get(at.checked_sub(1)?).cloned()
        };
        // With nothing older than the anchor, or its late margin, seen (the walk would have
        // stopped below the floor): complete if the walk passed its anchor or placed it in
        // time (deleted, the oldest); an anchor known only by id (from the app) that is gone
        // leaves no way to tell what the app has.
        let complete_at_end =
            walk.passed || anchor.as_ref().is_some_and(|a| a.created_at.is_some());
        if walk.gap.len() > max {
            self.finish(now, channel, false);
        } else if below.is_some() {
            self.finish(now, channel, true);
        } else if walk.pages >= max_pages {
            // Cursors that keep leading around (a server whose history moves under the walk):
            // stop, and say so.
            self.finish(now, channel, false);
        } else if proven {
            self.finish(now, channel, complete_at_end);
        } else if matches!(check, EndCheck::Below(_)) && !page.items.is_empty() && !fresh {
            // Asked for what is older than `x`, answered with what was seen: the server
            // ignores `before`, and nothing can prove where its history ends.
            self.finish(now, channel, false);
        } else if let (EndCheck::Below(x), true) = (&check, page.items.is_empty()) {
            // Nothing older than `x`, or `x` is gone: see whether it is still there.
            walk.before = above(&walk.seen, x);
            walk.end = EndCheck::Above(x.clone());
            walk.failures = 0;
            walk.req = Req::Queued;
        } else if ends && page.items.is_empty() && walk.seen.is_empty() {
            // Nothing at all, or nothing but what the server filters out for this user (Kaiku
            // fills a page from `limit + 1` rows, then drops blocked authors): nothing to read
            // on from, and nothing proves the channel empty. The app reloads.
            self.finish(now, channel, false);
        } else if ends {
            // The history claims to end: check it from its oldest message, or, when the page
            // is empty (its cursor may have been deleted since it was handed out), from the
            // cursor itself.
            let x = page
                .items
                .last()
                .map(|i| i.head().id.clone())
                .or_else(|| walk.before.clone());
            match x {
                Some(x) if page.items.is_empty() => {
                    walk.before = above(&walk.seen, &x);
                    walk.end = EndCheck::Above(x);
                    walk.failures = 0;
                    walk.req = Req::Queued;
                }
                Some(x) => {
                    walk.before = Some(x.clone());
                    walk.end = EndCheck::Below(x);
                    walk.failures = 0;
                    walk.req = Req::Queued;
                }
                None => self.finish(now, channel, false),
            }
        } else if let (true, Some(cursor)) = (progressed, cursor) {
            walk.before = Some(cursor);
            walk.failures = 0;
            walk.req = Req::Queued;
        } else {
            // More pages claimed but none reachable, or the same page again (a server
            // ignoring `before`): stop rather than loop.
            self.finish(now, channel, false);
        }
    }

    /// Ends a channel's catch-up: gap oldest-first, then held live events, then `resynced`.
    fn finish(&mut self, now: Instant, channel: &Text, complete: bool) {
        // The app reloads what is visible now: no later walk reads below this.
        let reload_point = self.messages.lower_bound(now);
        let Some(c) = self.channels.get_mut(channel) else {
            return;
        };
        let Phase::CatchingUp(walk) = std::mem::replace(&mut c.phase, Phase::Live) else {
            return;
        };
        let Walk {
            gap,
            held,
            req,
            updates,
            ..
        } = *walk;
        if let Req::InFlight { id, .. } = req {
            // Its answer, if it still comes, only frees the pacing slot.
            self.requests.remove(&id);
        }
        let mut recovered = 0;
        let (held_messages, held_other): (Vec<ServerEvent>, Vec<ServerEvent>) = held
            .into_iter()
            .partition(|e| matches!(e.kind(), ServerEventKind::MessageNew { .. }));
        let mut held_messages: Vec<Option<ServerEvent>> =
            held_messages.into_iter().map(Some).collect();
        // Messages go out in creation order: the gap (as held live events where they came
        // live, else synthesized from history), merged with held live messages the history
        // did not have (posted after the page was read, or deleted since).
        // Each with its sort key: its creation time; a gap message without one (a timestamp
        // that does not parse) keeps its place in history, after the older message before it.
        let mut messages: Vec<(i64, ServerEvent)> = Vec::new();
        let mut key = i64::MIN;
        if complete {
            for item in gap.iter().rev() {
                key = item.head().created_at.map_or(key, Timestamp::unix_nanos);
                let live = held_messages.iter_mut().find(|h| {
                    h.as_ref().is_some_and(|e| {
                        matches!(e.kind(), ServerEventKind::MessageNew { message, .. } if message.id == item.head().id)
                    })
                });
                messages.push((
                    key,
                    match live.and_then(Option::take) {
                        Some(e) => e,
                        None => {
                            recovered += 1;
                            ServerEvent::synthesize_message_new(channel, item)
                        }
                    },
                ));
            }
        } else {
            if let Some(newest) = gap.first() {
                // The app reloads the channel; later catch-ups start from the newest known
                // message (remembered as delivered below: it is in the reload).
                c.anchor = Some(Anchor {
                    id: newest.head().id.detached(),
                    created_at: newest.head().created_at,
                    given: false,
                });
            }
            c.reloaded = [
                c.reloaded,
                c.anchor.as_ref().and_then(|a| a.created_at),
                reload_point,
            ]
            .into_iter()
            .flatten()
            .max();
        }
        // Held live messages without a creation time keep their arrival order, last.
        messages.extend(held_messages.into_iter().flatten().map(|e| {
            let key = match e.kind() {
                ServerEventKind::MessageNew { message, .. } => {
                    message.created_at.map_or(i64::MAX, Timestamp::unix_nanos)
                }
                _ => i64::MAX,
            };
            (key, e)
        }));
        messages.sort_by_key(|(key, _)| *key);
        for item in &updates {
            self.out.push_back(CatchUpOutput::Deliver(
                ServerEvent::synthesize_message_new(channel, item).into_update(),
            ));
        }
        for e in messages.into_iter().map(|(_, e)| e).chain(held_other) {
            Self::deliver(
                c,
                &mut self.untracked,
                &mut self.out,
                &mut self.duplicates,
                e,
            );
        }
        if !complete {
            // What the walk read is in the app's reload: never delivered as missed by a later
            // walk, whose late margin may reach below the reload.
            for item in &gap {
                c.in_reload
                    .insert(item.head().id.clone(), item.head().created_at);
            }
        }
        self.out.push_back(CatchUpOutput::Resynced {
            channel_id: channel.clone(),
            recovered,
            complete,
        });
    }

    /// Sends the reads whose time has come, as far as pacing allows.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.issue_due(now);
    }

    /// Issues waiting walks' next pages, the focused and earliest subscribed first, while
    /// the pacer allows.
    fn issue_due(&mut self, now: Instant) {
        // A read never answered (its answer lost on the way) failed.
        let lost: Vec<(Text, u64)> = self
            .channels
            .iter()
            .filter_map(|(ch, c)| match &c.phase {
                Phase::CatchingUp(w) => match w.req {
                    Req::InFlight { id, until } if until <= now => Some((ch.clone(), id)),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        for (channel, id) in lost {
            self.requests.remove(&id);
            self.on_failure(now, &channel, Failure::Retry);
        }
        // A retry whose time has come waits in line like any other read from now on.
        for c in self.channels.values_mut() {
            if let Phase::CatchingUp(w) = &mut c.phase
                && matches!(w.req, Req::RetryAt(at) if at <= now)
            {
                w.req = Req::Queued;
            }
        }
        let mut waiting: Vec<(_, Text)> = self
            .channels
            .iter()
            .filter(|(_, c)| matches!(&c.phase, Phase::CatchingUp(w) if w.is_waiting(now)))
            .map(|(ch, c)| (c.priority(), ch.clone()))
            .collect();
        if waiting.is_empty() {
            return;
        }
        waiting.sort_unstable();
        let limit = self.config.page_size;
        for (_, channel) in waiting {
            if !self.pacer.try_send(now, self.next_id) {
                break;
            }
            let id = self.next_id;
            self.next_id += 1;
            let Some(Phase::CatchingUp(walk)) =
                self.channels.get_mut(&channel).map(|c| &mut c.phase)
            else {
                continue;
            };
            walk.req = Req::InFlight {
                id,
                until: now + self.read_timeout,
            };
            self.requests.insert(id, channel.clone());
            self.out.push_back(CatchUpOutput::Fetch(HistoryRequest {
                id,
                channel_id: channel,
                before: walk.before.clone(),
                limit,
                token: None,
            }));
        }
    }

    /// Walks waiting for a read, and the instant pacing lets the next one go if it is the
    /// server's budget or wait that holds them (not the number in flight).
    pub(crate) fn rate_limited_until(&mut self, now: Instant) -> Option<(Instant, usize)> {
        let waiting = self
            .channels
            .values()
            .filter(|c| matches!(&c.phase, Phase::CatchingUp(w) if w.is_waiting(now)))
            .count();
        if waiting == 0 {
            return None;
        }
        match self.pacer.blocked(now) {
            Some(Blocked::Until(t)) => Some((t, waiting)),
            _ => None,
        }
    }

    /// The earliest instant something is due: a retry after a failure, or, while walks wait
    /// for the pacer, the end of its wait (or of an unanswered read's time in flight).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let mut waiting = false;
        let retry = self
            .channels
            .values()
            .filter_map(|c| match &c.phase {
                Phase::CatchingUp(w) => match w.req {
                    Req::RetryAt(at) => Some(at),
                    Req::Queued => {
                        waiting = true;
                        None
                    }
                    Req::InFlight { until, .. } => Some(until),
                },
                _ => None,
            })
            .min();
        let paced = if waiting { self.pacer.wake_at() } else { None };
        match (retry, paced) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next thing to do.
    pub(crate) fn poll_output(&mut self) -> Option<CatchUpOutput> {
        self.out.pop_front()
    }

    /// Live events held across all channels (bounded by `max_held` each).
    pub(crate) fn held(&self) -> usize {
        self.channels
            .values()
            .map(|c| match &c.phase {
                Phase::CatchingUp(w) => w.held.len(),
                Phase::Idle {
                    missed: Missed::Walk { early },
                }
                | Phase::Subscribing {
                    missed: Missed::Walk { early },
                } => early.len(),
                _ => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests;
