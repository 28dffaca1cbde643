//! Protocol v2 (docs/protocol.md, "Protocol v2"): the subprotocol names, batched frames, and
//! MessagePack frames transcoded to and from the JSON the rest of the core reads.
//!
//! Every function here takes hostile input: it is bounded in size and depth, allocates in
//! proportion to the input it has read (never to a length the input declares), and never
//! panics.

use std::io::Write;

use bytes::Bytes;
use rmp::Marker;
use serde_json::value::RawValue;

use super::decode::{DecodeError, MAX_DEPTH};
use crate::text::Text;

/// The v2 subprotocol with MessagePack binary frames.
pub const V2_MSGPACK: &str = "kaiku.v2.msgpack";
/// The v2 subprotocol with JSON text frames.
pub const V2_JSON: &str = "kaiku.v2.json";
/// Most events in one batch, either way. A frame that holds more is rejected whole.
pub const MAX_BATCH: usize = 1024;

/// How a socket's frames are encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[non_exhaustive]
pub enum Encoding {
    /// JSON text frames.
    #[default]
    Json,
    /// MessagePack binary frames.
    Msgpack,
}

/// The protocol a socket speaks, from the subprotocol its 101 selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[non_exhaustive]
pub struct Protocol {
    /// 1: today's Kaiku protocol (one JSON object per text frame). 2: batches, and
    /// MessagePack when `encoding` says so.
    pub version: u8,
    /// How frames are encoded.
    pub encoding: Encoding,
}

impl Protocol {
    /// Today's Kaiku protocol.
    pub const V1: Self = Self {
        version: 1,
        encoding: Encoding::Json,
    };
    /// v2 with JSON text frames.
    pub const V2_JSON: Self = Self {
        version: 2,
        encoding: Encoding::Json,
    };
    /// v2 with MessagePack binary frames.
    pub const V2_MSGPACK: Self = Self {
        version: 2,
        encoding: Encoding::Msgpack,
    };

    /// The v2 protocol a selected subprotocol names, if it names one.
    pub fn from_subprotocol(selected: &str) -> Option<Self> {
        match selected {
            V2_MSGPACK => Some(Self::V2_MSGPACK),
            V2_JSON => Some(Self::V2_JSON),
            _ => None,
        }
    }

    /// The subprotocol naming this protocol (`None` for v1, which is named by the auth
    /// entries).
    pub fn subprotocol(self) -> Option<&'static str> {
        match (self.version, self.encoding) {
            (2, Encoding::Msgpack) => Some(V2_MSGPACK),
            (2, Encoding::Json) => Some(V2_JSON),
            _ => None,
        }
    }

    /// Whether several events may share a frame.
    pub fn batches(self) -> bool {
        self.version >= 2
    }
}

impl Default for Protocol {
    fn default() -> Self {
        Self::V1
    }
}

/// The events of a checked JSON frame: the frame itself when it is one object, or each
/// element of a batch (a JSON array), sliced from the frame without a copy.
pub(crate) fn split_batch(frame: Text) -> Result<Vec<Text>, DecodeError> {
    if super::decode::first_token(frame.as_str()) != Some(b'[') {
        return Ok(vec![frame]);
    }
    let elements: Vec<&RawValue> = serde_json::from_str(frame.as_str())?;
    if elements.len() > MAX_BATCH {
        return Err(DecodeError::Shape("a batch of more than 1024 events"));
    }
    Ok(elements
        .iter()
        .map(|raw| Text::slice_of(&frame, raw.get()))
        .collect())
}

/// Transcodes one MessagePack value (a whole binary frame) to JSON text of at most `max`
/// bytes, nested at most [`MAX_DEPTH`] deep. Maps must have string keys; `bin`, `ext` and
/// non-finite floats have no JSON form and reject the frame, as does anything after the value.
/// Public for tools and servers that speak v2 (docs/protocol.md has the mapping).
pub fn msgpack_to_json(input: &[u8], max: usize) -> Result<Text, DecodeError> {
    if input.len() > max {
        return Err(DecodeError::TooLarge {
            len: input.len(),
            max,
        });
    }
    let mut t = Transcoder {
        input,
        at: 0,
        out: Vec::with_capacity(input.len() + input.len() / 2),
        max,
    };
    t.value(0)?;
    if t.at != input.len() {
        return Err(DecodeError::Msgpack("bytes after the value"));
    }
    // Built from UTF-8 checked pieces and ASCII: the check cannot fail, and costs one pass.
    Text::from_utf8(Bytes::from(t.out)).ok_or(DecodeError::NotUtf8)
}

struct Transcoder<'a> {
    input: &'a [u8],
    at: usize,
    out: Vec<u8>,
    max: usize,
}

impl Transcoder<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.input.len())
            .ok_or(DecodeError::Msgpack("truncated"))?;
        let bytes = &self.input[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |v, b| (v << 8) | u64::from(*b)))
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        if self.out.len() + bytes.len() > self.max {
            return Err(DecodeError::TooLarge {
                len: self.out.len() + bytes.len(),
                max: self.max,
            });
        }
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    fn number(&mut self, n: impl serde::Serialize) -> Result<(), DecodeError> {
        let mut buf = Vec::with_capacity(24);
        serde_json::to_writer(&mut buf, &n)?;
        self.emit(&buf)
    }

    fn float(&mut self, f: f64) -> Result<(), DecodeError> {
        if !f.is_finite() {
            return Err(DecodeError::Msgpack("a non-finite float"));
        }
        self.number(f)
    }

    /// A `str` of `len` bytes, as a JSON string.
    fn string(&mut self, len: usize) -> Result<(), DecodeError> {
        let bytes = self.take(len)?;
        let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)?;
        // At most six bytes out per byte in (`\u00XX`), plus the quotes.
        let mut buf = Vec::with_capacity(s.len() + 2);
        serde_json::to_writer(&mut buf, s)?;
        self.emit(&buf)
    }

    /// A length the input declares for `n` items, each at least one byte: more than the bytes
    /// left is a lie, caught before anything is read.
    fn items(&self, n: u64) -> Result<usize, DecodeError> {
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.input.len() - self.at)
            .ok_or(DecodeError::Msgpack("a length past the end of the frame"))
    }

    fn array(&mut self, n: u64, depth: usize) -> Result<(), DecodeError> {
        let n = self.items(n)?;
        self.emit(b"[")?;
        for i in 0..n {
            if i > 0 {
                self.emit(b",")?;
            }
            self.value(depth + 1)?;
        }
        self.emit(b"]")
    }

    fn map(&mut self, n: u64, depth: usize) -> Result<(), DecodeError> {
        let n = self.items(n.saturating_mul(2))? / 2;
        self.emit(b"{")?;
        for i in 0..n {
            if i > 0 {
                self.emit(b",")?;
            }
            let len = match self.marker()? {
                Marker::FixStr(n) => usize::from(n),
                Marker::Str8 => self.be(1)? as usize,
                Marker::Str16 => self.be(2)? as usize,
                Marker::Str32 => self.be(4)? as usize,
                _ => return Err(DecodeError::Msgpack("a map key that is not a string")),
            };
            self.string(len)?;
            self.emit(b":")?;
            self.value(depth + 1)?;
        }
        self.emit(b"}")
    }

    fn marker(&mut self) -> Result<Marker, DecodeError> {
        Ok(Marker::from_u8(self.take(1)?[0]))
    }

    fn value(&mut self, depth: usize) -> Result<(), DecodeError> {
        let marker = self.marker()?;
        let container = matches!(
            marker,
            Marker::FixArray(_)
                | Marker::Array16
                | Marker::Array32
                | Marker::FixMap(_)
                | Marker::Map16
                | Marker::Map32
        );
        if container && depth >= MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        match marker {
            Marker::Null => self.emit(b"null"),
            Marker::True => self.emit(b"true"),
            Marker::False => self.emit(b"false"),
            Marker::FixPos(n) => self.number(n),
            Marker::FixNeg(n) => self.number(n),
            Marker::U8 => {
                let v = self.be(1)?;
                self.number(v)
            }
            Marker::U16 => {
                let v = self.be(2)?;
                self.number(v)
            }
            Marker::U32 => {
                let v = self.be(4)?;
                self.number(v)
            }
            Marker::U64 => {
                let v = self.be(8)?;
                self.number(v)
            }
            // Two's complement, sign-extended from the width.
            Marker::I8 => {
                let v = self.be(1)? as u8 as i8;
                self.number(v)
            }
            Marker::I16 => {
                let v = self.be(2)? as u16 as i16;
                self.number(v)
            }
            Marker::I32 => {
                let v = self.be(4)? as u32 as i32;
                self.number(v)
            }
            Marker::I64 => {
                let v = self.be(8)? as i64;
                self.number(v)
            }
            Marker::F32 => {
                let v = f32::from_bits(self.be(4)? as u32);
                self.float(f64::from(v))
            }
            Marker::F64 => {
                let v = f64::from_bits(self.be(8)?);
                self.float(v)
            }
            Marker::FixStr(n) => self.string(usize::from(n)),
            Marker::Str8 => {
                let n = self.be(1)? as usize;
                self.string(n)
            }
            Marker::Str16 => {
                let n = self.be(2)? as usize;
                self.string(n)
            }
            Marker::Str32 => {
                let n = self.be(4)? as usize;
                self.string(n)
            }
            Marker::FixArray(n) => self.array(u64::from(n), depth),
            Marker::Array16 => {
                let n = self.be(2)?;
                self.array(n, depth)
            }
            Marker::Array32 => {
                let n = self.be(4)?;
                self.array(n, depth)
            }
            Marker::FixMap(n) => self.map(u64::from(n), depth),
            Marker::Map16 => {
                let n = self.be(2)?;
                self.map(n, depth)
            }
            Marker::Map32 => {
                let n = self.be(4)?;
                self.map(n, depth)
            }
            Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
                Err(DecodeError::Msgpack("`bin` has no JSON form"))
            }
            Marker::FixExt1
            | Marker::FixExt2
            | Marker::FixExt4
            | Marker::FixExt8
            | Marker::FixExt16
            | Marker::Ext8
            | Marker::Ext16
            | Marker::Ext32 => Err(DecodeError::Msgpack("`ext` has no JSON form")),
            Marker::Reserved => Err(DecodeError::Msgpack("the reserved marker 0xc1")),
        }
    }
}

/// One JSON value as MessagePack, by the mapping of docs/protocol.md: objects as maps,
/// integers in their smallest form, other numbers as `f64`. For tools and servers that speak
/// v2; the client encodes its own events with it.
pub fn to_msgpack(json: &str) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(json.len());
    json_to_msgpack(json, &mut out)?;
    Ok(out)
}

/// [`to_msgpack`], appending to `out`.
pub(crate) fn json_to_msgpack(json: &str, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let value: serde_json::Value = serde_json::from_str(json)?;
    write_value(&value, out);
    Ok(())
}

fn write_value(v: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    // Writing to a `Vec` cannot fail: the results carry only the writer's errors.
    match v {
        Value::Null => {
            let _ = rmp::encode::write_nil(out);
        }
        Value::Bool(b) => {
            let _ = rmp::encode::write_bool(out, *b);
        }
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                let _ = rmp::encode::write_uint(out, u);
            } else if let Some(i) = n.as_i64() {
                let _ = rmp::encode::write_sint(out, i);
            } else {
                let _ = rmp::encode::write_f64(out, n.as_f64().unwrap_or(0.0));
            }
        }
        Value::String(s) => {
            let _ = rmp::encode::write_str(out, s);
        }
        Value::Array(items) => {
            let _ = rmp::encode::write_array_len(out, len32(items.len()));
            for item in items {
                write_value(item, out);
            }
        }
        Value::Object(map) => {
            let _ = rmp::encode::write_map_len(out, len32(map.len()));
            for (k, item) in map {
                let _ = rmp::encode::write_str(out, k);
                write_value(item, out);
            }
        }
    }
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One outbound frame holding `events` (each a JSON object the core built): the object alone
/// when there is one, else a batch; as text for JSON, as MessagePack bytes otherwise.
pub(crate) fn encode_frame(events: &[Text], encoding: Encoding) -> Bytes {
    match encoding {
        Encoding::Json => {
            if let [one] = events {
                return one.as_bytes().clone();
            }
            let len = events.iter().map(|e| e.len() + 1).sum::<usize>() + 1;
            let mut out = Vec::with_capacity(len);
            out.push(b'[');
            for (i, e) in events.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = out.write_all(e.as_str().as_bytes());
            }
            out.push(b']');
            Bytes::from(out)
        }
        Encoding::Msgpack => {
            let mut out = Vec::with_capacity(events.iter().map(Text::len).sum());
            if events.len() != 1 {
                let _ = rmp::encode::write_array_len(&mut out, len32(events.len()));
            }
            for e in events {
                // The core's own events are JSON objects it serialized: they always parse.
                if json_to_msgpack(e.as_str(), &mut out).is_err() {
                    let _ = rmp::encode::write_nil(&mut out);
                }
            }
            Bytes::from(out)
        }
    }
}

#[cfg(test)]
mod tests;
