//! Chaos soak: many tokio clients against the dev server while a seeded fault schedule drops
//! sockets, stalls links, refuses upgrades, expires tokens and restarts the server, and
//! messages flow in many channels. At the end every client must hold every message of every
//! channel it wanted, exactly once and in order, unless it was told to reload the channel
//! (`resynced { complete: false }`).
//!
//! ```text
//! cargo run --release -p tether-integration --bin tether-soak -- \
//!     --clients 100 --channels 20 --secs 600 --seed 1
//! ```
//!
//! Prints one JSON report line on stdout; exits 1 on any loss, duplicate or reordering.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tether_core::{Credentials, Event, ServerEventKind, Status};
use tether_devserver::{DevServer, ServerConfig};
use tether_integration::rss_kib;
use tether_tokio::{Client, ClientConfig, Events};
use tokio::sync::Mutex;

/// Chaos soak: many tokio clients against the dev server under a seeded fault schedule;
/// fails on any message lost, duplicated or out of order.
#[derive(Debug, Parser)]
#[command(args_override_self = true)]
struct Options {
    /// Clients; each subscribes to a seeded third of the channels, never to none.
    #[arg(long, default_value_t = 20)]
    #[arg(value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    clients: usize,
    /// Channels messages are posted to.
    #[arg(long, default_value_t = 5)]
    #[arg(value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    channels: usize,
    /// How long faults and messages go on, in seconds.
    #[arg(long, default_value_t = 45)]
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    secs: u64,
    /// Seed of the fault schedule and of every client's jitter: the same seed, the same faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Messages posted per second, across all channels (at least 1).
    #[arg(long, default_value_t = 40)]
    rate: u64,
    /// Fault kinds to draw from, comma-separated (default: all): 0 drop, 1 stall, 2 refuse 503,
    /// 3 refuse 429, 4 expire tokens, 5 restart.
    #[arg(long, value_name = "K,K,...", value_delimiter = ',', value_parser = trimmed_kind)]
    faults: Vec<u64>,
    /// The dev server's delay between a subscription taking effect and its `subscribed`
    /// reply, in milliseconds: messages broadcast meanwhile overtake it.
    #[arg(long, value_name = "MS", default_value_t = 20)]
    subscribed_delay_ms: u64,
}

/// A fault kind (0 to 5) in a comma-separated list, which may carry spaces (`--faults "0, 5"`).
/// Any other number is refused: a list of those alone would hang the fault draw.
fn trimmed_kind(k: &str) -> Result<u64, String> {
    match k.trim().parse() {
        Ok(n) if n <= 5 => Ok(n),
        _ => Err(format!("`{k}` is not a fault kind (0 to 5)")),
    }
}

fn options() -> Options {
    let mut o = Options::parse();
    o.rate = o.rate.max(1);
    o
}

/// What one client saw of one channel.
#[derive(Debug, Default)]
struct Seen {
    /// Local instant of the first `subscribed`: messages created after it are required.
    since: Option<Instant>,
    /// Message ids in delivery order (resolved to creation indexes at the end: a broadcast
    /// can reach a client before the poster has written the id down).
    delivered: Vec<String>,
    /// Instants of `resynced { complete: false }`.
    reloads: Vec<Instant>,
}

#[derive(Debug, Default)]
struct Tally {
    channels: BTreeMap<String, Seen>,
    /// What happened to this client, for the report of a loss: (instant, what).
    log: Vec<(Instant, String)>,
    reconnecting: u64,
    failed: u64,
}

/// Message id -> (channel, creation index, local creation instant).
type Ledger = Arc<std::sync::Mutex<BTreeMap<String, (String, u64, Instant)>>>;

/// Reads one client's events into its tally. Like a real app, it logs in again when the
/// connection gives up (`Failed`): a refresh token can be spent by a refresh whose answer was
/// lost to a fault, and only a new login helps then.
async fn collect(
    mut events: Events,
    tally: Arc<std::sync::Mutex<Tally>>,
    client: Client,
    username: String,
) {
    while let Some(e) = events.recv().await {
        let mut t = tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &e {
            Event::Server(s) => match s.kind() {
                ServerEventKind::Subscribed { channel_id } => {
                    t.log
                        .push((Instant::now(), format!("subscribed {channel_id}")));
                    let seen = t.channels.entry(channel_id.to_string()).or_default();
                    seen.since.get_or_insert_with(Instant::now);
                }
                ServerEventKind::MessageNew {
                    channel_id,
                    message,
                } => {
                    t.log.push((
                        Instant::now(),
                        format!("message {channel_id} {}", message.id),
                    ));
                    t.channels
                        .entry(channel_id.to_string())
                        .or_default()
                        .delivered
                        .push(message.id.to_string());
                }
                _ => {}
            },
            Event::Resynced {
                channel_id,
                complete,
                recovered,
            } => {
                t.log.push((
                    Instant::now(),
                    format!("resynced {channel_id} recovered {recovered} complete {complete}"),
                ));
                if *complete {
                    continue;
                }
                t.channels
                    .entry(channel_id.to_string())
                    .or_default()
                    .reloads
                    .push(Instant::now());
            }
            Event::Status(Status::Reconnecting { .. }) => {
                t.log.push((Instant::now(), "reconnecting".into()));
                t.reconnecting += 1;
            }
            Event::Status(s) if !matches!(s, Status::Failed { .. }) => {
                t.log.push((Instant::now(), s.name().to_string()));
            }
            Event::Status(Status::Failed { .. }) => {
                t.log.push((Instant::now(), "failed".into()));
                t.failed += 1;
                let (client, username) = (client.clone(), username.clone());
                tokio::spawn(async move {
                    let password = tether_core::Secret::new("password123");
                    for _ in 0..20 {
                        if let Ok(creds) = client.api().login(&username, &password).await {
                            let _ = client.set_credentials(tether_tokio::with_jwt_expiry(creds));
                            let _ = client.connect();
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                });
            }
            _ => {}
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = options();
    let mut config = ServerConfig::default();
    config.subscribed_delay = Duration::from_millis(o.subscribed_delay_ms);
    let server = DevServer::start(([127, 0, 0, 1], 0).into(), config)
        .await
        .unwrap_or_else(|e| {
            eprintln!("tether-soak: cannot start the dev server: {e}");
            std::process::exit(1);
        });
    let url = server.url();
    let channels: Vec<String> = (0..o.channels)
        .map(|i| server.create_channel(&format!("c{i}")))
        .collect();
    server.create_user("poster", "password123");
    let ledger: Ledger = Arc::default();
    let mut rng = fastrand::Rng::with_seed(o.seed);

    // Clients: each wants a random third of the channels (at least one).
    let mut clients = Vec::new();
    let mut tallies = Vec::new();
    for i in 0..o.clients {
        let name = format!("user{i}");
        let Some(tokens) = server.create_user(&name, "password123") else {
            continue;
        };
        let Ok(creds) = Credentials::from_token_response(tokens.to_string().as_bytes()) else {
            continue;
        };
        let mut cfg = ClientConfig::new(&url).unwrap_or_else(|e| panic!("config: {e}"));
        cfg.core.seed = o.seed.wrapping_mul(1000).wrapping_add(i as u64);
        cfg.core.heartbeat.interval = Duration::from_secs(2);
        cfg.core.heartbeat.timeout = Duration::from_secs(2);
        cfg.core.backoff.max = Duration::from_secs(4);
        // This dev server limits nothing and sends no budget headers: the mirror of a limiting
        // server's default (Kaiku's 30 a minute) would pace reads no server counts, and a
        // 45-s soak with a reconnect every few seconds would wait out its window (D74).
        cfg.core.pacing.budget = 1_000_000;
        let Ok((client, events)) = Client::spawn(cfg, creds) else {
            continue;
        };
        let mut wanted = BTreeSet::new();
        for ch in &channels {
            if rng.u64(..).is_multiple_of(3) {
                wanted.insert(ch.clone());
            }
        }
        if wanted.is_empty() {
            wanted.insert(channels[i % channels.len()].clone());
        }
        for ch in &wanted {
            let _ = client.subscribe(ch).await;
        }
        let _ = client.connect();
        let tally = Arc::new(std::sync::Mutex::new(Tally::default()));
        tokio::spawn(collect(events, tally.clone(), client.clone(), name.clone()));
        tallies.push((wanted, tally));
        clients.push(client);
    }

    let server = Arc::new(Mutex::new(server));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(o.secs);
    let mut next_index = 0u64;
    let mut next_fault = started + Duration::from_secs(3);
    let mut faults_done: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut fault_log: Vec<(Instant, &'static str)> = Vec::new();
    let tick = Duration::from_millis((1000 / o.rate).max(1));
    while Instant::now() < deadline {
        {
            let s = server.lock().await;
            let ch = &channels[rng.usize(..channels.len())];
            if let Some(id) = s.post(ch, "poster", &format!("soak {next_index}")) {
                ledger
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(id, (ch.clone(), next_index, Instant::now()));
                next_index += 1;
            }
        }
        if Instant::now() >= next_fault {
            let mut s = server.lock().await;
            let f = s.faults();
            let pick = loop {
                let k = rng.u64(..6);
                if o.faults.is_empty() || o.faults.contains(&k) {
                    break k;
                }
            };
            let kind = match pick {
                0 => {
                    f.drop_all();
                    "drop"
                }
                1 => {
                    f.stall(false);
                    "stall"
                }
                2 => {
                    f.refuse_upgrades(503, None, Some(20));
                    f.drop_all();
                    "refuse_503"
                }
                3 => {
                    f.refuse_upgrades(429, Some(Duration::from_secs(1)), Some(20));
                    f.drop_all();
                    "refuse_429"
                }
                4 => {
                    f.expire_tokens();
                    f.drop_all();
                    "expire_tokens"
                }
                _ => {
                    let down = Duration::from_millis(rng.u64(200..=2_000));
                    let _ = s.restart(down).await;
                    "restart"
                }
            };
            *faults_done.entry(kind).or_default() += 1;
            fault_log.push((Instant::now(), kind));
            next_fault = Instant::now() + Duration::from_millis(rng.u64(2_000..=8_000));
        }
        tokio::time::sleep(tick).await;
    }
    server.lock().await.faults().clear();

    // Settle: every client back, every catch-up done, or 60 s.
    let settle_by = Instant::now() + Duration::from_secs(60);
    let last_per_channel: BTreeMap<String, u64> = ledger
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .values()
        .fold(BTreeMap::new(), |mut m, (ch, i, _)| {
            m.insert(ch.clone(), (*i).max(m.get(ch).copied().unwrap_or(0)));
            m
        });
    let ledger_now = ledger
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    loop {
        let settled = tallies.iter().all(|(wanted, tally)| {
            let t = tally
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            wanted.iter().all(|ch| {
                let last = last_per_channel.get(ch).copied();
                let seen = t.channels.get(ch);
                match (last, seen) {
                    (None, _) => true,
                    (Some(l), Some(s)) => {
                        let index = |id: &String| ledger_now.get(id).map(|m| m.1);
                        s.delivered.last().and_then(index) == Some(l) || !s.reloads.is_empty()
                    }
                    (Some(_), None) => false,
                }
            })
        });
        if settled || Instant::now() > settle_by {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Verdict.
    let ledger = ledger
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut by_channel: BTreeMap<&str, Vec<(u64, Instant)>> = BTreeMap::new();
    for (ch, i, at) in ledger.values() {
        by_channel.entry(ch.as_str()).or_default().push((*i, *at));
    }
    for v in by_channel.values_mut() {
        v.sort_unstable_by_key(|x| x.0);
    }
    let (mut delivered, mut lost, mut duplicated, mut reordered, mut exempt) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut reconnects = 0u64;
    let mut failed = 0u64;
    let mut examples = Vec::new();
    let mut timelines = Vec::new();
    for (client, (wanted, tally)) in tallies.iter().enumerate() {
        let t = tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        reconnects += t.reconnecting;
        failed += t.failed;
        for ch in wanted {
            let Some(seen) = t.channels.get(ch) else {
                lost += by_channel.get(ch.as_str()).map_or(0, |v| v.len() as u64);
                continue;
            };
            let order: Vec<u64> = seen
                .delivered
                .iter()
                .filter_map(|id| ledger.get(id).map(|m| m.1))
                .collect();
            delivered += order.len() as u64;
            let unique: BTreeSet<u64> = order.iter().copied().collect();
            duplicated += (order.len() - unique.len()) as u64;
            let last_reload = seen.reloads.iter().max().copied();
            // The order promised is that of what was created while the client was subscribed
            // and since its last reload: a catch-up may deliver a message from just before
            // either (within its margins, D68) after newer ones, once.
            let promised: Vec<u64> = seen
                .delivered
                .iter()
                .filter_map(|id| ledger.get(id))
                .filter(|m| {
                    seen.since.is_some_and(|s| m.2 > s) && last_reload.is_none_or(|r| m.2 > r)
                })
                .map(|m| m.1)
                .collect();
            reordered += promised.windows(2).filter(|w| w[0] >= w[1]).count() as u64;
            let mut lost_here: Vec<(u64, Instant)> = Vec::new();
            for (i, at) in by_channel
                .get(ch.as_str())
                .map_or(&[][..], |v| v.as_slice())
            {
                let required = seen.since.is_some_and(|s| *at > s);
                if !required || unique.contains(i) {
                    continue;
                }
                if last_reload.is_some_and(|r| *at <= r) {
                    exempt += 1;
                } else {
                    lost += 1;
                    lost_here.push((*i, *at));
                    if examples.len() < 5 {
                        examples.push(format!(
                            "client {client} channel {ch}: message #{i} missing"
                        ));
                    }
                }
            }
            if let (Some(first), Some(last)) = (lost_here.first(), lost_here.last())
                && timelines.len() < 3
            {
                timelines.push(timeline(
                    started,
                    client,
                    ch,
                    (first.1, last.1),
                    &lost_here,
                    &t.log,
                    &fault_log,
                    &ledger,
                ));
            }
        }
    }
    let report = serde_json::json!({
        "timelines": timelines,
        "seed": o.seed,
        "clients": clients.len(),
        "channels": o.channels,
        "secs": o.secs,
        "messages_created": ledger.len(),
        "messages_delivered": delivered,
        "lost": lost,
        "duplicated": duplicated,
        "reordered": reordered,
        "exempt_after_reload": exempt,
        "reconnects": reconnects,
        "failed_then_logged_in_again": failed,
        "faults": faults_done,
        "peak_rss_kib": rss_kib("VmHWM:"),
        "alive_tasks": tokio::runtime::Handle::current().metrics().num_alive_tasks(),
        "open_fds": std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0),
        "rss_kib": rss_kib("VmRSS:"),
        "examples": examples,
    });
    println!("{report}");
    drop(clients);
    if lost + duplicated + reordered > 0 {
        eprintln!(
            "tether-soak: FAILED (seed {}): {lost} lost, {duplicated} duplicated, {reordered} reordered",
            o.seed
        );
        std::process::exit(1);
    }
}

/// What happened around a loss: the lost messages, the faults, and the client's own events
/// (statuses, subscriptions, resyncs, and the messages of that channel it received), from
/// 3 s before the first lost message was created to 10 s after the last.
#[allow(clippy::too_many_arguments)]
fn timeline(
    started: Instant,
    client: usize,
    channel: &str,
    (first, last): (Instant, Instant),
    lost: &[(u64, Instant)],
    log: &[(Instant, String)],
    faults: &[(Instant, &'static str)],
    ledger: &BTreeMap<String, (String, u64, Instant)>,
) -> serde_json::Value {
    let from = first.checked_sub(Duration::from_secs(3)).unwrap_or(first);
    let to = last + Duration::from_secs(10);
    let ms = |at: Instant| at.saturating_duration_since(started).as_millis() as u64;
    let mut lines: Vec<(Instant, String)> = Vec::new();
    for (at, what) in faults.iter().filter(|(at, _)| (from..to).contains(at)) {
        lines.push((*at, format!("FAULT {what}")));
    }
    for (i, at) in lost {
        lines.push((*at, format!("created (lost) #{i}")));
    }
    for (at, what) in log.iter().filter(|(at, _)| (from..to).contains(at)) {
        let what = match what.strip_prefix("message ") {
            Some(rest) => {
                let mut parts = rest.splitn(2, ' ');
                let (ch, id) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                if ch != channel {
                    continue;
                }
                match ledger.get(id) {
                    Some((_, i, created)) => format!("got #{i} (created {} ms)", ms(*created)),
                    None => format!("got unknown {id}"),
                }
            }
            None => what.clone(),
        };
        lines.push((*at, what));
    }
    lines.sort_by_key(|l| l.0);
    serde_json::json!({
        "client": client,
        "channel": channel,
        "lines": lines.iter().map(|(at, w)| format!("{:>7} ms {w}", ms(*at))).collect::<Vec<_>>(),
    })
}
