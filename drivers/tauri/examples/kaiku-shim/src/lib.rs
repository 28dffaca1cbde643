//! Kaiku's desktop client, its network side ported to tauri-plugin-tether: the files a Kaiku
//! maintainer ends up with, in Kaiku's own layout, so that what this crate's tests run is what
//! Kaiku would run.
//!
//! | this crate | Kaiku's file (`client/src-tauri/src/`) |
//! |---|---|
//! | [`AppState`], [`AuthState`], [`handler`] | `lib.rs`: `AppState` loses `websocket` and gains `network`; the handler gains `ws_send` |
//! | [`network`] | `network/mod.rs`, rewritten: the connection's settings (refresh-token store, plain-`http://` opt-ins, Kaiku's status order) |
//! | [`commands::websocket`] | `commands/websocket.rs`: the ten `ws_*` commands, plus `ws_send` |
//! | [`commands::voice`] | `commands/voice.rs`: the commands that signal through the socket |
//!
//! `docs/embedding.md` is the maintainer's checklist: each file before and after.
//!
//! ```ignore
//! tauri::Builder::default()
//!     .plugin(tauri_plugin_tether::init())
//!     .setup(|app| {
//!         app.manage(AppState::new());
//!         network::init(app.handle());
//!         Ok(())
//!     })
//!     .invoke_handler(kaiku_shim::handler())
//!     .run(tauri::generate_context!())
//!     .expect("app runs");
//! ```

pub mod commands;
pub mod network;

use std::sync::Arc;

use tokio::sync::RwLock;

pub use commands::voice::{BoxFuture, Rtc, VoiceState};

/// Kaiku's authentication state, as its `login`, `register` and `oidc_authorize` fill it.
///
/// The same fields as Kaiku's (minus `user`, which the port does not touch), so the rest of
/// Kaiku's code keeps reading them as before. `Debug` shows whether a token is there, never
/// the token: Kaiku's derived `Debug` printed both tokens.
#[derive(Default)]
pub struct AuthState {
    /// The access token.
    pub access_token: Option<String>,
    /// The refresh token (Kaiku also keeps it in the OS keyring). tether refreshes with it
    /// and hands every rotated pair back (see [`network::NetworkSettings`]).
    pub refresh_token: Option<String>,
    /// The server's HTTP base URL.
    pub server_url: Option<String>,
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |t: &Option<String>| t.as_ref().map(|_| "<redacted>");
        f.debug_struct("AuthState")
            .field("access_token", &shown(&self.access_token))
            .field("refresh_token", &shown(&self.refresh_token))
            .field("server_url", &self.server_url)
            .finish()
    }
}

/// Kaiku's application state, reduced to what the port touches. Kaiku's other fields (`http`,
/// `crypto`, `ui_state`) do not change.
pub struct AppState {
    /// Authentication state.
    pub auth: Arc<RwLock<AuthState>>,
    /// The connection's settings. Replaces Kaiku's
    /// `websocket: Arc<RwLock<Option<WebSocketManager>>>`: the connection itself lives in the
    /// plugin's state.
    pub network: network::NetworkSettings,
    /// Voice state.
    pub voice: Arc<RwLock<Option<VoiceState>>>,
    /// Makes the media engine when voice is first used (Kaiku: `WebRtcClient::new()`).
    rtc: Box<dyn Fn() -> Result<Box<dyn Rtc>, String> + Send + Sync>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// The state with `rtc` as the media engine's constructor (Kaiku builds its
    /// `WebRtcClient` and `AudioHandle` here).
    pub fn new(rtc: impl Fn() -> Result<Box<dyn Rtc>, String> + Send + Sync + 'static) -> Self {
        Self {
            auth: Arc::new(RwLock::new(AuthState::default())),
            network: network::NetworkSettings::default(),
            voice: Arc::new(RwLock::new(None)),
            rtc: Box::new(rtc),
        }
    }

    /// Makes the voice state if it is not there yet (Kaiku's `ensure_voice`).
    pub async fn ensure_voice(&self) -> Result<(), String> {
        let mut voice = self.voice.write().await;
        if voice.is_none() {
            *voice = Some(VoiceState::new((self.rtc)()?));
        }
        Ok(())
    }

    /// The server URL if authenticated.
    pub async fn server_url(&self) -> Option<String> {
        self.auth.read().await.server_url.clone()
    }
}

/// Every command of the port, for `Builder::invoke_handler` (Kaiku lists them in its own
/// `generate_handler!`, beside its other commands).
pub fn handler<R: tauri::Runtime>() -> impl Fn(tauri::ipc::Invoke<R>) -> bool + Send + Sync + 'static
{
    tauri::generate_handler![
        commands::websocket::ws_connect,
        commands::websocket::ws_disconnect,
        commands::websocket::ws_status,
        commands::websocket::ws_subscribe,
        commands::websocket::ws_unsubscribe,
        commands::websocket::ws_typing,
        commands::websocket::ws_stop_typing,
        commands::websocket::ws_ping,
        commands::websocket::ws_send_activity,
        commands::websocket::ws_send_custom_status,
        commands::websocket::ws_send,
        commands::voice::join_voice,
        commands::voice::leave_voice,
        commands::voice::set_mute,
        commands::voice::handle_voice_offer,
        commands::voice::handle_voice_ice_candidate,
        commands::voice::is_in_voice,
        commands::voice::get_voice_channel,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_debug_never_shows_a_token() {
        let auth = AuthState {
            access_token: Some("eyJ.the-access.sig".into()),
            refresh_token: Some("eyJ.the-refresh.sig".into()),
            server_url: Some("https://chat.example.com".into()),
        };
        let shown = format!("{auth:?}");
        assert!(!shown.contains("the-access"), "{shown}");
        assert!(!shown.contains("the-refresh"), "{shown}");
        assert_eq!(shown.matches("<redacted>").count(), 2, "{shown}");
        assert!(shown.contains("chat.example.com"), "{shown}");
    }
}
