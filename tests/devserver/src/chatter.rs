//! Simulated users: the demo's people. Each one now and then shows typing in a channel, then
//! posts a short line there, through the server's own post path, so every client sees them
//! as it would see a person.

use std::sync::Arc;
use std::time::Duration;

use crate::kaiku_events::ServerEvent;

use crate::{Shared, rest};

/// Who the simulated users are and how often they speak. Off unless
/// [`ServerConfig::chatter`](crate::ServerConfig::chatter) asks.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Chatter {
    /// Login names of existing users who speak (the demo's `bob` and `carol`). A name the
    /// server does not know stays silent.
    pub users: Vec<String>,
    /// Each user's mean pause between two posts; every pause is drawn from `[pace/2,
    /// 3*pace/2]`, and a third of it (at most 2.5 s) is spent typing. Default 8 s.
    pub pace: Duration,
    /// Seed of the dice (which user, which channel, which line, how long).
    pub seed: u64,
}

impl Chatter {
    /// `users`, at the default pace.
    pub fn new<S: Into<String>>(users: impl IntoIterator<Item = S>) -> Self {
        Self {
            users: users.into_iter().map(Into::into).collect(),
            pace: Duration::from_secs(8),
            seed: 0x7e7e_c4a7,
        }
    }
}

/// Short chat lines, plausible in any channel.
const LINES: [&str; 24] = [
    "morning all",
    "anyone around?",
    "coffee first, then code",
    "the build is green again",
    "lunch in 10?",
    "did the deploy go out?",
    "brb",
    "nice, that fixed it",
    "who broke main? :)",
    "reviewing your PR now",
    "looks good to me",
    "can we move the standup?",
    "my wifi keeps dropping today",
    "tests pass locally, CI disagrees",
    "pushed a fix",
    "thanks!",
    "ok, back",
    "that's a good point",
    "I'll take a look after lunch",
    "is the staging server down?",
    "works on my machine",
    "shipping it",
    "haha",
    "+1",
];

/// Typing shows at most this long before the post (Kaiku clients repeat `typing` every 3 s,
/// so one `typing_start` stays believable this long).
const MAX_TYPING: Duration = Duration::from_millis(2500);

/// Spawns one task per simulated user; they end with the runtime (the server's tasks do).
pub(crate) fn spawn(shared: &Arc<Shared>, chatter: &Chatter) {
    for (i, user) in chatter.users.iter().enumerate() {
        let rng = fastrand::Rng::with_seed(chatter.seed.wrapping_add(i as u64));
        tokio::spawn(speak(
            Arc::downgrade(shared),
            user.clone(),
            chatter.pace,
            rng,
        ));
    }
}

/// One user's life: pause, type, post; until the server is gone.
async fn speak(
    shared: std::sync::Weak<Shared>,
    username: String,
    pace: Duration,
    mut rng: fastrand::Rng,
) {
    let pace_ms = u64::try_from(pace.as_millis()).unwrap_or(u64::MAX).max(2);
    loop {
        let pause =
            Duration::from_millis(rng.u64(pace_ms / 2..=pace_ms.saturating_add(pace_ms / 2)));
        let typing = (pause / 3).min(MAX_TYPING);
        tokio::time::sleep(pause - typing).await;
        let Some(s) = shared.upgrade() else { return };
        let Some((user_id, channel_id)) = pick_channel(&s, &username, &mut rng) else {
            continue;
        };
        let typing_frame = |start: bool| {
            let (channel_id, user_id) = (channel_id.clone(), user_id.clone());
            let event = if start {
                ServerEvent::TypingStart {
                    channel_id,
                    user_id,
                }
            } else {
                ServerEvent::TypingStop {
                    channel_id,
                    user_id,
                }
            };
            event.to_json()
        };
        // Held across the broadcast, as across the post below: once `quiet(true)` returns,
        // nothing of theirs starts.
        let started = {
            let quiet = s.quiet_lock();
            if !*quiet {
                s.broadcast(&channel_id, &typing_frame(true));
            }
            !*quiet
        };
        if !started {
            continue;
        }
        drop(s);
        tokio::time::sleep(typing).await;
        let Some(s) = shared.upgrade() else { return };
        // A client stops typing as it sends; Kaiku relays that as `typing_stop`.
        s.broadcast(&channel_id, &typing_frame(false));
        let line = LINES[rng.usize(..LINES.len())];
        // Once `quiet(true)` returns no post starts, and the last one is already broadcast
        // (ahead of anything posted after it).
        {
            let quiet = s.quiet_lock();
            if !*quiet {
                rest::post_message(&s, &channel_id, &username, line);
            }
        }
    }
}

/// The user's id and a channel to speak in, any of the server's.
fn pick_channel(
    shared: &Shared,
    username: &str,
    rng: &mut fastrand::Rng,
) -> Option<(String, String)> {
    let store = shared.store();
    let user_id = store.user_by_name(username)?.id.clone();
    let n = store.channels.len();
    if n == 0 {
        return None;
    }
    let channel_id = store.channels.keys().nth(rng.usize(..n))?.clone();
    Some((user_id, channel_id))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::net::SocketAddr;
    use std::time::Instant;

    use serde_json::Value;
    use tokio::sync::mpsc;

    use super::*;
    use crate::ws::Out;
    use crate::{Conn, DevServer, ServerConfig};

    const WAIT: Duration = Duration::from_secs(20);

    async fn demo_with_chatter(pace: Duration) -> DevServer {
        let mut chatter = Chatter::new(["bob", "carol"]);
        chatter.pace = pace;
        let config = ServerConfig {
            demo: true,
            chatter: Some(chatter),
            ..ServerConfig::default()
        };
        DevServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), config)
            .await
            .unwrap()
    }

    /// A socket subscribed to every channel, as the broadcaster sees it.
    fn watch_every_channel(server: &DevServer) -> mpsc::UnboundedReceiver<Out> {
        let (tx, rx) = mpsc::unbounded_channel();
        let subs = server.shared.store().channels.keys().cloned().collect();
        server.shared.conns().insert(
            u64::MAX,
            Conn {
                user_id: String::new(),
                subs,
                tx,
                deaf: false,
            },
        );
        rx
    }

    async fn next_frame(rx: &mut mpsc::UnboundedReceiver<Out>) -> Value {
        match tokio::time::timeout(WAIT, rx.recv()).await {
            Ok(Some(Out::Text(t))) => serde_json::from_str(&t).unwrap(),
            other => panic!("no frame: {other:?}"),
        }
    }

    fn simulated_posts(server: &DevServer) -> usize {
        server.with_store(|s| {
            let ids: Vec<String> = ["bob", "carol"]
                .iter()
                .filter_map(|n| s.user_by_name(n).map(|u| u.id.clone()))
                .collect();
            s.channels
                .values()
                .flat_map(|c| &c.messages)
                .filter(|m| ids.contains(&m.author_id))
                .count()
        })
    }

    #[test]
    fn the_default_server_has_no_simulated_users() {
        assert_eq!(ServerConfig::default().chatter, None);
    }

    #[tokio::test]
    async fn a_simulated_user_types_then_posts_in_the_same_channel() {
        let server = demo_with_chatter(Duration::from_millis(60)).await;
        let mut rx = watch_every_channel(&server);
        let start = next_frame(&mut rx).await;
        assert_eq!(start["type"], "typing_start", "{start}");
        // The same user's next frames in that channel: typing_stop, then the message.
        let mut rest = Vec::new();
        while rest.len() < 2 {
            let f = next_frame(&mut rx).await;
            if f["user_id"] == start["user_id"] || f["message"]["author"]["id"] == start["user_id"]
            {
                rest.push(f);
            }
        }
        assert_eq!(rest[0]["type"], "typing_stop", "{rest:?}");
        assert_eq!(rest[1]["type"], "message_new", "{rest:?}");
        assert_eq!(rest[1]["channel_id"], start["channel_id"]);
        let author = rest[1]["message"]["author"]["username"].as_str().unwrap();
        assert!(["bob", "carol"].contains(&author), "{author}");
        assert!(LINES.contains(&rest[1]["message"]["content"].as_str().unwrap()));
    }

    #[tokio::test]
    async fn quiet_simulated_users_post_nothing_until_allowed_again() {
        let pace = Duration::from_millis(40);
        let server = demo_with_chatter(pace).await;
        let deadline = Instant::now() + WAIT;
        while simulated_posts(&server) == 0 {
            assert!(Instant::now() < deadline, "no simulated post");
            tokio::time::sleep(pace).await;
        }
        server.set_chatter_quiet(true);
        assert!(server.is_chatter_quiet());
        let before = simulated_posts(&server);
        // Fifty paces: two users at this pace would post dozens of times.
        tokio::time::sleep(pace * 50).await;
        assert_eq!(simulated_posts(&server), before);
        server.set_chatter_quiet(false);
        while simulated_posts(&server) == before {
            assert!(
                Instant::now() < deadline,
                "no simulated post after quiet(false)"
            );
            tokio::time::sleep(pace).await;
        }
    }
}
