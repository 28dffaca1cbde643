//! Shared decoding helpers and the error type for bad input.

use bytes::Bytes;
use serde_json::value::RawValue;

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
pub(crate) fn check_frame(bytes: &Bytes, max: usize) -> Result<&str, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)?;
    check_depth(s.as_bytes())?;
    Ok(s)
}

/// Rejects nesting deeper than [`MAX_DEPTH`]. The common case costs one vectorised count of
/// brackets; only inputs with more openers than the limit get the exact scan.
fn check_depth(b: &[u8]) -> Result<(), DecodeError> {
    let openers = b.iter().filter(|&&c| c == b'[' || c == b'{').count();
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

/// Reads a JSON string out of a raw value, as a slice of `owner` when it has no escapes.
pub(crate) fn raw_str(owner: &Bytes, raw: &RawValue) -> Option<Text> {
    if let Ok(s) = serde_json::from_str::<&str>(raw.get()) {
        return Some(Text::slice_of(owner, s));
    }
    serde_json::from_str::<String>(raw.get())
        .ok()
        .map(Text::from)
}

/// Like [`raw_str`] for a required field of a known event.
pub(crate) fn required_str(
    owner: &Bytes,
    raw: Option<&RawValue>,
    event: &'static str,
    field: &'static str,
) -> Result<Text, DecodeError> {
    raw.and_then(|r| raw_str(owner, r))
        .ok_or(DecodeError::Field {
            event,
            field,
            expected: "string",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
