//! Connecting: from the core's [`OpenRequest`] to an open socket, or the [`SocketEnd`] that
//! says why not.
//!
//! The one entry point is [`connect`]: TCP (and TLS for `wss://`), the upgrade with our
//! subprotocols (and extensions), then what the 101 said (the negotiated subprotocol and
//! extensions, and the server's `Date`). [`SocketSettings`] is what every connect of one client
//! shares, built once at spawn.
//!
//! Two transports sit behind it (D67). tokio-tungstenite, the default, speaks plain RFC 6455.
//! With the `deflate` feature, a request that offers permessage-deflate goes through
//! [`crate::deflate`] (yawc) instead. Both hand the driver the same [`Opened`]: a [`Reader`]
//! of [`Inbound`] frames and a [`Writer`] of [`Outbound`] ones, so the driver never knows
//! which one it runs on.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tether_core::{OpenRequest, SocketEnd, Timestamp, TransportError};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::client::ClientConfig;
use crate::errors::{Stage, socket_end};

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

/// What every connect of one client shares: the socket's limits and the TLS roots. Cheap to
/// clone (each connect runs in its own task with its own copy).
#[derive(Clone)]
pub(crate) struct SocketSettings {
    ws: WebSocketConfig,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    /// The largest inbound message, inflated.
    #[cfg_attr(not(feature = "deflate"), allow(dead_code))]
    pub(crate) max_message: usize,
    #[cfg_attr(not(feature = "deflate"), allow(dead_code))]
    pub(crate) read_buffer_size: usize,
}

impl SocketSettings {
    /// The settings for `config`'s sockets; fails on an extra root certificate rustls refuses.
    pub(crate) fn new(config: &ClientConfig) -> Result<Self, String> {
        Ok(Self {
            ws: WebSocketConfig::default()
                .max_message_size(Some(config.core.max_inbound_message))
                .max_frame_size(Some(config.core.max_inbound_message))
                .read_buffer_size(config.read_buffer_size.max(1024)),
            tls: tls_config(&config.extra_roots_der)?,
            max_message: config.core.max_inbound_message,
            read_buffer_size: config.read_buffer_size.max(1024),
        })
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

/// Opens the socket on the transport the request needs: yawc when it offers
/// permessage-deflate (`Client::spawn` refuses such a config without the `deflate` feature),
/// tokio-tungstenite otherwise.
pub(crate) async fn connect(
    req: OpenRequest,
    settings: SocketSettings,
) -> Result<Opened, SocketEnd> {
    #[cfg(feature = "deflate")]
    if req.deflate.is_some() {
        return crate::deflate::connect(req, settings).await;
    }
    connect_plain(req, settings).await
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
pub(crate) fn date_header(
    headers: &tokio_tungstenite::tungstenite::http::HeaderMap,
) -> Option<Timestamp> {
    headers
        .get("Date")
        .and_then(|v| v.to_str().ok())
        .and_then(tether_core::parse_http_date)
}

/// Every line of a header, joined with `", "` as RFC 9110 allows for a list, bytes that are
/// not UTF-8 replaced (the core then refuses the value instead of missing it).
pub(crate) fn header_list(
    headers: &tokio_tungstenite::tungstenite::http::HeaderMap,
    name: &str,
) -> Option<String> {
    let lines: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    (!lines.is_empty()).then(|| lines.join(", "))
}

/// A header's value as text.
pub(crate) fn header_text(
    headers: &tokio_tungstenite::tungstenite::http::HeaderMap,
    name: &str,
) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Opens the socket with tokio-tungstenite: TCP (+ TLS for wss), the upgrade with our
/// subprotocols, and the negotiated subprotocol. A refused upgrade reports its status and
/// `Retry-After`.
async fn connect_plain(req: OpenRequest, settings: SocketSettings) -> Result<Opened, SocketEnd> {
    let mut request = req
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| socket_end(&e, Stage::Connecting))?;
    if let Some(value) = protocols_header(&req)? {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", value);
    }
    let connector = tokio_tungstenite::Connector::Rustls(settings.tls);
    let (ws, response) = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(settings.ws),
        true,
        Some(connector),
    )
    .await
    .map_err(|e| socket_end(&e, Stage::Connecting))?;
    let protocol = header_text(response.headers(), "Sec-WebSocket-Protocol");
    let extensions = header_list(response.headers(), "Sec-WebSocket-Extensions");
    let date = date_header(response.headers());
    let (sink, stream) = ws.split();
    let reader = stream
        .map(|frame| match frame {
            Ok(Message::Text(text)) => Inbound::Text(Bytes::from(text)),
            Ok(Message::Binary(bytes)) => Inbound::Binary(bytes),
            Ok(Message::Close(frame)) => {
                let (code, reason) = frame.map_or((None, String::new()), |f| {
                    (Some(u16::from(f.code)), f.reason.to_string())
                });
                Inbound::End(SocketEnd::Closed { code, reason })
            }
            Ok(_) => Inbound::Control,
            Err(e) => {
                tracing::debug!(error = %e, "socket read failed");
                Inbound::End(socket_end(&e, Stage::Live))
            }
        })
        .boxed();
    let writer = Box::pin(
        sink.with(|o: Outbound| {
            std::future::ready(Ok::<_, tokio_tungstenite::tungstenite::Error>(match o {
                Outbound::Text(text) => Message::Text(to_utf8(text)),
                Outbound::Binary(bytes) => Message::Binary(bytes),
                Outbound::Close { code, reason } => Message::Close(Some(CloseFrame {
                    code: code.into(),
                    reason: reason.into(),
                })),
            }))
        })
        .sink_map_err(|_| ()),
    );
    Ok(Opened {
        reader,
        writer,
        protocol,
        extensions,
        date,
    })
}

/// Socket text is UTF-8 by construction; tungstenite re-checks, and an impossible failure
/// sends an empty frame rather than panicking.
fn to_utf8(text: tether_core::Text) -> Utf8Bytes {
    Utf8Bytes::try_from(text.into_bytes()).unwrap_or_default()
}

/// The TLS settings for `wss://`: webpki roots plus the caller's extra roots, ring crypto.
/// Built once and shared by every client with no extra roots (thousands of clients in one
/// process need not each hold a copy).
fn tls_config(extra_roots_der: &[Vec<u8>]) -> Result<Arc<rustls::ClientConfig>, String> {
    static DEFAULT: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    if !extra_roots_der.is_empty() {
        return build_tls_config(extra_roots_der);
    }
    if let Some(c) = DEFAULT.get() {
        return Ok(c.clone());
    }
    let c = build_tls_config(&[])?;
    Ok(DEFAULT.get_or_init(|| c).clone())
}

fn build_tls_config(extra_roots_der: &[Vec<u8>]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for der in extra_roots_der {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| format!("bad root certificate: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}
