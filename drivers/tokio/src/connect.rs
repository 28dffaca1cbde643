//! Connecting: from the core's [`OpenRequest`] to an open socket, or the [`SocketEnd`] that
//! says why not.
//!
//! The one entry point is [`connect`]: TCP (and TLS for `wss://`), the upgrade with our
//! subprotocols, then what the 101 said (the negotiated subprotocol and the server's `Date`).
//! [`SocketSettings`] is what every connect of one client shares, built once at spawn. A second
//! transport (protocol v2) would be a sibling of this module with the same shape: settings
//! from the [`ClientConfig`], and `connect(request, settings) -> Result<Opened, SocketEnd>`.

use std::sync::Arc;

use tether_core::{OpenRequest, SocketEnd, Timestamp, TransportError};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::ClientConfig;
use crate::errors::{Stage, socket_end};

/// An open WebSocket, over TLS or not.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What every connect of one client shares: the socket's limits and the TLS roots. Cheap to
/// clone (each connect runs in its own task with its own copy).
#[derive(Clone)]
pub(crate) struct SocketSettings {
    ws: WebSocketConfig,
    tls: Arc<rustls::ClientConfig>,
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
        })
    }
}

/// An open socket and what its upgrade's answer said.
pub(crate) struct Opened {
    pub(crate) ws: Box<Ws>,
    /// The negotiated subprotocol.
    pub(crate) protocol: Option<String>,
    /// The 101's `Date`: the server's clock.
    pub(crate) date: Option<Timestamp>,
}

/// Opens the socket: TCP (+ TLS for wss), the upgrade with our subprotocols, and the
/// negotiated subprotocol. A refused upgrade reports its status and `Retry-After`.
pub(crate) async fn connect(
    req: OpenRequest,
    settings: SocketSettings,
) -> Result<Opened, SocketEnd> {
    let mut request = req
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| socket_end(&e, Stage::Connecting))?;
    if !req.protocols.is_empty() {
        let joined = req
            .protocols
            .iter()
            .map(|p| p.expose())
            .collect::<Vec<_>>()
            .join(", ");
        let value = HeaderValue::from_str(&joined)
            .map_err(|_| SocketEnd::Error(TransportError::Protocol))?;
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
    let protocol = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let date = response
        .headers()
        .get("Date")
        .and_then(|v| v.to_str().ok())
        .and_then(tether_core::parse_http_date);
    Ok(Opened {
        ws: Box::new(ws),
        protocol,
        date,
    })
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
