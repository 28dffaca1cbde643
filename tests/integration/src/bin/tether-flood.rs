//! Bounded memory under a flood (DESIGN 3.6): the app stops reading while the server pushes
//! message events; the client's memory must stay bounded (bounded delivery queue, then TCP
//! backpressure), and once the app reads again every message must arrive, exactly once, in
//! order, on the same connection.
//!
//! The server runs in a child process (this binary with `--serve`), so the resident memory
//! measured here is the client's alone.
//!
//! ```text
//! cargo run --release -p tether-integration --bin tether-flood -- --messages 1000000 --pause-secs 60
//! ```
//!
//! Prints one JSON report line; exits 1 when a message is missing, duplicated or out of order,
//! when the link dropped, or when peak resident memory went over `--max-rss-mib` (default 64).
//!
//! `--v2-batch N` floods with protocol v2 batches instead: an in-process raw v2 MessagePack
//! server writes `--messages` events in frames of N (at most 1,024, `MAX_BATCH`), and the
//! report gives the peak of the app's queue (`peak_queued_events`) against its capacity; the
//! run fails when the queue passed its bound by more than one frame's batch (DESIGN 3.6).
//! Resident memory then counts the server's frames too, so it is reported, not checked.
//!
//! ```text
//! cargo run --release -p tether-integration --bin tether-flood -- --v2-batch 1024 --messages 1048576
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use clap::Parser;
use tether_core::{Credentials, Event, ServerEventKind, Status};
use tether_devserver::{DevServer, ServerConfig};
use tether_integration::{ServerChild, rss_kib};
use tether_tokio::{Client, ClientConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Bounded memory under a flood: the app stops reading while the server pushes messages;
/// fails when one is lost, duplicated or out of order, or memory goes over the limit.
#[derive(Debug, Parser)]
#[command(args_override_self = true)]
struct Options {
    /// Messages the server pushes while the app is not reading (at least 1).
    #[arg(long, default_value_t = 50_000)]
    messages: u64,
    /// Seconds the app stops reading.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pause_secs: u64,
    /// Peak resident memory allowed, in MiB; above it the run fails.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    max_rss_mib: u64,
    /// Flood with v2 MessagePack batches of this many events from a raw in-process server,
    /// and report the peak of the app's queue (at most 1024).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    v2_batch: Option<u64>,
    /// Run as the dev server child (started by this program itself).
    #[arg(long, hide = true)]
    serve: bool,
}

fn fail(msg: &str) -> ! {
    eprintln!("tether-flood: {msg}");
    std::process::exit(1)
}

/// The child: a dev server that floods on command (`flood N` on stdin) until stdin closes.
async fn serve() {
    let server = DevServer::start(([127, 0, 0, 1], 0).into(), ServerConfig::default())
        .await
        .unwrap_or_else(|e| fail(&format!("server: {e}")));
    let channel = server.create_channel("flood");
    let tokens = server
        .create_user("reader", "password123")
        .unwrap_or_else(|| fail("user"));
    println!(
        "{}",
        serde_json::json!({"url": server.url(), "channel": channel, "tokens": tokens})
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(n) = line
            .strip_prefix("flood ")
            .and_then(|n| n.trim().parse().ok())
        {
            server.faults().flood(&channel, n);
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut o = Options::parse();
    if o.serve {
        serve().await;
        return;
    }
    o.messages = o.messages.max(1);
    if let Some(batch) = o.v2_batch {
        v2_flood(&o, batch).await;
        return;
    }
    let pause = Duration::from_secs(o.pause_secs);
    let ServerChild {
        mut child,
        stdin: mut child_in,
        lines: _,
        hello: info,
    } = ServerChild::spawn(&[]).await.unwrap_or_else(|e| fail(&e));
    let url = info["url"].as_str().unwrap_or_default().to_owned();
    let channel = info["channel"].as_str().unwrap_or_default().to_owned();
    let creds = Credentials::from_token_response(info["tokens"].to_string().as_bytes())
        .unwrap_or_else(|e| fail(&format!("tokens: {e}")));

    let mut cfg = ClientConfig::new(&url).unwrap_or_else(|e| fail(&e.to_string()));
    // Short heartbeats: the pause must not look like a dead link even when pings are due.
    cfg.core.heartbeat.interval = Duration::from_secs(2);
    cfg.core.heartbeat.timeout = Duration::from_secs(2);
    let (client, mut events) = Client::spawn(cfg, creds).unwrap_or_else(|e| fail(&e.to_string()));
    let _ = client.subscribe(&channel).await;
    let _ = client.connect();
    // Wait until subscribed (and the anchor probe is answered).
    let live_by = Instant::now() + Duration::from_secs(20);
    loop {
        let e = tokio::time::timeout_at(live_by.into(), events.recv())
            .await
            .unwrap_or_else(|_| fail("never subscribed"))
            .unwrap_or_else(|| fail("event stream ended"));
        if matches!(&e, Event::Server(s) if matches!(s.kind(), ServerEventKind::Subscribed { .. }))
        {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = rss_kib("VmRSS:");

    // The app stops reading; the server floods.
    let _ = child_in
        .write_all(format!("flood {}\n", o.messages).as_bytes())
        .await;
    let _ = child_in.flush().await;
    let pause_until = Instant::now() + pause;
    let mut peak = baseline;
    while Instant::now() < pause_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(rss_kib("VmRSS:"));
    }

    // The app reads again: everything must come, once, in order, on the same session.
    let started = Instant::now();
    let mut next = 0u64;
    let mut dropped = false;
    while next < o.messages {
        let e = tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .unwrap_or_else(|_| fail(&format!("stalled after {next} of {} messages", o.messages)))
            .unwrap_or_else(|| fail("event stream ended"));
        match &e {
            Event::Server(s) => {
                if let ServerEventKind::MessageNew { .. } = s.kind() {
                    let v: serde_json::Value =
                        serde_json::from_str(s.json().as_str()).unwrap_or_default();
                    let content = v["message"]["content"].as_str().unwrap_or_default();
                    let n: u64 = content
                        .strip_prefix("flood ")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(u64::MAX);
                    if n != next {
                        fail(&format!("expected message {next}, got `{content}`"));
                    }
                    next += 1;
                }
            }
            Event::Status(Status::Reconnecting { reason, .. }) => {
                dropped = true;
                eprintln!("tether-flood: the link dropped ({reason:?})");
            }
            _ => {}
        }
        if next.is_multiple_of(1024) {
            peak = peak.max(rss_kib("VmRSS:"));
        }
    }
    let drain = started.elapsed();
    peak = peak.max(rss_kib("VmRSS:"));
    let report = serde_json::json!({
        "messages": o.messages,
        "pause_secs": o.pause_secs,
        "delivered_in_order": next,
        "link_dropped": dropped,
        "baseline_rss_kib": baseline,
        "peak_rss_kib": peak,
        "drain_secs": drain.as_secs_f64(),
        "events_per_sec_after_resume": o.messages as f64 / drain.as_secs_f64().max(1e-9),
    });
    println!("{report}");
    drop(child_in);
    let _ = child.kill().await;
    if dropped {
        fail("the connection dropped while the app was not reading");
    }
    if peak > o.max_rss_mib * 1024 {
        fail(&format!(
            "peak resident memory {} KiB over {} MiB",
            peak, o.max_rss_mib
        ));
    }
}

/// `--v2-batch`: the app stops reading while a raw v2 server writes `messages` events in
/// batches of `batch`; the app's queue must stay within its capacity plus one batch.
async fn v2_flood(o: &Options, batch: u64) {
    use tether_core::wire::{Encoding, V2_MSGPACK};
    use tether_integration::raw::{msgpack_flood, upgrade_server_with};
    let batches = o.messages.div_ceil(batch);
    let total = batches * batch;
    let frames = msgpack_flood(batches as usize, batch as usize);
    let url = upgrade_server_with(Some(V2_MSGPACK), None, frames).await;
    let mut cfg = ClientConfig::new(&url).unwrap_or_else(|e| fail(&e.to_string()));
    cfg.core.v2 = vec![Encoding::Msgpack];
    // The raw server never answers a ping: no dead-link verdict while the app reads again.
    cfg.core.heartbeat.interval = Duration::from_secs(3600);
    let capacity = cfg.event_capacity;
    let baseline = rss_kib("VmRSS:");
    let (client, mut events) =
        Client::spawn(cfg, Credentials::new("t.o.k")).unwrap_or_else(|e| fail(&e.to_string()));
    let _ = client.connect();

    // The app does not read: sample its queue (it only grows while nobody reads).
    let pause_until = Instant::now() + Duration::from_secs(o.pause_secs);
    let (mut peak_queued, mut peak_rss) = (0, baseline);
    while Instant::now() < pause_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
        peak_queued = peak_queued.max(events.queued());
        peak_rss = peak_rss.max(rss_kib("VmRSS:"));
    }

    let started = Instant::now();
    let mut next = 0u64;
    let mut dropped = false;
    while next < total {
        let e = tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .unwrap_or_else(|_| fail(&format!("stalled after {next} of {total} events")))
            .unwrap_or_else(|| fail("event stream ended"));
        match &e {
            Event::Server(s) if s.event_type().as_str() == "flood" => {
                let v: serde_json::Value =
                    serde_json::from_str(s.json().as_str()).unwrap_or_default();
                if v["n"].as_u64() != Some(next) {
                    fail(&format!("expected event {next}, got {}", s.json().as_str()));
                }
                next += 1;
            }
            Event::Status(Status::Reconnecting { reason, .. }) => {
                dropped = true;
                eprintln!("tether-flood: the link dropped ({reason:?})");
            }
            _ => {}
        }
    }
    let drain = started.elapsed();
    let bound = capacity as u64 + batch;
    let report = serde_json::json!({
        "mode": "v2-batch",
        "events": total,
        "batch": batch,
        "pause_secs": o.pause_secs,
        "event_capacity": capacity,
        "peak_queued_events": peak_queued,
        "bound_plus_one_batch": bound,
        "delivered_in_order": next,
        "link_dropped": dropped,
        "baseline_rss_kib": baseline,
        "peak_rss_kib": peak_rss,
        "drain_secs": drain.as_secs_f64(),
        "events_per_sec_after_resume": total as f64 / drain.as_secs_f64().max(1e-9),
    });
    println!("{report}");
    if dropped {
        fail("the connection dropped while the app was not reading");
    }
    if peak_queued as u64 > bound {
        fail(&format!(
            "{peak_queued} events queued: over capacity {capacity} by more than one batch"
        ));
    }
}
