//! How the world's failures reach the core: a tungstenite error as a [`SocketEnd`], a REST
//! error as a [`HistoryError`] or a [`RefreshError`].
//!
//! Each mapping keeps what the core needs to decide (a status, a `Retry-After`, whether the
//! server could be reached at all) and drops the rest. The app's own errors
//! ([`ClientError`](crate::ClientError), [`ApiError`]) live with the calls that return them.

use std::time::Duration;

use tether_core::{HistoryError, RefreshError, SocketEnd, TransportError};
use tokio_tungstenite::tungstenite;

use crate::api::ApiError;

/// Where a transport error happened: an I/O error while connecting means the server could
/// not be reached; on a live socket, that the link broke.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Connecting,
    Live,
}

/// How the socket ended, from the tungstenite error that ended it.
pub(crate) fn socket_end(e: &tungstenite::Error, stage: Stage) -> SocketEnd {
    use tungstenite::Error as E;
    use tungstenite::error::CapacityError;
    match e {
        E::Http(response) => SocketEnd::Refused {
            status: response.status().as_u16(),
            retry_after: crate::api::retry_after(response.headers()),
        },
        E::Capacity(CapacityError::MessageTooLong { .. }) => {
            SocketEnd::Error(TransportError::TooLarge)
        }
        // tungstenite checks the 101's subprotocol itself; the core owns what that means.
        E::Protocol(tungstenite::error::ProtocolError::SecWebSocketSubProtocolError(_)) => {
            SocketEnd::Error(TransportError::Subprotocol)
        }
        // The peer vanished without a close frame: what Kaiku's clients see as 1006.
        E::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
            SocketEnd::Closed {
                code: None,
                reason: String::new(),
            }
        }
        E::Capacity(_)
        | E::Protocol(_)
        | E::Utf8(_)
        | E::AttackAttempt
        | E::HttpFormat(_)
        | E::Url(_) => SocketEnd::Error(TransportError::Protocol),
        E::Tls(_) => SocketEnd::Error(TransportError::Tls),
        E::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            SocketEnd::Error(TransportError::Tls)
        }
        E::Io(_) if stage == Stage::Connecting => SocketEnd::Error(TransportError::Connect),
        E::Io(_) => SocketEnd::Error(TransportError::Io),
        E::ConnectionClosed | E::AlreadyClosed => SocketEnd::Closed {
            code: None,
            reason: String::new(),
        },
        _ => SocketEnd::Error(TransportError::Io),
    }
}

/// Why a catch-up page failed. `retry_after` is the answer's `Retry-After`, for a refusal
/// other than a 429 (a 503, say); a 429 carries its own.
pub(crate) fn history_error(e: ApiError, retry_after: Option<Duration>) -> HistoryError {
    match e {
        ApiError::Http { status, .. } => HistoryError::Status {
            status,
            retry_after,
        },
        ApiError::RateLimited { retry_after } => HistoryError::Status {
            status: 429,
            retry_after,
        },
        _ => HistoryError::Network,
    }
}

/// Why a token refresh failed: the server refused the refresh token (log in again), or it
/// may work later.
pub(crate) fn refresh_error(e: ApiError) -> RefreshError {
    match e {
        ApiError::Http {
            status: 400 | 401 | 403,
            ..
        } => RefreshError::Rejected,
        ApiError::RateLimited { retry_after } => RefreshError::Transient { retry_after },
        _ => RefreshError::Transient { retry_after: None },
    }
}
