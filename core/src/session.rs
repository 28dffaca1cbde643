//! The session a new connection must be told again: presence status, activity, custom status,
//! the admin event subscription, and the voice session. Every voice rule lives here: what a replay re-joins, the order of
//! voice frames around the client-side rate limit, and when the app must rebuild its own
//! voice session (`voice_reset`).

use serde_json::Value;

use crate::outbound::{LimitKey, RateLimiter};
use crate::wire::ClientEvent;

/// Last-value session state, folded from the app's state events.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct SessionState {
    /// Presence status.
    status: Option<String>,
    /// Rich presence activity (`null` clears it, and then nothing needs replaying).
    activity: Option<Value>,
    /// Custom status.
    custom_status: Option<Value>,
    /// The app sent `admin_subscribe` (and no `admin_unsubscribe` since): Kaiku forgets it
    /// with the socket, and its admin events (`admin_user_banned`, ...) stop.
    admin: bool,
    /// The voice session.
    pub(crate) voice: Voice,
}

impl SessionState {
    /// Folds a state event into the session. Returns false for events that are not state.
    pub(crate) fn apply(&mut self, event: &ClientEvent) -> bool {
        match event {
            ClientEvent::SetStatus { status } => self.status = Some(status.clone()),
            ClientEvent::SetActivity { activity } => {
                self.activity = (!activity.is_null()).then(|| activity.clone());
            }
            ClientEvent::SetCustomStatus { custom_status } => {
                self.custom_status = (!custom_status.is_null()).then(|| custom_status.clone());
            }
            ClientEvent::Custom(c) if c.event_type() == ADMIN_SUBSCRIBE => self.admin = true,
            ClientEvent::Custom(c) if c.event_type() == ADMIN_UNSUBSCRIBE => self.admin = false,
            _ => return self.voice.apply(event),
        }
        true
    }

    /// The events that restore this session on a new connection, in a fixed order: status,
    /// activity, custom status, the admin subscription, then the voice session.
    pub(crate) fn replay(&self) -> Vec<ClientEvent> {
        let mut out = Vec::new();
        if let Some(status) = &self.status {
            out.push(ClientEvent::SetStatus {
                status: status.clone(),
            });
        }
        if let Some(activity) = &self.activity {
            out.push(ClientEvent::SetActivity {
                activity: activity.clone(),
            });
        }
        if let Some(custom_status) = &self.custom_status {
            out.push(ClientEvent::SetCustomStatus {
                custom_status: custom_status.clone(),
            });
        }
        if self.admin {
            out.push(admin_subscribe());
        }
        out.extend(self.voice.replay());
        out
    }
}

/// Kaiku's client event that asks for admin events (an elevated admin's socket only).
pub(crate) const ADMIN_SUBSCRIBE: &str = "admin_subscribe";
/// Its opposite.
pub(crate) const ADMIN_UNSUBSCRIBE: &str = "admin_unsubscribe";

fn admin_subscribe() -> ClientEvent {
    // A fixed object with a string `type`: always valid.
    match crate::wire::CustomEvent::new(r#"{"type":"admin_subscribe"}"#) {
        Ok(c) => ClientEvent::Custom(c),
        Err(_) => ClientEvent::Ping,
    }
}

/// The voice channel the user is in.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Joined {
    channel_id: String,
    muted: bool,
}

/// The voice session: which channel, muted or not, and what the sockets were told of it.
///
/// The server forgets a voice session with the socket that joined it. The replay joins
/// again, but the app's own media session (WebRTC) must be rebuilt too, so the `ready` after
/// a socket that carried a `voice_join` tells it (`Event::VoiceReset`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Voice {
    joined: Option<Joined>,
    /// A `voice_join` went out on the current socket since its replay.
    sent: bool,
    /// The socket that ended carried a voice session: the next `ready` says so.
    reset_due: bool,
}

impl Voice {
    /// Folds a voice event. Returns false for events that are not voice state.
    fn apply(&mut self, event: &ClientEvent) -> bool {
        match event {
            ClientEvent::VoiceJoin { channel_id } => {
                self.joined = Some(Joined {
                    channel_id: channel_id.clone(),
                    muted: false,
                });
            }
            ClientEvent::VoiceLeave { channel_id } => {
                if self
                    .joined
                    .as_ref()
                    .is_some_and(|v| &v.channel_id == channel_id)
                {
                    self.joined = None;
                }
            }
            ClientEvent::VoiceMute { channel_id } | ClientEvent::VoiceUnmute { channel_id } => {
                let muted = matches!(event, ClientEvent::VoiceMute { .. });
                if let Some(v) = self.joined.as_mut().filter(|v| &v.channel_id == channel_id) {
                    v.muted = muted;
                }
            }
            _ => return false,
        }
        true
    }

    /// The join, then the mute, that restore the voice session on a new connection.
    fn replay(&self) -> Vec<ClientEvent> {
        let Some(v) = &self.joined else {
            return Vec::new();
        };
        let mut out = vec![ClientEvent::VoiceJoin {
            channel_id: v.channel_id.clone(),
        }];
        out.extend(self.mute());
        out
    }

    /// The user is in a voice channel: its id.
    pub(crate) fn channel(&self) -> Option<&str> {
        self.joined.as_ref().map(|v| v.channel_id.as_str())
    }

    /// The mute the session wants, if muted.
    fn mute(&self) -> Option<ClientEvent> {
        self.joined
            .as_ref()
            .filter(|v| v.muted)
            .map(|v| ClientEvent::VoiceMute {
                channel_id: v.channel_id.clone(),
            })
    }

    /// A state event is about to go out on the live socket (already folded by
    /// [`SessionState::apply`]). Keeps voice frames in a valid order around the rate limit:
    /// a mute change waits for a `voice_join` that the limit holds back (the mute follows the
    /// join, see [`after_join`](Self::after_join)); a `voice_leave` cancels such a join.
    /// Returns whether `event` goes out (through the limiter) now.
    pub(crate) fn before_send(&mut self, event: &ClientEvent, limits: &mut RateLimiter) -> bool {
        match event {
            ClientEvent::VoiceJoin { .. } => self.sent = true,
            ClientEvent::VoiceMute { .. } | ClientEvent::VoiceUnmute { .. }
                if limits.is_pending(&LimitKey::VoiceJoin) =>
            {
                return false;
            }
            ClientEvent::VoiceLeave { .. } => {
                limits.cancel(&LimitKey::VoiceJoin);
                if self.joined.is_none() {
                    // Left on this socket: nothing for the app to rebuild.
                    self.sent = false;
                }
            }
            _ => {}
        }
        true
    }

    /// A `voice_join` the rate limit held back went out: the mute the session wants follows.
    pub(crate) fn after_join(&self, event: &ClientEvent) -> Option<ClientEvent> {
        matches!(event, ClientEvent::VoiceJoin { .. })
            .then(|| self.mute())
            .flatten()
    }

    /// The socket ended: if it carried a voice session, the next `ready` owes a reset.
    pub(crate) fn handle_disconnect(&mut self) {
        if self.sent {
            self.reset_due = true;
            self.sent = false;
        }
    }

    /// At `ready`, after the replay: the channel whose voice session the app must rebuild.
    pub(crate) fn take_reset(&mut self) -> Option<String> {
        let due = std::mem::take(&mut self.reset_due);
        due.then(|| self.channel().map(str::to_owned)).flatten()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::outbound::RateLimitConfig;

    fn voice(kind: &str, channel_id: &str) -> ClientEvent {
        let channel_id = channel_id.to_owned();
        match kind {
            "join" => ClientEvent::VoiceJoin { channel_id },
            "leave" => ClientEvent::VoiceLeave { channel_id },
            "mute" => ClientEvent::VoiceMute { channel_id },
            _ => ClientEvent::VoiceUnmute { channel_id },
        }
    }

    #[test]
    fn session_state_replays_last_values() {
        let mut st = SessionState::default();
        assert!(st.apply(&ClientEvent::SetStatus {
            status: "idle".into()
        }));
        assert!(st.apply(&ClientEvent::SetStatus {
            status: "dnd".into()
        }));
        assert!(st.apply(&voice("join", "v")));
        assert!(st.apply(&voice("mute", "v")));
        assert!(st.apply(&ClientEvent::SetActivity {
            activity: Value::Null
        }));
        assert!(!st.apply(&ClientEvent::Typing {
            channel_id: "x".into()
        }));
        assert_eq!(
            st.replay(),
            vec![
                ClientEvent::SetStatus {
                    status: "dnd".into()
                },
                voice("join", "v"),
                voice("mute", "v"),
            ]
        );
        st.apply(&voice("leave", "v"));
        assert_eq!(st.voice.channel(), None);
    }

    #[test]
    fn the_admin_subscription_is_replayed_until_the_app_ends_it() {
        let custom = |json: &str| ClientEvent::Custom(crate::wire::CustomEvent::new(json).unwrap());
        let mut st = SessionState::default();
        assert!(st.apply(&custom(r#"{"type":"admin_subscribe"}"#)));
        assert!(st.apply(&voice("join", "v")));
        assert_eq!(
            st.replay(),
            vec![custom(r#"{"type":"admin_subscribe"}"#), voice("join", "v")]
        );
        assert!(st.apply(&custom(r#"{"type":"admin_unsubscribe"}"#)));
        assert_eq!(st.replay(), vec![voice("join", "v")]);
        // Other custom events are not session state.
        assert!(!st.apply(&custom(r#"{"type":"voice_stats"}"#)));
    }

    #[test]
    fn a_mute_waits_behind_a_held_join_and_a_leave_cancels_it() {
        let t = crate::test_clock::start();
        let mut limits = RateLimiter::new(RateLimitConfig::default());
        let mut v = Voice::default();
        for e in [voice("join", "v"), voice("leave", "v"), voice("join", "v")] {
            v.apply(&e);
            assert!(v.before_send(&e, &mut limits));
            let _ = limits.offer(t, e);
        }
        // The second join is held by the 1-s limit: a mute must not pass it.
        assert!(limits.is_pending(&LimitKey::VoiceJoin));
        v.apply(&voice("mute", "v"));
        assert!(!v.before_send(&voice("mute", "v"), &mut limits));
        // When the join goes out, the mute follows it.
        let released = limits.handle_timeout(t + Duration::from_secs(1));
        assert_eq!(released, [voice("join", "v")]);
        assert_eq!(v.after_join(&released[0]), Some(voice("mute", "v")));
        // A leave cancels a held join.
        let _ = limits.offer(t + Duration::from_secs(1), voice("join", "v"));
        assert!(limits.is_pending(&LimitKey::VoiceJoin));
        v.apply(&voice("leave", "v"));
        assert!(v.before_send(&voice("leave", "v"), &mut limits));
        assert!(!limits.is_pending(&LimitKey::VoiceJoin));
    }

    #[test]
    fn a_socket_that_carried_a_join_owes_the_app_a_reset_once() {
        let mut limits = RateLimiter::new(RateLimitConfig::default());
        let mut v = Voice::default();
        v.handle_disconnect();
        assert_eq!(v.take_reset(), None, "no join went out");
        v.apply(&voice("join", "v"));
        v.before_send(&voice("join", "v"), &mut limits);
        v.handle_disconnect();
        assert_eq!(v.take_reset().as_deref(), Some("v"));
        assert_eq!(v.take_reset(), None, "once");
        // Joined and left on one socket: nothing to rebuild.
        v.before_send(&voice("join", "v"), &mut limits);
        v.apply(&voice("leave", "v"));
        v.before_send(&voice("leave", "v"), &mut limits);
        v.handle_disconnect();
        assert_eq!(v.take_reset(), None);
    }
}
