//! How the link ended, and what that means: retry (how soon), re-authenticate, or give up.

use std::time::Duration;

use serde::Serialize;

/// Why a socket ended, as the driver saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disconnect {
    /// The upgrade was answered with a non-101 HTTP status.
    Refused {
        /// HTTP status.
        status: u16,
        /// `Retry-After`, when the response had one.
        retry_after: Option<Duration>,
    },
    /// The socket closed: with the peer's close frame, or without one (`code: None`, which
    /// is what 1006 means).
    Closed {
        /// Close code from the peer's close frame.
        code: Option<u16>,
        /// Close reason from the peer's close frame.
        reason: String,
    },
    /// Transport failure before or after the upgrade.
    Error(TransportError),
}

/// Transport failures the driver reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TransportError {
    /// Could not connect (DNS, refused, unreachable, reset during connect).
    Connect,
    /// TLS failed (certificate did not verify, handshake error). Retried, never accepted.
    Tls,
    /// The peer broke the WebSocket protocol.
    Protocol,
    /// An inbound message over the size limit.
    TooLarge,
    /// Read or write error on an established socket.
    Io,
}

/// Why the connection is waiting to retry. Serialized in the status as `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReconnectReason {
    /// The socket ended without a close frame (1006) or with an I/O error.
    ConnectionLost,
    /// The server closed the socket (1000, 1001, 1012, ...).
    ServerClosed,
    /// Nothing arrived within the heartbeat timeout after a ping.
    HeartbeatTimeout,
    /// No `ready` within the handshake timeout.
    HandshakeTimeout,
    /// Could not connect at all.
    ConnectFailed,
    /// TLS handshake or certificate verification failed.
    TlsError,
    /// 5xx during the upgrade.
    ServerUnavailable,
    /// 429, or a rate-limit close.
    RateLimited,
    /// A message over the size limit.
    MessageTooLarge,
    /// The peer broke the protocol.
    ProtocolError,
    /// The token refresh could not reach the server.
    RefreshFailed,
}

/// Why the connection gave up. Serialized in the status as `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailReason {
    /// Credentials rejected and no refresh possible (or the refreshed token was rejected too).
    Auth,
    /// 403 on the upgrade, or close code 4003.
    Forbidden,
    /// Another 4xx on the upgrade (wrong URL, not a WebSocket endpoint, ...).
    Rejected,
    /// Close code 1008 (policy violation).
    Policy,
}

/// What to do about a [`Disconnect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Reconnect after the backoff delay, and not sooner than `min_wait`.
    Retry {
        /// Why.
        reason: ReconnectReason,
        /// A lower bound the server asked for.
        min_wait: Option<Duration>,
    },
    /// The credentials were refused: refresh once and retry at once, else fail.
    Reauth,
    /// Give up until the app acts.
    Fail(FailReason),
}

/// Default wait for a rate-limit close that does not say how long.
const RATE_LIMIT_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The longest wait a server can impose (`Retry-After`, rate-limit closes). A larger value is
/// clamped: the client still retries within an hour, and `Instant` arithmetic stays far from
/// overflow whatever the server sends.
pub const MAX_SERVER_WAIT: Duration = Duration::from_secs(3600);

/// Clamps a wait the server asked for to [`MAX_SERVER_WAIT`].
pub fn clamp_wait(d: Duration) -> Duration {
    d.min(MAX_SERVER_WAIT)
}

impl Disconnect {
    /// The verdict for this disconnect (see `docs/protocol.md` for the table).
    pub fn verdict(&self) -> Verdict {
        use ReconnectReason as R;
        let retry = |reason, min_wait| Verdict::Retry { reason, min_wait };
        match self {
            Self::Refused {
                status,
                retry_after,
            } => match *status {
                401 => Verdict::Reauth,
                403 => Verdict::Fail(FailReason::Forbidden),
                408 => retry(R::ConnectFailed, None),
                429 => retry(
                    R::RateLimited,
                    Some(clamp_wait(retry_after.unwrap_or(RATE_LIMIT_CLOSE_WAIT))),
                ),
                500..=599 => retry(R::ServerUnavailable, retry_after.map(clamp_wait)),
                _ => Verdict::Fail(FailReason::Rejected),
            },
            Self::Closed { code, reason } => match code {
                None | Some(1006) => retry(R::ConnectionLost, None),
                Some(1008) => Verdict::Fail(FailReason::Policy),
                Some(1009) => retry(R::MessageTooLarge, None),
                Some(1002 | 1003 | 1007 | 1010) => retry(R::ProtocolError, None),
                Some(1013 | 4029) => retry(
                    R::RateLimited,
                    Some(seconds_in(reason).unwrap_or(RATE_LIMIT_CLOSE_WAIT)),
                ),
                Some(4001 | 4004) => Verdict::Reauth,
                Some(4003) => Verdict::Fail(FailReason::Forbidden),
                Some(_) => retry(R::ServerClosed, None),
            },
            Self::Error(e) => match e {
                TransportError::Connect => retry(R::ConnectFailed, None),
                TransportError::Tls => retry(R::TlsError, None),
                TransportError::Protocol => retry(R::ProtocolError, None),
                TransportError::TooLarge => retry(R::MessageTooLarge, None),
                TransportError::Io => retry(R::ConnectionLost, None),
            },
        }
    }
}

/// The first number in a close reason ("retry after 12 s", "retry_after=12"), in seconds,
/// capped at an hour.
fn seconds_in(reason: &str) -> Option<Duration> {
    let digits: String = reason
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .take(6)
        .collect();
    let secs: u64 = digits.parse().ok()?;
    Some(clamp_wait(Duration::from_secs(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, retry_after: Option<u64>) -> Verdict {
        Disconnect::Refused {
            status,
            retry_after: retry_after.map(Duration::from_secs),
        }
        .verdict()
    }

    fn closed(code: Option<u16>, reason: &str) -> Verdict {
        Disconnect::Closed {
            code,
            reason: reason.into(),
        }
        .verdict()
    }

    #[test]
    fn refused_upgrades() {
        assert_eq!(refused(401, None), Verdict::Reauth);
        assert_eq!(refused(403, None), Verdict::Fail(FailReason::Forbidden));
        assert_eq!(refused(404, None), Verdict::Fail(FailReason::Rejected));
        assert_eq!(
            refused(429, Some(60)),
            Verdict::Retry {
                reason: ReconnectReason::RateLimited,
                min_wait: Some(Duration::from_secs(60))
            }
        );
        assert_eq!(
            refused(503, Some(7)),
            Verdict::Retry {
                reason: ReconnectReason::ServerUnavailable,
                min_wait: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            refused(502, None),
            Verdict::Retry {
                reason: ReconnectReason::ServerUnavailable,
                min_wait: None
            }
        );
    }

    #[test]
    fn close_codes() {
        assert!(matches!(
            closed(None, ""),
            Verdict::Retry {
                reason: ReconnectReason::ConnectionLost,
                ..
            }
        ));
        assert!(matches!(
            closed(Some(1001), "going away"),
            Verdict::Retry {
                reason: ReconnectReason::ServerClosed,
                ..
            }
        ));
        assert_eq!(closed(Some(1008), ""), Verdict::Fail(FailReason::Policy));
        assert_eq!(closed(Some(4001), ""), Verdict::Reauth);
        assert_eq!(
            closed(Some(1013), "retry_after=12"),
            Verdict::Retry {
                reason: ReconnectReason::RateLimited,
                min_wait: Some(Duration::from_secs(12))
            }
        );
        assert_eq!(
            closed(Some(4029), "slow down"),
            Verdict::Retry {
                reason: ReconnectReason::RateLimited,
                min_wait: Some(RATE_LIMIT_CLOSE_WAIT)
            }
        );
    }

    #[test]
    fn absurd_retry_after_values_are_clamped() {
        assert_eq!(
            refused(429, Some(u64::MAX)),
            Verdict::Retry {
                reason: ReconnectReason::RateLimited,
                min_wait: Some(MAX_SERVER_WAIT)
            }
        );
        assert_eq!(
            refused(503, Some(u64::MAX / 2)),
            Verdict::Retry {
                reason: ReconnectReason::ServerUnavailable,
                min_wait: Some(MAX_SERVER_WAIT)
            }
        );
    }

    #[test]
    fn transport_errors_retry() {
        assert!(matches!(
            Disconnect::Error(TransportError::Tls).verdict(),
            Verdict::Retry {
                reason: ReconnectReason::TlsError,
                ..
            }
        ));
    }
}
