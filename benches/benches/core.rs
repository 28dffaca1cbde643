//! Placeholder: the core benchmark is being written (issue #6).
fn main() {}
