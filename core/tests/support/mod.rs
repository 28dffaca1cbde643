//! A scripted driver for the core: simulated time, a fake socket, and helpers that read
//! what the core asked for. Shared by the scenario and property tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use tether_core::HistoryRequest;
use tether_core::{Action, Config, Connection, Credentials, Event, ServerEvent, SocketEnd, Status};

/// The one place a test reads the real clock: every other instant is derived from it.
#[allow(clippy::disallowed_methods)]
pub fn t0() -> Instant {
    Instant::now()
}

pub const MS: Duration = Duration::from_millis(1);
pub const S: Duration = Duration::from_secs(1);

pub struct Harness {
    pub conn: Connection,
    pub t0: Instant,
    pub now: Instant,
    /// Every action ever emitted, in order.
    pub log: Vec<Action>,
    /// Index into `log` of the first action not yet read by `take`.
    cursor: usize,
}

pub fn config() -> Config {
    let mut c = Config::new("http://127.0.0.1:8080").unwrap();
    c.seed = 42;
    // Messages here become visible in the order they are stamped: walks end at their
    // anchors. The default late margin has its own tests (`catchup/tests.rs`, simulation).
    c.catch_up.late_margin = std::time::Duration::ZERO;
    c
}

impl Harness {
    pub fn new() -> Self {
        Self::with_config(config())
    }

    pub fn with_config(config: Config) -> Self {
        let t0 = t0();
        let mut conn = Connection::new(config).unwrap();
        conn.set_credentials(t0, Credentials::new("access-1"));
        Self {
            conn,
            t0,
            now: t0,
            log: Vec::new(),
            cursor: 0,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    pub fn drain(&mut self) {
        while let Some(a) = self.conn.poll_action() {
            self.log.push(a);
        }
    }

    /// Actions emitted since the last `take`.
    pub fn take(&mut self) -> Vec<Action> {
        self.drain();
        let out = self.log[self.cursor..].to_vec();
        self.cursor = self.log.len();
        out
    }

    /// Forgets every action so far (a scenario's setup).
    pub fn clear_log(&mut self) {
        self.drain();
        self.log.clear();
        self.cursor = 0;
    }

    /// Runs timers up to `now + d`, firing each deadline at its exact instant.
    pub fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        for _ in 0..100_000 {
            self.drain();
            match self.conn.poll_timeout() {
                Some(t) if t <= target => {
                    self.now = t.max(self.now);
                    self.conn.handle_timeout(self.now);
                    let after = self.conn.poll_timeout();
                    assert!(after.is_none_or(|a| a > self.now), "deadline did not move");
                }
                _ => {
                    self.now = target;
                    self.drain();
                    return;
                }
            }
        }
        panic!("timer loop did not settle");
    }

    /// Jumps the clock without firing timers in between (a machine that slept).
    pub fn sleep_machine(&mut self, d: Duration) {
        self.now += d;
        self.conn.handle_timeout(self.now);
        self.drain();
    }

    pub fn connect(&mut self) {
        self.conn.connect(self.now).unwrap();
        self.drain();
    }

    pub fn subscribe(&mut self, ch: &str) {
        self.conn.subscribe(self.now, ch).unwrap();
        self.drain();
    }

    pub fn frame(&mut self, json: &str) {
        self.conn
            .handle_frame(self.now, Bytes::copy_from_slice(json.as_bytes()));
        self.drain();
    }

    /// The socket opens; its 101 carried a `Date`: the server's clock reads
    /// 2026-11-25T17:00:00Z at `t0` (the hour `message` stamps its messages in).
    pub fn open(&mut self) {
        self.conn.handle_open(self.now, Some("access_token"));
        self.conn
            .handle_server_date(self.now, server_clock(self.elapsed()));
        self.drain();
    }

    pub fn ready(&mut self) {
        self.frame(r#"{"type":"ready","user_id":"me"}"#);
    }

    /// Connects from scratch and reaches `ready`.
    pub fn connect_ready(&mut self) {
        self.connect();
        self.open();
        self.ready();
    }

    pub fn drop_link(&mut self) {
        self.conn.handle_closed(
            self.now,
            SocketEnd::Closed {
                code: None,
                reason: String::new(),
            },
        );
        self.drain();
    }

    pub fn refuse(&mut self, status: u16, retry_after: Option<Duration>) {
        self.conn.handle_closed(
            self.now,
            SocketEnd::Refused {
                status,
                retry_after,
            },
        );
        self.drain();
    }

    /// Waits out the reconnect delay until the core opens a socket; returns the wait.
    pub fn until_open(&mut self) -> Duration {
        let start = self.now;
        self.drain();
        let from = self.log.len();
        for _ in 0..10_000 {
            if self.log[from..]
                .iter()
                .any(|a| matches!(a, Action::Open(_)))
            {
                return self.now - start;
            }
            let t = self.conn.poll_timeout().expect("a retry must be scheduled");
            self.now = t.max(self.now);
            self.conn.handle_timeout(self.now);
            self.drain();
        }
        panic!("never reopened");
    }

    /// Reconnects after a drop: waits for the retry, opens, `ready`.
    pub fn reconnect(&mut self) {
        self.until_open();
        self.open();
        self.ready();
    }

    pub fn answer_history(&mut self, id: u64, body: &str) {
        self.conn
            .handle_history(self.now, id, Ok(Bytes::copy_from_slice(body.as_bytes())));
        self.drain();
    }
}

pub fn sent(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(t) => Some(t.to_string()),
            _ => None,
        })
        .collect()
}

pub fn opens(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Open(_)))
        .count()
}

pub fn fetches(actions: &[Action]) -> Vec<HistoryRequest> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::FetchHistory(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

pub fn server_events(actions: &[Action]) -> Vec<ServerEvent> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit(Event::Server(e)) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// Ids of delivered `message_new` events, in delivery order.
pub fn delivered_ids(actions: &[Action]) -> Vec<String> {
    server_events(actions)
        .iter()
        .filter_map(|e| match e.kind() {
            tether_core::ServerEventKind::MessageNew { message, .. } => {
                Some(message.id.to_string())
            }
            _ => None,
        })
        .collect()
}

pub fn statuses(actions: &[Action]) -> Vec<Status> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit(Event::Status(s)) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

pub fn events(actions: &[Action]) -> Vec<Event> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// The server's clock `elapsed` after `t0`, in whole seconds as a `Date` header has it.
pub fn server_clock(elapsed: Duration) -> tether_core::Timestamp {
    let base = tether_core::Timestamp::parse("2026-11-25T17:00:00Z").unwrap();
    let secs = i64::try_from(elapsed.as_secs()).unwrap();
    tether_core::Timestamp::from_unix_nanos(base.unix_nanos() + secs * 1_000_000_000)
}

/// A Kaiku-shaped message object (keys alphabetical, as the server's `message_new` has them).
pub fn message(ch: &str, id: &str, second: u32) -> String {
    format!(
        r#"{{"attachments":[],"author":{{"avatar_url":null,"display_name":"Bob","id":"u2","status":"online","username":"bob"}},"channel_id":"{ch}","content":"m {id}","created_at":"2026-11-25T17:{:02}:{:02}.000001Z","edited_at":null,"encrypted":false,"id":"{id}","message_type":"user","parent_id":null,"pinned":false,"reply_to":null,"thread_last_reply_at":null,"thread_reply_count":0}}"#,
        second / 60,
        second % 60
    )
}

pub fn message_new(ch: &str, id: &str, second: u32) -> String {
    format!(
        r#"{{"type":"message_new","channel_id":"{ch}","message":{}}}"#,
        message(ch, id, second)
    )
}

/// An envelope history page; `msgs` newest first as `(id, second)`.
pub fn page(ch: &str, msgs: &[(&str, u32)], has_more: bool) -> String {
    let items: Vec<String> = msgs.iter().map(|(id, s)| message(ch, id, *s)).collect();
    let cursor = if has_more {
        format!(r#","next_cursor":"{}""#, msgs.last().map_or("", |m| m.0))
    } else {
        String::new()
    };
    format!(
        r#"{{"items":[{}],"has_more":{has_more}{cursor}}}"#,
        items.join(",")
    )
}
