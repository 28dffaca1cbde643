//! Arbitrary operation sequences against the connection, checked by the reference model.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_core::fuzz::operations(data));
