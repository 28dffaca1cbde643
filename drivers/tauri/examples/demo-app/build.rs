//! Tauri's build step for the demo app: generates its context from `tauri.conf.json`.
fn main() {
    tauri_build::build();
}
