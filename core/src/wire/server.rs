//! Events the server sends, decoded lazily.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::decode::{DecodeError, Lenient, check_frame, first_token};
use crate::text::Text;
use crate::timestamp::Timestamp;

/// A server event: its original JSON text plus the few fields the core acts on.
///
/// [`ServerEvent::json`] is exactly what the server sent; apps get that, never a
/// re-serialization, so fields the core does not know about are kept as they were.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerEvent {
    json: Text,
    event_type: Text,
    kind: ServerEventKind,
    /// Built from REST history, not received on the socket.
    recovered: bool,
    /// A live copy of a message already delivered from history, whose body has changed since.
    update: bool,
}

/// What of a message's body can change between its history copy and its live copy: a hash
/// of each of `content`, `attachments` and `edited_at`, when present (Kaiku stores an
/// upload's message before its file, and broadcasts it with the attachment only once the
/// file is stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CopyFingerprint([Option<u64>; 3]);

impl CopyFingerprint {
    /// Whether `other` is a changed copy: a field both copies carry differs. A field one of
    /// them lacks says nothing (the two shapes need not carry the same fields).
    pub(crate) fn differs(&self, other: &Self) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .any(|(a, b)| matches!((a, b), (Some(a), Some(b)) if a != b))
    }
}

/// Hashes a JSON value with object keys in sorted order, so two serializations of one value
/// hash alike whatever order their keys came in.
fn hash_json(value: &serde_json::Value, h: &mut impl std::hash::Hasher) {
    use serde_json::Value;
    use std::hash::Hash;
    match value {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => (1u8, b).hash(h),
        // `1024` and `1024.0` are one value; an integer past 2^53, which a float cannot hold
        // exactly, is hashed as the integer it is.
        Value::Number(n) => {
            let exact = n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from));
            match (exact, n.as_f64()) {
                (Some(i), _) if i.unsigned_abs() > 1 << 53 => (7u8, i).hash(h),
                (_, Some(f)) => (2u8, f.to_bits()).hash(h),
                (_, None) => (2u8, n.to_string()).hash(h),
            }
        }
        // A timestamp written two ways (`Z` or `+00:00`, trailing zeros) is one instant.
        Value::String(s) => match Timestamp::parse(s) {
            Some(t) => (6u8, t.unix_nanos()).hash(h),
            None => (3u8, s).hash(h),
        },
        Value::Array(items) => {
            (4u8, items.len()).hash(h);
            for item in items {
                hash_json(item, h);
            }
        }
        Value::Object(map) => {
            (5u8, map.len()).hash(h);
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for k in keys {
                k.hash(h);
                hash_json(&map[k], h);
            }
        }
    }
}

/// What the core understood of a server event. Anything it does not act on is [`Other`]:
/// it still reaches the app, with its `type` and JSON.
///
/// [`Other`]: ServerEventKind::Other
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ServerEventKind {
    /// The session is authenticated and live.
    Ready {
        /// The authenticated user.
        user_id: Text,
    },
    /// Answer to a `ping`.
    Pong,
    /// A `subscribe` was accepted.
    Subscribed {
        /// Channel id.
        channel_id: Text,
    },
    /// An `unsubscribe` was accepted.
    Unsubscribed {
        /// Channel id.
        channel_id: Text,
    },
    /// The server refused something. Kaiku does not say which request; the core matches a
    /// refusal to a subscription only when no other frame can have drawn it (D47).
    Error {
        /// Machine-readable code (`channel_not_found`, `forbidden`, `message_error`, ...).
        code: Text,
        /// The channel, when the server names one.
        channel_id: Option<Text>,
    },
    /// A new message in a channel.
    MessageNew {
        /// Channel id.
        channel_id: Text,
        /// The message's identity and creation time.
        message: MessageHead,
    },
    /// A new copy of a message the app already has: a catch-up delivered its history copy,
    /// and this one (live, or history's later copy) differs in `content`, `attachments` or
    /// `edited_at` (Kaiku stores an upload's message before its file, and broadcasts it with
    /// the attachment once the file is stored). Replace the message by id; never add it
    /// twice. Its JSON is the `message_new` it came as; only the core marks it
    /// ([`ServerEvent::is_update`]).
    MessageUpdate {
        /// Channel id.
        channel_id: Text,
        /// The message's identity and creation time.
        message: MessageHead,
    },
    /// A message was edited.
    MessageEdit {
        /// Channel id.
        channel_id: Text,
        /// Message id.
        message_id: Text,
    },
    /// A message was deleted.
    MessageDelete {
        /// Channel id.
        channel_id: Text,
        /// Message id.
        message_id: Text,
    },
    /// A user started typing.
    TypingStart {
        /// Channel id.
        channel_id: Text,
        /// Who.
        user_id: Text,
    },
    /// A user stopped typing.
    TypingStop {
        /// Channel id.
        channel_id: Text,
        /// Who.
        user_id: Text,
    },
    /// A user's presence changed.
    PresenceUpdate {
        /// Who.
        user_id: Text,
    },
    /// Any `voice_*` event.
    Voice {
        /// The channel, when present.
        channel_id: Option<Text>,
    },
    /// A type the core does not act on; forwarded untouched.
    Other {
        /// The event's `channel_id`, when it has a string one (so a channel that is catching
        /// up can hold it in order with its messages).
        channel_id: Option<Text>,
    },
}

/// The part of a message object the core reads: identity, channel and creation time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageHead {
    /// Message id.
    pub id: Text,
    /// The channel, when the object carries one.
    pub channel_id: Option<Text>,
    /// Creation time, when present and well-formed.
    pub created_at: Option<Timestamp>,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(borrow, default)]
    channel_id: Lenient<'a>,
    #[serde(borrow, default)]
    user_id: Lenient<'a>,
    #[serde(borrow, default)]
    message_id: Lenient<'a>,
    #[serde(borrow, default)]
    code: Lenient<'a>,
    /// An object in `message_new`, a string in `error`: read in the same single pass.
    #[serde(borrow, default)]
    message: MessageField<'a>,
}

/// The fields of a message object the core reads, found while the parser walks the frame
/// once. `None` when the value is not an object.
#[derive(Default)]
pub(crate) struct MessageField<'a>(Option<RawHead<'a>>);

#[derive(Default)]
struct RawHead<'a> {
    id: Lenient<'a>,
    channel_id: Lenient<'a>,
    created_at: Lenient<'a>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum MessageKey {
    Id,
    ChannelId,
    CreatedAt,
    #[serde(other)]
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for MessageField<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = MessageField<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a message object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut head = RawHead::default();
                while let Some(key) = map.next_key::<MessageKey>()? {
                    match key {
                        MessageKey::Id => head.id = map.next_value()?,
                        MessageKey::ChannelId => head.channel_id = map.next_value()?,
                        MessageKey::CreatedAt => head.created_at = map.next_value()?,
                        MessageKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(MessageField(Some(head)))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MessageField(None))
            }

            fn visit_borrowed_str<E: de::Error>(self, _: &'de str) -> Result<Self::Value, E> {
                Ok(MessageField(None))
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(MessageField(None))
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MessageField(None))
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MessageField(None))
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MessageField(None))
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MessageField(None))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(MessageField(None))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl MessageHead {
    fn from_field(owner: &Text, field: &MessageField<'_>) -> Result<Self, DecodeError> {
        let head = field
            .0
            .as_ref()
            .ok_or(DecodeError::Shape("message is not an object"))?;
        Ok(Self {
            id: head.id.required(owner, "message", "id")?,
            channel_id: head.channel_id.text(owner),
            created_at: head.created_at.0.as_deref().and_then(Timestamp::parse),
        })
    }

    /// Reads a message object (one item of a REST history page).
    pub(crate) fn decode(owner: &Text, json: &str) -> Result<Self, DecodeError> {
        let field: MessageField<'_> = serde_json::from_str(json)?;
        Self::from_field(owner, &field)
    }
}

/// The types the core acts on, as static strings: their [`ServerEvent::event_type`] then
/// neither slices nor copies the frame.
fn known_type(ty: &str) -> Option<&'static str> {
    const KNOWN: [&str; 11] = [
        "ready",
        "pong",
        "subscribed",
        "unsubscribed",
        "error",
        "message_new",
        "message_edit",
        "message_delete",
        "typing_start",
        "typing_stop",
        "presence_update",
    ];
    KNOWN.into_iter().find(|k| *k == ty)
}

impl ServerEvent {
    /// Decodes one text frame of at most `max_len` bytes.
    ///
    /// Never panics. Returns an error for input that is not a JSON object with a string
    /// `type`, and for a known type that lacks a field the core needs; any other type is
    /// accepted as [`ServerEventKind::Other`]. Nesting deeper than
    /// [`MAX_DEPTH`](super::MAX_DEPTH) is refused before parsing.
    pub fn decode(frame: Bytes, max_len: usize) -> Result<Self, DecodeError> {
        Self::decode_checked(check_frame(frame, max_len)?)
    }

    /// Decodes one event from text that passed the size, UTF-8 and depth checks (a whole
    /// frame, or one element of a v2 batch sliced from it).
    pub(crate) fn decode_checked(frame: Text) -> Result<Self, DecodeError> {
        let s = frame.as_str();
        if first_token(s) != Some(b'{') {
            return Err(DecodeError::Shape("frame is not a JSON object"));
        }
        let head: Head<'_> = serde_json::from_str(s)?;
        if head.ty.is_empty() {
            return Err(DecodeError::Shape("`type` is empty"));
        }
        let event_type = match known_type(&head.ty) {
            Some(t) => Text::from_static(t),
            None => match &head.ty {
                Cow::Borrowed(t) => Text::slice_of(&frame, t),
                Cow::Owned(t) => Text::from(t.as_str()),
            },
        };
        let kind = Self::understand(&frame, &event_type, &head)?;
        // The JSON is the whole frame: moved, not sliced, so a frame that nothing shares yet
        // (a `Vec` the driver just read) is not promoted to a shared buffer. A `pong` then
        // costs no allocation at all.
        let json = frame;
        Ok(Self {
            json,
            event_type,
            kind,
            recovered: false,
            update: false,
        })
    }

    fn understand(frame: &Text, ty: &Text, h: &Head<'_>) -> Result<ServerEventKind, DecodeError> {
        let s = |f: &Lenient<'_>, event, field| f.required(frame, event, field);
        let opt = |f: &Lenient<'_>| f.text(frame);
        Ok(match ty.as_str() {
            "ready" => ServerEventKind::Ready {
                user_id: s(&h.user_id, "ready", "user_id")?,
            },
            "pong" => ServerEventKind::Pong,
            "subscribed" => ServerEventKind::Subscribed {
                channel_id: s(&h.channel_id, "subscribed", "channel_id")?,
            },
            "unsubscribed" => ServerEventKind::Unsubscribed {
                channel_id: s(&h.channel_id, "unsubscribed", "channel_id")?,
            },
            "error" => ServerEventKind::Error {
                code: s(&h.code, "error", "code")?,
                channel_id: opt(&h.channel_id),
            },
            "message_new" => ServerEventKind::MessageNew {
                channel_id: s(&h.channel_id, "message_new", "channel_id")?,
                message: MessageHead::from_field(frame, &h.message)?,
            },
            "message_edit" => ServerEventKind::MessageEdit {
                channel_id: s(&h.channel_id, "message_edit", "channel_id")?,
                message_id: s(&h.message_id, "message_edit", "message_id")?,
            },
            "message_delete" => ServerEventKind::MessageDelete {
                channel_id: s(&h.channel_id, "message_delete", "channel_id")?,
                message_id: s(&h.message_id, "message_delete", "message_id")?,
            },
            "typing_start" => ServerEventKind::TypingStart {
                channel_id: s(&h.channel_id, "typing_start", "channel_id")?,
                user_id: s(&h.user_id, "typing_start", "user_id")?,
            },
            "typing_stop" => ServerEventKind::TypingStop {
                channel_id: s(&h.channel_id, "typing_stop", "channel_id")?,
                user_id: s(&h.user_id, "typing_stop", "user_id")?,
            },
            "presence_update" => ServerEventKind::PresenceUpdate {
                user_id: s(&h.user_id, "presence_update", "user_id")?,
            },
            t if t.starts_with("voice_") => ServerEventKind::Voice {
                channel_id: opt(&h.channel_id),
            },
            _ => ServerEventKind::Other {
                channel_id: opt(&h.channel_id),
            },
        })
    }

    /// Wraps a message object from REST history as a `message_new` event, so catch-up
    /// delivers the same shape as the live stream: `{"type":"message_new","channel_id":..,
    /// "message":<the REST object as received>}`.
    pub fn synthesize_message_new(channel_id: &Text, item: &super::HistoryItem) -> Self {
        let channel_json = serde_json::to_string(channel_id.as_str()).unwrap_or_default();
        let mut json = String::with_capacity(item.json().len() + channel_json.len() + 48);
        json.push_str(r#"{"type":"message_new","channel_id":"#);
        json.push_str(&channel_json);
        json.push_str(r#","message":"#);
        json.push_str(item.json().as_str());
        json.push('}');
        Self {
            json: Text::from(json),
            event_type: Text::from_static("message_new"),
            kind: ServerEventKind::MessageNew {
                channel_id: channel_id.clone(),
                message: item.head().clone(),
            },
            recovered: true,
            update: false,
        }
    }

    /// Whether this is a live `message_new` for a message the app already has: a catch-up
    /// delivered it from history, and its body has changed since (an upload's message, stored
    /// before its file and broadcast with the attachment once the file is stored). Replace
    /// the copy the app shows, by id; do not add a second one.
    pub fn is_update(&self) -> bool {
        self.update
    }

    /// This `message_new`, as an update of a copy delivered before
    /// ([`ServerEventKind::MessageUpdate`]).
    pub(crate) fn into_update(mut self) -> Self {
        self.update = true;
        if let ServerEventKind::MessageNew {
            channel_id,
            message,
        } = self.kind
        {
            self.kind = ServerEventKind::MessageUpdate {
                channel_id,
                message,
            };
        }
        self
    }

    /// The changeable parts of a `message_new`'s message, hashed; `None` for other events
    /// and for a message that does not parse.
    pub(crate) fn copy_fingerprint(&self) -> Option<CopyFingerprint> {
        #[derive(Deserialize)]
        struct Outer {
            message: Option<CopyFields>,
        }
        if !matches!(self.kind, ServerEventKind::MessageNew { .. }) {
            return None;
        }
        let fields = serde_json::from_str::<Outer>(self.json.as_str())
            .ok()?
            .message?;
        Some(fields.fingerprint())
    }
}

/// The changeable parts of a message object.
#[derive(Deserialize)]
pub(crate) struct CopyFields {
    content: Option<serde_json::Value>,
    attachments: Option<serde_json::Value>,
    edited_at: Option<serde_json::Value>,
}

impl CopyFields {
    /// Each field hashed ([`hash_json`]).
    pub(crate) fn fingerprint(&self) -> CopyFingerprint {
        let hash = |v: &Option<serde_json::Value>| {
            v.as_ref().map(|v| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                hash_json(v, &mut h);
                std::hash::Hasher::finish(&h)
            })
        };
        CopyFingerprint([
            hash(&self.content),
            hash(&self.attachments),
            hash(&self.edited_at),
        ])
    }

    /// The fields of the message object `json`, if it parses.
    pub(crate) fn of(json: &str) -> Option<Self> {
        serde_json::from_str(json).ok()
    }
}

impl ServerEvent {
    /// Whether this is a `message_new` that a catch-up built from REST history (see
    /// [`synthesize_message_new`](Self::synthesize_message_new)): the message did not
    /// arrive live. Catch-up delivers these before the channel's
    /// [`Event::Resynced`](crate::Event::Resynced), whose `recovered` counts them, so an app
    /// can mark each one as caught up. False for every event decoded from the socket.
    pub fn is_recovered(&self) -> bool {
        self.recovered
    }

    /// The event's `type` (`message_new`, `typing_start`, or anything the server invents).
    pub fn event_type(&self) -> &Text {
        &self.event_type
    }

    /// The server's JSON text, untouched.
    pub fn json(&self) -> &Text {
        &self.json
    }

    /// What the core understood.
    pub fn kind(&self) -> &ServerEventKind {
        &self.kind
    }

    /// The channel the event is about, when it names one as a string.
    pub fn channel_id(&self) -> Option<&Text> {
        match &self.kind {
            ServerEventKind::Subscribed { channel_id }
            | ServerEventKind::Unsubscribed { channel_id }
            | ServerEventKind::MessageNew { channel_id, .. }
            | ServerEventKind::MessageUpdate { channel_id, .. }
            | ServerEventKind::MessageEdit { channel_id, .. }
            | ServerEventKind::MessageDelete { channel_id, .. }
            | ServerEventKind::TypingStart { channel_id, .. }
            | ServerEventKind::TypingStop { channel_id, .. } => Some(channel_id),
            ServerEventKind::Error { channel_id, .. }
            | ServerEventKind::Voice { channel_id }
            | ServerEventKind::Other { channel_id } => channel_id.as_ref(),
            ServerEventKind::Ready { .. }
            | ServerEventKind::Pong
            | ServerEventKind::PresenceUpdate { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 256 * 1024;

    fn decode(s: &str) -> Result<ServerEvent, DecodeError> {
        ServerEvent::decode(Bytes::copy_from_slice(s.as_bytes()), MAX)
    }

    #[test]
    fn message_new_from_the_real_server_keeps_its_bytes() {
        let raw = r#"{"type":"message_new","channel_id":"239635b7-3d0d-4b53-8545-40410b608fb6","message":{"attachments":[],"author":{"avatar_url":null,"display_name":"Bob","id":"0f30e081","status":"online","username":"bob"},"channel_id":"239635b7-3d0d-4b53-8545-40410b608fb6","content":"third message","created_at":"2026-11-25T17:46:47.902630Z","edited_at":null,"encrypted":false,"id":"7778fcba-2db0-4a65-8e1f-d0b0a5490061","message_type":"user","parent_id":null,"pinned":false,"reply_to":null,"thread_last_reply_at":null,"thread_reply_count":0}}"#;
        let e = decode(raw).unwrap();
        assert_eq!(e.json(), raw);
        assert_eq!(e.event_type(), "message_new");
        match e.kind() {
            ServerEventKind::MessageNew {
                channel_id,
                message,
            } => {
                assert_eq!(channel_id, "239635b7-3d0d-4b53-8545-40410b608fb6");
                assert_eq!(message.id, "7778fcba-2db0-4a65-8e1f-d0b0a5490061");
                assert!(message.created_at.is_some());
            }
            k => panic!("unexpected {k:?}"),
        }
    }

    #[test]
    fn unknown_types_pass_through_with_every_field() {
        let with_channel =
            decode(r#"{"type":"reaction_add","channel_id":"c","emoji":"x"}"#).unwrap();
        assert_eq!(with_channel.channel_id().map(Text::as_str), Some("c"));
        let raw = r#"{"type":"reaction_add","channel_id":5,"emoji":"👍","extra":[null,{"a":1}]}"#;
        let e = decode(raw).unwrap();
        assert_eq!(e.kind(), &ServerEventKind::Other { channel_id: None });
        assert_eq!(e.event_type(), "reaction_add");
        assert_eq!(e.json(), raw);
    }

    #[test]
    fn control_events_are_understood() {
        assert!(matches!(
            decode(r#"{"type":"ready","user_id":"u1"}"#).unwrap().kind(),
            ServerEventKind::Ready { user_id } if user_id == "u1"
        ));
        assert_eq!(
            decode(r#"{"type":"pong"}"#).unwrap().kind(),
            &ServerEventKind::Pong
        );
        assert!(matches!(
            decode(r#"{"type":"error","code":"channel_not_found","message":"Channel not found"}"#).unwrap().kind(),
            ServerEventKind::Error { code, channel_id: None } if code == "channel_not_found"
        ));
        assert!(matches!(
            decode(r#"{"type":"voice_offer","channel_id":"c","sdp":"x"}"#).unwrap().kind(),
            ServerEventKind::Voice { channel_id: Some(c) } if c == "c"
        ));
    }

    #[test]
    fn known_events_keep_the_frame_unshared() {
        // The heartbeat's answer must cost nothing: no slice of the frame means a buffer the
        // driver just read is never promoted to a shared (allocated) one.
        let pong = ServerEvent::decode(Bytes::from(br#"{"type":"pong"}"#.to_vec()), MAX).unwrap();
        assert!(pong.json().as_bytes().is_unique());
        assert_eq!(pong.event_type(), "pong");
        let other = decode(r#"{"type":"reaction_add"}"#).unwrap();
        assert_eq!(other.event_type(), "reaction_add");
        assert!(
            !other.json().as_bytes().is_unique(),
            "unknown types slice the frame"
        );
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let e = decode(r#"{"type":"subscribed","channel_id":"a\u0062c"}"#).unwrap();
        assert!(
            matches!(e.kind(), ServerEventKind::Subscribed { channel_id } if channel_id == "abc")
        );
    }

    #[test]
    fn bad_input_gets_a_typed_error() {
        assert!(matches!(decode("not json"), Err(DecodeError::Shape(_))));
        assert!(matches!(decode("{not json"), Err(DecodeError::Json(_))));
        assert!(matches!(decode(r#"["ready"]"#), Err(DecodeError::Shape(_))));
        assert!(matches!(decode(r#"{"type":1}"#), Err(DecodeError::Json(_))));
        assert!(matches!(
            decode(r#"{"type"	:""}"#),
            Err(DecodeError::Shape(_))
        ));
        assert!(matches!(
            decode(r#"{"no_type":1}"#),
            Err(DecodeError::Json(_))
        ));
        assert!(matches!(
            decode(r#"{"type":"subscribed"}"#),
            Err(DecodeError::Field {
                field: "channel_id",
                ..
            })
        ));
        assert!(matches!(
            decode(r#"{"type":"message_new","channel_id":"c","message":"text"}"#),
            Err(DecodeError::Shape(_))
        ));
        assert!(matches!(
            decode(r#"{"type":"ready","user_id":"u","user_id":"v"}"#),
            Err(DecodeError::Json(_))
        ));
        assert!(matches!(
            ServerEvent::decode(Bytes::from_static(&[b'{', 0xff, b'}']), MAX),
            Err(DecodeError::NotUtf8)
        ));
        assert!(matches!(
            ServerEvent::decode(Bytes::from(vec![b' '; 100]), 10),
            Err(DecodeError::TooLarge { len: 100, max: 10 })
        ));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!(
            r#"{{"type":"x","v":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(matches!(decode(&deep), Err(DecodeError::TooDeep)));
    }

    #[test]
    fn synthesized_message_new_wraps_the_rest_object_verbatim() {
        let page = super::super::HistoryPage::decode(
            Bytes::from_static(
                br#"[{"id":"m1","created_at":"2026-01-01T00:00:00Z","content":"hi","x":null}]"#,
            ),
            MAX,
        )
        .unwrap();
        let e = ServerEvent::synthesize_message_new(&Text::from("c\"1"), &page.items[0]);
        assert_eq!(
            e.json(),
            r#"{"type":"message_new","channel_id":"c\"1","message":{"id":"m1","created_at":"2026-01-01T00:00:00Z","content":"hi","x":null}}"#
        );
        assert!(e.is_recovered());
        let back = decode(e.json().as_str()).unwrap();
        assert_eq!(back.kind(), e.kind());
        assert!(!back.is_recovered(), "a decoded frame arrived live");
    }
}
