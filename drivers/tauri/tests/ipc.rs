//! The plugin through Tauri's IPC on the mock runtime, against the dev server over loopback:
//! every command invoked as a webview would, every event observed as a webview would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{
    INVOKE_KEY, MockRuntime, get_ipc_response, mock_builder, mock_context, noop_assets,
};
use tauri::utils::acl::ExecutionContext;
use tauri::webview::InvokeRequest;
use tauri::{App, Listener, WebviewWindow, WebviewWindowBuilder};
use tether_devserver::{DevServer, ServerConfig};

const COMMANDS: &[&str] = &[
    "connect",
    "disconnect",
    "subscribe",
    "unsubscribe",
    "send",
    "status",
    "login",
    "logout",
    "history",
    "network_changed",
];

/// Events a webview would see, as (name, payload JSON).
type Seen = mpsc::Receiver<(String, String)>;

struct Harness {
    _app: App<MockRuntime>,
    webview: WebviewWindow<MockRuntime>,
    seen: Seen,
    server: DevServer,
    channel: String,
}

fn app(allow: bool) -> (App<MockRuntime>, WebviewWindow<MockRuntime>) {
    let mut context = mock_context(noop_assets());
    if allow {
        // The mock context grants nothing: allow the plugin's commands as `tether:default` would.
        for c in COMMANDS {
            context
                .runtime_authority_mut()
                .__allow_command(format!("plugin:tether|{c}"), ExecutionContext::Local);
        }
    }
    let app = mock_builder()
        .plugin(tauri_plugin_tether::init())
        .build(context)
        .expect("app");
    let webview = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .expect("webview");
    (app, webview)
}

/// The status of a live session with the dev server: protocol v2 over MessagePack (the
/// default offer and the server's choice), not compressed (the plugin offers deflate only
/// when asked).
fn connected_status() -> serde_json::Value {
    json!({
        "status": "connected",
        "protocol": {"version": 2, "encoding": "msgpack"},
        "compression": null
    })
}

fn harness() -> Harness {
    let (app, webview) = app(true);
    let (tx, seen) = mpsc::channel();
    for name in [
        "ws:status",
        "ws:connecting",
        "ws:connected",
        "ws:disconnected",
        "ws:reconnecting",
        "ws:resynced",
        "ws:message_new",
        "ws:subscribed",
        "ws:ready",
        "ws:brand_new",
        "ws:typing_start",
    ] {
        let tx = tx.clone();
        app.listen_any(name, move |e| {
            let _ = tx.send((name.to_owned(), e.payload().to_owned()));
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
    Harness {
        _app: app,
        webview,
        seen,
        server,
        channel,
    }
}

fn invoke(webview: &WebviewWindow<MockRuntime>, cmd: &str, args: Value) -> Result<Value, Value> {
    get_ipc_response(
        webview,
        InvokeRequest {
            cmd: format!("plugin:tether|{cmd}"),
            callback: CallbackFn(0),
            error: CallbackFn(1),
            // The local origin on Linux and macOS (Windows uses http://tauri.localhost).
            url: "tauri://localhost".parse().unwrap(),
            body: InvokeBody::Json(args),
            headers: Default::default(),
            invoke_key: INVOKE_KEY.to_string(),
        },
    )
    .map(|b| b.deserialize::<Value>().unwrap_or(Value::Null))
}

impl Harness {
    fn connect(&self) -> Value {
        invoke(
            &self.webview,
            "connect",
            json!({"options": {"server": self.server.url(), "username": "alice", "password": "password123", "channels": [self.channel]}}),
        )
        .expect("connect")
    }

    /// Events until a `ws:status` with this `status` arrives (20 s at most); returns all of
    /// them, the match last.
    fn until_status(&self, status: &str) -> Vec<(String, String)> {
        let mut got = Vec::new();
        loop {
            let e = self
                .seen
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no status {status}; saw {got:?}"));
            let done = e.0 == "ws:status"
                && serde_json::from_str::<Value>(&e.1).unwrap()["status"] == status;
            got.push(e);
            if done {
                return got;
            }
        }
    }

    /// Connects as alice, then makes the session fail on auth: every token is revoked (the
    /// refresh token too) and the socket dropped, so the reconnect is refused for good.
    fn connect_then_fail_on_auth(&self) {
        self.connect();
        self.until("ws:connected");
        self.server.faults().revoke_tokens();
        self.server.faults().drop_all();
        let failed = self.until_status("failed").pop().unwrap();
        let failed: Value = serde_json::from_str(&failed.1).unwrap();
        assert_eq!(failed["reason"], "auth", "{failed}");
        assert_eq!(
            invoke(&self.webview, "status", json!({})).unwrap()["status"],
            "failed"
        );
    }

    /// A new token for `user`, obtained outside the plugin.
    fn fresh_token(&self, user: &str) -> String {
        let api = tether_tokio::Api::new(&self.server.url()).unwrap();
        let creds = tauri::async_runtime::block_on(
            api.login(user, &tether_core::Secret::new("password123")),
        )
        .expect("login");
        creds.access_token.expose().to_owned()
    }

    /// No event for a moment (nothing reconnects, say).
    fn quiet(&self) {
        if let Ok(e) = self.seen.recv_timeout(Duration::from_millis(300)) {
            panic!("expected nothing, got {e:?}");
        }
    }

    /// Events until `name` arrives (20 s at most); returns all of them, the match last.
    fn until(&self, name: &str) -> Vec<(String, String)> {
        let mut got = Vec::new();
        loop {
            let e = self
                .seen
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no {name}; saw {got:?}"));
            let done = e.0 == name;
            got.push(e);
            if done {
                return got;
            }
        }
    }
}

#[test]
fn commands_are_refused_without_the_permission() {
    let (_app, webview) = app(false);
    let e = invoke(&webview, "status", json!({})).expect_err("not granted");
    assert!(e.to_string().contains("not allowed"), "{e}");
}

#[test]
fn connect_emits_the_status_events_the_kaiku_frontend_listens_to() {
    let h = harness();
    let status = h.connect();
    assert!(status["status"].is_string(), "{status}");
    let seen = h.until("ws:connected");
    let names: Vec<&str> = seen.iter().map(|e| e.0.as_str()).collect();
    assert!(names.contains(&"ws:connecting"), "{names:?}");
    let connected = seen.last().unwrap();
    assert_eq!(connected.1, "null", "ws:connected carries no payload");
    let status = seen.iter().rev().find(|e| e.0 == "ws:status").unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&status.1).unwrap(),
        connected_status(),
        "the status says what the socket speaks"
    );
    assert_eq!(
        invoke(&h.webview, "status", json!({})).unwrap(),
        connected_status()
    );
}

#[test]
fn server_events_arrive_verbatim_known_or_not() {
    let h = harness();
    h.connect();
    h.until("ws:subscribed");
    let id = h.server.post(&h.channel, "bob", "hello from bob").unwrap();
    let (_, payload) = h.until("ws:message_new").pop().unwrap();
    let v: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(v["message"]["id"], id.as_str());
    assert_eq!(v["type"], "message_new");
    let unknown = r#"{"type":"brand_new","x":[1,null,{"y":"z"}],"emoji":"🎉"}"#;
    h.server.faults().inject(unknown);
    let (_, payload) = h.until("ws:brand_new").pop().unwrap();
    assert_eq!(payload, unknown, "forwarded without re-serializing");
}

#[test]
fn a_drop_gives_reconnecting_then_connected_then_resynced_with_the_missed_messages() {
    let h = harness();
    h.connect();
    h.until("ws:subscribed");
    h.server.post(&h.channel, "bob", "before").unwrap();
    h.until("ws:message_new");
    std::thread::sleep(Duration::from_millis(50)); // let the anchor's fence pong land
    h.server.faults().drop_all();
    let missed = h.server.post(&h.channel, "bob", "while down").unwrap();
    let seen = h.until("ws:resynced");
    let names: Vec<&str> = seen.iter().map(|e| e.0.as_str()).collect();
    let reconnecting = names
        .iter()
        .position(|n| *n == "ws:reconnecting")
        .expect("reconnecting");
    let connected = names
        .iter()
        .rposition(|n| *n == "ws:connected")
        .expect("connected");
    assert!(reconnecting < connected, "{names:?}");
    let attempt = &seen[reconnecting].1;
    assert_eq!(attempt, "1", "ws:reconnecting carries the attempt number");
    assert!(
        seen.iter()
            .any(|e| e.0 == "ws:message_new" && e.1.contains(&missed)),
        "caught up"
    );
    let resynced: Value = serde_json::from_str(&seen.last().unwrap().1).unwrap();
    assert_eq!(resynced["channel_id"], h.channel.as_str());
    assert_eq!(resynced["complete"], true);
    assert_eq!(resynced["recovered"], 1);
}

#[test]
fn send_subscribe_history_and_errors_round_trip() {
    let h = harness();
    h.connect();
    h.until("ws:subscribed");
    // A typed client event: the server answers typing with typing_start to the channel.
    invoke(
        &h.webview,
        "send",
        json!({"event": {"type": "typing", "channel_id": h.channel}}),
    )
    .expect("send");
    let (_, payload) = h.until("ws:typing_start").pop().unwrap();
    assert!(payload.contains(&h.channel));
    for i in 0..3 {
        h.server.post(&h.channel, "bob", &format!("m{i}")).unwrap();
    }
    let page = invoke(
        &h.webview,
        "history",
        json!({"channelId": h.channel, "limit": 2}),
    )
    .expect("history");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["has_more"], true);
    assert!(page["next_cursor"].is_string());
    // Errors come back as {kind, message}.
    let e = invoke(&h.webview, "send", json!({"event": {"type": "nope"}})).expect_err("bad event");
    assert!(
        e.is_string() || e.get("kind").is_some() || e.to_string().contains("nope"),
        "{e}"
    );
    let e = invoke(&h.webview, "subscribe", json!({"channelId": ""})).expect_err("bad id");
    assert_eq!(e["kind"], "invalid_argument", "{e}");
    invoke(&h.webview, "unsubscribe", json!({"channelId": h.channel})).expect("unsubscribe");
    invoke(&h.webview, "disconnect", json!({})).expect("disconnect");
    assert_eq!(
        invoke(&h.webview, "status", json!({})).unwrap(),
        json!({"status": "disconnected"})
    );
    let e =
        invoke(&h.webview, "history", json!({"channelId": h.channel})).expect_err("not connected");
    assert_eq!(e["kind"], "not_connected");
}

#[test]
fn login_then_connect_uses_the_stored_credentials_and_wrong_passwords_are_auth_errors() {
    let h = harness();
    let e = invoke(
        &h.webview,
        "login",
        json!({"server": h.server.url(), "username": "alice", "password": "wrong"}),
    )
    .expect_err("wrong password");
    assert_eq!(e["kind"], "auth", "{e}");
    let user = invoke(
        &h.webview,
        "login",
        json!({"server": h.server.url(), "username": "alice", "password": "password123"}),
    )
    .expect("login");
    assert_eq!(user["user"]["username"], "alice");
    invoke(
        &h.webview,
        "connect",
        json!({"options": {"server": h.server.url(), "channels": [h.channel]}}),
    )
    .expect("connect");
    h.until("ws:connected");
    // A reload calls connect again: same connection, no new ws:connecting.
    let status = invoke(
        &h.webview,
        "connect",
        json!({"options": {"server": h.server.url()}}),
    )
    .expect("again");
    assert_eq!(status, connected_status());
    invoke(&h.webview, "logout", json!({})).expect("logout");
    assert_eq!(
        invoke(&h.webview, "status", json!({})).unwrap(),
        json!({"status": "disconnected"})
    );
}

#[test]
fn disconnect_closes_the_socket_cleanly_and_tells_the_page() {
    let h = harness();
    h.connect();
    h.until("ws:subscribed");
    let closes = h.server.client_closes();
    invoke(&h.webview, "disconnect", json!({})).expect("disconnect");
    // A close frame, not a reset (the server may read it a moment after `disconnect`
    // returns, so this waits for the server's count).
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while h.server.client_closes() == closes && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        h.server.client_closes(),
        closes + 1,
        "a close frame, not a reset"
    );
    h.until("ws:disconnected");
    assert_eq!(
        invoke(&h.webview, "status", json!({})).unwrap(),
        json!({"status": "disconnected"})
    );
}

#[test]
fn a_session_failed_on_auth_reconnects_when_connect_brings_a_fresh_token() {
    let h = harness();
    h.connect_then_fail_on_auth();
    let token = h.fresh_token("alice");
    let upgrades = h.server.upgrades();
    invoke(
        &h.webview,
        "connect",
        json!({"options": {"server": h.server.url(), "token": token}}),
    )
    .expect("connect");
    h.until("ws:connected");
    assert!(h.server.upgrades() > upgrades, "a new socket");
    assert_eq!(
        invoke(&h.webview, "status", json!({})).unwrap(),
        connected_status()
    );
    // The session kept its subscription: the new socket subscribes to the channel, and a
    // message posted after that arrives live. (Posted before the server has the
    // subscription, it is only owed as a reload: `ws:resynced` with `complete: false`.)
    let (_, subscribed) = h.until("ws:subscribed").pop().unwrap();
    assert!(subscribed.contains(&h.channel), "{subscribed}");
    let id = h.server.post(&h.channel, "bob", "back").unwrap();
    let (_, payload) = h.until("ws:message_new").pop().unwrap();
    assert!(payload.contains(&id), "{payload}");
}

#[test]
fn a_session_failed_on_auth_reconnects_when_connect_brings_username_and_password() {
    let h = harness();
    h.connect_then_fail_on_auth();
    // The same user and password as the first connect: after a failure they log in again.
    h.connect();
    h.until("ws:connected");
    assert_eq!(
        invoke(&h.webview, "status", json!({})).unwrap(),
        connected_status()
    );
}

#[test]
fn a_login_after_a_failure_is_used_by_the_next_connect() {
    let h = harness();
    h.connect_then_fail_on_auth();
    invoke(
        &h.webview,
        "login",
        json!({"server": h.server.url(), "username": "alice", "password": "password123"}),
    )
    .expect("login");
    invoke(
        &h.webview,
        "connect",
        json!({"options": {"server": h.server.url()}}),
    )
    .expect("connect");
    h.until("ws:connected");
}

#[test]
fn connect_again_with_the_same_credentials_keeps_the_live_connection() {
    let h = harness();
    h.connect();
    h.until("ws:subscribed");
    let upgrades = h.server.upgrades();
    // A reload: the same options again, then a token-less connect. Nothing reconnects.
    assert_eq!(h.connect(), connected_status());
    let status = invoke(
        &h.webview,
        "connect",
        json!({"options": {"server": h.server.url()}}),
    )
    .expect("connect");
    assert_eq!(status, connected_status());
    h.quiet();
    assert_eq!(h.server.upgrades(), upgrades, "no new socket");
}

#[test]
fn connect_with_another_user_switches_the_live_session_to_them() {
    let h = harness();
    h.connect();
    h.until("ws:subscribed");
    let upgrades = h.server.upgrades();
    invoke(
        &h.webview,
        "connect",
        json!({"options": {"server": h.server.url(), "username": "bob", "password": "password123"}}),
    )
    .expect("connect as bob");
    // The old socket goes, a new one comes up as bob.
    let seen = h.until("ws:ready");
    assert!(seen.iter().any(|e| e.0 == "ws:disconnected"), "{seen:?}");
    let ready: Value = serde_json::from_str(&seen.last().unwrap().1).unwrap();
    let bob = h
        .server
        .with_store(|s| s.user_by_name("bob").map(|u| u.id.clone()))
        .unwrap();
    assert_eq!(ready["user_id"], bob.as_str(), "{ready}");
    assert!(h.server.upgrades() > upgrades);
}

#[test]
fn login_and_connect_refuse_plain_http_to_a_remote_host_unless_allowed() {
    let h = harness();
    // `.invalid` never resolves: an attempt ends in a network error, a refusal in `insecure`.
    let remote = "http://example.invalid";
    let started = std::time::Instant::now();
    let e = invoke(
        &h.webview,
        "login",
        json!({"server": remote, "username": "alice", "password": "password123"}),
    )
    .expect_err("login refused");
    assert_eq!(e["kind"], "insecure", "{e}");
    for options in [
        json!({"server": remote, "username": "alice", "password": "password123"}),
        json!({"server": remote, "token": "t"}),
        json!({"server": "ws://example.invalid", "token": "t"}),
    ] {
        let e = invoke(&h.webview, "connect", json!({ "options": options }))
            .expect_err("connect refused");
        assert_eq!(e["kind"], "insecure", "{options}: {e}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once: {:?}",
        started.elapsed()
    );
    assert_eq!(
        invoke(&h.webview, "status", json!({})).unwrap(),
        json!({"status": "disconnected"})
    );
    // With the opt-in, it is attempted, and fails to resolve: the kind says which step.
    let e = invoke(
        &h.webview,
        "login",
        json!({"server": remote, "username": "alice", "password": "password123", "allowInsecure": true}),
    )
    .expect_err("no such host");
    assert_eq!(e["kind"], "name_lookup", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("example.invalid"),
        "{e}"
    );
    let e = invoke(
        &h.webview,
        "connect",
        json!({"options": {"server": remote, "username": "alice", "password": "password123", "allow_insecure": true}}),
    )
    .expect_err("no such host");
    assert_eq!(e["kind"], "name_lookup", "{e}");
}

#[test]
fn network_changed_does_nothing_unconnected_and_skips_a_backoff_wait() {
    let h = harness();
    assert_eq!(
        invoke(&h.webview, "network_changed", json!({})).expect("granted by default"),
        Value::Null
    );
    h.connect();
    h.until("ws:connected");
    h.server.faults().refuse_upgrades(503, None, None);
    h.server.faults().drop_all();
    // Refused until the next attempt is 4 s or more away.
    loop {
        let (_, status) = h.until_status("reconnecting").pop().unwrap();
        let status: Value = serde_json::from_str(&status).unwrap();
        if status["retry_in_ms"].as_u64().unwrap() >= 4000 {
            break;
        }
    }
    h.server.faults().clear();
    let asked = std::time::Instant::now();
    invoke(&h.webview, "network_changed", json!({})).expect("network_changed");
    h.until_status("connected");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "connected {:?} after the network change, not after the backoff",
        asked.elapsed()
    );
}

#[test]
fn compression_true_offers_deflate_and_the_status_says_it_was_agreed() {
    let h = harness();
    invoke(
        &h.webview,
        "connect",
        json!({"options": {
            "server": h.server.url(),
            "username": "alice",
            "password": "password123",
            "channels": [h.channel],
            "compression": true
        }}),
    )
    .expect("connect");
    let seen = h.until("ws:connected");
    let status = seen.iter().rev().find(|e| e.0 == "ws:status").unwrap();
    let status: Value = serde_json::from_str(&status.1).unwrap();
    assert_eq!(status["status"], "connected");
    assert_eq!(
        status["compression"]["server_max_window_bits"], 15,
        "the dev server compresses v2 sockets that offer it: {status}"
    );
    // Events arrive through the compressed socket.
    h.until("ws:subscribed");
    h.server.post(&h.channel, "bob", "squeezed").expect("post");
    let got = h.until("ws:message_new");
    assert!(got.last().unwrap().1.contains("squeezed"));
}

/// Waits (2 s at most) until the server has counted `n` close frames from clients.
fn wait_for_closes(server: &DevServer, n: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while server.client_closes() < n && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    server.client_closes()
}

#[test]
fn new_credentials_close_the_old_socket_with_a_close_frame_before_reconnecting() {
    let h = harness();
    h.connect();
    h.until("ws:subscribed");
    let (closes, upgrades) = (h.server.client_closes(), h.server.upgrades());
    // Another token for the same user: the socket opened with the old one is closed, and
    // one opens with the new one at once.
    let token = h.fresh_token("alice");
    invoke(
        &h.webview,
        "connect",
        json!({"options": {"server": h.server.url(), "token": token}}),
    )
    .expect("connect");
    h.until("ws:connected");
    assert_eq!(h.server.upgrades(), upgrades + 1, "one new socket");
    assert_eq!(
        wait_for_closes(&h.server, closes + 1),
        closes + 1,
        "the old socket ended with a close frame, not a reset"
    );
}

#[test]
fn a_slow_password_login_does_not_hold_up_the_other_commands() {
    let h = harness();
    h.connect();
    h.until("ws:subscribed");
    // A real Kaiku debug build answers a login in about 2 s.
    h.server
        .faults()
        .set_rest_latency(Duration::from_millis(1500));
    let (webview, server) = (h.webview.clone(), h.server.url());
    let switch = std::thread::spawn(move || {
        invoke(
            &webview,
            "connect",
            json!({"options": {"server": server, "username": "bob", "password": "password123"}}),
        )
    });
    // The login is on its way: `status` and `send` answer meanwhile, at once.
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    assert_eq!(
        invoke(&h.webview, "status", json!({})).unwrap(),
        connected_status()
    );
    invoke(
        &h.webview,
        "send",
        json!({"event": {"type": "typing", "channel_id": h.channel}}),
    )
    .expect("send");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(500),
        "status and send waited {waited:?} for another command's login"
    );
    // The switch completes: bob's session.
    switch.join().unwrap().expect("connect as bob");
    h.server.faults().set_rest_latency(Duration::ZERO);
    h.until("ws:connected");
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_proxy_from_the_webview_is_taken_by_login_and_socket_and_its_failures_have_their_own_kind() {
    let h = harness();
    let dead = format!("http://127.0.0.1:{}", dead_port());
    // The login goes to the proxy, which is not there: the kind says so, the server saw
    // nothing (nothing went around the proxy).
    let e = invoke(
        &h.webview,
        "login",
        json!({"server": h.server.url(), "username": "alice", "password": "password123", "proxy": dead}),
    )
    .expect_err("the proxy is down");
    assert_eq!(e["kind"], "proxy_unreachable", "{e}");
    let e = invoke(
        &h.webview,
        "login",
        json!({"server": h.server.url(), "username": "alice", "password": "password123", "proxy": "ftp://x"}),
    )
    .expect_err("not a proxy");
    assert_eq!(e["kind"], "invalid_argument", "{e}");

    // A token, so that only the socket takes the road: `ws:status` says why it waits.
    let token = h.fresh_token("alice");
    invoke(
        &h.webview,
        "connect",
        json!({"options": {"server": h.server.url(), "token": token, "proxy": dead}}),
    )
    .expect("connect starts");
    let (_, status) = h.until_status("reconnecting").pop().unwrap();
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["reason"], "proxy_unreachable", "{status}");
    assert!(
        status["detail"]
            .as_str()
            .unwrap()
            .contains("could not be reached"),
        "{status}"
    );
    assert_eq!(h.server.connections(), 0, "nothing went around the proxy");

    // The same server with `proxy: "none"` is another road: a new session, connected.
    invoke(
        &h.webview,
        "connect",
        json!({"options": {"server": h.server.url(), "token": token, "proxy": "none"}}),
    )
    .expect("connect");
    h.until_status("connected");
}
