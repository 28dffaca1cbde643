//! Adversarial tests of DESIGN 3.5's promise, written from the public API only: a hostile
//! but real-world server and network try to make the core say `resynced { complete: true }`
//! while a message the server's own record holds was never delivered, or deliver one twice.
//!
//! Tests that currently FAIL are attacks that succeeded; each says the scenario, the
//! real-world cause, and what the core did.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::*;
use tether_core::{Action, Config, Event, HistoryError, ReadHeaders, Timestamp};

/// The default configuration (late margin 10 s), as a real app runs it.
/// Only the heartbeat is stretched (scenarios advance tens of seconds without pongs) and the
/// reconnect wait is 10..20 s, so that messages can be posted during the gap at their own
/// seconds. Catch-up settings are the defaults.
fn real_config() -> Config {
    let mut c = Config::new("http://127.0.0.1:8080").unwrap();
    c.seed = 42;
    c.heartbeat.interval = Duration::from_secs(3600);
    c.backoff.base = Duration::from_secs(20);
    c.backoff.max = Duration::from_secs(20);
    c
}

/// A message stamped with an arbitrary `created_at` (RFC 3339).
fn msg_at(ch: &str, id: &str, created_at: &str) -> String {
    format!(
        r#"{{"attachments":[],"author":{{"avatar_url":null,"display_name":"Bob","id":"u2","status":"online","username":"bob"}},"channel_id":"{ch}","content":"m {id}","created_at":"{created_at}","edited_at":null,"encrypted":false,"id":"{id}","message_type":"user","parent_id":null,"pinned":false,"reply_to":null,"thread_last_reply_at":null,"thread_reply_count":0}}"#
    )
}

fn new_at(ch: &str, id: &str, created_at: &str) -> String {
    format!(
        r#"{{"type":"message_new","channel_id":"{ch}","message":{}}}"#,
        msg_at(ch, id, created_at)
    )
}

/// An envelope page of raw message objects, newest first.
fn raw_page(items: &[String], has_more: bool, cursor: Option<&str>) -> String {
    let cursor = cursor.map_or(String::new(), |c| format!(r#","next_cursor":"{c}""#));
    format!(
        r#"{{"items":[{}],"has_more":{has_more}{cursor}}}"#,
        items.join(",")
    )
}

fn subscribed(h: &mut Harness, ch: &str) {
    h.frame(&format!(r#"{{"type":"subscribed","channel_id":"{ch}"}}"#));
}

fn resynced(actions: &[Action]) -> Vec<(String, usize, bool)> {
    events(actions)
        .into_iter()
        .filter_map(|e| match e {
            Event::Resynced {
                channel_id,
                recovered,
                complete,
            } => Some((channel_id.to_string(), recovered, complete)),
            _ => None,
        })
        .collect()
}

/// The promise checker: `complete: true` for `ch` only if every id of `record` (the server's
/// record of messages that must reach the app) was delivered; and no id delivered twice.
fn check_promise(h: &Harness, ch: &str, record: &[&str]) {
    let delivered = delivered_ids(&h.log);
    let mut seen = std::collections::BTreeSet::new();
    for id in &delivered {
        assert!(seen.insert(id.clone()), "delivered twice: {id} in {delivered:?}");
    }
    let r = resynced(&h.log);
    let last = r.iter().rev().find(|(c, _, _)| c == ch);
    if let Some((_, _, true)) = last {
        let missing: Vec<&&str> = record.iter().filter(|id| !seen.contains(**id)).collect();
        assert!(
            missing.is_empty(),
            "complete: true but never delivered {missing:?} (delivered {delivered:?}, resynced {r:?})"
        );
    }
}

/// Live on `ch` with the default config; `anchor` arrives live at its own second.
fn live_real(channels: &[&str], anchor: Option<(&str, u32)>) -> Harness {
    let mut h = Harness::with_config(real_config());
    for c in channels {
        h.subscribe(c);
    }
    h.connect_ready();
    for c in channels {
        subscribed(&mut h, c);
    }
    if let Some((id, sec)) = anchor {
        let now = h.elapsed().as_secs();
        if u64::from(sec) > now {
            h.advance(Duration::from_secs(u64::from(sec) - now));
        }
        for c in channels {
            h.frame(&message_new(c, id, sec));
        }
    }
    h
}

/// The first history request of the current catch-up of `ch`.
fn fetch_for(h: &mut Harness, ch: &str) -> tether_core::HistoryRequest {
    let reqs: Vec<_> = fetches(&h.take())
        .into_iter()
        .filter(|r| r.channel_id == ch)
        .collect();
    assert_eq!(reqs.len(), 1, "one read for {ch}: {reqs:?}");
    reqs[0].clone()
}

fn ids(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

// ----- 1. A transaction longer than the late margin -------------------------------------

/// X's transaction began at 17:00:05 (its `created_at`, Postgres `NOW()`) and committed at
/// 17:00:45 (an upload streamed inside the transaction); m40 was posted and delivered live
/// at 17:00:40; the link dropped at 17:00:42, so X's broadcast was missed. The history page
/// the catch-up reads holds X, a message the core never delivered, but it is 35 s older
/// than the anchor, past the 10 s late margin.
#[test]
fn a_transaction_longer_than_the_margin_is_on_the_page_but_not_delivered() {
    let mut h = live_real(&["c"], Some(("m1", 1)));
    h.advance(39 * S);
    h.frame(&message_new("c", "m40", 40));
    h.advance(2 * S);
    h.drop_link();
    h.reconnect(); // X committed and broadcast at 45, while the link was down
    subscribed(&mut h, "c");
    let r = fetch_for(&mut h, "c");
    h.answer_history(
        r.id,
        &page("c", &[("m40", 40), ("X", 5), ("m1", 1)], false),
    );
    h.drain();
    check_promise(&h, "c", &["X"]);
}

// ----- 2. A cursor deleted during the walk ----------------------------------------------

/// The walk reads [m8, m7, m6] (has_more) and asks `before=m6`; m6's author deletes it
/// meanwhile. A server that resolves the cursor with
/// `created_at < (SELECT created_at FROM messages WHERE id = $1)` finds no row, compares
/// with NULL and answers an empty page with `has_more: false`. m2..m5 were never read.
#[test]
fn a_cursor_deleted_mid_walk_yields_an_empty_last_page() {
    let mut cfg = real_config();
    cfg.catch_up.page_size = 3;
    let mut h = Harness::with_config(cfg);
    h.subscribe("c");
    h.connect_ready();
    subscribed(&mut h, "c");
    h.advance(S);
    h.frame(&message_new("c", "m1", 1));
    h.drop_link();
    h.reconnect(); // m2..m8 posted at 2..8 while down (reconnect waits >= 10 s)
    subscribed(&mut h, "c");
    let r = fetch_for(&mut h, "c");
    h.answer_history(
        r.id,
        &page("c", &[("m8", 8), ("m7", 7), ("m6", 6)], true),
    );
    let r2 = fetch_for(&mut h, "c");
    assert_eq!(r2.before.as_ref().map(|b| b.as_str()), Some("m6"));
    h.answer_history(r2.id, r#"{"items":[],"has_more":false}"#);
    h.drain();
    check_promise(&h, "c", &["m2", "m3", "m4", "m5", "m6", "m7", "m8"]);
}

// ----- 3. A server that ignores `before` ------------------------------------------------

/// A proxy cache keyed without the query string (or an old server) answers every page
/// request with the newest page. The walk must neither loop nor claim completion.
#[test]
fn a_server_that_ignores_before_neither_loops_nor_completes() {
    let mut cfg = real_config();
    cfg.catch_up.page_size = 3;
    let mut h = Harness::with_config(cfg);
    h.subscribe("c");
    h.connect_ready();
    subscribed(&mut h, "c");
    h.advance(S);
    h.frame(&message_new("c", "m1", 1));
    h.drop_link();
    h.reconnect();
    subscribed(&mut h, "c");
    let mut n = 0;
    loop {
        let reqs = fetches(&h.take());
        if reqs.is_empty() {
            h.advance(5 * S);
            if fetches(&h.log[h.log.len().saturating_sub(5)..]).is_empty()
                && !resynced(&h.log).is_empty()
            {
                break;
            }
            continue;
        }
        n += 1;
        assert!(n < 1000, "the walk loops on a server that ignores before");
        for r in reqs {
            h.answer_history(
                r.id,
                &page("c", &[("m9", 9), ("m8", 8), ("m7", 7)], true),
            );
        }
    }
    check_promise(&h, "c", &ids(2..=9).iter().map(String::as_str).collect::<Vec<_>>());
}

// ----- 4. A lying has_more: false --------------------------------------------------------

/// The envelope says `has_more: false` after the first page although m2..m5 exist (a
/// server computing `has_more` from a filtered count, a load balancer's stale replica).
/// Nothing on the page reaches the anchor m1 or anything older.
#[test]
fn has_more_false_that_lies_does_not_complete() {
    let mut cfg = real_config();
    cfg.catch_up.page_size = 3;
    let mut h = Harness::with_config(cfg);
    h.subscribe("c");
    h.connect_ready();
    subscribed(&mut h, "c");
    h.advance(S);
    h.frame(&message_new("c", "m1", 1));
    h.drop_link();
    h.reconnect();
    subscribed(&mut h, "c");
    let r = fetch_for(&mut h, "c");
    h.answer_history(
        r.id,
        &page("c", &[("m8", 8), ("m7", 7), ("m6", 6)], false),
    );
    h.drain();
    check_promise(&h, "c", &ids(2..=8).iter().map(String::as_str).collect::<Vec<_>>());
}

// ----- 5. A bare-array server that clamps `limit` ---------------------------------------

/// An older server answers bare arrays and clamps `limit` to 5 (its own max). The core
/// asked for 50, got 5, and a bare array gives no `has_more`: "fewer than asked" looks like
/// the end of the channel.
#[test]
fn a_bare_array_server_clamping_limit_does_not_complete() {
    let mut h = live_real(&["c"], Some(("m1", 1)));
    h.drop_link();
    h.reconnect(); // m2..m9 posted while down
    subscribed(&mut h, "c");
    let r = fetch_for(&mut h, "c");
    assert_eq!(r.limit, 50);
    let items: Vec<String> = (5..=9).rev().map(|i| message("c", &format!("m{i}"), i)).collect();
    h.answer_history(r.id, &format!("[{}]", items.join(",")));
    // any further page asked for gets the next 5 (before honoured)
    for _ in 0..5 {
        let more = fetches(&h.take());
        for q in more {
            let b: u32 = q.before.as_ref().unwrap().as_str()[1..].parse().unwrap();
            let items: Vec<String> = (b.saturating_sub(5).max(1)..b)
                .rev()
                .map(|i| message("c", &format!("m{i}"), i))
                .collect();
            h.answer_history(q.id, &format!("[{}]", items.join(",")));
        }
    }
    check_promise(&h, "c", &ids(2..=9).iter().map(String::as_str).collect::<Vec<_>>());
}
