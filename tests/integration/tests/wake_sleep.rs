//! Waking up (DESIGN 3.2, issue 11): a client process frozen for 45 s while its server went
//! silent replaces the dead link within the probe timeout once it runs again.
//!
//! What this proves, and what it cannot. `SIGSTOP` freezes the process, not the clocks:
//! `CLOCK_MONOTONIC` and `CLOCK_BOOTTIME` both keep counting, so after `SIGCONT` tokio's timers
//! see the real time too, and nothing here suspends the machine (that takes root and
//! hardware). So the test does not show that the clock counts suspend (that rests on the OS
//! clocks chosen in docs/decisions.md D56, compile-checked per OS). It shows the part that
//! was missing: a process that did not run for 45 s notices within the watchdog's second,
//! without waiting for its next timer (the heartbeat's, two minutes out here, as the next
//! deadline after a real sleep can be up to an interval out), treats it as a wake and probes
//! with the short deadline, so the link that died meanwhile is replaced within the probe
//! timeout (5 s) of the process running again. Every core deadline is kept out of the frozen
//! window, so the core's own "a timer handled far too late" detection cannot do it instead.
//!
//! The control runs the same scenario with `ClientConfig::wake_watchdog` off and sees no
//! reconnect in that time: the check fails without the watchdog.
//!
//! The client runs in a child process (this test binary again, running the ignored
//! `child_client` with `TETHER_WAKE_CHILD` set), since a test cannot stop itself. Each test
//! takes about a minute (45 s of it frozen); the two run in parallel.

#![cfg(unix)]
#![allow(clippy::print_stdout)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tether_core::{Credentials, Event};
use tether_devserver::{DevServer, ServerConfig};
use tether_tokio::{Client, ClientConfig};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

const CHILD_ENV: &str = "TETHER_WAKE_CHILD";
const FROZEN: Duration = Duration::from_secs(45);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The watchdog's period (1 s) plus scheduling on a busy 2-core machine.
const MARGIN: Duration = Duration::from_secs(2);

/// The client under test, run by the tests below as their child process.
#[test]
#[ignore = "the child process of the wake tests; run by them"]
fn child_client() {
    let Ok(setup) = std::env::var(CHILD_ENV) else {
        return;
    };
    let setup: Value = serde_json::from_str(&setup).expect("setup");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut config = ClientConfig::new(setup["url"].as_str().expect("url")).expect("config");
        // The next heartbeat is far out; the backoff counts as reset 1 s after connecting:
        // no core deadline falls in the frozen window.
        config.core.heartbeat.interval = Duration::from_secs(120);
        config.core.backoff.reset_after = Duration::from_secs(1);
        config.wake_watchdog = setup["watchdog"].as_bool().expect("watchdog");
        let tokens = setup["tokens"].to_string();
        let credentials = Credentials::from_token_response(tokens.as_bytes()).expect("tokens");
        let (client, mut events) = Client::spawn(config, credentials).expect("spawn");
        client.connect().expect("connect");
        let run = async {
            while let Some(event) = events.recv().await {
                if let Event::Status(s) = event {
                    println!("WAKE {}", serde_json::to_string(&s).expect("status json"));
                }
            }
        };
        // The parent kills this process; the timeout only bounds an orphan.
        let _ = tokio::time::timeout(Duration::from_secs(300), run).await;
    });
}

struct ChildClient {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl ChildClient {
    async fn spawn(server: &DevServer, tokens: &Value, watchdog: bool) -> Self {
        let setup = json!({"url": server.url(), "tokens": tokens, "watchdog": watchdog});
        let mut child = tokio::process::Command::new(std::env::current_exe().expect("exe"))
            .args([
                "--exact",
                "child_client",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, setup.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("child client");
        let stdout = child.stdout.take().expect("stdout");
        Self {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The next status the child reports within `within`.
    async fn status(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .ok()?
                .expect("child stdout")
                .expect("the child client ended");
            if let Some(json) = line.strip_prefix("WAKE ") {
                return Some(serde_json::from_str(json).expect("status"));
            }
        }
    }

    /// Reads statuses until one named `name`, within `within`.
    async fn until(&mut self, name: &str, within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let s = self.status(left).await?;
            if s["status"] == name {
                return Some(s);
            }
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("child pid").to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }
}

/// Connects a child client, freezes it for 45 s while the server stalls its socket, resumes
/// it, and returns the child (reading its statuses from the moment it resumed) and that moment.
async fn freeze_while_the_server_goes_silent(watchdog: bool) -> (DevServer, ChildClient, Instant) {
    let server = DevServer::start(([127, 0, 0, 1], 0).into(), ServerConfig::default())
        .await
        .expect("dev server");
    let tokens = server.create_user("alice", "password123").expect("alice");
    let mut child = ChildClient::spawn(&server, &tokens, watchdog).await;
    child
        .until("connected", Duration::from_secs(30))
        .await
        .expect("the child connects");
    // Past the backoff's reset: the next core deadline is the heartbeat, 2 minutes out.
    tokio::time::sleep(Duration::from_secs(2)).await;
    child.signal("-STOP");
    assert_eq!(server.faults().stall(false), 1, "one socket to stall");
    tokio::time::sleep(FROZEN).await;
    let resumed = Instant::now();
    child.signal("-CONT");
    (server, child, resumed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_frozen_45_s_replaces_its_dead_link_within_the_probe_timeout() {
    let (_server, mut child, resumed) = freeze_while_the_server_goes_silent(true).await;
    let reconnecting = child
        .until("reconnecting", PROBE_TIMEOUT + MARGIN)
        .await
        .unwrap_or_else(|| {
            panic!(
                "no reconnect within {:?} of resuming",
                PROBE_TIMEOUT + MARGIN
            )
        });
    let noticed = resumed.elapsed();
    assert_eq!(
        reconnecting["reason"], "heartbeat_timeout",
        "the probe's deadline found the link dead: {reconnecting}"
    );
    child
        .until("connected", Duration::from_secs(5))
        .await
        .expect("a new link");
    let replaced = resumed.elapsed();
    println!(
        "frozen {}s: dead link found {:.1}s and replaced {:.1}s after resuming",
        FROZEN.as_secs(),
        noticed.as_secs_f64(),
        replaced.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_watchdog_a_frozen_client_keeps_its_dead_link_until_its_next_timer() {
    let (_server, mut child, _) = freeze_while_the_server_goes_silent(false).await;
    let early = child
        .until("reconnecting", PROBE_TIMEOUT + MARGIN * 2)
        .await;
    assert!(
        early.is_none(),
        "without the watchdog nothing probes before the next heartbeat, yet: {early:?}"
    );
}
