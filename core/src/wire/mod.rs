//! Wire types: what goes over the socket and what the REST history returns.
//!
//! Client events are plain serde types. Server events and history pages are decoded lazily:
//! the core reads only the fields it acts on and keeps the server's original JSON text, so an
//! event reaches the app byte for byte as the server sent it.

mod client;
mod decode;
mod deflate;
mod history;
mod rest_error;
mod server;
mod v2;

pub use client::{ClientEvent, CustomEvent, InvalidCustomEvent};
pub(crate) use decode::check_frame;
pub use decode::{DecodeError, MAX_DEPTH};
pub use deflate::{Deflate, DeflateOffer, ExtensionError, PERMESSAGE_DEFLATE};
pub use history::{HistoryItem, HistoryPage};
pub use rest_error::RestError;
pub(crate) use server::CopyFingerprint;
pub use server::{MessageHead, ServerEvent, ServerEventKind};
pub use v2::{Encoding, MAX_BATCH, Protocol, V2_JSON, V2_MSGPACK, msgpack_to_json, to_msgpack};
pub(crate) use v2::{encode_frame, split_batch};
