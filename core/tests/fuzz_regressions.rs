//! Every input a fuzzer ever crashed on, replayed through the same entry point: a fixed bug
//! stays fixed. Files live in `tests/regressions/<target>-<what>.bin`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;

use tether_core::fuzz;

mod support;

#[test]
fn every_saved_fuzz_crash_now_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut replayed = 0;
    for entry in fs::read_dir(&dir).expect("regressions directory") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let data = fs::read(&path).expect("read");
        match name.split('-').next() {
            Some("server_frame") => fuzz::decode_frame(&data),
            Some("rest_body") => fuzz::decode_rest(&data),
            Some("operations") => fuzz::operations(support::t0(), &data),
            Some("extensions") => fuzz::extension_answer(&data),
            _ => panic!("{name}: unknown target prefix"),
        }
        replayed += 1;
    }
    assert!(
        replayed > 0,
        "no regression inputs found in {}",
        dir.display()
    );
}

#[test]
fn arbitrary_bytes_make_runnable_operation_sequences() {
    let mut rng = tether_core::fuzz::Rng::new(9);
    for _ in 0..50 {
        let bytes: Vec<u8> = (0..2048).map(|_| rng.next_u64() as u8).collect();
        fuzz::operations(support::t0(), &bytes);
    }
}

#[test]
fn decoders_accept_their_seeds_and_survive_garbage() {
    fuzz::decode_frame(br#"{"type":"ready","user_id":"u"}"#);
    fuzz::decode_frame(b"\xff\xfe{");
    fuzz::decode_frame(&[b'['; 10_000]);
    fuzz::decode_rest(br#"{"items":[{"id":"m"}],"has_more":false}"#);
    fuzz::extension_answer(b"permessage-deflate; server_max_window_bits=\"9\"");
    fuzz::extension_answer(b"permessage-deflate; client_max_window_bits=\xff");
    fuzz::decode_rest(br#"{"access_token":"a","expires_in":18446744073709551615}"#);
    fuzz::decode_rest(b"");
}
