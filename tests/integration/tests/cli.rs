//! The `tether` command end to end (DESIGN section 6 is its contract): the real binary runs
//! as a child process against the dev server, and its stdout is read line by line, as the
//! programs outside the project that drive `tether listen --json` read it.
//!
//! The binary is `tether-under-test`, built by cargo before these tests from drivers/cli's
//! sources (see this package's Cargo.toml). Every wait has a deadline: a test never hangs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tether_devserver::ServerConfig;
use tether_integration::components::non_loopback_ipv4;
use tether_integration::{WAIT, World};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinHandle;

const PASSWORD: &str = "password123";

/// Backoff settings every `listen` here runs with: retry n waits within [cap/2, cap],
/// cap = min(MAX, BASE * 2^(n-1)).
const BACKOFF_BASE_MS: u64 = 100;
const BACKOFF_MAX_MS: u64 = 800;

// ---------------------------------------------------------------------------------------------
// Helpers: run the binary, read its JSON lines with deadlines, check the line contract.
// ---------------------------------------------------------------------------------------------

/// The `tether` binary, with a clean environment and every stream captured.
fn tether_cmd<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tether-under-test"));
    cmd.args(args)
        .env_remove("TETHER_TOKEN")
        .env_remove("TETHER_PASSWORD")
        .env_remove("TETHER_LOG")
        // A panic would print a backtrace: the tests look for either and fail on them.
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// What a short-lived command left behind.
#[derive(Debug)]
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs a command that is expected to end by itself (within [`WAIT`]).
async fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    let out = tokio::time::timeout(WAIT, tether_cmd(args).output())
        .await
        .expect("the command ends within the deadline")
        .expect("the binary runs");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

/// Asserts an error was reported as DESIGN 6 asks: exactly one line on stderr, nothing on
/// stdout, no panic.
fn assert_one_line_error(out: &Output, what: &str) {
    assert_no_panic(&out.stderr, what);
    assert_eq!(out.stdout, "", "{what}: nothing on stdout");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: one line on stderr, got {:?}",
        out.stderr
    );
    assert!(
        lines[0].starts_with("tether: ") && lines[0].len() > "tether: ".len() + 5,
        "{what}: a reason on stderr, got {:?}",
        lines[0]
    );
}

fn assert_no_panic(stderr: &str, what: &str) {
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(!stderr.contains(bad), "{what}: `{bad}` on stderr: {stderr}");
    }
}

/// One stdout line of `listen --json`, checked against the contract: a JSON object with
/// exactly the keys `event` (a `ws:*` name) and `payload`.
fn parse_line(line: &str) -> Value {
    let v: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line:?}"));
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("stdout line is not a JSON object: {line}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["event", "payload"], "keys of {line}");
    let event = v["event"]
        .as_str()
        .unwrap_or_else(|| panic!("`event` is not a string: {line}"));
    assert!(
        event.starts_with("ws:") && event.len() > 3,
        "event name: {line}"
    );
    v
}

/// The legacy line that must follow a `ws:status` line (core/src/frontend.rs).
fn legacy_for(status: &Value) -> (&'static str, Value) {
    match status["status"].as_str() {
        Some("connecting") => ("ws:connecting", Value::Null),
        Some("connected") => ("ws:connected", Value::Null),
        Some("reconnecting") => ("ws:reconnecting", status["attempt"].clone()),
        Some("disconnected" | "failed") => ("ws:disconnected", Value::Null),
        other => panic!("unknown status {other:?} in {status}"),
    }
}

/// Checks the pairing rules over a whole run: every `ws:status` is followed by its legacy
/// line, every legacy line preceded by its `ws:status`, and status payloads are well formed.
fn check_status_pairs(lines: &[Value]) {
    for (i, v) in lines.iter().enumerate() {
        match v["event"].as_str() {
            Some("ws:status") => {
                let p = &v["payload"];
                if p["status"] == "reconnecting" {
                    assert!(p["attempt"].as_u64().is_some_and(|a| a >= 1), "{v}");
                    assert!(p["retry_in_ms"].as_u64().is_some(), "{v}");
                    assert!(p["reason"].as_str().is_some(), "{v}");
                }
                // The run may have been killed between the two lines of a pair.
                let Some(next) = lines.get(i + 1) else {
                    continue;
                };
                let (name, payload) = legacy_for(p);
                assert_eq!(next["event"], name, "after {v}");
                assert_eq!(next["payload"], payload, "after {v}");
            }
            Some("ws:connecting" | "ws:connected" | "ws:reconnecting" | "ws:disconnected") => {
                let prev = i
                    .checked_sub(1)
                    .and_then(|p| lines.get(p))
                    .unwrap_or_else(|| panic!("{v} is the first line"));
                assert_eq!(prev["event"], "ws:status", "before {v}");
            }
            _ => {}
        }
    }
}

fn event(v: &Value) -> &str {
    v["event"].as_str().unwrap_or_default()
}

fn is_status(v: &Value, status: &str) -> bool {
    event(v) == "ws:status" && v["payload"]["status"] == status
}

/// `(channel_id, message id)` of every `ws:message_new` line, in order.
fn message_ids(lines: &[Value]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter(|v| event(v) == "ws:message_new")
        .map(|v| {
            let p = &v["payload"];
            assert_eq!(p["type"], "message_new", "{v}");
            (
                p["channel_id"].as_str().expect("channel_id").to_owned(),
                p["message"]["id"].as_str().expect("message id").to_owned(),
            )
        })
        .collect()
}

/// A running `tether` (usually `listen --json`) and everything it printed so far.
struct Tether {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
    stderr_task: Option<JoinHandle<()>>,
    /// Every stdout line read so far, parsed.
    seen: Vec<Value>,
    /// Whether stdout lines must follow the JSON contract (`listen --json`).
    json: bool,
}

impl Tether {
    fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S], json: bool) -> Self {
        Self::spawn_cmd(tether_cmd(args), json)
    }

    fn spawn_cmd(mut cmd: Command, json: bool) -> Self {
        let mut child = cmd.spawn().expect("the binary starts");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        let stderr_task = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            child,
            stdout,
            stderr,
            stderr_task: Some(stderr_task),
            seen: Vec::new(),
            json,
        }
    }

    /// `tether listen --json` for alice (password login) with fast timers.
    fn listen(w: &World, channels: &[&str]) -> Self {
        Self::spawn(
            &listen_args(
                w,
                &["--username", "alice", "--password", PASSWORD],
                channels,
            ),
            true,
        )
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Context for a failed wait: the last lines read and stderr.
    fn context(&self) -> String {
        let tail: Vec<String> = self
            .seen
            .iter()
            .rev()
            .take(12)
            .rev()
            .map(Value::to_string)
            .collect();
        format!(
            "last stdout lines:\n  {}\nstderr:\n{}",
            tail.join("\n  "),
            self.stderr()
        )
    }

    /// The next stdout line before `deadline`, checked and recorded; `None` at end of output.
    async fn line_before(&mut self, deadline: Instant, what: &str) -> Option<Value> {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match tokio::time::timeout(left, self.stdout.next_line()).await {
            Ok(Ok(line)) => line?,
            Ok(Err(e)) => panic!("reading stdout while waiting for {what}: {e}"),
            Err(_) => panic!("timed out waiting for {what}\n{}", self.context()),
        };
        let v = if self.json {
            parse_line(&line)
        } else {
            Value::String(line)
        };
        self.seen.push(v.clone());
        Some(v)
    }

    /// The next stdout line (within [`WAIT`]).
    async fn next(&mut self, what: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        match self.line_before(deadline, what).await {
            Some(v) => v,
            None => panic!("stdout ended while waiting for {what}\n{}", self.context()),
        }
    }

    /// Reads lines until `pred` matches one (all within [`WAIT`]); returns them, the match
    /// last.
    async fn until(&mut self, what: &str, mut pred: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        let mut read = Vec::new();
        loop {
            let Some(v) = self.line_before(deadline, what).await else {
                panic!("stdout ended while waiting for {what}\n{}", self.context());
            };
            let done = pred(&v);
            read.push(v);
            if done {
                return read;
            }
        }
    }

    /// Reads until the line named `name`; returns the lines read, the match last.
    async fn until_event(&mut self, name: &str) -> Vec<Value> {
        self.until(name, |v| event(v) == name).await
    }

    /// Waits for `connected`, then `subscribed` for every channel in `channels`.
    async fn live(&mut self, channels: &[&str]) -> Vec<Value> {
        let mut read = self.until_event("ws:connected").await;
        let mut missing: Vec<&str> = channels.to_vec();
        if !missing.is_empty() {
            read.extend(
                self.until("subscribed", |v| {
                    if event(v) == "ws:subscribed" {
                        missing.retain(|c| v["payload"]["channel_id"] != *c);
                    }
                    missing.is_empty()
                })
                .await,
            );
        }
        read
    }

    /// Waits for the process to end by itself within `within`; reads the rest of stdout.
    async fn exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while self
            .line_before(deadline, "the end of stdout")
            .await
            .is_some()
        {}
        let left = deadline.saturating_duration_since(Instant::now());
        let status = match tokio::time::timeout(left, self.child.wait()).await {
            Ok(s) => s.expect("wait for the child"),
            Err(_) => panic!("the process did not exit\n{}", self.context()),
        };
        self.join_stderr().await;
        status.code()
    }

    async fn join_stderr(&mut self) {
        if let Some(task) = self.stderr_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// Kills the process, reads what is left of stdout, checks the whole run against the
    /// contract (line shapes, status pairs, no panic) and returns every line.
    async fn stop(mut self) -> Vec<Value> {
        let _ = self.child.start_kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self
            .line_before(deadline, "stdout to close after kill")
            .await
            .is_some()
        {}
        let _ = self.child.wait().await;
        self.join_stderr().await;
        if self.json {
            check_status_pairs(&self.seen);
        }
        assert_no_panic(&self.stderr(), "listen");
        std::mem::take(&mut self.seen)
    }
}

fn listen_args(w: &World, login: &[&str], channels: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec!["listen".into(), "--server".into(), w.server.url()];
    args.extend(login.iter().map(|s| (*s).to_owned()));
    for ch in channels {
        args.extend(["--channel".into(), (*ch).to_owned()]);
    }
    let timers = [
        "--json",
        "--backoff-base",
        &BACKOFF_BASE_MS.to_string(),
        "--backoff-max",
        &BACKOFF_MAX_MS.to_string(),
        "--heartbeat-interval",
        "1",
        "--heartbeat-timeout",
        "1",
    ]
    .map(str::to_owned);
    args.extend(timers);
    args
}

/// The `message_new` frame the server broadcast for message `id`, rebuilt from the store.
fn server_frame(w: &World, id: &str) -> Value {
    w.server.with_store(|s| {
        let m = s.find_message(id).expect("message exists").clone();
        json!({"type": "message_new", "channel_id": m.channel_id, "message": s.message_json(&m)})
    })
}

/// A loopback address nothing listens on (bound, read, released).
fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn post(w: &World, ch: &str, text: &str) -> String {
    w.server.post(ch, "bob", text).expect("post")
}

/// Asserts `got` holds every id of `want` exactly once, in the same order, and nothing else.
fn assert_same_ids(got: &[(String, String)], ch: &str, want: &[String]) {
    assert!(got.iter().all(|(c, _)| c == ch), "only channel {ch}");
    let got: Vec<&String> = got.iter().map(|(_, id)| id).collect();
    let want: Vec<&String> = want.iter().collect();
    assert_eq!(got, want, "every message exactly once, in creation order");
}

// ---------------------------------------------------------------------------------------------
// 1. The line contract: shapes, status lines, verbatim server events, unknown event types.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn listen_json_prints_the_contract_lines_and_server_events_verbatim() {
    let w = World::start(ServerConfig::default(), 1).await;
    let ch = w.channels[0].as_str();
    let mut t = Tether::listen(&w, &[ch, "no-such-channel"]);
    let start = t.live(&[ch]).await;
    let connected = start
        .iter()
        .position(|v| is_status(v, "connected"))
        .expect("ws:status connected");
    // `{"status":"connected",...}`: and what the socket speaks (`tether listen` does not
    // offer deflate unless told to).
    assert_eq!(
        start[connected]["payload"],
        json!({
            "status": "connected",
            "protocol": {"version": 2, "encoding": "msgpack"},
            "compression": null
        })
    );
    assert_eq!(
        start[connected + 1],
        json!({"event": "ws:connected", "payload": null})
    );
    let first = start.first().expect("a first line");
    assert_eq!(first["event"], "ws:status", "the first line is a status");
    if first["payload"]["status"] == "connecting" {
        // (Unless the app was too slow to see it before `connected` replaced it.)
        assert_eq!(
            first["payload"],
            json!({"status": "connecting", "attempt": 0})
        );
    }

    // A channel the server does not know is refused, and said so.
    let read = t.until_event("ws:subscription_rejected").await;
    assert_eq!(
        read.last().unwrap()["payload"],
        json!({"channel_id": "no-such-channel", "code": "channel_not_found"})
    );

    // A message: the payload is the server's frame, verbatim.
    let id = post(&w, ch, "hello from bob");
    let read = t.until_event("ws:message_new").await;
    let line = read.last().unwrap();
    let frame = server_frame(&w, &id);
    assert_eq!(line["payload"], frame);
    assert_eq!(line["payload"]["message"]["id"], id.as_str());
    assert_eq!(line["payload"]["message"]["content"], "hello from bob");
    // Not re-serialized: byte for byte what the server sent (same serializer on both sides).
    assert_eq!(
        line.to_string(),
        format!(r#"{{"event":"ws:message_new","payload":{frame}}}"#)
    );

    // An event type nobody knows passes through under its own name, every field kept.
    let raw = r#"{"type":"brand_new","x":[1,null]}"#;
    assert!(w.server.faults().inject(raw) >= 1);
    let read = t.until_event("ws:brand_new").await;
    assert_eq!(
        read.last().unwrap()["payload"],
        serde_json::from_str::<Value>(raw).unwrap()
    );

    // A nested unknown event with nulls, unicode and numbers survives too.
    let raw = r#"{"type":"reaction_add","emoji":"👍","count":3,"user":{"id":"u","name":null},"ratio":0.5}"#;
    w.server.faults().inject(raw);
    let read = t.until_event("ws:reaction_add").await;
    assert_eq!(
        read.last().unwrap()["payload"],
        serde_json::from_str::<Value>(raw).unwrap()
    );

    let all = t.stop().await;
    assert_eq!(message_ids(&all), [(ch.to_owned(), id)]);
}

#[tokio::test]
async fn listen_with_query_auth_connects_to_a_server_that_only_takes_query_tokens() {
    let mut config = ServerConfig::default();
    config.subprotocol_auth = false;
    config.query_auth = true;
    let w = World::start(config, 1).await;
    let ch = w.channels[0].as_str();
    // With every log on (-vv): stdout stays pure JSON lines, the logs go to stderr, and no
    // secret shows up in them, although the token travels in the URL.
    let mut args = vec!["-vv".to_owned()];
    args.extend(listen_args(
        &w,
        &["--username", "alice", "--password", PASSWORD],
        &[ch],
    ));
    args.extend(["--auth".into(), "query".into()]);
    let mut t = Tether::spawn(&args, true);
    t.live(&[ch]).await;
    let id = post(&w, ch, "via query auth");
    t.until_event("ws:message_new").await;
    let stderr = t.stderr.clone();
    let all = t.stop().await;
    assert_same_ids(&message_ids(&all), ch, &[id]);

    let stderr = stderr.lock().unwrap().clone();
    assert!(stderr.contains("DEBUG"), "-vv logs to stderr: {stderr:?}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour codes when stderr is not a terminal"
    );
    assert!(!stderr.contains(PASSWORD), "the password is never logged");
    // The dev server's tokens are JWTs: `eyJ` is how every one of them starts.
    assert!(!stderr.contains("eyJ"), "no token is ever logged: {stderr}");
}

#[tokio::test]
async fn no_token_or_password_reaches_stderr_at_rust_log_trace() {
    let w = World::start(ServerConfig::default(), 1).await;
    let ch = w.channels[0].as_str();
    let mut cmd = tether_cmd(&listen_args(
        &w,
        &["--username", "alice", "--password", PASSWORD],
        &[ch],
    ));
    cmd.env("RUST_LOG", "trace");
    let mut t = Tether::spawn_cmd(cmd, true);
    t.live(&[ch]).await;
    let id = post(&w, ch, "traced");
    t.until_event("ws:message_new").await;
    // A reconnect and a catch-up too: the token goes out again on the upgrade and over REST.
    w.server.faults().drop_all();
    t.until_event("ws:resynced").await;
    let stderr = t.stderr.clone();
    let all = t.stop().await;
    assert_same_ids(&message_ids(&all), ch, &[id]);
    let stderr = stderr.lock().unwrap().clone();
    assert!(stderr.contains("TRACE"), "RUST_LOG=trace is honoured");
    assert!(!stderr.contains(PASSWORD), "the password is never logged");
    assert!(!stderr.contains("eyJ"), "no token is ever logged: {stderr}");
}

// ---------------------------------------------------------------------------------------------
// 2. Abrupt drops in the middle of a message stream.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn drops_during_a_message_stream_lose_nothing_and_duplicate_nothing() {
    let w = World::start(ServerConfig::default(), 1).await;
    let ch = w.channels[0].as_str();
    let mut t = Tether::listen(&w, &[ch]);
    t.live(&[ch]).await;

    let mut posted = Vec::new();
    let mut drops = 0;
    for round in 0..3 {
        for i in 0..8 {
            posted.push(post(&w, ch, &format!("round {round} live {i}")));
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let dropped = w.server.faults().drop_all();
        if round == 0 {
            assert!(
                dropped >= 1,
                "the client was connected before the first drop"
            );
        }
        // Posted while the client is away or coming back: catch-up or live, never both.
        for i in 0..8 {
            posted.push(post(&w, ch, &format!("round {round} gap {i}")));
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        if dropped > 0 {
            drops += 1;
            let read = t.until_event("ws:resynced").await;
            let p = &read.last().unwrap()["payload"];
            let mut keys: Vec<&String> = p.as_object().expect("object").keys().collect();
            keys.sort();
            assert_eq!(keys, ["channel_id", "complete", "recovered"], "{p}");
            assert_eq!(p["channel_id"], ch);
            assert_eq!(p["complete"], true);
            assert!(p["recovered"].as_u64().is_some_and(|r| r <= 16), "{p}");
        }
    }
    // A last one, after everything settled: it arrives after every earlier one.
    posted.push(post(&w, ch, "the end"));
    let last = posted.last().unwrap().clone();
    t.until("the last message", |v| {
        event(v) == "ws:message_new" && v["payload"]["message"]["id"] == last.as_str()
    })
    .await;

    let all = t.stop().await;
    assert_same_ids(&message_ids(&all), ch, &posted);
    let resynced = all.iter().filter(|v| event(v) == "ws:resynced").count();
    assert!(
        resynced >= drops,
        "one ws:resynced per reconnect: {resynced} < {drops}"
    );
    assert!(
        all.iter()
            .any(|v| is_status(v, "reconnecting") && v["payload"]["reason"] == "connection_lost"),
        "a drop is reported as connection_lost"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. A silent server: the heartbeat notices.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_stalled_server_is_noticed_by_the_heartbeat_and_left() {
    let w = World::start(ServerConfig::default(), 1).await;
    let ch = w.channels[0].as_str();
    let mut t = Tether::listen(&w, &[ch]);
    t.live(&[ch]).await;

    let stalled_at = Instant::now();
    assert!(w.server.faults().stall(false) >= 1);
    let read = t
        .until("reconnecting: heartbeat_timeout", |v| {
            is_status(v, "reconnecting")
        })
        .await;
    let took = stalled_at.elapsed();
    let status = &read.last().unwrap()["payload"];
    assert_eq!(status["reason"], "heartbeat_timeout", "{status}");
    // Interval 1 s + timeout 1 s: at most ~2 s after the stall; generous for a busy machine.
    assert!(
        took < Duration::from_secs(6),
        "dead link noticed after {took:?}"
    );

    // It comes back on a new socket, subscribed again.
    t.live(&[ch]).await;
    let id = post(&w, ch, "after the stall");
    t.until("the message after the stall", |v| {
        event(v) == "ws:message_new" && v["payload"]["message"]["id"] == id.as_str()
    })
    .await;
    let all = t.stop().await;
    assert_same_ids(&message_ids(&all), ch, &[id]);
}

// ---------------------------------------------------------------------------------------------
// 4. Refused upgrades: backoff within bounds, Retry-After honoured.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn refused_upgrades_back_off_within_bounds_and_honour_retry_after() {
    let w = World::start(ServerConfig::default(), 1).await;
    let ch = w.channels[0].as_str();
    let mut t = Tether::listen(&w, &[ch]);
    t.live(&[ch]).await;

    let faults = w.server.faults();
    faults.refuse_upgrades(503, None, Some(3));
    let upgrades_before = w.server.upgrades();
    assert!(faults.drop_all() >= 1);
    let read = t.until_event("ws:connected").await;
    assert_eq!(
        w.server.upgrades() - upgrades_before,
        4,
        "three refused upgrades, then one accepted"
    );
    let retries: Vec<&Value> = read
        .iter()
        .filter(|v| is_status(v, "reconnecting"))
        .map(|v| &v["payload"])
        .collect();
    // Retry n after the drop is attempt n: 1 for the drop, 2..=4 for the three refusals. (A
    // status the app was too slow to see before the next one is folded into it, so a busy
    // machine may skip one; none is ever out of order.)
    let attempts: Vec<u64> = retries
        .iter()
        .filter_map(|p| p["attempt"].as_u64())
        .collect();
    assert!(
        attempts.windows(2).all(|w| w[0] < w[1]) && attempts.last() == Some(&4),
        "one retry per refusal: {retries:?}"
    );
    assert!(attempts.len() >= 3, "{retries:?}");
    for p in &retries {
        let want = if p["attempt"] == 1 {
            "connection_lost"
        } else {
            "server_unavailable"
        };
        assert_eq!(p["reason"], want, "{p}");
    }
    for p in &retries {
        let n = p["attempt"].as_u64().unwrap();
        let cap = BACKOFF_MAX_MS.min(BACKOFF_BASE_MS << (n - 1));
        let wait = p["retry_in_ms"].as_u64().unwrap();
        assert!(
            (cap / 2..=cap).contains(&wait),
            "attempt {n}: {wait} ms outside [{}, {cap}]",
            cap / 2
        );
    }

    // 429 with Retry-After: 2 s: the client waits at least that long, and says so.
    faults.refuse_upgrades(429, Some(Duration::from_secs(2)), Some(1));
    assert!(faults.drop_all() >= 1);
    t.until("reconnecting: rate_limited", |v| {
        is_status(v, "reconnecting") && v["payload"]["reason"] == "rate_limited"
    })
    .await;
    let limited_at = Instant::now();
    let status = t.seen.last().unwrap()["payload"].clone();
    let wait = status["retry_in_ms"].as_u64().unwrap();
    assert!(
        (2000..10_000).contains(&wait),
        "Retry-After 2 s honoured: {status}"
    );
    t.until("the retry after the 429", |v| is_status(v, "connecting"))
        .await;
    let waited = limited_at.elapsed();
    assert!(
        waited >= Duration::from_millis(1900),
        "retried after {waited:?}, before Retry-After"
    );
    t.live(&[ch]).await;
    t.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5 and 6. 401 on the upgrade: give up (exit 2) without a refresh token, refresh with one.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_rejected_token_without_refresh_exits_2_with_one_line() {
    let w = World::start(ServerConfig::default(), 1).await;
    let ch = w.channels[0].as_str();
    let token = w.alice.access_token.expose().to_owned();
    let mut t = Tether::spawn(&listen_args(&w, &["--token", &token], &[ch]), true);
    t.live(&[ch]).await;

    let faults = w.server.faults();
    faults.revoke_tokens();
    let upgrades_before = w.server.upgrades();
    let dropped_at = Instant::now();
    assert!(faults.drop_all() >= 1);
    let code = t.exit(Duration::from_secs(10)).await;
    let took = dropped_at.elapsed();
    assert_eq!(
        code,
        Some(2),
        "exit 2 for rejected credentials\n{}",
        t.context()
    );
    assert!(took < Duration::from_secs(5), "gave up after {took:?}");
    let upgrades = w.server.upgrades() - upgrades_before;
    assert!(
        (1..=2).contains(&upgrades),
        "{upgrades} upgrade attempts after the drop"
    );

    // The reason: one line, the last on stderr (logs, if any, come before it).
    let stderr = t.stderr();
    assert_no_panic(&stderr, "listen");
    let reasons: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("tether: "))
        .collect();
    assert_eq!(reasons.len(), 1, "one reason on stderr: {stderr:?}");
    assert_eq!(stderr.lines().last(), Some(reasons[0]), "{stderr:?}");
    assert!(reasons[0].contains("credentials"), "{stderr:?}");
    assert!(!stderr.contains(&token), "the token is never printed");

    let n = t.seen.len();
    assert!(n >= 2, "{}", t.context());
    assert_eq!(
        t.seen[n - 2],
        json!({"event": "ws:status", "payload": {"status": "failed", "reason": "auth", "http_status": 401}})
    );
    assert_eq!(
        t.seen[n - 1],
        json!({"event": "ws:disconnected", "payload": null})
    );
    check_status_pairs(&t.seen);
}

#[tokio::test]
async fn a_forbidden_upgrade_exits_1_with_one_line() {
    let w = World::start(ServerConfig::default(), 1).await;
    let ch = w.channels[0].as_str();
    let mut t = Tether::listen(&w, &[ch]);
    t.live(&[ch]).await;
    let faults = w.server.faults();
    faults.refuse_upgrades(403, None, None);
    assert!(faults.drop_all() >= 1);
    let code = t.exit(Duration::from_secs(10)).await;
    assert_eq!(code, Some(1), "{}", t.context());
    let n = t.seen.len();
    assert_eq!(
        t.seen[n - 2]["payload"],
        json!({"status": "failed", "reason": "forbidden", "http_status": 403})
    );
    check_status_pairs(&t.seen);
    let stderr = t.stderr();
    assert_no_panic(&stderr, "listen");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("tether: ") && last.contains("403"),
        "{stderr:?}"
    );
}

#[tokio::test]
async fn an_expired_token_is_refreshed_and_nothing_posted_meanwhile_is_lost() {
    let w = World::start(ServerConfig::default(), 1).await;
    let ch = w.channels[0].as_str();
    let mut t = Tether::listen(&w, &[ch]);
    t.live(&[ch]).await;
    let mut posted = vec![post(&w, ch, "before")];
    t.until_event("ws:message_new").await;

    let faults = w.server.faults();
    faults.expire_tokens();
    assert!(faults.drop_all() >= 1);
    for i in 0..5 {
        posted.push(post(&w, ch, &format!("while away {i}")));
    }
    t.until_event("ws:connected").await;
    let read = t.until_event("ws:resynced").await;
    let p = &read.last().unwrap()["payload"];
    assert_eq!(p["complete"], true, "{p}");
    posted.push(post(&w, ch, "after the refresh"));
    let last = posted.last().unwrap().clone();
    t.until("the message after the refresh", |v| {
        event(v) == "ws:message_new" && v["payload"]["message"]["id"] == last.as_str()
    })
    .await;

    let all = t.stop().await;
    assert_same_ids(&message_ids(&all), ch, &posted);
    assert!(
        !all.iter().any(|v| is_status(v, "failed")),
        "a refreshable token never fails the connection"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Server restart.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_server_restart_is_survived_with_subscriptions_replayed() {
    let mut w = World::start(ServerConfig::default(), 2).await;
    let chs = w.channels.clone();
    let ch: Vec<&str> = chs.iter().map(String::as_str).collect();
    let mut t = Tether::listen(&w, &ch);
    t.live(&ch).await;
    let mut posted: Vec<(String, String)> = Vec::new();
    for c in &ch {
        posted.push(((*c).to_owned(), post(&w, c, "before the restart")));
    }
    let mut n = 0;
    t.until("the messages before the restart", |v| {
        n += usize::from(event(v) == "ws:message_new");
        n == 2
    })
    .await;

    w.server
        .restart(Duration::from_millis(500))
        .await
        .expect("restart");
    for c in &ch {
        posted.push(((*c).to_owned(), post(&w, c, "just after the restart")));
    }
    // Back: connected, every channel subscribed again (the server forgot them all), and each
    // caught up.
    let mut resynced = Vec::new();
    let mut count = |v: &Value| {
        if event(v) == "ws:resynced" {
            assert_eq!(v["payload"]["complete"], true, "{v}");
            resynced.push(v["payload"]["channel_id"].as_str().unwrap().to_owned());
        }
        resynced.len() == 2
    };
    let read = t.live(&ch).await;
    if !read.iter().any(&mut count) {
        t.until("a resynced per channel", count).await;
    }
    resynced.sort();
    let mut want = chs.clone();
    want.sort();
    assert_eq!(resynced, want);

    for c in &ch {
        posted.push(((*c).to_owned(), post(&w, c, "live after the restart")));
    }
    let last = posted.last().unwrap().1.clone();
    t.until("the live messages after the restart", |v| {
        event(v) == "ws:message_new" && v["payload"]["message"]["id"] == last.as_str()
    })
    .await;

    let all = t.stop().await;
    let got = message_ids(&all);
    for c in &ch {
        let want: Vec<String> = posted
            .iter()
            .filter(|(pc, _)| pc == c)
            .map(|(_, id)| id.clone())
            .collect();
        let got: Vec<(String, String)> = got.iter().filter(|(gc, _)| gc == c).cloned().collect();
        assert_same_ids(&got, c, &want);
    }
    assert_eq!(got.len(), posted.len(), "nothing else, nothing twice");
    assert!(all.iter().any(|v| is_status(v, "reconnecting")));
}

// ---------------------------------------------------------------------------------------------
// 8. Usage errors, failures and the REST commands.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn usage_errors_exit_64_with_one_line() {
    let out = run(&["listen"]).await;
    assert_eq!(out.code, Some(64), "{out:?}");
    assert_one_line_error(&out, "listen without --server");
    assert!(out.stderr.contains("--server"), "{out:?}");

    for (args, what) in [
        (
            &[
                "listen",
                "--server",
                "http://127.0.0.1:1",
                "--username",
                "u",
            ][..],
            "--username without --password",
        ),
        (
            &[
                "listen",
                "--server",
                "http://127.0.0.1:1",
                "--token",
                "t",
                "--username",
                "u",
                "--password",
                "p",
            ][..],
            "--token with --username",
        ),
        (
            &[
                "listen",
                "--server",
                "http://127.0.0.1:1",
                "--heartbeat-interval",
                "0",
            ][..],
            "a zero heartbeat interval",
        ),
        (&["listen", "--bogus"][..], "an unknown flag"),
        (&["frobnicate"][..], "an unknown command"),
        (
            &[
                "history",
                "--server",
                "http://127.0.0.1:1",
                "--limit",
                "500",
            ][..],
            "history without --channel and with a bad --limit",
        ),
    ] {
        let out = run(args).await;
        assert_eq!(out.code, Some(64), "{what}: {out:?}");
        assert_one_line_error(&out, what);
    }

    let out = run(&[
        "listen",
        "--server",
        "not-a-url",
        "--username",
        "alice",
        "--password",
        PASSWORD,
        "--json",
    ])
    .await;
    assert!(out.code.is_some_and(|c| c != 0), "{out:?}");
    assert_one_line_error(&out, "--server not-a-url");

    let out = run(&["--help"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("Usage: tether"), "{}", out.stdout);
    for cmd in ["serve", "listen", "send", "history"] {
        assert!(out.stdout.contains(cmd), "--help lists {cmd}");
    }
    let out = run(&["listen", "--help"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    for flag in [
        "--server",
        "--token",
        "--username",
        "--password",
        "--channel",
        "--json",
        "--auth",
        "--heartbeat-interval",
        "--heartbeat-timeout",
        "--backoff-base",
        "--backoff-max",
    ] {
        assert!(out.stdout.contains(flag), "listen --help lists {flag}");
    }
}

#[tokio::test]
async fn failures_exit_non_zero_with_one_line() {
    let nobody = format!("http://{}", free_addr());
    let out = run(&[
        "history",
        "--server",
        &nobody,
        "--username",
        "alice",
        "--password",
        PASSWORD,
        "--channel",
        "c",
    ])
    .await;
    assert_eq!(out.code, Some(1), "unreachable server: {out:?}");
    assert_one_line_error(&out, "history against an unreachable server");

    // `listen` does not give up on an unreachable server: it reports and keeps retrying.
    let mut t = Tether::spawn(
        &[
            "listen",
            "--server",
            &nobody,
            "--token",
            "t",
            "--json",
            "--backoff-base",
            "50",
            "--backoff-max",
            "100",
        ],
        true,
    );
    for attempt in 1..=2 {
        let read = t
            .until("a failed connect", |v| is_status(v, "reconnecting"))
            .await;
        let p = &read.last().unwrap()["payload"];
        assert_eq!(p["reason"], "connect_failed", "{p}");
        assert_eq!(p["attempt"], attempt, "{p}");
    }
    t.stop().await;

    let w = World::start(ServerConfig::default(), 1).await;
    let url = w.server.url();
    let out = run(&[
        "history",
        "--server",
        &url,
        "--username",
        "alice",
        "--password",
        "wrong",
        "--channel",
        &w.channels[0],
    ])
    .await;
    assert_eq!(out.code, Some(2), "a wrong password is exit 2: {out:?}");
    assert_one_line_error(&out, "history with a wrong password");

    let out = run(&[
        "send",
        "--server",
        &url,
        "--username",
        "alice",
        "--password",
        PASSWORD,
        "--channel",
        "no-such-channel",
        "hi",
    ])
    .await;
    assert_eq!(out.code, Some(1), "an unknown channel: {out:?}");
    assert_one_line_error(&out, "send to an unknown channel");
}

#[tokio::test]
#[allow(clippy::print_stderr)] // says why half of it was skipped, on a machine with no network
async fn plain_http_to_a_remote_server_is_refused_before_connecting_unless_insecure() {
    // A password or a token over http:// to a host that is not loopback: exit 64 (the command
    // line must change), one line naming the way out, and no attempt (`.invalid` never
    // resolves: an attempt would end in a network error, exit 1).
    for args in [
        &["listen", "--username", "u", "--password", "p"][..],
        &["listen", "--token", "t", "--json"][..],
        &[
            "send",
            "--username",
            "u",
            "--password",
            "p",
            "--channel",
            "c",
            "hi",
        ][..],
        &["history", "--token", "t", "--channel", "c"][..],
    ] {
        let mut full = vec![args[0], "--server", "http://example.invalid"];
        full.extend_from_slice(&args[1..]);
        let out = run(&full).await;
        assert_eq!(out.code, Some(64), "{full:?}: {out:?}");
        assert_one_line_error(&out, "plain http to a remote host");
        assert!(
            out.stderr.contains("example.invalid") && out.stderr.contains("--insecure"),
            "{out:?}"
        );
        assert!(
            !out.stderr.contains("network"),
            "nothing attempted: {out:?}"
        );
    }

    let Some(ip) = non_loopback_ipv4() else {
        eprintln!("no non-loopback IPv4 address here: the listener half is skipped");
        return;
    };
    // Nothing reaches a real listener on a non-loopback address, not even a TCP handshake.
    let listener = std::net::TcpListener::bind((ip, 0)).expect("listen");
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let out = run(&[
        "listen",
        "--server",
        &url,
        "--username",
        "alice",
        "--password",
        PASSWORD,
    ])
    .await;
    assert_eq!(out.code, Some(64), "{out:?}");
    assert_one_line_error(&out, "plain http to a non-loopback address");
    let accepted = listener.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a connection was attempted: {accepted:?}"
    );

    // `--insecure` governs the REST calls too: the same kind of address, served, works.
    let server = tether_devserver::DevServer::start((ip, 0).into(), ServerConfig::default())
        .await
        .expect("dev server on the non-loopback address");
    server.create_user("alice", PASSWORD).expect("alice");
    let channel = server.create_channel("general");
    server.post(&channel, "alice", "over plain http").unwrap();
    let url = server.url();
    let history = [
        "history",
        "--server",
        &url,
        "--username",
        "alice",
        "--password",
        PASSWORD,
        "--channel",
        &channel,
    ];
    let out = run(&history).await;
    assert_eq!(out.code, Some(64), "without --insecure: {out:?}");
    let mut insecure = history.to_vec();
    insecure.push("--insecure");
    let out = run(&insecure).await;
    assert_eq!(out.code, Some(0), "with --insecure: {out:?}");
    assert!(out.stdout.contains("over plain http"), "{out:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn send_prints_the_created_message_and_history_lists_oldest_first() {
    let w = World::start(ServerConfig::default(), 1).await;
    let ch = w.channels[0].as_str();
    let url = w.server.url();
    let login = ["--username", "alice", "--password", PASSWORD];
    let mut posted = vec![post(&w, ch, "one"), post(&w, ch, "two")];

    let mut args = vec!["send", "--server", &url];
    args.extend(login);
    args.extend(["--channel", ch, "three, with spaces"]);
    let out = run(&args).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 1, "{out:?}");
    let sent: Value = serde_json::from_str(out.stdout.trim()).expect("send prints JSON");
    assert_eq!(sent["content"], "three, with spaces");
    assert_eq!(sent["channel_id"], ch);
    assert_eq!(sent["author"]["username"], "alice");
    let id = sent["id"].as_str().expect("id").to_owned();
    assert!(w.server.with_store(|s| s.find_message(&id).is_some()));
    posted.push(id);

    // With a token instead of a password.
    let token = w.alice.access_token.expose().to_owned();
    let out = run(&[
        "send",
        "--server",
        &url,
        "--token",
        &token,
        "--channel",
        ch,
        "four",
    ])
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let sent: Value = serde_json::from_str(out.stdout.trim()).expect("send prints JSON");
    posted.push(sent["id"].as_str().expect("id").to_owned());

    let mut args = vec!["history", "--server", &url];
    args.extend(login);
    args.extend(["--channel", ch, "--json"]);
    let out = run(&args).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let items: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON message per line"))
        .collect();
    let ids: Vec<&str> = items.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, posted, "oldest first");
    for m in &items {
        let frame = server_frame(&w, m["id"].as_str().unwrap());
        assert_eq!(m, &frame["message"], "the server's message object, as sent");
    }

    let mut args = vec!["history", "--server", &url];
    args.extend(login);
    args.extend(["--channel", ch, "--json", "--limit", "2"]);
    let out = run(&args).await;
    let ids: Vec<String> = out
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, posted[2..], "the newest two, oldest first");

    // Without --json: one readable line per message.
    let mut args = vec!["history", "--server", &url];
    args.extend(login);
    args.extend(["--channel", ch]);
    let out = run(&args).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{out:?}");
    assert!(lines[0].ends_with("bob: one"), "{}", lines[0]);
    assert!(lines[3].ends_with("alice: four"), "{}", lines[3]);
}

// ---------------------------------------------------------------------------------------------
// 9. `serve`, and the bare `tether` (a demo server and an interactive chat).
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn serve_prints_its_address_first_and_serves_there() {
    let addr = free_addr();
    let mut t = Tether::spawn(&["serve", "--addr", &addr.to_string()], false);
    let first = t.next("the listening line").await;
    assert_eq!(first, Value::String(format!("listening on http://{addr}")));

    // It is a working server with the demo data: a listen against it gets connected.
    let ch = {
        let api = tether_tokio::Api::new(&format!("http://{addr}")).expect("api");
        let creds = api
            .login("alice", &tether_core::Secret::new(PASSWORD))
            .await
            .expect("demo login");
        let channels = api.channels(&creds.access_token).await.expect("channels");
        assert_eq!(channels.len(), 3, "demo channels");
        channels[0]["id"].as_str().expect("channel id").to_owned()
    };
    let url = format!("http://{addr}");
    let mut l = Tether::spawn(
        &[
            "listen",
            "--server",
            &url,
            "--username",
            "bob",
            "--password",
            PASSWORD,
            "--channel",
            &ch,
            "--json",
        ],
        true,
    );
    l.live(&[&ch]).await;
    l.stop().await;
    let rest = t.stop().await;
    assert_eq!(rest.first(), Some(&first));
}

/// The bare `tether` with stdin piped (kept open, as a terminal's), once the server has
/// confirmed its current channel: a line posted in it from then on comes back over the socket
/// (before that, the post can reach the server before the subscription).
async fn demo(args: &[&str]) -> (Tether, tokio::process::ChildStdin) {
    let mut cmd = tether_cmd(args);
    cmd.stdin(Stdio::piped());
    let mut t = Tether::spawn_cmd(cmd, false);
    let stdin = t.child.stdin.take().expect("stdin");
    t.until("the demo banner", |v| {
        v.as_str()
            .is_some_and(|l| l.starts_with("tether demo: dev server on http://127.0.0.1:"))
    })
    .await;
    t.until("connected", |v| v.as_str() == Some("-- connected"))
        .await;
    let current = t
        .seen
        .iter()
        .filter_map(|v| v.as_str())
        .find_map(|l| l.strip_prefix("* #"))
        .and_then(|l| l.split(' ').next())
        .map(|name| format!("-- joined #{name}"))
        .expect("the current channel is marked");
    t.until("joined", |v| v.as_str() == Some(current.as_str()))
        .await;
    (t, stdin)
}

async fn type_line(stdin: &mut tokio::process::ChildStdin, line: &str) {
    stdin
        .write_all(format!("{line}\n").as_bytes())
        .await
        .expect("write stdin");
    stdin.flush().await.expect("flush stdin");
}

/// Types `/quit` and checks the demo ends cleanly.
async fn quit(mut t: Tether, mut stdin: tokio::process::ChildStdin) {
    type_line(&mut stdin, "/quit").await;
    let code = t.exit(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "{}", t.context());
    assert_no_panic(&t.stderr(), "tether");
}

/// A message line of the demo's simulated users: `[#general] bob: ...`.
fn is_simulated_post(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|l| l.starts_with("[#") && (l.contains("] bob: ") || l.contains("] carol: ")))
}

/// `  bob is typing in #general…`.
fn is_simulated_typing(v: &Value) -> bool {
    v.as_str().is_some_and(|l| {
        (l.starts_with("  bob is typing in #") || l.starts_with("  carol is typing in #"))
            && l.ends_with('…')
    })
}

/// The simulated users' pace in the demo tests: seconds between one user's posts, on average.
const DEMO_PACE: &str = "0.2";

#[tokio::test]
async fn bare_tether_starts_a_demo_chat_and_quits_on_request() {
    let (mut t, mut stdin) = demo(&[]).await;
    type_line(&mut stdin, "hello demo").await;
    t.until("the posted line", |v| {
        v.as_str()
            .is_some_and(|l| l.ends_with("] alice: hello demo"))
    })
    .await;
    // Stdin stays open (a terminal): /quit alone must end it.
    quit(t, stdin).await;
}

#[tokio::test]
async fn the_demos_simulated_users_type_and_post_until_told_to_be_quiet() {
    let (mut t, mut stdin) = demo(&["--demo-pace", DEMO_PACE]).await;
    t.until("a simulated user typing", is_simulated_typing)
        .await;
    t.until("a simulated user's message", is_simulated_post)
        .await;

    type_line(&mut stdin, "/quiet").await;
    t.until("quiet", |v| {
        v.as_str()
            .is_some_and(|l| l.starts_with("-- bob and carol are quiet"))
    })
    .await;
    // Fences: alice's lines come back in order with everything broadcast before them. What
    // was under way when /quiet returned arrives before the first; nothing may come between
    // the two, over many of the simulated users' paces.
    type_line(&mut stdin, "fence one").await;
    t.until("the first fence", |v| {
        v.as_str()
            .is_some_and(|l| l.ends_with("] alice: fence one"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    type_line(&mut stdin, "fence two").await;
    let between = t
        .until("the second fence", |v| {
            v.as_str()
                .is_some_and(|l| l.ends_with("] alice: fence two"))
        })
        .await;
    let noise: Vec<&Value> = between
        .iter()
        .filter(|v| is_simulated_post(v) || is_simulated_typing(v))
        .collect();
    assert!(noise.is_empty(), "quiet, yet: {noise:?}");

    // /quiet again: they are back.
    type_line(&mut stdin, "/quiet").await;
    t.until("back", |v| v.as_str() == Some("-- bob and carol are back"))
        .await;
    t.until("a simulated user's message after /quiet", is_simulated_post)
        .await;
    quit(t, stdin).await;
}

#[tokio::test]
async fn after_a_drop_the_demo_marks_caught_up_messages_then_says_resynced() {
    let (mut t, mut stdin) = demo(&["--demo-pace", DEMO_PACE]).await;
    type_line(&mut stdin, "/quiet on").await;
    // A line echoed live: it reads the server's message clock (D68), so the catch-up can
    // prove the gap closed even if no one else had posted yet.
    type_line(&mut stdin, "before the drop").await;
    t.until("the echoed line", |v| {
        v.as_str()
            .is_some_and(|l| l.contains("] alice: before the drop"))
    })
    .await;
    // Posted right after the drop, while the next two upgrades are refused: the socket stays
    // down for two backoff waits (at least 1.5 s), so the line can only come back through the
    // catch-up, however loaded the machine.
    type_line(&mut stdin, "/refuse 503 2").await;
    type_line(&mut stdin, "/drop").await;
    type_line(&mut stdin, "posted while down").await;
    let read = t
        .until("the caught-up line", |v| {
            v.as_str()
                .is_some_and(|l| l.contains("] alice: posted while down"))
        })
        .await;
    let line = read.last().and_then(Value::as_str).unwrap_or_default();
    assert!(
        line.starts_with("[#") && line.ends_with("] alice: posted while down  ↺ caught up"),
        "not marked as caught up: {line}\n{}",
        t.context()
    );
    assert!(
        read.iter()
            .any(|v| v.as_str().is_some_and(|l| l.starts_with("-- dropped "))),
        "{}",
        t.context()
    );
    // Its channel's summary follows: how many came back, and that the gap closed.
    let channel = line
        .strip_prefix('[')
        .and_then(|l| l.split(']').next())
        .expect("a channel")
        .to_owned();
    let summary = t
        .until("the resynced line", |v| {
            v.as_str()
                .is_some_and(|l| l.starts_with(&format!("-- resynced {channel}: ")))
        })
        .await;
    let summary = summary.last().and_then(Value::as_str).unwrap_or_default();
    assert!(
        summary.ends_with("message(s) caught up, complete") && !summary.contains(": 0 "),
        "{summary}"
    );
    quit(t, stdin).await;
}

#[cfg(unix)]
#[tokio::test]
async fn listen_ends_cleanly_on_sigterm() {
    let w = World::start(ServerConfig::default(), 1).await;
    let ch = w.channels[0].as_str();
    let mut t = Tether::listen(&w, &[ch]);
    t.live(&[ch]).await;
    let pid = t.child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let code = t.exit(Duration::from_secs(5)).await;
    assert_eq!(code, Some(0), "{}", t.context());
    assert_no_panic(&t.stderr(), "listen");
    check_status_pairs(&t.seen);
}

#[tokio::test]
async fn listen_v_says_which_protocol_the_server_agreed_to() {
    // The default dev server speaks v2 and prefers the client's first offer: MessagePack.
    let w = World::start(ServerConfig::default(), 1).await;
    let ch = w.channels[0].as_str();
    let args: Vec<String> = [
        "-v",
        "listen",
        "--server",
        &w.server.url(),
        "--username",
        "alice",
        "--password",
        PASSWORD,
        "--channel",
        ch,
    ]
    .map(str::to_owned)
    .to_vec();
    let mut t = Tether::spawn(&args, false);
    t.until("the protocol line", |v| {
        v.as_str() == Some("-- protocol v2 (msgpack, batched)")
    })
    .await;
    t.stop().await;
    // Without v2 on the server, the same client says v1.
    let mut config = ServerConfig::default();
    config.v2.json = false;
    config.v2.msgpack = false;
    let w = World::start(config, 1).await;
    let ch = w.channels[0].as_str();
    let mut args = args;
    args[3] = w.server.url();
    args[9] = ch.to_owned();
    let mut t = Tether::spawn(&args, false);
    t.until("the protocol line", |v| {
        v.as_str() == Some("-- protocol v1 (Kaiku JSON)")
    })
    .await;
    t.stop().await;
}

#[tokio::test]
async fn listen_deflate_offers_compression_and_v_says_what_was_agreed() {
    let w = World::start(ServerConfig::default(), 1).await;
    let ch = w.channels[0].as_str();
    let args: Vec<String> = [
        "-v",
        "listen",
        "--server",
        &w.server.url(),
        "--username",
        "alice",
        "--password",
        PASSWORD,
        "--channel",
        ch,
        "--deflate",
        "--deflate-window-bits",
        "10",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut t = Tether::spawn(&args, false);
    t.until("the protocol line", |v| {
        v.as_str()
            == Some(
                "-- protocol v2 (msgpack, batched), permessage-deflate (window 10 bits, context takeover)",
            )
    })
    .await;
    // Messages arrive through the compressed socket, once the channel is live.
    t.until("subscribed", |v| {
        v.as_str().is_some_and(|l| l.starts_with("ws:subscribed"))
    })
    .await;
    w.server.post(ch, "bob", "squeezed").expect("post");
    t.until("the post", |v| {
        v.as_str().is_some_and(|l| l.contains("squeezed"))
    })
    .await;
    t.stop().await;
}
