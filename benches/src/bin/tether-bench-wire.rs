//! Protocol v2's wire costs on the realistic mix (docs/benchmarks.md, "Protocol v2 on the
//! wire"): bytes per event for JSON, JSON + permessage-deflate, MessagePack and MessagePack +
//! deflate, the client's CPU per event to inflate, transcode and decode, and what a deflate
//! context costs in memory at each window size. permessage-deflate is modelled with zlib
//! exactly as RFC 7692 frames it (raw deflate, a sync flush per message, the trailing
//! `00 00 ff ff` removed), with and without context takeover.
//!
//! Then the same question end to end (`--live N`, default 300): the tether client against the
//! dev server through a loopback proxy that counts the bytes the server writes on `/ws`, for
//! each link the two negotiate, with `message_new` events of varied chat text posted one at a
//! time (so each leaves in a frame of its own, as in a quiet chat).
//!
//! Run: `cargo run --release -p tether-bench --bin tether-bench-wire` (`--rounds N`,
//! `--live N`; `--live 0` skips the live part).

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use clap::Parser;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tether_bench::alloc::{Counting, allocations};
use tether_bench::mix;
use tether_core::ServerEvent;
use tether_core::wire::{msgpack_to_json, to_msgpack};

#[global_allocator]
static A: Counting = Counting;

#[derive(Debug, Parser)]
#[command(about = "Protocol v2's bytes, CPU and memory per event on the realistic mix")]
struct Args {
    /// Rounds of the 17-event mix.
    #[arg(long, default_value_t = 500)]
    rounds: usize,
    /// Messages per link in the end-to-end measurement (0: skip it).
    #[arg(long, default_value_t = 300)]
    live: usize,
}

const MAX: usize = 256 * 1024;
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// A server-to-client WebSocket frame header for a payload of `len` bytes (unmasked).
fn header(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    }
}

/// Each message deflated as permessage-deflate sends it: the bytes of every frame.
fn deflated(messages: &[Vec<u8>], window_bits: u8, takeover: bool) -> Vec<Vec<u8>> {
    let mut z = Compress::new_with_window_bits(Compression::default(), false, window_bits);
    messages
        .iter()
        .map(|m| {
            if !takeover {
                z.reset();
            }
            let mut out = Vec::with_capacity(m.len() + 64);
            let before = z.total_in();
            while (z.total_in() - before) < m.len() as u64 || out.len() < 4 || !out.ends_with(&TAIL)
            {
                let read = (z.total_in() - before) as usize;
                out.reserve(256);
                if z.compress_vec(&m[read..], &mut out, FlushCompress::Sync)
                    .is_err()
                {
                    break;
                }
            }
            out.truncate(out.len().saturating_sub(4));
            out
        })
        .collect()
}

/// Inflates each frame back (with its context), as the client does; returns the messages.
fn inflated(frames: &[Vec<u8>], window_bits: u8, takeover: bool) -> Vec<Vec<u8>> {
    let mut z = Decompress::new_with_window_bits(false, window_bits);
    frames
        .iter()
        .map(|f| {
            if !takeover {
                z.reset(false);
            }
            let mut input = f.clone();
            input.extend_from_slice(&TAIL);
            let mut out = Vec::with_capacity(f.len() * 4 + 64);
            let before = z.total_in();
            loop {
                let read = (z.total_in() - before) as usize;
                if read >= input.len() {
                    break;
                }
                out.reserve(1024);
                let produced = out.len();
                if z.decompress_vec(&input[read..], &mut out, FlushDecompress::Sync)
                    .is_err()
                    || (out.len() == produced && (z.total_in() - before) as usize == read)
                {
                    break;
                }
            }
            out
        })
        .collect()
}

fn bytes_on_wire(frames: &[Vec<u8>]) -> f64 {
    let total: usize = frames.iter().map(|f| f.len() + header(f.len())).sum();
    total as f64 / frames.len() as f64
}

/// Nanoseconds per item of `f` over `items`, best of five.
fn ns_per<T>(items: &[T], mut f: impl FnMut(&T)) -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for item in items {
                f(item);
            }
            start.elapsed().as_nanos() as f64 / items.len() as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// Bytes allocated by `make` (what one context holds while it lives).
fn footprint<T>(make: impl FnOnce() -> T) -> (T, u64) {
    let (_, before) = allocations();
    let made = make();
    let (_, after) = allocations();
    (made, after - before)
}

fn main() {
    let args = Args::parse();
    let json: Vec<Vec<u8>> = (0..args.rounds)
        .flat_map(mix::mix)
        .map(String::into_bytes)
        .collect();
    let packed: Vec<Vec<u8>> = json
        .iter()
        .map(|j| to_msgpack(std::str::from_utf8(j).unwrap_or("null")).unwrap_or_default())
        .collect();
    let n = json.len();
    println!(
        "protocol v2 on the wire: {n} events of the realistic mix ({} rounds)",
        args.rounds
    );
    println!("\nbytes per event on the wire (payload + WebSocket header), server to client:");
    let plain_json = bytes_on_wire(&json);
    let plain_msgpack = bytes_on_wire(&packed);
    println!("  JSON                     {plain_json:7.1}");
    println!(
        "  MessagePack              {plain_msgpack:7.1}  ({:.2}x smaller than JSON)",
        plain_json / plain_msgpack
    );
    let mut report = Vec::new();
    for (name, messages) in [("JSON", &json), ("MessagePack", &packed)] {
        for bits in [15u8, 12, 10, 9] {
            for takeover in [true, false] {
                let frames = deflated(messages, bits, takeover);
                let back = inflated(&frames, bits, takeover);
                assert!(
                    back == *messages,
                    "deflate round trip failed ({name}, {bits} bits)"
                );
                let b = bytes_on_wire(&frames);
                println!(
                    "  {name:<11} + deflate {bits:>2} bits, {:<19} {b:7.1}  ({:.2}x smaller than JSON)",
                    if takeover {
                        "context takeover"
                    } else {
                        "no context takeover"
                    },
                    plain_json / b
                );
                report.push((name, bits, takeover, b));
            }
        }
    }

    println!("\nclient CPU per event (best of five, ns):");
    let json_bytes: Vec<Bytes> = json.iter().cloned().map(Bytes::from).collect();
    let decode = ns_per(&json_bytes, |b| {
        black_box(ServerEvent::decode(b.clone(), MAX).ok());
    });
    println!("  decode JSON (v1, v2 json)          {decode:8.0}");
    let transcode = ns_per(&packed, |p| {
        black_box(msgpack_to_json(p, MAX).ok());
    });
    println!("  transcode MessagePack to JSON      {transcode:8.0}");
    let frames = deflated(&json, 15, true);
    let inflate_json = {
        let start = Instant::now();
        black_box(inflated(&frames, 15, true));
        start.elapsed().as_nanos() as f64 / n as f64
    };
    println!("  inflate JSON (15 bits, takeover)   {inflate_json:8.0}");
    let frames = deflated(&packed, 15, true);
    let inflate_msgpack = {
        let start = Instant::now();
        black_box(inflated(&frames, 15, true));
        start.elapsed().as_nanos() as f64 / n as f64
    };
    println!("  inflate MessagePack (15, takeover) {inflate_msgpack:8.0}");
    println!(
        "  totals: JSON {decode:.0}; JSON + deflate {:.0}; MessagePack {:.0}; MessagePack + deflate {:.0}",
        decode + inflate_json,
        transcode + decode,
        transcode + decode + inflate_msgpack
    );

    println!("\nmemory one deflate context holds (bytes allocated when made and first used):");
    for bits in [15u8, 12, 10, 9] {
        let (mut inflater, at_make) = footprint(|| Decompress::new_with_window_bits(false, bits));
        let mut sink = Vec::with_capacity(4096);
        let (_, first_use) = footprint(|| {
            let _ = inflater.decompress_vec(&[0x02, 0x00], &mut sink, FlushDecompress::Sync);
        });
        let (deflater, deflater_bytes) =
            footprint(|| Compress::new_with_window_bits(Compression::default(), false, bits));
        drop(deflater);
        println!(
            "  {bits:>2} window bits: inflate {:>7} B, deflate {:>7} B",
            at_make + first_use,
            deflater_bytes
        );
    }
    let _ = report;

    println!(
        "\nframes the client writes at a reconnect with 50 channels (the replay after `ready`):"
    );
    for (name, selected) in [
        ("v1", "access_token"),
        ("v2 json", "kaiku.v2.json"),
        ("v2 msgpack", "kaiku.v2.msgpack"),
    ] {
        let (frames, bytes) = replay_frames(50, selected);
        println!("  {name:<10} {frames:>3} frames, {bytes:>5} bytes");
    }

    if args.live > 0 {
        let runtime = match tokio::runtime::Runtime::new() {
            Ok(r) => r,
            Err(e) => return eprintln!("no runtime for the live part: {e}"),
        };
        if let Err(e) = runtime.block_on(live::run(args.live)) {
            eprintln!("tether-bench-wire: the live part failed: {e}");
            std::process::exit(1);
        }
    }
}

/// The end-to-end part: real sockets, the real transports, the dev server's real events.
mod live {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use tether_core::wire::{DeflateOffer, Encoding};
    use tether_core::{Credentials, Event, ServerEventKind, Status};
    use tether_devserver::{DevServer, ServerConfig};
    use tether_tokio::{Client, ClientConfig, Events};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Chat lines the posts cycle through, with a counter, so the text varies as real chat
    /// does (the ids and timestamps of each event vary anyway).
    const LINES: [&str; 12] = [
        "morning! anyone looked at the build yet?",
        "yes, the flaky test is the pacing one again",
        "ok I'll take it after lunch",
        "can we move the sync to 3pm?",
        "sure, works for me",
        "pushed a fix, please have a look",
        "LGTM, merging",
        "the release notes need a line about the new flag",
        "I'm out tomorrow, back on Monday",
        "did the deploy go through?",
        "yes, all green",
        "nice work everyone",
    ];

    /// Forwards every connection to `target`; counts into `counter` what the server writes on
    /// connections that open with `GET /ws` (the REST reads are not the socket's bytes).
    async fn proxy(target: SocketAddr, counter: Arc<AtomicU64>) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut first = [0u8; 7];
                    let ws =
                        matches!(inbound.peek(&mut first).await, Ok(7)) && &first == b"GET /ws";
                    let (mut from_client, mut to_client) = inbound.into_split();
                    let (mut from_server, mut to_server) = outbound.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match from_server.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if ws {
                            counter.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        if to_client.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(addr)
    }

    async fn next(events: &mut Events) -> Result<Event, String> {
        match tokio::time::timeout(Duration::from_secs(20), events.recv()).await {
            Ok(Some(e)) => Ok(e),
            _ => Err("no event within 20 s".into()),
        }
    }

    /// Bytes the server wrote on `/ws` per `message_new`, and what the link was.
    async fn measure(
        messages: usize,
        v2: Vec<Encoding>,
        deflate: Option<DeflateOffer>,
    ) -> Result<(f64, String), String> {
        let server = DevServer::start(([127, 0, 0, 1], 0).into(), ServerConfig::default())
            .await
            .map_err(|e| e.to_string())?;
        let alice = server
            .create_user("alice", "password123")
            .ok_or("no alice")?;
        server.create_user("bob", "password123").ok_or("no bob")?;
        let ch = server.create_channel("general");
        let credentials = Credentials::from_token_response(alice.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
        let counter = Arc::new(AtomicU64::new(0));
        let via = proxy(server.addr(), counter.clone())
            .await
            .map_err(|e| e.to_string())?;
        let mut config = ClientConfig::new(&format!("http://{via}")).map_err(|e| e.to_string())?;
        config.core.v2 = v2;
        config.core.deflate = deflate;
        let (client, mut events) = Client::spawn(config, credentials).map_err(|e| e.to_string())?;
        client.subscribe(&ch).await.map_err(|e| e.to_string())?;
        client.connect().map_err(|e| e.to_string())?;
        let (mut link, mut subscribed) = (String::new(), false);
        while link.is_empty() || !subscribed {
            match next(&mut events).await? {
                Event::Status(Status::Connected {
                    protocol,
                    compression,
                }) => {
                    link = format!(
                        "v{} {:?}{}",
                        protocol.version,
                        protocol.encoding,
                        compression.map_or(String::new(), |d| format!(
                            " + deflate {} bits{}",
                            d.server_max_window_bits,
                            if d.server_no_context_takeover {
                                ", no takeover"
                            } else {
                                ""
                            }
                        ))
                    );
                }
                Event::Server(s) if matches!(s.kind(), ServerEventKind::Subscribed { .. }) => {
                    subscribed = true;
                }
                _ => {}
            }
        }
        counter.store(0, Ordering::Relaxed);
        for i in 0..messages {
            let text = format!("{} ({i})", LINES[i % LINES.len()]);
            server.post(&ch, "bob", &text).ok_or("post refused")?;
            loop {
                if let Event::Server(s) = next(&mut events).await?
                    && matches!(s.kind(), ServerEventKind::MessageNew { .. })
                {
                    break;
                }
            }
        }
        let bytes = counter.load(Ordering::Relaxed) as f64 / messages as f64;
        client.close().await;
        Ok((bytes, link))
    }

    pub(super) async fn run(messages: usize) -> Result<(), String> {
        println!(
            "
end to end: bytes the dev server writes on /ws per message_new ({messages} posts, one at a time):"
        );
        let deflate = Some(DeflateOffer::default());
        let mut small = DeflateOffer::default();
        small.server_max_window_bits = 10;
        let mut alone = DeflateOffer::default();
        alone.server_no_context_takeover = true;
        let mut plain = 0.0;
        for (name, v2, offer) in [
            ("v1 (Kaiku JSON)", Vec::new(), None),
            ("v2 json", vec![Encoding::Json], None),
            ("v2 msgpack", vec![Encoding::Msgpack], None),
            ("v2 json + deflate", vec![Encoding::Json], deflate),
            ("v2 msgpack + deflate", vec![Encoding::Msgpack], deflate),
            (
                "v2 json + deflate, 10 bits",
                vec![Encoding::Json],
                Some(small),
            ),
            (
                "v2 json + deflate, no takeover",
                vec![Encoding::Json],
                Some(alone),
            ),
        ] {
            let (bytes, link) = measure(messages, v2, offer).await?;
            if plain == 0.0 {
                plain = bytes;
            }
            println!(
                "  {name:<32} {bytes:7.1}  ({:.2}x smaller than v1)  [agreed: {link}]",
                plain / bytes
            );
        }
        Ok(())
    }
}

/// The frames (and their payload bytes) a connection writes after `ready` with `channels`
/// subscribed, when the 101 selected `selected`.
fn replay_frames(channels: usize, selected: &str) -> (usize, usize) {
    use tether_core::{Action, Config, Connection, Credentials};
    let start = Instant::now();
    let Ok(mut conn) = Config::new("http://127.0.0.1:1").and_then(Connection::new) else {
        return (0, 0);
    };
    conn.set_credentials(start, Credentials::new("token"));
    for i in 0..channels {
        let _ = conn.subscribe(start, &format!("00000000-0000-4000-8000-{i:012}"));
    }
    let _ = conn.connect(start);
    while conn.poll_action().is_some() {}
    conn.handle_open(start, Some(selected));
    let ready = r#"{"type":"ready","user_id":"u"}"#;
    if selected == "kaiku.v2.msgpack" {
        conn.handle_binary(start, Bytes::from(to_msgpack(ready).unwrap_or_default()));
    } else {
        conn.handle_frame(start, Bytes::from_static(ready.as_bytes()));
    }
    let (mut frames, mut bytes) = (0, 0);
    while let Some(action) = conn.poll_action() {
        match action {
            Action::Send(t) => (frames, bytes) = (frames + 1, bytes + t.len()),
            Action::SendBinary(b) => (frames, bytes) = (frames + 1, bytes + b.len()),
            _ => {}
        }
    }
    (frames, bytes)
}
