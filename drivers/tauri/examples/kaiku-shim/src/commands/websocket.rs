//! WebSocket Commands: Kaiku's `commands/websocket.rs`, each a few lines over the plugin's
//! Rust API. The names, arguments and answers are Kaiku's, so its frontend does not change.

use serde_json::Value;
use tauri::{AppHandle, Runtime, State, command};
use tauri_plugin_tether::{KaikuStatus, TetherExt};
use tether_core::{ClientEvent, CustomEvent};
use tracing::{debug, info};

use crate::AppState;
use crate::network::{self, send_volatile, text};

/// Kaiku's `ConnectionStatus`: `"disconnected"`, `"connecting"`, `"connected"` or
/// `{"reconnecting":{"attempt":n}}`.
pub type ConnectionStatus = KaikuStatus;

/// Connect to the WebSocket server, with the server and tokens of the auth state.
#[command]
pub async fn ws_connect<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, AppState>,
) -> Result<(), String> {
    let options = network::connect_options(&state).await?;
    info!("Connecting WebSocket to {}", options.server);
    app.tether().connect(options).await.map_err(text)?;
    Ok(())
}

/// Disconnect from the WebSocket server (the close frame leaves first).
#[command]
pub async fn ws_disconnect<R: Runtime>(app: AppHandle<R>) -> Result<(), String> {
    app.tether().disconnect().await.map_err(text)
}

/// The connection status, as the last status event announced it.
#[command]
pub async fn ws_status<R: Runtime>(app: AppHandle<R>) -> Result<ConnectionStatus, String> {
    Ok(app.tether().kaiku_status().await)
}

/// Subscribe to a channel, now and after every reconnect.
#[command]
pub async fn ws_subscribe<R: Runtime>(app: AppHandle<R>, channel_id: String) -> Result<(), String> {
    debug!("Subscribing to channel {}", channel_id);
    app.tether().subscribe(&channel_id).await.map_err(text)
}

/// Unsubscribe from a channel.
#[command]
pub async fn ws_unsubscribe<R: Runtime>(
    app: AppHandle<R>,
    channel_id: String,
) -> Result<(), String> {
    debug!("Unsubscribing from channel {}", channel_id);
    app.tether().unsubscribe(&channel_id).await.map_err(text)
}

/// Send typing indicator. While the link is down it is dropped, quietly.
#[command]
pub async fn ws_typing<R: Runtime>(app: AppHandle<R>, channel_id: String) -> Result<(), String> {
    send_volatile(&app, ClientEvent::Typing { channel_id }).await
}

/// Stop typing indicator. While the link is down it is dropped, quietly.
#[command]
pub async fn ws_stop_typing<R: Runtime>(
    app: AppHandle<R>,
    channel_id: String,
) -> Result<(), String> {
    send_volatile(&app, ClientEvent::StopTyping { channel_id }).await
}

/// Send a ping. tether keeps its own heartbeat and takes every `pong` as its answer, so no
/// `ws:pong` reaches the frontend. While the link is down it is dropped, quietly.
#[command]
pub async fn ws_ping<R: Runtime>(app: AppHandle<R>) -> Result<(), String> {
    send_volatile(&app, ClientEvent::Ping).await
}

/// Send activity update; `null` or nothing clears it. Replayed after every reconnect.
#[command]
pub async fn ws_send_activity<R: Runtime>(
    app: AppHandle<R>,
    activity: Option<Value>,
) -> Result<(), String> {
    debug!("Sending activity update");
    let activity = activity.unwrap_or(Value::Null);
    send(&app, ClientEvent::SetActivity { activity }).await
}

/// Send custom status update; `null` or nothing clears it. Replayed after every reconnect.
#[command]
pub async fn ws_send_custom_status<R: Runtime>(
    app: AppHandle<R>,
    custom_status: Option<Value>,
) -> Result<(), String> {
    debug!("Sending custom status update");
    let custom_status = custom_status.unwrap_or(Value::Null);
    send(&app, ClientEvent::SetCustomStatus { custom_status }).await
}

/// Send a raw client event, `invoke('ws_send', { message })`: the frontend's voice answer and
/// rejoin, screen share, webcam, `voice_stats`, `admin_subscribe`. The event must be one the
/// server accepts ([`SERVER_ACCEPTS`]); anything else is refused here with the list, instead
/// of the server's `message_error` later. Each goes by its policy: `subscribe` and
/// `admin_subscribe` are replayed after reconnects, presence and voice membership too;
/// `voice_answer`, ICE candidates and the media events of a voice session are dropped while
/// offline (quietly, as typing: the reconnect resets the voice session); the rest waits in
/// the offline queue.
#[command]
pub async fn ws_send<R: Runtime>(app: AppHandle<R>, message: Value) -> Result<(), String> {
    let event = client_event(message)?;
    debug!("Sending {}", event.event_type());
    send_volatile(&app, event).await
}

/// The `type`s of Kaiku's `ClientEvent` (server `ws/mod.rs`), as its `message_error` lists
/// them.
pub const SERVER_ACCEPTS: &[&str] = &[
    "ping",
    "subscribe",
    "unsubscribe",
    "typing",
    "stop_typing",
    "voice_join",
    "voice_leave",
    "voice_answer",
    "voice_ice_candidate",
    "voice_mute",
    "voice_unmute",
    "voice_stats",
    "voice_screen_share_start",
    "voice_screen_share_stop",
    "voice_webcam_start",
    "voice_webcam_stop",
    "voice_set_layer_preference",
    "set_activity",
    "set_status",
    "set_custom_status",
    "admin_subscribe",
    "admin_unsubscribe",
];

/// The client event `ws_send` was given: checked against [`SERVER_ACCEPTS`]; the events tether
/// knows are parsed (so a `subscribe` is wanted after reconnects and a `voice_join` replayed),
/// the rest are sent as given.
pub fn client_event(message: Value) -> Result<ClientEvent, String> {
    let Some(kind) = message.get("type").and_then(Value::as_str) else {
        return Err("ws_send: the message must be an object with a string `type`".into());
    };
    if !SERVER_ACCEPTS.contains(&kind) {
        return Err(format!(
            "ws_send: the server accepts no `{kind}` event (it accepts {})",
            SERVER_ACCEPTS.join(", ")
        ));
    }
    let kind = kind.to_owned();
    match serde_json::from_value::<ClientEvent>(message.clone()) {
        Ok(event) => Ok(event),
        // A type tether has no variant for: as given.
        Err(_) if is_passthrough(&kind) => CustomEvent::new(message.to_string())
            .map(ClientEvent::Custom)
            .map_err(|e| format!("ws_send: {e}")),
        Err(e) => Err(format!("ws_send: a malformed `{kind}` event: {e}")),
    }
}

/// The server's events tether's `ClientEvent` has no variant for.
fn is_passthrough(kind: &str) -> bool {
    matches!(
        kind,
        "voice_stats"
            | "voice_screen_share_start"
            | "voice_screen_share_stop"
            | "voice_webcam_start"
            | "voice_webcam_stop"
            | "voice_set_layer_preference"
            | "admin_subscribe"
            | "admin_unsubscribe"
    )
}

async fn send<R: Runtime>(app: &AppHandle<R>, event: ClientEvent) -> Result<(), String> {
    app.tether().send(event).await.map_err(text)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ws_send_takes_what_the_server_accepts_and_says_why_it_refuses_the_rest() {
        let ok = |v: Value| client_event(v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            ok(json!({"type": "voice_answer", "channel_id": "c", "sdp": "v=0"})),
            ClientEvent::VoiceAnswer {
                channel_id: "c".into(),
                sdp: "v=0".into()
            }
        );
        assert_eq!(
            ok(json!({"type": "subscribe", "channel_id": "c"})),
            ClientEvent::Subscribe {
                channel_id: "c".into()
            }
        );
        let admin = ok(json!({"type": "admin_subscribe"}));
        assert_eq!(admin.event_type(), "admin_subscribe");
        let stats = ok(json!({"type": "voice_stats", "channel_id": "c", "latency": 20}));
        assert_eq!(
            serde_json::from_str::<Value>(&stats.to_json()).unwrap()["latency"],
            20
        );
        for (bad, says) in [
            (
                json!({"type": "does_not_exist"}),
                "accepts no `does_not_exist`",
            ),
            (json!({"channel_id": "c"}), "string `type`"),
            (json!("voice_join"), "string `type`"),
            (json!({"type": "voice_join"}), "malformed `voice_join`"),
        ] {
            let e = client_event(bad.clone()).expect_err("refused");
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert_eq!(SERVER_ACCEPTS.len(), 22);
    }
}
