//! The realistic event mix every benchmark uses: 17 event types as Kaiku sends them, about
//! 231 bytes on average, message events a quarter of the traffic; and the original client's
//! way of reading them (`Strict`, `serde_json` into an internally tagged enum).

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

/// The channel every event of the mix is about.
pub const CH: &str = "239635b7-3d0d-4b53-8545-40410b608fb6";
/// The user every event of the mix is from.
pub const USER: &str = "8ff9ed0e-b0f9-46a8-8990-701fb744ce83";

/// The original client's way: every event fully parsed into owned fields (the fields are
/// read only by the parser, which is the point).
#[allow(missing_docs, dead_code)]
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Strict {
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

/// A REST-shaped message object with id number `i`.
pub fn message(i: usize) -> String {
    format!(
        r#"{{"attachments":[],"author":{{"avatar_url":null,"display_name":"Bob","id":"{USER}","status":"online","username":"bob"}},"channel_id":"{CH}","content":"message number {i}","created_at":"2026-11-25T17:46:47.902630Z","edited_at":null,"encrypted":false,"id":"00000000-0000-4000-8000-{i:012}","message_type":"user","parent_id":null,"pinned":false,"reply_to":null,"thread_last_reply_at":null,"thread_reply_count":0}}"#
    )
}

/// One round of the mix: 17 event types, message events a quarter of the traffic.
pub fn mix(i: usize) -> Vec<String> {
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

/// `rounds` rounds of the mix (17 frames each), as frames.
pub fn frames(rounds: usize) -> Vec<Bytes> {
    (0..rounds).flat_map(mix).map(Bytes::from).collect()
}
