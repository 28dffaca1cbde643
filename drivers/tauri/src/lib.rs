//! tauri-plugin-tether: tether's realtime connection for a Tauri 2 app.
//!
//! Add the plugin and grant `tether:default` in a capability (an app's `tauri.conf.json`
//! is needed to build this, so it is not compiled here; `examples/demo-app` is a full app):
//!
//! ```ignore
//! tauri::Builder::default()
//!     .plugin(tauri_plugin_tether::init())
//!     .run(tauri::generate_context!())
//!     .expect("app runs");
//! ```
//!
//! The frontend (see `guest-js/`) calls `connect`, `subscribe`, `send`, `status`, `login`,
//! `logout`, `history` and `disconnect`, and listens to exactly the events the Kaiku frontend
//! already handles: `ws:<type>` for every server event, known or not, with the server's JSON
//! as payload (forwarded without re-serializing), `ws:connecting` / `ws:connected` /
//! `ws:disconnected`, `ws:reconnecting` with the attempt number, plus `ws:status` (the whole
//! status object) and `ws:resynced`. Apps with a high event rate can `attach_channel` to get
//! events in batches on a `tauri::ipc::Channel` instead.
//!
//! The connection lives in the plugin's managed state, so it survives webview reloads, and it
//! is closed when the app exits.
//!
//! Every page also gets the plugin's network watch (`src/watch_network.js`): when the webview
//! goes `online`, or the page becomes visible again, it calls `network_changed`, so the link is
//! probed at once and a backoff wait is skipped. guest-js's `watchNetwork(false)` turns it off.

#![warn(missing_docs)]

mod api;
mod commands;
mod error;
mod state;

use tauri::plugin::{Builder, TauriPlugin};
use tauri::{Manager, RunEvent, Runtime};

pub use api::{ConnectOptions, HistoryResult, LoginResult, TetherExt, TetherHandle};
pub use error::{Error, ErrorKind};
pub use state::Tether;
pub use tether_core::{KaikuStatus, StatusOrder};

/// The plugin, named `tether` (commands are `plugin:tether|<name>`).
pub fn init<R: Runtime>() -> TauriPlugin<R> {
    Builder::new("tether")
        .invoke_handler(tauri::generate_handler![
            commands::connect,
            commands::disconnect,
            commands::subscribe,
            commands::unsubscribe,
            commands::focus,
            commands::network_changed,
            commands::send,
            commands::status,
            commands::login,
            commands::logout,
            commands::history,
            commands::attach_channel,
        ])
        // The network watch: `online` and `visibilitychange` call `network_changed`.
        .js_init_script(include_str!("watch_network.js"))
        .setup(|app, _api| {
            app.manage(Tether::default());
            Ok(())
        })
        .on_event(|app, event| {
            if let RunEvent::Exit = event {
                app.state::<Tether>().shutdown();
            }
        })
        .build()
}

/// TypeScript declarations of every type the frontend sees, in one module: the source of
/// `guest-js/src/bindings.ts` (a test fails when the checked-in file drifts).
pub fn typescript_bindings() -> String {
    use ts_rs::{Config, TS};
    let cfg = Config::new().with_large_int("number");
    let decls = [
        <serde_json::Value as TS>::decl(&cfg),
        tether_core::Status::decl(&cfg),
        tether_core::wire::Protocol::decl(&cfg),
        tether_core::wire::Encoding::decl(&cfg),
        tether_core::wire::Deflate::decl(&cfg),
        tether_core::ReconnectReason::decl(&cfg),
        tether_core::FailReason::decl(&cfg),
        tether_core::ClientEvent::decl(&cfg),
        tether_core::frontend::ResyncedPayload::decl(&cfg),
        tether_core::frontend::SubscriptionRejectedPayload::decl(&cfg),
        tether_core::frontend::VoiceResetPayload::decl(&cfg),
        tether_core::frontend::RateLimitedPayload::decl(&cfg),
        tether_core::StatusOrder::decl(&cfg),
        tether_core::KaikuStatus::decl(&cfg),
        ConnectOptions::decl(&cfg),
        LoginResult::decl(&cfg),
        HistoryResult::decl(&cfg),
        Error::decl(&cfg),
        ErrorKind::decl(&cfg),
    ];
    let mut out = String::from(
        "// Generated from the Rust types by `tauri_plugin_tether::typescript_bindings()`.\n// Do not edit: `cargo test -p tauri-plugin-tether` fails when this file drifts.\n\n",
    );
    for d in decls {
        out.push_str("export ");
        out.push_str(d.trim());
        out.push_str("\n\n");
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}
