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
            ClientEvent::Custom(c) => match c.event_type() {
                // Kaiku's admin subscription lives and dies with the socket: replayed.
                crate::session::ADMIN_SUBSCRIBE | crate::session::ADMIN_UNSUBSCRIBE => Self::State,
                // The rest of a voice session (its media, its statistics) means nothing to the
                // session a reconnect starts (`voice_reset`): never sent late.
                "voice_stats"
                | "voice_screen_share_start"
                | "voice_screen_share_stop"
                | "voice_webcam_start"
                | "voice_webcam_stop"
                | "voice_set_layer_preference" => Self::Volatile,
                _ => Self::Queued,
            },
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
pub(crate) struct OutboundQueue {
    config: QueueConfig,
    items: VecDeque<(Instant, ClientEvent)>,
}

impl OutboundQueue {
    /// An empty queue.
    pub(crate) fn new(config: QueueConfig) -> Self {
        Self {
            config,
            items: VecDeque::new(),
        }
    }

    /// Queues an event, or hands it back when the queue is full.
    pub(crate) fn push(&mut self, now: Instant, event: ClientEvent) -> Result<(), ClientEvent> {
        if self.items.len() >= self.config.capacity {
            return Err(event);
        }
        self.items.push_back((now, event));
        Ok(())
    }

    /// Removes and returns every event that outlived `max_age`, oldest first.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<ClientEvent> {
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
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = ClientEvent> + '_ {
        self.items.drain(..).map(|(_, e)| e)
    }

    /// When the oldest event expires.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.items.front().map(|(at, _)| *at + self.config.max_age)
    }

    /// Events waiting.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
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

/// What a rate window limits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum LimitKey {
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
/// [`cancel`](Self::cancel), [`handle_disconnect`](Self::handle_disconnect),
/// [`poll_timeout`](Self::poll_timeout).
#[derive(Clone, Debug)]
pub(crate) struct RateLimiter {
    config: RateLimitConfig,
    windows: BTreeMap<LimitKey, Window>,
}

impl RateLimiter {
    /// No event sent yet.
    pub(crate) fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            windows: BTreeMap::new(),
        }
    }

    /// Rate windows remembered (idle ones are pruned, so this stays small).
    #[cfg(test)]
    pub(crate) fn windows(&self) -> usize {
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
    pub(crate) fn offer(&mut self, now: Instant, event: ClientEvent) -> Option<ClientEvent> {
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
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Vec<ClientEvent> {
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

    /// Whether an event waits for the window `key`.
    pub(crate) fn is_pending(&self, key: &LimitKey) -> bool {
        self.windows.get(key).is_some_and(|w| w.pending.is_some())
    }

    /// Drops the event waiting for the window `key`, if any (`stop_typing` cancels a held
    /// `typing`, `voice_leave` a held `voice_join`).
    pub(crate) fn cancel(&mut self, key: &LimitKey) {
        if let Some(w) = self.windows.get_mut(key) {
            w.pending = None;
        }
    }

    /// The link is gone. Pending state events are dropped here because the session replays
    /// their latest value; pending typing indicators are returned (volatile, refused).
    pub(crate) fn handle_disconnect(&mut self) -> Vec<ClientEvent> {
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
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.windows
            .values()
            .filter(|w| w.pending.is_some())
            .map(|w| w.last + w.len)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    use std::time::Duration;

    use crate::{ClientEvent, CustomEvent};

    const S: Duration = Duration::from_secs(1);

    fn custom(n: u32) -> ClientEvent {
        ClientEvent::Custom(CustomEvent::new(format!(r#"{{"type":"x","n":{n}}}"#)).unwrap())
    }

    #[test]
    fn policies_match_the_design() {
        assert_eq!(Policy::of(&ClientEvent::Ping), Policy::Volatile);
        assert_eq!(
            Policy::of(&ClientEvent::Typing {
                channel_id: "c".into()
            }),
            Policy::Volatile
        );
        assert_eq!(
            Policy::of(&ClientEvent::VoiceAnswer {
                channel_id: "c".into(),
                sdp: "s".into()
            }),
            Policy::Volatile
        );
        assert_eq!(
            Policy::of(&ClientEvent::VoiceMute {
                channel_id: "c".into()
            }),
            Policy::State
        );
        assert_eq!(Policy::of(&custom(1)), Policy::Queued);
        let named = |t: &str| {
            ClientEvent::Custom(CustomEvent::new(format!(r#"{{"type":"{t}"}}"#)).unwrap())
        };
        assert_eq!(Policy::of(&named("admin_subscribe")), Policy::State);
        assert_eq!(Policy::of(&named("admin_unsubscribe")), Policy::State);
        for t in [
            "voice_stats",
            "voice_screen_share_start",
            "voice_screen_share_stop",
            "voice_webcam_start",
            "voice_webcam_stop",
            "voice_set_layer_preference",
        ] {
            assert_eq!(Policy::of(&named(t)), Policy::Volatile, "{t}");
        }
    }

    #[test]
    fn full_queue_hands_the_event_back() {
        let t = t0();
        let config = QueueConfig {
            capacity: 2,
            ..QueueConfig::default()
        };
        let mut q = OutboundQueue::new(config);
        assert!(q.push(t, custom(1)).is_ok());
        assert!(q.push(t, custom(2)).is_ok());
        assert_eq!(q.push(t, custom(3)), Err(custom(3)));
        assert_eq!(q.len(), 2);
        assert_eq!(q.drain().collect::<Vec<_>>(), vec![custom(1), custom(2)]);
    }

    #[test]
    fn old_events_expire_in_order() {
        let t = t0();
        let mut q = OutboundQueue::new(QueueConfig::default());
        q.push(t, custom(1)).unwrap();
        q.push(t + 30 * S, custom(2)).unwrap();
        assert_eq!(q.poll_timeout(), Some(t + 60 * S));
        assert!(q.expire(t + 59 * S).is_empty());
        assert_eq!(q.expire(t + 60 * S), vec![custom(1)]);
        assert_eq!(q.poll_timeout(), Some(t + 90 * S));
    }

    #[test]
    fn excess_is_coalesced_to_the_latest_value() {
        let t = t0();
        let mut r = RateLimiter::new(RateLimitConfig::default());
        let act = |n: u32| ClientEvent::SetActivity {
            activity: serde_json::json!(n),
        };
        assert_eq!(r.offer(t, act(1)), Some(act(1)));
        assert_eq!(r.offer(t + S, act(2)), None);
        assert_eq!(r.offer(t + 2 * S, act(3)), None);
        assert_eq!(r.poll_timeout(), Some(t + 10 * S));
        assert!(r.handle_timeout(t + 9 * S).is_empty());
        assert_eq!(r.handle_timeout(t + 10 * S), vec![act(3)]);
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.offer(t + 11 * S, act(4)), None);
        assert_eq!(r.handle_timeout(t + 20 * S), vec![act(4)]);
    }

    #[test]
    fn typing_is_limited_per_channel_and_cancelled_by_stop() {
        let t = t0();
        let mut r = RateLimiter::new(RateLimitConfig::default());
        let ty = |c: &str| ClientEvent::Typing {
            channel_id: c.into(),
        };
        assert!(r.offer(t, ty("a")).is_some());
        assert!(r.offer(t, ty("b")).is_some());
        assert!(r.offer(t + S, ty("a")).is_none());
        r.cancel(&LimitKey::Typing("a".into()));
        assert!(r.handle_timeout(t + 3 * S).is_empty());
        assert!(r.offer(t + 3 * S, ty("a")).is_some());
    }

    #[test]
    fn disconnect_returns_only_volatile_pendings() {
        let t = t0();
        let mut r = RateLimiter::new(RateLimitConfig::default());
        let ty = ClientEvent::Typing {
            channel_id: "a".into(),
        };
        let vj = ClientEvent::VoiceJoin {
            channel_id: "v".into(),
        };
        r.offer(t, ty.clone());
        r.offer(t, ty.clone());
        r.offer(t, vj.clone());
        r.offer(t, vj);
        assert_eq!(r.handle_disconnect(), vec![ty]);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn a_pending_voice_join_is_visible_and_cancellable() {
        let t = t0();
        let mut r = RateLimiter::new(RateLimitConfig::default());
        let vj = ClientEvent::VoiceJoin {
            channel_id: "v".into(),
        };
        assert!(r.offer(t, vj.clone()).is_some());
        assert!(!r.is_pending(&LimitKey::VoiceJoin));
        assert!(r.offer(t, vj).is_none());
        assert!(r.is_pending(&LimitKey::VoiceJoin));
        r.cancel(&LimitKey::VoiceJoin);
        assert!(!r.is_pending(&LimitKey::VoiceJoin));
        assert!(r.handle_timeout(t + S).is_empty());
    }

    #[test]
    fn idle_windows_are_forgotten() {
        let t = t0();
        let mut r = RateLimiter::new(RateLimitConfig::default());
        for i in 0..1000 {
            r.offer(
                t + Duration::from_secs(4 * i),
                ClientEvent::Typing {
                    channel_id: i.to_string(),
                },
            );
        }
        assert!(r.windows() <= 1);
    }

    /// The test's start: the one clock read (`crate::test_clock`).
    fn t0() -> Instant {
        crate::test_clock::start()
    }
}
