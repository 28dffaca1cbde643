//! The plugin's commands (`plugin:tether|<name>` over IPC): each one line over the Rust API
//! ([`crate::TetherExt`]), so the webview and the app's Rust code take one path.

use tauri::ipc::{Channel, InvokeResponseBody};
use tauri::{AppHandle, Runtime};
use tether_core::{ClientEvent, Secret, Status};

use crate::api::{ConnectOptions, HistoryResult, LoginResult, TetherExt};
use crate::error::Error;

/// Connects (see [`crate::TetherHandle::connect`]).
#[tauri::command]
pub(crate) async fn connect<R: Runtime>(
    app: AppHandle<R>,
    options: ConnectOptions,
) -> Result<Status, Error> {
    app.tether().connect(options).await
}

/// Closes the connection and forgets it.
#[tauri::command]
pub(crate) async fn disconnect<R: Runtime>(app: AppHandle<R>) -> Result<(), Error> {
    app.tether().disconnect().await
}

/// Wants a channel's events (now and after every reconnect). With `newest_message_id`, catches
/// up everything after the newest message the app shows.
#[tauri::command]
pub(crate) async fn subscribe<R: Runtime>(
    app: AppHandle<R>,
    channel_id: String,
    newest_message_id: Option<String>,
) -> Result<(), Error> {
    match newest_message_id {
        Some(n) => app.tether().subscribe_from(&channel_id, &n).await,
        None => app.tether().subscribe(&channel_id).await,
    }
}

/// Stops wanting a channel.
#[tauri::command]
pub(crate) async fn unsubscribe<R: Runtime>(
    app: AppHandle<R>,
    channel_id: String,
) -> Result<(), Error> {
    app.tether().unsubscribe(&channel_id).await
}

/// The app is looking at this channel: after a reconnect its catch-up goes first.
#[tauri::command]
pub(crate) async fn focus<R: Runtime>(app: AppHandle<R>, channel_id: String) -> Result<(), Error> {
    app.tether().focus(&channel_id).await
}

/// The network may have changed (the webview went `online`, the page became visible): probe
/// the link now and skip a backoff wait. Without a connection it does nothing. The plugin's
/// page script calls it by itself (`watch_network.js`).
#[tauri::command]
pub(crate) async fn network_changed<R: Runtime>(app: AppHandle<R>) -> Result<(), Error> {
    app.tether().network_changed().await
}

/// Sends a client event (`{"type":"typing","channel_id":...}` and the rest of DESIGN 4).
#[tauri::command]
pub(crate) async fn send<R: Runtime>(app: AppHandle<R>, event: ClientEvent) -> Result<(), Error> {
    app.tether().send(event).await
}

/// The current status (`{"status":"disconnected"}` before `connect`).
#[tauri::command]
pub(crate) async fn status<R: Runtime>(app: AppHandle<R>) -> Result<Status, Error> {
    Ok(app.tether().status().await)
}

/// Logs in over REST and keeps the credentials for `connect`; returns the user. Plain
/// `http://` to a host that is not loopback is refused (`kind: "insecure"`) before the password
/// leaves, unless `allow_insecure` is `true`. `proxy` as in `connect`'s options.
#[tauri::command]
pub(crate) async fn login<R: Runtime>(
    app: AppHandle<R>,
    server: String,
    username: String,
    password: String,
    allow_insecure: Option<bool>,
    proxy: Option<String>,
) -> Result<LoginResult, Error> {
    let allow_insecure = allow_insecure.unwrap_or(false);
    let mut network = tether_tokio::Network::default();
    if let Some(p) = proxy {
        network.proxy = crate::api::proxy(&p)?;
    }
    app.tether()
        .login_on(
            &server,
            &username,
            Secret::new(password),
            allow_insecure,
            network,
        )
        .await
}

/// Logs out over REST, forgets the credentials and closes the connection.
#[tauri::command]
pub(crate) async fn logout<R: Runtime>(app: AppHandle<R>) -> Result<(), Error> {
    app.tether().logout().await
}

/// A page of a channel's history, newest first.
#[tauri::command]
pub(crate) async fn history<R: Runtime>(
    app: AppHandle<R>,
    channel_id: String,
    before: Option<String>,
    limit: Option<u32>,
) -> Result<HistoryResult, Error> {
    app.tether()
        .history(&channel_id, before.as_deref(), limit)
        .await
}

/// The high-rate path: from now on events go to `channel` in batches (a JSON array of
/// `{"event","payload"}` objects per message) instead of one `emit` each.
#[tauri::command]
pub(crate) async fn attach_channel<R: Runtime>(
    app: AppHandle<R>,
    channel: Channel<InvokeResponseBody>,
) -> Result<(), Error> {
    app.tether().attach_channel(channel)
}

#[cfg(test)]
mod tests {
    use crate::api::ConnectOptions;

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
