//! Outbound events: per-event policy, the bounded offline queue and client-side rate limits.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::wire::ClientEvent;

/// What happens to an event sent while the link is down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Meaningless later (typing, ping, voice signalling): refused when not connected.
    Volatile,
    /// Last-value state (status, activity, custom status, voice membership and mute): folded
    /// into the session and replayed after every `ready`.
    State,
    /// Everything else: queued (FIFO, bounded, with a max age) and sent after `ready`.
    Queued,
}

impl Policy {
    /// The policy of an event.
    pub fn of(event: &ClientEvent) -> Self {
        match event {
            ClientEvent::Ping
            | ClientEvent::Typing { .. }
            | ClientEvent::StopTyping { .. }
            | ClientEvent::VoiceAnswer { .. }
            | ClientEvent::VoiceIceCandidate { .. } => Self::Volatile,
            ClientEvent::SetStatus { .. }
            | ClientEvent::SetActivity { .. }
            | ClientEvent::SetCustomStatus { .. }
            | ClientEvent::VoiceJoin { .. }
            | ClientEvent::VoiceLeave { .. }
            | ClientEvent::VoiceMute { .. }
            | ClientEvent::VoiceUnmute { .. } => Self::State,
            _ => Self::Queued,
        }
    }
}

/// Offline queue settings.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueConfig {
    /// Most events held while offline. Default 256.
    pub capacity: usize,
    /// An event older than this when the link comes back is not sent. Default 60 s.
    pub max_age: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: 256,
            max_age: Duration::from_secs(60),
        }
    }
}

/// FIFO of queued events waiting for a connection. Bounded; a full queue refuses and hands
/// the event back.
#[derive(Clone, Debug)]
pub struct OutboundQueue {
    config: QueueConfig,
    items: VecDeque<(Instant, ClientEvent)>,
}

impl OutboundQueue {
    /// An empty queue.
    pub fn new(config: QueueConfig) -> Self {
        Self {
            config,
            items: VecDeque::new(),
        }
    }

    /// Queues an event, or hands it back when the queue is full.
    pub fn push(&mut self, now: Instant, event: ClientEvent) -> Result<(), ClientEvent> {
        if self.items.len() >= self.config.capacity {
            return Err(event);
        }
        self.items.push_back((now, event));
        Ok(())
    }

    /// Removes and returns every event that outlived `max_age`, oldest first.
    pub fn expire(&mut self, now: Instant) -> Vec<ClientEvent> {
        let mut out = Vec::new();
        while let Some((at, _)) = self.items.front() {
            if now.saturating_duration_since(*at) < self.config.max_age {
                break;
            }
            if let Some((_, e)) = self.items.pop_front() {
                out.push(e);
            }
        }
        out
    }

    /// Takes every remaining event, oldest first (call [`expire`](Self::expire) first).
    pub fn drain(&mut self) -> impl Iterator<Item = ClientEvent> + '_ {
        self.items.drain(..).map(|(_, e)| e)
    }

    /// When the oldest event expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.items.front().map(|(at, _)| *at + self.config.max_age)
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The bound.
    pub fn capacity(&self) -> usize {
        self.config.capacity
    }
}

/// Client-side rate limits, mirroring the server's.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitConfig {
    /// At most one `voice_join` per this. Default 1 s.
    pub voice_join: Duration,
    /// At most one `set_activity` per this. Default 10 s.
    pub activity: Duration,
    /// At most one `set_custom_status` per this. Default 10 s.
    pub custom_status: Duration,
    /// At most one `typing` per channel per this. Default 3 s.
    pub typing: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            voice_join: Duration::from_secs(1),
            activity: Duration::from_secs(10),
            custom_status: Duration::from_secs(10),
            typing: Duration::from_secs(3),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum LimitKey {
    VoiceJoin,
    Activity,
    CustomStatus,
    Typing(String),
}

#[derive(Clone, Debug)]
struct Window {
    last: Instant,
    len: Duration,
    pending: Option<ClientEvent>,
}

/// Rate limits with coalescing: inside a window the latest event waits for the window to
/// end, replacing any older one still waiting. Nothing is lost, excess is folded.
///
/// Verbs: [`offer`](Self::offer), [`handle_timeout`](Self::handle_timeout),
/// [`cancel_typing`](Self::cancel_typing), [`handle_disconnect`](Self::handle_disconnect),
/// [`poll_timeout`](Self::poll_timeout).
#[derive(Clone, Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    windows: BTreeMap<LimitKey, Window>,
}

impl RateLimiter {
    /// No event sent yet.
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            windows: BTreeMap::new(),
        }
    }

    /// Rate windows remembered (idle ones are pruned, so this stays small).
    pub fn windows(&self) -> usize {
        self.windows.len()
    }

    fn key(&self, event: &ClientEvent) -> Option<(LimitKey, Duration)> {
        let c = &self.config;
        Some(match event {
            ClientEvent::VoiceJoin { .. } => (LimitKey::VoiceJoin, c.voice_join),
            ClientEvent::SetActivity { .. } => (LimitKey::Activity, c.activity),
            ClientEvent::SetCustomStatus { .. } => (LimitKey::CustomStatus, c.custom_status),
            ClientEvent::Typing { channel_id } => (LimitKey::Typing(channel_id.clone()), c.typing),
            _ => return None,
        })
    }

    /// Returns the event when it may go out now; otherwise keeps it as the window's pending
    /// value (replacing an older one) and returns `None`.
    pub fn offer(&mut self, now: Instant, event: ClientEvent) -> Option<ClientEvent> {
        let Some((key, len)) = self.key(&event) else {
            return Some(event);
        };
        // Forget windows that ended with nothing pending, so typing in many channels does not
        // grow this map without bound.
        self.windows
            .retain(|_, w| w.pending.is_some() || now < w.last + w.len);
        match self.windows.get_mut(&key) {
            Some(w) if now < w.last + w.len => {
                w.pending = Some(event);
                None
            }
            _ => {
                self.windows.insert(
                    key,
                    Window {
                        last: now,
                        len,
                        pending: None,
                    },
                );
                Some(event)
            }
        }
    }

    /// Releases pending events whose window has ended; the caller sends them.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<ClientEvent> {
        let mut out = Vec::new();
        for w in self.windows.values_mut() {
            if now >= w.last + w.len
                && let Some(e) = w.pending.take()
            {
                w.last = now;
                out.push(e);
            }
        }
        out
    }

    /// Whether a `voice_join` waits for its window. Mute changes must follow it, not pass it.
    pub fn is_voice_join_pending(&self) -> bool {
        self.windows
            .get(&LimitKey::VoiceJoin)
            .is_some_and(|w| w.pending.is_some())
    }

    /// `voice_leave` cancels a `voice_join` still waiting for its window.
    pub fn cancel_voice_join(&mut self) {
        if let Some(w) = self.windows.get_mut(&LimitKey::VoiceJoin) {
            w.pending = None;
        }
    }

    /// `stop_typing` cancels a typing indicator still waiting for its window.
    pub fn cancel_typing(&mut self, channel_id: &str) {
        if let Some(w) = self
            .windows
            .get_mut(&LimitKey::Typing(channel_id.to_owned()))
        {
            w.pending = None;
        }
    }

    /// The link is gone. Pending state events are dropped here because the session replays
    /// their latest value; pending typing indicators are returned (volatile, refused).
    pub fn handle_disconnect(&mut self) -> Vec<ClientEvent> {
        let mut dropped = Vec::new();
        for (key, w) in &mut self.windows {
            if let Some(e) = w.pending.take()
                && matches!(key, LimitKey::Typing(_))
            {
                dropped.push(e);
            }
        }
        dropped
    }

    /// When the next pending event may go out.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.windows
            .values()
            .filter(|w| w.pending.is_some())
            .map(|w| w.last + w.len)
            .min()
    }
}
