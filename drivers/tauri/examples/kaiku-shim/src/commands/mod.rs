//! Kaiku's commands that the port touches, each in the file Kaiku keeps it in.

pub mod voice;
pub mod websocket;
