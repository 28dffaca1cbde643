//! The `/ws` endpoint: upgrade with Kaiku's auth rules, then one task per socket. A socket
//! speaks v1 (Kaiku's protocol, byte for byte) or, when the client offers it and
//! [`V2Config`](crate::V2Config) allows, protocol v2 (`v2.rs`).
//!
//! A v2 socket whose client offers permessage-deflate (and `V2Config::deflate` allows it)
//! is upgraded by yawc, which compresses; every other socket by axum (tungstenite), as
//! Kaiku's own. The socket task sees neither: both become a stream and a sink of axum
//! [`Message`]s.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::pin::Pin;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use tether_core::wire::Protocol;
use tokio::sync::mpsc;

use crate::faults::{Refusal, SubscribeError};
use crate::kaiku_events::{Quality, ServerEvent};
use crate::v2::{self, Frame, MAX_BATCH_BYTES};
use crate::voice;
use crate::{Conn, Shared};

/// What the rest of the server tells a socket task.
#[derive(Debug)]
pub(crate) enum Out {
    /// Send this event (JSON text the server built): as is on v1, in the socket's encoding
    /// on v2, batched with the events queued behind it when batching is on.
    Text(String),
    /// Send this text frame as is, whatever the socket speaks (fault injection).
    Raw(String),
    /// Send this binary frame.
    Binary(Vec<u8>),
    /// End the socket now, without a close frame.
    Drop,
    /// Stop reading and writing; keep TCP open.
    Stall,
    /// Post `count` messages to `channel_id` and send each to this socket as it is created,
    /// waiting for the socket to take it (a flood that respects TCP backpressure).
    Flood { channel_id: String, count: u64 },
}

/// Kaiku's answer to a `subscribe` whose permission check failed (a database error too).
const FORBIDDEN: &str = "You don't have permission to view this channel";

/// What sqlx says when no database connection came in time: the `message_error` a
/// `subscribe` gets when Kaiku's channel lookup fails.
const POOL_TIMED_OUT: &str = "pool timed out while waiting for an open connection";

const MISSING_PROTOCOL: &str =
    "Missing or invalid Sec-WebSocket-Protocol header. Expected: access_token.<jwt>";

fn plain(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// A socket's read half, whichever library upgraded it.
type Inbound = Pin<Box<dyn Stream<Item = Result<Message, ()>> + Send>>;
/// A socket's write half.
type Outbound = Pin<Box<dyn Sink<Message, Error = ()> + Send>>;

/// `GET /ws`: checks faults and auth, then upgrades.
pub(crate) async fn upgrade(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    mut parts: Parts,
) -> Response {
    shared.upgrades.fetch_add(1, Ordering::Relaxed);
    let delay = shared.faults().upgrade_delay;
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(r) = Refusal::take(&mut shared.faults().refuse) {
        return refuse(r);
    }
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .collect();
    let protocol_token = offered
        .iter()
        .find_map(|p| p.strip_prefix("access_token."))
        .filter(|_| shared.config.subprotocol_auth);
    let query_token = query
        .get("token")
        .filter(|_| shared.config.query_auth)
        .map(String::as_str);
    let Some(token) = protocol_token.or(query_token) else {
        return plain(StatusCode::UNAUTHORIZED, MISSING_PROTOCOL);
    };
    let user_id = match shared.store().check_access(token) {
        Ok(u) => u,
        Err(_) => return plain(StatusCode::UNAUTHORIZED, "Invalid token"),
    };
    let max = shared.config.max_message;
    // Like Kaiku: select `access_token` when offered; offered only the token, select nothing.
    // A v2 value the client offered and this server speaks comes first (D66).
    let selected = shared.config.v2.select(&offered);
    let deflate_offered = headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(tether_core::wire::PERMESSAGE_DEFLATE));
    if let Some(protocol) = Protocol::from_subprotocol(selected)
        && deflate_offered
        && shared.config.v2.deflate
    {
        return match yawc::IncomingUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(incoming) => compressed(shared, user_id, protocol, selected, incoming),
            Err(e) => e.into_response(),
        };
    }
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    ws.protocols([selected])
        .max_message_size(max)
        .on_upgrade(move |socket| {
            let protocol = socket
                .protocol()
                .and_then(|p| p.to_str().ok())
                .and_then(Protocol::from_subprotocol)
                .unwrap_or(Protocol::V1);
            tracing::debug!(?protocol, "socket opened");
            let (sink, stream) = socket.split();
            run(
                shared,
                user_id,
                protocol,
                Box::pin(stream.map(|m| m.map_err(|_| ()))),
                Box::pin(sink.sink_map_err(|_| ())),
            )
        })
}

/// The yawc upgrade of a v2 socket that agreed to permessage-deflate: the server compresses
/// every frame, with context takeover, at `V2Config::deflate_window_bits` or the client's
/// smaller `server_max_window_bits`.
fn compressed(
    shared: Arc<Shared>,
    user_id: String,
    protocol: Protocol,
    selected: &'static str,
    incoming: yawc::IncomingUpgrade,
) -> Response {
    let bits = shared.config.v2.deflate_window_bits.clamp(9, 15);
    let mut options = yawc::Options::default()
        .with_compression_level(yawc::CompressionLevel::default())
        .with_limits(shared.config.max_message + 1, shared.config.max_message + 1)
        .with_utf8();
    if bits < 15 {
        options = options.with_server_max_window_bits(bits);
    }
    let (response, fut) = match incoming.upgrade(options) {
        Ok(r) => r,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("upgrade failed: {e}")).into_response();
        }
    };
    tokio::spawn(async move {
        let Ok(ws) = fut.await else {
            return;
        };
        tracing::debug!(?protocol, "compressed socket opened");
        let (sink, stream) = ws.split();
        let inbound = stream.map(|f| {
            Ok(match f.opcode() {
                yawc::OpCode::Text => match Utf8Bytes::try_from(f.into_payload()) {
                    Ok(t) => Message::Text(t),
                    Err(_) => return Err(()),
                },
                yawc::OpCode::Binary => Message::Binary(f.into_payload()),
                yawc::OpCode::Ping => Message::Ping(f.into_payload()),
                yawc::OpCode::Pong => Message::Pong(f.into_payload()),
                _ => Message::Close(None),
            })
        });
        let outbound = sink
            .sink_map_err(|_| ())
            .with(|m: Message| std::future::ready(Ok::<_, ()>(yawc_frame(m))));
        run(
            shared,
            user_id,
            protocol,
            Box::pin(inbound),
            Box::pin(outbound),
        )
        .await;
    });
    let (mut parts, _) = response.into_parts();
    parts.headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(selected),
    );
    Response::from_parts(parts, axum::body::Body::empty())
}

/// An axum message as a yawc frame.
fn yawc_frame(m: Message) -> yawc::Frame {
    match m {
        Message::Text(t) => yawc::Frame::text(bytes::Bytes::from(t)),
        Message::Binary(b) => yawc::Frame::binary(b),
        Message::Ping(b) => yawc::Frame::ping(b),
        Message::Pong(b) => yawc::Frame::pong(b),
        Message::Close(Some(CloseFrame { code, reason })) => {
            yawc::Frame::close(code.into(), reason.as_str())
        }
        Message::Close(None) => yawc::Frame::close(yawc::close::CloseCode::Normal, ""),
    }
}

fn refuse(r: Refusal) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut resp = if status == StatusCode::UNAUTHORIZED {
        plain(status, "Invalid token")
    } else {
        (status, format!("refused by fault injection ({})", r.status)).into_response()
    };
    if let Some(secs) = r.retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Client frames, parsed strictly as Kaiku does: Kaiku's `ClientEvent`, its variants in its
/// order (an unknown type's `message_error` lists them as Kaiku's does) with its fields, so a
/// missing or mistyped field is a `message_error` too. Some fields are read only to validate
/// the frame's shape. Ids stay strings: a malformed id is an unknown one here.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(dead_code)]
enum ClientFrame {
    Ping,
    Subscribe {
        channel_id: String,
    },
    Unsubscribe {
        channel_id: String,
    },
    Typing {
        channel_id: String,
    },
    StopTyping {
        channel_id: String,
    },
    VoiceJoin {
        channel_id: String,
    },
    VoiceLeave {
        channel_id: String,
    },
    VoiceAnswer {
        channel_id: String,
        sdp: String,
    },
    VoiceIceCandidate {
        channel_id: String,
        candidate: String,
    },
    VoiceMute {
        channel_id: String,
    },
    VoiceUnmute {
        channel_id: String,
    },
    VoiceStats {
        channel_id: String,
        session_id: String,
        latency: i16,
        packet_loss: f32,
        jitter: i16,
        quality: u8,
        timestamp: i64,
    },
    VoiceScreenShareStart {
        channel_id: String,
        stream_id: String,
        quality: Quality,
        has_audio: bool,
        source_label: String,
    },
    VoiceScreenShareStop {
        channel_id: String,
        stream_id: String,
    },
    VoiceWebcamStart {
        channel_id: String,
        quality: Quality,
    },
    VoiceWebcamStop {
        channel_id: String,
    },
    VoiceSetLayerPreference {
        channel_id: String,
        target_user_id: String,
        track_source: String,
        preferred_layer: LayerPreference,
    },
    SetActivity {
        activity: Option<Value>,
    },
    SetStatus {
        status: UserStatus,
    },
    SetCustomStatus {
        custom_status: Option<Value>,
    },
    AdminSubscribe,
    AdminUnsubscribe,
}

/// The statuses Kaiku's `set_status` takes.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum UserStatus {
    Online,
    Away,
    Busy,
    Offline,
}

impl UserStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Away => "away",
            Self::Busy => "busy",
            Self::Offline => "offline",
        }
    }
}

/// A viewer's simulcast layer choice (read to validate the frame).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum LayerPreference {
    Auto,
    High,
    Medium,
    Low,
}

async fn run(
    shared: Arc<Shared>,
    user_id: String,
    protocol: Protocol,
    mut stream: Inbound,
    mut sink: Outbound,
) {
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel();
    shared.conns().insert(
        id,
        Conn {
            user_id: user_id.clone(),
            subs: Default::default(),
            tx: tx.clone(),
            deaf: false,
        },
    );
    let (stall_new, withhold_ready) = {
        let faults = shared.faults();
        (faults.stall_new, faults.withhold_ready)
    };
    // A withheld `ready` is a stall from the first instant: Kaiku's handler blocked before
    // it read or wrote anything.
    let mut stalled = stall_new || withhold_ready;
    if !withhold_ready {
        let delay = shared.config.ready_delay;
        let ready = ServerEvent::Ready {
            user_id: user_id.clone(),
        }
        .to_json();
        let ready_tx = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = ready_tx.send(Out::Text(ready));
        });
    }
    drop(tx);

    let batch = protocol.batches() && shared.config.v2.batch;
    // What a batch took from the channel but could not hold: handled before the next recv.
    let mut pending: Option<Out> = None;
    loop {
        let out = match pending.take() {
            Some(out) => Some(out),
            None => tokio::select! {
                out = rx.recv() => out,
                inbound = stream.next(), if !stalled => {
                    match inbound {
                        Some(Ok(Message::Text(text))) => {
                            read_text(&shared, id, &user_id, protocol, text.as_str());
                        }
                        Some(Ok(Message::Binary(bytes))) => {
                            read_binary(&shared, id, &user_id, protocol, &bytes);
                        }
                        Some(Ok(Message::Close(_))) => {
                            shared.client_closes.fetch_add(1, Ordering::Relaxed);
                            // Kaiku never answers a Close: stop reading (so no reply is
                            // flushed) and hold the socket until the client drops it or the
                            // server drops us.
                            stalled = true;
                        }
                        Some(Ok(_)) => {} // ping, pong: ignored, as Kaiku does
                        Some(Err(_)) | None => break,
                    }
                    continue;
                }
            },
        };
        let frames = match out {
            Some(Out::Text(t)) if !stalled => {
                if protocol.version == 1 {
                    vec![Message::Text(Utf8Bytes::from(t))]
                } else {
                    let mut events = vec![t];
                    if batch {
                        take_batch(&mut events, &mut rx, &mut pending);
                    }
                    v2_frames(events, protocol)
                }
            }
            Some(Out::Raw(t)) if !stalled => vec![Message::Text(Utf8Bytes::from(t))],
            Some(Out::Binary(b)) if !stalled => vec![Message::Binary(b.into())],
            Some(Out::Text(_) | Out::Raw(_) | Out::Binary(_)) => continue, // lost in the stall
            Some(Out::Stall) => {
                stalled = true;
                continue;
            }
            Some(Out::Flood { channel_id, count }) => {
                if flood(&shared, &mut sink, protocol, &channel_id, count)
                    .await
                    .is_err()
                {
                    break;
                }
                continue;
            }
            Some(Out::Drop) | None => break,
        };
        let mut sent = true;
        for frame in frames {
            if sink.send(frame).await.is_err() {
                sent = false;
                break;
            }
        }
        if !sent {
            break;
        }
    }
    shared.conns().remove(&id);
    // Dropping sink and stream ends the TCP connection without a close frame.
}

/// Adds to `events` the events queued behind it right now, in order, up to `MAX_BATCH` (1,024)
/// events and [`MAX_BATCH_BYTES`] of JSON; the first thing that is not an event, or an event
/// that would not fit, waits in `pending`.
fn take_batch(
    events: &mut Vec<String>,
    rx: &mut mpsc::UnboundedReceiver<Out>,
    pending: &mut Option<Out>,
) {
    let mut bytes: usize = events.iter().map(String::len).sum();
    while events.len() < tether_core::wire::MAX_BATCH {
        match rx.try_recv() {
            Ok(Out::Text(t)) if bytes + t.len() < MAX_BATCH_BYTES => {
                bytes += t.len() + 1;
                events.push(t);
            }
            Ok(other) => {
                *pending = Some(other);
                return;
            }
            Err(_) => return,
        }
    }
}

/// The frames that carry `events` on a v2 socket: one (the event, or their batch); one text
/// frame each if some event could not be encoded.
fn v2_frames(events: Vec<String>, protocol: Protocol) -> Vec<Message> {
    match v2::encode(&events, protocol) {
        Some(Frame::Text(t)) => vec![Message::Text(Utf8Bytes::from(t))],
        Some(Frame::Binary(b)) => vec![Message::Binary(b.into())],
        None => events
            .into_iter()
            .map(|t| Message::Text(Utf8Bytes::from(t)))
            .collect(),
    }
}

/// Posts and sends `count` messages, one at a time: the socket's send waits whenever the
/// client's receive window is full, so the server holds one frame, not the whole flood.
async fn flood<S>(
    shared: &Shared,
    sink: &mut S,
    protocol: Protocol,
    channel_id: &str,
    count: u64,
) -> Result<(), ()>
where
    S: futures_util::Sink<Message> + Unpin,
{
    let author = {
        let mut store = shared.store();
        match store.user_by_name("flood") {
            Some(u) => u.id.clone(),
            None => {
                store
                    .register("flood", "password123", "Flood")
                    .ok_or(())?
                    .id
            }
        }
    };
    for i in 0..count {
        let frame = {
            let mut store = shared.store();
            let m = store
                .post(channel_id, &author, &format!("flood {i}"))
                .ok_or(())?;
            ServerEvent::MessageNew {
                channel_id: channel_id.to_owned(),
                message: store.message_json(&m),
            }
            .to_json()
        };
        let frames = if protocol.version == 1 {
            vec![Message::Text(Utf8Bytes::from(frame))]
        } else {
            v2_frames(vec![frame], protocol)
        };
        for frame in frames {
            sink.send(frame).await.map_err(|_| ())?;
        }
    }
    Ok(())
}

fn reply(shared: &Shared, id: u64, event: ServerEvent) {
    shared.send_to_conn(id, event.to_json());
}

fn error(shared: &Shared, id: u64, code: &str, message: &str) {
    reply(
        shared,
        id,
        ServerEvent::Error {
            code: code.to_owned(),
            message: message.to_owned(),
        },
    );
}

/// Answers a voice frame Kaiku refused with its `voice_error`.
fn voice_answer(shared: &Shared, id: u64, result: Result<(), voice::Refused>) {
    if let Err(refused) = result {
        reply(shared, id, refused.into_event());
    }
}

/// A client's text frame: one event on v1 (as Kaiku reads it); one event or a batch on v2.
fn read_text(shared: &Shared, id: u64, user_id: &str, protocol: Protocol, text: &str) {
    if protocol.version == 1 {
        return handle(shared, id, user_id, serde_json::from_str(text));
    }
    match v2::split_json(text) {
        Ok(events) => {
            for event in events {
                handle(shared, id, user_id, serde_json::from_str(event));
            }
        }
        Err(v2::BadFrame(e)) => error(shared, id, "message_error", &e),
    }
}

/// A client's binary frame: one event or a batch on a MessagePack socket; ignored otherwise,
/// as Kaiku does.
fn read_binary(shared: &Shared, id: u64, user_id: &str, protocol: Protocol, bytes: &[u8]) {
    if protocol != Protocol::V2_MSGPACK {
        return;
    }
    match v2::split_msgpack(bytes) {
        Ok(events) => {
            for event in events {
                handle(shared, id, user_id, serde_json::from_value(event));
            }
        }
        Err(v2::BadFrame(e)) => error(shared, id, "message_error", &e),
    }
}

/// One client event, parsed (or not) from whichever frame carried it.
fn handle(shared: &Shared, id: u64, user_id: &str, frame: Result<ClientFrame, serde_json::Error>) {
    let frame = match frame {
        Ok(f) => f,
        Err(e) => return error(shared, id, "message_error", &e.to_string()),
    };
    match frame {
        ClientFrame::Ping => reply(shared, id, ServerEvent::Pong),
        ClientFrame::Subscribe { channel_id } => {
            // Kaiku looks the channel up, then checks the permission; a database error in
            // the first is a `message_error`, in the second a `forbidden`.
            if SubscribeError::take(
                &mut shared.faults().subscribe_error,
                SubscribeError::MessageError,
            ) {
                return error(shared, id, "message_error", POOL_TIMED_OUT);
            }
            if !shared.store().channels.contains_key(&channel_id) {
                return error(shared, id, "channel_not_found", "Channel not found");
            }
            if SubscribeError::take(
                &mut shared.faults().subscribe_error,
                SubscribeError::Forbidden,
            ) {
                return error(shared, id, "forbidden", FORBIDDEN);
            }
            let tx = shared.conns().get_mut(&id).map(|c| {
                c.subs.insert(channel_id.clone());
                c.tx.clone()
            });
            let frame = ServerEvent::Subscribed { channel_id }.to_json();
            let delay = shared.config.subscribed_delay;
            if let Some(tx) = tx {
                if delay.is_zero() {
                    let _ = tx.send(Out::Text(frame));
                } else {
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = tx.send(Out::Text(frame));
                    });
                }
            }
        }
        ClientFrame::Unsubscribe { channel_id } => {
            if let Some(c) = shared.conns().get_mut(&id) {
                c.subs.remove(&channel_id);
            }
            reply(shared, id, ServerEvent::Unsubscribed { channel_id });
        }
        ClientFrame::Typing { channel_id } | ClientFrame::StopTyping { channel_id }
            if !shared.store().channels.contains_key(&channel_id) =>
        {
            error(shared, id, "channel_not_found", "Channel not found");
        }
        ClientFrame::Typing { channel_id } => {
            let user_id = user_id.to_owned();
            let f = ServerEvent::TypingStart {
                channel_id: channel_id.clone(),
                user_id,
            };
            shared.broadcast(&channel_id, &f.to_json());
        }
        ClientFrame::StopTyping { channel_id } => {
            let user_id = user_id.to_owned();
            let f = ServerEvent::TypingStop {
                channel_id: channel_id.clone(),
                user_id,
            };
            shared.broadcast(&channel_id, &f.to_json());
        }
        // Presence goes to everyone (Kaiku: the user's friends); the user's own sockets too.
        ClientFrame::SetStatus { status } => {
            shared.store().set_status(user_id, status.as_str());
            let f = ServerEvent::PresenceUpdate {
                user_id: user_id.to_owned(),
                status: status.as_str().to_owned(),
            };
            shared.broadcast_all(&f.to_json());
            if status == UserStatus::Offline {
                // Kaiku hides the custom status of a user who goes offline.
                let hide = ServerEvent::CustomStatusUpdate {
                    user_id: user_id.to_owned(),
                    custom_status: None,
                };
                shared.broadcast_all(&hide.to_json());
            }
        }
        ClientFrame::SetActivity { activity } => {
            let f = ServerEvent::RichPresenceUpdate {
                user_id: user_id.to_owned(),
                activity,
            };
            shared.broadcast_all(&f.to_json());
        }
        ClientFrame::SetCustomStatus { custom_status } => {
            let f = ServerEvent::CustomStatusUpdate {
                user_id: user_id.to_owned(),
                custom_status,
            };
            shared.broadcast_all(&f.to_json());
        }
        ClientFrame::VoiceJoin { channel_id } => {
            voice_answer(shared, id, voice::join(shared, id, user_id, &channel_id));
        }
        ClientFrame::VoiceLeave { channel_id } => {
            voice_answer(shared, id, voice::leave(shared, user_id, &channel_id));
        }
        ClientFrame::VoiceAnswer { channel_id, .. }
        | ClientFrame::VoiceIceCandidate { channel_id, .. } => {
            voice_answer(shared, id, voice::signal(shared, user_id, &channel_id));
        }
        ClientFrame::VoiceMute { channel_id } => {
            voice_answer(shared, id, voice::mute(shared, user_id, &channel_id, true));
        }
        ClientFrame::VoiceUnmute { channel_id } => {
            voice_answer(shared, id, voice::mute(shared, user_id, &channel_id, false));
        }
        ClientFrame::VoiceStats {
            channel_id,
            latency,
            packet_loss,
            jitter,
            quality,
            ..
        } => {
            let stats = voice::Stats {
                latency,
                packet_loss,
                jitter,
                quality,
            };
            voice::stats(shared, user_id, &channel_id, stats);
        }
        ClientFrame::VoiceScreenShareStart {
            channel_id,
            stream_id,
            quality,
            has_audio,
            source_label,
        } => {
            let share = voice::ShareStart {
                stream_id,
                quality,
                has_audio,
                source_label,
            };
            let started = voice::share_start(shared, user_id, &channel_id, share);
            voice_answer(shared, id, started);
        }
        ClientFrame::VoiceScreenShareStop {
            channel_id,
            stream_id,
        } => {
            let stopped = voice::share_stop(shared, user_id, &channel_id, &stream_id);
            voice_answer(shared, id, stopped);
        }
        ClientFrame::VoiceWebcamStart {
            channel_id,
            quality,
        } => {
            let started = voice::webcam_start(shared, user_id, &channel_id, quality);
            voice_answer(shared, id, started);
        }
        ClientFrame::VoiceWebcamStop { channel_id } => {
            voice_answer(shared, id, voice::webcam_stop(shared, user_id, &channel_id));
        }
        // No simulcast here: a preference changes nothing, as for a single-layer track.
        ClientFrame::VoiceSetLayerPreference { .. } | ClientFrame::AdminUnsubscribe => {}
        // Nobody is an elevated admin on the dev server.
        ClientFrame::AdminSubscribe => error(
            shared,
            id,
            "admin_not_elevated",
            "Must be an elevated admin to subscribe to admin events",
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::testkit::{Ws, server_with_user, token_of};
    use crate::{ServerConfig, SubscribeError};

    const QUIET: Duration = Duration::from_millis(300);

    /// Pings and returns the next frame: a `pong`, unless something arrived first.
    async fn next_after_ping(ws: &mut Ws) -> serde_json::Value {
        ws.send(r#"{"type":"ping"}"#).await;
        ws.event().await
    }

    #[tokio::test]
    async fn a_refused_subscribe_answers_kaikus_error_frames_and_takes_no_effect() {
        let (server, token) = server_with_user(ServerConfig::default(), "alice").await;
        let ch = server.create_channel("general");
        let mut ws = Ws::connect(server.addr(), &token).await;
        assert_eq!(ws.event().await["type"], "ready");
        let subscribe = format!(r#"{{"type":"subscribe","channel_id":"{ch}"}}"#);

        server
            .faults()
            .subscribe_errors(SubscribeError::Forbidden, Some(1));
        ws.send(&subscribe).await;
        assert_eq!(
            ws.event().await.to_string(),
            r#"{"code":"forbidden","message":"You don't have permission to view this channel","type":"error"}"#
        );
        server
            .faults()
            .subscribe_errors(SubscribeError::MessageError, Some(1));
        ws.send(&subscribe).await;
        let e = ws.event().await;
        assert_eq!(
            (&e["type"], &e["code"]),
            (&"error".into(), &"message_error".into())
        );
        server.post(&ch, "alice", "unheard").expect("post");
        assert_eq!(
            next_after_ping(&mut ws).await["type"],
            "pong",
            "not subscribed"
        );

        // The faults are spent: the next subscribe works.
        ws.subscribe(&ch).await;
        server.post(&ch, "alice", "heard").expect("post");
        assert_eq!(ws.event().await["message"]["content"], "heard");
    }

    /// Kaiku's answer to `{"type": "does_not_exist"}`, from the wire transcript.
    const UNKNOWN_TYPE: &str = r#"{"type":"error","code":"message_error","message":"unknown variant `does_not_exist`, expected one of `ping`, `subscribe`, `unsubscribe`, `typing`, `stop_typing`, `voice_join`, `voice_leave`, `voice_answer`, `voice_ice_candidate`, `voice_mute`, `voice_unmute`, `voice_stats`, `voice_screen_share_start`, `voice_screen_share_stop`, `voice_webcam_start`, `voice_webcam_stop`, `voice_set_layer_preference`, `set_activity`, `set_status`, `set_custom_status`, `admin_subscribe`, `admin_unsubscribe` at line 1 column 25"}"#;

    /// The next raw text frame within 5 s.
    async fn raw(ws: &mut Ws) -> String {
        ws.recv_within(Duration::from_secs(5))
            .await
            .expect("a frame in time")
    }

    #[tokio::test]
    async fn frames_read_as_kaiku_s_byte_for_byte_type_first() {
        let (server, token) = server_with_user(ServerConfig::default(), "alice").await;
        let ch = server.create_channel("general");
        let mut ws = Ws::connect(server.addr(), &token).await;
        let ready = raw(&mut ws).await;
        let user_id = server.with_store(|s| s.user_by_name("alice").map(|u| u.id.clone()));
        assert_eq!(
            ready,
            format!(
                r#"{{"type":"ready","user_id":"{}"}}"#,
                user_id.expect("alice")
            )
        );
        ws.send(r#"{"type": "does_not_exist"}"#).await;
        assert_eq!(raw(&mut ws).await, UNKNOWN_TYPE);
        ws.send(&format!(r#"{{"type":"subscribe","channel_id":"{ch}"}}"#))
            .await;
        assert_eq!(
            raw(&mut ws).await,
            format!(r#"{{"type":"subscribed","channel_id":"{ch}"}}"#)
        );
        ws.send(r#"{"type":"subscribe","channel_id":"0f622c09-f069-417e-a94c-b1af8b4abd2d"}"#)
            .await;
        assert_eq!(
            raw(&mut ws).await,
            r#"{"type":"error","code":"channel_not_found","message":"Channel not found"}"#
        );
        ws.send(r#"{"type":"ping"}"#).await;
        assert_eq!(raw(&mut ws).await, r#"{"type":"pong"}"#);
        let id = server.post(&ch, "alice", "hello").expect("post");
        let new = raw(&mut ws).await;
        assert!(
            new.starts_with(&format!(
                r#"{{"type":"message_new","channel_id":"{ch}","message":{{"attachments":[],"author":"#
            )),
            "{new}"
        );
        assert!(new.contains(&format!(r#""id":"{id}""#)), "{new}");
    }

    #[tokio::test]
    async fn presence_carries_the_user_and_going_offline_hides_the_custom_status() {
        let (server, token) = server_with_user(ServerConfig::default(), "alice").await;
        let alice = server
            .with_store(|s| s.user_by_name("alice").map(|u| u.id.clone()))
            .expect("alice");
        let mut ws = Ws::connect(server.addr(), &token).await;
        assert_eq!(ws.event().await["type"], "ready");
        ws.send(r#"{"type":"set_status","status":"idle"}"#).await;
        let e = ws.event().await;
        assert_eq!(
            (&e["type"], &e["code"]),
            (&"error".into(), &"message_error".into())
        );
        ws.send(r#"{"type":"set_status","status":"offline"}"#).await;
        assert_eq!(
            raw(&mut ws).await,
            format!(r#"{{"type":"presence_update","user_id":"{alice}","status":"offline"}}"#)
        );
        assert_eq!(
            raw(&mut ws).await,
            format!(
                r#"{{"type":"custom_status_update","user_id":"{alice}","custom_status":null}}"#
            )
        );
        ws.send(r#"{"type":"set_custom_status","custom_status":{"text":"busy"}}"#)
            .await;
        let e = ws.event().await;
        assert_eq!(
            (&e["user_id"], &e["custom_status"]["text"]),
            (&alice.as_str().into(), &"busy".into())
        );
        ws.send(r#"{"type":"set_activity"}"#).await;
        assert_eq!(
            raw(&mut ws).await,
            format!(r#"{{"type":"rich_presence_update","user_id":"{alice}","activity":null}}"#)
        );
    }

    #[tokio::test]
    async fn voice_join_is_answered_with_an_offer_the_room_and_a_candidate_and_told_to_the_others()
    {
        let (server, alice_token) = server_with_user(ServerConfig::default(), "alice").await;
        let bob_token = token_of(&server, "bob");
        let ids = server.with_store(|s| {
            ["alice", "bob"].map(|n| s.user_by_name(n).map(|u| u.id.clone()).expect("a user"))
        });
        let [alice_id, bob_id] = ids;
        let voice = server.create_channel("voice");
        let mut alice = Ws::connect(server.addr(), &alice_token).await;
        let mut bob = Ws::connect(server.addr(), &bob_token).await;
        assert_eq!(alice.event().await["type"], "ready");
        assert_eq!(bob.event().await["type"], "ready");
        let join = format!(r#"{{"type":"voice_join","channel_id":"{voice}"}}"#);

        alice.send(&join).await;
        let offer = alice.event().await;
        assert_eq!(offer["type"], "voice_offer");
        assert_eq!(offer["channel_id"], voice.as_str());
        assert!(
            offer["sdp"].as_str().is_some_and(|s| s.starts_with("v=0")),
            "{offer}"
        );
        let room = alice.event().await;
        assert_eq!(room["type"], "voice_room_state", "{room}");
        assert_eq!(
            room["participants"],
            serde_json::json!([{"user_id": alice_id, "username": "alice", "display_name": "alice",
                "muted": false, "screen_sharing": false, "webcam_active": false}])
        );
        assert_eq!(alice.event().await["type"], "voice_ice_candidate");

        bob.send(&join).await;
        assert_eq!(bob.event().await["type"], "voice_offer");
        let room = bob.event().await;
        assert_eq!(
            room["participants"].as_array().map(Vec::len),
            Some(2),
            "{room}"
        );
        let joined = alice.event().await;
        assert_eq!(
            joined,
            serde_json::json!({"type": "voice_user_joined", "channel_id": voice,
                "user_id": bob_id, "username": "bob", "display_name": "bob"})
        );

        // An answer and a candidate are taken without a word; mute is told to the others only.
        bob.send(&format!(
            r#"{{"type":"voice_answer","channel_id":"{voice}","sdp":"v=0"}}"#
        ))
        .await;
        bob.send(&format!(
            r#"{{"type":"voice_ice_candidate","channel_id":"{voice}","candidate":"{{}}"}}"#
        ))
        .await;
        bob.send(&format!(
            r#"{{"type":"voice_mute","channel_id":"{voice}"}}"#
        ))
        .await;
        let muted = alice.event_of("voice_user_muted").await;
        assert_eq!(muted["user_id"], bob_id.as_str());
        assert_eq!(
            next_after_ping(&mut bob).await["type"],
            "voice_ice_candidate"
        );
        assert_eq!(
            next_after_ping(&mut bob).await["type"],
            "pong",
            "nothing for bob"
        );

        bob.send(&format!(
            r#"{{"type":"voice_leave","channel_id":"{voice}"}}"#
        ))
        .await;
        let left = alice.event_of("voice_user_left").await;
        assert_eq!(left["user_id"], bob_id.as_str());
        assert_eq!(next_after_ping(&mut bob).await["type"], "pong");
    }

    #[tokio::test]
    async fn voice_frames_kaiku_refuses_get_its_voice_errors() {
        let (server, token) = server_with_user(ServerConfig::default(), "alice").await;
        let alice_id = server
            .with_store(|s| s.user_by_name("alice").map(|u| u.id.clone()))
            .expect("alice");
        let (voice, other) = (server.create_channel("voice"), server.create_channel("x"));
        let mut ws = Ws::connect(server.addr(), &token).await;
        assert_eq!(ws.event().await["type"], "ready");
        let voice_error = |message: String| serde_json::json!({"type": "voice_error", "code": "voice_error", "message": message});

        ws.send(&format!(
            r#"{{"type":"voice_mute","channel_id":"{voice}"}}"#
        ))
        .await;
        assert_eq!(
            ws.event().await,
            voice_error(format!("Room not found: {voice}"))
        );
        ws.send(&format!(
            r#"{{"type":"voice_answer","channel_id":"{voice}"}}"#
        ))
        .await;
        let e = ws.event().await;
        assert_eq!(e["message"], "missing field `sdp`", "{e}");
        ws.send(r#"{"type":"voice_join","channel_id":"no-such-channel"}"#)
            .await;
        assert_eq!(
            ws.event().await,
            voice_error("Not authorized to join this voice channel".into())
        );

        let join = format!(r#"{{"type":"voice_join","channel_id":"{voice}"}}"#);
        ws.send(&join).await;
        assert_eq!(
            ws.event_of("voice_ice_candidate").await["channel_id"],
            voice.as_str()
        );
        // The socket goes; the peer stays (Kaiku's SFU waits for its media to fail): joining
        // again is refused until a leave.
        server.faults().drop_all();
        let mut again = Ws::connect(server.addr(), &token).await;
        assert_eq!(again.event().await["type"], "ready");
        again.send(&join).await;
        assert_eq!(
            again.event().await,
            voice_error("Already in voice channel".into())
        );
        again
            .send(&format!(
                r#"{{"type":"voice_leave","channel_id":"{voice}"}}"#
            ))
            .await;
        again.send(&join).await;
        assert_eq!(again.event().await["type"], "voice_offer");

        // Another room: that user is no participant there.
        let mut bob = Ws::connect(server.addr(), &token_of(&server, "bob")).await;
        assert_eq!(bob.event().await["type"], "ready");
        bob.send(&format!(
            r#"{{"type":"voice_join","channel_id":"{other}"}}"#
        ))
        .await;
        assert_eq!(bob.event().await["type"], "voice_offer");
        again
            .send(&format!(
                r#"{{"type":"voice_unmute","channel_id":"{other}"}}"#
            ))
            .await;
        assert_eq!(
            again.event_of("voice_error").await,
            voice_error(format!("Participant not found: {alice_id}"))
        );
    }

    #[tokio::test]
    async fn screen_shares_and_webcams_reach_the_whole_room_and_show_in_its_state() {
        let (server, alice_token) = server_with_user(ServerConfig::default(), "alice").await;
        let voice = server.create_channel("voice");
        let mut alice = Ws::connect(server.addr(), &alice_token).await;
        assert_eq!(alice.event().await["type"], "ready");
        let join = format!(r#"{{"type":"voice_join","channel_id":"{voice}"}}"#);
        alice.send(&join).await;
        alice.event_of("voice_ice_candidate").await;
        let stream = "5a1e0000-0000-4000-8000-0000000000aa";
        alice
            .send(&format!(
                r#"{{"type":"voice_screen_share_start","channel_id":"{voice}","stream_id":"{stream}","quality":"high","has_audio":false,"source_label":"Display 1"}}"#
            ))
            .await;
        let started = alice.event().await;
        assert_eq!(started["type"], "screen_share_started", "{started}");
        assert_eq!(
            (&started["stream_id"], &started["quality"]),
            (&stream.into(), &"high".into())
        );
        assert!(
            started["started_at"]
                .as_str()
                .is_some_and(|t| t.ends_with("+00:00"))
        );
        alice
            .send(&format!(
                r#"{{"type":"voice_webcam_start","channel_id":"{voice}","quality":"medium"}}"#
            ))
            .await;
        assert_eq!(alice.event().await["type"], "webcam_started");

        let mut bob = Ws::connect(server.addr(), &token_of(&server, "bob")).await;
        assert_eq!(bob.event().await["type"], "ready");
        bob.send(&join).await;
        let room = bob.event_of("voice_room_state").await;
        assert_eq!(room["screen_shares"][0]["stream_id"], stream, "{room}");
        assert!(
            room["screen_shares"][0]["started_at"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
        assert_eq!(room["webcams"][0]["quality"], "medium", "{room}");
        let alice_in_room = room["participants"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["username"] == "alice"))
            .cloned()
            .expect("alice is in the room");
        assert_eq!(
            (
                &alice_in_room["screen_sharing"],
                &alice_in_room["webcam_active"]
            ),
            (&true.into(), &true.into())
        );

        // Leaving ends alice's share and webcam for bob, then tells him she left.
        alice
            .send(&format!(
                r#"{{"type":"voice_leave","channel_id":"{voice}"}}"#
            ))
            .await;
        let stopped = bob.event_of("screen_share_stopped").await;
        assert_eq!(
            (&stopped["stream_id"], &stopped["reason"]),
            (&stream.into(), &"disconnected".into())
        );
        assert_eq!(bob.event().await["type"], "webcam_stopped");
        assert_eq!(bob.event().await["type"], "voice_user_left");
    }

    #[tokio::test]
    async fn a_withheld_ready_leaves_an_upgraded_socket_silent() {
        let (server, token) = server_with_user(ServerConfig::default(), "alice").await;
        server.faults().withhold_ready(true);
        let mut ws = Ws::connect(server.addr(), &token).await;
        ws.send(r#"{"type":"ping"}"#).await;
        assert_eq!(ws.recv_within(QUIET).await, None, "no ready, no pong");
        assert_eq!(server.upgrades(), 1);

        server.faults().withhold_ready(false);
        let mut fresh = Ws::connect(server.addr(), &token).await;
        assert_eq!(fresh.event().await["type"], "ready");
        assert_eq!(server.upgrades(), 2);
        assert_eq!(ws.recv_within(QUIET).await, None, "still silent");
    }

    #[tokio::test]
    async fn a_deaf_socket_answers_its_client_but_hears_no_broadcast() {
        let (server, token) = server_with_user(ServerConfig::default(), "alice").await;
        let (general, random) = (
            server.create_channel("general"),
            server.create_channel("random"),
        );
        let mut deaf = Ws::connect(server.addr(), &token).await;
        assert_eq!(deaf.event().await["type"], "ready");
        deaf.subscribe(&general).await;
        assert_eq!(server.faults().deafen(), 1);

        server.post(&general, "alice", "lost").expect("post");
        deaf.send(&format!(r#"{{"type":"typing","channel_id":"{general}"}}"#))
            .await;
        assert_eq!(next_after_ping(&mut deaf).await["type"], "pong");
        // Answers to its own frames still come: they never went through pub/sub.
        deaf.subscribe(&random).await;
        server.post(&random, "alice", "lost too").expect("post");
        assert_eq!(deaf.recv_within(QUIET).await, None);

        // A socket opened later hears everything.
        let mut fresh = Ws::connect(server.addr(), &token_of(&server, "bob")).await;
        assert_eq!(fresh.event().await["type"], "ready");
        fresh.subscribe(&general).await;
        server.post(&general, "alice", "heard").expect("post");
        assert_eq!(fresh.event().await["message"]["content"], "heard");
        assert_eq!(deaf.recv_within(QUIET).await, None);
    }
}
