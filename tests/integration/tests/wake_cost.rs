//! What the wake watchdog costs an idle process (docs/reliability.md): N idle clients for a
//! while with `ClientConfig::wake_watchdog` on, then the same with it off. Reports the
//! watchdog thread's wake-ups and CPU time, and the whole process's CPU time, per idle minute.
//! Ignored in the suite (it idles for two minutes); run it with
//!
//! ```text
//! cargo test --release -p tether-integration --test wake_cost -- --ignored --nocapture
//! ```
//!
//! `TETHER_WAKE_COST_CLIENTS` (default 1000) and `TETHER_WAKE_COST_SECS` (default 60) change
//! the load and the window. Linux only (it reads `/proc/self`).

#![cfg(target_os = "linux")]
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use serde_json::json;
use tether_devserver::ServerConfig;
use tether_integration::World;
use tether_tokio::Client;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User plus system CPU time of this process so far, from `/proc/self/stat` (in clock ticks
/// of 10 ms).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    Duration::from_millis((f[11] + f[12]) * 10)
}

/// The watchdog thread's CPU time (ns, from `schedstat`) and voluntary context switches
/// (its wake-ups), if it runs.
fn watchdog_thread() -> Option<(Duration, u64)> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim() != "tether-wake" {
            continue;
        }
        let sched = std::fs::read_to_string(path.join("schedstat")).ok()?;
        let ns: u64 = sched.split_whitespace().next()?.parse().ok()?;
        let status = std::fs::read_to_string(path.join("status")).ok()?;
        let switches = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?
            .trim()
            .parse()
            .ok()?;
        return Some((Duration::from_nanos(ns), switches));
    }
    None
}

async fn idle_phase(w: &World, clients: usize, secs: u64, watchdog: bool) -> serde_json::Value {
    let mut all = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut config = w.client_config();
        config.wake_watchdog = watchdog;
        let (client, events) = Client::spawn(config, w.alice.clone()).expect("spawn");
        client.connect().expect("connect");
        all.push((client, events));
    }
    for (client, _) in &all {
        let mut status = client.watch_status();
        tokio::time::timeout(
            Duration::from_secs(120),
            status.wait_for(|s| s.is_connected()),
        )
        .await
        .expect("every client connects")
        .expect("status");
    }
    // Let the connect burst settle, then measure a quiet window.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (cpu0, thread0, t0) = (process_cpu(), watchdog_thread(), Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (cpu1, thread1, elapsed) = (process_cpu(), watchdog_thread(), t0.elapsed());
    let per_min = |d: Duration| d.as_secs_f64() * 60.0 / elapsed.as_secs_f64();
    let thread = match (thread0, thread1) {
        (Some((ns0, sw0)), Some((ns1, sw1))) => json!({
            "wakeups_per_idle_min": (sw1 - sw0) as f64 * 60.0 / elapsed.as_secs_f64(),
            "cpu_ms_per_idle_min": per_min(ns1 - ns0) * 1000.0,
        }),
        _ => json!(null),
    };
    for (client, _) in &all {
        client.close().await;
    }
    json!({
        "watchdog": watchdog,
        "clients": clients,
        "window_secs": elapsed.as_secs_f64(),
        "process_cpu_ms_per_idle_min": per_min(cpu1 - cpu0) * 1000.0,
        "watchdog_thread": thread,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a two-minute measurement; see the module docs"]
async fn wake_watchdog_cost_per_idle_minute() {
    let clients = env_u64("TETHER_WAKE_COST_CLIENTS", 1000) as usize;
    let secs = env_u64("TETHER_WAKE_COST_SECS", 60);
    let w = World::start(ServerConfig::default(), 0).await;
    let on = idle_phase(&w, clients, secs, true).await;
    println!("{on}");
    // The thread ends within a second of its last subscriber.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        watchdog_thread().is_none(),
        "the watchdog outlived its clients"
    );
    let off = idle_phase(&w, clients, secs, false).await;
    println!("{off}");
    assert!(
        off["watchdog_thread"].is_null(),
        "no thread when every client opts out"
    );
    let wakeups = on["watchdog_thread"]["wakeups_per_idle_min"]
        .as_f64()
        .expect("the watchdog ran");
    assert!(
        (55.0..=65.0).contains(&wakeups),
        "one wake-up a second for the whole process, whatever the client count: {wakeups}"
    );
}
