//! An outside tester's attacks on the promises of docs/embedding.md and DESIGN.md, through the
//! Kaiku port on Tauri's mock runtime against the dev server over loopback. Each test passes
//! when the promise holds; a test that exposes a real break is marked
//! `#[ignore = "BREAK: ..."]` (run them with `--ignored`); each break found was fixed or
//! documented (issue 19's note), and its test runs by default.
//!
//! The harness (`Kaiku`, `FakeRtc`) is copied from `kaiku_frontend.rs` and extended: every
//! event is logged with a sequence number, the app's keyring is always installed, and a
//! tracing subscriber captures every log line (for the secrets attacks).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use kaiku_shim::{AppState, AuthState, BoxFuture, Rtc};
use serde_json::{Value, json};
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{
    INVOKE_KEY, MockRuntime, get_ipc_response, mock_builder, mock_context, noop_assets,
};
use tauri::webview::InvokeRequest;
use tauri::{App, Listener, Manager, WebviewWindow, WebviewWindowBuilder};
use tauri_plugin_tether::{ConnectOptions, TetherExt};
use tether_core::{Credentials, Secret};
use tether_devserver::{DevServer, ServerConfig};

/// Every event name a test here looks at.
const LISTENED: &[&str] = &[
    "ws:connecting",
    "ws:connected",
    "ws:disconnected",
    "ws:reconnecting",
    "ws:ready",
    "ws:error",
    "ws:subscribed",
    "ws:unsubscribed",
    "ws:message_new",
    "ws:message_update",
    "ws:typing_start",
    "ws:typing_stop",
    "ws:presence_update",
    "ws:rich_presence_update",
    "ws:custom_status_update",
    "ws:resynced",
    "ws:status",
    "ws:insecure",
    "ws:subscription_uncertain",
    "ws:subscription_rejected",
    "ws:rate_limited",
    "ws:voice_offer",
    "ws:voice_reset",
    "ws:voice_room_state",
    "ws:voice_user_joined",
    "ws:voice_user_muted",
    "ws:voice_ice_candidate",
    "ws:voice_error",
];

const LEGACY: &[&str] = &[
    "ws:connecting",
    "ws:connected",
    "ws:disconnected",
    "ws:reconnecting",
];

// ---------------------------------------------------------------------------------------------
// Log capture: a tracing subscriber that keeps every line (target, fields, span fields).

static LOGS: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();

fn logs() -> Arc<Mutex<Vec<String>>> {
    LOGS.get_or_init(|| {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sub = Capture {
            lines: lines.clone(),
            next: AtomicU64::new(1),
        };
        let _ = tracing::subscriber::set_global_default(sub);
        lines
    })
    .clone()
}

struct Capture {
    lines: Arc<Mutex<Vec<String>>>,
    next: AtomicU64,
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        let _ = write!(self.0, "{}={} ", field.name(), value);
    }
}

impl Capture {
    fn keep(&self, target: &str, fields: String) {
        // The dev server is the test's, not tether's: what it logs is not the client's leak.
        if target.starts_with("tether_devserver") {
            return;
        }
        self.lines
            .lock()
            .unwrap()
            .push(format!("{target}: {fields}"));
    }
}

impl tracing::Subscriber for Capture {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::always()
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut f = Fields(format!("span {} ", span.metadata().name()));
        span.record(&mut f);
        self.keep(span.metadata().target(), f.0);
        tracing::span::Id::from_u64(self.next.fetch_add(1, Ordering::Relaxed))
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut f = Fields(String::from("record "));
        values.record(&mut f);
        self.keep("record", f.0);
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut f = Fields(String::new());
        event.record(&mut f);
        self.keep(event.metadata().target(), f.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

// ---------------------------------------------------------------------------------------------
// The media engine (copied from kaiku_frontend.rs).

type IceCallback = Box<dyn Fn(String) + Send + Sync>;

#[derive(Clone, Default)]
pub struct FakeRtc {
    pub calls: Arc<Mutex<Vec<String>>>,
    pub ice: Arc<Mutex<Option<IceCallback>>>,
}

impl FakeRtc {
    fn log(&self, call: String) {
        self.calls.lock().unwrap().push(call);
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

// ---------------------------------------------------------------------------------------------
// The app.

/// One event as a listener saw it: its sequence number, when, name, payload.
#[derive(Clone, Debug)]
struct Seen {
    seq: u64,
    at: Instant,
    name: String,
    payload: Value,
}

struct Kaiku {
    app: App<MockRuntime>,
    rtc: FakeRtc,
    webview: WebviewWindow<MockRuntime>,
    seen: mpsc::Receiver<(String, Value)>,
    log: Arc<Mutex<Vec<Seen>>>,
    seq: Arc<AtomicU64>,
    /// Kaiku's keyring: every `(when, refresh token)` `store_refresh_token` got, from
    /// tether's `on_refresh_token` and from the app's own logins.
    keyring: Arc<Mutex<Vec<(Instant, String)>>>,
    server: DevServer,
    channel: String,
}

fn config_with_ttl(secs: u64) -> ServerConfig {
    let mut c = ServerConfig::default();
    c.access_ttl = Duration::from_secs(secs);
    c
}

impl Kaiku {
    fn start() -> Self {
        Self::start_with(ServerConfig::default())
    }

    fn start_with(config: ServerConfig) -> Self {
        let _ = logs();
        let rtc = FakeRtc::default();
        let engine = rtc.clone();
        let mut context = mock_context(noop_assets());
        context.runtime_authority_mut().__allow_command(
            "plugin:tether|network_changed".to_owned(),
            tauri::utils::acl::ExecutionContext::Local,
        );
        let app = mock_builder()
            .plugin(tauri_plugin_tether::init())
            .manage(AppState::new(move || {
                Ok(Box::new(engine.clone()) as Box<dyn Rtc>)
            }))
            .invoke_handler(kaiku_shim::handler())
            .build(context)
            .expect("app");
        kaiku_shim::network::init(app.handle());
        let keyring = Arc::new(Mutex::new(Vec::new()));
        let ring = keyring.clone();
        app.state::<AppState>()
            .network
            .on_refresh_token(move |_server, token| {
                ring.lock()
                    .unwrap()
                    .push((Instant::now(), token.to_owned()));
            });
        let webview = WebviewWindowBuilder::new(&app, "main", Default::default())
            .build()
            .expect("webview");
        let (tx, seen) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let seq = Arc::new(AtomicU64::new(1));
        for name in LISTENED {
            let tx = tx.clone();
            let log = log.clone();
            let seq = seq.clone();
            app.listen_any(*name, move |e| {
                let payload: Value = serde_json::from_str(e.payload()).expect("payloads are JSON");
                log.lock().unwrap().push(Seen {
                    seq: seq.fetch_add(1, Ordering::SeqCst),
                    at: Instant::now(),
                    name: (*name).to_owned(),
                    payload: payload.clone(),
                });
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
            log,
            seq,
            keyring,
            server,
            channel,
        }
    }

    /// Kaiku's own `login`: the auth state gets the server and both tokens (over REST).
    fn login(&self, user: &str) {
        let api = tether_tokio::Api::new(&self.server.url()).unwrap();
        let creds = tauri::async_runtime::block_on(api.login(user, &Secret::new("password123")))
            .expect("login");
        self.set_auth(
            creds.access_token.expose(),
            creds.refresh_token.as_ref().map(Secret::expose),
        );
    }

    /// A login that does not wait for the REST latency: the tokens straight from the store.
    /// Like Kaiku's login, it stores the refresh token in the keyring too.
    fn login_now(&self, user: &str) -> (String, String) {
        let tokens = self.server.with_store(|s| {
            let id = s.user_by_name(user).expect("user").id.clone();
            s.issue_tokens(&id)
        });
        let access = tokens["access_token"].as_str().unwrap().to_owned();
        let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
        self.set_auth(&access, Some(&refresh));
        self.keyring
            .lock()
            .unwrap()
            .push((Instant::now(), refresh.clone()));
        (access, refresh)
    }

    fn set_auth(&self, access: &str, refresh: Option<&str>) {
        let state = self.app.state::<AppState>();
        let mut auth = state.auth.blocking_write();
        auth.server_url = Some(self.server.url());
        auth.access_token = Some(access.to_owned());
        auth.refresh_token = refresh.map(str::to_owned);
    }

    /// `(access, refresh)` of the app's auth state.
    /// The auth state's tokens, once a rotation that reached the keyring has reached it too:
    /// the shim updates it as soon as it gets the lock (a second at most here).
    fn auth(&self) -> (Option<String>, Option<String>) {
        let state = self.app.state::<AppState>();
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let (access, refresh) = {
                let auth = state.auth.blocking_read();
                (auth.access_token.clone(), auth.refresh_token.clone())
            };
            let stored = self.keyring().last().cloned();
            if stored.is_none() || refresh == stored || Instant::now() > deadline {
                return (access, refresh);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn keyring(&self) -> Vec<String> {
        self.keyring
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t)| t.clone())
            .collect()
    }

    fn tokens_changed(&self) -> Result<(), String> {
        tauri::async_runtime::block_on(kaiku_shim::network::tokens_changed(self.app.handle()))
    }

    fn invoke_plugin(&self, cmd: &str, args: Value) -> Result<Value, Value> {
        self.invoke(&format!("plugin:tether|{cmd}"), args)
    }

    fn invoke(&self, cmd: &str, args: Value) -> Result<Value, Value> {
        invoke_on(&self.webview, cmd, args)
    }

    fn ok(&self, cmd: &str, args: Value) -> Value {
        self.invoke(cmd, args)
            .unwrap_or_else(|e| panic!("{cmd} failed: {e}"))
    }

    fn status(&self) -> Value {
        self.ok("ws_status", json!({}))
    }

    /// Events until one named `name` whose payload passes `check` (within `wait`): that
    /// payload, and everything seen before it.
    fn until_within(
        &self,
        wait: Duration,
        name: &str,
        check: impl Fn(&Value) -> bool,
    ) -> (Value, Vec<(String, Value)>) {
        let deadline = Instant::now() + wait;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (n, p) = self
                .seen
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {name} within {wait:?}; saw {before:?}"));
            if n == name && check(&p) {
                return (p, before);
            }
            before.push((n, p));
        }
    }

    fn until(&self, name: &str, check: impl Fn(&Value) -> bool) -> (Value, Vec<(String, Value)>) {
        self.until_within(Duration::from_secs(20), name, check)
    }

    fn any(&self, name: &str) -> Value {
        self.until(name, |_| true).0
    }

    /// Everything that arrives within `wait`.
    fn drain_for(&self, wait: Duration) -> Vec<(String, Value)> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while let Ok(e) = self
            .seen
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            out.push(e);
        }
        out
    }

    /// Drains events until `cond` holds (checked every 50 ms), `wait` at most.
    fn drain_until(&self, wait: Duration, what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + wait;
        while !cond() {
            assert!(Instant::now() < deadline, "{what}: not within {wait:?}");
            let _ = self.seen.recv_timeout(Duration::from_millis(50));
        }
    }

    /// Drains events until `at`.
    fn drain_to(&self, at: Instant) {
        while Instant::now() < at {
            let _ = self
                .seen
                .recv_timeout(at.saturating_duration_since(Instant::now()));
        }
    }

    /// Every event logged so far.
    fn logged(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    fn failures(&self) -> Vec<Value> {
        self.logged()
            .into_iter()
            .filter(|e| e.name == "ws:status" && e.payload["status"] == "failed")
            .map(|e| e.payload)
            .collect()
    }

    fn refresh_ok(&self, token: &str) -> bool {
        let api = tether_tokio::Api::new(&self.server.url()).unwrap();
        tauri::async_runtime::block_on(api.refresh(&Secret::new(token))).is_ok()
    }

    fn access_valid(&self, token: &str) -> bool {
        self.server.with_store(|s| s.check_access(token).is_ok())
    }

    fn shutdown(self) {
        tauri::async_runtime::block_on(self.server.shutdown());
    }
}

fn invoke_on(webview: &WebviewWindow<MockRuntime>, cmd: &str, args: Value) -> Result<Value, Value> {
    get_ipc_response(
        webview,
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

// ---------------------------------------------------------------------------------------------
// Kaiku's status order, checked.

/// What `ws_status` should answer after a legacy event.
fn announced(name: &str, payload: &Value) -> Value {
    match name {
        "ws:connected" => json!("connected"),
        "ws:disconnected" => json!("disconnected"),
        "ws:connecting" => json!("connecting"),
        "ws:reconnecting" => json!({"reconnecting": {"attempt": payload}}),
        other => panic!("not a legacy event: {other}"),
    }
}

fn legacy(events: &[Seen]) -> Vec<Seen> {
    events
        .iter()
        .filter(|e| LEGACY.contains(&e.name.as_str()))
        .cloned()
        .collect()
}

fn names(events: &[Seen]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e.payload {
            Value::Null => e.name.clone(),
            ref p => format!("{} {p}", e.name),
        })
        .collect()
}

/// Kaiku's order over `events` (legacy ones; `fresh` when they start at a `ws_connect`):
/// `ws:connecting` only first; `ws:reconnecting(n)` only after `ws:disconnected`, the attempts
/// of one outage consecutive; `ws:connected` only after `ws:connecting` or `ws:reconnecting`;
/// `ws:disconnected` never straight after `ws:disconnected`.
fn check_kaiku_order(events: &[Seen], fresh: bool) -> Result<(), String> {
    let l = legacy(events);
    let shown = names(&l);
    let mut last_attempt: Option<u64> = None;
    for (i, e) in l.iter().enumerate() {
        let prev = i.checked_sub(1).map(|j| l[j].name.as_str());
        match e.name.as_str() {
            "ws:connecting" if !(fresh && i == 0) => {
                return Err(format!("ws:connecting at {i} (a retry?): {shown:?}"));
            }
            "ws:reconnecting" => {
                if prev != Some("ws:disconnected") {
                    return Err(format!(
                        "ws:reconnecting at {i} not after ws:disconnected: {shown:?}"
                    ));
                }
                let n = e.payload.as_u64().ok_or(format!("attempt {}", e.payload))?;
                if let Some(m) = last_attempt
                    && n != m + 1
                {
                    return Err(format!("attempt {n} after {m} in one outage: {shown:?}"));
                }
                if n == 0 {
                    return Err(format!("attempt 0: {shown:?}"));
                }
                last_attempt = Some(n);
            }
            "ws:connected" => {
                if !matches!(prev, Some("ws:connecting" | "ws:reconnecting")) {
                    return Err(format!("ws:connected at {i} after {prev:?}: {shown:?}"));
                }
                last_attempt = None;
            }
            "ws:disconnected" if prev == Some("ws:disconnected") => {
                return Err(format!("ws:disconnected twice at {i}: {shown:?}"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Asks `ws_status` over and over from another thread, each answer with the sequence number
/// of the last event logged before the question was asked.
struct Poller {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<(u64, Value)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    fn start(k: &Kaiku) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let webview = k.webview.clone();
        let seq = k.seq.clone();
        let (s, a) = (stop.clone(), answers.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                // Every event numbered below `before` was seen by its listener before the
                // question.
                let before = seq.load(Ordering::SeqCst);
                if let Ok(v) = invoke_on(&webview, "ws_status", json!({})) {
                    a.lock().unwrap().push((before, v));
                }
                std::thread::sleep(Duration::from_millis(3));
            }
        });
        Self {
            stop,
            answers,
            thread: Some(thread),
        }
    }

    /// Stops, and checks every answer against the events: never older than the last legacy
    /// event seen before the question (the answer may be that event's or a later one's).
    fn check(mut self, k: &Kaiku) -> Result<usize, String> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let events = legacy(&k.logged());
        let answers = self.answers.lock().unwrap().clone();
        for (before, answer) in &answers {
            let Some(idx) = events.iter().rposition(|e| e.seq < *before) else {
                continue;
            };
            let ok = events[idx..]
                .iter()
                .any(|e| announced(&e.name, &e.payload) == *answer);
            if !ok {
                return Err(format!(
                    "ws_status said {answer} after {} {} (event #{}); events: {:?}",
                    events[idx].name,
                    events[idx].payload,
                    events[idx].seq,
                    names(&events)
                ));
            }
        }
        Ok(answers.len())
    }
}

/// Legacy events from the log logged after sequence number `from`.
fn legacy_since(k: &Kaiku, from: u64) -> Vec<Seen> {
    legacy(
        &k.logged()
            .into_iter()
            .filter(|e| e.seq >= from)
            .collect::<Vec<_>>(),
    )
}

fn next_seq(k: &Kaiku) -> u64 {
    k.seq.load(Ordering::SeqCst)
}

// =============================================================================================
// 1. Refresh with an app-held, rotating refresh token.

/// 6-s tokens, no drop: tether refreshes ahead (each pair to the keyring and the auth state,
/// every earlier refresh token spent); a drop after the login's token died reconnects with one
/// upgrade (no dead token tried), and catches up.
#[test]
fn refresh_ahead_rotates_and_the_reconnect_after_expiry_tries_no_dead_token() {
    let k = Kaiku::start_with(config_with_ttl(6));
    k.login("alice");
    let (a0, r0) = k.auth();
    let (a0, r0) = (a0.unwrap(), r0.unwrap());
    k.ok("ws_connect", json!({}));
    k.ok("ws_subscribe", json!({"channelId": k.channel}));
    k.until("ws:subscribed", |_| true);
    k.server.post(&k.channel, "bob", "anchor").unwrap();
    k.until("ws:message_new", |_| true);

    k.drain_until(Duration::from_secs(15), "two rotations", || {
        k.keyring.lock().unwrap().len() >= 2
    });
    assert!(
        !k.access_valid(&a0),
        "precondition: the login's access token is dead"
    );
    let upgrades = k.server.upgrades();
    k.server.faults().drop_all();
    let missed = k.server.post(&k.channel, "bob", "missed").unwrap();
    let (resynced, before) = k.until("ws:resynced", |_| true);
    assert_eq!(resynced["complete"], true, "{resynced}");
    assert!(
        before
            .iter()
            .any(|(n, p)| n == "ws:message_new" && p["message"]["id"] == missed.as_str()),
        "{before:?}"
    );
    assert_eq!(
        k.server.upgrades(),
        upgrades + 1,
        "the reconnect used a live token at once (no 401 first)"
    );
    assert!(k.failures().is_empty(), "{:?}", k.failures());

    let ring = k.keyring();
    let (access, refresh) = k.auth();
    assert_eq!(
        refresh.as_deref(),
        ring.last().map(String::as_str),
        "auth = keyring"
    );
    assert!(
        k.access_valid(access.as_deref().unwrap()),
        "auth's access token lives"
    );
    let distinct: std::collections::BTreeSet<_> = ring.iter().collect();
    assert_eq!(distinct.len(), ring.len(), "each rotation new");
    k.ok("ws_disconnect", json!({}));
    assert!(!k.refresh_ok(&r0), "the login's refresh token was spent");
    for old in &ring[..ring.len() - 1] {
        assert!(!k.refresh_ok(old), "an earlier rotated token was spent");
    }
    assert!(
        k.refresh_ok(ring.last().unwrap()),
        "the keyring's last token lives"
    );
    k.shutdown();
}

/// 10-s tokens, REST answers 4 s late: tether's refresh is in flight when every access token
/// expires and the link drops. The retry meets a 401; tether must not refresh a second time
/// with the same (by then spent) refresh token: no `failed`, one rotation.
#[test]
fn a_401_while_a_refresh_is_in_flight_never_spends_the_refresh_token_twice() {
    let k = Kaiku::start_with(config_with_ttl(10));
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    let t0 = Instant::now();
    k.server.faults().set_rest_latency(Duration::from_secs(4));
    // The refresh goes at ~8 s (80 % of 10) and is answered at ~12 s.
    k.drain_to(t0 + Duration::from_millis(9000));
    assert!(
        k.keyring().is_empty(),
        "precondition: no refresh answered yet"
    );
    let attack = Instant::now();
    k.server.faults().expire_tokens();
    k.server.faults().drop_all();
    let (_, seen) = k.until("ws:connected", |_| true);
    let refreshes = k.keyring.lock().unwrap().clone();
    assert!(
        k.failures().is_empty(),
        "no failed: {:?} {seen:?}",
        k.failures()
    );
    assert_eq!(refreshes.len(), 1, "one rotation: {}", refreshes.len());
    let answered = refreshes[0].0;
    assert!(
        answered > attack && answered < attack + Duration::from_millis(4500),
        "precondition: the refresh was in flight at the attack ({:?} after)",
        answered.saturating_duration_since(attack)
    );
    k.server.faults().clear();
    k.ok("ws_disconnect", json!({}));
    let (_, refresh) = k.auth();
    assert!(
        k.refresh_ok(&refresh.unwrap()),
        "the app's refresh token lives"
    );
    k.shutdown();
}

/// 8-s tokens, REST answers 3 s late: the user closes the connection (`ws_disconnect`) while
/// tether's refresh is in flight. Whatever tether does with that refresh, the app must not be
/// left holding a spent refresh token: the next `ws_connect`, once the access token is dead,
/// must come back without `failed/auth`.
#[test]
fn ws_disconnect_during_a_refresh_in_flight_leaves_the_app_a_live_refresh_token() {
    let k = Kaiku::start_with(config_with_ttl(8));
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    let t0 = Instant::now();
    k.server.faults().set_rest_latency(Duration::from_secs(3));
    // The refresh goes at ~6.4 s and is answered at ~9.4 s.
    k.drain_to(t0 + Duration::from_millis(7500));
    assert!(
        k.keyring().is_empty(),
        "precondition: no refresh answered yet"
    );
    k.ok("ws_disconnect", json!({}));
    k.drain_to(t0 + Duration::from_millis(11_000));
    k.server.faults().clear();
    k.server.faults().expire_tokens();
    let from = next_seq(&k);
    k.ok("ws_connect", json!({}));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events: Vec<Seen> = k.logged().into_iter().filter(|e| e.seq >= from).collect();
        if let Some(f) = events
            .iter()
            .find(|e| e.name == "ws:status" && e.payload["status"] == "failed")
        {
            panic!(
                "the app's refresh token was spent by the abandoned refresh: {} (keyring got {} pairs)",
                f.payload,
                k.keyring().len()
            );
        }
        if events.iter().any(|e| e.name == "ws:connected") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ws:connected: {:?}",
            names(&events)
        );
        let _ = k.seen.recv_timeout(Duration::from_millis(50));
    }
    k.shutdown();
}

/// 8-s tokens, REST answers 3 s late: while tether's refresh is in flight, the app logs in
/// again and calls `tokens_changed`. Afterwards tether and the app agree on a live pair: a
/// drop with every access token dead comes back without `failed`, and the keyring's (and
/// the auth state's) refresh token works for the next start of the app.
#[test]
fn tokens_changed_during_a_refresh_in_flight_ends_with_a_live_keyring() {
    let k = Kaiku::start_with(config_with_ttl(8));
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    let t0 = Instant::now();
    k.server.faults().set_rest_latency(Duration::from_secs(3));
    k.drain_to(t0 + Duration::from_millis(7500));
    assert!(
        k.keyring().is_empty(),
        "precondition: no refresh answered yet"
    );
    k.login_now("alice");
    k.tokens_changed().expect("tokens_changed");
    k.drain_to(t0 + Duration::from_millis(11_000));
    k.server.faults().clear();

    k.server.faults().expire_tokens();
    k.server.faults().drop_all();
    k.until("ws:connected", |_| true);
    k.drain_for(Duration::from_millis(300));
    assert!(k.failures().is_empty(), "{:?}", k.failures());
    k.ok("ws_disconnect", json!({}));
    let ring = k.keyring();
    let (_, refresh) = k.auth();
    assert_eq!(
        refresh.as_deref(),
        ring.last().map(String::as_str),
        "auth = keyring"
    );
    assert!(
        k.refresh_ok(ring.last().unwrap()),
        "the keyring's last refresh token lives (keyring: {} entries)",
        ring.len()
    );
    k.shutdown();
}

/// 5-s tokens: after rotations, `ws_disconnect` then `ws_connect` (which reads the auth
/// state) connects with the rotated access token at once, and with every access token dead it
/// refreshes with the rotated refresh token.
#[test]
fn ws_connect_after_rotations_uses_the_rotated_tokens_from_the_auth_state() {
    let k = Kaiku::start_with(config_with_ttl(5));
    k.login("alice");
    let a0 = k.auth().0.unwrap();
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    k.drain_until(Duration::from_secs(12), "two rotations", || {
        k.keyring.lock().unwrap().len() >= 2
    });
    assert!(
        !k.access_valid(&a0),
        "precondition: the login's access token is dead"
    );
    k.ok("ws_disconnect", json!({}));
    k.any("ws:disconnected");
    let upgrades = k.server.upgrades();
    k.ok("ws_connect", json!({}));
    k.until("ws:connected", |_| true);
    assert_eq!(k.server.upgrades(), upgrades + 1, "no 401 first");

    k.ok("ws_disconnect", json!({}));
    k.any("ws:disconnected");
    k.server.faults().expire_tokens();
    k.ok("ws_connect", json!({}));
    k.until("ws:connected", |_| true);
    assert!(k.failures().is_empty(), "{:?}", k.failures());
    k.ok("ws_disconnect", json!({}));
    let (_, refresh) = k.auth();
    assert_eq!(refresh.as_deref(), k.keyring().last().map(String::as_str));
    assert!(k.refresh_ok(&refresh.unwrap()));
    k.shutdown();
}

/// 5-s tokens, the server down for 8 s (a restart): the token dies while the link is down;
/// the link comes back without `failed`, caught up.
#[test]
fn a_link_down_longer_than_a_token_s_life_comes_back_caught_up() {
    let mut k = Kaiku::start_with(config_with_ttl(5));
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.ok("ws_subscribe", json!({"channelId": k.channel}));
    k.until("ws:subscribed", |_| true);
    k.server.post(&k.channel, "bob", "anchor").unwrap();
    k.until("ws:message_new", |_| true);
    tauri::async_runtime::block_on(k.server.restart(Duration::from_secs(8))).unwrap();
    let missed = k.server.post(&k.channel, "bob", "missed").unwrap();
    // The webview comes back online: skip the backoff.
    k.invoke_plugin("network_changed", json!({})).unwrap();
    let (resynced, before) = k.until("ws:resynced", |_| true);
    assert_eq!(resynced["complete"], true, "{resynced}");
    assert!(
        before
            .iter()
            .any(|(n, p)| n == "ws:message_new" && p["message"]["id"] == missed.as_str())
    );
    assert!(k.failures().is_empty(), "{:?}", k.failures());
    k.ok("ws_disconnect", json!({}));
    let (_, refresh) = k.auth();
    assert_eq!(refresh.as_deref(), k.keyring().last().map(String::as_str));
    assert!(k.refresh_ok(&refresh.unwrap()));
    k.shutdown();
}

/// 10-s tokens; after the first connect every upgrade is held 3 s (its token checked when
/// answered) and REST answers 1.5 s late. The retry after a drop at 6.5 s goes with the
/// login's token; tether's refresh (at ~8 s, answered ~9.5 s) lands while that upgrade is
/// held, and the token dies (at ~10 s) before the answer (~10.5 s). The 401 is for a replaced
/// token: retried at once with the current one (no backoff wait), no `failed`.
#[test]
fn a_token_that_dies_while_its_upgrade_is_held_is_retried_at_once_with_the_refreshed_one() {
    let k = Kaiku::start_with(config_with_ttl(10));
    k.login("alice");
    let login = Instant::now();
    k.ok("ws_connect", json!({}));
    k.until("ws:connected", |_| true);
    k.server.faults().delay_upgrades(Duration::from_secs(3));
    k.server
        .faults()
        .set_rest_latency(Duration::from_millis(1500));
    let from = next_seq(&k);
    k.drain_to(login + Duration::from_millis(6500));
    let upgrades = k.server.upgrades();
    k.server.faults().drop_all();
    // When each upgrade reaches the server.
    let mut arrivals = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !legacy_since(&k, from)
        .iter()
        .any(|e| e.name == "ws:connected")
    {
        assert!(
            Instant::now() < deadline,
            "no ws:connected: {:?} {:?}",
            names(&k.logged()[..]),
            k.failures()
        );
        let n = k.server.upgrades();
        if n > upgrades + arrivals.len() as u64 {
            arrivals.push(Instant::now());
        }
        let _ = k.seen.recv_timeout(Duration::from_millis(10));
    }
    let events: Vec<Seen> = k.logged().into_iter().filter(|e| e.seq >= from).collect();
    assert!(k.failures().is_empty(), "{:?}", k.failures());
    check_kaiku_order(&events, false).unwrap();
    let refreshed = k.keyring.lock().unwrap().first().map(|(t, _)| *t);
    assert!(
        arrivals.len() >= 2 && refreshed.is_some_and(|r| r > arrivals[0]),
        "precondition: the first retry went with the login's token and was refused \
         ({} upgrades, refreshed {:?} after the first)",
        arrivals.len(),
        refreshed.map(|r| r.saturating_duration_since(arrivals[0]))
    );
    let gap = arrivals[1].duration_since(arrivals[0]);
    assert!(
        gap < Duration::from_millis(3400),
        "the 401 (3 s after the first retry arrived) was retried at once, not {gap:?} later: {:?}",
        names(&legacy(&events))
    );
    k.shutdown();
}

// =============================================================================================
// 2. Kaiku's status order, and `ws_status` never older than the last event.

/// Waits for the next `ws:connected` and returns the legacy events logged since `from`.
fn outage_until_connected(k: &Kaiku, from: u64) -> Vec<Seen> {
    k.until("ws:connected", |_| true);
    legacy_since(k, from)
}

/// A drop whose first retry is refused with 503, 429 (`Retry-After: 1`) or a 401 (with a live
/// refresh token): each time exactly Kaiku's sequence, and `ws_status` (asked all along from
/// another thread) never older than the last event.
#[test]
fn refused_retries_of_each_kind_keep_kaiku_s_order_and_ws_status_keeps_up() {
    let k = Kaiku::start();
    k.login("alice");
    let poller = Poller::start(&k);
    let from = next_seq(&k);
    k.ok("ws_connect", json!({}));
    let first = outage_until_connected(&k, from);
    assert_eq!(names(&first), ["ws:connecting", "ws:connected"]);
    for (status, retry_after) in [(503, None), (429, Some(Duration::from_secs(1)))] {
        let from = next_seq(&k);
        k.server
            .faults()
            .refuse_upgrades(status, retry_after, Some(1));
        k.server.faults().drop_all();
        let seq = outage_until_connected(&k, from);
        check_kaiku_order(&seq, false).unwrap_or_else(|e| panic!("{status}: {e}"));
        let shown: Vec<String> = names(&seq)
            .into_iter()
            .map(|n| n.split(' ').next().unwrap().to_owned())
            .collect();
        assert_eq!(
            shown,
            [
                "ws:disconnected",
                "ws:reconnecting",
                "ws:disconnected",
                "ws:reconnecting",
                "ws:connected"
            ],
            "{status}: {:?}",
            names(&seq)
        );
        assert_eq!(k.status(), json!("connected"), "{status}");
    }
    assert!(k.failures().is_empty(), "{:?}", k.failures());
    let asked = poller.check(&k).unwrap();
    assert!(asked > 50, "the poller asked {asked} times");
    k.shutdown();
}

/// A retry refused with 401 while the refresh token is live: tether refreshes and opens a
/// second socket at once, within the same attempt (D80: a refusal that a refresh answers is
/// no verdict). Kaiku's order shows one retry that succeeded: the frontend never sees the
/// refused upgrade (embedding.md, step 8).
#[test]
fn a_retry_refused_with_401_refreshes_and_opens_again_within_one_attempt() {
    let k = Kaiku::start();
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    let poller = Poller::start(&k);
    let from = next_seq(&k);
    let upgrades = k.server.upgrades();
    k.server.faults().refuse_upgrades(401, None, Some(1));
    k.server.faults().drop_all();
    let seq = outage_until_connected(&k, from);
    check_kaiku_order(&seq, false).unwrap();
    assert!(k.failures().is_empty(), "{:?}", k.failures());
    assert_eq!(k.server.upgrades(), upgrades + 2, "two sockets opened");
    assert_eq!(
        names(&seq),
        ["ws:disconnected", "ws:reconnecting 1", "ws:connected"]
    );
    poller.check(&k).unwrap();
    k.shutdown();
}

/// A 403 refusal of a retry: tether may retry or give up, but in Kaiku's order, and
/// `ws_status` never says `connecting`/`reconnecting` once it gave up.
#[test]
fn a_403_refusal_keeps_kaiku_s_order_whatever_tether_decides() {
    let k = Kaiku::start();
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    let poller = Poller::start(&k);
    let from = next_seq(&k);
    k.server.faults().refuse_upgrades(403, None, Some(1));
    k.server.faults().drop_all();
    let seen = k.drain_for(Duration::from_secs(4));
    let seq = legacy_since(&k, from);
    check_kaiku_order(&seq, false).unwrap();
    let failed = seen
        .iter()
        .any(|(n, p)| n == "ws:status" && p["status"] == "failed");
    if failed {
        assert_eq!(
            seq.last().unwrap().name,
            "ws:disconnected",
            "{:?}",
            names(&seq)
        );
        assert_eq!(k.status(), json!("disconnected"));
    } else {
        assert_eq!(
            seq.last().unwrap().name,
            "ws:connected",
            "{:?}",
            names(&seq)
        );
    }
    poller.check(&k).unwrap();
    k.shutdown();
}

/// `network_changed` (the webview's `online`): on a live link nothing happens; on a stalled
/// link (no heartbeat answer, TCP up) it finds out within seconds and reconnects in Kaiku's
/// order; during a backoff wait it retries at once.
#[test]
fn network_changed_probes_a_stalled_link_and_skips_a_backoff_in_kaiku_s_order() {
    let k = Kaiku::start();
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    let poller = Poller::start(&k);

    let upgrades = k.server.upgrades();
    let from = next_seq(&k);
    k.invoke_plugin("network_changed", json!({})).unwrap();
    k.drain_for(Duration::from_millis(1500));
    assert!(
        legacy_since(&k, from).is_empty(),
        "{:?}",
        names(&legacy_since(&k, from))
    );
    assert_eq!(k.server.upgrades(), upgrades);

    // Stalled: the probe's short deadline (5 s), not the 40 s of the heartbeat.
    k.server.faults().stall(false);
    let from = next_seq(&k);
    let asked = Instant::now();
    k.invoke_plugin("network_changed", json!({})).unwrap();
    k.until_within(Duration::from_secs(9), "ws:connected", |_| true);
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "{:?}",
        asked.elapsed()
    );
    let seq = legacy_since(&k, from);
    check_kaiku_order(&seq, false).unwrap();
    assert_eq!(names(&seq)[0], "ws:disconnected", "{:?}", names(&seq));

    // A backoff: two refused retries, then the wait before the third (2-4 s) is skipped.
    k.drain_for(Duration::from_millis(200));
    let from = next_seq(&k);
    k.server.faults().refuse_upgrades(503, None, Some(2));
    k.server.faults().drop_all();
    let deadline = Instant::now() + Duration::from_secs(10);
    while legacy_since(&k, from)
        .iter()
        .filter(|e| e.name == "ws:disconnected")
        .count()
        < 3
    {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            names(&legacy_since(&k, from))
        );
        let _ = k.seen.recv_timeout(Duration::from_millis(20));
    }
    let asked = Instant::now();
    k.invoke_plugin("network_changed", json!({})).unwrap();
    k.until("ws:connected", |_| true);
    let waited = asked.elapsed();
    let seq = legacy_since(&k, from);
    check_kaiku_order(&seq, false).unwrap();
    assert!(
        waited < Duration::from_millis(1000),
        "network_changed skipped the backoff: {waited:?} {:?}",
        names(&seq)
    );
    poller.check(&k).unwrap();
    k.shutdown();
}

/// `ws_disconnect` during a backoff wait: no retry afterwards, `ws_status` `disconnected`;
/// then `ws_connect` is a first connect again (`ws:connecting`, `ws:connected`).
#[test]
fn ws_disconnect_during_a_backoff_stops_every_retry() {
    let k = Kaiku::start();
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    let from = next_seq(&k);
    k.server
        .faults()
        .refuse_upgrades(503, Some(Duration::from_secs(2)), None);
    k.server.faults().drop_all();
    k.until("ws:reconnecting", |_| true);
    k.until("ws:disconnected", |_| true);
    // Now in the (>= 2 s) wait.
    k.ok("ws_disconnect", json!({}));
    let upgrades = k.server.upgrades();
    k.drain_for(Duration::from_secs(3));
    let seq = legacy_since(&k, from);
    check_kaiku_order(&seq, false).unwrap_or_else(|e| {
        // Two `ws:disconnected` in a row are allowed here: the user's own.
        assert!(e.contains("twice"), "{e}");
    });
    assert_eq!(
        k.server.upgrades(),
        upgrades,
        "no retry after ws_disconnect: {:?}",
        names(&seq)
    );
    assert!(
        !seq.iter()
            .skip_while(|e| e.name != "ws:disconnected")
            .skip(1)
            .any(|e| e.name == "ws:reconnecting" && e.payload.as_u64() > Some(1)),
        "{:?}",
        names(&seq)
    );
    assert_eq!(k.status(), json!("disconnected"));
    k.server.faults().clear();
    let from = next_seq(&k);
    k.ok("ws_connect", json!({}));
    k.until("ws:connected", |_| true);
    assert_eq!(
        names(&legacy_since(&k, from)),
        ["ws:connecting", "ws:connected"]
    );
    assert_eq!(k.status(), json!("connected"));
    k.shutdown();
}

/// Every token revoked: a drop ends in `failed/auth` in Kaiku's order (the last legacy event
/// `ws:disconnected`, no retry afterwards, `ws_status` `disconnected`); the app's new login
/// and `tokens_changed` bring the link back.
#[test]
fn failed_auth_ends_in_kaiku_s_order_and_a_new_login_brings_the_link_back() {
    let k = Kaiku::start();
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    let poller = Poller::start(&k);
    let from = next_seq(&k);
    k.server.faults().revoke_tokens();
    k.server.faults().drop_all();
    let (failed, _) = k.until("ws:status", |p| p["status"] == "failed");
    assert_eq!(failed["reason"], "auth", "{failed}");
    let upgrades = k.server.upgrades();
    k.drain_for(Duration::from_secs(2));
    let seq = legacy_since(&k, from);
    check_kaiku_order(&seq, false).unwrap();
    assert_eq!(
        seq.last().unwrap().name,
        "ws:disconnected",
        "{:?}",
        names(&seq)
    );
    assert_eq!(k.server.upgrades(), upgrades, "no retry after failed");
    assert_eq!(k.status(), json!("disconnected"));

    let from = next_seq(&k);
    k.login_now("alice");
    k.tokens_changed().unwrap();
    k.until("ws:connected", |_| true);
    let seq = legacy_since(&k, from);
    assert_eq!(
        seq.last().unwrap().name,
        "ws:connected",
        "{:?}",
        names(&seq)
    );
    assert_eq!(k.status(), json!("connected"));
    poller.check(&k).unwrap();
    k.shutdown();
}

/// A reconnect storm (eight drops 150-400 ms apart): Kaiku's order throughout, `ws_status`
/// keeps up, and in the end one socket, connected.
#[test]
fn a_reconnect_storm_keeps_kaiku_s_order_and_one_socket() {
    let k = Kaiku::start();
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    let poller = Poller::start(&k);
    let from = next_seq(&k);
    for i in 0..8u64 {
        k.server.faults().drop_all();
        k.drain_for(Duration::from_millis(150 + 35 * i));
    }
    // Settle: connected and quiet for 1.5 s.
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            names(&legacy_since(&k, from))
        );
        let _ = k.drain_for(Duration::from_millis(1500));
        let seq = legacy_since(&k, from);
        if seq.last().is_some_and(|e| e.name == "ws:connected")
            && seq.last().unwrap().at.elapsed() >= Duration::from_millis(1400)
        {
            break;
        }
    }
    let seq = legacy_since(&k, from);
    check_kaiku_order(&seq, false).unwrap();
    assert_eq!(k.status(), json!("connected"));
    assert_eq!(k.server.connections(), 1, "one socket");
    poller.check(&k).unwrap();
    k.shutdown();
}

// =============================================================================================
// 3. ws_send, offline quiet, replay, voice, catch-up.

/// Refuses every retry until `clear`, drops the link, and waits for `ws:disconnected`.
fn go_offline(k: &Kaiku) {
    k.server.faults().refuse_upgrades(503, None, None);
    k.server.faults().drop_all();
    k.until("ws:disconnected", |_| true);
}

/// Lets retries through and skips the backoff; waits for `ws:connected`.
fn come_back(k: &Kaiku) -> Vec<(String, Value)> {
    k.server.faults().clear();
    k.invoke_plugin("network_changed", json!({})).unwrap();
    k.until("ws:connected", |_| true).1
}

/// `admin_subscribe` through `ws_send` is sent again on every new socket (the dev server
/// refuses non-admins with `admin_not_elevated`, so the error comes back after each
/// reconnect); after `admin_unsubscribe` it is not.
#[test]
fn admin_subscribe_is_sent_again_after_each_reconnect_until_admin_unsubscribe() {
    let k = Kaiku::start();
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    k.ok("ws_send", json!({"message": {"type": "admin_subscribe"}}));
    k.until("ws:error", |p| p["code"] == "admin_not_elevated");
    for round in 0..2 {
        k.server.faults().drop_all();
        k.until("ws:connected", |_| true);
        k.until_within(Duration::from_secs(5), "ws:error", |p| {
            p["code"] == "admin_not_elevated"
        });
        let _ = round;
    }
    k.ok("ws_send", json!({"message": {"type": "admin_unsubscribe"}}));
    k.drain_for(Duration::from_millis(300));
    k.server.faults().drop_all();
    k.until("ws:connected", |_| true);
    let after = k.drain_for(Duration::from_millis(1500));
    assert!(
        !after
            .iter()
            .any(|(n, p)| n == "ws:error" && p["code"] == "admin_not_elevated"),
        "admin_subscribe replayed after admin_unsubscribe: {after:?}"
    );
    k.shutdown();
}

/// Presence, activity and custom status are sent again on a new socket with their latest
/// value; a value changed while offline replaces the old one (the old activity never comes
/// back); typing and pings sent offline resolve quietly and are never sent late.
#[test]
fn presence_activity_and_custom_status_replay_their_latest_value_and_offline_typing_is_never_late()
{
    let k = Kaiku::start();
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.ok("ws_subscribe", json!({"channelId": k.channel}));
    k.until("ws:subscribed", |_| true);
    k.ok(
        "ws_send",
        json!({"message": {"type": "set_status", "status": "busy"}}),
    );
    k.until("ws:presence_update", |p| p["status"] == "busy");
    k.ok(
        "ws_send_activity",
        json!({"activity": {"name": "Old game", "type": "playing"}}),
    );
    k.until("ws:rich_presence_update", |p| {
        p["activity"]["name"] == "Old game"
    });
    k.ok(
        "ws_send_custom_status",
        json!({"customStatus": {"text": "busy"}}),
    );
    k.until("ws:custom_status_update", |p| {
        p["custom_status"]["text"] == "busy"
    });

    // A drop: each replayed once, with its value (activity and custom status within the
    // client's mirror of the server's limit, one per 10 s).
    k.server.faults().drop_all();
    let dropped = Instant::now();
    let mut seen = k.until("ws:connected", |_| true).1;
    let (a, before) = k.until_within(Duration::from_secs(12), "ws:rich_presence_update", |_| true);
    assert!(dropped.elapsed() < Duration::from_secs(11));
    seen.extend(before);
    seen.push(("ws:rich_presence_update".into(), a));
    seen.extend(k.drain_for(Duration::from_millis(1500)));
    let count = |name: &str| seen.iter().filter(|(n, _)| n == name).count();
    assert_eq!(count("ws:presence_update"), 1, "{seen:?}");
    assert_eq!(count("ws:rich_presence_update"), 1, "{seen:?}");
    assert_eq!(count("ws:custom_status_update"), 1, "{seen:?}");
    assert!(
        seen.iter()
            .any(|(n, p)| n == "ws:presence_update" && p["status"] == "busy")
    );

    // Offline: the activity is cleared, the custom status changed, and the user types.
    go_offline(&k);
    k.ok("ws_send_activity", json!({"activity": null}));
    k.ok(
        "ws_send_custom_status",
        json!({"customStatus": {"text": "away"}}),
    );
    k.ok("ws_typing", json!({"channelId": k.channel}));
    k.ok("ws_ping", json!({}));
    let mut seen = come_back(&k);
    let (c, before) = k.until_within(Duration::from_secs(12), "ws:custom_status_update", |_| true);
    seen.extend(before);
    seen.push(("ws:custom_status_update".into(), c));
    seen.extend(k.drain_for(Duration::from_millis(1500)));
    assert!(
        !seen
            .iter()
            .any(|(n, p)| n == "ws:rich_presence_update" && p["activity"]["name"] == "Old game"),
        "the cleared activity came back: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(n, p)| n == "ws:custom_status_update" && p["custom_status"]["text"] == "away"),
        "the new custom status: {seen:?}"
    );
    assert!(
        !seen.iter().any(|(n, _)| n == "ws:typing_start"),
        "typing from offline sent late: {seen:?}"
    );
    k.shutdown();
}

/// `ws_send` of a `subscribe` is wanted after reconnects (replayed, caught up); `ws_send` of
/// an `unsubscribe` offline only edits the set.
#[test]
fn ws_send_subscribe_is_replayed_and_an_offline_unsubscribe_sticks() {
    let k = Kaiku::start();
    let other = k.server.create_channel("other");
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    k.ok(
        "ws_send",
        json!({"message": {"type": "subscribe", "channel_id": k.channel}}),
    );
    k.until("ws:subscribed", |p| p["channel_id"] == k.channel.as_str());
    k.ok("ws_subscribe", json!({"channelId": other}));
    k.until("ws:subscribed", |p| p["channel_id"] == other.as_str());
    k.server.faults().drop_all();
    let (_, before) = k.until("ws:connected", |_| true);
    let mut seen = before;
    seen.extend(k.drain_for(Duration::from_millis(1000)));
    assert!(
        seen.iter()
            .any(|(n, p)| n == "ws:subscribed" && p["channel_id"] == k.channel.as_str()),
        "ws_send's subscribe replayed: {seen:?}"
    );
    go_offline(&k);
    k.ok(
        "ws_send",
        json!({"message": {"type": "unsubscribe", "channel_id": k.channel}}),
    );
    let mut seen = come_back(&k);
    seen.extend(k.drain_for(Duration::from_millis(1000)));
    assert!(
        !seen
            .iter()
            .any(|(n, p)| n == "ws:subscribed" && p["channel_id"] == k.channel.as_str()),
        "unsubscribed offline, yet subscribed again: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(n, p)| n == "ws:subscribed" && p["channel_id"] == other.as_str())
    );
    let n = k.server.post(&k.channel, "bob", "not for alice any more");
    assert!(n.is_some());
    let after = k.drain_for(Duration::from_millis(500));
    assert!(
        !after.iter().any(|(n, _)| n == "ws:message_new"),
        "{after:?}"
    );
    k.shutdown();
}

/// The server restarts (its voice rooms are gone): tether joins again on the new socket,
/// muted as the user was, emits `ws:voice_reset`, and the server's new offer is negotiated
/// by `handle_voice_offer`, with no help from the frontend. Bob, joining afterwards, sees
/// alice muted.
#[test]
fn voice_comes_back_after_a_server_restart_rejoined_muted_and_renegotiated() {
    let mut k = Kaiku::start();
    let voice = k.server.create_channel("voice");
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    k.ok("join_voice", json!({"channelId": voice}));
    let (offer, _) = k.until("ws:voice_offer", |p| p["channel_id"] == voice.as_str());
    k.ok(
        "handle_voice_offer",
        json!({"channelId": voice, "sdp": offer["sdp"]}),
    );
    k.ok("set_mute", json!({"muted": true}));
    k.drain_for(Duration::from_millis(200));

    tauri::async_runtime::block_on(k.server.restart(Duration::from_millis(300))).unwrap();
    k.invoke_plugin("network_changed", json!({})).unwrap();
    let (reset, _) = k.until("ws:voice_reset", |_| true);
    assert_eq!(reset["channel_id"], voice.as_str());
    let (offer, before) = k.until_within(Duration::from_secs(5), "ws:voice_offer", |p| {
        p["channel_id"] == voice.as_str()
    });
    assert!(
        !before.iter().any(|(n, _)| n == "ws:voice_error"),
        "{before:?}"
    );
    // The shim rebuilds the peer connection on `ws:voice_reset` (asynchronously).
    std::thread::sleep(Duration::from_millis(200));
    k.ok(
        "handle_voice_offer",
        json!({"channelId": voice, "sdp": offer["sdp"]}),
    );
    let calls = k.rtc.calls();
    assert!(
        calls.iter().filter(|c| c.starts_with("connect")).count() >= 2,
        "a fresh peer connection: {calls:?}"
    );

    // Bob joins: the room says alice is muted (the mute was replayed with the join).
    let bob = bob_client(&k);
    let state = tauri::async_runtime::block_on(async {
        let (client, mut events) = bob;
        client.connect().unwrap();
        client
            .send(tether_core::ClientEvent::VoiceJoin {
                channel_id: voice.clone(),
            })
            .await
            .unwrap();
        let found = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(e) = events.recv().await {
                if let tether_core::Event::Server(e) = e
                    && e.event_type() == "voice_room_state"
                {
                    return Some(serde_json::from_str::<Value>(e.json().as_str()).unwrap());
                }
            }
            None
        })
        .await;
        client.close().await;
        found
    });
    let state = state.ok().flatten().expect("bob's voice_room_state");
    let alice = state["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["username"] == "alice")
        .cloned()
        .unwrap_or_else(|| panic!("alice in the room: {state}"));
    assert_eq!(alice["muted"], true, "the mute was replayed: {state}");
    k.shutdown();
}

fn bob_client(k: &Kaiku) -> (tether_tokio::Client, tether_tokio::Events) {
    let url = k.server.url();
    tauri::async_runtime::block_on(async move {
        let api = tether_tokio::Api::new(&url).unwrap();
        let creds = api.login("bob", &Secret::new("password123")).await.unwrap();
        tether_tokio::Client::spawn(tether_tokio::ClientConfig::new(&url).unwrap(), creds).unwrap()
    })
}

/// The link drops between the server's offer and the app's answer: the answer belongs to a
/// dead session and is "dropped while the link is down, quietly" (embedding.md step 5), so
/// `handle_voice_offer` resolves as it would online; `join_voice` while offline is
/// replayed on the next socket, which gets an offer.
#[test]
fn a_voice_answer_while_offline_is_dropped_quietly() {
    let k = Kaiku::start();
    let voice = k.server.create_channel("voice");
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    k.ok("join_voice", json!({"channelId": voice}));
    let (offer, _) = k.until("ws:voice_offer", |p| p["channel_id"] == voice.as_str());
    go_offline(&k);
    let answered = k.invoke(
        "handle_voice_offer",
        json!({"channelId": voice, "sdp": offer["sdp"]}),
    );
    assert_eq!(answered, Ok(Value::Null), "quiet, as typing offline");
    k.shutdown();
}

/// `join_voice` while the link is down (after a connect): accepted, and the join goes out on
/// the next socket, which gets the server's offer.
#[test]
fn join_voice_while_offline_is_joined_on_the_next_socket() {
    let k = Kaiku::start();
    let voice = k.server.create_channel("voice");
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    go_offline(&k);
    k.ok("join_voice", json!({"channelId": voice}));
    come_back(&k);
    let (_, before) = k.until_within(Duration::from_secs(5), "ws:voice_offer", |p| {
        p["channel_id"] == voice.as_str()
    });
    assert!(
        !before.iter().any(|(n, _)| n == "ws:voice_error"),
        "{before:?}"
    );
    k.shutdown();
}

/// Message ids of `channel` delivered as `ws:message_new`, in order, from `events`.
fn delivered(events: &[(String, Value)], channel: &str) -> Vec<String> {
    events
        .iter()
        .filter(|(n, p)| n == "ws:message_new" && p["channel_id"] == channel)
        .map(|(_, p)| p["message"]["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A live stream (bob posts every 30 ms) across three drops, with a slow REST (300 ms) and a
/// slow `subscribed` (200 ms), one outage with a refused retry: every `ws:resynced` complete,
/// and in the end every message delivered exactly once, in the server's order.
#[test]
fn catch_up_under_a_live_stream_delivers_every_message_once_in_order() {
    let mut config = ServerConfig::default();
    config.subscribed_delay = Duration::from_millis(200);
    config.rest_latency = Duration::from_millis(300);
    let k = Kaiku::start_with(config);
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.ok("ws_subscribe", json!({"channelId": k.channel}));
    k.until("ws:subscribed", |_| true);
    let first = k.server.post(&k.channel, "bob", "first").unwrap();
    k.until("ws:message_new", |_| true);
    let mut events = vec![];

    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let server = &k.server;
        let channel = k.channel.clone();
        let stop = &stop;
        scope.spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                server.post(&channel, "bob", &format!("live {i}")).unwrap();
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        for round in 0..3 {
            let (live, before) = k.until("ws:message_new", |_| true);
            events.extend(before);
            events.push(("ws:message_new".to_owned(), live));
            std::thread::sleep(Duration::from_millis(700));
            if round == 1 {
                k.server.faults().refuse_upgrades(503, None, Some(1));
            }
            k.server.faults().drop_all();
            let (resynced, before) = k.until("ws:resynced", |_| true);
            events.extend(before);
            assert_eq!(resynced["complete"], true, "round {round}: {resynced}");
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::SeqCst);
    });
    std::thread::sleep(Duration::from_millis(800));
    events.extend(k.drain_for(Duration::from_millis(500)));

    let got = delivered(&events, &k.channel);
    let record: Vec<String> = k
        .server
        .messages(&k.channel)
        .into_iter()
        .map(|m| m.id)
        .skip_while(|id| *id != first)
        .skip(1)
        .collect();
    let mut uniq = got.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), got.len(), "a message delivered twice");
    assert_eq!(got.len(), record.len(), "every message, no more");
    assert_eq!(got, record, "in the server's order");
    assert!(k.failures().is_empty());
    k.shutdown();
}

/// 230 messages missed in one outage (five pages): every one delivered once, in order,
/// before `ws:resynced {complete: true, recovered: 230}`.
#[test]
fn a_long_gap_is_walked_back_page_by_page() {
    let k = Kaiku::start();
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.ok("ws_subscribe", json!({"channelId": k.channel}));
    k.until("ws:subscribed", |_| true);
    k.server.post(&k.channel, "bob", "anchor").unwrap();
    k.until("ws:message_new", |_| true);
    go_offline(&k);
    let missed: Vec<String> = (0..230)
        .map(|i| {
            k.server
                .post(&k.channel, "bob", &format!("missed {i}"))
                .unwrap()
        })
        .collect();
    come_back(&k);
    let (resynced, before) = k.until("ws:resynced", |_| true);
    assert_eq!(resynced["complete"], true, "{resynced}");
    assert_eq!(resynced["recovered"], 230, "{resynced}");
    assert_eq!(delivered(&before, &k.channel), missed);
    k.shutdown();
}

/// A message whose transaction began before the anchor's but commits during the outage (an
/// upload): it became visible while the app was not receiving. embedding.md: `complete:
/// true` promises every such message was delivered before `ws:resynced`.
#[test]
fn a_message_committed_during_the_outage_behind_the_anchor_is_delivered_or_complete_is_false() {
    let k = Kaiku::start();
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.ok("ws_subscribe", json!({"channelId": k.channel}));
    k.until("ws:subscribed", |_| true);
    // The dev server's commit runs on a tokio task.
    let late = tauri::async_runtime::block_on(async {
        k.server.post_with_commit_delay(
            &k.channel,
            "bob",
            "slow upload",
            Duration::from_millis(1500),
        )
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let anchor = k.server.post(&k.channel, "bob", "anchor").unwrap();
    k.until("ws:message_new", |p| p["message"]["id"] == anchor.as_str());
    go_offline(&k);
    std::thread::sleep(Duration::from_millis(2000));
    assert!(
        k.server.messages(&k.channel).iter().any(|m| m.id == late),
        "precondition: visible now"
    );
    let missed = k.server.post(&k.channel, "bob", "missed").unwrap();
    come_back(&k);
    let (resynced, before) = k.until("ws:resynced", |_| true);
    let got = delivered(&before, &k.channel);
    assert!(got.contains(&missed), "{got:?}");
    if resynced["complete"] == true {
        assert!(
            got.contains(&late),
            "complete:true, yet the message committed during the outage was not delivered: {resynced} {got:?}"
        );
    }
    k.shutdown();
}

// =============================================================================================
// 4. Secrets.

/// `Debug` of every public type that can hold a token shows none.
#[test]
fn no_public_type_s_debug_shows_a_token() {
    let access = "eyJhbGciOiJIUzI1NiJ9.ACCESS-SECRET-1.sig";
    let refresh = "eyJhbGciOiJIUzI1NiJ9.REFRESH-SECRET-2.sig";
    let password = "PASSWORD-SECRET-3";
    let creds = Credentials::new(access).with_refresh_token(refresh);
    let options = ConnectOptions {
        token: Some(access.into()),
        username: Some("alice".into()),
        password: Some(password.into()),
        ..ConnectOptions::new("https://chat.example.com")
    }
    .credentials(creds.clone())
    .on_refresh(|_| {});
    let auth = AuthState {
        access_token: Some(access.into()),
        refresh_token: Some(refresh.into()),
        server_url: Some("https://chat.example.com".into()),
    };
    let state = AppState::new(|| Err("no media".into()));
    *state.auth.blocking_write() = AuthState {
        access_token: Some(access.into()),
        refresh_token: Some(refresh.into()),
        server_url: None,
    };
    state.network.on_refresh_token(|_, _| {});
    let config = tether_tokio::ClientConfig::new("https://chat.example.com")
        .unwrap()
        .on_refresh(|_| {});
    let shown = [
        format!("{options:?}"),
        format!("{options:#?}"),
        format!("{auth:?}"),
        format!("{state:?}"),
        format!("{:?}", state.network),
        format!("{config:?}"),
        format!("{creds:?}"),
        format!("{:?}", tether_tokio::with_jwt_expiry(creds.clone())),
        format!("{:?}", Secret::new(access)),
        format!("{}", Secret::new(access)),
    ];
    for s in &shown {
        for secret in ["ACCESS-SECRET", "REFRESH-SECRET", "PASSWORD-SECRET"] {
            assert!(!s.contains(secret), "{secret} in {s}");
        }
    }
}

/// Lines captured from tether's logs (not the dev server's) that contain any of `secrets`.
fn leaked_in_logs(secrets: &[&str]) -> Vec<String> {
    logs()
        .lock()
        .unwrap()
        .iter()
        .filter(|l| secrets.iter().any(|s| l.contains(s)))
        .cloned()
        .collect()
}

/// Every event payload and error string of a whole session (connect, 4-s token rotations, a
/// 401 refusal, a drop, failed/auth, commands refused) and every log line tether wrote:
/// none contains a token.
#[test]
fn no_token_in_events_errors_or_logs_across_rotations_and_failures() {
    let k = Kaiku::start_with(config_with_ttl(4));
    k.login("alice");
    let (a0, r0) = k.auth();
    let mut secrets = vec![a0.unwrap(), r0.unwrap()];
    let mut errors = Vec::new();
    k.ok("ws_connect", json!({}));
    k.ok("ws_subscribe", json!({"channelId": k.channel}));
    k.until("ws:subscribed", |_| true);
    k.drain_until(Duration::from_secs(10), "two rotations", || {
        k.keyring.lock().unwrap().len() >= 2
    });
    k.server.faults().refuse_upgrades(401, None, Some(1));
    k.server.faults().drop_all();
    k.until("ws:connected", |_| true);
    errors.push(k.invoke("ws_send", json!({"message": {"type": "nope"}})));
    errors.push(k.invoke("join_voice", json!({"channelId": "no-such-channel"})));
    errors.push(
        k.tokens_changed()
            .map(|()| Value::Null)
            .map_err(Value::from),
    );
    let (access, refresh) = k.auth();
    secrets.push(access.unwrap());
    secrets.push(refresh.unwrap());
    secrets.extend(k.keyring());
    k.server.faults().revoke_tokens();
    k.server.faults().drop_all();
    k.until("ws:status", |p| p["status"] == "failed");
    errors.push(k.invoke("ws_connect", json!({})));
    k.ok("ws_disconnect", json!({}));
    // A token the server never issued, with characters no header may carry.
    let odd = "eyJhbGciOiJIUzI1NiJ9.ODD-SECRET\n\u{7f}.sig";
    k.set_auth(odd, Some("REFRESH-ODD-SECRET"));
    errors.push(k.invoke("ws_connect", json!({})));
    k.drain_for(Duration::from_millis(1500));
    errors.push(k.invoke("ws_connect", json!({})));
    k.ok("ws_disconnect", json!({}));

    // The distinctive part of each JWT: its payload and signature.
    let mut parts: Vec<String> = secrets
        .iter()
        .map(|t| {
            t.split_once('.')
                .map_or(t.clone(), |(_, rest)| rest.to_owned())
        })
        .collect();
    parts.extend(["ODD-SECRET".to_owned(), "REFRESH-ODD-SECRET".to_owned()]);
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    for e in k.logged() {
        let text = e.payload.to_string();
        assert!(
            !parts.iter().any(|s| text.contains(s)),
            "a token in {}: {text}",
            e.name
        );
    }
    for e in &errors {
        let text = format!("{e:?}");
        assert!(
            !parts.iter().any(|s| text.contains(s)),
            "a token in an error: {text}"
        );
    }
    let leaked = leaked_in_logs(&parts);
    assert!(leaked.is_empty(), "tokens in tether's logs: {leaked:#?}");
    k.shutdown();
}

/// `auth_mode: "query"` (older servers: `?token=` in the URL): the URL with the token is never
/// in a status, an error or a log line, through a refused upgrade, a server that is gone, and
/// failed/auth.
#[test]
fn a_query_token_never_reaches_statuses_errors_or_logs() {
    let mut config = ServerConfig::default();
    config.query_auth = true;
    config.subprotocol_auth = false;
    let k = Kaiku::start_with(config);
    let api = tether_tokio::Api::new(&k.server.url()).unwrap();
    let creds =
        tauri::async_runtime::block_on(api.login("alice", &Secret::new("password123"))).unwrap();
    let token = creds.access_token.expose().to_owned();
    let options = ConnectOptions {
        auth_mode: Some("query".into()),
        token: Some(token.clone()),
        status_order: Some(tether_core::StatusOrder::Kaiku),
        ..ConnectOptions::new(k.server.url())
    };
    let connected = tauri::async_runtime::block_on(k.app.tether().connect(options.clone()));
    let mut errors = vec![format!("{connected:?}")];
    k.any("ws:connected");
    k.server.faults().refuse_upgrades(503, None, Some(1));
    k.server.faults().drop_all();
    k.until("ws:connected", |_| true);
    k.server.faults().revoke_tokens();
    k.server.faults().drop_all();
    k.until("ws:status", |p| p["status"] == "failed");
    errors.push(format!(
        "{:?}",
        tauri::async_runtime::block_on(k.app.tether().connect(options.clone()))
    ));
    errors.push(format!(
        "{:?}",
        tauri::async_runtime::block_on(k.app.tether().history(&k.channel, None, None))
    ));
    k.drain_for(Duration::from_millis(1000));
    tauri::async_runtime::block_on(k.app.tether().disconnect()).unwrap();
    // A server that is gone: each retry fails to connect.
    let log = k.log.clone();
    let server_url = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let gone = ConnectOptions {
        auth_mode: Some("query".into()),
        token: Some(token.clone()),
        ..ConnectOptions::new(server_url)
    };
    errors.push(format!(
        "{:?}",
        tauri::async_runtime::block_on(k.app.tether().connect(gone))
    ));
    k.drain_for(Duration::from_millis(2500));
    tauri::async_runtime::block_on(k.app.tether().disconnect()).unwrap();

    let secret = token.split_once('.').unwrap().1.to_owned();
    for e in log.lock().unwrap().iter() {
        assert!(
            !e.payload.to_string().contains(&secret),
            "{}: {}",
            e.name,
            e.payload
        );
    }
    for e in &errors {
        assert!(!e.contains(&secret), "a token in an error: {e}");
    }
    let leaked = leaked_in_logs(&[&secret]);
    assert!(
        leaked.is_empty(),
        "the query token in tether's logs: {leaked:#?}"
    );
    k.shutdown();
}

// =============================================================================================
// More refresh and order attacks.

/// Kaiku starts again with the tokens it stored: the access token died meanwhile. The first
/// connect refreshes with the stored refresh token and hands the pair over: no `failed`,
/// the stored refresh token spent, the new one in the keyring and the auth state.
#[test]
fn a_first_connect_with_a_dead_access_token_refreshes_and_hands_the_pair_over() {
    let k = Kaiku::start();
    k.login("alice");
    let (_, r0) = k.auth();
    k.server.faults().expire_tokens();
    let from = next_seq(&k);
    k.ok("ws_connect", json!({}));
    k.until("ws:connected", |_| true);
    let seq = legacy_since(&k, from);
    check_kaiku_order(&seq, true).unwrap();
    assert_eq!(names(&seq)[0], "ws:connecting");
    assert!(k.failures().is_empty(), "{:?}", k.failures());
    let ring = k.keyring();
    assert_eq!(ring.len(), 1, "one refresh");
    let (access, refresh) = k.auth();
    assert_eq!(refresh.as_deref(), ring.last().map(String::as_str));
    assert!(k.access_valid(&access.unwrap()));
    k.ok("ws_disconnect", json!({}));
    assert!(!k.refresh_ok(&r0.unwrap()));
    assert!(k.refresh_ok(&refresh.unwrap()));
    k.shutdown();
}

/// The first connect is refused twice (503): `ws:connecting` once, then the retries in
/// Kaiku's order (`ws:disconnected`, `ws:reconnecting(n)`), never `ws:connecting` again.
#[test]
fn a_refused_first_connect_goes_on_in_kaiku_s_order() {
    let k = Kaiku::start();
    k.login("alice");
    let poller = Poller::start(&k);
    k.server.faults().refuse_upgrades(503, None, Some(2));
    let from = next_seq(&k);
    k.ok("ws_connect", json!({}));
    k.until("ws:connected", |_| true);
    let seq = legacy_since(&k, from);
    check_kaiku_order(&seq, true).unwrap();
    assert_eq!(
        names(&seq),
        [
            "ws:connecting",
            "ws:disconnected",
            "ws:reconnecting 1",
            "ws:disconnected",
            "ws:reconnecting 2",
            "ws:connected"
        ]
    );
    poller.check(&k).unwrap();
    k.shutdown();
}

/// While tether's refresh is in flight, the app calls `tokens_changed` with the tokens it
/// already gave (nothing new: a second window's login flow, a reload). The refresh's answer
/// must not be thrown away as if the app had installed another session: the refresh token
/// it spent would be lost with it.
#[test]
fn tokens_changed_with_the_same_tokens_during_a_refresh_in_flight_loses_no_rotation() {
    let k = Kaiku::start_with(config_with_ttl(8));
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    let t0 = Instant::now();
    k.server.faults().set_rest_latency(Duration::from_secs(3));
    k.drain_to(t0 + Duration::from_millis(7500));
    assert!(
        k.keyring().is_empty(),
        "precondition: no refresh answered yet"
    );
    k.tokens_changed().expect("tokens_changed");
    k.drain_to(t0 + Duration::from_millis(11_000));
    k.server.faults().clear();
    k.server.faults().expire_tokens();
    k.server.faults().drop_all();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !k
        .logged()
        .iter()
        .any(|e| e.seq > 0 && e.name == "ws:connected" && e.at > t0 + Duration::from_millis(11_000))
    {
        assert!(
            k.failures().is_empty(),
            "the refresh token spent by the in-flight refresh was lost: {:?} (keyring: {})",
            k.failures(),
            k.keyring().len()
        );
        assert!(Instant::now() < deadline, "no ws:connected");
        let _ = k.seen.recv_timeout(Duration::from_millis(50));
    }
    k.ok("ws_disconnect", json!({}));
    let (_, refresh) = k.auth();
    assert_eq!(refresh.as_deref(), k.keyring().last().map(String::as_str));
    assert!(k.refresh_ok(&refresh.unwrap()));
    k.shutdown();
}

/// The refresh meets 429s (`Retry-After: 1`), ahead of expiry and again after a 401: a
/// refresh that may be retried is no verdict on the credentials: no `failed`.
#[test]
fn a_refresh_that_meets_429s_is_retried_and_never_fails_the_session() {
    let k = Kaiku::start_with(config_with_ttl(6));
    k.login("alice");
    let a0 = k.auth().0.unwrap();
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    // Ahead of expiry (at ~4.8 s): the next three REST answers are 429.
    k.server
        .faults()
        .rate_limit_rest(Duration::from_secs(1), Some(3));
    k.drain_until(Duration::from_secs(15), "a rotation", || {
        !k.keyring.lock().unwrap().is_empty()
    });
    assert!(k.failures().is_empty(), "{:?}", k.failures());
    let _ = a0;
    // After a 401: every access token dead, the link dropped, the refresh refused twice.
    k.server.faults().expire_tokens();
    k.server
        .faults()
        .rate_limit_rest(Duration::from_secs(1), Some(2));
    k.server.faults().drop_all();
    let deadline = Instant::now() + Duration::from_secs(20);
    let from = next_seq(&k);
    loop {
        assert!(k.failures().is_empty(), "{:?}", k.failures());
        if k.logged()
            .iter()
            .any(|e| e.seq >= from && e.name == "ws:connected")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{:?}",
            names(&legacy_since(&k, from))
        );
        let _ = k.seen.recv_timeout(Duration::from_millis(50));
    }
    let seq = legacy_since(&k, from);
    check_kaiku_order(&seq, false).unwrap();
    k.ok("ws_disconnect", json!({}));
    let (_, refresh) = k.auth();
    assert_eq!(refresh.as_deref(), k.keyring().last().map(String::as_str));
    assert!(k.refresh_ok(&refresh.unwrap()));
    k.shutdown();
}

/// The catch-up's history read meets a 401 (every access token expired just after the
/// upgrade went through): tether refreshes and reads again; the catch-up completes.
#[test]
fn a_401_on_a_catch_up_read_refreshes_and_the_catch_up_completes() {
    let k = Kaiku::start();
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.ok("ws_subscribe", json!({"channelId": k.channel}));
    k.until("ws:subscribed", |_| true);
    k.server.post(&k.channel, "bob", "anchor").unwrap();
    k.until("ws:message_new", |_| true);
    k.server
        .faults()
        .set_rest_latency(Duration::from_millis(800));
    k.server.faults().drop_all();
    let missed = k.server.post(&k.channel, "bob", "missed").unwrap();
    k.until("ws:connected", |_| true);
    k.server.faults().expire_tokens();
    let (resynced, before) = k.until("ws:resynced", |_| true);
    assert_eq!(resynced["complete"], true, "{resynced}");
    assert_eq!(delivered(&before, &k.channel), [missed]);
    assert!(k.failures().is_empty(), "{:?}", k.failures());
    assert!(!k.keyring().is_empty(), "refreshed");
    k.shutdown();
}

/// A drop in the middle of a catch-up (its read in flight): the next connection's catch-up
/// still delivers every missed message once, in order, and says complete.
#[test]
fn a_drop_during_a_catch_up_costs_no_message_and_no_duplicate() {
    let k = Kaiku::start();
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.ok("ws_subscribe", json!({"channelId": k.channel}));
    k.until("ws:subscribed", |_| true);
    k.server.post(&k.channel, "bob", "anchor").unwrap();
    k.until("ws:message_new", |_| true);
    k.server
        .faults()
        .set_rest_latency(Duration::from_millis(1500));
    go_offline(&k);
    let mut missed: Vec<String> = (0..60)
        .map(|i| {
            k.server
                .post(&k.channel, "bob", &format!("missed {i}"))
                .unwrap()
        })
        .collect();
    // Back, with the REST latency kept (`clear` would reset it).
    k.server.faults().refuse_upgrades(503, None, Some(0));
    k.invoke_plugin("network_changed", json!({})).unwrap();
    let mut seen = k.until("ws:connected", |_| true).1;
    // The catch-up's first read is in flight: drop again.
    seen.extend(k.drain_for(Duration::from_millis(500)));
    assert!(
        !seen.iter().any(|(n, _)| n == "ws:resynced"),
        "precondition: {seen:?}"
    );
    k.server.faults().drop_all();
    missed.push(k.server.post(&k.channel, "bob", "missed again").unwrap());
    let (resynced, before) = k.until("ws:resynced", |_| true);
    seen.extend(before);
    assert_eq!(resynced["complete"], true, "{resynced}");
    assert_eq!(delivered(&seen, &k.channel), missed);
    let later = k.drain_for(Duration::from_millis(1000));
    assert!(delivered(&later, &k.channel).is_empty(), "{later:?}");
    k.shutdown();
}

/// DESIGN 1.4 and 3.7: a server that refuses every upgrade with 401 while its refresh
/// endpoint works (it moved the socket's auth elsewhere). "Refresh the token once and retry
/// at once; if that fails, `Failed { reason: auth }`: no retry loop." Not a loop of
/// refreshes and upgrades, each spending a refresh token.
#[test]
fn upgrades_refused_with_401_for_good_end_in_failed_auth_not_a_refresh_loop() {
    let k = Kaiku::start();
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    let upgrades = k.server.upgrades();
    k.server.faults().refuse_upgrades(401, None, None);
    k.server.faults().drop_all();
    let (failed, _) = k.until_within(Duration::from_secs(15), "ws:status", |p| {
        p["status"] == "failed"
    });
    assert_eq!(failed["reason"], "auth", "{failed}");
    let tried = k.server.upgrades() - upgrades;
    k.drain_for(Duration::from_secs(2));
    assert_eq!(
        k.server.upgrades() - upgrades,
        tried,
        "no retry after failed"
    );
    assert!(tried <= 3, "{tried} upgrades before giving up");
    assert!(k.keyring().len() <= 1, "{} refreshes", k.keyring().len());
    assert_eq!(k.status(), json!("disconnected"));
    // The app acts (ws_connect again): one more try, no loop.
    let before = k.server.upgrades();
    k.ok("ws_connect", json!({}));
    k.drain_for(Duration::from_secs(3));
    assert!(
        k.server.upgrades() - before <= 3,
        "{}",
        k.server.upgrades() - before
    );
    k.shutdown();
}

/// The replayed `subscribe` meets a `forbidden` once (Kaiku's database hiccup): asked again
/// before it is believed; the channel stays wanted and its events keep coming.
#[test]
fn a_forbidden_once_on_a_replayed_subscribe_is_asked_again_and_events_keep_coming() {
    let k = Kaiku::start();
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.ok("ws_subscribe", json!({"channelId": k.channel}));
    k.until("ws:subscribed", |_| true);
    k.server.post(&k.channel, "bob", "anchor").unwrap();
    k.until("ws:message_new", |_| true);
    k.server
        .faults()
        .subscribe_errors(tether_devserver::SubscribeError::Forbidden, Some(1));
    k.server.faults().drop_all();
    let (_, before) = k.until("ws:subscribed", |p| p["channel_id"] == k.channel.as_str());
    assert!(
        !before.iter().any(|(n, _)| n == "ws:subscription_rejected"),
        "{before:?}"
    );
    k.drain_for(Duration::from_millis(300));
    let live = k.server.post(&k.channel, "bob", "after").unwrap();
    k.until_within(Duration::from_secs(5), "ws:message_new", |p| {
        p["message"]["id"] == live.as_str()
    });
    k.shutdown();
}

/// The replayed `subscribe` gets a `message_error` and no `subscribed` (Kaiku's database
/// failed while looking the channel up): the channel must not go silently deaf (DESIGN 1.1).
/// A message posted 3 s later reaches the app within 10 s, live or caught up.
#[test]
fn a_replayed_subscribe_lost_to_a_message_error_does_not_leave_the_channel_deaf() {
    let k = Kaiku::start();
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.ok("ws_subscribe", json!({"channelId": k.channel}));
    k.until("ws:subscribed", |_| true);
    k.server.post(&k.channel, "bob", "anchor").unwrap();
    k.until("ws:message_new", |_| true);
    k.server
        .faults()
        .subscribe_errors(tether_devserver::SubscribeError::MessageError, Some(1));
    k.server.faults().drop_all();
    k.until("ws:connected", |_| true);
    k.drain_for(Duration::from_secs(3));
    let later = k
        .server
        .post(&k.channel, "bob", "three seconds later")
        .unwrap();
    k.until_within(Duration::from_secs(10), "ws:message_new", |p| {
        p["message"]["id"] == later.as_str()
    });
    k.shutdown();
}

/// As above, but the user reconnects at once (`ws_disconnect`, then `ws_connect` reading the
/// auth state) while the closed session's refresh is still in flight: two sessions, one
/// refresh token. Neither may spend it behind the other's back: no `failed`, and the
/// keyring ends live.
#[test]
fn ws_disconnect_then_ws_connect_during_a_refresh_in_flight_never_fails() {
    let k = Kaiku::start_with(config_with_ttl(8));
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    let t0 = Instant::now();
    k.server.faults().set_rest_latency(Duration::from_secs(3));
    k.drain_to(t0 + Duration::from_millis(7000));
    assert!(
        k.keyring().is_empty(),
        "precondition: no refresh answered yet"
    );
    k.ok("ws_disconnect", json!({}));
    k.ok("ws_connect", json!({}));
    // Both refreshes land (the old one at ~9.4 s, the new session's, past 80 %, at ~10 s).
    k.drain_to(t0 + Duration::from_millis(12_000));
    k.server.faults().clear();
    k.server.faults().expire_tokens();
    k.server.faults().drop_all();
    let deadline = Instant::now() + Duration::from_secs(10);
    let from = next_seq(&k);
    loop {
        assert!(
            k.failures().is_empty(),
            "{:?} (keyring: {})",
            k.failures(),
            k.keyring().len()
        );
        if k.logged()
            .iter()
            .any(|e| e.seq >= from && e.name == "ws:connected")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{:?}",
            names(&legacy_since(&k, from))
        );
        let _ = k.seen.recv_timeout(Duration::from_millis(50));
    }
    k.ok("ws_disconnect", json!({}));
    let (_, refresh) = k.auth();
    assert_eq!(refresh.as_deref(), k.keyring().last().map(String::as_str));
    assert!(k.refresh_ok(&refresh.unwrap()));
    k.shutdown();
}

// =============================================================================================
// A refresh the server has carried out, whose answer is still on its way.

/// A TCP proxy in front of the dev server that holds the answer to every `POST /auth/refresh`
/// for `hold` (while `hold` is non-zero): the server has already rotated the refresh token
/// when the client is still waiting, as on any real network. Everything else passes as is.
struct SlowAnswerProxy {
    url: String,
    hold: Arc<Mutex<Duration>>,
    refreshes_seen: Arc<AtomicU64>,
}

fn slow_answer_proxy(upstream: std::net::SocketAddr) -> SlowAnswerProxy {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hold = Arc::new(Mutex::new(Duration::ZERO));
    let refreshes_seen = Arc::new(AtomicU64::new(0));
    let listener =
        tauri::async_runtime::block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (h, seen) = (hold.clone(), refreshes_seen.clone());
    tauri::async_runtime::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let until: Arc<Mutex<Option<tokio::time::Instant>>> = Arc::new(Mutex::new(None));
            let (u1, h1, s1) = (until.clone(), h.clone(), seen.clone());
            tauri::async_runtime::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let chunk = &buf[..n];
                    if chunk.windows(18).any(|w| w == b"POST /auth/refresh") {
                        s1.fetch_add(1, Ordering::SeqCst);
                        let hold = *h1.lock().unwrap();
                        if !hold.is_zero() {
                            *u1.lock().unwrap() = Some(tokio::time::Instant::now() + hold);
                        }
                    }
                    if sw.write_all(chunk).await.is_err() {
                        break;
                    }
                }
                let _ = sw.shutdown().await;
            });
            tauri::async_runtime::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let wait = until.lock().unwrap().take();
                    if let Some(at) = wait {
                        tokio::time::sleep_until(at).await;
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = cw.shutdown().await;
            });
        }
    });
    SlowAnswerProxy {
        url,
        hold,
        refreshes_seen,
    }
}

impl Kaiku {
    /// The app's auth state points at `url` (the proxy) instead of the server.
    fn use_server_url(&self, url: &str) {
        self.app
            .state::<AppState>()
            .auth
            .blocking_write()
            .server_url = Some(url.to_owned());
    }
}

/// 8-s tokens through a proxy that holds refresh answers 3 s: tether's refresh at ~6.4 s is
/// carried out by the server at once (the login's refresh token is spent), its answer
/// arrives at ~9.4 s. The link drops at 7.5 s: the answer must still be taken and handed to
/// the app; a drop with every access token dead then comes back without `failed`.
#[test]
fn a_drop_while_a_carried_out_refresh_s_answer_is_on_its_way_loses_no_rotation() {
    let k = Kaiku::start_with(config_with_ttl(8));
    let proxy = slow_answer_proxy(k.server.addr());
    k.login("alice");
    k.use_server_url(&proxy.url);
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    let t0 = Instant::now();
    *proxy.hold.lock().unwrap() = Duration::from_secs(3);
    k.drain_to(t0 + Duration::from_millis(7500));
    assert_eq!(
        proxy.refreshes_seen.load(Ordering::SeqCst),
        1,
        "precondition: refresh sent"
    );
    assert!(
        k.keyring().is_empty(),
        "precondition: its answer not yet arrived"
    );
    k.server.faults().drop_all();
    k.drain_to(t0 + Duration::from_millis(11_000));
    *proxy.hold.lock().unwrap() = Duration::ZERO;
    assert_eq!(k.keyring().len(), 1, "the rotated pair reached the app");
    k.server.faults().expire_tokens();
    k.server.faults().drop_all();
    let deadline = Instant::now() + Duration::from_secs(10);
    let from = next_seq(&k);
    loop {
        assert!(k.failures().is_empty(), "{:?}", k.failures());
        if k.logged()
            .iter()
            .any(|e| e.seq >= from && e.name == "ws:connected")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{:?}",
            names(&legacy_since(&k, from))
        );
        let _ = k.seen.recv_timeout(Duration::from_millis(50));
    }
    k.ok("ws_disconnect", json!({}));
    let (_, refresh) = k.auth();
    assert_eq!(refresh.as_deref(), k.keyring().last().map(String::as_str));
    assert!(k.refresh_ok(&refresh.unwrap()));
    k.shutdown();
}

/// As above, but the user closes the connection (`ws_disconnect`) at 7.5 s, while the
/// answer of a refresh the server already carried out is on its way. The login's refresh
/// token is spent; unless tether takes that answer and hands it to the app, the app holds
/// a dead refresh token and its next `ws_connect` ends in `failed/auth`.
#[test]
fn ws_disconnect_while_a_carried_out_refresh_s_answer_is_on_its_way_leaves_a_live_token() {
    let k = Kaiku::start_with(config_with_ttl(8));
    let proxy = slow_answer_proxy(k.server.addr());
    k.login("alice");
    k.use_server_url(&proxy.url);
    let (_, r0) = k.auth();
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    let t0 = Instant::now();
    *proxy.hold.lock().unwrap() = Duration::from_secs(3);
    k.drain_to(t0 + Duration::from_millis(7500));
    assert_eq!(
        proxy.refreshes_seen.load(Ordering::SeqCst),
        1,
        "precondition: refresh sent"
    );
    assert!(
        k.keyring().is_empty(),
        "precondition: its answer not yet arrived"
    );
    assert!(
        !k.refresh_ok(&r0.unwrap()),
        "precondition: the server spent the login's token"
    );
    k.ok("ws_disconnect", json!({}));
    k.drain_to(t0 + Duration::from_millis(11_000));
    *proxy.hold.lock().unwrap() = Duration::ZERO;
    k.server.faults().expire_tokens();
    let from = next_seq(&k);
    k.ok("ws_connect", json!({}));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events: Vec<Seen> = k.logged().into_iter().filter(|e| e.seq >= from).collect();
        if let Some(f) = events
            .iter()
            .find(|e| e.name == "ws:status" && e.payload["status"] == "failed")
        {
            panic!(
                "the rotated pair was dropped with the closed session: {} (keyring: {} pairs)",
                f.payload,
                k.keyring().len()
            );
        }
        if events.iter().any(|e| e.name == "ws:connected") {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", names(&events));
        let _ = k.seen.recv_timeout(Duration::from_millis(50));
    }
    k.shutdown();
}

/// A retry whose socket opens but never gets `ready` (the server's handler is stuck): no
/// `ws:connected` for it, `ws_status` stays `reconnecting`; after the handshake timeout (10 s)
/// the retry counts as failed (`ws:disconnected`), and the next one connects.
#[test]
fn a_retry_that_never_gets_ready_is_not_connected_and_fails_in_kaiku_s_order() {
    let k = Kaiku::start();
    k.login("alice");
    k.ok("ws_connect", json!({}));
    k.any("ws:connected");
    let poller = Poller::start(&k);
    let from = next_seq(&k);
    k.server.faults().withhold_ready(true);
    k.server.faults().drop_all();
    k.until("ws:reconnecting", |_| true);
    let upgrades = k.server.upgrades();
    k.drain_for(Duration::from_secs(2));
    assert!(
        !legacy_since(&k, from)
            .iter()
            .any(|e| e.name == "ws:connected"),
        "{:?}",
        names(&legacy_since(&k, from))
    );
    assert_eq!(k.status(), json!({"reconnecting": {"attempt": 1}}));
    k.server.faults().withhold_ready(false);
    k.until_within(Duration::from_secs(15), "ws:connected", |_| true);
    assert!(k.server.upgrades() > upgrades);
    let seq = legacy_since(&k, from);
    check_kaiku_order(&seq, false).unwrap();
    assert_eq!(
        names(&seq),
        [
            "ws:disconnected",
            "ws:reconnecting 1",
            "ws:disconnected",
            "ws:reconnecting 2",
            "ws:connected"
        ]
    );
    poller.check(&k).unwrap();
    k.shutdown();
}
