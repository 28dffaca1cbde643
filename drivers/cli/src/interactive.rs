//! `tether` with no arguments: a demo server on a free loopback port and a line-based chat on
//! it, with commands that break the connection on purpose so you can watch it recover. Two
//! simulated users, bob and carol, type and post now and then (the dev server's
//! [`Chatter`]); messages a catch-up recovered are marked `↺ caught up`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tether_core::{Event, Secret, ServerEvent, ServerEventKind, Status};
use tether_devserver::{Chatter, DevServer, ServerConfig};
use tether_tokio::{Client, ClientConfig};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::listen::{describe_link, describe_status, human, short};
use crate::{Failure, wait_for_ctrl_c};

const HELP: &str = "\
type a line to post it in the current channel, or a command:
  /channels          list channels (* = current)
  /join NAME         switch the current channel
  /status            connection status, round-trip time, counters
  /drop              drop every socket abruptly (watch the reconnect and catch-up)
  /stall             freeze every socket silently (the heartbeat notices)
  /restart [SECS]    restart the server (default 2 s down): subscriptions are replayed
  /refuse CODE [N]   refuse the next N upgrades with HTTP CODE (default N = 3)
  /expire            expire every access token (the client refreshes)
  /quiet [on|off]    silence bob and carol, the simulated users (alone: toggle)
  /help              this text
  /quit              leave";

struct Chat {
    server: DevServer,
    client: Client,
    token: Secret,
    channels: Vec<(String, String)>,
    current: usize,
    /// Channels the server has confirmed at least once (each is announced once).
    joined: BTreeSet<String>,
    /// Who was last shown typing where (channel id, user id), and when: a burst of typing is
    /// shown once, until that user posts there, stops, or has been silent a while.
    typing: BTreeMap<(String, String), Instant>,
}

/// Simulated users the demo starts.
const SIMULATED: [&str; 2] = ["bob", "carol"];

/// A `typing_start` this long after the last one shown is a new burst (Kaiku clients repeat
/// theirs every 3 s while typing).
const TYPING_BURST: Duration = Duration::from_secs(10);

/// Runs the demo; `pace` is each simulated user's mean pause between posts (the dev
/// server's default when `None`).
pub async fn run(pace: Option<Duration>) -> Result<(), Failure> {
    let mut config = ServerConfig::default();
    config.demo = true;
    let mut chatter = Chatter::new(SIMULATED);
    if let Some(pace) = pace {
        chatter.pace = pace;
    }
    config.chatter = Some(chatter);
    let server = DevServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), config)
        .await
        .map_err(|e| Failure::general(format!("cannot start the dev server: {e}")))?;
    let url = server.url();
    let api = tether_tokio::Api::new(&url).map_err(|e| Failure::general(e.to_string()))?;
    let creds = api
        .login("alice", &Secret::new("password123"))
        .await
        .map_err(|e| Failure::api("demo login", &e))?;
    let token = creds.access_token.clone();
    let channels: Vec<(String, String)> = api
        .channels(&token)
        .await
        .map_err(|e| Failure::api("listing channels", &e))?
        .iter()
        .filter_map(|c| Some((c["id"].as_str()?.to_owned(), c["name"].as_str()?.to_owned())))
        .collect();
    let mut cfg = ClientConfig::new(&url).map_err(|e| Failure::general(e.to_string()))?;
    // Fast enough to watch: a dead link is noticed within 8 s, retries stay under 5 s.
    cfg.core.heartbeat.interval = Duration::from_secs(5);
    cfg.core.heartbeat.timeout = Duration::from_secs(3);
    cfg.core.backoff.max = Duration::from_secs(5);
    // The demo's own server compresses v2 sockets: show it (/status).
    cfg.core.deflate = Some(tether_core::wire::DeflateOffer::default());
    let (client, mut events) =
        Client::spawn(cfg, creds).map_err(|e| Failure::general(e.to_string()))?;
    for (id, _) in &channels {
        let _ = client.subscribe(id).await;
    }
    client
        .connect()
        .map_err(|e| Failure::general(e.to_string()))?;
    println!("tether demo: dev server on {url} (users alice, bob, carol; password password123)");
    println!(
        "you are alice; other terminals can join: tether listen --server {url} --username bob --password password123 --channel <id>"
    );
    println!("bob and carol are simulated: they type and post now and then (/quiet silences them)");
    println!("{HELP}");
    let mut chat = Chat {
        server,
        client,
        token,
        channels,
        current: 0,
        joined: BTreeSet::new(),
        typing: BTreeMap::new(),
    };
    chat.show_channels();

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let stop = wait_for_ctrl_c();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            event = events.recv() => match event {
                Some(e) => chat.show(&e),
                None => break,
            },
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(line)) => {
                    if !chat.input(line.trim()).await {
                        break;
                    }
                }
                // No more input (piped or closed stdin): keep showing events until Ctrl-C.
                Ok(None) | Err(_) => stdin_open = false,
            },
        }
    }
    let _ = chat.client.disconnect();
    chat.server.shutdown().await;
    Ok(())
}

impl Chat {
    fn show(&mut self, event: &Event) {
        match event {
            Event::Status(Status::Connected { .. }) => println!("-- connected"),
            Event::Status(s) => println!("-- {}", describe_status(s)),
            Event::Server(e) if e.event_type().as_str() == "subscribed" => {
                // The first confirmation of a channel: from now on what is posted there
                // arrives live (a line typed before it may be posted before the server
                // counts this socket in the channel).
                let known = e.channel_id().and_then(|id| {
                    self.channels
                        .iter()
                        .find(|(c, _)| c.as_str() == id.as_str())
                        .cloned()
                });
                if let Some((id, name)) = known
                    && self.joined.insert(id)
                {
                    println!("-- joined #{name}");
                }
            }
            Event::Server(e) if e.event_type().as_str() == "ready" => {}
            Event::Server(e) => match e.kind() {
                ServerEventKind::MessageNew { .. } | ServerEventKind::MessageUpdate { .. } => {
                    self.show_message(e)
                }
                ServerEventKind::TypingStart {
                    channel_id,
                    user_id,
                } => self.show_typing(channel_id.as_str(), user_id.as_str()),
                ServerEventKind::TypingStop {
                    channel_id,
                    user_id,
                } => {
                    self.typing
                        .remove(&(channel_id.to_string(), user_id.to_string()));
                }
                _ => println!("{}", human(event)),
            },
            // After a reconnect every channel resyncs; only those that missed something say so.
            Event::Resynced {
                recovered: 0,
                complete: true,
                ..
            } => {}
            Event::Resynced {
                channel_id,
                recovered,
                complete,
            } => println!(
                "-- resynced {}: {recovered} message(s) caught up, {}",
                self.channel_name(channel_id.as_str()),
                if *complete {
                    "complete"
                } else {
                    "incomplete (gap too large: reload the channel)"
                }
            ),
            other => println!("{}", human(other)),
        }
    }

    /// `[#general] bob: text`, marked when a catch-up recovered it rather than the socket
    /// bringing it live.
    fn show_message(&mut self, e: &ServerEvent) {
        let v: serde_json::Value = serde_json::from_str(e.json().as_str()).unwrap_or_default();
        let m = &v["message"];
        let channel = v["channel_id"].as_str().unwrap_or("");
        if let Some(author) = m["author"]["id"].as_str() {
            // A post ends its author's burst of typing there.
            self.typing.remove(&(channel.to_owned(), author.to_owned()));
        }
        println!(
            "[{}] {}: {}{}",
            self.channel_name(channel),
            m["author"]["username"].as_str().unwrap_or("?"),
            m["content"].as_str().unwrap_or(""),
            if e.is_recovered() {
                "  ↺ caught up"
            } else {
                ""
            }
        );
    }

    /// `  bob is typing in #general…`, once per burst.
    fn show_typing(&mut self, channel_id: &str, user_id: &str) {
        // The demo's own directory: the server runs in this process.
        let Some(name) = self
            .server
            .with_store(|s| s.user(user_id).map(|u| u.username.clone()))
        else {
            return;
        };
        if name == "alice" {
            return;
        }
        let now = Instant::now();
        let key = (channel_id.to_owned(), user_id.to_owned());
        if self
            .typing
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < TYPING_BURST)
        {
            return;
        }
        self.typing.insert(key, now);
        println!("  {name} is typing in {}…", self.channel_name(channel_id));
    }

    /// `#general`, or the short id of a channel the demo does not list.
    fn channel_name(&self, id: &str) -> String {
        self.channels
            .iter()
            .find(|(c, _)| c == id)
            .map_or_else(|| short(id).to_owned(), |(_, name)| format!("#{name}"))
    }

    fn show_channels(&self) {
        for (i, (id, name)) in self.channels.iter().enumerate() {
            let mark = if i == self.current { '*' } else { ' ' };
            println!("{mark} #{name} ({})", short(id));
        }
    }

    /// Handles one input line; false to quit.
    async fn input(&mut self, line: &str) -> bool {
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        let faults = self.server.faults();
        match cmd {
            "" => {}
            "/quit" | "/exit" => return false,
            "/help" => println!("{HELP}"),
            "/channels" => self.show_channels(),
            "/join" => match self
                .channels
                .iter()
                .position(|(id, name)| name == rest.trim_start_matches('#') || id == rest)
            {
                Some(i) => {
                    self.current = i;
                    // The channel on screen catches up first after a reconnect.
                    let _ = self.client.focus(&self.channels[i].0);
                    println!("-- now in #{}", self.channels[i].1);
                }
                None => println!("-- no channel `{rest}` (see /channels)"),
            },
            "/status" => match self.client.stats().await {
                Ok((stats, rtt)) => println!(
                    "-- {}, {}; rtt {}; {} frames in, {} out, {} reconnects, {} duplicates dropped, {} bad frames, {} history reads ({} rate-limited)",
                    describe_status(&self.client.status()),
                    stats.protocol.map_or_else(
                        || "no socket".to_owned(),
                        |p| describe_link(p, stats.compression.as_ref())
                    ),
                    rtt.map_or("n/a".into(), |d| format!(
                        "{:.1} ms",
                        d.as_secs_f64() * 1000.0
                    )),
                    stats.frames_in,
                    stats.frames_out,
                    stats.reconnects,
                    stats.duplicates,
                    stats.decode_errors,
                    stats.reads,
                    stats.reads_rate_limited
                ),
                Err(e) => println!("-- {e}"),
            },
            "/drop" => println!("-- dropped {} socket(s)", faults.drop_all()),
            "/stall" => println!("-- stalled {} socket(s)", faults.stall(false)),
            "/quiet" => {
                let quiet = match rest {
                    "on" => true,
                    "off" => false,
                    "" => !self.server.is_chatter_quiet(),
                    _ => {
                        println!("-- /quiet takes `on`, `off` or nothing (toggle)");
                        return true;
                    }
                };
                self.server.set_chatter_quiet(quiet);
                if quiet {
                    println!("-- bob and carol are quiet (/quiet again to let them talk)");
                } else {
                    println!("-- bob and carol are back");
                }
            }
            "/expire" => {
                faults.expire_tokens();
                println!("-- every access token is now expired");
            }
            "/refuse" => {
                let mut parts = rest.split_whitespace();
                let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(503);
                let n = parts.next().and_then(|s| s.parse().ok()).unwrap_or(3);
                faults.refuse_upgrades(status, None, Some(n));
                faults.drop_all();
                println!("-- refusing the next {n} upgrade(s) with HTTP {status}");
            }
            "/restart" => {
                let secs = rest.parse().unwrap_or(2.0f64).clamp(0.0, 60.0);
                println!("-- restarting the server ({secs} s down)");
                if let Err(e) = self.server.restart(Duration::from_secs_f64(secs)).await {
                    println!("-- restart failed: {e}");
                }
            }
            c if c.starts_with('/') => println!("-- unknown command {c} (see /help)"),
            _ => {
                let Some((id, _)) = self.channels.get(self.current) else {
                    println!("-- no channel to post in");
                    return true;
                };
                if let Err(e) = self.client.api().post_message(&self.token, id, line).await {
                    println!("-- not posted: {e}");
                }
            }
        }
        true
    }
}
