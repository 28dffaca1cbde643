//! Connecting: from the core's [`OpenRequest`] to an open socket, or the [`SocketEnd`] that
//! says why not.
//!
//! The one entry point is [`connect`]: the road to the server (`net`: proxy, TCP, TLS for
//! `wss://`), the upgrade with our subprotocols (and extensions), then what the 101 said (the
//! negotiated subprotocol and extensions, and the server's `Date`).
//!
//! Two transports sit behind it (D67). tokio-tungstenite, the default, speaks plain RFC 6455.
//! With the `deflate` feature, a request that offers permessage-deflate goes through
//! [`crate::deflate`] (yawc) instead. Both take the same road and hand the driver the same
//! [`Opened`], so the driver never knows which one it runs on.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tether_core::{OpenRequest, SocketEnd, TransportError};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::errors::{Stage, socket_end};
use crate::socket::{
    Inbound, Opened, Outbound, SocketSettings, date_header, header_list, header_text,
    protocols_header,
};

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

/// Opens the socket with tokio-tungstenite: the road to the server (proxy, TCP, TLS for
/// wss), the upgrade with our subprotocols, and the negotiated subprotocol. A refused upgrade reports its status and
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
    let url = url::Url::parse(&req.url).map_err(|_| SocketEnd::Error(TransportError::Protocol))?;
    let stream = settings.road.open(&url).await?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(settings.max_message))
        .max_frame_size(Some(settings.max_message))
        .read_buffer_size(settings.read_buffer_size);
    let (ws, response) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
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
