//! Shared decoding helpers and the error type for bad input.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::text::Text;

/// Why a server frame or REST body was rejected. Never a panic: every input gets one of these.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Larger than the configured maximum.
    #[error("input is {len} bytes, over the {max} byte limit")]
    TooLarge {
        /// Size of the input.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// Not UTF-8 text.
    #[error("input is not valid UTF-8")]
    NotUtf8,
    /// Not JSON.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// Arrays and objects nested deeper than [`MAX_DEPTH`].
    #[error("JSON nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// A MessagePack frame that is malformed, or holds what JSON cannot (`bin`, `ext`, a
    /// non-string map key, a non-finite float).
    #[error("bad MessagePack: {0}")]
    Msgpack(&'static str),
    /// Valid JSON of the wrong shape (not an object, `type` not a string, ...).
    #[error("unexpected shape: {0}")]
    Shape(&'static str),
    /// A known event without a field the core needs, or with the wrong type for it.
    #[error("`{event}` event: field `{field}` is missing or not a {expected}")]
    Field {
        /// The event type.
        event: &'static str,
        /// The field.
        field: &'static str,
        /// What it should have been.
        expected: &'static str,
    },
}

impl From<serde_json::Error> for DecodeError {
    fn from(e: serde_json::Error) -> Self {
        // serde_json's messages carry positions, never the input itself: safe to keep.
        Self::Json(e.to_string())
    }
}

/// Deepest nesting of arrays and objects accepted from the network. Kaiku events nest about
/// four levels; the limit protects whatever parses the forwarded JSON after us (a webview).
pub const MAX_DEPTH: usize = 64;

/// Size, encoding and nesting checks done before any parsing.
pub(crate) fn check_frame(bytes: Bytes, max: usize) -> Result<Text, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    // The one UTF-8 check of the frame: every `Text` sliced from it is read without another.
    let text = Text::from_utf8(bytes).ok_or(DecodeError::NotUtf8)?;
    check_depth(text.as_str().as_bytes())?;
    Ok(text)
}

/// Rejects nesting deeper than [`MAX_DEPTH`]. The common case costs one vectorised count of
/// brackets; only inputs with more openers than the limit get the exact scan.
fn check_depth(b: &[u8]) -> Result<(), DecodeError> {
    // Counted in `u8` lanes, at most 255 bytes at a time so a lane cannot overflow: the
    // compiler then handles 16 bytes per vector step. A plain `filter().count()` widens every
    // byte to a `usize` lane, 2 bytes per step, and was the biggest single cost of a decode.
    let openers: usize = b
        .chunks(255)
        .map(|chunk| {
            let n = chunk.iter().fold(0u8, |n, &c| {
                n.wrapping_add(u8::from(c == b'[' || c == b'{'))
            });
            usize::from(n)
        })
        .sum();
    if openers <= MAX_DEPTH {
        return Ok(());
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &c in b {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(DecodeError::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The first byte that is not JSON whitespace.
pub(crate) fn first_token(s: &str) -> Option<u8> {
    s.bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// A field the core reads only when it is a string. Any other JSON value is skipped without
/// error, so an unknown event whose `channel_id` happens to be a number still decodes (and is
/// forwarded untouched); a known event checks for `None` itself.
#[derive(Default)]
pub(crate) struct Lenient<'a>(pub(crate) Option<Cow<'a, str>>);

impl Lenient<'_> {
    /// The string as [`Text`]: a slice of `owner` when it had no escapes, else a copy.
    pub(crate) fn text(&self, owner: &Text) -> Option<Text> {
        match &self.0 {
            Some(Cow::Borrowed(s)) => Some(Text::slice_of(owner, s)),
            Some(Cow::Owned(s)) => Some(Text::from(s.as_str())),
            None => None,
        }
    }

    /// Like [`Lenient::text`] for a field a known event cannot do without.
    pub(crate) fn required(
        &self,
        owner: &Text,
        event: &'static str,
        field: &'static str,
    ) -> Result<Text, DecodeError> {
        self.text(owner).ok_or(DecodeError::Field {
            event,
            field,
            expected: "string",
        })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Lenient<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientVisitor(PhantomData))
    }
}

struct LenientVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for LenientVisitor<'a> {
    type Value = Lenient<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Lenient(Some(Cow::Borrowed(v))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Lenient(Some(Cow::Owned(v.to_owned()))))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Lenient(Some(Cow::Owned(v))))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Lenient::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Lenient(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Lenient(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_reads_strings_and_skips_everything_else() {
        #[derive(serde::Deserialize)]
        struct T<'a> {
            #[serde(borrow)]
            a: Lenient<'a>,
        }
        let text = |json: &str| {
            let owner = Bytes::copy_from_slice(json.as_bytes());
            let s = std::str::from_utf8(&owner).unwrap_or_default().to_owned();
            serde_json::from_str::<T<'_>>(&s).map(|t| t.a.0.map(|c| c.into_owned()))
        };
        assert_eq!(text(r#"{"a":"x"}"#).ok().flatten().as_deref(), Some("x"));
        assert_eq!(
            text(r#"{"a":"\u0078"}"#).ok().flatten().as_deref(),
            Some("x")
        );
        for other in [
            "1",
            "-1",
            "1.5",
            "true",
            "null",
            "[1,[2]]",
            r#"{"b":{"c":1}}"#,
        ] {
            let v = text(&format!(r#"{{"a":{other}}}"#));
            assert!(matches!(v, Ok(None)), "{other}");
        }
    }

    #[test]
    fn depth_counts_structure_not_brackets_in_strings() {
        let ok = format!(r#"{{"a":"{}"}}"#, "[".repeat(1000));
        assert!(check_depth(ok.as_bytes()).is_ok());
        let wide = format!("[{}]", "[],".repeat(1000) + "[]");
        assert!(check_depth(wide.as_bytes()).is_ok());
        let at_limit = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(check_depth(at_limit.as_bytes()).is_ok());
        let over = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(check_depth(over.as_bytes()), Err(DecodeError::TooDeep));
        let escaped = format!(r#"["\\"{}]"#, "[".repeat(100));
        assert_eq!(check_depth(escaped.as_bytes()), Err(DecodeError::TooDeep));
    }

    #[test]
    fn depth_is_found_across_the_counting_chunks() {
        // Openers are counted 255 bytes at a time: a nest that straddles chunks, or one after
        // a chunk full of openers, is still seen.
        let straddling = format!("{}{}", " ".repeat(240), "[".repeat(MAX_DEPTH + 1));
        assert_eq!(
            check_depth(straddling.as_bytes()),
            Err(DecodeError::TooDeep)
        );
        let spread = format!("[{}]", " [".repeat(MAX_DEPTH) + &" ".repeat(300));
        assert_eq!(check_depth(spread.as_bytes()), Err(DecodeError::TooDeep));
        let full_chunk = format!(r#"["{}"]"#, "[".repeat(255 * 3));
        assert!(check_depth(full_chunk.as_bytes()).is_ok());
    }
}
