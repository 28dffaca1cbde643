//! permessage-deflate (issue 12, D67) over real loopback sockets: the tokio driver's yawc
//! transport against the dev server for every pairing, and against raw servers that answer
//! what no honest server would (an extension nobody offered, a broken deflate stream).
//!
//! The decompression bomb has its own test binary (`deflate_bomb.rs`), which counts memory.

use std::time::Duration;

use tether_core::wire::{Deflate, DeflateOffer, Encoding, Protocol};
use tether_core::{
    ClientEvent, Credentials, Event, FailReason, ReconnectReason, ServerEventKind, Status,
};
use tether_devserver::{ServerConfig, V2Config};
use tether_integration::raw::{deflated, frame, upgrade_server};
use tether_integration::*;
use tether_tokio::{Client, ClientConfig, Events};

fn server(json: bool, msgpack: bool, deflate: bool, window_bits: u8) -> ServerConfig {
    let mut v2 = V2Config::default();
    v2.json = json;
    v2.msgpack = msgpack;
    v2.deflate = deflate;
    v2.deflate_window_bits = window_bits;
    let mut config = ServerConfig::default();
    config.v2 = v2;
    config
}

/// Alice on `w`, offering `encodings` and `offer`, connected and live.
async fn alice(
    w: &World,
    encodings: Vec<Encoding>,
    offer: Option<DeflateOffer>,
) -> (Client, Events, Status) {
    let mut config = w.client_config();
    config.core.v2 = encodings;
    config.core.deflate = offer;
    let (client, mut events) = w.client(config).await;
    let mut connected = None;
    let mut subscribed = 0;
    until(&mut events, "connected and subscribed", |e| {
        match e {
            Event::Status(s @ Status::Connected { .. }) => connected = Some(s.clone()),
            Event::Server(s) if matches!(s.kind(), ServerEventKind::Subscribed { .. }) => {
                subscribed += 1;
            }
            _ => {}
        }
        connected.is_some() && subscribed >= w.channels.len()
    })
    .await;
    let status = connected.unwrap_or(Status::Disconnected);
    (client, events, status)
}

/// Posts as bob and waits until alice's client delivers it.
async fn post_and_see(w: &World, events: &mut Events, text: &str) {
    let id = w.server.post(&w.channels[0], "bob", text).expect("post");
    until(events, "the post", |e| {
        messages(std::slice::from_ref(e)).iter().any(|m| m.1 == id)
    })
    .await;
}

/// The compression a connected status reports.
fn compression(status: &Status) -> Option<Deflate> {
    match status {
        Status::Connected { compression, .. } => *compression,
        _ => None,
    }
}

fn protocol(status: &Status) -> Option<Protocol> {
    match status {
        Status::Connected { protocol, .. } => Some(*protocol),
        _ => None,
    }
}

/// A v2 client offering deflate, and a v2 server that compresses: they agree, and events
/// flow both ways (a typing event out, posts in), compressed from the server.
async fn agree_and_talk(encoding: Encoding) {
    let w = World::start(ServerConfig::default(), 2).await;
    let (client, mut events, status) =
        alice(&w, vec![encoding], Some(DeflateOffer::default())).await;
    let agreed = compression(&status).expect("compression agreed");
    assert_eq!(agreed.server_max_window_bits, 15);
    assert!(!agreed.server_no_context_takeover);
    assert_eq!(protocol(&status).map(|p| p.encoding), Some(encoding));
    let (stats, _) = client.stats().await.expect("stats");
    assert_eq!(stats.compression, Some(agreed), "the stats say it too");
    for i in 0..20 {
        post_and_see(&w, &mut events, &format!("compressed {i}")).await;
    }
    client
        .send(ClientEvent::Typing {
            channel_id: w.channels[1].clone(),
        })
        .await
        .expect("send");
    post_and_see(&w, &mut events, "after typing").await;
    assert!(client.status().is_connected());
}

#[tokio::test]
async fn v2_msgpack_with_deflate_agrees_and_talks() {
    agree_and_talk(Encoding::Msgpack).await;
}

#[tokio::test]
async fn v2_json_with_deflate_agrees_and_talks() {
    agree_and_talk(Encoding::Json).await;
}

#[tokio::test]
async fn a_v1_server_leaves_a_deflate_offer_unanswered_and_speaks_v1_uncompressed() {
    let w = World::start(server(false, false, true, 15), 1).await;
    let (_client, mut events, status) = alice(
        &w,
        vec![Encoding::Msgpack, Encoding::Json],
        Some(DeflateOffer::default()),
    )
    .await;
    assert_eq!(protocol(&status), Some(Protocol::V1));
    assert_eq!(compression(&status), None);
    post_and_see(&w, &mut events, "plain").await;
}

#[tokio::test]
async fn a_v2_server_without_deflate_speaks_v2_uncompressed() {
    let w = World::start(server(true, true, false, 15), 1).await;
    let (_client, mut events, status) =
        alice(&w, vec![Encoding::Msgpack], Some(DeflateOffer::default())).await;
    assert_eq!(protocol(&status), Some(Protocol::V2_MSGPACK));
    assert_eq!(compression(&status), None);
    post_and_see(&w, &mut events, "plain v2").await;
}

#[tokio::test]
async fn a_client_without_the_offer_is_never_compressed() {
    let w = World::start(ServerConfig::default(), 1).await;
    let (_client, mut events, status) = alice(&w, vec![Encoding::Msgpack], None).await;
    assert_eq!(compression(&status), None);
    post_and_see(&w, &mut events, "plain").await;
}

#[tokio::test]
async fn window_bits_the_client_asks_for_or_the_server_chooses_are_agreed() {
    // The client asks for 10 bits: the server compresses with at most 1 KiB of history.
    let w = World::start(ServerConfig::default(), 1).await;
    let mut offer = DeflateOffer::default();
    offer.server_max_window_bits = 10;
    let (_c, mut events, status) = alice(&w, vec![Encoding::Json], Some(offer)).await;
    assert_eq!(
        compression(&status).map(|d| d.server_max_window_bits),
        Some(10)
    );
    for i in 0..10 {
        post_and_see(&w, &mut events, &format!("small window {i}")).await;
    }

    // The client leaves it open and the server chooses 12.
    let w = World::start(server(true, true, true, 12), 1).await;
    let (_c, mut events, status) =
        alice(&w, vec![Encoding::Msgpack], Some(DeflateOffer::default())).await;
    assert_eq!(
        compression(&status).map(|d| d.server_max_window_bits),
        Some(12)
    );
    post_and_see(&w, &mut events, "server's window").await;

    // No context takeover, asked for and agreed.
    let w = World::start(ServerConfig::default(), 1).await;
    let mut offer = DeflateOffer::default();
    offer.server_no_context_takeover = true;
    let (_c, mut events, status) = alice(&w, vec![Encoding::Json], Some(offer)).await;
    assert_eq!(
        compression(&status).map(|d| d.server_no_context_takeover),
        Some(true)
    );
    for i in 0..5 {
        post_and_see(&w, &mut events, &format!("alone {i}")).await;
    }
}

#[tokio::test]
async fn a_drop_on_a_compressed_socket_is_caught_up_and_compressed_again() {
    let w = World::start(ServerConfig::default(), 3).await;
    let (client, mut events, status) =
        alice(&w, vec![Encoding::Msgpack], Some(DeflateOffer::default())).await;
    assert!(compression(&status).is_some());
    tether_integration::read_message_clock(&w.server, &w.channels[0], &mut events).await;
    assert!(w.server.faults().drop_all() >= 1);
    let mut missed = Vec::new();
    for i in 0..4 {
        for ch in &w.channels {
            missed.push(w.server.post(ch, "bob", &format!("gap {i}")).expect("post"));
        }
    }
    let mut resynced = 0;
    let mut again = None;
    let seen = until(&mut events, "every channel resynced", |e| {
        match e {
            Event::Resynced { complete, .. } => {
                assert!(complete);
                resynced += 1;
            }
            Event::Status(s @ Status::Connected { .. }) => again = Some(s.clone()),
            _ => {}
        }
        resynced == w.channels.len()
    })
    .await;
    let got: Vec<String> = messages(&seen).into_iter().map(|(_, id)| id).collect();
    for id in &missed {
        assert_eq!(
            got.iter().filter(|g| *g == id).count(),
            1,
            "{id} caught up exactly once"
        );
    }
    assert!(
        again.as_ref().and_then(compression).is_some(),
        "the new socket is compressed too: {again:?}"
    );
    post_and_see(&w, &mut events, "after the drop").await;
    drop(client);
}

// Raw servers (`tether_integration::raw`): a 101 that agrees to whatever the test says, then
// frames the test writes.

fn client_for(url: &str, offer: Option<DeflateOffer>) -> (Client, Events) {
    let mut cfg = ClientConfig::new(url).expect("config");
    cfg.core.seed = 3;
    cfg.core.backoff.base = Duration::from_millis(50);
    cfg.core.backoff.max = Duration::from_millis(200);
    cfg.core.handshake_timeout = Duration::from_secs(2);
    cfg.core.deflate = offer;
    let (client, events) = Client::spawn(cfg, Credentials::new("t.o.k")).expect("spawn");
    client.connect().expect("connect");
    (client, events)
}

/// The first terminal or retry verdict the client reaches.
async fn verdict(events: &mut Events) -> Status {
    loop {
        if let Event::Status(s @ (Status::Reconnecting { .. } | Status::Failed { .. })) =
            next(events, "a verdict").await
        {
            return s;
        }
    }
}

#[tokio::test]
async fn an_extension_nobody_offered_fails_for_good() {
    // No offer (the plain transport), and a server that compresses anyway.
    let url = upgrade_server(Some("permessage-deflate"), Vec::new()).await;
    let (client, mut events) = client_for(&url, None);
    assert_eq!(
        verdict(&mut events).await,
        Status::Failed {
            reason: FailReason::Extension,
            http_status: None,
            detail: None
        }
    );
    let (stats, _) = client.stats().await.expect("stats");
    assert_eq!(stats.refused_extensions, 1);

    // An offer, and an answer that names another extension.
    let url = upgrade_server(Some("x-webkit-deflate-frame"), Vec::new()).await;
    let (_c, mut events) = client_for(&url, Some(DeflateOffer::default()));
    assert_eq!(
        verdict(&mut events).await,
        Status::Failed {
            reason: FailReason::Extension,
            http_status: None,
            detail: None
        }
    );
}

#[tokio::test]
async fn an_answer_that_widens_the_offer_fails_for_good() {
    let url = upgrade_server(
        Some("permessage-deflate; server_max_window_bits=15"),
        Vec::new(),
    )
    .await;
    let mut offer = DeflateOffer::default();
    offer.server_max_window_bits = 10;
    let (_c, mut events) = client_for(&url, Some(offer));
    assert_eq!(
        verdict(&mut events).await,
        Status::Failed {
            reason: FailReason::Extension,
            http_status: None,
            detail: None
        }
    );
}

#[tokio::test]
async fn an_invalid_deflate_stream_is_a_protocol_error_and_a_reconnect() {
    // RSV1 text frames whose payload is not deflate at all (block type 3 is reserved).
    let frames = frame(0x1, true, &[0xff, 0xff, 0xff, 0xff, 0x00, 0x13, 0x37]);
    let url = upgrade_server(Some("permessage-deflate"), frames).await;
    let (client, mut events) = client_for(&url, Some(DeflateOffer::default()));
    let s = verdict(&mut events).await;
    assert!(
        matches!(
            s,
            Status::Reconnecting {
                reason: ReconnectReason::ProtocolError,
                ..
            }
        ),
        "{s:?}"
    );
    // And again, with backoff: a broken server is retried, never trusted.
    let s = verdict(&mut events).await;
    assert!(
        matches!(s, Status::Reconnecting { attempt: 2, .. }),
        "{s:?}"
    );
    let (stats, _) = client.stats().await.expect("stats");
    assert_eq!(
        stats.frames_in, 0,
        "nothing of the garbage reached the core"
    );
}

#[tokio::test]
async fn a_compressed_frame_on_a_socket_that_agreed_to_none_is_a_protocol_error() {
    // The offer was made, the server did not agree, and then it compresses anyway.
    let payload = [0x4a, 0x4c, 0x4a, 0x06, 0x00];
    let url = upgrade_server(None, frame(0x1, true, &payload)).await;
    let (_c, mut events) = client_for(&url, Some(DeflateOffer::default()));
    let s = verdict(&mut events).await;
    assert!(
        matches!(
            s,
            Status::Reconnecting {
                reason: ReconnectReason::ProtocolError,
                ..
            }
        ),
        "{s:?}"
    );
}

#[tokio::test]
async fn a_quoted_mixed_case_answer_is_read_as_the_core_reads_it_and_frames_inflate() {
    // RFC 7692 allows a quoted value and extension names match case-insensitively; the
    // transport's inflater must read the agreement exactly as the core did.
    let ready = deflated(br#"{"type":"ready","user_id":"me"}"#);
    let url = upgrade_server(
        Some(r#"Permessage-Deflate; Server_Max_Window_Bits="12""#),
        frame(0x1, true, &ready),
    )
    .await;
    let (client, mut events) = client_for(&url, Some(DeflateOffer::default()));
    let connected = until(&mut events, "connected", |e| {
        matches!(e, Event::Status(Status::Connected { .. }))
    })
    .await;
    let Some(Event::Status(status)) = connected.last() else {
        panic!("{connected:?}");
    };
    assert_eq!(
        compression(status).map(|d| d.server_max_window_bits),
        Some(12),
        "{status:?}"
    );
    assert!(client.status().is_connected());
}

#[tokio::test]
async fn a_second_extensions_line_naming_another_extension_fails_for_good() {
    let url = upgrade_server(
        Some("permessage-deflate\r\nsec-websocket-extensions: x-custom-extension"),
        Vec::new(),
    )
    .await;
    let (_c, mut events) = client_for(&url, Some(DeflateOffer::default()));
    assert_eq!(
        verdict(&mut events).await,
        Status::Failed {
            reason: FailReason::Extension,
            http_status: None,
            detail: None
        }
    );
}
