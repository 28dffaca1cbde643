//! The real network components of `tether_integration::components`, proved with clients that
//! are not tether (curl, a raw TCP exchange, rustls): each does what the proxy and certificate
//! tests rely on, and its log counts what went through it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_devserver::DevServer;
use tether_integration::components::{
    Gateway, HttpProxy, RefusingProxy, SocksProxy, StuckV6, TestCa, dead_port, eventually,
    spki_sha256_base64,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What curl says: its exit code, and for a finished transfer the HTTP status and body.
#[derive(Debug)]
struct Curl {
    code: i32,
    status: String,
    body: String,
}

/// Runs curl with `args` and no proxy setting from the environment: a `NO_PROXY` naming
/// 127.0.0.1 (common on CI machines) would otherwise send it around the proxy under test.
async fn curl(args: &[&str]) -> Curl {
    let mut cmd = tokio::process::Command::new("curl");
    for var in ["http_proxy", "https_proxy", "all_proxy", "no_proxy"] {
        cmd.env_remove(var).env_remove(var.to_uppercase());
    }
    let out = cmd
        .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}"])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("curl runs (scripts/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    Curl {
        code: out.status.code().unwrap_or(-1),
        status: status.to_owned(),
        body: body.to_owned(),
    }
}

async fn dev_server() -> (DevServer, u16) {
    let server = DevServer::start_local().await.expect("dev server starts");
    let port = server.addr().port();
    (server, port)
}

/// Sends `request` on a new connection to 127.0.0.1:`port` and returns the first line of the
/// answer (without waiting for the rest: a tunnel stays open).
async fn first_line(port: u16, request: &str) -> String {
    let mut tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .expect("read");
        assert_ne!(n, 0, "closed before a line: {answer:?}");
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    answer.lines().next().unwrap_or_default().to_owned()
}

fn connect_request(port: u16, auth: Option<&str>) -> String {
    use base64::Engine as _;
    let mut r = format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    if let Some(auth) = auth {
        let encoded = base64::engine::general_purpose::STANDARD.encode(auth);
        r.push_str(&format!("Proxy-Authorization: Basic {encoded}\r\n"));
    }
    r.push_str("\r\n");
    r
}

#[tokio::test]
async fn http_proxy_tunnels_a_connect_to_any_port_and_its_log_counts_it() {
    let (_server, dev) = dev_server().await;
    let proxy = HttpProxy::start(None).await;
    let url = format!("http://127.0.0.1:{dev}/health");
    // -p: a CONNECT tunnel even for http://, as a WebSocket client does.
    let got = curl(&["-p", "-x", &proxy.url(), &url]).await;
    assert_eq!((got.code, got.status.as_str()), (0, "200"), "{got:?}");
    assert!(got.body.contains(r#""status":"ok""#), "{}", got.body);
    assert_eq!(proxy.connects_to(dev), 1, "{}", proxy.log());
    assert_eq!(proxy.requests_to(dev), 0);
    assert_eq!(proxy.connects_to(dev_port_other(dev)), 0);
    assert_eq!(proxy.clients(), 1);
}

/// A port that is not `port`, to show a count is per target.
fn dev_port_other(port: u16) -> u16 {
    port.wrapping_add(1).max(1)
}

#[tokio::test]
async fn http_proxy_forwards_an_absolute_form_request_and_its_log_counts_it() {
    let (_server, dev) = dev_server().await;
    let proxy = HttpProxy::start(None).await;
    let got = curl(&[
        "-x",
        &proxy.url(),
        &format!("http://localhost:{dev}/health"),
    ])
    .await;
    assert_eq!((got.code, got.status.as_str()), (0, "200"), "{got:?}");
    assert_eq!(proxy.requests_to(dev), 1, "{}", proxy.log());
    assert_eq!(proxy.connects_to(dev), 0);
}

#[tokio::test]
async fn http_proxy_with_credentials_answers_407_without_them_and_401_to_wrong_ones() {
    let (_server, dev) = dev_server().await;
    let proxy = HttpProxy::start(Some(("alice", "s3cret"))).await;
    assert_eq!(
        proxy.url(),
        format!("http://alice:s3cret@127.0.0.1:{}", proxy.port())
    );
    let none = first_line(proxy.port(), &connect_request(dev, None)).await;
    assert!(none.contains(" 407 "), "no credentials: {none}");
    // tinyproxy's quirk, which a client must read as "proxy credentials" too.
    let wrong = first_line(proxy.port(), &connect_request(dev, Some("alice:nope"))).await;
    assert!(wrong.contains(" 401 "), "wrong credentials: {wrong}");
    let right = first_line(proxy.port(), &connect_request(dev, Some("alice:s3cret"))).await;
    assert!(right.contains(" 200 "), "right credentials: {right}");
    // Refused or not, every CONNECT is in the log.
    assert_eq!(proxy.connects_to(dev), 3, "{}", proxy.log());

    let url = format!("http://127.0.0.1:{dev}/health");
    let got = curl(&["-p", "-x", &proxy.url(), &url]).await;
    assert_eq!((got.code, got.status.as_str()), (0, "200"), "{got:?}");
    let got = curl(&["-p", "-x", &proxy.url_with("alice", "p@ss word"), &url]).await;
    assert_ne!(got.code, 0, "a wrong password gets through: {got:?}");
    assert_eq!(proxy.connects_to(dev), 5);
}

#[tokio::test]
async fn socks_proxy_connects_for_the_client_and_its_log_counts_it() {
    let (_server, dev) = dev_server().await;
    let proxy = SocksProxy::start(None).await;
    assert_eq!(
        proxy.url_h(),
        format!("socks5h://127.0.0.1:{}", proxy.port())
    );
    // socks5h: the proxy resolves `localhost`; socks5: curl sends 127.0.0.1.
    for url in [proxy.url_h(), proxy.url()] {
        let got = curl(&["-x", &url, &format!("http://localhost:{dev}/health")]).await;
        assert_eq!((got.code, got.status.as_str()), (0, "200"), "{got:?}");
    }
    assert_eq!(proxy.connections_to(dev), 2, "{}", proxy.log());
    assert!(
        proxy
            .log()
            .contains(&format!("connected to localhost:{dev}"))
    );
    assert!(
        proxy
            .log()
            .contains(&format!("connected to 127.0.0.1:{dev}"))
    );
}

#[tokio::test]
async fn socks_proxy_with_credentials_refuses_wrong_ones() {
    let (_server, dev) = dev_server().await;
    let proxy = SocksProxy::start(Some(("alice", "s3cret"))).await;
    let url = format!("http://127.0.0.1:{dev}/health");
    let got = curl(&["-x", &proxy.url_h(), &url]).await;
    assert_eq!((got.code, got.status.as_str()), (0, "200"), "{got:?}");
    let wrong = proxy.url_h().replace("s3cret", "nope");
    let got = curl(&["-x", &wrong, &url]).await;
    // 97: curl's "proxy handshake error".
    assert_eq!(got.code, 97, "{got:?}");
    assert_eq!(proxy.connections_to(dev), 1, "{}", proxy.log());
}

#[tokio::test]
async fn a_refusing_proxy_answers_its_status_and_counts_each_connection() {
    let proxy = RefusingProxy::start("HTTP/1.1 403 Forbidden").await;
    let line = first_line(proxy.port(), &connect_request(443, None)).await;
    assert_eq!(line, "HTTP/1.1 403 Forbidden");
    let got = curl(&["-p", "-x", &proxy.url(), "http://127.0.0.1:9/"]).await;
    assert_ne!(got.code, 0, "{got:?}");
    assert_eq!(proxy.hits(), 2);
    assert!(
        proxy.requests()[0].starts_with("CONNECT 127.0.0.1:443 HTTP/1.1\r\n"),
        "{:?}",
        proxy.requests()
    );
}

#[tokio::test]
async fn a_dead_port_refuses_at_once() {
    let port = dead_port();
    let started = Instant::now();
    let err = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect_err("nothing listens");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(started.elapsed() < Duration::from_millis(100));
}

/// A rustls client that trusts `roots` only.
fn tls_client(roots: &[Vec<u8>]) -> tokio_rustls::TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for der in roots {
        store.add(der.clone().into()).expect("a root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn gateway_reaches_the_server_for_a_client_that_trusts_its_ca() {
    let (_server, dev) = dev_server().await;
    let ca = TestCa::new("Tether Test Gateway CA");
    let gateway = Gateway::start(dev, &ca).await;
    for name in ["localhost", "127.0.0.1"] {
        let tcp = TcpStream::connect(("127.0.0.1", gateway.port()))
            .await
            .expect("connect");
        let server_name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let mut tls = tls_client(&[ca.cert_der()])
            .connect(server_name, tcp)
            .await
            .expect("the handshake succeeds with the CA trusted");
        tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = String::new();
        tls.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(r#""status":"ok""#), "{answer}");
    }
    assert_eq!(gateway.connections(), 2, "{}", gateway.log());
    assert_eq!(gateway.handshakes(), 2);
    assert_eq!(
        gateway.url(),
        format!("https://127.0.0.1:{}", gateway.port())
    );
}

#[tokio::test]
async fn gateway_is_an_unknown_issuer_to_a_client_without_its_ca() {
    let (_server, dev) = dev_server().await;
    let ca = TestCa::new("Tether Test Gateway CA");
    let gateway = Gateway::start(dev, &ca).await;
    let other = TestCa::new("Some Other CA");
    let tcp = TcpStream::connect(("127.0.0.1", gateway.port()))
        .await
        .expect("connect");
    let server_name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let err = tls_client(&[other.cert_der()])
        .connect(server_name, tcp)
        .await
        .expect_err("the gateway's CA is not trusted");
    let rustls_error = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(
            rustls_error,
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ),
        "{err:?}"
    );
    // The client's alert, as the gateway saw it.
    eventually("the gateway logs the alert", || {
        gateway.log().contains("alert unknown ca")
    })
    .await;
    assert_eq!(gateway.connections(), 1);
    assert_eq!(gateway.handshakes(), 0);
}

#[tokio::test]
async fn a_written_ca_file_is_a_trust_store_through_a_proxy_tunnel() {
    // The whole corporate road: a CONNECT through the proxy to the gateway, whose CA the
    // client knows only from a PEM file.
    let (_server, dev) = dev_server().await;
    let ca = TestCa::new("Tether Test Gateway CA");
    let gateway = Gateway::start(dev, &ca).await;
    let proxy = HttpProxy::start(None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = ca.write_pem(dir.path());
    assert!(pem.ends_with("tether-test-gateway-ca.pem"), "{pem:?}");
    let pem = pem.to_str().expect("a UTF-8 path");
    let url = format!("https://localhost:{}/health", gateway.port());
    let got = curl(&["--cacert", pem, "-x", &proxy.url(), &url]).await;
    assert_eq!((got.code, got.status.as_str()), (0, "200"), "{got:?}");
    assert_eq!(proxy.connects_to(gateway.port()), 1, "{}", proxy.log());
    assert_eq!(gateway.handshakes(), 1, "{}", gateway.log());
    // Without the file, curl's own trust store does not know the CA (60: peer certificate
    // cannot be authenticated).
    let got = curl(&["-x", &proxy.url(), &url]).await;
    assert_eq!(got.code, 60, "{got:?}");
}

#[test]
fn the_spki_pin_is_the_digest_of_the_certificates_public_key() {
    use base64::Engine as _;
    use rcgen::PublicKeyData as _;
    let ca = TestCa::new("Tether Test Pin CA");
    let (cert_pem, key_pem) = ca.issue(&["localhost"]);
    let key = rcgen::KeyPair::from_pem(&key_pem).expect("the key");
    // The same digest by another road: the key's own SubjectPublicKeyInfo, not the
    // certificate's copy of it.
    let want = base64::engine::general_purpose::STANDARD.encode(
        ring::digest::digest(&ring::digest::SHA256, &key.subject_public_key_info()).as_ref(),
    );
    let der = pem_to_der(&cert_pem);
    assert_eq!(spki_sha256_base64(&der), want);
    assert_ne!(spki_sha256_base64(&ca.cert_der()), want);
    assert_eq!(want.len(), 44, "32 bytes in padded base64");
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("PEM body")
}

#[tokio::test]
async fn stuck_v6_hangs_connects_while_ipv4_on_the_same_port_answers() {
    let (_server, dev) = dev_server().await;
    let stuck = StuckV6::start(dev).await;
    assert_eq!(stuck.addr().to_string(), format!("[::1]:{dev}"));
    for _ in 0..2 {
        let started = Instant::now();
        let got =
            tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(stuck.addr()))
                .await;
        assert!(got.is_err(), "[::1] answered: {got:?}");
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
    let started = Instant::now();
    TcpStream::connect(("127.0.0.1", dev))
        .await
        .expect("IPv4 connects");
    assert!(started.elapsed() < Duration::from_millis(100));
}
