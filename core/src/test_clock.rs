//! The one clock read the core's own unit tests may make: every other instant in them is
//! derived from it. Compiled for tests only; clippy's `disallowed-methods` keeps the rest of
//! the crate clock-free.

use std::time::Instant;

/// A start instant for a unit test.
#[allow(clippy::disallowed_methods)]
pub(crate) fn start() -> Instant {
    Instant::now()
}
