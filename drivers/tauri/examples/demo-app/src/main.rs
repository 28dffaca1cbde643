//! tether demo: a chat window on tauri-plugin-tether. With `TETHER_SERVER` (and
//! `TETHER_USERNAME`, `TETHER_PASSWORD`, `TETHER_CHANNEL`) set, it connects at start and prints
//! what its page shows as `DOM {...}` lines on stdout, for the end-to-end test.

#![allow(clippy::print_stdout)]

use std::io::Write;

/// The page reports what it shows; the end-to-end test reads it from stdout.
#[tauri::command]
fn e2e_report(state: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "DOM {state}");
    let _ = out.flush();
}

/// Where and as whom to connect, from the environment.
#[tauri::command]
fn e2e_config() -> serde_json::Value {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    serde_json::json!({
        "server": var("TETHER_SERVER"),
        "username": var("TETHER_USERNAME"),
        "password": var("TETHER_PASSWORD"),
        "channel": var("TETHER_CHANNEL"),
        "bench_mode": var("TETHER_BENCH_MODE"),
        "bench_n": var("TETHER_BENCH_N").parse::<u64>().unwrap_or(0),
        "e2e": var("TETHER_E2E") == "1",
    })
}

fn main() {
    tauri::Builder::default()
        .plugin(tauri_plugin_tether::init())
        .invoke_handler(tauri::generate_handler![e2e_report, e2e_config])
        .run(tauri::generate_context!())
        .expect("the demo app runs");
}
