//! "The network may have changed" through the tokio driver, over real loopback sockets:
//! `Client::network_changed` probes a live link at once and skips a backoff wait.

use std::time::{Duration, Instant};

use tether_core::{Event, ReconnectReason, Status};
use tether_devserver::ServerConfig;
use tether_integration::*;

#[tokio::test]
async fn network_changed_finds_a_silently_dead_link_within_the_probe_timeout() {
    let w = World::start(ServerConfig::default(), 0).await;
    let mut config = w.client_config();
    // The next heartbeat is two minutes out: only the probe can find the dead link in time.
    config.core.heartbeat.interval = Duration::from_secs(120);
    let (client, mut events) = w.client(config).await;
    until_live(&mut events, 0).await;
    assert_eq!(w.server.faults().stall(false), 1);
    let asked = Instant::now();
    client.network_changed().expect("command");
    until(&mut events, "reconnecting", |e| {
        matches!(
            e,
            Event::Status(Status::Reconnecting {
                reason: ReconnectReason::HeartbeatTimeout,
                ..
            })
        )
    })
    .await;
    let found = asked.elapsed();
    assert!(
        found >= Duration::from_millis(4900) && found < Duration::from_secs(7),
        "the probe's 5 s deadline found the link dead after {found:?}"
    );
    until(&mut events, "connected again", |e| {
        matches!(e, Event::Status(Status::Connected { .. }))
    })
    .await;
    assert_eq!(client.stats().await.expect("stats").0.wake_probes, 1);
}

#[tokio::test]
async fn network_changed_skips_a_long_backoff_wait() {
    let w = World::start(ServerConfig::default(), 0).await;
    let mut config = w.client_config();
    config.core.backoff.base = Duration::from_secs(1);
    config.core.backoff.max = Duration::from_secs(30);
    let (client, mut events) = w.client(config).await;
    until_live(&mut events, 0).await;
    // Refuse every upgrade until the client waits at least 4 s for its next attempt.
    w.server.faults().refuse_upgrades(503, None, None);
    assert_eq!(w.server.faults().drop_all(), 1);
    let mut wait = Duration::ZERO;
    until(&mut events, "a long backoff", |e| {
        if let Event::Status(Status::Reconnecting { retry_in_ms, .. }) = e {
            wait = Duration::from_millis(*retry_in_ms);
        }
        wait >= Duration::from_secs(4)
    })
    .await;
    let waiting_since = Instant::now();
    w.server.faults().clear();
    client.network_changed().expect("command");
    until(&mut events, "connected", |e| {
        matches!(e, Event::Status(Status::Connected { .. }))
    })
    .await;
    let took = waiting_since.elapsed();
    assert!(
        took < Duration::from_secs(2) && took < wait / 2,
        "connected {took:?} after the network change, with {wait:?} of backoff left"
    );
}
