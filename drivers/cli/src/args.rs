//! Command-line arguments.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tether_devserver::ClockOffset;

/// tether: a realtime chat connection that stays alive, correct and cheap.
///
/// With no command, starts a demo server on a free loopback port and an interactive chat
/// on it.
#[derive(Debug, Parser)]
#[command(name = "tether", bin_name = "tether", version)]
pub struct Cli {
    /// More logs on stderr (-v, -vv). TETHER_LOG=<filter> (or RUST_LOG) overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The demo's simulated users: each one's mean pause between posts, in seconds (default
    /// 8). Hidden: for tests, which want them fast.
    #[arg(long, value_name = "SECS", value_parser = positive_secs, hide = true)]
    pub demo_pace: Option<f64>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Kaiku-compatible dev server; prints `listening on http://...`.
    Serve(Serve),
    /// Connect, subscribe and print what arrives until killed.
    Listen(Listen),
    /// Post a message.
    Send(Send),
    /// Print a channel's recent messages, oldest first.
    History(History),
}

#[derive(Debug, Args)]
pub struct Serve {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Start empty: no demo users and channels.
    #[arg(long)]
    pub no_demo: bool,
    /// Also accept `?token=` on the socket (older clients).
    #[arg(long)]
    pub allow_query_auth: bool,
    /// Never select `kaiku.v2.json` (protocol v2 with JSON text frames).
    #[arg(long)]
    pub no_v2_json: bool,
    /// Never select `kaiku.v2.msgpack` (protocol v2 with MessagePack binary frames).
    #[arg(long)]
    pub no_v2_msgpack: bool,
    /// On v2 sockets, send one event per frame instead of batching what is queued.
    #[arg(long)]
    pub no_v2_batch: bool,
    /// Never agree to permessage-deflate (by default a v2 socket whose client offers it is
    /// compressed).
    #[arg(long)]
    pub no_v2_deflate: bool,
    /// The LZ77 window the server compresses with, in bits, when the client leaves it open.
    #[arg(long, value_name = "BITS", default_value_t = 15, value_parser = clap::value_parser!(u8).range(9..=15))]
    pub deflate_window_bits: u8,
    /// Stamp messages' `created_at` with a clock SECS seconds off the one that writes `Date`
    /// (negative: behind; fractions allowed), as a database host whose clock is not the app
    /// server's. `Date` headers keep the real clock.
    #[arg(long, value_name = "SECS", default_value = "0", allow_negative_numbers = true, value_parser = clock_offset)]
    pub message_clock_offset: ClockOffset,
}

fn clock_offset(s: &str) -> Result<ClockOffset, String> {
    s.parse::<f64>()
        .ok()
        .and_then(ClockOffset::from_secs_f64)
        .ok_or_else(|| format!("`{s}` is not a number of seconds within a year either way"))
}

/// How to authenticate. `Debug` never shows the token or the password.
#[derive(Args)]
pub struct Login {
    /// HTTP base URL of the server (the socket is `/ws` on it).
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// An access token (JWT).
    #[arg(long, env = "TETHER_TOKEN", hide_env_values = true, conflicts_with_all = ["username", "password"])]
    pub token: Option<String>,
    /// Log in with this user (with --password).
    #[arg(long, requires = "password")]
    pub username: Option<String>,
    /// Password for --username.
    #[arg(
        long,
        env = "TETHER_PASSWORD",
        hide_env_values = true,
        requires = "username"
    )]
    pub password: Option<String>,
    /// Allow http:// (and ws://) to a host that is not loopback. The password or token then
    /// crosses the network unencrypted; without this flag such a --server is refused before
    /// anything is sent. Loopback is always allowed.
    #[arg(long)]
    pub insecure: bool,
    /// The proxy for the REST calls and the socket alike: `http://[user:pass@]host:port`
    /// (HTTP CONNECT), `socks5h://...` (SOCKS5, the proxy resolves names) or `socks5://...`;
    /// `none` for no proxy; `system` (the default) for HTTPS_PROXY/HTTP_PROXY/ALL_PROXY/
    /// NO_PROXY, else the system's settings on macOS and Windows. A proxy that is down is
    /// reported, never gone around.
    // Read as text and parsed by `Login::network`: clap's own error would print the value,
    // and a proxy URL may hold a password.
    #[arg(
        long,
        value_name = "URL|none|system",
        env = "TETHER_PROXY",
        hide_env_values = true
    )]
    pub proxy: Option<String>,
    /// Also require the server's certificate chain to hold this public key:
    /// `sha256/<base64>` of its SubjectPublicKeyInfo (repeat for backups).
    #[arg(long = "pin", value_name = "sha256/BASE64")]
    pub pins: Vec<String>,
}

impl Login {
    /// The road the REST calls and the socket take; a `--proxy` that names no usable proxy is
    /// an error that never repeats the value (it may hold a password).
    pub fn network(&self) -> Result<tether_tokio::Network, String> {
        let mut network = tether_tokio::Network::default();
        if let Some(p) = &self.proxy {
            network.proxy = p
                .parse()
                .map_err(|e: tether_tokio::ProxyError| format!("--proxy: {e}"))?;
        }
        network.pins = self.pins.clone();
        Ok(network)
    }
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("Login")
            .field("server", &self.server)
            .field("token", &redacted(&self.token))
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("insecure", &self.insecure)
            // The parsed setting's Debug hides a password; text that does not parse is not shown.
            .field(
                "proxy",
                &self
                    .proxy
                    .as_deref()
                    .map(|p| p.parse::<tether_tokio::Proxy>().ok()),
            )
            .field("pins", &self.pins)
            .finish()
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AuthMode {
    /// `Sec-WebSocket-Protocol: access_token.<jwt>, access_token` (current Kaiku).
    Subprotocol,
    /// `?token=<jwt>` (older servers).
    Query,
}

#[derive(Debug, Args)]
pub struct Listen {
    #[command(flatten)]
    pub login: Login,
    /// Channel to subscribe to (repeatable).
    #[arg(long = "channel", value_name = "ID")]
    pub channels: Vec<String>,
    /// One JSON object per line: {"event":"ws:...","payload":...}.
    #[arg(long)]
    pub json: bool,
    /// How the token reaches the socket.
    #[arg(long, value_enum, default_value_t = AuthMode::Subprotocol)]
    pub auth: AuthMode,
    /// Offer permessage-deflate: the server may compress what it sends (-v shows whether it
    /// did). Costs the client about 22 KiB of memory while connected.
    #[arg(long)]
    pub deflate: bool,
    /// With --deflate, ask the server to compress with at most a 2^BITS byte window.
    #[arg(long, value_name = "BITS", requires = "deflate", value_parser = clap::value_parser!(u8).range(8..=15))]
    pub deflate_window_bits: Option<u8>,
    /// Seconds between heartbeat pings.
    #[arg(long, value_name = "SECS", value_parser = positive_secs)]
    pub heartbeat_interval: Option<f64>,
    /// Seconds of silence after a ping before the link is declared dead.
    #[arg(long, value_name = "SECS", value_parser = positive_secs)]
    pub heartbeat_timeout: Option<f64>,
    /// First reconnect delay cap, in milliseconds.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub backoff_base: Option<u64>,
    /// Largest reconnect delay cap, in milliseconds.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub backoff_max: Option<u64>,
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds in (0, 86400]")),
    }
}

#[derive(Debug, Args)]
pub struct Send {
    #[command(flatten)]
    pub login: Login,
    /// Channel to post in.
    #[arg(long, value_name = "ID")]
    pub channel: String,
    /// The message.
    pub text: String,
}

#[derive(Debug, Args)]
pub struct History {
    #[command(flatten)]
    pub login: Login,
    /// Channel to read.
    #[arg(long, value_name = "ID")]
    pub channel: String,
    /// How many messages (1-100).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub limit: u32,
    /// One message object per line, as the server sent it.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_takes_a_signed_fractional_message_clock_offset() {
        let offset = |args: &[&str]| -> Result<ClockOffset, clap::Error> {
            let cli = Cli::try_parse_from([&["tether", "serve"], args].concat())?;
            match cli.command {
                Some(Command::Serve(s)) => Ok(s.message_clock_offset),
                other => panic!("not serve: {other:?}"),
            }
        };
        assert_eq!(offset(&[]).expect("default"), ClockOffset::ZERO);
        assert_eq!(
            offset(&["--message-clock-offset", "-3600"]).expect("behind"),
            ClockOffset::behind(std::time::Duration::from_secs(3600))
        );
        assert_eq!(
            offset(&["--message-clock-offset", "1.5"]).expect("ahead"),
            ClockOffset::ahead(std::time::Duration::from_millis(1500))
        );
        for bad in ["soon", "NaN", "1e9"] {
            assert!(offset(&["--message-clock-offset", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_the_token_or_the_password() {
        let cli = Cli::try_parse_from([
            "tether",
            "send",
            "--server",
            "http://127.0.0.1:1",
            "--username",
            "bob",
            "--password",
            "hunter2-secret",
            "--channel",
            "c",
            "hi",
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(!shown.contains("hunter2-secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn listen_takes_every_flag_of_the_contract() {
        let cli = Cli::try_parse_from([
            "tether",
            "listen",
            "--server",
            "http://127.0.0.1:1",
            "--token",
            "t",
            "--channel",
            "a",
            "--channel",
            "b",
            "--json",
            "--auth",
            "query",
            "--heartbeat-interval",
            "2",
            "--heartbeat-timeout",
            "1.5",
            "--backoff-base",
            "100",
            "--backoff-max",
            "1000",
        ]);
        let Ok(Cli {
            command: Some(Command::Listen(l)),
            ..
        }) = cli
        else {
            panic!("parse failed: {cli:?}");
        };
        assert_eq!(l.channels, ["a", "b"]);
        assert!(l.json);
        assert_eq!(l.heartbeat_timeout, Some(1.5));
    }

    #[test]
    fn token_and_password_logins_exclude_each_other() {
        let r = Cli::try_parse_from([
            "tether",
            "listen",
            "--server",
            "http://x",
            "--token",
            "t",
            "--username",
            "u",
            "--password",
            "p",
        ]);
        assert!(r.is_err());
        assert!(
            Cli::try_parse_from([
                "tether",
                "listen",
                "--server",
                "http://x",
                "--username",
                "u"
            ])
            .is_err()
        );
        assert!(
            Cli::try_parse_from([
                "tether",
                "listen",
                "--server",
                "http://x",
                "--heartbeat-interval",
                "0"
            ])
            .is_err()
        );
    }
}
