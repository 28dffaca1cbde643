//! Issue 19: an app that keeps the refresh token (in the OS keyring) while tether refreshes on
//! its own, against a server that rotates refresh tokens (the dev server, as Kaiku: a refresh
//! spends the old refresh token). The app must hear of every rotated pair, and credentials it
//! replaces in the middle of a handshake must not end the connection.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tether_core::{Credentials, Event, Secret, Status};
use tether_devserver::ServerConfig;
use tether_integration::*;
use tether_tokio::{Api, Client, Events};

/// What an app's keyring would hold: every pair the listener was given, in order.
#[derive(Clone, Default)]
struct Keyring(Arc<Mutex<Vec<Credentials>>>);

impl Keyring {
    fn store(&self, credentials: &Credentials) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(credentials.clone());
    }

    fn pairs(&self) -> Vec<Credentials> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Reads events for `d`, into `log`.
async fn read_for(events: &mut Events, log: &mut Vec<Event>, d: Duration) {
    let end = tokio::time::Instant::now() + d;
    while let Ok(event) = tokio::time::timeout_at(end, events.recv()).await {
        log.push(event.expect("the event stream ended"));
    }
}

fn failures(log: &[Event]) -> Vec<&Status> {
    log.iter()
        .filter_map(|e| match e {
            Event::Status(s @ Status::Failed { .. }) => Some(s),
            _ => None,
        })
        .collect()
}

/// The refresh tokens the server has spent are refused; `current` is accepted.
async fn assert_rotated(api: &Api, spent: &[Secret], current: &Secret) {
    for (i, token) in spent.iter().enumerate() {
        let refused = api.refresh(token).await;
        assert!(
            refused.as_ref().is_err_and(|e| e.status() == Some(401)),
            "spent refresh token #{i} still works: {:?}",
            refused.map(|_| "a new pair")
        );
    }
    let accepted = api.refresh(current).await;
    assert!(
        accepted.is_ok(),
        "the pair the app stored last is not the current one: {accepted:?}"
    );
}

/// Access tokens that live 20 s, refreshed by tether at 16 s; the server drops every socket
/// every 10 s and a message is posted on the channel during each drop. Over 65 s (more than
/// three lifetimes) the connection never fails, comes back and catches up after every drop,
/// refreshes at least three times, and the app's listener gets every rotated pair: the last
/// one it holds is the server's current one, every earlier one is spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rotated_pair_reaches_the_app_across_drops_and_lifetimes() {
    let mut server = ServerConfig::default();
    server.access_ttl = Duration::from_secs(20);
    let w = World::start(server, 1).await;
    let channel = w.channels[0].clone();
    assert_eq!(w.alice.expires_in, Some(Duration::from_secs(20)));
    let first_refresh = w.alice.refresh_token.clone().expect("a refresh token");

    let keyring = Keyring::default();
    let stored = keyring.clone();
    let config = w.client_config().on_refresh(move |c| stored.store(c));
    let (client, mut events) = w.client(config).await;
    let mut log = until_live(&mut events, 1).await;
    // A live message first: the core's reading of the message clock (see
    // `read_message_clock`), so a catch-up can prove itself complete.
    let live = w.server.post(&channel, "bob", "before").expect("post");
    log.extend(
        until(&mut events, "a live message", |e| {
            messages(std::slice::from_ref(e))
                .iter()
                .any(|m| m.1 == live)
        })
        .await,
    );

    let start = Instant::now();
    let mut drops = 0;
    while start.elapsed() < Duration::from_secs(65) {
        read_for(&mut events, &mut log, Duration::from_secs(10)).await;
        assert!(w.server.faults().drop_all() >= 1, "drop {drops}: no socket");
        let missed = [
            w.server.post(&channel, "bob", "gap 1").expect("post"),
            w.server.post(&channel, "bob", "gap 2").expect("post"),
        ];
        let phase = until(&mut events, "the catch-up after a drop", |e| {
            matches!(e, Event::Resynced { .. })
        })
        .await;
        assert!(
            matches!(phase.last(), Some(Event::Resynced { complete: true, .. })),
            "drop {drops}: {:?}",
            phase.last()
        );
        assert!(
            phase
                .iter()
                .any(|e| matches!(e, Event::Status(Status::Reconnecting { .. })))
                && phase
                    .iter()
                    .any(|e| matches!(e, Event::Status(Status::Connected { .. }))),
            "drop {drops}: the client came back"
        );
        let got: Vec<String> = messages(&phase).into_iter().map(|m| m.1).collect();
        assert_eq!(got, missed, "drop {drops}: what was posted meanwhile, once");
        log.extend(phase);
        drops += 1;
    }
    read_for(&mut events, &mut log, Duration::from_millis(200)).await;
    assert!(failures(&log).is_empty(), "{:?}", failures(&log));

    // A refresh is due every 16 s: none is on its way now, but give one that just went out
    // the moment its answer takes.
    let deadline = Instant::now() + Duration::from_secs(2);
    let (pairs, stats) = loop {
        let (stats, _) = client.stats().await.expect("stats");
        let pairs = keyring.pairs();
        if stats.refreshes == pairs.len() as u64 || Instant::now() > deadline {
            break (pairs, stats);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(pairs.len() >= 3, "{} refreshes in 65 s", pairs.len());
    assert_eq!(
        stats.refreshes,
        pairs.len() as u64,
        "every refresh's pair reached the app, once"
    );
    let current = pairs.last().expect("a pair");
    assert_eq!(
        client.access_token().await.expect("token").as_ref(),
        Some(&current.access_token),
        "the app holds the pair the connection uses"
    );
    assert!(pairs.iter().all(|p| p.expires_in.is_some()));
    client.close().await;

    let mut spent = vec![first_refresh];
    spent.extend(
        pairs[..pairs.len() - 1]
            .iter()
            .map(|p| p.refresh_token.clone().expect("a refresh token")),
    );
    let api = Api::new(&w.server.url()).expect("api");
    let current = current.refresh_token.clone().expect("a refresh token");
    assert!(!spent.contains(&current), "the server rotated it");
    assert_rotated(&api, &spent, &current).await;
}

/// The app refreshes by itself (tether has no refresh token) and installs a new access token
/// while the server still holds the upgrade made with the old one, which it then refuses with
/// 401 (the old session was logged out meanwhile). The connection opens again at once with
/// the new token: no `failed`, no second `reconnecting`, no refresh.
#[tokio::test]
async fn new_credentials_while_the_server_holds_the_upgrade_reconnect_without_failing() {
    let w = World::start(ServerConfig::default(), 1).await;
    let old = w.alice.access_token.clone();
    let keyring = Keyring::default();
    let stored = keyring.clone();
    let config = w.client_config().on_refresh(move |c| stored.store(c));
    let (client, mut events) = Client::spawn(config, Credentials::new(old.clone())).expect("spawn");
    client.subscribe(&w.channels[0]).await.expect("subscribe");
    client.connect().expect("connect");
    let mut log = until_live(&mut events, 1).await;

    let upgrades = w.server.upgrades();
    w.server.faults().delay_upgrades(Duration::from_secs(1));
    assert!(w.server.faults().drop_all() >= 1);
    let deadline = Instant::now() + WAIT;
    while w.server.upgrades() == upgrades {
        assert!(Instant::now() < deadline, "no new upgrade");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The upgrade with `old` is held. The app logs in anew (its refresh, say) and the old
    // session ends.
    let api = Api::new(&w.server.url()).expect("api");
    let fresh = api
        .login("alice", &Secret::new("password123"))
        .await
        .expect("login");
    api.logout(&old).await.expect("logout");
    client
        .set_credentials(Credentials::new(fresh.access_token.clone()))
        .expect("set_credentials");

    let phase = until(&mut events, "connected again", |e| {
        matches!(
            e,
            Event::Status(Status::Connected { .. }) | Event::Status(Status::Failed { .. })
        )
    })
    .await;
    log.extend(phase);
    w.server.faults().clear();
    read_for(&mut events, &mut log, Duration::from_millis(200)).await;
    assert!(failures(&log).is_empty(), "{:?}", failures(&log));
    let reconnecting = log
        .iter()
        .filter(|e| matches!(e, Event::Status(Status::Reconnecting { .. })))
        .count();
    assert_eq!(
        reconnecting, 1,
        "the 401 on the replaced token cost no backoff"
    );
    assert_eq!(
        w.server.upgrades() - upgrades,
        2,
        "the refused upgrade, then the one with the new token"
    );
    assert_eq!(
        client.access_token().await.expect("token").as_ref(),
        Some(&fresh.access_token)
    );
    assert!(
        keyring.pairs().is_empty(),
        "the app's own credentials are not echoed back"
    );
    let (stats, _) = client.stats().await.expect("stats");
    assert_eq!(stats.refreshes, 0);
    client.close().await;
}
