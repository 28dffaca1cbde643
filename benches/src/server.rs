//! A loopback WebSocket server for the driver load program (`tether-bench-driver`): just
//! enough of Kaiku's protocol for a client to get live, then a pre-encoded stream of frames
//! as fast as the client reads them.
//!
//! It runs on its own OS thread with a single-threaded tokio runtime, so its work is not
//! scheduled on the client's runtime workers (it still shares the machine's cores). It speaks:
//!
//! - the upgrade: selects the `access_token` subprotocol when it is offered (the token itself
//!   is not checked), then sends `{"type":"ready",...}`;
//! - `subscribe` → `subscribed`, and after the first `subscribe` on a connection, the stream
//!   (every frame once, in order, flushed when tungstenite's write buffer fills);
//! - `ping` → `pong`, and `bench_ping` → `bench_pong` (an app-level echo that a tether client
//!   sees as an `Event::Server`, since the core keeps `pong` to itself);
//! - REST: any `GET /api/...` gets `200 []` (an empty history page, for the core's anchor
//!   probe after `subscribed`), one request per connection.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Frames fed to the socket between checks for replies (pongs) owed to the client.
const BATCH: usize = 64;

/// The `type` (and channel) of a client frame.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    ty: &'a str,
    #[serde(borrow)]
    channel_id: Option<&'a str>,
}

/// What the reader half of a connection asks its writer half to do.
enum Reply {
    Frame(Message),
    StartStream,
}

/// A running bench server; stopped when dropped.
#[derive(Debug)]
pub struct BenchServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BenchServer {
    /// Starts a server on `127.0.0.1` (an ephemeral port) in its own thread; every connection
    /// that subscribes is sent `stream` once. Panics if loopback cannot be bound (a broken
    /// machine, not an input).
    pub fn start(stream: Vec<Bytes>) -> Self {
        let stream: Arc<[Utf8Bytes]> = stream
            .into_iter()
            .map(|b| Utf8Bytes::try_from(b).expect("bench frames are UTF-8"))
            .collect();
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        std_listener
            .set_nonblocking(true)
            .expect("set the listener non-blocking");
        let addr = std_listener
            .local_addr()
            .expect("a bound listener has an address");
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build the server runtime");
                rt.block_on(async move {
                    let listener =
                        TcpListener::from_std(std_listener).expect("register the listener");
                    tokio::select! {
                        () = accept_loop(listener, stream) => {}
                        _ = stopped => {}
                    }
                });
            })
            .expect("spawn the server thread");
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The HTTP base URL to configure a client with (`ws://.../ws` for the socket).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket URL, for clients that take it directly.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, stream: Arc<[Utf8Bytes]>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let stream = stream.clone();
        tokio::spawn(async move {
            // A client that goes away mid-stream is normal at the end of a run.
            let _ = serve(tcp, stream).await;
        });
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn serve(mut tcp: TcpStream, stream: Arc<[Utf8Bytes]>) -> Result<(), BoxError> {
    tcp.set_nodelay(true)?;
    if is_rest(&tcp).await? {
        return rest(&mut tcp).await;
    }
    let ws = tokio_tungstenite::accept_hdr_async(tcp, select_protocol).await?;
    let (mut sink, mut source) = ws.split();
    let (replies, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let Ok(head) = serde_json::from_str::<Head<'_>>(text.as_str()) else {
                continue;
            };
            let reply = match head.ty {
                "ping" => Some(r#"{"type":"pong"}"#.to_owned()),
                "bench_ping" => Some(r#"{"type":"bench_pong"}"#.to_owned()),
                "subscribe" | "unsubscribe" => head
                    .channel_id
                    .map(|c| format!(r#"{{"type":"{}d","channel_id":"{c}"}}"#, head.ty)),
                _ => None,
            };
            if let Some(r) = reply
                && replies.send(Reply::Frame(Message::text(r))).is_err()
            {
                return;
            }
            if head.ty == "subscribe" && replies.send(Reply::StartStream).is_err() {
                return;
            }
        }
    });

    let ready = format!(r#"{{"type":"ready","user_id":"{}"}}"#, crate::mix::USER);
    sink.send(Message::text(ready)).await?;
    let mut streaming = false;
    let mut next = 0;
    loop {
        // Replies owed to the client go first, then a batch of the stream.
        loop {
            match rx.try_recv() {
                Ok(Reply::Frame(m)) => sink.feed(m).await?,
                Ok(Reply::StartStream) => streaming = true,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return Ok(()),
            }
        }
        if streaming && next < stream.len() {
            let end = (next + BATCH).min(stream.len());
            for frame in &stream[next..end] {
                sink.feed(Message::Text(frame.clone())).await?;
            }
            next = end;
            continue;
        }
        sink.flush().await?;
        match rx.recv().await {
            Some(Reply::Frame(m)) => sink.feed(m).await?,
            Some(Reply::StartStream) => streaming = true,
            None => return Ok(()),
        }
    }
}

/// Selects `access_token` when the client offers it, as Kaiku does.
#[allow(clippy::result_large_err)] // the signature of tungstenite's handshake `Callback`
fn select_protocol(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let offered = req
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if offered.split(',').any(|p| p.trim() == "access_token") {
        resp.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("access_token"),
        );
    }
    Ok(resp)
}

/// Whether the request on `tcp` is a REST call (`GET /api/...`) rather than an upgrade.
async fn is_rest(tcp: &TcpStream) -> std::io::Result<bool> {
    const PREFIX: &[u8] = b"GET /api/";
    let mut head = [0u8; PREFIX.len()];
    loop {
        let n = tcp.peek(&mut head).await?;
        if n == 0 || n == head.len() || head[..n] != PREFIX[..n] {
            return Ok(n == head.len() && head == PREFIX);
        }
        // A request line split across segments: wait for the rest.
        tokio::task::yield_now().await;
    }
}

/// Answers one REST request with an empty JSON array, then closes.
async fn rest(tcp: &mut TcpStream) -> Result<(), BoxError> {
    let mut request = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await?;
        if n == 0 || request.len() > 64 * 1024 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    tcp.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n[]",
    )
    .await?;
    tcp.shutdown().await?;
    Ok(())
}
