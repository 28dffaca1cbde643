//! An open socket as the driver sees it, whatever the transport: a [`Reader`] of [`Inbound`]
//! frames, a [`Writer`] of [`Outbound`] ones, and what the upgrade's answer said
//! ([`Opened`]). Also what every connect shares ([`SocketSettings`]) and the header readings
//! both transports make. Nothing here opens anything: that is `connect.rs` and `deflate.rs`,
//! on the road `net` builds.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tether_core::{OpenRequest, SocketEnd, Timestamp, TransportError};
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderValue};

use crate::net::Road;

/// A frame (or the end) read off the socket, whatever the transport.
pub(crate) enum Inbound {
    /// A whole text message.
    Text(Bytes),
    /// A whole binary message.
    Binary(Bytes),
    /// A ping or a pong: proof of life, answered by the transport.
    Control,
    /// The socket ended: its close frame, an error, or the peer going away. Last.
    End(SocketEnd),
}

/// A frame to write.
pub(crate) enum Outbound {
    Text(tether_core::Text),
    Binary(Bytes),
    Close { code: u16, reason: &'static str },
}

/// The read half of an open socket.
pub(crate) type Reader = Pin<Box<dyn Stream<Item = Inbound> + Send>>;
/// The write half of an open socket; an error means the socket is gone.
pub(crate) type Writer = Pin<Box<dyn Sink<Outbound, Error = ()> + Send>>;

/// What every connect of one client shares: the road to the server and the socket's limits.
/// Cheap to clone (each connect runs in its own task with its own copy).
#[derive(Clone)]
pub(crate) struct SocketSettings {
    /// Proxy, trust and addresses (shared with the REST client).
    pub(crate) road: Road,
    /// The largest inbound message, inflated.
    pub(crate) max_message: usize,
    /// What one read from the kernel can take.
    pub(crate) read_buffer_size: usize,
}

impl SocketSettings {
    /// Sockets on `road` that take messages up to `max_message` bytes, reading up to
    /// `read_buffer_size` bytes at a time (at least 1 KiB).
    pub(crate) fn new(road: Road, max_message: usize, read_buffer_size: usize) -> Self {
        Self {
            road,
            max_message,
            read_buffer_size: read_buffer_size.max(1024),
        }
    }
}

/// An open socket and what its upgrade's answer said.
pub(crate) struct Opened {
    pub(crate) reader: Reader,
    pub(crate) writer: Writer,
    /// The negotiated subprotocol.
    pub(crate) protocol: Option<String>,
    /// The 101's `Sec-WebSocket-Extensions`, for the core to check.
    pub(crate) extensions: Option<String>,
    /// The 101's `Date`: the server's clock.
    pub(crate) date: Option<Timestamp>,
}

/// The `Sec-WebSocket-Protocol` value offering `req`'s subprotocols, in order.
pub(crate) fn protocols_header(req: &OpenRequest) -> Result<Option<HeaderValue>, SocketEnd> {
    if req.protocols.is_empty() {
        return Ok(None);
    }
    let joined = req
        .protocols
        .iter()
        .map(|p| p.expose())
        .collect::<Vec<_>>()
        .join(", ");
    HeaderValue::from_str(&joined)
        .map(Some)
        .map_err(|_| SocketEnd::Error(TransportError::Protocol))
}

/// The 101's `Date` as a timestamp.
pub(crate) fn date_header(headers: &HeaderMap) -> Option<Timestamp> {
    headers
        .get("Date")
        .and_then(|v| v.to_str().ok())
        .and_then(tether_core::parse_http_date)
}

/// Every line of a header, joined with `", "` as RFC 9110 allows for a list, bytes that are
/// not UTF-8 replaced (the core then refuses the value instead of missing it).
pub(crate) fn header_list(headers: &HeaderMap, name: &str) -> Option<String> {
    let lines: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    (!lines.is_empty()).then(|| lines.join(", "))
}

/// A header's value as text.
pub(crate) fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
