//! REST message history pages, in both shapes the Kaiku server has used.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::decode::{DecodeError, Lenient, check_frame, first_token};
use super::server::MessageHead;
use crate::text::Text;

/// One page of `GET /api/messages/channel/{id}`, newest first.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryPage {
    /// Messages, newest first, as the server sent them.
    pub items: Vec<HistoryItem>,
    /// Whether older messages exist. For a bare-array response (older servers) this is
    /// unknown, and [`HistoryPage::has_more_given`] infers it from the page size.
    pub has_more: Option<bool>,
    /// The cursor for the next older page (`?before=`), when the server gives one.
    pub next_cursor: Option<Text>,
}

/// A message from a history page: its original JSON object and the fields the core reads.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryItem {
    json: Text,
    head: MessageHead,
}

impl HistoryItem {
    /// The REST message object, untouched.
    pub fn json(&self) -> &Text {
        &self.json
    }

    /// Identity and creation time.
    pub fn head(&self) -> &MessageHead {
        &self.head
    }

    /// The changeable parts of the message, hashed (see `ServerEvent::copy_fingerprint`).
    pub(crate) fn copy_fingerprint(&self) -> Option<super::CopyFingerprint> {
        super::server::CopyFields::of(self.json.as_str()).map(|f| f.fingerprint())
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    items: Vec<&'a RawValue>,
    #[serde(default)]
    has_more: Option<bool>,
    #[serde(borrow, default)]
    next_cursor: Lenient<'a>,
}

impl HistoryPage {
    /// Decodes a response body: a bare array of messages, or `{items, has_more, next_cursor}`.
    /// A body larger than `max_len` bytes is refused.
    pub fn decode(body: Bytes, max_len: usize) -> Result<Self, DecodeError> {
        let body = check_frame(body, max_len)?;
        let s = body.as_str();
        let (raw_items, has_more, next_cursor) = match first_token(s) {
            Some(b'[') => (serde_json::from_str::<Vec<&RawValue>>(s)?, None, None),
            Some(b'{') => {
                let env: Envelope<'_> = serde_json::from_str(s)?;
                let cursor = env.next_cursor.text(&body);
                (env.items, env.has_more, cursor)
            }
            _ => {
                return Err(DecodeError::Shape(
                    "history is neither an array nor an object",
                ));
            }
        };
        let items = raw_items
            .into_iter()
            .map(|raw| {
                Ok(HistoryItem {
                    json: Text::slice_of(&body, raw.get()),
                    head: MessageHead::decode(&body, raw.get())?,
                })
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        Ok(Self {
            items,
            has_more,
            next_cursor,
        })
    }

    /// Whether an older page exists: the server's word, else (bare array) a full page.
    pub fn has_more_given(&self, requested_limit: u32) -> bool {
        self.has_more
            .unwrap_or(self.items.len() >= requested_limit as usize && !self.items.is_empty())
    }

    /// The `before` cursor for the next older page: the server's, else the oldest item's id.
    pub fn cursor(&self) -> Option<Text> {
        self.next_cursor
            .clone()
            .or_else(|| self.items.last().map(|i| i.head.id.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_envelope_shape() {
        let body = br#"{"items":[{"id":"b","created_at":"2026-11-25T17:46:47.902630Z"},{"id":"a","created_at":"2026-11-25T17:46:36.273324Z"}],"has_more":true,"next_cursor":"a"}"#;
        let p = HistoryPage::decode(Bytes::from_static(body), 1 << 20).unwrap();
        assert_eq!(p.items.len(), 2);
        assert_eq!(p.items[0].head().id, "b");
        assert!(p.items[0].head().created_at > p.items[1].head().created_at);
        assert_eq!(p.has_more, Some(true));
        assert_eq!(p.cursor(), Some(Text::from("a")));
        assert_eq!(
            p.items[1].json(),
            r#"{"id":"a","created_at":"2026-11-25T17:46:36.273324Z"}"#
        );
    }

    #[test]
    fn reads_the_bare_array_shape_and_infers_paging() {
        let body = br#"[{"id":"b"},{"id":"a"}]"#;
        let p = HistoryPage::decode(Bytes::from_static(body), 1 << 20).unwrap();
        assert_eq!(p.has_more, None);
        assert!(p.has_more_given(2));
        assert!(!p.has_more_given(3));
        assert_eq!(p.cursor(), Some(Text::from("a")));
        let empty = HistoryPage::decode(Bytes::from_static(b"[]"), 10).unwrap();
        assert!(!empty.has_more_given(0));
        assert_eq!(empty.cursor(), None);
    }

    #[test]
    fn missing_has_more_and_cursor_in_the_envelope() {
        let p = HistoryPage::decode(Bytes::from_static(br#"{"items":[]}"#), 100).unwrap();
        assert!(!p.has_more_given(50));
    }

    #[test]
    fn rejects_bad_bodies() {
        for body in [
            &b"Failed to parse"[..],
            b"{\"error\":\"TOKEN_EXPIRED\",\"message\":\"Token expired\"}",
            b"[1,2]",
            b"[{\"no_id\":1}]",
            b"{\"items\":{}}",
            b"\"x\"",
        ] {
            assert!(HistoryPage::decode(Bytes::copy_from_slice(body), 1 << 20).is_err());
        }
        assert!(matches!(
            HistoryPage::decode(Bytes::from(vec![b'['; 64]), 8),
            Err(DecodeError::TooLarge { .. })
        ));
    }
}
