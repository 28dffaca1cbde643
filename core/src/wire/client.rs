//! Events the client sends to the server.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A client-to-server event (DESIGN section 4), serialized as `{"type":"<snake_case>",...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientEvent {
    /// Heartbeat probe; the server answers `pong`.
    Ping,
    /// Start receiving a channel's events. Prefer [`Connection::subscribe`](crate::Connection::subscribe),
    /// which also replays the subscription after reconnects.
    Subscribe {
        /// Channel id.
        channel_id: String,
    },
    /// Stop receiving a channel's events.
    Unsubscribe {
        /// Channel id.
        channel_id: String,
    },
    /// The user is typing in a channel.
    Typing {
        /// Channel id.
        channel_id: String,
    },
    /// The user stopped typing.
    StopTyping {
        /// Channel id.
        channel_id: String,
    },
    /// Join a voice channel.
    VoiceJoin {
        /// Channel id.
        channel_id: String,
    },
    /// Leave a voice channel.
    VoiceLeave {
        /// Channel id.
        channel_id: String,
    },
    /// WebRTC answer for the server's offer.
    VoiceAnswer {
        /// Channel id.
        channel_id: String,
        /// Session description.
        sdp: String,
    },
    /// A WebRTC ICE candidate.
    VoiceIceCandidate {
        /// Channel id.
        channel_id: String,
        /// The candidate line.
        candidate: String,
    },
    /// Mute the microphone in a voice channel.
    VoiceMute {
        /// Channel id.
        channel_id: String,
    },
    /// Unmute the microphone.
    VoiceUnmute {
        /// Channel id.
        channel_id: String,
    },
    /// Presence status (Kaiku: `online`, `away`, `busy`, `offline`).
    SetStatus {
        /// The status.
        status: String,
    },
    /// Rich presence activity, or `null` to clear it.
    SetActivity {
        /// The activity object, passed through as given.
        activity: Value,
    },
    /// Custom status, or `null` to clear it.
    SetCustomStatus {
        /// The custom status object, passed through as given.
        custom_status: Value,
    },
    /// Any other event the server understands (`voice_stats`, `admin_subscribe`, ...), sent
    /// as given. Queued while offline.
    #[serde(skip)]
    Custom(CustomEvent),
}

impl ClientEvent {
    /// The wire `type` of this event.
    pub fn event_type(&self) -> &str {
        match self {
            Self::Ping => "ping",
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe { .. } => "unsubscribe",
            Self::Typing { .. } => "typing",
            Self::StopTyping { .. } => "stop_typing",
            Self::VoiceJoin { .. } => "voice_join",
            Self::VoiceLeave { .. } => "voice_leave",
            Self::VoiceAnswer { .. } => "voice_answer",
            Self::VoiceIceCandidate { .. } => "voice_ice_candidate",
            Self::VoiceMute { .. } => "voice_mute",
            Self::VoiceUnmute { .. } => "voice_unmute",
            Self::SetStatus { .. } => "set_status",
            Self::SetActivity { .. } => "set_activity",
            Self::SetCustomStatus { .. } => "set_custom_status",
            Self::Custom(c) => &c.event_type,
        }
    }

    /// The channel this event is about, if any.
    pub fn channel_id(&self) -> Option<&str> {
        match self {
            Self::Subscribe { channel_id }
            | Self::Unsubscribe { channel_id }
            | Self::Typing { channel_id }
            | Self::StopTyping { channel_id }
            | Self::VoiceJoin { channel_id }
            | Self::VoiceLeave { channel_id }
            | Self::VoiceAnswer { channel_id, .. }
            | Self::VoiceIceCandidate { channel_id, .. }
            | Self::VoiceMute { channel_id }
            | Self::VoiceUnmute { channel_id } => Some(channel_id),
            _ => None,
        }
    }

    /// The JSON text frame for this event.
    pub fn to_json(&self) -> String {
        match self {
            Self::Ping => r#"{"type":"ping"}"#.to_owned(),
            Self::Custom(c) => c.json.clone(),
            // Serializing these derived variants cannot fail: string keys, no maps with
            // non-string keys, no floats that JSON cannot hold.
            other => serde_json::to_string(other).unwrap_or_default(),
        }
    }
}

/// A client event the core has no variant for, kept as the caller's JSON text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomEvent {
    event_type: String,
    json: String,
}

/// Why [`CustomEvent::new`] refused its input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a custom client event must be a JSON object with a string `type`: {0}")]
pub struct InvalidCustomEvent(String);

impl CustomEvent {
    /// Takes a JSON object with a string `type` field.
    pub fn new(json: impl Into<String>) -> Result<Self, InvalidCustomEvent> {
        #[derive(Deserialize)]
        struct Head {
            #[serde(rename = "type")]
            ty: String,
        }
        let json = json.into();
        if super::decode::first_token(&json) != Some(b'{') {
            return Err(InvalidCustomEvent("not an object".into()));
        }
        let head: Head =
            serde_json::from_str(&json).map_err(|e| InvalidCustomEvent(e.to_string()))?;
        Ok(Self {
            event_type: head.ty,
            json,
        })
    }

    /// The event's `type`.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The JSON text as given.
    pub fn json(&self) -> &str {
        &self.json
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_kaiku_expects() {
        let e = ClientEvent::Subscribe {
            channel_id: "c1".into(),
        };
        assert_eq!(e.to_json(), r#"{"type":"subscribe","channel_id":"c1"}"#);
        assert_eq!(ClientEvent::Ping.to_json(), r#"{"type":"ping"}"#);
        let e = ClientEvent::VoiceIceCandidate {
            channel_id: "c".into(),
            candidate: "x".into(),
        };
        assert_eq!(
            e.to_json(),
            r#"{"type":"voice_ice_candidate","channel_id":"c","candidate":"x"}"#
        );
        let e = ClientEvent::SetActivity {
            activity: Value::Null,
        };
        assert_eq!(e.to_json(), r#"{"type":"set_activity","activity":null}"#);
    }

    #[test]
    fn every_variant_round_trips_and_names_its_type() {
        let all = [
            ClientEvent::Ping,
            ClientEvent::Subscribe {
                channel_id: "a".into(),
            },
            ClientEvent::Unsubscribe {
                channel_id: "a".into(),
            },
            ClientEvent::Typing {
                channel_id: "a".into(),
            },
            ClientEvent::StopTyping {
                channel_id: "a".into(),
            },
            ClientEvent::VoiceJoin {
                channel_id: "a".into(),
            },
            ClientEvent::VoiceLeave {
                channel_id: "a".into(),
            },
            ClientEvent::VoiceAnswer {
                channel_id: "a".into(),
                sdp: "s".into(),
            },
            ClientEvent::VoiceIceCandidate {
                channel_id: "a".into(),
                candidate: "c".into(),
            },
            ClientEvent::VoiceMute {
                channel_id: "a".into(),
            },
            ClientEvent::VoiceUnmute {
                channel_id: "a".into(),
            },
            ClientEvent::SetStatus {
                status: "idle".into(),
            },
            ClientEvent::SetActivity {
                activity: serde_json::json!({"name": "x"}),
            },
            ClientEvent::SetCustomStatus {
                custom_status: Value::Null,
            },
        ];
        for e in all {
            let json = e.to_json();
            let back: ClientEvent = serde_json::from_str(&json).unwrap_or(ClientEvent::Ping);
            assert_eq!(back, e, "{json}");
            assert!(json.contains(&format!("\"type\":\"{}\"", e.event_type())));
        }
    }

    #[test]
    fn custom_events_keep_their_json_and_reject_non_objects() {
        let c = CustomEvent::new(r#"{"type":"voice_stats","x":1}"#);
        assert!(c.is_ok());
        let e = ClientEvent::Custom(c.unwrap_or_else(|_| unreachable!()));
        assert_eq!(e.event_type(), "voice_stats");
        assert_eq!(e.to_json(), r#"{"type":"voice_stats","x":1}"#);
        assert!(CustomEvent::new("[1]").is_err());
        assert!(CustomEvent::new(r#"{"type":3}"#).is_err());
        assert!(CustomEvent::new("{").is_err());
    }
}
