//! The heartbeat's round trip through `Connection` (issue 18): the server answers every `ping`
//! with one `pong`, in order, so each `pong` is timed against the ping it answers. The app's
//! own `ping` (Kaiku's `ws_ping`) is one of them: its `pong` is a round-trip sample, and it is
//! never taken for the answer to a later heartbeat ping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::*;
use tether_core::ClientEvent;

const PING: &str = r#"{"type":"ping"}"#;
const PONG: &str = r#"{"type":"pong"}"#;

#[test]
fn an_apps_ping_is_timed_and_its_pong_is_not_taken_for_the_heartbeats() {
    let mut h = Harness::new();
    h.connect_ready();
    h.take();
    // The app pings 100 ms before the heartbeat's ping is due (30 s after `ready`).
    h.advance(29_900 * MS);
    h.conn.send(h.now, ClientEvent::Ping).unwrap();
    h.advance(100 * MS);
    assert_eq!(sent(&h.take()), [PING, PING]);
    // Each is answered 150 ms after it left.
    h.now += 50 * MS;
    h.frame(PONG);
    assert_eq!(h.conn.rtt(), Some(150 * MS), "the app's ping's round trip");
    h.now += 100 * MS;
    h.frame(PONG);
    assert_eq!(
        h.conn.rtt(),
        Some(150 * MS),
        "the heartbeat's ping's round trip"
    );
}

#[test]
fn an_apps_ping_alone_gives_a_round_trip() {
    let mut h = Harness::new();
    h.connect_ready();
    h.advance(5 * S);
    assert_eq!(h.conn.rtt(), None);
    h.conn.send(h.now, ClientEvent::Ping).unwrap();
    h.now += 40 * MS;
    h.frame(PONG);
    assert_eq!(h.conn.rtt(), Some(40 * MS));
}
