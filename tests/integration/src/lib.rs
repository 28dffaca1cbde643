//! Helpers for the end-to-end tests in `tests/`: a dev server with a user and channels, a
//! client logged in to it, and waits with deadlines (a test never hangs); real proxies and a
//! TLS-inspecting gateway on loopback in [`components`].

#![warn(missing_docs)]

use std::time::Duration;

use tether_core::{Credentials, Event, ServerEventKind, Status};
use tether_devserver::{DevServer, ServerConfig};
use tether_tokio::{Client, ClientConfig, Events};

pub mod components;

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// A dev server with user `alice` (and `bob` to post as) and `channels` channels.
#[derive(Debug)]
pub struct World {
    /// The server.
    pub server: DevServer,
    /// Channel ids.
    pub channels: Vec<String>,
    /// Alice's credentials.
    pub alice: Credentials,
}

impl World {
    /// Starts a server with `config` on a free loopback port.
    pub async fn start(config: ServerConfig, channels: usize) -> Self {
        let server = DevServer::start(([127, 0, 0, 1], 0).into(), config)
            .await
            .expect("dev server starts");
        let alice = server.create_user("alice", "password123").expect("alice");
        server.create_user("bob", "password123").expect("bob");
        let alice = Credentials::from_token_response(alice.to_string().as_bytes()).expect("tokens");
        let channels = (0..channels)
            .map(|i| server.create_channel(&format!("c{i}")))
            .collect();
        Self {
            server,
            channels,
            alice,
        }
    }

    /// Client settings for this server with a fixed seed and fast timers for tests, offering
    /// the link `TETHER_TEST_LINK` names (see [`apply_test_link`]).
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new(&self.server.url()).expect("config");
        c.core.seed = 7;
        c.core.backoff.base = Duration::from_millis(100);
        c.core.backoff.max = Duration::from_millis(800);
        apply_test_link(&mut c);
        c
    }

    /// Gives every channel `per_channel` messages posted ten minutes ago (before any client
    /// subscribes): the history a real channel has. A catch-up then finds the end of what it
    /// owes below the subscription on its first page, as against a real server; a channel
    /// with nothing older makes it prove where its history ends (two more reads, D73).
    pub fn add_old_history(&self, per_channel: usize) {
        let fresh: Vec<String> = self
            .channels
            .iter()
            .flat_map(|ch| {
                (0..per_channel).map(move |i| {
                    self.server
                        .post(ch, "bob", &format!("old {i}"))
                        .expect("post")
                })
            })
            .collect();
        self.server.with_store(|s| {
            for m in s.channels.values_mut().flat_map(|c| c.messages.iter_mut()) {
                if fresh.contains(&m.id) {
                    m.created_at -= std::time::Duration::from_secs(600);
                }
            }
        });
    }

    /// A client for alice with `config`, subscribed to every channel, connected.
    pub async fn client(&self, config: ClientConfig) -> (Client, Events) {
        let (client, events) = Client::spawn(config, self.alice.clone()).expect("spawn");
        for ch in &self.channels {
            client.subscribe(ch).await.expect("subscribe");
        }
        client.connect().expect("connect");
        (client, events)
    }
}

/// What the client offers, from `TETHER_TEST_LINK`, so one suite runs over every pairing
/// (scripts/test.sh runs the fault suites once per value): `v1` (no v2 offer), `v2-json`,
/// `v2-msgpack` (the default offer, also when unset), and either v2 value with `+deflate`
/// (permessage-deflate offered, the yawc transport). Anything else is a panic, not a silent
/// default.
pub fn apply_test_link(config: &mut ClientConfig) {
    use tether_core::wire::{DeflateOffer, Encoding};
    let link = std::env::var("TETHER_TEST_LINK").unwrap_or_default();
    let (protocol, deflate) = match link.split_once('+') {
        Some((p, "deflate")) => (p, true),
        Some(_) => panic!("TETHER_TEST_LINK={link}: only `+deflate` may follow"),
        None => (link.as_str(), false),
    };
    config.core.v2 = match protocol {
        "v1" => Vec::new(),
        "v2-json" => vec![Encoding::Json],
        "" | "v2-msgpack" => vec![Encoding::Msgpack, Encoding::Json],
        other => panic!("TETHER_TEST_LINK: unknown protocol `{other}`"),
    };
    config.core.deflate = deflate.then(DeflateOffer::default);
}

/// The next event, or a panic naming what was awaited.
pub async fn next(events: &mut Events, what: &str) -> Event {
    match tokio::time::timeout(WAIT, events.recv()).await {
        Ok(Some(e)) => e,
        Ok(None) => panic!("event stream ended while waiting for {what}"),
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Reads events until `pred` matches one; returns everything read, the match last.
pub async fn until(
    events: &mut Events,
    what: &str,
    mut pred: impl FnMut(&Event) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        let e = next(events, what).await;
        let done = pred(&e);
        seen.push(e);
        if done {
            return seen;
        }
    }
}

/// Waits for `connected` and for `n` `subscribed` confirmations.
pub async fn until_live(events: &mut Events, n: usize) -> Vec<Event> {
    let mut subscribed = 0;
    let mut connected = false;
    until(events, "connected and subscribed", |e| {
        match e {
            Event::Status(Status::Connected { .. }) => connected = true,
            Event::Server(s) if matches!(s.kind(), ServerEventKind::Subscribed { .. }) => {
                subscribed += 1
            }
            _ => {}
        }
        connected && subscribed >= n
    })
    .await
}

/// Posts one message on `channel` as bob and waits until it arrives live. A live message is
/// the core's reading of the server's message clock (D68): until one has arrived, a channel
/// that never saw a message cannot prove a catch-up complete, and ends `complete: false`.
pub async fn read_message_clock(server: &DevServer, channel: &str, events: &mut Events) {
    let id = server
        .post(channel, "bob", "reads the message clock")
        .expect("post");
    until(events, "a live message", |e| {
        messages(std::slice::from_ref(e)).iter().any(|m| m.1 == id)
    })
    .await;
}

/// The reason and detail of a `failed` status.
pub fn failed(e: &Event) -> Option<(tether_core::FailReason, Option<String>)> {
    match e {
        Event::Status(Status::Failed { reason, detail, .. }) => Some((*reason, detail.clone())),
        _ => None,
    }
}

/// The attempt, reason and detail of a `reconnecting` status.
pub fn waiting(e: &Event) -> Option<(u32, tether_core::ReconnectReason, Option<String>)> {
    match e {
        Event::Status(Status::Reconnecting {
            attempt,
            reason,
            detail,
            ..
        }) => Some((*attempt, *reason, detail.clone())),
        _ => None,
    }
}

/// A road through `proxy` (`none`, `system` or a proxy URL).
pub fn network(proxy: &str) -> tether_tokio::Network {
    let mut n = tether_tokio::Network::default();
    n.proxy = proxy.parse().expect("a proxy setting");
    n
}

/// Message ids of the `message_new` events among `events`, in order, with their channel.
pub fn messages(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Server(s) => match s.kind() {
                ServerEventKind::MessageNew {
                    channel_id,
                    message,
                } => Some((channel_id.to_string(), message.id.to_string())),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// A field of `/proc/self/status` in KiB (`VmRSS:`, `VmHWM:`); 0 where there is none.
pub fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A dev server in a child process, for the load programs that measure the client's own
/// memory and CPU: this binary run again with `--serve` and `args`. The child prints one JSON
/// line (its URL, channels, tokens) and then takes commands on its stdin.
#[derive(Debug)]
pub struct ServerChild {
    /// The process (killed when dropped).
    pub child: tokio::process::Child,
    /// Its commands.
    pub stdin: tokio::process::ChildStdin,
    /// Its answers, after the first line.
    pub lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    /// Its first line.
    pub hello: serde_json::Value,
}

impl ServerChild {
    /// Starts the child and reads its first line.
    pub async fn spawn(args: &[&str]) -> Result<Self, String> {
        use tokio::io::AsyncBufReadExt as _;
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut child = tokio::process::Command::new(exe)
            .arg("--serve")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("server process: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let hello = lines
            .next_line()
            .await
            .ok()
            .flatten()
            .ok_or("no hello from the server")?;
        let hello = serde_json::from_str(&hello).map_err(|e| format!("hello: {e}"))?;
        Ok(Self {
            child,
            stdin,
            lines,
            hello,
        })
    }
}

/// Raw WebSocket servers that answer the upgrade, and then write, whatever a test says: what
/// no honest server would, to see the client refuse it.
pub mod raw {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Reads a request head (up to its blank line); `None` if the peer went away first.
    pub async fn read_head(tcp: &mut tokio::net::TcpStream) -> Option<String> {
        let mut buf = [0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        Some(String::from_utf8_lossy(&head).into_owned())
    }

    /// [`upgrade_server_with`] selecting `access_token`, as a v1 server does.
    pub async fn upgrade_server(extensions: Option<&'static str>, frames: Vec<u8>) -> String {
        upgrade_server_with(Some("access_token"), extensions, frames).await
    }

    /// A server that upgrades every connection properly (the right accept key), answering
    /// `protocol` as its `Sec-WebSocket-Protocol` and `extensions` as its
    /// `Sec-WebSocket-Extensions` (`None`: no such header), then writes `frames` (raw bytes)
    /// and holds the connection. Each header value is written as is, so
    /// `"a\r\nsec-websocket-extensions: b"` sends two lines.
    pub async fn upgrade_server_with(
        protocol: Option<&'static str>,
        extensions: Option<&'static str>,
        frames: Vec<u8>,
    ) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let frames = frames.clone();
                tokio::spawn(async move {
                    let Some(head) = read_head(&mut tcp).await else {
                        return;
                    };
                    let key = head
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("sec-websocket-key")
                                .then(|| value.trim().to_owned())
                        })
                        .unwrap_or_default();
                    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(
                        key.as_bytes(),
                    );
                    let mut resp = format!(
                        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n"
                    );
                    if let Some(p) = protocol {
                        resp.push_str(&format!("sec-websocket-protocol: {p}\r\n"));
                    }
                    if let Some(e) = extensions {
                        resp.push_str(&format!("sec-websocket-extensions: {e}\r\n"));
                    }
                    resp.push_str("\r\n");
                    let _ = tcp.write_all(resp.as_bytes()).await;
                    let _ = tcp.write_all(&frames).await;
                    tokio::time::sleep(Duration::from_secs(120)).await;
                });
            }
        });
        format!("http://{addr}")
    }

    /// `message` as a permessage-deflate payload (RFC 7692, 7.2.1): raw DEFLATE ended by a
    /// sync flush, whose trailing `00 00 ff ff` is removed.
    pub fn deflated(message: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        // Writing to a Vec cannot fail.
        let _ = e.write_all(message);
        let _ = e.flush();
        let mut out = std::mem::take(e.get_mut());
        if out.ends_with(&[0, 0, 0xff, 0xff]) {
            out.truncate(out.len() - 4);
        }
        out
    }

    /// What a v2 MessagePack server writes to flood a client: a `ready`, then `batches`
    /// binary frames of `batch` events each (`{"type":"flood","n":N}`, N counting from 0:
    /// an event type the core passes through and never coalesces). With `batch` at
    /// `MAX_BATCH` (1,024), each frame is as many events as v2 allows.
    pub fn msgpack_flood(batches: usize, batch: usize) -> Vec<u8> {
        let encode = |json: &str| tether_core::wire::to_msgpack(json).expect("JSON");
        let mut out = frame(0x2, false, &encode(r#"{"type":"ready","user_id":"u"}"#));
        for b in 0..batches {
            let events: Vec<String> = (b * batch..(b + 1) * batch)
                .map(|n| format!(r#"{{"type":"flood","n":{n}}}"#))
                .collect();
            out.extend(frame(
                0x2,
                false,
                &encode(&format!("[{}]", events.join(","))),
            ));
        }
        out
    }

    /// An unmasked server frame: FIN, `rsv1` (compressed) as asked, `opcode`, `payload`.
    pub fn frame(opcode: u8, rsv1: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | if rsv1 { 0x40 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 0xffff => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }
}
