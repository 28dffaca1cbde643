//! Arbitrary operation sequences against the connection, checked by the reference model.
#![no_main]

use tether_core::fuzz::{Op, run_ops};

libfuzzer_sys::fuzz_target!(|input: (u64, Vec<Op>)| run_ops(input.0, &input.1));
