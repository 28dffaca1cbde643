//! Unit tests of `tether_core::outbound` (outside the crate: the core never reads a clock, even
//! in its own tests; `support::t0` does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;
use support::t0;

use tether_core::outbound::*;
use tether_core::{ClientEvent, CustomEvent};

const S: Duration = Duration::from_secs(1);

fn custom(n: u32) -> ClientEvent {
    ClientEvent::Custom(CustomEvent::new(format!(r#"{{"type":"x","n":{n}}}"#)).unwrap())
}

#[test]
fn policies_match_the_design() {
    assert_eq!(Policy::of(&ClientEvent::Ping), Policy::Volatile);
    assert_eq!(
        Policy::of(&ClientEvent::Typing {
            channel_id: "c".into()
        }),
        Policy::Volatile
    );
    assert_eq!(
        Policy::of(&ClientEvent::VoiceAnswer {
            channel_id: "c".into(),
            sdp: "s".into()
        }),
        Policy::Volatile
    );
    assert_eq!(
        Policy::of(&ClientEvent::VoiceMute {
            channel_id: "c".into()
        }),
        Policy::State
    );
    assert_eq!(Policy::of(&custom(1)), Policy::Queued);
}

#[test]
fn full_queue_hands_the_event_back() {
    let t = t0();
    let mut config = QueueConfig::default();
    config.capacity = 2;
    let mut q = OutboundQueue::new(config);
    assert!(q.push(t, custom(1)).is_ok());
    assert!(q.push(t, custom(2)).is_ok());
    assert_eq!(q.push(t, custom(3)), Err(custom(3)));
    assert_eq!(q.len(), 2);
    assert_eq!(q.drain().collect::<Vec<_>>(), vec![custom(1), custom(2)]);
}

#[test]
fn old_events_expire_in_order() {
    let t = t0();
    let mut q = OutboundQueue::new(QueueConfig::default());
    q.push(t, custom(1)).unwrap();
    q.push(t + 30 * S, custom(2)).unwrap();
    assert_eq!(q.poll_timeout(), Some(t + 60 * S));
    assert!(q.expire(t + 59 * S).is_empty());
    assert_eq!(q.expire(t + 60 * S), vec![custom(1)]);
    assert_eq!(q.poll_timeout(), Some(t + 90 * S));
}

#[test]
fn excess_is_coalesced_to_the_latest_value() {
    let t = t0();
    let mut r = RateLimiter::new(RateLimitConfig::default());
    let act = |n: u32| ClientEvent::SetActivity {
        activity: serde_json::json!(n),
    };
    assert_eq!(r.offer(t, act(1)), Some(act(1)));
    assert_eq!(r.offer(t + S, act(2)), None);
    assert_eq!(r.offer(t + 2 * S, act(3)), None);
    assert_eq!(r.poll_timeout(), Some(t + 10 * S));
    assert!(r.handle_timeout(t + 9 * S).is_empty());
    assert_eq!(r.handle_timeout(t + 10 * S), vec![act(3)]);
    assert_eq!(r.poll_timeout(), None);
    assert_eq!(r.offer(t + 11 * S, act(4)), None);
    assert_eq!(r.handle_timeout(t + 20 * S), vec![act(4)]);
}

#[test]
fn typing_is_limited_per_channel_and_cancelled_by_stop() {
    let t = t0();
    let mut r = RateLimiter::new(RateLimitConfig::default());
    let ty = |c: &str| ClientEvent::Typing {
        channel_id: c.into(),
    };
    assert!(r.offer(t, ty("a")).is_some());
    assert!(r.offer(t, ty("b")).is_some());
    assert!(r.offer(t + S, ty("a")).is_none());
    r.cancel_typing("a");
    assert!(r.handle_timeout(t + 3 * S).is_empty());
    assert!(r.offer(t + 3 * S, ty("a")).is_some());
}

#[test]
fn disconnect_returns_only_volatile_pendings() {
    let t = t0();
    let mut r = RateLimiter::new(RateLimitConfig::default());
    let ty = ClientEvent::Typing {
        channel_id: "a".into(),
    };
    let vj = ClientEvent::VoiceJoin {
        channel_id: "v".into(),
    };
    r.offer(t, ty.clone());
    r.offer(t, ty.clone());
    r.offer(t, vj.clone());
    r.offer(t, vj);
    assert_eq!(r.handle_disconnect(), vec![ty]);
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn a_pending_voice_join_is_visible_and_cancellable() {
    let t = t0();
    let mut r = RateLimiter::new(RateLimitConfig::default());
    let vj = ClientEvent::VoiceJoin {
        channel_id: "v".into(),
    };
    assert!(r.offer(t, vj.clone()).is_some());
    assert!(!r.is_voice_join_pending());
    assert!(r.offer(t, vj).is_none());
    assert!(r.is_voice_join_pending());
    r.cancel_voice_join();
    assert!(!r.is_voice_join_pending());
    assert!(r.handle_timeout(t + S).is_empty());
}

#[test]
fn idle_windows_are_forgotten() {
    let t = t0();
    let mut r = RateLimiter::new(RateLimitConfig::default());
    for i in 0..1000 {
        r.offer(
            t + Duration::from_secs(4 * i),
            ClientEvent::Typing {
                channel_id: i.to_string(),
            },
        );
    }
    assert!(r.windows() <= 1);
}
