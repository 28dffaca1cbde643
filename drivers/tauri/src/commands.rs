//! The plugin's commands (`plugin:tether|<name>` over IPC).

use serde::{Deserialize, Serialize};
use tauri::ipc::{Channel, InvokeResponseBody};
use tauri::{AppHandle, Runtime, State};
use tether_core::{AuthMode, ClientEvent, Credentials, Secret, Status};
use tether_tokio::{Api, Client, ClientConfig};

use crate::error::{Error, ErrorKind};
use crate::state::{Session, Tether};

/// How to connect.
#[derive(Clone, Debug, Default, Deserialize, ts_rs::TS)]
#[serde(default)]
pub struct ConnectOptions {
    /// HTTP base URL of the server (`https://chat.example.com`).
    pub server: String,
    /// `"subprotocol"` (default, current Kaiku) or `"query"` (older servers).
    #[ts(optional)]
    pub auth_mode: Option<String>,
    /// An access token; or give `username` and `password`; or call `login` first.
    #[ts(optional)]
    pub token: Option<String>,
    /// Log in with this user.
    #[ts(optional)]
    pub username: Option<String>,
    /// Password for `username`.
    #[ts(optional)]
    pub password: Option<String>,
    /// Channels to subscribe to at once.
    #[ts(optional, as = "Option<Vec<String>>")]
    pub channels: Vec<String>,
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

/// Connects (or, when already connected to the same server, subscribes the extra channels and
/// returns the status: a reloaded webview calls `connect` again without reconnecting).
#[tauri::command]
pub(crate) async fn connect<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, Tether>,
    options: ConnectOptions,
) -> Result<Status, Error> {
    let mut session = state.session.lock().await;
    if let Some(s) = session.as_ref()
        && s.server == options.server
    {
        for ch in &options.channels {
            s.client.subscribe(ch).await?;
        }
        return Ok(s.client.status());
    }
    let api = Api::new(&options.server).map_err(|e| invalid(e.to_string()))?;
    let credentials = match (&options.token, &options.username, &options.password) {
        (Some(t), _, _) => tether_tokio::with_jwt_expiry(Credentials::new(t.as_str())),
        (None, Some(u), Some(p)) => {
            tether_tokio::with_jwt_expiry(api.login(u, &Secret::new(p.as_str())).await?)
        }
        _ => match state.credentials.lock().await.as_ref() {
            Some((server, c)) if *server == options.server => c.clone(),
            _ => {
                return Err(Error::new(
                    ErrorKind::Auth,
                    "no credentials: pass a token, a username and password, or call login",
                ));
            }
        },
    };
    let mut config = ClientConfig::new(&options.server).map_err(|e| invalid(e.to_string()))?;
    config.core.auth_mode = match options.auth_mode.as_deref() {
        None | Some("subprotocol") => AuthMode::Subprotocol,
        Some("query") => AuthMode::Query,
        Some(other) => {
            return Err(invalid(format!(
                "auth_mode `{other}`: expected subprotocol or query"
            )));
        }
    };
    let token = credentials.access_token.clone();
    let (client, events) =
        Client::spawn(config, credentials).map_err(|e| invalid(e.to_string()))?;
    for ch in &options.channels {
        client.subscribe(ch).await?;
    }
    client.connect()?;
    let forward = crate::state::forward(app, events, state.channel.clone());
    if let Some(old) = session.replace(Session {
        server: options.server,
        client,
        token,
        forward,
    }) {
        old.replaced();
    }
    Ok(session
        .as_ref()
        .map_or(Status::Disconnected, |s| s.client.status()))
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
        .unsubscribe(&channel_id)?;
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

/// Logs in over REST and keeps the credentials for `connect`; returns the user.
#[tauri::command]
pub(crate) async fn login(
    state: State<'_, Tether>,
    server: String,
    username: String,
    password: String,
) -> Result<LoginResult, Error> {
    let api = Api::new(&server).map_err(|e| invalid(e.to_string()))?;
    let creds = tether_tokio::with_jwt_expiry(api.login(&username, &Secret::new(password)).await?);
    let user = api.me(&creds.access_token).await?;
    *state.credentials.lock().await = Some((server, creds));
    Ok(LoginResult { user })
}

/// Logs out over REST, forgets the credentials and closes the connection.
#[tauri::command]
pub(crate) async fn logout(state: State<'_, Tether>) -> Result<(), Error> {
    let session = state.session.lock().await.take();
    let creds = state.credentials.lock().await.take();
    let live_token = match &session {
        Some(s) => s.client.access_token().await.ok().flatten(),
        None => None,
    };
    let (server, token) = match (&session, &creds, live_token) {
        (Some(s), _, Some(t)) => (s.server.clone(), t),
        (Some(s), _, None) => (s.server.clone(), s.token.clone()),
        (None, Some((server, c)), _) => (server.clone(), c.access_token.clone()),
        (None, None, _) => return Ok(()),
    };
    if let Some(s) = session {
        s.close().await;
    }
    Api::new(&server)
        .map_err(|e| invalid(e.to_string()))?
        .logout(&token)
        .await?;
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
