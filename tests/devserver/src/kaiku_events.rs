//! Kaiku's server events as its server serializes them.
//!
//! [`ServerEvent`] follows the real server's `ServerEvent` (Kaiku's `ws/mod.rs`, kept in
//! `shared/reference/kaiku/source/server-ws-events.rs`): tagged by `type`, snake_case, each
//! variant's fields in the server's order after `type` (serde writes them as declared, as
//! Kaiku's serde does: `{"type":"typing_start","channel_id":..,"user_id":..}`), optional fields
//! left out where Kaiku skips them. Ids are UUID strings. The dev server writes every event it
//! sends through it. Objects Kaiku holds as a `serde_json::Value` (a message, preferences, a
//! patch's diff, thread info) have sorted keys, as on the wire from Kaiku; so do an activity
//! and a custom status here, which the dev server passes on as the client set them (Kaiku
//! re-serializes its own structs: the same fields, in declared order).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A server-to-client event, shaped as Kaiku's server writes it. Every variant the Kaiku
/// frontend listens to, and the four the core answers with (`ready`, `pong`, `subscribed`,
/// `unsubscribed`); Kaiku's workspace events and `admin_moderation_blocked`, which no frontend
/// listens to, are left out.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
#[allow(missing_docs)] // The fields are Kaiku's; their names say what they are.
pub enum ServerEvent {
    /// The socket is authenticated.
    Ready { user_id: String },
    /// The answer to a `ping`.
    Pong,
    /// A `subscribe` took effect.
    Subscribed { channel_id: String },
    /// An `unsubscribe` took effect.
    Unsubscribed { channel_id: String },
    /// A new message (the whole REST object).
    MessageNew { channel_id: String, message: Value },
    /// A message was edited; `edited_at` is RFC 3339 with `+00:00`.
    MessageEdit {
        channel_id: String,
        message_id: String,
        content: String,
        edited_at: String,
    },
    /// A message was deleted.
    MessageDelete {
        channel_id: String,
        message_id: String,
    },
    /// A reaction was added.
    ReactionAdd {
        channel_id: String,
        message_id: String,
        user_id: String,
        emoji: String,
    },
    /// A reaction was removed.
    ReactionRemove {
        channel_id: String,
        message_id: String,
        user_id: String,
        emoji: String,
    },
    /// A message was pinned; `pinned_at` is RFC 3339 with `+00:00`.
    ChannelPinAdded {
        channel_id: String,
        message_id: String,
        pinned_by: String,
        pinned_at: String,
    },
    /// A message was unpinned.
    ChannelPinRemoved {
        channel_id: String,
        message_id: String,
    },
    /// A guild's custom emojis, all of them.
    GuildEmojiUpdated {
        guild_id: String,
        emojis: Vec<GuildEmoji>,
    },
    /// Someone is typing.
    TypingStart { channel_id: String, user_id: String },
    /// Someone stopped typing.
    TypingStop { channel_id: String, user_id: String },
    /// Someone's status (`online`, `away`, `busy`, `offline`).
    PresenceUpdate { user_id: String, status: String },
    /// An error answering the socket's own frame.
    Error { code: String, message: String },
    /// The SFU's SDP offer, after `voice_join`.
    VoiceOffer { channel_id: String, sdp: String },
    /// An ICE candidate of the SFU (a JSON `RTCIceCandidateInit`, as a string).
    VoiceIceCandidate {
        channel_id: String,
        candidate: String,
    },
    /// Someone joined the voice room.
    VoiceUserJoined {
        channel_id: String,
        user_id: String,
        username: String,
        display_name: String,
    },
    /// Someone left the voice room.
    VoiceUserLeft { channel_id: String, user_id: String },
    /// Someone muted.
    VoiceUserMuted { channel_id: String, user_id: String },
    /// Someone unmuted.
    VoiceUserUnmuted { channel_id: String, user_id: String },
    /// The voice room as the joiner finds it (themselves included).
    VoiceRoomState {
        channel_id: String,
        participants: Vec<VoiceParticipant>,
        screen_shares: Vec<ScreenShareInfo>,
        webcams: Vec<WebcamInfo>,
    },
    /// A voice frame failed; `code` is always `voice_error`.
    VoiceError { code: String, message: String },
    /// A participant's connection quality.
    VoiceUserStats {
        channel_id: String,
        user_id: String,
        latency: i16,
        packet_loss: f32,
        jitter: i16,
        quality: u8,
    },
    /// A screen share started; `started_at` is RFC 3339 with `+00:00`.
    ScreenShareStarted {
        channel_id: String,
        user_id: String,
        stream_id: String,
        username: String,
        source_label: String,
        has_audio: bool,
        quality: Quality,
        started_at: String,
    },
    /// A screen share stopped (`user_stopped`, `disconnected`).
    ScreenShareStopped {
        channel_id: String,
        user_id: String,
        stream_id: String,
        reason: String,
    },
    /// A webcam started.
    WebcamStarted {
        channel_id: String,
        user_id: String,
        username: String,
        quality: Quality,
    },
    /// A webcam stopped (`user_stopped`, `disconnected`).
    WebcamStopped {
        channel_id: String,
        user_id: String,
        reason: String,
    },
    /// A screen share's quality changed.
    ScreenShareQualityChanged {
        channel_id: String,
        user_id: String,
        new_quality: Quality,
        reason: String,
    },
    /// The simulcast layer the SFU forwards changed; `track_source` is `microphone`,
    /// `webcam`, `screen_video:<stream id>` or `screen_audio:<stream id>`.
    VoiceLayerChanged {
        channel_id: String,
        source_user_id: String,
        track_source: String,
        active_layer: Layer,
    },
    /// A DM call rings (to everyone subscribed to the DM).
    IncomingCall {
        channel_id: String,
        initiator: String,
        initiator_name: String,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        capabilities: Vec<String>,
    },
    /// The initiator's acknowledgement of a call.
    CallStarted {
        channel_id: String,
        initiator: String,
        initiator_name: String,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        capabilities: Vec<String>,
    },
    /// A call ended (`cancelled`, `all_declined`, `no_answer`, `last_left`).
    CallEnded {
        channel_id: String,
        reason: String,
        duration_secs: Option<u32>,
    },
    /// Someone joined the call.
    CallParticipantJoined {
        channel_id: String,
        user_id: String,
        username: String,
    },
    /// Someone left the call.
    CallParticipantLeft { channel_id: String, user_id: String },
    /// Someone declined the call.
    CallDeclined { channel_id: String, user_id: String },
    /// The user read a DM on another device.
    DmRead {
        channel_id: String,
        last_read_message_id: Option<String>,
    },
    /// The user read a guild channel on another device.
    ChannelRead {
        channel_id: String,
        last_read_message_id: Option<String>,
    },
    /// Someone's rich presence (`null`: cleared).
    RichPresenceUpdate {
        user_id: String,
        activity: Option<Value>,
    },
    /// Someone's custom status (`null`: cleared).
    CustomStatusUpdate {
        user_id: String,
        custom_status: Option<Value>,
    },
    /// Changed fields of a `user`, `guild`, `member` or `channel`.
    Patch {
        entity_type: String,
        entity_id: String,
        diff: Value,
    },
    /// The user's preferences, changed on another device; `updated_at` ends in `Z`.
    PreferencesUpdated {
        preferences: Value,
        updated_at: String,
    },
    /// A friend request for the user.
    FriendRequestReceived {
        friendship_id: String,
        from_user_id: String,
        from_username: String,
        from_display_name: String,
        from_avatar_url: Option<String>,
    },
    /// The user's friend request was accepted.
    FriendRequestAccepted {
        friendship_id: String,
        user_id: String,
        username: String,
        display_name: String,
        avatar_url: Option<String>,
    },
    /// The user blocked someone (on one of their devices).
    UserBlocked { user_id: String },
    /// The user unblocked someone.
    UserUnblocked { user_id: String },
    /// A reply in a thread (the reply as `message`, the parent's `thread_info`).
    ThreadReplyNew {
        channel_id: String,
        parent_id: String,
        message: Value,
        thread_info: Value,
    },
    /// A thread reply was deleted.
    ThreadReplyDelete {
        channel_id: String,
        parent_id: String,
        message_id: String,
        thread_info: Value,
    },
    /// The user read a thread on another device.
    ThreadRead {
        thread_parent_id: String,
        last_read_message_id: Option<String>,
    },
    /// A group DM was renamed.
    DmNameUpdated {
        channel_id: String,
        name: String,
        updated_by: String,
    },
    /// Admin: a user was banned.
    AdminUserBanned { user_id: String, username: String },
    /// Admin: a user was unbanned.
    AdminUserUnbanned { user_id: String, username: String },
    /// Admin: a guild was suspended.
    AdminGuildSuspended {
        guild_id: String,
        guild_name: String,
    },
    /// Admin: a guild was unsuspended.
    AdminGuildUnsuspended {
        guild_id: String,
        guild_name: String,
    },
    /// Admin: a user was deleted.
    AdminUserDeleted { user_id: String, username: String },
    /// Admin: a guild was deleted.
    AdminGuildDeleted {
        guild_id: String,
        guild_name: String,
    },
    /// Admin: a report was filed.
    AdminReportCreated {
        report_id: String,
        category: String,
        target_type: String,
    },
    /// Admin: a report was resolved.
    AdminReportResolved { report_id: String },
    /// A bot answered the user's slash command.
    CommandResponse {
        interaction_id: String,
        content: String,
        command_name: String,
        bot_name: String,
        channel_id: String,
        ephemeral: bool,
    },
    /// A bot did not answer the user's slash command in time.
    CommandResponseTimeout {
        interaction_id: String,
        command_name: String,
        channel_id: String,
    },
}

impl ServerEvent {
    /// The frame's JSON text, as Kaiku's server writes it.
    pub fn to_json(&self) -> String {
        // Strings, numbers, booleans, vectors and JSON values: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The event's `type` (`"message_new"`, ...).
    pub fn event_type(&self) -> String {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut o)) => match o.remove("type") {
                Some(Value::String(t)) => t,
                _ => String::new(),
            },
            _ => String::new(),
        }
    }
}

/// A screen-share or webcam quality tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Quality {
    Low,
    Medium,
    High,
    Premium,
}

/// A simulcast layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Layer {
    High,
    Medium,
    Low,
}

/// One participant of `voice_room_state`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct VoiceParticipant {
    pub user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub muted: bool,
    pub screen_sharing: bool,
    pub webcam_active: bool,
}

/// An active screen share in `voice_room_state`; `started_at` ends in `Z`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct ScreenShareInfo {
    pub stream_id: String,
    pub user_id: String,
    pub username: String,
    pub source_label: String,
    pub has_audio: bool,
    pub quality: Quality,
    pub started_at: String,
}

/// An active webcam in `voice_room_state`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct WebcamInfo {
    pub user_id: String,
    pub username: String,
    pub quality: Quality,
}

/// A guild's custom emoji; `created_at` ends in `Z`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct GuildEmoji {
    pub id: String,
    pub guild_id: String,
    pub name: String,
    pub image_url: String,
    pub animated: bool,
    pub uploaded_by: String,
    pub created_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_capabilities_and_missing_participant_names_are_left_out_as_kaiku_does() {
        let call = ServerEvent::IncomingCall {
            channel_id: "c".into(),
            initiator: "u".into(),
            initiator_name: "bob".into(),
            capabilities: Vec::new(),
        };
        assert_eq!(
            call.to_json(),
            r#"{"type":"incoming_call","channel_id":"c","initiator":"u","initiator_name":"bob"}"#
        );
        let room = ServerEvent::VoiceRoomState {
            channel_id: "c".into(),
            participants: vec![VoiceParticipant {
                user_id: "u".into(),
                username: None,
                display_name: None,
                muted: true,
                screen_sharing: false,
                webcam_active: false,
            }],
            screen_shares: Vec::new(),
            webcams: Vec::new(),
        };
        assert_eq!(
            room.to_json(),
            r#"{"type":"voice_room_state","channel_id":"c","participants":[{"user_id":"u","muted":true,"screen_sharing":false,"webcam_active":false}],"screen_shares":[],"webcams":[]}"#
        );
        assert_eq!(ServerEvent::Pong.to_json(), r#"{"type":"pong"}"#);
    }
}
