//! Kaiku's network commands, each a few lines over tauri-plugin-tether's Rust API.
//!
//! The Kaiku app registers these in place of its `client/src-tauri/src/network` module: the
//! same names, arguments and return shapes, so its frontend does not change. What it gains
//! and how to swap is in `docs/embedding.md`.
//!
//! ```ignore
//! tauri::Builder::default()
//!     .plugin(tauri_plugin_tether::init())
//!     .manage(kaiku_shim::AuthState::default())
//!     .invoke_handler(kaiku_shim::handler())
//!     .run(tauri::generate_context!())
//!     .expect("app runs");
//! ```
//!
//! Kaiku keeps its login and its refresh-token storage. Its auth state is [`AuthState`] here;
//! after its own refresh it calls [`tokens_changed`], which hands the new access token to
//! the connection. tether is given no refresh token, so two refreshers never race for one
//! rotating refresh token: when a token is refused, the app sees `ws:status` with
//! `failed`/`auth`, refreshes, and [`tokens_changed`] reconnects.

/// `docs/embedding.md`, whose Rust blocks are compiled as this crate's doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../../../docs/embedding.md")]
pub struct EmbeddingGuide;

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tauri::{AppHandle, Manager, Runtime, State};
use tauri_plugin_tether::{ErrorKind, TetherExt};
use tether_core::{ClientEvent, Credentials, Secret, Status};

/// The app's own auth state, as Kaiku's `login` and refresh fill it.
#[derive(Debug, Default)]
pub struct AuthState(Mutex<Auth>);

/// What [`AuthState`] holds. `Debug` never shows the token (a [`Secret`]).
#[derive(Clone, Debug, Default)]
pub struct Auth {
    /// The server's HTTP base URL.
    pub server_url: Option<String>,
    /// The access token.
    pub access_token: Option<Secret>,
    /// Its lifetime from when it was issued, if the login answer said (`expires_in`).
    pub expires_in: Option<Duration>,
}

impl AuthState {
    /// Replaces what the app knows (after its login or refresh).
    pub fn set(&self, auth: Auth) {
        *self.lock() = auth;
    }

    /// What the app knows now.
    pub fn get(&self) -> Auth {
        self.lock().clone()
    }

    /// The state even if a thread panicked holding it: an `Auth` is whole at every moment,
    /// and dropping a refreshed token (or reading "not logged in") would be worse.
    fn lock(&self) -> std::sync::MutexGuard<'_, Auth> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Auth {
    /// The credentials tether gets: the access token and its lifetime, no refresh token.
    fn credentials(&self) -> Option<Credentials> {
        let creds = Credentials::new(self.access_token.clone()?);
        Some(match self.expires_in {
            Some(life) => creds.with_expires_in(life),
            None => creds,
        })
    }
}

/// Kaiku's `ConnectionStatus`, serialized as its frontend reads it: `"disconnected"`,
/// `"connecting"`, `"connected"` or `{"reconnecting":{"attempt":n}}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    /// Not connected (a failed connection too: `ws:status` says why).
    Disconnected,
    /// The first attempt is under way.
    Connecting,
    /// Connected and `ready`.
    Connected,
    /// Waiting to retry, or retrying (tether's `connecting` with an attempt above 0).
    Reconnecting {
        /// The attempt number.
        attempt: u32,
    },
}

impl From<&Status> for ConnectionStatus {
    fn from(status: &Status) -> Self {
        match status {
            Status::Connecting { attempt: 0 } => Self::Connecting,
            // A retry's socket opening: still reconnecting to Kaiku, with the same number.
            Status::Connecting { attempt } | Status::Reconnecting { attempt, .. } => {
                Self::Reconnecting { attempt: *attempt }
            }
            Status::Connected { .. } => Self::Connected,
            _ => Self::Disconnected,
        }
    }
}

/// The commands, for `Builder::invoke_handler`.
pub fn handler<R: Runtime>() -> impl Fn(tauri::ipc::Invoke<R>) -> bool + Send + Sync + 'static {
    tauri::generate_handler![
        commands::ws_connect,
        commands::ws_disconnect,
        commands::ws_status,
        commands::ws_subscribe,
        commands::ws_unsubscribe,
        commands::ws_typing,
        commands::ws_stop_typing,
        commands::ws_ping,
        commands::ws_send_activity,
        commands::ws_send_custom_status,
    ]
}

/// The app's refresh (or a new login of the same user on the same server) stored new tokens
/// in `auth`: the connection uses them from its next upgrade, and a connection that failed on
/// the old ones connects again. Another user or server: `ws_disconnect`, then `ws_connect`.
pub async fn tokens_changed<R: Runtime>(app: &AppHandle<R>, auth: Auth) -> Result<(), String> {
    let (creds, server) = (auth.credentials(), auth.server_url.clone());
    app.state::<AuthState>().set(auth);
    let (Some(creds), Some(server)) = (creds, server) else {
        return Ok(());
    };
    match app.tether().set_credentials(&server, creds).await {
        // Not connected (yet, or any more): `ws_connect` will read the new tokens.
        Err(e) if e.kind == ErrorKind::NotConnected => Ok(()),
        other => other.map_err(text),
    }
}

fn text(e: tauri_plugin_tether::Error) -> String {
    e.message
}

/// Kaiku's commands. They live in a module because `#[tauri::command]` on a `pub fn` at a
/// crate's root collides with the macros it exports; register them as
/// `kaiku_shim::commands::ws_connect` and so on, or all at once with [`handler`].
pub mod commands {
    use super::*;

    /// Connects with the server and token of the app's auth state (no arguments, as Kaiku's).
    #[tauri::command]
    pub async fn ws_connect<R: Runtime>(
        app: AppHandle<R>,
        auth: State<'_, AuthState>,
    ) -> Result<(), String> {
        let auth = auth.get();
        let server = auth.server_url.clone().ok_or("not logged in: no server")?;
        let creds = auth.credentials().ok_or("not logged in: no token")?;
        app.tether()
            .connect_with(server, creds)
            .await
            .map_err(text)?;
        Ok(())
    }

    /// Closes the connection and forgets it.
    #[tauri::command]
    pub async fn ws_disconnect<R: Runtime>(app: AppHandle<R>) -> Result<(), String> {
        app.tether().disconnect().await.map_err(text)
    }

    /// The status, in Kaiku's shape.
    #[tauri::command]
    pub async fn ws_status<R: Runtime>(app: AppHandle<R>) -> Result<ConnectionStatus, String> {
        Ok(ConnectionStatus::from(&app.tether().status().await))
    }

    /// Wants a channel's events, now and after every reconnect.
    #[tauri::command]
    pub async fn ws_subscribe<R: Runtime>(
        app: AppHandle<R>,
        channel_id: String,
    ) -> Result<(), String> {
        app.tether().subscribe(&channel_id).await.map_err(text)
    }

    /// Stops wanting a channel.
    #[tauri::command]
    pub async fn ws_unsubscribe<R: Runtime>(
        app: AppHandle<R>,
        channel_id: String,
    ) -> Result<(), String> {
        app.tether().unsubscribe(&channel_id).await.map_err(text)
    }

    /// The user is typing in a channel.
    #[tauri::command]
    pub async fn ws_typing<R: Runtime>(
        app: AppHandle<R>,
        channel_id: String,
    ) -> Result<(), String> {
        send(&app, ClientEvent::Typing { channel_id }).await
    }

    /// The user stopped typing.
    #[tauri::command]
    pub async fn ws_stop_typing<R: Runtime>(
        app: AppHandle<R>,
        channel_id: String,
    ) -> Result<(), String> {
        send(&app, ClientEvent::StopTyping { channel_id }).await
    }

    /// Sends Kaiku's `ping`, as before. tether keeps its own heartbeat and takes every
    /// `pong` as its answer, so no `ws:pong` reaches the frontend; while the link is down the
    /// ping is refused (it is volatile, never queued).
    #[tauri::command]
    pub async fn ws_ping<R: Runtime>(app: AppHandle<R>) -> Result<(), String> {
        send(&app, ClientEvent::Ping).await
    }

    /// Rich presence; `null` or nothing clears it.
    #[tauri::command]
    pub async fn ws_send_activity<R: Runtime>(
        app: AppHandle<R>,
        activity: Option<Value>,
    ) -> Result<(), String> {
        let activity = activity.unwrap_or(Value::Null);
        send(&app, ClientEvent::SetActivity { activity }).await
    }

    /// The custom status; `null` or nothing clears it.
    #[tauri::command]
    pub async fn ws_send_custom_status<R: Runtime>(
        app: AppHandle<R>,
        custom_status: Option<Value>,
    ) -> Result<(), String> {
        let custom_status = custom_status.unwrap_or(Value::Null);
        send(&app, ClientEvent::SetCustomStatus { custom_status }).await
    }
}

async fn send<R: Runtime>(app: &AppHandle<R>, event: ClientEvent) -> Result<(), String> {
    app.tether().send(event).await.map_err(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_serializes_as_kaiku_s_connection_status() {
        let json = |s: Status| serde_json::to_string(&ConnectionStatus::from(&s)).ok();
        assert_eq!(
            json(Status::Disconnected).as_deref(),
            Some(r#""disconnected""#)
        );
        assert_eq!(
            json(Status::Connected {
                protocol: tether_core::wire::Protocol::V2_MSGPACK,
                compression: None,
            })
            .as_deref(),
            Some(r#""connected""#)
        );
        assert_eq!(
            json(Status::Connecting { attempt: 0 }).as_deref(),
            Some(r#""connecting""#)
        );
        // A retry opening its socket is still reconnecting, not a first connect.
        assert_eq!(
            json(Status::Connecting { attempt: 2 }).as_deref(),
            Some(r#"{"reconnecting":{"attempt":2}}"#)
        );
        let failed = Status::Failed {
            reason: tether_core::FailReason::Auth,
            http_status: Some(401),
        };
        assert_eq!(json(failed).as_deref(), Some(r#""disconnected""#));
        let reconnecting = Status::Reconnecting {
            attempt: 3,
            retry_in_ms: 1500,
            reason: tether_core::ReconnectReason::HeartbeatTimeout,
        };
        assert_eq!(
            json(reconnecting).as_deref(),
            Some(r#"{"reconnecting":{"attempt":3}}"#)
        );
    }

    #[test]
    fn auth_debug_never_shows_the_token() {
        let auth = Auth {
            server_url: Some("https://chat.example.com".into()),
            access_token: Some("eyJ.the-token.sig".into()),
            expires_in: None,
        };
        let shown = format!("{auth:?}");
        assert!(
            !shown.contains("the-token") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
