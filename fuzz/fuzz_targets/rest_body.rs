//! Arbitrary bytes as REST bodies: history pages (both shapes) and token responses.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_core::fuzz::decode_rest(data));
