//! The plugin's managed state: one connection per app, and where its events go.

use std::sync::{Arc, Mutex};

use tauri::ipc::{Channel, InvokeResponseBody};
use tauri::{AppHandle, Emitter, Runtime};
use tether_core::{Credentials, Secret, frontend_events};
use tether_tokio::{Client, Events};

/// Where batched events go when the app attached a channel (`attach_channel`).
pub(crate) type SharedChannel = Arc<Mutex<Option<Channel<InvokeResponseBody>>>>;

/// Most events forwarded in one batch on the channel path.
const MAX_BATCH: usize = 512;

/// Least time between two batches on the channel path. Each batch costs the webview one
/// script evaluation whatever its size, so a burst is gathered for up to this long (bounded
/// by `MAX_BATCH` and by the client's event queue, which pushes back on the socket) instead of
/// being sent one event at a time. An event arriving after a quiet spell goes out at once.
const BATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(4);

/// One live connection.
pub(crate) struct Session {
    pub server: String,
    pub client: Client,
    /// The token the session started with (the client refreshes its own; see
    /// `Client::access_token`).
    pub token: Secret,
    /// The task forwarding the client's events to the webview.
    pub forward: tauri::async_runtime::JoinHandle<()>,
}

impl Session {
    /// Ends the connection: sends the close frame and waits (about a second at most) until it
    /// has left. The forwarding task then ends with the event stream, after handing the
    /// webview the last events (`ws:disconnected`).
    pub async fn close(self) {
        self.client.close().await;
    }

    /// Ends a connection that a new one replaces: its events stop reaching the webview at
    /// once (a late `ws:disconnected` would contradict the new session), and it closes in the
    /// background.
    pub fn replaced(self) {
        self.forward.abort();
        let client = self.client;
        tauri::async_runtime::spawn(async move { client.close().await });
    }
}

/// The plugin's state, managed by the app. It outlives webviews: a reloaded page finds the
/// same connection (call `status`, or `connect` again, which keeps it).
#[derive(Default)]
pub struct Tether {
    pub(crate) session: tokio::sync::Mutex<Option<Session>>,
    pub(crate) credentials: tokio::sync::Mutex<Option<(String, Credentials)>>,
    pub(crate) channel: SharedChannel,
}

impl std::fmt::Debug for Tether {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tether { .. }")
    }
}

impl Tether {
    /// Closes the connection, if any, because the app is exiting: waits until the close frame
    /// has left (at most about two seconds), so the server sees a clean close rather than a
    /// reset. Called on `RunEvent::Exit`, on the main thread. The close runs on the async
    /// runtime and this thread only waits for its answer, so an app that gave Tauri its own
    /// runtime (`async_runtime::set`) cannot make this nest one runtime in another.
    pub fn shutdown(&self) {
        const WAIT: std::time::Duration = std::time::Duration::from_secs(2);
        // A `connect` in progress holds the lock for a moment (it logs in, subscribes).
        let started = std::time::Instant::now();
        let session = loop {
            if let Ok(mut s) = self.session.try_lock() {
                break s.take();
            }
            if started.elapsed() > WAIT / 4 {
                tracing::debug!("exit: a connect holds the session; not waiting for it");
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        if let Some(s) = session {
            let (done, wait) = std::sync::mpsc::channel();
            tauri::async_runtime::spawn(async move {
                s.close().await;
                let _ = done.send(());
            });
            let _ = wait.recv_timeout(WAIT);
        }
    }
}

/// Forwards every event to the webview: `emit_str` of the server's own JSON under its `ws:*`
/// name (see `tether_core::frontend`), or batches on the attached channel.
pub(crate) fn forward<R: Runtime>(
    app: AppHandle<R>,
    mut events: Events,
    channel: SharedChannel,
) -> tauri::async_runtime::JoinHandle<()> {
    tauri::async_runtime::spawn(async move {
        let mut last_batch: Option<tokio::time::Instant> = None;
        while let Some(first) = events.recv().await {
            let attached = channel.lock().ok().and_then(|c| c.clone());
            match attached {
                Some(ch) => {
                    if let Some(at) = last_batch {
                        tokio::time::sleep_until(at + BATCH_INTERVAL).await;
                    }
                    last_batch = Some(tokio::time::Instant::now());
                    // Everything already waiting goes in the same message.
                    let mut batch = String::from("[");
                    let mut n = 0;
                    let mut next = Some(first);
                    while let Some(e) = next.take() {
                        for f in frontend_events(&e) {
                            if n > 0 {
                                batch.push(',');
                            }
                            batch.push_str(&f.to_json_line());
                            n += 1;
                        }
                        if n < MAX_BATCH {
                            next = events.try_recv();
                        }
                    }
                    batch.push(']');
                    if ch.send(InvokeResponseBody::Json(batch)).is_err() {
                        tracing::debug!("event channel closed; back to per-event emit");
                        if let Ok(mut c) = channel.lock() {
                            *c = None;
                        }
                    }
                }
                None => {
                    for f in frontend_events(&first) {
                        if let Err(e) = app.emit_str(&f.name, f.payload) {
                            tracing::debug!(error = %e, "emit failed");
                        }
                    }
                }
            }
        }
    })
}
