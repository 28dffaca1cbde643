//! Arbitrary bytes as a 101's `Sec-WebSocket-Extensions` answer (permessage-deflate).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_core::fuzz::extension_answer(data));
