//! Which proxy a request takes (D88), and the two ways through one: HTTP `CONNECT` and SOCKS5.
//!
//! The choice is made in one place, [`Rule::for_url`], for the REST client and both socket
//! transports alike: an explicit [`Proxy`] first; else the environment's variables as curl
//! reads them (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, either case); else the
//! system's settings on macOS and Windows. The last two go through hyper-util's matcher (the
//! one reqwest 0.13 adopted), the system's settings read by it.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use tether_core::TransportError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use url::Url;

use super::{Failure, Io};

/// The proxy setting of a client: which proxy its REST calls and its socket go through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Proxy {
    /// The environment's `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`/`NO_PROXY` (either case, as
    /// curl reads them); when none is set, the system's proxy settings on macOS and Windows
    /// (a PAC script is not run). The default.
    #[default]
    System,
    /// No proxy, whatever the environment or the system says.
    Direct,
    /// This proxy for everything.
    Url(ProxyUrl),
}

impl FromStr for Proxy {
    type Err = ProxyError;

    /// `none` (or `direct`): no proxy; `system` (or nothing): the default; in any case.
    /// Anything else is a proxy URL (`http://[user:pass@]host:port`, `socks5://...`,
    /// `socks5h://...`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("none") || s.eq_ignore_ascii_case("direct") {
            Ok(Self::Direct)
        } else if s.is_empty() || s.eq_ignore_ascii_case("system") {
            Ok(Self::System)
        } else {
            ProxyUrl::parse(s).map(Self::Url)
        }
    }
}

/// A proxy: its kind, where it is, and its credentials. `Debug` and `Display` never show the
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    kind: Kind,
    host: String,
    port: u16,
    user: Option<(String, String)>,
}

/// How to go through a proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// HTTP `CONNECT` (REST over plain `http://` is forwarded, as every HTTP proxy expects).
    Http,
    /// SOCKS5, names resolved here.
    Socks5,
    /// SOCKS5, names resolved by the proxy (`socks5h`): the usual choice, as a proxy that is
    /// the only way out often is the only one that can resolve names too.
    Socks5h,
}

/// A proxy setting that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProxyError(String);

impl ProxyUrl {
    /// Parses `http://[user:pass@]host[:port]`, `socks5://...` or `socks5h://...`; a URL
    /// without a scheme is `http://`, as curl reads it. User and password may be
    /// percent-encoded.
    pub fn parse(s: &str) -> Result<Self, ProxyError> {
        let s = s.trim();
        let with_scheme = if s.contains("://") {
            s.to_owned()
        } else {
            format!("http://{s}")
        };
        // Never echo the input: it may hold a password.
        let url =
            Url::parse(&with_scheme).map_err(|e| ProxyError(format!("not a proxy URL ({e})")))?;
        let kind = match url.scheme() {
            "http" => Kind::Http,
            "socks5" => Kind::Socks5,
            "socks5h" => Kind::Socks5h,
            "https" => {
                return Err(ProxyError(
                    "an https:// proxy (TLS to the proxy) is not supported: use http://, the \
                     tunnel carries TLS end to end anyway"
                        .into(),
                ));
            }
            other => {
                return Err(ProxyError(format!(
                    "unsupported proxy scheme `{other}`: use http://, socks5:// or socks5h://"
                )));
            }
        };
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(h) => h.to_string(),
            None => return Err(ProxyError("the proxy URL has no host".into())),
        };
        let port = url.port().unwrap_or(match kind {
            Kind::Http => 80,
            Kind::Socks5 | Kind::Socks5h => 1080,
        });
        let decode = |s: &str| {
            percent_decode(s)
                .map_err(|()| ProxyError("the proxy's credentials are not UTF-8".into()))
        };
        let user = if url.username().is_empty() {
            None
        } else {
            Some((
                decode(url.username())?,
                decode(url.password().unwrap_or(""))?,
            ))
        };
        Ok(Self {
            kind,
            host,
            port,
            user,
        })
    }

    /// From what hyper-util's matcher found in the environment or the system settings.
    fn from_intercept(i: &hyper_util::client::proxy::matcher::Intercept) -> Option<Self> {
        let uri = i.uri();
        let kind = match uri.scheme_str() {
            Some("http") | None => Kind::Http,
            Some("socks5") => Kind::Socks5,
            Some("socks5h") => Kind::Socks5h,
            // https:// and socks4 proxies: refused where they are met (`Rule::for_url`).
            _ => return None,
        };
        let host = uri
            .host()?
            .trim_matches(|c| c == '[' || c == ']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(match kind {
            Kind::Http => 80,
            Kind::Socks5 | Kind::Socks5h => 1080,
        });
        let user = if let Some((u, p)) = i.raw_auth() {
            Some((u.to_owned(), p.to_owned()))
        } else {
            i.basic_auth().and_then(decode_basic)
        };
        Some(Self {
            kind,
            host,
            port,
            user,
        })
    }

    /// The proxy's host (an IPv6 address without brackets).
    pub(crate) fn host_name(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL reqwest is given, credentials included (reqwest reads them from it).
    pub(crate) fn reqwest_url(&self) -> Option<Url> {
        let scheme = match self.kind {
            Kind::Http => "http",
            Kind::Socks5 => "socks5",
            Kind::Socks5h => "socks5h",
        };
        let mut url = Url::parse(&format!("{scheme}://{}", self.address())).ok()?;
        if let Some((user, pass)) = &self.user {
            url.set_username(user).ok()?;
            url.set_password(Some(pass)).ok()?;
        }
        Some(url)
    }

    /// Opens a tunnel to `host:port` through this proxy, on `tcp` (a connection to it).
    pub(crate) async fn tunnel(
        &self,
        tcp: TcpStream,
        host: &str,
        port: u16,
        dial: &super::dial::Dialer,
    ) -> Result<Box<dyn Io>, Failure> {
        match self.kind {
            Kind::Http => self.connect(tcp, host, port).await,
            Kind::Socks5 | Kind::Socks5h => self.socks(tcp, host, port, dial).await,
        }
    }

    /// HTTP `CONNECT`. Written here rather than taken from hyper-util's `Tunnel`, which
    /// keeps the proxy's status to itself: the user is told what the proxy answered (D88).
    async fn connect(
        &self,
        mut tcp: TcpStream,
        host: &str,
        port: u16,
    ) -> Result<Box<dyn Io>, Failure> {
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some((user, pass)) = &self.user {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
        }
        request.push_str("\r\n");
        let lost = |e: std::io::Error| {
            Failure::new(
                TransportError::ProxyUnreachable,
                format!(
                    "the proxy at {} dropped the tunnel request ({e})",
                    self.address()
                ),
            )
        };
        tcp.write_all(request.as_bytes()).await.map_err(lost)?;
        // The answer's head, read a byte at a time so that nothing of the tunnel is taken
        // with it: a head is a few hundred bytes, once per connect.
        let not_http = |head: &[u8]| {
            let start = String::from_utf8_lossy(&head[..head.len().min(40)]).into_owned();
            Failure::new(
                TransportError::ProxyRefused,
                format!(
                    "the proxy at {} answered with something that is not HTTP ({:?}): is it an HTTP proxy?",
                    self.address(),
                    start.trim()
                ),
            )
        };
        let mut head = Vec::with_capacity(256);
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= 16 * 1024 {
                return Err(Failure::new(
                    TransportError::ProxyRefused,
                    format!("the proxy at {} sent an answer over 16 KiB", self.address()),
                ));
            }
            // Something other than HTTP (an SSH or SMTP banner: the setting names another
            // service) is said as soon as its first bytes show it, not at the timeout.
            if head.len() <= 5 && !b"HTTP/".starts_with(&head) {
                return Err(not_http(&head));
            }
            match tcp.read_u8().await {
                Ok(byte) => head.push(byte),
                Err(_) if !head.is_empty() && !head.starts_with(b"HTTP/") => {
                    return Err(not_http(&head));
                }
                Err(e) => return Err(lost(e)),
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut answer = httparse::Response::new(&mut headers);
        let code = match answer.parse(&head) {
            Ok(httparse::Status::Complete(_)) => answer.code.unwrap_or(0),
            _ => {
                return Err(Failure::new(
                    TransportError::ProxyRefused,
                    format!("the proxy at {} did not answer in HTTP", self.address()),
                ));
            }
        };
        let said = format!(
            "the proxy at {} answered {code} {}",
            self.address(),
            answer.reason.unwrap_or("").trim()
        );
        match code {
            200..=299 => Ok(Box::new(tcp)),
            // Some proxies (tinyproxy) answer wrong credentials with 401: to a CONNECT, either
            // can only be about the proxy's own credentials.
            401 | 407 if self.user.is_some() => Err(Failure::new(
                TransportError::ProxyAuth,
                format!("{said}: it refused the credentials in the proxy URL"),
            )),
            401 | 407 => Err(Failure::new(
                TransportError::ProxyAuth,
                format!("{said}: it wants credentials (user:password@ in the proxy URL)"),
            )),
            _ => Err(Failure::new(TransportError::ProxyRefused, said)),
        }
    }

    /// SOCKS5, with user and password when given (RFC 1929).
    async fn socks(
        &self,
        tcp: TcpStream,
        host: &str,
        port: u16,
        dial: &super::dial::Dialer,
    ) -> Result<Box<dyn Io>, Failure> {
        use tokio_socks::TargetAddr;
        use tokio_socks::tcp::Socks5Stream;
        let target: TargetAddr<'_> = if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            // An address is sent as one (a SOCKS5 domain must be a name).
            TargetAddr::Ip(std::net::SocketAddr::new(ip, port))
        } else if self.kind == Kind::Socks5h {
            TargetAddr::Domain(host.into(), port)
        } else {
            // socks5://: names are resolved here, as the scheme says.
            let addrs = dial.resolve(host, port).await?;
            let first = addrs.first().copied().ok_or_else(|| {
                Failure::new(TransportError::NameLookup, format!("{host} has no address"))
            })?;
            TargetAddr::Ip(first)
        };
        let opened = match &self.user {
            Some((user, pass)) => {
                Socks5Stream::connect_with_password_and_socket(tcp, target, user, pass).await
            }
            None => Socks5Stream::connect_with_socket(tcp, target).await,
        };
        opened
            .map(|s| Box::new(s) as Box<dyn Io>)
            .map_err(|e| self.socks_failure(&e))
    }

    fn socks_failure(&self, e: &tokio_socks::Error) -> Failure {
        use tokio_socks::Error as E;
        let at = self.address();
        match e {
            E::PasswordAuthFailure(_) => Failure::new(
                TransportError::ProxyAuth,
                format!("the SOCKS5 proxy at {at} refused the credentials in the proxy URL"),
            ),
            E::NoAcceptableAuthMethods | E::AuthorizationRequired if self.user.is_none() => {
                Failure::new(
                    TransportError::ProxyAuth,
                    format!(
                        "the SOCKS5 proxy at {at} wants credentials (user:password@ in the proxy URL)"
                    ),
                )
            }
            E::NoAcceptableAuthMethods | E::AuthorizationRequired | E::InvalidAuthValues(_) => {
                Failure::new(
                    TransportError::ProxyAuth,
                    format!("the SOCKS5 proxy at {at} refused to authenticate: {e}"),
                )
            }
            E::Io(io) => Failure::new(
                TransportError::ProxyUnreachable,
                format!("the SOCKS5 proxy at {at} dropped the connection ({io})"),
            ),
            other => Failure::new(
                TransportError::ProxyRefused,
                format!("the SOCKS5 proxy at {at} answered: {other}"),
            ),
        }
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({self})")
    }
}

impl fmt::Display for ProxyUrl {
    /// `socks5h://alice:***@proxy:1080`: the password never shows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.kind {
            Kind::Http => "http",
            Kind::Socks5 => "socks5",
            Kind::Socks5h => "socks5h",
        };
        match &self.user {
            Some((user, _)) => write!(f, "{scheme}://{user}:***@{}", self.address()),
            None => write!(f, "{scheme}://{}", self.address()),
        }
    }
}

/// `Basic base64(user:pass)` back to its two halves.
fn decode_basic(value: &hyper::header::HeaderValue) -> Option<(String, String)> {
    let encoded = value.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

fn percent_decode(s: &str) -> Result<String, ()> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| ())
}

/// The proxy decision, built once per client from its [`Proxy`] setting.
pub(crate) enum Rule {
    Direct,
    Fixed(ProxyUrl),
    /// The environment's variables, else the system's settings.
    System(Box<hyper_util::client::proxy::matcher::Matcher>),
}

/// The first of `names` set in the environment (and not blank), with its name. A value that
/// is not Unicode is an error naming it, not an unset variable: unset would mean direct.
fn env_first(names: [&'static str; 2]) -> Result<Option<(&'static str, String)>, ProxyError> {
    for name in names {
        let Some(value) = std::env::var_os(name) else {
            continue;
        };
        let value = value
            .into_string()
            .map_err(|_| ProxyError(format!("{name} is not Unicode")))?;
        if !value.trim().is_empty() {
            return Ok(Some((name, value)));
        }
    }
    Ok(None)
}

/// The environment's proxies, else the system's. Each variable is read here, as
/// [`ProxyUrl::parse`] reads a URL (any case of scheme, no scheme meaning `http://`), and
/// handed to the matcher in one spelling: the matcher alone would skip a value it cannot
/// read (`SOCKS5H://` in capitals, say) and go direct, where a named proxy must never be gone
/// around. A value that names no usable proxy is an error naming the variable. When none is
/// set, the system's settings (macOS, Windows) through the matcher itself.
fn system_matcher() -> Result<hyper_util::client::proxy::matcher::Matcher, ProxyError> {
    use hyper_util::client::proxy::matcher::Matcher;
    let read = |names: [&'static str; 2]| -> Result<Option<String>, ProxyError> {
        let Some((name, value)) = env_first(names)? else {
            return Ok(None);
        };
        let unusable = |why: String| ProxyError(format!("{name}: {why}"));
        let spelled = ProxyUrl::parse(&value)
            .map_err(|e| unusable(e.to_string()))?
            .reqwest_url()
            .map(|u| u.to_string())
            .ok_or_else(|| unusable("not a proxy URL".into()))?;
        // The matcher reads it as an `http::Uri` and skips what it cannot read (then the
        // client would go direct): what it cannot read is refused here.
        match spelled.parse::<hyper::Uri>() {
            Ok(uri) if uri.host().is_some() => Ok(Some(spelled)),
            _ => Err(unusable("not a proxy URL".into())),
        }
    };
    let all = read(["ALL_PROXY", "all_proxy"])?;
    // Under CGI, `HTTP_PROXY` is the client's `Proxy:` header, not a setting (httpoxy): as
    // curl and hyper-util, it is not read there.
    let http = if std::env::var_os("REQUEST_METHOD").is_some() {
        None
    } else {
        read(["HTTP_PROXY", "http_proxy"])?
    };
    let https = read(["HTTPS_PROXY", "https_proxy"])?;
    if all.is_none() && http.is_none() && https.is_none() {
        return Ok(Matcher::from_system());
    }
    let no = env_first(["NO_PROXY", "no_proxy"])?.map_or_else(String::new, |(_, v)| v);
    Ok(Matcher::builder()
        .all(all.unwrap_or_default())
        .http(http.unwrap_or_default())
        .https(https.unwrap_or_default())
        .no(no)
        .build())
}

impl Rule {
    pub(crate) fn new(proxy: &Proxy) -> Result<Self, ProxyError> {
        Ok(match proxy {
            Proxy::Direct => Self::Direct,
            Proxy::Url(p) => Self::Fixed(p.clone()),
            Proxy::System => Self::System(Box::new(system_matcher()?)),
        })
    }

    /// The proxy for `url` (`ws`/`wss` count as `http`/`https`), or `None` to go direct.
    /// A proxy the system names that tether cannot use is an error.
    pub(crate) fn for_url(&self, url: &Url) -> Result<Option<ProxyUrl>, Failure> {
        match self {
            Self::Direct => Ok(None),
            Self::Fixed(p) => Ok(Some(p.clone())),
            // A loopback server is on this machine: a proxy's loopback is another one. The
            // environment's and the system's proxies never apply to it, as browsers do (an
            // explicit proxy still does: the app asked for it).
            Self::System(_) if is_loopback(url) => Ok(None),
            Self::System(matcher) => {
                let scheme = match url.scheme() {
                    "ws" | "http" => "http",
                    _ => "https",
                };
                let host = match url.host() {
                    Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
                    Some(h) => h.to_string(),
                    None => return Ok(None),
                };
                let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
                // Never direct for want of a reading: a URL the matcher cannot take is an
                // error, not "no proxy".
                let uri = format!("{scheme}://{host}{port}/")
                    .parse::<hyper::Uri>()
                    .map_err(|_| {
                        Failure::new(
                            TransportError::Protocol,
                            format!("`{host}` cannot be matched against the proxy settings"),
                        )
                    })?;
                match matcher.intercept(&uri) {
                    None => Ok(None),
                    Some(i) => ProxyUrl::from_intercept(&i).map(Some).ok_or_else(|| {
                        Failure::new(
                            TransportError::ProxyUnreachable,
                            format!(
                                "the system's proxy for {scheme} ({}) is of a kind tether cannot use (https:// or socks4)",
                                i.uri()
                            ),
                        )
                    }),
                }
            }
        }
    }
}

/// `localhost`, `*.localhost`, 127.0.0.0/8 or `::1`.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_s_proxies_never_take_a_loopback_server_and_an_explicit_one_does() {
        let proxy = ProxyUrl::parse("http://127.0.0.1:3128").expect("parses");
        let system = Rule::System(Box::new(
            hyper_util::client::proxy::matcher::Matcher::builder()
                .all(proxy.to_string())
                .build(),
        ));
        let fixed = Rule::Fixed(proxy.clone());
        for local in [
            "ws://127.0.0.1:8080/ws",
            "http://localhost:1",
            "wss://chat.localhost/ws",
            "http://[::1]:80",
        ] {
            let url = Url::parse(local).expect("url");
            assert_eq!(system.for_url(&url), Ok(None), "{local}");
            assert_eq!(fixed.for_url(&url), Ok(Some(proxy.clone())), "{local}");
        }
        for remote in ["wss://chat.example.com/ws", "http://10.1.2.3:8080"] {
            let url = Url::parse(remote).expect("url");
            assert_eq!(system.for_url(&url), Ok(Some(proxy.clone())), "{remote}");
        }
        assert_eq!(
            Rule::Direct.for_url(&Url::parse("https://chat.example.com").expect("url")),
            Ok(None)
        );
    }

    #[test]
    fn a_proxy_url_is_read_as_curl_reads_it_and_never_shows_its_password() {
        let p = ProxyUrl::parse("http://al%40ice:s3cr%3At@proxy.corp:3128").expect("parses");
        assert_eq!(p.kind, Kind::Http);
        assert_eq!(p.address(), "proxy.corp:3128");
        assert_eq!(p.user, Some(("al@ice".to_owned(), "s3cr:t".to_owned())));
        assert_eq!(p.to_string(), "http://al@ice:***@proxy.corp:3128");
        assert!(!format!("{p:?}").contains("s3cr"));
        let reqwest = p.reqwest_url().expect("a url");
        assert_eq!(reqwest.password(), Some("s3cr%3At"));

        let bare = ProxyUrl::parse("10.0.0.1:8080").expect("no scheme is http");
        assert_eq!((bare.kind, bare.port), (Kind::Http, 8080));
        let socks = ProxyUrl::parse("socks5h://[::1]").expect("ipv6 host");
        assert_eq!(
            (socks.kind, socks.address()),
            (Kind::Socks5h, "[::1]:1080".into())
        );
        assert!(ProxyUrl::parse("https://proxy:443").is_err());
        assert!(ProxyUrl::parse("ftp://proxy").is_err());
        let e = ProxyUrl::parse("http://user:hunter2@").expect_err("no host");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn the_setting_reads_none_system_or_a_url() {
        assert_eq!("none".parse::<Proxy>(), Ok(Proxy::Direct));
        assert_eq!("system".parse::<Proxy>(), Ok(Proxy::System));
        assert!(matches!(
            "socks5://127.0.0.1:9050".parse::<Proxy>(),
            Ok(Proxy::Url(_))
        ));
    }

    #[test]
    fn basic_credentials_from_the_matcher_come_back_whole() {
        let value = hyper::header::HeaderValue::from_static("Basic dTpwOnc="); // u:p:w
        assert_eq!(decode_basic(&value), Some(("u".into(), "p:w".into())));
    }
}
