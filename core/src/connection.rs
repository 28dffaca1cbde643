//! [`Connection`]: the sans-IO state machine that keeps one chat connection alive.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::action::{Action, Event, OpenRequest, RefreshRequest};
use crate::auth::{Auth, Credentials, RefreshError, RefreshOutcome};
use crate::backoff::Backoff;
use crate::catchup::{CatchUp, CatchUpOutput, HistoryError};
use crate::close::{FailReason, ReconnectReason, SocketEnd, TransportError, Verdict};
use crate::config::{AuthMode, Config, ConfigError};
use crate::heartbeat::{Beat, Heartbeat};
use crate::outbound::LimitKey;
use crate::outbound::{OutboundQueue, Policy, RateLimiter};
use crate::pacing::ReadHeaders;
use crate::rng::Rng;
use crate::secret::Secret;
use crate::session::SessionState;
use crate::stats::Stats;
use crate::status::Status;
use crate::subscriptions::{Refusal, SentKind, Subscriptions};
use crate::text::Text;
use crate::timestamp::Timestamp;
use crate::wire::{
    ClientEvent, DecodeError, Deflate, Encoding, ExtensionError, Protocol, ServerEvent,
    ServerEventKind, encode_frame, msgpack_to_json, split_batch,
};

/// The ping frame, shared so a heartbeat tick allocates nothing.
const PING: Text = Text::from_static(r#"{"type":"ping"}"#);

/// Longest channel id accepted from the app (Kaiku ids are 36-byte UUIDs).
const MAX_CHANNEL_ID: usize = 256;

/// Why `connect` was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// `set_credentials` was never called.
    #[error("no credentials: call set_credentials first")]
    NoCredentials,
}

/// Why `send` did not take an event. The event is handed back, never lost.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// A volatile event (typing, voice signalling, ping) while not connected.
    #[error("not connected; `{}` is only meaningful live", .0.event_type())]
    Offline(ClientEvent),
    /// The offline queue is full.
    #[error("offline queue full; `{}` not queued", .0.event_type())]
    QueueFull(ClientEvent),
    /// The event is malformed (a subscribe with an invalid channel id).
    #[error("invalid `{}` event", .0.event_type())]
    Invalid(ClientEvent),
}

impl SendError {
    /// The event that was not taken.
    pub fn into_event(self) -> ClientEvent {
        match self {
            Self::Offline(e) | Self::QueueFull(e) | Self::Invalid(e) => e,
        }
    }
}

/// Why `subscribe` refused a channel id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid channel id (empty, over {MAX_CHANNEL_ID} bytes, or with control characters)")]
pub struct InvalidChannel;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Socket {
    None,
    Opening,
    Open,
    Closing { abort_at: Instant },
}

#[derive(Clone, Debug)]
enum Phase {
    /// Waiting for a token refresh before opening, until `deadline`.
    Refreshing { deadline: Instant },
    /// Socket requested or open, waiting for `ready` until `deadline`.
    Handshake { deadline: Instant },
}

#[derive(Clone, Debug)]
struct Live {
    stable_at: Option<Instant>,
    heartbeat: Heartbeat,
}

#[derive(Clone, Debug)]
enum State {
    Disconnected,
    Connecting {
        attempt: u32,
        phase: Phase,
    },
    Connected(Live),
    Reconnecting {
        attempt: u32,
        retry_at: Instant,
        /// The end of a wait the server asked for (`Retry-After`, a rate-limit close): a
        /// network change skips the backoff, never this.
        not_before: Instant,
        reason: ReconnectReason,
        /// What the driver said about the failure (the status's `detail`).
        detail: Option<String>,
    },
    Failed {
        reason: FailReason,
        http_status: Option<u16>,
        detail: Option<String>,
    },
}

/// Most events in one outbound v2 frame.
const MAX_OUT_BATCH: usize = 64;
/// Most bytes of events in one outbound v2 frame (a lone larger event still leaves alone).
const MAX_OUT_BATCH_BYTES: usize = 32 * 1024;

/// One chat connection as a sans-IO state machine (DESIGN section 3).
///
/// It never reads a clock, sleeps, spawns or touches a socket: a driver feeds it inputs and
/// carries out its actions. The API comes in four kinds, as in quinn-proto:
///
/// - **App commands** (plain verbs): [`connect`](Self::connect),
///   [`disconnect`](Self::disconnect), [`subscribe`](Self::subscribe),
///   [`subscribe_from`](Self::subscribe_from), [`unsubscribe`](Self::unsubscribe),
///   [`focus`](Self::focus),
///   [`send`](Self::send), [`set_credentials`](Self::set_credentials).
/// - **Inputs from the world** (`handle_*`, each taking `now`):
///   [`handle_open`](Self::handle_open) (or [`handle_upgraded`](Self::handle_upgraded), with
///   the 101's extensions), [`handle_frame`](Self::handle_frame),
///   [`handle_binary`](Self::handle_binary),
///   [`handle_activity`](Self::handle_activity), [`handle_backpressure`](Self::handle_backpressure),
///   [`handle_closed`](Self::handle_closed),
///   [`handle_history`](Self::handle_history),
///   [`handle_history_headers`](Self::handle_history_headers),
///   [`handle_app_request`](Self::handle_app_request), [`handle_app_post`](Self::handle_app_post),
///   [`handle_server_date`](Self::handle_server_date), [`handle_refresh`](Self::handle_refresh),
///   [`handle_timeout`](Self::handle_timeout),
///   [`handle_network_change`](Self::handle_network_change).
/// - **Outputs** (`poll_*`): [`poll_action`](Self::poll_action) until `None`, then
///   [`poll_timeout`](Self::poll_timeout). See [`drain`](crate::drain).
/// - **Questions** (`&self`): [`status`](Self::status), [`is_connected`](Self::is_connected),
///   [`has_socket`](Self::has_socket), [`is_refresh_awaited`](Self::is_refresh_awaited),
///   [`stats`](Self::stats), [`rtt`](Self::rtt),
///   [`user_id`](Self::user_id), [`subscriptions`](Self::subscriptions),
///   [`queued`](Self::queued), [`held`](Self::held),
///   [`reads_paused_until`](Self::reads_paused_until), [`protocol`](Self::protocol),
///   [`deflate`](Self::deflate), [`config`](Self::config).
///
/// Time never runs backwards inside: every `now` is clamped to the latest seen.
#[derive(Debug)]
pub struct Connection {
    config: Config,
    state: State,
    socket: Socket,
    last_now: Option<Instant>,
    rng: Rng,
    backoff: Backoff,
    auth: Auth,
    subs: Subscriptions,
    /// Status, activity, custom status and the voice session, replayed after `ready`.
    session: SessionState,
    queue: OutboundQueue,
    limits: RateLimiter,
    catch_up: CatchUp,
    /// The one refresh allowed after a 401 was used; reset by `ready`.
    reauth_used: bool,
    /// The credentials (`Auth::generation`) the latest socket was opened with: a refusal of
    /// credentials replaced since says nothing of the current ones.
    socket_credentials: u64,
    /// The credentials the latest history read went out with, and the first read that went
    /// out with them (read ids only grow): every read before it used older ones.
    read_credentials: (u64, u64),
    actions: VecDeque<Action>,
    stats: Stats,
    rtt: Option<Duration>,
    user_id: Option<Text>,
    last_status: Option<Status>,
    /// The driver is not reading the socket (backpressure); see `handle_backpressure`.
    reading_paused: bool,
    /// What the open socket speaks (v1 until its 101 selects a v2 subprotocol).
    protocol: Protocol,
    /// permessage-deflate as the open socket's 101 agreed to it.
    deflate: Option<Deflate>,
    /// Until when catch-up reads wait on the server's rate limit, as last told to the app.
    reads_paused_until: Option<Instant>,
    /// Posts the app made whose live echo this socket owes, by channel and message id, with
    /// the instant it is overdue (see `handle_app_post`).
    echoes: BTreeMap<(Text, Text), Instant>,
    /// When a `subscribe` sent on this socket should have had its answer: a fence `ping`
    /// then shows whether it got something else (or nothing, from a server that never
    /// acknowledges), without waiting for the heartbeat.
    subscribe_fence_at: Option<Instant>,
    /// The latest messages that arrived on this socket, delivered or held, as hashes of
    /// (channel, id): a post's echo can come before its REST answer, and be held behind a
    /// catch-up.
    heard: VecDeque<u64>,
}

/// Messages remembered in `heard`.
const HEARD: usize = 256;

/// How long a `subscribe` may go unanswered before a fence `ping` asks (Kaiku answers in
/// milliseconds; a busy server in a few seconds).
const SUBSCRIBE_ANSWER_WAIT: Duration = Duration::from_secs(5);

/// A message's key in `Connection::heard`.
fn heard_key(channel: &Text, id: &Text) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    channel.as_str().hash(&mut h);
    id.as_str().hash(&mut h);
    h.finish()
}

/// The id of a `thread_reply_new`'s `message`, if it has one.
fn reply_id(event: &ServerEvent) -> Option<Text> {
    #[derive(serde::Deserialize)]
    struct Reply {
        message: Option<Id>,
    }
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    let reply: Reply = serde_json::from_str(event.json().as_str()).ok()?;
    Some(Text::from(reply.message?.id))
}

/// Posts awaiting their echo at once; beyond this the oldest is let go (one proves as much
/// as many).
const MAX_AWAITED_ECHOES: usize = 64;

impl Connection {
    /// A disconnected connection. Fails when the configuration breaks a rule (plain text to
    /// a non-loopback host without `allow_insecure`).
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            rng: Rng::new(config.seed),
            backoff: Backoff::new(config.backoff.clone()),
            auth: Auth::new(config.refresh_ahead),
            queue: OutboundQueue::new(config.queue.clone()),
            limits: RateLimiter::new(config.rate_limits.clone()),
            catch_up: CatchUp::new(config.catch_up.clone(), config.pacing.clone()),
            subs: Subscriptions::new(config.subscribe_retry, config.refusal_confirm_delay),
            config,
            state: State::Disconnected,
            socket: Socket::None,
            last_now: None,

            session: SessionState::default(),
            reauth_used: false,
            socket_credentials: 0,
            read_credentials: (0, 0),
            actions: VecDeque::new(),
            stats: Stats::default(),
            rtt: None,
            user_id: None,
            last_status: None,
            reading_paused: false,
            protocol: Protocol::V1,
            deflate: None,
            reads_paused_until: None,
            echoes: BTreeMap::new(),
            subscribe_fence_at: None,
            heard: VecDeque::new(),
        })
    }

    // ----- app commands -------------------------------------------------------------------

    /// Installs (or replaces) the credentials. They are used from the next connection attempt;
    /// a refresh is scheduled at `refresh_ahead` of the token's life.
    pub fn set_credentials(&mut self, now: Instant, credentials: Credentials) {
        let now = self.clamp(now);
        self.auth.set(now, credentials);
        // An attempt waiting for a refresh can go on with these at once.
        if let State::Connecting {
            attempt,
            phase: Phase::Refreshing { .. },
        } = self.state
        {
            self.open(now, attempt);
        }
    }

    /// Connects now. A no-op while connecting or connected; from `Reconnecting` it skips the
    /// remaining wait; from `Failed` or `Disconnected` it starts afresh.
    pub fn connect(&mut self, now: Instant) -> Result<(), ConnectError> {
        let now = self.clamp(now);
        if self.auth.credentials().is_none() {
            return Err(ConnectError::NoCredentials);
        }
        match self.state {
            State::Connecting { .. } | State::Connected(_) => {}
            State::Reconnecting { attempt, .. } => self.start_attempt(now, attempt),
            State::Disconnected | State::Failed { .. } => {
                self.backoff.handle_stable();
                self.reauth_used = false;
                self.start_attempt(now, 0);
            }
        }
        Ok(())
    }

    /// Closes the connection and stays disconnected. Subscriptions and session state are kept
    /// for the next [`connect`](Self::connect); queued events wait (until their max age).
    pub fn disconnect(&mut self, now: Instant) {
        let now = self.clamp(now);
        if matches!(self.state, State::Disconnected) {
            return;
        }
        self.teardown();
        self.close_socket(now, 1000, "client closing");
        self.set_state(State::Disconnected);
    }

    /// Wants a channel's events, now and after every reconnect.
    pub fn subscribe(&mut self, now: Instant, channel_id: &str) -> Result<(), InvalidChannel> {
        self.subscribe_inner(now, channel_id, None)
    }

    /// Like [`subscribe`](Self::subscribe), with the newest message id the app already shows:
    /// the first `subscribed` then catches up everything after it.
    pub fn subscribe_from(
        &mut self,
        now: Instant,
        channel_id: &str,
        newest_message_id: &str,
    ) -> Result<(), InvalidChannel> {
        self.subscribe_inner(now, channel_id, Some(newest_message_id))
    }

    fn subscribe_inner(
        &mut self,
        now: Instant,
        channel_id: &str,
        newest: Option<&str>,
    ) -> Result<(), InvalidChannel> {
        let _ = self.clamp(now);
        let valid = |s: &str| {
            !s.is_empty() && s.len() <= MAX_CHANNEL_ID && !s.chars().any(char::is_control)
        };
        if !valid(channel_id) || newest.is_some_and(|n| !valid(n)) {
            return Err(InvalidChannel);
        }
        let ch = Text::from(channel_id);
        if !self.subs.is_wanted(&ch) {
            self.catch_up.track(ch.clone(), newest.map(Text::from));
        }
        if self.subs.subscribe(ch.clone(), self.is_connected()) {
            self.send_subscribe(now, &ch);
        }
        Ok(())
    }

    /// The app is looking at this channel: when several channels catch up at once, its
    /// history is read first (the latest focused first, then the others in subscription
    /// order). Unknown channels are ignored.
    pub fn focus(&mut self, now: Instant, channel_id: &str) {
        let _ = self.clamp(now);
        self.catch_up.focus(&Text::from(channel_id));
    }

    /// Stops wanting a channel. Offline this only edits the set.
    pub fn unsubscribe(&mut self, now: Instant, channel_id: &str) {
        let _ = self.clamp(now);
        let ch = Text::from(channel_id);
        self.catch_up.forget(&ch);
        // No echo is owed on a channel no longer subscribed.
        self.echoes.retain(|(c, _), _| *c != ch);
        if self.subs.unsubscribe(&ch) && self.is_connected() {
            self.send_frame(
                ClientEvent::Unsubscribe {
                    channel_id: channel_id.to_owned(),
                }
                .to_json()
                .into(),
            );
        }
    }

    /// Sends a client event according to its [`Policy`]: volatile events only while connected
    /// (else [`SendError::Offline`]); state events fold into the session and are replayed
    /// after reconnects; the rest wait in the bounded offline queue (else
    /// [`SendError::QueueFull`]). Rate-limited events are coalesced to the latest value.
    /// `subscribe`/`unsubscribe` events are routed to [`subscribe`](Self::subscribe) and
    /// [`unsubscribe`](Self::unsubscribe).
    pub fn send(&mut self, now: Instant, event: ClientEvent) -> Result<(), SendError> {
        let now = self.clamp(now);
        let live = self.is_connected();
        match event {
            ClientEvent::Subscribe { channel_id } => {
                // A malformed id is the server's to refuse; keep the contract of `send`.
                if self.subscribe(now, &channel_id).is_err() {
                    return Err(SendError::Invalid(ClientEvent::Subscribe { channel_id }));
                }
                return Ok(());
            }
            ClientEvent::Unsubscribe { channel_id } => {
                self.unsubscribe(now, &channel_id);
                return Ok(());
            }
            _ => {}
        }
        match Policy::of(&event) {
            Policy::Volatile => {
                if !live {
                    self.stats.refused_offline += 1;
                    return Err(SendError::Offline(event));
                }
                if let ClientEvent::StopTyping { channel_id } = &event {
                    self.limits.cancel(&LimitKey::Typing(channel_id.clone()));
                }
                self.send_limited(now, event);
            }
            Policy::State => {
                self.session.apply(&event);
                if live {
                    self.send_state(now, event);
                }
            }
            Policy::Queued => {
                if live {
                    self.send_frame(event.to_json().into());
                } else if let Err(e) = self.queue.push(now, event) {
                    self.stats.refused_queue_full += 1;
                    return Err(SendError::QueueFull(e));
                }
            }
        }
        Ok(())
    }

    // ----- inputs from the world ---------------------------------------------------------

    /// The socket opened; `protocol` is the negotiated subprotocol, if any.
    ///
    /// The core owns the subprotocol rule: when it offered subprotocols, the server must
    /// select one of them (Kaiku echoes `access_token`). An answer that selects none, or one
    /// never offered, means a server that does not speak this protocol (or not with this
    /// auth mode): the socket is dropped and the connection fails for good
    /// (`Failed { subprotocol }`), as retrying would meet the same answer. A driver whose
    /// WebSocket library enforces the rule itself reports that refusal as
    /// `SocketEnd::Error(TransportError::Subprotocol)`, with the same outcome.
    pub fn handle_open(&mut self, now: Instant, protocol: Option<&str>) {
        // No extension answer: nothing to refuse.
        let _ = self.handle_upgraded(now, protocol, None);
    }

    /// The socket opened: `protocol` is the subprotocol its 101 selected and `extensions` its
    /// `Sec-WebSocket-Extensions` answer (every line of it, joined with `", "`). Besides
    /// [`handle_open`](Self::handle_open)'s rule, an extension the core did not offer, or an
    /// answer outside RFC 7692's rules, fails the connection for good
    /// ([`FailReason::Extension`]); the error says why, for the driver to log.
    pub fn handle_upgraded(
        &mut self,
        now: Instant,
        protocol: Option<&str>,
        extensions: Option<&str>,
    ) -> Result<(), ExtensionError> {
        let _ = self.clamp(now);
        if self.socket != Socket::Opening {
            return Ok(());
        }
        self.socket = Socket::Open;
        let offered = self.config.auth_mode == AuthMode::Subprotocol;
        let Some(speaks) = crate::subprotocol::agreed(offered, &self.config.v2, protocol) else {
            self.stats.missing_subprotocol += 1;
            self.fail(FailReason::Subprotocol, None, None);
            return Ok(());
        };
        self.protocol = speaks;
        let agreed = match self.config.deflate {
            Some(offer) => offer.accept(extensions),
            None => match extensions.map(str::trim).filter(|e| !e.is_empty()) {
                Some(e) => Err(ExtensionError::NotOffered(e.to_owned())),
                None => Ok(None),
            },
        };
        match agreed {
            Ok(deflate) => {
                self.deflate = deflate;
                Ok(())
            }
            Err(why) => {
                self.stats.refused_extensions += 1;
                self.fail(FailReason::Extension, None, None);
                Err(why)
            }
        }
    }

    /// A text frame arrived on the open socket.
    pub fn handle_frame(&mut self, now: Instant, frame: Bytes) {
        let Some(now) = self.receive(now, frame.len()) else {
            return;
        };
        if !self.protocol.batches() {
            match ServerEvent::decode(frame, self.config.max_inbound_message) {
                Ok(event) => self.handle_event(now, event),
                Err(_) => self.stats.decode_errors += 1,
            }
            return;
        }
        match crate::wire::check_frame(frame, self.config.max_inbound_message) {
            Ok(text) => self.handle_v2_text(now, text),
            Err(_) => self.stats.decode_errors += 1,
        }
    }

    /// A binary frame arrived on the open socket. With protocol v2 over MessagePack it holds
    /// events; otherwise it only proves the link alive (Kaiku ignores binary frames too).
    pub fn handle_binary(&mut self, now: Instant, frame: Bytes) {
        if self.protocol.encoding != Encoding::Msgpack {
            self.handle_activity(now);
            return;
        }
        let Some(now) = self.receive(now, frame.len()) else {
            return;
        };
        match msgpack_to_json(&frame, self.config.max_inbound_message) {
            Ok(text) => self.handle_v2_text(now, text),
            // A frame whose JSON would outgrow the cap is a bomb, not a message: counted
            // as oversized and the link is kept, since nothing of it was held.
            Err(DecodeError::TooLarge { .. }) => {
                self.stats.oversized += 1;
                self.stats.decode_errors += 1;
            }
            Err(_) => self.stats.decode_errors += 1,
        }
    }

    /// What every frame that may hold events goes through first, text or binary: a frame on a
    /// socket that is not open is stale; otherwise it proves the link alive, and one over
    /// `max_inbound_message` drops the socket (`message_too_large`). Returns the clamped `now`
    /// when the frame is to be decoded.
    fn receive(&mut self, now: Instant, len: usize) -> Option<Instant> {
        let now = self.clamp(now);
        if self.socket != Socket::Open {
            self.stats.stale_frames += 1;
            return None;
        }
        self.stats.frames_in += 1;
        if let State::Connected(live) = &mut self.state {
            live.heartbeat.handle_activity();
        }
        if len > self.config.max_inbound_message {
            self.stats.oversized += 1;
            self.abort_socket();
            self.retry_later(now, ReconnectReason::MessageTooLarge, None, None);
            return None;
        }
        Some(now)
    }

    /// A v2 frame's JSON, checked: one event, or a batch handled event by event, in order.
    fn handle_v2_text(&mut self, now: Instant, text: Text) {
        let events = match split_batch(text) {
            Ok(events) => events,
            Err(_) => {
                self.stats.decode_errors += 1;
                return;
            }
        };
        if events.len() > 1 {
            self.stats.batches_in += 1;
        }
        for json in events {
            match ServerEvent::decode_checked(json) {
                Ok(event) => self.handle_event(now, event),
                Err(_) => self.stats.decode_errors += 1,
            }
            // A `ready` that failed the subprotocol rule, or an event that dropped the
            // socket: the rest of the batch belonged to it.
            if self.socket != Socket::Open {
                return;
            }
        }
    }

    /// One decoded event from the open socket.
    fn handle_event(&mut self, now: Instant, event: ServerEvent) {
        if matches!(event.kind(), ServerEventKind::Pong) {
            self.subs.handle_pong(now);
            self.confirm_heard(now);
            if let State::Connected(live) = &mut self.state
                && let Some(rtt) = live.heartbeat.handle_pong(now)
            {
                self.rtt = Some(rtt);
            }
            return;
        }
        self.dispatch(now, event);
        self.drain_catch_up(now);
    }

    /// Something other than a text frame arrived (binary, WebSocket ping/pong): the link is
    /// alive, nothing else.
    pub fn handle_activity(&mut self, now: Instant) {
        let _ = self.clamp(now);
        if self.socket != Socket::Open {
            return;
        }
        if let State::Connected(live) = &mut self.state {
            live.heartbeat.handle_activity();
        }
    }

    /// The driver stopped (`true`) or resumed (`false`) reading the socket because the app
    /// is behind (DESIGN 3.6). Silence while paused is not a dead link: the heartbeat waits.
    pub fn handle_backpressure(&mut self, now: Instant, paused: bool) {
        let now = self.clamp(now);
        self.reading_paused = paused;
        if let State::Connected(live) = &mut self.state {
            live.heartbeat.set_paused(now, paused);
        }
    }

    /// The socket ended, or the upgrade failed. See [`SocketEnd::verdict`] for what follows,
    /// with one exception: a refusal of the credentials (401, close 4001/4004) that answers a
    /// socket opened with credentials replaced since ([`set_credentials`](Self::set_credentials)
    /// or a refresh) opens again at once with the current ones, as the same attempt, without
    /// a refresh.
    pub fn handle_closed(&mut self, now: Instant, why: SocketEnd) {
        let now = self.clamp(now);
        match self.socket {
            Socket::None => return,
            Socket::Closing { .. } => {
                self.socket = Socket::None;
                return;
            }
            Socket::Opening | Socket::Open => self.socket = Socket::None,
        }
        let http_status = match &why {
            SocketEnd::Refused { status, .. } => Some(*status),
            _ => None,
        };
        match why.transport_error() {
            // The driver's WebSocket library refused an oversized frame before the core saw it.
            Some(TransportError::TooLarge) => self.stats.oversized += 1,
            Some(TransportError::Subprotocol) => {
                self.stats.missing_subprotocol += 1;
            }
            _ => {}
        }
        let detail = why.detail().map(str::to_owned);
        match why.verdict() {
            Verdict::Retry { reason, min_wait } => {
                // The refreshed token was not refused: this attempt ended for another reason
                // (a 503, a drop). A later 401 is a new refusal and earns a new refresh; each
                // such cycle passes through a backoff, so it cannot become a tight loop.
                self.reauth_used = false;
                self.retry_later(now, reason, min_wait, detail);
            }
            Verdict::Reauth if self.socket_credentials != self.auth.generation() => {
                // The refused credentials were replaced while this socket went out (the app's
                // new login, a refresh that landed during the handshake): the current ones
                // were never tried. They go at once, in the same attempt, with no backoff and
                // the one refresh after a refusal still unspent.
                let attempt = self.attempt();
                self.teardown();
                self.start_attempt(now, attempt);
            }
            Verdict::Reauth => {
                let refreshable = self.auth.can_refresh() || self.auth.is_refreshing();
                if !self.reauth_used && refreshable {
                    self.reauth_used = true;
                    self.auth.mark_rejected();
                    let attempt = self.attempt();
                    self.teardown();
                    self.begin_refresh_for_connect(now, attempt);
                } else {
                    self.fail(FailReason::Auth, http_status, None);
                }
            }
            Verdict::Fail(reason) => self.fail(reason, http_status, detail),
        }
    }

    /// The answer to an [`Action::FetchHistory`]: the response body, or why there is none.
    /// A 401 asks for a token refresh, unless the read's token was replaced since it went
    /// out: then the read goes again with the current one.
    pub fn handle_history(
        &mut self,
        now: Instant,
        request_id: u64,
        response: Result<Bytes, HistoryError>,
    ) {
        let now = self.clamp(now);
        let refused = matches!(response, Err(HistoryError::Status { status: 401, .. }));
        let (generation, first) = self.read_credentials;
        if refused && (generation != self.auth.generation() || request_id < first) {
            // A token replaced since the read went out: the read goes again with the current
            // one, no refresh asked, no failure counted.
            self.catch_up.handle_token_replaced(now, request_id);
        } else {
            // Catch-ups were abandoned with the socket: a late answer only frees its pacing
            // slot (and a 429 still pauses every read).
            self.catch_up.handle_history(now, request_id, response);
        }
        self.drain_catch_up(now);
    }

    /// The headers of the answer to the core's history read `request_id`: the server's
    /// budget (`x-ratelimit-*`), its clock (`Date`) and any wait it asks for. Report them
    /// before [`handle_history`](Self::handle_history). Build them with
    /// [`ReadHeaders::from_headers`](crate::ReadHeaders::from_headers).
    pub fn handle_history_headers(&mut self, now: Instant, request_id: u64, headers: &ReadHeaders) {
        let now = self.clamp(now);
        self.catch_up
            .handle_read_headers(now, Some(request_id), headers);
        self.drain_catch_up(now);
    }

    /// The app posted message `message_id` in `channel_id` through the server's REST API:
    /// the request went out at `sent` and its answer (with the new message's id) came at
    /// `now`. Kaiku broadcasts every post to every subscriber of its channel, its author
    /// included; if this socket was subscribed to the channel before the post went out and
    /// its `message_new` does not arrive within `Config::echo_timeout`, the link answers
    /// pings but no longer delivers events (Kaiku's per-socket event loop can end that way),
    /// and it is replaced: `Reconnecting { reason: no_echo }`, then a catch-up. A post on a
    /// channel not subscribed then, or while the socket is down, proves nothing and is
    /// ignored. The tokio driver reports every post made through `Client::api()`.
    pub fn handle_app_post(
        &mut self,
        now: Instant,
        sent: Instant,
        channel_id: &str,
        message_id: &str,
    ) {
        let now = self.clamp(now);
        if !self.is_connected() {
            return;
        }
        let channel = Text::from(channel_id);
        let subscribed_before = self
            .subs
            .confirmed_at(&channel)
            .is_some_and(|at| at <= sent);
        let message = Text::from(message_id);
        let heard = self.heard.contains(&heard_key(&channel, &message));
        if !subscribed_before || heard || self.catch_up.has_delivered(&channel, &message) {
            return;
        }
        if self.echoes.len() >= MAX_AWAITED_ECHOES
            && let Some(oldest) = self
                .echoes
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone())
        {
            self.echoes.remove(&oldest);
        }
        self.echoes
            .insert((channel, message), now + self.config.echo_timeout);
    }

    /// Message `id` arrived on `channel` (live, delivered or held): its echo, if owed, came.
    fn handle_heard(&mut self, channel: &Text, id: &Text) {
        if !self.echoes.is_empty() {
            self.echoes.remove(&(channel.clone(), id.clone()));
        }
        if self.heard.len() >= HEARD {
            self.heard.pop_front();
        }
        self.heard.push_back(heard_key(channel, id));
    }

    /// A `ping` whose `pong` retires every frame sent before it, timed like any ping.
    fn send_fence(&mut self, now: Instant) {
        if let State::Connected(live) = &mut self.state {
            live.heartbeat.handle_ping_sent(now);
        }
        self.send_frame(PING);
    }

    /// Subscribes the server answered with something other than `subscribed`: a channel it
    /// already broadcasts on is subscribed all the same (a server that never acknowledges, a
    /// lost `subscribed`), and its catch-up starts; the others go again later.
    fn confirm_heard(&mut self, now: Instant) {
        let mut confirmed = false;
        for ch in self.subs.take_retired() {
            if self.catch_up.is_heard_unconfirmed(&ch) && self.subs.confirm_unacknowledged(now, &ch)
            {
                self.catch_up.handle_subscribed(now, &ch);
                confirmed = true;
            }
        }
        if confirmed {
            // The catch-up a confirmation starts sends its first read now, not with whatever
            // input comes next (which may be a 429 that the read would then ignore).
            self.drain_catch_up(now);
        }
    }

    /// Replaces the link if an echo it owes is overdue. While the driver is not reading the
    /// socket (backpressure), no echo can arrive: the deadlines move on.
    fn check_echoes(&mut self, now: Instant) {
        let overdue = self.echoes.values().any(|at| *at <= now);
        if !overdue {
            return;
        }
        if self.reading_paused {
            let later = now + self.config.echo_timeout;
            for at in self.echoes.values_mut() {
                *at = (*at).max(later);
            }
            return;
        }
        self.stats.missing_echoes += 1;
        self.abort_socket();
        self.retry_later(now, ReconnectReason::NoEcho, None, None);
    }

    /// The headers of the answer to a REST request the app made beside the core, in the
    /// budget history reads spend (Kaiku: anything under `/api/messages`, `/api/channels`
    /// and `/api/guilds`, posts included): the server counts it against the same budget, so
    /// the catch-up paces itself around it and keeps its reserve, and a 429 or 503 there
    /// pauses the catch-up's reads too.
    pub fn handle_app_request(&mut self, now: Instant, headers: &ReadHeaders) {
        let now = self.clamp(now);
        self.catch_up.handle_read_headers(now, None, headers);
        self.drain_catch_up(now);
    }

    /// An HTTP answer from the server received at `now` carried `Date: date` (the WebSocket
    /// upgrade's 101, a token refresh): its clock, for the anchors of channels that have no
    /// message yet and for the budget's reset. Drivers should report the upgrade's.
    pub fn handle_server_date(&mut self, now: Instant, date: Timestamp) {
        let now = self.clamp(now);
        self.catch_up.handle_server_date(now, date);
    }

    /// The answer to an [`Action::RefreshToken`].
    pub fn handle_refresh(&mut self, now: Instant, result: Result<Credentials, RefreshError>) {
        let now = self.clamp(now);
        if !self.auth.is_refreshing() {
            return;
        }
        let outcome = result.as_ref().map(|_| ()).map_err(|e| *e);
        if self.auth.handle_refresh(now, result) == RefreshOutcome::Superseded {
            // Answers a refresh for credentials that were replaced since. An attempt waiting
            // for a refresh (a 401 on the new token while this one was in flight) starts over
            // now, instead of sitting out the refresh deadline.
            if let State::Connecting {
                attempt,
                phase: Phase::Refreshing { .. },
            } = self.state
            {
                self.start_attempt(now, attempt);
            }
            return;
        }
        let State::Connecting {
            attempt,
            phase: Phase::Refreshing { .. },
        } = self.state
        else {
            return;
        };
        match outcome {
            Ok(()) => self.open(now, attempt),
            Err(RefreshError::Rejected) => self.fail(FailReason::Auth, None, None),
            Err(RefreshError::Transient { retry_after }) => {
                self.retry_later(now, ReconnectReason::RefreshFailed, retry_after, None);
            }
        }
    }

    /// Fires every timer due at `now`. Early or repeated calls are harmless. A call far past
    /// the deadline means the machine slept: the live link is probed at once.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clamp(now);
        let Some(due) = self.poll_timeout() else {
            return;
        };
        if now < due {
            return;
        }
        let slept = now.saturating_duration_since(due) >= self.config.heartbeat.wake_threshold;

        if let Socket::Closing { abort_at } = self.socket
            && now >= abort_at
        {
            self.socket = Socket::None;
            self.actions.push_back(Action::Abort);
        }

        match &mut self.state {
            State::Connecting {
                phase: Phase::Handshake { deadline },
                ..
            } if now >= *deadline => {
                // An upgrade that succeeded and then said nothing is not a slow network.
                let reason = if self.socket == Socket::Open {
                    ReconnectReason::ReadyTimeout
                } else {
                    ReconnectReason::HandshakeTimeout
                };
                self.abort_socket();
                self.retry_later(now, reason, None, None);
            }
            State::Connecting {
                phase: Phase::Refreshing { deadline },
                ..
            } if now >= *deadline => {
                // The refresh stays in flight: a late answer is still applied (the server may
                // have rotated the refresh token), and the next attempt waits for it again.
                self.retry_later(now, ReconnectReason::RefreshFailed, None, None);
            }
            State::Reconnecting {
                attempt, retry_at, ..
            } if now >= *retry_at => {
                let attempt = *attempt;
                self.start_attempt(now, attempt);
            }
            State::Connected(live) => {
                if live.stable_at.is_some_and(|at| now >= at) {
                    live.stable_at = None;
                    self.backoff.handle_stable();
                }
                let beat = if slept {
                    self.stats.wake_probes += 1;
                    live.heartbeat
                        .probe(now, self.config.heartbeat.wake_probe_timeout);
                    Beat::Ping
                } else {
                    live.heartbeat.handle_timeout(now)
                };
                match beat {
                    Beat::Idle => {}
                    Beat::Ping => self.send_frame(PING),
                    Beat::Dead => {
                        self.abort_socket();
                        self.retry_later(now, ReconnectReason::HeartbeatTimeout, None, None);
                    }
                }
            }
            _ => {}
        }

        if self.is_connected() {
            self.check_echoes(now);
        }
        if self.is_connected() && self.subscribe_fence_at.is_some_and(|at| at <= now) {
            self.subscribe_fence_at = None;
            if self.subs.awaits_fence() {
                self.send_fence(now);
            }
        }
        if self.is_connected() {
            for ch in self.subs.take_due(now) {
                self.send_subscribe(now, &ch);
            }
            self.stats.resubscribes = self.subs.resubscribes();
        }

        if self.is_connected() {
            for event in self.limits.handle_timeout(now) {
                let follow = self.session.voice.after_join(&event);
                self.send_frame(event.to_json().into());
                if let Some(mute) = follow {
                    self.send_frame(mute.to_json().into());
                }
            }
            self.catch_up.handle_timeout(now);
            self.drain_catch_up(now);
        }

        for event in self.queue.expire(now) {
            self.stats.dropped_after_accept += 1;
            self.actions
                .push_back(Action::Emit(Event::SendDropped(event)));
        }

        if self.auth.poll_timeout().is_some_and(|at| now >= at) && self.is_active() {
            self.request_refresh();
        }
    }

    /// The network may have changed: the OS or the webview says it is back online, the app
    /// came to the foreground, or the machine woke up. A live link is probed at once: a ping
    /// with the short `heartbeat.wake_probe_timeout` deadline, as after a sleep (a ping already
    /// waiting with a deadline as near is left alone, so repeated calls never put the verdict
    /// off). A wait to reconnect is cut short: the attempt starts now, or when a wait the
    /// server asked for (`Retry-After`, a rate-limit close) ends. Connecting, disconnected or
    /// failed: nothing.
    pub fn handle_network_change(&mut self, now: Instant) {
        let now = self.clamp(now);
        let probe = self.config.heartbeat.wake_probe_timeout;
        match &mut self.state {
            State::Connected(live) => {
                let beat = &mut live.heartbeat;
                if beat.is_awaiting() && beat.poll_timeout() <= now + probe {
                    return;
                }
                self.stats.wake_probes += 1;
                beat.probe(now, probe);
                self.send_frame(PING);
            }
            State::Reconnecting {
                attempt,
                retry_at,
                not_before,
                reason,
                detail,
            } => {
                let (attempt, retry_at, not_before, reason) =
                    (*attempt, *retry_at, *not_before, *reason);
                if now >= not_before {
                    self.start_attempt(now, attempt);
                } else if not_before < retry_at {
                    let detail = detail.clone();
                    self.set_state(State::Reconnecting {
                        attempt,
                        retry_at: not_before,
                        not_before,
                        reason,
                        detail,
                    });
                }
            }
            _ => {}
        }
    }

    // ----- outputs -----------------------------------------------------------------------

    /// The next action for the driver, in order. Drain until `None` after every input.
    pub fn poll_action(&mut self) -> Option<Action> {
        let action = self.actions.pop_front()?;
        let Action::Send(first) = action else {
            return Some(action);
        };
        if !self.protocol.batches() {
            return Some(Action::Send(first));
        }
        // Protocol v2: the events queued together leave in one frame.
        let mut events = vec![first];
        let mut bytes = events[0].len();
        while let Some(Action::Send(next)) = self.actions.front() {
            if events.len() >= MAX_OUT_BATCH || bytes + next.len() > MAX_OUT_BATCH_BYTES {
                break;
            }
            bytes += next.len();
            if let Some(Action::Send(next)) = self.actions.pop_front() {
                events.push(next);
            }
        }
        if events.len() > 1 {
            self.stats.batches_out += 1;
        }
        let frame = encode_frame(&events, self.protocol.encoding);
        Some(match self.protocol.encoding {
            Encoding::Msgpack => Action::SendBinary(frame),
            Encoding::Json => match Text::from_utf8(frame) {
                Some(text) => Action::Send(text),
                // A join of the core's own UTF-8 frames is UTF-8.
                None => return self.poll_action(),
            },
        })
    }

    /// The protocol the open socket speaks: v1 (today's Kaiku) unless its 101 selected a v2
    /// subprotocol the core offered. Reset to v1 with each new socket.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// permessage-deflate as the open socket's 101 agreed to it (`None`: not compressed).
    /// Reset with each new socket.
    pub fn deflate(&self) -> Option<Deflate> {
        self.deflate
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next needed. `None`: only an input
    /// can change anything.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut add = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        if let Socket::Closing { abort_at } = self.socket {
            add(Some(abort_at));
        }
        match &self.state {
            State::Connecting {
                phase: Phase::Handshake { deadline } | Phase::Refreshing { deadline },
                ..
            } => add(Some(*deadline)),
            State::Reconnecting { retry_at, .. } => add(Some(*retry_at)),
            State::Connected(live) => {
                add(live.stable_at);
                add(Some(live.heartbeat.poll_timeout()));
                add(self.limits.poll_timeout());
                add(self.catch_up.poll_timeout());
                add(self.subs.poll_timeout());
                add(self.echoes.values().min().copied());
                add(self.subscribe_fence_at);
            }
            _ => {}
        }
        add(self.queue.poll_timeout());
        if self.is_active() {
            add(self.auth.poll_timeout());
        }
        t
    }

    // ----- questions ---------------------------------------------------------------------

    /// The status as apps see it. `retry_in_ms` counts from the latest `now` given.
    pub fn status(&self) -> Status {
        match &self.state {
            State::Disconnected => Status::Disconnected,
            State::Connecting { attempt, .. } => Status::Connecting { attempt: *attempt },
            State::Connected(_) => Status::Connected {
                protocol: self.protocol,
                compression: self.deflate,
            },
            State::Reconnecting {
                attempt,
                retry_at,
                reason,
                detail,
                ..
            } => {
                let wait = self
                    .last_now
                    .map_or(Duration::ZERO, |n| retry_at.saturating_duration_since(n));
                Status::Reconnecting {
                    attempt: *attempt,
                    retry_in_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    reason: *reason,
                    detail: detail.clone(),
                }
            }
            State::Failed {
                reason,
                http_status,
                detail,
            } => Status::Failed {
                reason: *reason,
                http_status: *http_status,
                detail: detail.clone(),
            },
        }
    }

    /// Whether the session is live (`ready` received, socket open).
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected(_))
    }

    /// Whether a socket is (or is about to be) in use; the invariant "never two sockets" is
    /// checked against this.
    pub fn has_socket(&self) -> bool {
        self.socket != Socket::None
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.duplicates = self.catch_up.duplicates();
        s.reads = self.catch_up.reads();
        s.reads_rate_limited = self.catch_up.rate_limited();
        s.reads_paused_until = self.reads_paused_until;
        if self.socket == Socket::Open {
            s.protocol = Some(self.protocol);
            s.compression = self.deflate;
        }
        s
    }

    /// Until when catch-up reads wait on the server's rate limit (`None`: they do not).
    pub fn reads_paused_until(&self) -> Option<Instant> {
        self.reads_paused_until
    }

    /// Round-trip time of the last answered heartbeat.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// The current access token (after any refresh), for REST calls made beside the socket.
    pub fn access_token(&self) -> Option<&Secret> {
        self.auth.access_token()
    }

    /// Whether the answer to the [`Action::RefreshToken`] on its way will be applied: a
    /// refresh is out, and [`set_credentials`](Self::set_credentials) has not installed
    /// another session since (credentials that carry the refresh token it spent are the same
    /// session: its answer still applies). A driver that tells the app of rotated tokens asks
    /// this just before [`handle_refresh`](Self::handle_refresh): when `false`, the answer
    /// will be dropped and the app's own credentials stay (D80).
    pub fn is_refresh_awaited(&self) -> bool {
        self.auth.awaits_refresh()
    }

    /// The user id from the last `ready`.
    pub fn user_id(&self) -> Option<&Text> {
        self.user_id.as_ref()
    }

    /// Wanted channels, in order.
    pub fn subscriptions(&self) -> impl Iterator<Item = &str> {
        self.subs.wanted().map(Text::as_str)
    }

    /// Events waiting in the offline queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Live events held by catch-ups in progress.
    pub fn held(&self) -> usize {
        self.catch_up.held()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ----- internals ---------------------------------------------------------------------

    fn clamp(&mut self, now: Instant) -> Instant {
        let now = self.last_now.map_or(now, |last| now.max(last));
        self.last_now = Some(now);
        now
    }

    fn is_active(&self) -> bool {
        !matches!(self.state, State::Disconnected | State::Failed { .. })
    }

    fn attempt(&self) -> u32 {
        match self.state {
            State::Connecting { attempt, .. } | State::Reconnecting { attempt, .. } => attempt,
            _ => self.backoff.retries(),
        }
    }

    /// Changes state and tells the app, once per visible change (a refresh followed by the
    /// socket open is one `connecting`).
    fn set_state(&mut self, state: State) {
        self.state = state;
        let status = self.status();
        if self.last_status.as_ref() != Some(&status) {
            self.last_status = Some(status.clone());
            self.actions.push_back(Action::Emit(Event::Status(status)));
        }
    }

    /// Begins connection attempt `attempt`: refresh first when the token is stale and can be
    /// refreshed, else open the socket.
    fn start_attempt(&mut self, now: Instant, attempt: u32) {
        if self.auth.is_stale(now) && (self.auth.can_refresh() || self.auth.is_refreshing()) {
            self.begin_refresh_for_connect(now, attempt);
        } else {
            self.open(now, attempt);
        }
    }

    fn begin_refresh_for_connect(&mut self, now: Instant, attempt: u32) {
        self.abort_socket();
        if !self.auth.is_refreshing() {
            self.request_refresh();
        }
        self.set_state(State::Connecting {
            attempt,
            phase: Phase::Refreshing {
                deadline: now + self.config.refresh_timeout,
            },
        });
    }

    fn request_refresh(&mut self) {
        if let Some(refresh_token) = self.auth.begin_refresh() {
            self.stats.refreshes += 1;
            self.actions
                .push_back(Action::RefreshToken(RefreshRequest { refresh_token }));
        }
    }

    fn open(&mut self, now: Instant, attempt: u32) {
        // Never two sockets: whatever is left of the last one goes first.
        self.abort_socket();
        self.socket_credentials = self.auth.generation();
        let token = self.auth.access_token().cloned();
        let url = self.config.socket_url(token.as_ref()).to_string();
        // The token entry first (a server may read only the first value), then the v2 offers
        // in order of preference, then the bare `access_token` a v1 server selects. Query
        // mode is for older servers, which may read any `Sec-WebSocket-Protocol` as an auth
        // attempt: it offers nothing.
        let v2 = self
            .config
            .v2
            .iter()
            .filter_map(|e| {
                Protocol {
                    version: 2,
                    encoding: *e,
                }
                .subprotocol()
            })
            .map(Secret::new);
        let protocols = match (self.config.auth_mode, token) {
            (AuthMode::Subprotocol, Some(t)) => {
                let mut p = vec![Secret::new(format!("access_token.{}", t.expose()))];
                p.extend(v2);
                p.push(Secret::new("access_token"));
                p
            }
            _ => Vec::new(),
        };
        self.protocol = Protocol::V1;
        self.deflate = None;
        self.socket = Socket::Opening;
        self.actions.push_back(Action::Open(OpenRequest {
            url,
            protocols,
            deflate: self.config.deflate,
        }));
        self.set_state(State::Connecting {
            attempt,
            phase: Phase::Handshake {
                deadline: now + self.config.handshake_timeout,
            },
        });
    }

    fn on_ready(&mut self, now: Instant, user_id: Text) {
        self.user_id = Some(user_id.detached());
        self.reauth_used = false;
        self.stats.sessions += 1;
        let mut heartbeat = Heartbeat::new(now, &self.config.heartbeat);
        heartbeat.set_paused(now, self.reading_paused);
        let live = Live {
            stable_at: Some(self.backoff.stable_at(now)),
            heartbeat,
        };
        self.set_state(State::Connected(live));
        for ch in self.subs.handle_ready() {
            self.send_subscribe(now, &ch);
        }
        for event in self.session.replay() {
            self.send_state(now, event);
        }
        if let Some(channel_id) = self.session.voice.take_reset() {
            self.actions
                .push_back(Action::Emit(Event::VoiceReset { channel_id }));
        }
        for event in self.queue.expire(now) {
            self.stats.dropped_after_accept += 1;
            self.actions
                .push_back(Action::Emit(Event::SendDropped(event)));
        }
        let queued: Vec<ClientEvent> = self.queue.drain().collect();
        for event in queued {
            self.send_frame(event.to_json().into());
        }
    }

    fn dispatch(&mut self, now: Instant, event: ServerEvent) {
        // Whatever becomes of it (delivered, held behind a catch-up), a message that arrived
        // is the echo of a post, if one is owed. Kaiku echoes a thread reply as
        // `thread_reply_new`.
        match event.kind() {
            ServerEventKind::MessageNew {
                channel_id,
                message,
            } => self.handle_heard(channel_id, &message.id),
            ServerEventKind::Other {
                channel_id: Some(channel_id),
            } if event.event_type().as_str() == "thread_reply_new" => {
                if let Some(id) = reply_id(&event) {
                    self.handle_heard(channel_id, &id);
                }
            }
            _ => {}
        }
        // Anything about a channel that is catching up waits behind its missed messages.
        let held = match event.kind() {
            ServerEventKind::Subscribed { .. }
            | ServerEventKind::Unsubscribed { .. }
            | ServerEventKind::Error { .. }
            | ServerEventKind::MessageNew { .. } => None,
            _ => event
                .channel_id()
                .filter(|c| self.catch_up.is_catching_up(c))
                .cloned(),
        };
        if let Some(channel_id) = held {
            self.catch_up.handle_event(now, &channel_id, event);
            return;
        }
        match event.kind() {
            ServerEventKind::Ready { user_id } => {
                if matches!(
                    self.state,
                    State::Connecting {
                        phase: Phase::Handshake { .. },
                        ..
                    }
                ) {
                    let user_id = user_id.clone();
                    self.on_ready(now, user_id);
                }
            }
            ServerEventKind::Subscribed { channel_id }
                if self.subs.handle_subscribed(now, channel_id) =>
            {
                self.catch_up.handle_subscribed(now, channel_id);
            }
            ServerEventKind::Error { code, channel_id } => {
                if self.subs.needs_fence(code.as_str()) {
                    // An error no subscription table can place (Kaiku's unnamed
                    // `message_error` when looking a channel up fails) may answer a
                    // `subscribe`, which then never gets `subscribed`: the fence's pong says
                    // which ones got something else, and they go again.
                    self.send_fence(now);
                }
                match self
                    .subs
                    .handle_error(now, code.as_str(), channel_id.as_ref())
                {
                    Some(Refusal::Confirming(ch)) => {
                        // Kaiku also answers `forbidden` when its permission check fails on
                        // the database: the channel goes again before it is dropped.
                        self.actions
                            .push_back(Action::Emit(Event::SubscriptionUncertain {
                                channel_id: ch,
                                code: code.clone(),
                            }));
                    }
                    Some(Refusal::Rejected(ch)) => {
                        self.catch_up.forget(&ch);
                        self.echoes.retain(|(c, _), _| *c != ch);
                        self.actions
                            .push_back(Action::Emit(Event::SubscriptionRejected {
                                channel_id: ch,
                                code: code.clone(),
                            }));
                    }
                    Some(Refusal::Uncertain(ch)) => {
                        // The refusal may answer a typing or voice frame sent before this
                        // channel's subscribe: never drop a wanted channel on a guess. Ask
                        // again behind a ping, whose pong retires everything before it, so
                        // the answer to this subscribe is unambiguous (D47).
                        let code = code.clone();
                        self.subs.handle_resubscribe_sent(&ch);
                        if let State::Connected(live) = &mut self.state {
                            live.heartbeat.handle_ping_sent(now);
                        }
                        self.send_frame_raw(PING);
                        self.send_frame_raw(
                            ClientEvent::Subscribe {
                                channel_id: ch.as_str().to_owned(),
                            }
                            .to_json()
                            .into(),
                        );
                        self.actions
                            .push_back(Action::Emit(Event::SubscriptionUncertain {
                                channel_id: ch,
                                code,
                            }));
                    }
                    None => {}
                }
            }
            ServerEventKind::MessageNew { channel_id, .. } => {
                let channel_id = channel_id.clone();
                self.catch_up.handle_event(now, &channel_id, event);
                return;
            }
            _ => {}
        }
        if matches!(
            event.kind(),
            ServerEventKind::Subscribed { .. } | ServerEventKind::Error { .. }
        ) {
            // An answer may have retired a `subscribe` whose channel already delivers.
            self.confirm_heard(now);
        }
        self.actions.push_back(Action::Emit(Event::Server(event)));
    }

    fn drain_catch_up(&mut self, now: Instant) {
        while let Some(out) = self.catch_up.poll_output() {
            match out {
                CatchUpOutput::Fetch(mut req) => {
                    let generation = self.auth.generation();
                    if self.read_credentials.0 != generation {
                        self.read_credentials = (generation, req.id);
                    }
                    req.token = self.auth.access_token().cloned();
                    self.actions.push_back(Action::FetchHistory(req));
                }
                CatchUpOutput::Deliver(event) => {
                    if event.is_update() {
                        self.stats.updated_copies += 1;
                    }
                    self.actions.push_back(Action::Emit(Event::Server(event)));
                }
                CatchUpOutput::Resynced {
                    channel_id,
                    recovered,
                    complete,
                } => self.actions.push_back(Action::Emit(Event::Resynced {
                    channel_id,
                    recovered,
                    complete,
                })),
                CatchUpOutput::TokenRejected => self.request_refresh(),
            }
        }
        let paused = self.catch_up.rate_limited_until(now);
        self.report_paused(now, paused);
    }

    /// Tells the app when catch-ups start or stop waiting on the rate limit, or the wait
    /// moves.
    fn report_paused(&mut self, now: Instant, paused: Option<(Instant, usize)>) {
        let until = paused.map(|(t, _)| t);
        if until == self.reads_paused_until {
            return;
        }
        self.reads_paused_until = until;
        let retry_in_ms = until.map(|t| {
            u64::try_from(t.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
        });
        self.actions.push_back(Action::Emit(Event::RateLimited {
            retry_in_ms,
            waiting: paused.map_or(0, |(_, n)| n),
        }));
    }

    /// Sends a state event, voice frames in the order the voice session allows.
    fn send_state(&mut self, now: Instant, event: ClientEvent) {
        if self.session.voice.before_send(&event, &mut self.limits) {
            self.send_limited(now, event);
        }
    }

    fn send_limited(&mut self, now: Instant, event: ClientEvent) {
        if let Some(event) = self.limits.offer(now, event) {
            let frame = match event {
                ClientEvent::Ping => {
                    // The app's ping: its pong is timed like the heartbeat's own.
                    if let State::Connected(live) = &mut self.state {
                        live.heartbeat.handle_ping_sent(now);
                    }
                    PING
                }
                e => e.to_json().into(),
            };
            self.send_frame(frame);
        }
    }

    /// Sends `subscribe` for a wanted channel (the subscription table already counts it).
    fn send_subscribe(&mut self, now: Instant, channel: &Text) {
        self.catch_up.handle_subscribe_sent(now, channel);
        self.subscribe_fence_at
            .get_or_insert(now + SUBSCRIBE_ANSWER_WAIT);
        let frame = ClientEvent::Subscribe {
            channel_id: channel.as_str().to_owned(),
        }
        .to_json()
        .into();
        self.send_frame_raw(frame);
    }

    /// Sends a frame other than `subscribe`; the subscription table keeps the order of what
    /// the server may answer (a refusal can answer a typing or voice frame too).
    fn send_frame(&mut self, frame: Text) {
        let kind = if frame == PING {
            SentKind::Ping
        } else {
            SentKind::Other
        };
        self.subs.handle_sent(kind);
        self.send_frame_raw(frame);
    }

    fn send_frame_raw(&mut self, frame: Text) {
        debug_assert!(
            self.socket == Socket::Open,
            "frame queued without an open socket"
        );
        self.stats.frames_out += 1;
        self.actions.push_back(Action::Send(frame));
    }

    /// Forgets everything that belonged to the connection that just ended.
    fn teardown(&mut self) {
        self.subs.handle_disconnect();
        self.echoes.clear();
        self.heard.clear();
        self.subscribe_fence_at = None;
        self.catch_up.handle_disconnect();
        if let Some(now) = self.last_now {
            // Held edits and deletes go to the app now, not after the next `ready`.
            self.drain_catch_up(now);
        }
        for event in self.limits.handle_disconnect() {
            self.stats.dropped_after_accept += 1;
            self.actions
                .push_back(Action::Emit(Event::SendDropped(event)));
        }
        self.session.voice.handle_disconnect();
    }

    /// Waits before the next attempt, with what the driver said about the failure (`detail`).
    fn retry_later(
        &mut self,
        now: Instant,
        reason: ReconnectReason,
        min_wait: Option<Duration>,
        detail: Option<String>,
    ) {
        self.teardown();
        let delay = self.backoff.next_delay(&mut self.rng);
        let asked = crate::close::clamp_wait(min_wait.unwrap_or_default());
        self.stats.reconnects += 1;
        self.set_state(State::Reconnecting {
            attempt: self.backoff.retries(),
            retry_at: now + delay.max(asked),
            not_before: now + asked,
            reason,
            detail,
        });
    }

    /// Gives up until the app acts, with what the driver said about the failure (`detail`).
    fn fail(&mut self, reason: FailReason, http_status: Option<u16>, detail: Option<String>) {
        self.teardown();
        self.abort_socket();
        self.set_state(State::Failed {
            reason,
            http_status,
            detail,
        });
    }

    /// Graceful close of an open socket (bounded by `close_timeout`); a socket still opening
    /// is aborted.
    fn close_socket(&mut self, now: Instant, code: u16, reason: &'static str) {
        match self.socket {
            Socket::Open => {
                self.actions.push_back(Action::Close { code, reason });
                self.socket = Socket::Closing {
                    abort_at: now + self.config.close_timeout,
                };
            }
            Socket::Opening => self.abort_socket(),
            Socket::None | Socket::Closing { .. } => {}
        }
    }

    fn abort_socket(&mut self) {
        if self.socket != Socket::None {
            self.socket = Socket::None;
            self.actions.push_back(Action::Abort);
        }
    }
}
