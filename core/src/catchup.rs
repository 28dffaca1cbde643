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

use crate::pacing::{Blocked, Pacer, PacingConfig, ReadHeaders, ServerClock};
use crate::secret::Secret;
use crate::text::Text;
use crate::timestamp::Timestamp;
use crate::wire::{HistoryItem, HistoryPage, ServerEvent, ServerEventKind};

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
        }
    }
}

/// Where a channel's catch-up stops: the newest thing the app is known to have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Anchor {
    /// Nothing known: the server's clock was unknown when the channel was subscribed (no
    /// `Date` header), and nothing was delivered since. A gap cannot be bounded.
    Unknown,
    /// Every message created at or after this server time was delivered live (or is part of
    /// a gap): a lower bound of the server's clock when the channel's `subscribe` went out,
    /// minus a margin. Set for a channel that has no message anchor yet.
    Since(Timestamp),
    /// This message.
    Message {
        /// Its id.
        id: Text,
        /// Its creation time, when known (an app-given anchor has none).
        created_at: Option<Timestamp>,
    },
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
    /// The server asked every read to wait (429, or 503 with `Retry-After`): not a failure
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
    /// Sent as this request id.
    InFlight(u64),
    /// Failed; in line again from this instant.
    RetryAt(Instant),
}

/// A catch-up in progress: history pages walked newest-first back to the anchor.
#[derive(Clone, Debug)]
struct Walk {
    req: Req,
    failures: u32,
    before: Option<Text>,
    gap: Vec<HistoryItem>,
    gap_ids: BTreeSet<Text>,
    /// Live events about the channel, held until the gap is delivered.
    held: Vec<ServerEvent>,
}

impl Walk {
    fn new(held: Vec<ServerEvent>) -> Self {
        Self {
            req: Req::Queued,
            failures: 0,
            before: None,
            gap: Vec::new(),
            gap_ids: BTreeSet::new(),
            held,
        }
    }

    /// In line for a read at `now` (not in flight, not backing off).
    fn is_waiting(&self, now: Instant) -> bool {
        match self.req {
            Req::Queued => true,
            Req::RetryAt(at) => at <= now,
            Req::InFlight(_) => false,
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
    /// Messages may have been missed, and no anchor bounds them: the app must reload
    /// (`resynced { complete: false }`).
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
    anchor: Anchor,
    recent: RecentIds,
    phase: Phase,
    /// Position in subscription order (earlier subscribed, earlier caught up).
    order: u64,
    /// When the app last focused it (0: never); the latest focused catch up first.
    focus: u64,
}

impl Channel {
    /// What a drop costs this channel, given what it knows.
    fn missed(&self) -> Missed {
        if self.anchor == Anchor::Unknown {
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

/// De-duplication memory: the last N delivered ids.
#[derive(Clone, Debug, Default)]
struct RecentIds {
    order: VecDeque<Text>,
    set: BTreeSet<Text>,
    cap: usize,
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

    /// Remembers `id`; returns the copy kept (shared, so the caller can keep it too without
    /// another allocation).
    fn insert(&mut self, id: Text) -> Text {
        // Kept long: a copy, not a slice pinning the frame or page it came from.
        let id = id.detached();
        if self.set.insert(id.clone()) {
            self.order.push_back(id.clone());
            if self.order.len() > self.cap
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
        id
    }
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
    clock: ServerClock,
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
            pacer: Pacer::new(pacing),
            clock: ServerClock::default(),
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
            anchor: Anchor::Unknown,
            recent,
            phase: Phase::Idle {
                missed: Missed::Nothing,
            },
            order,
            focus: 0,
        });
        if let Some(id) = newest {
            entry.anchor = Anchor::Message {
                id,
                created_at: None,
            };
            if let Phase::Idle { missed } | Phase::Subscribing { missed } = &mut entry.phase
                && !matches!(missed, Missed::Walk { .. })
            {
                *missed = Missed::Walk { early: Vec::new() };
            }
        }
    }

    /// Stops tracking a channel (unsubscribed or refused); an ongoing catch-up is abandoned.
    pub(crate) fn forget(&mut self, channel: &Text) {
        // What it delivered stays known: the server may still send (or repeat) its messages.
        if let Some(c) = self.channels.remove(channel) {
            for id in c.recent.order {
                self.untracked.insert(id);
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
        self.channels.get(channel).map(|c| &c.anchor)
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

    /// Read answers that asked every read to wait (429, or 503 with `Retry-After`).
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
        if let Some(date) = h.date {
            self.clock.handle_date(now, date);
        }
        let own = request.is_some_and(|id| self.pacer.is_in_flight(id));
        self.pacer.handle_headers(now, h, &self.clock, own);
        self.issue_due(now);
    }

    /// A `subscribe` for `channel` went out on the current socket at `now`. A channel with no
    /// anchor gets one: the server's time now (a lower bound), less the clock margin. Every
    /// message created after that is either delivered live or part of a later gap.
    pub(crate) fn handle_subscribe_sent(&mut self, now: Instant, channel: &Text) {
        let Some(c) = self.channels.get_mut(channel) else {
            return;
        };
        if c.anchor == Anchor::Unknown
            && let Some(t) = self.clock.lower_bound(now)
        {
            let margin = i64::try_from(self.clock_margin.as_nanos()).unwrap_or(i64::MAX);
            c.anchor = Anchor::Since(Timestamp::from_unix_nanos(
                t.unix_nanos().saturating_sub(margin),
            ));
        }
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

    /// A live event about `channel`: held while the channel catches up or waits to (so
    /// edits, deletes and reactions cannot overtake the messages they refer to), else
    /// delivered, a `message_new` only once.
    pub(crate) fn handle_event(&mut self, channel: &Text, event: ServerEvent) {
        let max_held = self.config.max_held;
        let Some(c) = self.channels.get_mut(channel) else {
            // Not a tracked channel (e.g. unsubscribed a moment ago): forward, once.
            if let ServerEventKind::MessageNew { message, .. } = event.kind() {
                if self.untracked.contains(&message.id) {
                    self.duplicates += 1;
                    return;
                }
                self.untracked.insert(message.id.clone());
            }
            self.out.push_back(CatchUpOutput::Deliver(event));
            return;
        };
        match &mut c.phase {
            Phase::CatchingUp(walk) => {
                walk.held.push(event);
                if walk.held.len() > max_held {
                    self.finish(channel, false);
                }
            }
            Phase::Idle { missed } | Phase::Subscribing { missed } => {
                let Missed::Walk { early } = missed else {
                    Self::deliver(
                        c,
                        &self.untracked,
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
                        Self::deliver(c, &self.untracked, &mut self.out, &mut self.duplicates, e);
                    }
                }
            }
            Phase::Live => {
                Self::deliver(
                    c,
                    &self.untracked,
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
        untracked: &RecentIds,
        out: &mut VecDeque<CatchUpOutput>,
        duplicates: &mut u64,
        event: ServerEvent,
    ) {
        let ServerEventKind::MessageNew { message, .. } = event.kind() else {
            out.push_back(CatchUpOutput::Deliver(event));
            return;
        };
        if c.recent.contains(&message.id) || untracked.contains(&message.id) {
            *duplicates += 1;
            return;
        }
        let kept = c.recent.insert(message.id.clone());
        let newer = match (&c.anchor, message.created_at) {
            (
                Anchor::Message {
                    created_at: Some(at),
                    ..
                },
                Some(m),
            ) => m >= *at,
            // Older than the subscription: the app's own history, not a new anchor.
            (Anchor::Since(t), Some(m)) => m >= *t,
            (Anchor::Since(_), None) => false,
            _ => true,
        };
        if newer {
            c.anchor = Anchor::Message {
                id: kept,
                created_at: message.created_at,
            };
        }
        out.push_back(CatchUpOutput::Deliver(event));
    }

    /// The connection is gone: every channel whose `subscribe` went out must catch up on the
    /// next `subscribed` (the server may have broadcast to us before the link died, even if
    /// its `subscribed` never arrived). Catch-ups in progress are abandoned; their held
    /// messages are dropped because the anchor did not move, so the next walk fetches them
    /// again.
    ///
    /// Held events other than messages (edits, deletes, reactions, typing) are delivered now:
    /// REST history cannot replay them, and late is better than never (an edit or delete of a
    /// message the app has not seen yet is harmless; the refetched body shows the final text).
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
                if !matches!(e.kind(), ServerEventKind::MessageNew { .. }) {
                    self.out.push_back(CatchUpOutput::Deliver(e));
                }
            }
        }
    }

    /// A history response for request `id`. Its pacing slot is freed whatever it says; an
    /// answer to a walk abandoned by a drop is otherwise ignored.
    pub(crate) fn handle_history(
        &mut self,
        now: Instant,
        id: u64,
        response: Result<Bytes, HistoryError>,
    ) {
        self.pacer.handle_answer(id);
        if let Err(HistoryError::Status {
            status,
            retry_after,
        }) = &response
            && (*status == 429 || (*status == 503 && retry_after.is_some()))
        {
            // Applied even when the driver did not report the headers.
            self.pacer.pause(now, *retry_after, *status == 429);
        }
        let Some(channel) = self.requests.remove(&id) else {
            self.issue_due(now);
            return;
        };
        let page = match response {
            // A body that is not a page (a proxy's HTML error, a truncated read) may not repeat.
            Ok(body) => HistoryPage::decode(body, self.config.max_body).map_err(|_| Failure::Retry),
            Err(HistoryError::Status {
                status,
                retry_after,
            }) => {
                if status == 401 {
                    self.out.push_back(CatchUpOutput::TokenRejected);
                }
                Err(match status {
                    400 | 403 | 404 | 410 => Failure::GiveUp,
                    429 => Failure::Paced,
                    503 if retry_after.is_some() => Failure::Paced,
                    _ => Failure::Retry,
                })
            }
            Err(HistoryError::Network) => Err(Failure::Retry),
        };
        match page {
            Ok(page) => self.on_page(&channel, page),
            Err(failure) => self.on_failure(now, &channel, failure),
        }
        self.issue_due(now);
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
            Failure::Retry | Failure::GiveUp => self.finish(channel, false),
        }
    }

    fn on_page(&mut self, channel: &Text, page: HistoryPage) {
        let (limit, max) = (self.config.page_size, self.config.max_messages);
        let Some(c) = self.channels.get_mut(channel) else {
            return;
        };
        let Phase::CatchingUp(walk) = &mut c.phase else {
            return;
        };
        let (anchor_id, anchor_at) = match &c.anchor {
            Anchor::Message { id, created_at } => (Some(id.clone()), *created_at),
            Anchor::Since(t) => (None, Some(*t)),
            Anchor::Unknown => (None, None),
        };
        let before = walk.gap.len();
        let mut reached = false;
        let mut anchor_time = None;
        for item in &page.items {
            let h = item.head();
            if anchor_id.as_ref() == Some(&h.id) {
                anchor_time = h.created_at;
                reached = true;
                break;
            }
            // Older than the anchor (which may itself have been deleted): anything older is
            // known.
            if let (Some(at), Some(created)) = (anchor_at, h.created_at)
                && created < at
            {
                reached = true;
                break;
            }
            if c.recent.contains(&h.id)
                || self.untracked.contains(&h.id)
                || !walk.gap_ids.insert(h.id.clone())
            {
                continue;
            }
            walk.gap.push(item.clone());
        }
        let progressed = walk.gap.len() > before || page.items.is_empty();
        // An app-given anchor has no time; learn it when met, so a later walk can still stop
        // if that message is deleted.
        if let (Anchor::Message { created_at, .. }, Some(t)) = (&mut c.anchor, anchor_time) {
            created_at.get_or_insert(t);
        }
        if walk.gap.len() > max {
            self.finish(channel, false);
        } else if reached {
            self.finish(channel, true);
        } else if !page.has_more_given(limit) {
            // The start of history, without meeting the anchor. Exact only when the walk knew
            // where to stop by time; an anchor known only by id (from the app) that is gone
            // leaves no way to tell what the app has.
            self.finish(channel, anchor_at.is_some());
        } else if let (true, Some(cursor)) = (progressed, page.cursor()) {
            walk.before = Some(cursor);
            walk.failures = 0;
            walk.req = Req::Queued;
        } else {
            // More pages claimed but none reachable, or a page that taught nothing (a server
            // ignoring `before`): stop rather than loop.
            self.finish(channel, false);
        }
    }

    /// Ends a channel's catch-up: gap oldest-first, then held live events, then `resynced`.
    fn finish(&mut self, channel: &Text, complete: bool) {
        let Some(c) = self.channels.get_mut(channel) else {
            return;
        };
        let Phase::CatchingUp(walk) = std::mem::replace(&mut c.phase, Phase::Live) else {
            return;
        };
        let Walk { gap, held, req, .. } = *walk;
        if let Req::InFlight(id) = req {
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
        let mut messages: Vec<ServerEvent> = Vec::new();
        if complete {
            for item in gap.iter().rev() {
                let live = held_messages.iter_mut().find(|h| {
                    h.as_ref().is_some_and(|e| {
                        matches!(e.kind(), ServerEventKind::MessageNew { message, .. } if message.id == item.head().id)
                    })
                });
                messages.push(match live.and_then(Option::take) {
                    Some(e) => e,
                    None => {
                        recovered += 1;
                        ServerEvent::synthesize_message_new(channel, item)
                    }
                });
            }
        } else if let Some(newest) = gap.first() {
            // The app reloads the channel; later catch-ups start from the newest known message.
            c.anchor = Anchor::Message {
                id: newest.head().id.detached(),
                created_at: newest.head().created_at,
            };
        }
        messages.extend(held_messages.into_iter().flatten());
        // A stable sort: events without a creation time keep their arrival order, last.
        messages.sort_by_key(|e| match e.kind() {
            ServerEventKind::MessageNew { message, .. } => {
                message.created_at.map_or(i64::MAX, |t| t.unix_nanos())
            }
            _ => i64::MAX,
        });
        for e in messages.into_iter().chain(held_other) {
            Self::deliver(c, &self.untracked, &mut self.out, &mut self.duplicates, e);
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
            walk.req = Req::InFlight(id);
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
                    Req::InFlight(_) => None,
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
