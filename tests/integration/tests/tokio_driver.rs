//! The tokio driver against the dev server over real loopback sockets.

use std::time::Duration;

use tether_core::{Event, Status};
use tether_devserver::ServerConfig;
use tether_integration::*;

#[tokio::test]
async fn receives_live_messages_after_subscribing() {
    let w = World::start(ServerConfig::default(), 1).await;
    let (_client, mut events) = w.client(w.client_config()).await;
    until_live(&mut events, 1).await;
    let id = w.server.post(&w.channels[0], "bob", "hello").expect("post");
    let seen = until(&mut events, "message_new", |e| {
        !messages(std::slice::from_ref(e)).is_empty()
    })
    .await;
    assert_eq!(messages(&seen), [(w.channels[0].clone(), id)]);
}

#[tokio::test]
async fn an_abrupt_drop_reconnects_resubscribes_and_catches_up_in_order() {
    let w = World::start(ServerConfig::default(), 2).await;
    let (_client, mut events) = w.client(w.client_config()).await;
    until_live(&mut events, 2).await;
    let first = w
        .server
        .post(&w.channels[0], "bob", "before")
        .expect("post");
    until(&mut events, "first message", |e| {
        messages(std::slice::from_ref(e))
            .iter()
            .any(|m| m.1 == first)
    })
    .await;

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
    let seen = until(&mut events, "two resynced", |e| {
        if let Event::Resynced { complete, .. } = e {
            assert!(complete);
            resynced += 1;
        }
        resynced == 2
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
    let _ = Duration::ZERO;
}
