//! The connection status an app shows (DESIGN 3.1).

use serde::Serialize;

use crate::close::{FailReason, ReconnectReason};

/// The status sent to apps, internally tagged:
/// `{"status":"reconnecting","attempt":2,"retry_in_ms":1500,"reason":"heartbeat_timeout"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Status {
    /// Nobody asked to connect, or the app disconnected.
    Disconnected,
    /// Opening the socket and waiting for `ready`. `attempt` counts retries since the last
    /// stable connection: 0 for a first try.
    Connecting {
        /// Retry number (0 = first try).
        attempt: u32,
    },
    /// Live, over `protocol`, compressed as `compression` says (`null`: not compressed).
    Connected {
        /// What the socket's 101 selected: v1 (today's Kaiku) or v2 and its encoding.
        protocol: crate::wire::Protocol,
        /// permessage-deflate as agreed; `null` when the socket is not compressed.
        compression: Option<crate::wire::Deflate>,
    },
    /// Waiting before retry number `attempt`.
    Reconnecting {
        /// Retry number, from 1.
        attempt: u32,
        /// Time until the retry, in milliseconds.
        retry_in_ms: u64,
        /// Why the link was lost.
        reason: ReconnectReason,
        /// What the driver could say about it, for the user: the proxy's answer, say.
        #[serde(skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        detail: Option<String>,
    },
    /// Given up until the app acts (calls `connect` again, maybe with new credentials).
    Failed {
        /// Why.
        reason: FailReason,
        /// The HTTP status of the refused upgrade, when that is what ended it.
        #[serde(skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        http_status: Option<u16>,
        /// What the driver could say about it, for the user: the issuer of a certificate
        /// that is not trusted, say.
        #[serde(skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        detail: Option<String>,
    },
}

impl Status {
    /// Live, whatever the protocol.
    pub fn is_connected(&self) -> bool {
        matches!(self, Self::Connected { .. })
    }

    /// The short name (`"connected"`, ...), as in the JSON `status` field.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Disconnected => "disconnected",
            Self::Connecting { .. } => "connecting",
            Self::Connected { .. } => "connected",
            Self::Reconnecting { .. } => "reconnecting",
            Self::Failed { .. } => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_in_the_shape_the_frontend_expects() {
        let s = Status::Reconnecting {
            attempt: 2,
            retry_in_ms: 1500,
            reason: ReconnectReason::HeartbeatTimeout,
            detail: None,
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"status":"reconnecting","attempt":2,"retry_in_ms":1500,"reason":"heartbeat_timeout"}"#
        );
        assert_eq!(
            serde_json::to_string(&Status::Connected {
                protocol: crate::wire::Protocol::V1,
                compression: None
            })
            .unwrap(),
            r#"{"status":"connected","protocol":{"version":1,"encoding":"json"},"compression":null}"#
        );
        let deflate = crate::wire::DeflateOffer::default()
            .accept(Some("permessage-deflate; server_max_window_bits=12"))
            .unwrap();
        assert_eq!(
            serde_json::to_string(&Status::Connected {
                protocol: crate::wire::Protocol::V2_MSGPACK,
                compression: deflate
            })
            .unwrap(),
            concat!(
                r#"{"status":"connected","protocol":{"version":2,"encoding":"msgpack"},"#,
                r#""compression":{"server_max_window_bits":12,"server_no_context_takeover":false,"#,
                r#""client_max_window_bits":15,"client_no_context_takeover":false}}"#
            )
        );
        assert_eq!(
            serde_json::to_string(&Status::Failed {
                reason: FailReason::Auth,
                http_status: Some(401),
                detail: None
            })
            .unwrap(),
            r#"{"status":"failed","reason":"auth","http_status":401}"#
        );
        assert_eq!(
            serde_json::to_string(&Status::Connecting { attempt: 0 }).unwrap(),
            r#"{"status":"connecting","attempt":0}"#
        );
    }
}
