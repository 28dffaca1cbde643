//! Issue 21: what the real Kaiku server does that a model of it easily leaves out, over real
//! loopback sockets against the dev server, which now does it too.
//!
//! - history shares the user's *write* budget with posting: a post right after a reconnect is
//!   never refused because of the catch-up, and the catch-up still completes every channel;
//! - a page's `has_more` lies when blocked authors are filtered out of it;
//! - an upload is broadcast late, with its attachment: the app gets the live copy as an update;
//! - `forbidden` on a database error, `message_error` for a subscribe, a `ready` that never
//!   comes, a socket that answers pings but hears no broadcast, a rate limiter that is down
//!   (503 without `Retry-After`);
//! - thread replies flow through, and are not what a catch-up covers.

use std::time::Duration;

use tether_core::{Event, ReconnectReason, ServerEventKind, Status};
use tether_devserver::{Limit, RateLimits, ServerConfig, SubscribeError, UploadBroadcast};
use tether_integration::{World, messages, next, read_message_clock, until, until_live};
use tether_tokio::{Client, Events};

/// The resynced events among `events`: `(channel, complete)`.
fn resynced(events: &[Event]) -> Vec<(String, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Resynced {
                channel_id,
                complete,
                ..
            } => Some((channel_id.to_string(), *complete)),
            _ => None,
        })
        .collect()
}

/// Reads events into `seen` until it holds a `resynced` for `channels` channels.
async fn until_resynced(events: &mut Events, seen: &mut Vec<Event>, channels: usize, what: &str) {
    while resynced(seen).len() < channels {
        seen.push(next(events, what).await);
    }
}

async fn token(client: &Client) -> tether_core::Secret {
    client.access_token().await.expect("task").expect("a token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_right_after_a_reconnect_is_never_refused_and_every_channel_completes() {
    // Kaiku's categories (history in the write budget, 30 a window, its header rounding), the
    // window shortened to 3 s so the test needs no minute.
    let mut config = ServerConfig::default();
    let mut limits = RateLimits::kaiku();
    limits.write = Some(Limit::new(30, Duration::from_secs(3)));
    config.rate_limits = limits;
    let w = World::start(config, 40).await;
    w.add_old_history(3);
    let mut cc = w.client_config();
    cc.core.pacing.window = Duration::from_secs(3);
    let (client, mut events) = w.client(cc).await;
    until_live(&mut events, 40).await;
    read_message_clock(&w.server, &w.channels[0], &mut events).await;
    // A fresh window for the catch-up.
    tokio::time::sleep(Duration::from_millis(3500)).await;

    w.server.faults().drop_all();
    for ch in &w.channels {
        w.server.post(ch, "bob", "missed").expect("post");
    }
    // Once the catch-up waits on the budget it has spent all it may: the app posts at once.
    let mut seen = until(&mut events, "the catch-up waiting on the budget", |e| {
        matches!(
            e,
            Event::RateLimited {
                retry_in_ms: Some(_),
                ..
            }
        )
    })
    .await;
    let t = token(&client).await;
    let posted = client
        .api()
        .post_message(&t, &w.channels[0], "right after the reconnect")
        .await;
    assert!(posted.is_ok(), "the app's post was refused: {posted:?}");

    until_resynced(&mut events, &mut seen, 40, "40 channels caught up").await;
    let done = resynced(&seen);
    assert!(
        done.iter().all(|(_, complete)| *complete),
        "every channel completes: {done:?}"
    );
    let (stats, _) = client.stats().await.expect("stats");
    assert!(
        stats.reads_rate_limited <= 1,
        "{} answers asked to wait (at most one, for a reset announced early)",
        stats.reads_rate_limited
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_says_it_is_the_last_is_not_believed_above_the_anchor() {
    let w = World::start(ServerConfig::default(), 1).await;
    w.server.create_user("carol", "password123").expect("carol");
    // Alice blocked bob: Kaiku filters his messages out of the `limit + 1` rows it read, and
    // computes `has_more` after the filter.
    assert!(w.server.block("alice", "bob"));
    let ch = w.channels[0].clone();
    let mut cc = w.client_config();
    cc.core.catch_up.page_size = 10;
    let (_client, mut events) = w.client(cc).await;
    until_live(&mut events, 1).await;
    let anchor = w.server.post(&ch, "carol", "anchor").expect("post");
    until(&mut events, "the anchor", |e| {
        messages(std::slice::from_ref(e))
            .iter()
            .any(|m| m.1 == anchor)
    })
    .await;

    w.server.faults().refuse_upgrades(503, None, None);
    w.server.faults().drop_all();
    let older = w.server.post(&ch, "carol", "older").expect("post");
    for i in 0..10 {
        w.server
            .post(&ch, "bob", &format!("blocked {i}"))
            .expect("post");
    }
    let newer = w.server.post(&ch, "carol", "newer").expect("post");
    w.server.faults().clear();

    let mut seen = Vec::new();
    until_resynced(&mut events, &mut seen, 1, "the catch-up").await;
    let got: Vec<String> = messages(&seen).into_iter().map(|(_, id)| id).collect();
    assert_eq!(got, [older, newer], "nothing lost behind the lying page");
    assert_eq!(resynced(&seen), [(ch, true)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_broadcast_after_its_catch_up_reaches_the_app_as_an_update() {
    let w = World::start(ServerConfig::default(), 1).await;
    let ch = w.channels[0].clone();
    let (_client, mut events) = w.client(w.client_config()).await;
    until_live(&mut events, 1).await;
    read_message_clock(&w.server, &ch, &mut events).await;

    w.server.faults().drop_all();
    // Stored at once without its file; broadcast with the attachment once the file is stored.
    let upload = w
        .server
        .post_upload(
            &ch,
            "bob",
            "a cat",
            "cat.png",
            UploadBroadcast::After(Duration::from_secs(2)),
        )
        .expect("upload");
    let mut seen = Vec::new();
    until_resynced(&mut events, &mut seen, 1, "the catch-up").await;
    let recovered: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            Event::Server(s) if s.is_recovered() => Some(s.json().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(recovered.len(), 1, "{seen:?}");
    assert!(recovered[0].contains(&upload) && !recovered[0].contains("cat.png"));

    let update = until(
        &mut events,
        "the upload's broadcast",
        |e| matches!(e, Event::Server(s) if s.is_update()),
    )
    .await;
    let Some(Event::Server(update)) = update.last() else {
        unreachable!()
    };
    assert!(update.json().as_str().contains(&upload) && update.json().as_str().contains("cat.png"));
    assert!(matches!(
        update.kind(),
        ServerEventKind::MessageUpdate { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_from_a_database_error_does_not_drop_the_channel() {
    let w = World::start(ServerConfig::default(), 1).await;
    let ch = w.channels[0].clone();
    let mut cc = w.client_config();
    cc.core.refusal_confirm_delay = Duration::from_millis(300);
    w.server
        .faults()
        .subscribe_errors(SubscribeError::Forbidden, Some(1));
    let (_client, mut events) = w.client(cc).await;
    let seen = until_live(&mut events, 1).await;
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::SubscriptionUncertain { .. })),
        "{seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Event::SubscriptionRejected { .. }))
    );
    read_message_clock(&w.server, &ch, &mut events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_said_twice_drops_the_channel() {
    let w = World::start(ServerConfig::default(), 1).await;
    let mut cc = w.client_config();
    cc.core.refusal_confirm_delay = Duration::from_millis(300);
    w.server
        .faults()
        .subscribe_errors(SubscribeError::Forbidden, None);
    let (client, mut events) = w.client(cc).await;
    until(
        &mut events,
        "the rejection",
        |e| matches!(e, Event::SubscriptionRejected { code, .. } if code.as_str() == "forbidden"),
    )
    .await;
    let (stats, _) = client.stats().await.expect("stats");
    assert_eq!(stats.resubscribes, 1, "asked once more, then believed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_answered_by_a_message_error_is_sent_again() {
    let w = World::start(ServerConfig::default(), 2).await;
    let mut cc = w.client_config();
    cc.core.subscribe_retry = Duration::from_millis(200);
    w.server
        .faults()
        .subscribe_errors(SubscribeError::MessageError, Some(1));
    let (client, mut events) = w.client(cc).await;
    until_live(&mut events, 2).await;
    for ch in &w.channels {
        read_message_clock(&w.server, ch, &mut events).await;
    }
    let (stats, _) = client.stats().await.expect("stats");
    assert_eq!(stats.resubscribes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_upgrades_and_never_says_ready_is_reported_as_such() {
    let w = World::start(ServerConfig::default(), 1).await;
    let mut cc = w.client_config();
    cc.core.handshake_timeout = Duration::from_millis(800);
    w.server.faults().withhold_ready(true);
    let (_client, mut events) = w.client(cc).await;
    until(&mut events, "ready_timeout", |e| {
        matches!(
            e,
            Event::Status(Status::Reconnecting {
                reason: ReconnectReason::ReadyTimeout,
                ..
            })
        )
    })
    .await;
    w.server.faults().withhold_ready(false);
    until_live(&mut events, 1).await;
    assert!(w.server.upgrades() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_hears_no_broadcast_is_found_by_the_echo_of_a_post() {
    let w = World::start(ServerConfig::default(), 1).await;
    let ch = w.channels[0].clone();
    let mut cc = w.client_config();
    cc.core.echo_timeout = Duration::from_secs(1);
    let (client, mut events) = w.client(cc).await;
    until_live(&mut events, 1).await;
    read_message_clock(&w.server, &ch, &mut events).await;

    // Kaiku's per-socket event loop ended: pings are still answered, broadcasts are not sent.
    assert_eq!(w.server.faults().deafen(), 1);
    let missed = w.server.post(&ch, "bob", "unheard").expect("post");
    let t = token(&client).await;
    let mine = client
        .api()
        .post_message(&t, &ch, "is anyone there")
        .await
        .expect("post");
    let mine = mine["id"].as_str().expect("id").to_owned();
    let mut seen = until(&mut events, "no_echo", |e| {
        matches!(
            e,
            Event::Status(Status::Reconnecting {
                reason: ReconnectReason::NoEcho,
                ..
            })
        )
    })
    .await;
    until_resynced(&mut events, &mut seen, 1, "the catch-up").await;
    let got: Vec<String> = messages(&seen).into_iter().map(|(_, id)| id).collect();
    assert_eq!(got, [missed, mine]);
    assert_eq!(resynced(&seen), [(ch, true)]);
    let (stats, _) = client.stats().await.expect("stats");
    assert_eq!(stats.missing_echoes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limiter_that_is_down_pauses_the_catch_up_without_a_storm() {
    let mut config = ServerConfig::default();
    config.rate_limits = RateLimits::kaiku();
    let w = World::start(config, 4).await;
    w.add_old_history(3);
    let (client, mut events) = w.client(w.client_config()).await;
    until_live(&mut events, 4).await;
    read_message_clock(&w.server, &w.channels[0], &mut events).await;

    // Redis is down: every limited route answers 503 with no `Retry-After`, for 3 s.
    w.server.faults().redis_down(true);
    w.server.faults().drop_all();
    for ch in &w.channels {
        w.server.post(ch, "bob", "missed").expect("post");
    }
    until(&mut events, "the catch-up paused", |e| {
        matches!(
            e,
            Event::RateLimited {
                retry_in_ms: Some(_),
                ..
            }
        )
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    w.server.faults().redis_down(false);
    let mut seen = Vec::new();
    until_resynced(&mut events, &mut seen, 4, "4 channels caught up").await;
    assert!(resynced(&seen).iter().all(|(_, complete)| *complete));
    let (stats, _) = client.stats().await.expect("stats");
    // The reads in flight when it went down (at most 4), then one per growing pause.
    assert!(
        (1..=5).contains(&stats.reads_rate_limited),
        "{} refusals",
        stats.reads_rate_limited
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_replies_reach_the_app_live() {
    let w = World::start(ServerConfig::default(), 1).await;
    let ch = w.channels[0].clone();
    let (_client, mut events) = w.client(w.client_config()).await;
    until_live(&mut events, 1).await;
    let parent = w.server.post(&ch, "bob", "a question").expect("post");
    let reply = w
        .server
        .post_thread_reply(&ch, &parent, "bob", "an answer")
        .expect("reply");
    until(&mut events, "thread_reply_new", |e| {
        matches!(e, Event::Server(s) if s.event_type().as_str() == "thread_reply_new" && s.json().as_str().contains(&reply))
    })
    .await;
}
