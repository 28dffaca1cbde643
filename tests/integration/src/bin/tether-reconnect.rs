//! Reconnect benchmark (issue #6), against the dev server over loopback:
//!
//! 1. **Back to live**: the server restarts (its listener closes, every socket ends); from the
//!    moment it accepts again to `connected` with every channel re-subscribed. Measured twice:
//!    with the app asking to reconnect now (`Client::connect`, the protocol's own cost: TCP,
//!    upgrade, `ready`, one `subscribe` per channel) and with the default backoff (what an app
//!    that does nothing sees: the jittered first retry, drawn in [0.5 s, 1 s], dominates).
//! 2. **Catch-up of 500 missed messages**: 500 messages are posted while the client cannot
//!    connect; from `connected` to `resynced { recovered: 500, complete: true }` (ten history
//!    pages of 50, walked one after the other).
//!
//! ```text
//! cargo run --release -p tether-integration --bin tether-reconnect -- --rounds 20
//! ```
//!
//! Prints one JSON line; exits 1 when a round does not come back or a catch-up is incomplete.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use clap::Parser;
use tether_core::{Credentials, Event, ServerEventKind, Status};
use tether_devserver::{DevServer, ServerConfig};
use tether_tokio::{Client, ClientConfig, Events};

const CHANNELS: usize = 10;
const MISSED: usize = 500;

fn fail(msg: &str) -> ! {
    eprintln!("tether-reconnect: {msg}");
    std::process::exit(1)
}

/// Reconnect benchmark against the dev server: time back to live after a restart (reconnect
/// now, and the default backoff) and time to catch up 500 missed messages.
#[derive(Debug, Parser)]
#[command(args_override_self = true)]
struct Args {
    /// Server restarts measured per way of coming back (reconnect now, default backoff); the
    /// catch-up of 500 is measured this many times, at most 5.
    #[arg(long, value_name = "N", default_value_t = 20)]
    #[arg(value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    rounds: usize,
}

/// Waits for `connected` and `n` `subscribed`; returns every event read.
async fn until_live(events: &mut Events, n: usize) -> Vec<Event> {
    let mut seen = Vec::new();
    let (mut connected, mut subscribed) = (false, 0);
    while !(connected && subscribed >= n) {
        let e = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .unwrap_or_else(|_| fail("not live within 30 s"))
            .unwrap_or_else(|| fail("event stream ended"));
        match &e {
            Event::Status(Status::Connected { .. }) => connected = true,
            Event::Server(s) if matches!(s.kind(), ServerEventKind::Subscribed { .. }) => {
                subscribed += 1
            }
            _ => {}
        }
        seen.push(e);
    }
    seen
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn summary(mut v: Vec<Duration>) -> serde_json::Value {
    v.sort();
    serde_json::json!({
        "p50_ms": percentile(&v, 0.5),
        "p99_ms": percentile(&v, 0.99),
        "max_ms": percentile(&v, 1.0),
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = Args::parse().rounds;
    let mut server = DevServer::start(([127, 0, 0, 1], 0).into(), ServerConfig::default())
        .await
        .unwrap_or_else(|e| fail(&format!("dev server: {e}")));
    let tokens = server
        .create_user("alice", "password123")
        .unwrap_or_else(|| fail("user"));
    server
        .create_user("bob", "password123")
        .unwrap_or_else(|| fail("user"));
    let creds = Credentials::from_token_response(tokens.to_string().as_bytes())
        .unwrap_or_else(|e| fail(&format!("tokens: {e}")));
    let channels: Vec<String> = (0..CHANNELS)
        .map(|i| server.create_channel(&format!("c{i}")))
        .collect();
    let url = server.url();
    let client_for = |chs: &[String]| {
        let mut cfg = ClientConfig::new(&url).unwrap_or_else(|e| fail(&e.to_string()));
        // Rounds follow each other quickly: count each restart as the first failure after a
        // stable connection (the default needs 10 s up), so every round sees the default
        // first retry, drawn in [0.5 s, 1 s].
        cfg.core.backoff.reset_after = Duration::from_millis(300);
        // The gap is 500 messages, the default cap; a catch-up may also deliver what was posted
        // within its margins before the subscription (D68): leave room for those.
        cfg.core.catch_up.max_messages = 1_000;
        // This dev server limits nothing and sends no budget headers: the mirror of a limiting
        // server's default (30 a minute, D74) would pace the rounds' reads for nothing.
        cfg.core.pacing.budget = 1_000_000;
        let (client, events) =
            Client::spawn(cfg, creds.clone()).unwrap_or_else(|e| fail(&e.to_string()));
        (client, events, chs.to_vec())
    };

    // 1. Back to live after a restart, with "reconnect now" and with the default backoff.
    let mut now_times = Vec::new();
    let mut backoff_times = Vec::new();
    let (client, mut events, chs) = client_for(&channels);
    for ch in &chs {
        let _ = client.subscribe(ch).await;
    }
    let _ = client.connect();
    until_live(&mut events, CHANNELS).await;
    for round in 0..rounds * 2 {
        let reconnect_now = round % 2 == 0;
        server
            .restart(Duration::from_millis(100))
            .await
            .unwrap_or_else(|e| fail(&format!("restart: {e}")));
        let back = Instant::now();
        if reconnect_now {
            let _ = client.connect();
        }
        until_live(&mut events, CHANNELS).await;
        let took = back.elapsed();
        if reconnect_now {
            now_times.push(took);
        } else {
            backoff_times.push(took);
        }
        // Let the catch-ups of this round finish, and the connection count as stable.
        tokio::time::sleep(Duration::from_millis(400)).await;
        while events.try_recv().is_some() {}
    }
    drop(client);

    // 2. Catch-up of 500 messages missed while the client could not connect.
    let mut catch_up_times = Vec::new();
    let mut catch_up_total = Vec::new();
    let (client, mut events, chs) = client_for(&channels[..1]);
    let ch = chs[0].clone();
    let _ = client.subscribe(&ch).await;
    let _ = client.connect();
    until_live(&mut events, 1).await;
    // Give the channel an anchor the walk will meet.
    server.post(&ch, "bob", "anchor");
    tokio::time::sleep(Duration::from_millis(200)).await;
    while events.try_recv().is_some() {}
    for _ in 0..rounds.clamp(1, 5) {
        server.faults().refuse_upgrades(503, None, None);
        server.faults().drop_all();
        for i in 0..MISSED {
            server.post(&ch, "bob", &format!("missed {i}"));
        }
        server.faults().clear();
        let started = Instant::now();
        let _ = client.connect();
        let mut connected_at = None;
        loop {
            if started.elapsed() > Duration::from_secs(60) {
                fail("no resynced within 60 s");
            }
            // An attempt refused just before the faults cleared puts the client back in its
            // backoff: ask again until it is connected.
            let Ok(e) = tokio::time::timeout(Duration::from_millis(50), events.recv()).await else {
                if connected_at.is_none() {
                    let _ = client.connect();
                }
                continue;
            };
            let e = e.unwrap_or_else(|| fail("event stream ended"));
            match e {
                Event::Status(Status::Connected { .. }) => connected_at = Some(Instant::now()),
                Event::Resynced {
                    recovered,
                    complete,
                    ..
                } => {
                    if !complete || recovered != MISSED {
                        fail(&format!(
                            "catch-up recovered {recovered} of {MISSED} (complete: {complete})"
                        ));
                    }
                    let done = Instant::now();
                    catch_up_times.push(done - connected_at.unwrap_or(started));
                    catch_up_total.push(done - started);
                    break;
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        while events.try_recv().is_some() {}
    }

    println!(
        "{}",
        serde_json::json!({
            "rounds": rounds,
            "channels": CHANNELS,
            "server_back_to_live_reconnect_now": summary(now_times),
            "server_back_to_live_default_backoff": summary(backoff_times),
            "catch_up_500_from_connected": summary(catch_up_times),
            "catch_up_500_from_server_back": summary(catch_up_total),
        })
    );
}
