//! Every network a user is on (issue 20, DESIGN 3.8), against real components on loopback
//! started by each test (`tether_integration::components`: tinyproxy, microsocks, stunnel, a
//! refusing proxy, a dead port, an IPv6 path that black-holes SYNs). Each test proves where
//! the traffic went from the component's own log or counters, and that nothing went around a
//! proxy: the dev server counts every socket it accepted.
//!
//! Tests that need the process's environment (`HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`,
//! `SSL_CERT_FILE`) run the `tether` command (`tether-under-test`) with it, never set it in
//! this process, whose other tests run at the same time.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Two tests print what they measured (connect times, the dual-stack figure) for the issue notes.
#![allow(clippy::print_stderr)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tether_core::wire::DeflateOffer;
use tether_core::{Event, FailReason, ReconnectReason, Secret, Status, TransportError};
use tether_devserver::{DevServer, ServerConfig};
use tether_integration::components::{
    Gateway, HttpProxy, RefusingProxy, SocksProxy, StuckV6, TestCa, dead_port, eventually,
    non_loopback_ipv4, spki_sha256_base64, tether_command,
};
use tether_integration::*;
use tether_tokio::{Api, ApiError, Client, ClientConfig, Proxy};
use tokio::io::{AsyncBufReadExt, BufReader};

const PASSWORD: &str = "password123";

/// The world's client settings, through `proxy`.
fn via(w: &World, proxy: &str) -> ClientConfig {
    let mut c = w.client_config();
    c.network = network(proxy);
    c
}

fn api_via(w: &World, proxy: &str) -> Api {
    Api::with_options(&w.server.url(), Duration::from_secs(5), &network(proxy)).expect("api")
}

/// A drop, a message posted while the client is away, and the catch-up that brings it: all
/// through whatever road the client takes.
async fn survives_a_drop(w: &World, events: &mut tether_tokio::Events) {
    let ch = &w.channels[0];
    read_message_clock(&w.server, ch, events).await;
    assert!(w.server.faults().drop_all() >= 1);
    let missed = w.server.post(ch, "bob", "while away").expect("post");
    let seen = until(events, "resynced", |e| matches!(e, Event::Resynced { .. })).await;
    assert!(
        messages(&seen).iter().any(|m| m.1 == missed),
        "the message posted during the drop arrived: {seen:?}"
    );
}

#[tokio::test]
async fn rest_and_socket_go_through_an_http_proxy_and_survive_a_drop() {
    let w = World::start(ServerConfig::default(), 1).await;
    let port = w.server.addr().port();
    let proxy = HttpProxy::start(None).await;

    let creds = api_via(&w, &proxy.url())
        .login("alice", &Secret::new(PASSWORD))
        .await
        .expect("login through the proxy");
    // Plain http:// REST is forwarded (an absolute-form request), as HTTP proxies expect.
    assert_eq!(proxy.requests_to(port), 1, "{}", proxy.log());

    let (client, mut events) = Client::spawn(via(&w, &proxy.url()), creds).expect("spawn");
    client.subscribe(&w.channels[0]).await.expect("subscribe");
    client.connect().expect("connect");
    until_live(&mut events, 1).await;
    // The socket is a CONNECT tunnel.
    assert_eq!(proxy.connects_to(port), 1, "{}", proxy.log());

    let reads_before = proxy.requests_to(port);
    survives_a_drop(&w, &mut events).await;
    // The reconnect tunnelled again, and the catch-up's reads were forwarded by the proxy.
    assert!(proxy.connects_to(port) >= 2, "{}", proxy.log());
    assert!(proxy.requests_to(port) > reads_before, "{}", proxy.log());
    assert!(client.status().is_connected());
}

#[tokio::test]
async fn an_http_proxy_with_credentials_takes_the_right_ones_and_a_wrong_password_is_terminal() {
    let w = World::start(ServerConfig::default(), 1).await;
    let port = w.server.addr().port();
    let proxy = HttpProxy::start(Some(("carol", "c0rp-pass"))).await;

    let (_good, mut events) = w.client(via(&w, &proxy.url())).await;
    until_live(&mut events, 1).await;
    assert_eq!(proxy.connects_to(port), 1, "{}", proxy.log());
    let accepted = w.server.connections();

    let wrong = proxy.url_with("carol", "wrong");
    let (_bad, mut events) = w.client(via(&w, &wrong)).await;
    let seen = until(&mut events, "failed", |e| failed(e).is_some()).await;
    let (reason, detail) = failed(seen.last().expect("an event")).expect("failed");
    assert_eq!(reason, FailReason::ProxyAuth, "{seen:?}");
    let detail = detail.expect("a detail");
    assert!(detail.contains("refused the credentials"), "{detail}");
    assert!(
        !detail.contains("wrong"),
        "the password never shows: {detail}"
    );
    // Terminal at once: no retry, and nothing went around the proxy.
    assert!(!seen.iter().any(|e| waiting(e).is_some()), "{seen:?}");
    assert_eq!(w.server.connections(), accepted);

    // No credentials at all: the proxy asks for them (407), terminal too.
    let (_none, mut events) = w
        .client(via(&w, &format!("http://127.0.0.1:{}", proxy.port())))
        .await;
    let seen = until(&mut events, "failed", |e| failed(e).is_some()).await;
    let (reason, detail) = failed(seen.last().expect("an event")).expect("failed");
    assert_eq!(reason, FailReason::ProxyAuth);
    assert!(detail.expect("a detail").contains("407"), "{seen:?}");
}

#[tokio::test]
async fn rest_and_socket_go_through_socks5_and_survive_a_drop() {
    let w = World::start(ServerConfig::default(), 1).await;
    let port = w.server.addr().port();
    let proxy = SocksProxy::start(Some(("dave", "s0cks-pass"))).await;

    let creds = api_via(&w, &proxy.url_h())
        .login("alice", &Secret::new(PASSWORD))
        .await
        .expect("login through SOCKS5");
    let after_login = proxy.connections_to(port);
    assert!(after_login >= 1, "{}", proxy.log());

    let (client, mut events) = Client::spawn(via(&w, &proxy.url_h()), creds).expect("spawn");
    client.subscribe(&w.channels[0]).await.expect("subscribe");
    client.connect().expect("connect");
    until_live(&mut events, 1).await;
    assert_eq!(
        proxy.connections_to(port),
        after_login + 1,
        "{}",
        proxy.log()
    );
    // socks5h: the proxy was given the name, not an address resolved here.
    assert!(
        proxy
            .log()
            .contains(&format!("connected to 127.0.0.1:{port}")),
        "{}",
        proxy.log()
    );
    survives_a_drop(&w, &mut events).await;
    assert!(proxy.connections_to(port) >= after_login + 2);

    // socks5:// resolves here; the same server is reached.
    let (_local, mut events) = w.client(via(&w, &proxy.url())).await;
    until_live(&mut events, 1).await;
}

#[tokio::test]
async fn a_wrong_socks5_password_is_terminal_for_the_socket_and_named_for_rest() {
    let w = World::start(ServerConfig::default(), 1).await;
    let proxy = SocksProxy::start(Some(("dave", "s0cks-pass"))).await;
    let wrong = proxy.url_h().replace("s0cks-pass", "nope");

    let e = api_via(&w, &wrong)
        .login("alice", &Secret::new(PASSWORD))
        .await
        .expect_err("refused by the proxy");
    assert!(
        matches!(
            &e,
            ApiError::Unreachable {
                error: TransportError::ProxyAuth,
                ..
            }
        ),
        "{e:?}"
    );
    let (_c, mut events) = w.client(via(&w, &wrong)).await;
    let seen = until(&mut events, "failed", |e| failed(e).is_some()).await;
    assert_eq!(
        failed(seen.last().expect("an event")).map(|f| f.0),
        Some(FailReason::ProxyAuth),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|e| waiting(e).is_some()), "{seen:?}");
    assert_eq!(w.server.connections(), 0, "nothing went around the proxy");
}

#[tokio::test]
async fn a_dead_proxy_is_retried_with_backoff_and_never_gone_around() {
    let w = World::start(ServerConfig::default(), 1).await;
    for dead in [
        format!("http://127.0.0.1:{}", dead_port()),
        format!("socks5h://127.0.0.1:{}", dead_port()),
    ] {
        let e = api_via(&w, &dead)
            .login("alice", &Secret::new(PASSWORD))
            .await
            .expect_err("no proxy there");
        assert!(
            matches!(
                &e,
                ApiError::Unreachable {
                    error: TransportError::ProxyUnreachable,
                    ..
                }
            ),
            "{dead}: {e:?}"
        );
        let (client, mut events) = w.client(via(&w, &dead)).await;
        let mut waits = Vec::new();
        until(&mut events, "three retries", |e| {
            if let Some(w) = waiting(e) {
                waits.push(w);
            }
            waits.len() == 3
        })
        .await;
        for (i, (attempt, reason, detail)) in waits.iter().enumerate() {
            assert_eq!(*attempt as usize, i + 1);
            assert_eq!(*reason, ReconnectReason::ProxyUnreachable, "{dead}");
            let detail = detail.as_deref().unwrap_or_default();
            assert!(detail.contains("could not be reached"), "{detail}");
        }
        client.close().await;
    }
    assert_eq!(w.server.connections(), 0, "nothing went around the proxy");
}

#[tokio::test]
async fn a_refusing_proxy_says_its_status_backs_off_and_is_never_gone_around() {
    let w = World::start(ServerConfig::default(), 1).await;
    let proxy = RefusingProxy::start("HTTP/1.1 403 Forbidden").await;
    let (client, mut events) = w.client(via(&w, &proxy.url())).await;
    let mut waits = Vec::new();
    let started = Instant::now();
    until(&mut events, "three retries", |e| {
        if let Some(w) = waiting(e) {
            waits.push(w);
        }
        waits.len() == 3
    })
    .await;
    for (_, reason, detail) in &waits {
        assert_eq!(*reason, ReconnectReason::ProxyRefused);
        let detail = detail.as_deref().unwrap_or_default();
        assert!(detail.contains("answered 403 Forbidden"), "{detail}");
    }
    // Backoff, not a storm: the third retry waited for the first two backoffs (100 ms base).
    eventually("the third attempt", || proxy.hits() >= 3).await;
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(proxy.hits() <= 4, "{} attempts", proxy.hits());
    assert!(
        proxy.requests()[0].starts_with(&format!("CONNECT 127.0.0.1:{}", w.server.addr().port()))
    );
    client.close().await;
    assert_eq!(w.server.connections(), 0, "nothing went around the proxy");
}

#[tokio::test]
async fn the_deflate_transport_goes_through_both_proxies() {
    let w = World::start(ServerConfig::default(), 1).await;
    let port = w.server.addr().port();
    let http = HttpProxy::start(None).await;
    let socks = SocksProxy::start(None).await;
    for (proxy, name) in [(http.url(), "http"), (socks.url_h(), "socks5h")] {
        let mut cfg = via(&w, &proxy);
        cfg.core.deflate = Some(DeflateOffer::default());
        let (client, mut events) = w.client(cfg).await;
        let seen = until_live(&mut events, 1).await;
        assert!(
            seen.iter().any(|e| matches!(
                e,
                Event::Status(Status::Connected {
                    compression: Some(_),
                    ..
                })
            )),
            "{name}: compressed: {seen:?}"
        );
        survives_a_drop(&w, &mut events).await;
        client.close().await;
    }
    assert!(http.connects_to(port) >= 2);
    assert!(socks.connections_to(port) >= 2);
}

/// A dev server behind a TLS gateway whose CA is `ca`.
async fn behind_a_gateway(ca: &TestCa) -> (World, Gateway) {
    let w = World::start(ServerConfig::default(), 1).await;
    let gateway = Gateway::start(w.server.addr().port(), ca).await;
    (w, gateway)
}

fn gateway_config(w: &World, gateway: &Gateway) -> ClientConfig {
    let mut c = w.client_config();
    c.core = tether_core::Config::new(&gateway.url()).expect("config");
    c.core.seed = 7;
    c.core.backoff.base = Duration::from_millis(100);
    c
}

#[tokio::test]
async fn a_pinned_key_is_required_and_an_unpinned_one_fails_once_with_the_pins_named() {
    let ca = TestCa::new("Tether Test Gateway CA");
    let (w, gateway) = behind_a_gateway(&ca).await;
    let mut cfg = gateway_config(&w, &gateway);
    cfg.network.extra_roots_der = vec![ca.cert_der()];
    cfg.network.pins = vec![format!("sha256/{}", spki_sha256_base64(gateway.cert_der()))];
    let (_c, mut events) = w.client(cfg.clone()).await;
    until_live(&mut events, 1).await;

    // The CA's key pinned instead of the server's: the chain the gateway sends holds only
    // the server's certificate, so no pinned key is in it.
    cfg.network.pins = vec![format!("sha256//{}", spki_sha256_base64(&ca.cert_der()))];
    let (_c, mut events) = w.client(cfg).await;
    let seen = until(&mut events, "failed", |e| failed(e).is_some()).await;
    let (reason, detail) = failed(seen.last().expect("an event")).expect("failed");
    assert_eq!(reason, FailReason::Certificate);
    assert!(
        detail
            .expect("a detail")
            .contains("none of the 1 pinned keys"),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|e| waiting(e).is_some()), "{seen:?}");
}

/// A server whose chain is `chain` (leaf first) with `key`, its certificates issued by `ca`.
async fn tls_world(chain: Vec<Vec<u8>>, key: Vec<u8>) -> World {
    let mut config = ServerConfig::default();
    config.tls = Some(tether_devserver::TlsIdentity {
        cert_chain_der: chain,
        key_der: key,
    });
    World::start(config, 1).await
}

#[tokio::test]
async fn a_pin_holds_the_server_s_own_key_not_a_certificate_merely_sent_along() {
    let ca = TestCa::new("Tether Pin Test CA");
    let names = ["localhost", "127.0.0.1"];
    let (real, _) = ca.issue_der(&names);
    let (other, other_key) = ca.issue_der(&names);
    let pin = |der: &[u8]| format!("sha256/{}", spki_sha256_base64(der));
    // Another certificate for the name from a trusted CA, with the pinned server's own
    // certificate appended as if it were an intermediate: the chain verifies, and the pin
    // must still refuse it (the handshake is signed with the other key).
    let w = tls_world(vec![other.clone(), real.clone()], other_key).await;
    let mut cfg = w.client_config();
    cfg.network.extra_roots_der = vec![ca.cert_der()];
    cfg.network.pins = vec![pin(&real)];
    let (_c, mut events) = w.client(cfg.clone()).await;
    let seen = until(&mut events, "failed", |e| failed(e).is_some()).await;
    let (reason, detail) = failed(seen.last().expect("an event")).expect("failed");
    assert_eq!(reason, FailReason::Certificate, "{seen:?}");
    assert!(detail.expect("a detail").contains("pinned"), "{seen:?}");
    assert_eq!(w.server.connections(), 0);
    // The key it really uses, pinned: connects.
    cfg.network.pins = vec![pin(&other)];
    let (_c, mut events) = w.client(cfg).await;
    until_live(&mut events, 1).await;
}

#[tokio::test]
async fn a_rest_call_through_a_proxy_that_never_answers_ends_by_the_connect_timeout() {
    // Accepts (the kernel does), never reads, never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let proxy = format!("http://{}", silent.local_addr().expect("addr"));
    let w = World::start(ServerConfig::default(), 1).await;
    // https: reqwest tunnels (CONNECT) through a proxy that never answers. The call ends by its
    // timeout; a diagnosis of a connect error by the road is bounded by the connect timeout
    // too (`Api::execute`), so no REST call waits on the proxy without end.
    let url = w.server.url().replace("http://", "https://");
    let api = Api::with_options(&url, Duration::from_secs(2), &network(&proxy)).expect("api");
    let started = Instant::now();
    let e = api
        .login("alice", &Secret::new(PASSWORD))
        .await
        .expect_err("no answer");
    // reqwest's 2-s timeout, then the road's diagnosis bounded by the same connect timeout.
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(e, ApiError::Network(_) | ApiError::Unreachable { .. }),
        "{e:?}"
    );
    assert_eq!(w.server.connections(), 0);
}

#[tokio::test]
async fn a_malformed_pin_or_proxy_is_refused_at_spawn() {
    let w = World::start(ServerConfig::default(), 1).await;
    let mut cfg = w.client_config();
    cfg.network.pins = vec!["md5/abc".into()];
    let e = Client::spawn(cfg, w.alice.clone()).expect_err("a bad pin");
    assert!(e.to_string().contains("sha256/"), "{e}");
    let e = "ftp://proxy:21".parse::<Proxy>().expect_err("not a proxy");
    assert!(e.to_string().contains("unsupported proxy scheme"), "{e}");
    let e = "http://user:hunter2@"
        .parse::<Proxy>()
        .expect_err("no host");
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[tokio::test]
async fn a_host_whose_ipv6_path_black_holes_connects_over_ipv4_in_well_under_a_second() {
    let w = World::start(ServerConfig::default(), 1).await;
    let port = w.server.addr().port();
    let _stuck = StuckV6::start(port).await;
    // `dual.test` has both addresses, IPv6 first, as a resolver gives them.
    let mut cfg = w.client_config();
    let url = format!("http://dual.test:{port}");
    cfg.core = tether_core::Config::new(&url).expect("config");
    cfg.core.allow_insecure = true; // a name that is not loopback, over plain http
    cfg.network.resolve = vec![(
        "dual.test".into(),
        vec![
            IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]),
            IpAddr::from([127, 0, 0, 1]),
        ],
    )];
    let started = Instant::now();
    let (_c, mut events) = w.client(cfg.clone()).await;
    until_live(&mut events, 1).await;
    let dual_stack = started.elapsed();

    // The same through REST (reqwest's own racing, on the same fixed addresses).
    let api = Api::with_options(&url, Duration::from_secs(5), &cfg.network)
        .expect("api")
        .allow_insecure(true);
    let started = Instant::now();
    api.login("alice", &Secret::new(PASSWORD))
        .await
        .expect("login over IPv4");
    let rest = started.elapsed();

    // What a sequential connect (the driver before issue 20) met first: the IPv6 address,
    // which answers nothing (capped here at 3 s; the system's own limit is minutes).
    let sequential_first = Instant::now();
    let ipv6 = SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port));
    let hung = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(ipv6))
        .await
        .is_err();
    eprintln!(
        "dual-stack: socket live in {dual_stack:?}, REST login in {rest:?}; the IPv6 address \
         alone {} after {:?}",
        if hung { "still hung" } else { "answered" },
        sequential_first.elapsed()
    );
    assert!(
        hung,
        "the IPv6 path must black-hole for this test to mean anything"
    );
    assert!(dual_stack < Duration::from_secs(1), "{dual_stack:?}");
    assert!(rest < Duration::from_secs(1), "{rest:?}");
}

#[tokio::test]
async fn connect_time_through_each_proxy_against_a_direct_connect() {
    let w = World::start(ServerConfig::default(), 1).await;
    let http = HttpProxy::start(None).await;
    let socks = SocksProxy::start(None).await;
    let mut line = Vec::new();
    for (name, proxy) in [
        ("direct", "none".to_owned()),
        ("http CONNECT", http.url()),
        ("socks5h", socks.url_h()),
    ] {
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let started = Instant::now();
            let (client, mut events) = w.client(via(&w, &proxy)).await;
            until(&mut events, "connected", |e| {
                matches!(e, Event::Status(Status::Connected { .. }))
            })
            .await;
            best = best.min(started.elapsed());
            client.close().await;
        }
        line.push(format!("{name} {:.2} ms", best.as_secs_f64() * 1000.0));
        assert!(best < Duration::from_secs(1), "{name}: {best:?}");
    }
    eprintln!(
        "connect to ready (best of 5, loopback): {}",
        line.join(", ")
    );
}

// --- the environment and the system's trust store, through the `tether` command -----------

/// Runs `cmd` until a stdout line contains `want` (then kills it) or it exits; returns
/// whether the line came, its exit code if it exited, and its stderr.
async fn run_until(mut cmd: tokio::process::Command, want: &str) -> (bool, Option<i32>, String) {
    let mut child = cmd.spawn().expect("tether runs");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut stderr = child.stderr.take().expect("stderr");
    let found = tokio::time::timeout(Duration::from_secs(15), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains(want) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    let code = if found {
        let _ = child.kill().await;
        None
    } else {
        tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .ok()
            .and_then(|s| s.ok())
            .and_then(|s| s.code())
    };
    let mut err = String::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut err),
    )
    .await;
    (found, code, err)
}

#[tokio::test]
async fn the_environment_s_proxies_are_honoured_and_no_proxy_goes_direct() {
    let Some(ip) = non_loopback_ipv4() else {
        panic!("this test needs a non-loopback IPv4 address");
    };
    let server = DevServer::start(SocketAddr::new(ip, 0), ServerConfig::default())
        .await
        .expect("dev server on the outgoing address");
    server.create_user("alice", PASSWORD).expect("alice");
    let channel = server.create_channel("general");
    let port = server.addr().port();
    let host = ip.to_string();
    let http = HttpProxy::start(None).await;
    let socks = SocksProxy::start(None).await;
    let args = [
        "listen",
        "--server",
        &server.url(),
        "--username",
        "alice",
        "--password",
        PASSWORD,
        "--insecure",
        "--channel",
        &channel,
        "--json",
    ];
    let connected = r#""status":"connected""#;

    // A --proxy that is no proxy: exit 64, and the password in it is never repeated.
    let mut bad = args.to_vec();
    bad.extend(["--proxy", "https://alice:s3cret-pw@proxy.example:443"]);
    let (ok, code, err) = run_until(tether(&bad, &[]), connected).await;
    assert!(!ok);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("--proxy") && !err.contains("s3cret-pw"),
        "{err}"
    );

    // HTTP_PROXY (lower case works too): REST forwarded, the socket a CONNECT tunnel.
    let (ok, code, err) = run_until(tether(&args, &[("http_proxy", http.url())]), connected).await;
    assert!(ok, "exit {code:?}: {err}");
    assert!(http.requests_to_host(&host, port) >= 1, "{}", http.log());
    assert_eq!(http.connects_to_host(&host, port), 1, "{}", http.log());

    // ALL_PROXY with socks5h: everything through microsocks.
    let (ok, code, err) =
        run_until(tether(&args, &[("ALL_PROXY", socks.url_h())]), connected).await;
    assert!(ok, "exit {code:?}: {err}");
    assert!(
        socks.connections_to_host(&host, port) >= 2,
        "{}",
        socks.log()
    );

    // NO_PROXY naming the server: direct, neither proxy sees it.
    let (h, s) = (
        http.connects_to_host(&host, port),
        socks.connections_to_host(&host, port),
    );
    let env = [
        ("ALL_PROXY", socks.url_h()),
        ("HTTP_PROXY", http.url()),
        ("NO_PROXY", format!("localhost,{ip}")),
    ];
    let (ok, code, err) = run_until(tether(&args, &env), connected).await;
    assert!(ok, "exit {code:?}: {err}");
    assert_eq!(
        (
            http.connects_to_host(&host, port),
            socks.connections_to_host(&host, port)
        ),
        (h, s)
    );

    // `--proxy none` wins over the environment; `--proxy URL` too.
    let mut explicit = args.to_vec();
    explicit.extend(["--proxy", "none"]);
    let (ok, _, err) = run_until(
        tether(&explicit, &[("ALL_PROXY", socks.url_h())]),
        connected,
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(socks.connections_to_host(&host, port), s);

    // A variable that names no usable proxy is an error, not a direct connection.
    let (ok, code, err) = run_until(
        tether(&args, &[("HTTPS_PROXY", "ftp://proxy:21".into())]),
        connected,
    )
    .await;
    assert!(!ok);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("HTTPS_PROXY"), "{err}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_gateway_ca_in_the_system_store_is_trusted_and_without_it_the_issuer_is_named_once() {
    let ca = TestCa::new("Tether Test Gateway CA");
    let (w, gateway) = behind_a_gateway(&ca).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = ca.write_pem(dir.path());
    let args = [
        "listen",
        "--server",
        &gateway.url(),
        "--username",
        "alice",
        "--password",
        PASSWORD,
        "--channel",
        &w.channels[0],
        "--json",
    ];
    let connected = r#""status":"connected""#;

    // SSL_CERT_FILE names the gateway's CA: the system store trusts it; login and socket go
    // through the gateway.
    let env = [("SSL_CERT_FILE", pem.display().to_string())];
    let (ok, code, err) = run_until(tether(&args, &env), connected).await;
    assert!(ok, "exit {code:?}: {err}");
    assert!(gateway.handshakes() >= 2, "{}", gateway.log());

    // The same CA through SSL_CERT_DIR (a directory of PEM files, as openssl reads it).
    let env = [("SSL_CERT_DIR", dir.path().display().to_string())];
    let (ok, code, err) = run_until(tether(&args, &env), connected).await;
    assert!(ok, "SSL_CERT_DIR: exit {code:?}: {err}");

    // Without it: the login fails naming the issuer, exit 1.
    let (ok, code, err) = run_until(tether(&args, &[]), connected).await;
    assert!(!ok);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("not trusted") && err.contains("Tether Test Gateway CA"),
        "{err}"
    );
    // And the socket alone (a token, no login): Failed once with the issuer, no retries.
    let handshakes = gateway.connections();
    let token = w.alice.access_token.expose().to_owned();
    let args = [
        "listen",
        "--server",
        &gateway.url(),
        "--token",
        &token,
        "--channel",
        &w.channels[0],
        "--json",
        "--backoff-base",
        "50",
    ];
    let (ok, code, err) = run_until(tether(&args, &[]), connected).await;
    assert!(!ok);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("certificate") && err.contains("Tether Test Gateway CA"),
        "{err}"
    );
    eventually("the gateway logs the attempt", || {
        gateway.connections() > handshakes
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        gateway.connections(),
        handshakes + 1,
        "one attempt, no retry storm"
    );
    assert_eq!(w.server.connections(), 0);
}

/// `tether` (the binary under test) with `args`, `env`, and nothing of this process's
/// network variables.
fn tether(args: &[&str], env: &[(&str, String)]) -> tokio::process::Command {
    tether_command(env!("CARGO_BIN_EXE_tether-under-test"), args, env)
}
