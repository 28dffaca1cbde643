//! The app-side delivery queue (DESIGN 3.6): bounded by backpressure, coalescing state-like
//! events, never dropping a message.
//!
//! Drivers put every [`Event`] the connection emits here and hand them to the app from the
//! front. When the app falls behind, typing indicators (per channel and user), presence (per
//! user) and status changes are folded into the event already waiting for the same key, so
//! only the latest value is delivered; everything else (messages above all) is kept. When the
//! queue is still at its bound, [`is_full`](DeliveryQueue::is_full) tells the driver to stop
//! reading the socket: TCP backpressure then slows the server, instead of memory growing.

use std::collections::{BTreeMap, VecDeque};

use crate::action::Event;
use crate::text::Text;
use crate::wire::ServerEventKind;

/// What a coalescable event is about; a newer event with the same key replaces an older one
/// that is still queued.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Status,
    Typing { channel_id: Text, user_id: Text },
    Presence { user_id: Text },
}

fn key_of(event: &Event) -> Option<Key> {
    match event {
        Event::Status(_) => Some(Key::Status),
        Event::Server(e) => match e.kind() {
            ServerEventKind::TypingStart {
                channel_id,
                user_id,
            }
            | ServerEventKind::TypingStop {
                channel_id,
                user_id,
            } => Some(Key::Typing {
                channel_id: channel_id.clone(),
                user_id: user_id.clone(),
            }),
            ServerEventKind::PresenceUpdate { user_id } => Some(Key::Presence {
                user_id: user_id.clone(),
            }),
            _ => None,
        },
        _ => None,
    }
}

/// A FIFO of events for the app with coalescing and a backpressure bound.
#[derive(Debug)]
pub struct DeliveryQueue {
    items: VecDeque<(Option<Key>, Event)>,
    /// Absolute position of the queued event for each key (positions count every push).
    index: BTreeMap<Key, u64>,
    popped: u64,
    capacity: usize,
    coalesced: u64,
}

impl DeliveryQueue {
    /// A queue that reports full at `capacity` events (DESIGN default: 1024).
    pub fn new(capacity: usize) -> Self {
        Self {
            items: VecDeque::new(),
            index: BTreeMap::new(),
            popped: 0,
            capacity: capacity.max(1),
            coalesced: 0,
        }
    }

    /// Queues an event. Never refuses: a single input can emit many events (a catch-up
    /// delivers a whole gap), so the bound is enforced by the driver not reading more input
    /// while [`is_full`](Self::is_full).
    pub fn push(&mut self, event: Event) {
        let key = key_of(&event);
        // Coalescing is for an app that falls behind: while the queue is less than half full
        // every event is delivered as it came, so a prompt reader sees each change.
        let lagging = self.items.len() >= self.capacity / 2;
        if key == Some(Key::Status) {
            // Status is ordered against everything else (a `reconnecting` must not overtake
            // the messages that arrived while connected): it folds only into a status that is
            // the newest event waiting.
            if let (true, Some((Some(Key::Status), slot))) = (lagging, self.items.back_mut()) {
                *slot = event;
                self.coalesced += 1;
            } else {
                self.items.push_back((key, event));
            }
            return;
        }
        if let Some(k) = &key {
            if let Some(slot) = self
                .index
                .get(k)
                .filter(|_| lagging)
                .and_then(|pos| pos.checked_sub(self.popped))
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| self.items.get_mut(i))
            {
                slot.1 = event;
                self.coalesced += 1;
                return;
            }
            let pos = self.popped + self.items.len() as u64;
            self.index.insert(k.clone(), pos);
        }
        self.items.push_back((key, event));
    }

    /// The oldest event.
    pub fn pop(&mut self) -> Option<Event> {
        let (key, event) = self.items.pop_front()?;
        let pos = self.popped;
        self.popped += 1;
        if let Some(k) = key
            && self.index.get(&k) == Some(&pos)
        {
            self.index.remove(&k);
        }
        Some(event)
    }

    /// Whether the driver should stop reading input until the app catches up.
    pub fn is_full(&self) -> bool {
        self.items.len() >= self.capacity
    }

    /// Events that can still be queued before [`is_full`](Self::is_full).
    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.items.len())
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Gives back the memory a burst left behind, when nothing waits. Call it now and then
    /// (the tokio driver does on its timer), not after every pop: a busy queue would only
    /// grow it again.
    pub fn release_memory(&mut self) {
        if self.items.is_empty() {
            self.items.shrink_to_fit();
        }
    }

    /// Events replaced by a newer one with the same key so far.
    pub fn coalesced(&self) -> u64 {
        self.coalesced
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::status::Status;
    use crate::wire::ServerEvent;

    #[test]
    fn release_memory_frees_an_empty_queue_only() {
        let mut q = DeliveryQueue::new(1024);
        for i in 0..100 {
            q.push(server(&format!(r#"{{"type":"x","n":{i}}}"#)));
        }
        q.release_memory();
        assert_eq!(q.len(), 100, "nothing is dropped");
        while q.pop().is_some() {}
        q.release_memory();
        assert_eq!(q.items.capacity(), 0);
    }

    fn server(json: &str) -> Event {
        Event::Server(
            ServerEvent::decode(Bytes::copy_from_slice(json.as_bytes()), 1 << 20).unwrap(),
        )
    }

    fn typing(kind: &str, user: &str) -> Event {
        server(&format!(
            r#"{{"type":"{kind}","channel_id":"c","user_id":"{user}"}}"#
        ))
    }

    fn msg(id: &str) -> Event {
        server(&format!(
            r#"{{"type":"message_new","channel_id":"c","message":{{"id":"{id}"}}}}"#
        ))
    }

    fn json(e: &Event) -> String {
        match e {
            Event::Server(s) => s.json().to_string(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn typing_and_presence_keep_only_the_latest_per_key() {
        let mut q = DeliveryQueue::new(2);
        q.push(typing("typing_start", "u1"));
        q.push(msg("m1"));
        q.push(typing("typing_start", "u2"));
        q.push(typing("typing_stop", "u1"));
        q.push(server(
            r#"{"type":"presence_update","user_id":"u1","status":"idle"}"#,
        ));
        q.push(server(
            r#"{"type":"presence_update","user_id":"u1","status":"online"}"#,
        ));
        assert_eq!(q.len(), 4);
        assert_eq!(q.coalesced(), 2);
        let out: Vec<String> = std::iter::from_fn(|| q.pop()).map(|e| json(&e)).collect();
        assert_eq!(
            out,
            [
                r#"{"type":"typing_stop","channel_id":"c","user_id":"u1"}"#,
                r#"{"type":"message_new","channel_id":"c","message":{"id":"m1"}}"#,
                r#"{"type":"typing_start","channel_id":"c","user_id":"u2"}"#,
                r#"{"type":"presence_update","user_id":"u1","status":"online"}"#,
            ]
        );
    }

    #[test]
    fn messages_are_never_dropped_or_merged() {
        let mut q = DeliveryQueue::new(2);
        for i in 0..100 {
            q.push(msg(&format!("m{i}")));
        }
        assert!(q.is_full());
        assert_eq!(q.len(), 100);
        assert_eq!(q.coalesced(), 0);
    }

    #[test]
    fn a_key_popped_starts_a_new_slot() {
        let mut q = DeliveryQueue::new(2);
        q.push(Event::Status(Status::Connected {
            protocol: crate::wire::Protocol::V1,
            compression: None,
        }));
        assert!(matches!(
            q.pop(),
            Some(Event::Status(Status::Connected { .. }))
        ));
        q.push(Event::Status(Status::Disconnected));
        q.push(Event::Status(Status::Connecting { attempt: 0 }));
        assert_eq!(q.len(), 1);
        assert!(matches!(
            q.pop(),
            Some(Event::Status(Status::Connecting { .. }))
        ));
        assert!(q.pop().is_none());
    }

    #[test]
    fn a_status_never_overtakes_earlier_events() {
        let mut q = DeliveryQueue::new(2);
        q.push(Event::Status(Status::Connected {
            protocol: crate::wire::Protocol::V1,
            compression: None,
        }));
        q.push(msg("m1"));
        q.push(Event::Status(Status::Disconnected));
        q.push(Event::Status(Status::Connecting { attempt: 0 }));
        let out: Vec<String> = std::iter::from_fn(|| q.pop()).map(|e| json(&e)).collect();
        assert_eq!(out.len(), 3);
        assert!(out[0].contains("Connected"));
        assert!(out[1].contains("m1"));
        assert!(out[2].contains("Connecting"));
    }

    #[test]
    fn a_prompt_reader_sees_every_change() {
        let mut q = DeliveryQueue::new(1024);
        q.push(Event::Status(Status::Connecting { attempt: 1 }));
        q.push(Event::Status(Status::Connected {
            protocol: crate::wire::Protocol::V1,
            compression: None,
        }));
        q.push(typing("typing_start", "u1"));
        q.push(typing("typing_stop", "u1"));
        assert_eq!(q.len(), 4);
        assert_eq!(q.coalesced(), 0);
    }

    #[test]
    fn full_means_stop_reading_until_the_app_drains() {
        let mut q = DeliveryQueue::new(3);
        for i in 0..3 {
            q.push(msg(&format!("m{i}")));
        }
        assert!(q.is_full());
        q.pop();
        assert!(!q.is_full());
    }
}
