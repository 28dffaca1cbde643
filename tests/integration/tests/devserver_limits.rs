//! The dev server's rate limits, REST latency and read log, over raw HTTP on loopback: what a
//! client meets is what the real Kaiku server sends (`shared/reference/kaiku/rate-limits.txt`).
//!
//! Requests go out as bare HTTP/1.1 over a `TcpStream` (one connection each, `Connection:
//! close`), so every header and body byte is the server's own.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tether_devserver::{DevServer, Limit, RateLimits, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An answer: status, headers (names in lower case), body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn num(&self, name: &str) -> u64 {
        self.header(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no numeric {name} in {self:?}"))
    }

    fn has_budget_headers(&self) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.starts_with("x-ratelimit"))
    }
}

/// Parses a response head (status line and headers, through the blank line).
fn parse_head(head: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

/// One request on its own connection; reads the answer to the end.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Reply {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() {
        req.push_str("content-type: application/json\r\n");
    }
    req.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    tcp.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.expect("read");
    let raw = String::from_utf8(raw).expect("utf-8 answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a whole head");
    let (status, headers) = parse_head(head);
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

async fn get(addr: SocketAddr, path: &str, token: &str) -> Reply {
    http(addr, "GET", path, Some(token), None).await
}

/// A server with `limits`, headers on or off, and `latency` before each REST answer.
async fn server(limits: RateLimits, headers: bool, latency: Duration) -> DevServer {
    let mut config = ServerConfig::default();
    config.rate_limits = limits;
    config.rate_limit_headers = headers;
    config.rest_latency = latency;
    DevServer::start(([127, 0, 0, 1], 0).into(), config)
        .await
        .expect("dev server starts")
}

fn reads(limit: Limit) -> RateLimits {
    let mut l = RateLimits::default();
    l.read = Some(limit);
    l
}

/// Limits on Kaiku's write routes, which history and the channel list fall under.
fn writes(limit: Limit) -> RateLimits {
    let mut l = RateLimits::default();
    l.write = Some(limit);
    l
}

/// Registers `name` and returns its access and refresh tokens.
fn user(server: &DevServer, name: &str) -> (String, String) {
    let t = server.create_user(name, "password123").expect("user");
    let field = |f: &str| t[f].as_str().expect("token").to_owned();
    (field("access_token"), field("refresh_token"))
}

fn kaiku_429(secs: u64, limit: u32) -> String {
    format!(
        r#"{{"error":"rate_limited","message":"Too many requests. Wait {secs} seconds.","retry_after":{secs},"limit":{limit},"remaining":0}}"#
    )
}

fn epoch_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

const FIVE_PER_2S: Limit = Limit::new(5, Duration::from_secs(2));

#[tokio::test]
async fn budget_headers_count_down_and_the_read_past_the_budget_gets_kaikus_429() {
    let server = server(writes(FIVE_PER_2S), true, Duration::ZERO).await;
    let (alice, _) = user(&server, "alice");
    let (bob, _) = user(&server, "bob");
    let ch = server.create_channel("general");
    let history = format!("/api/messages/channel/{ch}?limit=1");
    let before = epoch_now();

    let mut remaining = Vec::new();
    let h = history.as_str();
    for path in [h, "/api/channels", h, h, h] {
        let r = get(server.addr(), path, &alice).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.num("x-ratelimit-limit"), 5);
        let reset = r.num("x-ratelimit-reset");
        assert!(
            (before + 2..=epoch_now() + 3).contains(&reset),
            "reset {reset} is the window's end in epoch seconds, rounded up"
        );
        remaining.push(r.num("x-ratelimit-remaining"));
    }
    assert_eq!(remaining, [4, 3, 2, 1, 0]);

    let refused = get(server.addr(), &history, &alice).await;
    assert_eq!(refused.status, 429);
    let secs = refused.num("retry-after");
    assert!((1..=2).contains(&secs), "whole seconds to the window's end");
    assert_eq!(refused.body, kaiku_429(secs, 5));
    assert_eq!(refused.header("content-type"), Some("application/json"));
    assert!(
        !refused.has_budget_headers(),
        "Kaiku's 429 carries Retry-After only: {refused:?}"
    );

    // Per user: bob's budget is whole.
    let r = get(server.addr(), &history, &bob).await;
    assert_eq!((r.status, r.num("x-ratelimit-remaining")), (200, 4));
}

#[tokio::test]
async fn kaiku_defaults_refuse_the_31st_history_read_of_a_minute_and_leave_auth_me_alone() {
    let server = server(RateLimits::kaiku(), true, Duration::ZERO).await;
    let (alice, _) = user(&server, "alice");
    let ch = server.create_channel("general");
    let history = format!("/api/messages/channel/{ch}?limit=1");
    for i in 1..=30 {
        let r = get(server.addr(), &history, &alice).await;
        assert_eq!(
            (r.status, r.num("x-ratelimit-limit")),
            (200, 30),
            "read {i}"
        );
    }
    let r = get(server.addr(), &history, &alice).await;
    assert_eq!(r.status, 429);
    let secs = r.num("retry-after");
    assert!((30..=60).contains(&secs), "a 60 s window: {secs}");
    assert_eq!(r.body, kaiku_429(secs, 30));
    // Kaiku's read category is attached to no route: /auth/me is never limited.
    let me = get(server.addr(), "/auth/me", &alice).await;
    assert_eq!(me.status, 200);
    assert!(!me.has_budget_headers(), "{me:?}");
}

#[tokio::test]
async fn a_new_window_starts_with_the_first_read_after_the_reset() {
    let window = Duration::from_secs(1);
    let server = server(reads(Limit::new(2, window)), true, Duration::ZERO).await;
    let (alice, _) = user(&server, "alice");
    let start = Instant::now();
    for _ in 0..2 {
        assert_eq!(get(server.addr(), "/auth/me", &alice).await.status, 200);
    }
    let refused = get(server.addr(), "/auth/me", &alice).await;
    assert_eq!(refused.status, 429);
    assert_eq!(
        refused.num("retry-after"),
        1,
        "under a second rounds up to 1"
    );

    tokio::time::sleep(window.saturating_sub(start.elapsed()) + Duration::from_millis(100)).await;
    let fresh = get(server.addr(), "/auth/me", &alice).await;
    assert_eq!(fresh.status, 200);
    assert_eq!(fresh.num("x-ratelimit-remaining"), 1);
}

#[tokio::test]
async fn without_budget_headers_the_limit_still_applies_with_retry_after() {
    let server = server(
        reads(Limit::new(2, Duration::from_secs(2))),
        false,
        Duration::ZERO,
    )
    .await;
    let (alice, _) = user(&server, "alice");
    for _ in 0..2 {
        let r = get(server.addr(), "/auth/me", &alice).await;
        assert_eq!(r.status, 200);
        assert!(!r.has_budget_headers(), "{r:?}");
    }
    let refused = get(server.addr(), "/auth/me", &alice).await;
    assert_eq!(refused.status, 429);
    assert!(!refused.has_budget_headers());
    let secs = refused.num("retry-after");
    assert_eq!(refused.body, kaiku_429(secs, 2));
}

#[tokio::test]
async fn default_config_limits_nothing_and_sends_no_budget_headers() {
    let server = server(RateLimits::default(), true, Duration::ZERO).await;
    let (alice, _) = user(&server, "alice");
    for _ in 0..30 {
        let r = get(server.addr(), "/auth/me", &alice).await;
        assert_eq!(r.status, 200);
        assert!(!r.has_budget_headers());
    }
    let health = http(server.addr(), "GET", "/health", None, None).await;
    assert!(
        health.body.contains(r#""rate_limiting":false"#),
        "{health:?}"
    );
}

#[tokio::test]
async fn refresh_is_limited_per_ip_as_kaiku_keys_it() {
    let mut limits = RateLimits::default();
    limits.refresh = Some(Limit::new(2, Duration::from_secs(2)));
    let server = server(limits, true, Duration::ZERO).await;
    let (_, mut refresh) = user(&server, "alice");
    let (_, bobs) = user(&server, "bob");
    let addr = server.addr();
    let refresh_with = |token: String| async move {
        let body = format!(r#"{{"refresh_token":"{token}"}}"#);
        http(addr, "POST", "/auth/refresh", None, Some(&body)).await
    };
    for remaining in [1, 0] {
        let r = refresh_with(refresh.clone()).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.num("x-ratelimit-remaining"), remaining);
        let tokens: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        refresh = tokens["refresh_token"]
            .as_str()
            .expect("rotated")
            .to_owned();
    }
    // Another user from the same address shares the budget: the key is the IP.
    let refused = refresh_with(bobs).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.body, kaiku_429(refused.num("retry-after"), 2));
    // Reads are not refresh's budget.
    let r = http(server.addr(), "GET", "/health", None, None).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn login_is_limited_per_ip() {
    let mut limits = RateLimits::default();
    limits.login = Some(Limit::new(3, Duration::from_secs(2)));
    let server = server(limits, true, Duration::ZERO).await;
    user(&server, "alice");
    user(&server, "bob");
    let addr = server.addr();
    let login = |name: &'static str| async move {
        let body = format!(r#"{{"username":"{name}","password":"password123"}}"#);
        http(addr, "POST", "/auth/login", None, Some(&body)).await
    };
    for remaining in [2, 1, 0] {
        let r = login("alice").await;
        assert_eq!((r.status, r.num("x-ratelimit-remaining")), (200, remaining));
    }
    let refused = login("bob").await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.body, kaiku_429(refused.num("retry-after"), 3));
}

#[tokio::test]
async fn latency_delays_answers_but_reads_count_on_arrival() {
    let latency = Duration::from_millis(400);
    let server = server(reads(Limit::new(2, Duration::from_secs(10))), true, latency).await;
    let (alice, _) = user(&server, "alice");
    let start = Instant::now();
    let answers = futures_join3(
        get(server.addr(), "/auth/me?n=1", &alice),
        get(server.addr(), "/auth/me?n=2", &alice),
        get(server.addr(), "/auth/me?n=3", &alice),
    )
    .await;
    let took = start.elapsed();
    assert!(took >= latency, "answered after {took:?}");
    assert!(took < latency * 2, "the three waited together: {took:?}");
    let mut statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 200, 429],
        "the third was counted before the first two were answered"
    );

    // At run time, both ways.
    server.faults().set_rest_latency(Duration::ZERO);
    let start = Instant::now();
    http(server.addr(), "GET", "/health", None, None).await;
    assert!(start.elapsed() < latency, "{:?}", start.elapsed());
    server.faults().set_rest_latency(Duration::from_millis(300));
    let start = Instant::now();
    http(server.addr(), "GET", "/health", None, None).await;
    assert!(start.elapsed() >= Duration::from_millis(300));
    server.faults().clear();
    let start = Instant::now();
    http(server.addr(), "GET", "/health", None, None).await;
    assert!(
        start.elapsed() >= latency,
        "clear goes back to the configured latency"
    );
}

/// Runs three requests at once.
async fn futures_join3(
    a: impl Future<Output = Reply>,
    b: impl Future<Output = Reply>,
    c: impl Future<Output = Reply>,
) -> [Reply; 3] {
    let (a, b, c) = tokio::join!(a, b, c);
    [a, b, c]
}

#[tokio::test]
async fn the_read_log_has_each_reads_arrival_path_answer_and_the_most_in_flight() {
    let latency = Duration::from_millis(300);
    let server = server(
        writes(Limit::new(3, Duration::from_secs(10))),
        true,
        latency,
    )
    .await;
    let (alice, _) = user(&server, "alice");
    let (bob, _) = user(&server, "bob");
    let ch = server.create_channel("general");
    let history = format!("/api/messages/channel/{ch}?limit=5");
    let start = Instant::now();
    futures_join3(
        get(server.addr(), &history, &alice),
        get(server.addr(), "/api/channels", &alice),
        get(server.addr(), "/auth/me", &bob),
    )
    .await;
    // One at a time now: in flight never passes the three (two of alice's) above.
    for _ in 0..2 {
        get(server.addr(), &history, &alice).await;
    }
    // Writes and the health check are not reads (bob posts: alice's budget is spent).
    let post = format!("/api/messages/channel/{ch}");
    let r = http(
        server.addr(),
        "POST",
        &post,
        Some(&bob),
        Some(r#"{"content":"hi"}"#),
    )
    .await;
    assert_eq!(r.status, 201);
    http(server.addr(), "GET", "/health", None, None).await;

    assert_eq!(server.max_reads_in_flight("alice"), 2);
    assert_eq!(server.max_reads_in_flight("bob"), 1);
    assert_eq!((server.reads_total(), server.reads_rejected()), (5, 1));

    let log = server.read_log("alice");
    let mut paths: Vec<&str> = log.iter().take(2).map(|r| r.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/api/channels", history.as_str()]);
    assert_eq!(log[2].path, history);
    let statuses: Vec<Option<u16>> = log.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(200), Some(200), Some(200), Some(429)]);
    assert!(log[3].rate_limited);
    assert!(log[3].retry_after.is_some_and(|d| d.as_secs() >= 1));
    for r in &log {
        assert!(r.arrived >= start);
        let answered = r.answered.expect("answered");
        assert!(answered - r.arrived >= latency, "latency counts in flight");
    }
    assert!(log.windows(2).all(|w| w[0].arrived <= w[1].arrived));

    server.reset_read_log();
    assert!(server.read_log("alice").is_empty());
    assert_eq!(
        (server.reads_total(), server.max_reads_in_flight("alice")),
        (0, 0)
    );
    assert!(server.read_log("nobody").is_empty());
}

#[tokio::test]
async fn a_read_inside_a_retry_after_pause_is_reported_and_one_after_it_is_not() {
    let server = server(
        reads(Limit::new(1, Duration::from_secs(1))),
        true,
        Duration::ZERO,
    )
    .await;
    let (alice, _) = user(&server, "alice");
    assert_eq!(get(server.addr(), "/auth/me?n=1", &alice).await.status, 200);
    let refused = get(server.addr(), "/auth/me?n=2", &alice).await;
    assert_eq!(refused.status, 429);
    // A patient client waits what it was told, from when it heard it.
    tokio::time::sleep(Duration::from_secs(refused.num("retry-after"))).await;
    assert_eq!(get(server.addr(), "/auth/me?n=3", &alice).await.status, 200);
    assert!(server.read_pause_violations("alice").is_empty());

    // An impatient one does not.
    assert_eq!(get(server.addr(), "/auth/me?n=4", &alice).await.status, 429);
    get(server.addr(), "/auth/me?n=5", &alice).await;
    let found = server.read_pause_violations("alice");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].refused.path, "/auth/me?n=4");
    assert_eq!(found[0].read.path, "/auth/me?n=5");
    assert!(found[0].early_by > Duration::from_millis(500));
}

#[tokio::test]
async fn the_rate_limit_rest_fault_still_answers_429_and_is_logged() {
    let server = server(RateLimits::default(), true, Duration::ZERO).await;
    let (alice, _) = user(&server, "alice");
    server
        .faults()
        .rate_limit_rest(Duration::from_secs(7), Some(1));
    let r = get(server.addr(), "/auth/me", &alice).await;
    assert_eq!((r.status, r.num("retry-after")), (429, 7));
    let body: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["retry_after"], 7);
    assert_eq!(get(server.addr(), "/auth/me", &alice).await.status, 200);
    let log = server.read_log("alice");
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].retry_after, Some(Duration::from_secs(7)));
    assert_eq!(server.reads_rejected(), 1);
}

#[tokio::test]
async fn every_answer_has_a_date_header_the_101_upgrade_included() {
    let server = server(reads(FIVE_PER_2S), true, Duration::ZERO).await;
    let (alice, _) = user(&server, "alice");
    let ch = server.create_channel("general");
    let history = get(
        server.addr(),
        &format!("/api/messages/channel/{ch}"),
        &alice,
    )
    .await;
    assert_eq!(history.status, 200);
    let date = history.header("date").expect("Date on a history answer");
    assert!(date.ends_with(" GMT"), "an HTTP date: {date}");
    for _ in 0..5 {
        get(server.addr(), "/auth/me", &alice).await;
    }
    let refused = get(server.addr(), "/auth/me", &alice).await;
    assert_eq!(refused.status, 429);
    assert!(refused.header("date").is_some(), "Date on a 429");

    let mut tcp = TcpStream::connect(server.addr()).await.expect("connect");
    let upgrade = format!(
        "GET /ws HTTP/1.1\r\nhost: {}\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         sec-websocket-protocol: access_token, access_token.{alice}\r\n\r\n",
        server.addr()
    );
    tcp.write_all(upgrade.as_bytes()).await.expect("send");
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before the head ended");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let (status, headers) = parse_head(head.split("\r\n\r\n").next().unwrap_or_default());
    assert_eq!(status, 101, "{head}");
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "date" && v.ends_with(" GMT")),
        "Date on the 101: {head}"
    );
}
