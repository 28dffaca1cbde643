//! In-memory data: users, tokens, channels and messages.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::clock::ClockOffset;

/// A registered user.
#[derive(Clone, Debug)]
pub struct User {
    /// User id.
    pub id: String,
    /// Login name.
    pub username: String,
    /// Shown name.
    pub display_name: String,
    password: String,
    /// Presence status.
    pub status: String,
}

#[derive(Clone, Debug)]
struct TokenInfo {
    user_id: String,
    expires: SystemTime,
    refresh: bool,
}

/// A stored message: its fields, kept as the REST object.
#[derive(Clone, Debug)]
pub struct Message {
    /// Message id.
    pub id: String,
    /// Its channel.
    pub channel_id: String,
    /// Author's user id.
    pub author_id: String,
    /// Text.
    pub content: String,
    /// Creation time, by the message clock (the database's; see [`ClockOffset`]): when the
    /// inserting transaction began. Unique across the server.
    pub created_at: SystemTime,
    /// Last edit.
    pub edited_at: Option<SystemTime>,
    /// Attachment objects, shaped as Kaiku's `AttachmentInfo`; empty for a plain post.
    pub attachments: Vec<Value>,
    /// The thread's parent, for a thread reply (which is never in channel history).
    pub parent_id: Option<String>,
    /// Replies in this message's thread.
    pub thread_reply_count: u32,
    /// When the last of them was created (message clock).
    pub thread_last_reply_at: Option<SystemTime>,
}

/// A channel.
#[derive(Clone, Debug)]
pub struct Channel {
    /// Channel id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Creation time.
    pub created_at: SystemTime,
    /// Committed (visible) messages, oldest first by `created_at`: the order Kaiku's
    /// `ORDER BY created_at` reads, whatever order they became visible in.
    pub messages: Vec<Message>,
}

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Unknown, revoked, or the wrong kind of token.
    Invalid,
    /// Past its lifetime.
    Expired,
}

/// Everything the server knows. Survives a simulated restart, like Kaiku's database.
#[derive(Debug, Default)]
pub struct Store {
    users: BTreeMap<String, User>,
    tokens: HashMap<String, TokenInfo>,
    /// Channels by id.
    pub channels: BTreeMap<String, Channel>,
    next_id: u64,
    last_time: Option<SystemTime>,
    /// How far the message clock (`created_at`, `edited_at`) is from the real clock, which
    /// writes `Date` and times tokens.
    pub message_clock: ClockOffset,
    /// Access token lifetime.
    pub access_ttl: Duration,
    /// Refresh token lifetime.
    pub refresh_ttl: Duration,
    /// Who blocked whom: viewer id to the author ids they blocked.
    blocks: BTreeMap<String, BTreeSet<String>>,
    /// Thread replies by parent id, oldest first: kept apart from channel history.
    threads: BTreeMap<String, Vec<Message>>,
}

/// RFC 3339 with microseconds and `Z`, as Kaiku's REST does.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// The `+00:00` spelling Kaiku uses in `message_edit`.
pub fn rfc3339_offset(t: SystemTime) -> String {
    let s = rfc3339(t);
    format!("{}+00:00", s.trim_end_matches('Z'))
}

impl Store {
    /// An empty store.
    pub fn new(access_ttl: Duration) -> Self {
        Self {
            access_ttl,
            refresh_ttl: Duration::from_secs(7 * 24 * 3600),
            ..Self::default()
        }
    }

    /// A fresh UUID-shaped id (version 4 layout, sequential payload: easy to read in logs).
    pub fn new_id(&mut self) -> String {
        self.next_id += 1;
        let n = self.next_id;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (n.wrapping_mul(0x9E37_79B9) >> 8) as u32,
            (n >> 16) as u16,
            (n & 0xfff) as u16,
            ((n >> 12) & 0xfff) as u16,
            n
        )
    }

    /// The message clock now (the database host's: the real clock moved by
    /// [`message_clock`](Self::message_clock)), strictly increasing, so message order by time
    /// is total.
    pub fn now(&mut self) -> SystemTime {
        let mut t = self.message_clock.apply(SystemTime::now());
        if let Some(last) = self.last_time
            && t <= last
        {
            t = last + Duration::from_micros(1);
        }
        self.last_time = Some(t);
        t
    }

    /// Adds a user; `None` when the name is taken.
    pub fn register(&mut self, username: &str, password: &str, display_name: &str) -> Option<User> {
        if self.users.values().any(|u| u.username == username) {
            return None;
        }
        let id = self.new_id();
        let user = User {
            id: id.clone(),
            username: username.to_owned(),
            display_name: display_name.to_owned(),
            password: password.to_owned(),
            status: "online".into(),
        };
        self.users.insert(id, user.clone());
        Some(user)
    }

    /// The user with these credentials.
    pub fn login(&self, username: &str, password: &str) -> Option<User> {
        self.users
            .values()
            .find(|u| u.username == username && u.password == password)
            .cloned()
    }

    /// A user by id.
    pub fn user(&self, id: &str) -> Option<&User> {
        self.users.get(id)
    }

    /// A user by login name.
    pub fn user_by_name(&self, username: &str) -> Option<&User> {
        self.users.values().find(|u| u.username == username)
    }

    /// Sets a user's presence status.
    pub fn set_status(&mut self, user_id: &str, status: &str) {
        if let Some(u) = self.users.get_mut(user_id) {
            u.status = status.to_owned();
        }
    }

    fn jwt(&mut self, user_id: &str, typ: &str, ttl: Duration) -> String {
        let now = SystemTime::now();
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let exp = iat + ttl.as_secs();
        let jti = self.new_id();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"typ":"JWT","alg":"none"}"#);
        let claims = json!({"sub": user_id, "exp": exp, "iat": iat, "typ": typ, "jti": jti});
        let payload = b64.encode(claims.to_string());
        let token = format!("{header}.{payload}.devserver");
        self.tokens.insert(
            token.clone(),
            TokenInfo {
                user_id: user_id.to_owned(),
                expires: now + ttl,
                refresh: typ == "refresh",
            },
        );
        token
    }

    /// A token response body: `{access_token, refresh_token, expires_in, token_type}`.
    pub fn issue_tokens(&mut self, user_id: &str) -> Value {
        let access = self.jwt(user_id, "access", self.access_ttl);
        let refresh = self.jwt(user_id, "refresh", self.refresh_ttl);
        json!({
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": self.access_ttl.as_secs(),
            "token_type": "Bearer",
            "setup_required": false,
        })
    }

    fn check(&self, token: &str, refresh: bool) -> Result<String, TokenError> {
        let info = self.tokens.get(token).ok_or(TokenError::Invalid)?;
        if info.refresh != refresh {
            return Err(TokenError::Invalid);
        }
        if SystemTime::now() >= info.expires {
            return Err(TokenError::Expired);
        }
        Ok(info.user_id.clone())
    }

    /// The user of a valid access token.
    pub fn check_access(&self, token: &str) -> Result<String, TokenError> {
        self.check(token, false)
    }

    /// Rotates a refresh token: the old one is spent.
    pub fn refresh(&mut self, refresh_token: &str) -> Result<Value, TokenError> {
        let user = self.check(refresh_token, true)?;
        self.tokens.remove(refresh_token);
        Ok(self.issue_tokens(&user))
    }

    /// Revokes one token.
    pub fn revoke(&mut self, token: &str) {
        self.tokens.remove(token);
    }

    /// Every access token now reads as expired (refresh tokens keep working).
    pub fn expire_access_tokens(&mut self) {
        let past = SystemTime::now() - Duration::from_secs(1);
        for t in self.tokens.values_mut().filter(|t| !t.refresh) {
            t.expires = past;
        }
    }

    /// Every token, access and refresh, is revoked: only a new login helps.
    pub fn revoke_all(&mut self) {
        self.tokens.clear();
    }

    /// Adds a channel.
    pub fn create_channel(&mut self, name: &str) -> Channel {
        let id = self.new_id();
        let created_at = self.now();
        let ch = Channel {
            id: id.clone(),
            name: name.to_owned(),
            created_at,
            messages: Vec::new(),
        };
        self.channels.insert(id, ch.clone());
        ch
    }

    /// Stores a message (no broadcast; see `DevServer::post`): [`begin_post`] and
    /// [`commit`] at once.
    ///
    /// [`begin_post`]: Self::begin_post
    /// [`commit`]: Self::commit
    pub fn post(&mut self, channel_id: &str, author_id: &str, content: &str) -> Option<Message> {
        let m = self.begin_post(channel_id, author_id, content)?;
        self.commit(m.clone());
        Some(m)
    }

    /// Starts inserting a message: its id and `created_at` (the message clock now, as
    /// Postgres `NOW()` is the transaction's start) are fixed, but nobody sees it until
    /// [`commit`](Self::commit). `None` for an unknown channel.
    pub fn begin_post(
        &mut self,
        channel_id: &str,
        author_id: &str,
        content: &str,
    ) -> Option<Message> {
        if !self.channels.contains_key(channel_id) {
            return None;
        }
        let id = self.new_id();
        let created_at = self.now();
        Some(Message {
            id,
            channel_id: channel_id.to_owned(),
            author_id: author_id.to_owned(),
            content: content.to_owned(),
            created_at,
            edited_at: None,
            attachments: Vec::new(),
            parent_id: None,
            thread_reply_count: 0,
            thread_last_reply_at: None,
        })
    }

    /// Makes a begun message visible, in its place by `created_at` (before messages that
    /// began later but committed first). False when its channel is gone meanwhile.
    pub fn commit(&mut self, m: Message) -> bool {
        let Some(ch) = self.channels.get_mut(&m.channel_id) else {
            return false;
        };
        let at = ch
            .messages
            .partition_point(|o| o.created_at <= m.created_at);
        ch.messages.insert(at, m);
        true
    }

    /// A message by id, for editing.
    pub fn find_message(&mut self, id: &str) -> Option<&mut Message> {
        self.channels
            .values_mut()
            .flat_map(|c| c.messages.iter_mut())
            .find(|m| m.id == id)
    }

    /// Adds an attachment to a stored message; returns the message as it is now, `None` if
    /// it is gone.
    pub fn attach(&mut self, message_id: &str, attachment: Value) -> Option<Message> {
        let m = self.find_message(message_id)?;
        m.attachments.push(attachment);
        Some(m.clone())
    }

    /// Adds a reply to the thread of `parent_id`, which must be a message of `channel_id`:
    /// the reply is kept with its thread, not in channel history; the parent's
    /// `thread_reply_count` and `thread_last_reply_at` move. Returns the reply and the
    /// parent as it is now.
    pub fn post_thread_reply(
        &mut self,
        channel_id: &str,
        parent_id: &str,
        author_id: &str,
        content: &str,
    ) -> Option<(Message, Message)> {
        let in_channel = self
            .channels
            .get(channel_id)
            .is_some_and(|c| c.messages.iter().any(|m| m.id == parent_id));
        if !in_channel {
            return None;
        }
        let mut reply = self.begin_post(channel_id, author_id, content)?;
        reply.parent_id = Some(parent_id.to_owned());
        let parent = self.find_message(parent_id)?;
        parent.thread_reply_count += 1;
        parent.thread_last_reply_at = Some(reply.created_at);
        let parent = parent.clone();
        self.threads
            .entry(parent_id.to_owned())
            .or_default()
            .push(reply.clone());
        Some((reply, parent))
    }

    /// The replies in `parent_id`'s thread, oldest first.
    pub fn thread_replies(&self, parent_id: &str) -> &[Message] {
        self.threads.get(parent_id).map_or(&[], Vec::as_slice)
    }

    /// Kaiku's `ThreadInfoResponse` for a parent: `reply_count`, `last_reply_at`, and the
    /// repliers (`participant_ids`, in order of their first reply) with their avatars.
    pub fn thread_info(&self, parent: &Message) -> Value {
        let mut participants: Vec<&str> = Vec::new();
        for r in self.thread_replies(&parent.id) {
            if !participants.contains(&r.author_id.as_str()) {
                participants.push(&r.author_id);
            }
        }
        let avatars: Vec<Value> = participants.iter().map(|_| Value::Null).collect();
        json!({
            "reply_count": parent.thread_reply_count,
            "last_reply_at": parent.thread_last_reply_at.map(rfc3339),
            "participant_ids": participants,
            "participant_avatars": avatars,
        })
    }

    /// Removes a message.
    pub fn delete_message(&mut self, id: &str) -> Option<Message> {
        for ch in self.channels.values_mut() {
            if let Some(pos) = ch.messages.iter().position(|m| m.id == id) {
                return Some(ch.messages.remove(pos));
            }
        }
        None
    }

    /// A page of history, newest first: up to `limit` messages created strictly before
    /// `before` (by `created_at`, as Kaiku's `ORDER BY created_at DESC`; an unknown `before`
    /// reads from the newest). Returns the items and whether older ones remain. No viewer:
    /// nothing is filtered; see [`history_for`](Self::history_for).
    pub fn history(
        &self,
        channel_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Option<(Vec<&Message>, bool)> {
        self.history_for(channel_id, None, before, limit)
    }

    /// A page of history as `viewer` (a user id) reads it, the way Kaiku's
    /// `chat/messages.rs` builds it: it fetches `limit + 1` rows, drops those whose authors
    /// the viewer blocked, and says `has_more` only if more than `limit` rows are left. A
    /// page whose extra row, or any row, was a blocked author's answers `has_more: false`
    /// while older messages exist: a client that trusts it stops paging too early.
    pub fn history_for(
        &self,
        channel_id: &str,
        viewer: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> Option<(Vec<&Message>, bool)> {
        let ch = self.channels.get(channel_id)?;
        let cursor = before.and_then(|b| ch.messages.iter().find(|m| m.id == b));
        let end = match cursor {
            Some(c) => ch.messages.partition_point(|m| m.created_at < c.created_at),
            None => ch.messages.len(),
        };
        let start = end.saturating_sub(limit.saturating_add(1));
        let blocked = viewer.and_then(|v| self.blocks.get(v));
        let mut items: Vec<&Message> = ch.messages[start..end]
            .iter()
            .rev()
            .filter(|m| blocked.is_none_or(|b| !b.contains(&m.author_id)))
            .collect();
        let has_more = items.len() > limit;
        items.truncate(limit);
        Some((items, has_more))
    }

    /// `viewer` (a user id) blocks `author` (a user id), or with `blocked` false unblocks.
    pub fn set_blocked(&mut self, viewer: &str, author: &str, blocked: bool) {
        if blocked {
            self.blocks
                .entry(viewer.to_owned())
                .or_default()
                .insert(author.to_owned());
        } else if let Some(b) = self.blocks.get_mut(viewer) {
            b.remove(author);
            if b.is_empty() {
                self.blocks.remove(viewer);
            }
        }
    }

    /// The author ids `viewer` (a user id) blocked.
    pub fn blocked_by(&self, viewer: &str) -> Option<&BTreeSet<String>> {
        self.blocks.get(viewer)
    }

    /// Who blocked whom, viewer id to author ids, for the broadcaster.
    pub(crate) fn blocks(&self) -> &BTreeMap<String, BTreeSet<String>> {
        &self.blocks
    }

    /// The REST message object (field order as Kaiku's REST answers), with `thread_info`
    /// when it has thread replies.
    pub fn message_json(&self, m: &Message) -> Value {
        let author = self.user(&m.author_id);
        let mut v = json!({
            "id": m.id,
            "channel_id": m.channel_id,
            "author": {
                "id": m.author_id,
                "username": author.map(|a| a.username.as_str()).unwrap_or("deleted"),
                "display_name": author.map(|a| a.display_name.as_str()).unwrap_or("Deleted user"),
                "avatar_url": null,
                "status": author.map(|a| a.status.as_str()).unwrap_or("offline"),
            },
            "content": m.content,
            "encrypted": false,
            "attachments": m.attachments,
            "reply_to": null,
            "parent_id": m.parent_id,
            "thread_reply_count": m.thread_reply_count,
            "thread_last_reply_at": m.thread_last_reply_at.map(rfc3339),
            "edited_at": m.edited_at.map(rfc3339),
            "created_at": rfc3339(m.created_at),
            "pinned": false,
            "message_type": "user",
        });
        // Kaiku's `thread_info`: only on a message that has thread replies.
        if m.thread_reply_count > 0 {
            v["thread_info"] = self.thread_info(m);
        }
        v
    }

    /// The REST channel object.
    pub fn channel_json(&self, c: &Channel) -> Value {
        json!({
            "id": c.id,
            "name": c.name,
            "channel_type": "text",
            "category_id": null,
            "guild_id": null,
            "topic": null,
            "user_limit": null,
            "position": 0,
            "created_at": rfc3339(c.created_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_channel(clock: ClockOffset) -> (Store, String, String) {
        let mut s = Store::new(Duration::from_secs(900));
        s.message_clock = clock;
        let user = s.register("bob", "password123", "Bob").expect("bob").id;
        let ch = s.create_channel("c").id;
        (s, ch, user)
    }

    fn ids(page: &[&Message]) -> Vec<String> {
        page.iter().map(|m| m.id.clone()).collect()
    }

    #[test]
    fn created_at_reads_the_message_clock_not_the_real_one() {
        let (mut s, ch, user) = store_with_channel(ClockOffset::behind(Duration::from_secs(3600)));
        let m = s.post(&ch, &user, "late clock").expect("post");
        let lag = SystemTime::now()
            .duration_since(m.created_at)
            .expect("stamped in the past");
        assert!(lag >= Duration::from_secs(3599), "{lag:?}");
    }

    #[test]
    fn history_is_ordered_by_created_at_whatever_the_commit_order() {
        let (mut s, ch, user) = store_with_channel(ClockOffset::ZERO);
        let a = s.post(&ch, &user, "a").expect("post");
        // An upload: stamped now, visible only after a later message committed.
        let slow = s.begin_post(&ch, &user, "upload").expect("begin");
        let b = s.post(&ch, &user, "b").expect("post");
        let (page, _) = s.history(&ch, None, 10).expect("channel");
        assert_eq!(ids(&page), [b.id.clone(), a.id.clone()], "not visible yet");
        assert!(s.commit(slow.clone()));
        let (page, more) = s.history(&ch, None, 10).expect("channel");
        assert_eq!(ids(&page), [b.id.clone(), slow.id.clone(), a.id.clone()]);
        assert!(!more);
        // `before` is strictly older by created_at than the cursor's message.
        let (page, more) = s.history(&ch, Some(&b.id), 1).expect("channel");
        assert_eq!(ids(&page), std::slice::from_ref(&slow.id));
        assert!(more);
        let (page, more) = s.history(&ch, Some(&slow.id), 10).expect("channel");
        assert_eq!(ids(&page), [a.id]);
        assert!(!more);
    }

    #[test]
    fn a_blocked_author_in_the_extra_row_makes_has_more_lie_as_kaikus_does() {
        let (mut s, ch, bob) = store_with_channel(ClockOffset::ZERO);
        let eve = s.register("eve", "password123", "Eve").expect("eve").id;
        let alice = s
            .register("alice", "password123", "Alice")
            .expect("alice")
            .id;
        let old = s.post(&ch, &bob, "old").expect("post");
        let hidden = s.post(&ch, &eve, "blocked").expect("post");
        let new = s.post(&ch, &bob, "new").expect("post");
        s.set_blocked(&alice, &eve, true);
        // limit 2 fetches 3 rows: new, blocked, old; one is dropped, two are left.
        let (page, more) = s.history_for(&ch, Some(&alice), None, 2).expect("channel");
        assert_eq!(ids(&page), [new.id.clone(), old.id.clone()]);
        assert!(!more);
        // limit 1 fetches new and blocked: one row left, so "no more", yet `old` exists.
        let (page, more) = s.history_for(&ch, Some(&alice), None, 1).expect("channel");
        assert_eq!(ids(&page), std::slice::from_ref(&new.id));
        assert!(!more, "Kaiku's has_more, computed after the filter");
        let (page, more) = s.history_for(&ch, None, None, 1).expect("channel");
        assert_eq!(ids(&page), std::slice::from_ref(&new.id));
        assert!(more, "unfiltered, older rows are announced");
        s.set_blocked(&alice, &eve, false);
        let (page, _) = s.history_for(&ch, Some(&alice), None, 3).expect("channel");
        assert_eq!(ids(&page), [new.id, hidden.id, old.id]);
    }
}
