//! The permessage-deflate transport (feature `deflate`, D67).
//!
//! tungstenite refuses every frame with RSV1 set and has no extension hook, so a socket that
//! offers permessage-deflate (RFC 7692) runs on yawc instead. The HTTP/1.1 upgrade is ours,
//! on hyper: yawc's own connect keeps the 101 to itself, and the core needs its subprotocol,
//! its extensions and its `Date`. yawc then frames the upgraded stream, answers pings and
//! inflates what the server compressed, within the same message cap as the plain transport
//! (a decompression bomb ends at the cap, not in memory).
//!
//! The client never compresses: [`Options::with_compression_threshold`] at `usize::MAX`
//! sends every message as it is, which RFC 7692 allows, and yawc builds its deflate state
//! only on the first compressed send, so none is ever built (a deflate context costs 250 to
//! 380 KB, docs/benchmarks.md).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use http_body_util::Empty;
use hyper::header::{self, HeaderValue};
use hyper_util::rt::TokioIo;
use tether_core::{OpenRequest, SocketEnd, TransportError};
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use yawc::{CompressionLevel, Frame, OpCode, Options, Role, WebSocket, WebSocketError};

use crate::net::Io;
use crate::socket::{
    Inbound, Opened, Outbound, SocketSettings, date_header, header_list, header_text,
    protocols_header,
};

/// Opens the socket: the road to the server (proxy, TCP, TLS for wss), our upgrade offering
/// `req`'s subprotocols and extensions, then yawc on the upgraded stream with the extensions
/// the 101 agreed to.
pub(crate) async fn connect(
    req: OpenRequest,
    settings: SocketSettings,
) -> Result<Opened, SocketEnd> {
    let url = url::Url::parse(&req.url).map_err(|_| SocketEnd::Error(TransportError::Protocol))?;
    let io = settings.road.open(&url).await?;
    upgrade(io, &url, &req, &settings).await
}

async fn upgrade(
    io: Box<dyn Io>,
    url: &url::Url,
    req: &OpenRequest,
    settings: &SocketSettings,
) -> Result<Opened, SocketEnd> {
    let protocol_error = || SocketEnd::Error(TransportError::Protocol);
    let key = generate_key();
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let mut request = hyper::Request::get(target)
        .header(header::HOST, host)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_KEY, key.as_str())
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .body(Empty::<Bytes>::new())
        .map_err(|_| protocol_error())?;
    if let Some(value) = protocols_header(req)? {
        request
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_PROTOCOL, value);
    }
    if let Some(offer) = &req.deflate {
        let value = HeaderValue::from_str(&offer.header()).map_err(|_| protocol_error())?;
        request
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
    }

    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|_| SocketEnd::Error(TransportError::Connect))?;
    // Drives the HTTP connection until the upgrade takes the stream over.
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut response = sender.send_request(request).await.map_err(|e| {
        if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
            // Reached, and answered with something that is not HTTP.
            SocketEnd::Error(TransportError::Protocol)
        } else if e.is_incomplete_message() || e.is_closed() {
            // Reached, and hung up before answering.
            SocketEnd::Closed {
                code: None,
                reason: String::new(),
            }
        } else {
            SocketEnd::Error(TransportError::Connect)
        }
    })?;
    let headers = response.headers();
    if response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        return Err(SocketEnd::Refused {
            status: response.status().as_u16(),
            retry_after: crate::api::retry_after(headers),
        });
    }
    let says = |name: header::HeaderName, want: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(want))
    };
    let accept = derive_accept_key(key.as_bytes());
    if !says(header::UPGRADE, "websocket")
        || !says(header::CONNECTION, "upgrade")
        || headers
            .get(header::SEC_WEBSOCKET_ACCEPT)
            .and_then(|v| v.to_str().ok())
            != Some(accept.as_str())
    {
        return Err(protocol_error());
    }
    let protocol = header_text(headers, "Sec-WebSocket-Protocol");
    let extensions = header_list(headers, "Sec-WebSocket-Extensions");
    // yawc reads the agreement as the core does: the core's own reading of the answer, every
    // parameter spelled out (yawc's parser is stricter about case and quotes). An answer the
    // core refuses gives yawc none; the core then ends the socket before a frame is read.
    let agreed = req
        .deflate
        .and_then(|offer| offer.accept(extensions.as_deref()).ok().flatten())
        .map(|d| d.header());
    let date = date_header(headers);

    let upgraded = hyper::upgrade::on(&mut response)
        .await
        .map_err(|_| SocketEnd::Error(TransportError::Io))?;
    // The cap is exclusive in yawc: one more byte lets a message of exactly the cap through,
    // as with tungstenite. It bounds each inflated frame and the assembled message.
    let cap = settings.max_message.saturating_add(1);
    let options = Options::default()
        .with_compression_level(CompressionLevel::fast())
        .with_compression_threshold(usize::MAX)
        .with_deflate_pool(pool())
        .with_limits(cap, cap)
        .with_read_buffer_capacity(settings.read_buffer_size)
        .with_write_buffer_capacity(WRITE_BUFFER)
        .with_utf8();
    let ws = WebSocket::from_stream_with_extensions(
        TokioIo::new(upgraded),
        Role::Client,
        agreed.as_deref(),
        options,
    )
    .map_err(|e| yawc_end(&e))?;
    let (sink, stream) = Framed(ws).split();
    let reader = stream
        .map(|frame| match frame {
            Ok(f) => match f.opcode() {
                OpCode::Text => Inbound::Text(f.into_payload()),
                OpCode::Binary => Inbound::Binary(f.into_payload()),
                OpCode::Close => Inbound::End(SocketEnd::Closed {
                    code: f.close_code().map(u16::from),
                    reason: f
                        .close_reason()
                        .ok()
                        .flatten()
                        .unwrap_or_default()
                        .to_owned(),
                }),
                _ => Inbound::Control,
            },
            Err(e) => {
                tracing::debug!(error = %e, "socket read failed");
                Inbound::End(yawc_end(&e))
            }
        })
        .boxed();
    let writer = Box::pin(
        sink.with(|o: Outbound| {
            std::future::ready(Ok::<_, WebSocketError>(match o {
                Outbound::Text(text) => Frame::text(text.into_bytes()),
                Outbound::Binary(bytes) => Frame::binary(bytes),
                Outbound::Close { code, reason } => Frame::close(code.into(), reason),
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

/// The write buffer a socket keeps between writes. The client's frames are small (a ping,
/// a subscribe, a replay batch of at most 32 KiB grows it for a moment), and thousands of
/// idle clients in one process each hold one: yawc's default is 8 KiB.
const WRITE_BUFFER: usize = 2 * 1024;

/// The process's shared inflaters for sockets without context takeover: such a socket
/// borrows one for each message and gives it back, so an idle one holds none (with context
/// takeover each socket keeps its own, as it must). Up to 4 idle inflaters are kept per
/// window size (about 190 KB each size used); a busier moment builds more and drops them.
fn pool() -> yawc::DeflatePool {
    static POOL: std::sync::OnceLock<yawc::DeflatePool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| yawc::DeflatePool::new(4)).clone()
}

/// How a yawc error ends the socket.
fn yawc_end(e: &WebSocketError) -> SocketEnd {
    match e {
        WebSocketError::FrameTooLarge => SocketEnd::Error(TransportError::TooLarge),
        WebSocketError::ConnectionClosed => SocketEnd::Closed {
            code: None,
            reason: String::new(),
        },
        // yawc reports a corrupt deflate stream as an `InvalidInput` I/O error: the peer's
        // fault, not the link's.
        WebSocketError::IoError(io) if io.kind() == std::io::ErrorKind::InvalidInput => {
            SocketEnd::Error(TransportError::Protocol)
        }
        // rustls reports a broken TLS record as `InvalidData`, as on the default transport.
        WebSocketError::IoError(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            SocketEnd::Error(TransportError::Tls)
        }
        WebSocketError::IoError(_) => SocketEnd::Error(TransportError::Io),
        // A broken frame, a bad deflate stream, invalid UTF-8, a compressed frame on a
        // socket that agreed to no compression: the peer broke the protocol.
        _ => SocketEnd::Error(TransportError::Protocol),
    }
}

/// yawc's socket as a stream of `Result`s (its own `Stream` ends silently on an error,
/// which would hide why) and a sink, so it splits like tungstenite's.
struct Framed(WebSocket<TokioIo<hyper::upgrade::Upgraded>>);

impl Stream for Framed {
    type Item = Result<Frame, WebSocketError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match ready!(self.get_mut().0.poll_next_frame(cx)) {
            Ok(frame) => Poll::Ready(Some(Ok(frame))),
            Err(WebSocketError::ConnectionClosed) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }
}

impl Sink<Frame> for Framed {
    type Error = WebSocketError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().0.poll_ready_unpin(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Frame) -> Result<(), Self::Error> {
        self.get_mut().0.start_send_unpin(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().0.poll_flush_unpin(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().0.poll_close_unpin(cx)
    }
}
