//! An outside tester's attack on `ClientConfig::on_refresh` at the tokio level: a refresh the
//! server has carried out (the old refresh token is spent) whose answer is still on its way
//! when the app closes or disconnects the client. The rotated pair exists only in that
//! answer: unless tether takes it and hands it to `on_refresh`, the app is left holding a
//! spent refresh token.
//!
//! The dev server's `set_rest_latency` waits *before* handling a request, so a client that
//! gives up on it never spends anything; a proxy that holds the *answer* shows what a real
//! network does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_core::{Credentials, Event, Secret, Status};
use tether_devserver::{DevServer, ServerConfig};
use tether_tokio::{Api, Client, ClientConfig, Events};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TCP proxy that holds every answer to `POST /auth/refresh` for `hold` (when non-zero).
struct SlowAnswerProxy {
    url: String,
    hold: Arc<Mutex<Duration>>,
    refreshes_seen: Arc<AtomicU64>,
}

async fn slow_answer_proxy(upstream: SocketAddr) -> SlowAnswerProxy {
    let hold = Arc::new(Mutex::new(Duration::ZERO));
    let refreshes_seen = Arc::new(AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (h, seen) = (hold.clone(), refreshes_seen.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let until: Arc<Mutex<Option<tokio::time::Instant>>> = Arc::new(Mutex::new(None));
            let (u1, h1, s1) = (until.clone(), h.clone(), seen.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let chunk = &buf[..n];
                    if chunk.windows(18).any(|w| w == b"POST /auth/refresh") {
                        s1.fetch_add(1, Ordering::SeqCst);
                        let hold = *h1.lock().unwrap();
                        if !hold.is_zero() {
                            *u1.lock().unwrap() = Some(tokio::time::Instant::now() + hold);
                        }
                    }
                    if sw.write_all(chunk).await.is_err() {
                        break;
                    }
                }
                let _ = sw.shutdown().await;
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let wait = until.lock().unwrap().take();
                    if let Some(at) = wait {
                        tokio::time::sleep_until(at).await;
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = cw.shutdown().await;
            });
        }
    });
    SlowAnswerProxy {
        url,
        hold,
        refreshes_seen,
    }
}

async fn wait_connected(events: &mut Events) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = events.recv().await {
            if let Event::Status(s) = e
                && s.is_connected()
            {
                return;
            }
        }
    })
    .await
    .expect("connected");
}

/// 8-s tokens; tether's refresh (at ~6.4 s) is carried out by the server at once, its answer
/// held 3 s by the proxy. At 7.5 s the app stops the connection (`close` or `disconnect`).
/// Expected: `on_refresh` still gets the pair (or the app is otherwise left a live refresh
/// token); here its one refresh token is spent and the pair is lost.
async fn stop_while_a_carried_out_refresh_is_answering(close: bool) {
    let mut config = ServerConfig::default();
    config.access_ttl = Duration::from_secs(8);
    let server = DevServer::start(([127, 0, 0, 1], 0).into(), config)
        .await
        .unwrap();
    server.create_user("alice", "password123").unwrap();
    let proxy = slow_answer_proxy(server.addr()).await;
    let api = Api::new(&server.url()).unwrap();
    let login = api
        .login("alice", &Secret::new("password123"))
        .await
        .unwrap();
    let r0 = login.refresh_token.clone().unwrap();
    let keyring: Arc<Mutex<Vec<Credentials>>> = Arc::default();
    let ring = keyring.clone();
    let config = ClientConfig::new(&proxy.url)
        .unwrap()
        .on_refresh(move |c| ring.lock().unwrap().push(c.clone()));
    let (client, mut events) = Client::spawn(config, tether_tokio::with_jwt_expiry(login)).unwrap();
    client.connect().unwrap();
    wait_connected(&mut events).await;
    let t0 = tokio::time::Instant::now();
    *proxy.hold.lock().unwrap() = Duration::from_secs(3);
    let drain = async {
        while let Some(e) = events.recv().await {
            if let Event::Status(s @ Status::Failed { .. }) = e {
                panic!("failed before the attack: {s:?}");
            }
        }
    };
    let _ = tokio::time::timeout_at(t0 + Duration::from_millis(7500), drain).await;
    assert_eq!(
        proxy.refreshes_seen.load(Ordering::SeqCst),
        1,
        "precondition: refresh sent"
    );
    assert!(
        keyring.lock().unwrap().is_empty(),
        "precondition: not answered yet"
    );
    assert!(
        api.refresh(&r0).await.is_err(),
        "precondition: the server spent it"
    );
    if close {
        client.close().await;
    } else {
        client.disconnect().unwrap();
    }
    tokio::time::sleep_until(t0 + Duration::from_millis(11_000)).await;
    let pairs = keyring.lock().unwrap().clone();
    assert_eq!(
        pairs.len(),
        1,
        "the rotated pair of the refresh the server carried out reached the app"
    );
    let live = pairs[0].refresh_token.clone().unwrap();
    assert!(api.refresh(&live).await.is_ok());
    if !close {
        client.close().await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_while_a_carried_out_refresh_is_answering_still_hands_over_the_pair() {
    stop_while_a_carried_out_refresh_is_answering(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_while_a_carried_out_refresh_is_answering_still_hands_over_the_pair() {
    stop_while_a_carried_out_refresh_is_answering(false).await;
}
