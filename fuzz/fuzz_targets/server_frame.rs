//! Arbitrary bytes as a server text frame: never panics, bounded, keeps its bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_core::fuzz::decode_frame(data));
