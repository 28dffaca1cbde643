//! Shared pieces of tether's benchmarks (see `docs/benchmarks.md`): the realistic event mix,
//! a counting allocator, and a loopback WebSocket server for the driver load program.

#![warn(missing_docs)]

pub mod alloc;
pub mod mix;
pub mod server;
