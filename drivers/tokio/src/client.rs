//! The app's side of a connection: the [`Client`] handle, its [`Events`] stream, its
//! [`ClientConfig`] and the [`ClientError`] its calls return.
//!
//! A call here only hands a [`Command`] to the connection task (`driver.rs`) and, when the
//! call has an answer, waits for it. Every call that waits is `async`: for the core's verdict
//! (`subscribe`, `send`), a value (`stats`, `access_token`), the close frame (`close`), or room
//! in the task's queue (`unsubscribe`). The others are plain and return
//! [`ClientError::Busy`] when the task is `command_capacity` commands behind.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tether_core::{
    ClientEvent, Config, ConfigError, Connection, Credentials, Event, InvalidChannel, SendError,
    Stats, Status, wire::Protocol,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::api::{Api, Observed};
use crate::clock::Clock;
use crate::driver;
use crate::net::{Network, Road};
use crate::socket::SocketSettings;
use crate::task::{Command, Inbox, Snapshot};

pub use crate::task::RefreshListener;

/// Settings of a [`Client`].
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The core's settings (server URL, auth mode, timers, limits).
    pub core: Config,
    /// Events held for the app before the driver stops reading the socket. Default 1024.
    ///
    /// The driver reads the socket while fewer events wait, and counts the events each frame
    /// makes, not the frames: the queue passes this bound by at most one frame's events (one
    /// with v1; up to 1,024 with a v2 batch, `tether_core::wire::MAX_BATCH`), so while the
    /// app does not read it holds at most `event_capacity - 1 + 1,024` events (DESIGN 3.6).
    /// Inputs other than the socket are not held back: a catch-up delivers its gap (at most
    /// the catch-up's cap plus the live events it held) at once.
    pub event_capacity: usize,
    /// REST request timeout. Default 30 s.
    pub api_timeout: Duration,
    /// How the server is reached, by the socket and the REST calls alike: the proxy
    /// (default: the environment's, else the system's), root certificates trusted beyond the
    /// system's, pins, fixed addresses.
    pub network: Network,
    /// The socket's read buffer: what one read from the kernel can take. Every connection
    /// holds one for its whole life, so it is most of an idle client's memory. Frames larger
    /// than this still arrive whole (they are assembled across reads). Default 8 KiB, about
    /// 35 chat events per read (tungstenite's own default is 128 KiB; raise it for bulk
    /// transfers).
    pub read_buffer_size: usize,
    /// Commands from the app waiting for the connection task. Default 1024. When full, the
    /// async calls (`subscribe`, `unsubscribe`, `send`, `stats`, `access_token`, `close`)
    /// wait for room and the others (`connect`, `disconnect`, `focus`, `set_credentials`,
    /// `network_changed`) return [`ClientError::Busy`]: the task is that far behind.
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
    /// Called with the credentials of every refresh tether makes on its own (given a
    /// `refresh_token`), so an app that keeps the refresh token (in the OS keyring, say) can
    /// store the rotated one: servers such as Kaiku delete the old one with each refresh.
    /// Set it with [`on_refresh`](Self::on_refresh). Default none.
    ///
    /// It gets the new access token, the refresh token the server returned (the one that was
    /// sent, if the server returned none: some servers do not rotate) and the lifetime;
    /// exactly once per successful refresh, before the connection uses the new pair for
    /// anything (the next refresh included), so what the app stored is always the current
    /// pair. Never for credentials the app set itself, nor for a refresh whose answer the
    /// connection drops because the app installed another session (another refresh token)
    /// while it was on its way (D80).
    ///
    /// It runs on the connection's task: store and return (a keyring write is fine), never
    /// wait for the [`Client`] from inside it (its calls are served by that same task), and
    /// do not panic (a panic is caught and logged; the pair is then the app's loss).
    pub on_refresh: Option<RefreshListener>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hand-written for `on_refresh`: a closure has no `Debug`, and whether one is set is
        // all there is to say.
        f.debug_struct("ClientConfig")
            .field("core", &self.core)
            .field("event_capacity", &self.event_capacity)
            .field("api_timeout", &self.api_timeout)
            .field("network", &self.network)
            .field("read_buffer_size", &self.read_buffer_size)
            .field("command_capacity", &self.command_capacity)
            .field("write_queue_capacity", &self.write_queue_capacity)
            .field("wake_watchdog", &self.wake_watchdog)
            .field("on_refresh", &self.on_refresh.is_some())
            .finish()
    }
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
            network: Network::default(),
            read_buffer_size: 8 * 1024,
            command_capacity: 1024,
            write_queue_capacity: 4096,
            wake_watchdog: true,
            on_refresh: None,
        })
    }

    /// Sets [`on_refresh`](Self::on_refresh): `listener` gets every pair of tokens tether's
    /// own refresh obtains, to store it.
    pub fn on_refresh(mut self, listener: impl Fn(&Credentials) + Send + Sync + 'static) -> Self {
        self.on_refresh = Some(Arc::new(listener));
        self
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

/// The app's end of the event queue. Read it steadily: while it is full the client stops
/// reading the socket (typing and presence are coalesced first; messages are never dropped).
#[derive(Debug)]
pub struct Events {
    inbox: Arc<Inbox>,
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

    /// Events waiting to be read. While the app does not read, this stays within
    /// [`ClientConfig::event_capacity`] plus one frame's events.
    pub fn queued(&self) -> usize {
        self.inbox.queue().len()
    }

    /// Events replaced by a newer one of the same kind (typing, presence, status) so far.
    pub fn coalesced(&self) -> u64 {
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

impl Client {
    /// Starts the connection task (disconnected until [`connect`](Self::connect)) and returns
    /// the handle and the app's event stream. Must be called inside a tokio runtime.
    pub fn spawn(
        config: ClientConfig,
        credentials: Credentials,
    ) -> Result<(Self, Events), ConfigError> {
        // One road for the socket and the REST calls: the same proxy, trust and addresses.
        let road = Road::new(&config.network).map_err(ConfigError::Network)?;
        // The REST calls follow the socket's TLS rule and its opt-in (D53).
        let api = Api::on_road(
            config.core.server.as_str(),
            config.api_timeout,
            road.clone(),
            config.network == Network::default(),
        )
        .map_err(|e| ConfigError::InvalidUrl(e.to_string()))?
        .allow_insecure(config.core.allow_insecure);
        // Offering permessage-deflate on a transport that cannot inflate would let a server
        // agree to it, and then every compressed frame would drop the link.
        if config.core.deflate.is_some() && !cfg!(feature = "deflate") {
            return Err(ConfigError::Invalid(
                "core.deflate needs tether-tokio's `deflate` feature",
            ));
        }
        let socket_settings = SocketSettings::new(
            road,
            config.core.max_inbound_message,
            config.read_buffer_size,
        );
        let clock = Clock::new();
        let mut conn = Connection::new(config.core.clone())?;
        conn.set_credentials(clock.now(), credentials);
        let (commands, command_rx) = mpsc::channel::<Command>(config.command_capacity.max(1));
        // The app's requests through `Client::api` report their headers to the connection,
        // so they and the catch-up share the server's budget, and its posts, whose echo the
        // socket owes. A weak sender: an `Api` kept by the app does not keep the connection
        // task alive.
        let weak = commands.downgrade();
        let observed = api
            .clone()
            .with_observer(Arc::new(move |seen: Observed<'_>| {
                let command = match seen {
                    Observed::Answer(h) => Command::AppRequest(h.clone()),
                    Observed::Posted {
                        channel_id,
                        message_id,
                        elapsed,
                    } => Command::AppPost {
                        channel_id: channel_id.to_owned(),
                        message_id: message_id.to_owned(),
                        sent: clock
                            .now()
                            .checked_sub(elapsed)
                            .unwrap_or_else(|| clock.now()),
                    },
                };
                // Advisory: a task that far behind misses one report; the app never waits.
                if let Some(tx) = weak.upgrade() {
                    let _ = tx.try_send(command);
                }
            }));
        let settings = driver::Settings {
            api,
            socket: socket_settings,
            event_capacity: config.event_capacity,
            write_queue_capacity: config.write_queue_capacity,
            api_timeout: config.api_timeout,
            wake_watchdog: config.wake_watchdog,
            on_refresh: config.on_refresh.clone(),
        };
        let (inbox, status) = driver::spawn(conn, clock, settings, command_rx);
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
    /// a second), so an app that is exiting does not cut the socket mid-frame. With an
    /// [`on_refresh`](ClientConfig::on_refresh) listener and a refresh on its way, it also waits
    /// for that answer (at most the REST timeout) and hands the listener a new pair: the server
    /// may have rotated the refresh token already, and an app that connects again at once
    /// must use the new one (D87). Every handle of
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

    /// Stops wanting a channel. Waits for room in the task's queue, like
    /// [`subscribe`](Self::subscribe), so that a change of the subscription set is never
    /// refused as [`ClientError::Busy`].
    pub async fn unsubscribe(&self, channel_id: &str) -> Result<(), ClientError> {
        self.command_wait(Command::Unsubscribe(channel_id.to_owned()))
            .await
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
        let s = self.snapshot().await?;
        Ok((s.stats, s.rtt))
    }

    /// The protocol the open socket speaks (docs/protocol.md, "Protocol v2"): v1 unless its
    /// 101 selected a v2 subprotocol; back to v1 with each new socket.
    pub async fn protocol(&self) -> Result<Protocol, ClientError> {
        Ok(self.snapshot().await?.protocol)
    }

    async fn snapshot(&self) -> Result<Snapshot, ClientError> {
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

/// Only this crate built without `deflate` (as `cargo test -p tether-tokio` builds it) has a
/// transport that cannot inflate.
#[cfg(all(test, not(feature = "deflate")))]
mod tests {
    use super::*;

    /// `Config::deflate`'s doc: a transport that cannot inflate refuses the offer, it does
    /// not leave it out.
    #[tokio::test]
    async fn a_deflate_offer_without_the_deflate_feature_is_refused() {
        let mut config = ClientConfig::new("http://127.0.0.1:9").expect("config");
        config.core.deflate = Some(tether_core::wire::DeflateOffer::default());
        let refused = Client::spawn(config, Credentials::new("t"));
        assert!(
            matches!(refused, Err(ConfigError::Invalid(why)) if why.contains("deflate")),
            "{refused:?}"
        );
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;

    #[test]
    fn debug_says_whether_a_refresh_listener_is_set_and_nothing_more() {
        let config = ClientConfig::new("http://127.0.0.1:9").expect("config");
        assert!(format!("{config:?}").contains("on_refresh: false"));
        let config = config.on_refresh(|_| {});
        let shown = format!("{config:?}");
        assert!(shown.contains("on_refresh: true"), "{shown}");
        let copy = config.clone();
        assert!(copy.on_refresh.is_some(), "a clone keeps the listener");
    }
}
