//! The REST client's TLS rule over real sockets: plain `http://` to a host that is not loopback
//! is refused before a connection is opened, unless the caller opted in; loopback always works.
//!
//! The non-loopback host is this machine's own address on its outgoing interface (found
//! without sending a packet), so a listener there can tell whether anything was attempted.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// On a machine with no network interface but loopback, the tests that need one say so.
#![allow(clippy::print_stderr)]

use std::net::TcpListener;
use std::time::{Duration, Instant};

use tether_core::Secret;
use tether_devserver::{DevServer, ServerConfig};
use tether_integration::components::non_loopback_ipv4;
use tether_tokio::{Api, ApiError};

const PASSWORD: &str = "password123";

/// A refusal comes back at once: no lookup, no connect, no timeout.
const AT_ONCE: Duration = Duration::from_millis(100);

fn assert_insecure<T: std::fmt::Debug>(r: Result<T, ApiError>, host: &str) {
    assert!(
        matches!(&r, Err(ApiError::Insecure(h)) if h == host),
        "want Insecure({host}), got {r:?}"
    );
}

#[tokio::test]
async fn a_login_over_plain_http_to_a_remote_host_is_refused_before_any_connection() {
    let Some(ip) = non_loopback_ipv4() else {
        eprintln!("no non-loopback IPv4 address here: only the .invalid test runs");
        return;
    };
    let listener = TcpListener::bind((ip, 0)).expect("listen on the non-loopback address");
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let api = Api::with_timeout(&url, Duration::from_secs(2)).unwrap();
    let started = Instant::now();
    assert_insecure(
        api.login("alice", &Secret::new(PASSWORD)).await,
        &ip.to_string(),
    );
    assert_insecure(
        api.register("eve", &Secret::new(PASSWORD)).await,
        &ip.to_string(),
    );
    assert_insecure(api.me(&Secret::new("a.jwt")).await, &ip.to_string());
    assert!(started.elapsed() < AT_ONCE, "{:?}", started.elapsed());
    // Nothing reached the host: not even a TCP handshake.
    std::thread::sleep(Duration::from_millis(100));
    let accepted = listener.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a connection was attempted: {accepted:?}"
    );
}

#[tokio::test]
async fn with_the_opt_in_a_remote_plain_http_login_goes_through() {
    let Some(ip) = non_loopback_ipv4() else {
        eprintln!("no non-loopback IPv4 address here: only the .invalid test runs");
        return;
    };
    let server = DevServer::start((ip, 0).into(), ServerConfig::default())
        .await
        .expect("dev server on the non-loopback address");
    server.create_user("alice", PASSWORD).expect("alice");
    let refused = Api::new(&server.url()).unwrap();
    assert!(refused.is_refused_as_insecure());
    assert_insecure(
        refused.login("alice", &Secret::new(PASSWORD)).await,
        &ip.to_string(),
    );
    let api = Api::new(&server.url()).unwrap().allow_insecure(true);
    let creds = api
        .login("alice", &Secret::new(PASSWORD))
        .await
        .expect("login with the opt-in");
    let me = api.me(&creds.access_token).await.expect("me");
    assert_eq!(me["username"], "alice");
    server.shutdown().await;
}

#[tokio::test]
async fn loopback_needs_no_opt_in() {
    let server = DevServer::start(([127, 0, 0, 1], 0).into(), ServerConfig::default())
        .await
        .expect("dev server");
    server.create_user("alice", PASSWORD).expect("alice");
    let port = server.addr().port();
    for url in [
        server.url(),
        format!("http://localhost:{port}"),
        format!("ws://127.0.0.1:{port}"),
    ] {
        let api = Api::new(&url).unwrap();
        assert!(!api.is_refused_as_insecure(), "{url}");
        let creds = api
            .login("alice", &Secret::new(PASSWORD))
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        api.me(&creds.access_token).await.expect("me");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_remote_name_is_refused_without_even_a_lookup() {
    // `.invalid` never resolves: an attempt ends in a network error, a refusal in `Insecure`.
    let url = "http://example.invalid";
    let api = Api::with_timeout(url, Duration::from_secs(5)).unwrap();
    let started = Instant::now();
    assert_insecure(
        api.login("alice", &Secret::new(PASSWORD)).await,
        "example.invalid",
    );
    assert!(started.elapsed() < AT_ONCE, "{:?}", started.elapsed());
    let e = api
        .allow_insecure(true)
        .login("alice", &Secret::new(PASSWORD))
        .await
        .expect_err("no such host");
    // Attempted, and the failure names the step: the name did not resolve.
    assert!(
        matches!(
            &e,
            ApiError::Unreachable {
                error: tether_core::TransportError::NameLookup,
                ..
            }
        ),
        "attempted: {e:?}"
    );
    assert!(e.to_string().contains("example.invalid"), "{e}");
}

/// A client that opted in (`allow_insecure`) to a remote plain-http server uses the opt-in for
/// its REST calls too: its catch-up reads reach the server after a drop.
#[tokio::test]
async fn a_client_that_opted_in_catches_up_over_plain_http_to_a_remote_host() {
    use tether_core::Event;
    let Some(ip) = non_loopback_ipv4() else {
        eprintln!("no non-loopback IPv4 address here: skipped");
        return;
    };
    let server = DevServer::start((ip, 0).into(), ServerConfig::default())
        .await
        .expect("dev server on the non-loopback address");
    server.create_user("alice", PASSWORD).expect("alice");
    server.create_user("bob", PASSWORD).expect("bob");
    let channel = server.create_channel("c");
    let api = Api::new(&server.url()).unwrap().allow_insecure(true);
    let creds = api.login("alice", &Secret::new(PASSWORD)).await.unwrap();
    let mut config = tether_tokio::ClientConfig::new(&server.url()).unwrap();
    config.core.allow_insecure = true;
    config.core.backoff.base = Duration::from_millis(100);
    config.core.backoff.max = Duration::from_millis(400);
    let (client, mut events) = tether_tokio::Client::spawn(config, creds).unwrap();
    client.subscribe(&channel).await.unwrap();
    client.connect().unwrap();
    tether_integration::until_live(&mut events, 1).await;
    tether_integration::read_message_clock(&server, &channel, &mut events).await;
    server.faults().drop_all();
    let id = server.post(&channel, "bob", "missed").expect("post");
    let seen = tether_integration::until(&mut events, "resynced", |e| {
        matches!(e, Event::Resynced { .. })
    })
    .await;
    assert!(
        seen.iter().any(|e| matches!(
            e,
            Event::Resynced {
                complete: true,
                recovered: 1,
                ..
            }
        )),
        "the catch-up read was refused: {seen:?}"
    );
    assert!(
        tether_integration::messages(&seen)
            .iter()
            .any(|m| m.1 == id)
    );
    server.shutdown().await;
}
