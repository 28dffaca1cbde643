//! Protocol v2 over loopback (docs/protocol.md, "Protocol v2"; issue 12): the tokio client and
//! the dev server negotiate it and fall back to v1, every event flows both ways in each
//! encoding, batches either way arrive as separate events in order, a drop is caught up as in
//! v1, a browser-like client that offers only the auth entries still gets v1 byte for byte,
//! `tether serve`'s flags turn each v2 feature off, and hostile MessagePack leaves the link up.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tether_core::wire::{Encoding, Protocol, V2_JSON, V2_MSGPACK};
use tether_core::{ClientEvent, Credentials, Event, ServerEventKind, Status};
use tether_devserver::{ServerConfig, V2Config};
use tether_integration::*;
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

fn server_with(v2: V2Config) -> ServerConfig {
    let mut config = ServerConfig::default();
    config.v2 = v2;
    config
}

fn v2(json: bool, msgpack: bool, batch: bool) -> V2Config {
    let mut v2 = V2Config::default();
    v2.json = json;
    v2.msgpack = msgpack;
    v2.batch = batch;
    v2
}

fn v2_protocol(encoding: Encoding) -> Protocol {
    match encoding {
        Encoding::Msgpack => Protocol::V2_MSGPACK,
        _ => Protocol::V2_JSON,
    }
}

/// Alice's client with `client_v2` as its offer, connected and subscribed to every channel.
async fn alice(
    w: &World,
    client_v2: Vec<Encoding>,
) -> (tether_tokio::Client, tether_tokio::Events) {
    let mut config = w.client_config();
    config.core.v2 = client_v2;
    let (client, mut events) = w.client(config).await;
    until_live(&mut events, w.channels.len()).await;
    (client, events)
}

/// Connects alice with `client_v2` to a server with `server_v2`, checks that a post reaches her
/// and that her typing reaches another client with the same offer; returns what she agreed.
async fn negotiate_and_talk(server_v2: V2Config, client_v2: Vec<Encoding>) -> Protocol {
    let w = World::start(server_with(server_v2), 1).await;
    let ch = w.channels[0].clone();
    let (alice_client, mut alice_events) = alice(&w, client_v2.clone()).await;
    let protocol = alice_client.protocol().await.expect("protocol");

    let dave = w.server.create_user("dave", "password123").expect("dave");
    let dave = Credentials::from_token_response(dave.to_string().as_bytes()).expect("tokens");
    let mut config = w.client_config();
    config.core.v2 = client_v2;
    let (dave_client, mut dave_events) = tether_tokio::Client::spawn(config, dave).expect("spawn");
    dave_client.subscribe(&ch).await.expect("subscribe");
    dave_client.connect().expect("connect");
    until_live(&mut dave_events, 1).await;
    assert_eq!(dave_client.protocol().await.expect("protocol"), protocol);

    // Server to client.
    let id = w.server.post(&ch, "bob", "hello").expect("post");
    let seen = until(&mut alice_events, "the post", |e| {
        messages(std::slice::from_ref(e)).iter().any(|m| m.1 == id)
    })
    .await;
    assert_eq!(messages(&seen), [(ch.clone(), id)]);

    // Client to server to another client.
    let alice_id = w
        .server
        .with_store(|s| s.user_by_name("alice").map(|u| u.id.clone()))
        .expect("alice");
    alice_client
        .send(ClientEvent::Typing {
            channel_id: ch.clone(),
        })
        .await
        .expect("send");
    until(&mut dave_events, "alice typing", |e| match e {
        Event::Server(s) => matches!(
            s.kind(),
            ServerEventKind::TypingStart { channel_id, user_id }
                if *channel_id == *ch && *user_id == *alice_id
        ),
        _ => false,
    })
    .await;
    protocol
}

#[tokio::test]
async fn a_default_client_and_server_agree_on_v2_msgpack_and_talk_both_ways() {
    let agreed = negotiate_and_talk(V2Config::default(), vec![Encoding::Msgpack, Encoding::Json]);
    assert_eq!(agreed.await, Protocol::V2_MSGPACK);
}

#[tokio::test]
async fn the_server_takes_the_clients_order_of_preference() {
    let agreed = negotiate_and_talk(V2Config::default(), vec![Encoding::Json, Encoding::Msgpack]);
    assert_eq!(agreed.await, Protocol::V2_JSON);
}

#[tokio::test]
async fn without_msgpack_on_the_server_they_agree_on_v2_json() {
    let agreed = negotiate_and_talk(
        v2(true, false, true),
        vec![Encoding::Msgpack, Encoding::Json],
    );
    assert_eq!(agreed.await, Protocol::V2_JSON);
}

#[tokio::test]
async fn a_server_without_v2_is_spoken_to_in_v1() {
    let agreed = negotiate_and_talk(V2Config::off(), vec![Encoding::Msgpack, Encoding::Json]);
    assert_eq!(agreed.await, Protocol::V1);
}

#[tokio::test]
async fn a_client_that_offers_no_v2_speaks_v1() {
    assert_eq!(
        negotiate_and_talk(V2Config::default(), Vec::new()).await,
        Protocol::V1
    );
}

// A browser-like client: tokio-tungstenite, JSON text, offering only the auth entries.

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens `/ws` on `base` offering `access_token.<token>` then `offer`, and `extensions` if
/// given; returns the socket, what the 101 selected, and its extensions answer.
async fn raw_socket(
    base: &str,
    token: &str,
    offer: &str,
    extensions: Option<&str>,
) -> (Ws, Option<String>, Option<String>) {
    let url = format!("{}/ws", base.replacen("http", "ws", 1));
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(&format!("access_token.{token}, {offer}")).expect("header"),
    );
    if let Some(e) = extensions {
        request.headers_mut().insert(
            "Sec-WebSocket-Extensions",
            HeaderValue::from_str(e).expect("header"),
        );
    }
    let (ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let selected = header("sec-websocket-protocol");
    let agreed = header("sec-websocket-extensions");
    (ws, selected, agreed)
}

/// The next text or binary frame (pings skipped), or a panic after [`WAIT`].
async fn next_frame(ws: &mut Ws) -> Message {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(m @ (Message::Text(_) | Message::Binary(_))))) => return m,
            Ok(Some(Ok(_))) => {}
            other => panic!("no frame: {other:?}"),
        }
    }
}

async fn next_text(ws: &mut Ws) -> String {
    match next_frame(ws).await {
        Message::Text(t) => t.as_str().to_owned(),
        other => panic!("a binary frame: {other:?}"),
    }
}

#[tokio::test]
async fn a_browser_client_offering_only_auth_gets_v1_one_object_per_text_frame() {
    let w = World::start(ServerConfig::default(), 1).await;
    let ch = w.channels[0].clone();
    // A browser offers permessage-deflate on every socket: v1 stays uncompressed, as Kaiku's
    // server leaves it (and tungstenite, reading here, would refuse a compressed frame).
    let (mut ws, selected, agreed) = raw_socket(
        &w.server.url(),
        w.alice.access_token.expose(),
        "access_token",
        Some("permessage-deflate; client_max_window_bits"),
    )
    .await;
    assert_eq!(selected.as_deref(), Some("access_token"));
    assert_eq!(agreed, None, "v1 is never compressed");
    let ready: Value = serde_json::from_str(&next_text(&mut ws).await).expect("json");
    assert_eq!(ready["type"], "ready");

    ws.send(Message::text(
        json!({"type": "subscribe", "channel_id": ch}).to_string(),
    ))
    .await
    .expect("send");
    // Byte for byte as Kaiku's server writes it (`type` first), not a batch.
    assert_eq!(
        next_text(&mut ws).await,
        format!(r#"{{"type":"subscribed","channel_id":"{ch}"}}"#)
    );

    // Three posts queued at one moment: three frames, each one object, in order.
    let ids: Vec<String> = (0..3)
        .map(|i| w.server.post(&ch, "bob", &format!("m{i}")).expect("post"))
        .collect();
    for id in &ids {
        let frame: Value = serde_json::from_str(&next_text(&mut ws).await).expect("json");
        assert_eq!(frame["type"], "message_new", "{frame}");
        assert_eq!(&frame["message"]["id"], id);
    }

    // A v1 server reads a JSON array as one (malformed) event, as Kaiku does.
    ws.send(Message::text(r#"[{"type":"ping"},{"type":"ping"}]"#))
        .await
        .expect("send");
    let frame: Value = serde_json::from_str(&next_text(&mut ws).await).expect("json");
    assert_eq!(frame["code"], "message_error", "{frame}");
}

// Catch-up after a drop, and batches either way.

async fn a_drop_is_caught_up_once_in_order_and_the_replay_is_one_frame(encoding: Encoding) {
    let w = World::start(ServerConfig::default(), 6).await;
    let (client, mut events) = alice(&w, vec![encoding]).await;
    assert_eq!(
        client.protocol().await.expect("protocol"),
        v2_protocol(encoding)
    );
    let batches_out = client.stats().await.expect("stats").0.batches_out;
    assert!(batches_out >= 1, "the first replay left as a batch");
    tether_integration::read_message_clock(&w.server, &w.channels[0], &mut events).await;

    assert!(w.server.faults().drop_all() >= 1);
    let mut missed = Vec::new();
    for i in 0..5 {
        for ch in &w.channels {
            missed.push((
                ch.clone(),
                w.server.post(ch, "bob", &format!("gap {i}")).expect("post"),
            ));
        }
    }
    let mut resynced = 0;
    let seen = until(&mut events, "every channel resynced", |e| {
        if let Event::Resynced { complete, .. } = e {
            assert!(complete);
            resynced += 1;
        }
        resynced == w.channels.len()
    })
    .await;
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::Status(Status::Reconnecting { .. })))
    );
    let got = messages(&seen);
    for ch in &w.channels {
        let want: Vec<&String> = missed.iter().filter(|m| &m.0 == ch).map(|m| &m.1).collect();
        let have: Vec<&String> = got.iter().filter(|m| &m.0 == ch).map(|m| &m.1).collect();
        assert_eq!(
            have, want,
            "channel {ch}: every missed message once, in order"
        );
    }
    assert_eq!(
        client.protocol().await.expect("protocol"),
        v2_protocol(encoding)
    );
    let after = client.stats().await.expect("stats").0.batches_out;
    assert!(
        after > batches_out,
        "the reconnect's replay left as one batch ({batches_out} -> {after})"
    );
}

#[tokio::test]
async fn msgpack_a_drop_is_caught_up_once_in_order_and_the_replay_is_one_frame() {
    a_drop_is_caught_up_once_in_order_and_the_replay_is_one_frame(Encoding::Msgpack).await;
}

#[tokio::test]
async fn json_a_drop_is_caught_up_once_in_order_and_the_replay_is_one_frame() {
    a_drop_is_caught_up_once_in_order_and_the_replay_is_one_frame(Encoding::Json).await;
}

/// Posts 20 messages at one moment (this runtime has one thread: the socket task runs only
/// once they are all queued) and returns the client's `batches_in` before and after.
async fn twenty_posts_at_once(server_v2: V2Config, encoding: Encoding) -> (u64, u64) {
    let w = World::start(server_with(server_v2), 1).await;
    let ch = w.channels[0].clone();
    let (client, mut events) = alice(&w, vec![encoding]).await;
    assert_eq!(
        client.protocol().await.expect("protocol"),
        v2_protocol(encoding)
    );
    let before = client.stats().await.expect("stats").0.batches_in;
    let ids: Vec<(String, String)> = (0..20)
        .map(|i| {
            let id = w
                .server
                .post(&ch, "bob", &format!("burst {i}"))
                .expect("post");
            (ch.clone(), id)
        })
        .collect();
    let mut n = 0;
    let seen = until(&mut events, "twenty messages", |e| {
        n += messages(std::slice::from_ref(e)).len();
        n == ids.len()
    })
    .await;
    assert_eq!(messages(&seen), ids, "each event once, in order");
    (before, client.stats().await.expect("stats").0.batches_in)
}

#[tokio::test]
async fn the_servers_batches_arrive_as_separate_events_in_order() {
    for encoding in [Encoding::Msgpack, Encoding::Json] {
        let (before, after) = twenty_posts_at_once(V2Config::default(), encoding).await;
        assert!(
            after > before,
            "{encoding:?}: a batch came ({before} -> {after})"
        );
    }
}

#[tokio::test]
async fn with_batching_off_the_server_sends_one_event_per_frame() {
    for encoding in [Encoding::Msgpack, Encoding::Json] {
        let (_, after) = twenty_posts_at_once(v2(true, true, false), encoding).await;
        assert_eq!(after, 0, "{encoding:?}: no batch ever came");
    }
}

// Hostile MessagePack on a msgpack socket: skipped and counted, the link stays.

/// Injects `frame` as binary and checks it was counted as a decode error while the link stayed
/// up: a later post still arrives on the same socket. Returns the stats after.
async fn garbage_is_skipped(frames: &[Vec<u8>]) -> tether_core::Stats {
    let w = World::start(ServerConfig::default(), 1).await;
    let ch = w.channels[0].clone();
    let (client, mut events) = alice(&w, vec![Encoding::Msgpack]).await;
    assert_eq!(
        client.protocol().await.expect("protocol"),
        Protocol::V2_MSGPACK
    );
    let before = client.stats().await.expect("stats").0;
    let upgrades = w.server.upgrades();
    for frame in frames {
        assert_eq!(w.server.faults().inject_binary(frame), 1);
    }
    let id = w.server.post(&ch, "bob", "still here").expect("post");
    let seen = until(&mut events, "the post after the garbage", |e| {
        messages(std::slice::from_ref(e)).iter().any(|m| m.1 == id)
    })
    .await;
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Status(_))),
        "no status change: {seen:?}"
    );
    assert_eq!(w.server.upgrades(), upgrades, "the same socket");
    let after = client.stats().await.expect("stats").0;
    assert_eq!(
        after.decode_errors - before.decode_errors,
        frames.len() as u64,
        "each frame counted"
    );
    after
}

#[tokio::test]
async fn invalid_msgpack_is_counted_and_the_link_stays_up() {
    garbage_is_skipped(&[
        vec![0xc1],                               // the reserved marker
        vec![0x81, 0x01, 0x02],                   // a map with an integer key
        vec![0xdd, 0xff, 0xff, 0xff, 0xff],       // an array claiming 4 billion items
        vec![0xa5, b'a'],                         // a truncated str
        vec![0x81, 0xa4, b't', b'y', b'p', b'e'], // a map missing its value
    ])
    .await;
}

#[tokio::test]
async fn a_msgpack_bomb_is_skipped_without_dropping_the_link() {
    // 200 KiB of 0x01 in a str: under the 256 KiB frame cap, 1.2 MiB once escaped as JSON
    // (`\u0001` each).
    let pad = vec![0x01u8; 200 * 1024];
    let mut bomb = vec![0x82, 0xa4];
    bomb.extend_from_slice(b"type");
    bomb.extend_from_slice(&[0xa5]);
    bomb.extend_from_slice(b"bombs");
    bomb.extend_from_slice(&[0xa3]);
    bomb.extend_from_slice(b"pad");
    bomb.push(0xdb);
    bomb.extend_from_slice(&(pad.len() as u32).to_be_bytes());
    bomb.extend_from_slice(&pad);
    let stats = garbage_is_skipped(&[bomb]).await;
    assert!(stats.oversized >= 1, "counted as oversized too: {stats:?}");
}

// `tether serve`'s flags.

/// `tether serve --addr 127.0.0.1:0 <flags>`, and the URL it printed.
async fn tether_serve(flags: &[&str]) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tether-under-test"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(flags)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("tether serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("in time")
        .expect("stdout")
        .expect("a line");
    let url = line
        .strip_prefix("listening on ")
        .expect("listening on ...")
        .to_owned();
    // Keep stdout open (and drained) so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

/// Logs alice in on `url`, opens a socket offering what the core offers, and sends three
/// subscribes in one batch; returns what the 101 selected and the frames that answered them.
async fn offer_everything_and_subscribe_three(url: &str) -> (Option<String>, Vec<Message>) {
    let api = tether_tokio::Api::new(url).expect("api");
    let alice = api
        .login("alice", &tether_core::Secret::new("password123"))
        .await
        .expect("login");
    let token = alice.access_token.expose();
    let channels: Vec<String> = api
        .channels(&alice.access_token)
        .await
        .expect("channels")
        .iter()
        .filter_map(|c| c["id"].as_str().map(str::to_owned))
        .take(3)
        .collect();
    assert_eq!(channels.len(), 3, "the demo's channels");
    let offer = format!("{V2_MSGPACK}, {V2_JSON}, access_token");
    let (mut ws, selected, _) = raw_socket(url, token, &offer, None).await;
    next_frame(&mut ws).await; // ready
    let subscribes: Vec<Value> = channels
        .iter()
        .map(|ch| json!({"type": "subscribe", "channel_id": ch}))
        .collect();
    if selected.as_deref() == Some(V2_JSON) {
        ws.send(Message::text(Value::from(subscribes).to_string()))
            .await
            .expect("send");
    } else {
        // One frame each: v1 reads no batch (and the dev server reads JSON text on a
        // msgpack socket too). One write, so the server reads all three before it answers,
        // as it does under load.
        for s in subscribes {
            ws.feed(Message::text(s.to_string())).await.expect("send");
        }
        ws.flush().await.expect("flush");
    }
    let mut frames = Vec::new();
    let mut answered = 0;
    while answered < 3 {
        let frame = next_frame(&mut ws).await;
        // A batch answers as many as it holds, in either encoding: three subscribes read
        // before the writer runs leave as one MessagePack batch too.
        let json = match &frame {
            Message::Text(t) => t.as_str().to_owned(),
            Message::Binary(b) => tether_core::wire::msgpack_to_json(b, 1 << 20)
                .expect("msgpack")
                .as_str()
                .to_owned(),
            _ => String::new(),
        };
        answered += match serde_json::from_str::<Value>(&json) {
            Ok(Value::Array(items)) => items.len(),
            _ => 1,
        };
        frames.push(frame);
    }
    (selected, frames)
}

#[tokio::test]
async fn tether_serve_flags_turn_each_v2_feature_off() {
    let (_child, url) = tether_serve(&[]).await;
    let (selected, _) = offer_everything_and_subscribe_three(&url).await;
    assert_eq!(selected.as_deref(), Some(V2_MSGPACK));

    let (_child, url) = tether_serve(&["--no-v2-msgpack"]).await;
    let (selected, frames) = offer_everything_and_subscribe_three(&url).await;
    assert_eq!(selected.as_deref(), Some(V2_JSON));
    assert_eq!(
        frames.len(),
        1,
        "the three answers in one batch: {frames:?}"
    );

    let (_child, url) = tether_serve(&["--no-v2-msgpack", "--no-v2-batch"]).await;
    let (selected, frames) = offer_everything_and_subscribe_three(&url).await;
    assert_eq!(selected.as_deref(), Some(V2_JSON));
    assert_eq!(frames.len(), 3, "one answer per frame: {frames:?}");

    let (_child, url) = tether_serve(&["--no-v2-msgpack", "--no-v2-json"]).await;
    let (selected, frames) = offer_everything_and_subscribe_three(&url).await;
    assert_eq!(selected.as_deref(), Some("access_token"));
    assert!(
        frames.iter().all(|f| matches!(f, Message::Text(t)
            if t.as_str().starts_with(r#"{"type":"subscribed","channel_id""#))),
        "v1: one object per text frame, as Kaiku writes it: {frames:?}"
    );
}
