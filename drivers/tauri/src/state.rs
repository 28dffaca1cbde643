//! The plugin's managed state: one connection per app, and where its events go.

use std::sync::{Arc, Mutex};

use tauri::ipc::{Channel, InvokeResponseBody};
use tauri::{AppHandle, Emitter, Runtime};
use tether_core::{Credentials, FrontendEvent, KaikuStatus, Secret, StatusEvents, StatusOrder};
use tether_tokio::{Client, Events};

/// Where batched events go when the app attached a channel (`attach_channel`).
pub(crate) type SharedChannel = Arc<Mutex<Option<Channel<InvokeResponseBody>>>>;

/// A session's frontend events, shared by its forwarding task (which turns events into them)
/// and the handle (which answers `kaiku_status` from them).
pub(crate) type SharedStatusEvents = Arc<Mutex<StatusEvents>>;

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
    /// The token the app last gave this session (the client refreshes its own; see
    /// `Client::access_token`).
    pub token: Secret,
    /// The user whose password gave the session its credentials, if a password did.
    pub username: Option<String>,
    /// The newest `login` this session has taken into account (see [`StoredLogin::serial`]).
    pub login_serial: u64,
    /// Whether the app allowed plain text to a host that is not loopback.
    pub allow_insecure: bool,
    /// The road its REST calls and socket take (proxy, trust).
    pub network: tether_tokio::Network,
    /// The task forwarding the client's events to the webview.
    pub forward: tauri::async_runtime::JoinHandle<()>,
    /// How the forwarding task names status changes, and what it last announced.
    pub status_events: SharedStatusEvents,
}

/// The credentials of the last `login`, kept for a `connect` that brings none.
pub(crate) struct StoredLogin {
    pub server: String,
    pub credentials: Credentials,
    pub allow_insecure: bool,
    pub network: tether_tokio::Network,
    /// Increases with every `login` (see `Tether::logins`): a session whose `login_serial`
    /// is lower has not seen this login yet, so its credentials are new to it.
    pub serial: u64,
}

impl Session {
    /// Whether a `connect` with `user`'s password must log in: the session failed, or it is
    /// not that user's (a reload of the same user's page does not send the password again).
    pub fn wants_login(&self, user: &str) -> bool {
        matches!(self.client.status(), tether_core::Status::Failed { .. })
            || self.username.as_deref() != Some(user)
    }

    /// What the last legacy status event announced, in Kaiku's terms.
    pub fn kaiku_status(&self) -> KaikuStatus {
        lock(&self.status_events).kaiku_status()
    }

    /// Names status changes in `order` from the next one on.
    pub fn set_status_order(&self, order: StatusOrder) {
        lock(&self.status_events).set_order(order);
    }

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
    pub(crate) login: tokio::sync::Mutex<Option<StoredLogin>>,
    /// `login`s so far: the serial of the next one is this plus one (never reused, even after
    /// a `logout`).
    pub(crate) logins: std::sync::atomic::AtomicU64,
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
///
/// No event is lost when the channel fails (a reload or a closed webview kills it): the
/// batch it refused is emitted event by event, in order, and every later event is emitted
/// too, until the app attaches a channel again.
pub(crate) fn forward<R: Runtime>(
    app: AppHandle<R>,
    mut events: Events,
    channel: SharedChannel,
    status_events: SharedStatusEvents,
) -> tauri::async_runtime::JoinHandle<()> {
    // Each event's frontend events are made (and `kaiku_status` moved) just before they are
    // emitted or batched.
    let frontend_events = move |e: &tether_core::Event| lock(&status_events).events(e);
    tauri::async_runtime::spawn(async move {
        let mut last_batch: Option<tokio::time::Instant> = None;
        while let Some(first) = events.recv().await {
            if !is_attached(&channel) {
                emit_all(&app, frontend_events(&first));
                continue;
            }
            if let Some(at) = last_batch {
                tokio::time::sleep_until(at + BATCH_INTERVAL).await;
            }
            last_batch = Some(tokio::time::Instant::now());
            // Everything already waiting goes in the same message.
            let mut batch = Vec::new();
            let mut next = Some(first);
            while let Some(e) = next.take() {
                batch.extend(frontend_events(&e));
                if batch.len() < MAX_BATCH {
                    next = events.try_recv();
                }
            }
            // The channel attached now, after the wait: a page that attached a new one
            // meanwhile gets the batch on it.
            let attached = channel.lock().ok().and_then(|c| c.clone());
            let Some(ch) = attached else {
                emit_all(&app, batch);
                continue;
            };
            if ch
                .send(InvokeResponseBody::Json(batch_json(&batch)))
                .is_err()
            {
                tracing::debug!(
                    events = batch.len(),
                    "event channel closed; emitting its batch, then per-event emit"
                );
                if let Ok(mut c) = channel.lock()
                    && c.as_ref().map(Channel::id) == Some(ch.id())
                {
                    *c = None;
                }
                emit_all(&app, batch);
            }
        }
    })
}

/// The lock even if a thread panicked holding it: `StatusEvents` is whole at every moment.
fn lock(events: &SharedStatusEvents) -> std::sync::MutexGuard<'_, StatusEvents> {
    events
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn is_attached(channel: &SharedChannel) -> bool {
    channel.lock().is_ok_and(|c| c.is_some())
}

/// One channel message: a JSON array of `{"event","payload"}` objects.
fn batch_json(batch: &[FrontendEvent]) -> String {
    let mut json = String::with_capacity(batch.iter().map(|f| f.payload.len() + 40).sum());
    json.push('[');
    for (i, f) in batch.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&f.to_json_line());
    }
    json.push(']');
    json
}

/// Emits each event to the app, in order.
fn emit_all<R: Runtime>(app: &AppHandle<R>, events: impl IntoIterator<Item = FrontendEvent>) {
    for f in events {
        if let Err(e) = app.emit_str(&f.name, f.payload) {
            tracing::debug!(error = %e, "emit failed");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::mpsc;
    use std::time::Duration;

    use serde_json::Value;
    use tauri::Listener;
    use tether_devserver::{DevServer, ServerConfig};
    use tether_tokio::{Api, ClientConfig};

    use super::*;

    /// Every `ws:*` name this test can produce.
    const NAMES: &[&str] = &[
        "ws:status",
        "ws:connecting",
        "ws:connected",
        "ws:disconnected",
        "ws:reconnecting",
        "ws:ready",
        "ws:subscribed",
        "ws:message_new",
        "ws:resynced",
        "ws:rate_limited",
    ];

    /// `(name, payload)` with the payload parsed, so the channel's JSON array and the emitted
    /// text compare as values.
    fn parsed(name: &str, payload: &str) -> (String, Value) {
        (name.to_owned(), serde_json::from_str(payload).unwrap())
    }

    #[test]
    fn a_batch_the_channel_refuses_is_emitted_event_by_event_in_order() {
        let app = tauri::test::mock_app();
        let (tx, emitted) = mpsc::channel();
        for name in NAMES {
            let tx = tx.clone();
            app.listen_any(*name, move |e| {
                let _ = tx.send(parsed(name, e.payload()));
            });
        }
        // A channel whose webview is gone: every send fails. It keeps what it was given.
        let (refused_tx, refused) = mpsc::channel();
        let dead = Channel::new(move |body| {
            if let InvokeResponseBody::Json(json) = body {
                let _ = refused_tx.send(json);
            }
            Err(tauri::Error::WebviewNotFound)
        });
        let channel: SharedChannel = Arc::new(Mutex::new(Some(dead)));

        let (server, channel_id, client, events) = tauri::async_runtime::block_on(async {
            let server = DevServer::start(([127, 0, 0, 1], 0).into(), ServerConfig::default())
                .await
                .expect("dev server");
            server.create_user("alice", "password123").expect("alice");
            let channel_id = server.create_channel("general");
            let creds = Api::new(&server.url())
                .unwrap()
                .login("alice", &Secret::new("password123"))
                .await
                .expect("login");
            let mut config = ClientConfig::new(&server.url()).unwrap();
            // One event per frame (v1), so the frames counted below are the events.
            config.core.v2 = Vec::new();
            let (client, events) = Client::spawn(config, creds).unwrap();
            client.subscribe(&channel_id).await.unwrap();
            client.connect().unwrap();
            (server, channel_id, client, events)
        });
        // Three messages, and wait until the client has handled every frame (ready,
        // subscribed, three message_new) before forwarding starts: the first batch then holds
        // them all, messages included.
        let mut ids = Vec::new();
        tauri::async_runtime::block_on(async {
            let mut status = client.watch_status();
            tokio::time::timeout(
                Duration::from_secs(10),
                status.wait_for(|s| s.is_connected()),
            )
            .await
            .expect("connected")
            .unwrap();
            for i in 0..100 {
                if client.stats().await.unwrap().0.frames_in >= 2 {
                    break;
                }
                assert!(i < 99, "no subscribed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            for i in 0..3 {
                ids.push(server.post(&channel_id, "alice", &format!("m{i}")).unwrap());
            }
            for i in 0..100 {
                if client.stats().await.unwrap().0.frames_in >= 5 {
                    break;
                }
                assert!(i < 99, "messages did not arrive");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let task = forward(
            app.handle().clone(),
            events,
            channel.clone(),
            Arc::default(),
        );

        // The refused batch, as the channel saw it.
        let batch = refused
            .recv_timeout(Duration::from_secs(10))
            .expect("a batch tried on the channel");
        let batch: Vec<(String, Value)> = serde_json::from_str::<Vec<Value>>(&batch)
            .unwrap()
            .into_iter()
            .map(|o| {
                (
                    o["event"].as_str().unwrap().to_owned(),
                    o["payload"].clone(),
                )
            })
            .collect();
        let in_batch: Vec<&str> = batch
            .iter()
            .filter(|(n, _)| n == "ws:message_new")
            .map(|(_, p)| p["message"]["id"].as_str().unwrap())
            .collect();
        assert_eq!(in_batch, ids, "the refused batch held the three messages");
        for (name, _) in &batch {
            assert!(NAMES.contains(&name.as_str()), "unlistened {name}");
        }
        // Every event of it reaches the app through emit, in the same order.
        let got: Vec<(String, Value)> = (0..batch.len())
            .map(|_| {
                emitted
                    .recv_timeout(Duration::from_secs(10))
                    .expect("every event of the refused batch is emitted")
            })
            .collect();
        assert_eq!(got, batch);
        // Later events are emitted too, and the dead channel is not tried again.
        let late = server.post(&channel_id, "alice", "after").unwrap();
        let (name, payload) = emitted.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(name, "ws:message_new");
        assert_eq!(payload["message"]["id"], late.as_str());
        assert!(
            refused.try_recv().is_err(),
            "the dead channel was tried again"
        );
        assert!(
            channel.lock().unwrap().is_none(),
            "the dead channel is detached"
        );

        task.abort();
        tauri::async_runtime::block_on(async {
            client.close().await;
            server.shutdown().await;
        });
    }
}
