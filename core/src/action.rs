//! What the connection asks of its driver, and what it tells the app.

use bytes::Bytes;
use std::fmt;

use crate::catchup::HistoryRequest;
use crate::secret::Secret;
use crate::status::Status;
use crate::text::Text;
use crate::wire::{ClientEvent, ServerEvent};

/// One thing for the driver to do. Drain them with
/// [`Connection::poll_action`](crate::Connection::poll_action) after every input, in order.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Action {
    /// Open a WebSocket. Report the outcome with `handle_open` (or `handle_upgraded`) or
    /// `handle_closed`.
    /// There is never more than one socket: this only comes when the previous one is gone.
    Open(OpenRequest),
    /// Send a text frame on the open socket.
    Send(Text),
    /// Send a binary frame on the open socket (protocol v2 with MessagePack).
    SendBinary(Bytes),
    /// Start a graceful close: send a Close frame with this code and reason, keep reading,
    /// and report `handle_closed` when the socket ends. The core sends [`Action::Abort`] if
    /// the peer does not answer in time (the Kaiku server never does).
    Close {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: &'static str,
    },
    /// Drop the socket (or cancel the connect in progress) now. Report nothing more about it.
    Abort,
    /// Fetch a history page; answer with `handle_history`.
    FetchHistory(HistoryRequest),
    /// `POST /auth/refresh`; answer with `handle_refresh`.
    RefreshToken(RefreshRequest),
    /// Hand this to the app.
    Emit(Event),
}

/// Where and how to open the socket. `Debug` hides the token.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenRequest {
    /// The `ws://` or `wss://` URL. Carries the token in query auth mode: do not log it;
    /// log [`OpenRequest::redacted_url`].
    pub url: String,
    /// `Sec-WebSocket-Protocol` values to offer, in order.
    pub protocols: Vec<Secret>,
    /// permessage-deflate to offer, if any: send [`DeflateOffer::header`] as
    /// `Sec-WebSocket-Extensions`, and configure the inflater from what
    /// [`DeflateOffer::accept`] makes of the 101's answer (the core checks the same answer
    /// in [`Connection::handle_upgraded`](crate::Connection::handle_upgraded)). A driver
    /// whose transport cannot inflate must refuse a config that sets it.
    ///
    /// [`DeflateOffer::header`]: crate::wire::DeflateOffer::header
    /// [`DeflateOffer::accept`]: crate::wire::DeflateOffer::accept
    pub deflate: Option<crate::wire::DeflateOffer>,
}

impl OpenRequest {
    /// The URL with any `token` query value replaced by `<redacted>`.
    pub fn redacted_url(&self) -> String {
        match self.url.split_once("token=") {
            Some((head, _)) => format!("{head}token=<redacted>"),
            None => self.url.clone(),
        }
    }
}

impl fmt::Debug for OpenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenRequest")
            .field("url", &self.redacted_url())
            .field("protocols", &self.protocols.len())
            .field("deflate", &self.deflate)
            .finish()
    }
}

/// A token refresh to perform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshRequest {
    /// The refresh token to post (redacted in `Debug`).
    pub refresh_token: Secret,
}

/// Something the app should know.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The status changed.
    Status(Status),
    /// A server event, with the server's JSON; the Tauri name is `ws:<type>`. Catch-up
    /// delivers missed messages as `message_new` events here too.
    Server(ServerEvent),
    /// A channel finished catching up after a reconnect.
    Resynced {
        /// The channel.
        channel_id: Text,
        /// Messages the catch-up delivered that had not arrived live.
        recovered: usize,
        /// False: the gap could not be closed (too large, or REST failed); reload the channel.
        complete: bool,
    },
    /// The server refused a subscription; the channel was removed from the wanted set.
    SubscriptionRejected {
        /// The channel.
        channel_id: Text,
        /// The server's code (`channel_not_found`, `forbidden`).
        code: Text,
    },
    /// The server refused something with a subscription refusal (`forbidden`,
    /// `channel_not_found`) that may answer this channel's `subscribe` or another frame sent
    /// just before it (a `typing`, a `voice_join`): Kaiku's `error` names no channel. The
    /// channel stays wanted and its `subscribe` was sent again behind a `ping`; a real
    /// refusal then follows as [`Event::SubscriptionRejected`].
    SubscriptionUncertain {
        /// The channel.
        channel_id: Text,
        /// The server's code.
        code: Text,
    },
    /// The connection was re-established and the voice channel re-joined: the old voice
    /// session (its offer/answer and ICE state) is gone and must be rebuilt.
    VoiceReset {
        /// The voice channel.
        channel_id: String,
    },
    /// Catch-ups wait on the server's rate limit (`retry_in_ms` until the next read may go),
    /// or no longer do (`None`). Emitted when this changes; waiting is not a failure: the
    /// catch-ups complete later.
    RateLimited {
        /// Milliseconds until reads resume; `None`: they have.
        retry_in_ms: Option<u64>,
        /// Channels whose catch-up waits.
        waiting: usize,
    },
    /// An event was accepted earlier but will not be sent: it waited offline longer than the
    /// queue's max age, or was a coalesced typing indicator when the link dropped.
    SendDropped(ClientEvent),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_request_debug_hides_the_token() {
        let r = OpenRequest {
            url: "ws://h/ws?token=abc.def".into(),
            protocols: vec![
                Secret::new("access_token.abc.def"),
                Secret::new("access_token"),
            ],
            deflate: None,
        };
        let d = format!("{r:?}");
        assert!(!d.contains("abc"), "{d}");
        assert_eq!(r.redacted_url(), "ws://h/ws?token=<redacted>");
    }
}
