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

/// The newest message the app has of a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anchor {
    /// Not known yet (a history probe is on its way, or failed).
    Unknown,
    /// The channel had no messages.
    Empty,
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
pub enum CatchUpOutput {
    /// Fetch a page.
    Fetch(HistoryRequest),
    /// Deliver this event to the app (a `message_new`, or an event held behind a catch-up).
    Deliver(ServerEvent),
    /// A probe answered with an unconfirmed anchor: the connection should send a ping, and
    /// call [`CatchUp::confirm_anchors`] when its `pong` arrives.
    FenceNeeded,
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

/// Longest `Retry-After` a catch-up waits out while holding its channel's live events.
const MAX_HOLD_WAIT: Duration = Duration::from_secs(30);

/// What a failed request leads to.
enum Failure {
    /// Try again, not before `after` when the server said so.
    Retry { after: Option<Duration> },
    /// The request cannot succeed (the channel is gone or forbidden).
    GiveUp,
}

#[derive(Clone, Debug)]
enum Req {
    InFlight(u64),
    RetryAt(Instant),
}

#[derive(Clone, Debug)]
struct Walk {
    req: Req,
    failures: u32,
    /// The walk starts from an anchor it can trust (not a probe's unconfirmed answer):
    /// only then can it end `complete`.
    exact: bool,
    before: Option<Text>,
    gap: Vec<HistoryItem>,
    gap_ids: BTreeSet<Text>,
    held: Vec<ServerEvent>,
}

#[derive(Clone, Debug)]
enum Sync {
    /// Messages are delivered as they arrive.
    Live,
    /// A `limit=1` request to learn the anchor.
    Probe { req: Req, failures: u32 },
    /// Walking history back to the anchor.
    CatchUp(Box<Walk>),
}

#[derive(Clone, Debug)]
struct Channel {
    anchor: Anchor,
    recent: RecentIds,
    sync: Sync,
    /// Subscribed on the current connection.
    live: bool,
    /// A `subscribe` went out on the current connection: the server may have started sending
    /// (and we missed) messages even if its `subscribed` never reached us.
    sent: bool,
    /// The next `subscribed` must catch up (a reconnect, or an app-given anchor).
    needs_catch_up: bool,
    /// The anchor came from a probe and is not confirmed yet: messages created between the
    /// server's `subscribe` and the probe's answer may have been lost on the way, so a
    /// catch-up from it cannot claim to be complete. Confirmed by a later live delivery, or by
    /// a `pong` to a ping sent after the probe answered ([`CatchUp::confirm_anchors`]).
    provisional: bool,
    /// A reload (`resynced { complete: false }`) is owed: a gap could not be bounded (a
    /// reconnect found no anchor). Stays owed across drops until it is reported.
    owed_incomplete: bool,
    /// Live events that arrived while a catch-up was due but before its `subscribed`: a
    /// server can start broadcasting to a socket before its reply to `subscribe` leaves (the
    /// dev server does, between two locks). Delivering them would move the anchor past the
    /// gap; they join the catch-up's held events instead.
    early: Vec<ServerEvent>,
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

/// Tracks every wanted channel's anchor and drives catch-ups.
///
/// Verbs: [`track`](Self::track) / [`forget`](Self::forget) from the app;
/// [`handle_subscribed`](Self::handle_subscribed), [`handle_event`](Self::handle_event),
/// [`handle_history`](Self::handle_history), [`handle_disconnect`](Self::handle_disconnect),
/// [`handle_timeout`](Self::handle_timeout) from the connection; [`poll_output`](Self::poll_output)
/// and [`poll_timeout`](Self::poll_timeout).
#[derive(Clone, Debug)]
pub struct CatchUp {
    config: CatchUpConfig,
    channels: BTreeMap<Text, Channel>,
    out: VecDeque<CatchUpOutput>,
    next_id: u64,
    duplicates: u64,
    /// Recently forwarded message ids of channels not tracked (refused, or unsubscribed a
    /// moment ago while the server still sends): a message is forwarded once even there.
    untracked: RecentIds,
}

impl CatchUp {
    /// No channel tracked.
    pub fn new(config: CatchUpConfig) -> Self {
        Self {
            untracked: RecentIds::new(config.recent_ids),
            config,
            channels: BTreeMap::new(),
            out: VecDeque::new(),
            next_id: 1,
            duplicates: 0,
        }
    }

    /// Starts tracking a channel. `newest` is the newest message id the app already shows,
    /// if it knows one: the first `subscribed` then catches up from it.
    pub fn track(&mut self, channel: Text, newest: Option<Text>) {
        let recent = RecentIds::new(self.config.recent_ids);
        let entry = self.channels.entry(channel).or_insert(Channel {
            anchor: Anchor::Unknown,
            recent,
            sync: Sync::Live,
            live: false,
            sent: false,
            needs_catch_up: false,
            provisional: false,
            owed_incomplete: false,
            early: Vec::new(),
        });
        if let Some(id) = newest {
            entry.anchor = Anchor::Message {
                id,
                created_at: None,
            };
            entry.needs_catch_up = true;
        }
    }

    /// Stops tracking a channel (unsubscribed or refused); an ongoing catch-up is abandoned.
    pub fn forget(&mut self, channel: &Text) {
        // What it delivered stays known: the server may still send (or repeat) its messages.
        if let Some(c) = self.channels.remove(channel) {
            for id in c.recent.order {
                self.untracked.insert(id);
            }
        }
    }

    /// The channel's anchor.
    pub fn anchor(&self, channel: &Text) -> Option<&Anchor> {
        self.channels.get(channel).map(|c| &c.anchor)
    }

    /// Whether the channel's live events are held: it is catching up, or a catch-up is due
    /// and waits for the channel's `subscribed`.
    pub fn is_catching_up(&self, channel: &Text) -> bool {
        self.channels
            .get(channel)
            .is_some_and(|c| c.needs_catch_up || matches!(c.sync, Sync::CatchUp(_)))
    }

    /// Duplicate message events suppressed so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// A `subscribe` for `channel` went out on the current connection.
    pub fn handle_subscribe_sent(&mut self, channel: &Text) {
        if let Some(c) = self.channels.get_mut(channel) {
            c.sent = true;
        }
    }

    /// A `pong` answered a ping sent after every probe so far had answered: the socket
    /// delivered everything the server sent before those answers, so their anchors hold.
    pub fn confirm_anchors(&mut self) {
        for c in self.channels.values_mut() {
            c.provisional = false;
        }
    }

    /// The server confirmed a subscription: start whatever this channel needs.
    pub fn handle_subscribed(&mut self, now: Instant, channel: &Text) {
        let Some(c) = self.channels.get_mut(channel) else {
            return;
        };
        c.live = true;
        let catch_up = std::mem::take(&mut c.needs_catch_up);
        let has_anchor = c.anchor != Anchor::Unknown;
        let early = std::mem::take(&mut c.early);
        if catch_up && has_anchor {
            c.sync = Sync::CatchUp(Box::new(Walk {
                req: Req::RetryAt(now),
                failures: 0,
                exact: !c.provisional,
                before: None,
                gap: Vec::new(),
                gap_ids: BTreeSet::new(),
                held: early,
            }));
            self.issue_due(now);
            return;
        }
        // No walk to join: what came early is delivered now, in arrival order.
        for e in early {
            Self::deliver(c, &self.untracked, &mut self.out, &mut self.duplicates, e);
        }
        if !has_anchor {
            // A reconnect with no anchor cannot tell what was missed: the app must reload.
            c.owed_incomplete |= catch_up;
            c.sync = Sync::Probe {
                req: Req::RetryAt(now),
                failures: 0,
            };
        } else {
            c.sync = Sync::Live;
        }
        self.issue_due(now);
    }

    /// A live event about `channel`: held while the channel catches up (so edits, deletes and
    /// reactions cannot overtake the messages they refer to), else delivered, a `message_new`
    /// only once.
    pub fn handle_event(&mut self, channel: &Text, event: ServerEvent) {
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
        if let Sync::CatchUp(walk) = &mut c.sync {
            walk.held.push(event);
            if walk.held.len() > max_held {
                self.finish(channel, false);
            }
            return;
        }
        if c.needs_catch_up {
            c.early.push(event);
            if c.early.len() > max_held {
                // Too much before `subscribed`: deliver, and owe the app a reload, since the
                // anchor now moves past a gap that may never be walked.
                c.owed_incomplete = true;
                for e in std::mem::take(&mut c.early) {
                    Self::deliver(c, &self.untracked, &mut self.out, &mut self.duplicates, e);
                }
            }
            return;
        }
        Self::deliver(
            c,
            &self.untracked,
            &mut self.out,
            &mut self.duplicates,
            event,
        );
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
            _ => true,
        };
        if newer {
            c.anchor = Anchor::Message {
                id: kept,
                created_at: message.created_at,
            };
            // Delivered live after the probe's answer and newer than it: the socket carries
            // everything before it, so the anchor is now a delivered message.
            c.provisional = false;
        }
        out.push_back(CatchUpOutput::Deliver(event));
    }

    /// The connection is gone: every channel that was live must catch up on the next
    /// `subscribed`. Catch-ups in progress are abandoned; their held events are dropped
    /// because the anchor did not move, so the next catch-up fetches them again.
    ///
    /// Held events other than messages (edits, deletes, reactions, typing) are delivered now:
    /// REST history cannot replay them, and late is better than never (an edit or delete of a
    /// message the app has not seen yet is harmless; the refetched body shows the final text).
    pub fn handle_disconnect(&mut self) {
        for c in self.channels.values_mut() {
            // Sent is enough: the server may have processed the subscribe and broadcast to
            // us before the link died, even if its `subscribed` never arrived.
            if c.live || c.sent {
                c.needs_catch_up = true;
            }
            c.live = false;
            c.sent = false;
            let early = std::mem::take(&mut c.early);
            let held = match std::mem::replace(&mut c.sync, Sync::Live) {
                Sync::CatchUp(walk) => walk.held,
                _ => Vec::new(),
            };
            for e in early.into_iter().chain(held) {
                if !matches!(e.kind(), ServerEventKind::MessageNew { .. }) {
                    self.out.push_back(CatchUpOutput::Deliver(e));
                }
            }
        }
    }

    /// A history response for request `id`; stale ids are ignored.
    pub fn handle_history(&mut self, now: Instant, id: u64, response: Result<Bytes, HistoryError>) {
        let Some((channel, _)) = self.channels.iter().find(|(_, c)| match &c.sync {
            Sync::Probe {
                req: Req::InFlight(r),
                ..
            } => *r == id,
            Sync::CatchUp(w) => matches!(w.req, Req::InFlight(r) if r == id),
            Sync::Probe { .. } | Sync::Live => false,
        }) else {
            return;
        };
        let channel = channel.clone();
        let page = match response {
            // A body that is not a page (a proxy's HTML error, a truncated read) may not repeat.
            Ok(body) => HistoryPage::decode(body, self.config.max_body)
                .map_err(|_| Failure::Retry { after: None }),
            Err(HistoryError::Status {
                status,
                retry_after,
            }) => {
                if status == 401 {
                    self.out.push_back(CatchUpOutput::TokenRejected);
                }
                Err(match status {
                    400 | 403 | 404 | 410 => Failure::GiveUp,
                    _ => Failure::Retry { after: retry_after },
                })
            }
            Err(HistoryError::Network) => Err(Failure::Retry { after: None }),
        };
        match page {
            Ok(page) => self.on_page(now, &channel, page),
            Err(retry) => self.on_failure(now, &channel, retry),
        }
        self.issue_due(now);
    }

    fn on_failure(&mut self, now: Instant, channel: &Text, failure: Failure) {
        let (base, attempts) = (self.config.retry_base, self.config.max_attempts);
        let Some(c) = self.channels.get_mut(channel) else {
            return;
        };
        let (req, failures) = match &mut c.sync {
            Sync::Probe { req, failures, .. } => (req, failures),
            Sync::CatchUp(w) => (&mut w.req, &mut w.failures),
            Sync::Live => return,
        };
        *failures += 1;
        match failure {
            // A server that wants us gone for long would silence the channel (its live events
            // are held meanwhile): give up and let the app reload instead.
            Failure::Retry { after }
                if *failures < attempts && after.is_none_or(|a| a <= MAX_HOLD_WAIT) =>
            {
                let backoff = base * 2u32.saturating_pow(*failures - 1);
                let after = crate::close::clamp_wait(after.unwrap_or_default());
                *req = Req::RetryAt(now + after.max(backoff));
            }
            _ => {
                if let Sync::Probe { .. } = c.sync {
                    c.sync = Sync::Live;
                    if std::mem::take(&mut c.owed_incomplete) {
                        self.out.push_back(CatchUpOutput::Resynced {
                            channel_id: channel.clone(),
                            recovered: 0,
                            complete: false,
                        });
                    }
                } else {
                    self.finish(channel, false);
                }
            }
        }
    }

    fn on_page(&mut self, now: Instant, channel: &Text, page: HistoryPage) {
        let (limit, max) = (self.config.page_size, self.config.max_messages);
        let Some(c) = self.channels.get_mut(channel) else {
            return;
        };
        match &mut c.sync {
            Sync::Live => {}
            Sync::Probe { .. } => {
                if c.anchor == Anchor::Unknown {
                    c.anchor = match page.items.first() {
                        Some(item) => {
                            c.provisional = true;
                            self.out.push_back(CatchUpOutput::FenceNeeded);
                            Anchor::Message {
                                id: item.head().id.detached(),
                                created_at: item.head().created_at,
                            }
                        }
                        // Nothing existed when the probe read: a walk from the start of the
                        // channel is exact.
                        None => Anchor::Empty,
                    };
                }
                c.sync = Sync::Live;
                if std::mem::take(&mut c.owed_incomplete) {
                    self.out.push_back(CatchUpOutput::Resynced {
                        channel_id: channel.clone(),
                        recovered: 0,
                        complete: false,
                    });
                }
            }
            Sync::CatchUp(walk) => {
                let (anchor_id, anchor_at) = match &c.anchor {
                    Anchor::Message { id, created_at } => (Some(id.clone()), *created_at),
                    _ => (None, None),
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
                    // The anchor itself may have been deleted: anything older is known.
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
                // An app-given anchor has no time; learn it when met, so a later walk can
                // still stop if that message is deleted.
                if let (Anchor::Message { created_at, .. }, Some(t)) = (&mut c.anchor, anchor_time)
                {
                    created_at.get_or_insert(t);
                }
                if walk.gap.len() > max {
                    self.finish(channel, false);
                } else if reached {
                    self.finish(channel, true);
                } else if !page.has_more_given(limit) {
                    // The start of history, without meeting the anchor. Exact only when the
                    // walk knew where to stop by time (the anchor was deleted) or the channel
                    // was empty; an anchor known only by id (from the app) that is gone leaves
                    // no way to tell what the app has.
                    let known = anchor_at.is_some() || anchor_id.is_none();
                    self.finish(channel, known);
                } else if let (true, Some(cursor)) = (progressed, page.cursor()) {
                    walk.before = Some(cursor);
                    walk.failures = 0;
                    walk.req = Req::RetryAt(now);
                } else {
                    // More pages claimed but none reachable, or a page that taught nothing
                    // (a server ignoring `before`): stop rather than loop.
                    self.finish(channel, false);
                }
            }
        }
    }

    /// Ends a channel's catch-up: gap oldest-first, then held live events, then `resynced`.
    fn finish(&mut self, channel: &Text, complete: bool) {
        let Some(c) = self.channels.get_mut(channel) else {
            return;
        };
        let Sync::CatchUp(walk) = std::mem::replace(&mut c.sync, Sync::Live) else {
            return;
        };
        let Walk {
            gap, held, exact, ..
        } = *walk;
        let complete = complete && exact && !std::mem::take(&mut c.owed_incomplete);
        c.provisional = false;
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

    /// Re-issues requests whose retry time has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.issue_due(now);
    }

    fn issue_due(&mut self, now: Instant) {
        let limit = self.config.page_size;
        for (channel, c) in &mut self.channels {
            let (req, before, limit) = match &mut c.sync {
                Sync::Probe { req, .. } => (req, None, 1),
                Sync::CatchUp(w) => (&mut w.req, w.before.clone(), limit),
                Sync::Live => continue,
            };
            if matches!(req, Req::RetryAt(at) if *at <= now) {
                let id = self.next_id;
                self.next_id += 1;
                *req = Req::InFlight(id);
                self.out.push_back(CatchUpOutput::Fetch(HistoryRequest {
                    id,
                    channel_id: channel.clone(),
                    before,
                    limit,
                    token: None,
                }));
            }
        }
    }

    /// The earliest retry due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.channels
            .values()
            .filter_map(|c| match &c.sync {
                Sync::Probe {
                    req: Req::RetryAt(at),
                    ..
                } => Some(*at),
                Sync::CatchUp(w) => match w.req {
                    Req::RetryAt(at) => Some(at),
                    Req::InFlight(_) => None,
                },
                _ => None,
            })
            .min()
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<CatchUpOutput> {
        self.out.pop_front()
    }

    /// Live events held across all channels (bounded by `max_held` each).
    pub fn held(&self) -> usize {
        self.channels
            .values()
            .map(|c| {
                c.early.len()
                    + match &c.sync {
                        Sync::CatchUp(w) => w.held.len(),
                        _ => 0,
                    }
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_forget_the_oldest_beyond_capacity() {
        let mut r = RecentIds::new(2);
        for id in ["a", "b", "c"] {
            r.insert(Text::from(id));
        }
        assert!(!r.contains(&Text::from("a")));
        assert!(r.contains(&Text::from("b")) && r.contains(&Text::from("c")));
    }
}
