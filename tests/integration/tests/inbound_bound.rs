//! The inbound bound holds with v2 (DESIGN 3.6, issue 18): a server that floods a client
//! which does not read, in batches of 1,024 events (the most a v2 frame may hold), fills the
//! app's queue to at most its capacity plus one frame's events, then meets TCP backpressure;
//! once the app reads, every event arrives, once, in order, on the same socket.

use std::time::Duration;

use tether_core::wire::{Encoding, MAX_BATCH, V2_MSGPACK};
use tether_core::{Credentials, Event, Status};
use tether_integration::raw::{msgpack_flood, upgrade_server_with};
use tether_integration::{WAIT, next};
use tether_tokio::{Client, ClientConfig};

/// Waits until the client's queue has not grown for half a second (it stopped reading), and
/// returns its length then: the peak, as a queue nobody reads only grows.
async fn settled(events: &tether_tokio::Events) -> usize {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = (events.queued(), tokio::time::Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = tokio::time::Instant::now();
        let n = events.queued();
        if n != last.0 {
            last = (n, now);
        } else if n > 0 && now - last.1 >= Duration::from_millis(500) {
            return n;
        }
        assert!(now < deadline, "the queue never settled ({n} events)");
    }
}

#[tokio::test]
async fn a_flood_of_full_v2_batches_fills_the_queue_to_its_bound_plus_one_frame() {
    const BATCHES: usize = 64;
    let url = upgrade_server_with(Some(V2_MSGPACK), None, msgpack_flood(BATCHES, MAX_BATCH)).await;
    let mut cfg = ClientConfig::new(&url).expect("config");
    cfg.core.v2 = vec![Encoding::Msgpack];
    let capacity = cfg.event_capacity;
    let (client, mut events) = Client::spawn(cfg, Credentials::new("t.o.k")).expect("spawn");
    client.connect().expect("connect");

    let peak = settled(&events).await;
    assert!(
        peak <= capacity + MAX_BATCH,
        "{peak} events queued: over the bound ({capacity}) by more than one frame's batch"
    );

    // Reading again: everything comes, once, in order, on the one socket.
    let mut n = 0;
    while n < BATCHES * MAX_BATCH {
        match next(&mut events, "the flood").await {
            Event::Server(e) if e.event_type().as_str() == "flood" => {
                let v: serde_json::Value = serde_json::from_str(e.json().as_str()).expect("json");
                assert_eq!(v["n"], n, "in order, once");
                n += 1;
            }
            Event::Status(s @ (Status::Reconnecting { .. } | Status::Failed { .. })) => {
                panic!("the link dropped: {s:?}")
            }
            _ => {}
        }
    }
    let (stats, _) = client.stats().await.expect("stats");
    assert_eq!(stats.sessions, 1, "one socket");
}
