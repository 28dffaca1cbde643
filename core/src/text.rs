//! [`Text`]: a cheaply clonable UTF-8 string that can borrow from a received frame.

use std::borrow::Borrow;
use std::fmt;

use bytes::Bytes;
use bytestring::ByteString;

/// An immutable UTF-8 string backed by [`Bytes`] (a [`ByteString`], from the `bytestring`
/// crate, which checks UTF-8 once, when it is made, and never again when it is read).
///
/// Identifiers and raw JSON taken from a received frame are slices of that frame's buffer, so
/// decoding an event copies nothing; cloning is a reference-count increment.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Text(ByteString);

impl Text {
    /// A `Text` over a static string (no allocation).
    pub const fn from_static(s: &'static str) -> Self {
        Self(ByteString::from_static(s))
    }

    /// Wraps bytes that are UTF-8 (checked here, once); returns `None` otherwise.
    pub fn from_utf8(bytes: Bytes) -> Option<Self> {
        ByteString::try_from(bytes).ok().map(Self)
    }

    /// The string (no check: it was checked when made).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The underlying bytes (for a driver that hands them to a socket without copying).
    pub fn as_bytes(&self) -> &Bytes {
        self.0.as_bytes()
    }

    /// Converts into the underlying bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0.into_bytes()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A copy in its own small allocation. Use it for anything kept long: a slice of a received
    /// frame keeps the whole buffer it came from alive (a socket's read buffer can be 128 KiB),
    /// so the de-duplication memory and the anchors hold copies, not slices.
    pub fn detached(&self) -> Self {
        Self::from(self.as_str())
    }

    /// A slice of `owner` when `part` lies inside it (no copy, no check), else a copy of
    /// `part`.
    pub(crate) fn slice_of(owner: &Text, part: &str) -> Self {
        let start = owner.0.as_ptr() as usize;
        let p = part.as_ptr() as usize;
        if p >= start && p + part.len() <= start + owner.len() {
            Self(owner.0.slice_ref(part))
        } else {
            Self::from(part)
        }
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Self(ByteString::from(s))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Self(ByteString::from(s))
    }
}

impl From<&String> for Text {
    fn from(s: &String) -> Self {
        Self::from(s.as_str())
    }
}

/// Hashed as its bytes, as `Borrow<[u8]>` requires (`ByteString` hashes as a `str`, which
/// differs from a `[u8]`'s hash).
impl std::hash::Hash for Text {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().as_ref().hash(state);
    }
}

impl Borrow<[u8]> for Text {
    fn borrow(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Self::from(s.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_of_shares_the_owner_buffer() {
        let owner = Text::from_static("{\"id\":\"abc\"}");
        let t = Text::slice_of(&owner, &owner.as_str()[7..10]);
        assert_eq!(t, "abc");
        assert_eq!(t.as_bytes().as_ptr(), owner.as_bytes()[7..].as_ptr());
    }

    #[test]
    fn detached_copies_do_not_pin_the_frame() {
        let owner = Text::from("x".repeat(1 << 16));
        let id = Text::slice_of(&owner, &owner.as_str()[..36]).detached();
        assert_ne!(id.as_bytes().as_ptr(), owner.as_bytes().as_ptr());
        assert_eq!(id.len(), 36);
    }

    #[test]
    fn slice_of_copies_foreign_strings() {
        let owner = Text::from_static("xyz");
        let t = Text::slice_of(&owner, "abc");
        assert_eq!(t, "abc");
    }

    #[test]
    fn hashes_as_the_bytes_it_borrows_as() {
        use std::hash::{BuildHasher, RandomState};
        let s = RandomState::new();
        let t = Text::from("général");
        let bytes: &[u8] = t.borrow();
        assert_eq!(s.hash_one(&t), s.hash_one(bytes));
    }

    #[test]
    fn from_utf8_rejects_invalid_bytes() {
        assert!(Text::from_utf8(Bytes::from_static(&[0xff, 0xfe])).is_none());
    }
}
