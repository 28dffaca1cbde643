//! Voice Commands: Kaiku's `commands/voice.rs`, the commands that signal through the socket.
//!
//! What changes for Kaiku is only how they send: `app.tether().send(..)` instead of
//! `AppState.websocket`. Kaiku's media code (`WebRtcClient`, `AudioHandle`, the RTP task, the
//! device commands) does not change; here [`Rtc`] stands in for it, so the commands run in
//! tests without media.
//!
//! Across a drop: the server forgets a voice session with its socket. tether replays the
//! `voice_join` (and the mute) on the new socket, drops the old session's signalling
//! (answers and ICE candidates are never sent late), and emits `ws:voice_reset`
//! `{"channel_id"}` after `ready`; [`reset_voice`] then replaces the peer connection, and the
//! server's new `voice_offer` negotiates it from scratch (`handle_voice_offer`, as on a join).

use std::future::Future;
use std::pin::Pin;

use tauri::{AppHandle, Manager, Runtime, State, command};
use tauri_plugin_tether::{ErrorKind, TetherExt};
use tether_core::ClientEvent;
use tracing::{debug, info, warn};

use crate::AppState;

/// A boxed future, for the media engine's async methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The media engine the commands drive: the methods of Kaiku's `WebRtcClient` (and its audio)
/// they call.
pub trait Rtc: Send + Sync {
    /// Creates the peer connection for `channel_id`.
    fn connect<'a>(&'a self, channel_id: &'a str) -> BoxFuture<'a, Result<(), String>>;
    /// Where the local ICE candidates go.
    fn set_on_ice_candidate(
        &self,
        callback: Box<dyn Fn(String) + Send + Sync>,
    ) -> BoxFuture<'_, ()>;
    /// Takes the server's offer; returns the answer's SDP.
    fn handle_offer<'a>(&'a self, sdp: &'a str) -> BoxFuture<'a, Result<String, String>>;
    /// Adds a remote ICE candidate.
    fn add_ice_candidate<'a>(&'a self, candidate: &'a str) -> BoxFuture<'a, Result<(), String>>;
    /// Mutes or unmutes the microphone.
    fn set_muted(&self, muted: bool);
    /// Closes the peer connection and stops audio.
    fn disconnect(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// Voice connection state (Kaiku's, with the media engine behind [`Rtc`]).
pub struct VoiceState {
    /// The media engine (Kaiku: `webrtc` and `audio`).
    pub webrtc: Box<dyn Rtc>,
    /// Current channel ID if connected.
    pub channel_id: Option<String>,
}

impl std::fmt::Debug for VoiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceState")
            .field("channel_id", &self.channel_id)
            .finish_non_exhaustive()
    }
}

impl VoiceState {
    /// A voice state with no channel.
    pub fn new(webrtc: Box<dyn Rtc>) -> Self {
        Self {
            webrtc,
            channel_id: None,
        }
    }
}

/// Sends the local ICE candidates of `channel_id`'s session through the connection. A
/// candidate found while the link is down belongs to a session the reconnect resets: dropped.
async fn send_ice_candidates_through<R: Runtime>(
    app: &AppHandle<R>,
    webrtc: &dyn Rtc,
    channel_id: &str,
) {
    let tether = app.tether();
    let channel_id = channel_id.to_owned();
    webrtc
        .set_on_ice_candidate(Box::new(move |candidate| {
            let tether = tether.clone();
            let channel_id = channel_id.clone();
            tauri::async_runtime::spawn(async move {
                let event = ClientEvent::VoiceIceCandidate {
                    channel_id,
                    candidate,
                };
                match tether.send(event).await {
                    Ok(()) => {}
                    Err(e) if e.kind == ErrorKind::Offline => {
                        debug!("ICE candidate dropped: the link is down");
                    }
                    Err(e) => warn!("Failed to send ICE candidate: {}", e.message),
                }
            });
        }))
        .await;
}

/// Join a voice channel: the peer connection, then `voice_join` (replayed on every new
/// socket until `leave_voice`). The server answers with `voice_offer`.
#[command]
pub async fn join_voice<R: Runtime>(
    channel_id: String,
    state: State<'_, AppState>,
    app: AppHandle<R>,
) -> Result<(), String> {
    info!("Joining voice channel: {}", channel_id);
    state.ensure_voice().await?;
    let mut voice = state.voice.write().await;
    let voice_state = voice.as_mut().ok_or("Voice not initialized")?;
    if voice_state.channel_id.is_some() {
        return Err("Already in a voice channel. Leave first.".into());
    }
    voice_state.webrtc.connect(&channel_id).await?;
    send_ice_candidates_through(&app, voice_state.webrtc.as_ref(), &channel_id).await;
    let join = ClientEvent::VoiceJoin {
        channel_id: channel_id.clone(),
    };
    if let Err(e) = app.tether().send(join).await {
        // No connection (`ws_connect` not called): nothing was joined.
        let _ = voice_state.webrtc.disconnect().await;
        return Err(format!("Failed to send VoiceJoin: {}", e.message));
    }
    voice_state.channel_id = Some(channel_id);
    info!("VoiceJoin sent, waiting for server offer");
    Ok(())
}

/// Handle the SDP offer from the server (`ws:voice_offer`) and send the answer.
#[command]
pub async fn handle_voice_offer<R: Runtime>(
    channel_id: String,
    sdp: String,
    state: State<'_, AppState>,
    app: AppHandle<R>,
) -> Result<(), String> {
    info!("Handling voice offer for channel: {}", channel_id);
    let voice = state.voice.read().await;
    let voice_state = voice.as_ref().ok_or("Voice not initialized")?;
    if voice_state.channel_id.as_ref() != Some(&channel_id) {
        return Err(format!(
            "Received offer for wrong channel: {} (expected {:?})",
            channel_id, voice_state.channel_id
        ));
    }
    let answer = voice_state.webrtc.handle_offer(&sdp).await?;
    let event = ClientEvent::VoiceAnswer {
        channel_id,
        sdp: answer,
    };
    match app.tether().send(event).await {
        Ok(()) => info!("Voice answer sent"),
        // The link dropped since the offer came: this session is over, the reconnect resets
        // it (`ws:voice_reset`) and the server offers again. Nothing to report.
        Err(e) if e.kind == ErrorKind::Offline => debug!("Voice answer dropped: the link is down"),
        Err(e) => return Err(format!("Failed to send VoiceAnswer: {}", e.message)),
    }
    Ok(())
}

/// Handle an ICE candidate from the server (`ws:voice_ice_candidate`).
#[command]
pub async fn handle_voice_ice_candidate(
    channel_id: String,
    candidate: String,
    state: State<'_, AppState>,
) -> Result<(), String> {
    debug!("Handling ICE candidate for channel: {}", channel_id);
    let voice = state.voice.read().await;
    let voice_state = voice.as_ref().ok_or("Voice not initialized")?;
    if voice_state.channel_id.as_ref() != Some(&channel_id) {
        return Err(format!(
            "Received ICE candidate for wrong channel: {channel_id}"
        ));
    }
    voice_state.webrtc.add_ice_candidate(&candidate).await
}

/// Leave the current voice channel.
#[command]
pub async fn leave_voice<R: Runtime>(
    state: State<'_, AppState>,
    app: AppHandle<R>,
) -> Result<(), String> {
    info!("Leaving voice channel");
    let mut voice = state.voice.write().await;
    let voice_state = voice.as_mut().ok_or("Voice not initialized")?;
    let channel_id = voice_state.channel_id.take();
    voice_state.webrtc.disconnect().await?;
    if let Some(channel_id) = channel_id {
        // State: offline it only ends the replay (the server forgot the session already).
        let _ = app
            .tether()
            .send(ClientEvent::VoiceLeave { channel_id })
            .await;
    }
    info!("Left voice channel");
    Ok(())
}

/// Set mute state (replayed with the join after a reconnect).
#[command]
pub async fn set_mute<R: Runtime>(
    muted: bool,
    state: State<'_, AppState>,
    app: AppHandle<R>,
) -> Result<(), String> {
    debug!("Setting mute: {}", muted);
    let voice = state.voice.read().await;
    let voice_state = voice.as_ref().ok_or("Voice not initialized")?;
    voice_state.webrtc.set_muted(muted);
    if let Some(channel_id) = voice_state.channel_id.clone() {
        let event = if muted {
            ClientEvent::VoiceMute { channel_id }
        } else {
            ClientEvent::VoiceUnmute { channel_id }
        };
        let _ = app.tether().send(event).await;
    }
    Ok(())
}

/// Check if currently in a voice channel.
#[command]
pub async fn is_in_voice(state: State<'_, AppState>) -> Result<bool, String> {
    let voice = state.voice.read().await;
    Ok(voice.as_ref().is_some_and(|v| v.channel_id.is_some()))
}

/// Get current voice channel ID.
#[command]
pub async fn get_voice_channel(state: State<'_, AppState>) -> Result<Option<String>, String> {
    let voice = state.voice.read().await;
    Ok(voice.as_ref().and_then(|v| v.channel_id.clone()))
}

/// A reconnect re-joined `channel_id` (`ws:voice_reset`): the old peer connection is dead on
/// the server's side, so it is replaced by a fresh one, which the server's next `voice_offer`
/// negotiates. Nothing happens if the user left meanwhile.
pub async fn reset_voice<R: Runtime>(app: &AppHandle<R>, channel_id: &str) -> Result<(), String> {
    let state = app.state::<AppState>();
    let mut voice = state.voice.write().await;
    let Some(voice_state) = voice.as_mut() else {
        return Ok(());
    };
    if voice_state.channel_id.as_deref() != Some(channel_id) {
        return Ok(());
    }
    info!(
        "Voice session reset by a reconnect: new peer connection for {}",
        channel_id
    );
    voice_state.webrtc.disconnect().await?;
    voice_state.webrtc.connect(channel_id).await?;
    send_ice_candidates_through(app, voice_state.webrtc.as_ref(), channel_id).await;
    Ok(())
}
