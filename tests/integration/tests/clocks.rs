//! Issue 18, item 6: a catch-up over real loopback sockets when the clock that stamps
//! `created_at` is not the clock that writes `Date`.
//!
//! On the real Kaiku server `created_at` is Postgres `NOW()` on the database host, and `Date`
//! is the app server's (or a proxy's): the dev server's `message_clock_offset` moves the first
//! and leaves the second. Per clock case (5 s behind, 1 h behind, 1 h ahead) and per history
//! shape (`{items, has_more, next_cursor}` and the bare array), the links are cut twice and
//! more messages than two catch-up pages are posted during each cut. The promise is checked
//! against the server's own record of each channel (never against the client's bookkeeping):
//! nothing lost, nothing doubled, order kept, one `resynced` per channel per cut.
//!
//! A channel on a connection where no message at all was seen live has nothing to measure
//! the message clock with: its first catch-up may end `complete: false` (then the app reloads
//! the channel, and what was delivered must still be once and in order). Everywhere else,
//! when the channel itself or another channel had live traffic, `complete: true` is required.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tether_core::Event;
use tether_devserver::{ClockOffset, HistoryShape, ServerConfig};
use tether_integration::{World, messages, until, until_live};
use tether_tokio::Events;

/// The client's catch-up page size: each cut misses more than two pages.
const PAGE: u32 = 10;
/// Messages posted on each channel while its link is cut.
const GAP: usize = 25;
/// Messages on each channel before the client subscribes: history the app loaded itself,
/// [`OLD`] older than the subscription (on the message clock). Four pages: a walk that does not
/// know where the subscription began reads into it.
const BEFORE: usize = 40;
/// How much older than the subscription the history before it is.
const OLD: Duration = Duration::from_secs(600);

const FIVE_SECONDS: Duration = Duration::from_secs(5);
const ONE_HOUR: Duration = Duration::from_secs(3600);

/// What each catch-up of a channel must prove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// `complete: true`, and every message of the gap delivered.
    Complete,
    /// Either `complete: true` with every message of the gap delivered, or `complete: false`.
    CompleteOrReload,
}

/// A test's world, everything the client delivered, and what the server was asked to create.
struct Run {
    w: World,
    events: Events,
    _client: tether_tokio::Client,
    /// Every event the client delivered, in order.
    seen: Vec<Event>,
    /// Per channel: the ids the app must have received (the history it loaded itself
    /// excepted), oldest first.
    owed: BTreeMap<String, Vec<String>>,
    /// The history from before the subscription, every channel's.
    old: BTreeSet<String>,
    /// What the app reloaded after a `complete: false`: every message on the channel's
    /// record then. It is outside the promise, and outside its order (D68: a later walk's
    /// late margin may reach below the reload, after newer messages).
    reloaded: BTreeSet<String>,
    cuts: usize,
}

impl Run {
    async fn start(offset: ClockOffset, shape: HistoryShape, channels: usize) -> Self {
        let mut config = ServerConfig::default();
        config.message_clock_offset = offset;
        config.history_shape = shape;
        let w = World::start(config, channels).await;
        let mut old = BTreeSet::new();
        for ch in &w.channels {
            for i in 0..BEFORE {
                old.insert(w.server.post(ch, "bob", &format!("old {i}")).expect("post"));
            }
        }
        // Posted ten minutes ago: every channel's messages move back together, in order.
        w.server.with_store(|s| {
            for m in s.channels.values_mut().flat_map(|c| c.messages.iter_mut()) {
                m.created_at -= OLD;
            }
        });
        let mut cfg = w.client_config();
        cfg.core.catch_up.page_size = PAGE;
        let (client, mut events) = w.client(cfg).await;
        let seen = until_live(&mut events, channels).await;
        Self {
            w,
            events,
            _client: client,
            seen,
            owed: BTreeMap::new(),
            reloaded: BTreeSet::new(),
            old,
            cuts: 0,
        }
    }

    fn channel(&self, i: usize) -> String {
        self.w.channels[i].clone()
    }

    /// Posts `n` messages on `ch` while the link is up and waits until each is delivered.
    async fn live(&mut self, ch: &str, n: usize) {
        for i in 0..n {
            let id = self
                .w
                .server
                .post(ch, "bob", &format!("live {i}"))
                .expect("post");
            self.owed.entry(ch.to_owned()).or_default().push(id.clone());
            let got = until(&mut self.events, "a live message", |e| {
                messages(std::slice::from_ref(e)).iter().any(|m| m.1 == id)
            })
            .await;
            self.seen.extend(got);
        }
    }

    /// Cuts every link (no close frame), posts `GAP` messages on every channel while it is
    /// down, and reads events until every channel has resynced once. Checks each channel's
    /// `resynced` against `expect` (by channel index) and returns them.
    async fn cut(&mut self, expect: &[Expect]) -> Vec<(bool, usize)> {
        self.cuts += 1;
        let cut = self.cuts;
        assert!(self.w.server.faults().drop_all() >= 1, "a socket to drop");
        // The test runtime has one thread: the client cannot reconnect before these are all in.
        let mut gap: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for i in 0..GAP {
            for ch in &self.w.channels {
                let id = self
                    .w
                    .server
                    .post(ch, "bob", &format!("cut {cut} gap {i}"))
                    .expect("post");
                gap.entry(ch.clone()).or_default().push(id);
            }
        }
        let n = self.w.channels.len();
        let mut resynced: BTreeMap<String, (bool, usize)> = BTreeMap::new();
        let got = until(&mut self.events, "every channel resynced", |e| {
            if let Event::Resynced {
                channel_id,
                recovered,
                complete,
            } = e
            {
                let again = resynced.insert(channel_id.to_string(), (*complete, *recovered));
                assert_eq!(again, None, "cut {cut}: {channel_id} resynced twice");
            }
            resynced.len() == n
        })
        .await;
        let delivered = messages(&got);
        self.seen.extend(got);
        let mut out = Vec::new();
        for (i, ch) in self.w.channels.clone().iter().enumerate() {
            let (complete, recovered) = resynced[ch];
            let gap = &gap[ch];
            let in_window = delivered.iter().filter(|m| &m.0 == ch).count();
            if expect[i] == Expect::Complete {
                assert!(
                    complete,
                    "cut {cut}, channel {i}: `resynced {{ complete: false }}` after \
                     {GAP} missed messages (recovered {recovered})"
                );
                // Where the channel's traffic began is known (its own live messages, or the
                // message clock measured on another channel's): the walk stops there, not in
                // the history from before the subscription.
                let old = delivered
                    .iter()
                    .filter(|m| &m.0 == ch && self.old.contains(&m.1))
                    .count();
                assert_eq!(
                    old, 0,
                    "cut {cut}, channel {i}: {old} messages from {OLD:?} before the \
                     subscription delivered as missed"
                );
            }
            if complete {
                // Nothing came live during the cut: all it delivered, it recovered.
                assert_eq!(
                    recovered, in_window,
                    "cut {cut}, channel {i}: `recovered` is not what the catch-up delivered"
                );
                assert!(
                    recovered >= GAP,
                    "cut {cut}, channel {i}: `complete: true` but recovered {recovered} of \
                     {GAP} missed messages"
                );
                self.owed.entry(ch.clone()).or_default().extend(gap.clone());
            } else {
                // The app reloads the channel.
                self.reloaded
                    .extend(self.w.server.messages(ch).into_iter().map(|m| m.id));
            }
            out.push((complete, recovered));
        }
        out
    }

    /// Holds the promise against the server's own record of every channel: each message the
    /// app is owed delivered exactly once, nothing delivered twice, and what was delivered in
    /// the order of the server's history (`created_at`).
    fn check_against_the_servers_record(&self) {
        self.check_against_the_servers_record_but(&BTreeSet::new());
    }

    /// [`check_against_the_servers_record`](Self::check_against_the_servers_record), with
    /// `late` (messages that became visible after a later one) left out of the order.
    fn check_against_the_servers_record_but(&self, late: &BTreeSet<String>) {
        let delivered = messages(&self.seen);
        for (i, ch) in self.w.channels.iter().enumerate() {
            let record: Vec<String> = self
                .w
                .server
                .messages(ch)
                .into_iter()
                .map(|m| m.id)
                .collect();
            let place: BTreeMap<&str, usize> = record
                .iter()
                .enumerate()
                .map(|(n, id)| (id.as_str(), n))
                .collect();
            let got: Vec<&str> = delivered
                .iter()
                .filter(|m| &m.0 == ch)
                .map(|m| m.1.as_str())
                .collect();
            let mut once = BTreeSet::new();
            for id in &got {
                assert!(once.insert(*id), "channel {i}: {id} delivered twice");
                assert!(
                    place.contains_key(id),
                    "channel {i}: {id} is not on the server"
                );
            }
            let owed = self.owed.get(ch).cloned().unwrap_or_default();
            let lost: Vec<&String> = owed
                .iter()
                .filter(|id| !once.contains(id.as_str()))
                .collect();
            assert!(
                lost.is_empty(),
                "channel {i}: {} of {} owed messages never delivered (first: {:?})",
                lost.len(),
                owed.len(),
                lost.first()
            );
            let order: Vec<usize> = got
                .iter()
                .filter(|id| !late.contains(**id) && !self.reloaded.contains(**id))
                .map(|id| place[id])
                .collect();
            assert!(
                order.windows(2).all(|w| w[0] < w[1]),
                "channel {i}: delivered out of the server's order: {order:?}"
            );
        }
    }
}

/// A quiet channel: nothing delivered live on the connection before the first cut. That
/// catch-up may end `complete: false`; after a live message, the next one must be complete.
async fn quiet_channel(offset: ClockOffset, shape: HistoryShape) {
    let mut r = Run::start(offset, shape, 1).await;
    r.cut(&[Expect::CompleteOrReload]).await;
    let ch = r.channel(0);
    r.live(&ch, 1).await;
    r.cut(&[Expect::Complete]).await;
    r.check_against_the_servers_record();
}

/// Two channels, one with live traffic before each cut and one with none ever: both must be
/// caught up completely, the quiet one measured by the busy one's live messages.
async fn busy_and_quiet_channels(offset: ClockOffset, shape: HistoryShape) {
    let mut r = Run::start(offset, shape, 2).await;
    let busy = r.channel(0);
    r.live(&busy, 3).await;
    r.cut(&[Expect::Complete, Expect::Complete]).await;
    r.live(&busy, 2).await;
    r.cut(&[Expect::Complete, Expect::Complete]).await;
    r.check_against_the_servers_record();
}

const ENVELOPE: HistoryShape = HistoryShape::Envelope;
const BARE: HistoryShape = HistoryShape::BareArray;

#[tokio::test]
async fn message_clock_5s_behind_quiet_channel_envelope() {
    quiet_channel(ClockOffset::behind(FIVE_SECONDS), ENVELOPE).await;
}

#[tokio::test]
async fn message_clock_5s_behind_quiet_channel_bare_array() {
    quiet_channel(ClockOffset::behind(FIVE_SECONDS), BARE).await;
}

#[tokio::test]
async fn message_clock_5s_behind_busy_and_quiet_channels_envelope() {
    busy_and_quiet_channels(ClockOffset::behind(FIVE_SECONDS), ENVELOPE).await;
}

#[tokio::test]
async fn message_clock_5s_behind_busy_and_quiet_channels_bare_array() {
    busy_and_quiet_channels(ClockOffset::behind(FIVE_SECONDS), BARE).await;
}

#[tokio::test]
async fn message_clock_1h_behind_quiet_channel_envelope() {
    quiet_channel(ClockOffset::behind(ONE_HOUR), ENVELOPE).await;
}

#[tokio::test]
async fn message_clock_1h_behind_quiet_channel_bare_array() {
    quiet_channel(ClockOffset::behind(ONE_HOUR), BARE).await;
}

#[tokio::test]
async fn message_clock_1h_behind_busy_and_quiet_channels_envelope() {
    busy_and_quiet_channels(ClockOffset::behind(ONE_HOUR), ENVELOPE).await;
}

#[tokio::test]
async fn message_clock_1h_behind_busy_and_quiet_channels_bare_array() {
    busy_and_quiet_channels(ClockOffset::behind(ONE_HOUR), BARE).await;
}

#[tokio::test]
async fn message_clock_1h_ahead_quiet_channel_envelope() {
    quiet_channel(ClockOffset::ahead(ONE_HOUR), ENVELOPE).await;
}

#[tokio::test]
async fn message_clock_1h_ahead_quiet_channel_bare_array() {
    quiet_channel(ClockOffset::ahead(ONE_HOUR), BARE).await;
}

#[tokio::test]
async fn message_clock_1h_ahead_busy_and_quiet_channels_envelope() {
    busy_and_quiet_channels(ClockOffset::ahead(ONE_HOUR), ENVELOPE).await;
}

#[tokio::test]
async fn message_clock_1h_ahead_busy_and_quiet_channels_bare_array() {
    busy_and_quiet_channels(ClockOffset::ahead(ONE_HOUR), BARE).await;
}

/// The control: with both clocks agreeing, the same cuts lose nothing on today's core.
#[tokio::test]
async fn clocks_that_agree_busy_and_quiet_channels_envelope() {
    busy_and_quiet_channels(ClockOffset::ZERO, ENVELOPE).await;
}

/// The control for a quiet channel.
#[tokio::test]
async fn clocks_that_agree_quiet_channel_bare_array() {
    quiet_channel(ClockOffset::ZERO, BARE).await;
}

/// Kaiku's upload path: a message stamped when its transaction began (before a later message
/// the app saw live, its anchor) becomes visible only during the cut, behind that anchor in
/// history. It must be delivered, or the catch-up must not claim to be complete.
#[tokio::test]
async fn a_message_committed_late_during_the_cut_behind_the_anchor_is_delivered_or_not_complete() {
    const COMMIT: Duration = Duration::from_millis(300);
    let mut r = Run::start(ClockOffset::ZERO, ENVELOPE, 1).await;
    let ch = r.channel(0);
    r.live(&ch, 1).await;
    let upload =
        r.w.server
            .post_with_commit_delay(&ch, "bob", "an upload", COMMIT)
            .expect("post");
    r.live(&ch, 1).await;
    // Keep the link down until the upload is visible, so it is never broadcast to the client.
    let faults = r.w.server.faults();
    faults.refuse_upgrades(503, None, None);
    assert!(faults.drop_all() >= 1);
    let deadline = tokio::time::Instant::now() + tether_integration::WAIT;
    while !r.w.server.messages(&ch).iter().any(|m| m.id == upload) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upload never committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    faults.clear();
    let got = until(&mut r.events, "resynced", |e| {
        matches!(e, Event::Resynced { .. })
    })
    .await;
    let delivered = messages(&got).iter().any(|m| m.1 == upload);
    r.seen.extend(got.clone());
    let Some(Event::Resynced { complete, .. }) = got.last() else {
        unreachable!("until returns the match last")
    };
    assert!(
        delivered || !complete,
        "the late upload was neither delivered nor reported: `complete: true`"
    );
    if delivered {
        r.owed.entry(ch).or_default().push(upload.clone());
    }
    r.check_against_the_servers_record_but(&BTreeSet::from([upload]));
}

/// `tether serve --message-clock-offset -3600`: the demo's messages are stamped an hour
/// behind the `Date` of the answer that lists them.
#[tokio::test]
async fn tether_serve_stamps_created_at_with_the_offset_clock_and_date_with_the_real_one() {
    use tokio::io::AsyncBufReadExt as _;
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tether-under-test"))
        .args(["serve", "--addr", &addr.to_string()])
        .args(["--message-clock-offset", "-3600"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(tether_integration::WAIT, lines.next_line())
        .await
        .expect("a line in time")
        .expect("stdout")
        .expect("a first line");
    assert_eq!(first, format!("listening on http://{addr}"));

    let api = tether_tokio::Api::new(&format!("http://{addr}")).expect("api");
    let creds = api
        .login("alice", &tether_core::Secret::new("password123"))
        .await
        .expect("demo login");
    let channels = api.channels(&creds.access_token).await.expect("channels");
    let ch = channels[0]["id"].as_str().expect("channel id");
    let (body, headers) = api
        .messages_raw_with_headers(&creds.access_token, ch, None, 10)
        .await;
    let page =
        tether_core::wire::HistoryPage::decode(body.expect("history"), 1 << 20).expect("a page");
    let date = headers.and_then(|h| h.date).expect("a Date header");
    assert!(!page.items.is_empty(), "demo messages");
    for item in &page.items {
        let created = item.head().created_at.expect("created_at");
        let behind = (date.unix_nanos() - created.unix_nanos()) as f64 / 1e9;
        // `Date` has whole seconds, and the demo was posted a moment before the read.
        assert!(
            (3598.0..3610.0).contains(&behind),
            "created_at is {behind} s behind Date, not an hour"
        );
    }
    child.kill().await.expect("kill");
}
