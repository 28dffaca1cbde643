//! The error every command returns to JavaScript: `{ kind, message }`.

use serde::Serialize;

/// What kind of failure (a stable string for the frontend to branch on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// An argument was malformed (URL, channel id, event).
    InvalidArgument,
    /// The server refused the credentials.
    Auth,
    /// No answer from the server.
    Network,
    /// The server's name did not resolve.
    NameLookup,
    /// The proxy could not be reached.
    ProxyUnreachable,
    /// The proxy refused the tunnel (its answer is in the message).
    ProxyRefused,
    /// The proxy wants credentials, or refused those in the proxy URL.
    ProxyAuth,
    /// The server's certificate is not trusted (its issuer is in the message).
    Certificate,
    /// TLS with the server failed otherwise.
    Tls,
    /// The server answered with an error.
    Server,
    /// `connect` has not been called (or `disconnect` was).
    NotConnected,
    /// A volatile event (typing, voice signalling) while offline; it was not sent.
    Offline,
    /// The offline queue is full; the event was not queued.
    QueueFull,
    /// The connection task has ended.
    Closed,
    /// The connection task is too far behind to take the command now; nothing was done.
    /// Try again shortly.
    Busy,
    /// Refused before anything was sent: plain `http://`/`ws://` to a host that is not
    /// loopback would expose the password or token. Use `https://`, or pass
    /// `allow_insecure: true` if the user explicitly accepts that.
    Insecure,
}

/// A command failure, serialized for JavaScript as `{ "kind": "...", "message": "..." }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ts_rs::TS, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// What kind.
    pub kind: ErrorKind,
    /// One readable line (never a token).
    pub message: String,
}

impl Error {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<tether_tokio::ApiError> for Error {
    fn from(e: tether_tokio::ApiError) -> Self {
        use tether_tokio::ApiError as A;
        let kind = match &e {
            _ if e.is_unauthorized() => ErrorKind::Auth,
            A::Insecure(_) => ErrorKind::Insecure,
            A::Network(_) => ErrorKind::Network,
            A::Unreachable { error, .. } => {
                use tether_core::TransportError as T;
                match error {
                    T::NameLookup => ErrorKind::NameLookup,
                    T::ProxyUnreachable => ErrorKind::ProxyUnreachable,
                    T::ProxyRefused => ErrorKind::ProxyRefused,
                    T::ProxyAuth => ErrorKind::ProxyAuth,
                    T::Untrusted => ErrorKind::Certificate,
                    T::Tls => ErrorKind::Tls,
                    _ => ErrorKind::Network,
                }
            }
            A::Url(_) | A::Settings(_) => ErrorKind::InvalidArgument,
            _ => ErrorKind::Server,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<tether_core::ConfigError> for Error {
    fn from(e: tether_core::ConfigError) -> Self {
        let kind = match &e {
            tether_core::ConfigError::Insecure(_) => ErrorKind::Insecure,
            _ => ErrorKind::InvalidArgument,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<tether_tokio::ClientError> for Error {
    fn from(e: tether_tokio::ClientError) -> Self {
        use tether_core::SendError;
        use tether_tokio::ClientError as C;
        let kind = match &e {
            C::Closed => ErrorKind::Closed,
            C::InvalidChannel(_) => ErrorKind::InvalidArgument,
            C::Send(SendError::Offline(_)) => ErrorKind::Offline,
            C::Send(SendError::QueueFull(_)) => ErrorKind::QueueFull,
            C::Send(_) => ErrorKind::InvalidArgument,
            C::Busy => ErrorKind::Busy,
            _ => ErrorKind::Closed,
        };
        Self::new(kind, e.to_string())
    }
}
