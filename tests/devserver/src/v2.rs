//! Protocol v2 on the dev server's side (docs/protocol.md, "Protocol v2"): which subprotocol an
//! upgrade selects, how a v2 socket's frames are read (one event or a batch, JSON or
//! MessagePack), and how the events queued for a socket are written (in its encoding, batched).
//!
//! v1 is not here: a v1 socket reads and writes exactly as before v2 existed. MessagePack is
//! read and written by hand over `rmp`'s markers, as the client's core does: every client
//! frame is hostile input, so lengths are checked against the bytes left before anything is
//! allocated, and nesting is bounded.

use serde_json::{Map, Number, Value};
use tether_core::wire::{Encoding, MAX_BATCH, MAX_DEPTH, Protocol, V2_JSON, V2_MSGPACK};

/// Which parts of protocol v2 the dev server speaks. Everything is on by default; with both
/// encodings off the server speaks only v1, as the real Kaiku server does today.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct V2Config {
    /// Select `kaiku.v2.json` when a client offers it.
    pub json: bool,
    /// Select `kaiku.v2.msgpack` when a client offers it.
    pub msgpack: bool,
    /// On a v2 socket, send the events queued at one moment as one batch frame. Off: one
    /// event per frame (still v2: a client's batches are read either way).
    pub batch: bool,
    /// On a v2 socket, agree to permessage-deflate when the client offers it, and compress
    /// every frame with context takeover. v1 sockets are never compressed (Kaiku's are not).
    pub deflate: bool,
    /// The window the server compresses with, 9 to 15 bits, when the client leaves it to the
    /// server (the client's `server_max_window_bits` wins when smaller). Default 15.
    pub deflate_window_bits: u8,
}

impl Default for V2Config {
    fn default() -> Self {
        Self {
            json: true,
            msgpack: true,
            batch: true,
            deflate: true,
            deflate_window_bits: 15,
        }
    }
}

impl V2Config {
    /// v1 only: no v2 subprotocol is ever selected.
    pub fn off() -> Self {
        Self {
            json: false,
            msgpack: false,
            batch: false,
            deflate: false,
            deflate_window_bits: 15,
        }
    }

    /// The subprotocol to select for `offered` (the client's values, in its order): the first
    /// v2 value this server has enabled, so the client's preference wins; else `access_token`
    /// (v1, what Kaiku selects). A value the client did not offer is never returned but
    /// `access_token`, which axum selects only if it was offered.
    pub(crate) fn select(&self, offered: &[String]) -> &'static str {
        offered
            .iter()
            .find_map(|p| match p.as_str() {
                V2_MSGPACK if self.msgpack => Some(V2_MSGPACK),
                V2_JSON if self.json => Some(V2_JSON),
                _ => None,
            })
            .unwrap_or("access_token")
    }
}

/// Most bytes of event JSON the server puts in one batch: well under the client's 256 KiB
/// frame limit, whichever encoding carries it. A single larger event still leaves alone.
pub(crate) const MAX_BATCH_BYTES: usize = 64 * 1024;

/// A frame a v2 socket could not read (answered with Kaiku's `message_error`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadFrame(pub String);

/// The events of a client's text frame on a v2 socket: the frame itself when it is one object,
/// each element's JSON when it is a batch (an array, of at most [`MAX_BATCH`]).
pub(crate) fn split_json(text: &str) -> Result<Vec<&str>, BadFrame> {
    if !text.trim_start().starts_with('[') {
        return Ok(vec![text]);
    }
    let items: Vec<&serde_json::value::RawValue> =
        serde_json::from_str(text).map_err(|e| BadFrame(e.to_string()))?;
    if items.len() > MAX_BATCH {
        return Err(BadFrame(format!(
            "a batch of {} events (at most {MAX_BATCH})",
            items.len()
        )));
    }
    Ok(items.into_iter().map(|raw| raw.get()).collect())
}

/// The events of a client's binary frame on a MessagePack socket: one map, or an array of
/// them (each element is returned as is; the caller checks it is an event).
pub(crate) fn split_msgpack(bytes: &[u8]) -> Result<Vec<Value>, BadFrame> {
    let mut r = Reader {
        input: bytes,
        at: 0,
    };
    let value = r.value(0).map_err(|e| BadFrame(e.to_owned()))?;
    if r.at != bytes.len() {
        return Err(BadFrame("bytes after the MessagePack value".into()));
    }
    match value {
        Value::Array(items) if items.len() > MAX_BATCH => Err(BadFrame(format!(
            "a batch of {} events (at most {MAX_BATCH})",
            items.len()
        ))),
        Value::Array(items) => Ok(items),
        one => Ok(vec![one]),
    }
}

/// A frame to write.
pub(crate) enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

/// One frame for a v2 socket's `protocol` holding `events` (JSON objects the server built):
/// the event alone when there is one, else a batch. `None` when an event is not JSON on a
/// MessagePack socket (the caller sends the events as text), or for an unknown encoding.
pub(crate) fn encode(events: &[String], protocol: Protocol) -> Option<Frame> {
    match protocol.encoding {
        Encoding::Json => Some(Frame::Text(match events {
            [one] => one.clone(),
            _ => format!("[{}]", events.join(",")),
        })),
        Encoding::Msgpack => {
            // The wire mapping is the protocol's, not a rule of the server: the core's encoder
            // (its decoder is pinned to hand-written bytes, and this server reads with its own).
            let mut out = Vec::with_capacity(events.iter().map(String::len).sum());
            if events.len() != 1 {
                let len = u32::try_from(events.len()).unwrap_or(u32::MAX);
                let _ = rmp::encode::write_array_len(&mut out, len);
            }
            for e in events {
                out.extend(tether_core::wire::to_msgpack(e).ok()?);
            }
            Some(Frame::Binary(out))
        }
        _ => None,
    }
}

/// Reads one MessagePack value into JSON's data model (docs/protocol.md's mapping).
struct Reader<'a> {
    input: &'a [u8],
    at: usize,
}

type Read<T> = Result<T, &'static str>;

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Read<&[u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.input.len())
            .ok_or("truncated MessagePack")?;
        let bytes = &self.input[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn be(&mut self, n: usize) -> Read<u64> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |v, b| (v << 8) | u64::from(*b)))
    }

    /// A declared count of `n` items of at least one byte each: more than the bytes left is a
    /// lie, refused before anything is allocated for it.
    fn items(&self, n: u64) -> Read<usize> {
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.input.len() - self.at)
            .ok_or("a MessagePack length past the end of the frame")
    }

    fn string(&mut self, len: u64) -> Read<String> {
        let len = self.items(len)?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| "a MessagePack str that is not UTF-8")
    }

    fn float(f: f64) -> Read<Value> {
        Number::from_f64(f)
            .map(Value::Number)
            .ok_or("a non-finite float")
    }

    fn array(&mut self, n: u64, depth: usize) -> Read<Value> {
        let n = self.items(n)?;
        // Grown as items are read, not sized from the count: nested arrays each claiming
        // the rest of the frame would otherwise reserve it again at every level.
        let mut items = Vec::new();
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, n: u64, depth: usize) -> Read<Value> {
        let n = self.items(n.saturating_mul(2))? / 2;
        let mut map = Map::new();
        for _ in 0..n {
            let len = match rmp::Marker::from_u8(self.be(1)? as u8) {
                rmp::Marker::FixStr(n) => u64::from(n),
                rmp::Marker::Str8 => self.be(1)?,
                rmp::Marker::Str16 => self.be(2)?,
                rmp::Marker::Str32 => self.be(4)?,
                _ => return Err("a MessagePack map key that is not a string"),
            };
            let key = self.string(len)?;
            let value = self.value(depth + 1)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }

    fn value(&mut self, depth: usize) -> Read<Value> {
        use rmp::Marker as M;
        let marker = M::from_u8(self.be(1)? as u8);
        let container = matches!(
            marker,
            M::FixArray(_) | M::Array16 | M::Array32 | M::FixMap(_) | M::Map16 | M::Map32
        );
        if container && depth >= MAX_DEPTH {
            return Err("MessagePack nested too deep");
        }
        Ok(match marker {
            M::Null => Value::Null,
            M::True => Value::Bool(true),
            M::False => Value::Bool(false),
            M::FixPos(n) => Value::from(n),
            M::FixNeg(n) => Value::from(n),
            M::U8 => Value::from(self.be(1)?),
            M::U16 => Value::from(self.be(2)?),
            M::U32 => Value::from(self.be(4)?),
            M::U64 => Value::from(self.be(8)?),
            // Two's complement, sign-extended from the width.
            M::I8 => Value::from(self.be(1)? as u8 as i8),
            M::I16 => Value::from(self.be(2)? as u16 as i16),
            M::I32 => Value::from(self.be(4)? as u32 as i32),
            M::I64 => Value::from(self.be(8)? as i64),
            M::F32 => Self::float(f64::from(f32::from_bits(self.be(4)? as u32)))?,
            M::F64 => Self::float(f64::from_bits(self.be(8)?))?,
            M::FixStr(n) => Value::String(self.string(u64::from(n))?),
            M::Str8 => {
                let n = self.be(1)?;
                Value::String(self.string(n)?)
            }
            M::Str16 => {
                let n = self.be(2)?;
                Value::String(self.string(n)?)
            }
            M::Str32 => {
                let n = self.be(4)?;
                Value::String(self.string(n)?)
            }
            M::FixArray(n) => self.array(u64::from(n), depth)?,
            M::Array16 => {
                let n = self.be(2)?;
                self.array(n, depth)?
            }
            M::Array32 => {
                let n = self.be(4)?;
                self.array(n, depth)?
            }
            M::FixMap(n) => self.map(u64::from(n), depth)?,
            M::Map16 => {
                let n = self.be(2)?;
                self.map(n, depth)?
            }
            M::Map32 => {
                let n = self.be(4)?;
                self.map(n, depth)?
            }
            _ => return Err("MessagePack bin, ext or 0xc1 has no JSON form"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn offer(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    #[test]
    fn selects_the_clients_first_enabled_v2_offer_else_access_token() {
        let all = V2Config::default();
        let kaiku = offer(&["access_token.x", V2_MSGPACK, V2_JSON, "access_token"]);
        assert_eq!(all.select(&kaiku), V2_MSGPACK);
        let json_first = offer(&["access_token.x", V2_JSON, V2_MSGPACK, "access_token"]);
        assert_eq!(all.select(&json_first), V2_JSON);
        let no_msgpack = V2Config {
            msgpack: false,
            ..all
        };
        assert_eq!(no_msgpack.select(&kaiku), V2_JSON);
        assert_eq!(V2Config::off().select(&kaiku), "access_token");
        let browser = offer(&["access_token.x", "access_token"]);
        assert_eq!(all.select(&browser), "access_token");
    }

    #[test]
    fn a_json_batch_splits_into_its_events_in_order() {
        let frame = r#"[{"type":"subscribe","channel_id":"a"}, {"type":"ping"}]"#;
        assert_eq!(
            split_json(frame),
            Ok(vec![
                r#"{"type":"subscribe","channel_id":"a"}"#,
                r#"{"type":"ping"}"#
            ])
        );
        assert_eq!(
            split_json(r#"{"type":"ping"}"#),
            Ok(vec![r#"{"type":"ping"}"#])
        );
        assert!(split_json("[1,").is_err());
        let too_many = format!("[{}]", vec!["{}"; MAX_BATCH + 1].join(","));
        assert!(split_json(&too_many).is_err());
    }

    #[test]
    fn msgpack_round_trips_the_servers_events_and_batches() {
        let events = [
            json!({"type": "ready", "user_id": "u1"}).to_string(),
            json!({"type": "x", "n": -3, "big": u64::MAX, "f": 1.5, "nested": [null, true, {"a": "é\u{1}"}]})
                .to_string(),
        ];
        let one = match encode(&events[..1], Protocol::V2_MSGPACK) {
            Some(Frame::Binary(b)) => b,
            _ => panic!("binary"),
        };
        assert_eq!(
            split_msgpack(&one),
            Ok(vec![json!({"type": "ready", "user_id": "u1"})])
        );
        let batch = match encode(&events, Protocol::V2_MSGPACK) {
            Some(Frame::Binary(b)) => b,
            _ => panic!("binary"),
        };
        let back: Vec<String> = split_msgpack(&batch)
            .expect("decodes")
            .iter()
            .map(Value::to_string)
            .collect();
        assert_eq!(back, events);
        match encode(&events, Protocol::V2_JSON) {
            Some(Frame::Text(t)) => assert_eq!(t, format!("[{},{}]", events[0], events[1])),
            _ => panic!("text"),
        }
    }

    #[test]
    fn hostile_msgpack_is_refused_without_allocating_what_it_claims() {
        // An array claiming four billion items, a str claiming 4 GiB, a map with an int key,
        // bin, a truncated str, trailing bytes, and nesting past the limit.
        for bad in [
            &[0xdd, 0xff, 0xff, 0xff, 0xff][..],
            &[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'],
            &[0x81, 0x01, 0xc0],
            &[0xc4, 0x01, 0x00],
            &[0xa3, b'a'],
            &[0xc0, 0xc0],
            &[0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0],
        ] {
            assert!(split_msgpack(bad).is_err(), "{bad:?}");
        }
        let deep = vec![0x91u8; MAX_DEPTH + 1];
        assert!(split_msgpack(&[deep, vec![0xc0]].concat()).is_err());
        let ok_depth = vec![0x91u8; MAX_DEPTH];
        assert!(split_msgpack(&[ok_depth, vec![0xc0]].concat()).is_ok());
    }
}
