//! Connection settings; every number of DESIGN 3.2 is a default here.

use std::net::IpAddr;
use std::time::Duration;

use url::Url;

use crate::backoff::BackoffConfig;
use crate::catchup::CatchUpConfig;
use crate::heartbeat::HeartbeatConfig;
use crate::outbound::{QueueConfig, RateLimitConfig};
use crate::pacing::PacingConfig;
use crate::secret::Secret;

/// How the access token reaches the WebSocket upgrade.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthMode {
    /// `Sec-WebSocket-Protocol: access_token.<jwt>, access_token` (the current Kaiku server).
    #[default]
    Subprotocol,
    /// `?token=<jwt>` (older servers).
    Query,
}

/// Why a configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not a URL.
    #[error("invalid server URL: {0}")]
    InvalidUrl(String),
    /// Not http, https, ws or wss, or no host.
    #[error("server URL must be http(s):// or ws(s):// with a host, got `{0}`")]
    UnsupportedUrl(String),
    /// A setting out of its range.
    #[error("invalid setting: {0}")]
    Invalid(&'static str),
    /// Plain text to a host that is not loopback, without `allow_insecure`.
    #[error(
        "refusing unencrypted {0}: use https/wss, or set allow_insecure for non-loopback hosts"
    )]
    Insecure(String),
    /// The road to the server cannot be built: a proxy setting or variable that names no usable
    /// proxy, a root certificate that does not parse, a malformed pin (the driver's settings).
    #[error("network settings: {0}")]
    Network(String),
}

/// Connection settings. Build with [`Config::new`], then adjust fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// HTTP base of the server (`https://chat.example.com`); the socket is `/ws` on it.
    pub server: Url,
    /// How the token is sent on the upgrade.
    pub auth_mode: AuthMode,
    /// Allow `http`/`ws` to hosts that are not loopback.
    pub allow_insecure: bool,
    /// Protocol v2 encodings offered on the upgrade, in order of preference (docs/protocol.md,
    /// "Protocol v2"). Default: MessagePack, then JSON. Empty: offer v1 only. A server that
    /// selects none of them speaks v1. Offered in `AuthMode::Subprotocol` only.
    pub v2: Vec<crate::wire::Encoding>,
    /// permessage-deflate (RFC 7692) as offered on the upgrade (docs/protocol.md,
    /// "Compression"). `None`, the default: not offered. Set it only on a driver whose
    /// transport can inflate (the tokio driver built with its `deflate` feature). A driver
    /// whose transport cannot refuses the config instead of leaving the offer out: the tokio
    /// driver's client answers `ConfigError::Invalid` when it starts (a server that agreed to
    /// an offer the transport cannot honour would drop the link at its first compressed frame).
    pub deflate: Option<crate::wire::DeflateOffer>,
    /// Socket open plus `ready`. Default 10 s (Kaiku can take 2-4 s to send `ready`).
    pub handshake_timeout: Duration,
    /// The first wait before a `subscribe` answered by anything but `subscribed` (Kaiku's
    /// `message_error` when looking the channel up fails) is sent again; each later one on
    /// the same socket waits twice as long, up to a minute. Default 1 s.
    pub subscribe_retry: Duration,
    /// How long after a first `forbidden` its channel's `subscribe` goes again before the
    /// refusal is believed (Kaiku answers `forbidden` when its permission check meets a
    /// database error or a pool timeout). Default 3 s.
    pub refusal_confirm_delay: Duration,
    /// How long a post the app made through the server's REST API may go without its own
    /// `message_new` on a channel this socket is subscribed to: Kaiku broadcasts every post
    /// to its author too, so a missing echo proves a link that answers pings but no longer
    /// delivers events, and the connection replaces it (see
    /// [`Connection::handle_app_post`](crate::Connection::handle_app_post)). Default 5 s.
    pub echo_timeout: Duration,
    /// How long a connection attempt waits for a token refresh before backing off (the
    /// refresh itself stays in flight). Default 40 s, above the REST client's 30 s timeout.
    pub refresh_timeout: Duration,
    /// How long a graceful close waits for the peer's Close. Default 1 s.
    pub close_timeout: Duration,
    /// Largest inbound message; a larger one drops the link. Default 256 KiB.
    pub max_inbound_message: usize,
    /// Reconnect backoff.
    pub backoff: BackoffConfig,
    /// Heartbeat and sleep detection.
    pub heartbeat: HeartbeatConfig,
    /// Offline queue.
    pub queue: QueueConfig,
    /// Client-side rate limits.
    pub rate_limits: RateLimitConfig,
    /// Catch-up of missed messages.
    pub catch_up: CatchUpConfig,
    /// Pacing of the REST reads the catch-up makes (the server's rate limit).
    pub pacing: PacingConfig,
    /// Refresh the token at this fraction of its life. Default 0.8.
    pub refresh_ahead: f64,
    /// Seed of the jitter generator. Drivers seed it from OS entropy so that two clients
    /// never share a schedule; tests fix it to replay a run.
    pub seed: u64,
}

impl Config {
    /// Settings for `server` (an `http(s)://` base URL, or `ws(s)://`), all defaults.
    pub fn new(server: &str) -> Result<Self, ConfigError> {
        let url = Url::parse(server).map_err(|e| ConfigError::InvalidUrl(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https" | "ws" | "wss") || url.host().is_none() {
            return Err(ConfigError::UnsupportedUrl(url.scheme().to_owned()));
        }
        Ok(Self {
            server: url,
            auth_mode: AuthMode::default(),
            allow_insecure: false,
            v2: vec![crate::wire::Encoding::Msgpack, crate::wire::Encoding::Json],
            deflate: None,
            handshake_timeout: Duration::from_secs(10),
            subscribe_retry: Duration::from_secs(1),
            refusal_confirm_delay: Duration::from_secs(3),
            echo_timeout: Duration::from_secs(5),
            refresh_timeout: Duration::from_secs(40),
            close_timeout: Duration::from_secs(1),
            max_inbound_message: 256 * 1024,
            backoff: BackoffConfig::default(),
            heartbeat: HeartbeatConfig::default(),
            queue: QueueConfig::default(),
            rate_limits: RateLimitConfig::default(),
            catch_up: CatchUpConfig::default(),
            pacing: PacingConfig::default(),
            refresh_ahead: 0.8,
            seed: 0,
        })
    }

    /// Checks the rules that span fields (TLS unless loopback or explicitly allowed).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.refresh_ahead > 0.0 && self.refresh_ahead <= 1.0) {
            return Err(ConfigError::Invalid("refresh_ahead must be in (0, 1]"));
        }
        if self.backoff.base.is_zero() || self.backoff.max < self.backoff.base {
            return Err(ConfigError::Invalid("backoff needs 0 < base <= max"));
        }
        if self.subscribe_retry.is_zero() || self.echo_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "subscribe_retry and echo_timeout must be positive",
            ));
        }
        if self.heartbeat.interval.is_zero() || self.heartbeat.timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "heartbeat interval and timeout must be positive",
            ));
        }
        if self.pacing.max_in_flight == 0 || self.pacing.budget == 0 || self.pacing.window.is_zero()
        {
            return Err(ConfigError::Invalid(
                "pacing needs max_in_flight, budget and window above zero",
            ));
        }
        if let Some(d) = self.deflate
            && !(8..=15).contains(&d.server_max_window_bits)
        {
            return Err(ConfigError::Invalid(
                "deflate.server_max_window_bits must be in 8..=15",
            ));
        }
        if self.catch_up.page_size == 0 || self.queue.capacity == 0 {
            return Err(ConfigError::Invalid(
                "page size and queue capacity must be positive",
            ));
        }
        let plain = matches!(self.server.scheme(), "http" | "ws");
        if plain && !self.allow_insecure && !is_loopback(&self.server) {
            return Err(ConfigError::Insecure(
                self.server.host_str().unwrap_or_default().to_owned(),
            ));
        }
        Ok(())
    }

    /// The socket URL (`ws(s)://host/base/ws`), with `?token=` in query mode.
    pub(crate) fn socket_url(&self, token: Option<&Secret>) -> Url {
        let mut url = self.server.clone();
        let scheme = match url.scheme() {
            "https" | "wss" => "wss",
            _ => "ws",
        };
        // Only fails for cannot-be-a-base URLs, which `new` already refused.
        let _ = url.set_scheme(scheme);
        if !url.path().ends_with("/ws") {
            let path = format!("{}/ws", url.path().trim_end_matches('/'));
            url.set_path(&path);
        }
        url.set_query(None);
        if let (AuthMode::Query, Some(t)) = (self.auth_mode, token) {
            url.query_pairs_mut().append_pair("token", t.expose());
        }
        url
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_url_follows_the_http_base() {
        let c = Config::new("https://chat.example.com/base/").unwrap();
        assert_eq!(
            c.socket_url(None).as_str(),
            "wss://chat.example.com/base/ws"
        );
        let c = Config::new("http://127.0.0.1:8080").unwrap();
        assert_eq!(c.socket_url(None).as_str(), "ws://127.0.0.1:8080/ws");
        let mut c = Config::new("ws://[::1]:9/ws").unwrap();
        c.auth_mode = AuthMode::Query;
        assert_eq!(
            c.socket_url(Some(&Secret::new("a b"))).as_str(),
            "ws://[::1]:9/ws?token=a+b"
        );
    }

    #[test]
    fn plain_text_needs_loopback_or_opt_in() {
        for ok in [
            "http://localhost:1",
            "http://127.0.0.2",
            "ws://[::1]",
            "https://example.com",
        ] {
            assert!(Config::new(ok).unwrap().validate().is_ok(), "{ok}");
        }
        let mut c = Config::new("http://example.com").unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::Insecure(_))));
        c.allow_insecure = true;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        let mut c = Config::new("http://localhost").unwrap();
        c.refresh_ahead = f64::NAN;
        assert!(matches!(c.validate(), Err(ConfigError::Invalid(_))));
        let mut c = Config::new("http://localhost").unwrap();
        c.backoff.base = Duration::ZERO;
        assert!(matches!(c.validate(), Err(ConfigError::Invalid(_))));
        let mut c = Config::new("http://localhost").unwrap();
        c.heartbeat.interval = Duration::ZERO;
        assert!(c.validate().is_err());
        for bits in [0, 7, 16] {
            let mut c = Config::new("http://localhost").unwrap();
            c.deflate = Some(crate::wire::DeflateOffer {
                server_max_window_bits: bits,
                ..Default::default()
            });
            assert!(
                matches!(c.validate(), Err(ConfigError::Invalid(_))),
                "{bits}"
            );
        }
    }

    #[test]
    fn rejects_other_schemes_and_garbage() {
        assert!(Config::new("ftp://x").is_err());
        assert!(Config::new("not a url").is_err());
        assert!(Config::new("mailto:a@b").is_err());
    }
}
