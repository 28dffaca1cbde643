//! Every input a fuzzer ever crashed on, replayed through the same entry point: a fixed bug
//! stays fixed. Files live in `tests/regressions/<target>-<what>.bin`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;

use tether_core::fuzz;

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
            Some("operations") => fuzz::operations(&data),
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
