//! The names and payloads a frontend sees: the `ws:*` events the Kaiku frontend listens to.
//!
//! One mapping, used by every driver that talks to a UI (the Tauri plugin emits these; the
//! `tether listen --json` command prints them), so they cannot drift apart:
//!
//! | event | emitted as |
//! |---|---|
//! | any server event | `ws:<type>` with the server's JSON, untouched |
//! | a live copy of a message a catch-up delivered, changed since (an upload's attachment arrived) | `ws:message_update` with the server's `message_new` JSON, untouched: replace the message by id |
//! | status | `ws:status` with the full status object, then the legacy name: `ws:connecting`, `ws:connected`, `ws:disconnected` (payload `null`; `failed` is also `ws:disconnected`) or `ws:reconnecting` (payload: the attempt number) |
//! | catch-up done | `ws:resynced` `{"channel_id","recovered","complete"}` |
//! | subscription refused | `ws:subscription_rejected` `{"channel_id","code"}` |
//! | a refusal that may not be this subscription's (asked again) | `ws:subscription_uncertain` `{"channel_id","code"}` |
//! | voice session reset | `ws:voice_reset` `{"channel_id"}` |
//! | accepted send dropped | `ws:send_dropped` with the client event |
//! | catch-ups wait on the server's rate limit, or resume | `ws:rate_limited` `{"retry_in_ms","waiting"}` (`retry_in_ms` is `null` once reads resume) |

use serde::Serialize;

use crate::action::Event;
use crate::status::Status;

/// Payload of `ws:resynced`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ResyncedPayload {
    /// The channel.
    pub channel_id: String,
    /// Messages the catch-up delivered that had not arrived live.
    pub recovered: usize,
    /// False: reload the channel.
    pub complete: bool,
}

/// Payload of `ws:subscription_rejected`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct SubscriptionRejectedPayload {
    /// The channel.
    pub channel_id: String,
    /// The server's code (`channel_not_found`, `forbidden`).
    pub code: String,
}

/// Payload of `ws:voice_reset`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct VoiceResetPayload {
    /// The voice channel to re-establish.
    pub channel_id: String,
}

/// Payload of `ws:rate_limited`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct RateLimitedPayload {
    /// Milliseconds until catch-up reads resume; `null` once they have.
    pub retry_in_ms: Option<u64>,
    /// Channels whose catch-up waits.
    pub waiting: usize,
}

fn json<T: Serialize>(value: &T) -> String {
    // These payload types hold only strings, numbers and booleans: serializing cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// One event for a frontend: its name and its payload as JSON text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendEvent {
    /// `ws:<something>`.
    pub name: String,
    /// JSON text (`null` for the events that carry nothing).
    pub payload: String,
}

impl FrontendEvent {
    fn new(name: impl Into<String>, payload: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            payload: payload.into(),
        }
    }

    /// One line of `tether listen --json`: `{"event":"<name>","payload":<payload>}`.
    pub fn to_json_line(&self) -> String {
        let name = serde_json::to_string(&self.name).unwrap_or_else(|_| "\"\"".into());
        let mut line = String::with_capacity(self.payload.len() + name.len() + 24);
        line.push_str(r#"{"event":"#);
        line.push_str(&name);
        line.push_str(r#","payload":"#);
        line.push_str(&self.payload);
        line.push('}');
        line
    }
}

/// The frontend events for one connection event, in emission order (one or two).
pub fn frontend_events(event: &Event) -> Vec<FrontendEvent> {
    match event {
        Event::Server(e) if e.is_update() => {
            vec![FrontendEvent::new("ws:message_update", e.json().as_str())]
        }
        Event::Server(e) => vec![FrontendEvent::new(
            format!("ws:{}", e.event_type()),
            e.json().as_str(),
        )],
        Event::Status(s) => {
            let full = serde_json::to_string(s).unwrap_or_else(|_| "null".into());
            let legacy = match s {
                Status::Connecting { .. } => FrontendEvent::new("ws:connecting", "null"),
                Status::Connected { .. } => FrontendEvent::new("ws:connected", "null"),
                Status::Reconnecting { attempt, .. } => {
                    FrontendEvent::new("ws:reconnecting", attempt.to_string())
                }
                _ => FrontendEvent::new("ws:disconnected", "null"),
            };
            vec![FrontendEvent::new("ws:status", full), legacy]
        }
        Event::Resynced {
            channel_id,
            recovered,
            complete,
        } => vec![FrontendEvent::new(
            "ws:resynced",
            json(&ResyncedPayload {
                channel_id: channel_id.to_string(),
                recovered: *recovered,
                complete: *complete,
            }),
        )],
        Event::SubscriptionRejected { channel_id, code } => vec![FrontendEvent::new(
            "ws:subscription_rejected",
            json(&SubscriptionRejectedPayload {
                channel_id: channel_id.to_string(),
                code: code.to_string(),
            }),
        )],
        Event::SubscriptionUncertain { channel_id, code } => vec![FrontendEvent::new(
            "ws:subscription_uncertain",
            json(&SubscriptionRejectedPayload {
                channel_id: channel_id.to_string(),
                code: code.to_string(),
            }),
        )],
        Event::VoiceReset { channel_id } => vec![FrontendEvent::new(
            "ws:voice_reset",
            json(&VoiceResetPayload {
                channel_id: channel_id.clone(),
            }),
        )],
        Event::SendDropped(e) => vec![FrontendEvent::new("ws:send_dropped", e.to_json())],
        Event::RateLimited {
            retry_in_ms,
            waiting,
        } => vec![FrontendEvent::new(
            "ws:rate_limited",
            json(&RateLimitedPayload {
                retry_in_ms: *retry_in_ms,
                waiting: *waiting,
            }),
        )],
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::close::ReconnectReason;
    use crate::wire::ServerEvent;

    fn lines(e: &Event) -> Vec<String> {
        frontend_events(e)
            .iter()
            .map(FrontendEvent::to_json_line)
            .collect()
    }

    #[test]
    fn server_events_are_forwarded_verbatim_under_their_type() {
        let raw = r#"{"type":"reaction_add","emoji":"👍","x":null}"#;
        let e =
            Event::Server(ServerEvent::decode(Bytes::from_static(raw.as_bytes()), 1024).unwrap());
        assert_eq!(
            lines(&e),
            [format!(r#"{{"event":"ws:reaction_add","payload":{raw}}}"#)]
        );
    }

    #[test]
    fn an_updated_copy_has_its_own_name_and_the_servers_json() {
        let raw = r#"{"type":"message_new","channel_id":"c","message":{"id":"m","attachments":[{"id":"f"}]}}"#;
        let e = ServerEvent::decode(Bytes::from_static(raw.as_bytes()), 1024).unwrap();
        assert_eq!(
            lines(&Event::Server(e.into_update())),
            [format!(
                r#"{{"event":"ws:message_update","payload":{raw}}}"#
            )]
        );
    }

    #[test]
    fn status_gives_the_full_object_then_the_legacy_name() {
        let e = Event::Status(Status::Reconnecting {
            attempt: 2,
            retry_in_ms: 1500,
            reason: ReconnectReason::HeartbeatTimeout,
        });
        assert_eq!(
            lines(&e),
            [
                r#"{"event":"ws:status","payload":{"status":"reconnecting","attempt":2,"retry_in_ms":1500,"reason":"heartbeat_timeout"}}"#,
                r#"{"event":"ws:reconnecting","payload":2}"#,
            ]
        );
        assert_eq!(
            lines(&Event::Status(Status::Connected {
                protocol: crate::wire::Protocol::V1,
                compression: None,
            }))[1],
            r#"{"event":"ws:connected","payload":null}"#
        );
    }

    #[test]
    fn resynced_has_its_three_fields() {
        let e = Event::Resynced {
            channel_id: "c".into(),
            recovered: 3,
            complete: true,
        };
        assert_eq!(
            lines(&e),
            [
                r#"{"event":"ws:resynced","payload":{"channel_id":"c","recovered":3,"complete":true}}"#
            ]
        );
    }

    #[test]
    fn rate_limited_says_for_how_long_and_how_many_wait() {
        let e = Event::RateLimited {
            retry_in_ms: Some(42_000),
            waiting: 12,
        };
        assert_eq!(
            lines(&e),
            [r#"{"event":"ws:rate_limited","payload":{"retry_in_ms":42000,"waiting":12}}"#]
        );
        let e = Event::RateLimited {
            retry_in_ms: None,
            waiting: 0,
        };
        assert_eq!(
            lines(&e),
            [r#"{"event":"ws:rate_limited","payload":{"retry_in_ms":null,"waiting":0}}"#]
        );
    }

    #[test]
    fn every_line_is_json_with_both_keys() {
        let events = [
            Event::Status(Status::Disconnected),
            Event::VoiceReset {
                channel_id: "v".into(),
            },
            Event::SubscriptionRejected {
                channel_id: "c".into(),
                code: "forbidden".into(),
            },
            Event::RateLimited {
                retry_in_ms: Some(42_000),
                waiting: 12,
            },
        ];
        for e in &events {
            for line in lines(e) {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                assert!(
                    v.get("event").is_some() && v.get("payload").is_some(),
                    "{line}"
                );
            }
        }
    }
}
