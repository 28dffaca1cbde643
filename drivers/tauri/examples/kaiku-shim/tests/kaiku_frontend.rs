//! The Kaiku frontend's side of the shim, on Tauri's mock runtime against the dev server over
//! loopback: every command invoked as the Kaiku frontend invokes it
//! (`invoke('ws_subscribe', { channelId })`), every `ws:*` event observed as it listens.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::time::Duration;

use kaiku_shim::{Auth, AuthState};
use serde_json::{Value, json};
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{
    INVOKE_KEY, MockRuntime, get_ipc_response, mock_builder, mock_context, noop_assets,
};
use tauri::webview::InvokeRequest;
use tauri::{App, Listener, Manager, WebviewWindow, WebviewWindowBuilder};
use tether_devserver::{DevServer, ServerConfig};

/// What the Kaiku frontend listens to, plus tether's additions it gains.
const LISTENED: &[&str] = &[
    "ws:connecting",
    "ws:connected",
    "ws:disconnected",
    "ws:reconnecting",
    "ws:ready",
    "ws:subscribed",
    "ws:unsubscribed",
    "ws:message_new",
    "ws:typing_start",
    "ws:typing_stop",
    "ws:rich_presence_update",
    "ws:custom_status_update",
    "ws:resynced",
    "ws:status",
];

struct Kaiku {
    app: App<MockRuntime>,
    webview: WebviewWindow<MockRuntime>,
    seen: mpsc::Receiver<(String, Value)>,
    server: DevServer,
    channel: String,
}

impl Kaiku {
    fn start() -> Self {
        let app = mock_builder()
            .plugin(tauri_plugin_tether::init())
            .manage(AuthState::default())
            .invoke_handler(kaiku_shim::handler())
            .build(mock_context(noop_assets()))
            .expect("app");
        let webview = WebviewWindowBuilder::new(&app, "main", Default::default())
            .build()
            .expect("webview");
        let (tx, seen) = mpsc::channel();
        for name in LISTENED {
            let tx = tx.clone();
            app.listen_any(*name, move |e| {
                let payload = serde_json::from_str(e.payload()).expect("payloads are JSON");
                let _ = tx.send(((*name).to_owned(), payload));
            });
        }
        let server = tauri::async_runtime::block_on(DevServer::start(
            ([127, 0, 0, 1], 0).into(),
            ServerConfig::default(),
        ))
        .expect("dev server");
        server.create_user("alice", "password123").expect("alice");
        server.create_user("bob", "password123").expect("bob");
        let channel = server.create_channel("general");
        Self {
            app,
            webview,
            seen,
            server,
            channel,
        }
    }

    /// What Kaiku's own `login` command does: its auth state gets the server and a token.
    fn login(&self, user: &str) -> Auth {
        let api = tether_tokio::Api::new(&self.server.url()).unwrap();
        let creds = tauri::async_runtime::block_on(
            api.login(user, &tether_core::Secret::new("password123")),
        )
        .expect("login");
        let auth = Auth {
            server_url: Some(self.server.url()),
            access_token: Some(creds.access_token.clone()),
            expires_in: creds.expires_in,
        };
        self.app.state::<AuthState>().set(auth.clone());
        auth
    }

    /// `invoke(cmd, args)` as the frontend calls it; an error is the command's `String`.
    fn invoke(&self, cmd: &str, args: Value) -> Result<Value, Value> {
        get_ipc_response(
            &self.webview,
            InvokeRequest {
                cmd: cmd.to_owned(),
                callback: CallbackFn(0),
                error: CallbackFn(1),
                url: "tauri://localhost".parse().unwrap(),
                body: InvokeBody::Json(args),
                headers: Default::default(),
                invoke_key: INVOKE_KEY.to_string(),
            },
        )
        .map(|b| b.deserialize::<Value>().unwrap_or(Value::Null))
    }

    fn ok(&self, cmd: &str, args: Value) -> Value {
        self.invoke(cmd, args)
            .unwrap_or_else(|e| panic!("{cmd} failed: {e}"))
    }

    /// Events until one named `name` whose payload passes `check` (20 s at most): that
    /// payload, and everything seen before it.
    fn until(&self, name: &str, check: impl Fn(&Value) -> bool) -> (Value, Vec<(String, Value)>) {
        let mut before = Vec::new();
        loop {
            let (n, p) = self
                .seen
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no {name}; saw {before:?}"));
            if n == name && check(&p) {
                return (p, before);
            }
            before.push((n, p));
        }
    }

    fn any(&self, name: &str) -> Value {
        self.until(name, |_| true).0
    }
}

#[test]
fn every_kaiku_command_works_as_the_kaiku_frontend_calls_it() {
    let k = Kaiku::start();
    let channel = k.channel.clone();

    // Before the app's login: a clear error string, nothing connects.
    assert_eq!(k.ok("ws_status", json!({})), json!("disconnected"));
    let e = k.invoke("ws_connect", json!({})).expect_err("no login yet");
    assert!(
        e.as_str().is_some_and(|s| s.contains("not logged in")),
        "{e}"
    );
    let e = k
        .invoke("ws_subscribe", json!({"channelId": channel}))
        .expect_err("not connected");
    assert!(
        e.as_str().is_some_and(|s| s.contains("not connected")),
        "{e}"
    );

    // `ws_connect` with no arguments, from the app's own auth state. Tokens handed over
    // before there is a connection only fill that state.
    let auth = k.login("alice");
    tauri::async_runtime::block_on(kaiku_shim::tokens_changed(k.app.handle(), auth))
        .expect("tokens_changed before ws_connect is no error");
    assert_eq!(k.ok("ws_connect", json!({})), Value::Null);
    assert_eq!(k.any("ws:connecting"), Value::Null);
    assert_eq!(k.any("ws:connected"), Value::Null);
    assert_eq!(k.ok("ws_status", json!({})), json!("connected"));

    k.ok("ws_subscribe", json!({"channelId": channel}));
    k.until("ws:subscribed", |p| p["channel_id"] == channel.as_str());

    // A message as the server sent it: the whole event, `type` included.
    let id = k.server.post(&channel, "bob", "hello from bob").unwrap();
    let (event, _) = k.until("ws:message_new", |_| true);
    assert_eq!(event["type"], "message_new");
    assert_eq!(event["channel_id"], channel.as_str());
    assert_eq!(event["message"]["id"], id.as_str());
    assert_eq!(event["message"]["content"], "hello from bob");
    assert_eq!(event["message"]["author"]["username"], "bob");

    // Each command reaches the server: it echoes each to the channel or to everyone.
    k.ok("ws_typing", json!({"channelId": channel}));
    assert_eq!(k.any("ws:typing_start")["channel_id"], channel.as_str());
    k.ok("ws_stop_typing", json!({"channelId": channel}));
    assert_eq!(k.any("ws:typing_stop")["channel_id"], channel.as_str());
    k.ok(
        "ws_send_activity",
        json!({"activity": {"name": "Kaiku", "type": "playing"}}),
    );
    assert_eq!(
        k.any("ws:rich_presence_update")["activity"]["name"],
        "Kaiku"
    );
    k.ok("ws_send_activity", json!({"activity": null}));
    assert_eq!(k.any("ws:rich_presence_update")["activity"], Value::Null);
    k.ok(
        "ws_send_custom_status",
        json!({"customStatus": {"text": "busy"}}),
    );
    assert_eq!(
        k.any("ws:custom_status_update")["custom_status"]["text"],
        "busy"
    );
    k.ok("ws_send_custom_status", json!({}));
    assert_eq!(
        k.any("ws:custom_status_update")["custom_status"],
        Value::Null
    );
    // The server's pong is the heartbeat's: tether does not forward it (no `ws:pong`).
    k.ok("ws_ping", json!({}));

    // A drop: the status events Kaiku knows, then what it missed, then `ws:resynced`.
    k.server.faults().drop_all();
    let missed = k
        .server
        .post(&channel, "bob", "while you were away")
        .unwrap();
    let (attempt, _) = k.until("ws:reconnecting", |_| true);
    assert!(
        attempt.as_u64().is_some_and(|n| n >= 1),
        "the attempt number: {attempt}"
    );
    k.until("ws:connected", |_| true);
    let (resynced, before) = k.until("ws:resynced", |p| p["channel_id"] == channel.as_str());
    let got_missed = before
        .iter()
        .any(|(n, p)| n == "ws:message_new" && p["message"]["id"] == missed.as_str());
    assert!(
        got_missed,
        "the missed message before ws:resynced: {before:?}"
    );
    assert_eq!(resynced["complete"], true, "{resynced}");
    assert_eq!(k.ok("ws_status", json!({})), json!("connected"));

    k.ok("ws_unsubscribe", json!({"channelId": channel}));
    k.until("ws:unsubscribed", |p| p["channel_id"] == channel.as_str());
    k.ok("ws_disconnect", json!({}));
    k.any("ws:disconnected");
    assert_eq!(k.ok("ws_status", json!({})), json!("disconnected"));
    tauri::async_runtime::block_on(k.server.shutdown());
}

#[test]
fn new_tokens_from_the_app_s_own_refresh_carry_the_next_reconnect() {
    let k = Kaiku::start();
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");

    // The app refreshes on its own (here: a new login) and hands the token over; the open
    // socket stays.
    let fresh = k.login("alice");
    tauri::async_runtime::block_on(kaiku_shim::tokens_changed(k.app.handle(), fresh.clone()))
        .unwrap();
    assert_eq!(k.ok("ws_status", json!({})), json!("connected"));

    // A token from another server is refused: it must never reach this one.
    let elsewhere = Auth {
        server_url: Some("https://other.example.com".into()),
        ..fresh
    };
    let e = tauri::async_runtime::block_on(kaiku_shim::tokens_changed(k.app.handle(), elsewhere))
        .expect_err("another server's token");
    assert!(e.contains("other.example.com"), "{e}");

    // Every token issued before the refresh is refused from now on (tether holds no refresh
    // token of its own): the reconnect goes through only with the new one.
    k.server.faults().expire_tokens();
    let fresher = k.login("alice");
    tauri::async_runtime::block_on(kaiku_shim::tokens_changed(k.app.handle(), fresher)).unwrap();
    k.server.faults().drop_all();
    k.until("ws:reconnecting", |_| true);
    k.until("ws:connected", |_| true);
    assert_eq!(k.ok("ws_status", json!({})), json!("connected"));
    tauri::async_runtime::block_on(k.server.shutdown());
}

#[test]
fn a_token_refused_for_good_is_the_app_s_cue_to_refresh_and_tokens_changed_reconnects() {
    let k = Kaiku::start();
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    k.server.faults().expire_tokens();
    k.server.faults().drop_all();
    // tether has no refresh token: it says why it stopped, and waits for the app.
    let (failed, _) = k.until("ws:status", |p| p["status"] == "failed");
    assert_eq!(failed["reason"], "auth", "{failed}");
    assert_eq!(k.ok("ws_status", json!({})), json!("disconnected"));
    let fresh = k.login("alice");
    tauri::async_runtime::block_on(kaiku_shim::tokens_changed(k.app.handle(), fresh)).unwrap();
    k.any("ws:connected");
    assert_eq!(k.ok("ws_status", json!({})), json!("connected"));
    tauri::async_runtime::block_on(k.server.shutdown());
}
