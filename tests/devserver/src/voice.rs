//! Voice signalling as Kaiku's SFU answers it (`voice/ws_handler.rs`), with no media: a fake
//! SDP offer and one fake ICE candidate, and the room's events to its peers.
//!
//! A room is a voice channel's peers, keyed by user, each bound to the socket that joined.
//! After `voice_join` the joiner gets `voice_offer`, `voice_room_state` (themselves included)
//! and a `voice_ice_candidate`, and the other peers `voice_user_joined`. `voice_answer` and
//! `voice_ice_candidate` are taken as they come; mute, unmute, stats, screen shares and webcams
//! tell the other peers (screen shares and webcams the sharer too, as Kaiku does);
//! `voice_leave` ends the user's shares and tells the others `voice_user_left`. A frame Kaiku
//! refuses gets its `voice_error` (`"Room not found: <id>"`, `"Participant not found: <id>"`,
//! `"Already in voice channel"`, ...). A peer outlives its socket, as on Kaiku, whose SFU
//! drops it only when its media connection fails: a client that comes back and joins again
//! meets `Already in voice channel` until it leaves first (what Kaiku's frontend retries).
//! A restart empties every room. Room events go straight to the peers' sockets, not through
//! pub/sub: a deafened socket still gets them.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::Shared;
use crate::kaiku_events::{
    FAKE_SDP_OFFER, Quality, ScreenShareInfo, ServerEvent, VoiceParticipant, WebcamInfo,
    fake_ice_candidate,
};

/// How many screens one user may share at once in a room (Kaiku's `MAX_STREAMS_PER_USER`).
const MAX_SHARES_PER_USER: usize = 3;

/// Every voice room, by channel id.
pub(crate) type Rooms = BTreeMap<String, Room>;

/// One voice channel's peers and what they share.
#[derive(Debug, Default)]
pub(crate) struct Room {
    /// By user id.
    peers: BTreeMap<String, Peer>,
    /// By stream id.
    screen_shares: BTreeMap<String, ScreenShareInfo>,
    /// By user id.
    webcams: BTreeMap<String, WebcamInfo>,
}

#[derive(Debug)]
struct Peer {
    /// The socket that joined.
    conn: u64,
    username: String,
    display_name: String,
    muted: bool,
}

/// Why Kaiku refused a voice frame: the `message` of its `voice_error`.
#[derive(Debug)]
pub(crate) struct Refused(String);

impl Refused {
    fn room(channel_id: &str) -> Self {
        Self(format!("Room not found: {channel_id}"))
    }

    fn participant(user_id: &str) -> Self {
        Self(format!("Participant not found: {user_id}"))
    }

    fn unauthorized() -> Self {
        Self("Not authorized to join this voice channel".into())
    }

    fn signaling(what: &str) -> Self {
        Self(format!("Signaling error: {what}"))
    }

    /// The frame the socket gets.
    pub(crate) fn into_event(self) -> ServerEvent {
        ServerEvent::VoiceError {
            code: "voice_error".into(),
            message: self.0,
        }
    }
}

/// Who gets what, worked out under the rooms' lock and sent after it.
type Outbox = Vec<(u64, ServerEvent)>;

impl Room {
    fn others<'a>(&'a self, user_id: &'a str) -> impl Iterator<Item = u64> + 'a {
        self.peers
            .iter()
            .filter(move |(id, _)| id.as_str() != user_id)
            .map(|(_, p)| p.conn)
    }

    fn everyone(&self) -> impl Iterator<Item = u64> + '_ {
        self.peers.values().map(|p| p.conn)
    }

    fn participants(&self) -> Vec<VoiceParticipant> {
        self.peers
            .iter()
            .map(|(id, p)| VoiceParticipant {
                user_id: id.clone(),
                username: Some(p.username.clone()),
                display_name: Some(p.display_name.clone()),
                muted: p.muted,
                screen_sharing: self.screen_shares.values().any(|s| &s.user_id == id),
                webcam_active: self.webcams.contains_key(id),
            })
            .collect()
    }
}

fn send(shared: &Shared, outbox: Outbox) {
    for (conn, event) in outbox {
        shared.send_to_conn(conn, event.to_json());
    }
}

fn to_all(conns: impl Iterator<Item = u64>, event: &ServerEvent) -> Outbox {
    conns.map(|c| (c, event.clone())).collect()
}

/// The instant Kaiku stamps a share with (`Utc::now()`), in its two spellings: serialized
/// (`Z`) and `to_rfc3339` (`+00:00`).
fn now_both() -> (String, String) {
    let z = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
    let offset = format!("{}+00:00", z.trim_end_matches('Z'));
    (z, offset)
}

/// `voice_join`: the joiner gets the offer, the room and a candidate; the others hear of it.
pub(crate) fn join(
    shared: &Shared,
    conn: u64,
    user_id: &str,
    channel_id: &str,
) -> Result<(), Refused> {
    let (username, display_name) = {
        let store = shared.store();
        if !store.channels.contains_key(channel_id) {
            return Err(Refused::unauthorized());
        }
        let user = store.user(user_id).ok_or_else(Refused::unauthorized)?;
        (user.username.clone(), user.display_name.clone())
    };
    let mut rooms = shared.voice();
    let room = rooms.entry(channel_id.to_owned()).or_default();
    if room.peers.contains_key(user_id) {
        return Err(Refused("Already in voice channel".into()));
    }
    room.peers.insert(
        user_id.to_owned(),
        Peer {
            conn,
            username: username.clone(),
            display_name: display_name.clone(),
            muted: false,
        },
    );
    let mut outbox = vec![
        (
            conn,
            ServerEvent::VoiceOffer {
                channel_id: channel_id.to_owned(),
                sdp: FAKE_SDP_OFFER.to_owned(),
            },
        ),
        (
            conn,
            ServerEvent::VoiceRoomState {
                channel_id: channel_id.to_owned(),
                participants: room.participants(),
                screen_shares: room.screen_shares.values().cloned().collect(),
                webcams: room.webcams.values().cloned().collect(),
            },
        ),
        (
            conn,
            ServerEvent::VoiceIceCandidate {
                channel_id: channel_id.to_owned(),
                candidate: fake_ice_candidate(),
            },
        ),
    ];
    let joined = ServerEvent::VoiceUserJoined {
        channel_id: channel_id.to_owned(),
        user_id: user_id.to_owned(),
        username,
        display_name,
    };
    outbox.extend(to_all(room.others(user_id), &joined));
    drop(rooms);
    send(shared, outbox);
    Ok(())
}

/// `voice_leave`: the user's shares end, and the others hear they left.
pub(crate) fn leave(shared: &Shared, user_id: &str, channel_id: &str) -> Result<(), Refused> {
    if !shared.store().channels.contains_key(channel_id) {
        return Err(Refused::unauthorized());
    }
    let mut rooms = shared.voice();
    let room = rooms
        .get_mut(channel_id)
        .ok_or_else(|| Refused::room(channel_id))?;
    let mut outbox = Outbox::new();
    let shares: Vec<String> = room
        .screen_shares
        .iter()
        .filter(|(_, s)| s.user_id == user_id)
        .map(|(id, _)| id.clone())
        .collect();
    for stream_id in shares {
        room.screen_shares.remove(&stream_id);
        let stopped = ServerEvent::ScreenShareStopped {
            channel_id: channel_id.to_owned(),
            user_id: user_id.to_owned(),
            stream_id,
            reason: "disconnected".into(),
        };
        outbox.extend(to_all(room.others(user_id), &stopped));
    }
    if room.webcams.remove(user_id).is_some() {
        let stopped = ServerEvent::WebcamStopped {
            channel_id: channel_id.to_owned(),
            user_id: user_id.to_owned(),
            reason: "disconnected".into(),
        };
        outbox.extend(to_all(room.others(user_id), &stopped));
    }
    room.peers.remove(user_id);
    let left = ServerEvent::VoiceUserLeft {
        channel_id: channel_id.to_owned(),
        user_id: user_id.to_owned(),
    };
    outbox.extend(to_all(room.others(user_id), &left));
    if room.peers.is_empty() {
        rooms.remove(channel_id);
    }
    drop(rooms);
    send(shared, outbox);
    Ok(())
}

/// The user's peer in the room, or Kaiku's refusal.
fn peer_of<'r>(
    rooms: &'r mut Rooms,
    user_id: &str,
    channel_id: &str,
) -> Result<&'r mut Room, Refused> {
    let room = rooms
        .get_mut(channel_id)
        .ok_or_else(|| Refused::room(channel_id))?;
    if !room.peers.contains_key(user_id) {
        return Err(Refused::participant(user_id));
    }
    Ok(room)
}

/// `voice_answer` and `voice_ice_candidate`: taken, if the user is in the room.
pub(crate) fn signal(shared: &Shared, user_id: &str, channel_id: &str) -> Result<(), Refused> {
    peer_of(&mut shared.voice(), user_id, channel_id).map(|_| ())
}

/// `voice_mute` / `voice_unmute`: the others hear it.
pub(crate) fn mute(
    shared: &Shared,
    user_id: &str,
    channel_id: &str,
    muted: bool,
) -> Result<(), Refused> {
    let mut rooms = shared.voice();
    let room = peer_of(&mut rooms, user_id, channel_id)?;
    if let Some(p) = room.peers.get_mut(user_id) {
        p.muted = muted;
    }
    let (channel_id, user_id) = (channel_id.to_owned(), user_id.to_owned());
    let event = if muted {
        ServerEvent::VoiceUserMuted {
            channel_id,
            user_id: user_id.clone(),
        }
    } else {
        ServerEvent::VoiceUserUnmuted {
            channel_id,
            user_id: user_id.clone(),
        }
    };
    let outbox = to_all(room.others(&user_id), &event);
    drop(rooms);
    send(shared, outbox);
    Ok(())
}

/// A `voice_stats` report's numbers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stats {
    pub latency: i16,
    pub packet_loss: f32,
    pub jitter: i16,
    pub quality: u8,
}

/// `voice_stats`: the others get `voice_user_stats`; from outside the room, nothing (as
/// Kaiku, which drops it without an error).
pub(crate) fn stats(shared: &Shared, user_id: &str, channel_id: &str, s: Stats) {
    let mut rooms = shared.voice();
    let Ok(room) = peer_of(&mut rooms, user_id, channel_id) else {
        return;
    };
    let event = ServerEvent::VoiceUserStats {
        channel_id: channel_id.to_owned(),
        user_id: user_id.to_owned(),
        latency: s.latency,
        packet_loss: s.packet_loss,
        jitter: s.jitter,
        quality: s.quality,
    };
    let outbox = to_all(room.others(user_id), &event);
    drop(rooms);
    send(shared, outbox);
}

/// A `voice_screen_share_start`.
#[derive(Debug)]
pub(crate) struct ShareStart {
    pub stream_id: String,
    pub quality: Quality,
    pub has_audio: bool,
    pub source_label: String,
}

/// `voice_screen_share_start`: everyone in the room, the sharer included, gets
/// `screen_share_started`.
pub(crate) fn share_start(
    shared: &Shared,
    user_id: &str,
    channel_id: &str,
    share: ShareStart,
) -> Result<(), Refused> {
    if !shared.store().channels.contains_key(channel_id) {
        return Err(Refused::unauthorized());
    }
    let mut rooms = shared.voice();
    let room = peer_of(&mut rooms, user_id, channel_id)?;
    let mine = room
        .screen_shares
        .values()
        .filter(|s| s.user_id == user_id)
        .count();
    if mine >= MAX_SHARES_PER_USER {
        return Err(Refused::signaling("Already sharing screen"));
    }
    let username = room
        .peers
        .get(user_id)
        .map(|p| p.username.clone())
        .unwrap_or_default();
    let (at_z, at_offset) = now_both();
    room.screen_shares.insert(
        share.stream_id.clone(),
        ScreenShareInfo {
            stream_id: share.stream_id.clone(),
            user_id: user_id.to_owned(),
            username: username.clone(),
            source_label: share.source_label.clone(),
            has_audio: share.has_audio,
            quality: share.quality,
            started_at: at_z,
        },
    );
    let started = ServerEvent::ScreenShareStarted {
        channel_id: channel_id.to_owned(),
        user_id: user_id.to_owned(),
        stream_id: share.stream_id,
        username,
        source_label: share.source_label,
        has_audio: share.has_audio,
        quality: share.quality,
        started_at: at_offset,
    };
    let outbox = to_all(room.everyone(), &started);
    drop(rooms);
    send(shared, outbox);
    Ok(())
}

/// `voice_screen_share_stop`: everyone in the room gets `screen_share_stopped`; a stream that
/// is not shared is nothing (as on Kaiku), another user's is refused.
pub(crate) fn share_stop(
    shared: &Shared,
    user_id: &str,
    channel_id: &str,
    stream_id: &str,
) -> Result<(), Refused> {
    let mut rooms = shared.voice();
    let room = rooms
        .get_mut(channel_id)
        .ok_or_else(|| Refused::room(channel_id))?;
    match room.screen_shares.get(stream_id) {
        None => return Ok(()),
        Some(s) if s.user_id != user_id => {
            return Err(Refused::signaling("Not your screen share"));
        }
        Some(_) => {}
    }
    room.screen_shares.remove(stream_id);
    let stopped = ServerEvent::ScreenShareStopped {
        channel_id: channel_id.to_owned(),
        user_id: user_id.to_owned(),
        stream_id: stream_id.to_owned(),
        reason: "user_stopped".into(),
    };
    let outbox = to_all(room.everyone(), &stopped);
    drop(rooms);
    send(shared, outbox);
    Ok(())
}

/// `voice_webcam_start`: everyone in the room, the user included, gets `webcam_started`.
pub(crate) fn webcam_start(
    shared: &Shared,
    user_id: &str,
    channel_id: &str,
    quality: Quality,
) -> Result<(), Refused> {
    if !shared.store().channels.contains_key(channel_id) {
        return Err(Refused::unauthorized());
    }
    let mut rooms = shared.voice();
    let room = peer_of(&mut rooms, user_id, channel_id)?;
    if room.webcams.contains_key(user_id) {
        return Err(Refused::signaling("Webcam already active"));
    }
    let username = room
        .peers
        .get(user_id)
        .map(|p| p.username.clone())
        .unwrap_or_default();
    room.webcams.insert(
        user_id.to_owned(),
        WebcamInfo {
            user_id: user_id.to_owned(),
            username: username.clone(),
            quality,
        },
    );
    let started = ServerEvent::WebcamStarted {
        channel_id: channel_id.to_owned(),
        user_id: user_id.to_owned(),
        username,
        quality,
    };
    let outbox = to_all(room.everyone(), &started);
    drop(rooms);
    send(shared, outbox);
    Ok(())
}

/// `voice_webcam_stop`: everyone in the room gets `webcam_stopped`; no webcam is nothing.
pub(crate) fn webcam_stop(shared: &Shared, user_id: &str, channel_id: &str) -> Result<(), Refused> {
    let mut rooms = shared.voice();
    let room = rooms
        .get_mut(channel_id)
        .ok_or_else(|| Refused::room(channel_id))?;
    if room.webcams.remove(user_id).is_none() {
        return Ok(());
    }
    let stopped = ServerEvent::WebcamStopped {
        channel_id: channel_id.to_owned(),
        user_id: user_id.to_owned(),
        reason: "user_stopped".into(),
    };
    let outbox = to_all(room.everyone(), &stopped);
    drop(rooms);
    send(shared, outbox);
    Ok(())
}
