//! permessage-deflate (RFC 7692) negotiation: the client's offer and the check of the
//! server's answer (docs/protocol.md, "Compression").
//!
//! The compression itself belongs to the transport: the core only ever sees whole, inflated
//! messages. What the core decides is what to ask for and whether the answer is one the
//! client can live with; an answer it never asked for ends the connection for good, like a
//! subprotocol it never offered.
//!
//! The client never compresses what it sends (RFC 7692 lets each message choose): its events
//! are few and small, and a deflate context costs 250 to 380 KB a connection where an
//! inflate context costs about 47 KB (docs/benchmarks.md). So the client-side parameters the server
//! may set (`client_max_window_bits=N`, `client_no_context_takeover`) are accepted and
//! recorded, and change nothing.

use std::fmt::Write;

/// The extension's registered name.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// The smallest and largest LZ77 window an answer may name (RFC 7692, 7.1.2).
const WINDOW_BITS: std::ops::RangeInclusive<u8> = 8..=15;

/// What the client offers in `Sec-WebSocket-Extensions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateOffer {
    /// The largest LZ77 window the server may compress with, 8 to 15 (a 2^bits byte window).
    /// 15, the default, asks for nothing. A smaller window saves the server memory per
    /// connection and costs compression (docs/benchmarks.md); the client's inflate context is
    /// the same size whatever it is.
    pub server_max_window_bits: u8,
    /// Ask the server to compress each message alone. Compresses far less (each message
    /// without the context of the ones before), and lets the client hold no inflate state
    /// between messages.
    pub server_no_context_takeover: bool,
}

impl Default for DeflateOffer {
    fn default() -> Self {
        Self {
            server_max_window_bits: 15,
            server_no_context_takeover: false,
        }
    }
}

/// What the server agreed to: the parameters both sides now compress and inflate with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[non_exhaustive]
pub struct Deflate {
    /// The server compresses with at most a 2^bits byte window.
    pub server_max_window_bits: u8,
    /// The server compresses each message alone.
    pub server_no_context_takeover: bool,
    /// The window the client may compress with (the client does not compress).
    pub client_max_window_bits: u8,
    /// The client compresses each message alone (the client does not compress).
    pub client_no_context_takeover: bool,
}

/// Why an answer in `Sec-WebSocket-Extensions` was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtensionError {
    /// The server agreed to an extension the client did not offer.
    #[error("the server agreed to {0:?}, which was not offered")]
    NotOffered(String),
    /// The answer names permessage-deflate with a parameter it may not have, twice, or with
    /// a value outside the rules (RFC 7692, 7.1).
    #[error("the server's permessage-deflate answer is invalid: {0}")]
    Invalid(String),
}

impl DeflateOffer {
    /// The offer's `Sec-WebSocket-Extensions` value, e.g.
    /// `permessage-deflate; client_max_window_bits`. `client_max_window_bits` without a
    /// value tells the server it may name one.
    pub fn header(&self) -> String {
        let mut h = format!("{PERMESSAGE_DEFLATE}; client_max_window_bits");
        let bits = self.server_max_window_bits.clamp(8, 15);
        if bits < 15 {
            let _ = write!(h, "; server_max_window_bits={bits}");
        }
        if self.server_no_context_takeover {
            h.push_str("; server_no_context_takeover");
        }
        h
    }

    /// Checks the server's answer against this offer. `None` (no header, or an empty one)
    /// means no compression. An answer may narrow what was offered (a smaller window, no
    /// context takeover) but never widen it, name another extension, or repeat itself.
    pub fn accept(&self, answer: Option<&str>) -> Result<Option<Deflate>, ExtensionError> {
        let Some(answer) = answer.map(str::trim).filter(|a| !a.is_empty()) else {
            return Ok(None);
        };
        // One extension was offered, so one may come back (a comma lists several).
        if answer.contains(',') {
            return Err(ExtensionError::Invalid(format!(
                "more than one extension in {answer:?}"
            )));
        }
        let mut parts = answer.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        if !name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) {
            return Err(ExtensionError::NotOffered(name.to_owned()));
        }
        let offered_server_bits = self.server_max_window_bits.clamp(8, 15);
        let mut agreed = Deflate {
            server_max_window_bits: 15,
            server_no_context_takeover: false,
            client_max_window_bits: 15,
            client_no_context_takeover: false,
        };
        // The four parameters, each at most once.
        let mut seen = [false; 4];
        for param in parts {
            let (key, value) = match param.split_once('=') {
                Some((k, v)) => (k.trim(), Some(unquote(k.trim(), v.trim())?)),
                None => (param, None),
            };
            let key = key.to_ascii_lowercase();
            let slot = match key.as_str() {
                "server_no_context_takeover" => 0,
                "client_no_context_takeover" => 1,
                "server_max_window_bits" => 2,
                "client_max_window_bits" => 3,
                _ => {
                    return Err(ExtensionError::Invalid(format!(
                        "unexpected parameter {param:?}"
                    )));
                }
            };
            if std::mem::replace(&mut seen[slot], true) {
                return Err(ExtensionError::Invalid(format!("{key} given twice")));
            }
            match (slot, value) {
                (0, None) => agreed.server_no_context_takeover = true,
                (1, None) => agreed.client_no_context_takeover = true,
                (2, Some(v)) => {
                    let bits = window_bits(&key, v)?;
                    if bits > offered_server_bits {
                        return Err(ExtensionError::Invalid(format!(
                            "server_max_window_bits={bits} is above the {offered_server_bits} offered"
                        )));
                    }
                    agreed.server_max_window_bits = bits;
                }
                (3, Some(v)) => agreed.client_max_window_bits = window_bits(&key, v)?,
                _ => {
                    return Err(ExtensionError::Invalid(format!(
                        "{param:?}: {key} takes {}",
                        if slot < 2 { "no value" } else { "a value" }
                    )));
                }
            }
        }
        // Asked for, so the server may not leave it out (RFC 7692, 7.1.1.1 and 7.1.2.1).
        if self.server_no_context_takeover && !agreed.server_no_context_takeover {
            return Err(ExtensionError::Invalid(
                "server_no_context_takeover was asked for and not agreed".into(),
            ));
        }
        if offered_server_bits < 15 && !seen[2] {
            return Err(ExtensionError::Invalid(
                "server_max_window_bits was asked for and not agreed".into(),
            ));
        }
        Ok(Some(agreed))
    }
}

impl Deflate {
    /// The agreed parameters as a `Sec-WebSocket-Extensions` value, every one spelled out:
    /// what a transport configures its inflater from.
    pub fn header(&self) -> String {
        let mut h = format!(
            "{PERMESSAGE_DEFLATE}; server_max_window_bits={}; client_max_window_bits={}",
            self.server_max_window_bits, self.client_max_window_bits
        );
        if self.server_no_context_takeover {
            h.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            h.push_str("; client_no_context_takeover");
        }
        h
    }
}

/// A parameter's value: a token, or a quoted string holding one (RFC 7692, 7.1: the
/// quotes are one pair around the whole value, or none).
fn unquote<'a>(key: &str, value: &'a str) -> Result<&'a str, ExtensionError> {
    let inner = match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(value),
    };
    match inner {
        Some(v) if !v.contains('"') => Ok(v),
        _ => Err(ExtensionError::Invalid(format!(
            "{key}={value}: unbalanced quotes"
        ))),
    }
}

/// A window size: one to two ASCII digits in 8..=15, no sign, no leading zero.
fn window_bits(key: &str, value: &str) -> Result<u8, ExtensionError> {
    let invalid = || ExtensionError::Invalid(format!("{key}={value:?} is not in 8..=15"));
    if value.is_empty() || value.len() > 2 || value.starts_with('0') {
        return Err(invalid());
    }
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let bits: u8 = value.parse().map_err(|_| invalid())?;
    if WINDOW_BITS.contains(&bits) {
        Ok(bits)
    } else {
        Err(invalid())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn offer(bits: u8, no_takeover: bool) -> DeflateOffer {
        DeflateOffer {
            server_max_window_bits: bits,
            server_no_context_takeover: no_takeover,
        }
    }

    #[test]
    fn the_offer_names_only_what_it_asks_for() {
        assert_eq!(
            DeflateOffer::default().header(),
            "permessage-deflate; client_max_window_bits"
        );
        assert_eq!(
            offer(10, true).header(),
            "permessage-deflate; client_max_window_bits; server_max_window_bits=10; server_no_context_takeover"
        );
    }

    #[test]
    fn no_answer_is_no_compression() {
        let o = DeflateOffer::default();
        assert_eq!(o.accept(None), Ok(None));
        assert_eq!(o.accept(Some("  ")), Ok(None));
    }

    #[test]
    fn a_plain_answer_agrees_to_the_defaults() {
        let d = DeflateOffer::default()
            .accept(Some("permessage-deflate"))
            .unwrap()
            .unwrap();
        assert_eq!(d.server_max_window_bits, 15);
        assert!(!d.server_no_context_takeover);
        assert_eq!(
            d.header(),
            "permessage-deflate; server_max_window_bits=15; client_max_window_bits=15"
        );
    }

    #[test]
    fn an_answer_may_narrow_the_offer() {
        let d = DeflateOffer::default()
            .accept(Some(
                "permessage-deflate; server_max_window_bits=10; server_no_context_takeover; client_max_window_bits=9; client_no_context_takeover",
            ))
            .unwrap()
            .unwrap();
        assert_eq!(
            d,
            Deflate {
                server_max_window_bits: 10,
                server_no_context_takeover: true,
                client_max_window_bits: 9,
                client_no_context_takeover: true,
            }
        );
        // Quoted values are allowed (RFC 7692, 7.1: a quoted-string of a token).
        let d = offer(12, false)
            .accept(Some("Permessage-Deflate; server_max_window_bits=\"12\""))
            .unwrap()
            .unwrap();
        assert_eq!(d.server_max_window_bits, 12);
    }

    #[test]
    fn an_answer_that_widens_or_breaks_the_rules_is_refused() {
        let o = offer(10, true);
        for bad in [
            // wider than offered
            "permessage-deflate; server_max_window_bits=11; server_no_context_takeover",
            // asked for and left out
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover",
            // out of range, malformed, repeated, unknown
            "permessage-deflate; server_max_window_bits=7; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=010; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=1x; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=\"10; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=10\"; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=\"\"10\"\"; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=10; server_no_context_takeover=1",
            "permessage-deflate; server_max_window_bits=10; server_no_context_takeover; mystery",
            // two extensions for one offered
            "permessage-deflate; server_max_window_bits=10; server_no_context_takeover, permessage-deflate",
        ] {
            assert!(
                matches!(o.accept(Some(bad)), Err(ExtensionError::Invalid(_))),
                "{bad}"
            );
        }
        assert_eq!(
            DeflateOffer::default().accept(Some("x-webkit-deflate-frame")),
            Err(ExtensionError::NotOffered("x-webkit-deflate-frame".into()))
        );
        // client_max_window_bits needs a value in an answer.
        assert!(
            DeflateOffer::default()
                .accept(Some("permessage-deflate; client_max_window_bits"))
                .is_err()
        );
    }
}
