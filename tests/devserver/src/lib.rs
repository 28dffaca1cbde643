//! tether-devserver: a Kaiku-compatible chat server with fault injection.
//!
//! It speaks the REST API and the `/ws` protocol of the Kaiku server as observed running it
//! (see `shared/reference/kaiku/` and DESIGN section 4): JWT-shaped tokens that live 900 s,
//! subprotocol auth (`access_token.<jwt>`, echoing `access_token`) and optionally `?token=`,
//! plain-text 401 refusals, `ready` after the upgrade, `subscribed`/`error` answers, `pong`,
//! `message_new` broadcasts (the message's keys alphabetical), `message_edit` timestamps with
//! `+00:00`, paginated history (`{items, has_more, next_cursor}` or a bare array), and no
//! answer to a client's Close frame. Every event it sends is a [`kaiku_events::ServerEvent`]:
//! `type` first, then the fields in the order Kaiku's server writes them; client frames are
//! parsed as Kaiku's `ClientEvent` (its variants, its fields, its `message_error`s).
//!
//! [`kaiku_events::samples`] builds one event of every type the Kaiku frontend listens to, in
//! the real server's shape; [`DevServer::deliver`] sends one the way Kaiku would (a channel's
//! events to its subscribers, the rest to the user's sockets), and
//! [`DevServer::send_to_user`] / [`DevServer::broadcast`] send any frame those ways. Voice
//! signalling answers as Kaiku's SFU does, with a fake SDP and no media: `voice_join` gets
//! `voice_offer`, `voice_room_state` and an ICE candidate, the room's other peers
//! `voice_user_joined`; leave, mute, stats, screen shares and webcams reach the room, and a
//! refused frame its `voice_error`.
//!
//! Everything is in memory. [`Faults`] breaks it on purpose for tests: abrupt drops, stalled
//! links, refused (with `Retry-After`) or slow upgrades, injected raw frames, expired tokens,
//! REST 429s on demand, a slow REST API; [`DevServer::restart`] closes the listener and every
//! socket and comes back on the same port with the data kept and the subscriptions gone, as
//! Kaiku does.
//!
//! Rate limits, off unless [`ServerConfig::rate_limits`] asks ([`RateLimits::kaiku`] for the
//! real server's defaults), work as Kaiku's: fixed windows that start with the first request
//! after the last one ended, per user on writes (every request under `/api/channels`,
//! `/api/messages` and `/api/guilds`, history GETs included, as Kaiku's router has it) and
//! reads (per IP without a valid token), per IP on login and refresh. An answer within the
//! budget carries `x-ratelimit-limit`, `x-ratelimit-remaining` and `x-ratelimit-reset` (epoch
//! seconds: exact and rounded up, or as early as Kaiku's with [`RateLimits::kaiku_headers`];
//! none with [`ServerConfig::rate_limit_headers`] off); [`Faults::redis_down`] makes every
//! limited route answer 503 as Kaiku without Redis does; a spent budget answers 429 with only
//! `Retry-After` and Kaiku's body `{"error":"rate_limited","message":"Too many requests. Wait
//! N seconds.","retry_after":N,"limit":L,"remaining":0}`. Every answer has a `Date` header,
//! the 101 of an upgrade included, so a client can read the server's clock.
//!
//! Protocol v2 (docs/protocol.md) is on by default ([`ServerConfig::v2`]): a client that offers
//! `kaiku.v2.msgpack` or `kaiku.v2.json` gets the first of them it offered that the server
//! enables, and its events arrive in that encoding, batched; a client that offers only the auth
//! entries (the Kaiku browser) gets `access_token` and v1, byte for byte as before.
//!
//! [`ServerConfig::chatter`] brings simulated users (the demo's bob and carol) who show
//! typing and post now and then in every channel, through the same path as a real post;
//! [`DevServer::set_chatter_quiet`] silences them. Off by default: tests get no random traffic.
//!
//! [`ServerConfig::message_clock_offset`] puts the clock that stamps `created_at` (Kaiku:
//! Postgres `NOW()` on the database host) off the one that writes `Date` (the app server's,
//! which stays real); history is ordered by `created_at`, as Kaiku's, and
//! [`DevServer::post_with_commit_delay`] makes a message visible after a later one, as Kaiku's
//! uploads are. [`DevServer::messages`] is the server's own record of a channel.
//!
//! [`ServerConfig::rest_latency`] (or [`Faults::set_rest_latency`]) delays every REST
//! answer, as a debug build of Kaiku does (about 2 s a read); a request counts against its
//! limit on arrival. Each user's REST reads are logged ([`DevServer::read_log`]: arrival,
//! path, answer, `Retry-After`) with the most in flight at once
//! ([`DevServer::max_reads_in_flight`]) and the reads that came inside a 429's pause
//! ([`DevServer::read_pause_violations`]), for tests and benchmarks of a client's pacing.

#![warn(missing_docs)]

mod chatter;
mod clock;
mod faults;
pub mod kaiku_events;
mod limits;
mod rest;
mod store;
#[cfg(test)]
mod testkit;
mod tls;
mod uploads;
mod v2;
mod voice;
mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use limits::Limiter;

use axum::Router;
use axum::routing::{get, patch, post};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use chatter::Chatter;
pub use clock::ClockOffset;
use faults::FaultState;
pub use faults::{Faults, SubscribeError};
use kaiku_events::{Route, Sample, ServerEvent, Subjects};
pub use limits::{Limit, PauseViolation, RateLimits, ReadRecord};
pub use store::{Message, Store, rfc3339};
pub use uploads::UploadBroadcast;
pub use v2::V2Config;

/// Which history response shape the server uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HistoryShape {
    /// `{"items":[...],"has_more":bool,"next_cursor":"..."}` (current Kaiku).
    #[default]
    Envelope,
    /// A bare array of messages (older servers).
    BareArray,
}

/// Which REST error body shape the server uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"error":"CODE","message":"..."}` (current Kaiku).
    #[default]
    Modern,
    /// `{"error":"message","code":"CODE"}` (older servers).
    Legacy,
}

/// Server settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Accept `Sec-WebSocket-Protocol: access_token.<jwt>`. Default true.
    pub subprotocol_auth: bool,
    /// Accept `?token=<jwt>`. Default false (the current Kaiku server refuses it).
    pub query_auth: bool,
    /// History response shape.
    pub history_shape: HistoryShape,
    /// Error body shape.
    pub error_shape: ErrorShape,
    /// Access token lifetime. Default 900 s.
    pub access_ttl: Duration,
    /// Delay between the upgrade and `ready` (Kaiku: up to 2-4 s when busy). Default 0.
    pub ready_delay: Duration,
    /// Delay between a subscription taking effect and its `subscribed` reply. Messages
    /// broadcast meanwhile reach the client first, as they can (for a few microseconds)
    /// even with no delay. Widened by the chaos soak. Default 0. (Replies to later frames,
    /// a `pong`, can overtake it too; the simulation, which checks error attribution, keeps
    /// replies in order.)
    pub subscribed_delay: Duration,
    /// Largest inbound message accepted from a client. Default 256 KiB.
    pub max_message: usize,
    /// Create demo users (alice, bob, carol; password `password123`) and channels.
    pub demo: bool,
    /// Serve HTTPS/WSS with this certificate instead of plain HTTP.
    pub tls: Option<TlsIdentity>,
    /// REST rate limits. Default: none (every category unlimited).
    pub rate_limits: RateLimits,
    /// Send `x-ratelimit-limit`, `-remaining` and `-reset` with answers in a limited
    /// category. Default true. Off, the limits still apply and a 429 still carries
    /// `Retry-After`: a server whose proxy strips the headers.
    pub rate_limit_headers: bool,
    /// Delay before answering every REST request (a debug build of Kaiku takes about 2 s a
    /// read). Default 0. [`Faults::set_rest_latency`] changes it at run time.
    pub rest_latency: Duration,
    /// Simulated users who type and post now and then ([`Chatter`]). Default none.
    pub chatter: Option<Chatter>,
    /// Which parts of protocol v2 the server speaks. Default: all of them.
    pub v2: V2Config,
    /// How far the message clock, which stamps `created_at` (Kaiku: Postgres `NOW()` on the
    /// database host), is from the clock that writes every `Date` header (the 101 and REST
    /// answers) and times tokens, which stays the real one. Default: none.
    pub message_clock_offset: ClockOffset,
}

/// A certificate chain and private key (DER) for serving TLS.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The certificate chain, leaf first.
    pub cert_chain_der: Vec<Vec<u8>>,
    /// The private key (PKCS#8).
    pub key_der: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsIdentity { .. }")
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            subprotocol_auth: true,
            query_auth: false,
            history_shape: HistoryShape::Envelope,
            error_shape: ErrorShape::Modern,
            access_ttl: Duration::from_secs(900),
            ready_delay: Duration::ZERO,
            subscribed_delay: Duration::ZERO,
            max_message: 256 * 1024,
            demo: false,
            tls: None,
            rate_limits: RateLimits::default(),
            rate_limit_headers: true,
            rest_latency: Duration::ZERO,
            chatter: None,
            v2: V2Config::default(),
            message_clock_offset: ClockOffset::ZERO,
        }
    }
}

/// A live socket, as the broadcaster sees it.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The socket's user id.
    pub user_id: String,
    pub subs: std::collections::BTreeSet<String>,
    pub tx: mpsc::UnboundedSender<ws::Out>,
    /// Its forwarding of broadcasts ended (`Faults::deafen`); it still answers its client.
    pub deaf: bool,
}

/// State shared by every handler.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: ServerConfig,
    pub store: Mutex<Store>,
    pub conns: Mutex<HashMap<u64, Conn>>,
    pub faults: Mutex<FaultState>,
    pub limits: Mutex<Limiter>,
    pub next_conn: AtomicU64,
    pub upgrades: AtomicU64,
    pub client_closes: AtomicU64,
    /// The simulated users are silent.
    pub chatter_quiet: Mutex<bool>,
    /// Voice rooms, by channel id.
    pub voice: Mutex<voice::Rooms>,
}

impl Shared {
    pub fn store(&self) -> MutexGuard<'_, Store> {
        // A handler that panicked mid-update poisons the lock; the data is still usable for a
        // test server, so take it rather than cascade the panic.
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn conns(&self) -> MutexGuard<'_, HashMap<u64, Conn>> {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn faults(&self) -> MutexGuard<'_, FaultState> {
        self.faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn voice(&self) -> MutexGuard<'_, voice::Rooms> {
        self.voice
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn limits(&self) -> MutexGuard<'_, Limiter> {
        self.limits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the simulated users are silent; held, no post of theirs starts.
    pub fn quiet_lock(&self) -> MutexGuard<'_, bool> {
        self.chatter_quiet
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the simulated users are silent now.
    pub fn is_quiet(&self) -> bool {
        *self.quiet_lock()
    }

    /// The delay before each REST answer: the fault's, else the configured one.
    pub fn rest_latency(&self) -> Duration {
        self.faults()
            .rest_latency
            .unwrap_or(self.config.rest_latency)
    }

    /// A user's id by login name.
    fn user_id(&self, username: &str) -> Option<String> {
        self.store().user_by_name(username).map(|u| u.id.clone())
    }

    /// Sends a frame to every socket subscribed to `channel_id`, but not to a user who
    /// blocked its author (see [`from_blocked`]). Returns how many sockets it went to.
    pub fn broadcast(&self, channel_id: &str, frame: &str) -> usize {
        self.publish(frame, |c| c.subs.contains(channel_id))
    }

    /// Sends a frame to every socket of `user_id`, as Kaiku's per-user topics reach them:
    /// not to a deafened socket, nor from a user they blocked. Returns how many.
    pub fn send_to_user(&self, user_id: &str, frame: &str) -> usize {
        self.publish(frame, |c| c.user_id == user_id)
    }

    /// Sends a frame through pub/sub to the sockets `to` picks that still hear broadcasts
    /// and did not block the user it is about.
    fn publish(&self, frame: &str, to: impl Fn(&Conn) -> bool) -> usize {
        let blocks = self.store().blocks().clone();
        let mut sent = 0;
        for c in self.conns().values() {
            if to(c)
                && !c.deaf
                && !blocks
                    .get(&c.user_id)
                    .is_some_and(|b| from_blocked(frame, b))
            {
                let _ = c.tx.send(ws::Out::Text(frame.to_owned()));
                sent += 1;
            }
        }
        sent
    }

    /// Sends an event to one socket, straight (not through pub/sub): an answer to its own
    /// frame, or a voice room's signalling.
    pub fn send_to_conn(&self, conn: u64, frame: String) {
        if let Some(c) = self.conns().get(&conn) {
            let _ = c.tx.send(ws::Out::Text(frame));
        }
    }

    /// Sends a raw text frame to every socket, whatever it speaks.
    pub fn inject_all(&self, frame: &str) -> usize {
        let conns = self.conns();
        for c in conns.values() {
            let _ = c.tx.send(ws::Out::Raw(frame.to_owned()));
        }
        conns.len()
    }

    /// Sends an event to every socket that still hears broadcasts, but not to a user who
    /// blocked the user it is about (see [`from_blocked`]).
    pub fn broadcast_all(&self, frame: &str) -> usize {
        let blocks = self.store().blocks().clone();
        let conns = self.conns();
        for c in conns.values().filter(|c| {
            !c.deaf
                && !blocks
                    .get(&c.user_id)
                    .is_some_and(|b| from_blocked(frame, b))
        }) {
            let _ = c.tx.send(ws::Out::Text(frame.to_owned()));
        }
        conns.len()
    }

    /// Ends every socket abruptly (no close frame), as a crashed or killed server does.
    pub fn drop_all(&self) -> usize {
        let mut conns = self.conns();
        for c in conns.values() {
            let _ = c.tx.send(ws::Out::Drop);
        }
        let n = conns.len();
        conns.clear();
        n
    }
}

/// Whether an event comes from a user in `blocked`, as the pub/sub task of Kaiku's socket
/// filters: `message_new` by its author; typing, voice joins and leaves and presence by their
/// `user_id`. Other events (edits, deletes, thread replies) pass, as on Kaiku.
fn from_blocked(frame: &str, blocked: &std::collections::BTreeSet<String>) -> bool {
    let Ok(event) = serde_json::from_str::<serde_json::Value>(frame) else {
        return false;
    };
    let who = match event["type"].as_str() {
        Some("message_new") => &event["message"]["author"]["id"],
        Some(
            "typing_start"
            | "typing_stop"
            | "voice_user_joined"
            | "voice_user_left"
            | "presence_update"
            | "rich_presence_update"
            | "custom_status_update",
        ) => &event["user_id"],
        _ => return false,
    };
    who.as_str().is_some_and(|id| blocked.contains(id))
}

/// A running dev server.
#[derive(Debug)]
pub struct DevServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl DevServer {
    /// Binds `addr` (port 0 for a free one) and serves until dropped or [`shutdown`].
    ///
    /// [`shutdown`]: DevServer::shutdown
    pub async fn start(addr: SocketAddr, config: ServerConfig) -> std::io::Result<Self> {
        let mut store = Store::new(config.access_ttl);
        store.message_clock = config.message_clock_offset;
        if config.demo {
            seed_demo(&mut store);
        }
        let shared = Arc::new(Shared {
            config,
            store: Mutex::new(store),
            conns: Mutex::new(HashMap::new()),
            faults: Mutex::new(FaultState::default()),
            limits: Mutex::new(Limiter::default()),
            next_conn: AtomicU64::new(1),
            upgrades: AtomicU64::new(0),
            client_closes: AtomicU64::new(0),
            chatter_quiet: Mutex::new(false),
            voice: Mutex::new(voice::Rooms::new()),
        });
        if let Some(chatter) = &shared.config.chatter {
            chatter::spawn(&shared, chatter);
        }
        let listener = bind(addr)?;
        let addr = listener.local_addr()?;
        let (stop, task) = serve(listener, shared.clone())?;
        Ok(Self {
            shared,
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// On a free loopback port with default settings.
    pub async fn start_local() -> std::io::Result<Self> {
        Self::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            ServerConfig::default(),
        )
        .await
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HTTP base URL (`http://127.0.0.1:PORT`, `https://` with TLS); the socket is
    /// `/ws` on it.
    pub fn url(&self) -> String {
        let scheme = if self.shared.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The fault-injection handle.
    pub fn faults(&self) -> Faults {
        Faults::new(self.shared.clone())
    }

    /// Direct access to the data, for tests that set up users, channels and messages.
    pub fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut self.shared.store())
    }

    /// Registers a user and returns its token response (`access_token`, `refresh_token`, ...).
    pub fn create_user(&self, username: &str, password: &str) -> Option<serde_json::Value> {
        let mut store = self.shared.store();
        let user = store.register(username, password, username)?;
        Some(store.issue_tokens(&user.id))
    }

    /// Creates a channel and returns its id.
    pub fn create_channel(&self, name: &str) -> String {
        self.shared.store().create_channel(name).id
    }

    /// Posts a message as `username`, broadcasting `message_new`; returns the message id.
    pub fn post(&self, channel_id: &str, username: &str, content: &str) -> Option<String> {
        rest::post_message(&self.shared, channel_id, username, content)
    }

    /// Posts a message as `username` the way Kaiku stores an upload: its id and `created_at`
    /// are fixed now, but it becomes visible in history, and is broadcast, only after
    /// `commit_delay` (Postgres `NOW()` is the transaction's start, so a message can become
    /// visible after a later one). Returns the id at once; `None` for an unknown user or
    /// channel.
    pub fn post_with_commit_delay(
        &self,
        channel_id: &str,
        username: &str,
        content: &str,
        commit_delay: Duration,
    ) -> Option<String> {
        rest::post_message_delayed(&self.shared, channel_id, username, content, commit_delay)
    }

    /// Posts a message with a file as `username`, the way Kaiku's uploads go: the message is
    /// stored now (visible in history, `created_at` from the message clock now) with
    /// `attachments: []` and is not broadcast; with [`UploadBroadcast::After`], once the
    /// delay has passed, the attachment (Kaiku's `AttachmentInfo`: id, filename, mime_type,
    /// size, url...) is added to the stored message and `message_new` carrying it is
    /// broadcast; with [`UploadBroadcast::Never`] neither happens. Returns the id at once;
    /// `None` for an unknown user or channel.
    pub fn post_upload(
        &self,
        channel_id: &str,
        username: &str,
        content: &str,
        filename: &str,
        broadcast: UploadBroadcast,
    ) -> Option<String> {
        uploads::post_upload(
            &self.shared,
            channel_id,
            username,
            content,
            filename,
            broadcast,
        )
    }

    /// Replies as `username` in the thread of `parent_id` (a message of `channel_id`), as
    /// Kaiku does: broadcasts `thread_reply_new` (`channel_id`, `parent_id`, the reply as
    /// `message`, the parent's `thread_info`) to the channel's subscribers; the reply is not
    /// in channel history (nor in [`messages`](Self::messages)); the parent's
    /// `thread_reply_count`, `thread_last_reply_at` and `thread_info` in history move.
    /// Returns the reply's id; `None` for an unknown user, channel or parent.
    pub fn post_thread_reply(
        &self,
        channel_id: &str,
        parent_id: &str,
        username: &str,
        content: &str,
    ) -> Option<String> {
        let mut store = self.shared.store();
        let author = store.user_by_name(username)?.id.clone();
        let (reply, parent) = store.post_thread_reply(channel_id, parent_id, &author, content)?;
        let frame = ServerEvent::ThreadReplyNew {
            channel_id: channel_id.to_owned(),
            parent_id: parent_id.to_owned(),
            message: store.message_json(&reply),
            thread_info: store.thread_info(&parent),
        };
        drop(store);
        self.shared.broadcast(channel_id, &frame.to_json());
        Some(reply.id)
    }

    /// Sends `frame` (an event's JSON text) to every socket subscribed to `channel_id`, as
    /// Kaiku publishes a channel's events: not to a deafened socket, nor to a user who blocked
    /// the user it is about. Returns how many sockets it went to.
    pub fn broadcast(&self, channel_id: &str, frame: &str) -> usize {
        self.shared.broadcast(channel_id, frame)
    }

    /// Sends `frame` (an event's JSON text) to every socket of `username`, subscribed to
    /// anything or not, as Kaiku's per-user topics (preferences, reads, friends, blocks) and
    /// its presence, guild and admin topics reach a user: not to a deafened socket, nor from
    /// a user they blocked. Encoded for each socket's protocol, unlike
    /// [`Faults::inject`]. Returns how many sockets it went to (0 for an unknown user).
    pub fn send_to_user(&self, username: &str, frame: &str) -> usize {
        self.shared
            .user_id(username)
            .map_or(0, |id| self.shared.send_to_user(&id, frame))
    }

    /// Sends a [`Sample`] the way Kaiku delivers its event to `username`: a channel's event
    /// to every socket subscribed to that channel ([`broadcast`](Self::broadcast)), anything
    /// else to `username`'s sockets ([`send_to_user`](Self::send_to_user)). Returns how many
    /// sockets it went to.
    pub fn deliver(&self, username: &str, sample: &Sample) -> usize {
        let frame = sample.event.to_json();
        match &sample.route {
            Route::Channel(channel_id) => self.broadcast(channel_id, &frame),
            Route::User => self.send_to_user(username, &frame),
        }
    }

    /// What [`kaiku_events::samples`] should be about on this server: events by `username`
    /// in `channel_id` (a message of theirs is stored there now, visible in history but not
    /// broadcast: the samples' `message_new` carries it) and in the DM channel
    /// `dm_channel_id`. `None` for an unknown user or channel.
    pub fn sample_subjects(
        &self,
        channel_id: &str,
        dm_channel_id: &str,
        username: &str,
    ) -> Option<Subjects> {
        let mut store = self.shared.store();
        if !store.channels.contains_key(dm_channel_id) {
            return None;
        }
        let user = store.user_by_name(username)?.clone();
        let m = store.post(channel_id, &user.id, "a message from the samples")?;
        Some(Subjects::new(
            channel_id,
            dm_channel_id,
            &user.id,
            &user.username,
            &user.display_name,
            store.message_json(&m),
        ))
    }

    /// The server's own record of `channel_id`: every visible message, oldest first by
    /// `created_at` (the order its history pages read). Empty for an unknown channel.
    pub fn messages(&self, channel_id: &str) -> Vec<Message> {
        self.shared
            .store()
            .channels
            .get(channel_id)
            .map(|c| c.messages.clone())
            .unwrap_or_default()
    }

    /// `viewer` blocks `author` (login names); false if either is unknown. From now on the
    /// viewer's history pages leave the author's messages out and compute `has_more` after
    /// that filter, as Kaiku does (`chat/messages.rs`: a page of `limit + 1` rows with one
    /// blocked author in it says `has_more: false` while older messages exist); the
    /// viewer's sockets no longer get the author's `message_new`, typing or presence, as
    /// Kaiku's pub/sub task filters them (`ws/mod.rs`); edits and deletes still arrive.
    pub fn block(&self, viewer: &str, author: &str) -> bool {
        self.set_blocked(viewer, author, true)
    }

    /// Undoes [`block`](Self::block); false if either user is unknown.
    pub fn unblock(&self, viewer: &str, author: &str) -> bool {
        self.set_blocked(viewer, author, false)
    }

    fn set_blocked(&self, viewer: &str, author: &str, blocked: bool) -> bool {
        let mut store = self.shared.store();
        let (Some(v), Some(a)) = (store.user_by_name(viewer), store.user_by_name(author)) else {
            return false;
        };
        let (v, a) = (v.id.clone(), a.id.clone());
        store.set_blocked(&v, &a, blocked);
        true
    }

    /// Silences the simulated users ([`ServerConfig::chatter`]), or lets them speak again.
    /// Once this returns, none of them posts until allowed again (a post already made has
    /// been broadcast).
    pub fn set_chatter_quiet(&self, quiet: bool) {
        *self.shared.quiet_lock() = quiet;
    }

    /// Whether the simulated users are silenced.
    pub fn is_chatter_quiet(&self) -> bool {
        self.shared.is_quiet()
    }

    /// Upgrade requests seen so far (accepted or refused).
    pub fn upgrades(&self) -> u64 {
        self.shared.upgrades.load(Ordering::Relaxed)
    }

    /// Sockets the client ended with a WebSocket close frame (a clean close) so far.
    pub fn client_closes(&self) -> u64 {
        self.shared.client_closes.load(Ordering::Relaxed)
    }

    /// Open sockets.
    pub fn connections(&self) -> usize {
        self.shared.conns().len()
    }

    /// `username`'s REST reads (every GET but `/health`) so far, in arrival order; empty
    /// for an unknown user. Reads without a valid token belong to no one and are only
    /// counted in [`reads_total`](Self::reads_total).
    pub fn read_log(&self, username: &str) -> Vec<ReadRecord> {
        self.shared
            .user_id(username)
            .map(|id| self.shared.limits().read_log(&id))
            .unwrap_or_default()
    }

    /// REST reads so far, every user's and unauthenticated ones.
    pub fn reads_total(&self) -> u64 {
        self.shared.limits().reads_total()
    }

    /// REST reads answered 429 so far (by the limits or by [`Faults::rate_limit_rest`]).
    pub fn reads_rejected(&self) -> u64 {
        self.shared.limits().reads_rejected()
    }

    /// The most REST reads of `username` in flight at once so far: counted from arrival to
    /// answer, latency included.
    pub fn max_reads_in_flight(&self, username: &str) -> usize {
        self.shared
            .user_id(username)
            .map_or(0, |id| self.shared.limits().max_in_flight(&id))
    }

    /// `username`'s reads that arrived inside the pause a 429 asked for: from the moment
    /// the 429 was answered for its `Retry-After`. Empty for a client that waits as told.
    pub fn read_pause_violations(&self, username: &str) -> Vec<PauseViolation> {
        limits::pause_violations(&self.read_log(username))
    }

    /// Forgets the read log, its counters and maxima (between phases of a benchmark).
    /// Rate-limit windows are kept.
    pub fn reset_read_log(&self) {
        self.shared.limits().reset_reads();
    }

    /// Simulates a server restart: the listener closes (connections are refused), every
    /// socket ends without a close frame, and after `downtime` the server listens again on
    /// the same port. Data and tokens survive; subscriptions and voice rooms do not.
    pub async fn restart(&mut self, downtime: Duration) -> std::io::Result<()> {
        self.stop_serving().await;
        self.shared.drop_all();
        // Kaiku's SFU keeps its rooms in memory.
        self.shared.voice().clear();
        tokio::time::sleep(downtime).await;
        let listener = bind(self.addr)?;
        let (stop, task) = serve(listener, self.shared.clone())?;
        self.stop = Some(stop);
        self.task = Some(task);
        Ok(())
    }

    async fn stop_serving(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Stops serving and closes every socket.
    pub async fn shutdown(mut self) {
        self.stop_serving().await;
        self.shared.drop_all();
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.shared.drop_all();
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Rebinding the same port right after a simulated restart must not wait out TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

type Served = (oneshot::Sender<()>, JoinHandle<()>);

fn serve(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<Served> {
    if let Some(identity) = shared.config.tls.clone() {
        return tls::serve(listener, router(shared), &identity);
    }
    let app = router(shared);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        // Small frames leave at once (no Nagle delay waiting for an ACK): a chat server
        // should, and the client's own latency is what the benchmarks measure.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        // The peer's address keys the per-IP limits (login, refresh).
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "dev server stopped");
        }
    });
    Ok((stop, task))
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(rest::health))
        .route("/auth/register", post(rest::register))
        .route("/auth/login", post(rest::login))
        .route("/auth/refresh", post(rest::refresh))
        .route("/auth/logout", post(rest::logout))
        .route("/auth/me", get(rest::me))
        .route(
            "/api/channels",
            get(rest::list_channels).post(rest::create_channel),
        )
        .route(
            "/api/messages/channel/{id}",
            get(rest::list_messages).post(rest::create_message),
        )
        .route(
            "/api/messages/{id}",
            patch(rest::edit_message).delete(rest::delete_message),
        )
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            rest::gate,
        ))
        .route("/ws", get(ws::upgrade))
        .with_state(shared)
}

fn seed_demo(store: &mut Store) {
    let mut ids = Vec::new();
    for (name, display) in [("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol")] {
        if let Some(u) = store.register(name, "password123", display) {
            ids.push(u.id);
        }
    }
    let lines = [
        "welcome to tether's dev server",
        "this channel survives restarts; subscriptions do not",
        "try `tether listen --channel <id>` in another terminal",
    ];
    for name in ["general", "random", "dev"] {
        let ch = store.create_channel(name);
        for (i, line) in lines.iter().enumerate() {
            if let Some(author) = ids.get(i % ids.len().max(1)) {
                store.post(&ch.id, author, line);
            }
        }
    }
}
