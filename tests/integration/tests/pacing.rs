//! Issue 10 over real loopback sockets: the catch-up's REST reads are paced by the server's
//! rate limit (Kaiku's fixed windows, its headers and its 429s), and a drop before any read
//! costs no catch-up.

use std::collections::BTreeMap;
use std::time::Duration;

use tether_core::Event;
use tether_devserver::{Limit, ServerConfig};
use tether_integration::{World, messages, read_message_clock, until, until_live};

/// Waits for one `resynced` per channel; returns every event read, and asserts each was
/// complete.
async fn until_all_resynced(events: &mut tether_tokio::Events, n: usize) -> Vec<Event> {
    let mut done = 0;
    until(events, "every channel resynced", |e| {
        if let Event::Resynced {
            complete,
            channel_id,
            ..
        } = e
        {
            assert!(complete, "{channel_id} was not caught up completely");
            done += 1;
        }
        done == n
    })
    .await
}

/// Every message posted during the drop reached the app once, in order, per channel.
fn assert_each_once_in_order(seen: &[Event], posted: &[(String, String)]) {
    let got = messages(seen);
    let mut want: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (ch, id) in posted {
        want.entry(ch).or_default().push(id);
    }
    for (ch, ids) in want {
        let have: Vec<&str> = got
            .iter()
            .filter(|m| m.0 == ch)
            .map(|m| m.1.as_str())
            .collect();
        assert_eq!(
            have, ids,
            "channel {ch}: every missed message once, in order"
        );
    }
}

/// Drops every socket and posts `per_channel` messages on each channel meanwhile.
fn drop_and_post(w: &World, per_channel: usize) -> Vec<(String, String)> {
    assert!(w.server.faults().drop_all() >= 1, "a socket to drop");
    let mut posted = Vec::new();
    for i in 0..per_channel {
        for ch in &w.channels {
            let id = w.server.post(ch, "bob", &format!("gap {i}")).expect("post");
            posted.push((ch.clone(), id));
        }
    }
    posted
}

/// Windows the work needs: `reads` reads at `budget` per window.
fn windows(reads: u64, budget: u32) -> u64 {
    reads.div_ceil(u64::from(budget))
}

#[tokio::test]
async fn thirty_two_channels_under_a_small_budget_catch_up_paced_by_the_servers_headers() {
    let mut config = ServerConfig::default();
    config.rate_limits.write = Some(Limit::new(12, Duration::from_secs(2)));
    let w = World::start(config, 32).await;
    w.add_old_history(2);
    let (client, mut events) = w.client(w.client_config()).await;
    until_live(&mut events, 32).await;
    read_message_clock(&w.server, &w.channels[0], &mut events).await;
    assert_eq!(
        w.server.reads_total(),
        0,
        "the first connect reads no history"
    );

    let posted = drop_and_post(&w, 2);
    let seen = until_all_resynced(&mut events, 32).await;
    assert_each_once_in_order(&seen, &posted);

    let reads = w.server.reads_total();
    let refused = w.server.reads_rejected();
    assert!(reads >= 32, "one page per channel at least ({reads})");
    assert!(
        refused <= windows(reads, 12),
        "{refused} 429s for {reads} reads: more than one per window"
    );
    assert_eq!(
        w.server.read_pause_violations("alice"),
        vec![],
        "a read inside a Retry-After pause"
    );
    assert!(w.server.max_reads_in_flight("alice") <= 4);
    // The wait was visible to the app, and ended.
    let waits: Vec<Option<u64>> = seen
        .iter()
        .filter_map(|e| match e {
            Event::RateLimited { retry_in_ms, .. } => Some(*retry_in_ms),
            _ => None,
        })
        .collect();
    assert!(
        waits.first().is_some_and(Option::is_some),
        "no rate-limit wait was reported: {waits:?}"
    );
    assert_eq!(waits.last(), Some(&None), "the wait never ended: {waits:?}");
    let (stats, _) = client.stats().await.expect("stats");
    assert_eq!(stats.reads, reads);
    assert_eq!(stats.reads_paused_until, None);
}

#[tokio::test]
async fn without_headers_the_clients_mirror_of_the_budget_paces_the_reads() {
    let mut config = ServerConfig::default();
    config.rate_limits.write = Some(Limit::new(10, Duration::from_secs(2)));
    config.rate_limit_headers = false;
    let w = World::start(config, 30).await;
    w.add_old_history(2);
    let mut client_config = w.client_config();
    // The app knows its server's limit: the mirror matches it.
    client_config.core.pacing.budget = 10;
    client_config.core.pacing.window = Duration::from_secs(2);
    let (_client, mut events) = w.client(client_config).await;
    until_live(&mut events, 30).await;
    read_message_clock(&w.server, &w.channels[0], &mut events).await;

    let posted = drop_and_post(&w, 1);
    let seen = until_all_resynced(&mut events, 30).await;
    assert_each_once_in_order(&seen, &posted);

    let reads = w.server.reads_total();
    let refused = w.server.reads_rejected();
    assert!(
        refused <= windows(reads, 10),
        "{refused} 429s for {reads} reads: more than one per window"
    );
    assert_eq!(w.server.read_pause_violations("alice"), vec![]);
    assert!(w.server.max_reads_in_flight("alice") <= 4);
}

#[tokio::test]
async fn a_drop_before_any_read_on_a_slow_server_still_catches_up_every_channel() {
    // The second report: 20 channels, a server that answers each read slowly, a drop
    // right after subscribing, one message per channel posted during the drop.
    let mut config = ServerConfig::default();
    config.rest_latency = Duration::from_millis(1500);
    let w = World::start(config, 20).await;
    w.add_old_history(2);
    let (_client, mut events) = w.client(w.client_config()).await;
    until_live(&mut events, 20).await;
    read_message_clock(&w.server, &w.channels[0], &mut events).await;

    let posted = drop_and_post(&w, 1);
    let mut recovered = 0;
    let mut done = 0;
    let seen = until(&mut events, "every channel resynced", |e| {
        if let Event::Resynced {
            complete,
            recovered: r,
            ..
        } = e
        {
            assert!(complete, "a channel was not caught up completely");
            recovered += r;
            done += 1;
        }
        done == 20
    })
    .await;
    assert_eq!(recovered, 20, "one recovered message per channel");
    assert_each_once_in_order(&seen, &posted);
    assert!(w.server.max_reads_in_flight("alice") <= 4);
}

#[tokio::test]
async fn the_apps_own_reads_share_the_budget_with_the_catch_up() {
    let mut config = ServerConfig::default();
    config.rate_limits.write = Some(Limit::new(6, Duration::from_secs(2)));
    let w = World::start(config, 4).await;
    w.add_old_history(2);
    let (client, mut events) = w.client(w.client_config()).await;
    until_live(&mut events, 4).await;
    read_message_clock(&w.server, &w.channels[0], &mut events).await;
    let token = client
        .access_token()
        .await
        .expect("token")
        .expect("a token");

    // The app spends the whole window on its own reads, through the client's REST API.
    for _ in 0..6 {
        client
            .api()
            .messages(&token, &w.channels[0], None, 10)
            .await
            .expect("the app's read");
    }
    let posted = drop_and_post(&w, 1);
    let seen = until_all_resynced(&mut events, 4).await;
    assert_each_once_in_order(&seen, &posted);
    assert_eq!(
        w.server.reads_rejected(),
        0,
        "the catch-up raced the app's reads into the limiter"
    );
}

#[tokio::test]
async fn a_429_on_the_apps_read_pauses_the_catch_up_too() {
    let mut config = ServerConfig::default();
    // No headers: only the 429 tells the client anything.
    config.rate_limits.write = Some(Limit::new(3, Duration::from_secs(2)));
    config.rate_limit_headers = false;
    let w = World::start(config, 3).await;
    w.add_old_history(2);
    let (client, mut events) = w.client(w.client_config()).await;
    until_live(&mut events, 3).await;
    read_message_clock(&w.server, &w.channels[0], &mut events).await;
    let token = client
        .access_token()
        .await
        .expect("token")
        .expect("a token");
    let mut refused = false;
    for _ in 0..4 {
        if let Err(e) = client
            .api()
            .messages(&token, &w.channels[0], None, 10)
            .await
        {
            assert_eq!(e.status(), Some(429));
            refused = true;
        }
    }
    assert!(refused, "the app's fourth read is refused");
    let posted = drop_and_post(&w, 1);
    let seen = until_all_resynced(&mut events, 3).await;
    assert_each_once_in_order(&seen, &posted);
    assert_eq!(
        w.server.reads_rejected(),
        1,
        "the catch-up read inside the app's Retry-After pause"
    );
    assert_eq!(w.server.read_pause_violations("alice"), vec![]);
}
