//! [`Client`]: one task that owns the socket, the core and one timer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tether_core::{
    Action, ClientEvent, Config, ConfigError, Connection, Credentials, DeliveryQueue, Event,
    HistoryError, HistoryRequest, InvalidChannel, OpenRequest, ReadHeaders, RefreshError,
    SendError, SocketEnd, Stats, Status, Timestamp, TransportError,
};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::api::{Api, ApiError};
use crate::clock::{Clock, Wake};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Settings of a [`Client`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The core's settings (server URL, auth mode, timers, limits).
    pub core: Config,
    /// Events held for the app before the driver stops reading the socket. Default 1024.
    pub event_capacity: usize,
    /// REST request timeout. Default 30 s.
    pub api_timeout: Duration,
    /// Root certificates (DER) trusted in addition to the webpki roots, for a server with a
    /// private CA (or a test's self-signed certificate).
    pub extra_roots_der: Vec<Vec<u8>>,
    /// The socket's read buffer: what one read from the kernel can take. Every connection
    /// holds one for its whole life, so it is most of an idle client's memory. Frames larger
    /// than this still arrive whole (they are assembled across reads). Default 8 KiB, about
    /// 35 chat events per read (tungstenite's own default is 128 KiB; raise it for bulk
    /// transfers).
    pub read_buffer_size: usize,
    /// Commands from the app waiting for the connection task. Default 1024. When full, the
    /// async calls (`subscribe`, `send`, `stats`, `close`) wait for room and the others
    /// (`connect`, `disconnect`, `unsubscribe`, `focus`, `set_credentials`) return
    /// [`ClientError::Busy`]: the task is that far behind.
    pub command_capacity: usize,
    /// Frames waiting for the socket's writer. Default 4096 (a reconnect replays one
    /// `subscribe` per channel at once). When full, the peer has not read thousands of
    /// frames: the link is dropped as dead and reconnected, instead of queueing without end.
    pub write_queue_capacity: usize,
    /// Notice a wake from sleep within about a second, not at the next timer (up to a
    /// heartbeat interval later, as tokio's timers stop during suspend on Linux and macOS).
    /// One thread per process looks at the suspend-counting clock every second for every
    /// client (60 wake-ups per idle minute in all); when the process did not run for
    /// `core.heartbeat.wake_threshold` or more (the machine slept, or the process was
    /// frozen), the client acts as on [`Client::network_changed`]. Default on.
    pub wake_watchdog: bool,
}

impl ClientConfig {
    /// Defaults for `server`, with jitter seeded from OS entropy so that two clients never
    /// share a reconnect schedule. Set `core.seed` afterwards to replay a fixed schedule.
    pub fn new(server: &str) -> Result<Self, ConfigError> {
        let mut core = Config::new(server)?;
        core.seed = os_seed();
        Ok(Self {
            core,
            event_capacity: 1024,
            api_timeout: crate::api::TIMEOUT,
            extra_roots_der: Vec::new(),
            read_buffer_size: 8 * 1024,
            command_capacity: 1024,
            write_queue_capacity: 4096,
            wake_watchdog: true,
        })
    }
}

/// 64 random bits from the OS, through std's randomly keyed hasher (no extra dependency).
fn os_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64,
    );
    h.finish()
}

/// Fills a token's lifetime from its JWT `exp` claim, reading the wall clock (the core may
/// not). Use it on credentials that came without `expires_in`.
pub fn with_jwt_expiry(credentials: Credentials) -> Credentials {
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    credentials.with_jwt_expiry(unix_now)
}

/// Why a [`Client`] call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The client task has ended (the client was shut down).
    #[error("the connection task has ended")]
    Closed,
    /// The channel id was refused.
    #[error(transparent)]
    InvalidChannel(#[from] InvalidChannel),
    /// The event was not taken (it is inside, handed back).
    #[error(transparent)]
    Send(#[from] SendError),
    /// The connection task is `command_capacity` commands behind; nothing was done. Try
    /// again shortly.
    #[error("the connection task is busy; command not taken")]
    Busy,
}

enum Command {
    Connect,
    Disconnect,
    Subscribe {
        channel_id: String,
        newest: Option<String>,
        reply: oneshot::Sender<Result<(), InvalidChannel>>,
    },
    Unsubscribe(String),
    Focus(String),
    /// The headers of a read the app made through [`Client::api`].
    AppRead(ReadHeaders),
    Send(ClientEvent, oneshot::Sender<Result<(), SendError>>),
    SetCredentials(Credentials),
    Stats(oneshot::Sender<(Stats, Option<Duration>)>),
    Token(oneshot::Sender<Option<tether_core::Secret>>),
    NetworkChanged,
    /// Close and end the task; answered once the close frame has left (or after 1 s).
    Close(oneshot::Sender<()>),
}

/// Events for the app: a bounded, coalescing queue shared with the driver task. A plain mutex:
/// it is held only to push or pop, never across an await.
#[derive(Debug)]
struct Inbox {
    queue: std::sync::Mutex<DeliveryQueue>,
    readable: Notify,
    writable: Notify,
    closed: AtomicBool,
}

/// The app's end of the event queue. Read it steadily: while it is full the client stops
/// reading the socket (typing and presence are coalesced first; messages are never dropped).
#[derive(Debug)]
pub struct Events {
    inbox: Arc<Inbox>,
}

impl Inbox {
    fn queue(&self) -> std::sync::MutexGuard<'_, DeliveryQueue> {
        // Nothing panics while holding the lock; if something did, the queue is still whole.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The oldest event; wakes the driver when this makes room in a full queue.
    fn pop(&self) -> Option<Event> {
        let mut queue = self.queue();
        let was_full = queue.is_full();
        let event = queue.pop();
        drop(queue);
        if was_full && event.is_some() {
            self.writable.notify_one();
        }
        event
    }
}

impl Events {
    /// The next event; `None` once the client has shut down and everything was read.
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            let notified = self.inbox.readable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(event) = self.inbox.pop() {
                return Some(event);
            }
            if self.inbox.closed.load(Ordering::Acquire) {
                return None;
            }
            notified.await;
        }
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.inbox.pop()
    }

    /// Events replaced by a newer one of the same kind (typing, presence, status) so far.
    pub async fn coalesced(&self) -> u64 {
        self.inbox.queue().coalesced()
    }
}

/// A handle to one realtime connection. Cheap to clone; the connection ends when every
/// handle is dropped.
#[derive(Clone, Debug)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<Status>,
    api: Api,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl Client {
    /// Starts the connection task (disconnected until [`connect`](Self::connect)) and returns
    /// the handle and the app's event stream. Must be called inside a tokio runtime.
    pub fn spawn(
        config: ClientConfig,
        credentials: Credentials,
    ) -> Result<(Self, Events), ConfigError> {
        // The REST calls follow the socket's TLS rule and its opt-in (D53).
        let api = Api::with_options(
            config.core.server.as_str(),
            config.api_timeout,
            &config.extra_roots_der,
        )
        .map_err(|e| ConfigError::InvalidUrl(e.to_string()))?
        .allow_insecure(config.core.allow_insecure);
        let tls = tls_config(&config.extra_roots_der).map_err(ConfigError::InvalidUrl)?;
        let clock = Clock::new();
        let mut conn = Connection::new(config.core.clone())?;
        conn.set_credentials(clock.now(), credentials);
        let (commands, command_rx) = mpsc::channel::<Command>(config.command_capacity.max(1));
        // The app's reads through `Client::api` report their headers to the connection, so
        // they and the catch-up share the server's budget. A weak sender: an `Api` kept by
        // the app does not keep the connection task alive.
        let weak = commands.downgrade();
        let observed = api
            .clone()
            .with_read_observer(Arc::new(move |h: &ReadHeaders| {
                // Advisory: a task that far behind misses one report; the app never waits.
                if let Some(tx) = weak.upgrade() {
                    let _ = tx.try_send(Command::AppRead(h.clone()));
                }
            }));
        let (status_tx, status) = watch::channel(Status::Disconnected);
        let inbox = Arc::new(Inbox {
            queue: std::sync::Mutex::new(DeliveryQueue::new(config.event_capacity)),
            readable: Notify::new(),
            writable: Notify::new(),
            closed: AtomicBool::new(false),
        });
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            conn,
            clock,
            api: api.clone(),
            ws_config: WebSocketConfig::default()
                .max_message_size(Some(config.core.max_inbound_message))
                .max_frame_size(Some(config.core.max_inbound_message))
                .read_buffer_size(config.read_buffer_size.max(1024)),
            tls,
            socket: None,
            connecting: None,
            generation: 0,
            write_queue_capacity: config.write_queue_capacity.max(1),
            internal_tx,
            internal_rx,
            rest: JoinSet::new(),
            inbox: inbox.clone(),
            status_tx,
            commands: command_rx,
            paused: false,
            actions: Vec::new(),
            events: Vec::new(),
            wakes: if config.wake_watchdog {
                crate::clock::watch_wakes()
            } else {
                None
            },
        };
        tokio::spawn(driver.run());
        Ok((
            Self {
                commands,
                status,
                api: observed,
            },
            Events { inbox },
        ))
    }

    /// Hands a command to the task now, or says why not.
    fn command(&self, c: Command) -> Result<(), ClientError> {
        self.commands.try_send(c).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ClientError::Busy,
            mpsc::error::TrySendError::Closed(_) => ClientError::Closed,
        })
    }

    /// Hands a command to the task, waiting for room.
    async fn command_wait(&self, c: Command) -> Result<(), ClientError> {
        self.commands.send(c).await.map_err(|_| ClientError::Closed)
    }

    /// Connects (or retries now, when waiting to reconnect).
    pub fn connect(&self) -> Result<(), ClientError> {
        self.command(Command::Connect)
    }

    /// Closes the connection; subscriptions are kept for the next `connect`.
    pub fn disconnect(&self) -> Result<(), ClientError> {
        self.command(Command::Disconnect)
    }

    /// The network may have changed (the OS or the webview says it is back online, the app
    /// came to the foreground): probe a live link now, with the short wake deadline, and
    /// skip a pending backoff wait (not a wait the server asked for). See
    /// `Connection::handle_network_change`.
    pub fn network_changed(&self) -> Result<(), ClientError> {
        self.command(Command::NetworkChanged)
    }

    /// Closes the connection for good and waits until the close frame has left (at most about
    /// a second), so an app that is exiting does not cut the socket mid-frame. Every handle of
    /// this client is closed; the event stream ends. Closing a closed client does nothing.
    pub async fn close(&self) {
        let (reply, rx) = oneshot::channel();
        if self.command_wait(Command::Close(reply)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Wants a channel's events, now and after every reconnect.
    pub async fn subscribe(&self, channel_id: &str) -> Result<(), ClientError> {
        self.subscribe_inner(channel_id, None).await
    }

    /// Like [`subscribe`](Self::subscribe), catching up from the newest message the app shows.
    pub async fn subscribe_from(
        &self,
        channel_id: &str,
        newest_message_id: &str,
    ) -> Result<(), ClientError> {
        self.subscribe_inner(channel_id, Some(newest_message_id.to_owned()))
            .await
    }

    async fn subscribe_inner(
        &self,
        channel_id: &str,
        newest: Option<String>,
    ) -> Result<(), ClientError> {
        let (reply, rx) = oneshot::channel();
        self.command_wait(Command::Subscribe {
            channel_id: channel_id.to_owned(),
            newest,
            reply,
        })
        .await?;
        Ok(rx.await.map_err(|_| ClientError::Closed)??)
    }

    /// The app is looking at this channel: after a reconnect its catch-up goes first (the
    /// latest focused first, then the others in subscription order).
    pub fn focus(&self, channel_id: &str) -> Result<(), ClientError> {
        self.command(Command::Focus(channel_id.to_owned()))
    }

    /// Stops wanting a channel.
    pub fn unsubscribe(&self, channel_id: &str) -> Result<(), ClientError> {
        self.command(Command::Unsubscribe(channel_id.to_owned()))
    }

    /// Sends a client event under its offline policy (see `tether_core::Policy`).
    pub async fn send(&self, event: ClientEvent) -> Result<(), ClientError> {
        let (reply, rx) = oneshot::channel();
        self.command_wait(Command::Send(event, reply)).await?;
        Ok(rx.await.map_err(|_| ClientError::Closed)??)
    }

    /// Replaces the credentials (after a new login, say).
    pub fn set_credentials(&self, credentials: Credentials) -> Result<(), ClientError> {
        self.command(Command::SetCredentials(credentials))
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Counters, and the last heartbeat round trip.
    pub async fn stats(&self) -> Result<(Stats, Option<Duration>), ClientError> {
        let (reply, rx) = oneshot::channel();
        self.command_wait(Command::Stats(reply)).await?;
        rx.await.map_err(|_| ClientError::Closed)
    }

    /// The current access token (refreshed by the connection as needed), for REST calls.
    pub async fn access_token(&self) -> Result<Option<tether_core::Secret>, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.command_wait(Command::Token(reply)).await?;
        rx.await.map_err(|_| ClientError::Closed)
    }

    /// The REST client of the same server. Reads made through it (history, channels) report
    /// the server's rate-limit headers to this connection, so the app's reads and the
    /// catch-up's share one budget and a 429 on either pauses both.
    pub fn api(&self) -> &Api {
        &self.api
    }
}

/// What the background work reports back to the driver task.
enum Internal {
    Connected(u64, Result<Opened, SocketEnd>),
    WriterFailed(u64),
    History(u64, Result<Bytes, HistoryError>, Option<ReadHeaders>),
    Refresh(Result<Credentials, RefreshError>),
}

struct Socket {
    generation: u64,
    reader: SplitStream<Ws>,
    writer: mpsc::Sender<Message>,
    /// Aborted when the socket is dropped, so an abort really drops the TCP connection.
    writer_task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        if let Some(t) = self.writer_task.take() {
            t.abort();
        }
    }
}

struct Driver {
    conn: Connection,
    clock: Clock,
    api: Api,
    ws_config: WebSocketConfig,
    tls: Arc<rustls::ClientConfig>,
    socket: Option<Socket>,
    connecting: Option<tokio::task::JoinHandle<()>>,
    generation: u64,
    write_queue_capacity: usize,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    rest: JoinSet<()>,
    inbox: Arc<Inbox>,
    status_tx: watch::Sender<Status>,
    commands: mpsc::Receiver<Command>,
    /// Not reading the socket because the app is behind.
    paused: bool,
    /// The drain's buffers, kept between turns.
    actions: Vec<Action>,
    events: Vec<Event>,
    /// The process's wake watchdog (`ClientConfig::wake_watchdog`).
    wakes: Option<watch::Receiver<Wake>>,
}

/// Frames handled in one turn of the loop when more are already buffered: one drain, one
/// push into the app's queue and one wake-up for the lot, instead of one each.
const FRAMES_PER_TURN: usize = 64;

impl Driver {
    async fn run(mut self) {
        let mut closed_reply = None;
        // One timer for the task's life, moved only when the core's deadline moves.
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed: Option<std::time::Instant> = None;
        loop {
            let deadline = self.drain();
            let full = self.inbox.queue().is_full();
            if full != self.paused {
                // Tell the core we stopped (or resumed) reading on purpose, so an app that
                // falls behind does not look like a dead link.
                self.paused = full;
                self.conn.handle_backpressure(self.clock.now(), full);
            }
            if deadline != armed {
                armed = deadline;
                if let Some(d) = deadline {
                    let wait = d.saturating_duration_since(self.clock.now());
                    sleep.as_mut().reset(tokio::time::Instant::now() + wait);
                }
            }
            // Backpressure applies to a live session only: the handshake (`ready`) must be read
            // even when the app is behind, or a stalled app would churn through retries.
            let reading = self.socket.is_some() && (!full || !self.conn.is_connected());
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Close(reply)) => {
                        closed_reply = Some(reply);
                        break;
                    }
                    Some(c) => self.command(c),
                    None => break,
                },
                internal = self.internal_rx.recv() => {
                    if let Some(i) = internal {
                        self.internal(i);
                    }
                }
                frame = next_frame(&mut self.socket), if reading => {
                    self.frame(frame);
                    // Take what is already buffered too, then drain once: as many frames as
                    // the app's queue has room for (about an event each), so the batch does
                    // not push it past its bound.
                    let room = self.inbox.queue().room();
                    for _ in 1..FRAMES_PER_TURN.min(room) {
                        let Some(frame) = next_frame(&mut self.socket).now_or_never() else {
                            break;
                        };
                        self.frame(frame);
                    }
                }
                // Reap finished REST tasks: a JoinSet keeps every finished task until joined.
                Some(_) = self.rest.join_next(), if !self.rest.is_empty() => {}
                () = self.inbox.writable.notified(), if full => {}
                Some(wake) = next_wake(&mut self.wakes) => {
                    if wake.lost >= self.conn.config().heartbeat.wake_threshold {
                        let lost_ms = wake.lost.as_millis() as u64;
                        tracing::debug!(lost_ms, "woke up: probing");
                        let now = self.clock.now();
                        // Deadlines that fell due in the sleep first (the tokio timer, on a
                        // clock that stopped, has not seen them), then the probe.
                        self.conn.handle_timeout(now);
                        self.conn.handle_network_change(now);
                        armed = None;
                    }
                }
                () = &mut sleep, if deadline.is_some() => {
                    armed = None; // fired: re-arm even if the core keeps the same deadline
                    let now = self.clock.now();
                    self.conn.handle_timeout(now);
                    // A timer (the heartbeat, at the latest) is the quiet moment to give back
                    // what a burst left in the buffers: thousands of idle clients add up.
                    self.release_memory();
                }
            }
        }
        self.shutdown().await;
        if let Some(reply) = closed_reply {
            let _ = reply.send(());
        }
    }

    /// Carries out every pending action (through the core's one drain contract); returns the
    /// next deadline.
    fn drain(&mut self) -> Option<std::time::Instant> {
        let mut actions = std::mem::take(&mut self.actions);
        let mut events = std::mem::take(&mut self.events);
        // Carrying out an action can be an input too (a full write queue drops the link):
        // drain until the core has nothing more to say.
        let mut deadline = tether_core::drain(&mut self.conn, |a| actions.push(a));
        while !actions.is_empty() {
            self.carry_out(&mut actions, &mut events);
            deadline = tether_core::drain(&mut self.conn, |a| actions.push(a));
        }
        if !events.is_empty() {
            let mut queue = self.inbox.queue();
            for e in events.drain(..) {
                queue.push(e);
            }
            drop(queue);
            self.inbox.readable.notify_one();
        }
        self.actions = actions;
        self.events = events;
        deadline
    }

    /// Carries out `actions` (emptying it); app events go to `events`.
    fn carry_out(&mut self, actions: &mut Vec<Action>, events: &mut Vec<Event>) {
        for action in actions.drain(..) {
            match action {
                Action::Open(req) => self.open(req),
                Action::Send(text) => self.write(Message::Text(to_utf8(text))),
                Action::Close { code, reason } => self.write(Message::Close(Some(CloseFrame {
                    code: code.into(),
                    reason: reason.into(),
                }))),
                Action::Abort => {
                    self.socket = None;
                    if let Some(c) = self.connecting.take() {
                        c.abort();
                    }
                    // A connect that already finished may have its result queued: a new
                    // generation makes sure it is dropped, not installed as a socket the
                    // core has let go of.
                    self.generation += 1;
                }
                Action::FetchHistory(req) => self.fetch(req),
                Action::RefreshToken(req) => self.refresh(req.refresh_token),
                Action::Emit(event) => {
                    if let Event::Status(s) = &event {
                        tracing::debug!(status = s.name(), "status");
                        self.status_tx.send_replace(s.clone());
                    }
                    events.push(event);
                }
                _ => {}
            }
        }
    }

    /// Frees the drain buffers and the app's queue if a burst grew them and they are empty.
    fn release_memory(&mut self) {
        const KEEP: usize = 8;
        if self.actions.capacity() > KEEP {
            self.actions.shrink_to(KEEP);
        }
        if self.events.capacity() > KEEP {
            self.events.shrink_to(KEEP);
        }
        self.inbox.queue().release_memory();
    }

    fn command(&mut self, c: Command) {
        let now = self.clock.now();
        match c {
            Command::Connect => {
                // Credentials exist from `spawn`, so this cannot fail.
                let _ = self.conn.connect(now);
            }
            Command::Disconnect => self.conn.disconnect(now),
            Command::Subscribe {
                channel_id,
                newest,
                reply,
            } => {
                let r = match newest {
                    Some(n) => self.conn.subscribe_from(now, &channel_id, &n),
                    None => self.conn.subscribe(now, &channel_id),
                };
                let _ = reply.send(r);
            }
            Command::Unsubscribe(ch) => self.conn.unsubscribe(now, &ch),
            Command::Focus(ch) => self.conn.focus(now, &ch),
            Command::AppRead(headers) => self.conn.handle_app_read(now, &headers),
            Command::Send(event, reply) => {
                let _ = reply.send(self.conn.send(now, event));
            }
            Command::SetCredentials(c) => self.conn.set_credentials(now, c),
            Command::Stats(reply) => {
                let _ = reply.send((self.conn.stats(), self.conn.rtt()));
            }
            Command::Token(reply) => {
                let _ = reply.send(self.conn.access_token().cloned());
            }
            Command::NetworkChanged => self.conn.handle_network_change(now),
            Command::Close(_) => {} // handled by the run loop
        }
    }

    fn open(&mut self, req: OpenRequest) {
        tracing::debug!(url = %req.redacted_url(), "opening socket");
        self.socket = None;
        if let Some(c) = self.connecting.take() {
            c.abort();
        }
        self.generation += 1;
        let generation = self.generation;
        let tx = self.internal_tx.clone();
        let ws_config = self.ws_config;
        let tls = self.tls.clone();
        self.connecting = Some(tokio::spawn(async move {
            let result = connect(req, ws_config, tls).await;
            let _ = tx.send(Internal::Connected(generation, result));
        }));
    }

    fn write(&mut self, message: Message) {
        let Some(s) = &self.socket else {
            return;
        };
        match s.writer.try_send(message) {
            Ok(()) => {}
            // The writer task ended; it reports that itself.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The peer has not read `write_queue_capacity` frames: a dead link, not a
                // reason to queue without end.
                tracing::debug!("write queue full; dropping the link");
                self.socket = None;
                let now = self.clock.now();
                self.conn
                    .handle_closed(now, SocketEnd::Error(TransportError::Io));
            }
        }
    }

    fn fetch(&mut self, req: HistoryRequest) {
        let api = self.api.clone();
        let tx = self.internal_tx.clone();
        self.rest.spawn(async move {
            let (result, headers) = match &req.token {
                Some(token) => {
                    api.messages_raw_with_headers(
                        token,
                        req.channel_id.as_str(),
                        req.before.as_ref().map(|b| b.as_str()),
                        req.limit,
                    )
                    .await
                }
                None => (
                    Err(ApiError::Http {
                        status: 401,
                        code: String::new(),
                        message: String::new(),
                    }),
                    None,
                ),
            };
            let retry_after = headers.as_ref().and_then(|h| h.retry_after);
            let result = result.map_err(|e| match e {
                ApiError::Http { status, .. } => HistoryError::Status {
                    status,
                    retry_after,
                },
                ApiError::RateLimited { retry_after } => HistoryError::Status {
                    status: 429,
                    retry_after,
                },
                _ => HistoryError::Network,
            });
            let _ = tx.send(Internal::History(req.id, result, headers));
        });
    }

    fn refresh(&mut self, token: tether_core::Secret) {
        let api = self.api.clone();
        let tx = self.internal_tx.clone();
        self.rest.spawn(async move {
            let result = match api.refresh(&token).await {
                Ok(c) => Ok(with_jwt_expiry(c)),
                Err(ApiError::Http {
                    status: 400 | 401 | 403,
                    ..
                }) => Err(RefreshError::Rejected),
                Err(ApiError::RateLimited { retry_after }) => {
                    Err(RefreshError::Transient { retry_after })
                }
                Err(_) => Err(RefreshError::Transient { retry_after: None }),
            };
            let _ = tx.send(Internal::Refresh(result));
        });
    }

    fn internal(&mut self, i: Internal) {
        let now = self.clock.now();
        match i {
            Internal::Connected(generation, result) if generation == self.generation => {
                self.connecting = None;
                match result {
                    Ok(Opened { ws, protocol, date }) => {
                        let (sink, reader) = (*ws).split();
                        let (writer, rx) = mpsc::channel(self.write_queue_capacity);
                        let tx = self.internal_tx.clone();
                        let writer_task = tokio::spawn(write_loop(sink, rx, tx, generation));
                        self.socket = Some(Socket {
                            generation,
                            reader,
                            writer,
                            writer_task: Some(writer_task),
                        });
                        self.conn.handle_open(now, protocol.as_deref());
                        if let Some(date) = date {
                            // The server's clock: anchors for channels with no message yet.
                            self.conn.handle_server_date(now, date);
                        }
                    }
                    Err(why) => self.conn.handle_closed(now, why),
                }
            }
            Internal::Connected(..) => {} // a connect the core already gave up on
            Internal::WriterFailed(generation) => {
                if self
                    .socket
                    .as_ref()
                    .is_some_and(|s| s.generation == generation)
                {
                    self.socket = None;
                    self.conn
                        .handle_closed(now, SocketEnd::Error(TransportError::Io));
                }
            }
            Internal::History(id, result, headers) => {
                if let Some(h) = headers {
                    self.conn.handle_history_headers(now, id, &h);
                }
                self.conn.handle_history(now, id, result);
            }
            Internal::Refresh(result) => self.conn.handle_refresh(now, result),
        }
    }

    fn frame(&mut self, frame: Option<Result<Message, tungstenite::Error>>) {
        let now = self.clock.now();
        match frame {
            Some(Ok(Message::Text(text))) => self.conn.handle_frame(now, Bytes::from(text)),
            Some(Ok(Message::Close(frame))) => {
                self.socket = None;
                let (code, reason) = frame.map_or((None, String::new()), |f| {
                    (Some(u16::from(f.code)), f.reason.to_string())
                });
                self.conn
                    .handle_closed(now, SocketEnd::Closed { code, reason });
            }
            Some(Ok(_)) => self.conn.handle_activity(now),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "socket read failed");
                self.socket = None;
                self.conn
                    .handle_closed(now, disconnect_from(&e, Stage::Live));
            }
            None => {
                self.socket = None;
                self.conn.handle_closed(
                    now,
                    SocketEnd::Closed {
                        code: None,
                        reason: String::new(),
                    },
                );
            }
        }
    }

    async fn shutdown(mut self) {
        // A handshake in progress would finish later and drop its socket without a close.
        if let Some(c) = self.connecting.take() {
            c.abort();
        }
        let now = self.clock.now();
        self.conn.disconnect(now);
        let _ = self.drain();
        // Give the Close frame a moment to leave; the Kaiku server never answers it.
        if let Some(mut socket) = self.socket.take() {
            let task = socket.writer_task.take();
            drop(socket); // closes the writer's queue: it flushes what is left, then ends
            if let Some(task) = task {
                let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
            }
        }
        self.rest.abort_all();
        self.inbox.closed.store(true, Ordering::Release);
        self.inbox.readable.notify_one();
    }
}

/// The TLS settings for `wss://`: webpki roots plus the caller's extra roots, ring crypto.
/// Built once and shared by every client with no extra roots (thousands of clients in one
/// process need not each hold a copy).
fn tls_config(extra_roots_der: &[Vec<u8>]) -> Result<Arc<rustls::ClientConfig>, String> {
    static DEFAULT: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    if !extra_roots_der.is_empty() {
        return build_tls_config(extra_roots_der);
    }
    if let Some(c) = DEFAULT.get() {
        return Ok(c.clone());
    }
    let c = build_tls_config(&[])?;
    Ok(DEFAULT.get_or_init(|| c).clone())
}

fn build_tls_config(extra_roots_der: &[Vec<u8>]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for der in extra_roots_der {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| format!("bad root certificate: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Socket text is UTF-8 by construction; tungstenite re-checks, and an impossible failure
/// sends an empty frame rather than panicking.
fn to_utf8(text: tether_core::Text) -> Utf8Bytes {
    Utf8Bytes::try_from(text.into_bytes()).unwrap_or_default()
}

/// The next wake the watchdog saw; pending without a watchdog (or after it went away).
async fn next_wake(wakes: &mut Option<watch::Receiver<Wake>>) -> Option<Wake> {
    let Some(rx) = wakes.as_mut() else {
        return std::future::pending().await;
    };
    if rx.changed().await.is_ok() {
        return Some(*rx.borrow_and_update());
    }
    *wakes = None;
    None
}

async fn next_frame(socket: &mut Option<Socket>) -> Option<Result<Message, tungstenite::Error>> {
    match socket {
        Some(s) => s.reader.next().await,
        None => std::future::pending().await,
    }
}

async fn write_loop(
    mut sink: SplitSink<Ws, Message>,
    mut rx: mpsc::Receiver<Message>,
    failed: mpsc::UnboundedSender<Internal>,
    generation: u64,
) {
    while let Some(message) = rx.recv().await {
        // Batch what is already queued into one flush.
        let mut result = sink.feed(message).await;
        while result.is_ok() {
            match rx.try_recv() {
                Ok(m) => result = sink.feed(m).await,
                Err(_) => break,
            }
        }
        if result.is_err() || sink.flush().await.is_err() {
            let _ = failed.send(Internal::WriterFailed(generation));
            return;
        }
    }
}

/// Opens the socket: TCP (+ TLS for wss), the upgrade with our subprotocols, and the
/// negotiated subprotocol. A refused upgrade reports its status and `Retry-After`.
/// An open socket and what its upgrade's answer said.
struct Opened {
    ws: Box<Ws>,
    /// The negotiated subprotocol.
    protocol: Option<String>,
    /// The 101's `Date`: the server's clock.
    date: Option<Timestamp>,
}

async fn connect(
    req: OpenRequest,
    config: WebSocketConfig,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Opened, SocketEnd> {
    let mut request = req
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| disconnect_from(&e, Stage::Connecting))?;
    if !req.protocols.is_empty() {
        let joined = req
            .protocols
            .iter()
            .map(|p| p.expose())
            .collect::<Vec<_>>()
            .join(", ");
        let value = HeaderValue::from_str(&joined)
            .map_err(|_| SocketEnd::Error(TransportError::Protocol))?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", value);
    }
    let connector = tokio_tungstenite::Connector::Rustls(tls);
    let (ws, response) = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(config),
        true,
        Some(connector),
    )
    .await
    .map_err(|e| disconnect_from(&e, Stage::Connecting))?;
    let protocol = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let date = response
        .headers()
        .get("Date")
        .and_then(|v| v.to_str().ok())
        .and_then(tether_core::parse_http_date);
    Ok(Opened {
        ws: Box::new(ws),
        protocol,
        date,
    })
}

/// Where a transport error happened: an I/O error while connecting means the server could
/// not be reached; on a live socket, that the link broke.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Connecting,
    Live,
}

/// Maps a tungstenite error to what the core needs to decide.
fn disconnect_from(e: &tungstenite::Error, stage: Stage) -> SocketEnd {
    use tungstenite::Error as E;
    use tungstenite::error::CapacityError;
    match e {
        E::Http(response) => SocketEnd::Refused {
            status: response.status().as_u16(),
            retry_after: response
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok())
                .and_then(crate::api::parse_retry_after),
        },
        E::Capacity(CapacityError::MessageTooLong { .. }) => {
            SocketEnd::Error(TransportError::TooLarge)
        }
        // tungstenite checks the 101's subprotocol itself; the core owns what that means.
        E::Protocol(tungstenite::error::ProtocolError::SecWebSocketSubProtocolError(_)) => {
            SocketEnd::Error(TransportError::Subprotocol)
        }
        // The peer vanished without a close frame: what Kaiku's clients see as 1006.
        E::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
            SocketEnd::Closed {
                code: None,
                reason: String::new(),
            }
        }
        E::Capacity(_)
        | E::Protocol(_)
        | E::Utf8(_)
        | E::AttackAttempt
        | E::HttpFormat(_)
        | E::Url(_) => SocketEnd::Error(TransportError::Protocol),
        E::Tls(_) => SocketEnd::Error(TransportError::Tls),
        E::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            SocketEnd::Error(TransportError::Tls)
        }
        E::Io(_) if stage == Stage::Connecting => SocketEnd::Error(TransportError::Connect),
        E::Io(_) => SocketEnd::Error(TransportError::Io),
        E::ConnectionClosed | E::AlreadyClosed => SocketEnd::Closed {
            code: None,
            reason: String::new(),
        },
        _ => SocketEnd::Error(TransportError::Io),
    }
}
