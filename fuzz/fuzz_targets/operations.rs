//! Arbitrary operation sequences against the connection, checked by the reference model.
#![no_main]

use std::time::Instant;

// The harness, not the core, reads the clock: the run's first instant.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_core::fuzz::operations(Instant::now(), data));
