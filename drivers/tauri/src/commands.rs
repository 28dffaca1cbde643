//! The plugin's commands (`plugin:tether|<name>` over IPC).

use serde::{Deserialize, Serialize};
use tauri::ipc::{Channel, InvokeResponseBody};
use tauri::{AppHandle, Runtime, State};
use tether_core::{AuthMode, ClientEvent, Credentials, Secret, Status};
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

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidArgument, message)
}

/// Connects. A session to the same server is kept (a reloaded webview calls `connect` again
/// without reconnecting): the extra channels are subscribed and the status returned. But when
/// that session has failed, or the options bring credentials it does not have (another token,
/// another user, or a `login` since), those credentials replace its own and it reconnects.
#[tauri::command]
pub(crate) async fn connect<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, Tether>,
    options: ConnectOptions,
) -> Result<Status, Error> {
    let allow_insecure = options.allow_insecure.unwrap_or(false);
    let mut session = state.session.lock().await;
    if let Some(s) = session.as_mut()
        && s.server == options.server
    {
        return reconnect_if_needed(s, &state, &options).await;
    }
    // Every check before the first byte leaves: the socket's TLS rule, then the REST one
    // (a login would send the password).
    let mut config = ClientConfig::new(&options.server)?;
    config.core.auth_mode = match options.auth_mode.as_deref() {
        None | Some("subprotocol") => AuthMode::Subprotocol,
        Some("query") => AuthMode::Query,
        Some(other) => {
            return Err(invalid(format!(
                "auth_mode `{other}`: expected subprotocol or query"
            )));
        }
    };
    config.core.allow_insecure = allow_insecure;
    config.core.validate()?;
    let api = api(&options.server, allow_insecure)?;
    let stored = state.login.lock().await;
    let login_serial = stored.as_ref().map_or(0, |l| l.serial);
    let (credentials, username) = match (&options.token, &options.username, &options.password) {
        (Some(t), _, _) => (
            tether_tokio::with_jwt_expiry(Credentials::new(t.as_str())),
            None,
        ),
        (None, Some(u), Some(p)) => (
            tether_tokio::with_jwt_expiry(api.login(u, &Secret::new(p.as_str())).await?),
            Some(u.clone()),
        ),
        _ => match stored.as_ref() {
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
    let (client, events) = Client::spawn(config, credentials)?;
    for ch in &options.channels {
        client.subscribe(ch).await?;
    }
    client.connect()?;
    let forward = crate::state::forward(app, events, state.channel.clone());
    if let Some(old) = session.replace(Session {
        server: options.server,
        client,
        token,
        username,
        login_serial,
        allow_insecure,
        forward,
    }) {
        old.replaced();
    }
    Ok(session
        .as_ref()
        .map_or(Status::Disconnected, |s| s.client.status()))
}

/// `connect` to the server of the live session `s`: subscribes the extra channels, and
/// applies new credentials (or retries a failed session) with a reconnect.
async fn reconnect_if_needed(
    s: &mut Session,
    state: &Tether,
    options: &ConnectOptions,
) -> Result<Status, Error> {
    let failed = matches!(s.client.status(), Status::Failed { .. });
    let mut fresh = None;
    if let Some(t) = &options.token {
        let current = s.client.access_token().await.ok().flatten();
        // The session's token, or the one it refreshed to: nothing new (a failed session is
        // retried below with what it has, its refresh token included).
        if t.as_str() != s.token.expose()
            && current.as_ref().map(Secret::expose) != Some(t.as_str())
        {
            fresh = Some((
                tether_tokio::with_jwt_expiry(Credentials::new(t.as_str())),
                None,
            ));
        }
    } else if let (Some(u), Some(p)) = (&options.username, &options.password) {
        // The session's own user, not failed: a reload; the password is not sent again.
        if failed || s.username.as_deref() != Some(u.as_str()) {
            let api = api(&options.server, options.allow_insecure.unwrap_or(false))?;
            let creds = api.login(u, &Secret::new(p.as_str())).await?;
            fresh = Some((tether_tokio::with_jwt_expiry(creds), Some(u.clone())));
        }
    } else if let Some(l) = state.login.lock().await.as_ref()
        && l.server == s.server
        && l.serial > s.login_serial
    {
        fresh = Some((l.credentials.clone(), None));
        s.login_serial = l.serial;
    }
    if let Some((credentials, username)) = fresh {
        tracing::debug!("connect: new credentials for the session; reconnecting");
        s.token = credentials.access_token.clone();
        s.username = username;
        s.client.set_credentials(credentials)?;
        if matches!(
            s.client.status(),
            Status::Connected | Status::Connecting { .. }
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

/// The REST client for `server`, with the app's TLS opt-in.
fn api(server: &str, allow_insecure: bool) -> Result<Api, Error> {
    Ok(Api::new(server)
        .map_err(|e| invalid(e.to_string()))?
        .allow_insecure(allow_insecure))
}

/// Closes the connection and forgets it.
#[tauri::command]
pub(crate) async fn disconnect(state: State<'_, Tether>) -> Result<(), Error> {
    let session = state.session.lock().await.take();
    if let Some(s) = session {
        s.close().await;
    }
    Ok(())
}

/// Wants a channel's events (now and after every reconnect). With `newest_message_id`, catches
/// up everything after the newest message the app shows.
#[tauri::command]
pub(crate) async fn subscribe(
    state: State<'_, Tether>,
    channel_id: String,
    newest_message_id: Option<String>,
) -> Result<(), Error> {
    let session = state.session.lock().await;
    let s = session.as_ref().ok_or_else(not_connected)?;
    match newest_message_id {
        Some(n) => s.client.subscribe_from(&channel_id, &n).await?,
        None => s.client.subscribe(&channel_id).await?,
    }
    Ok(())
}

/// Stops wanting a channel.
#[tauri::command]
pub(crate) async fn unsubscribe(state: State<'_, Tether>, channel_id: String) -> Result<(), Error> {
    let session = state.session.lock().await;
    session
        .as_ref()
        .ok_or_else(not_connected)?
        .client
        .unsubscribe(&channel_id)
        .await?;
    Ok(())
}

/// The app is looking at this channel: after a reconnect its catch-up goes first.
#[tauri::command]
pub(crate) async fn focus(state: State<'_, Tether>, channel_id: String) -> Result<(), Error> {
    let session = state.session.lock().await;
    session
        .as_ref()
        .ok_or_else(not_connected)?
        .client
        .focus(&channel_id)?;
    Ok(())
}

/// The network may have changed (the webview went `online`, the page became visible): probe
/// the link now and skip a backoff wait. Without a connection it does nothing. The plugin's
/// page script calls it by itself (`watch_network.js`).
#[tauri::command]
pub(crate) async fn network_changed(state: State<'_, Tether>) -> Result<(), Error> {
    if let Some(s) = state.session.lock().await.as_ref() {
        s.client.network_changed()?;
    }
    Ok(())
}

/// Sends a client event (`{"type":"typing","channel_id":...}` and the rest of DESIGN 4).
#[tauri::command]
pub(crate) async fn send(state: State<'_, Tether>, event: ClientEvent) -> Result<(), Error> {
    let session = state.session.lock().await;
    session
        .as_ref()
        .ok_or_else(not_connected)?
        .client
        .send(event)
        .await?;
    Ok(())
}

/// The current status (`{"status":"disconnected"}` before `connect`).
#[tauri::command]
pub(crate) async fn status(state: State<'_, Tether>) -> Result<Status, Error> {
    Ok(state
        .session
        .lock()
        .await
        .as_ref()
        .map_or(Status::Disconnected, |s| s.client.status()))
}

/// Logs in over REST and keeps the credentials for `connect`; returns the user. Plain
/// `http://` to a host that is not loopback is refused (`kind: "insecure"`) before the password
/// leaves, unless `allow_insecure` is `true`.
#[tauri::command]
pub(crate) async fn login(
    state: State<'_, Tether>,
    server: String,
    username: String,
    password: String,
    allow_insecure: Option<bool>,
) -> Result<LoginResult, Error> {
    let allow_insecure = allow_insecure.unwrap_or(false);
    let api = api(&server, allow_insecure)?;
    let creds = tether_tokio::with_jwt_expiry(api.login(&username, &Secret::new(password)).await?);
    let user = api.me(&creds.access_token).await?;
    let serial = state
        .logins
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    *state.login.lock().await = Some(StoredLogin {
        server,
        credentials: creds,
        allow_insecure,
        serial,
    });
    Ok(LoginResult { user })
}

/// Logs out over REST, forgets the credentials and closes the connection.
#[tauri::command]
pub(crate) async fn logout(state: State<'_, Tether>) -> Result<(), Error> {
    let session = state.session.lock().await.take();
    let stored = state.login.lock().await.take();
    let live_token = match &session {
        Some(s) => s.client.access_token().await.ok().flatten(),
        None => None,
    };
    let (server, token, allow_insecure) = match (&session, &stored, live_token) {
        (Some(s), _, Some(t)) => (s.server.clone(), t, s.allow_insecure),
        (Some(s), _, None) => (s.server.clone(), s.token.clone(), s.allow_insecure),
        (None, Some(l), _) => (
            l.server.clone(),
            l.credentials.access_token.clone(),
            l.allow_insecure,
        ),
        (None, None, _) => return Ok(()),
    };
    if let Some(s) = session {
        s.close().await;
    }
    api(&server, allow_insecure)?.logout(&token).await?;
    Ok(())
}

/// A page of a channel's history, newest first.
#[tauri::command]
pub(crate) async fn history(
    state: State<'_, Tether>,
    channel_id: String,
    before: Option<String>,
    limit: Option<u32>,
) -> Result<HistoryResult, Error> {
    // The session's own REST client: its reads report the server's budget to the
    // connection, so this read and the catch-up's share it (a 429 here pauses both).
    let (api, token) = {
        let session = state.session.lock().await;
        let s = session.as_ref().ok_or_else(not_connected)?;
        let token = s.client.access_token().await?.ok_or_else(not_connected)?;
        (s.client.api().clone(), token)
    };
    let page = api
        .messages(
            &token,
            &channel_id,
            before.as_deref(),
            limit.unwrap_or(50).clamp(1, 100),
        )
        .await?;
    Ok(HistoryResult {
        has_more: page.has_more_given(limit.unwrap_or(50)),
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
#[tauri::command]
pub(crate) async fn attach_channel(
    state: State<'_, Tether>,
    channel: Channel<InvokeResponseBody>,
) -> Result<(), Error> {
    *state
        .channel
        .lock()
        .map_err(|_| Error::new(ErrorKind::Closed, "plugin state poisoned"))? = Some(channel);
    Ok(())
}

fn not_connected() -> Error {
    Error::new(ErrorKind::NotConnected, "not connected: call connect first")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_options_debug_never_shows_the_token_or_the_password() {
        let options = ConnectOptions {
            server: "https://chat.example.com".into(),
            token: Some("eyJhbGciOi.the-token.sig".into()),
            username: Some("alice".into()),
            password: Some("hunter2-the-password".into()),
            channels: vec!["c1".into()],
            ..ConnectOptions::default()
        };
        for shown in [format!("{options:?}"), format!("{options:#?}")] {
            assert!(!shown.contains("the-token"), "{shown}");
            assert!(!shown.contains("the-password"), "{shown}");
            // What helps debugging stays: the server, the user, that secrets were given.
            assert!(shown.contains("chat.example.com"), "{shown}");
            assert!(shown.contains("alice"), "{shown}");
            assert_eq!(shown.matches("<redacted>").count(), 2, "{shown}");
        }
        let none = format!("{:?}", ConnectOptions::default());
        assert!(!none.contains("<redacted>"), "{none}");
    }
}
