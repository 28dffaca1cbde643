//! What Kaiku's `network/mod.rs` becomes: no socket code any more (the plugin owns the
//! socket, the heartbeat, reconnects, replay and catch-up), only how Kaiku connects.
//!
//! - [`connect_options`]: the plugin's options from [`AuthState`]: the access token and the
//!   refresh token, Kaiku's status order, and the app's plain-`http://` opt-in for this
//!   server.
//! - Refresh: tether refreshes ahead of expiry with Kaiku's refresh token, one refresh at a
//!   time. Kaiku's server rotates refresh tokens (a refresh deletes the old session), so each
//!   rotated pair comes back at once: it replaces the pair in [`AuthState`] and goes to the
//!   store the app named ([`NetworkSettings::on_refresh_token`]; Kaiku: its keyring), before
//!   tether can use it. The app must not refresh on its own meanwhile: the second of two
//!   refreshes with one refresh token fails.
//! - [`init`]: the voice session's rebuild after a reconnect (`ws:voice_reset`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use tauri::{AppHandle, Listener, Manager, Runtime};
use tauri_plugin_tether::{ConnectOptions, ErrorKind, TetherExt};
use tether_core::{ClientEvent, Credentials, StatusOrder};

use crate::{AppState, AuthState};

/// Where a rotated refresh token goes: `(server_url, refresh_token)`.
type RefreshStore = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// The latest pair tether's refresh obtained: `(access_token, refresh_token)`.
type Rotated = Arc<Mutex<Option<(String, Option<String>)>>>;

/// The connection's settings, in [`AppState::network`].
#[derive(Default)]
pub struct NetworkSettings {
    refresh_store: Mutex<Option<RefreshStore>>,
    /// The pair tether's refresh last obtained, set the moment it arrives (the update of
    /// `AppState.auth` may have to wait for its lock): the next connect reads it first.
    rotated: Rotated,
    /// Origins (`http://host:port`) the user allowed plain text to.
    plain_http: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for NetworkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkSettings")
            .field("refresh_store", &lock(&self.refresh_store).is_some())
            .field("rotation_pending", &lock(&self.rotated).is_some())
            .field("plain_http", &*lock(&self.plain_http))
            .finish()
    }
}

impl NetworkSettings {
    /// Stores each refresh token tether's refresh obtains, with the server's URL: Kaiku passes
    /// its `store_refresh_token` (the keyring). Called from the connection's task as the
    /// answer arrives, before tether uses the token; keep it quick.
    pub fn on_refresh_token(&self, store: impl Fn(&str, &str) + Send + Sync + 'static) {
        *lock(&self.refresh_store) = Some(Arc::new(store));
    }

    /// Allows plain `http://` to `server`, a host on the user's network that has no TLS (a
    /// server on the LAN). Only this origin (scheme, host, port): another server, or this one
    /// on another port, is still refused before a token leaves. Every connect to it emits
    /// `ws:insecure` `{"server"}` first, for the UI to show. Loopback needs no opt-in.
    pub fn allow_plain_http(&self, server: &str) -> Result<(), String> {
        let origin = plain_http_origin(server)?;
        lock(&self.plain_http).insert(origin);
        Ok(())
    }

    /// Takes the opt-in back.
    pub fn forbid_plain_http(&self, server: &str) {
        if let Ok(origin) = plain_http_origin(server) {
            lock(&self.plain_http).remove(&origin);
        }
    }

    fn allows_plain_http(&self, server: &str) -> bool {
        plain_http_origin(server).is_ok_and(|o| lock(&self.plain_http).contains(&o))
    }
}

/// `http://host:port` of a plain-text server URL.
fn plain_http_origin(server: &str) -> Result<String, String> {
    let url = tauri::Url::parse(server).map_err(|e| format!("{server}: {e}"))?;
    if url.scheme() != "http" {
        return Err(format!("{server}: only an http:// server needs the opt-in"));
    }
    Ok(url.origin().ascii_serialization())
}

/// The state even if a thread panicked holding it: each value is whole at every moment.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The plugin's options for Kaiku's connection, from its auth state: Kaiku's status order,
/// both tokens (tether refreshes ahead of expiry and hands each rotated pair back), and the
/// user's plain-`http://` opt-in for this server.
pub async fn connect_options(state: &AppState) -> Result<ConnectOptions, String> {
    let (server, credentials) = {
        let mut auth = state.auth.write().await;
        // A rotation that landed as the last connection closed, not yet in the auth state.
        if let Some(pair) = lock(&state.network.rotated).take() {
            apply_rotation(&mut auth, pair);
        }
        let server = auth.server_url.clone().ok_or("not logged in: no server")?;
        (server, credentials(&auth).ok_or("not logged in: no token")?)
    };
    let auth = state.auth.clone();
    let store = lock(&state.network.refresh_store).clone();
    let latest = state.network.rotated.clone();
    let issued_by = server.clone();
    let rotated = move |c: &Credentials| {
        let refresh = c.refresh_token.as_ref().map(|t| t.expose().to_owned());
        if let (Some(store), Some(refresh)) = (&store, &refresh) {
            store(&issued_by, refresh);
        }
        let pair = (c.access_token.expose().to_owned(), refresh);
        *lock(&latest) = Some(pair);
        let auth = auth.clone();
        let latest = latest.clone();
        let update = move |a: &mut AuthState| {
            // The newest pair, unless the next connect took it first.
            if let Some(pair) = lock(&latest).take() {
                apply_rotation(a, pair);
            }
        };
        // Kaiku's REST commands read the auth state with `.read().await`: a writer never
        // waits long, but this runs on the connection's task, which must not block.
        if let Ok(mut a) = auth.try_write() {
            update(&mut a);
            return;
        }
        tauri::async_runtime::spawn(async move { update(&mut *auth.write().await) });
    };
    Ok(ConnectOptions::new(server.as_str())
        .credentials(credentials)
        .status_order(StatusOrder::Kaiku)
        .allow_insecure(state.network.allows_plain_http(&server))
        .on_refresh(rotated))
}

/// A pair tether's refresh obtained, into the auth state (a server that does not rotate
/// returns no refresh token: the old one stays).
fn apply_rotation(auth: &mut AuthState, (access, refresh): (String, Option<String>)) {
    auth.access_token = Some(access);
    if refresh.is_some() {
        auth.refresh_token = refresh;
    }
}

/// The credentials tether gets: both tokens (the access token's lifetime comes from its JWT).
fn credentials(auth: &AuthState) -> Option<Credentials> {
    let creds = Credentials::new(auth.access_token.clone()?);
    Some(match &auth.refresh_token {
        Some(r) => creds.with_refresh_token(r.as_str()),
        None => creds,
    })
}

/// Kaiku's own login (or a new login of the same user on the same server) replaced the tokens
/// in [`AuthState`]: the connection uses them from its next upgrade, and one that failed on the
/// old ones connects again. Another user or server: `ws_disconnect`, then `ws_connect`.
pub async fn tokens_changed<R: Runtime>(app: &AppHandle<R>) -> Result<(), String> {
    let state = app.state::<AppState>();
    // The app's own login supersedes any rotation tether obtained before it.
    lock(&state.network.rotated).take();
    let (server, creds) = {
        let auth = state.auth.read().await;
        (auth.server_url.clone(), credentials(&auth))
    };
    let (Some(server), Some(creds)) = (server, creds) else {
        return Ok(());
    };
    match app.tether().set_credentials(&server, creds).await {
        // Not connected (yet, or any more): `ws_connect` will read the new tokens.
        Err(e) if e.kind == ErrorKind::NotConnected => Ok(()),
        other => other.map_err(text),
    }
}

/// Sets up what the port needs beside its commands, once, in Kaiku's `setup`: the voice
/// session's rebuild when a reconnect re-joined it (`ws:voice_reset`).
pub fn init<R: Runtime>(app: &AppHandle<R>) {
    let handle = app.clone();
    app.listen_any("ws:voice_reset", move |event| {
        let channel_id = serde_json::from_str::<serde_json::Value>(event.payload())
            .ok()
            .and_then(|p| p["channel_id"].as_str().map(str::to_owned));
        let Some(channel_id) = channel_id else {
            return;
        };
        let app = handle.clone();
        tauri::async_runtime::spawn(async move {
            if let Err(e) = crate::commands::voice::reset_voice(&app, &channel_id).await {
                tracing::warn!(error = %e, "voice: rebuilding the session after a reconnect failed");
            }
        });
    });
}

/// Sends an event the server may as well not get when the link is down (typing, a ping):
/// while offline tether refuses it, and Kaiku's frontend called these fire-and-forget, so the
/// refusal is quiet (counted in tether's `refused_offline`), not an error to log.
pub async fn send_volatile<R: Runtime>(
    app: &AppHandle<R>,
    event: ClientEvent,
) -> Result<(), String> {
    match app.tether().send(event).await {
        Err(e) if e.kind == ErrorKind::Offline => {
            tracing::debug!("offline: {}", e.message);
            Ok(())
        }
        other => other.map_err(text),
    }
}

/// The plugin's error as Kaiku's commands return it: one line of text.
pub fn text(e: tauri_plugin_tether::Error) -> String {
    e.message
}
