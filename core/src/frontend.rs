//! The names and payloads a frontend sees: the `ws:*` events the Kaiku frontend listens to.
//!
//! One mapping, used by every driver that talks to a UI (the Tauri plugin emits these; the
//! `tether listen --json` command prints them), so they cannot drift apart:
//!
//! | event | emitted as |
//! |---|---|
//! | any server event | `ws:<type>` with the server's JSON, untouched |
//! | a live copy of a message a catch-up delivered, changed since (an upload's attachment arrived) | `ws:message_update` with the server's `message_new` JSON, untouched: replace the message by id |
//! | status | `ws:status` with the full status object, then the legacy name: `ws:connecting`, `ws:connected`, `ws:disconnected` (payload `null`; `failed` is also `ws:disconnected`) or `ws:reconnecting` (payload: the attempt number); in [`StatusOrder::Kaiku`] the legacy names follow Kaiku's own order instead (see [`StatusEvents`]) |
//! | catch-up done | `ws:resynced` `{"channel_id","recovered","complete"}` |
//! | subscription refused | `ws:subscription_rejected` `{"channel_id","code"}` |
//! | a refusal that may not be this subscription's (asked again) | `ws:subscription_uncertain` `{"channel_id","code"}` |
//! | voice session reset | `ws:voice_reset` `{"channel_id"}` |
//! | accepted send dropped | `ws:send_dropped` with the client event |
//! | catch-ups wait on the server's rate limit, or resume | `ws:rate_limited` `{"retry_in_ms","waiting"}` (`retry_in_ms` is `null` once reads resume) |

use serde::{Deserialize, Serialize};

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

/// The frontend events for one connection event, in emission order (one or two), with the
/// status events in tether's order ([`StatusOrder::Tether`]). A frontend written for Kaiku's
/// own order uses a [`StatusEvents`] in [`StatusOrder::Kaiku`] instead.
pub fn frontend_events(event: &Event) -> Vec<FrontendEvent> {
    match event {
        Event::Server(e) if e.is_update() => {
            vec![FrontendEvent::new("ws:message_update", e.json().as_str())]
        }
        Event::Server(e) => vec![FrontendEvent::new(
            format!("ws:{}", e.event_type()),
            e.json().as_str(),
        )],
        Event::Status(s) => vec![status_event(s), tether_legacy_event(s)],
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

/// `ws:status` with the whole status object.
fn status_event(s: &Status) -> FrontendEvent {
    let full = serde_json::to_string(s).unwrap_or_else(|_| "null".into());
    FrontendEvent::new("ws:status", full)
}

/// The legacy name of a status in tether's order: one per status change, named after it (a
/// wait is `ws:reconnecting`, any socket opening `ws:connecting`).
fn tether_legacy_event(s: &Status) -> FrontendEvent {
    let named = match s {
        Status::Connecting { .. } => KaikuStatus::Connecting,
        Status::Connected { .. } => KaikuStatus::Connected,
        Status::Reconnecting { attempt, .. } => KaikuStatus::Reconnecting { attempt: *attempt },
        _ => KaikuStatus::Disconnected,
    };
    named.event()
}

/// Which order the legacy status events (`ws:connecting`, `ws:connected`, `ws:disconnected`,
/// `ws:reconnecting`) follow. `ws:status`, with the whole status, is the same in both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StatusOrder {
    /// One legacy event per status change, named after it: a drop is `ws:reconnecting(n)`
    /// (waiting), then `ws:connecting` (the retry's socket opening), then `ws:connected`.
    #[default]
    Tether,
    /// Kaiku's desktop client's order, which its frontend was written against: `ws:connecting`
    /// then `ws:connected` on the first connect; at a loss `ws:disconnected`, then
    /// `ws:reconnecting` with the attempt number just before each retry opens its socket, then
    /// `ws:connected` or, when the retry fails, `ws:disconnected` again. Never `ws:connecting`
    /// on a retry. See [`KaikuStatus`].
    Kaiku,
}

/// Kaiku's `ConnectionStatus`, serialized as its `ws_status` command answers:
/// `"disconnected"`, `"connecting"`, `"connected"` or `{"reconnecting":{"attempt":n}}`.
///
/// Each tether status has one: the first attempt is `Connecting`; a retry opening its socket
/// (tether's `connecting` with an attempt above 0) is `Reconnecting`; waiting before a retry,
/// failed and disconnected are `Disconnected` (Kaiku's client showed its waits so; `ws:status`
/// says which and why).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum KaikuStatus {
    /// Not connected: never, any more, or waiting before a retry.
    #[default]
    Disconnected,
    /// The first attempt is under way.
    Connecting,
    /// Connected and `ready`.
    Connected,
    /// A retry's socket is opening.
    Reconnecting {
        /// The retry number, from 1.
        attempt: u32,
    },
}

impl KaikuStatus {
    /// The Kaiku status of a tether status.
    pub fn of(status: &Status) -> Self {
        match status {
            Status::Connecting { attempt: 0 } => Self::Connecting,
            Status::Connecting { attempt } => Self::Reconnecting { attempt: *attempt },
            Status::Connected { .. } => Self::Connected,
            _ => Self::Disconnected,
        }
    }

    /// The event Kaiku emits on entering this status.
    fn event(self) -> FrontendEvent {
        match self {
            Self::Disconnected => FrontendEvent::new("ws:disconnected", "null"),
            Self::Connecting => FrontendEvent::new("ws:connecting", "null"),
            Self::Connected => FrontendEvent::new("ws:connected", "null"),
            Self::Reconnecting { attempt } => {
                FrontendEvent::new("ws:reconnecting", attempt.to_string())
            }
        }
    }
}

/// The frontend events of a connection's events, in a chosen [`StatusOrder`]. Kaiku's order
/// depends on what came before (a wait after a failed retry repeats nothing), so one
/// `StatusEvents` follows one connection from its first event.
///
/// In [`StatusOrder::Kaiku`], [`kaiku_status`](Self::kaiku_status) is the status the last legacy
/// event announced: an app answering `ws_status` from it, and updating it before it emits the
/// events, never contradicts the last event its frontend received.
#[derive(Clone, Debug, Default)]
pub struct StatusEvents {
    order: StatusOrder,
    kaiku: KaikuStatus,
}

impl StatusEvents {
    /// Events in `order`, for a connection that has emitted nothing yet.
    pub fn new(order: StatusOrder) -> Self {
        Self {
            order,
            kaiku: KaikuStatus::Disconnected,
        }
    }

    /// The order these events follow.
    pub fn order(&self) -> StatusOrder {
        self.order
    }

    /// Follows `order` from the next status change on (what was announced stays announced).
    pub fn set_order(&mut self, order: StatusOrder) {
        self.order = order;
    }

    /// The Kaiku status the events so far announced (in [`StatusOrder::Tether`] too: the
    /// status of the last status event).
    pub fn kaiku_status(&self) -> KaikuStatus {
        self.kaiku
    }

    /// The frontend events for `event`, in emission order (none, one, two or three).
    pub fn events(&mut self, event: &Event) -> Vec<FrontendEvent> {
        let Event::Status(s) = event else {
            return frontend_events(event);
        };
        let next = KaikuStatus::of(s);
        let mut out = vec![status_event(s)];
        match self.order {
            StatusOrder::Tether => out.push(tether_legacy_event(s)),
            StatusOrder::Kaiku if next == self.kaiku => {}
            StatusOrder::Kaiku => {
                // A loss is always announced before what follows it (a retry that starts at
                // once, after a wake or a network change, skips the wait).
                if self.kaiku == KaikuStatus::Connected && next != KaikuStatus::Disconnected {
                    out.push(KaikuStatus::Disconnected.event());
                }
                out.push(next.event());
            }
        }
        self.kaiku = next;
        out
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

    /// The legacy names (and payloads) a status sequence gives in `order`, `ws:status` left
    /// out, each with the Kaiku status announced after it.
    fn legacy(order: StatusOrder, statuses: &[Status]) -> Vec<(String, KaikuStatus)> {
        let mut events = StatusEvents::new(order);
        let mut out = Vec::new();
        for s in statuses {
            for f in events.events(&Event::Status(s.clone())) {
                assert_ne!(f.name, "", "unnamed");
                if f.name != "ws:status" {
                    out.push((format!("{} {}", f.name, f.payload), events.kaiku_status()));
                }
            }
        }
        out
    }

    fn waiting(attempt: u32) -> Status {
        Status::Reconnecting {
            attempt,
            retry_in_ms: 1000,
            reason: ReconnectReason::ConnectionLost,
            detail: None,
        }
    }

    fn connected() -> Status {
        Status::Connected {
            protocol: crate::wire::Protocol::V1,
            compression: None,
        }
    }

    #[test]
    fn kaiku_order_over_a_drop_a_failed_retry_and_a_recovery() {
        use KaikuStatus as K;
        let statuses = [
            Status::Connecting { attempt: 0 },
            connected(),
            waiting(1),
            Status::Connecting { attempt: 1 },
            waiting(2),
            Status::Connecting { attempt: 2 },
            connected(),
            Status::Disconnected,
        ];
        let names =
            |v: Vec<(String, KaikuStatus)>| v.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        // Kaiku's client: a loss is `disconnected`, each retry `reconnecting(n)` as its
        // socket opens, a failed retry `disconnected` again; never `connecting` on a retry.
        let kaiku = legacy(StatusOrder::Kaiku, &statuses);
        assert_eq!(
            names(kaiku.clone()),
            [
                "ws:connecting null",
                "ws:connected null",
                "ws:disconnected null",
                "ws:reconnecting 1",
                "ws:disconnected null",
                "ws:reconnecting 2",
                "ws:connected null",
                "ws:disconnected null",
            ]
        );
        // The status after each event is the one it announced.
        let after: Vec<KaikuStatus> = kaiku.iter().map(|(_, k)| *k).collect();
        assert_eq!(
            after,
            [
                K::Connecting,
                K::Connected,
                K::Disconnected,
                K::Reconnecting { attempt: 1 },
                K::Disconnected,
                K::Reconnecting { attempt: 2 },
                K::Connected,
                K::Disconnected,
            ]
        );
        // tether's own order names each status change.
        assert_eq!(
            names(legacy(StatusOrder::Tether, &statuses)),
            [
                "ws:connecting null",
                "ws:connected null",
                "ws:reconnecting 1",
                "ws:connecting null",
                "ws:reconnecting 2",
                "ws:connecting null",
                "ws:connected null",
                "ws:disconnected null",
            ]
        );
    }

    #[test]
    fn kaiku_order_announces_a_loss_before_a_retry_that_skipped_its_wait() {
        // A wake or a network change: from connected straight to a retry's socket.
        let got = legacy(
            StatusOrder::Kaiku,
            &[
                Status::Connecting { attempt: 0 },
                connected(),
                Status::Connecting { attempt: 1 },
                connected(),
            ],
        );
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "ws:connecting null",
                "ws:connected null",
                "ws:disconnected null",
                "ws:reconnecting 1",
                "ws:connected null",
            ]
        );
    }

    #[test]
    fn kaiku_order_says_nothing_twice_and_fails_as_disconnected() {
        let failed = Status::Failed {
            reason: crate::close::FailReason::Auth,
            http_status: Some(401),
            detail: None,
        };
        let got = legacy(
            StatusOrder::Kaiku,
            &[
                Status::Connecting { attempt: 0 },
                waiting(1),
                waiting(1),
                failed,
                Status::Disconnected,
            ],
        );
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ws:connecting null", "ws:disconnected null"]);
        // `ws:status` still carries every change.
        let mut events = StatusEvents::new(StatusOrder::Kaiku);
        events.events(&Event::Status(Status::Connecting { attempt: 0 }));
        let again = events.events(&Event::Status(Status::Connecting { attempt: 0 }));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].name, "ws:status");
    }

    #[test]
    fn kaiku_status_serializes_as_kaiku_s_connection_status() {
        let json = |k: KaikuStatus| serde_json::to_string(&k).unwrap();
        assert_eq!(json(KaikuStatus::Disconnected), r#""disconnected""#);
        assert_eq!(json(KaikuStatus::Connecting), r#""connecting""#);
        assert_eq!(json(KaikuStatus::Connected), r#""connected""#);
        assert_eq!(
            json(KaikuStatus::Reconnecting { attempt: 2 }),
            r#"{"reconnecting":{"attempt":2}}"#
        );
        assert_eq!(
            serde_json::from_str::<StatusOrder>(r#""kaiku""#).unwrap(),
            StatusOrder::Kaiku
        );
    }

    #[test]
    fn status_gives_the_full_object_then_the_legacy_name() {
        let e = Event::Status(Status::Reconnecting {
            attempt: 2,
            retry_in_ms: 1500,
            reason: ReconnectReason::HeartbeatTimeout,
            detail: None,
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
