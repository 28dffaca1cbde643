//! Counters: every drop, skip and retry is visible here.

/// Counters since the connection was created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Text frames received on live sockets.
    pub frames_in: u64,
    /// Text frames sent.
    pub frames_out: u64,
    /// v2 frames received that held more than one event.
    pub batches_in: u64,
    /// v2 frames sent that held more than one event.
    pub batches_out: u64,
    /// Frames that failed to decode (skipped; the link stays up).
    pub decode_errors: u64,
    /// Frames over the size limit (each dropped the link).
    pub oversized: u64,
    /// Frames reported for a socket the core had already let go.
    pub stale_frames: u64,
    /// Duplicate `message_new` suppressed.
    pub duplicates: u64,
    /// Sends refused because the link was down (volatile events).
    pub refused_offline: u64,
    /// Sends refused because the offline queue was full.
    pub refused_queue_full: u64,
    /// Accepted events later dropped (expired in the queue, or pending typing at a drop).
    pub dropped_after_accept: u64,
    /// Connections lost or refused that led to a retry.
    pub reconnects: u64,
    /// Sockets that reached `ready`.
    pub sessions: u64,
    /// Wake-from-sleep probes.
    pub wake_probes: u64,
    /// Token refreshes started.
    pub refreshes: u64,
    /// Upgrades answered without the subprotocol we offered.
    pub missing_subprotocol: u64,
    /// Upgrades whose `Sec-WebSocket-Extensions` answer was refused (not offered, or
    /// against RFC 7692).
    pub refused_extensions: u64,
    /// The protocol the open socket speaks (`None`: no socket is open).
    pub protocol: Option<crate::wire::Protocol>,
    /// permessage-deflate as the open socket agreed to it (`None`: not compressed, or no
    /// socket).
    pub compression: Option<crate::wire::Deflate>,
    /// History reads the catch-up sent.
    pub reads: u64,
    /// Answers (to the core's reads or the app's requests) that asked every read to wait:
    /// 429 or 503.
    pub reads_rate_limited: u64,
    /// `subscribe`s sent again: after a first `forbidden` (put to the test), or after an
    /// answer that was not `subscribed` (Kaiku's `message_error`).
    pub resubscribes: u64,
    /// Links replaced because a post the app made was not echoed live within
    /// `Config::echo_timeout`: they answered pings but no longer delivered events.
    pub missing_echoes: u64,
    /// Live `message_new` for a message a catch-up had delivered from history, with a body
    /// that changed since (an upload's attachments arrived): delivered as updates.
    pub updated_copies: u64,
    /// Catch-ups are waiting on the server's rate limit until this instant.
    pub reads_paused_until: Option<std::time::Instant>,
}
