//! The plugin's Rust API: [`TetherExt::tether`] gives an app's own Rust code the connection
//! the webview's commands drive, for apps that keep their own auth state (as Kaiku does). The
//! plugin's commands are thin wrappers over it: one path.
//!
//! ```ignore
//! use tauri_plugin_tether::TetherExt;
//!
//! // After the app's own login:
//! app.tether().connect_with("https://chat.example.com", credentials).await?;
//! app.tether().subscribe(&channel_id).await?;
//! // After the app's own refresh:
//! app.tether().set_credentials("https://chat.example.com", new_credentials).await?;
//! ```
//!
//! `docs/embedding.md` shows a whole app built on it, and `examples/kaiku-shim` is one.

use serde::{Deserialize, Serialize};
use tauri::ipc::{Channel, InvokeResponseBody};
use tauri::{AppHandle, Emitter, Manager, Runtime, State};
use tether_core::{
    AuthMode, ClientEvent, Credentials, KaikuStatus, Secret, Status, StatusEvents, StatusOrder,
};
use tether_tokio::{Api, Client, ClientConfig};

use crate::error::{Error, ErrorKind};
use crate::state::{Session, StoredLogin, Tether};

/// How to connect.
///
/// `Debug` shows whether a token or a password was given, never the value.
#[derive(Clone, Default, Deserialize, ts_rs::TS)]
#[serde(default)]
pub struct ConnectOptions {
    /// HTTP base URL of the server (`https://chat.example.com`).
    pub server: String,
    /// `"subprotocol"` (default, current Kaiku) or `"query"` (older servers).
    #[ts(optional)]
    pub auth_mode: Option<String>,
    /// An access token; or give `username` and `password`; or call `login` first. On a
    /// session to the same server, a token other than the session's replaces its
    /// credentials and reconnects.
    #[ts(optional)]
    pub token: Option<String>,
    /// Log in with this user. On a session to the same server, another user (or any user
    /// after the session failed) logs in again and reconnects.
    #[ts(optional)]
    pub username: Option<String>,
    /// Password for `username`.
    #[ts(optional)]
    pub password: Option<String>,
    /// Channels to subscribe to at once.
    #[ts(optional, as = "Option<Vec<String>>")]
    pub channels: Vec<String>,
    /// Allow plain `http://`/`ws://` to a host that is not loopback (default `false`).
    /// Without it such a server is refused (`kind: "insecure"`) before the password or token
    /// is sent, because anyone on the path could read them. Loopback is always allowed.
    #[ts(optional)]
    pub allow_insecure: Option<bool>,
    /// Offer permessage-deflate (default `false`): the server may then compress what it
    /// sends, which a v2 dev server does. Costs about 22 KiB of memory while connected, for
    /// the socket's inflate context (docs/protocol.md, "Compression").
    #[ts(optional)]
    pub compression: Option<bool>,
    /// The order of the legacy status events: `"tether"` (default) or `"kaiku"`, the order
    /// Kaiku's desktop client emitted them in (`ws:disconnected` at a loss, `ws:reconnecting`
    /// as each retry opens, never `ws:connecting` on a retry; see `StatusOrder`). Given on a
    /// live session, it applies from its next event.
    #[ts(optional)]
    pub status_order: Option<StatusOrder>,
    /// The proxy for the REST calls and the socket alike: `"http://[user:pass@]host:port"`
    /// (HTTP CONNECT), `"socks5h://..."` (SOCKS5, the proxy resolves names), `"socks5://..."`,
    /// `"none"`, or `"system"` (the default: `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`/`NO_PROXY`,
    /// else the system's settings on macOS and Windows). A proxy that is down or refuses
    /// shows in `ws:status` (`proxy_unreachable`, `proxy_refused`, `proxy_auth`); it is never
    /// gone around. Replaces `network`'s proxy when both are given.
    #[ts(optional)]
    pub proxy: Option<String>,
    /// The whole road from the app's Rust code: proxy, extra root certificates, pins, fixed
    /// addresses. Never from the webview.
    #[serde(skip)]
    #[ts(skip)]
    pub network: Option<tether_tokio::Network>,
    /// Credentials the app's Rust code already has (its own login or refresh): they come
    /// first. Never from the webview.
    #[serde(skip)]
    #[ts(skip)]
    pub credentials: Option<Credentials>,
    /// Gets every pair of tokens tether's own refresh obtains (the access token and the
    /// refresh token the server rotated to), before tether uses them: an app that keeps the
    /// refresh token (a keyring) stores each one here, or its stored token is dead after the
    /// next rotation. Rust only; set it with [`ConnectOptions::on_refresh`].
    #[serde(skip)]
    #[ts(skip)]
    pub on_refresh: Option<tether_tokio::RefreshListener>,
}

impl ConnectOptions {
    /// Options for `server` (the HTTP base URL), with no credentials yet.
    pub fn new(server: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            ..Self::default()
        }
    }

    /// Connect with these credentials.
    #[must_use]
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Subscribe to these channels at once.
    #[must_use]
    pub fn channels(mut self, channels: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.channels = channels.into_iter().map(Into::into).collect();
        self
    }

    /// Allow plain text to a host that is not loopback (see the field).
    #[must_use]
    pub fn allow_insecure(mut self, allow: bool) -> Self {
        self.allow_insecure = Some(allow);
        self
    }

    /// Take this road: proxy, extra roots, pins (see the field).
    #[must_use]
    pub fn network(mut self, network: tether_tokio::Network) -> Self {
        self.network = Some(network);
        self
    }

    /// The road these options name: `network` (or the default), its proxy replaced by
    /// `proxy` when given.
    fn road(&self) -> Result<tether_tokio::Network, Error> {
        let mut network = self.network.clone().unwrap_or_default();
        if let Some(p) = &self.proxy {
            network.proxy = proxy(p)?;
        }
        Ok(network)
    }

    /// Calls `listener` with every pair of tokens tether's own refresh obtains (see the field).
    #[must_use]
    pub fn on_refresh(mut self, listener: impl Fn(&Credentials) + Send + Sync + 'static) -> Self {
        self.on_refresh = Some(std::sync::Arc::new(listener));
        self
    }

    /// Emit the legacy status events in this order (see the field).
    #[must_use]
    pub fn status_order(mut self, order: StatusOrder) -> Self {
        self.status_order = Some(order);
        self
    }

    /// The credentials these options bring, first found first: `credentials`, `token`,
    /// `username` with `password`. A lifetime they lack comes from the JWT, as in
    /// [`TetherHandle::set_credentials`].
    fn given(&self) -> Given<'_> {
        match (
            &self.credentials,
            &self.token,
            &self.username,
            &self.password,
        ) {
            (Some(c), ..) => Given::Credentials(tether_tokio::with_jwt_expiry(c.clone())),
            (None, Some(t), ..) => {
                Given::Credentials(tether_tokio::with_jwt_expiry(Credentials::new(t.as_str())))
            }
            (None, None, Some(u), Some(p)) => Given::Password(u, p),
            _ => Given::Nothing,
        }
    }
}

/// What credentials [`ConnectOptions`] bring.
enum Given<'a> {
    Credentials(Credentials),
    Password(&'a str, &'a str),
    Nothing,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("ConnectOptions")
            .field("server", &self.server)
            .field("auth_mode", &self.auth_mode)
            .field("token", &redacted(&self.token))
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("channels", &self.channels)
            .field("allow_insecure", &self.allow_insecure)
            .field("compression", &self.compression)
            .field("status_order", &self.status_order)
            // A proxy URL may hold a password: only what `Proxy`'s own Debug shows.
            .field("proxy", &self.proxy.as_deref().map(proxy))
            .field("network", &self.network)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .field("on_refresh", &self.on_refresh.is_some())
            .finish()
    }
}

/// What `login` returns.
#[derive(Clone, Debug, Serialize, ts_rs::TS)]
pub struct LoginResult {
    /// `GET /auth/me` of the logged-in user.
    #[ts(type = "Record<string, unknown>")]
    pub user: serde_json::Value,
}

/// One page of history, newest first.
#[derive(Clone, Debug, Serialize, ts_rs::TS)]
pub struct HistoryResult {
    /// Message objects as the server sent them.
    #[ts(type = "Array<Record<string, unknown>>")]
    pub items: Vec<serde_json::Value>,
    /// Whether older messages exist.
    pub has_more: bool,
    /// Pass as `before` for the next older page.
    pub next_cursor: Option<String>,
}

/// The plugin's Rust API: [`TetherExt::tether`] on any `AppHandle`, `App`, window or webview.
pub trait TetherExt<R: Runtime> {
    /// The plugin's connection, to drive from the app's Rust code.
    fn tether(&self) -> TetherHandle<R>;
}

impl<R: Runtime, M: Manager<R>> TetherExt<R> for M {
    fn tether(&self) -> TetherHandle<R> {
        TetherHandle {
            app: self.app_handle().clone(),
        }
    }
}

/// The app's handle on the plugin's one connection (cheap to clone; every clone drives the
/// same connection). Events reach the webview as the commands' do: `ws:<type>` and the rest.
pub struct TetherHandle<R: Runtime> {
    app: AppHandle<R>,
}

impl<R: Runtime> Clone for TetherHandle<R> {
    fn clone(&self) -> Self {
        Self {
            app: self.app.clone(),
        }
    }
}

impl<R: Runtime> std::fmt::Debug for TetherHandle<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TetherHandle { .. }")
    }
}

impl<R: Runtime> TetherHandle<R> {
    fn state(&self) -> Result<State<'_, Tether>, Error> {
        self.app.try_state::<Tether>().ok_or_else(|| {
            Error::new(
                ErrorKind::Closed,
                "the tether plugin is not registered: add .plugin(tauri_plugin_tether::init())",
            )
        })
    }

    /// Connects with credentials the app already has (its own login or refresh), as an app
    /// that keeps its own auth state does. `server` is the HTTP base URL. A session to the
    /// same server is kept, with these credentials if they are new to it (see
    /// [`TetherHandle::connect`]). Credentials without `expires_in` get it from the JWT's
    /// `exp` claim, when it has one.
    pub async fn connect_with(
        &self,
        server: impl Into<String>,
        credentials: Credentials,
    ) -> Result<Status, Error> {
        self.connect(ConnectOptions::new(server).credentials(credentials))
            .await
    }

    /// Connects. A session to the same server is kept (a reloaded webview calls `connect` again
    /// without reconnecting): the extra channels are subscribed and the status returned. But
    /// when that session has failed, or the options bring credentials it does not have
    /// (others, another token, another user, or a `login` since), those credentials replace its
    /// own and it reconnects. A session to another server is replaced.
    pub async fn connect(&self, options: ConnectOptions) -> Result<Status, Error> {
        let state = self.state()?;
        let allow_insecure = options.allow_insecure.unwrap_or(false);
        // Every check before the first byte leaves: the socket's TLS rule, then the REST one
        // (a login would send the password).
        let network = options.road()?;
        let config = client_config(&options, &network)?;
        let api = api(&options.server, allow_insecure, &network)?;
        let mut logged_in: Option<(Credentials, String)> = None;
        loop {
            let mut session = state.session.lock().await;
            // A password login goes out with no lock held: the app's other calls (`status`,
            // `send`, a reloaded page's `connect`) go on while the server answers (a real
            // Kaiku server takes about 2 s). The session is looked at again afterwards.
            if let Given::Password(user, password) = options.given()
                && logged_in.is_none()
                && session
                    .as_ref()
                    .filter(|s| s.server == options.server)
                    .is_none_or(|s| s.wants_login(user))
            {
                drop(session);
                let creds = api.login(user, &Secret::new(password)).await?;
                logged_in = Some((tether_tokio::with_jwt_expiry(creds), user.to_owned()));
                continue;
            }
            // Another road (the user changed the proxy) is a new session, as another server is.
            if let Some(s) = session.as_mut()
                && s.server == options.server
                && s.network == network
            {
                return reconnect_if_needed(s, &state, options, logged_in).await;
            }
            let stored = state.login.lock().await;
            let login_serial = stored.as_ref().map_or(0, |l| l.serial);
            let (credentials, username) = match (logged_in, options.given()) {
                (Some((c, user)), _) => (c, Some(user)),
                (None, Given::Credentials(c)) => (c, None),
                (None, _) => match stored.as_ref() {
                    Some(l) if l.server == options.server => (l.credentials.clone(), None),
                    _ => {
                        return Err(Error::new(
                            ErrorKind::Auth,
                            "no credentials: pass a token, a username and password, or call login",
                        ));
                    }
                },
            };
            drop(stored);
            let token = credentials.access_token.clone();
            let insecure = is_plain_text_to_remote(&config);
            let (client, events) = Client::spawn(config, credentials)?;
            for ch in &options.channels {
                client.subscribe(ch).await?;
            }
            client.connect()?;
            if insecure {
                // The app opted in (`allow_insecure`): the page hears that this connection is
                // readable on the path, before any status event.
                tracing::warn!(server = %options.server, "plain text to a remote host, as allowed");
                let payload = serde_json::json!({ "server": options.server });
                if let Err(e) = self.app.emit("ws:insecure", payload) {
                    tracing::debug!(error = %e, "emit failed");
                }
            }
            let status_events = std::sync::Arc::new(std::sync::Mutex::new(StatusEvents::new(
                options.status_order.unwrap_or_default(),
            )));
            let forward = crate::state::forward(
                self.app.clone(),
                events,
                state.channel.clone(),
                status_events.clone(),
            );
            if let Some(old) = session.replace(Session {
                server: options.server,
                client,
                token,
                username,
                login_serial,
                allow_insecure,
                network,
                forward,
                status_events,
            }) {
                old.replaced();
            }
            return Ok(session
                .as_ref()
                .map_or(Status::Disconnected, |s| s.client.status()));
        }
    }

    /// New credentials for the live session, issued by `server` (the HTTP base URL), after
    /// the app's own refresh or login. The open socket stays (it was authenticated when it
    /// opened); the next upgrade and every REST read use these. A session that failed (its
    /// token was refused for good) connects again with them. To switch to another user,
    /// [`disconnect`](Self::disconnect) and connect again: that user's channels are not this
    /// one's.
    ///
    /// Credentials from another server than the session's are refused (`InvalidArgument`):
    /// its token must never reach this one. Credentials without `expires_in` get it from the
    /// JWT's `exp` claim, when it has one.
    pub async fn set_credentials(
        &self,
        server: &str,
        credentials: Credentials,
    ) -> Result<(), Error> {
        let state = self.state()?;
        let mut session = state.session.lock().await;
        let s = session.as_mut().ok_or_else(not_connected)?;
        if !same_server(&s.server, server) {
            return Err(invalid(format!(
                "these credentials are for {server}, but the session is connected to {}: \
                 disconnect, then connect",
                s.server
            )));
        }
        let credentials = tether_tokio::with_jwt_expiry(credentials);
        s.token = credentials.access_token.clone();
        s.client.set_credentials(credentials)?;
        if matches!(s.client.status(), Status::Failed { .. }) {
            s.client.connect()?;
        }
        Ok(())
    }

    /// Closes the connection and forgets it (its channels too). Returns once the close frame
    /// has left (about a second at most). Without a connection it does nothing.
    pub async fn disconnect(&self) -> Result<(), Error> {
        let session = self.state()?.session.lock().await.take();
        if let Some(s) = session {
            s.close().await;
        }
        Ok(())
    }

    /// Wants a channel's events, now and after every reconnect.
    pub async fn subscribe(&self, channel_id: &str) -> Result<(), Error> {
        self.client().await?.subscribe(channel_id).await?;
        Ok(())
    }

    /// Wants a channel's events and catches up everything after `newest_message_id`, the
    /// newest message the app shows.
    pub async fn subscribe_from(
        &self,
        channel_id: &str,
        newest_message_id: &str,
    ) -> Result<(), Error> {
        self.client()
            .await?
            .subscribe_from(channel_id, newest_message_id)
            .await?;
        Ok(())
    }

    /// Stops wanting a channel.
    pub async fn unsubscribe(&self, channel_id: &str) -> Result<(), Error> {
        self.client().await?.unsubscribe(channel_id).await?;
        Ok(())
    }

    /// The app is looking at this channel: after a reconnect its catch-up goes first.
    pub async fn focus(&self, channel_id: &str) -> Result<(), Error> {
        self.client().await?.focus(channel_id)?;
        Ok(())
    }

    /// The network may have changed: probe the link now and skip a backoff wait. Without a
    /// connection it does nothing.
    pub async fn network_changed(&self) -> Result<(), Error> {
        if let Some(s) = self.state()?.session.lock().await.as_ref() {
            s.client.network_changed()?;
        }
        Ok(())
    }

    /// Sends a client event (`typing`, `set_activity`, ...): queued while offline, except the
    /// volatile ones (typing, voice signalling), which are refused with `Offline`.
    pub async fn send(&self, event: ClientEvent) -> Result<(), Error> {
        self.client().await?.send(event).await?;
        Ok(())
    }

    /// The current status (`Disconnected` before `connect`).
    pub async fn status(&self) -> Status {
        match self.state() {
            Ok(state) => state
                .session
                .lock()
                .await
                .as_ref()
                .map_or(Status::Disconnected, |s| s.client.status()),
            Err(_) => Status::Disconnected,
        }
    }

    /// The live session's counters (frames, reconnects, events refused offline, catch-up
    /// reads, ...): what tether dropped or refused is counted here, never silently lost.
    pub async fn stats(&self) -> Result<tether_core::Stats, Error> {
        Ok(self.client().await?.stats().await?.0)
    }

    /// The status in Kaiku's terms, as the last legacy status event the page was sent
    /// announced it (`Disconnected` without a session). In [`StatusOrder::Kaiku`] it is
    /// updated before each legacy event is emitted, so a page that asks after an event never
    /// hears an older status than the event's. Kaiku's `ws_status` answers this.
    pub async fn kaiku_status(&self) -> KaikuStatus {
        let Ok(state) = self.state() else {
            return KaikuStatus::Disconnected;
        };
        state
            .session
            .lock()
            .await
            .as_ref()
            .map_or(KaikuStatus::Disconnected, Session::kaiku_status)
    }

    /// Every status change of the live session, from now on (the value it holds is the
    /// current status). Ends when the session does.
    pub async fn watch_status(&self) -> Result<tokio::sync::watch::Receiver<Status>, Error> {
        Ok(self.client().await?.watch_status())
    }

    /// Logs in over REST and keeps the credentials for a `connect` that brings none; returns
    /// the user (`GET /auth/me`). Plain `http://` to a host that is not loopback is refused
    /// (`Insecure`) before the password leaves, unless `allow_insecure`.
    pub async fn login(
        &self,
        server: &str,
        username: &str,
        password: Secret,
        allow_insecure: bool,
    ) -> Result<LoginResult, Error> {
        self.login_on(
            server,
            username,
            password,
            allow_insecure,
            tether_tokio::Network::default(),
        )
        .await
    }

    /// [`login`](Self::login) on another road: a proxy, extra roots, pins. A `connect` that
    /// takes these credentials should name the same road.
    pub async fn login_on(
        &self,
        server: &str,
        username: &str,
        password: Secret,
        allow_insecure: bool,
        network: tether_tokio::Network,
    ) -> Result<LoginResult, Error> {
        let state = self.state()?;
        let api = api(server, allow_insecure, &network)?;
        let creds = tether_tokio::with_jwt_expiry(api.login(username, &password).await?);
        let user = api.me(&creds.access_token).await?;
        let serial = state
            .logins
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        *state.login.lock().await = Some(StoredLogin {
            server: server.to_owned(),
            credentials: creds,
            allow_insecure,
            network,
            serial,
        });
        Ok(LoginResult { user })
    }

    /// Logs out over REST, forgets the credentials and closes the connection.
    pub async fn logout(&self) -> Result<(), Error> {
        let state = self.state()?;
        let session = state.session.lock().await.take();
        let stored = state.login.lock().await.take();
        let live_token = match &session {
            Some(s) => s.client.access_token().await.ok().flatten(),
            None => None,
        };
        let (server, token, allow_insecure, network) = match (&session, &stored, live_token) {
            (Some(s), _, Some(t)) => (s.server.clone(), t, s.allow_insecure, s.network.clone()),
            (Some(s), _, None) => (
                s.server.clone(),
                s.token.clone(),
                s.allow_insecure,
                s.network.clone(),
            ),
            (None, Some(l), _) => (
                l.server.clone(),
                l.credentials.access_token.clone(),
                l.allow_insecure,
                l.network.clone(),
            ),
            (None, None, _) => return Ok(()),
        };
        if let Some(s) = session {
            s.close().await;
        }
        api(&server, allow_insecure, &network)?
            .logout(&token)
            .await?;
        Ok(())
    }

    /// A page of a channel's history, newest first (`limit` 1-100, default 50). The read
    /// shares the connection's budget with its catch-up: a 429 here pauses both.
    pub async fn history(
        &self,
        channel_id: &str,
        before: Option<&str>,
        limit: Option<u32>,
    ) -> Result<HistoryResult, Error> {
        let client = self.client().await?;
        let token = client.access_token().await?.ok_or_else(not_connected)?;
        let limit = limit.unwrap_or(50).clamp(1, 100);
        let page = client
            .api()
            .messages(&token, channel_id, before, limit)
            .await?;
        Ok(HistoryResult {
            has_more: page.has_more_given(limit),
            next_cursor: page.cursor().map(|c| c.to_string()),
            items: page
                .items
                .iter()
                .filter_map(|i| serde_json::from_str(i.json().as_str()).ok())
                .collect(),
        })
    }

    /// The high-rate path: from now on events go to `channel` in batches (a JSON array of
    /// `{"event","payload"}` objects per message) instead of one `emit` each.
    pub fn attach_channel(&self, channel: Channel<InvokeResponseBody>) -> Result<(), Error> {
        *self
            .state()?
            .channel
            .lock()
            .map_err(|_| Error::new(ErrorKind::Closed, "plugin state poisoned"))? = Some(channel);
        Ok(())
    }

    /// The live session's client (a clone: the session's lock is not held while it works).
    async fn client(&self) -> Result<Client, Error> {
        let state = self.state()?;
        let session = state.session.lock().await;
        Ok(session.as_ref().ok_or_else(not_connected)?.client.clone())
    }
}

/// `connect` to the server of the live session `s`: subscribes the extra channels, and
/// applies new credentials (or retries a failed session) with a reconnect.
async fn reconnect_if_needed(
    s: &mut Session,
    state: &Tether,
    options: ConnectOptions,
    logged_in: Option<(Credentials, String)>,
) -> Result<Status, Error> {
    if let Some(order) = options.status_order {
        s.set_status_order(order);
    }
    let failed = matches!(s.client.status(), Status::Failed { .. });
    let mut fresh = None;
    match options.given() {
        Given::Credentials(c) => {
            let t = c.access_token.expose();
            let current = s.client.access_token().await.ok().flatten();
            // The session's token, or the one it refreshed to: nothing new (a failed session
            // is retried below with what it has, its refresh token included).
            if t != s.token.expose() && current.as_ref().map(Secret::expose) != Some(t) {
                fresh = Some((c, None));
            }
        }
        Given::Password(..) => {
            // `connect` logged in (without the lock) when the session wanted it; otherwise this
            // is the session's own user, not failed: a reload, and the password was not sent.
            if let Some((creds, user)) = logged_in {
                fresh = Some((creds, Some(user)));
            }
        }
        Given::Nothing => {
            if let Some(l) = state.login.lock().await.as_ref()
                && l.server == s.server
                && l.serial > s.login_serial
            {
                fresh = Some((l.credentials.clone(), None));
                s.login_serial = l.serial;
            }
        }
    }
    if let Some((credentials, username)) = fresh {
        tracing::debug!("connect: new credentials for the session; reconnecting");
        s.token = credentials.access_token.clone();
        s.username = username;
        s.client.set_credentials(credentials)?;
        if matches!(
            s.client.status(),
            Status::Connected { .. } | Status::Connecting { .. }
        ) {
            // A socket opened with the old credentials must not stay: close it, then open
            // one with the new ones (subscriptions are kept).
            s.client.disconnect()?;
        }
        s.client.connect()?;
    } else if failed {
        // The app acts after a failure: try again with what the session has.
        s.client.connect()?;
    }
    for ch in &options.channels {
        s.client.subscribe(ch).await?;
    }
    Ok(s.client.status())
}

/// The connection's settings for `options`, checked (the socket's TLS rule among them).
fn client_config(
    options: &ConnectOptions,
    network: &tether_tokio::Network,
) -> Result<ClientConfig, Error> {
    let mut config = ClientConfig::new(&options.server)?;
    config.network = network.clone();
    config.core.auth_mode = match options.auth_mode.as_deref() {
        None | Some("subprotocol") => AuthMode::Subprotocol,
        Some("query") => AuthMode::Query,
        Some(other) => {
            return Err(invalid(format!(
                "auth_mode `{other}`: expected subprotocol or query"
            )));
        }
    };
    config.core.allow_insecure = options.allow_insecure.unwrap_or(false);
    if options.compression.unwrap_or(false) {
        config.core.deflate = Some(tether_core::wire::DeflateOffer::default());
    }
    config.core.validate()?;
    config.on_refresh = options.on_refresh.clone();
    Ok(config)
}

/// Whether `config` (valid) speaks plain text to a host that is not loopback: it is valid only
/// because the app opted in.
fn is_plain_text_to_remote(config: &ClientConfig) -> bool {
    let mut strict = config.core.clone();
    strict.allow_insecure = false;
    config.core.allow_insecure && strict.validate().is_err()
}

/// The REST client for `server` on `network`, with the app's TLS opt-in.
fn api(server: &str, allow_insecure: bool, network: &tether_tokio::Network) -> Result<Api, Error> {
    Ok(
        Api::with_options(server, tether_tokio::api::TIMEOUT, network)
            .map_err(|e| invalid(e.to_string()))?
            .allow_insecure(allow_insecure),
    )
}

/// A proxy setting from the webview: `none`, `system` or a URL.
pub(crate) fn proxy(s: &str) -> Result<tether_tokio::Proxy, Error> {
    s.parse()
        .map_err(|e: tether_tokio::ProxyError| invalid(format!("proxy: {e}")))
}

/// Whether two base URLs name one server: the same scheme, host and port (a trailing slash or
/// a path does not matter).
fn same_server(a: &str, b: &str) -> bool {
    match (tauri::Url::parse(a), tauri::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => a == b,
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidArgument, message)
}

fn not_connected() -> Error {
    Error::new(ErrorKind::NotConnected, "not connected: call connect first")
}
