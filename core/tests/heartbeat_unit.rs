//! Unit tests of `tether_core::heartbeat` (outside the crate: the core never reads a clock, even
//! in its own tests; `support::t0` does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;
use support::t0;

use tether_core::heartbeat::*;

const S: Duration = Duration::from_secs(1);

#[test]
fn pings_every_interval_while_answered() {
    let t = t0();
    let mut hb = Heartbeat::new(t, &HeartbeatConfig::default());
    assert_eq!(hb.poll_timeout(), t + 30 * S);
    assert_eq!(hb.handle_timeout(t + 29 * S), Beat::Idle);
    assert_eq!(hb.handle_timeout(t + 30 * S), Beat::Ping);
    assert_eq!(hb.poll_timeout(), t + 40 * S);
    assert_eq!(hb.handle_pong(t + 31 * S), Some(S));
    assert_eq!(hb.poll_timeout(), t + 60 * S);
    assert_eq!(hb.handle_timeout(t + 60 * S), Beat::Ping);
}

#[test]
fn silence_after_a_ping_is_a_dead_link() {
    let t = t0();
    let mut hb = Heartbeat::new(t, &HeartbeatConfig::default());
    assert_eq!(hb.handle_timeout(t + 30 * S), Beat::Ping);
    assert_eq!(hb.handle_timeout(t + 39 * S), Beat::Idle);
    assert_eq!(hb.handle_timeout(t + 40 * S), Beat::Dead);
}

#[test]
fn any_frame_counts_not_only_pong() {
    let t = t0();
    let mut hb = Heartbeat::new(t, &HeartbeatConfig::default());
    hb.handle_timeout(t + 30 * S);
    hb.handle_activity();
    assert!(!hb.is_awaiting());
    assert_eq!(hb.handle_timeout(t + 40 * S), Beat::Idle);
}

#[test]
fn rtt_is_measured_even_when_other_frames_arrive_first() {
    let t = t0();
    let mut hb = Heartbeat::new(t, &HeartbeatConfig::default());
    hb.handle_timeout(t + 30 * S);
    hb.handle_activity();
    assert_eq!(hb.handle_pong(t + 30 * S + S / 2), Some(S / 2));
    assert_eq!(hb.handle_pong(t + 32 * S), None, "one answer per ping");
}

#[test]
fn silence_while_the_driver_is_not_reading_is_not_a_dead_link() {
    let t = t0();
    let mut hb = Heartbeat::new(t, &HeartbeatConfig::default());
    hb.set_paused(t, true);
    assert_eq!(hb.handle_timeout(t + 30 * S), Beat::Ping);
    assert_ne!(hb.handle_timeout(t + 40 * S), Beat::Dead);
    assert_ne!(hb.handle_timeout(t + 200 * S), Beat::Dead);
    hb.set_paused(t + 200 * S, false);
    assert_eq!(
        hb.poll_timeout(),
        t + 210 * S,
        "a fresh window after resuming"
    );
    assert_eq!(hb.handle_timeout(t + 210 * S), Beat::Dead);
}

#[test]
fn probe_replaces_old_deadlines_with_a_short_one() {
    let t = t0();
    let mut hb = Heartbeat::new(t, &HeartbeatConfig::default());
    hb.handle_timeout(t + 30 * S);
    let woke = t + 3600 * S;
    hb.probe(woke, 5 * S);
    assert_eq!(hb.poll_timeout(), woke + 5 * S);
    assert_eq!(hb.handle_timeout(woke + 5 * S), Beat::Dead);
}

#[test]
fn every_fired_timer_moves_the_deadline() {
    let t = t0();
    let mut hb = Heartbeat::new(t, &HeartbeatConfig::default());
    let mut now = t;
    for _ in 0..10 {
        let due = hb.poll_timeout();
        now = now.max(due);
        let beat = hb.handle_timeout(now);
        assert!(hb.poll_timeout() > now || beat == Beat::Dead);
        if beat == Beat::Dead {
            break;
        }
    }
}
