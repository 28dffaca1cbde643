//! Many clients in one process (issue #6): N tokio clients connected and subscribed against
//! the dev server. Reports, for each step of N: resident memory per client, CPU per idle client
//! per minute (heartbeats only), messages delivered per second across all clients during a
//! burst (every channel gets `--burst` messages; the server, in its own process, shares the
//! two cores), and the time to bring every client back after the server drops every socket at
//! once (the jitter spreads the load).
//!
//! The server runs in a child process (this binary with `--serve`), so the memory and CPU
//! measured are the clients' alone.
//!
//! ```text
//! cargo run --release -p tether-integration --bin tether-many -- --steps 1000,5000,10000 --idle-secs 60 --svg docs/many-clients.svg
//! ```
//!
//! Prints one JSON line per step and a final summary line; exits 1 when clients do not all
//! come back (a functional failure), never because of a figure.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use tether_core::{Credentials, Event, ServerEventKind, Status};
use tether_devserver::{DevServer, ServerConfig};
use tether_integration::{ServerChild, rss_kib};
use tether_tokio::{Client, ClientConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Many tokio clients in one process against the dev server: memory, idle CPU, burst
/// throughput and the time to bring every client back after a mass drop, for each step of N.
#[derive(Debug, Parser)]
#[command(name = "tether-many", args_override_self = true)]
struct Options {
    /// Client counts to measure, increasing and comma-separated (e.g. 1000,5000,10000).
    #[arg(long, value_name = "N,N,...", default_value = "1000,5000,10000")]
    #[arg(value_delimiter = ',', value_parser = trimmed_count)]
    steps: Vec<usize>,
    /// Seconds of idle (heartbeats only) at each step, over which CPU is measured.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    idle_secs: u64,
    /// Channels on the server; clients are spread over them (at least 1).
    #[arg(long, default_value_t = 10)]
    channels: usize,
    /// Clients started at once, before waiting for them to be live (at least 1).
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Each client's socket read buffer in bytes (default: the driver's).
    #[arg(long, value_name = "BYTES")]
    read_buffer: Option<usize>,
    /// Offer permessage-deflate (the dev server compresses every v2 socket that offers it,
    /// with context takeover): each client then keeps an inflate context.
    #[arg(long)]
    deflate: bool,
    /// With --deflate, ask the server for at most a 2^BITS byte window (default: 15, none
    /// asked).
    #[arg(long, value_name = "BITS", requires = "deflate")]
    deflate_window_bits: Option<u8>,
    /// With --deflate, ask the server to compress each message alone (clients then hold no
    /// inflate context between messages).
    #[arg(long, requires = "deflate")]
    deflate_no_context_takeover: bool,
    /// Where to draw the figures against N (an SVG file).
    #[arg(long, value_name = "FILE")]
    svg: Option<String>,
    /// Messages posted to every channel in the throughput burst (at least 1).
    #[arg(long, default_value_t = 20)]
    burst: u64,
    /// Run as the dev server child (started by this program itself).
    #[arg(long, hide = true)]
    serve: bool,
}

/// A count in a comma-separated list, which may carry spaces (`--steps "50, 200"`).
fn trimmed_count(v: &str) -> Result<usize, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("`{v}` is not a number"))
}

fn options() -> Options {
    let mut o = Options::parse();
    if o.steps.is_empty() || o.steps.windows(2).any(|w| w[0] > w[1]) {
        Options::command()
            .error(
                clap::error::ErrorKind::ValueValidation,
                "--steps must be increasing, e.g. 1000,5000,10000",
            )
            .exit();
    }
    o.channels = o.channels.max(1);
    o.batch = o.batch.max(1);
    o.burst = o.burst.max(1);
    o
}

fn fail(msg: &str) -> ! {
    eprintln!("tether-many: {msg}");
    std::process::exit(1)
}

/// The child: a dev server. On stdin, `drop` drops every socket (answers `dropped N`), and
/// `post K` posts K messages to every channel (answers `posted`).
async fn serve(channels: usize) {
    let server = DevServer::start(([127, 0, 0, 1], 0).into(), ServerConfig::default())
        .await
        .unwrap_or_else(|e| fail(&format!("server: {e}")));
    let ids: Vec<String> = (0..channels)
        .map(|i| server.create_channel(&format!("c{i}")))
        .collect();
    let tokens = server
        .create_user("many", "password123")
        .unwrap_or_else(|| fail("user"));
    println!(
        "{}",
        serde_json::json!({"url": server.url(), "channels": ids, "tokens": tokens})
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = line.trim();
        if line == "drop" {
            let n = server.faults().drop_all();
            println!("dropped {n}");
        } else if let Some(k) = line
            .strip_prefix("post ")
            .and_then(|k| k.parse::<u64>().ok())
        {
            for i in 0..k {
                for ch in &ids {
                    server.post(ch, "many", &format!("burst {i}"));
                }
            }
            println!("posted");
        }
    }
}

/// Process CPU time (user + system) so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3; utime and stime
    // are fields 14 and 15, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Clients that are connected with their channel confirmed on the current socket.
#[derive(Default)]
struct Live {
    count: AtomicUsize,
    /// Times any client became live (only grows): counts the comebacks after a drop.
    sessions: AtomicUsize,
    /// `message_new` events received, by every client.
    messages: std::sync::atomic::AtomicU64,
}

/// Reads one client's events and keeps `live` counting it while it is connected and subscribed.
async fn watch(mut events: tether_tokio::Events, live: Arc<Live>) {
    let mut connected = false;
    let mut counted = false;
    while let Some(e) = events.recv().await {
        match &e {
            Event::Status(Status::Connected { .. }) => connected = true,
            Event::Status(_) => {
                connected = false;
                if counted {
                    counted = false;
                    live.count.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Event::Server(s) if matches!(s.kind(), ServerEventKind::MessageNew { .. }) => {
                live.messages.fetch_add(1, Ordering::Relaxed);
            }
            Event::Server(s)
                if matches!(s.kind(), ServerEventKind::Subscribed { .. })
                    && connected
                    && !counted =>
            {
                counted = true;
                live.count.fetch_add(1, Ordering::Relaxed);
                live.sessions.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

async fn until_live(live: &Live, n: usize, within: Duration, what: &str) -> Duration {
    let started = Instant::now();
    while live.count.load(Ordering::Relaxed) < n {
        if started.elapsed() > within {
            fail(&format!(
                "{what}: only {} of {n} clients live after {within:?}",
                live.count.load(Ordering::Relaxed)
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = options();
    if o.serve {
        serve(o.channels).await;
        return;
    }
    let ServerChild {
        mut child,
        stdin: mut child_in,
        lines: mut child_out,
        hello: info,
    } = ServerChild::spawn(&["--channels", &o.channels.to_string()])
        .await
        .unwrap_or_else(|e| fail(&e));
    let url = info["url"].as_str().unwrap_or_default().to_owned();
    let channels: Vec<String> = info["channels"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if channels.is_empty() {
        fail("the server made no channels");
    }
    let creds = Credentials::from_token_response(info["tokens"].to_string().as_bytes())
        .unwrap_or_else(|e| fail(&format!("tokens: {e}")));

    let live = Arc::new(Live::default());
    let mut clients: Vec<Client> = Vec::new();
    let empty_rss = rss_kib("VmRSS:");
    let mut rows = Vec::new();
    for &n in &o.steps {
        // Start the clients this step adds, a batch at a time (each batch's REST probes reuse
        // the previous batch's pooled HTTP connections instead of opening thousands at once).
        let rss_before = rss_kib("VmRSS:");
        let before = clients.len();
        while clients.len() < n {
            let end = (clients.len() + o.batch).min(n);
            for i in clients.len()..end {
                let mut cfg = ClientConfig::new(&url).unwrap_or_else(|e| fail(&e.to_string()));
                if let Some(b) = o.read_buffer {
                    cfg.read_buffer_size = b;
                }
                if o.deflate {
                    let mut offer = tether_core::wire::DeflateOffer::default();
                    if let Some(bits) = o.deflate_window_bits {
                        offer.server_max_window_bits = bits;
                    }
                    offer.server_no_context_takeover = o.deflate_no_context_takeover;
                    cfg.core.deflate = Some(offer);
                }
                let (client, events) =
                    Client::spawn(cfg, creds.clone()).unwrap_or_else(|e| fail(&e.to_string()));
                let _ = client.subscribe(&channels[i % channels.len()]).await;
                let _ = client.connect();
                tokio::spawn(watch(events, live.clone()));
                clients.push(client);
            }
            until_live(&live, end, Duration::from_secs(120), "connecting").await;
        }
        // Let the anchor probes finish and the allocator settle.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_after = rss_kib("VmRSS:");
        let per_client_kib = (rss_after.saturating_sub(empty_rss)) as f64 / n as f64;
        let added_kib = (rss_after.saturating_sub(rss_before)) as f64 / (n - before) as f64;

        // Idle: heartbeats only.
        let cpu0 = cpu_time();
        let wall0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(o.idle_secs)).await;
        let cpu = cpu_time().saturating_sub(cpu0);
        let wall = wall0.elapsed();
        // After a minute of heartbeats: what an idle client holds.
        let rss_idle = rss_kib("VmRSS:");
        let idle_kib = rss_idle.saturating_sub(empty_rss) as f64 / n as f64;
        let cpu_ms_per_client_per_min =
            cpu.as_secs_f64() * 1000.0 / n as f64 / (wall.as_secs_f64() / 60.0);

        // A burst: K messages in every channel; every client gets K (one channel each).
        let before_burst = live.messages.load(Ordering::Relaxed);
        let burst_started = Instant::now();
        let _ = child_in
            .write_all(format!("post {}\n", o.burst).as_bytes())
            .await;
        let _ = child_in.flush().await;
        let _ = child_out.next_line().await;
        let expected = before_burst + (n as u64) * o.burst;
        while live.messages.load(Ordering::Relaxed) < expected {
            if burst_started.elapsed() > Duration::from_secs(120) {
                fail(&format!(
                    "burst: {} of {} deliveries after 120 s",
                    live.messages.load(Ordering::Relaxed) - before_burst,
                    expected - before_burst
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let burst_secs = burst_started.elapsed().as_secs_f64();
        let deliveries_per_sec = (n as u64 * o.burst) as f64 / burst_secs;
        tokio::time::sleep(Duration::from_millis(500)).await;

        // Mass drop: every socket at once; time until every client is live again.
        let _ = child_in.write_all(b"drop\n").await;
        let _ = child_in.flush().await;
        let dropped = child_out
            .next_line()
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        let dropped_at = Instant::now();
        let sessions_before = live.sessions.load(Ordering::Relaxed);
        // Every client must become live again once; note when each does.
        let mut back_at = Vec::with_capacity(n);
        let deadline = dropped_at + Duration::from_secs(180);
        loop {
            let back = live.sessions.load(Ordering::Relaxed) - sessions_before;
            while back_at.len() < back.min(n) {
                back_at.push(dropped_at.elapsed());
            }
            if back >= n && live.count.load(Ordering::Relaxed) >= n {
                break;
            }
            if Instant::now() > deadline {
                fail(&format!(
                    "only {} of {n} clients came back after the mass drop",
                    live.count.load(Ordering::Relaxed)
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let total = dropped_at.elapsed();
        let pct = |p: f64| {
            back_at
                .get(((back_at.len() as f64 * p) as usize).min(back_at.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64())
        };
        let row = serde_json::json!({
            "clients": n,
            "rss_kib": rss_after,
            "rss_per_client_kib": (per_client_kib * 10.0).round() / 10.0,
            "rss_per_added_client_kib": (added_kib * 10.0).round() / 10.0,
            "rss_idle_kib": rss_idle,
            "rss_idle_per_client_kib": (idle_kib * 10.0).round() / 10.0,
            "idle_secs": wall.as_secs_f64(),
            "idle_cpu_ms_per_client_per_min": (cpu_ms_per_client_per_min * 1000.0).round() / 1000.0,
            "server": dropped,
            "burst_messages_per_client": o.burst,
            "burst_deliveries_per_sec": deliveries_per_sec.round(),
            "reconnect_all_secs": total.as_secs_f64(),
            "reconnect_p50_secs": pct(0.5),
            "reconnect_p99_secs": pct(0.99),
        });
        println!("{row}");
        rows.push(row);
    }
    println!("{}", serde_json::json!({"summary": rows}));
    if let Some(path) = &o.svg
        && let Err(e) = plot(path, &rows)
    {
        fail(&format!("cannot draw {path}: {e}"));
    }
    drop(clients);
    drop(child_in);
    let _ = child.kill().await;
}

/// Draws memory per client and the time to bring every client back, against N.
fn plot(path: &str, rows: &[serde_json::Value]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let n: Vec<f64> = rows
        .iter()
        .map(|r| r["clients"].as_f64().unwrap_or(0.0))
        .collect();
    let series = |key: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .zip(&n)
            .map(|(r, n)| (*n, r[key].as_f64().unwrap_or(0.0)))
            .collect()
    };
    let max_n = n.iter().copied().fold(1.0, f64::max) * 1.05;
    let root = SVGBackend::new(path, (1350, 380)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 3));
    let charts = [
        (
            "resident memory per idle client (KiB)",
            series("rss_idle_per_client_kib"),
            Some(48.0),
        ),
        (
            "messages delivered per second, all clients",
            series("burst_deliveries_per_sec"),
            None,
        ),
        (
            "all clients back after a mass drop (s)",
            series("reconnect_all_secs"),
            None,
        ),
    ];
    for (panel, (title, points, budget)) in panels.iter().zip(charts) {
        let top = points.iter().map(|p| p.1).chain(budget).fold(1.0, f64::max) * 1.2;
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0..max_n, 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc("clients in one process")
            .draw()?;
        chart.draw_series(LineSeries::new(points.clone(), &BLUE))?;
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))?;
        if let Some(b) = budget {
            chart
                .draw_series(LineSeries::new([(0.0, b), (max_n, b)], &RED))?
                .label("budget")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED));
            chart.configure_series_labels().border_style(BLACK).draw()?;
        }
    }
    root.present()?;
    Ok(())
}
