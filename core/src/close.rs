//! How the link ended, and what that means: retry (how soon), re-authenticate, or give up.

use std::time::Duration;

use serde::Serialize;

/// Why a socket ended, as the driver saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocketEnd {
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
    /// A transport failure and what the driver could say about it, for the user: the
    /// proxy's answer, the issuer of a certificate that is not trusted. Decided as
    /// [`Error`](Self::Error) is; the detail shows in the status as `detail`.
    Described {
        /// What failed.
        error: TransportError,
        /// Said to the user (`"the proxy answered 403 Forbidden"`, `"issuer: CN=Corp CA"`).
        /// Never a secret: drivers leave credentials out.
        detail: String,
    },
}

/// Transport failures the driver reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TransportError {
    /// Could not connect (refused, unreachable, reset during connect).
    Connect,
    /// The server's name did not resolve. Retried: a network that just came up (or a VPN)
    /// may resolve it soon.
    NameLookup,
    /// The proxy could not be reached (down, refused, its own name did not resolve).
    /// Retried with backoff, never by going around it.
    ProxyUnreachable,
    /// The proxy answered the tunnel request with a refusal other than 407 (a 403 from its
    /// rules, a 502 when it could not reach the server), or its SOCKS5 equivalent. Retried
    /// with backoff.
    ProxyRefused,
    /// The proxy wants credentials, or refused the ones given (HTTP 407, SOCKS5
    /// authentication failure). Terminal, like refused credentials: retrying sends the same.
    ProxyAuth,
    /// The server's certificate is not trusted (an unknown issuer, as behind a
    /// TLS-inspecting gateway whose CA is not installed, or a pin that does not match).
    /// Terminal: the same certificate would come back, and a retry storm helps nobody.
    Untrusted,
    /// TLS failed otherwise (handshake error, a certificate that did not verify for another
    /// reason). Retried, never accepted.
    Tls,
    /// The peer broke the WebSocket protocol.
    Protocol,
    /// An inbound message over the size limit.
    TooLarge,
    /// The upgrade's answer selected no subprotocol although we offered some, or one we did
    /// not offer. Terminal: `Failed { subprotocol }` (retrying would meet the same server).
    Subprotocol,
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
    /// The socket did not open within the handshake timeout.
    HandshakeTimeout,
    /// The socket opened (the upgrade succeeded) but no `ready` came within the handshake
    /// timeout: the server accepted the session and then said nothing (Kaiku blocks this way
    /// when a user's `ready` and presence overflow its queue before the socket's writer runs).
    ReadyTimeout,
    /// Could not connect at all.
    ConnectFailed,
    /// TLS handshake or certificate verification failed.
    TlsError,
    /// The server's name did not resolve.
    NameLookup,
    /// The proxy could not be reached.
    ProxyUnreachable,
    /// The proxy refused the tunnel (its status is in `detail`).
    ProxyRefused,
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
    /// A post the app made was not echoed live within `Config::echo_timeout`: the link
    /// answered pings but no longer delivered events.
    NoEcho,
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
    /// The server answered the upgrade without the subprotocol we offered, or with one we
    /// never offered: it does not speak this protocol (or not with this auth mode).
    Subprotocol,
    /// The server's `Sec-WebSocket-Extensions` answer agreed to something the client did not
    /// offer, or broke RFC 7692's rules: its frames could not be read as it means them.
    Extension,
    /// The proxy wants credentials, or refused the ones given.
    ProxyAuth,
    /// The server's certificate is not trusted (its issuer is in `detail`).
    Certificate,
}

/// What to do about a [`SocketEnd`].
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
pub(crate) const MAX_SERVER_WAIT: Duration = Duration::from_secs(3600);

/// Clamps a wait the server asked for to [`MAX_SERVER_WAIT`].
pub(crate) fn clamp_wait(d: Duration) -> Duration {
    d.min(MAX_SERVER_WAIT)
}

impl SocketEnd {
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
            Self::Error(e) | Self::Described { error: e, .. } => match e {
                TransportError::Connect => retry(R::ConnectFailed, None),
                TransportError::NameLookup => retry(R::NameLookup, None),
                TransportError::ProxyUnreachable => retry(R::ProxyUnreachable, None),
                TransportError::ProxyRefused => retry(R::ProxyRefused, None),
                TransportError::ProxyAuth => Verdict::Fail(FailReason::ProxyAuth),
                TransportError::Untrusted => Verdict::Fail(FailReason::Certificate),
                TransportError::Tls => retry(R::TlsError, None),
                TransportError::Protocol => retry(R::ProtocolError, None),
                TransportError::TooLarge => retry(R::MessageTooLarge, None),
                TransportError::Subprotocol => Verdict::Fail(FailReason::Subprotocol),
                TransportError::Io => retry(R::ConnectionLost, None),
            },
        }
    }

    /// The transport failure, when that is how the socket ended.
    pub fn transport_error(&self) -> Option<TransportError> {
        match self {
            Self::Error(e) | Self::Described { error: e, .. } => Some(*e),
            _ => None,
        }
    }

    /// What the driver said about the failure, for the status's `detail`.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Self::Described { detail, .. } if !detail.is_empty() => Some(detail),
            _ => None,
        }
    }
}

/// The wait a rate-limit close reason asks for, capped at an hour: a number with a time unit
/// ("retry in 5s", "30 seconds", "1500 ms", "2 min"), or after a word that says so
/// ("retry_after=12", "wait: 7"), or the whole reason ("12"). Other numbers ("code 4029") are
/// not waits.
fn seconds_in(reason: &str) -> Option<Duration> {
    let bytes = reason.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        // Ten digits is already centuries of seconds; more is clamped the same way.
        let value: u64 = reason[start..i.min(start + 10)].parse().ok()?;
        let rest = reason[i..].trim_start();
        let unit: String = rest
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect::<String>()
            .to_ascii_lowercase();
        let wait = match unit.as_str() {
            "ms" | "msec" | "msecs" | "millis" | "milliseconds" => {
                Some(Duration::from_millis(value))
            }
            "s" | "sec" | "secs" | "second" | "seconds" => Some(Duration::from_secs(value)),
            "m" | "min" | "mins" | "minute" | "minutes" => {
                Some(Duration::from_secs(value.saturating_mul(60)))
            }
            _ => None,
        };
        if let Some(w) = wait {
            return Some(clamp_wait(w));
        }
        let before = reason[..start].to_ascii_lowercase();
        let before = before.trim_end_matches(|c: char| c.is_whitespace() || c == '=' || c == ':');
        let keyword = ["retry", "after", "wait", "in", "retry_after", "retry-after"]
            .iter()
            .any(|k| before.ends_with(k));
        if keyword || reason.trim() == &reason[start..i] {
            return Some(clamp_wait(Duration::from_secs(value)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, retry_after: Option<u64>) -> Verdict {
        SocketEnd::Refused {
            status,
            retry_after: retry_after.map(Duration::from_secs),
        }
        .verdict()
    }

    fn closed(code: Option<u16>, reason: &str) -> Verdict {
        SocketEnd::Closed {
            code,
            reason: reason.into(),
        }
        .verdict()
    }

    #[test]
    fn a_close_reason_gives_the_wait_it_names_not_any_number() {
        let wait = |reason: &str| seconds_in(reason).map(|d| d.as_millis());
        assert_eq!(wait("code 4029, retry in 5s"), Some(5_000));
        assert_eq!(wait("retry after 12 s"), Some(12_000));
        assert_eq!(wait("retry_after=12"), Some(12_000));
        assert_eq!(wait("Wait 60 seconds."), Some(60_000));
        assert_eq!(wait("try again in 1500 ms"), Some(1_500));
        assert_eq!(wait("slow down: 2 min"), Some(120_000));
        assert_eq!(wait("12"), Some(12_000));
        assert_eq!(wait("rate limited (4029)"), None);
        assert_eq!(wait("error 4029"), None);
        assert_eq!(wait(""), None);
        assert_eq!(
            wait("retry in 99999999999999999999 s"),
            Some(MAX_SERVER_WAIT.as_millis())
        );
    }

    #[test]
    fn a_missing_or_foreign_subprotocol_is_terminal() {
        assert_eq!(
            SocketEnd::Error(TransportError::Subprotocol).verdict(),
            Verdict::Fail(FailReason::Subprotocol)
        );
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
    fn network_failures_say_where_and_only_the_hopeless_ones_stop() {
        let verdict = |error| {
            SocketEnd::Described {
                error,
                detail: "x".into(),
            }
            .verdict()
        };
        let retries = |error, want| {
            assert_eq!(
                verdict(error),
                Verdict::Retry {
                    reason: want,
                    min_wait: None
                }
            );
        };
        retries(TransportError::NameLookup, ReconnectReason::NameLookup);
        retries(
            TransportError::ProxyUnreachable,
            ReconnectReason::ProxyUnreachable,
        );
        retries(TransportError::ProxyRefused, ReconnectReason::ProxyRefused);
        retries(TransportError::Tls, ReconnectReason::TlsError);
        assert_eq!(
            verdict(TransportError::ProxyAuth),
            Verdict::Fail(FailReason::ProxyAuth)
        );
        assert_eq!(
            verdict(TransportError::Untrusted),
            Verdict::Fail(FailReason::Certificate)
        );
        let end = SocketEnd::Described {
            error: TransportError::Untrusted,
            detail: "issuer: CN=Corp CA".into(),
        };
        assert_eq!(end.detail(), Some("issuer: CN=Corp CA"));
        assert_eq!(end.transport_error(), Some(TransportError::Untrusted));
        assert_eq!(SocketEnd::Error(TransportError::Untrusted).detail(), None);
    }

    #[test]
    fn transport_errors_retry() {
        assert!(matches!(
            SocketEnd::Error(TransportError::Tls).verdict(),
            Verdict::Retry {
                reason: ReconnectReason::TlsError,
                ..
            }
        ));
    }
}
