//! Kaiku's server events as its server serializes them, and one sample of every event the
//! Kaiku frontend listens to.
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
//!
//! [`samples`] builds one event of each type the frontend listens to: 57, every `ws:*` name of
//! the frontend but its four status names. Each comes with the [`Route`] by which Kaiku
//! delivers it; [`DevServer::deliver`](crate::DevServer::deliver) sends one that way.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::store::Store;

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

/// How Kaiku gets an event to a client, and so which sockets a sample must reach.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Route {
    /// Published to a channel (Kaiku's `channel:{id}` topic): only sockets subscribed to it
    /// receive it.
    Channel(String),
    /// To the receiving user's own sockets, subscribed to anything or not: Kaiku's user,
    /// presence, guild and admin topics, a voice room's peers, and answers to the socket's own
    /// frames.
    User,
}

/// One event as Kaiku sends it, and how it travels.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The event.
    pub event: ServerEvent,
    /// How Kaiku delivers it.
    pub route: Route,
}

/// What the samples are about: the channels they name and the user who acts in them.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Subjects {
    /// A text channel the receiver is subscribed to: messages, typing, reactions, pins,
    /// threads.
    pub channel_id: String,
    /// A DM channel the receiver is subscribed to: calls and the DM's name.
    pub dm_channel_id: String,
    /// The voice channel of the voice, screen-share and webcam events.
    pub voice_channel_id: String,
    /// The guild of the emoji, patch and admin events.
    pub guild_id: String,
    /// Who acts: the other user.
    pub user_id: String,
    /// Their login name.
    pub username: String,
    /// Their shown name.
    pub display_name: String,
    /// A message of theirs in `channel_id`, as the REST object: `message_new` carries it,
    /// edits, reactions, pins and the thread events name it.
    pub message: Value,
}

/// A fixed UUID-shaped id for what the dev server does not have (guilds, reports, streams...).
fn fixed_id(n: u16) -> String {
    format!("5a1e0000-0000-4000-8000-{n:012x}")
}

/// A fixed instant in the two spellings Kaiku writes (`Z` from a serialized `DateTime`,
/// `+00:00` from `to_rfc3339`).
const AT_Z: &str = "2026-11-25T17:46:42.176549Z";
const AT_OFFSET: &str = "2026-11-25T17:46:42.176549+00:00";

/// The SDP the dev server offers after `voice_join`: shaped as an SFU's audio offer, for
/// no real media.
pub const FAKE_SDP_OFFER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\n\
t=0 0\r\na=group:BUNDLE 0\r\na=msid-semantic: WMS\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
c=IN IP4 0.0.0.0\r\na=ice-ufrag:tetherdev\r\na=ice-pwd:tetherdevservericepassword\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n";

/// The ICE candidate the dev server trickles after its offer: a JSON `RTCIceCandidateInit`
/// in a string, as Kaiku's SFU sends it, for a documentation address.
pub fn fake_ice_candidate() -> String {
    json!({
        "candidate": "candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
        "usernameFragment": "tetherdev",
    })
    .to_string()
}

impl Subjects {
    /// Subjects for a server that is not running: made-up channels and a user `bob` with a
    /// message, built by the dev server's own store (so the message has the server's shape).
    pub fn example() -> Self {
        let mut store = Store::new(std::time::Duration::from_secs(900));
        let bob = store
            .register("bob", "password123", "Bob")
            .expect("a fresh store registers bob");
        let channel = store.create_channel("general");
        let dm = store.create_channel("dm");
        let message = store
            .post(&channel.id, &bob.id, "hello from bob")
            .expect("the channel exists");
        Self::new(
            &channel.id,
            &dm.id,
            &bob.id,
            &bob.username,
            &bob.display_name,
            store.message_json(&message),
        )
    }

    pub(crate) fn new(
        channel_id: &str,
        dm_channel_id: &str,
        user_id: &str,
        username: &str,
        display_name: &str,
        message: Value,
    ) -> Self {
        Self {
            channel_id: channel_id.to_owned(),
            dm_channel_id: dm_channel_id.to_owned(),
            voice_channel_id: fixed_id(1),
            guild_id: fixed_id(2),
            user_id: user_id.to_owned(),
            username: username.to_owned(),
            display_name: display_name.to_owned(),
            message,
        }
    }

    fn message_id(&self) -> String {
        self.message["id"].as_str().unwrap_or_default().to_owned()
    }
}

/// One sample of every server event the Kaiku frontend listens to (57 types, each once), in
/// the order its store registers their listeners, each with its [`Route`].
pub fn samples(s: &Subjects) -> Vec<Sample> {
    let ch = || s.channel_id.clone();
    let dm = || s.dm_channel_id.clone();
    let voice = || s.voice_channel_id.clone();
    let guild = || s.guild_id.clone();
    let user = || s.user_id.clone();
    let name = || s.username.clone();
    let shown = || s.display_name.clone();
    let msg = s.message_id();
    let stream = fixed_id(3);
    let reply_id = fixed_id(4);
    let mut reply = s.message.clone();
    reply["id"] = json!(reply_id);
    reply["parent_id"] = json!(msg);
    reply["content"] = json!("a reply in the thread");
    let thread_info = json!({
        "reply_count": 1,
        "last_reply_at": AT_Z,
        "participant_ids": [user()],
        "participant_avatars": [null],
    });
    let activity = json!({
        "type": "game",
        "name": "Minecraft",
        "started_at": AT_Z,
        "details": "Creative Mode",
    });
    let custom_status = json!({"text": "In a meeting", "emoji": "📅", "expires_at": AT_Z});
    let on_channel = |event| Sample {
        event,
        route: Route::Channel(ch()),
    };
    let on_dm = |event| Sample {
        event,
        route: Route::Channel(dm()),
    };
    let to_user = |event| Sample {
        event,
        route: Route::User,
    };
    use ServerEvent as E;
    vec![
        on_channel(E::MessageNew {
            channel_id: ch(),
            message: s.message.clone(),
        }),
        on_channel(E::MessageEdit {
            channel_id: ch(),
            message_id: msg.clone(),
            content: "edited text".into(),
            edited_at: AT_OFFSET.into(),
        }),
        on_channel(E::MessageDelete {
            channel_id: ch(),
            message_id: msg.clone(),
        }),
        on_channel(E::TypingStart {
            channel_id: ch(),
            user_id: user(),
        }),
        on_channel(E::TypingStop {
            channel_id: ch(),
            user_id: user(),
        }),
        to_user(E::PresenceUpdate {
            user_id: user(),
            status: "away".into(),
        }),
        to_user(E::RichPresenceUpdate {
            user_id: user(),
            activity: Some(activity),
        }),
        to_user(E::CustomStatusUpdate {
            user_id: user(),
            custom_status: Some(custom_status),
        }),
        to_user(E::Error {
            code: "message_error".into(),
            message: "missing field `channel_id`".into(),
        }),
        on_dm(E::IncomingCall {
            channel_id: dm(),
            initiator: user(),
            initiator_name: name(),
            capabilities: vec!["audio".into()],
        }),
        on_dm(E::CallEnded {
            channel_id: dm(),
            reason: "last_left".into(),
            duration_secs: Some(42),
        }),
        on_dm(E::CallParticipantJoined {
            channel_id: dm(),
            user_id: user(),
            username: name(),
        }),
        on_dm(E::CallParticipantLeft {
            channel_id: dm(),
            user_id: user(),
        }),
        to_user(E::VoiceOffer {
            channel_id: voice(),
            sdp: FAKE_SDP_OFFER.into(),
        }),
        to_user(E::VoiceIceCandidate {
            channel_id: voice(),
            candidate: fake_ice_candidate(),
        }),
        to_user(E::VoiceUserJoined {
            channel_id: voice(),
            user_id: user(),
            username: name(),
            display_name: shown(),
        }),
        to_user(E::VoiceUserLeft {
            channel_id: voice(),
            user_id: user(),
        }),
        to_user(E::VoiceUserMuted {
            channel_id: voice(),
            user_id: user(),
        }),
        to_user(E::VoiceUserUnmuted {
            channel_id: voice(),
            user_id: user(),
        }),
        to_user(E::VoiceRoomState {
            channel_id: voice(),
            participants: vec![VoiceParticipant {
                user_id: user(),
                username: Some(name()),
                display_name: Some(shown()),
                muted: false,
                screen_sharing: true,
                webcam_active: true,
            }],
            screen_shares: vec![ScreenShareInfo {
                stream_id: stream.clone(),
                user_id: user(),
                username: name(),
                source_label: "Display 1".into(),
                has_audio: false,
                quality: Quality::Medium,
                started_at: AT_Z.into(),
            }],
            webcams: vec![WebcamInfo {
                user_id: user(),
                username: name(),
                quality: Quality::Medium,
            }],
        }),
        to_user(E::VoiceError {
            code: "voice_error".into(),
            message: "Already in voice channel".into(),
        }),
        on_channel(E::ReactionAdd {
            channel_id: ch(),
            message_id: msg.clone(),
            user_id: user(),
            emoji: "👍".into(),
        }),
        on_channel(E::ReactionRemove {
            channel_id: ch(),
            message_id: msg.clone(),
            user_id: user(),
            emoji: "👍".into(),
        }),
        on_channel(E::ChannelPinAdded {
            channel_id: ch(),
            message_id: msg.clone(),
            pinned_by: user(),
            pinned_at: AT_OFFSET.into(),
        }),
        on_channel(E::ChannelPinRemoved {
            channel_id: ch(),
            message_id: msg.clone(),
        }),
        to_user(E::GuildEmojiUpdated {
            guild_id: guild(),
            emojis: vec![GuildEmoji {
                id: fixed_id(5),
                guild_id: guild(),
                name: "tether".into(),
                image_url: format!("/api/guilds/{}/emojis/{}", guild(), fixed_id(5)),
                animated: false,
                uploaded_by: user(),
                created_at: AT_Z.into(),
            }],
        }),
        to_user(E::ChannelRead {
            channel_id: ch(),
            last_read_message_id: Some(msg.clone()),
        }),
        to_user(E::DmRead {
            channel_id: dm(),
            last_read_message_id: None,
        }),
        on_dm(E::DmNameUpdated {
            channel_id: dm(),
            name: "weekend plans".into(),
            updated_by: user(),
        }),
        on_dm(E::CallStarted {
            channel_id: dm(),
            initiator: user(),
            initiator_name: name(),
            capabilities: vec!["audio".into()],
        }),
        on_dm(E::CallDeclined {
            channel_id: dm(),
            user_id: user(),
        }),
        to_user(E::ScreenShareStarted {
            channel_id: voice(),
            user_id: user(),
            stream_id: stream.clone(),
            username: name(),
            source_label: "Display 1".into(),
            has_audio: false,
            quality: Quality::Medium,
            started_at: AT_OFFSET.into(),
        }),
        to_user(E::ScreenShareStopped {
            channel_id: voice(),
            user_id: user(),
            stream_id: stream.clone(),
            reason: "user_stopped".into(),
        }),
        to_user(E::ScreenShareQualityChanged {
            channel_id: voice(),
            user_id: user(),
            new_quality: Quality::Low,
            reason: "bandwidth".into(),
        }),
        to_user(E::WebcamStarted {
            channel_id: voice(),
            user_id: user(),
            username: name(),
            quality: Quality::Medium,
        }),
        to_user(E::WebcamStopped {
            channel_id: voice(),
            user_id: user(),
            reason: "user_stopped".into(),
        }),
        to_user(E::VoiceUserStats {
            channel_id: voice(),
            user_id: user(),
            latency: 42,
            packet_loss: 0.5,
            jitter: 3,
            quality: 92,
        }),
        to_user(E::VoiceLayerChanged {
            channel_id: voice(),
            source_user_id: user(),
            track_source: "webcam".into(),
            active_layer: Layer::Medium,
        }),
        to_user(E::AdminUserBanned {
            user_id: user(),
            username: name(),
        }),
        to_user(E::AdminUserUnbanned {
            user_id: user(),
            username: name(),
        }),
        to_user(E::AdminGuildSuspended {
            guild_id: guild(),
            guild_name: "Test Guild".into(),
        }),
        to_user(E::AdminGuildUnsuspended {
            guild_id: guild(),
            guild_name: "Test Guild".into(),
        }),
        to_user(E::AdminReportCreated {
            report_id: fixed_id(6),
            category: "spam".into(),
            target_type: "message".into(),
        }),
        to_user(E::AdminReportResolved {
            report_id: fixed_id(6),
        }),
        to_user(E::AdminUserDeleted {
            user_id: user(),
            username: name(),
        }),
        to_user(E::AdminGuildDeleted {
            guild_id: guild(),
            guild_name: "Test Guild".into(),
        }),
        to_user(E::FriendRequestReceived {
            friendship_id: fixed_id(7),
            from_user_id: user(),
            from_username: name(),
            from_display_name: shown(),
            from_avatar_url: None,
        }),
        to_user(E::FriendRequestAccepted {
            friendship_id: fixed_id(7),
            user_id: user(),
            username: name(),
            display_name: shown(),
            avatar_url: None,
        }),
        to_user(E::UserBlocked { user_id: user() }),
        to_user(E::UserUnblocked { user_id: user() }),
        on_channel(E::ThreadReplyNew {
            channel_id: ch(),
            parent_id: msg.clone(),
            message: reply,
            thread_info: thread_info.clone(),
        }),
        on_channel(E::ThreadReplyDelete {
            channel_id: ch(),
            parent_id: msg.clone(),
            message_id: reply_id,
            thread_info: json!({
                "reply_count": 0,
                "last_reply_at": null,
                "participant_ids": [],
                "participant_avatars": [],
            }),
        }),
        to_user(E::ThreadRead {
            thread_parent_id: msg.clone(),
            last_read_message_id: Some(fixed_id(4)),
        }),
        to_user(E::PreferencesUpdated {
            preferences: json!({"theme": "solarized-dark", "sound": {"enabled": true}}),
            updated_at: AT_Z.into(),
        }),
        to_user(E::Patch {
            entity_type: "user".into(),
            entity_id: user(),
            diff: json!({"display_name": "Bobby"}),
        }),
        to_user(E::CommandResponse {
            interaction_id: fixed_id(8),
            content: "pong".into(),
            command_name: "ping".into(),
            bot_name: "Helper".into(),
            channel_id: ch(),
            ephemeral: true,
        }),
        to_user(E::CommandResponseTimeout {
            interaction_id: fixed_id(9),
            command_name: "ping".into(),
            channel_id: ch(),
        }),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

    use super::*;

    /// Every server event name the Kaiku frontend listens to (`ws:<type>`; its four status
    /// names are the connection's, not the server's).
    const FRONTEND: [&str; 57] = [
        "admin_guild_deleted",
        "admin_guild_suspended",
        "admin_guild_unsuspended",
        "admin_report_created",
        "admin_report_resolved",
        "admin_user_banned",
        "admin_user_deleted",
        "admin_user_unbanned",
        "call_declined",
        "call_ended",
        "call_participant_joined",
        "call_participant_left",
        "call_started",
        "channel_pin_added",
        "channel_pin_removed",
        "channel_read",
        "command_response",
        "command_response_timeout",
        "custom_status_update",
        "dm_name_updated",
        "dm_read",
        "error",
        "friend_request_accepted",
        "friend_request_received",
        "guild_emoji_updated",
        "incoming_call",
        "message_delete",
        "message_edit",
        "message_new",
        "patch",
        "preferences_updated",
        "presence_update",
        "reaction_add",
        "reaction_remove",
        "rich_presence_update",
        "screen_share_quality_changed",
        "screen_share_started",
        "screen_share_stopped",
        "thread_read",
        "thread_reply_delete",
        "thread_reply_new",
        "typing_start",
        "typing_stop",
        "user_blocked",
        "user_unblocked",
        "voice_error",
        "voice_ice_candidate",
        "voice_layer_changed",
        "voice_offer",
        "voice_room_state",
        "voice_user_joined",
        "voice_user_left",
        "voice_user_muted",
        "voice_user_stats",
        "voice_user_unmuted",
        "webcam_started",
        "webcam_stopped",
    ];

    /// Each event's fields as Kaiku's `ServerEvent` declares them, in its order
    /// (`server-ws-events.rs`, d74233d6).
    const KAIKU_FIELDS: [(&str, &[&str]); 57] = [
        ("message_new", &["channel_id", "message"]),
        (
            "message_edit",
            &["channel_id", "message_id", "content", "edited_at"],
        ),
        ("message_delete", &["channel_id", "message_id"]),
        (
            "reaction_add",
            &["channel_id", "message_id", "user_id", "emoji"],
        ),
        (
            "reaction_remove",
            &["channel_id", "message_id", "user_id", "emoji"],
        ),
        (
            "channel_pin_added",
            &["channel_id", "message_id", "pinned_by", "pinned_at"],
        ),
        ("channel_pin_removed", &["channel_id", "message_id"]),
        ("guild_emoji_updated", &["guild_id", "emojis"]),
        ("typing_start", &["channel_id", "user_id"]),
        ("typing_stop", &["channel_id", "user_id"]),
        ("presence_update", &["user_id", "status"]),
        ("error", &["code", "message"]),
        ("voice_offer", &["channel_id", "sdp"]),
        ("voice_ice_candidate", &["channel_id", "candidate"]),
        (
            "voice_user_joined",
            &["channel_id", "user_id", "username", "display_name"],
        ),
        ("voice_user_left", &["channel_id", "user_id"]),
        ("voice_user_muted", &["channel_id", "user_id"]),
        ("voice_user_unmuted", &["channel_id", "user_id"]),
        (
            "voice_room_state",
            &["channel_id", "participants", "screen_shares", "webcams"],
        ),
        ("voice_error", &["code", "message"]),
        (
            "voice_user_stats",
            &[
                "channel_id",
                "user_id",
                "latency",
                "packet_loss",
                "jitter",
                "quality",
            ],
        ),
        (
            "screen_share_started",
            &[
                "channel_id",
                "user_id",
                "stream_id",
                "username",
                "source_label",
                "has_audio",
                "quality",
                "started_at",
            ],
        ),
        (
            "screen_share_stopped",
            &["channel_id", "user_id", "stream_id", "reason"],
        ),
        (
            "webcam_started",
            &["channel_id", "user_id", "username", "quality"],
        ),
        ("webcam_stopped", &["channel_id", "user_id", "reason"]),
        (
            "screen_share_quality_changed",
            &["channel_id", "user_id", "new_quality", "reason"],
        ),
        (
            "voice_layer_changed",
            &[
                "channel_id",
                "source_user_id",
                "track_source",
                "active_layer",
            ],
        ),
        (
            "incoming_call",
            &["channel_id", "initiator", "initiator_name", "capabilities"],
        ),
        (
            "call_started",
            &["channel_id", "initiator", "initiator_name", "capabilities"],
        ),
        ("call_ended", &["channel_id", "reason", "duration_secs"]),
        (
            "call_participant_joined",
            &["channel_id", "user_id", "username"],
        ),
        ("call_participant_left", &["channel_id", "user_id"]),
        ("call_declined", &["channel_id", "user_id"]),
        ("dm_read", &["channel_id", "last_read_message_id"]),
        ("channel_read", &["channel_id", "last_read_message_id"]),
        ("rich_presence_update", &["user_id", "activity"]),
        ("custom_status_update", &["user_id", "custom_status"]),
        ("patch", &["entity_type", "entity_id", "diff"]),
        ("preferences_updated", &["preferences", "updated_at"]),
        (
            "friend_request_received",
            &[
                "friendship_id",
                "from_user_id",
                "from_username",
                "from_display_name",
                "from_avatar_url",
            ],
        ),
        (
            "friend_request_accepted",
            &[
                "friendship_id",
                "user_id",
                "username",
                "display_name",
                "avatar_url",
            ],
        ),
        ("user_blocked", &["user_id"]),
        ("user_unblocked", &["user_id"]),
        (
            "thread_reply_new",
            &["channel_id", "parent_id", "message", "thread_info"],
        ),
        (
            "thread_reply_delete",
            &["channel_id", "parent_id", "message_id", "thread_info"],
        ),
        ("thread_read", &["thread_parent_id", "last_read_message_id"]),
        ("dm_name_updated", &["channel_id", "name", "updated_by"]),
        ("admin_user_banned", &["user_id", "username"]),
        ("admin_user_unbanned", &["user_id", "username"]),
        ("admin_guild_suspended", &["guild_id", "guild_name"]),
        ("admin_guild_unsuspended", &["guild_id", "guild_name"]),
        ("admin_user_deleted", &["user_id", "username"]),
        ("admin_guild_deleted", &["guild_id", "guild_name"]),
        (
            "admin_report_created",
            &["report_id", "category", "target_type"],
        ),
        ("admin_report_resolved", &["report_id"]),
        (
            "command_response",
            &[
                "interaction_id",
                "content",
                "command_name",
                "bot_name",
                "channel_id",
                "ephemeral",
            ],
        ),
        (
            "command_response_timeout",
            &["interaction_id", "command_name", "channel_id"],
        ),
    ];

    /// A JSON object's keys, in the order the text has them.
    struct Keys(Vec<String>);

    impl<'de> Deserialize<'de> for Keys {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct InOrder;
            impl<'de> Visitor<'de> for InOrder {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((k, IgnoredAny)) = map.next_entry::<String, IgnoredAny>()? {
                        keys.push(k);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(InOrder)
        }
    }

    fn frames() -> Vec<(String, String)> {
        samples(&Subjects::example())
            .iter()
            .map(|s| (s.event.event_type(), s.event.to_json()))
            .collect()
    }

    fn is_uuid(v: &Value) -> bool {
        v.as_str().is_some_and(|s| {
            s.len() == 36
                && s.char_indices().all(|(i, c)| match i {
                    8 | 13 | 18 | 23 => c == '-',
                    _ => c.is_ascii_hexdigit(),
                })
        })
    }

    #[test]
    fn one_sample_of_each_server_event_the_frontend_listens_to() {
        let names: Vec<String> = frames().into_iter().map(|(n, _)| n).collect();
        let unique: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(unique.len(), names.len(), "each type once: {names:?}");
        assert_eq!(unique, FRONTEND.into_iter().collect(), "{names:?}");
    }

    #[test]
    fn every_sample_parses_as_a_json_object_of_its_own_type() {
        for (name, frame) in frames() {
            let v: Value = serde_json::from_str(&frame).unwrap_or_else(|e| panic!("{frame}: {e}"));
            assert!(v.is_object(), "{frame}");
            assert_eq!(v["type"], name.as_str(), "{frame}");
        }
    }

    #[test]
    fn every_sample_has_kaiku_s_fields_in_kaiku_s_order_type_first() {
        let fields: std::collections::BTreeMap<&str, &[&str]> = KAIKU_FIELDS.into_iter().collect();
        assert_eq!(fields.len(), 57);
        for (name, frame) in frames() {
            let Keys(keys) = serde_json::from_str(&frame).expect("an object");
            let mut want = vec!["type"];
            want.extend_from_slice(fields[name.as_str()]);
            assert_eq!(keys, want, "{frame}");
        }
    }

    #[test]
    fn ids_are_uuids_and_nested_values_have_kaiku_s_types() {
        let by_type: std::collections::BTreeMap<String, Value> = frames()
            .into_iter()
            .map(|(n, f)| (n, serde_json::from_str(&f).expect("JSON")))
            .collect();
        for (name, v) in &by_type {
            for (k, field) in v.as_object().expect("an object") {
                let id = k.ends_with("_id")
                    || ["initiator", "pinned_by", "updated_by"].contains(&k.as_str());
                if id && !field.is_null() {
                    assert!(is_uuid(field), "{name}.{k}: {field}");
                }
            }
        }
        let e = |n: &str| &by_type[n];
        // The message objects are the REST shape the frontend's `Message` reads.
        for m in [
            &e("message_new")["message"],
            &e("thread_reply_new")["message"],
        ] {
            assert!(is_uuid(&m["id"]) && is_uuid(&m["author"]["id"]), "{m}");
            assert!(
                m["content"].is_string() && m["attachments"].is_array(),
                "{m}"
            );
            assert!(
                m["created_at"].is_string() && m["edited_at"].is_null(),
                "{m}"
            );
        }
        assert_eq!(
            e("thread_reply_new")["message"]["parent_id"],
            e("thread_reply_new")["parent_id"]
        );
        let info = &e("thread_reply_new")["thread_info"];
        assert!(info["reply_count"].is_u64() && info["participant_ids"].is_array());
        let room = &e("voice_room_state");
        let p = &room["participants"][0];
        assert!(is_uuid(&p["user_id"]) && p["username"].is_string());
        assert!(p["display_name"].is_string() && p["muted"].is_boolean());
        assert!(p["screen_sharing"].is_boolean() && p["webcam_active"].is_boolean());
        assert!(is_uuid(&room["screen_shares"][0]["stream_id"]));
        assert!(room["webcams"][0]["quality"].is_string());
        for (n, f) in [
            ("screen_share_started", "quality"),
            ("webcam_started", "quality"),
            ("screen_share_quality_changed", "new_quality"),
        ] {
            let q = e(n)[f].as_str().expect("a quality");
            assert!(
                ["low", "medium", "high", "premium"].contains(&q),
                "{n}: {q}"
            );
        }
        assert_eq!(e("voice_layer_changed")["active_layer"], "medium");
        assert!(e("voice_user_stats")["packet_loss"].is_f64());
        assert!(e("voice_user_stats")["latency"].is_i64());
        assert!(e("call_ended")["duration_secs"].is_u64());
        assert!(e("dm_read")["last_read_message_id"].is_null());
        assert!(e("friend_request_received")["from_avatar_url"].is_null());
        assert!(e("friend_request_accepted")["avatar_url"].is_null());
        assert!(e("command_response")["ephemeral"].is_boolean());
        assert!(e("guild_emoji_updated")["emojis"][0]["animated"].is_boolean());
        assert!(e("rich_presence_update")["activity"]["started_at"].is_string());
        assert!(e("custom_status_update")["custom_status"]["text"].is_string());
        // Kaiku's two timestamp spellings: `to_rfc3339` and a serialized `DateTime<Utc>`.
        assert!(
            e("message_edit")["edited_at"]
                .as_str()
                .is_some_and(|t| t.ends_with("+00:00"))
        );
        assert!(
            e("preferences_updated")["updated_at"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
        // The candidate is itself JSON, as Kaiku's SFU sends it.
        let c: Value = serde_json::from_str(
            e("voice_ice_candidate")["candidate"]
                .as_str()
                .expect("a string"),
        )
        .expect("the candidate is JSON");
        assert!(
            c["candidate"]
                .as_str()
                .is_some_and(|s| s.starts_with("candidate:"))
        );
        assert!(
            e("voice_offer")["sdp"]
                .as_str()
                .is_some_and(|s| s.starts_with("v=0\r\n"))
        );
    }

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
