//! What the app's [`Client`](crate::Client) and the connection task say to each other: the
//! [`Command`]s the task takes, the [`Snapshot`] it answers with, and the [`Inbox`] of events
//! it fills for the app. Both sides import this; neither imports the other's internals.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tether_core::{
    ClientEvent, Credentials, DeliveryQueue, Event, InvalidChannel, ReadHeaders, SendError, Stats,
    wire::Protocol,
};
use tokio::sync::{Notify, oneshot};

/// What [`ClientConfig::on_refresh`](crate::ClientConfig::on_refresh) calls with each pair of tokens tether's own refresh
/// obtained.
pub type RefreshListener = Arc<dyn Fn(&Credentials) + Send + Sync>;

/// What a [`Client`] asks of the connection task, in the order it asked.
pub(crate) enum Command {
    Connect,
    Disconnect,
    Subscribe {
        channel_id: String,
        newest: Option<String>,
        reply: oneshot::Sender<Result<(), InvalidChannel>>,
    },
    Unsubscribe(String),
    Focus(String),
    /// The headers of a request the app made through [`Client::api`], in the history's
    /// budget.
    AppRequest(ReadHeaders),
    /// A message the app posted through [`Client::api`], sent at this instant of the
    /// driver's clock.
    AppPost {
        channel_id: String,
        message_id: String,
        sent: std::time::Instant,
    },
    Send(ClientEvent, oneshot::Sender<Result<(), SendError>>),
    SetCredentials(Credentials),
    Stats(oneshot::Sender<Snapshot>),
    Token(oneshot::Sender<Option<tether_core::Secret>>),
    NetworkChanged,
    /// Close and end the task; answered once the close frame has left (or after 1 s).
    Close(oneshot::Sender<()>),
}

/// What the connection reports when asked (`stats`, `protocol`).
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) stats: Stats,
    pub(crate) rtt: Option<Duration>,
    pub(crate) protocol: Protocol,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

/// Events for the app: a bounded, coalescing queue shared with the driver task. A plain mutex:
/// it is held only to push or pop, never across an await.
#[derive(Debug)]
pub(crate) struct Inbox {
    queue: std::sync::Mutex<DeliveryQueue>,
    /// Notified when the driver pushed events.
    pub(crate) readable: Notify,
    /// Notified when the app made room in a full queue.
    pub(crate) writable: Notify,
    /// Set once the driver has ended: nothing more will come.
    pub(crate) closed: AtomicBool,
}

impl Inbox {
    /// An empty queue that holds `capacity` events before the driver stops reading.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            queue: std::sync::Mutex::new(DeliveryQueue::new(capacity)),
            readable: Notify::new(),
            writable: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn queue(&self) -> std::sync::MutexGuard<'_, DeliveryQueue> {
        // Nothing panics while holding the lock; if something did, the queue is still whole.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The oldest event; wakes the driver when this makes room in a full queue.
    pub(crate) fn pop(&self) -> Option<Event> {
        let mut queue = self.queue();
        let was_full = queue.is_full();
        let event = queue.pop();
        drop(queue);
        if was_full && event.is_some() {
            self.writable.notify_one();
        }
        event
    }
}
