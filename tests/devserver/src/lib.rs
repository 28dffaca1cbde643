//! tether-devserver: a Kaiku-compatible chat server with fault injection.
//!
//! It speaks the REST API and the `/ws` protocol of the Kaiku server as observed running it
//! (see `shared/reference/kaiku/` and DESIGN section 4): JWT-shaped tokens that live 900 s,
//! subprotocol auth (`access_token.<jwt>`, echoing `access_token`) and optionally `?token=`,
//! plain-text 401 refusals, `ready` after the upgrade, `subscribed`/`error` answers, `pong`,
//! `message_new` broadcasts with alphabetical keys, `message_edit` timestamps with `+00:00`,
//! paginated history (`{items, has_more, next_cursor}` or a bare array), and no answer to a
//! client's Close frame.
//!
//! Everything is in memory. [`Faults`] breaks it on purpose for tests: abrupt drops, stalled
//! links, refused upgrades (with `Retry-After`), injected raw frames, expired tokens, REST
//! rate limits; [`DevServer::restart`] closes the listener and every socket and comes back
//! on the same port with the data kept and the subscriptions gone, as Kaiku does.

#![warn(missing_docs)]

mod faults;
mod rest;
mod store;
mod tls;
mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, patch, post};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use faults::FaultState;
pub use faults::Faults;
pub use store::{Message, Store, rfc3339};

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
        }
    }
}

/// A live socket, as the broadcaster sees it.
#[derive(Debug)]
pub(crate) struct Conn {
    pub subs: std::collections::BTreeSet<String>,
    pub tx: mpsc::UnboundedSender<ws::Out>,
}

/// State shared by every handler.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: ServerConfig,
    pub store: Mutex<Store>,
    pub conns: Mutex<HashMap<u64, Conn>>,
    pub faults: Mutex<FaultState>,
    pub next_conn: AtomicU64,
    pub upgrades: AtomicU64,
    pub client_closes: AtomicU64,
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

    /// Sends a frame to every socket subscribed to `channel_id`.
    pub fn broadcast(&self, channel_id: &str, frame: &str) {
        for c in self.conns().values() {
            if c.subs.contains(channel_id) {
                let _ = c.tx.send(ws::Out::Text(frame.to_owned()));
            }
        }
    }

    /// Sends a frame to every socket.
    pub fn broadcast_all(&self, frame: &str) -> usize {
        let conns = self.conns();
        for c in conns.values() {
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
        if config.demo {
            seed_demo(&mut store);
        }
        let shared = Arc::new(Shared {
            config,
            store: Mutex::new(store),
            conns: Mutex::new(HashMap::new()),
            faults: Mutex::new(FaultState::default()),
            next_conn: AtomicU64::new(1),
            upgrades: AtomicU64::new(0),
            client_closes: AtomicU64::new(0),
        });
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

    /// Simulates a server restart: the listener closes (connections are refused), every
    /// socket ends without a close frame, and after `downtime` the server listens again on
    /// the same port. Data and tokens survive; subscriptions do not.
    pub async fn restart(&mut self, downtime: Duration) -> std::io::Result<()> {
        self.stop_serving().await;
        self.shared.drop_all();
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
            rest::rate_limit,
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
