//! Where the core's own unit tests get a start instant: from the driver's clock
//! (`tether-clock`, a dev-dependency), never by reading one here. Every other instant in a test
//! is derived from it; clippy's `disallowed-methods` keeps the crate clock-free.

use std::time::Instant;

/// A start instant for a unit test.
pub(crate) fn start() -> Instant {
    tether_clock::Clock::new().now()
}
