//! Tauri 2 plugin exposing tether to a webview (commands and ws:* events).
//!
//! Not built yet: this crate is a placeholder so the workspace has its final layout.
//! See this crate's README for the issue that tracks it.

#![warn(missing_docs)]

/// The version of the wire types this crate is meant to drive.
pub use tether_core::PROTOCOL_VERSION;
