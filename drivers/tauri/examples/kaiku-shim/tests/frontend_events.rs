//! The Kaiku frontend's view of every server event, on Tauri's mock runtime against the dev
//! server over loopback. The app listens to the 61 `ws:*` names Kaiku's frontend listens to
//! (its `client/src/stores/websocket.ts` at d74233d6), as it listens; the dev server delivers
//! one event of every server type in the real server's shape
//! (`tether_devserver::kaiku_events`), by the route Kaiku would take (a channel's events to
//! its subscribers, the rest to the user's sockets); each must arrive under its name as the
//! server wrote it, carrying every field the frontend's handler reads. The four status names
//! must show up across a connect, a dropped connection and the recovery.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::time::Duration;

use kaiku_shim::AppState;
use serde_json::{Value, json};
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{
    INVOKE_KEY, MockRuntime, get_ipc_response, mock_builder, mock_context, noop_assets,
};
use tauri::webview::InvokeRequest;
use tauri::{App, Listener, Manager, WebviewWindow, WebviewWindowBuilder};
use tether_devserver::kaiku_events::{self, Sample};
use tether_devserver::{DevServer, ServerConfig};

/// Every `ws:*` name the Kaiku frontend listens to: `shared/reference/kaiku/frontend-events.txt`.
const FRONTEND_EVENTS: [&str; 61] = [
    "ws:admin_guild_deleted",
    "ws:admin_guild_suspended",
    "ws:admin_guild_unsuspended",
    "ws:admin_report_created",
    "ws:admin_report_resolved",
    "ws:admin_user_banned",
    "ws:admin_user_deleted",
    "ws:admin_user_unbanned",
    "ws:call_declined",
    "ws:call_ended",
    "ws:call_participant_joined",
    "ws:call_participant_left",
    "ws:call_started",
    "ws:channel_pin_added",
    "ws:channel_pin_removed",
    "ws:channel_read",
    "ws:command_response",
    "ws:command_response_timeout",
    "ws:connected",
    "ws:connecting",
    "ws:custom_status_update",
    "ws:disconnected",
    "ws:dm_name_updated",
    "ws:dm_read",
    "ws:error",
    "ws:friend_request_accepted",
    "ws:friend_request_received",
    "ws:guild_emoji_updated",
    "ws:incoming_call",
    "ws:message_delete",
    "ws:message_edit",
    "ws:message_new",
    "ws:patch",
    "ws:preferences_updated",
    "ws:presence_update",
    "ws:reaction_add",
    "ws:reaction_remove",
    "ws:reconnecting",
    "ws:rich_presence_update",
    "ws:screen_share_quality_changed",
    "ws:screen_share_started",
    "ws:screen_share_stopped",
    "ws:thread_read",
    "ws:thread_reply_delete",
    "ws:thread_reply_new",
    "ws:typing_start",
    "ws:typing_stop",
    "ws:user_blocked",
    "ws:user_unblocked",
    "ws:voice_error",
    "ws:voice_ice_candidate",
    "ws:voice_layer_changed",
    "ws:voice_offer",
    "ws:voice_room_state",
    "ws:voice_user_joined",
    "ws:voice_user_left",
    "ws:voice_user_muted",
    "ws:voice_user_stats",
    "ws:voice_user_unmuted",
    "ws:webcam_started",
    "ws:webcam_stopped",
];

/// The connection's names: `ws:reconnecting` carries the attempt number, the others nothing.
const STATUS: [&str; 4] = [
    "ws:connecting",
    "ws:connected",
    "ws:disconnected",
    "ws:reconnecting",
];

/// What each of the frontend's handlers reads from its payload (JSON pointers), read off its
/// `listen` callback and the functions it hands the payload to. Fields it reads only when
/// present (`message.mention_type`, which Kaiku leaves out of an unmentioning message) are
/// not listed.
const READS: [(&str, &[&str]); 57] = [
    (
        "ws:message_new",
        &[
            "/channel_id",
            "/message/id",
            "/message/channel_id",
            "/message/author/id",
            "/message/author/username",
            "/message/author/display_name",
            "/message/content",
            "/message/encrypted",
        ],
    ),
    (
        "ws:message_edit",
        &["/channel_id", "/message_id", "/content", "/edited_at"],
    ),
    ("ws:message_delete", &["/channel_id", "/message_id"]),
    ("ws:typing_start", &["/channel_id", "/user_id"]),
    ("ws:typing_stop", &["/channel_id", "/user_id"]),
    ("ws:presence_update", &["/user_id", "/status"]),
    ("ws:rich_presence_update", &["/user_id", "/activity"]),
    ("ws:custom_status_update", &["/user_id", "/custom_status"]),
    ("ws:error", &["/code", "/message"]),
    (
        "ws:incoming_call",
        &["/channel_id", "/initiator", "/initiator_name"],
    ),
    (
        "ws:call_ended",
        &["/channel_id", "/reason", "/duration_secs"],
    ),
    ("ws:call_participant_joined", &["/channel_id", "/user_id"]),
    ("ws:call_participant_left", &["/channel_id", "/user_id"]),
    ("ws:voice_offer", &["/channel_id", "/sdp"]),
    ("ws:voice_ice_candidate", &["/channel_id", "/candidate"]),
    (
        "ws:voice_user_joined",
        &["/channel_id", "/user_id", "/username", "/display_name"],
    ),
    ("ws:voice_user_left", &["/channel_id", "/user_id"]),
    ("ws:voice_user_muted", &["/channel_id", "/user_id"]),
    ("ws:voice_user_unmuted", &["/channel_id", "/user_id"]),
    (
        "ws:voice_room_state",
        &[
            "/channel_id",
            "/participants",
            "/participants/0/user_id",
            "/screen_shares",
        ],
    ),
    ("ws:voice_error", &["/code", "/message"]),
    (
        "ws:reaction_add",
        &["/channel_id", "/message_id", "/user_id", "/emoji"],
    ),
    (
        "ws:reaction_remove",
        &["/channel_id", "/message_id", "/user_id", "/emoji"],
    ),
    (
        "ws:channel_pin_added",
        &["/channel_id", "/message_id", "/pinned_by", "/pinned_at"],
    ),
    ("ws:channel_pin_removed", &["/channel_id", "/message_id"]),
    ("ws:guild_emoji_updated", &["/guild_id", "/emojis"]),
    ("ws:channel_read", &["/channel_id"]),
    ("ws:dm_read", &["/channel_id"]),
    ("ws:dm_name_updated", &["/channel_id", "/name"]),
    ("ws:call_started", &["/channel_id"]),
    ("ws:call_declined", &["/user_id"]),
    (
        "ws:screen_share_started",
        &[
            "/channel_id",
            "/user_id",
            "/stream_id",
            "/username",
            "/source_label",
            "/has_audio",
            "/quality",
            "/started_at",
        ],
    ),
    (
        "ws:screen_share_stopped",
        &["/channel_id", "/user_id", "/stream_id", "/reason"],
    ),
    (
        "ws:screen_share_quality_changed",
        &["/channel_id", "/user_id", "/new_quality"],
    ),
    (
        "ws:webcam_started",
        &["/channel_id", "/user_id", "/username", "/quality"],
    ),
    ("ws:webcam_stopped", &["/channel_id", "/user_id", "/reason"]),
    (
        "ws:voice_user_stats",
        &[
            "/channel_id",
            "/user_id",
            "/latency",
            "/packet_loss",
            "/jitter",
            "/quality",
        ],
    ),
    (
        "ws:voice_layer_changed",
        &["/source_user_id", "/track_source", "/active_layer"],
    ),
    ("ws:admin_user_banned", &["/user_id", "/username"]),
    ("ws:admin_user_unbanned", &["/user_id", "/username"]),
    ("ws:admin_guild_suspended", &["/guild_id", "/guild_name"]),
    ("ws:admin_guild_unsuspended", &["/guild_id", "/guild_name"]),
    (
        "ws:admin_report_created",
        &["/report_id", "/category", "/target_type"],
    ),
    ("ws:admin_report_resolved", &["/report_id"]),
    ("ws:admin_user_deleted", &["/user_id", "/username"]),
    ("ws:admin_guild_deleted", &["/guild_id", "/guild_name"]),
    // Both only reload the friends lists.
    ("ws:friend_request_received", &[]),
    ("ws:friend_request_accepted", &[]),
    ("ws:user_blocked", &["/user_id"]),
    ("ws:user_unblocked", &["/user_id"]),
    (
        "ws:thread_reply_new",
        &[
            "/channel_id",
            "/parent_id",
            "/message/id",
            "/message/channel_id",
            "/message/author/id",
            "/message/author/username",
            "/message/author/display_name",
            "/message/content",
            "/message/encrypted",
            "/thread_info",
        ],
    ),
    (
        "ws:thread_reply_delete",
        &["/channel_id", "/parent_id", "/message_id", "/thread_info"],
    ),
    (
        "ws:thread_read",
        &["/thread_parent_id", "/last_read_message_id"],
    ),
    ("ws:preferences_updated", &["/preferences", "/updated_at"]),
    ("ws:patch", &["/entity_type", "/entity_id", "/diff"]),
    (
        "ws:command_response",
        &[
            "/ephemeral",
            "/command_name",
            "/content",
            "/channel_id",
            "/bot_name",
        ],
    ),
    ("ws:command_response_timeout", &["/command_name"]),
];

/// Fields a handler reads that Kaiku's server never sends: `screen_share_quality_changed`
/// has no `stream_id` (the frontend looks the share up by it, and finds none).
const READ_BUT_NEVER_SENT: [(&str, &str); 1] = [("ws:screen_share_quality_changed", "/stream_id")];

/// What the test listens to beyond the frontend: the `subscribed` it waits for.
const HARNESS: [&str; 1] = ["ws:subscribed"];

struct Kaiku {
    app: App<MockRuntime>,
    webview: WebviewWindow<MockRuntime>,
    seen: mpsc::Receiver<(String, Value)>,
    /// Every name observed so far, with its payloads.
    observed: RefCell<BTreeMap<String, Vec<Value>>>,
    server: DevServer,
    channel: String,
    dm: String,
}

impl Kaiku {
    fn start() -> Self {
        let app = mock_builder()
            .plugin(tauri_plugin_tether::init())
            .manage(AppState::new(|| Err("no media engine in this test".into())))
            .invoke_handler(kaiku_shim::handler())
            .build(mock_context(noop_assets()))
            .expect("app");
        let webview = WebviewWindowBuilder::new(&app, "main", Default::default())
            .build()
            .expect("webview");
        let (tx, seen) = mpsc::channel();
        for name in FRONTEND_EVENTS.iter().chain(&HARNESS) {
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
        let dm = server.create_channel("alice-bob");
        Self {
            app,
            webview,
            seen,
            observed: RefCell::default(),
            server,
            channel,
            dm,
        }
    }

    /// What Kaiku's own `login` command does: its auth state gets the server and a token.
    fn login(&self, user: &str) {
        let api = tether_tokio::Api::new(&self.server.url()).unwrap();
        let creds = tauri::async_runtime::block_on(
            api.login(user, &tether_core::Secret::new("password123")),
        )
        .expect("login");
        let state = self.app.state::<AppState>();
        let mut auth = state.auth.blocking_write();
        auth.server_url = Some(self.server.url());
        auth.access_token = Some(creds.access_token.expose().to_owned());
        auth.refresh_token = creds.refresh_token.as_ref().map(|t| t.expose().to_owned());
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

    /// Events until one named `name` whose payload passes `check` (10 s at most): that
    /// payload. Everything seen on the way is recorded.
    fn until(&self, name: &str, check: impl Fn(&Value) -> bool) -> Value {
        loop {
            let (n, p) = self
                .seen
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no {name}; saw {:?}", self.observed.borrow().keys()));
            self.observed
                .borrow_mut()
                .entry(n.clone())
                .or_default()
                .push(p.clone());
            if n == name && check(&p) {
                return p;
            }
        }
    }

    fn any(&self, name: &str) -> Value {
        self.until(name, |_| true)
    }
}

fn reads(name: &str) -> &'static [&'static str] {
    READS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, fields)| *fields)
        .unwrap_or_else(|| panic!("no fields listed for {name}"))
}

#[test]
fn the_list_is_the_frontend_s_61_names_and_the_table_covers_every_server_event() {
    let names: BTreeSet<&str> = FRONTEND_EVENTS.into_iter().collect();
    assert_eq!(FRONTEND_EVENTS.len(), 61);
    assert_eq!(names.len(), 61, "no name twice");
    assert!(STATUS.iter().all(|s| names.contains(s)));
    let server_events: BTreeSet<&str> = names.difference(&STATUS.into()).copied().collect();
    let table: BTreeSet<&str> = READS.iter().map(|(n, _)| *n).collect();
    assert_eq!(table, server_events, "one row per server event");
    assert_eq!(READS.len(), 57, "no row twice");
    // The dev server's catalogue has one sample of each, no more.
    let samples: Vec<String> = kaiku_events::samples(&kaiku_events::Subjects::example())
        .iter()
        .map(|s| format!("ws:{}", s.event.event_type()))
        .collect();
    assert_eq!(samples.len(), 57);
    assert_eq!(
        samples.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        server_events
    );
}

#[test]
fn every_event_the_frontend_listens_to_arrives_carrying_what_it_reads() {
    let k = Kaiku::start();
    k.login("alice");
    assert_eq!(k.ok("ws_connect", json!({})), Value::Null);
    k.any("ws:connected");
    for channel in [&k.channel, &k.dm] {
        k.ok("ws_subscribe", json!({"channelId": channel}));
        k.until("ws:subscribed", |p| p["channel_id"] == channel.as_str());
    }

    let subjects = k
        .server
        .sample_subjects(&k.channel, &k.dm, "bob")
        .expect("bob, general and the DM exist");
    let samples: Vec<Sample> = kaiku_events::samples(&subjects);
    for sample in &samples {
        let name = format!("ws:{}", sample.event.event_type());
        // One at a time: a typing start and stop for the same user would be folded together
        // if the app fell behind, as would two presence updates.
        let reached = k.server.deliver("alice", sample);
        assert!(reached > 0, "{name} ({:?}) reached no socket", sample.route);
        let payload = k.any(&name);
        let sent: Value = serde_json::from_str(&sample.event.to_json()).unwrap();
        assert_eq!(payload, sent, "{name}: the server's frame, untouched");
        for field in reads(&name) {
            assert!(
                payload.pointer(field).is_some(),
                "{name} lacks {field}, which the frontend reads: {payload}"
            );
        }
        for (n, field) in READ_BUT_NEVER_SENT {
            if n == name {
                assert!(payload.pointer(field).is_none(), "{name} has {field}");
            }
        }
    }

    // The connection's names, across a drop and the recovery, and a disconnect.
    k.server.faults().drop_all();
    let attempt = k.any("ws:reconnecting");
    assert!(
        attempt.as_u64().is_some_and(|n| n >= 1),
        "ws:reconnecting carries the attempt number: {attempt}"
    );
    k.any("ws:connected");
    k.ok("ws_disconnect", json!({}));
    k.any("ws:disconnected");

    let observed = k.observed.borrow();
    for status in STATUS {
        let payloads = observed
            .get(status)
            .unwrap_or_else(|| panic!("{status} never came"));
        if status != "ws:reconnecting" {
            assert!(
                payloads.iter().all(Value::is_null),
                "{status}: {payloads:?}"
            );
        }
    }
    let missing: Vec<&str> = FRONTEND_EVENTS
        .into_iter()
        .filter(|n| !observed.contains_key(*n))
        .collect();
    assert!(missing.is_empty(), "never observed: {missing:?}");
    drop(observed);
    tauri::async_runtime::block_on(k.server.shutdown());
}
