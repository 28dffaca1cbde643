//! Quick throughput check of the core on a realistic event mix (not a criterion benchmark;
//! those come with the performance work). Prints events per second for:
//!
//! - `serde_json` into a strict internally tagged enum (what the original client did),
//! - `serde_json` skimming with `IgnoredAny` (the practical ceiling),
//! - `ServerEvent::decode` (tether's lazy decode),
//! - `Connection::handle_frame` + draining actions (decode + the full state machine).
//!
//! Run: `cargo run --release -p tether-core --example throughput`

#![allow(
    clippy::disallowed_methods,
    clippy::print_stdout,
    clippy::unwrap_used,
    missing_docs
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use tether_core::{Action, Config, Connection, Credentials, ServerEvent};

const CH: &str = "239635b7-3d0d-4b53-8545-40410b608fb6";
const USER: &str = "8ff9ed0e-b0f9-46a8-8990-701fb744ce83";

/// The original client's way: every event fully parsed into owned fields.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(dead_code)]
enum Strict {
    Ready {
        user_id: String,
    },
    Pong,
    Subscribed {
        channel_id: String,
    },
    MessageNew {
        channel_id: String,
        message: Value,
    },
    MessageEdit {
        channel_id: String,
        message_id: String,
        content: String,
        edited_at: String,
    },
    MessageDelete {
        channel_id: String,
        message_id: String,
    },
    TypingStart {
        channel_id: String,
        user_id: String,
    },
    TypingStop {
        channel_id: String,
        user_id: String,
    },
    PresenceUpdate {
        user_id: String,
        status: String,
    },
    ReactionAdd {
        channel_id: String,
        message_id: String,
        user_id: String,
        emoji: String,
    },
    ReactionRemove {
        channel_id: String,
        message_id: String,
        user_id: String,
        emoji: String,
    },
    VoiceUserJoined {
        channel_id: String,
        user_id: String,
        username: String,
        display_name: String,
    },
    VoiceUserLeft {
        channel_id: String,
        user_id: String,
    },
    VoiceUserMuted {
        channel_id: String,
        user_id: String,
    },
    VoiceIceCandidate {
        channel_id: String,
        candidate: String,
    },
    ChannelRead {
        channel_id: String,
        last_read_message_id: String,
    },
    CustomStatusUpdate {
        user_id: String,
        custom_status: Value,
    },
}

fn message(i: usize) -> String {
    format!(
        r#"{{"attachments":[],"author":{{"avatar_url":null,"display_name":"Bob","id":"{USER}","status":"online","username":"bob"}},"channel_id":"{CH}","content":"message number {i}","created_at":"2026-11-25T17:46:47.902630Z","edited_at":null,"encrypted":false,"id":"00000000-0000-4000-8000-{i:012}","message_type":"user","parent_id":null,"pinned":false,"reply_to":null,"thread_last_reply_at":null,"thread_reply_count":0}}"#
    )
}

/// One round of the mix: 17 event types, message events a quarter of the traffic.
fn mix(i: usize) -> Vec<String> {
    let m = |k: usize| 4 * i + k;
    vec![
        format!(
            r#"{{"type":"message_new","channel_id":"{CH}","message":{}}}"#,
            message(m(0))
        ),
        format!(r#"{{"type":"typing_start","channel_id":"{CH}","user_id":"{USER}"}}"#),
        format!(r#"{{"type":"typing_stop","channel_id":"{CH}","user_id":"{USER}"}}"#),
        format!(r#"{{"type":"presence_update","user_id":"{USER}","status":"online"}}"#),
        format!(
            r#"{{"type":"message_new","channel_id":"{CH}","message":{}}}"#,
            message(m(1))
        ),
        format!(
            r#"{{"type":"message_edit","channel_id":"{CH}","message_id":"00000000-0000-4000-8000-{:012}","content":"edited text","edited_at":"2026-11-25T17:46:42.176549+00:00"}}"#,
            m(0)
        ),
        format!(
            r#"{{"type":"reaction_add","channel_id":"{CH}","message_id":"{USER}","user_id":"{USER}","emoji":"👍"}}"#
        ),
        format!(
            r#"{{"type":"reaction_remove","channel_id":"{CH}","message_id":"{USER}","user_id":"{USER}","emoji":"👍"}}"#
        ),
        format!(
            r#"{{"type":"message_new","channel_id":"{CH}","message":{}}}"#,
            message(m(2))
        ),
        format!(
            r#"{{"type":"voice_user_joined","channel_id":"{CH}","user_id":"{USER}","username":"bob","display_name":"Bob"}}"#
        ),
        format!(r#"{{"type":"voice_user_left","channel_id":"{CH}","user_id":"{USER}"}}"#),
        format!(r#"{{"type":"voice_user_muted","channel_id":"{CH}","user_id":"{USER}"}}"#),
        format!(
            r#"{{"type":"voice_ice_candidate","channel_id":"{CH}","candidate":"candidate:1 1 UDP 2122252543 192.0.2.1 54321 typ host"}}"#
        ),
        format!(r#"{{"type":"channel_read","channel_id":"{CH}","last_read_message_id":"{USER}"}}"#),
        format!(
            r#"{{"type":"custom_status_update","user_id":"{USER}","custom_status":{{"text":"busy","emoji":"🔥","expires_at":null}}}}"#
        ),
        format!(
            r#"{{"type":"message_delete","channel_id":"{CH}","message_id":"00000000-0000-4000-8000-{:012}"}}"#,
            m(1)
        ),
        r#"{"type":"pong"}"#.to_owned(),
    ]
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn best_of<F: FnMut() -> usize>(mut f: F) -> (usize, Duration) {
    let mut best = Duration::MAX;
    let mut n = 0;
    for _ in 0..5 {
        let start = Instant::now();
        n = f();
        best = best.min(start.elapsed());
    }
    (n, best)
}

fn main() {
    let rounds = 6_000;
    let frames: Vec<Bytes> = (0..rounds).flat_map(mix).map(Bytes::from).collect();
    let bytes: usize = frames.iter().map(Bytes::len).sum();
    println!(
        "{} events, 17 types, {:.0} bytes on average",
        frames.len(),
        bytes as f64 / frames.len() as f64
    );

    let (n, strict) = best_of(|| {
        frames
            .iter()
            .filter(|f| serde_json::from_slice::<Strict>(f).is_ok())
            .count()
    });
    assert_eq!(n, frames.len(), "the strict enum must parse the whole mix");
    let (_, skim) = best_of(|| {
        frames
            .iter()
            .filter(|f| serde_json::from_slice::<serde::de::IgnoredAny>(f).is_ok())
            .count()
    });
    let (n, decode) = best_of(|| {
        frames
            .iter()
            .filter(|f| black_box(ServerEvent::decode((*f).clone(), 256 * 1024)).is_ok())
            .count()
    });
    assert_eq!(n, frames.len());
    let (n, machine) = best_of(|| {
        let mut config = Config::new("http://127.0.0.1:1").unwrap();
        config.seed = 1;
        let mut conn = Connection::new(config).unwrap();
        let now = Instant::now();
        conn.set_credentials(now, Credentials::new("t"));
        conn.subscribe(now, CH).unwrap();
        conn.connect(now).unwrap();
        conn.handle_open(now, Some("access_token"));
        conn.handle_frame(
            now,
            Bytes::from_static(br#"{"type":"ready","user_id":"me"}"#),
        );
        conn.handle_frame(
            now,
            Bytes::from(format!(r#"{{"type":"subscribed","channel_id":"{CH}"}}"#)),
        );
        while conn.poll_action().is_some() {}
        let mut emitted = 0;
        for f in &frames {
            conn.handle_frame(now, f.clone());
            while let Some(a) = conn.poll_action() {
                if let Action::Emit(e) = a {
                    black_box(e);
                    emitted += 1;
                }
            }
        }
        emitted
    });
    // pong is consumed; the history probe for the channel is an action, not an event.
    assert!(n >= frames.len() - rounds);

    let base = rate(frames.len(), strict);
    println!(
        "serde_json strict enum (original client): {:>9.0} events/s  1.00x",
        base
    );
    for (name, d) in [
        ("serde_json IgnoredAny skim (ceiling)   ", skim),
        ("tether ServerEvent::decode             ", decode),
        ("tether decode + Connection::handle_frame", machine),
    ] {
        let r = rate(frames.len(), d);
        println!("{name}: {r:>9.0} events/s  {:.2}x", r / base);
    }
}
