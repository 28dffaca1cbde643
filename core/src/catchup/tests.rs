//! Unit tests of the catch-up tracker: walks, anchors, pacing, held live events.

use super::*;

use std::time::{Duration, Instant};

use crate::pacing::{PacingConfig, ReadHeaders};
use crate::{ServerEvent, ServerEventKind, Text, Timestamp};
use bytes::Bytes;

fn msg(id: &str, sec: u32) -> String {
    let at = stamp(i64::from(sec)).to_rfc3339();
    format!(r#"{{"id":"{id}","created_at":"{at}"}}"#)
}

/// 2026-01-01T00:00:00Z plus `sec` (negative: before), on any clock.
fn stamp(sec: i64) -> Timestamp {
    Timestamp::from_unix_nanos((1_767_225_600 + sec) * 1_000_000_000)
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

/// The server's clock as the `Date` header gives it: 2026-01-01T00:00:00Z plus `sec`.
fn server_time(sec: u32) -> Timestamp {
    stamp(i64::from(sec))
}

/// A tracker for a server whose messages become visible in the order they are stamped (no
/// late margin): the walks stop at their anchors. The default margin is tested on its own.
fn tracker() -> CatchUp {
    CatchUp::new(
        CatchUpConfig {
            late_margin: Duration::ZERO,
            ..CatchUpConfig::default()
        },
        PacingConfig::default(),
    )
}

/// A tracker with the default settings (a 10 s late margin, a 2 s clock margin).
fn default_tracker() -> CatchUp {
    CatchUp::new(CatchUpConfig::default(), PacingConfig::default())
}

/// The channel's `subscribe` goes out and is confirmed at `t`.
fn subscribe(c: &mut CatchUp, t: Instant, ch: &Text) {
    c.handle_subscribe_sent(t, ch);
    c.handle_subscribed(t, ch);
}

/// A channel that was live with anchor `m1` and is now resubscribed after a drop.
fn reconnected() -> (CatchUp, Instant, Text) {
    let t = t0();
    let ch = Text::from("c");
    let mut c = tracker();
    c.track(ch.clone(), None);
    subscribe(&mut c, t, &ch);
    c.handle_event(t, &ch, live("c", "m1", 1));
    assert_eq!(delivered(&drain(&mut c)), ["m1"]);
    c.handle_disconnect();
    subscribe(&mut c, t, &ch);
    (c, t, ch)
}

/// `n` channels (`c00`, `c01`, ...) live with an anchor each, resubscribed after a drop.
fn many_reconnected(n: usize, pacing: PacingConfig) -> (CatchUp, Instant, Vec<Text>) {
    let t = t0();
    let mut c = CatchUp::new(
        CatchUpConfig {
            late_margin: Duration::ZERO,
            ..CatchUpConfig::default()
        },
        pacing,
    );
    let channels: Vec<Text> = (0..n).map(|i| Text::from(format!("c{i:02}"))).collect();
    for ch in &channels {
        c.track(ch.clone(), None);
        subscribe(&mut c, t, ch);
        c.handle_event(t, ch, live(ch.as_str(), &format!("{ch}-m1"), 1));
    }
    drain(&mut c);
    c.handle_disconnect();
    for ch in &channels {
        subscribe(&mut c, t, ch);
    }
    (c, t, channels)
}

fn fetches(out: &[CatchUpOutput]) -> Vec<HistoryRequest> {
    out.iter()
        .filter_map(|o| match o {
            CatchUpOutput::Fetch(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn first_subscribe_reads_nothing_and_has_no_anchor() {
    let t = t0();
    let ch = Text::from("c");
    let mut c = tracker();
    c.handle_server_date(t, server_time(30));
    c.track(ch.clone(), None);
    c.handle_subscribe_sent(t + Duration::from_secs(5), &ch);
    c.handle_subscribed(t + Duration::from_secs(6), &ch);
    assert!(drain(&mut c).is_empty(), "no anchor probe");
    assert_eq!(c.anchor(&ch), None);
}

#[test]
fn a_drop_before_any_message_walks_back_to_the_subscription_on_the_message_clock() {
    // The issue's case: the link drops before the channel ever saw a message; what was
    // posted during the drop must still arrive. Another channel's live message read the
    // message clock (stamped 100 at `t`); the `Date` clock is an hour ahead of it and plays
    // no part.
    let t = t0();
    let (ch, other) = (Text::from("c"), Text::from("o"));
    let mut c = default_tracker();
    c.handle_server_date(t, server_time(3_700));
    for x in [&ch, &other] {
        c.track(x.clone(), None);
    }
    subscribe(&mut c, t, &other);
    c.handle_event(t, &other, live("o", "o1", 100));
    subscribe(&mut c, t + Duration::from_secs(20), &ch); // message clock >= 120
    c.handle_disconnect();
    subscribe(&mut c, t + Duration::from_secs(60), &ch);
    let req = fetches(&drain(&mut c))
        .into_iter()
        .find(|r| r.channel_id == ch)
        .unwrap()
        .id;
    // Newest first: two posted during the drop, one just before the subscription (inside
    // the 12 s of margins: delivered, once), then the channel's older history.
    c.handle_history(
        t,
        req,
        Ok(body(
            &[("m3", 150), ("m2", 130), ("m1", 112), ("m0", 100)],
            true,
        )),
    );
    let out = drain(&mut c);
    assert_eq!(delivered(&out), ["m1", "m2", "m3"]);
    assert_eq!(
        out.last(),
        Some(&CatchUpOutput::Resynced {
            channel_id: ch,
            recovered: 3,
            complete: true
        })
    );
}

#[test]
fn without_a_reading_of_the_message_clock_a_quiet_channel_cannot_prove_its_gap() {
    let t = t0();
    let ch = Text::from("c");
    let mut c = tracker();
    c.handle_server_date(t, server_time(10)); // a `Date` is not the message clock
    c.track(ch.clone(), None);
    subscribe(&mut c, t, &ch);
    c.handle_disconnect();
    subscribe(&mut c, t, &ch);
    let req = fetch_id(&drain(&mut c));
    c.handle_history(t, req, Ok(body(&[("m2", 12), ("m1", 2)], true)));
    let out = drain(&mut c);
    assert!(delivered(&out).is_empty(), "no guess delivered as the gap");
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
fn an_empty_first_page_proves_nothing() {
    // Kaiku fills a page from `limit + 1` rows and then drops blocked authors: an empty page
    // with `has_more: false` may hide older messages, and it gives no id to read on from.
    let t = t0();
    let ch = Text::from("c");
    let mut c = tracker();
    c.track(ch.clone(), None);
    subscribe(&mut c, t, &ch);
    c.handle_disconnect();
    subscribe(&mut c, t, &ch);
    let req = fetch_id(&drain(&mut c));
    c.handle_history(t, req, Ok(body(&[], false)));
    assert_eq!(
        drain(&mut c),
        [CatchUpOutput::Resynced {
            channel_id: ch,
            recovered: 0,
            complete: false
        }]
    );
}

#[test]
fn a_live_message_stamped_by_another_clock_still_becomes_the_anchor() {
    // The message clock is an hour behind the `Date` clock (a database host with broken
    // NTP): every live message looks older than the subscription. Before D68 none became the
    // anchor, and the walk stopped at once, delivering nothing, `complete: true`.
    for behind in [5_i64, 3_600] {
        let t = t0();
        let ch = Text::from("c");
        let mut c = default_tracker();
        c.handle_server_date(t, stamp(7_200));
        c.track(ch.clone(), None);
        subscribe(&mut c, t, &ch);
        let first = 7_200 - behind;
        c.handle_event(t, &ch, live("c", "m1", u32::try_from(first).unwrap()));
        assert_eq!(delivered(&drain(&mut c)), ["m1"]);
        assert_eq!(c.anchor(&ch).map(|a| a.id.as_str()), Some("m1"));
        c.handle_disconnect();
        subscribe(&mut c, t + Duration::from_secs(60), &ch);
        let req = fetch_id(&drain(&mut c));
        let s = |d: i64| u32::try_from(first + d).unwrap();
        c.handle_history(
            t,
            req,
            Ok(body(
                &[("m3", s(40)), ("m2", s(20)), ("m1", s(0)), ("m0", s(-30))],
                true,
            )),
        );
        let out = drain(&mut c);
        assert_eq!(delivered(&out), ["m2", "m3"], "{behind} s behind");
        assert!(out.contains(&CatchUpOutput::Resynced {
            channel_id: ch,
            recovered: 2,
            complete: true
        }));
    }
}

#[test]
fn the_walk_reads_past_its_anchor_for_messages_that_became_visible_late() {
    // m4 was stamped before the anchor m5 (its transaction began first) but committed after
    // m5 was broadcast, during the drop: it is older than the anchor and was never delivered.
    let t = t0();
    let ch = Text::from("c");
    let mut c = default_tracker();
    c.track(ch.clone(), None);
    subscribe(&mut c, t, &ch);
    c.handle_event(t, &ch, live("c", "m3", 95));
    c.handle_event(t + Duration::from_secs(5), &ch, live("c", "m5", 100));
    assert_eq!(delivered(&drain(&mut c)), ["m3", "m5"]);
    c.handle_disconnect();
    subscribe(&mut c, t + Duration::from_secs(30), &ch);
    let req = fetch_id(&drain(&mut c));
    // The anchor ends the page: the margin below it is on the next one.
    c.handle_history(t, req, Ok(body(&[("m6", 105), ("m5", 100)], true)));
    let next = fetches(&drain(&mut c));
    assert_eq!(next.len(), 1, "the late margin is read");
    assert_eq!(next[0].before.as_ref().map(Text::as_str), Some("m5"));
    c.handle_history(
        t,
        next[0].id,
        Ok(body(&[("m4", 97), ("m3", 95), ("m2", 80)], true)),
    );
    let out = drain(&mut c);
    assert_eq!(delivered(&out), ["m4", "m6"], "m3 was delivered live");
    assert!(out.contains(&CatchUpOutput::Resynced {
        channel_id: ch,
        recovered: 2,
        complete: true
    }));
}

#[test]
fn an_answer_to_a_forgotten_walk_does_not_complete_the_next_one() {
    // A user switching channels fast: unsubscribed while a catch-up read was out, then
    // subscribed again from the newest message the app shows.
    let (mut c, t, ch) = reconnected();
    let old = fetch_id(&drain(&mut c));
    c.forget(&ch);
    c.track(ch.clone(), Some(Text::from("m1")));
    subscribe(&mut c, t, &ch);
    let new = fetch_id(&drain(&mut c));
    assert_ne!(old, new);
    // The old walk's page (read before m3 was posted) arrives late.
    c.handle_history(t, old, Ok(body(&[("m2", 2), ("m1", 1)], true)));
    assert!(drain(&mut c).is_empty(), "the old answer completes nothing");
    assert!(c.is_catching_up(&ch));
    c.handle_history(t, new, Ok(body(&[("m3", 3), ("m2", 2), ("m1", 1)], true)));
    let out = drain(&mut c);
    assert_eq!(delivered(&out), ["m2", "m3"]);
    // The same answer again changes nothing.
    c.handle_history(t, new, Ok(body(&[("m9", 9), ("m1", 1)], true)));
    assert!(drain(&mut c).is_empty());
}

#[test]
fn a_stale_failure_does_not_requeue_a_walk_with_a_read_in_flight() {
    let (mut c, t, ch) = reconnected();
    let old = fetch_id(&drain(&mut c));
    c.forget(&ch);
    c.track(ch.clone(), Some(Text::from("m1")));
    subscribe(&mut c, t, &ch);
    let new = fetch_id(&drain(&mut c));
    c.handle_history(t, old, Err(HistoryError::Network));
    c.handle_history(t + Duration::from_secs(5), old, Err(HistoryError::Network));
    c.handle_timeout(t + Duration::from_secs(60));
    assert!(
        fetches(&drain(&mut c)).is_empty(),
        "no second read while {new} is out"
    );
}

#[test]
fn held_typing_is_dropped_at_a_drop_and_held_edits_are_delivered() {
    let (mut c, t, ch) = reconnected();
    let _ = fetch_id(&drain(&mut c));
    let typing = ServerEvent::decode(
        Bytes::from(r#"{"type":"typing_start","channel_id":"c","user_id":"u"}"#),
        1 << 20,
    )
    .unwrap();
    let edit = ServerEvent::decode(
        Bytes::from(r#"{"type":"message_edit","channel_id":"c","message_id":"m1","content":"x","edited_at":"2026-01-01T00:00:05+00:00"}"#),
        1 << 20,
    )
    .unwrap();
    c.handle_event(t, &ch, typing);
    c.handle_event(t, &ch, edit);
    c.handle_disconnect();
    let out = drain(&mut c);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(
        matches!(&out[0], CatchUpOutput::Deliver(e) if matches!(e.kind(), ServerEventKind::MessageEdit { .. }))
    );
}

#[test]
fn live_messages_are_held_during_catch_up_and_follow_the_gap() {
    let (mut c, t, ch) = reconnected();
    let req = fetch_id(&drain(&mut c));
    assert!(c.is_catching_up(&ch));
    c.handle_event(t, &ch, live("c", "m3", 3));
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
fn only_messages_built_from_history_are_marked_recovered() {
    let (mut c, t, ch) = reconnected();
    let req = fetch_id(&drain(&mut c));
    c.handle_event(t, &ch, live("c", "m3", 3));
    c.handle_history(t, req, Ok(body(&[("m3", 3), ("m2", 2), ("m1", 1)], true)));
    let marks: Vec<(String, bool)> = drain(&mut c)
        .iter()
        .filter_map(|o| match o {
            CatchUpOutput::Deliver(e) => match e.kind() {
                ServerEventKind::MessageNew { message, .. } => {
                    Some((message.id.to_string(), e.is_recovered()))
                }
                _ => None,
            },
            _ => None,
        })
        .collect();
    // m2 came only from history; m3 arrived live (held behind the gap).
    assert_eq!(marks, [("m2".to_owned(), true), ("m3".to_owned(), false)]);
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
    let config = CatchUpConfig {
        max_held: 2,
        ..CatchUpConfig::default()
    };
    let mut c = CatchUp::new(config, PacingConfig::default());
    c.track(ch.clone(), Some(Text::from("m0")));
    subscribe(&mut c, t, &ch);
    drain(&mut c);
    for i in 1..=3 {
        c.handle_event(t, &ch, live("c", &format!("m{i}"), i));
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
fn a_subscribe_sent_but_never_confirmed_still_needs_a_catch_up() {
    let t = t0();
    let ch = Text::from("c");
    let mut c = tracker();
    c.track(ch.clone(), Some(Text::from("m0")));
    c.handle_subscribe_sent(t, &ch);
    c.handle_disconnect(); // `subscribed` never arrived
    subscribe(&mut c, t, &ch);
    let out = drain(&mut c);
    assert!(
        matches!(&out[..], [CatchUpOutput::Fetch(r)] if r.limit == 50),
        "{out:?}"
    );
}

#[test]
fn an_owed_reload_survives_a_drop_before_it_is_reported() {
    let t = t0();
    let ch = Text::from("c");
    let mut c = CatchUp::new(
        CatchUpConfig {
            max_held: 1,
            ..CatchUpConfig::default()
        },
        PacingConfig::default(),
    );
    c.track(ch.clone(), None);
    subscribe(&mut c, t, &ch);
    c.handle_event(t, &ch, live("c", "m1", 1));
    c.handle_disconnect();
    c.handle_subscribe_sent(t, &ch);
    // More arrive before `subscribed` than can be held: delivered, and a reload is owed.
    c.handle_event(t, &ch, live("c", "m2", 2));
    c.handle_event(t, &ch, live("c", "m3", 3));
    c.handle_disconnect(); // before `subscribed`: not reported yet
    subscribe(&mut c, t, &ch);
    assert!(
        drain(&mut c).contains(&CatchUpOutput::Resynced {
            channel_id: ch,
            recovered: 0,
            complete: false
        }),
        "the reload is still owed"
    );
}

#[test]
fn an_app_given_anchor_that_is_gone_ends_incomplete() {
    let t = t0();
    let ch = Text::from("c");
    let mut c = tracker();
    c.track(ch.clone(), Some(Text::from("deleted")));
    subscribe(&mut c, t, &ch);
    let req = fetch_id(&drain(&mut c));
    c.handle_history(t, req, Ok(body(&[("m2", 2), ("m1", 1)], false)));
    // The history claims to end before the anchor: two reads prove it (D73).
    let confirm = fetches(&drain(&mut c));
    assert_eq!(confirm.len(), 1);
    // Nothing below m1, or m1 is gone: read m1 again from above it. It is there.
    assert_eq!(confirm[0].before.as_ref().map(Text::as_str), Some("m1"));
    c.handle_history(t, confirm[0].id, Ok(body(&[], false)));
    let again = fetches(&drain(&mut c));
    assert_eq!(again[0].before.as_ref().map(Text::as_str), Some("m2"));
    c.handle_history(t, again[0].id, Ok(body(&[("m1", 1)], false)));
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
    let mut c = tracker();
    c.track(ch.clone(), Some(Text::from("m1")));
    subscribe(&mut c, t, &ch);
    let req = fetch_id(&drain(&mut c));
    c.handle_history(t, req, Ok(body(&[("m1", 1)], false)));
    assert!(matches!(
        c.anchor(&ch),
        Some(Anchor {
            created_at: Some(_),
            ..
        })
    ));
}

#[test]
fn held_messages_missing_from_history_keep_creation_order() {
    let (mut c, t, ch) = reconnected();
    let req = fetch_id(&drain(&mut c));
    c.handle_event(t, &ch, live("c", "m2", 2)); // deleted before the page is read
    c.handle_event(t, &ch, live("c", "m3", 3));
    c.handle_history(t, req, Ok(body(&[("m3", 3), ("m1", 1)], false)));
    assert_eq!(delivered(&drain(&mut c)), ["m2", "m3"]);
}

#[test]
fn a_long_retry_after_is_waited_out_not_a_failure() {
    let (mut c, t, ch) = reconnected();
    let mut req = fetch_id(&drain(&mut c));
    let mut at = t;
    // More waits than `max_attempts`: none of them counts as a failure.
    for _ in 0..5 {
        c.handle_history(
            at,
            req,
            Err(HistoryError::Status {
                status: 429,
                retry_after: Some(Duration::from_secs(60)),
            }),
        );
        assert!(drain(&mut c).is_empty(), "no read inside the pause");
        assert_eq!(c.poll_timeout(), Some(at + Duration::from_secs(60)));
        c.handle_timeout(at + Duration::from_millis(59_999));
        assert!(drain(&mut c).is_empty(), "no read inside the pause");
        at += Duration::from_secs(60);
        c.handle_timeout(at);
        req = fetch_id(&drain(&mut c));
    }
    c.handle_history(at, req, Ok(body(&[("m2", 2), ("m1", 1)], true)));
    assert!(drain(&mut c).contains(&CatchUpOutput::Resynced {
        channel_id: ch,
        recovered: 1,
        complete: true
    }));
}

#[test]
fn no_more_than_max_in_flight_reads_and_the_focused_channel_goes_first() {
    let (mut c, t, channels) = many_reconnected(10, PacingConfig::default());
    let first = fetches(&drain(&mut c));
    let names: Vec<&str> = first.iter().map(|r| r.channel_id.as_str()).collect();
    assert_eq!(
        names,
        ["c00", "c01", "c02", "c03"],
        "subscription order, four at once"
    );
    c.focus(&channels[8]);
    c.focus(&channels[7]); // the latest focus first
    c.handle_history(t, first[0].id, Ok(body(&[("c00-m1", 1)], true)));
    c.handle_history(t, first[1].id, Ok(body(&[("c01-m1", 1)], true)));
    let next: Vec<String> = fetches(&drain(&mut c))
        .iter()
        .map(|r| r.channel_id.to_string())
        .collect();
    assert_eq!(next, ["c07", "c08"]);
}

#[test]
fn a_spent_budget_holds_reads_until_its_window_ends() {
    let pacing = PacingConfig {
        budget: 5,
        window: Duration::from_secs(60),
        reserve: 0,
        ..PacingConfig::default()
    };
    let (mut c, t, _channels) = many_reconnected(8, pacing);
    let mut sent = fetches(&drain(&mut c));
    while let Some(r) = sent.pop() {
        c.handle_history(
            t,
            r.id,
            Ok(body(&[(&format!("{}-m1", r.channel_id), 1)], true)),
        );
        sent.extend(fetches(&drain(&mut c)));
    }
    assert_eq!(c.reads(), 5);
    // The window, plus a second of slack for the server's window starting on arrival.
    assert_eq!(
        c.rate_limited_until(t),
        Some((t + Duration::from_secs(61), 3))
    );
    assert_eq!(c.poll_timeout(), Some(t + Duration::from_secs(61)));
    let t = t + Duration::from_secs(61);
    c.handle_timeout(t);
    // The first read of the new window goes alone, the others once it is answered.
    let probe = fetches(&drain(&mut c));
    assert_eq!(probe.len(), 1);
    c.handle_history(
        t,
        probe[0].id,
        Ok(body(&[(&format!("{}-m1", probe[0].channel_id), 1)], true)),
    );
    assert_eq!(fetches(&drain(&mut c)).len(), 2);
}

#[test]
fn the_catch_up_leaves_the_apps_reserve_unspent() {
    // Kaiku's write budget, shared with posting: 30 a window, 5 kept for the app.
    let (mut c, t, _channels) = many_reconnected(40, PacingConfig::default());
    let mut sent = fetches(&drain(&mut c));
    while let Some(r) = sent.pop() {
        c.handle_history(
            t,
            r.id,
            Ok(body(&[(&format!("{}-m1", r.channel_id), 1)], true)),
        );
        sent.extend(fetches(&drain(&mut c)));
    }
    assert_eq!(c.reads(), 25);
    assert_eq!(c.rate_limited_until(t).map(|(_, n)| n), Some(15));
}

#[test]
fn the_servers_remaining_budget_and_reset_are_obeyed() {
    let pacing = PacingConfig {
        reserve: 0,
        ..PacingConfig::default()
    };
    let (mut c, t, _channels) = many_reconnected(6, pacing);
    let sent = fetches(&drain(&mut c));
    assert_eq!(sent.len(), 4);
    // The server says: 1 read left in a window that ends 20 s after its `Date`.
    let h = ReadHeaders::from_headers(
        200,
        [
            ("date", &b"Thu, 01 Jan 2026 00:00:10 GMT"[..]),
            ("x-ratelimit-limit", b"200"),
            ("x-ratelimit-remaining", b"4"),
            ("x-ratelimit-reset", b"1767225630"),
        ],
    );
    c.handle_read_headers(t, Some(sent[0].id), &h);
    // Three others in flight may not be counted yet: 4 - 3 = 1 left.
    c.handle_history(t, sent[0].id, Ok(body(&[("c00-m1", 1)], true)));
    assert_eq!(fetches(&drain(&mut c)).len(), 1);
    for r in &sent[1..] {
        c.handle_history(
            t,
            r.id,
            Ok(body(&[(&format!("{}-m1", r.channel_id), 1)], true)),
        );
    }
    assert!(fetches(&drain(&mut c)).is_empty(), "the budget is spent");
    // The announced reset, and the slack for one announced early.
    let reset = t + Duration::from_secs(20) + crate::pacing::RESET_SLACK;
    assert_eq!(c.poll_timeout(), Some(reset));
    c.handle_timeout(reset);
    assert_eq!(fetches(&drain(&mut c)).len(), 1);
}

#[test]
fn recent_ids_forget_the_oldest_beyond_capacity() {
    let mut r = RecentIds::new(2);
    for id in ["a", "b", "c"] {
        r.insert(Text::from(id), None);
    }
    assert!(!r.contains(&Text::from("a")));
    assert!(r.contains(&Text::from("b")) && r.contains(&Text::from("c")));
}

/// The test's start: the one clock read (`crate::test_clock`).
fn t0() -> Instant {
    crate::test_clock::start()
}

#[test]
fn a_live_copy_of_a_message_an_incomplete_walk_fetched_is_still_delivered() {
    // The history answer can overtake the broadcast. The incomplete walk's page goes into the
    // app's reload, but the app may not have reloaded yet: the live copy still arrives.
    let t = t0();
    let ch = Text::from("c");
    let mut c = tracker();
    c.track(ch.clone(), None);
    subscribe(&mut c, t, &ch);
    c.handle_disconnect();
    subscribe(&mut c, t, &ch);
    let req = fetch_id(&drain(&mut c));
    c.handle_history(t, req, Ok(body(&[("m2", 12), ("m1", 2)], true)));
    let out = drain(&mut c);
    assert!(out.contains(&CatchUpOutput::Resynced {
        channel_id: ch.clone(),
        recovered: 0,
        complete: false
    }));
    c.handle_event(t, &ch, live("c", "m2", 12));
    assert_eq!(delivered(&drain(&mut c)), ["m2"]);
}
