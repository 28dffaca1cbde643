//! tether demo: a chat window on tauri-plugin-tether. With `TETHER_SERVER` (and
//! `TETHER_USERNAME`, `TETHER_PASSWORD`, `TETHER_CHANNEL`) set, it connects at start and prints
//! what its page shows as `DOM {...}` lines on stdout, for the end-to-end test, which steers
//! the page through lines on stdin (`TETHER_E2E=1` only).

#![allow(clippy::print_stdout)]

use std::io::{BufRead, Write};

use tauri::Emitter;

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
        .setup(|app| {
            if std::env::var("TETHER_E2E").as_deref() == Ok("1") {
                // Each line on stdin reaches the page as an `e2e:stdin` event.
                let handle = app.handle().clone();
                std::thread::spawn(move || {
                    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                        let _ = handle.emit("e2e:stdin", line.trim());
                    }
                });
            }
            Ok(())
        })
        .run(tauri::generate_context!())
        .expect("the demo app runs");
}
