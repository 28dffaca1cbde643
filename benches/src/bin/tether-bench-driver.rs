//! Load program for the tokio driver (issue #6): how many events per second reach the app,
//! and the app-level round trip, through `tether-tokio` against a bare tokio-tungstenite
//! read loop and the ezsockets client. Method and figures: `docs/benchmarks.md`.
//!
//! ```text
//! cargo run --release -p tether-bench --bin tether-bench-driver -- [--events N] [--samples N] [--runs N] [--quick]
//! ```
//!
//! Prints a table and one JSON line. Exits non-zero only on a functional failure (an event
//! missing, a frame that does not decode, a stall), never because of a speed figure.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::future::Future;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tether_bench::mix::{self, Strict};
use tether_bench::server::BenchServer;
use tether_core::{ClientEvent, Credentials, CustomEvent, Event};
use tether_tokio::{Client, ClientConfig, Events};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// The bench server does not check tokens; any text will do.
const TOKEN: &str = "bench.token.unchecked";
/// The app-level echo the latency test sends through the driver (the server answers
/// `bench_pong`, which the core forwards like any unknown event type).
const BENCH_PING: &str = r#"{"type":"bench_ping"}"#;
/// Event types the delivery queue may coalesce when the app lags (`core/src/delivery.rs`).
const COALESCABLE: [&str; 3] = ["typing_start", "typing_stop", "presence_update"];

/// Driver load program: throughput and latency of tether-tokio vs bare tokio-tungstenite
/// and ezsockets.
#[derive(Debug, Parser)]
struct Args {
    /// Events streamed per throughput run (rounded up to whole rounds of the 16-event mix).
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Latency samples per client and run, taken after a warm-up of a tenth as many.
    #[arg(long, default_value_t = 20_000)]
    samples: usize,
    /// Repetitions of every measurement (clients interleaved); medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// A smoke run for CI: 16k events, 2k samples, one run.
    #[arg(long)]
    quick: bool,
    /// The client side's tokio runtime: `multi` (the default multi-threaded one, a worker per
    /// core, as an app runs) or `current` (one thread for the app and the client's tasks).
    #[arg(long, value_enum, default_value_t = Runtime::Multi)]
    runtime: Runtime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Runtime {
    Multi,
    Current,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.quick {
        args.events = 16_000;
        args.samples = 2_000;
        args.runs = 1;
    }
    args.runs = args.runs.max(1);
    args.samples = args.samples.max(1);
    // The client side: tokio's default multi-threaded runtime (one worker per core), as an app
    // would run. The server has its own thread and runtime (see `tether_bench::server`).
    let rt = match args.runtime {
        Runtime::Multi => tokio::runtime::Builder::new_multi_thread(),
        Runtime::Current => tokio::runtime::Builder::new_current_thread(),
    }
    .enable_all()
    .build()
    .expect("build the client runtime");
    // The app side runs as a task on the runtime's workers too (not on the main thread that
    // `block_on` borrows), so every client runs on the same worker threads.
    let result = rt.block_on(async move {
        tokio::spawn(async move { run(&args).await })
            .await
            .unwrap_or_else(|e| Err(format!("the bench task failed: {e}")))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether-bench-driver: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The frames streamed by the server and what the app must see of them.
struct Workload {
    frames: Vec<Bytes>,
    /// Frames sent, by `type`.
    expected: BTreeMap<String, usize>,
    rounds: usize,
}

impl Workload {
    /// `rounds` of the realistic mix without its `pong`: a pong answers the client's ping and
    /// is kept by the core (never forwarded), so unsolicited ones would not be app events.
    fn new(events: usize) -> Self {
        let per_round = mix::mix(0).len() - 1;
        let rounds = events.div_ceil(per_round).max(1);
        let frames: Vec<Bytes> = mix::frames(rounds)
            .into_iter()
            .filter(|f| type_of(f) != Some("pong"))
            .collect();
        let mut expected = BTreeMap::new();
        for f in &frames {
            let ty = type_of(f).expect("the mix is JSON with a type");
            *expected.entry(ty.to_owned()).or_insert(0) += 1;
        }
        // The tether client stops at the last round's `message_delete`: it must close the stream.
        assert_eq!(
            frames.last().and_then(|f| type_of(f)),
            Some("message_delete"),
            "the mix must end with a message_delete"
        );
        Self {
            frames,
            expected,
            rounds,
        }
    }

    fn len(&self) -> usize {
        self.frames.len()
    }

    fn avg_bytes(&self) -> f64 {
        self.frames.iter().map(Bytes::len).sum::<usize>() as f64 / self.len() as f64
    }

    /// Every frame sent reached the app, or (typing and presence only) was coalesced by the
    /// delivery queue, one for one.
    fn check(
        &self,
        who: &str,
        got: &BTreeMap<String, usize>,
        coalesced: u64,
    ) -> Result<(), String> {
        let mut missing = 0;
        for (ty, &want) in &self.expected {
            let have = got.get(ty).copied().unwrap_or(0);
            if have > want {
                return Err(format!(
                    "{who}: {have} `{ty}` events delivered, {want} sent"
                ));
            }
            if have < want && !COALESCABLE.contains(&ty.as_str()) {
                return Err(format!(
                    "{who}: only {have} of {want} `{ty}` events delivered"
                ));
            }
            missing += want - have;
        }
        if let Some(ty) = got.keys().find(|t| !self.expected.contains_key(*t)) {
            return Err(format!("{who}: delivered `{ty}`, which was never sent"));
        }
        if missing as u64 != coalesced {
            return Err(format!(
                "{who}: {missing} events missing but {coalesced} reported coalesced"
            ));
        }
        Ok(())
    }
}

fn type_of(frame: &[u8]) -> Option<&str> {
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(rename = "type", borrow)]
        ty: &'a str,
    }
    serde_json::from_slice::<Head<'_>>(frame).ok().map(|h| h.ty)
}

fn strict_type(event: &Strict) -> &'static str {
    match event {
        Strict::Ready { .. } => "ready",
        Strict::Pong => "pong",
        Strict::Subscribed { .. } => "subscribed",
        Strict::MessageNew { .. } => "message_new",
        Strict::MessageEdit { .. } => "message_edit",
        Strict::MessageDelete { .. } => "message_delete",
        Strict::TypingStart { .. } => "typing_start",
        Strict::TypingStop { .. } => "typing_stop",
        Strict::PresenceUpdate { .. } => "presence_update",
        Strict::ReactionAdd { .. } => "reaction_add",
        Strict::ReactionRemove { .. } => "reaction_remove",
        Strict::VoiceUserJoined { .. } => "voice_user_joined",
        Strict::VoiceUserLeft { .. } => "voice_user_left",
        Strict::VoiceUserMuted { .. } => "voice_user_muted",
        Strict::VoiceIceCandidate { .. } => "voice_ice_candidate",
        Strict::ChannelRead { .. } => "channel_read",
        Strict::CustomStatusUpdate { .. } => "custom_status_update",
    }
}

/// Counts one event of type `ty`; returns the count so far. Every client pays the same.
fn count(got: &mut BTreeMap<String, usize>, ty: &str) -> usize {
    if let Some(c) = got.get_mut(ty) {
        *c += 1;
        *c
    } else {
        got.insert(ty.to_owned(), 1);
        1
    }
}

/// When the first and the latest streamed event reached the app.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Span {
    fn mark(&mut self) {
        let now = Instant::now();
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// Events per second between the first and the last of `n` events (the first one's
    /// arrival starts the clock, so connection setup is not counted).
    fn rate(&self, n: usize) -> f64 {
        match (self.first, self.last) {
            (Some(a), Some(b)) if b > a && n > 1 => (n - 1) as f64 / (b - a).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// One throughput run of one client.
#[derive(Clone, Copy, Debug)]
struct Rate {
    per_sec: f64,
    delivered: usize,
    coalesced: u64,
}

/// Fails a measurement that makes no progress (a lost event would otherwise hang it).
async fn guard<T>(
    what: &str,
    limit: Duration,
    f: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| format!("{what}: not done after {limit:?} (events lost?)"))?
}

fn subscribe_frame() -> String {
    format!(r#"{{"type":"subscribe","channel_id":"{}"}}"#, mix::CH)
}

fn protocols() -> String {
    format!("access_token.{TOKEN}, access_token")
}

// ----- tether ----------------------------------------------------------------------------

/// A tether client on the default transport (tokio-tungstenite), or with `yawc` on the
/// deflate transport (D67): it offers permessage-deflate, which this server leaves
/// unanswered, so the frames are the same and only the socket library differs.
async fn tether_client(server: &BenchServer, yawc: bool) -> Result<(Client, Events), String> {
    let mut config = ClientConfig::new(&server.url()).map_err(|e| format!("tether config: {e}"))?;
    if yawc {
        config.core.deflate = Some(tether_core::wire::DeflateOffer::default());
    }
    Client::spawn(config, Credentials::new(TOKEN)).map_err(|e| format!("tether spawn: {e}"))
}

async fn tether_throughput(server: &BenchServer, w: &Workload, yawc: bool) -> Result<Rate, String> {
    let (client, mut events) = tether_client(server, yawc).await?;
    client
        .subscribe(mix::CH)
        .await
        .map_err(|e| format!("tether subscribe: {e}"))?;
    client
        .connect()
        .map_err(|e| format!("tether connect: {e}"))?;
    let mut got = BTreeMap::new();
    let mut span = Span::default();
    let mut delivered = 0;
    loop {
        let Some(event) = events.recv().await else {
            return Err(format!(
                "tether: the event stream ended after {delivered} events"
            ));
        };
        let Event::Server(e) = event else {
            continue; // status changes
        };
        let ty = e.event_type().as_str();
        if ty == "ready" || ty == "subscribed" {
            continue;
        }
        span.mark();
        delivered += 1;
        if count(&mut got, ty) == w.rounds && ty == "message_delete" {
            break;
        }
    }
    let coalesced = events.coalesced();
    client.close().await;
    w.check("tether", &got, coalesced)?;
    Ok(Rate {
        per_sec: span.rate(delivered),
        delivered,
        coalesced,
    })
}

async fn tether_latency(
    server: &BenchServer,
    warmup: usize,
    samples: usize,
    yawc: bool,
) -> Result<Vec<Duration>, String> {
    let (client, mut events) = tether_client(server, yawc).await?;
    client
        .connect()
        .map_err(|e| format!("tether connect: {e}"))?;
    // Live once `ready` is forwarded (after the core's own replay).
    tether_wait_for(&mut events, "ready").await?;
    let mut out = Vec::with_capacity(samples);
    for i in 0..warmup + samples {
        let start = Instant::now();
        let ping = CustomEvent::new(BENCH_PING).map_err(|e| format!("custom event: {e}"))?;
        client
            .send(ClientEvent::Custom(ping))
            .await
            .map_err(|e| format!("tether send: {e}"))?;
        tether_wait_for(&mut events, "bench_pong").await?;
        if i >= warmup {
            out.push(start.elapsed());
        }
    }
    client.close().await;
    Ok(out)
}

async fn tether_wait_for(events: &mut Events, ty: &str) -> Result<(), String> {
    loop {
        match events.recv().await {
            Some(Event::Server(e)) if e.event_type().as_str() == ty => return Ok(()),
            Some(_) => {}
            None => return Err(format!("tether: the event stream ended waiting for {ty}")),
        }
    }
}

// ----- bare tokio-tungstenite --------------------------------------------------------------

type BareWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects as tether does (same subprotocols, Nagle off) and reads `ready`.
async fn bare_connect(server: &BenchServer) -> Result<BareWs, String> {
    let mut request = server
        .ws_url()
        .into_client_request()
        .map_err(|e| format!("bare request: {e}"))?;
    let value = HeaderValue::from_str(&protocols()).map_err(|e| format!("bare header: {e}"))?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", value);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
        .await
        .map_err(|e| format!("bare connect: {e}"))?;
    match bare_next(&mut ws).await? {
        Strict::Ready { .. } => Ok(ws),
        other => Err(format!("bare: expected ready, got {}", strict_type(&other))),
    }
}

/// The next text frame, decoded the original client's way.
async fn bare_next(ws: &mut BareWs) -> Result<Strict, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_slice::<Strict>(text.as_bytes())
                    .map_err(|e| format!("bare: undecodable frame: {e}"));
            }
            Some(Ok(Message::Close(_))) | None => return Err("bare: socket closed".into()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("bare: read failed: {e}")),
        }
    }
}

async fn bare_throughput(server: &BenchServer, w: &Workload) -> Result<Rate, String> {
    let mut ws = bare_connect(server).await?;
    ws.send(Message::text(subscribe_frame()))
        .await
        .map_err(|e| format!("bare send: {e}"))?;
    loop {
        if let Strict::Subscribed { .. } = bare_next(&mut ws).await? {
            break;
        }
    }
    let mut got = BTreeMap::new();
    let mut span = Span::default();
    for _ in 0..w.len() {
        let event = bare_next(&mut ws).await?;
        span.mark();
        count(&mut got, strict_type(&event));
    }
    let _ = ws.close(None).await;
    w.check("bare", &got, 0)?;
    Ok(Rate {
        per_sec: span.rate(w.len()),
        delivered: w.len(),
        coalesced: 0,
    })
}

async fn bare_latency(
    server: &BenchServer,
    warmup: usize,
    samples: usize,
) -> Result<Vec<Duration>, String> {
    let mut ws = bare_connect(server).await?;
    let mut out = Vec::with_capacity(samples);
    for i in 0..warmup + samples {
        let start = Instant::now();
        ws.send(Message::text(r#"{"type":"ping"}"#))
            .await
            .map_err(|e| format!("bare send: {e}"))?;
        loop {
            if let Strict::Pong = bare_next(&mut ws).await? {
                break;
            }
        }
        if i >= warmup {
            out.push(start.elapsed());
        }
    }
    let _ = ws.close(None).await;
    Ok(out)
}

// ----- ezsockets ---------------------------------------------------------------------------

type EzResult = Result<(Span, BTreeMap<String, usize>), String>;

/// An ezsockets app: its `on_text` handler is where events reach the app; it decodes them
/// the original client's way, like the bare loop.
struct EzApp {
    handle: ezsockets::Client<EzApp>,
    live: bool,
    total: usize,
    delivered: usize,
    got: BTreeMap<String, usize>,
    span: Span,
    done: Option<oneshot::Sender<EzResult>>,
}

impl EzApp {
    fn finish(&mut self, result: EzResult) {
        if let Some(done) = self.done.take() {
            let _ = done.send(result);
        }
    }
}

#[async_trait::async_trait]
impl ezsockets::ClientExt for EzApp {
    type Call = ();

    async fn on_text(&mut self, text: ezsockets::Utf8Bytes) -> Result<(), ezsockets::Error> {
        let event = match serde_json::from_slice::<Strict>(text.as_bytes()) {
            Ok(e) => e,
            Err(e) => {
                self.finish(Err(format!("ezsockets: undecodable frame: {e}")));
                return Err(e.into());
            }
        };
        match event {
            Strict::Ready { .. } if !self.live => {
                self.handle.text(subscribe_frame())?;
            }
            Strict::Subscribed { .. } if !self.live => self.live = true,
            event => {
                self.span.mark();
                self.delivered += 1;
                count(&mut self.got, strict_type(&event));
                if self.delivered == self.total {
                    let got = std::mem::take(&mut self.got);
                    self.finish(Ok((self.span, got)));
                }
            }
        }
        Ok(())
    }

    async fn on_binary(&mut self, _bytes: ezsockets::Bytes) -> Result<(), ezsockets::Error> {
        Ok(())
    }

    async fn on_call(&mut self, (): ()) -> Result<(), ezsockets::Error> {
        Ok(())
    }

    // A bench run is one connection: no reconnecting.
    async fn on_close(
        &mut self,
        _frame: Option<ezsockets::CloseFrame>,
    ) -> Result<ezsockets::client::ClientCloseMode, ezsockets::Error> {
        self.finish(Err("ezsockets: closed by the server".into()));
        Ok(ezsockets::client::ClientCloseMode::Close)
    }

    async fn on_disconnect(
        &mut self,
    ) -> Result<ezsockets::client::ClientCloseMode, ezsockets::Error> {
        self.finish(Err("ezsockets: disconnected".into()));
        Ok(ezsockets::client::ClientCloseMode::Close)
    }
}

async fn ezsockets_throughput(server: &BenchServer, w: &Workload) -> Result<Rate, String> {
    let config = ezsockets::ClientConfig::new(server.ws_url().as_str())
        .header("Sec-WebSocket-Protocol", protocols().as_str())
        .max_initial_connect_attempts(1);
    let (done, finished) = oneshot::channel();
    let total = w.len();
    let (handle, future) = ezsockets::connect(
        move |handle| EzApp {
            handle,
            live: false,
            total,
            delivered: 0,
            got: BTreeMap::new(),
            span: Span::default(),
            done: Some(done),
        },
        config,
    )
    .await;
    let task = tokio::spawn(future);
    let result = finished.await;
    let _ = handle.close(None);
    task.abort();
    let (span, got) = result.map_err(|_| "ezsockets: the client ended early".to_owned())??;
    w.check("ezsockets", &got, 0)?;
    Ok(Rate {
        per_sec: span.rate(total),
        delivered: total,
        coalesced: 0,
    })
}

// ----- reporting -----------------------------------------------------------------------------

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn spread(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// p50 and p99 in microseconds.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q) as usize).min(samples.len() - 1);
        samples[i].as_secs_f64() * 1e6
    };
    (at(0.50), at(0.99))
}

fn fmt_rates(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{:>10.0}", v))
        .collect::<Vec<_>>()
        .join(" ")
}

fn fmt_ratios(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.2}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn fmt_us(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{:>8.1}", v))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn run(args: &Args) -> Result<(), String> {
    let w = Workload::new(args.events);
    let warmup = (args.samples / 10).max(100);
    let server = BenchServer::start(w.frames.clone());
    // Generous: a few seconds even at 10k events/s, plus setup.
    let tp_limit = Duration::from_secs(30) + Duration::from_micros(100 * w.len() as u64);
    let lat_limit = Duration::from_secs(30) + Duration::from_millis((warmup + args.samples) as u64);

    let (mut tether, mut bare, mut ez) = (Vec::new(), Vec::new(), Vec::new());
    let mut tether_yawc = Vec::new();
    let mut coalesced = Vec::new();
    let (mut t50, mut t99, mut b50, mut b99) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut y50, mut y99) = (Vec::new(), Vec::new());
    for run in 1..=args.runs {
        eprintln!("run {run}/{}: throughput", args.runs);
        let t = guard(
            "tether throughput",
            tp_limit,
            tether_throughput(&server, &w, false),
        )
        .await?;
        let y = guard(
            "tether (yawc) throughput",
            tp_limit,
            tether_throughput(&server, &w, true),
        )
        .await?;
        tether_yawc.push(y.per_sec);
        let b = guard("bare throughput", tp_limit, bare_throughput(&server, &w)).await?;
        let e = guard(
            "ezsockets throughput",
            tp_limit,
            ezsockets_throughput(&server, &w),
        )
        .await?;
        tether.push(t.per_sec);
        coalesced.push(t.coalesced);
        bare.push(b.per_sec);
        ez.push(e.per_sec);
        eprintln!(
            "  tether {:.0}/s ({} delivered, {} coalesced), tether over yawc {:.0}/s, bare {:.0}/s, ezsockets {:.0}/s ({} delivered)",
            t.per_sec, t.delivered, t.coalesced, y.per_sec, b.per_sec, e.per_sec, e.delivered
        );
        eprintln!("run {run}/{}: latency", args.runs);
        let (p50, p99) = percentiles(
            guard(
                "tether latency",
                lat_limit,
                tether_latency(&server, warmup, args.samples, false),
            )
            .await?,
        );
        t50.push(p50);
        t99.push(p99);
        let (p50, p99) = percentiles(
            guard(
                "tether (yawc) latency",
                lat_limit,
                tether_latency(&server, warmup, args.samples, true),
            )
            .await?,
        );
        y50.push(p50);
        y99.push(p99);
        let (p50, p99) = percentiles(
            guard(
                "bare latency",
                lat_limit,
                bare_latency(&server, warmup, args.samples),
            )
            .await?,
        );
        b50.push(p50);
        b99.push(p99);
    }
    drop(server);

    let (mt, mb, me) = (median(&tether), median(&bare), median(&ez));
    let over_bare = mt / mb;
    let over_ez = mt / me;
    let per_run = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x / y).collect::<Vec<_>>();
    let (m_t50, m_t99, m_b50, m_b99) = (median(&t50), median(&t99), median(&b50), median(&b99));
    let added_p50 = m_t50 - m_b50;
    let added_p99 = m_t99 - m_b99;

    println!(
        "tether-bench-driver: {} events/run ({} rounds of 16 types, {:.0} B avg), {} latency samples (+{} warm-up), {} run(s), {:?} client runtime",
        w.len(),
        w.rounds,
        w.avg_bytes(),
        args.samples,
        warmup,
        args.runs,
        args.runtime
    );
    println!("throughput, events/s reaching the app   runs: min..max, median");
    for (name, v) in [
        ("tether-tokio (Events::recv)", &tether),
        ("tether-tokio over yawc (deflate build)", &tether_yawc),
        ("bare tokio-tungstenite + Strict", &bare),
        ("ezsockets 0.7 + Strict", &ez),
    ] {
        let (lo, hi) = spread(v);
        println!(
            "  {name:<34} {}   {lo:.0}..{hi:.0}, median {:.0}",
            fmt_rates(v),
            median(v)
        );
    }
    println!("  tether coalesced (typing/presence): {:?}", coalesced);
    println!(
        "  tether / bare       {:.2}x (runs {})  budget >= 1.0x: {}",
        over_bare,
        fmt_ratios(&per_run(&tether, &bare)),
        if over_bare >= 1.0 { "met" } else { "MISSED" }
    );
    println!(
        "  tether / ezsockets  {:.2}x (runs {})  budget > 1.0x: {}",
        over_ez,
        fmt_ratios(&per_run(&tether, &ez)),
        if over_ez > 1.0 { "met" } else { "MISSED" }
    );
    println!("latency, app round trip in us          runs, median");
    println!("  tether p50  {}   median {m_t50:.1}", fmt_us(&t50));
    println!(
        "  yawc   p50  {}   median {:.1}",
        fmt_us(&y50),
        median(&y50)
    );
    println!("  bare   p50  {}   median {m_b50:.1}", fmt_us(&b50));
    println!("  tether p99  {}   median {m_t99:.1}", fmt_us(&t99));
    println!(
        "  yawc   p99  {}   median {:.1}",
        fmt_us(&y99),
        median(&y99)
    );
    println!("  bare   p99  {}   median {m_b99:.1}", fmt_us(&b99));
    println!(
        "  added by the driver: p50 {added_p50:.1} us (budget <= 10 us: {}), p99 {added_p99:.1} us",
        if added_p50 <= 10.0 { "met" } else { "MISSED" }
    );
    println!(
        "{}",
        json!({
            "bench": "tether-bench-driver",
            "events": w.len(),
            "rounds": w.rounds,
            "avg_bytes": w.avg_bytes(),
            "samples": args.samples,
            "warmup": warmup,
            "runs": args.runs,
            "runtime": format!("{:?}", args.runtime).to_lowercase(),
            "throughput_per_sec": {
                "tether": tether,
                "tether_yawc": tether_yawc,
                "bare": bare,
                "ezsockets": ez,
                "median": {"tether": mt, "tether_yawc": median(&tether_yawc), "bare": mb, "ezsockets": me},
            },
            "tether_coalesced": coalesced,
            "ratio": {
                "tether_over_bare": over_bare,
                "tether_over_ezsockets": over_ez,
                "budget_tether_over_bare_met": over_bare >= 1.0,
                "budget_tether_over_ezsockets_met": over_ez > 1.0,
            },
            "latency_us": {
                "tether": {"p50": t50, "p99": t99},
                "tether_yawc": {"p50": y50, "p99": y99},
                "bare": {"p50": b50, "p99": b99},
                "median": {"tether_p50": m_t50, "tether_p99": m_t99, "bare_p50": m_b50, "bare_p99": m_b99},
                "added_p50": added_p50,
                "added_p99": added_p99,
                "budget_added_p50_met": added_p50 <= 10.0,
            },
        })
    );
    Ok(())
}
