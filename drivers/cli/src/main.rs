//! The `tether` command.
//!
//! Not built yet: the terminal driver, `serve`, `listen`, `send` and `history` arrive with
//! issue #3. Until then the binary says so and exits with status 1.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut err = std::io::stderr().lock();
    // A write error on stderr leaves nothing better to do than exit with the same code.
    let _ = writeln!(
        err,
        "tether {}: the command is not built yet (protocol core {} only); see README.md",
        env!("CARGO_PKG_VERSION"),
        tether_core::PROTOCOL_VERSION
    );
    ExitCode::from(1)
}
