//! Hostile and broken peers, over real loopback sockets: a raw TCP server that answers the
//! upgrade or a REST call with whatever the test says. Every case ends in a clear, typed
//! outcome: never a panic, never a hang, never memory without bound.

use std::time::{Duration, Instant};

use tether_core::{Credentials, Event, FailReason, ReconnectReason, Status};
use tether_integration::raw::{read_head, upgrade_server_with};
use tether_integration::{WAIT, apply_test_link, next};
use tether_tokio::{Api, ApiError, Client, ClientConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// A server that reads one request head per connection and answers `response` (then, with
/// `hold`, keeps the connection open without a word).
async fn raw_server(response: Vec<u8>, hold: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                if read_head(&mut tcp).await.is_none() {
                    return;
                }
                let _ = tcp.write_all(&response).await;
                if hold {
                    tokio::time::sleep(Duration::from_secs(120)).await;
                }
            });
        }
    });
    format!("http://{addr}")
}

fn client_for(url: &str) -> (Client, tether_tokio::Events) {
    let mut cfg = ClientConfig::new(url).expect("config");
    cfg.core.seed = 3;
    cfg.core.backoff.base = Duration::from_millis(50);
    cfg.core.backoff.max = Duration::from_millis(200);
    cfg.core.handshake_timeout = Duration::from_secs(1);
    apply_test_link(&mut cfg);
    let (client, events) = Client::spawn(cfg, Credentials::new("t.o.k")).expect("spawn");
    client.connect().expect("connect");
    (client, events)
}

/// The first terminal or retry verdict the client reaches.
async fn verdict(events: &mut tether_tokio::Events) -> Status {
    loop {
        if let Event::Status(s @ (Status::Reconnecting { .. } | Status::Failed { .. })) =
            next(events, "a verdict").await
        {
            return s;
        }
    }
}

fn sha1_accept(key: &str) -> String {
    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes())
}

#[tokio::test]
async fn an_upgrade_answered_200_is_a_clear_refusal() {
    let url = raw_server(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        false,
    )
    .await;
    let (_c, mut events) = client_for(&url);
    let s = verdict(&mut events).await;
    assert_eq!(
        s,
        Status::Failed {
            reason: FailReason::Rejected,
            http_status: Some(200),
            detail: None
        }
    );
}

#[tokio::test]
async fn garbage_instead_of_http_is_retried_with_backoff() {
    let url = raw_server(b"\x00\xff garbage, not HTTP at all\r\n\r\n".to_vec(), false).await;
    let (_c, mut events) = client_for(&url);
    let s = verdict(&mut events).await;
    assert!(
        matches!(
            s,
            Status::Reconnecting {
                reason: ReconnectReason::ProtocolError | ReconnectReason::ConnectionLost,
                ..
            }
        ),
        "{s:?}"
    );
    // And again: it keeps trying, with growing delays, without a hot loop.
    let s = verdict(&mut events).await;
    assert!(
        matches!(s, Status::Reconnecting { attempt: 2, .. }),
        "{s:?}"
    );
}

/// A server that completes the upgrade properly (the right accept key) but answers with
/// `protocol` as its `Sec-WebSocket-Protocol` (`None`: no header at all).
async fn upgrade_server(protocol: Option<&'static str>) -> String {
    upgrade_server_with(protocol, None, Vec::new()).await
}

#[tokio::test]
async fn a_101_with_a_bad_accept_key_is_not_taken_for_a_websocket() {
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
        sha1_accept("not-the-client-key")
    );
    let url = raw_server(response.into_bytes(), true).await;
    let (_c, mut events) = client_for(&url);
    let s = verdict(&mut events).await;
    assert!(
        matches!(
            s,
            Status::Reconnecting {
                reason: ReconnectReason::ProtocolError,
                ..
            }
        ),
        "{s:?}"
    );
}

/// A 101 without the subprotocol we offered, or with one we never offered: a server that
/// does not speak Kaiku's protocol (or not with this auth mode). Retrying would meet the same
/// answer forever (the original client's bug 4 in another shape): it fails for good, with a
/// reason the app can show, and the socket is not kept.
async fn a_101_with_the_wrong_subprotocol_fails_for_good(protocol: Option<&'static str>) {
    let url = upgrade_server(protocol).await;
    let (client, mut events) = client_for(&url);
    let s = verdict(&mut events).await;
    assert_eq!(
        s,
        Status::Failed {
            reason: FailReason::Subprotocol,
            http_status: None,
            detail: None
        }
    );
    let (stats, _) = client.stats().await.expect("stats");
    assert_eq!(stats.missing_subprotocol, 1);
    assert_eq!(stats.reconnects, 0, "no retry loop");
}

#[tokio::test]
async fn a_101_without_the_offered_subprotocol_fails_for_good() {
    a_101_with_the_wrong_subprotocol_fails_for_good(None).await;
}

#[tokio::test]
async fn a_101_selecting_a_protocol_we_never_offered_fails_for_good() {
    a_101_with_the_wrong_subprotocol_fails_for_good(Some("something-else")).await;
}

#[tokio::test]
async fn a_v2_subprotocol_selected_in_query_auth_fails_for_good() {
    // Query auth offers no subprotocol at all: a v2 entry in the 101 was never offered.
    // tungstenite refuses it itself; the deflate transport (yawc) leaves it to the core.
    for deflate in [false, true] {
        let url = upgrade_server(Some(tether_core::wire::V2_MSGPACK)).await;
        let mut cfg = ClientConfig::new(&url).expect("config");
        cfg.core.auth_mode = tether_core::AuthMode::Query;
        cfg.core.handshake_timeout = Duration::from_secs(1);
        cfg.core.deflate = deflate.then(tether_core::wire::DeflateOffer::default);
        let (client, mut events) = Client::spawn(cfg, Credentials::new("t.o.k")).expect("spawn");
        client.connect().expect("connect");
        let s = verdict(&mut events).await;
        assert_eq!(
            s,
            Status::Failed {
                reason: FailReason::Subprotocol,
                http_status: None,
                detail: None
            },
            "deflate transport: {deflate}"
        );
    }
}

#[tokio::test]
async fn a_proper_101_with_the_echoed_protocol_opens_the_socket() {
    let url = upgrade_server(Some("access_token")).await;
    let (_c, mut events) = client_for(&url);
    // It opens; the fake never says `ready`, so the handshake deadline ends it, and says why:
    // the upgrade succeeded and nothing followed (D75).
    let s = verdict(&mut events).await;
    assert!(
        matches!(
            s,
            Status::Reconnecting {
                reason: ReconnectReason::ReadyTimeout,
                ..
            }
        ),
        "{s:?}"
    );
}

#[tokio::test]
async fn a_server_that_accepts_tcp_and_says_nothing_hits_the_handshake_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp); // never read, never answer
        }
    });
    let (_c, mut events) = client_for(&url);
    let started = Instant::now();
    let s = verdict(&mut events).await;
    assert!(
        matches!(
            s,
            Status::Reconnecting {
                reason: ReconnectReason::HandshakeTimeout,
                ..
            }
        ),
        "{s:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn nothing_listening_is_a_connect_failure_retried_with_backoff() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let (_c, mut events) = client_for(&format!("http://127.0.0.1:{port}"));
    let s = verdict(&mut events).await;
    assert!(
        matches!(
            s,
            Status::Reconnecting {
                reason: ReconnectReason::ConnectFailed,
                ..
            }
        ),
        "{s:?}"
    );
}

/// A refusal of the upgrade whose `Retry-After` is an HTTP date 30 s after the answer's
/// `Date`, which comes after it as hyper writes it; or, with `date` off, 30 s after this
/// host's clock and no `Date` at all.
fn refusal_with_a_dated_retry_after(status: &str, date: bool) -> Vec<u8> {
    let (retry, date) = if date {
        (
            "Wed, 25 Nov 2026 17:47:12 GMT".to_owned(),
            "date: Wed, 25 Nov 2026 17:46:42 GMT\r\n",
        )
    } else {
        let at = std::time::SystemTime::now() + Duration::from_secs(30);
        (httpdate::fmt_http_date(at), "")
    };
    format!("HTTP/1.1 {status}\r\nretry-after: {retry}\r\ncontent-length: 0\r\n{date}\r\n")
        .into_bytes()
}

#[tokio::test]
async fn a_refused_upgrade_waits_for_a_retry_after_given_as_an_http_date() {
    for status in ["429 Too Many Requests", "503 Service Unavailable"] {
        for date in [true, false] {
            let url = raw_server(refusal_with_a_dated_retry_after(status, date), false).await;
            let (_c, mut events) = client_for(&url);
            let s = verdict(&mut events).await;
            // The date form is whole seconds: up to a second less when counted from this
            // host's clock.
            assert!(
                matches!(
                    s,
                    Status::Reconnecting { retry_in_ms, .. } if (28_000..=30_000).contains(&retry_in_ms)
                ),
                "{status}, with Date: {date}: {s:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_rest_429_with_an_http_date_retry_after_says_how_long() {
    for date in [true, false] {
        let e = api_against(
            &refusal_with_a_dated_retry_after("429 Too Many Requests", date),
            false,
            WAIT,
        )
        .await;
        assert!(
            matches!(
                e,
                ApiError::RateLimited { retry_after: Some(d) }
                    if (28..=30).contains(&d.as_secs())
            ),
            "with Date: {date}: {e:?}"
        );
    }
}

async fn api_against(response: &[u8], hold: bool, timeout: Duration) -> ApiError {
    let url = raw_server(response.to_vec(), hold).await;
    let api = Api::with_timeout(&url, timeout).expect("api");
    let token = tether_core::Secret::new("t");
    match tokio::time::timeout(WAIT, api.messages(&token, "c", None, 50)).await {
        Ok(Ok(page)) => panic!("unexpected page: {page:?}"),
        Ok(Err(e)) => e,
        Err(_) => panic!("the REST call hung"),
    }
}

#[tokio::test]
async fn rest_malformed_json_and_wrong_shapes_are_decode_errors() {
    for body in [
        &b"{not json"[..],
        b"{\"items\":\"nope\"}",
        b"42",
        b"[{\"no_id\":1}]",
    ] {
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let mut resp = head.into_bytes();
        resp.extend_from_slice(body);
        let e = api_against(&resp, false, Duration::from_secs(5)).await;
        assert!(
            matches!(e, ApiError::Decode(_)),
            "{:?}: {e}",
            String::from_utf8_lossy(body)
        );
    }
}

#[tokio::test]
async fn rest_huge_bodies_are_capped_not_buffered() {
    // Announces 1 GiB: refused from the header, before reading anything.
    let e = api_against(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n[",
        true,
        Duration::from_secs(5),
    )
    .await;
    assert!(
        matches!(&e, ApiError::Decode(m) if m.contains("over")),
        "{e}"
    );
    // Chunked with no length: cut off once past the cap.
    let mut resp = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..10 {
        resp.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        resp.extend_from_slice(&chunk);
        resp.extend_from_slice(b"\r\n");
    }
    let e = api_against(&resp, true, Duration::from_secs(10)).await;
    assert!(
        matches!(&e, ApiError::Decode(m) if m.contains("over")),
        "{e}"
    );
}

#[tokio::test]
async fn a_rest_server_that_never_answers_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let api = Api::with_timeout(&url, Duration::from_millis(500)).expect("api");
    let started = Instant::now();
    let e = api
        .me(&tether_core::Secret::new("t"))
        .await
        .expect_err("no answer");
    assert!(matches!(e, ApiError::Network(_)), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn rest_5xx_bursts_are_typed_with_their_status_and_body() {
    let body = br#"{"error":"INTERNAL","message":"database unavailable"}"#;
    let mut resp = format!("HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
    resp.extend_from_slice(body);
    for _ in 0..5 {
        let e = api_against(&resp, false, Duration::from_secs(5)).await;
        assert!(
            matches!(&e, ApiError::Http { status: 503, code, .. } if code == "INTERNAL"),
            "{e}"
        );
    }
    let e = api_against(
        b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\ncontent-length: 0\r\n\r\n",
        false,
        Duration::from_secs(5),
    )
    .await;
    assert!(
        matches!(e, ApiError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(7)),
        "{e}"
    );
}
