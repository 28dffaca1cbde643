//! End to end in a real window: the demo app (tauri-plugin-tether in a WebKitGTK webview, under
//! Xvfb) against the dev server. A message posted over REST must appear in the page's DOM;
//! after the server drops every socket the page must show `reconnecting`, then `connected`, and
//! the messages posted meanwhile must appear (catch-up). While the server refuses upgrades and
//! the client waits out a backoff of 4 s or more, an `online` event in the page must reconnect
//! it at once (the plugin's network watch), not when the backoff ends.
//!
//! ```text
//! cargo build --manifest-path drivers/tauri/examples/demo-app/Cargo.toml
//! cargo run -p tether-integration --bin tether-window-e2e -- target/debug/tether-demo-app [N]
//! ```
//!
//! With `N`, it then measures events per second reaching the page's JavaScript for N messages,
//! by per-event `emit` and by the batched channel.
//!
//! The page reports what it shows as `DOM {...}` lines on the app's stdout; lines written to
//! the app's stdin reach the page as `e2e:stdin` events.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;
use tether_devserver::{DevServer, ServerConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::ChildStdout;

fn fail(msg: &str) -> ! {
    eprintln!("tether-window-e2e: FAILED: {msg}");
    std::process::exit(1)
}

/// Starts the app under `xvfb-run` in its own process group (so the app, Xvfb and the
/// wrapper can all be stopped together), with `env` on top of the connection settings.
fn spawn_app(
    app: &str,
    server: &DevServer,
    channel: &str,
    env: &[(&str, String)],
) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new("xvfb-run");
    cmd.args(["-a", app])
        .env("TETHER_SERVER", server.url())
        .env("TETHER_USERNAME", "alice")
        .env("TETHER_PASSWORD", "password123")
        .env("TETHER_CHANNEL", channel)
        .env("TETHER_E2E", "1")
        // Software rendering: no GPU under Xvfb.
        .env("WEBKIT_DISABLE_COMPOSITING_MODE", "1")
        .env("LIBGL_ALWAYS_SOFTWARE", "1")
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("TETHER_E2E_DEBUG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn()
        .unwrap_or_else(|e| fail(&format!("cannot start xvfb-run {app}: {e}")))
}

/// Stops the app, its Xvfb and the wrapper: the whole process group.
async fn stop_app(mut child: tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", "--", &format!("-{pid}")])
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(3), child.wait())
        .await
        .is_err()
        && let Some(pid) = child.id()
    {
        let _ = tokio::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status()
            .await;
    }
    let _ = child.kill().await;
}

struct Page {
    lines: Lines<BufReader<ChildStdout>>,
    last: Value,
}

impl Page {
    /// Reads DOM reports until `pred` holds (or `within` passes).
    async fn until(
        &mut self,
        what: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if pred(&self.last) {
                return self.last.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    if let Some(json) = line.strip_prefix("DOM ") {
                        self.last = serde_json::from_str(json).unwrap_or(Value::Null);
                    }
                }
                Ok(_) => fail(&format!("the app exited while waiting for {what}")),
                Err(_) => fail(&format!(
                    "timed out waiting for {what}; the page last showed {}",
                    self.last
                )),
            }
        }
    }
}

fn shows(dom: &Value, text: &str) -> bool {
    dom["messages"].as_array().is_some_and(|m| {
        m.iter()
            .any(|x| x.as_str().is_some_and(|s| s.ends_with(text)))
    })
}

/// End to end in a real window: the Tauri demo app under Xvfb against the dev server (post,
/// drop, reconnect, catch up, network change, close); with N, then events per second into the
/// page by `emit` and by channel.
#[derive(Debug, Parser)]
struct Args {
    /// The built demo app (`target/debug/tether-demo-app`).
    #[arg(value_name = "PATH-TO-tether-demo-app")]
    app: String,
    /// Messages for the throughput measurement; without it, none is taken.
    #[arg(value_name = "N")]
    events: Option<u64>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Args { app, events } = Args::parse();
    let started = Instant::now();
    let server = DevServer::start(([127, 0, 0, 1], 0).into(), ServerConfig::default())
        .await
        .unwrap_or_else(|e| fail(&format!("dev server: {e}")));
    server
        .create_user("alice", "password123")
        .unwrap_or_else(|| fail("alice"));
    server
        .create_user("bob", "password123")
        .unwrap_or_else(|| fail("bob"));
    let channel = server.create_channel("general");

    let mut child = spawn_app(&app, &server, &channel, &[]);
    let stdout = child.stdout.take().unwrap_or_else(|| fail("stdout"));
    let mut page = Page {
        lines: BufReader::new(stdout).lines(),
        last: Value::Null,
    };

    page.until("connected", Duration::from_secs(60), |d| {
        d["status"] == "connected"
    })
    .await;
    let window_up = started.elapsed();

    // The subscription may still be on its way: post until one message shows, then expect all.
    let mut n = 0;
    let first = loop {
        n += 1;
        let text = format!("hello {n}");
        server
            .post(&channel, "bob", &text)
            .unwrap_or_else(|| fail("post"));
        let deadline = Instant::now() + Duration::from_millis(700);
        let mut shown = false;
        while Instant::now() < deadline && !shown {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Ok(Ok(Some(line))) = tokio::time::timeout(left, page.lines.next_line()).await
                && let Some(json) = line.strip_prefix("DOM ")
            {
                page.last = serde_json::from_str(json).unwrap_or(Value::Null);
                shown = shows(&page.last, &text);
            }
        }
        if shown {
            break text;
        }
        if n > 30 {
            fail("no posted message ever appeared in the page");
        }
    };
    let later = "posted while live";
    server
        .post(&channel, "bob", later)
        .unwrap_or_else(|| fail("post"));
    page.until("the live message", Duration::from_secs(20), |d| {
        shows(d, later)
    })
    .await;

    // Drop every socket; post while the page is offline.
    let reconnects_before = page.last["history"]
        .as_array()
        .map_or(0, |h| h.iter().filter(|s| *s == "reconnecting").count());
    if server.faults().drop_all() == 0 {
        fail("no socket to drop");
    }
    let missed: Vec<String> = (1..=3).map(|i| format!("missed {i}")).collect();
    for m in &missed {
        server
            .post(&channel, "bob", m)
            .unwrap_or_else(|| fail("post"));
    }
    page.until("reconnecting", Duration::from_secs(20), |d| {
        d["history"]
            .as_array()
            .map_or(0, |h| h.iter().filter(|s| *s == "reconnecting").count())
            > reconnects_before
    })
    .await;
    page.until("connected again", Duration::from_secs(30), |d| {
        d["status"] == "connected"
    })
    .await;
    let dom = page
        .until("the missed messages", Duration::from_secs(30), |d| {
            missed.iter().all(|m| shows(d, m))
        })
        .await;
    let messages: Vec<&str> = dom["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let order: Vec<usize> = missed
        .iter()
        .map(|m| {
            messages
                .iter()
                .position(|x| x.ends_with(m.as_str()))
                .unwrap_or(usize::MAX)
        })
        .collect();
    if !order.windows(2).all(|w| w[0] < w[1]) {
        fail(&format!("missed messages out of order: {messages:?}"));
    }

    // Back online: the server refuses every upgrade until the client waits 4 s or more for
    // its next attempt; then it takes them again and the page hears `online` (as WebKit
    // reports the OS's). The plugin's network watch must reconnect it at once.
    let mut app_stdin = child.stdin.take().unwrap_or_else(|| fail("stdin"));
    server.faults().refuse_upgrades(503, None, None);
    if server.faults().drop_all() == 0 {
        fail("no socket to drop");
    }
    let waiting = page
        .until("a backoff of 4 s or more", Duration::from_secs(60), |d| {
            d["status"] == "reconnecting" && d["retry_in_ms"].as_u64().is_some_and(|ms| ms >= 4000)
        })
        .await;
    let backoff_left = Duration::from_millis(waiting["retry_in_ms"].as_u64().unwrap_or(0));
    server.faults().clear();
    let online_at = Instant::now();
    if app_stdin.write_all(b"online\n").await.is_err() || app_stdin.flush().await.is_err() {
        fail("cannot write to the app's stdin");
    }
    page.until(
        "connected at once after `online`",
        Duration::from_millis(2500),
        |d| d["status"] == "connected",
    )
    .await;
    let online_reconnect = online_at.elapsed();

    // Lifecycle: closing the last window exits the app, and the plugin closes the socket
    // cleanly on the way out (a close frame, not a reset).
    let closes_before = server.client_closes();
    let closing = Instant::now();
    server.faults().inject(r#"{"type":"e2e_close_window"}"#);
    match tokio::time::timeout(Duration::from_secs(15), child.wait()).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => fail(&format!(
            "the app exited with {status} after its window closed"
        )),
        Ok(Err(e)) => fail(&format!("waiting for the app: {e}")),
        Err(_) => fail("the app did not exit within 15 s of its last window closing"),
    }
    let exited_after = closing.elapsed();
    let deadline = Instant::now() + Duration::from_secs(3);
    // (The server, like Kaiku, stops reading after a close frame, so it keeps the dead socket
    // until its next write fails: only the close frame is checked.)
    while server.client_closes() == closes_before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if server.client_closes() == closes_before {
        fail("the app exited without a close frame: the socket was cut, not closed");
    }
    stop_app(child).await;

    // Throughput into the webview: per-event emit against the batched channel.
    let mut rates = serde_json::Map::new();
    if let Some(n) = events {
        for mode in ["emit", "channel"] {
            let mut child = spawn_app(
                &app,
                &server,
                &channel,
                &[
                    ("TETHER_BENCH_MODE", mode.to_owned()),
                    ("TETHER_BENCH_N", n.to_string()),
                ],
            );
            let stdout = child.stdout.take().unwrap_or_else(|| fail("stdout"));
            let mut page = Page {
                lines: BufReader::new(stdout).lines(),
                last: Value::Null,
            };
            page.until("connected (bench)", Duration::from_secs(60), |d| {
                d["status"] == "connected"
            })
            .await;
            // The subscription lands right after `connected`: give it a moment, then flood.
            tokio::time::sleep(Duration::from_millis(500)).await;
            server.faults().flood(&channel, n);
            let dom = page
                .until("the bench result", Duration::from_secs(120), |d| {
                    d["bench"].is_object()
                })
                .await;
            let ms = dom["bench"]["ms"].as_f64().unwrap_or(f64::NAN);
            let rate = n as f64 / (ms / 1000.0);
            rates.insert(
                format!("{mode}_events_per_sec"),
                serde_json::json!(rate.round()),
            );
            // The whole process group: the app and its Xvfb, not only the wrapper.
            stop_app(child).await;
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "result": "ok",
            "first_message": first,
            "window_connected_after_secs": window_up.as_secs_f64(),
            "exit_after_window_close_secs": exited_after.as_secs_f64(),
            "online_reconnect_secs": online_reconnect.as_secs_f64(),
            "online_backoff_left_secs": backoff_left.as_secs_f64(),
            "total_secs": started.elapsed().as_secs_f64(),
            "messages_in_dom": messages.len(),
            "webview_throughput": rates,
        })
    );
}
