//! Fuzzing and property-testing entry points (feature `fuzzing`): decoders that must never
//! panic, and [`World`], a fake driver plus a tiny Kaiku server that drives a [`Connection`]
//! through any sequence of [`Op`]s while checking the invariants of DESIGN section 7 after
//! every step:
//!
//! 1. never two sockets (an `Open` only when the previous socket is gone);
//! 2. no frame unless connected (`Send` only on an open socket that said `ready`);
//! 3. the deadline always moves on (after `handle_timeout(t)` at the deadline, the next one is
//!    later, or there is none);
//! 4. wanted subscriptions re-sent exactly once per `ready`;
//! 5. backoff delays within `[cap/2, cap]` (or the server's `Retry-After`);
//! 6. no message id delivered twice;
//! 7. per-channel order kept, since the channel's latest `subscribe` (a new subscription may
//!    deliver a message from the clock margin before it that an earlier one never delivered);
//! 8. queues bounded (offline queue, held live events);
//! 9. never more than `max_in_flight` history reads out: a read counts from its
//!    `FetchHistory` until the core is given its answer, or `request_timeout` after it was
//!    sent;
//! 10. no read inside a pause: after the core was given a 429 (or a 503 with `Retry-After`)
//!     at `t` asking for `w`, no `FetchHistory` before `t + w`.
//!
//! The tiny server has a clock (2026-11-25T17:00:00Z at the run's start, moving with the
//! run's time) that stamps `created_at` and the `Date` of the upgrade and of every history
//! answer (on nine seeds in ten), and a read limit as Kaiku's: a fixed window per user of
//! 1-6 reads per 5-30 s, announced in `x-ratelimit-*` headers (on four seeds in five; the
//! core's mirror is then configured to the server's budget), refusing with 429 and
//! `Retry-After` once spent. Failed history answers are a 503, a proxy's 429 with
//! `Retry-After` or an overloaded server's 503 with `Retry-After`.
//!
//! A broken invariant panics: that is what a fuzzer or proptest reports. The cargo-fuzz targets
//! in `fuzz/` and `core/tests/properties.rs` are thin shims over this module.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};

pub mod model;

use model::{Admission, ReadLimit, ReadLimiter};

/// The core's seeded generator (SplitMix64), for harnesses that replay a seed's schedule.
pub use crate::rng::Rng;
use bytes::Bytes;

use crate::{
    Action, ClientEvent, Config, Connection, Credentials, CustomEvent, Event, HistoryError,
    HistoryRequest, ReadHeaders, ReconnectReason, RefreshError, ServerEventKind, SocketEnd, Status,
    Timestamp,
};

const S: Duration = Duration::from_secs(1);

/// The channels the operations talk about.
pub const CHANNELS: [&str; 3] = ["a", "b", "c"];

/// Decodes arbitrary bytes as a server frame: never panics; a decoded frame's JSON is the input.
pub fn decode_frame(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(event) = crate::ServerEvent::decode(bytes, 256 * 1024) {
        assert_eq!(
            event.json().as_bytes().as_ref(),
            data,
            "decoded frames keep their bytes"
        );
        assert!(!event.event_type().is_empty(), "an event always has a type");
    }
}

/// Decodes arbitrary bytes as every REST body the core reads: history pages (both shapes),
/// token responses and error bodies (both shapes). Never panics; a page's items keep their
/// bytes.
pub fn decode_rest(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(page) = crate::wire::HistoryPage::decode(bytes, 8 * 1024 * 1024) {
        for item in &page.items {
            let json = item.json().as_str();
            assert!(json.starts_with('{') && json.ends_with('}'));
        }
        let _ = page.has_more_given(50);
        let _ = page.cursor();
    }
    let _ = Credentials::from_token_response(data);
    let e = crate::wire::RestError::decode(data);
    assert!(
        e.message.len() <= 4 * data.len() + 3,
        "a message is never larger than its body"
    );
}

/// The `operations` fuzz target: bytes become a seed and a list of [`Op`]s, then [`run_ops`].
/// `start` is the run's first instant; the caller reads the clock, never the core.
pub fn operations(start: Instant, data: &[u8]) {
    // The same decoding libfuzzer-sys applies to a typed `(u64, Vec<Op>)` target, so crash
    // files replay here byte for byte.
    if let Ok((seed, ops)) = <(u64, Vec<Op>)>::arbitrary_take_rest(Unstructured::new(data)) {
        run_ops(start, seed, &ops);
    }
}

/// The seed and operations the `operations` target makes of `data` (to print a crash
/// input's steps: `{ops:#?}`).
pub fn decode_ops(data: &[u8]) -> Option<(u64, Vec<Op>)> {
    <(u64, Vec<Op>)>::arbitrary_take_rest(Unstructured::new(data)).ok()
}

/// Runs `ops` against a fresh connection seeded with `seed`, starting at `start`, checking
/// every invariant.
pub fn run_ops(start: Instant, seed: u64, ops: &[Op]) {
    let mut w = World::new(start, seed);
    for op in ops {
        w.apply(op);
    }
}

/// A message object in the Kaiku REST shape.
pub fn message(ch: &str, id: &str, second: u32) -> String {
    format!(
        r#"{{"attachments":[],"author":{{"avatar_url":null,"display_name":"Bob","id":"u2","status":"online","username":"bob"}},"channel_id":"{ch}","content":"m {id}","created_at":"2026-11-25T17:{:02}:{:02}.000001Z","edited_at":null,"encrypted":false,"id":"{id}","message_type":"user","parent_id":null,"pinned":false,"reply_to":null,"thread_last_reply_at":null,"thread_reply_count":0}}"#,
        (second / 60) % 60,
        second % 60
    )
}

/// The World's message `id` on `ch`, created at `created` (Unix nanoseconds), by Bob: as the
/// socket sends it (`live`) or as REST returns it.
fn message_at(ch: &str, id: &str, created: i64, live: bool) -> String {
    let (content, created_at) = (format!("m {id}"), rfc3339(created));
    let message = model::Message {
        id,
        channel_id: ch,
        author: ("u2", "bob", "Bob"),
        content: &content,
        created_at: &created_at,
    };
    if live { message.live() } else { message.rest() }
}

fn message_new(ch: &str, id: &str, created: i64) -> String {
    model::message_new(ch, &message_at(ch, id, created, true))
}

/// Kaiku's REST timestamp format (RFC 3339, microseconds, `Z`) of Unix nanoseconds.
fn rfc3339(nanos: i64) -> String {
    Timestamp::from_unix_nanos(nanos).to_rfc3339()
}

/// The server's clock at the run's start ([`model::SERVER_EPOCH`]), as a signed count.
const SERVER_EPOCH: i64 = model::SERVER_EPOCH as i64;

/// One step of a run: an app command, a transport event, a server action or time passing.
#[derive(Clone, Debug)]
pub enum Op {
    Connect,
    Disconnect,
    Subscribe(usize),
    Unsubscribe(usize),
    Send(u8, usize),
    /// The pending connect succeeds (`handle_open`).
    Open,
    /// The server says `ready` on the open socket.
    Ready,
    /// The server answers the oldest pending `subscribe` (`refuse` answers with an error).
    AnswerSubscribe {
        refuse: bool,
    },
    /// Someone posts a message (delivered live where the socket is subscribed).
    Post(usize),
    /// The server repeats a message it already delivered on this subscription (a duplicate
    /// on the wire).
    Echo(usize),
    Garbage(u8),
    Pong,
    /// The socket ends abruptly (or the close completes).
    Drop,
    /// The pending upgrade is refused.
    Refuse(u16, Option<u8>),
    /// The oldest REST history request is answered (`fail` with an error).
    AnswerHistory {
        fail: bool,
        bare: bool,
    },
    /// The pending refresh is answered.
    AnswerRefresh(u8),
    /// The world does the next natural thing: open, `ready`, answer a subscribe or a history
    /// request, or let the retry timer fire. Keeps random runs going deep.
    Progress,
    /// Time passes, firing timers at their deadlines.
    Advance(u32),
    /// The machine sleeps: time jumps without timers firing. After an odd number of
    /// seconds the OS also says the network changed (`handle_network_change`).
    Sleep(u32),
}

impl<'a> Arbitrary<'a> for Op {
    /// Weighted like real traffic: protocol progress and time far more often than faults.
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let ch = |u: &mut Unstructured<'a>| u.choose_index(CHANNELS.len());
        Ok(match u.int_in_range(0u8..=99)? {
            0..=3 => Op::Connect,
            4..=5 => Op::Disconnect,
            6..=11 => Op::Subscribe(ch(u)?),
            12..=13 => Op::Unsubscribe(ch(u)?),
            14..=17 => Op::Send(u.int_in_range(0..=7)?, ch(u)?),
            18..=25 => Op::Open,
            26..=33 => Op::Ready,
            34..=41 => Op::AnswerSubscribe {
                refuse: u.ratio(1, 10)?,
            },
            42..=53 => Op::Post(ch(u)?),
            54..=55 => Op::Echo(u.arbitrary()?),
            56..=57 => Op::Garbage(u.arbitrary()?),
            58..=59 => Op::Pong,
            60..=64 => Op::Drop,
            65..=68 => Op::Refuse(
                *u.choose(&[401u16, 403, 429, 503, 500])?,
                if u.arbitrary()? {
                    Some(u.int_in_range(0..=89)?)
                } else {
                    None
                },
            ),
            69..=77 => Op::AnswerHistory {
                fail: u.ratio(1, 3)?,
                bare: u.arbitrary()?,
            },
            78..=80 => Op::AnswerRefresh(u.int_in_range(0..=2)?),
            81..=92 => Op::Progress,
            93..=98 => Op::Advance(u.int_in_range(0..=44_999)?),
            _ => Op::Sleep(u.int_in_range(0..=7_199)?),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sock {
    None,
    Opening,
    Open { ready: bool },
    Closing,
}

/// A fake driver and a tiny Kaiku server, faithful enough that the invariants are meaningful.
/// The fake driver, the tiny server and the invariant checker.
#[derive(Debug)]
pub struct World {
    conn: Connection,
    config: Config,
    now: std::time::Instant,
    sock: Sock,
    /// Channels the server has subscribed on the current socket.
    server_subs: BTreeSet<String>,
    /// Subscribes sent and not answered, oldest first.
    pending_subs: VecDeque<String>,
    /// All messages ever posted, per channel, oldest first: (id, seq, created_at in Unix
    /// nanoseconds).
    store: BTreeMap<String, Vec<(String, u32, i64)>>,
    next_seq: u32,
    /// The newest `created_at` given (messages posted at one instant get one microsecond
    /// each, so creation order is strict).
    last_created: i64,
    history: VecDeque<HistoryRequest>,
    /// The run's first instant: the server's clock reads [`SERVER_EPOCH`] then.
    start: Instant,
    /// The server sends `Date`.
    date: bool,
    /// Kaiku's read limiter (the rules shared with the simulation: [`model`]).
    limiter: ReadLimiter,
    /// History reads out: id → when sent.
    reads_out: BTreeMap<u64, Instant>,
    /// The core was given a wait: no read before this.
    paused_until: Option<Instant>,
    refresh_pending: bool,
    delivered: BTreeSet<String>,
    /// Messages sent live per channel since the server last subscribed it.
    sent_live: BTreeMap<String, Vec<(String, u32, i64)>>,
    last_seq: BTreeMap<String, u32>,
    /// Retry-After of the refusal being handled, for the backoff bound.
    retry_after: Option<Duration>,
    token_gen: u32,
    /// What the run exercised, so a test can check the generator reaches the deep paths.
    pub seen: BTreeSet<&'static str>,
}

impl World {
    /// A world with a disconnected client seeded with `seed`.
    pub fn new(start: Instant, seed: u64) -> Self {
        let mut config = Config::new("http://127.0.0.1:1").unwrap();
        config.seed = seed;
        config.catch_up.page_size = 2;
        config.catch_up.max_messages = 4;
        config.queue.capacity = 8;
        // The server's clock and limit, and the reads at once, from the seed.
        let mut knobs = crate::rng::Rng::new(seed ^ 0x00DA_7E11_4417);
        let mut pick = |n: u64| knobs.next_u64() % n;
        let date = pick(10) != 0;
        let limit = ReadLimit {
            budget: 1 + pick(6) as u32,
            window: Duration::from_secs(5 + pick(26)),
            headers: pick(5) != 0,
        };
        config.pacing.max_in_flight = 1 + pick(3) as usize;
        if !limit.headers || !date {
            // The app knows its server's budget: the core's mirror matches it.
            config.pacing.budget = limit.budget;
            config.pacing.window = limit.window;
        }
        let now = start;
        let mut conn = Connection::new(config.clone()).unwrap();
        conn.set_credentials(
            now,
            Credentials::new("t0")
                .with_refresh_token("r")
                .with_expires_in(900 * S),
        );
        Self {
            conn,
            config,
            now,
            sock: Sock::None,
            server_subs: BTreeSet::new(),
            pending_subs: VecDeque::new(),
            store: BTreeMap::new(),
            next_seq: 0,
            last_created: 0,
            history: VecDeque::new(),
            start,
            date,
            limiter: ReadLimiter::new(limit),
            reads_out: BTreeMap::new(),
            paused_until: None,
            refresh_pending: false,
            delivered: BTreeSet::new(),
            sent_live: BTreeMap::new(),
            last_seq: BTreeMap::new(),
            retry_after: None,
            token_gen: 0,
            seen: BTreeSet::new(),
        }
    }

    fn frame(&mut self, json: &str) {
        self.conn
            .handle_frame(self.now, Bytes::copy_from_slice(json.as_bytes()));
    }

    fn socket_gone(&mut self) {
        self.sock = Sock::None;
        self.server_subs.clear();
        self.pending_subs.clear();
    }

    /// Applies one operation, then checks every invariant.
    pub fn apply(&mut self, op: &Op) {
        self.retry_after = None;
        let now = self.now;
        match op {
            Op::Connect => {
                let _ = self.conn.connect(now);
            }
            Op::Disconnect => self.conn.disconnect(now),
            Op::Subscribe(c) => {
                let ch = CHANNELS[*c];
                if !self.conn.subscriptions().any(|s| s == ch) {
                    // A new subscription: its order is checked afresh (invariant 7).
                    self.last_seq.remove(ch);
                }
                self.conn.subscribe(now, ch).unwrap();
            }
            Op::Unsubscribe(c) => self.conn.unsubscribe(now, CHANNELS[*c]),
            Op::Send(kind, c) => {
                let ch = CHANNELS[*c].to_owned();
                let event = match kind {
                    0 => ClientEvent::Typing { channel_id: ch },
                    1 => ClientEvent::StopTyping { channel_id: ch },
                    2 => ClientEvent::SetStatus {
                        status: "idle".into(),
                    },
                    3 => ClientEvent::VoiceJoin { channel_id: ch },
                    4 => ClientEvent::VoiceMute { channel_id: ch },
                    5 => ClientEvent::SetActivity {
                        activity: serde_json::json!({"n": c}),
                    },
                    6 => ClientEvent::VoiceLeave { channel_id: ch },
                    _ => {
                        ClientEvent::Custom(CustomEvent::new(r#"{"type":"voice_stats"}"#).unwrap())
                    }
                };
                // Refusals hand the event back: that is the contract, nothing to check here.
                let _ = self.conn.send(now, event);
            }
            Op::Open => {
                if self.sock == Sock::Opening {
                    self.sock = Sock::Open { ready: false };
                    self.conn.handle_open(now, Some("access_token"));
                    // The 101's `Date`, as the tokio driver reports it.
                    if self.date {
                        let date = Timestamp::from_unix_nanos(self.date_secs(now) * 1_000_000_000);
                        self.conn.handle_server_date(now, date);
                    }
                }
            }
            Op::Ready => {
                if self.sock == (Sock::Open { ready: false }) {
                    self.sock = Sock::Open { ready: true };
                    self.frame(r#"{"type":"ready","user_id":"me"}"#);
                }
            }
            Op::AnswerSubscribe { refuse } => {
                if let (Some(ch), Sock::Open { ready: true }) =
                    (self.pending_subs.pop_front(), self.sock)
                {
                    if *refuse {
                        self.frame(r#"{"type":"error","code":"forbidden","message":"no"}"#);
                    } else {
                        self.server_subs.insert(ch.clone());
                        self.sent_live.insert(ch.clone(), Vec::new());
                        self.frame(&format!(r#"{{"type":"subscribed","channel_id":"{ch}"}}"#));
                    }
                }
            }
            Op::Post(c) => {
                let ch = CHANNELS[*c];
                let seq = self.next_seq;
                self.next_seq += 1;
                let id = format!("m{seq:05}");
                let created = (self.wall(now) / 1_000 * 1_000).max(self.last_created + 1_000);
                self.last_created = created;
                self.store
                    .entry(ch.to_owned())
                    .or_default()
                    .push((id.clone(), seq, created));
                if self.server_subs.contains(ch) && self.sock == (Sock::Open { ready: true }) {
                    self.sent_live.entry(ch.to_owned()).or_default().push((
                        id.clone(),
                        seq,
                        created,
                    ));
                    self.frame(&message_new(ch, &id, created));
                }
            }
            Op::Echo(i) => {
                let all: Vec<(String, String, i64)> = self
                    .sent_live
                    .iter()
                    .flat_map(|(c, v)| {
                        v.iter()
                            .map(move |(id, _, created)| (c.clone(), id.clone(), *created))
                    })
                    .collect();
                if let (false, Sock::Open { ready: true }) = (all.is_empty(), self.sock) {
                    let (c, id, created) = &all[i % all.len()];
                    if self.server_subs.contains(c) {
                        self.frame(&message_new(c, id, *created));
                    }
                }
            }
            Op::Garbage(b) => {
                if matches!(self.sock, Sock::Open { .. }) {
                    let junk = match b % 4 {
                        0 => "{".to_owned(),
                        1 => r#"{"type":"message_new","channel_id":"a"}"#.to_owned(),
                        2 => format!("{}{}", "[".repeat(100), "]".repeat(100)),
                        _ => r#"{"type":"brand_new_event","x":[1,{"y":null}]}"#.to_owned(),
                    };
                    self.frame(&junk);
                }
            }
            Op::Pong => {
                if matches!(self.sock, Sock::Open { .. }) {
                    self.frame(r#"{"type":"pong"}"#);
                }
            }
            Op::Drop => {
                if matches!(self.sock, Sock::Open { .. } | Sock::Closing | Sock::Opening) {
                    self.socket_gone();
                    self.conn.handle_closed(
                        now,
                        SocketEnd::Closed {
                            code: None,
                            reason: String::new(),
                        },
                    );
                }
            }
            Op::Refuse(status, ra) => {
                if self.sock == Sock::Opening {
                    self.socket_gone();
                    let retry_after = ra.map(|s| Duration::from_secs(u64::from(s)));
                    self.retry_after = retry_after;
                    self.conn.handle_closed(
                        now,
                        SocketEnd::Refused {
                            status: *status,
                            retry_after,
                        },
                    );
                }
            }
            Op::AnswerHistory { fail, bare } => {
                if let Some(req) = self.history.pop_front() {
                    self.answer_history(&req, *fail, *bare);
                }
            }
            Op::AnswerRefresh(k) => {
                if std::mem::take(&mut self.refresh_pending) {
                    self.token_gen += 1;
                    let result = match k {
                        0 => Ok(Credentials::new(format!("t{}", self.token_gen))
                            .with_expires_in(900 * S)),
                        1 => Err(RefreshError::Transient { retry_after: None }),
                        _ => Err(RefreshError::Rejected),
                    };
                    self.conn.handle_refresh(now, result);
                }
            }
            Op::Progress => {
                let next = match self.sock {
                    Sock::Opening => Op::Open,
                    Sock::Open { ready: false } => Op::Ready,
                    Sock::Open { ready: true } if !self.pending_subs.is_empty() => {
                        Op::AnswerSubscribe { refuse: false }
                    }
                    _ if !self.history.is_empty() => Op::AnswerHistory {
                        fail: false,
                        bare: false,
                    },
                    _ if self.refresh_pending => Op::AnswerRefresh(0),
                    _ => {
                        let due = self
                            .conn
                            .poll_timeout()
                            .map_or(0, |t| t.saturating_duration_since(self.now).as_millis());
                        Op::Advance(u32::try_from(due).unwrap_or(u32::MAX).min(60_000))
                    }
                };
                self.apply(&next);
            }
            Op::Advance(ms) => {
                let target = self.now + Duration::from_millis(u64::from(*ms));
                for _ in 0..10_000 {
                    self.drain();
                    match self.conn.poll_timeout() {
                        Some(t) if t <= target => {
                            self.now = t.max(self.now);
                            self.conn.handle_timeout(self.now);
                            let next = self.conn.poll_timeout();
                            assert!(
                                next.is_none_or(|n| n > self.now),
                                "deadline did not move on"
                            );
                        }
                        _ => break,
                    }
                }
                self.now = target;
            }
            Op::Sleep(secs) => {
                self.now += Duration::from_secs(u64::from(*secs));
                self.conn.handle_timeout(self.now);
                if secs % 2 == 1 {
                    // The OS says the network changed on waking (the drivers' `online`).
                    self.drain();
                    self.conn.handle_network_change(self.now);
                }
            }
        }
        self.drain();
        assert!(
            self.conn.queued() <= self.config.queue.capacity,
            "offline queue over its bound"
        );
        assert!(
            self.conn.held() <= self.config.catch_up.max_held * CHANNELS.len(),
            "held live events over their bound"
        );
    }

    /// The server's clock at `at`, in Unix nanoseconds.
    fn wall(&self, at: Instant) -> i64 {
        let since = at.saturating_duration_since(self.start).as_nanos();
        SERVER_EPOCH * 1_000_000_000 + i64::try_from(since).unwrap_or(i64::MAX / 2)
    }

    /// `Date` at `at`: the server's clock in whole seconds, rounded down.
    fn date_secs(&self, at: Instant) -> i64 {
        self.wall(at).div_euclid(1_000_000_000)
    }

    /// Counts a read arriving at `now` against the budget: what is left and when the window
    /// ends (Unix seconds, rounded up), or the whole seconds to wait (a spent budget).
    fn admit(&mut self, now: Instant) -> Result<(u32, i64), u64> {
        match self
            .limiter
            .admit(now.saturating_duration_since(self.start))
        {
            Admission::Counted {
                remaining, reset, ..
            } => Ok((
                remaining,
                SERVER_EPOCH + i64::try_from(reset).unwrap_or(i64::MAX / 2),
            )),
            Admission::Refused { retry_after, .. } => Err(retry_after),
        }
    }

    /// Answers history read `req` as the server, or what stands in front of it, would; the
    /// headers first, as drivers report them.
    fn answer_history(&mut self, req: &HistoryRequest, fail: bool, bare: bool) {
        let now = self.now;
        self.reads_out.remove(&req.id);
        let mut budget = None;
        let (status, retry_after) = if fail {
            // Trouble in front of the server, which counts nothing; picked by the request id.
            match req.id % 3 {
                0 => (503, None),
                1 => (429, Some(1 + req.id / 3 % 3)),
                _ => (503, Some(1 + req.id / 3 % 5)),
            }
        } else {
            match self.admit(now) {
                Ok(counted) => {
                    budget = Some(counted);
                    (200, None)
                }
                Err(wait) => {
                    self.seen.insert("read refused by the budget");
                    (429, Some(wait))
                }
            }
        };
        let mut headers: Vec<(&str, String)> = Vec::new();
        if self.date {
            let secs = u64::try_from(self.date_secs(now)).unwrap_or(0);
            let date = std::time::UNIX_EPOCH + Duration::from_secs(secs);
            headers.push(("date", httpdate::fmt_http_date(date)));
        }
        let limit = self.limiter.limit();
        if let Some((remaining, reset)) = budget.filter(|_| limit.headers) {
            headers.push(("x-ratelimit-limit", limit.budget.to_string()));
            headers.push(("x-ratelimit-remaining", remaining.to_string()));
            headers.push(("x-ratelimit-reset", reset.to_string()));
        }
        if let Some(secs) = retry_after {
            headers.push(("retry-after", secs.to_string()));
            // Invariant 10: no read before this.
            let until = now + Duration::from_secs(secs);
            self.paused_until = Some(self.paused_until.map_or(until, |u| u.max(until)));
            self.seen.insert("read paused");
        }
        let h = ReadHeaders::from_headers(status, headers.iter().map(|(n, v)| (*n, v.as_bytes())));
        self.conn.handle_history_headers(now, req.id, &h);
        let response = if status == 200 {
            Ok(Bytes::from(self.page(req, bare)))
        } else {
            Err(HistoryError::Status {
                status,
                retry_after: retry_after.map(Duration::from_secs),
            })
        };
        self.conn.handle_history(now, req.id, response);
    }

    /// A history page from the store, newest first, as the server would answer `req`.
    fn page(&self, req: &HistoryRequest, bare: bool) -> String {
        let msgs = self
            .store
            .get(req.channel_id.as_str())
            .cloned()
            .unwrap_or_default();
        let mut older: Vec<&(String, u32, i64)> = match &req.before {
            Some(b) => msgs
                .iter()
                .take_while(|(id, ..)| id != b.as_str())
                .collect(),
            None => msgs.iter().collect(),
        };
        older.reverse();
        let limit = model::page_limit(req.limit);
        let items: Vec<String> = older
            .iter()
            .take(limit)
            .map(|(id, _, created)| message_at(req.channel_id.as_str(), id, *created, false))
            .collect();
        let cursor = (older.len() > limit).then(|| older[limit - 1].0.as_str());
        model::history_body(items.iter().map(String::as_str), cursor, !bare)
    }

    fn drain(&mut self) {
        let mut subscribe_frames = Vec::new();
        let mut became_ready = false;
        while let Some(action) = self.conn.poll_action() {
            match action {
                Action::Open(_) => {
                    assert_eq!(self.sock, Sock::None, "a second socket was opened");
                    self.sock = Sock::Opening;
                }
                Action::Abort => {
                    self.socket_gone();
                }
                Action::Close { .. } => {
                    assert!(
                        matches!(self.sock, Sock::Open { .. }),
                        "close without an open socket"
                    );
                    self.sock = Sock::Closing;
                    self.server_subs.clear();
                    self.pending_subs.clear();
                }
                Action::Send(frame) => {
                    assert_eq!(
                        self.sock,
                        Sock::Open { ready: true },
                        "frame sent while not connected: {frame}"
                    );
                    let v: serde_json::Value = serde_json::from_str(frame.as_str()).unwrap();
                    match v["type"].as_str() {
                        Some("subscribe") => {
                            let ch = v["channel_id"].as_str().unwrap().to_owned();
                            subscribe_frames.push(ch.clone());
                            self.pending_subs.push_back(ch);
                        }
                        Some("unsubscribe") => {
                            // The server handles frames in order: a subscribe still pending
                            // is answered, then undone by this unsubscribe.
                            let ch = v["channel_id"].as_str().unwrap();
                            self.server_subs.remove(ch);
                            self.pending_subs.retain(|p| p != ch);
                        }
                        _ => {}
                    }
                }
                Action::FetchHistory(req) => {
                    let (now, id) = (self.now, req.id);
                    let pacing = &self.config.pacing;
                    let (max, timeout) = (pacing.max_in_flight, pacing.request_timeout);
                    let out = self
                        .reads_out
                        .values()
                        .filter(|sent| **sent + timeout > now)
                        .count();
                    assert!(
                        out < max,
                        "read {id} sent with {out} reads already in flight (max_in_flight {max})"
                    );
                    if let Some(until) = self.paused_until {
                        assert!(
                            now >= until,
                            "read {id} sent {:?} before the end of a wait the server asked for",
                            until - now
                        );
                    }
                    self.reads_out.insert(id, now);
                    self.history.push_back(req);
                }
                Action::RefreshToken(_) => {
                    self.seen.insert("refresh");
                    assert!(!self.refresh_pending, "two refreshes in flight");
                    self.refresh_pending = true;
                }
                Action::Emit(Event::Resynced { complete, .. }) => {
                    self.seen.insert(if complete {
                        "resynced complete"
                    } else {
                        "resynced incomplete"
                    });
                }
                Action::Emit(Event::SubscriptionRejected { .. }) => {
                    self.seen.insert("subscription rejected");
                }
                Action::Emit(Event::Status(status)) => {
                    self.seen.insert(status.name());
                    if let Status::Reconnecting { reason, .. } = &status {
                        self.seen.insert(match reason {
                            ReconnectReason::HeartbeatTimeout => "heartbeat timeout",
                            ReconnectReason::HandshakeTimeout => "handshake timeout",
                            ReconnectReason::RateLimited => "rate limited",
                            _ => "other loss",
                        });
                    }
                    if status == Status::Connected {
                        became_ready = true;
                        subscribe_frames.clear();
                    }
                    self.check_backoff(&status);
                }
                Action::Emit(Event::Server(e)) => {
                    if let ServerEventKind::MessageNew {
                        channel_id,
                        message,
                    } = e.kind()
                    {
                        let id = message.id.to_string();
                        assert!(
                            self.delivered.insert(id.clone()),
                            "message {id} delivered twice"
                        );
                        self.seen.insert("message delivered");
                        let seq: u32 = id[1..].parse().unwrap();
                        let last = self.last_seq.insert(channel_id.to_string(), seq);
                        assert!(
                            last.is_none_or(|l| l < seq),
                            "channel {channel_id}: {seq} after {last:?}"
                        );
                    }
                }
                _ => {}
            }
        }
        if became_ready {
            let wanted: Vec<String> = self.conn.subscriptions().map(str::to_owned).collect();
            assert_eq!(
                subscribe_frames, wanted,
                "ready must re-send each wanted channel once"
            );
        }
    }

    fn check_backoff(&self, status: &Status) {
        if let Status::Reconnecting {
            attempt,
            retry_in_ms,
            reason,
        } = status
        {
            let b = &self.config.backoff;
            let shift = attempt.saturating_sub(1).min(20);
            let cap = (b.base * (1u32 << shift)).min(b.max);
            let wait = Duration::from_millis(*retry_in_ms);
            let floor = cap / 2;
            let mut ceiling = cap;
            if matches!(
                reason,
                ReconnectReason::RateLimited | ReconnectReason::ServerUnavailable
            ) {
                ceiling = ceiling.max(self.retry_after.unwrap_or(Duration::from_secs(5)));
            }
            assert!(
                wait + Duration::from_millis(1) >= floor && wait <= ceiling,
                "retry {attempt} waits {wait:?}, outside [{floor:?}, {ceiling:?}]"
            );
        }
    }
}
