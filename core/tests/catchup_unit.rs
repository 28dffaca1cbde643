//! Unit tests of `tether_core::catchup` (outside the crate: the core never reads a clock, even
//! in its own tests; `support::t0` does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};
use support::t0;

use bytes::Bytes;
use tether_core::catchup::*;
use tether_core::{ServerEvent, ServerEventKind, Text};

fn msg(id: &str, sec: u32) -> String {
    format!(r#"{{"id":"{id}","created_at":"2026-01-01T00:00:{sec:02}Z"}}"#)
}

fn live(ch: &str, id: &str, sec: u32) -> ServerEvent {
    let json = format!(
        r#"{{"type":"message_new","channel_id":"{ch}","message":{}}}"#,
        msg(id, sec)
    );
    ServerEvent::decode(Bytes::from(json), 1 << 20).unwrap()
}

fn body(items: &[(&str, u32)], has_more: bool) -> Bytes {
    let items: Vec<String> = items.iter().map(|(id, s)| msg(id, *s)).collect();
    Bytes::from(format!(
        r#"{{"items":[{}],"has_more":{has_more}}}"#,
        items.join(",")
    ))
}

fn drain(c: &mut CatchUp) -> Vec<CatchUpOutput> {
    std::iter::from_fn(|| c.poll_output()).collect()
}

fn fetch_id(out: &[CatchUpOutput]) -> u64 {
    out.iter()
        .find_map(|o| match o {
            CatchUpOutput::Fetch(r) => Some(r.id),
            _ => None,
        })
        .unwrap()
}

fn delivered(out: &[CatchUpOutput]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            CatchUpOutput::Deliver(e) => match e.kind() {
                ServerEventKind::MessageNew { message, .. } => Some(message.id.to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// A channel that was live with anchor `m1` and is now resubscribed after a drop.
fn reconnected() -> (CatchUp, Instant, Text) {
    let t = t0();
    let ch = Text::from("c");
    let mut c = CatchUp::new(CatchUpConfig::default());
    c.track(ch.clone(), None);
    c.handle_subscribed(t, &ch);
    let probe = fetch_id(&drain(&mut c));
    c.handle_history(t, probe, Ok(body(&[("m1", 1)], true)));
    assert_eq!(
        drain(&mut c),
        [CatchUpOutput::FenceNeeded],
        "a probe delivers nothing"
    );
    c.confirm_anchors(); // the fence's pong arrived
    c.handle_disconnect();
    c.handle_subscribed(t, &ch);
    (c, t, ch)
}

#[test]
fn first_subscribe_probes_with_limit_one_and_sets_the_anchor() {
    let t = t0();
    let ch = Text::from("c");
    let mut c = CatchUp::new(CatchUpConfig::default());
    c.track(ch.clone(), None);
    assert_eq!(c.anchor(&ch), Some(&Anchor::Unknown));
    c.handle_subscribed(t, &ch);
    let out = drain(&mut c);
    assert!(matches!(&out[..], [CatchUpOutput::Fetch(r)] if r.limit == 1 && r.before.is_none()));
    c.handle_history(t, fetch_id(&out), Ok(body(&[("m9", 9)], true)));
    assert!(matches!(c.anchor(&ch), Some(Anchor::Message { id, .. }) if id == "m9"));
}

#[test]
fn live_messages_are_held_during_catch_up_and_follow_the_gap() {
    let (mut c, t, ch) = reconnected();
    let req = fetch_id(&drain(&mut c));
    assert!(c.is_catching_up(&ch));
    c.handle_event(&ch, live("c", "m3", 3));
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.held(), 1);
    c.handle_history(t, req, Ok(body(&[("m3", 3), ("m2", 2), ("m1", 1)], true)));
    let out = drain(&mut c);
    assert_eq!(delivered(&out), ["m2", "m3"]);
    assert_eq!(
        out.last(),
        Some(&CatchUpOutput::Resynced {
            channel_id: ch.clone(),
            recovered: 1,
            complete: true
        })
    );
    assert!(!c.is_catching_up(&ch));
    assert_eq!(c.held(), 0);
}

#[test]
fn pages_are_walked_with_the_cursor_until_the_anchor() {
    let (mut c, t, _ch) = reconnected();
    let first = fetch_id(&drain(&mut c));
    c.handle_history(t, first, Ok(body(&[("m5", 5), ("m4", 4)], true)));
    let out = drain(&mut c);
    let next = out.iter().find_map(|o| match o {
        CatchUpOutput::Fetch(r) => Some(r.clone()),
        _ => None,
    });
    let next = next.unwrap();
    assert_eq!(next.before.as_ref().map(Text::as_str), Some("m4"));
    c.handle_history(t, next.id, Ok(body(&[("m3", 3), ("m2", 2)], true)));
    let next = fetch_id(&drain(&mut c));
    c.handle_history(t, next, Ok(body(&[("m1", 1)], true)));
    assert_eq!(delivered(&drain(&mut c)), ["m2", "m3", "m4", "m5"]);
}

#[test]
fn a_server_ignoring_the_cursor_cannot_loop_the_walk() {
    let (mut c, t, ch) = reconnected();
    let mut req = fetch_id(&drain(&mut c));
    for _ in 0..3 {
        c.handle_history(t, req, Ok(body(&[("m5", 5), ("m4", 4)], true)));
        let out = drain(&mut c);
        if out
            .iter()
            .any(|o| matches!(o, CatchUpOutput::Resynced { .. }))
        {
            assert!(out.contains(&CatchUpOutput::Resynced {
                channel_id: ch.clone(),
                recovered: 0,
                complete: false
            }));
            return;
        }
        req = fetch_id(&out);
    }
    panic!("the walk did not stop");
}

#[test]
fn permanent_errors_end_at_once_and_transient_ones_retry_with_backoff() {
    let (mut c, t, ch) = reconnected();
    let req = fetch_id(&drain(&mut c));
    c.handle_history(
        t,
        req,
        Err(HistoryError::Status {
            status: 503,
            retry_after: Some(Duration::from_secs(7)),
        }),
    );
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.poll_timeout(), Some(t + Duration::from_secs(7)));
    c.handle_timeout(t + Duration::from_secs(7));
    let req = fetch_id(&drain(&mut c));
    c.handle_history(
        t,
        req,
        Err(HistoryError::Status {
            status: 404,
            retry_after: None,
        }),
    );
    let out = drain(&mut c);
    assert_eq!(
        out,
        [CatchUpOutput::Resynced {
            channel_id: ch,
            recovered: 0,
            complete: false
        }]
    );
}

#[test]
fn a_401_asks_for_a_token_refresh() {
    let (mut c, t, _ch) = reconnected();
    let req = fetch_id(&drain(&mut c));
    c.handle_history(
        t,
        req,
        Err(HistoryError::Status {
            status: 401,
            retry_after: None,
        }),
    );
    assert!(drain(&mut c).contains(&CatchUpOutput::TokenRejected));
}

#[test]
fn malformed_pages_count_as_failures_not_panics() {
    let (mut c, t, _ch) = reconnected();
    let req = fetch_id(&drain(&mut c));
    c.handle_history(t, req, Ok(Bytes::from_static(b"<html>bad gateway</html>")));
    assert!(c.poll_timeout().is_some(), "retry scheduled");
}

#[test]
fn too_many_held_events_end_the_catch_up_incomplete() {
    let t = t0();
    let ch = Text::from("c");
    let mut config = CatchUpConfig::default();
    config.max_held = 2;
    let mut c = CatchUp::new(config);
    c.track(ch.clone(), Some(Text::from("m0")));
    c.handle_subscribed(t, &ch);
    drain(&mut c);
    for i in 1..=3 {
        c.handle_event(&ch, live("c", &format!("m{i}"), i));
    }
    let out = drain(&mut c);
    assert_eq!(delivered(&out), ["m1", "m2", "m3"]);
    assert!(out.contains(&CatchUpOutput::Resynced {
        channel_id: ch,
        recovered: 0,
        complete: false
    }));
}

#[test]
fn stale_answers_after_a_disconnect_are_ignored() {
    let (mut c, t, _ch) = reconnected();
    let req = fetch_id(&drain(&mut c));
    c.handle_disconnect();
    c.handle_history(t, req, Ok(body(&[("m2", 2), ("m1", 1)], false)));
    assert!(drain(&mut c).is_empty());
}

#[test]
fn an_unconfirmed_probe_anchor_cannot_end_complete() {
    let t = t0();
    let ch = Text::from("c");
    let mut c = CatchUp::new(CatchUpConfig::default());
    c.track(ch.clone(), None);
    c.handle_subscribe_sent(&ch);
    c.handle_subscribed(t, &ch);
    let probe = fetch_id(&drain(&mut c));
    c.handle_history(t, probe, Ok(body(&[("m1", 1)], true)));
    drain(&mut c);
    // The link dies before the fence's pong: m1 itself may never have come live.
    c.handle_disconnect();
    c.handle_subscribed(t, &ch);
    let req = fetch_id(&drain(&mut c));
    c.handle_history(t, req, Ok(body(&[("m2", 2), ("m1", 1)], true)));
    let out = drain(&mut c);
    assert!(out.contains(&CatchUpOutput::Resynced {
        channel_id: ch,
        recovered: 0,
        complete: false
    }));
}

#[test]
fn a_subscribe_sent_but_never_confirmed_still_needs_a_catch_up() {
    let t = t0();
    let ch = Text::from("c");
    let mut c = CatchUp::new(CatchUpConfig::default());
    c.track(ch.clone(), Some(Text::from("m0")));
    c.handle_subscribe_sent(&ch);
    c.handle_disconnect(); // `subscribed` never arrived
    c.handle_subscribed(t, &ch);
    let out = drain(&mut c);
    assert!(
        matches!(&out[..], [CatchUpOutput::Fetch(r)] if r.limit == 50),
        "{out:?}"
    );
}

#[test]
fn an_owed_reload_survives_an_abandoned_probe() {
    let t = t0();
    let ch = Text::from("c");
    let mut c = CatchUp::new(CatchUpConfig::default());
    c.track(ch.clone(), None);
    c.handle_subscribed(t, &ch);
    drain(&mut c); // first probe never answers
    c.handle_disconnect();
    c.handle_subscribed(t, &ch); // reconnect with no anchor: a reload is owed
    drain(&mut c);
    c.handle_event(&ch, live("c", "m2", 2)); // sets an anchor
    c.handle_disconnect(); // the probe that owed the report is abandoned
    c.handle_subscribed(t, &ch);
    let req = fetch_id(&drain(&mut c));
    c.handle_history(t, req, Ok(body(&[("m3", 3), ("m2", 2)], true)));
    let out = drain(&mut c);
    assert!(
        out.contains(&CatchUpOutput::Resynced {
            channel_id: ch,
            recovered: 1,
            complete: false
        }) || out.iter().any(|o| matches!(
            o,
            CatchUpOutput::Resynced {
                complete: false,
                ..
            }
        )),
        "{out:?}"
    );
}

#[test]
fn an_app_given_anchor_that_is_gone_ends_incomplete() {
    let t = t0();
    let ch = Text::from("c");
    let mut c = CatchUp::new(CatchUpConfig::default());
    c.track(ch.clone(), Some(Text::from("deleted")));
    c.handle_subscribed(t, &ch);
    let req = fetch_id(&drain(&mut c));
    c.handle_history(t, req, Ok(body(&[("m2", 2), ("m1", 1)], false)));
    let out = drain(&mut c);
    assert!(
        delivered(&out).is_empty(),
        "no partial history as if it were the gap"
    );
    assert!(out.contains(&CatchUpOutput::Resynced {
        channel_id: ch,
        recovered: 0,
        complete: false
    }));
}

#[test]
fn an_app_given_anchor_learns_its_time_when_met() {
    let t = t0();
    let ch = Text::from("c");
    let mut c = CatchUp::new(CatchUpConfig::default());
    c.track(ch.clone(), Some(Text::from("m1")));
    c.handle_subscribed(t, &ch);
    let req = fetch_id(&drain(&mut c));
    c.handle_history(t, req, Ok(body(&[("m1", 1)], false)));
    assert!(matches!(
        c.anchor(&ch),
        Some(Anchor::Message {
            created_at: Some(_),
            ..
        })
    ));
}

#[test]
fn held_messages_missing_from_history_keep_creation_order() {
    let (mut c, t, ch) = reconnected();
    let req = fetch_id(&drain(&mut c));
    c.handle_event(&ch, live("c", "m2", 2)); // deleted before the page is read
    c.handle_event(&ch, live("c", "m3", 3));
    c.handle_history(t, req, Ok(body(&[("m3", 3), ("m1", 1)], false)));
    assert_eq!(delivered(&drain(&mut c)), ["m2", "m3"]);
}

#[test]
fn a_long_retry_after_gives_up_instead_of_holding_the_channel() {
    let (mut c, t, ch) = reconnected();
    let req = fetch_id(&drain(&mut c));
    c.handle_history(
        t,
        req,
        Err(HistoryError::Status {
            status: 503,
            retry_after: Some(Duration::from_secs(600)),
        }),
    );
    assert!(drain(&mut c).contains(&CatchUpOutput::Resynced {
        channel_id: ch,
        recovered: 0,
        complete: false
    }));
}
