//! The Kaiku frontend's side of the shim, on Tauri's mock runtime against the dev server over
//! loopback: every command invoked as the Kaiku frontend invokes it
//! (`invoke('ws_subscribe', { channelId })`), every `ws:*` event observed as it listens.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::time::Duration;

use kaiku_shim::{AppState, BoxFuture, Rtc};
use serde_json::{Value, json};
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{
    INVOKE_KEY, MockRuntime, get_ipc_response, mock_builder, mock_context, noop_assets,
};
use tauri::webview::InvokeRequest;
use tauri::{App, Listener, Manager, WebviewWindow, WebviewWindowBuilder};
use tauri_plugin_tether::TetherExt;
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
    "ws:insecure",
    "ws:voice_offer",
    "ws:voice_reset",
    "ws:voice_user_joined",
    "ws:voice_user_muted",
    "ws:voice_ice_candidate",
    "ws:voice_error",
];

type IceCallback = Box<dyn Fn(String) + Send + Sync>;

/// A media engine that records what the voice commands asked of it.
#[allow(missing_debug_implementations)]
#[derive(Clone, Default)]
pub struct FakeRtc {
    pub calls: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub ice: std::sync::Arc<std::sync::Mutex<Option<IceCallback>>>,
}

impl FakeRtc {
    fn log(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    /// The engine found a local ICE candidate.
    pub fn local_candidate(&self, candidate: &str) {
        if let Some(f) = self.ice.lock().unwrap().as_ref() {
            f(candidate.to_owned());
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Rtc for FakeRtc {
    fn connect<'a>(&'a self, channel_id: &'a str) -> BoxFuture<'a, Result<(), String>> {
        self.log(format!("connect {channel_id}"));
        Box::pin(async { Ok(()) })
    }
    fn set_on_ice_candidate(
        &self,
        callback: Box<dyn Fn(String) + Send + Sync>,
    ) -> BoxFuture<'_, ()> {
        *self.ice.lock().unwrap() = Some(callback);
        Box::pin(async {})
    }
    fn handle_offer<'a>(&'a self, sdp: &'a str) -> BoxFuture<'a, Result<String, String>> {
        self.log(format!("offer {sdp}"));
        Box::pin(async move { Ok(format!("answer to {sdp}")) })
    }
    fn add_ice_candidate<'a>(&'a self, candidate: &'a str) -> BoxFuture<'a, Result<(), String>> {
        self.log(format!("remote candidate {candidate}"));
        Box::pin(async { Ok(()) })
    }
    fn set_muted(&self, muted: bool) {
        self.log(format!("muted {muted}"));
    }
    fn disconnect(&self) -> BoxFuture<'_, Result<(), String>> {
        self.log("disconnect".into());
        Box::pin(async { Ok(()) })
    }
}

/// The plugin commands `capabilities/kaiku.json` grants (`tether:allow-<command>`).
fn capability_commands() -> Vec<String> {
    let file: Value = serde_json::from_str(include_str!("../capabilities/kaiku.json")).unwrap();
    file["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let p = p.as_str().unwrap();
            let command = p
                .strip_prefix("tether:allow-")
                .unwrap_or_else(|| panic!("a permission the test cannot map: {p}"));
            command.replace('-', "_")
        })
        .collect()
}

struct Kaiku {
    app: App<MockRuntime>,
    rtc: FakeRtc,
    webview: WebviewWindow<MockRuntime>,
    seen: mpsc::Receiver<(String, Value)>,
    server: DevServer,
    channel: String,
}

impl Kaiku {
    fn start() -> Self {
        Self::start_with(ServerConfig::default())
    }

    fn start_with(config: ServerConfig) -> Self {
        let rtc = FakeRtc::default();
        let engine = rtc.clone();
        // The webview gets what the shim's capability grants, and nothing else of the plugin.
        let mut context = mock_context(noop_assets());
        for command in capability_commands() {
            context.runtime_authority_mut().__allow_command(
                format!("plugin:tether|{command}"),
                tauri::utils::acl::ExecutionContext::Local,
            );
        }
        let app = mock_builder()
            .plugin(tauri_plugin_tether::init())
            .manage(AppState::new(move || {
                Ok(Box::new(engine.clone()) as Box<dyn Rtc>)
            }))
            .invoke_handler(kaiku_shim::handler())
            .build(context)
            .expect("app");
        kaiku_shim::network::init(app.handle());
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
        let server =
            tauri::async_runtime::block_on(DevServer::start(([127, 0, 0, 1], 0).into(), config))
                .expect("dev server");
        server.create_user("alice", "password123").expect("alice");
        server.create_user("bob", "password123").expect("bob");
        let channel = server.create_channel("general");
        Self {
            app,
            rtc,
            webview,
            seen,
            server,
            channel,
        }
    }

    /// What Kaiku's own `login` command does: its auth state gets the server and both tokens.
    fn login(&self, user: &str) {
        self.login_at(&self.server.url(), user);
    }

    fn login_at(&self, server: &str, user: &str) {
        let api = tether_tokio::Api::new(server).unwrap().allow_insecure(true);
        let creds = tauri::async_runtime::block_on(
            api.login(user, &tether_core::Secret::new("password123")),
        )
        .expect("login");
        let state = self.app.state::<AppState>();
        let mut auth = state.auth.blocking_write();
        auth.server_url = Some(server.to_owned());
        auth.access_token = Some(creds.access_token.expose().to_owned());
        auth.refresh_token = creds.refresh_token.as_ref().map(|t| t.expose().to_owned());
    }

    /// What Kaiku's own login does when it only has an access token (no refresh token).
    fn login_without_refresh(&self, user: &str) {
        self.login(user);
        self.app
            .state::<AppState>()
            .auth
            .blocking_write()
            .refresh_token = None;
    }

    /// `kaiku_shim::network::tokens_changed`, after the app's own login.
    fn tokens_changed(&self) -> Result<(), String> {
        tauri::async_runtime::block_on(kaiku_shim::network::tokens_changed(self.app.handle()))
    }

    /// `invoke('plugin:tether|<cmd>', args)` as a page could.
    fn invoke_plugin(&self, cmd: &str, args: Value) -> Result<Value, Value> {
        self.invoke(&format!("plugin:tether|{cmd}"), args)
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
    k.login("alice");
    k.tokens_changed()
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
    // `ws_send`, as the frontend calls it for what has no command of its own.
    k.ok(
        "ws_send",
        json!({"message": {"type": "typing", "channel_id": channel}}),
    );
    assert_eq!(k.any("ws:typing_start")["channel_id"], channel.as_str());
    let e = k
        .invoke("ws_send", json!({"message": {"type": "does_not_exist"}}))
        .expect_err("not a server event");
    assert!(
        e.as_str().is_some_and(|s| s.contains("voice_join")),
        "the error lists what the server accepts: {e}"
    );

    // A drop: Kaiku's status events, then what it missed, then `ws:resynced`.
    k.server.faults().drop_all();
    let missed = k
        .server
        .post(&channel, "bob", "while you were away")
        .unwrap();
    k.until("ws:disconnected", |_| true);
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

/// The legacy status events seen until (and with) the `count`-th `ws:connected`, each with
/// what `ws_status` answered right after the test saw it.
fn status_sequence(k: &Kaiku, count: usize) -> Vec<(String, Value, Value)> {
    let mut out = Vec::new();
    let mut connected = 0;
    while connected < count {
        let (name, payload) = k
            .seen
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no status event; saw {out:?}"));
        if ![
            "ws:connecting",
            "ws:connected",
            "ws:disconnected",
            "ws:reconnecting",
        ]
        .contains(&name.as_str())
        {
            continue;
        }
        connected += usize::from(name == "ws:connected");
        let status = k.ok("ws_status", json!({}));
        out.push((name, payload, status));
    }
    out
}

#[test]
fn the_frontend_hears_kaiku_s_status_order_and_ws_status_agrees_with_the_last_event() {
    let k = Kaiku::start();
    k.login("alice");
    k.ok("ws_connect", json!({}));
    let first = status_sequence(&k, 1);
    // The next retry is refused once (503), then goes through.
    k.server.faults().refuse_upgrades(503, None, Some(1));
    k.server.faults().drop_all();
    let after_drop = status_sequence(&k, 1);
    let names: Vec<String> = first
        .iter()
        .chain(&after_drop)
        .map(|(n, p, _)| format!("{n} {p}"))
        .collect();
    // Kaiku's client: `ws:connecting` once, `ws:disconnected` at the loss and after the failed
    // retry, `ws:reconnecting(n)` as each retry opens, never `ws:connecting` on a retry.
    assert_eq!(
        names,
        [
            "ws:connecting null",
            "ws:connected null",
            "ws:disconnected null",
            "ws:reconnecting 1",
            "ws:disconnected null",
            "ws:reconnecting 2",
            "ws:connected null",
        ],
        "{first:?} {after_drop:?}"
    );
    // `ws_status` right after each event: the status the event announced. A retry's socket
    // opens in a few ms on loopback, so right after `ws:reconnecting` (and the first
    // `ws:connecting`) the answer may already be the next event's; a wait (the backoff after
    // `ws:disconnected`) and a live connection are long enough to ask in.
    let statuses: Vec<(&str, &Value)> = first
        .iter()
        .chain(&after_drop)
        .map(|(n, _, s)| (n.as_str(), s))
        .collect();
    for (i, (name, status)) in statuses.iter().enumerate() {
        let announced = match *name {
            "ws:connected" => json!("connected"),
            "ws:disconnected" => json!("disconnected"),
            "ws:connecting" => json!("connecting"),
            _ => {
                json!({"reconnecting": {"attempt": names[i].rsplit(' ').next().unwrap().parse::<u32>().unwrap()}})
            }
        };
        let next = statuses.get(i + 1).map(|(n, _)| *n);
        let may_be_next = matches!(*name, "ws:reconnecting" | "ws:connecting")
            && **status
                == match next {
                    Some("ws:connected") => json!("connected"),
                    Some("ws:disconnected") => json!("disconnected"),
                    _ => Value::Null,
                };
        assert!(
            **status == announced || may_be_next,
            "after {name} ws_status said {status}, expected {announced}"
        );
    }
    tauri::async_runtime::block_on(k.server.shutdown());
}

#[test]
fn typing_and_ping_while_offline_resolve_quietly_and_are_counted() {
    let k = Kaiku::start();
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    // Offline for a while: every retry is refused, and waits at least 30 s.
    k.server
        .faults()
        .refuse_upgrades(503, Some(Duration::from_secs(30)), None);
    k.server.faults().drop_all();
    k.any("ws:disconnected");
    for (cmd, args) in [
        ("ws_typing", json!({"channelId": k.channel})),
        ("ws_stop_typing", json!({"channelId": k.channel})),
        ("ws_ping", json!({})),
        (
            "ws_send",
            json!({"message": {"type": "voice_stats", "channel_id": k.channel}}),
        ),
    ] {
        assert_eq!(
            k.invoke(cmd, args),
            Ok(Value::Null),
            "{cmd} offline resolves, as Kaiku's queued send did"
        );
    }
    let stats = tauri::async_runtime::block_on(k.app.tether().stats()).unwrap();
    assert_eq!(stats.refused_offline, 4, "each counted");
    tauri::async_runtime::block_on(k.server.shutdown());
}

#[test]
fn new_tokens_from_the_app_s_own_login_carry_the_next_reconnect() {
    let k = Kaiku::start();
    k.login_without_refresh("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");

    // The app logs in again and hands the token over; the open socket stays.
    k.login_without_refresh("alice");
    k.tokens_changed().unwrap();
    assert_eq!(k.ok("ws_status", json!({})), json!("connected"));

    // A token from another server is refused: it must never reach this one.
    k.app.state::<AppState>().auth.blocking_write().server_url =
        Some("https://other.example.com".into());
    let e = k.tokens_changed().expect_err("another server's token");
    assert!(e.contains("other.example.com"), "{e}");

    // Every token issued before is refused from now on (and tether has no refresh token
    // here): the reconnect goes through only with the new one.
    k.server.faults().expire_tokens();
    k.login_without_refresh("alice");
    k.tokens_changed().unwrap();
    k.server.faults().drop_all();
    k.until("ws:reconnecting", |_| true);
    k.until("ws:connected", |_| true);
    assert_eq!(k.ok("ws_status", json!({})), json!("connected"));
    tauri::async_runtime::block_on(k.server.shutdown());
}

#[test]
fn without_a_refresh_token_a_token_refused_for_good_waits_for_the_app_s_login() {
    let k = Kaiku::start();
    k.login_without_refresh("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    k.server.faults().expire_tokens();
    k.server.faults().drop_all();
    // No refresh token: tether says why it stopped, and waits for the app.
    let (failed, _) = k.until("ws:status", |p| p["status"] == "failed");
    assert_eq!(failed["reason"], "auth", "{failed}");
    assert_eq!(k.ok("ws_status", json!({})), json!("disconnected"));
    k.login_without_refresh("alice");
    k.tokens_changed().unwrap();
    k.any("ws:connected");
    assert_eq!(k.ok("ws_status", json!({})), json!("connected"));
    tauri::async_runtime::block_on(k.server.shutdown());
}

#[test]
fn plain_http_to_a_lan_server_needs_the_user_s_opt_in_for_that_server_and_warns() {
    // The dev server on every address, reached through this machine's own non-loopback
    // address: a server on the LAN, without TLS.
    let lan =
        lan_address().expect("this test needs an address of this machine's that is not loopback");
    let k = Kaiku::start_with(ServerConfig::default());
    let server = tauri::async_runtime::block_on(DevServer::start(
        std::net::SocketAddr::new(lan, 0),
        ServerConfig::default(),
    ))
    .expect("dev server on the LAN address");
    server.create_user("alice", "password123").expect("alice");
    let url = server.url();
    assert!(
        url.starts_with("http://") && !url.contains("127.0.0.1"),
        "{url}"
    );
    k.login_at(&url, "alice");
    let e = k.invoke("ws_connect", json!({})).expect_err("refused");
    assert!(
        e.as_str().is_some_and(|s| s.contains("http")),
        "refused before the token leaves: {e}"
    );
    assert_eq!(server.upgrades(), 0);

    let state = k.app.state::<AppState>();
    // Another port of the same host is another server: still refused.
    let other_port = format!("http://{}", std::net::SocketAddr::new(lan, 1));
    state.network.allow_plain_http(&other_port).unwrap();
    k.invoke("ws_connect", json!({})).expect_err("refused");
    state.network.allow_plain_http(&url).unwrap();
    assert!(
        state
            .network
            .allow_plain_http("https://chat.example.com")
            .is_err(),
        "only http:// needs an opt-in"
    );
    k.ok("ws_connect", json!({}));
    let warning = k.any("ws:insecure");
    assert_eq!(warning["server"], url.as_str());
    k.any("ws:connected");
    assert_eq!(server.upgrades(), 1);
    k.ok("ws_disconnect", json!({}));
    tauri::async_runtime::block_on(server.shutdown());
    tauri::async_runtime::block_on(k.server.shutdown());
}

/// An address of this machine that is not loopback, if it has one.
fn lan_address() -> Option<std::net::IpAddr> {
    // Connecting a UDP socket sends nothing; it picks the interface a route would use.
    for probe in ["192.0.2.1:9", "[2001:db8::1]:9", "10.255.255.1:9"] {
        let bind = if probe.starts_with('[') {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        };
        if let Ok(s) = std::net::UdpSocket::bind(bind)
            && s.connect(probe).is_ok()
            && let Ok(a) = s.local_addr()
            && !a.ip().is_loopback()
            && !a.ip().is_unspecified()
        {
            return Some(a.ip());
        }
    }
    None
}

#[test]
fn tokens_of_20_s_outlive_several_expiries_across_drops_with_no_failure() {
    let life = Duration::from_secs(20);
    let mut config = ServerConfig::default();
    config.access_ttl = life;
    let k = Kaiku::start_with(config);
    // Kaiku's keyring, as `network.on_refresh_token` fills it.
    let keyring = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let store = keyring.clone();
    let server_url = k.server.url();
    k.app
        .state::<AppState>()
        .network
        .on_refresh_token(move |server, token| {
            assert_eq!(server, server_url, "the pair's server");
            store.lock().unwrap().push(token.to_owned());
        });
    k.login("alice");
    let first = k
        .app
        .state::<AppState>()
        .auth
        .blocking_read()
        .refresh_token
        .clone();
    k.ok("ws_connect", json!({}));
    k.ok("ws_subscribe", json!({"channelId": k.channel}));
    k.until("ws:subscribed", |_| true);
    // A live message shows tether the server's message clock (without one, a catch-up cannot
    // prove a channel that never saw a message complete).
    k.server.post(&k.channel, "bob", "hello").unwrap();
    k.until("ws:message_new", |_| true);

    // Three lifetimes and more, a drop every 12 s with a message missed in each (each
    // connection outlives the 10 s after which the backoff starts over).
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    let mut drops = 0;
    while started.elapsed() < 3 * life + Duration::from_secs(5) {
        std::thread::sleep(Duration::from_secs(12));
        k.server.faults().drop_all();
        drops += 1;
        let missed = k
            .server
            .post(&k.channel, "alice", &format!("missed {drops}"))
            .unwrap();
        let (resynced, before) = k.until("ws:resynced", |_| true);
        assert_eq!(resynced["complete"], true, "drop {drops}: {resynced}");
        assert!(
            before
                .iter()
                .any(|(n, p)| n == "ws:message_new" && p["message"]["id"] == missed.as_str()),
            "drop {drops}: the missed message"
        );
        seen.extend(before);
    }
    let failures: Vec<_> = seen
        .iter()
        .filter(|(n, p)| n == "ws:status" && p["status"] == "failed")
        .collect();
    assert!(failures.is_empty(), "no failed/auth: {failures:?}");

    // Every rotation reached the keyring and the auth state, and the last is the live one.
    let rotated = keyring.lock().unwrap().clone();
    assert!(
        rotated.len() >= 3,
        "a refresh per lifetime: {}",
        rotated.len()
    );
    let held = k
        .app
        .state::<AppState>()
        .auth
        .blocking_read()
        .refresh_token
        .clone();
    assert_eq!(held.as_deref(), rotated.last().map(String::as_str));
    let api = tether_tokio::Api::new(&k.server.url()).unwrap();
    let refresh =
        |t: &str| tauri::async_runtime::block_on(api.refresh(&tether_core::Secret::new(t)));
    assert!(
        refresh(first.as_deref().unwrap()).is_err(),
        "the login's refresh token was rotated away"
    );
    assert!(
        refresh(rotated.last().unwrap()).is_ok(),
        "the keyring holds the server's current refresh token"
    );
    tauri::async_runtime::block_on(k.server.shutdown());
}

#[test]
fn the_webview_may_call_network_changed_and_nothing_else_of_the_plugin() {
    let k = Kaiku::start();
    assert_eq!(capability_commands(), ["network_changed"]);
    k.login("alice");
    // Everything Kaiku's frontend calls works: its own commands.
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    // The plugin's page script (`online`, `visibilitychange`).
    assert_eq!(
        k.invoke_plugin("network_changed", json!({})),
        Ok(Value::Null)
    );
    // A script in the page cannot log in elsewhere, read history or send on the user's
    // behalf through the plugin.
    for (cmd, args) in [
        (
            "connect",
            json!({"options": {"server": "https://elsewhere.example"}}),
        ),
        (
            "login",
            json!({"server": "https://elsewhere.example", "username": "a", "password": "b"}),
        ),
        ("history", json!({"channelId": k.channel})),
        ("send", json!({"event": {"type": "ping"}})),
        ("status", json!({})),
        ("disconnect", json!({})),
    ] {
        let e = k.invoke_plugin(cmd, args).expect_err("not granted");
        assert!(
            e.to_string().contains("not allowed"),
            "plugin:tether|{cmd}: {e}"
        );
    }
    assert_eq!(k.ok("ws_status", json!({})), json!("connected"));
    tauri::async_runtime::block_on(k.server.shutdown());
}

#[test]
fn voice_joins_answers_and_is_rebuilt_after_a_drop() {
    let k = Kaiku::start();
    let voice = k.server.create_channel("voice");
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");

    // Join: the peer connection, then `voice_join`; the server offers, the app answers.
    k.ok("join_voice", json!({"channelId": voice}));
    let (offer, _) = k.until("ws:voice_offer", |p| p["channel_id"] == voice.as_str());
    let sdp = offer["sdp"].as_str().unwrap().to_owned();
    k.ok(
        "handle_voice_offer",
        json!({"channelId": voice, "sdp": sdp}),
    );
    let (candidate, _) = k.until("ws:voice_ice_candidate", |_| true);
    k.ok(
        "handle_voice_ice_candidate",
        json!({"channelId": voice, "candidate": candidate["candidate"]}),
    );
    k.rtc
        .local_candidate("candidate:1 1 udp 2130706431 192.0.2.2 50000 typ host");
    k.ok("set_mute", json!({"muted": true}));
    assert_eq!(k.ok("is_in_voice", json!({})), json!(true));
    assert_eq!(k.ok("get_voice_channel", json!({})), json!(voice));
    assert_eq!(
        k.rtc.calls(),
        [
            format!("connect {voice}"),
            format!("offer {sdp}"),
            format!(
                "remote candidate {}",
                candidate["candidate"].as_str().unwrap()
            ),
            "muted true".to_owned(),
        ]
    );
    let e = k
        .invoke("join_voice", json!({"channelId": voice}))
        .expect_err("in a channel already");
    assert!(e.to_string().contains("Leave first"), "{e}");

    // A drop: tether joins again on the new socket and tells the app; the shim replaces the
    // peer connection. Kaiku's server still holds the user's old peer and says so; Kaiku's
    // frontend then leaves and joins again through `ws_send` (its own retry), and the server
    // offers afresh.
    k.server.faults().drop_all();
    let (reset, _) = k.until("ws:voice_reset", |_| true);
    assert_eq!(reset["channel_id"], voice.as_str());
    let (error, _) = k.until("ws:voice_error", |_| true);
    assert_eq!(error["message"], "Already in voice channel", "{error}");
    k.ok(
        "ws_send",
        json!({"message": {"type": "voice_leave", "channel_id": voice}}),
    );
    k.ok(
        "ws_send",
        json!({"message": {"type": "voice_join", "channel_id": voice}}),
    );
    let (offer, _) = k.until("ws:voice_offer", |p| p["channel_id"] == voice.as_str());
    let sdp = offer["sdp"].as_str().unwrap().to_owned();
    k.ok(
        "handle_voice_offer",
        json!({"channelId": voice, "sdp": sdp}),
    );
    let after: Vec<String> = k.rtc.calls().split_off(4);
    assert_eq!(
        after,
        [
            "disconnect".to_owned(),
            format!("connect {voice}"),
            format!("offer {sdp}"),
        ],
        "a fresh peer connection, negotiated by the new offer"
    );
    assert_eq!(k.ok("get_voice_channel", json!({})), json!(voice));

    // Leaving ends the replay: the next drop re-joins nothing.
    k.ok("leave_voice", json!({}));
    assert_eq!(k.ok("is_in_voice", json!({})), json!(false));
    k.server.faults().drop_all();
    let (_, before) = k.until("ws:connected", |_| true);
    k.ok("ws_ping", json!({}));
    std::thread::sleep(Duration::from_millis(300));
    let late: Vec<String> = before
        .iter()
        .map(|(n, _)| n.clone())
        .chain(k.seen.try_iter().map(|(n, _)| n))
        .collect();
    assert!(
        !late
            .iter()
            .any(|n| n == "ws:voice_reset" || n == "ws:voice_offer"),
        "{late:?}"
    );
    tauri::async_runtime::block_on(k.server.shutdown());
}
