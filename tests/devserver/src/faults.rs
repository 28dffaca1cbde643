//! Fault injection: the handle tests use to break the server on purpose.

use std::sync::Arc;
use std::time::Duration;

use crate::Shared;
use crate::ws::Out;

/// Faults currently in force.
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    /// Refuse upgrades with this status (and `Retry-After` seconds) while `remaining` > 0.
    pub refuse: Option<Refusal>,
    /// Answer REST requests with 429 while `remaining` > 0.
    pub rest_limit: Option<Refusal>,
    /// New sockets start stalled.
    pub stall_new: bool,
    /// Replaces `ServerConfig::rest_latency` until cleared.
    pub rest_latency: Option<Duration>,
    /// Redis is unreachable: limited routes answer 503.
    pub redis_down: bool,
    /// Answer subscribes with this error while `.1` (`None`: until cleared) allows.
    pub subscribe_error: Option<(SubscribeError, Option<u32>)>,
    /// New sockets get no `ready` and no answer at all.
    pub withhold_ready: bool,
    /// Upgrades are answered this long after they arrive, their token checked then.
    pub upgrade_delay: Option<Duration>,
}

/// How the server refuses a `subscribe` that it should have accepted
/// ([`Faults::subscribe_errors`]). Either way the subscription does not take effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscribeError {
    /// `{"type":"error","code":"forbidden","message":"You don't have permission to view this
    /// channel"}`: what Kaiku answers when its permission check fails for any reason, a
    /// database error or a pool timeout included. Only for a channel that exists (Kaiku looks
    /// the channel up first).
    Forbidden,
    /// `{"type":"error","code":"message_error","message":"pool timed out while waiting for an
    /// open connection"}`: the database failed while Kaiku looked the channel up, and the
    /// handler's error went out as an unnamed `message_error`, as a malformed frame's would.
    /// No `subscribed` follows.
    MessageError,
}

impl SubscribeError {
    /// Takes one use of the subscribe fault in `slot` if it is of `kind`.
    pub(crate) fn take(slot: &mut Option<(SubscribeError, Option<u32>)>, kind: Self) -> bool {
        match *slot {
            Some((k, _)) if k != kind => false,
            Some((_, None)) => true,
            Some((_, Some(n))) => {
                *slot = (n > 1).then_some((kind, Some(n - 1)));
                n > 0
            }
            None => false,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Refusal {
    pub status: u16,
    pub retry_after: Option<u64>,
    /// `None`: until cleared.
    pub remaining: Option<u32>,
}

impl Refusal {
    /// Takes one use; returns the refusal to apply, if any remains.
    pub fn take(slot: &mut Option<Refusal>) -> Option<Refusal> {
        let r = (*slot)?;
        match r.remaining {
            Some(0) => {
                *slot = None;
                None
            }
            Some(n) => {
                *slot = Some(Refusal {
                    remaining: Some(n - 1),
                    ..r
                });
                Some(r)
            }
            None => Some(r),
        }
    }
}

/// Breaks the server on purpose. Cheap to clone; every method acts at once.
#[derive(Clone, Debug)]
pub struct Faults {
    shared: Arc<Shared>,
}

impl Faults {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Ends every socket abruptly: no close frame, the TCP connection just goes (clients see
    /// 1006). Returns how many sockets were dropped.
    pub fn drop_all(&self) -> usize {
        self.shared.drop_all()
    }

    /// Stalls every open socket: TCP stays up, nothing is read or written any more (frames
    /// for it are lost), as with a dead NAT mapping or a sleeping peer. With `new_too`, sockets
    /// opened later start stalled as well, until [`clear`](Self::clear).
    pub fn stall(&self, new_too: bool) -> usize {
        self.shared.faults().stall_new = new_too;
        let conns = self.shared.conns();
        for c in conns.values() {
            let _ = c.tx.send(Out::Stall);
        }
        conns.len()
    }

    /// Refuses the next `count` upgrades (all of them with `None`) with `status` and an
    /// optional `Retry-After` in seconds. 401 refusals carry Kaiku's plain-text body.
    pub fn refuse_upgrades(&self, status: u16, retry_after: Option<Duration>, count: Option<u32>) {
        self.shared.faults().refuse = Some(crate::faults::Refusal {
            status,
            retry_after: retry_after.map(|d| d.as_secs()),
            remaining: count,
        });
    }

    /// Answers every upgrade from now on `delay` after it arrives (until
    /// [`clear`](Self::clear)), as a busy server does: faults, token and all are looked at
    /// when the answer goes, so a token revoked meanwhile is refused with 401.
    pub fn delay_upgrades(&self, delay: Duration) {
        self.shared.faults().upgrade_delay = Some(delay);
    }

    /// Answers the next `count` REST requests (all with `None`) with 429 and `Retry-After`,
    /// whatever the configured rate limits say (and without counting against them).
    pub fn rate_limit_rest(&self, retry_after: Duration, count: Option<u32>) {
        self.shared.faults().rest_limit = Some(Refusal {
            status: 429,
            retry_after: Some(retry_after.as_secs()),
            remaining: count,
        });
    }

    /// Delays the answer to every REST request from now on by `latency` (in place of
    /// `ServerConfig::rest_latency`, until [`clear`](Self::clear)). A request still counts
    /// against its rate limit when it arrives; only its answer waits.
    pub fn set_rest_latency(&self, latency: Duration) {
        self.shared.faults().rest_latency = Some(latency);
    }

    /// Takes Redis down (`true`) or brings it back (`false`). While it is down, every route
    /// this server rate-limits (one whose category has a limit in
    /// `ServerConfig::rate_limits`) answers 503 `{"error":"service_unavailable"}` without
    /// `Retry-After` or budget headers, as Kaiku does with `fail_open` off (its default): its
    /// limiter cannot count, so it refuses. Nothing is counted meanwhile. Unlimited routes,
    /// and every route of a server without limits (Kaiku with limiting off never asks
    /// Redis), answer as usual.
    pub fn redis_down(&self, down: bool) {
        self.shared.faults().redis_down = down;
    }

    /// Answers the next `count` subscribes (all of them with `None`, until
    /// [`clear`](Self::clear)) with `kind`'s error frame instead of `subscribed`; the
    /// subscription does not take effect, so the socket gets none of the channel's events.
    /// On Kaiku both come from a database that fails for a moment: the channel exists and
    /// the user may read it.
    pub fn subscribe_errors(&self, kind: SubscribeError, count: Option<u32>) {
        self.shared.faults().subscribe_error = match count {
            Some(0) => None,
            _ => Some((kind, count)),
        };
    }

    /// While on, every new upgrade succeeds (101, counted by `DevServer::upgrades`) and then
    /// the server sends nothing on it, ever: no `ready`, no `pong`, no event; it reads
    /// nothing either, and holds the TCP connection. Kaiku did this when its handler queued
    /// `ready` into its 100-slot channel before the writer task existed and the queue was
    /// full: the handler blocked before reading a frame. Sockets already open are untouched;
    /// a restart or [`drop_all`](Self::drop_all) ends these too.
    pub fn withhold_ready(&self, on: bool) {
        self.shared.faults().withhold_ready = on;
    }

    /// Deafens every open socket: no broadcast reaches it any more (`message_new`, edits,
    /// deletes, typing, presence, thread replies...), while it keeps answering its own
    /// client's frames: `pong` to `ping`, `subscribed` (or an error) to `subscribe`,
    /// `unsubscribed`, `message_error`. On Kaiku a socket has two tasks: the reader, which
    /// handles each client frame and answers it directly into the socket's queue, and the
    /// pub/sub task, which forwards the Redis events of subscribed channels; when the
    /// latter's loop ends (its Redis subscriber lost), the socket looks alive to every
    /// heartbeat and hears nothing. A deaf socket stays deaf; sockets opened later are
    /// normal. Returns how many sockets were deafened.
    pub fn deafen(&self) -> usize {
        let mut conns = self.shared.conns();
        for c in conns.values_mut() {
            c.deaf = true;
        }
        conns.len()
    }

    /// Sends a raw text frame to every open socket (garbage, unknown events, huge frames), as
    /// is: on a v2 socket too, never encoded or batched.
    pub fn inject(&self, frame: &str) -> usize {
        self.shared.inject_all(frame)
    }

    /// Floods every socket subscribed to `channel_id` with `count` new messages (stored, so
    /// REST history has them too), each sent as soon as that socket can take it.
    pub fn flood(&self, channel_id: &str, count: u64) -> usize {
        let conns = self.shared.conns();
        let mut n = 0;
        for c in conns.values().filter(|c| c.subs.contains(channel_id)) {
            let _ = c.tx.send(Out::Flood {
                channel_id: channel_id.to_owned(),
                count,
            });
            n += 1;
        }
        n
    }

    /// Sends a binary frame to every open socket, as is (Kaiku's clients must ignore those; on
    /// a MessagePack socket it is read as an event).
    pub fn inject_binary(&self, bytes: &[u8]) -> usize {
        let conns = self.shared.conns();
        for c in conns.values() {
            let _ = c.tx.send(Out::Binary(bytes.to_vec()));
        }
        conns.len()
    }

    /// Every access token issued so far now reads as expired: REST answers 401
    /// `TOKEN_EXPIRED`, upgrades 401. Refresh tokens keep working.
    pub fn expire_tokens(&self) {
        self.shared.store().expire_access_tokens();
    }

    /// Revokes every token, refresh tokens included: only a new login helps.
    pub fn revoke_tokens(&self) {
        self.shared.store().revoke_all();
    }

    /// Lifts every standing fault (refusals, rate limits, stalls of new sockets, Redis down,
    /// subscribe errors, withheld `ready`, delayed upgrades) and puts the REST latency back to
    /// the configured one. Sockets already stalled, deafened or left without `ready` stay so.
    pub fn clear(&self) {
        *self.shared.faults() = FaultState::default();
    }
}
