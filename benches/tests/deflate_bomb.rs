//! A decompression bomb (issue 12): a permessage-deflate frame of 16 KiB that inflates to
//! 16 MiB. The client must end the socket at the 256 KiB message cap, as with any message too
//! large, and hold no more while it does than a legitimate message at the cap makes it hold:
//! memory is counted by the allocator, so a transport that inflated the whole frame first
//! fails here.
//!
//! Its own test binary, one test: the count is the whole process's.

use std::time::Duration;

use tether_bench::alloc::{self, Counting};
use tether_core::wire::DeflateOffer;
use tether_core::{Credentials, Event, ReconnectReason, Status};
use tether_integration::next;
use tether_integration::raw::{deflated, frame, upgrade_server};
use tether_tokio::{Client, ClientConfig};

#[global_allocator]
static A: Counting = Counting;

/// 16 MiB of one byte as one permessage-deflate message: 16 KiB on the wire.
fn bomb() -> Vec<u8> {
    deflated(&vec![b'a'; 16 << 20])
}

/// A client offering deflate to `url`, its cap, and the peak growth of the process's live
/// memory from its connect until `done` says yes to an event.
async fn connect_and_measure(url: &str, mut done: impl FnMut(&Event) -> bool) -> (i64, usize) {
    let mut cfg = ClientConfig::new(url).expect("config");
    cfg.core.seed = 3;
    cfg.core.backoff.base = Duration::from_secs(30); // one connect, then quiet
    cfg.core.deflate = Some(DeflateOffer::default());
    let cap = cfg.core.max_inbound_message;
    let (client, mut events) = Client::spawn(cfg, Credentials::new("t.o.k")).expect("spawn");
    let before = alloc::reset_peak();
    client.connect().expect("connect");
    while !done(&next(&mut events, "the event").await) {}
    let grew = alloc::peak() - before;
    drop(client);
    (grew, cap)
}

#[tokio::test(flavor = "current_thread")]
async fn a_decompression_bomb_ends_at_the_cap_and_costs_no_more_than_a_message_at_the_cap() {
    // The reference: one legitimate compressed message just under the cap.
    let mut legit = br#"{"type":"padding","pad":""#.to_vec();
    legit.resize(255 * 1024, b'a');
    legit.extend_from_slice(br#""}"#);
    let url = upgrade_server(
        Some("permessage-deflate"),
        frame(0x1, true, &deflated(&legit)),
    )
    .await;
    let (legit_grew, _) = connect_and_measure(
        &url,
        |e| matches!(e, Event::Server(s) if s.json().len() > 255 * 1024),
    )
    .await;

    let payload = bomb();
    assert!(payload.len() < 64 * 1024, "{} bytes", payload.len());
    let url = upgrade_server(Some("permessage-deflate"), frame(0x1, true, &payload)).await;
    let mut verdict = None;
    let (grew, cap) = connect_and_measure(&url, |e| {
        if let Event::Status(s @ (Status::Reconnecting { .. } | Status::Failed { .. })) = e {
            verdict = Some(s.clone());
        }
        verdict.is_some()
    })
    .await;
    assert!(
        matches!(
            verdict,
            Some(Status::Reconnecting {
                reason: ReconnectReason::MessageTooLarge,
                ..
            })
        ),
        "{verdict:?}"
    );
    println!(
        "bomb: {} bytes on the wire, 16 MiB inflated; peak growth {} KiB; a legitimate {} KiB \
         message: {} KiB; cap {} KiB",
        payload.len(),
        grew / 1024,
        legit.len() / 1024,
        legit_grew / 1024,
        cap / 1024
    );
    // Cut at the cap: no more than a legitimate message at the cap costs (its buffer grows
    // by doubling, so up to twice the cap, plus the inflate context and the socket's
    // buffers), where inflating the frame whole would take 16 MiB.
    assert!(
        grew <= legit_grew + 64 * 1024,
        "the bomb grew memory by {grew} bytes, a message at the cap by {legit_grew}"
    );
    assert!(grew < 3 * cap as i64, "{grew} bytes for a {cap}-byte cap");
}
