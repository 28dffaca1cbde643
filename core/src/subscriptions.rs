//! The channels the app wants, and what each socket was told and answered about them:
//! replayed after every `ready`, refusals matched to the right subscription.

use std::collections::{BTreeMap, VecDeque};

use crate::text::Text;

/// Where one wanted channel stands on the current connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SubState {
    /// Not sent on this connection (offline, or not yet replayed).
    Idle,
    /// `subscribe` sent, no answer yet.
    Pending,
    /// The server answered `subscribed`.
    Confirmed,
}

/// A frame sent on the current socket that the server may answer, in send order. The server
/// handles a socket's frames in order and answers them in order: a `subscribe` always gets
/// `subscribed` or an `error`, a `ping` always gets `pong`, any other frame (typing, voice,
/// presence) gets nothing when it succeeds and may get an `error` when it does not.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Sent {
    Subscribe(Text),
    Ping,
    /// One or more other frames in a row (only whether there were any matters).
    Other,
}

/// What a refusal (`channel_not_found`, `forbidden`) says about the subscriptions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// It answers this channel's `subscribe`: the channel is no longer wanted.
    Rejected(Text),
    /// It answers either this channel's `subscribe` or another frame sent before it (a
    /// `typing`, a `voice_join`), which a refusal can answer too. The channel stays wanted;
    /// the connection sends a `ping` and the `subscribe` again, whose answer is then
    /// unambiguous (D47).
    Uncertain(Text),
}

/// The set of wanted channels. A `BTreeMap`, so replay order is deterministic.
///
/// Verbs: [`subscribe`](Self::subscribe) / [`unsubscribe`](Self::unsubscribe) from the app;
/// [`handle_ready`](Self::handle_ready), [`handle_subscribed`](Self::handle_subscribed),
/// [`handle_error`](Self::handle_error), [`handle_sent`](Self::handle_sent),
/// [`handle_pong`](Self::handle_pong), [`handle_disconnect`](Self::handle_disconnect) from
/// the connection.
#[derive(Clone, Debug, Default)]
pub(crate) struct Subscriptions {
    wanted: BTreeMap<Text, SubState>,
    /// Frames sent on this socket whose answer has not arrived, oldest first. Kaiku's `error`
    /// names no channel, but answers come in order, so a refusal answers the oldest frame
    /// still unanswered that can be refused.
    unanswered: VecDeque<Sent>,
    /// Channels whose `subscribe` was sent again after an uncertain refusal, on this socket:
    /// at most once each.
    retried: std::collections::BTreeSet<Text>,
}

/// What kind of frame went out, for [`Subscriptions::handle_sent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SentKind {
    /// A heartbeat or fence `ping`.
    Ping,
    /// Anything but `subscribe` and `ping`.
    Other,
}

impl Subscriptions {
    /// Adds a channel. Returns whether `subscribe` should be sent now (`online`) — false when
    /// offline (the next `ready` replays it) or when it was already wanted.
    pub(crate) fn subscribe(&mut self, channel: Text, online: bool) -> bool {
        if self.wanted.contains_key(&channel) {
            return false;
        }
        let state = if online {
            SubState::Pending
        } else {
            SubState::Idle
        };
        if online {
            self.unanswered.push_back(Sent::Subscribe(channel.clone()));
        }
        self.wanted.insert(channel, state);
        online
    }

    /// Removes a channel. Returns whether `unsubscribe` should be sent (it was sent or
    /// confirmed on the current connection); offline this only edits the set.
    pub(crate) fn unsubscribe(&mut self, channel: &Text) -> bool {
        self.retried.remove(channel);
        match self.wanted.remove(channel) {
            Some(SubState::Pending | SubState::Confirmed) => true,
            Some(SubState::Idle) | None => false,
        }
    }

    /// A new session is ready: every wanted channel is to be subscribed exactly once.
    pub(crate) fn handle_ready(&mut self) -> Vec<Text> {
        self.unanswered.clear();
        self.retried.clear();
        let mut out = Vec::with_capacity(self.wanted.len());
        for (ch, state) in &mut self.wanted {
            *state = SubState::Pending;
            self.unanswered.push_back(Sent::Subscribe(ch.clone()));
            out.push(ch.clone());
        }
        out
    }

    /// A frame other than `subscribe` went out on the socket.
    pub(crate) fn handle_sent(&mut self, kind: SentKind) {
        match kind {
            SentKind::Ping => self.unanswered.push_back(Sent::Ping),
            SentKind::Other if self.unanswered.back() == Some(&Sent::Other) => {}
            SentKind::Other => self.unanswered.push_back(Sent::Other),
        }
    }

    /// A `pong` arrived: it answers the oldest `ping`, and every frame sent before that ping
    /// has had its answer. Subscribes among them that were not confirmed were answered by
    /// something this table could not attribute (D17): they stay wanted and are tried again
    /// on the next connection.
    pub(crate) fn handle_pong(&mut self) {
        if let Some(pos) = self.unanswered.iter().position(|s| *s == Sent::Ping) {
            self.unanswered.drain(..=pos);
        }
    }

    /// The server confirmed a channel. Returns true when that newly confirms a wanted channel
    /// (a repeated `subscribed` changes nothing).
    ///
    /// The server answers in order, so every frame sent before this `subscribe` has had its
    /// answer: subscribes still pending among them were answered by something this table
    /// could not attribute (Kaiku's `message_error` for a malformed id). They stop being
    /// candidates for later refusals, so an error is never pinned on the wrong channel; they
    /// stay wanted and are tried again on the next connection.
    pub(crate) fn handle_subscribed(&mut self, channel: &Text) -> bool {
        let this = Sent::Subscribe(channel.clone());
        if let Some(pos) = self.unanswered.iter().position(|c| *c == this) {
            self.unanswered.drain(..=pos);
        }
        match self.wanted.get_mut(channel) {
            Some(state) if *state == SubState::Pending => {
                *state = SubState::Confirmed;
                true
            }
            _ => false,
        }
    }

    /// The server refused something with `code`, naming `channel` or not. Returns what that
    /// says about a subscription, if anything:
    ///
    /// - the error names a channel whose `subscribe` is unanswered: that one is rejected;
    /// - else it answers the oldest unanswered frame that can be refused. If no other frame
    ///   is unanswered before the oldest `subscribe`, that `subscribe` is rejected;
    /// - if a `typing` or `voice_join` (any other frame) is unanswered before it, either one
    ///   may be the refused frame: [`Refusal::Uncertain`]. The channel stays wanted, and the
    ///   connection asks again behind a `ping`, once per socket; a second uncertain refusal
    ///   of the same channel waits for that answer.
    pub(crate) fn handle_error(&mut self, code: &str, channel: Option<&Text>) -> Option<Refusal> {
        if !is_subscription_refusal(code) {
            return None;
        }
        if let Some(c) = channel {
            let this = Sent::Subscribe(c.clone());
            let pos = self.unanswered.iter().position(|p| *p == this)?;
            self.unanswered.remove(pos);
            return self.reject(c.clone());
        }
        let pos = self
            .unanswered
            .iter()
            .position(|s| matches!(s, Sent::Subscribe(_)))?;
        let Sent::Subscribe(ch) = self.unanswered[pos].clone() else {
            return None;
        };
        if self.unanswered.iter().take(pos).any(|s| *s == Sent::Other) {
            if !self.retried.insert(ch.clone()) {
                // Already asked again behind a ping: that answer decides.
                return None;
            }
            return Some(Refusal::Uncertain(ch));
        }
        self.unanswered.remove(pos);
        self.reject(ch)
    }

    fn reject(&mut self, channel: Text) -> Option<Refusal> {
        self.retried.remove(&channel);
        // Another `subscribe` of it may still be unanswered (the one sent again): it goes too.
        self.unanswered
            .retain(|s| !matches!(s, Sent::Subscribe(c) if *c == channel));
        self.wanted
            .remove(&channel)
            .map(|_| Refusal::Rejected(channel))
    }

    /// After [`Refusal::Uncertain`]: the connection sends `ping`, then `subscribe` again.
    pub(crate) fn handle_resubscribe_sent(&mut self, channel: &Text) {
        self.unanswered.push_back(Sent::Ping);
        self.unanswered.push_back(Sent::Subscribe(channel.clone()));
    }

    /// The connection is gone: nothing is pending or confirmed any more.
    pub(crate) fn handle_disconnect(&mut self) {
        self.unanswered.clear();
        self.retried.clear();
        for state in self.wanted.values_mut() {
            *state = SubState::Idle;
        }
    }

    /// Whether the app wants this channel.
    pub(crate) fn is_wanted(&self, channel: &Text) -> bool {
        self.wanted.contains_key(channel)
    }

    /// The state of a wanted channel.
    #[cfg(test)]
    pub(crate) fn state(&self, channel: &Text) -> Option<SubState> {
        self.wanted.get(channel).copied()
    }

    /// Wanted channels, in order.
    pub(crate) fn wanted(&self) -> impl Iterator<Item = &Text> {
        self.wanted.keys()
    }
}

/// Error codes that answer a `subscribe`.
pub(crate) fn is_subscription_refusal(code: &str) -> bool {
    matches!(
        code,
        "channel_not_found" | "forbidden" | "CHANNEL_NOT_FOUND" | "FORBIDDEN"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Text {
        Text::from(s)
    }

    #[test]
    fn offline_subscribe_only_edits_the_set() {
        let mut s = Subscriptions::default();
        assert!(!s.subscribe(t("b"), false));
        assert!(!s.subscribe(t("a"), false));
        assert_eq!(s.state(&t("a")), Some(SubState::Idle));
        assert!(!s.unsubscribe(&t("b")));
        assert_eq!(s.wanted().cloned().collect::<Vec<_>>(), vec![t("a")]);
    }

    #[test]
    fn ready_replays_every_wanted_channel_once_in_order() {
        let mut s = Subscriptions::default();
        for c in ["c", "a", "b"] {
            s.subscribe(t(c), false);
        }
        assert_eq!(s.handle_ready(), vec![t("a"), t("b"), t("c")]);
        assert!(s.handle_subscribed(&t("a")));
        s.handle_disconnect();
        assert_eq!(s.state(&t("a")), Some(SubState::Idle));
        assert_eq!(s.handle_ready(), vec![t("a"), t("b"), t("c")]);
    }

    #[test]
    fn online_subscribe_is_sent_once() {
        let mut s = Subscriptions::default();
        assert!(s.subscribe(t("a"), true));
        assert!(!s.subscribe(t("a"), true));
        assert!(s.unsubscribe(&t("a")));
        assert!(!s.unsubscribe(&t("a")));
    }

    #[test]
    fn a_refusal_removes_the_oldest_pending_channel() {
        let mut s = Subscriptions::default();
        s.subscribe(t("a"), false);
        s.subscribe(t("b"), false);
        s.handle_ready();
        assert_eq!(s.handle_error("message_error", None), None);
        assert_eq!(
            s.handle_error("channel_not_found", None),
            Some(Refusal::Rejected(t("a")))
        );
        assert!(!s.is_wanted(&t("a")));
        assert!(s.handle_subscribed(&t("b")));
        assert_eq!(s.handle_error("forbidden", None), None);
    }

    #[test]
    fn a_repeated_subscribed_confirms_nothing_new() {
        let mut s = Subscriptions::default();
        s.subscribe(t("a"), true);
        assert!(s.handle_subscribed(&t("a")));
        assert!(!s.handle_subscribed(&t("a")));
        assert!(!s.handle_subscribed(&t("unknown")));
    }

    #[test]
    fn an_unanswerable_pending_subscribe_never_takes_a_later_refusal() {
        let mut s = Subscriptions::default();
        s.subscribe(t("not-a-uuid"), true); // answered by message_error: no attribution
        s.subscribe(t("b"), true);
        s.subscribe(t("gone"), true);
        assert!(s.handle_subscribed(&t("b")));
        assert_eq!(
            s.handle_error("channel_not_found", None),
            Some(Refusal::Rejected(t("gone")))
        );
        assert!(s.is_wanted(&t("not-a-uuid")));
    }

    #[test]
    fn a_refusal_naming_its_channel_removes_that_one() {
        let mut s = Subscriptions::default();
        s.subscribe(t("a"), true);
        s.subscribe(t("b"), true);
        assert_eq!(
            s.handle_error("forbidden", Some(&t("b"))),
            Some(Refusal::Rejected(t("b")))
        );
        assert!(s.is_wanted(&t("a")));
    }

    #[test]
    fn a_refusal_that_may_answer_a_typing_is_uncertain_and_asked_again_once() {
        let mut s = Subscriptions::default();
        s.subscribe(t("a"), true);
        s.handle_subscribed(&t("a"));
        s.handle_sent(SentKind::Other); // typing in a channel the user may not write in
        s.subscribe(t("b"), true);
        assert_eq!(
            s.handle_error("forbidden", None),
            Some(Refusal::Uncertain(t("b")))
        );
        assert!(s.is_wanted(&t("b")), "never dropped on a guess");
        s.handle_resubscribe_sent(&t("b"));
        // b's own answer to the first subscribe: refused too, still uncertain, not asked again.
        assert_eq!(s.handle_error("forbidden", None), None);
        assert!(s.is_wanted(&t("b")));
        // The fence's pong: everything before it was answered; the second subscribe is next.
        s.handle_pong();
        assert_eq!(
            s.handle_error("forbidden", None),
            Some(Refusal::Rejected(t("b")))
        );
        assert!(!s.is_wanted(&t("b")));
    }

    #[test]
    fn when_the_typing_took_the_refusal_the_channel_is_confirmed() {
        let mut s = Subscriptions::default();
        s.handle_sent(SentKind::Other);
        s.subscribe(t("b"), true);
        assert_eq!(
            s.handle_error("forbidden", None),
            Some(Refusal::Uncertain(t("b")))
        );
        s.handle_resubscribe_sent(&t("b"));
        assert!(s.handle_subscribed(&t("b")));
        s.handle_pong();
        assert!(
            !s.handle_subscribed(&t("b")),
            "the second answer changes nothing"
        );
        assert_eq!(s.state(&t("b")), Some(SubState::Confirmed));
    }

    #[test]
    fn a_pong_retires_every_frame_sent_before_its_ping() {
        let mut s = Subscriptions::default();
        s.handle_sent(SentKind::Other);
        s.handle_sent(SentKind::Ping);
        s.subscribe(t("b"), true);
        s.handle_pong();
        // The typing was answered (silently) before the pong: the refusal is b's.
        assert_eq!(
            s.handle_error("channel_not_found", None),
            Some(Refusal::Rejected(t("b")))
        );
    }
}
