//! Shared pieces of tether's benchmarks (see `docs/benchmarks.md`): the realistic event mix
//! and a counting allocator.

#![warn(missing_docs)]

pub mod alloc;
pub mod mix;
