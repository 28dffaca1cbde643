//! The connection task: the one place that owns a [`Connection`], its socket and its one
//! timer, and carries out what the core asks.
//!
//! [`spawn`] starts it. Each turn of [`Driver::run`] drains the core (`tether_core::drain`),
//! then waits for one input: a [`Command`] from the app, a frame, the end of a connect, a REST
//! answer, a wake from sleep, or the deadline. The socket's writes go through a writer task
//! per socket ([`write_loop`]), so a slow peer never blocks the loop. Connecting is
//! `connect.rs`; turning failures into the core's inputs is `errors.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tether_core::{
    Action, Connection, Credentials, Event, HistoryError, HistoryRequest, OpenRequest, ReadHeaders,
    RefreshError, SocketEnd, Status, TransportError,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::api::{Api, ApiError, with_jwt_expiry};
use crate::clock::{Clock, Wake};
use crate::connect::connect;
use crate::errors::{history_error, refresh_error};
use crate::socket::{Inbound, Opened, Outbound, Reader, SocketSettings, Writer};
use crate::task::{Command, Inbox, RefreshListener, Snapshot};

/// What the task needs beyond the core: its REST client, its sockets' settings, and the
/// client's bounds and hooks (from `ClientConfig`, which this module does not see).
pub(crate) struct Settings {
    pub(crate) api: Api,
    pub(crate) socket: SocketSettings,
    pub(crate) event_capacity: usize,
    pub(crate) write_queue_capacity: usize,
    pub(crate) api_timeout: Duration,
    pub(crate) wake_watchdog: bool,
    pub(crate) on_refresh: Option<RefreshListener>,
}

/// Starts the task that owns `conn`: it takes `commands`, puts the app's events in the
/// returned inbox and publishes every status on the returned receiver.
pub(crate) fn spawn(
    conn: Connection,
    clock: Clock,
    settings: Settings,
    commands: mpsc::Receiver<Command>,
) -> (Arc<Inbox>, watch::Receiver<Status>) {
    let Settings {
        api,
        socket: socket_settings,
        event_capacity,
        write_queue_capacity,
        api_timeout,
        wake_watchdog,
        on_refresh,
    } = settings;
    let (status_tx, status) = watch::channel(Status::Disconnected);
    let inbox = Arc::new(Inbox::new(event_capacity));
    let (internal_tx, internal_rx) = mpsc::unbounded_channel();
    let driver = Driver {
        conn,
        clock,
        api,
        socket_settings,
        socket: None,
        connecting: None,
        generation: 0,
        write_queue_capacity: write_queue_capacity.max(1),
        internal_tx,
        internal_rx,
        rest: JoinSet::new(),
        inbox: inbox.clone(),
        status_tx,
        commands,
        paused: false,
        on_refresh,
        refresh_task: None,
        api_timeout,
        actions: Vec::new(),
        events: Vec::new(),
        wakes: if wake_watchdog {
            crate::clock::watch_wakes()
        } else {
            None
        },
    };
    tokio::spawn(driver.run());
    (inbox, status)
}

/// What the background work reports back to the driver task.
enum Internal {
    Connected(u64, Result<Opened, SocketEnd>),
    WriterFailed(u64),
    History(u64, Result<Bytes, HistoryError>, Option<ReadHeaders>),
    Refresh(Result<Credentials, RefreshError>),
}

/// The open socket: read by the task itself, written by its own writer task.
struct Socket {
    /// The connect it came from; reports of an older one are stale.
    generation: u64,
    reader: Reader,
    writer: mpsc::Sender<Outbound>,
    /// Aborted when the socket is dropped, so an abort really drops the TCP connection.
    writer_task: Option<tokio::task::JoinHandle<()>>,
    /// A Close frame went into the writer's queue: the core is closing this socket.
    closing: bool,
}

/// How long a socket the core let go of while its Close frame waited in the writer's queue
/// may take to write it (the core's own `close_timeout` bounds the wait for the reply).
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

impl Socket {
    /// Lets go of a socket whose Close frame is queued: the writer flushes what is left (the
    /// Close frame last) and ends, within [`CLOSE_FLUSH`], then the connection is dropped.
    /// Dropping it at once would abort the writer before the frame leaves, and the server
    /// would see a reset instead of a close (a `disconnect` followed at once by a `connect`
    /// with new credentials does exactly that).
    fn retire(self) {
        tokio::spawn(self.flush());
    }

    /// Closes the writer's queue (the reader goes with it) and waits, at most
    /// [`CLOSE_FLUSH`], until the writer has written what is left; then the connection drops.
    async fn flush(mut self) {
        let Some(task) = self.writer_task.take() else {
            return;
        };
        drop(self);
        let abort = task.abort_handle();
        if tokio::time::timeout(CLOSE_FLUSH, task).await.is_err() {
            abort.abort();
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        if let Some(t) = self.writer_task.take() {
            t.abort();
        }
    }
}

/// The connection task's state; [`run`](Driver::run) is the task.
struct Driver {
    conn: Connection,
    clock: Clock,
    api: Api,
    /// What every connect shares (limits, TLS roots).
    socket_settings: SocketSettings,
    socket: Option<Socket>,
    connecting: Option<tokio::task::JoinHandle<()>>,
    generation: u64,
    write_queue_capacity: usize,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    rest: JoinSet<()>,
    inbox: Arc<Inbox>,
    status_tx: watch::Sender<Status>,
    commands: mpsc::Receiver<Command>,
    /// Not reading the socket because the app is behind.
    paused: bool,
    /// The app's listener for rotated tokens (`ClientConfig::on_refresh`).
    on_refresh: Option<RefreshListener>,
    /// The refresh request on its way, if any (not in `rest`: a close waits for its answer).
    refresh_task: Option<tokio::task::JoinHandle<()>>,
    /// How long a REST answer may take (`ClientConfig::api_timeout`).
    api_timeout: Duration,
    /// The drain's buffers, kept between turns.
    actions: Vec<Action>,
    events: Vec<Event>,
    /// The process's wake watchdog (`ClientConfig::wake_watchdog`).
    wakes: Option<watch::Receiver<Wake>>,
}

/// Frames handled in one turn of the loop when more are already buffered (and the app's
/// queue has room for their events): one push into the app's queue and one wake-up for the
/// lot, instead of one each.
const FRAMES_PER_TURN: usize = 64;

impl Driver {
    async fn run(mut self) {
        let mut closed_reply = None;
        // One timer for the task's life, moved only when the core's deadline moves.
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed: Option<std::time::Instant> = None;
        loop {
            let deadline = self.drain();
            let full = self.inbox.queue().is_full();
            if full != self.paused {
                // Tell the core we stopped (or resumed) reading on purpose, so an app that
                // falls behind does not look like a dead link.
                self.paused = full;
                self.conn.handle_backpressure(self.clock.now(), full);
            }
            if deadline != armed {
                armed = deadline;
                if let Some(d) = deadline {
                    let wait = d.saturating_duration_since(self.clock.now());
                    sleep.as_mut().reset(tokio::time::Instant::now() + wait);
                }
            }
            // Backpressure applies to a live session only: the handshake (`ready`) must be read
            // even when the app is behind, or a stalled app would churn through retries.
            let reading = self.socket.is_some() && (!full || !self.conn.is_connected());
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Close(reply)) => {
                        closed_reply = Some(reply);
                        break;
                    }
                    Some(c) => self.command(c),
                    None => break,
                },
                internal = self.internal_rx.recv() => {
                    if let Some(i) = internal {
                        self.internal(i);
                    }
                }
                frame = next_frame(&mut self.socket), if reading => {
                    // Take what is already buffered too, then push into the app's queue once:
                    // while the events these frames made leave room in it. Events are counted,
                    // not frames: a v2 frame may batch up to `MAX_BATCH` (1,024) of them, so
                    // the queue passes its bound by at most the last frame's events.
                    let room = self.inbox.queue().room();
                    self.frame(frame);
                    for _ in 1..FRAMES_PER_TURN {
                        self.collect();
                        if self.events.len() >= room {
                            break;
                        }
                        let Some(frame) = next_frame(&mut self.socket).now_or_never() else {
                            break;
                        };
                        self.frame(frame);
                    }
                }
                // Reap finished REST tasks: a JoinSet keeps every finished task until joined.
                Some(_) = self.rest.join_next(), if !self.rest.is_empty() => {}
                () = self.inbox.writable.notified(), if full => {}
                Some(wake) = next_wake(&mut self.wakes) => {
                    if wake.lost >= self.conn.config().heartbeat.wake_threshold {
                        let lost_ms = wake.lost.as_millis() as u64;
                        tracing::debug!(lost_ms, "woke up: probing");
                        let now = self.clock.now();
                        // Deadlines that fell due in the sleep first (the tokio timer, on a
                        // clock that stopped, has not seen them), then the probe.
                        self.conn.handle_timeout(now);
                        self.socket_settings.road.reload();
                        self.conn.handle_network_change(now);
                        armed = None;
                    }
                }
                () = &mut sleep, if deadline.is_some() => {
                    armed = None; // fired: re-arm even if the core keeps the same deadline
                    let now = self.clock.now();
                    self.conn.handle_timeout(now);
                    // A timer (the heartbeat, at the latest) is the quiet moment to give back
                    // what a burst left in the buffers: thousands of idle clients add up.
                    self.release_memory();
                }
            }
        }
        self.shutdown().await;
        if let Some(reply) = closed_reply {
            let _ = reply.send(());
        }
    }

    /// Carries out every pending action (through the core's one drain contract) and hands
    /// the app its events; returns the next deadline.
    fn drain(&mut self) -> Option<std::time::Instant> {
        let deadline = self.collect();
        if !self.events.is_empty() {
            let mut queue = self.inbox.queue();
            for e in self.events.drain(..) {
                queue.push(e);
            }
            drop(queue);
            self.inbox.readable.notify_one();
        }
        deadline
    }

    /// Carries out every pending action, keeping the app's events in `self.events` (not yet
    /// in its queue); returns the next deadline.
    fn collect(&mut self) -> Option<std::time::Instant> {
        let mut actions = std::mem::take(&mut self.actions);
        let mut events = std::mem::take(&mut self.events);
        // Carrying out an action can be an input too (a full write queue drops the link):
        // drain until the core has nothing more to say.
        let mut deadline = tether_core::drain(&mut self.conn, |a| actions.push(a));
        while !actions.is_empty() {
            self.carry_out(&mut actions, &mut events);
            deadline = tether_core::drain(&mut self.conn, |a| actions.push(a));
        }
        self.actions = actions;
        self.events = events;
        deadline
    }

    /// Carries out `actions` (emptying it); app events go to `events`.
    fn carry_out(&mut self, actions: &mut Vec<Action>, events: &mut Vec<Event>) {
        for action in actions.drain(..) {
            match action {
                Action::Open(req) => self.open(req),
                Action::Send(text) => self.write(Outbound::Text(text)),
                Action::SendBinary(bytes) => self.write(Outbound::Binary(bytes)),
                Action::Close { code, reason } => {
                    self.write(Outbound::Close { code, reason });
                    if let Some(s) = &mut self.socket {
                        s.closing = true;
                    }
                }
                Action::Abort => {
                    if let Some(s) = self.socket.take()
                        && s.closing
                    {
                        s.retire();
                    }
                    if let Some(c) = self.connecting.take() {
                        c.abort();
                    }
                    // A connect that already finished may have its result queued: a new
                    // generation makes sure it is dropped, not installed as a socket the
                    // core has let go of.
                    self.generation += 1;
                }
                Action::FetchHistory(req) => self.fetch(req),
                Action::RefreshToken(req) => self.refresh(req.refresh_token),
                Action::Emit(event) => {
                    if let Event::Status(s) = &event {
                        tracing::debug!(status = s.name(), "status");
                        self.status_tx.send_replace(s.clone());
                    }
                    events.push(event);
                }
                _ => {}
            }
        }
    }

    /// Frees the drain buffers and the app's queue if a burst grew them and they are empty.
    fn release_memory(&mut self) {
        const KEEP: usize = 8;
        if self.actions.capacity() > KEEP {
            self.actions.shrink_to(KEEP);
        }
        if self.events.capacity() > KEEP {
            self.events.shrink_to(KEEP);
        }
        self.inbox.queue().release_memory();
    }

    fn command(&mut self, c: Command) {
        let now = self.clock.now();
        match c {
            Command::Connect => {
                // Credentials exist from `spawn`, so this cannot fail.
                let _ = self.conn.connect(now);
            }
            Command::Disconnect => self.conn.disconnect(now),
            Command::Subscribe {
                channel_id,
                newest,
                reply,
            } => {
                let r = match newest {
                    Some(n) => self.conn.subscribe_from(now, &channel_id, &n),
                    None => self.conn.subscribe(now, &channel_id),
                };
                let _ = reply.send(r);
            }
            Command::Unsubscribe(ch) => self.conn.unsubscribe(now, &ch),
            Command::Focus(ch) => self.conn.focus(now, &ch),
            Command::AppRequest(headers) => self.conn.handle_app_request(now, &headers),
            Command::AppPost {
                channel_id,
                message_id,
                sent,
            } => self
                .conn
                .handle_app_post(now, sent, &channel_id, &message_id),
            Command::Send(event, reply) => {
                let _ = reply.send(self.conn.send(now, event));
            }
            Command::SetCredentials(c) => self.conn.set_credentials(now, c),
            Command::Stats(reply) => {
                let _ = reply.send(Snapshot {
                    stats: self.conn.stats(),
                    rtt: self.conn.rtt(),
                    protocol: self.conn.protocol(),
                });
            }
            Command::Token(reply) => {
                let _ = reply.send(self.conn.access_token().cloned());
            }
            Command::NetworkChanged => {
                // Another network may have other system proxy settings.
                self.socket_settings.road.reload();
                self.conn.handle_network_change(now);
            }
            Command::Close(_) => {} // handled by the run loop
        }
    }

    fn open(&mut self, req: OpenRequest) {
        tracing::debug!(url = %req.redacted_url(), "opening socket");
        if let Some(s) = self.socket.take()
            && s.closing
        {
            s.retire();
        }
        if let Some(c) = self.connecting.take() {
            c.abort();
        }
        self.generation += 1;
        let generation = self.generation;
        let tx = self.internal_tx.clone();
        let settings = self.socket_settings.clone();
        self.connecting = Some(tokio::spawn(async move {
            let result = connect(req, settings).await;
            let _ = tx.send(Internal::Connected(generation, result));
        }));
    }

    fn write(&mut self, message: Outbound) {
        let Some(s) = &self.socket else {
            return;
        };
        match s.writer.try_send(message) {
            Ok(()) => {}
            // The writer task ended; it reports that itself.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The peer has not read `write_queue_capacity` frames: a dead link, not a
                // reason to queue without end.
                tracing::debug!("write queue full; dropping the link");
                self.socket = None;
                let now = self.clock.now();
                self.conn
                    .handle_closed(now, SocketEnd::Error(TransportError::Io));
            }
        }
    }

    fn fetch(&mut self, req: HistoryRequest) {
        let api = self.api.clone();
        let tx = self.internal_tx.clone();
        self.rest.spawn(async move {
            let (result, headers) = match &req.token {
                Some(token) => {
                    api.messages_raw_with_headers(
                        token,
                        req.channel_id.as_str(),
                        req.before.as_ref().map(|b| b.as_str()),
                        req.limit,
                    )
                    .await
                }
                None => (
                    Err(ApiError::Http {
                        status: 401,
                        code: String::new(),
                        message: String::new(),
                    }),
                    None,
                ),
            };
            let retry_after = headers.as_ref().and_then(|h| h.retry_after);
            let result = result.map_err(|e| history_error(e, retry_after));
            let _ = tx.send(Internal::History(req.id, result, headers));
        });
    }

    fn refresh(&mut self, token: tether_core::Secret) {
        let api = self.api.clone();
        let tx = self.internal_tx.clone();
        self.refresh_task = Some(tokio::spawn(async move {
            let result = api
                .refresh(&token)
                .await
                .map(|answer| {
                    // A server that does not rotate keeps the token that was sent: the pair
                    // the app is told of is always complete.
                    let answer = match answer.refresh_token {
                        Some(_) => answer,
                        None => answer.with_refresh_token(token),
                    };
                    with_jwt_expiry(answer)
                })
                .map_err(refresh_error);
            let _ = tx.send(Internal::Refresh(result));
        }));
    }

    fn internal(&mut self, i: Internal) {
        let now = self.clock.now();
        match i {
            Internal::Connected(generation, result) if generation == self.generation => {
                self.connecting = None;
                match result {
                    Ok(Opened {
                        reader,
                        writer: sink,
                        protocol,
                        extensions,
                        date,
                    }) => {
                        let (writer, rx) = mpsc::channel(self.write_queue_capacity);
                        let tx = self.internal_tx.clone();
                        let writer_task = tokio::spawn(write_loop(sink, rx, tx, generation));
                        self.socket = Some(Socket {
                            generation,
                            reader,
                            writer,
                            writer_task: Some(writer_task),
                            closing: false,
                        });
                        if let Err(why) = self.conn.handle_upgraded(
                            now,
                            protocol.as_deref(),
                            extensions.as_deref(),
                        ) {
                            tracing::warn!(error = %why, "refusing the server's extensions");
                        }
                        if let Some(date) = date {
                            // The server's clock: anchors for channels with no message yet.
                            self.conn.handle_server_date(now, date);
                        }
                    }
                    Err(why) => self.conn.handle_closed(now, why),
                }
            }
            Internal::Connected(..) => {} // a connect the core already gave up on
            Internal::WriterFailed(generation) => {
                if self
                    .socket
                    .as_ref()
                    .is_some_and(|s| s.generation == generation)
                {
                    self.socket = None;
                    self.conn
                        .handle_closed(now, SocketEnd::Error(TransportError::Io));
                }
            }
            Internal::History(id, result, headers) => {
                if let Some(h) = headers {
                    self.conn.handle_history_headers(now, id, &h);
                }
                self.conn.handle_history(now, id, result);
            }
            Internal::Refresh(result) => {
                // The app hears of the new pair before the core has it, so nothing (a next
                // refresh spending the new refresh token) can happen before it is stored. Only
                // for an answer the core will apply: one for a session the app has replaced
                // since would overwrite the app's newer pair (D80).
                if let (Ok(credentials), Some(listener)) = (&result, &self.on_refresh)
                    && self.conn.is_refresh_awaited()
                {
                    tell_refreshed(listener, credentials);
                }
                self.conn.handle_refresh(now, result);
            }
        }
    }

    fn frame(&mut self, frame: Option<Inbound>) {
        let now = self.clock.now();
        match frame {
            Some(Inbound::Text(text)) => self.conn.handle_frame(now, text),
            Some(Inbound::Binary(bytes)) => self.conn.handle_binary(now, bytes),
            Some(Inbound::Control) => self.conn.handle_activity(now),
            Some(Inbound::End(end)) => {
                self.socket = None;
                self.conn.handle_closed(now, end);
            }
            None => {
                self.socket = None;
                self.conn.handle_closed(
                    now,
                    SocketEnd::Closed {
                        code: None,
                        reason: String::new(),
                    },
                );
            }
        }
    }

    async fn shutdown(mut self) {
        // A handshake in progress would finish later and drop its socket without a close.
        if let Some(c) = self.connecting.take() {
            c.abort();
        }
        // A refresh on its way may have been carried out by the server already: its pair is
        // then the only valid one, and an app that keeps the refresh token must get it (D87).
        let hand_over = self
            .on_refresh
            .clone()
            .filter(|_| self.conn.is_refresh_awaited());
        let now = self.clock.now();
        self.conn.disconnect(now);
        let _ = self.drain();
        // Give the Close frame a moment to leave; the Kaiku server never answers it.
        if let Some(socket) = self.socket.take() {
            socket.flush().await;
        }
        self.rest.abort_all();
        match hand_over {
            Some(listener) => self.hand_over_refresh(listener).await,
            None => {
                if let Some(t) = self.refresh_task.take() {
                    t.abort();
                }
            }
        }
        self.inbox.closed.store(true, Ordering::Release);
        self.inbox.readable.notify_one();
    }

    /// At a close, waits (at most the REST timeout) for the answer of the refresh on its way
    /// and hands a new pair to the app's listener, before the close returns: an app that
    /// connects again at once must read the pair the server rotated to, not the one it spent.
    async fn hand_over_refresh(&mut self, listener: RefreshListener) {
        let wait = self.api_timeout + Duration::from_secs(1);
        let internal = &mut self.internal_rx;
        let answer = tokio::time::timeout(wait, async {
            while let Some(i) = internal.recv().await {
                if let Internal::Refresh(result) = i {
                    return Some(result);
                }
            }
            None
        })
        .await;
        match answer {
            Ok(Some(Ok(credentials))) => tell_refreshed(&listener, &credentials),
            Ok(Some(Err(_))) => tracing::debug!("the refresh on its way at close failed"),
            _ => tracing::warn!("no answer to the refresh on its way at close"),
        }
        if let Some(t) = self.refresh_task.take() {
            t.abort();
        }
    }
}

/// Hands `credentials` to the app's listener. A panic there must not end the connection task
/// (the app's event stream would never end): it is caught and logged, without the tokens.
fn tell_refreshed(listener: &RefreshListener, credentials: &Credentials) {
    let told = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| listener(credentials)));
    if told.is_err() {
        tracing::error!("the on_refresh listener panicked: the rotated tokens may not be stored");
    } else {
        tracing::debug!("refreshed credentials handed to the app");
    }
}

/// The next wake the watchdog saw; pending without a watchdog (or after it went away).
async fn next_wake(wakes: &mut Option<watch::Receiver<Wake>>) -> Option<Wake> {
    let Some(rx) = wakes.as_mut() else {
        return std::future::pending().await;
    };
    if rx.changed().await.is_ok() {
        return Some(*rx.borrow_and_update());
    }
    *wakes = None;
    None
}

async fn next_frame(socket: &mut Option<Socket>) -> Option<Inbound> {
    match socket {
        Some(s) => s.reader.next().await,
        None => std::future::pending().await,
    }
}

async fn write_loop(
    mut sink: Writer,
    mut rx: mpsc::Receiver<Outbound>,
    failed: mpsc::UnboundedSender<Internal>,
    generation: u64,
) {
    while let Some(message) = rx.recv().await {
        // Batch what is already queued into one flush.
        let mut result = sink.feed(message).await;
        while result.is_ok() {
            match rx.try_recv() {
                Ok(m) => result = sink.feed(m).await,
                Err(_) => break,
            }
        }
        if result.is_err() || sink.flush().await.is_err() {
            let _ = failed.send(Internal::WriterFailed(generation));
            return;
        }
    }
}
