//! The road to the server (DESIGN 3.8, D88 to D90): which proxy, whom to trust, which
//! address. The REST client and both socket transports take the same road, so a user's proxy
//! and trust store apply to everything tether sends, and a failure says where it happened.
//!
//! [`Network`] is what the app sets. `Road` is that, built once per client: the proxy rule,
//! the TLS settings and the dialer. `Road::open` gives the socket transports a byte stream
//! to the server (through the proxy, TLS done for `wss://`); `Road::rest` sets up reqwest
//! with the same proxy rule, the same trust and the same fixed addresses.

mod dial;
mod proxy;
mod tls;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tether_core::{SocketEnd, TransportError};
use tokio::io::{AsyncRead, AsyncWrite};
use url::Url;

pub use proxy::{Proxy, ProxyError, ProxyUrl};

/// How a client reaches its server: its proxy, the certificates it trusts beyond the
/// system's, and names it resolves itself. The REST calls and the socket both follow it.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Network {
    /// Which proxy. Default [`Proxy::System`]: the environment's variables, else the
    /// system's settings on macOS and Windows.
    pub proxy: Proxy,
    /// Root certificates (DER) trusted in addition to the system's, for a server with a
    /// private CA (or a test's self-signed certificate).
    pub extra_roots_der: Vec<Vec<u8>>,
    /// Public-key pins, `sha256/<base64 of the SHA-256 of a SubjectPublicKeyInfo>` (curl's
    /// `sha256//...` is read too). When any is set, a certificate chain must also contain one
    /// of these keys, after it verified as usual. Default none.
    pub pins: Vec<String>,
    /// Names resolved to these addresses instead of asking the system's resolver (curl's
    /// `--resolve`). Default none.
    pub resolve: Vec<(String, Vec<IpAddr>)>,
    /// RFC 8305's "Connection Attempt Delay": how long an address may try before the next
    /// one starts too. Default 250 ms.
    pub attempt_delay: Duration,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            proxy: Proxy::System,
            extra_roots_der: Vec::new(),
            pins: Vec::new(),
            resolve: Vec::new(),
            attempt_delay: dial::ATTEMPT_DELAY,
        }
    }
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The proxy's password never shows (`ProxyUrl`'s own `Debug` hides it); roots are
        // counted, not dumped.
        f.debug_struct("Network")
            .field("proxy", &self.proxy)
            .field("extra_roots", &self.extra_roots_der.len())
            .field("pins", &self.pins)
            .field("resolve", &self.resolve)
            .field("attempt_delay", &self.attempt_delay)
            .finish()
    }
}

/// A proxy address nothing answers, for reqwest when the rule cannot give a usable proxy:
/// the call fails (its name never resolves) instead of going around the proxy, and
/// `Road::diagnose` then says why.
fn unusable() -> Option<Url> {
    Url::parse("http://unusable-proxy.invalid:9").ok()
}

/// Why the road failed: what failed (the core decides on it) and what the user is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) error: TransportError,
    pub(crate) detail: String,
}

impl Failure {
    pub(crate) fn new(error: TransportError, detail: impl Into<String>) -> Self {
        Self {
            error,
            detail: detail.into(),
        }
    }
}

impl From<Failure> for SocketEnd {
    fn from(f: Failure) -> Self {
        SocketEnd::Described {
            error: f.error,
            detail: f.detail,
        }
    }
}

/// A byte stream to the server: TCP, a tunnel through a proxy, TLS over either.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A [`Network`] built: shared by every connect and every REST call of one client.
#[derive(Clone)]
pub(crate) struct Road {
    inner: Arc<Inner>,
}

struct Inner {
    /// Rebuilt at a network change when it follows the system (`Road::reload`).
    proxy: std::sync::RwLock<proxy::Rule>,
    setting: Proxy,
    trust: tls::Trust,
    dialer: dial::Dialer,
}

impl Road {
    /// Builds `network`; fails on a proxy setting or variable that names no usable proxy, a
    /// root certificate that does not parse, or a malformed pin.
    pub(crate) fn new(network: &Network) -> Result<Self, String> {
        Ok(Self {
            inner: Arc::new(Inner {
                proxy: std::sync::RwLock::new(
                    proxy::Rule::new(&network.proxy).map_err(|e| e.to_string())?,
                ),
                setting: network.proxy.clone(),
                trust: tls::Trust::new(&network.extra_roots_der, &network.pins)?,
                dialer: dial::Dialer {
                    resolve: network.resolve.clone(),
                    // A minute is already no race; more only risks `Instant` overflow.
                    delay: network.attempt_delay.min(Duration::from_secs(60)),
                },
            }),
        })
    }

    /// A byte stream to `url`'s server: through its proxy if it has one (never around it),
    /// else straight to its addresses raced; then TLS for `wss://` and `https://`.
    pub(crate) async fn open(&self, url: &Url) -> Result<Box<dyn Io>, Failure> {
        let protocol = |what: &str| Failure::new(TransportError::Protocol, what.to_owned());
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(h) => h.to_string(),
            None => return Err(protocol("the URL has no host")),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| protocol("the URL has no port"))?;
        let secure = matches!(url.scheme(), "wss" | "https");
        let dialer = &self.inner.dialer;
        let stream: Box<dyn Io> = match self.proxy_for(url)? {
            Some(p) => {
                let tcp = dialer.connect(p.host_name(), p.port()).await.map_err(|f| {
                    Failure::new(
                        TransportError::ProxyUnreachable,
                        format!(
                            "the proxy at {} could not be reached: {}",
                            p.address(),
                            f.detail
                        ),
                    )
                })?;
                tracing::debug!(proxy = %p, "tunnelling through the proxy");
                p.tunnel(tcp, &host, port, dialer).await?
            }
            None => Box::new(dialer.connect(&host, port).await?),
        };
        if !secure {
            return Ok(stream);
        }
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| {
            Failure::new(TransportError::Tls, format!("`{host}` is not a TLS name"))
        })?;
        let tls = tokio_rustls::TlsConnector::from(self.inner.trust.socket.clone())
            .connect(name, stream)
            .await
            .map_err(|e| tls::failure(&e, &host))?;
        Ok(Box::new(tls))
    }

    /// `builder` set to take this road: the proxy rule (instead of reqwest's own reading of
    /// the environment), the trust, and the fixed addresses. reqwest's connector races the
    /// addresses itself (hyper's happy eyeballs).
    pub(crate) fn rest(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        let road = self.clone();
        let mut builder = builder
            .no_proxy()
            .proxy(reqwest::Proxy::custom(move |url| {
                match road.proxy_for(url) {
                    Ok(None) => None,
                    Ok(Some(p)) => p.reqwest_url().or_else(unusable),
                    // A proxy that cannot be used: never go around it.
                    Err(_) => unusable(),
                }
            }))
            .use_preconfigured_tls((*self.inner.trust.rest).clone());
        for (name, ips) in &self.inner.dialer.resolve {
            let addrs: Vec<std::net::SocketAddr> = ips
                .iter()
                .map(|ip| std::net::SocketAddr::new(*ip, 0))
                .collect();
            builder = builder.resolve_to_addrs(name, &addrs);
        }
        builder
    }

    /// The proxy for `url`, by the rule as it stands.
    fn proxy_for(&self, url: &Url) -> Result<Option<ProxyUrl>, Failure> {
        self.inner
            .proxy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .for_url(url)
    }

    /// Whether `url` goes through a proxy.
    pub(crate) fn proxied(&self, url: &Url) -> bool {
        !matches!(self.proxy_for(url), Ok(None))
    }

    /// Reads the system's proxy settings again, when the road follows them: at a network
    /// change (a laptop that joins the office network, or leaves it). An explicit setting
    /// stays. Settings that became unusable keep the old rule, and say so in the log.
    pub(crate) fn reload(&self) {
        if self.inner.setting != Proxy::System {
            return;
        }
        match proxy::Rule::new(&self.inner.setting) {
            Ok(rule) => {
                *self
                    .inner
                    .proxy
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = rule;
            }
            Err(e) => tracing::warn!(error = %e, "the proxy settings changed and cannot be used"),
        }
    }

    /// Why a REST call that reached nothing failed, asked of the road itself: the same
    /// proxy, trust and addresses, so the answer names the step (the proxy's status, the
    /// certificate's issuer) that reqwest's error does not. `None` when the road opens now.
    pub(crate) async fn diagnose(&self, url: &Url) -> Option<Failure> {
        self.open(url).await.err()
    }
}
