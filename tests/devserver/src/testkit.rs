//! A bare HTTP/1.1 and WebSocket client over loopback, for the crate's own tests: just
//! enough to see the server's answers byte for byte, with no client library in between.

// Each test module uses the helpers it needs.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A REST answer: status, headers (names lowercased) and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// A header's value, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// Sends one request (`Connection: close`) and reads the whole answer.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    tcp.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut raw))
        .await
        .expect("answered in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// `GET path` with a bearer token.
pub async fn get(addr: SocketAddr, path: &str, token: &str) -> Answer {
    let auth = format!("Bearer {token}");
    http(addr, "GET", path, &[("Authorization", &auth)], None).await
}

/// A client socket on `/ws`, v1.
#[derive(Debug)]
pub struct Ws {
    tcp: TcpStream,
}

impl Ws {
    /// Upgrades with the browser's subprotocols (`access_token.<jwt>, access_token`).
    pub async fn connect(addr: SocketAddr, token: &str) -> Self {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Protocol: access_token.{token}, access_token\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.expect("send");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            tcp.read_exact(&mut b).await.expect("a head");
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Self { tcp }
    }

    /// Sends a text frame (masked with a zero key, which leaves the payload as is).
    pub async fn send(&mut self, text: &str) {
        let len = text.len();
        let mut frame = vec![0x81];
        if len < 126 {
            frame.push(0x80 | u8::try_from(len).expect("small"));
        } else {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&u16::try_from(len).expect("fits").to_be_bytes());
        }
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(text.as_bytes());
        self.tcp.write_all(&frame).await.expect("send a frame");
    }

    /// The next text frame within `wait`, or `None`.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<String> {
        tokio::time::timeout(wait, self.recv()).await.ok()
    }

    /// The next text frame (others are skipped).
    async fn recv(&mut self) -> String {
        loop {
            let mut h = [0u8; 2];
            self.tcp.read_exact(&mut h).await.expect("a frame");
            let mut len = u64::from(h[1] & 0x7f);
            if len == 126 {
                let mut b = [0u8; 2];
                self.tcp.read_exact(&mut b).await.expect("a length");
                len = u64::from(u16::from_be_bytes(b));
            } else if len == 127 {
                let mut b = [0u8; 8];
                self.tcp.read_exact(&mut b).await.expect("a length");
                len = u64::from_be_bytes(b);
            }
            let mut payload = vec![0u8; usize::try_from(len).expect("fits")];
            self.tcp.read_exact(&mut payload).await.expect("a payload");
            if h[0] & 0x0f == 1 {
                return String::from_utf8(payload).expect("UTF-8");
            }
        }
    }

    /// The next text frame as JSON, within 5 s.
    pub async fn event(&mut self) -> serde_json::Value {
        let text = self
            .recv_within(Duration::from_secs(5))
            .await
            .expect("an event in time");
        serde_json::from_str(&text).expect("JSON")
    }

    /// Waits for the next event of `kind`, skipping others, within 5 s.
    pub async fn event_of(&mut self, kind: &str) -> serde_json::Value {
        loop {
            let e = self.event().await;
            if e["type"] == kind {
                return e;
            }
        }
    }

    /// Subscribes to `channel_id` and waits for `subscribed`.
    pub async fn subscribe(&mut self, channel_id: &str) {
        self.send(&format!(
            r#"{{"type":"subscribe","channel_id":"{channel_id}"}}"#
        ))
        .await;
        let e = self.event_of("subscribed").await;
        assert_eq!(e["channel_id"], channel_id);
    }
}

/// A server on loopback with `config`, and a user `name` with its access token.
pub async fn server_with_user(
    config: crate::ServerConfig,
    name: &str,
) -> (crate::DevServer, String) {
    let server = crate::DevServer::start(([127, 0, 0, 1], 0).into(), config)
        .await
        .expect("dev server starts");
    let token = token_of(&server, name);
    (server, token)
}

/// Registers `name` and returns its access token.
pub fn token_of(server: &crate::DevServer, name: &str) -> String {
    let t = server.create_user(name, "password123").expect("a new user");
    t["access_token"].as_str().expect("a token").to_owned()
}
