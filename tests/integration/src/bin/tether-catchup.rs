//! Catch-up under the server's rate limit (issue 10), against the dev server over loopback.
//!
//! The dev server limits history as Kaiku does (by default its real budget: history shares
//! the *write* category, 30 requests per 60 s per user, `x-ratelimit-*` headers as Kaiku
//! rounds them, 429 with `Retry-After`; the catch-up keeps 5 of each window for the app). One client subscribes to
//! `--channels` channels and connects; every socket is then dropped, `--missed` messages are
//! posted on each channel while upgrades are refused, and the server lets the client back.
//! `--settle` seconds after the first connect (3; more than the window gives the catch-up a
//! fresh budget). Measured: the reads and 429s of the first connect, then from `connected` to the last
//! `resynced`: the time, the reads, the 429s, and how many channels were caught up
//! completely.
//!
//! ```text
//! cargo run --release -p tether-integration --bin tether-catchup -- --channels 200
//! cargo run --release -p tether-integration --bin tether-catchup -- --channels 500 --out 500.json
//! cargo run --release -p tether-integration --bin tether-catchup -- --plot docs/catchup.svg 200.json 500.json
//! ```
//!
//! Prints one JSON line (also written to `--out`); exits 1 when a channel is not caught up
//! completely, or the catch-up meets more than one 429 per budget window it needs.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use clap::Parser;
use tether_core::{Event, ServerEventKind, Status};
use tether_devserver::{DevServer, Limit, ServerConfig};
use tether_tokio::{Client, ClientConfig, Events};

fn fail(msg: &str) -> ! {
    eprintln!("tether-catchup: {msg}");
    std::process::exit(1)
}

/// Catch-up under the server's rate limit: one client, many channels, every socket dropped
/// while messages are posted; measures the reads, 429s and time until every channel is caught
/// up. With `--plot`, draws earlier results instead.
#[derive(Debug, Parser)]
#[command(args_override_self = true)]
struct Args {
    /// Channels the client subscribes to.
    #[arg(long, default_value_t = 200)]
    #[arg(value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    channels: usize,
    /// Messages posted on each channel while the client is kept out.
    #[arg(long, default_value_t = 5)]
    missed: usize,
    /// The server's budget per window, per user, that history reads spend (Kaiku's write
    /// category).
    #[arg(long, value_name = "REQUESTS", default_value_t = 30)]
    #[arg(value_parser = clap::value_parser!(u32).range(1..))]
    budget: u32,
    /// The length of the server's rate-limit window, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    window: u64,
    /// Added latency of every REST answer from the server, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    latency_ms: u64,
    /// Seconds from the first connect until the run gives up waiting and fails.
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    timeout: u64,
    /// Seconds to wait once the first connect is live, before the drop (more than `--window`
    /// gives the catch-up a fresh budget).
    #[arg(long, value_name = "SECS", default_value_t = 3)]
    settle: u64,
    /// Also write the result line to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<String>,
    /// The run's name in the result and on the plot.
    #[arg(long, value_name = "NAME", default_value = "after")]
    label: String,
    /// Draw the results given after it into this SVG file, instead of running.
    #[arg(long, value_name = "OUT.svg")]
    plot: Option<String>,
    /// Result files (from `--out`) to draw; only with `--plot`.
    #[arg(value_name = "RESULT.json", requires = "plot")]
    results: Vec<String>,
}

/// The next event within the run's deadline.
async fn next(events: &mut Events, deadline: Instant, what: &str) -> Event {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, events.recv()).await {
        Ok(Some(e)) => e,
        Ok(None) => fail("event stream ended"),
        Err(_) => fail(&format!("timed out waiting for {what}")),
    }
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    if let Some(out) = &a.plot {
        if let Err(e) = plot(out, &a.results) {
            fail(&format!("plot: {e}"));
        }
        return;
    }
    let mut config = ServerConfig::default();
    config.rate_limits.write = Some(Limit::new(a.budget, Duration::from_secs(a.window)));
    config.rate_limits.kaiku_headers = true;
    config.rest_latency = Duration::from_millis(a.latency_ms);
    let server = DevServer::start(([127, 0, 0, 1], 0).into(), config)
        .await
        .unwrap_or_else(|e| fail(&format!("dev server: {e}")));
    let alice = server
        .create_user("alice", "password123")
        .unwrap_or_else(|| fail("user"));
    server
        .create_user("bob", "password123")
        .unwrap_or_else(|| fail("user"));
    let credentials = tether_core::Credentials::from_token_response(alice.to_string().as_bytes())
        .unwrap_or_else(|_| fail("tokens"));
    let channels: Vec<String> = (0..a.channels)
        .map(|i| server.create_channel(&format!("c{i}")))
        .collect();
    // Each channel has history from before the client subscribed, as a real one has (a walk
    // then ends below the subscription on its first page, D73).
    let old: Vec<String> = channels
        .iter()
        .filter_map(|ch| server.post(ch, "bob", "from ten minutes ago"))
        .collect();
    server.with_store(|s| {
        for m in s.channels.values_mut().flat_map(|c| c.messages.iter_mut()) {
            if old.contains(&m.id) {
                m.created_at -= Duration::from_secs(600);
            }
        }
    });
    let mut cc = ClientConfig::new(&server.url()).unwrap_or_else(|_| fail("config"));
    cc.core.seed = 7;
    cc.core.backoff.base = Duration::from_millis(100);
    cc.core.backoff.max = Duration::from_millis(400);
    let (client, mut events) =
        Client::spawn(cc, credentials).unwrap_or_else(|_| fail("client spawn"));
    for ch in &channels {
        client
            .subscribe(ch)
            .await
            .unwrap_or_else(|_| fail("subscribe"));
    }
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    client.connect().unwrap_or_else(|_| fail("connect"));
    let (mut connected, mut subscribed) = (false, 0);
    while !(connected && subscribed >= a.channels) {
        match next(&mut events, deadline, "the first connect").await {
            Event::Status(Status::Connected { .. }) => connected = true,
            Event::Server(s) if matches!(s.kind(), ServerEventKind::Subscribed { .. }) => {
                subscribed += 1
            }
            _ => {}
        }
    }
    // A live message reads the server's message clock (D68): without one, a channel that
    // never saw a message cannot prove its catch-up complete.
    let first = channels.first().unwrap_or_else(|| fail("no channel"));
    let probe = server
        .post(first, "bob", "live before the drop")
        .unwrap_or_else(|| fail("post"));
    loop {
        if let Event::Server(s) = next(&mut events, deadline, "the live message").await
            && let ServerEventKind::MessageNew { message, .. } = s.kind()
            && message.id == probe.as_str()
        {
            break;
        }
    }
    // Whatever the first connect reads (an older client probed every channel) settles; with
    // a settle longer than the window, the drop meets a fresh budget.
    let settle = Instant::now() + Duration::from_secs(a.settle);
    while Instant::now() < settle {
        let _ = tokio::time::timeout(Duration::from_millis(200), events.recv()).await;
    }
    let first_reads = server.reads_total();
    let first_429 = server.reads_rejected();

    // Drop, and keep the client out while the others post.
    server.faults().refuse_upgrades(503, None, None);
    server.faults().drop_all();
    for i in 0..a.missed {
        for ch in &channels {
            server
                .post(ch, "bob", &format!("missed {i}"))
                .unwrap_or_else(|| fail("post"));
        }
    }
    // Let the client notice the drop before the server takes it back.
    loop {
        if let Event::Status(Status::Reconnecting { .. }) =
            next(&mut events, deadline, "reconnecting").await
        {
            break;
        }
    }
    server.reset_read_log();
    let (reads_before, rejected_before) = (server.reads_total(), server.reads_rejected());
    server.faults().clear();

    let mut connected_at = None;
    let mut resynced_at = Vec::new();
    let mut complete_at = Vec::new();
    let (mut complete, mut incomplete, mut recovered) = (0usize, 0usize, 0usize);
    let mut waits = 0usize;
    while complete + incomplete < a.channels {
        let e = next(&mut events, deadline, "every channel resynced").await;
        let now = Instant::now();
        match e {
            Event::Status(Status::Connected { .. }) => connected_at = connected_at.or(Some(now)),
            Event::Resynced {
                complete: done,
                recovered: r,
                ..
            } => {
                let since = connected_at.map_or(0.0, |c| now.duration_since(c).as_secs_f64());
                resynced_at.push(since);
                recovered += r;
                if done {
                    complete_at.push(since);
                    complete += 1;
                } else {
                    incomplete += 1;
                }
            }
            Event::Server(_) | Event::Status(_) => {}
            _ => waits += 1,
        }
    }
    let elapsed = resynced_at.last().copied().unwrap_or(0.0);
    let reads = server.reads_total() - reads_before;
    let rejected = server.reads_rejected() - rejected_before;
    let windows_needed = reads.div_ceil(u64::from(a.budget));
    let violations = server.read_pause_violations("alice").len();
    let max_in_flight = server.max_reads_in_flight("alice");
    let result = serde_json::json!({
        "label": a.label,
        "channels": a.channels,
        "missed_per_channel": a.missed,
        "budget": a.budget,
        "window_s": a.window,
        "latency_ms": a.latency_ms,
        "settle_s": a.settle,
        "first_connect_reads": first_reads,
        "first_connect_429": first_429,
        "connected_to_last_resynced_s": (elapsed * 1000.0).round() / 1000.0,
        "reads": reads,
        "rejected_429": rejected,
        "windows_needed": windows_needed,
        "complete": complete,
        "incomplete": incomplete,
        "recovered": recovered,
        "reads_inside_a_pause": violations,
        "max_reads_in_flight": max_in_flight,
        "other_events": waits,
        "resynced_at_s": resynced_at,
        "complete_at_s": complete_at,
    });
    println!("{result}");
    if let Some(path) = &a.out
        && let Err(e) = std::fs::write(path, format!("{result}\n"))
    {
        fail(&format!("{path}: {e}"));
    }
    client.close().await;
    server.shutdown().await;
    if incomplete > 0 {
        fail(&format!("{incomplete} channel(s) not caught up completely"));
    }
    if rejected > windows_needed.max(1) {
        fail(&format!(
            "{rejected} 429s for {reads} reads in {windows_needed} window(s)"
        ));
    }
    if violations > 0 {
        fail(&format!("{violations} read(s) inside a Retry-After pause"));
    }
}

/// Channels caught up over time, one line per result file.
fn plot(path: &str, inputs: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let mut runs = Vec::new();
    for input in inputs {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(input)?)?;
        // Channels caught up completely (older results: every resync, when all were).
        let key = if v.get("complete_at_s").is_some() || v["incomplete"] != 0 {
            "complete_at_s"
        } else {
            "resynced_at_s"
        };
        let times: Vec<f64> = v[key]
            .as_array()
            .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
            .unwrap_or_default();
        let name = format!(
            "{} ({} channels): {} complete, {} 429s",
            v["label"].as_str().unwrap_or("?"),
            v["channels"],
            v["complete"],
            v["rejected_429"]
        );
        runs.push((name, times));
    }
    let max_t = runs
        .iter()
        .flat_map(|(_, t)| t.iter().copied())
        .fold(1.0_f64, f64::max);
    let max_n = runs.iter().map(|(_, t)| t.len()).max().unwrap_or(1).max(1);
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Channels caught up after a reconnect (Kaiku budget: 30 requests / 60 s, shared with posts)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..max_t * 1.05, 0usize..max_n + max_n / 20 + 1)?;
    chart
        .configure_mesh()
        .x_desc("seconds since connected")
        .y_desc("channels caught up completely")
        .draw()?;
    let colors = [&BLUE, &RED, &GREEN, &MAGENTA, &BLACK, &CYAN];
    for (i, (name, times)) in runs.iter().enumerate() {
        let color = colors[i % colors.len()];
        let points: Vec<(f64, usize)> =
            times.iter().enumerate().map(|(n, t)| (*t, n + 1)).collect();
        chart
            .draw_series(LineSeries::new(points, color))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}
