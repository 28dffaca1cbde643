//! tether-core: the sans-IO heart of a chat client's realtime connection.
//!
//! [`Connection`] keeps one WebSocket session to a Kaiku-compatible chat server alive and
//! correct: backoff with seeded jitter, heartbeats and dead-link detection, subscription and
//! session-state replay after every reconnect, an offline outbound queue, catch-up of missed
//! messages over REST, and token refresh. It does no I/O: it never reads a clock, sleeps,
//! spawns or touches a socket. A driver (tokio, Tauri, a test) feeds it inputs with the
//! current time and carries out the [`Action`]s it asks for.
//!
//! # The drive loop
//!
//! After **every** input, drain [`Connection::poll_action`] until it returns `None`, then
//! arm one timer for [`Connection::poll_timeout`]; when it fires, call
//! [`Connection::handle_timeout`] and drain again. [`drain`] is that loop, shared by every
//! driver:
//!
//! ```
//! use std::time::Instant;
//! use tether_core::{Action, Config, Connection, Credentials, Event, drain};
//!
//! /// `start` is the driver's clock reading: the core never reads one itself.
//! fn drive(start: Instant) -> Result<(), Box<dyn std::error::Error>> {
//!     let mut config = Config::new("http://127.0.0.1:8080")?;
//!     config.seed = 7; // a real driver seeds this from OS entropy
//!     let mut conn = Connection::new(config)?;
//!     let mut now = start;
//!     conn.set_credentials(now, Credentials::new("eyJ...access"));
//!     conn.subscribe(now, "general")?;
//!     conn.connect(now)?;
//!
//!     // A pretend transport: the socket opens and the server says `ready`.
//!     let mut opened = false;
//!     drain(&mut conn, |action| match action {
//!         Action::Open(_request) => opened = true, // start connecting to _request.url
//!         Action::Send(_frame) => {}               // write a text frame
//!         Action::Emit(Event::Status(status)) => println!("status: {}", status.name()),
//!         _ => {}
//!     });
//!     assert!(opened);
//!     conn.handle_open(now, Some("access_token"));
//!     conn.handle_frame(now, r#"{"type":"ready","user_id":"u1"}"#.into());
//!     let mut sent = Vec::new();
//!     let mut next_timer = drain(&mut conn, |action| {
//!         if let Action::Send(frame) = action {
//!             sent.push(frame.to_string());
//!         }
//!     });
//!     assert!(conn.is_connected());
//!     assert_eq!(sent, [r#"{"type":"subscribe","channel_id":"general"}"#]);
//!
//!     // Time passes only when the driver says so: jump to the deadline, handle it, drain.
//!     if let Some(deadline) = next_timer {
//!         now = deadline;
//!         conn.handle_timeout(now);
//!         next_timer = drain(&mut conn, |_| {});
//!     }
//!     assert!(next_timer.is_some_and(|t| t > now));
//!     Ok(())
//! }
//! ```
//!
//! (`core/tests/drive_loop.rs` runs this same loop with a start instant from the test.)
//!
//! The design, with every number and rule, is in `docs/state-machine.md` and
//! `docs/protocol.md` of the repository.

#![warn(missing_docs, unreachable_pub)]

// Every sub-machine is private: the surface is `Connection`, its inputs, outputs, config and
// events, the wire types, and the app-side helpers (`DeliveryQueue`, `frontend`). The list
// is pinned in `core/public-api.txt` (see `scripts/public-api.sh`).
mod action;
mod auth;
mod backoff;
mod catchup;
mod close;
mod config;
mod connection;
mod delivery;
pub mod frontend;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
mod heartbeat;
mod message_clock;
mod outbound;
mod pacing;
// Public as `fuzz::Rng` (with `fuzzing`), for harnesses that replay a seed's schedule.
#[cfg_attr(not(feature = "fuzzing"), allow(unreachable_pub))]
mod rng;
mod secret;
mod session;
mod stats;
mod status;
mod subprotocol;
mod subscriptions;
#[cfg(test)]
mod test_clock;
mod text;
mod timestamp;
pub mod wire;

use std::time::Instant;

pub use action::{Action, Event, OpenRequest, RefreshRequest};
pub use auth::{Credentials, RefreshError};
pub use backoff::BackoffConfig;
pub use catchup::{CatchUpConfig, HistoryError, HistoryRequest};
pub use close::{FailReason, ReconnectReason, SocketEnd, TransportError};
pub use config::{AuthMode, Config, ConfigError};
pub use connection::{ConnectError, Connection, InvalidChannel, SendError};
pub use delivery::DeliveryQueue;
pub use frontend::{FrontendEvent, KaikuStatus, StatusEvents, StatusOrder, frontend_events};
pub use heartbeat::HeartbeatConfig;
pub use outbound::{Policy, QueueConfig, RateLimitConfig};
pub use pacing::{PacingConfig, ReadHeaders, parse_http_date};
pub use secret::Secret;
pub use stats::Stats;
pub use status::Status;
pub use text::Text;
pub use timestamp::Timestamp;
pub use wire::{ClientEvent, CustomEvent, DecodeError, ServerEvent, ServerEventKind};

/// Version of the wire protocol this crate speaks (the Kaiku `/ws` JSON protocol, early 2026).
pub const PROTOCOL_VERSION: &str = "kaiku-ws-2026.1";

/// The one drain contract: hands every pending action to `on_action`, in order, then returns
/// the deadline for the next [`Connection::handle_timeout`] (`None`: wait for input only).
///
/// Call it after every input. Drivers arm exactly one timer with the result.
pub fn drain(conn: &mut Connection, mut on_action: impl FnMut(Action)) -> Option<Instant> {
    while let Some(action) = conn.poll_action() {
        on_action(action);
    }
    conn.poll_timeout()
}
