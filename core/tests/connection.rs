//! Scenario tests of `Connection`: each pins one behaviour of DESIGN section 3, and the first
//! eight pin the eight defects of the original client (DESIGN section 1).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::*;
use tether_core::{
    Action, AuthMode, ClientEvent, Credentials, CustomEvent, Event, FailReason, HistoryError,
    ReconnectReason, RefreshError, SendError, ServerEventKind, SocketEnd, Status,
};

/// Connects with `channels` wanted and answers their subscriptions; with `anchor`, that
/// message then arrives live on each (else the channels stay quiet, anchored at the server's
/// clock when they were subscribed).
fn live_with(channels: &[&str], anchor: Option<(&str, u32)>) -> Harness {
    let mut h = Harness::new();
    for c in channels {
        h.subscribe(c);
    }
    h.connect_ready();
    for c in channels {
        h.frame(&format!(r#"{{"type":"subscribed","channel_id":"{c}"}}"#));
        assert!(
            fetches(&h.take()).is_empty(),
            "a first subscription reads no history"
        );
        if let Some((id, sec)) = anchor {
            h.frame(&message_new(c, id, sec));
        }
    }
    h.clear_log();
    h
}

// ----- DESIGN 1.1: re-subscribe after a reconnect ---------------------------------------

#[test]
fn reconnect_resubscribes_every_wanted_channel_once() {
    let mut h = live_with(&["b", "a"], None);
    h.drop_link();
    h.subscribe("c"); // offline: only edits the set
    h.conn.unsubscribe(h.now, "b");
    assert!(sent(&h.take()).is_empty(), "nothing is sent while offline");
    h.reconnect();
    let frames = sent(&h.take());
    assert_eq!(
        frames,
        [
            r#"{"type":"subscribe","channel_id":"a"}"#,
            r#"{"type":"subscribe","channel_id":"c"}"#,
        ]
    );
}

#[test]
fn a_second_ready_on_the_same_socket_does_not_resubscribe_twice() {
    let mut h = live_with(&["a"], None);
    h.ready();
    assert!(sent(&h.take()).is_empty());
}

// ----- DESIGN 1.2: catch up on missed messages ------------------------------------------

#[test]
fn reconnect_catches_up_missed_messages_in_order_before_held_live_ones() {
    let mut h = live_with(&["c"], Some(("m1", 1)));
    h.drop_link();
    h.reconnect();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    let req = fetches(&h.take());
    assert_eq!(req.len(), 1);
    assert_eq!((req[0].limit, req[0].before.is_none()), (50, true));
    // Live traffic during the catch-up is held, including one the page will also contain.
    h.frame(&message_new("c", "m4", 4));
    h.frame(&message_new("c", "m5", 5));
    assert!(
        delivered_ids(&h.take()).is_empty(),
        "live events wait for the gap"
    );
    h.answer_history(
        req[0].id,
        &page("c", &[("m4", 4), ("m3", 3), ("m2", 2), ("m1", 1)], true),
    );
    let out = h.take();
    assert_eq!(delivered_ids(&out), ["m2", "m3", "m4", "m5"]);
    let resynced: Vec<_> = events(&out)
        .into_iter()
        .filter(|e| matches!(e, Event::Resynced { .. }))
        .collect();
    assert_eq!(
        resynced,
        [Event::Resynced {
            channel_id: "c".into(),
            recovered: 2,
            complete: true
        }]
    );
    assert!(matches!(
        out.last(),
        Some(Action::Emit(Event::Resynced { .. }))
    ));
}

/// Found by the chaos soak: the dev server registers a subscription and sends `subscribed`
/// under two separate locks, so a message broadcast in between reaches the client first.
/// Delivered at once, it moved the anchor past the messages missed while offline, and the
/// catch-up stopped at it: a silent gap, reported as complete.
#[test]
fn a_message_that_overtakes_subscribed_waits_for_the_catch_up() {
    let mut h = live_with(&["c"], Some(("m1", 1)));
    h.drop_link(); // m2 is posted while offline
    h.reconnect();
    h.take();
    h.frame(&message_new("c", "m3", 3)); // broadcast before the `subscribed` reply
    h.frame(r#"{"type":"typing_start","channel_id":"c","user_id":"u"}"#);
    let early = h.take();
    assert!(
        delivered_ids(&early).is_empty() && server_events(&early).is_empty(),
        "held until the gap is known: {early:?}"
    );
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    let req = fetches(&h.take());
    assert_eq!(req.len(), 1, "the catch-up walks from m1, not from m3");
    h.answer_history(
        req[0].id,
        &page("c", &[("m3", 3), ("m2", 2), ("m1", 1)], false),
    );
    let out = h.take();
    assert_eq!(delivered_ids(&out), ["m2", "m3"]);
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Emit(Event::Resynced {
            recovered: 1,
            complete: true,
            ..
        })
    )));
}

#[test]
fn a_message_before_subscribed_is_dropped_with_the_link_and_fetched_again() {
    let mut h = live_with(&["c"], Some(("m1", 1)));
    h.drop_link();
    h.reconnect();
    h.take();
    h.frame(&message_new("c", "m3", 3));
    h.drop_link(); // before `subscribed`: m3 is not delivered, the anchor stays at m1
    assert!(delivered_ids(&h.take()).is_empty());
    h.reconnect();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    let req = fetches(&h.take());
    h.answer_history(
        req[0].id,
        &page("c", &[("m3", 3), ("m2", 2), ("m1", 1)], false),
    );
    assert_eq!(delivered_ids(&h.take()), ["m2", "m3"]);
}

#[test]
fn caught_up_messages_keep_the_rest_object_verbatim() {
    let mut h = live_with(&["c"], Some(("m1", 1)));
    h.drop_link();
    h.reconnect();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    let req = fetches(&h.take());
    h.answer_history(req[0].id, &page("c", &[("m2", 2), ("m1", 1)], false));
    let ev = server_events(&h.take());
    assert_eq!(
        ev[0].json().as_str(),
        format!(
            r#"{{"type":"message_new","channel_id":"c","message":{}}}"#,
            message("c", "m2", 2)
        )
    );
}

#[test]
fn catch_up_walks_before_cursors_across_pages() {
    let mut h = live_with(&["c"], Some(("m0", 0)));
    h.drop_link();
    h.reconnect();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    let mut ids = Vec::new();
    let mut n = 120u32;
    loop {
        let req = fetches(&h.take());
        if req.is_empty() {
            break;
        }
        let r = &req[0];
        let newest = r
            .before
            .as_ref()
            .map_or(120, |b| b.as_str()[1..].parse::<u32>().unwrap() - 1);
        assert_eq!(newest, n);
        let mut msgs = Vec::new();
        for i in (newest.saturating_sub(49)..=newest).rev() {
            msgs.push((format!("m{i}"), i));
        }
        let refs: Vec<(&str, u32)> = msgs.iter().map(|(a, b)| (a.as_str(), *b)).collect();
        h.answer_history(r.id, &page("c", &refs, newest >= 50));
        n = newest.saturating_sub(50);
        ids.extend(delivered_ids(&h.log));
        if n == 0 {
            break;
        }
    }
    let delivered = delivered_ids(&h.log);
    let expected: Vec<String> = (1..=120).map(|i| format!("m{i}")).collect();
    assert_eq!(delivered, expected);
}

#[test]
fn catch_up_reads_bare_array_history() {
    let mut h = live_with(&["c"], Some(("m1", 1)));
    h.drop_link();
    h.reconnect();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    let req = fetches(&h.take());
    let body = format!("[{},{}]", message("c", "m2", 2), message("c", "m1", 1));
    h.answer_history(req[0].id, &body);
    let out = h.take();
    assert_eq!(delivered_ids(&out), ["m2"]);
    assert!(events(&out).contains(&Event::Resynced {
        channel_id: "c".into(),
        recovered: 1,
        complete: true
    }));
}

#[test]
fn a_deleted_anchor_is_passed_by_creation_time() {
    let mut h = live_with(&["c"], Some(("m5", 5)));
    h.drop_link();
    h.reconnect();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    let req = fetches(&h.take());
    // m5 was deleted meanwhile; m1 is older than the anchor, so the walk stops there.
    h.answer_history(
        req[0].id,
        &page("c", &[("m7", 7), ("m6", 6), ("m1", 1)], true),
    );
    let out = h.take();
    assert_eq!(delivered_ids(&out), ["m6", "m7"]);
    assert!(fetches(&out).is_empty());
}

#[test]
fn a_gap_larger_than_the_cap_ends_incomplete_without_a_partial_gap() {
    let mut cfg = config();
    cfg.catch_up.max_messages = 3;
    let mut h = Harness::with_config(cfg);
    h.subscribe("c");
    h.connect_ready();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    h.frame(&message_new("c", "m1", 1));
    h.drop_link();
    h.reconnect();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    let req = fetches(&h.take());
    h.frame(&message_new("c", "m9", 9));
    h.answer_history(
        req[0].id,
        &page("c", &[("m9", 9), ("m8", 8), ("m7", 7), ("m6", 6)], true),
    );
    let out = h.take();
    assert_eq!(delivered_ids(&out), ["m9"], "only the held live message");
    assert!(events(&out).contains(&Event::Resynced {
        channel_id: "c".into(),
        recovered: 0,
        complete: false
    }));
}

#[test]
fn a_message_seen_live_and_in_history_is_delivered_once() {
    let mut h = live_with(&["c"], Some(("m1", 1)));
    h.frame(&message_new("c", "m2", 2));
    h.frame(&message_new("c", "m2", 2)); // the server echoes; a duplicate must not pass
    h.drop_link();
    h.reconnect();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    let req = fetches(&h.take());
    h.answer_history(
        req[0].id,
        &page("c", &[("m3", 3), ("m2", 2), ("m1", 1)], false),
    );
    assert_eq!(delivered_ids(&h.log), ["m2", "m3"]);
    assert_eq!(h.conn.stats().duplicates, 1);
}

#[test]
fn a_drop_before_the_first_message_still_catches_up_what_was_posted_during_it() {
    // Issue 10: the link drops right after subscribing, before any message or history read;
    // what others post meanwhile must reach the app, and the catch-up is complete. The
    // message clock was read from another channel's live message (D68).
    let mut h = Harness::new();
    h.subscribe("c");
    h.subscribe("o");
    h.connect_ready();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    h.frame(r#"{"type":"subscribed","channel_id":"o"}"#);
    h.frame(&message_new("o", "o1", 0));
    assert!(fetches(&h.take()).is_empty(), "no anchor probe");
    h.drop_link();
    h.reconnect();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    h.frame(r#"{"type":"subscribed","channel_id":"o"}"#);
    let req: Vec<_> = fetches(&h.take())
        .into_iter()
        .filter(|r| r.channel_id == "c")
        .collect();
    assert_eq!(req.len(), 1);
    // Posted during the drop (17:00:01, 17:00:02), and one at the second of the
    // subscription: inside the clock margin, so it is delivered too (never lost).
    h.answer_history(
        req[0].id,
        &page("c", &[("m2", 2), ("m1", 1), ("m0", 0)], false),
    );
    // Nothing on it is older than the subscription: two reads make sure the history really
    // ends there (a `has_more` can lie, a cursor can be deleted; D73).
    let confirm = fetches(&h.take());
    assert_eq!(confirm.len(), 1);
    assert_eq!(confirm[0].before.as_ref().map(|b| b.as_str()), Some("m0"));
    h.answer_history(confirm[0].id, &page("c", &[], false));
    // Nothing below m0, or m0 is gone: read it again from above. It is there.
    let again = fetches(&h.take());
    assert_eq!(again[0].before.as_ref().map(|b| b.as_str()), Some("m1"));
    h.answer_history(again[0].id, &page("c", &[("m0", 0)], false));
    let out = h.take();
    assert_eq!(delivered_ids(&out), ["m0", "m1", "m2"]);
    assert!(events(&out).contains(&Event::Resynced {
        channel_id: "c".into(),
        recovered: 3,
        complete: true
    }));
}

#[test]
fn a_drop_before_any_live_message_at_all_cannot_prove_the_gap() {
    // Nothing has read the message clock: the `Date` clock is another host's, so nothing
    // says which of these the app already has (D68). A reload, and no guess delivered.
    let mut h = Harness::new();
    h.subscribe("c");
    h.connect_ready();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    h.drop_link();
    h.reconnect();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    let req = fetches(&h.take());
    h.answer_history(req[0].id, &page("c", &[("m2", 2), ("m1", 1)], false));
    let out = h.take();
    assert!(delivered_ids(&out).is_empty());
    assert!(events(&out).contains(&Event::Resynced {
        channel_id: "c".into(),
        recovered: 0,
        complete: false
    }));
}

#[test]
fn a_quiet_channel_catches_up_from_its_last_message() {
    let mut h = live_with(&["c"], Some(("m7", 7)));
    h.drop_link();
    h.reconnect();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    let req = fetches(&h.take());
    h.answer_history(req[0].id, &page("c", &[("m8", 8), ("m7", 7)], true));
    assert_eq!(delivered_ids(&h.log), ["m8"]);
}

#[test]
fn an_empty_channel_catches_up_from_the_beginning() {
    let mut h = live_with(&["c", "o"], None);
    h.frame(&message_new("o", "o1", 0)); // reads the message clock
    h.clear_log();
    h.drop_link();
    h.reconnect();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    let req = fetches(&h.take());
    h.answer_history(req[0].id, &page("c", &[("m2", 2), ("m1", 1)], false));
    let confirm = fetches(&h.take());
    h.answer_history(confirm[0].id, &page("c", &[], false));
    let again = fetches(&h.take());
    h.answer_history(again[0].id, &page("c", &[("m1", 1)], false));
    assert_eq!(delivered_ids(&h.log), ["m1", "m2"]);
}

#[test]
fn an_app_given_anchor_catches_up_on_the_first_subscribe() {
    let mut h = Harness::new();
    h.conn.subscribe_from(h.now, "c", "m3").unwrap();
    h.connect_ready();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    let req = fetches(&h.take());
    assert_eq!(req[0].limit, 50);
    h.answer_history(
        req[0].id,
        &page("c", &[("m5", 5), ("m4", 4), ("m3", 3)], true),
    );
    assert_eq!(delivered_ids(&h.log), ["m4", "m5"]);
}

#[test]
fn failed_history_is_retried_then_reported_incomplete() {
    let mut h = live_with(&["c"], Some(("m1", 1)));
    h.drop_link();
    h.reconnect();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    for attempt in 0..3 {
        let req = fetches(&h.take());
        assert_eq!(req.len(), 1, "attempt {attempt}");
        h.conn
            .handle_history(h.now, req[0].id, Err(HistoryError::Network));
        h.drain();
        h.advance(10 * S);
    }
    let out = h.take();
    assert!(fetches(&out).is_empty());
    assert!(h.log.iter().any(|a| matches!(
        a,
        Action::Emit(Event::Resynced {
            complete: false,
            ..
        })
    )));
}

#[test]
fn a_drop_during_catch_up_restarts_it_from_the_same_anchor() {
    let mut h = live_with(&["c"], Some(("m1", 1)));
    h.drop_link();
    h.reconnect();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    let first = fetches(&h.take());
    h.frame(&message_new("c", "m3", 3));
    h.drop_link();
    h.answer_history(
        first[0].id,
        &page("c", &[("m3", 3), ("m2", 2), ("m1", 1)], false),
    );
    assert!(
        delivered_ids(&h.log).is_empty(),
        "a stale answer is ignored"
    );
    h.reconnect();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    let again = fetches(&h.take());
    assert_eq!(again.len(), 1);
    h.answer_history(
        again[0].id,
        &page("c", &[("m3", 3), ("m2", 2), ("m1", 1)], false),
    );
    assert_eq!(delivered_ids(&h.log), ["m2", "m3"]);
}

#[test]
fn edits_and_deletes_wait_behind_the_messages_being_caught_up() {
    let mut h = live_with(&["c"], Some(("m1", 1)));
    h.drop_link();
    h.reconnect();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    let req = fetches(&h.take());
    h.frame(r#"{"type":"message_edit","channel_id":"c","message_id":"m2","content":"x","edited_at":"2026-11-25T17:46:42.176549+00:00"}"#);
    h.frame(r#"{"type":"reaction_add","channel_id":"c","message_id":"m2","emoji":"x"}"#);
    h.frame(r#"{"type":"typing_start","channel_id":"other","user_id":"u"}"#);
    let early: Vec<String> = server_events(&h.take())
        .iter()
        .map(|e| e.event_type().to_string())
        .collect();
    assert_eq!(
        early,
        ["typing_start"],
        "only events about other channels pass"
    );
    h.answer_history(req[0].id, &page("c", &[("m2", 2), ("m1", 1)], false));
    let order: Vec<String> = server_events(&h.take())
        .iter()
        .map(|e| e.event_type().to_string())
        .collect();
    assert_eq!(order, ["message_new", "message_edit", "reaction_add"]);
}

#[test]
fn edits_held_by_a_catch_up_reach_the_app_at_the_drop_and_held_typing_does_not() {
    // Issue 18: the held edit sat in the catch-up's queue until the next `ready` (or
    // forever); typing held that long is stale and is dropped.
    let mut h = live_with(&["c"], Some(("m1", 1)));
    h.drop_link();
    h.reconnect();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    let _walk = fetches(&h.take());
    h.frame(r#"{"type":"message_edit","channel_id":"c","message_id":"m1","content":"x","edited_at":"2026-11-25T17:46:42.176549+00:00"}"#);
    h.frame(r#"{"type":"typing_start","channel_id":"c","user_id":"u"}"#);
    assert!(
        server_events(&h.take()).is_empty(),
        "held behind the catch-up"
    );
    h.drop_link();
    let at_drop: Vec<String> = server_events(&h.take())
        .iter()
        .map(|e| e.event_type().to_string())
        .collect();
    assert_eq!(at_drop, ["message_edit"]);
}

#[test]
fn a_repeated_subscribed_does_not_restart_a_catch_up() {
    let mut h = live_with(&["c"], Some(("m1", 1)));
    h.drop_link();
    h.reconnect();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    let req = fetches(&h.take());
    h.frame(&message_new("c", "m3", 3));
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    assert!(fetches(&h.take()).is_empty());
    h.answer_history(
        req[0].id,
        &page("c", &[("m3", 3), ("m2", 2), ("m1", 1)], false),
    );
    assert_eq!(delivered_ids(&h.log), ["m2", "m3"]);
}

// ----- DESIGN 1.3 and 1.4: tokens -------------------------------------------------------

#[test]
fn reconnect_refreshes_a_stale_token_before_opening() {
    let mut h = Harness::new();
    h.conn.set_credentials(
        h.now,
        Credentials::new("old")
            .with_refresh_token("r1")
            .with_expires_in(900 * S),
    );
    h.connect_ready();
    h.take();
    // At 80% of the life the core refreshes in the background.
    h.advance(720 * S);
    let out = h.take();
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::RefreshToken(r) if r.refresh_token.expose() == "r1"))
    );
    h.conn
        .handle_refresh(h.now, Ok(Credentials::new("new").with_expires_in(900 * S)));
    h.drop_link();
    let wait = h.until_open();
    assert!(wait <= S);
    let open = h
        .take()
        .into_iter()
        .find_map(|a| match a {
            Action::Open(o) => Some(o),
            _ => None,
        })
        .unwrap();
    assert_eq!(open.protocols[0].expose(), "access_token.new");
}

#[test]
fn an_expired_token_is_refreshed_before_the_socket_opens() {
    let mut h = Harness::new();
    h.conn.set_credentials(
        h.now,
        Credentials::new("old")
            .with_refresh_token("r1")
            .with_expires_in(10 * S),
    );
    h.now += 20 * S; // expired while disconnected
    h.connect();
    let out = h.take();
    assert_eq!(opens(&out), 0);
    assert!(out.iter().any(|a| matches!(a, Action::RefreshToken(_))));
    h.conn.handle_refresh(h.now, Ok(Credentials::new("fresh")));
    let out = h.take();
    assert_eq!(opens(&out), 1);
}

#[test]
fn upgrade_401_refreshes_once_and_retries_at_once() {
    let mut h = Harness::new();
    h.conn
        .set_credentials(h.now, Credentials::new("old").with_refresh_token("r"));
    h.connect();
    h.take();
    h.refuse(401, None);
    let out = h.take();
    assert!(out.iter().any(|a| matches!(a, Action::RefreshToken(_))));
    assert_eq!(opens(&out), 0);
    h.conn.handle_refresh(h.now, Ok(Credentials::new("new")));
    let out = h.take();
    assert_eq!(opens(&out), 1, "retried at once, without backoff");
    // The refreshed token is refused too: no loop.
    h.refuse(401, None);
    assert_eq!(
        h.conn.status(),
        Status::Failed {
            reason: FailReason::Auth,
            http_status: Some(401),
            detail: None
        }
    );
    h.advance(3600 * S);
    assert_eq!(opens(&h.take()), 0);
}

#[test]
fn a_refreshed_token_that_meets_a_503_can_be_refreshed_again_after_a_later_401() {
    let mut h = Harness::new();
    h.conn
        .set_credentials(h.now, Credentials::new("t1").with_refresh_token("r"));
    h.connect();
    h.refuse(401, None);
    h.conn
        .handle_refresh(h.now, Ok(Credentials::new("t2").with_refresh_token("r2")));
    h.take();
    h.refuse(503, None); // the fresh token was never judged
    h.until_open();
    h.refuse(401, None); // it expired meanwhile: a new refusal, a new refresh
    assert!(
        h.take()
            .iter()
            .any(|a| matches!(a, Action::RefreshToken(_)))
    );
    assert!(matches!(h.conn.status(), Status::Connecting { .. }));
}

#[test]
fn upgrade_401_without_a_refresh_token_fails_without_retrying() {
    let mut h = Harness::new();
    h.connect();
    h.refuse(401, None);
    assert_eq!(
        h.conn.status(),
        Status::Failed {
            reason: FailReason::Auth,
            http_status: Some(401),
            detail: None
        }
    );
    assert_eq!(
        h.conn.poll_timeout(),
        None,
        "nothing left to do until the app acts"
    );
}

#[test]
fn a_rejected_refresh_fails_with_auth() {
    let mut h = Harness::new();
    h.conn
        .set_credentials(h.now, Credentials::new("old").with_refresh_token("r"));
    h.connect();
    h.refuse(401, None);
    h.conn.handle_refresh(h.now, Err(RefreshError::Rejected));
    assert!(matches!(
        h.conn.status(),
        Status::Failed {
            reason: FailReason::Auth,
            ..
        }
    ));
}

#[test]
fn a_transient_refresh_failure_backs_off_and_refreshes_again() {
    let mut h = Harness::new();
    h.conn
        .set_credentials(h.now, Credentials::new("old").with_refresh_token("r"));
    h.connect();
    h.refuse(401, None);
    h.conn
        .handle_refresh(h.now, Err(RefreshError::Transient { retry_after: None }));
    h.drain();
    assert!(matches!(
        h.conn.status(),
        Status::Reconnecting {
            reason: ReconnectReason::RefreshFailed,
            ..
        }
    ));
    h.take();
    h.advance(2 * S);
    let out = h.take();
    assert!(
        out.iter().any(|a| matches!(a, Action::RefreshToken(_))),
        "the rejected token is not reused"
    );
    assert_eq!(opens(&out), 0);
}

#[test]
fn query_auth_puts_the_token_in_the_url_and_offers_no_subprotocol() {
    let mut cfg = config();
    cfg.auth_mode = AuthMode::Query;
    let mut h = Harness::with_config(cfg);
    h.connect();
    let open = h
        .take()
        .into_iter()
        .find_map(|a| match a {
            Action::Open(o) => Some(o),
            _ => None,
        })
        .unwrap();
    assert_eq!(open.url, "ws://127.0.0.1:8080/ws?token=access-1");
    // Older servers may read any subprotocol as an auth attempt: no v2 offer either.
    assert!(open.protocols.is_empty());
    assert!(!format!("{open:?}").contains("access-1"));
}

#[test]
fn subprotocol_auth_offers_both_protocols_kaiku_needs() {
    let mut h = Harness::new();
    h.connect();
    let open = h
        .take()
        .into_iter()
        .find_map(|a| match a {
            Action::Open(o) => Some(o),
            _ => None,
        })
        .unwrap();
    assert_eq!(open.url, "ws://127.0.0.1:8080/ws");
    let p: Vec<&str> = open.protocols.iter().map(|s| s.expose()).collect();
    // The token first, the v2 offers in order of preference, the entry a v1 server selects.
    assert_eq!(
        p,
        [
            "access_token.access-1",
            "kaiku.v2.msgpack",
            "kaiku.v2.json",
            "access_token"
        ]
    );
}

#[test]
fn without_v2_the_offer_is_exactly_what_kaiku_needs() {
    let mut cfg = config();
    cfg.v2.clear();
    let mut h = Harness::with_config(cfg);
    h.connect();
    let open = h
        .take()
        .into_iter()
        .find_map(|a| match a {
            Action::Open(o) => Some(o),
            _ => None,
        })
        .unwrap();
    let p: Vec<&str> = open.protocols.iter().map(|s| s.expose()).collect();
    assert_eq!(p, ["access_token.access-1", "access_token"]);
}

// ----- issue 19: an app that holds the refresh token --------------------------------------

#[test]
fn a_refresh_answer_is_awaited_until_the_app_installs_another_session() {
    let mut h = Harness::new();
    h.conn.set_credentials(
        h.now,
        Credentials::new("a")
            .with_refresh_token("r1")
            .with_expires_in(20 * S),
    );
    assert!(!h.conn.is_refresh_awaited());
    h.connect_ready();
    h.advance(16 * S);
    assert!(h.conn.is_refresh_awaited());
    // The same session put back (restored from the app's store): its answer still applies.
    h.conn
        .set_credentials(h.now, Credentials::new("a").with_refresh_token("r1"));
    assert!(h.conn.is_refresh_awaited());
    h.conn
        .set_credentials(h.now, Credentials::new("b").with_refresh_token("r-other"));
    assert!(!h.conn.is_refresh_awaited());
    h.conn.handle_refresh(h.now, Ok(Credentials::new("late")));
    assert_eq!(h.conn.access_token().map(|t| t.expose()), Some("b"));
}

/// The access token each socket the core opened in `actions` offered, in order.
fn open_tokens(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Open(o) => o.protocols[0]
                .expose()
                .strip_prefix("access_token.")
                .map(str::to_owned),
            _ => None,
        })
        .collect()
}

fn refreshes(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::RefreshToken(_)))
        .count()
}

#[test]
fn a_401_for_credentials_replaced_during_the_handshake_opens_at_once_with_the_new_ones() {
    let mut h = Harness::new(); // "access-1", no refresh token: the app refreshes itself
    h.connect();
    assert_eq!(open_tokens(&h.take()), ["access-1"]);
    h.now += 300 * MS;
    h.conn.set_credentials(h.now, Credentials::new("access-2"));
    assert!(h.take().is_empty(), "the handshake in flight is left alone");
    h.refuse(401, None); // the server judged "access-1", revoked meanwhile
    let out = h.take();
    assert_eq!(
        open_tokens(&out),
        ["access-2"],
        "at once, no backoff: {out:?}"
    );
    assert_eq!(refreshes(&out), 0);
    assert_eq!(h.conn.status(), Status::Connecting { attempt: 0 });
    assert!(
        statuses(&out).is_empty(),
        "the same attempt: neither reconnecting nor failed: {out:?}"
    );
    h.open();
    h.ready();
    assert!(h.conn.is_connected());
}

#[test]
fn a_replacement_refused_in_turn_still_earns_the_one_refresh() {
    let mut h = Harness::new();
    h.conn
        .set_credentials(h.now, Credentials::new("old").with_refresh_token("r1"));
    h.connect();
    h.conn
        .set_credentials(h.now, Credentials::new("new").with_refresh_token("r2"));
    h.take();
    h.refuse(401, None);
    assert_eq!(open_tokens(&h.take()), ["new"]);
    // "new" is refused too: that is a verdict on the current credentials, and the refresh
    // a refusal earns was not spent on "old".
    h.refuse(401, None);
    let out = h.take();
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::RefreshToken(r) if r.refresh_token.expose() == "r2")),
        "{out:?}"
    );
    h.conn.handle_refresh(
        h.now,
        Ok(Credentials::new("newer").with_refresh_token("r3")),
    );
    assert_eq!(open_tokens(&h.take()), ["newer"]);
    h.refuse(401, None);
    assert!(matches!(
        h.conn.status(),
        Status::Failed {
            reason: FailReason::Auth,
            ..
        }
    ));
}

#[test]
fn a_refresh_that_lands_during_the_handshake_is_used_at_once_when_the_old_token_is_refused() {
    let mut h = Harness::new();
    h.conn.set_credentials(
        h.now,
        Credentials::new("old")
            .with_refresh_token("r1")
            .with_expires_in(20 * S),
    );
    h.connect_ready();
    h.advance(16 * S); // the background refresh goes out at 80% of the life
    assert_eq!(refreshes(&h.take()), 1);
    h.drop_link();
    h.until_open(); // "old" is not expired yet: the socket goes with it
    assert_eq!(open_tokens(&h.take()), ["old"]);
    // A server that ends the old access token with the session a refresh deletes: the
    // upgrade in flight meets a 401.
    h.conn.handle_refresh(
        h.now,
        Ok(Credentials::new("rotated")
            .with_refresh_token("r2")
            .with_expires_in(20 * S)),
    );
    h.refuse(401, None);
    let out = h.take();
    assert_eq!(open_tokens(&out), ["rotated"], "{out:?}");
    assert_eq!(
        refreshes(&out),
        0,
        "the rotated pair was never tried: no second refresh"
    );
}

#[test]
fn a_live_socket_closed_4001_after_a_refresh_reopens_at_once_with_the_refreshed_token() {
    let mut h = Harness::new();
    h.conn.set_credentials(
        h.now,
        Credentials::new("old")
            .with_refresh_token("r1")
            .with_expires_in(20 * S),
    );
    h.connect_ready();
    h.advance(16 * S);
    h.conn.handle_refresh(
        h.now,
        Ok(Credentials::new("rotated").with_expires_in(20 * S)),
    );
    h.take();
    h.conn.handle_closed(
        h.now,
        SocketEnd::Closed {
            code: Some(4001),
            reason: "token expired".into(),
        },
    );
    let out = h.take();
    assert_eq!(open_tokens(&out), ["rotated"], "{out:?}");
    assert_eq!(refreshes(&out), 0);
}

#[test]
fn a_history_401_for_a_token_replaced_since_reads_again_at_once_without_a_refresh() {
    let mut h = Harness::new();
    h.conn
        .set_credentials(h.now, Credentials::new("a1").with_refresh_token("r1"));
    h.subscribe("c");
    h.connect_ready();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    h.frame(&message_new("c", "m1", 1));
    h.drop_link();
    h.reconnect();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    let first = fetches(&h.take());
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].token.as_ref().map(|t| t.expose()), Some("a1"));
    h.conn
        .set_credentials(h.now, Credentials::new("a2").with_refresh_token("r2"));
    let unauthorized = || {
        Err(HistoryError::Status {
            status: 401,
            retry_after: None,
        })
    };
    h.conn.handle_history(h.now, first[0].id, unauthorized());
    let out = h.take();
    let again = fetches(&out);
    assert_eq!(again.len(), 1, "the same page again, at once: {out:?}");
    assert_eq!(again[0].before, first[0].before);
    assert_eq!(again[0].token.as_ref().map(|t| t.expose()), Some("a2"));
    assert_eq!(refreshes(&out), 0);
    // A 401 for the current token is a verdict on it: refresh.
    h.conn.handle_history(h.now, again[0].id, unauthorized());
    assert_eq!(refreshes(&h.take()), 1);
}

// ----- DESIGN 1.5: unknown events pass through --------------------------------------------

#[test]
fn unknown_server_events_pass_through_untouched() {
    let mut h = live_with(&[], None);
    let raw = r#"{"type":"reaction_add","channel_id":"c","emoji":"🎉","user":{"id":"u","x":null},"n":1.50}"#;
    h.frame(raw);
    let ev = server_events(&h.take());
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].event_type().as_str(), "reaction_add");
    assert_eq!(ev[0].json().as_str(), raw);
}

#[test]
fn garbage_frames_are_counted_and_survived() {
    let mut h = live_with(&["c"], None);
    for junk in [
        "not json",
        "[1,2]",
        r#"{"type":"subscribed"}"#,
        "{\"type\":",
        "",
        "null",
    ] {
        h.frame(junk);
    }
    h.conn.handle_activity(h.now); // a binary frame
    assert!(h.conn.is_connected());
    assert_eq!(h.conn.stats().decode_errors, 6);
    h.frame(&message_new("c", "m1", 1));
    assert_eq!(delivered_ids(&h.take()), ["m1"]);
}

#[test]
fn an_oversized_frame_drops_the_link_and_reconnects() {
    let mut cfg = config();
    cfg.max_inbound_message = 1024;
    let mut h = Harness::with_config(cfg);
    h.connect_ready();
    h.take();
    h.frame(&format!(r#"{{"type":"x","pad":"{}"}}"#, "a".repeat(2000)));
    let out = h.take();
    assert!(
        out.contains(&Action::Abort),
        "dropped, not closed gracefully"
    );
    assert!(matches!(
        h.conn.status(),
        Status::Reconnecting {
            reason: ReconnectReason::MessageTooLarge,
            ..
        }
    ));
    assert_eq!(h.conn.stats().oversized, 1);
    h.reconnect();
    assert!(h.conn.is_connected());
}

// ----- DESIGN 1.6: heartbeat ----------------------------------------------------------------

#[test]
fn a_silent_link_is_detected_within_interval_plus_timeout() {
    let mut h = live_with(&[], None);
    let start = h.now;
    h.advance(30 * S);
    assert_eq!(sent(&h.take()), [r#"{"type":"ping"}"#]);
    h.advance(10 * S);
    let out = h.take();
    assert!(out.contains(&Action::Abort));
    assert!(matches!(
        h.conn.status(),
        Status::Reconnecting {
            reason: ReconnectReason::HeartbeatTimeout,
            ..
        }
    ));
    assert_eq!(h.now - start, 40 * S);
}

#[test]
fn any_frame_after_a_ping_keeps_the_link_alive() {
    let mut h = live_with(&[], None);
    h.advance(30 * S);
    h.advance(5 * S);
    h.frame(r#"{"type":"presence_update","user_id":"u","status":"online"}"#);
    h.advance(20 * S);
    assert!(h.conn.is_connected());
}

#[test]
fn pong_measures_the_round_trip_and_is_not_forwarded() {
    let mut h = live_with(&[], None);
    h.advance(30 * S);
    h.take();
    h.now += Duration::from_millis(42);
    h.frame(r#"{"type":"pong"}"#);
    assert_eq!(h.conn.rtt(), Some(Duration::from_millis(42)));
    assert!(server_events(&h.take()).is_empty());
}

#[test]
fn a_driver_paused_for_backpressure_keeps_the_link_alive() {
    let mut h = live_with(&[], None);
    h.conn.handle_backpressure(h.now, true);
    h.advance(120 * S);
    assert!(h.conn.is_connected(), "unread answers are not silence");
    h.conn.handle_backpressure(h.now, false);
    h.advance(9 * S);
    assert!(h.conn.is_connected());
    h.advance(S);
    assert!(
        matches!(
            h.conn.status(),
            Status::Reconnecting {
                reason: ReconnectReason::HeartbeatTimeout,
                ..
            }
        ),
        "once reading again, real silence is still a dead link"
    );
}

#[test]
fn waking_from_sleep_probes_at_once_with_a_short_deadline() {
    let mut h = live_with(&[], None);
    h.advance(10 * S);
    h.take();
    h.sleep_machine(3600 * S);
    assert_eq!(sent(&h.take()), [r#"{"type":"ping"}"#]);
    assert!(h.conn.is_connected());
    assert_eq!(h.conn.poll_timeout(), Some(h.now + 5 * S));
    h.advance(5 * S);
    assert!(matches!(
        h.conn.status(),
        Status::Reconnecting {
            reason: ReconnectReason::HeartbeatTimeout,
            ..
        }
    ));
    assert_eq!(h.conn.stats().wake_probes, 1);
}

#[test]
fn a_socket_that_never_opens_times_out_the_handshake() {
    let mut h = Harness::new();
    h.connect();
    h.advance(10 * S);
    assert!(matches!(
        h.conn.status(),
        Status::Reconnecting {
            reason: ReconnectReason::HandshakeTimeout,
            ..
        }
    ));
}

#[test]
fn a_missing_ready_after_the_upgrade_is_its_own_reason_and_backs_off() {
    let mut h = Harness::new();
    h.connect();
    h.open();
    h.advance(9 * S);
    assert!(matches!(h.conn.status(), Status::Connecting { .. }));
    h.advance(S);
    // The upgrade succeeded and the server said nothing (Kaiku's blocked `ready`): not a
    // slow network, and retried after the backoff like any other loss.
    assert!(matches!(
        h.conn.status(),
        Status::Reconnecting {
            reason: ReconnectReason::ReadyTimeout,
            attempt: 1,
            ..
        }
    ));
    assert_eq!(
        serde_json::to_value(h.conn.status()).unwrap()["reason"],
        "ready_timeout"
    );
}

#[test]
fn a_slow_ready_inside_the_handshake_timeout_is_fine() {
    let mut h = Harness::new();
    h.connect();
    h.open();
    h.advance(4 * S);
    h.ready();
    assert!(h.conn.is_connected());
}

// ----- DESIGN 1.7: backoff with jitter ---------------------------------------------------

#[test]
fn refused_upgrades_back_off_within_cap_bounds() {
    let mut h = Harness::new();
    h.connect();
    let caps = [1, 2, 4, 8, 16, 30, 30];
    for cap in caps {
        h.take();
        h.refuse(503, None);
        let wait = h.until_open();
        let cap = Duration::from_secs(cap);
        assert!(
            wait >= cap / 2 && wait <= cap,
            "waited {wait:?} for cap {cap:?}"
        );
    }
}

#[test]
fn two_clients_with_different_seeds_retry_at_different_instants() {
    let mut waits = Vec::new();
    for seed in [1, 2] {
        let mut cfg = config();
        cfg.seed = seed;
        let mut h = Harness::with_config(cfg);
        h.connect_ready();
        h.drop_link();
        waits.push(h.until_open());
    }
    assert_ne!(waits[0], waits[1]);
}

#[test]
fn a_server_that_accepts_and_drops_at_once_gets_growing_delays() {
    let mut h = Harness::new();
    h.connect_ready();
    let mut waits = Vec::new();
    for _ in 0..5 {
        h.drop_link();
        waits.push(h.until_open());
        h.open();
        h.ready();
    }
    assert!(waits[4] >= Duration::from_secs(8), "{waits:?}");
}

#[test]
fn backoff_resets_only_after_ten_seconds_up() {
    let mut h = Harness::new();
    h.connect_ready();
    for _ in 0..4 {
        h.drop_link();
        h.reconnect();
    }
    h.advance(10 * S);
    h.drop_link();
    let wait = h.until_open();
    assert!(wait <= S, "reset to retry 1: {wait:?}");
}

#[test]
fn retry_after_on_429_is_honoured() {
    let mut h = Harness::new();
    h.connect();
    h.take();
    h.refuse(429, Some(60 * S));
    assert!(matches!(
        h.conn.status(),
        Status::Reconnecting {
            reason: ReconnectReason::RateLimited,
            retry_in_ms: 60_000,
            ..
        }
    ));
    assert_eq!(h.until_open(), 60 * S);
}

#[test]
fn forbidden_and_not_found_upgrades_fail_for_good() {
    for (status, reason) in [(403, FailReason::Forbidden), (404, FailReason::Rejected)] {
        let mut h = Harness::new();
        h.connect();
        h.refuse(status, None);
        assert_eq!(
            h.conn.status(),
            Status::Failed {
                reason,
                http_status: Some(status),
                detail: None
            }
        );
        assert_eq!(h.conn.poll_timeout(), None);
        h.conn.connect(h.now).unwrap();
        assert!(
            matches!(h.conn.status(), Status::Connecting { attempt: 0 }),
            "the app may try again"
        );
    }
}

// ----- DESIGN 1.8 and 3.1: status ----------------------------------------------------------

#[test]
fn status_events_follow_each_transition() {
    let mut h = Harness::new();
    h.connect_ready();
    h.drop_link();
    h.reconnect();
    h.conn.disconnect(h.now);
    let names: Vec<&str> = statuses(&h.take()).iter().map(Status::name).collect();
    assert_eq!(
        names,
        [
            "connecting",
            "connected",
            "reconnecting",
            "connecting",
            "connected",
            "disconnected"
        ]
    );
    let reconnecting = statuses(&h.log)[2].clone();
    let json = serde_json::to_value(&reconnecting).unwrap();
    assert_eq!(json["status"], "reconnecting");
    assert_eq!(json["attempt"], 1);
    assert_eq!(json["reason"], "connection_lost");
    assert!(json["retry_in_ms"].as_u64().unwrap() <= 1000);
}

// ----- graceful close -----------------------------------------------------------------------

#[test]
fn disconnect_closes_gracefully_and_aborts_after_one_second() {
    let mut h = live_with(&[], None);
    h.conn.disconnect(h.now);
    let out = h.take();
    assert!(out.contains(&Action::Close {
        code: 1000,
        reason: "client closing"
    }));
    assert!(!out.contains(&Action::Abort));
    h.advance(S);
    assert_eq!(h.take(), [Action::Abort]);
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn a_close_answered_in_time_needs_no_abort() {
    let mut h = live_with(&[], None);
    h.conn.disconnect(h.now);
    h.drop_link();
    h.advance(5 * S);
    assert!(!h.take().contains(&Action::Abort));
}

#[test]
fn never_two_sockets_when_a_connect_comes_before_the_close_linger_ends() {
    let mut cfg = config();
    cfg.close_timeout = 10 * S;
    let mut h = Harness::with_config(cfg);
    h.connect_ready();
    h.conn.disconnect(h.now);
    h.take();
    h.connect();
    let out = h.take();
    let abort = out
        .iter()
        .position(|a| *a == Action::Abort)
        .expect("old socket aborted");
    let open = out
        .iter()
        .position(|a| matches!(a, Action::Open(_)))
        .unwrap();
    assert!(abort < open);
}

// ----- outbound (DESIGN 3.4) ---------------------------------------------------------------

fn custom(n: u32) -> ClientEvent {
    ClientEvent::Custom(CustomEvent::new(format!(r#"{{"type":"read_marker","n":{n}}}"#)).unwrap())
}

#[test]
fn volatile_events_are_refused_offline_and_handed_back() {
    let mut h = Harness::new();
    let typing = ClientEvent::Typing {
        channel_id: "c".into(),
    };
    let err = h.conn.send(h.now, typing.clone()).unwrap_err();
    assert!(matches!(err, SendError::Offline(_)));
    assert_eq!(err.into_event(), typing);
    assert_eq!(h.conn.stats().refused_offline, 1);
}

#[test]
fn queued_events_wait_for_ready_and_go_out_in_order() {
    let mut h = Harness::new();
    h.conn.send(h.now, custom(1)).unwrap();
    h.conn.send(h.now, custom(2)).unwrap();
    h.connect();
    h.open();
    assert!(sent(&h.take()).is_empty(), "no frame before ready");
    h.ready();
    let frames = sent(&h.take());
    assert_eq!(
        frames,
        [
            r#"{"type":"read_marker","n":1}"#,
            r#"{"type":"read_marker","n":2}"#
        ]
    );
}

#[test]
fn a_full_queue_refuses_and_hands_the_event_back() {
    let mut cfg = config();
    cfg.queue.capacity = 2;
    let mut h = Harness::with_config(cfg);
    h.conn.send(h.now, custom(1)).unwrap();
    h.conn.send(h.now, custom(2)).unwrap();
    let err = h.conn.send(h.now, custom(3)).unwrap_err();
    assert_eq!(err, SendError::QueueFull(custom(3)));
    assert_eq!(h.conn.queued(), 2);
}

#[test]
fn queued_events_past_their_max_age_are_reported_not_sent() {
    let mut h = Harness::new();
    h.conn.send(h.now, custom(1)).unwrap();
    h.advance(61 * S);
    assert_eq!(events(&h.take()), [Event::SendDropped(custom(1))]);
    h.connect_ready();
    assert!(sent(&h.take()).is_empty());
}

#[test]
fn session_state_is_replayed_after_every_ready() {
    let mut h = Harness::new();
    h.connect_ready();
    h.conn
        .send(
            h.now,
            ClientEvent::SetStatus {
                status: "dnd".into(),
            },
        )
        .unwrap();
    h.conn
        .send(
            h.now,
            ClientEvent::VoiceJoin {
                channel_id: "v".into(),
            },
        )
        .unwrap();
    h.conn
        .send(
            h.now,
            ClientEvent::VoiceMute {
                channel_id: "v".into(),
            },
        )
        .unwrap();
    h.conn
        .send(
            h.now,
            ClientEvent::SetCustomStatus {
                custom_status: serde_json::json!({"text": "away"}),
            },
        )
        .unwrap();
    h.advance(20 * S); // outside every rate-limit window
    h.drop_link();
    h.conn
        .send(
            h.now,
            ClientEvent::SetStatus {
                status: "idle".into(),
            },
        )
        .unwrap();
    h.take();
    h.reconnect();
    let out = h.take();
    assert_eq!(
        sent(&out),
        [
            r#"{"type":"set_status","status":"idle"}"#,
            r#"{"type":"set_custom_status","custom_status":{"text":"away"}}"#,
            r#"{"type":"voice_join","channel_id":"v"}"#,
            r#"{"type":"voice_mute","channel_id":"v"}"#,
        ]
    );
    assert!(events(&out).contains(&Event::VoiceReset {
        channel_id: "v".into()
    }));
}

#[test]
fn a_replay_inside_a_rate_limit_window_waits_and_keeps_join_before_mute() {
    let mut h = Harness::new();
    h.connect_ready();
    h.conn
        .send(
            h.now,
            ClientEvent::VoiceJoin {
                channel_id: "v".into(),
            },
        )
        .unwrap();
    h.conn
        .send(
            h.now,
            ClientEvent::VoiceMute {
                channel_id: "v".into(),
            },
        )
        .unwrap();
    h.conn
        .send(
            h.now,
            ClientEvent::SetCustomStatus {
                custom_status: serde_json::json!({"text": "away"}),
            },
        )
        .unwrap();
    h.drop_link();
    h.take();
    h.reconnect(); // well inside the 1 s voice-join and 10 s custom-status windows
    assert!(
        sent(&h.take()).is_empty(),
        "rate-limited replays wait for their window"
    );
    h.advance(S);
    assert_eq!(
        sent(&h.take()),
        [
            r#"{"type":"voice_join","channel_id":"v"}"#,
            r#"{"type":"voice_mute","channel_id":"v"}"#
        ]
    );
    h.advance(9 * S);
    assert_eq!(
        sent(&h.take()),
        [r#"{"type":"set_custom_status","custom_status":{"text":"away"}}"#]
    );
}

#[test]
fn leaving_voice_cancels_a_join_still_waiting_for_its_window() {
    let mut h = live_with(&[], None);
    h.conn
        .send(
            h.now,
            ClientEvent::VoiceJoin {
                channel_id: "a".into(),
            },
        )
        .unwrap();
    h.conn
        .send(
            h.now,
            ClientEvent::VoiceJoin {
                channel_id: "b".into(),
            },
        )
        .unwrap();
    h.conn
        .send(
            h.now,
            ClientEvent::VoiceLeave {
                channel_id: "b".into(),
            },
        )
        .unwrap();
    h.advance(2 * S);
    assert_eq!(
        sent(&h.take()),
        [
            r#"{"type":"voice_join","channel_id":"a"}"#,
            r#"{"type":"voice_leave","channel_id":"b"}"#
        ]
    );
}

#[test]
fn voice_signalling_of_the_old_session_is_refused_after_a_drop() {
    let mut h = Harness::new();
    h.connect_ready();
    h.drop_link();
    let answer = ClientEvent::VoiceAnswer {
        channel_id: "v".into(),
        sdp: "x".into(),
    };
    assert!(matches!(
        h.conn.send(h.now, answer),
        Err(SendError::Offline(_))
    ));
}

#[test]
fn typing_is_coalesced_per_channel_not_lost() {
    let mut h = live_with(&[], None);
    let typing = ClientEvent::Typing {
        channel_id: "c".into(),
    };
    for _ in 0..5 {
        h.conn.send(h.now, typing.clone()).unwrap();
        h.now += 100 * MS;
    }
    assert_eq!(sent(&h.take()).len(), 1);
    h.advance(3 * S);
    assert_eq!(sent(&h.take()), [r#"{"type":"typing","channel_id":"c"}"#]);
}

#[test]
fn activity_is_rate_limited_to_the_latest_value() {
    let mut h = live_with(&[], None);
    for n in 0..3 {
        h.conn
            .send(
                h.now,
                ClientEvent::SetActivity {
                    activity: serde_json::json!({"n": n}),
                },
            )
            .unwrap();
    }
    assert_eq!(
        sent(&h.take()),
        [r#"{"type":"set_activity","activity":{"n":0}}"#]
    );
    h.advance(10 * S);
    assert_eq!(
        sent(&h.take()),
        [r#"{"type":"set_activity","activity":{"n":2}}"#]
    );
}

// ----- subscriptions (DESIGN 3.3) ------------------------------------------------------------

#[test]
fn a_refused_subscription_is_removed_and_reported() {
    let mut h = Harness::new();
    h.subscribe("gone");
    h.subscribe("ok");
    h.connect_ready();
    h.frame(r#"{"type":"error","code":"channel_not_found","message":"Channel not found"}"#);
    h.frame(r#"{"type":"subscribed","channel_id":"ok"}"#);
    let out = h.take();
    assert!(events(&out).contains(&Event::SubscriptionRejected {
        channel_id: "gone".into(),
        code: "channel_not_found".into()
    }));
    assert_eq!(h.conn.subscriptions().collect::<Vec<_>>(), ["ok"]);
    h.drop_link();
    h.reconnect();
    assert_eq!(
        sent(&h.take()),
        [r#"{"type":"subscribe","channel_id":"ok"}"#]
    );
}

#[test]
fn invalid_channel_ids_are_refused() {
    let mut h = Harness::new();
    assert!(h.conn.subscribe(h.now, "").is_err());
    assert!(h.conn.subscribe(h.now, &"x".repeat(300)).is_err());
    assert!(h.conn.subscribe(h.now, "a\nb").is_err());
    assert_eq!(h.conn.subscriptions().count(), 0);
}

#[test]
fn online_subscribe_and_unsubscribe_go_out_at_once() {
    let mut h = live_with(&[], None);
    h.subscribe("c");
    h.conn.unsubscribe(h.now, "c");
    assert_eq!(
        sent(&h.take()),
        [
            r#"{"type":"subscribe","channel_id":"c"}"#,
            r#"{"type":"unsubscribe","channel_id":"c"}"#
        ]
    );
}

// ----- time and determinism ---------------------------------------------------------------

#[test]
fn a_refresh_that_never_answers_backs_off_instead_of_hanging() {
    let mut h = Harness::new();
    h.conn.set_credentials(
        h.now,
        Credentials::new("old")
            .with_refresh_token("r")
            .with_expires_in(S),
    );
    h.now += 2 * S;
    h.connect();
    assert!(
        h.take()
            .iter()
            .any(|a| matches!(a, Action::RefreshToken(_)))
    );
    h.advance(40 * S);
    assert!(matches!(
        h.conn.status(),
        Status::Reconnecting {
            reason: ReconnectReason::RefreshFailed,
            ..
        }
    ));
    // The late answer is still applied, and the next attempt opens with it.
    h.conn
        .handle_refresh(h.now, Ok(Credentials::new("late").with_expires_in(900 * S)));
    h.until_open();
    let open = h
        .take()
        .into_iter()
        .find_map(|a| match a {
            Action::Open(o) => Some(o),
            _ => None,
        })
        .unwrap();
    assert_eq!(open.protocols[0].expose(), "access_token.late");
}

#[test]
fn new_credentials_during_a_refresh_open_at_once_and_win() {
    let mut h = Harness::new();
    h.conn
        .set_credentials(h.now, Credentials::new("old").with_refresh_token("r"));
    h.connect();
    h.refuse(401, None);
    h.take();
    h.conn.set_credentials(h.now, Credentials::new("relogin"));
    let open = h
        .take()
        .into_iter()
        .find_map(|a| match a {
            Action::Open(o) => Some(o),
            _ => None,
        })
        .unwrap();
    assert_eq!(open.protocols[0].expose(), "access_token.relogin");
    h.conn
        .handle_refresh(h.now, Ok(Credentials::new("stale-refresh")));
    h.open();
    h.ready();
    h.drop_link();
    h.until_open();
    let open = h
        .take()
        .into_iter()
        .find_map(|a| match a {
            Action::Open(o) => Some(o),
            _ => None,
        })
        .unwrap();
    assert_eq!(open.protocols[0].expose(), "access_token.relogin");
}

#[test]
fn rtt_counts_from_the_last_ping_even_on_a_busy_link() {
    let mut h = live_with(&[], None);
    h.advance(30 * S);
    h.now += 10 * MS;
    h.frame(r#"{"type":"presence_update","user_id":"u","status":"online"}"#);
    h.now += 10 * MS;
    h.frame(r#"{"type":"pong"}"#);
    assert_eq!(h.conn.rtt(), Some(20 * MS));
}

#[test]
fn a_refresh_then_open_is_one_connecting_status() {
    let mut h = Harness::new();
    h.conn.set_credentials(
        h.now,
        Credentials::new("old")
            .with_refresh_token("r")
            .with_expires_in(S),
    );
    h.now += 2 * S;
    h.connect();
    h.conn.handle_refresh(h.now, Ok(Credentials::new("new")));
    let names: Vec<&str> = statuses(&h.take()).iter().map(Status::name).collect();
    assert_eq!(names, ["connecting"]);
}

#[test]
fn time_never_runs_backwards() {
    let mut h = live_with(&[], None);
    h.advance(30 * S);
    let earlier = h.now - 20 * S;
    h.conn.handle_timeout(earlier);
    h.conn
        .handle_frame(earlier, Bytes::from_static(br#"{"type":"pong"}"#));
    assert!(h.conn.poll_timeout().is_some_and(|t| t > h.now));
}

#[test]
fn the_same_seed_and_inputs_give_the_same_actions() {
    let run = || {
        let mut h = Harness::new();
        h.subscribe("c");
        h.connect_ready();
        for _ in 0..5 {
            h.drop_link();
            h.reconnect();
        }
        h.advance(100 * S);
        (h.elapsed(), format!("{:?}", h.log))
    };
    assert_eq!(run(), run());
}

#[test]
fn no_action_or_error_ever_shows_a_token() {
    let mut h = Harness::new();
    h.conn.set_credentials(
        h.now,
        Credentials::new("SECRET-A")
            .with_refresh_token("SECRET-R")
            .with_expires_in(S),
    );
    h.subscribe("c");
    h.advance(2 * S);
    h.connect();
    h.conn
        .handle_refresh(h.now, Ok(Credentials::new("SECRET-B")));
    h.open();
    h.ready();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    h.refuse(401, None);
    let dump = format!("{:?} {:?}", h.log, h.conn);
    assert!(!dump.contains("SECRET"), "{dump}");
}

#[test]
fn history_results_for_unknown_requests_are_ignored() {
    let mut h = live_with(&["c"], None);
    h.answer_history(999, "garbage");
    h.conn.handle_history(
        h.now,
        1000,
        Err(HistoryError::Status {
            status: 500,
            retry_after: None,
        }),
    );
    assert!(h.take().is_empty());
}

#[test]
fn message_for_an_unwanted_channel_is_still_forwarded() {
    let mut h = live_with(&[], None);
    h.frame(&message_new("other", "m1", 1));
    assert_eq!(delivered_ids(&h.take()), ["m1"]);
    let _ = ServerEventKind::Pong;
}

// ----- issue 11: one owner for the subprotocol rule; oversized frames counted -------------

#[test]
fn a_101_without_our_subprotocol_fails_for_good_and_drops_the_socket() {
    for selected in [None, Some("something-else"), Some("access_token.forged")] {
        let mut h = Harness::new();
        h.connect();
        h.conn.handle_open(h.now, selected);
        let out = h.take();
        assert!(
            out.contains(&Action::Abort),
            "{selected:?}: the socket is dropped"
        );
        assert_eq!(
            h.conn.status(),
            Status::Failed {
                reason: FailReason::Subprotocol,
                http_status: None,
                detail: None
            },
            "{selected:?}"
        );
        assert_eq!(h.conn.stats().missing_subprotocol, 1);
        h.advance(60 * S);
        assert_eq!(opens(&h.take()), 0, "{selected:?}: no retry");
    }
}

#[test]
fn an_oversized_frame_refused_by_the_driver_is_counted() {
    let mut h = live_with(&["c"], None);
    h.conn.handle_closed(
        h.now,
        tether_core::SocketEnd::Error(tether_core::TransportError::TooLarge),
    );
    assert_eq!(h.conn.stats().oversized, 1);
    assert!(matches!(
        h.conn.status(),
        Status::Reconnecting {
            reason: ReconnectReason::MessageTooLarge,
            ..
        }
    ));
}

// ----- issue 11: a refusal that may answer another frame never drops a wanted channel ----

#[test]
fn a_refusal_answering_an_earlier_voice_join_does_not_drop_a_wanted_channel() {
    let mut h = live_with(&["a"], None);
    h.conn
        .send(
            h.now,
            tether_core::ClientEvent::VoiceJoin {
                channel_id: "v".into(),
            },
        )
        .unwrap();
    h.subscribe("b");
    h.take();
    // Kaiku refuses the voice join (its `error` names no channel), then confirms b.
    h.frame(r#"{"type":"error","code":"forbidden","message":"Access denied"}"#);
    let out = h.take();
    assert!(
        !events(&out)
            .iter()
            .any(|e| matches!(e, Event::SubscriptionRejected { .. })),
        "b was dropped on a guess: {out:?}"
    );
    assert!(events(&out).contains(&Event::SubscriptionUncertain {
        channel_id: "b".into(),
        code: "forbidden".into()
    }));
    assert_eq!(
        sent(&out),
        [
            r#"{"type":"ping"}"#,
            r#"{"type":"subscribe","channel_id":"b"}"#
        ],
        "asked again behind a fence"
    );
    h.frame(r#"{"type":"subscribed","channel_id":"b"}"#);
    h.frame(r#"{"type":"pong"}"#);
    h.frame(r#"{"type":"subscribed","channel_id":"b"}"#);
    assert!(h.conn.subscriptions().any(|c| c == "b"));
    // b is live: its messages are delivered.
    h.frame(&message_new("b", "m1", 1));
    assert_eq!(delivered_ids(&h.take()), ["m1"]);
}

#[test]
fn a_refusal_of_the_subscribe_asked_again_is_attributed_after_the_fence() {
    let mut h = live_with(&["a"], None);
    h.conn
        .send(
            h.now,
            tether_core::ClientEvent::Typing {
                channel_id: "a".into(),
            },
        )
        .unwrap();
    h.subscribe("secret");
    h.take();
    // The typing succeeded silently; the subscribe is refused: uncertain at first.
    h.frame(r#"{"type":"error","code":"forbidden","message":"Access denied"}"#);
    assert!(h.conn.subscriptions().any(|c| c == "secret"));
    h.take();
    // The fence's pong, then the second subscribe's refusal: now it can only be this one.
    h.frame(r#"{"type":"pong"}"#);
    h.frame(r#"{"type":"error","code":"forbidden","message":"Access denied"}"#);
    // A first `forbidden` is put to the test (Kaiku says it on a database error too).
    let out = h.take();
    assert!(
        !events(&out)
            .iter()
            .any(|e| matches!(e, Event::SubscriptionRejected { .. })),
        "{out:?}"
    );
    assert!(h.conn.subscriptions().any(|c| c == "secret"));
    h.advance(3 * S);
    assert_eq!(
        sent(&h.take()),
        [r#"{"type":"subscribe","channel_id":"secret"}"#]
    );
    h.frame(r#"{"type":"error","code":"forbidden","message":"Access denied"}"#);
    assert!(events(&h.take()).contains(&Event::SubscriptionRejected {
        channel_id: "secret".into(),
        code: "forbidden".into()
    }));
    assert!(!h.conn.subscriptions().any(|c| c == "secret"));
}

// ----- DESIGN 3.2: "the network may have changed" ---------------------------------------

#[test]
fn a_network_change_probes_a_live_link_at_once_with_the_short_deadline() {
    let mut h = live_with(&[], None);
    h.advance(10 * S);
    h.take();
    h.conn.handle_network_change(h.now);
    assert_eq!(sent(&h.take()), [r#"{"type":"ping"}"#]);
    assert_eq!(h.conn.poll_timeout(), Some(h.now + 5 * S));
    h.advance(5 * S);
    assert!(matches!(
        h.conn.status(),
        Status::Reconnecting {
            reason: ReconnectReason::HeartbeatTimeout,
            ..
        }
    ));
    assert_eq!(h.conn.stats().wake_probes, 1);
}

#[test]
fn a_link_that_answers_the_network_change_probe_stays_up() {
    let mut h = live_with(&[], None);
    h.conn.handle_network_change(h.now);
    h.advance(S);
    h.frame(r#"{"type":"pong"}"#);
    h.advance(20 * S);
    assert!(h.conn.is_connected());
    assert_eq!(sent(&h.take()), [r#"{"type":"ping"}"#], "no other ping yet");
}

#[test]
fn repeated_network_changes_never_put_the_dead_link_verdict_off() {
    let mut h = live_with(&[], None);
    h.conn.handle_network_change(h.now);
    for _ in 0..4 {
        h.advance(S);
        h.conn.handle_network_change(h.now);
    }
    assert_eq!(
        sent(&h.take()),
        [r#"{"type":"ping"}"#],
        "one probe, not five"
    );
    h.advance(S);
    assert!(!h.conn.is_connected(), "dead 5 s after the first probe");
}

#[test]
fn a_network_change_shortens_a_pending_heartbeat_deadline() {
    let mut h = live_with(&[], None);
    h.advance(30 * S); // the regular ping: its verdict is 10 s away
    h.take();
    h.advance(S);
    h.conn.handle_network_change(h.now);
    assert_eq!(sent(&h.take()), [r#"{"type":"ping"}"#]);
    assert_eq!(h.conn.poll_timeout(), Some(h.now + 5 * S));
}

#[test]
fn a_network_change_skips_the_backoff_wait() {
    let mut h = Harness::new();
    h.connect();
    let caps = [1, 2, 4, 8];
    for _ in caps {
        h.take();
        h.refuse(503, None);
        h.until_open();
    }
    h.take();
    h.refuse(503, None);
    let Status::Reconnecting { retry_in_ms, .. } = h.conn.status() else {
        panic!("reconnecting");
    };
    assert!(retry_in_ms >= 8_000, "a long wait: {retry_in_ms} ms");
    h.advance(S);
    h.conn.handle_network_change(h.now);
    assert_eq!(opens(&h.take()), 1, "the attempt starts now");
    assert!(matches!(h.conn.status(), Status::Connecting { .. }));
}

#[test]
fn a_network_change_does_not_skip_a_wait_the_server_asked_for() {
    let mut h = Harness::new();
    h.connect();
    h.take();
    h.refuse(429, Some(60 * S));
    h.advance(10 * S);
    h.conn.handle_network_change(h.now);
    assert_eq!(opens(&h.take()), 0);
    assert_eq!(h.until_open(), 50 * S, "still the full Retry-After");
}

#[test]
fn a_network_change_cuts_the_backoff_down_to_the_servers_wait() {
    let mut h = Harness::new();
    h.connect();
    // Back off until the backoff's own delay is longer than the server's 5 s.
    for _ in 0..5 {
        h.take();
        h.refuse(503, None);
        h.until_open();
    }
    h.take();
    h.refuse(503, Some(5 * S));
    let Status::Reconnecting { retry_in_ms, .. } = h.conn.status() else {
        panic!("reconnecting");
    };
    assert!(retry_in_ms > 5_000, "{retry_in_ms} ms");
    h.take();
    h.conn.handle_network_change(h.now);
    assert!(matches!(
        statuses(&h.take()).as_slice(),
        [Status::Reconnecting {
            retry_in_ms: 5_000,
            ..
        }]
    ));
    assert_eq!(h.until_open(), 5 * S);
}

#[test]
fn a_network_change_while_connecting_disconnected_or_failed_does_nothing() {
    let mut h = Harness::new();
    h.conn.handle_network_change(h.now);
    assert!(h.take().is_empty(), "disconnected");
    h.connect();
    h.take();
    h.conn.handle_network_change(h.now);
    assert!(h.take().is_empty(), "connecting");
    h.refuse(403, None);
    h.take();
    h.conn.handle_network_change(h.now);
    assert!(h.take().is_empty(), "failed");
    assert!(matches!(h.conn.status(), Status::Failed { .. }));
}

// ----- protocol v2 (docs/protocol.md, "Protocol v2") ---------------------------------------

/// `value` as MessagePack, as a v2 server writes it.
fn msgpack(value: &serde_json::Value) -> Bytes {
    fn write(v: &serde_json::Value, out: &mut Vec<u8>) {
        use serde_json::Value;
        match v {
            Value::Null => rmp::encode::write_nil(out).unwrap(),
            Value::Bool(b) => rmp::encode::write_bool(out, *b).unwrap(),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => drop(rmp::encode::write_uint(out, u).unwrap()),
                (_, Some(i)) => drop(rmp::encode::write_sint(out, i).unwrap()),
                _ => rmp::encode::write_f64(out, n.as_f64().unwrap()).unwrap(),
            },
            Value::String(s) => rmp::encode::write_str(out, s).unwrap(),
            Value::Array(a) => {
                rmp::encode::write_array_len(out, a.len() as u32).unwrap();
                a.iter().for_each(|v| write(v, out));
            }
            Value::Object(m) => {
                rmp::encode::write_map_len(out, m.len() as u32).unwrap();
                for (k, v) in m {
                    rmp::encode::write_str(out, k).unwrap();
                    write(v, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    write(value, &mut out);
    Bytes::from(out)
}

/// Connects, the 101 selecting `selected`, and reaches `ready` (sent in that protocol).
fn ready_on(h: &mut Harness, selected: &str) {
    h.connect();
    h.conn.handle_open(h.now, Some(selected));
    h.drain();
    let ready = serde_json::json!({"type": "ready", "user_id": "me"});
    if selected == "kaiku.v2.msgpack" {
        h.conn.handle_binary(h.now, msgpack(&ready));
        h.drain();
    } else {
        h.frame(&ready.to_string());
    }
}

/// The frames written, as JSON values (binary frames decoded from MessagePack).
fn written(actions: &[Action]) -> Vec<serde_json::Value> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(t) => Some(serde_json::from_str(t.as_str()).unwrap()),
            Action::SendBinary(b) => {
                let mut r = &b[..];
                Some(rmpv_to_json(&mut r))
            }
            _ => None,
        })
        .collect()
}

/// A minimal MessagePack reader for the core's own output (maps, arrays, strings, ints).
fn rmpv_to_json(r: &mut &[u8]) -> serde_json::Value {
    use rmp::Marker;
    use serde_json::{Value, json};
    let m = rmp::decode::read_marker(r).unwrap();
    let mut take = |n: usize| {
        let (a, b) = r.split_at(n);
        *r = b;
        a.to_vec()
    };
    let str_of = |bytes: Vec<u8>| Value::String(String::from_utf8(bytes).unwrap());
    match m {
        Marker::Null => Value::Null,
        Marker::True => json!(true),
        Marker::False => json!(false),
        Marker::FixPos(n) => json!(n),
        Marker::FixStr(n) => str_of(take(n as usize)),
        Marker::Str8 => {
            let n = take(1)[0] as usize;
            str_of(take(n))
        }
        Marker::FixArray(n) => Value::Array((0..n).map(|_| rmpv_to_json(r)).collect()),
        Marker::FixMap(n) => Value::Object(
            (0..n)
                .map(|_| {
                    let Value::String(k) = rmpv_to_json(r) else {
                        panic!("key")
                    };
                    (k, rmpv_to_json(r))
                })
                .collect(),
        ),
        other => panic!("unexpected marker {other:?}"),
    }
}

#[test]
fn a_v2_json_socket_sends_the_replay_after_ready_as_one_frame() {
    let mut h = Harness::new();
    for ch in ["a", "b", "c"] {
        h.subscribe(ch);
    }
    ready_on(&mut h, "kaiku.v2.json");
    assert_eq!(h.conn.protocol(), tether_core::wire::Protocol::V2_JSON);
    let frames = written(&h.take());
    assert_eq!(
        frames.len(),
        1,
        "one frame for the whole replay: {frames:?}"
    );
    let subscribes: Vec<&str> = frames[0]
        .as_array()
        .expect("a batch")
        .iter()
        .map(|e| e["channel_id"].as_str().unwrap())
        .collect();
    assert_eq!(subscribes, ["a", "b", "c"]);
    assert_eq!(h.conn.stats().batches_out, 1);
    // Later, a lone event leaves as one object.
    h.conn
        .send(
            h.now,
            ClientEvent::Typing {
                channel_id: "a".into(),
            },
        )
        .unwrap();
    h.drain();
    let frames = written(&h.take());
    assert_eq!(
        frames,
        [serde_json::json!({"type": "typing", "channel_id": "a"})]
    );
}

#[test]
fn a_v2_msgpack_socket_writes_binary_and_reads_batches_in_order() {
    let mut h = Harness::new();
    h.subscribe("a");
    h.subscribe("b");
    ready_on(&mut h, "kaiku.v2.msgpack");
    assert_eq!(h.conn.protocol(), tether_core::wire::Protocol::V2_MSGPACK);
    let actions = h.take();
    assert!(
        actions.iter().all(|a| !matches!(a, Action::Send(_))),
        "no text frame"
    );
    let frames = written(&actions);
    assert_eq!(
        frames,
        [serde_json::json!([
            {"type": "subscribe", "channel_id": "a"},
            {"type": "subscribe", "channel_id": "b"}
        ])]
    );
    // The server batches too: every event of the frame, in order, as JSON to the app.
    let batch = serde_json::json!([
        {"type": "subscribed", "channel_id": "a"},
        {"type": "subscribed", "channel_id": "b"},
        {"type": "brand_new", "n": -7, "x": 1.5, "ok": true, "none": null}
    ]);
    h.conn.handle_binary(h.now, msgpack(&batch));
    h.drain();
    let events = server_events(&h.take());
    let types: Vec<&str> = events.iter().map(|e| e.event_type().as_str()).collect();
    assert_eq!(types, ["subscribed", "subscribed", "brand_new"]);
    let unknown: serde_json::Value = serde_json::from_str(events[2].json().as_str()).unwrap();
    assert_eq!(unknown, batch[2]);
    assert_eq!(h.conn.stats().batches_in, 1);
}

#[test]
fn a_v1_server_keeps_today_s_protocol_frame_for_frame() {
    let mut h = Harness::new();
    h.subscribe("a");
    h.subscribe("b");
    ready_on(&mut h, "access_token");
    assert_eq!(h.conn.protocol(), tether_core::wire::Protocol::V1);
    let frames = sent(&h.take());
    assert_eq!(
        frames,
        [
            r#"{"type":"subscribe","channel_id":"a"}"#,
            r#"{"type":"subscribe","channel_id":"b"}"#
        ]
    );
    // A binary frame on a v1 socket only proves the link alive.
    h.conn
        .handle_binary(h.now, msgpack(&serde_json::json!({"type": "pong"})));
    h.drain();
    assert!(server_events(&h.take()).is_empty());
    assert_eq!(h.conn.stats().decode_errors, 0);
}

#[test]
fn a_server_selecting_a_v2_encoding_not_offered_fails_for_good() {
    let mut cfg = config();
    cfg.v2 = vec![tether_core::wire::Encoding::Json];
    let mut h = Harness::with_config(cfg);
    h.connect();
    h.conn.handle_open(h.now, Some("kaiku.v2.msgpack"));
    h.drain();
    assert!(matches!(
        h.conn.status(),
        Status::Failed {
            reason: tether_core::FailReason::Subprotocol,
            ..
        }
    ));
}

#[test]
fn a_bad_event_in_a_batch_is_skipped_and_the_rest_delivered() {
    let mut h = Harness::new();
    h.subscribe("a");
    ready_on(&mut h, "kaiku.v2.json");
    h.frame(r#"{"type":"subscribed","channel_id":"a"}"#);
    h.take();
    let m = |id: &str| {
        format!(
            r#"{{"type":"message_new","channel_id":"a","message":{{"id":"{id}","channel_id":"a","created_at":"2026-11-25T17:00:01Z"}}}}"#
        )
    };
    h.frame(&format!(
        r#"[{}, {{"no_type":1}}, 7, {}]"#,
        m("m1"),
        m("m2")
    ));
    assert_eq!(delivered_ids(&h.take()), ["m1", "m2"]);
    assert_eq!(h.conn.stats().decode_errors, 2);
    // A malformed batch is one error; the link stays.
    h.frame("[{},");
    assert_eq!(h.conn.stats().decode_errors, 3);
    assert!(h.conn.status().is_connected());
}

#[test]
fn a_msgpack_bomb_is_refused_without_growing_past_the_cap_and_the_link_stays() {
    let mut h = Harness::new();
    ready_on(&mut h, "kaiku.v2.msgpack");
    h.take();
    // 200 KiB of one-byte control characters in one string: 1.2 MiB once escaped as JSON.
    let mut bomb = vec![0xdb];
    bomb.extend_from_slice(&(200u32 * 1024).to_be_bytes());
    bomb.extend(std::iter::repeat_n(0x01u8, 200 * 1024));
    h.conn.handle_binary(h.now, Bytes::from(bomb));
    h.drain();
    assert_eq!(h.conn.stats().oversized, 1);
    assert!(h.conn.status().is_connected());
    // Garbage is an error, not a panic; a frame over the cap drops the link.
    h.conn
        .handle_binary(h.now, Bytes::from_static(&[0xc1, 0xff, 0x00]));
    h.drain();
    assert_eq!(h.conn.stats().decode_errors, 2);
    h.conn
        .handle_binary(h.now, Bytes::from(vec![0xc0; 256 * 1024 + 1]));
    h.drain();
    assert!(matches!(h.conn.status(), Status::Reconnecting { .. }));
}

// permessage-deflate: the offer, the check of the answer, and what is reported (D67).

fn open_request(actions: &[Action]) -> Option<&tether_core::OpenRequest> {
    actions.iter().find_map(|a| match a {
        Action::Open(o) => Some(o),
        _ => None,
    })
}

#[test]
fn deflate_is_offered_only_when_configured() {
    let mut h = Harness::new();
    h.connect();
    assert_eq!(open_request(&h.take()).unwrap().deflate, None);

    let mut cfg = config();
    let mut offer = tether_core::wire::DeflateOffer::default();
    offer.server_max_window_bits = 11;
    cfg.deflate = Some(offer);
    let mut h = Harness::with_config(cfg);
    h.connect();
    let offered = open_request(&h.take()).unwrap().deflate.unwrap();
    assert_eq!(
        offered.header(),
        "permessage-deflate; client_max_window_bits; server_max_window_bits=11"
    );
}

#[test]
fn an_agreed_deflate_is_in_the_status_and_the_stats_and_reset_with_the_socket() {
    let mut cfg = config();
    cfg.deflate = Some(tether_core::wire::DeflateOffer::default());
    let mut h = Harness::with_config(cfg);
    h.connect();
    h.conn
        .handle_upgraded(
            h.now,
            Some("kaiku.v2.json"),
            Some("permessage-deflate; server_max_window_bits=12; client_max_window_bits=9"),
        )
        .unwrap();
    h.drain();
    h.frame(r#"{"type":"ready","user_id":"me"}"#);
    let Status::Connected {
        protocol,
        compression: Some(d),
    } = h.conn.status()
    else {
        panic!("{:?}", h.conn.status());
    };
    assert_eq!(protocol, tether_core::wire::Protocol::V2_JSON);
    assert_eq!(d.server_max_window_bits, 12);
    assert_eq!(d.client_max_window_bits, 9);
    let stats = h.conn.stats();
    assert_eq!(stats.compression, Some(d));
    assert_eq!(stats.protocol, Some(tether_core::wire::Protocol::V2_JSON));
    assert_eq!(h.conn.deflate(), Some(d));

    // The next socket is answered without the extension: not compressed.
    h.drop_link();
    assert_eq!(h.conn.stats().compression, None);
    assert_eq!(h.conn.stats().protocol, None);
    h.until_open();
    h.conn
        .handle_upgraded(h.now, Some("access_token"), None)
        .unwrap();
    h.drain();
    h.frame(r#"{"type":"ready","user_id":"me"}"#);
    assert_eq!(
        h.conn.status(),
        Status::Connected {
            protocol: tether_core::wire::Protocol::V1,
            compression: None
        }
    );
}

#[test]
fn an_extension_answer_that_was_not_offered_or_breaks_the_rules_fails_for_good() {
    let failed = |cfg: tether_core::Config, answer: &str| {
        let mut h = Harness::with_config(cfg);
        h.connect();
        let why = h
            .conn
            .handle_upgraded(h.now, Some("access_token"), Some(answer))
            .unwrap_err();
        assert!(!why.to_string().is_empty());
        h.drain();
        assert_eq!(
            h.conn.status(),
            Status::Failed {
                reason: tether_core::FailReason::Extension,
                http_status: None,
                detail: None
            },
            "{answer}"
        );
        assert_eq!(h.conn.stats().refused_extensions, 1);
        // The socket is let go of, not kept.
        assert!(h.take().iter().any(|a| matches!(a, Action::Abort)));
    };
    // Nothing offered.
    failed(config(), "permessage-deflate");
    let mut cfg = config();
    cfg.deflate = Some(tether_core::wire::DeflateOffer::default());
    failed(cfg.clone(), "permessage-deflate; server_max_window_bits=16");
    failed(cfg.clone(), "permessage-deflate; mystery");
    failed(cfg, "x-webkit-deflate-frame");
}

// ----- The real server's refusals that are not (issue 21) ---------------------------------

#[test]
fn a_subscribe_answered_by_a_message_error_goes_again() {
    let mut h = live_with(&["a"], None);
    h.subscribe("b");
    assert_eq!(
        sent(&h.take()),
        [r#"{"type":"subscribe","channel_id":"b"}"#]
    );
    // Kaiku's database failed looking the channel up: an unnamed error, no `subscribed`.
    // Nothing else is unanswered: it is b's answer.
    h.frame(r#"{"type":"error","code":"message_error","message":"Database error"}"#);
    assert!(sent(&h.take()).is_empty());
    h.advance(S);
    assert_eq!(
        sent(&h.take()),
        [r#"{"type":"subscribe","channel_id":"b"}"#],
        "sent again a second later"
    );
    h.frame(r#"{"type":"subscribed","channel_id":"b"}"#);
    h.frame(&message_new("b", "m1", 1));
    assert_eq!(delivered_ids(&h.take()), ["m1"]);
    assert_eq!(h.conn.stats().resubscribes, 1);
}

#[test]
fn an_unnamed_error_after_a_typing_is_settled_by_a_fence() {
    let mut h = live_with(&["a"], None);
    h.conn
        .send(
            h.now,
            ClientEvent::Typing {
                channel_id: "a".into(),
            },
        )
        .unwrap();
    h.subscribe("b");
    h.take();
    // The typing's error or b's? A fence's pong tells.
    h.frame(r#"{"type":"error","code":"message_error","message":"Database error"}"#);
    assert_eq!(sent(&h.take()), [r#"{"type":"ping"}"#]);
    h.frame(r#"{"type":"pong"}"#);
    h.advance(S);
    assert_eq!(
        sent(&h.take()),
        [r#"{"type":"subscribe","channel_id":"b"}"#],
        "b got something else: sent again"
    );
}

#[test]
fn an_error_that_answers_no_subscribe_sends_no_fence() {
    let mut h = live_with(&["a"], None);
    h.frame(r#"{"type":"error","code":"message_error","message":"bad typing"}"#);
    assert!(sent(&h.take()).is_empty());
}

#[test]
fn a_first_forbidden_is_asked_again_before_the_channel_is_dropped() {
    let mut h = live_with(&["a"], None);
    h.subscribe("b");
    h.take();
    h.frame(r#"{"type":"error","code":"forbidden","message":"Access denied"}"#);
    let out = h.take();
    assert!(
        events(&out).contains(&Event::SubscriptionUncertain {
            channel_id: "b".into(),
            code: "forbidden".into()
        }),
        "{out:?}"
    );
    assert!(h.conn.subscriptions().any(|c| c == "b"));
    h.advance(3 * S);
    assert_eq!(
        sent(&h.take()),
        [r#"{"type":"subscribe","channel_id":"b"}"#]
    );
    // The database is back: b is live.
    h.frame(r#"{"type":"subscribed","channel_id":"b"}"#);
    h.frame(&message_new("b", "m1", 1));
    assert_eq!(delivered_ids(&h.take()), ["m1"]);
}

// ----- A link that answers pings and delivers nothing (issue 21) --------------------------

#[test]
fn a_post_not_echoed_in_time_replaces_the_link() {
    let mut h = live_with(&["a"], Some(("m0", 1)));
    let sent_at = h.now;
    h.advance(S / 10);
    h.conn.handle_app_post(h.now, sent_at, "a", "m1");
    h.advance(4 * S);
    assert!(h.conn.is_connected());
    // Pings are answered all along: the heartbeat is content.
    h.frame(r#"{"type":"pong"}"#);
    h.advance(S);
    assert!(matches!(
        h.conn.status(),
        Status::Reconnecting {
            reason: ReconnectReason::NoEcho,
            ..
        }
    ));
    assert_eq!(h.conn.stats().missing_echoes, 1);
}

#[test]
fn an_echo_in_time_or_before_the_answer_keeps_the_link() {
    let mut h = live_with(&["a"], Some(("m0", 1)));
    let sent_at = h.now;
    h.conn.handle_app_post(h.now, sent_at, "a", "m1");
    h.advance(S);
    h.frame(&message_new("a", "m1", 2));
    // The broadcast can overtake the REST answer.
    let sent_at = h.now;
    h.frame(&message_new("a", "m2", 3));
    h.conn.handle_app_post(h.now, sent_at, "a", "m2");
    h.advance(10 * S);
    assert!(h.conn.is_connected());
    assert_eq!(h.conn.stats().missing_echoes, 0);
}

#[test]
fn a_post_proves_nothing_on_a_channel_not_subscribed_before_it_went() {
    let mut h = live_with(&["a"], Some(("m0", 1)));
    let before = h.now;
    h.advance(S);
    h.subscribe("b");
    h.frame(r#"{"type":"subscribed","channel_id":"b"}"#);
    // Sent before b's subscription took effect, and on a channel not wanted at all.
    h.conn.handle_app_post(h.now, before, "b", "m1");
    h.conn.handle_app_post(h.now, h.now, "elsewhere", "m2");
    h.advance(10 * S);
    assert!(h.conn.is_connected());
}

// ----- Late broadcasts that carry more (issue 21) ------------------------------------------

#[test]
fn a_live_copy_that_changed_since_its_history_copy_is_delivered_as_an_update() {
    let mut h = live_with(&["c"], Some(("m1", 1)));
    h.drop_link();
    h.reconnect();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    let req = fetches(&h.take());
    // m2 is an upload: Kaiku stored it before its file, and broadcasts it once the file is
    // stored, with the attachment. m3 is an ordinary message whose broadcast was slow.
    h.answer_history(
        req[0].id,
        &page("c", &[("m3", 3), ("m2", 2), ("m1", 1)], true),
    );
    let out = h.take();
    assert_eq!(delivered_ids(&out), ["m2", "m3"]);
    assert!(server_events(&out).iter().all(|e| e.is_recovered()));
    let with_file = message_new("c", "m2", 2).replace(
        r#""attachments":[]"#,
        r#""attachments":[{"filename":"cat.png","id":"f1","mime_type":"image/png","size":12}]"#,
    );
    h.frame(&with_file);
    let out = h.take();
    let updates = server_events(&out);
    assert_eq!(updates.len(), 1, "{out:?}");
    assert!(updates[0].is_update() && !updates[0].is_recovered());
    assert_eq!(updates[0].json().as_str(), with_file);
    // The same copy again, and m3's unchanged copy: duplicates, as ever.
    h.frame(&with_file);
    h.frame(&message_new("c", "m3", 3));
    assert!(server_events(&h.take()).is_empty());
    assert_eq!(h.conn.stats().updated_copies, 1);
    assert_eq!(h.conn.stats().duplicates, 2);
}

#[test]
fn a_changed_copy_is_an_update_after_a_switch_to_subscribe_from() {
    // Found by the model (knob E, seed 741): the channel was unsubscribed and subscribed
    // again from its newest message between the history copy and the broadcast.
    let mut h = live_with(&["c"], Some(("m1", 1)));
    h.drop_link();
    h.reconnect();
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    let req = fetches(&h.take());
    h.answer_history(req[0].id, &page("c", &[("m2", 2), ("m1", 1)], true));
    assert_eq!(delivered_ids(&h.take()), ["m2"]);
    h.conn.unsubscribe(h.now, "c");
    h.conn.subscribe_from(h.now, "c", "m2").unwrap();
    h.frame(r#"{"type":"unsubscribed","channel_id":"c"}"#);
    h.frame(r#"{"type":"subscribed","channel_id":"c"}"#);
    let with_file = message_new("c", "m2", 2).replace(
        r#""attachments":[]"#,
        r#""attachments":[{"filename":"cat.png","id":"f1"}]"#,
    );
    // The broadcast comes while the new catch-up holds live events.
    h.frame(&with_file);
    for r in fetches(&h.take()) {
        h.answer_history(r.id, &page("c", &[("m2", 2), ("m1", 1)], false));
    }
    let out = h.take();
    let updates: Vec<_> = server_events(&out)
        .into_iter()
        .filter(|e| e.is_update())
        .collect();
    assert_eq!(updates.len(), 1, "{out:?}");
}
