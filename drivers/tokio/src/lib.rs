//! tether-tokio: runs [`tether_core::Connection`] on tokio and tokio-tungstenite, with a REST
//! client on reqwest.
//!
//! One task owns the socket, the core and one timer, and carries out the core's actions;
//! the app holds a cloneable [`Client`] handle and reads an [`Events`] stream. Nothing here
//! decides anything the core decides: reconnects, heartbeats, catch-up and auth are the
//! core's, the driver only does the I/O.
//!
//! ```no_run
//! use tether_tokio::{Api, Client, ClientConfig};
//! use tether_core::{Event, Secret};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let api = Api::new("https://chat.example.com")?;
//! let credentials = api.login("alice", &Secret::new("password123")).await?;
//! let (client, mut events) = Client::spawn(ClientConfig::new("https://chat.example.com")?, credentials)?;
//! client.subscribe("239635b7-3d0d-4b53-8545-40410b608fb6").await?;
//! client.connect()?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         Event::Server(e) => println!("ws:{} {}", e.event_type(), e.json()),
//!         Event::Status(s) => println!("status: {}", s.name()),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod api;
mod client;
pub mod clock;
mod connect;
#[cfg(feature = "deflate")]
mod deflate;
mod driver;
mod errors;
mod net;
mod socket;
mod task;

pub use api::{Api, ApiError, Observed, Observer, with_jwt_expiry};
pub use client::{Client, ClientConfig, ClientError, Events, RefreshListener};
pub use clock::Clock;
pub use net::{Network, Proxy, ProxyError, ProxyUrl};
pub use tether_core;
