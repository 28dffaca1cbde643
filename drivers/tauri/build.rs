//! Generates the plugin's permissions (an allow/deny pair per command) for apps to grant.

const COMMANDS: &[&str] = &[
    "connect",
    "disconnect",
    "subscribe",
    "unsubscribe",
    "focus",
    "network_changed",
    "send",
    "status",
    "login",
    "logout",
    "history",
    "attach_channel",
];

fn main() {
    tauri_plugin::Builder::new(COMMANDS).build();
}
