//! `tether listen`: connect, subscribe, print every event until killed or given up.

use std::io::Write;
use std::time::Duration;

use tether_core::{AuthMode, Event, FailReason, ServerEventKind, Status, frontend_events};
use tether_tokio::{Client, ClientConfig};

use crate::args::{self, Listen};
use crate::{Failure, api_for, credentials, wait_for_ctrl_c};

/// `verbose` (`-v`) also prints, at each connect, the protocol the server agreed to.
pub async fn run(a: Listen, verbose: bool) -> Result<(), Failure> {
    let api = api_for(&a.login)?;
    let mut config = ClientConfig::new(&a.login.server).map_err(|e| Failure {
        code: 64,
        message: format!("bad --server `{}`: {e}", a.login.server),
    })?;
    config.core.auth_mode = match a.auth {
        args::AuthMode::Subprotocol => AuthMode::Subprotocol,
        args::AuthMode::Query => AuthMode::Query,
    };
    config.core.allow_insecure = a.login.insecure;
    config.network = a
        .login
        .network()
        .map_err(|message| Failure { code: 64, message })?;
    if a.deflate {
        let mut offer = tether_core::wire::DeflateOffer::default();
        if let Some(bits) = a.deflate_window_bits {
            offer.server_max_window_bits = bits;
        }
        config.core.deflate = Some(offer);
    }
    if let Some(s) = a.heartbeat_interval {
        config.core.heartbeat.interval = Duration::from_secs_f64(s);
    }
    if let Some(s) = a.heartbeat_timeout {
        config.core.heartbeat.timeout = Duration::from_secs_f64(s);
    }
    if let Some(ms) = a.backoff_base {
        config.core.backoff.base = Duration::from_millis(ms);
    }
    if let Some(ms) = a.backoff_max {
        config.core.backoff.max = Duration::from_millis(ms);
    }
    if config.core.backoff.max < config.core.backoff.base {
        config.core.backoff.max = config.core.backoff.base;
    }
    let creds = credentials(&api, &a.login).await?;
    let (client, mut events) = Client::spawn(config, creds).map_err(|e| Failure {
        code: 64,
        message: format!("cannot connect to `{}`: {e}", a.login.server),
    })?;
    for ch in &a.channels {
        client.subscribe(ch).await.map_err(|e| Failure {
            code: 64,
            message: format!("--channel `{ch}`: {e}"),
        })?;
    }
    client
        .connect()
        .map_err(|e| Failure::general(e.to_string()))?;

    let stop = wait_for_ctrl_c();
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            () = &mut stop => return Ok(()),
        };
        let Some(event) = event else {
            return Err(Failure::general("the connection task ended"));
        };
        print(&event, a.json);
        if verbose
            && !a.json
            && let Event::Status(Status::Connected {
                protocol,
                compression,
            }) = &event
        {
            println!("-- {}", describe_link(*protocol, compression.as_ref()));
        }
        if let Event::Status(Status::Failed {
            reason,
            http_status,
            detail,
        }) = &event
        {
            let status = http_status
                .map(|s| format!(" (HTTP {s})"))
                .unwrap_or_default();
            let detail = detail
                .as_ref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            return Err(match reason {
                FailReason::Auth => {
                    Failure::auth(format!("credentials rejected{status}; log in again"))
                }
                FailReason::ProxyAuth => Failure::auth(format!(
                    "proxy credentials rejected{detail}; check the user and password in the proxy URL"
                )),
                FailReason::Certificate => Failure::general(format!(
                    "the server's certificate is not trusted{detail}; install its CA in the system's trust store (on Linux, SSL_CERT_FILE or SSL_CERT_DIR can name it)"
                )),
                other => Failure::general(format!(
                    "gave up: {}{status}{detail}",
                    serde_json::to_string(other)
                        .unwrap_or_default()
                        .trim_matches('"')
                )),
            });
        }
    }
}

fn print(event: &Event, json: bool) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (the reader went away) is not worth a panic; the next Ctrl-C ends us.
    let _ = if json {
        frontend_events(event)
            .iter()
            .try_for_each(|f| writeln!(out, "{}", f.to_json_line()))
    } else {
        writeln!(out, "{}", human(event))
    };
    let _ = out.flush();
}

/// One readable line for an event.
pub fn human(event: &Event) -> String {
    match event {
        Event::Status(s) => format!("-- {}", describe_status(s)),
        Event::Server(e) => match e.kind() {
            ServerEventKind::MessageNew { channel_id, .. } => {
                let v: serde_json::Value =
                    serde_json::from_str(e.json().as_str()).unwrap_or_default();
                let m = &v["message"];
                format!(
                    "[{}] {}: {}",
                    short(channel_id.as_str()),
                    m["author"]["username"].as_str().unwrap_or("?"),
                    m["content"].as_str().unwrap_or("")
                )
            }
            _ => format!("ws:{} {}", e.event_type(), e.json()),
        },
        Event::Resynced {
            channel_id,
            recovered,
            complete,
        } => format!(
            "-- caught up [{}]: {recovered} missed message(s){}",
            short(channel_id.as_str()),
            if *complete {
                ""
            } else {
                " (gap too large: reload the channel)"
            }
        ),
        Event::SubscriptionRejected { channel_id, code } => {
            format!("-- subscription to {channel_id} refused: {code}")
        }
        Event::VoiceReset { channel_id } => format!("-- voice session in {channel_id} was reset"),
        Event::SendDropped(e) => format!("-- not sent (too old): {}", e.event_type()),
        Event::RateLimited {
            retry_in_ms: Some(ms),
            waiting,
        } => format!(
            "-- catch-up of {waiting} channel(s) waits for the server's rate limit: reads resume in {:.1} s",
            *ms as f64 / 1000.0
        ),
        Event::RateLimited {
            retry_in_ms: None, ..
        } => "-- catch-up reads resumed".to_owned(),
        other => format!("-- {other:?}"),
    }
}

/// What a socket speaks, for a person: `protocol v1 (Kaiku JSON)`, `protocol v2 (msgpack,
/// batched), permessage-deflate (window 15 bits, context takeover)`.
pub fn describe_link(
    p: tether_core::wire::Protocol,
    compression: Option<&tether_core::wire::Deflate>,
) -> String {
    use tether_core::wire::Encoding;
    let mut s = match (p.version, p.encoding) {
        (1, _) => "protocol v1 (Kaiku JSON)".to_owned(),
        (v, Encoding::Msgpack) => format!("protocol v{v} (msgpack, batched)"),
        (v, _) => format!("protocol v{v} (json, batched)"),
    };
    if let Some(d) = compression {
        s.push_str(&format!(
            ", permessage-deflate (window {} bits, {})",
            d.server_max_window_bits,
            if d.server_no_context_takeover {
                "no context takeover"
            } else {
                "context takeover"
            }
        ));
    }
    s
}

/// A status as words: `reconnecting (attempt 2, in 1.5 s): heartbeat_timeout`.
pub fn describe_status(s: &Status) -> String {
    match s {
        Status::Reconnecting {
            attempt,
            retry_in_ms,
            reason,
            detail,
        } => format!(
            "reconnecting (attempt {attempt}, in {:.1} s): {}{}",
            *retry_in_ms as f64 / 1000.0,
            serde_json::to_string(reason)
                .unwrap_or_default()
                .trim_matches('"'),
            detail
                .as_ref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        ),
        Status::Connecting { attempt: 0 } => "connecting".into(),
        Status::Connecting { attempt } => format!("connecting (attempt {attempt})"),
        Status::Failed {
            reason,
            http_status,
            detail,
        } => format!(
            "failed: {}{}{}",
            serde_json::to_string(reason)
                .unwrap_or_default()
                .trim_matches('"'),
            http_status
                .map(|h| format!(" (HTTP {h})"))
                .unwrap_or_default(),
            detail
                .as_ref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ),
        other => other.name().into(),
    }
}

/// The first 8 characters of an id: enough to tell channels apart on a terminal.
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}
