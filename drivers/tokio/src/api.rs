//! The REST client: auth, channels and messages of a Kaiku-compatible server.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tether_core::wire::HistoryPage;
use tether_core::{Credentials, ReadHeaders, Secret};
use url::Url;

use crate::net::{Network, Road};

/// Largest response body read (history pages of 100 large messages fit comfortably).
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// Default request timeout.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Fills a token's lifetime from its JWT `exp` claim, reading the wall clock (the core may
/// not). Use it on credentials that came without `expires_in`.
pub fn with_jwt_expiry(credentials: Credentials) -> Credentials {
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    credentials.with_jwt_expiry(unix_now)
}

/// Why a REST call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The server answered with an error status.
    #[error("HTTP {status}: {code}: {message}")]
    Http {
        /// HTTP status.
        status: u16,
        /// The server's machine-readable code (`TOKEN_EXPIRED`, `CHANNEL_NOT_FOUND`, ...),
        /// empty when the body had none.
        code: String,
        /// The server's message (or its plain-text body).
        message: String,
    },
    /// 429: wait before trying again.
    #[error("rate limited; retry after {retry_after:?}")]
    RateLimited {
        /// `Retry-After`, when given.
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused, reset, TLS failure or timeout.
    #[error("network error: {0}")]
    Network(String),
    /// The server could not be reached, and where it failed: the name did not resolve, the
    /// proxy could not be reached, refused the tunnel or the credentials, the server's
    /// certificate is not trusted (its issuer named), TLS failed. `detail` says it in words.
    #[error("{detail}")]
    Unreachable {
        /// Which step failed (the same reading the socket's status gives).
        error: tether_core::TransportError,
        /// What happened, for the user.
        detail: String,
    },
    /// An answer that is not what the API promises (bad JSON, wrong shape, too large).
    #[error("unexpected response: {0}")]
    Decode(String),
    /// The base URL or a path could not form a URL.
    #[error("invalid URL: {0}")]
    Url(String),
    /// The road cannot be built: a proxy setting or variable that names no usable proxy, a
    /// root certificate that does not parse, a malformed pin.
    #[error("network settings: {0}")]
    Settings(String),
    /// Refused before anything was sent: the base is plain `http://` to a host that is not
    /// loopback, and [`Api::allow_insecure`] was not set. Every call carries a credential (a
    /// password, a refresh token or a bearer token), which would cross the network readable.
    #[error(
        "refusing to send credentials unencrypted to `{0}`: use https, or allow insecure connections for non-loopback hosts"
    )]
    Insecure(String),
}

impl ApiError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Http { status, .. } => Some(*status),
            Self::RateLimited { .. } => Some(429),
            _ => None,
        }
    }

    /// Whether the credentials were refused (401).
    pub fn is_unauthorized(&self) -> bool {
        self.status() == Some(401)
    }
}

/// An answer's `Retry-After` (a REST answer's or a refused upgrade's), in seconds or as an
/// HTTP date: counted from the answer's own `Date` (wherever it stands among the headers), or
/// from this host's clock when the answer has no `Date` that parses. Clamped to an hour, as
/// the core clamps every wait.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.as_bytes();
    let date = headers
        .get(reqwest::header::DATE)
        .map_or(&b""[..], |d| d.as_bytes());
    ReadHeaders::from_headers(0, [("retry-after", value), ("date", date)])
        .retry_after
        .or_else(|| parse_retry_after(std::str::from_utf8(value).ok()?))
}

/// Parses a `Retry-After` value: seconds, or an HTTP date counted from this host's clock.
/// Clamped as the core clamps every wait (the core's header reader is the one owner of the
/// rule); a date already past is no wait.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let now = httpdate::fmt_http_date(std::time::SystemTime::now());
    ReadHeaders::from_headers(
        0,
        [("retry-after", value.as_bytes()), ("date", now.as_bytes())],
    )
    .retry_after
}

/// What a call through an observed [`Api`] tells its connection; see [`Api::with_observer`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Observed<'a> {
    /// The headers of an answer to a request in the budget the catch-up's history reads
    /// spend: any method under `/api/messages`, `/api/channels` and `/api/guilds` (Kaiku's
    /// *write* category: reading history, posting, editing and reacting share 30 requests a
    /// minute).
    Answer(&'a ReadHeaders),
    /// The app posted a message: its channel, its id (from the answer) and how long ago the
    /// request went out. Kaiku broadcasts it to the author too, so the connection expects its
    /// echo.
    #[non_exhaustive]
    Posted {
        /// The channel.
        channel_id: &'a str,
        /// The new message's id.
        message_id: &'a str,
        /// Since the request went out.
        elapsed: Duration,
    },
}

/// Told of every observed call; see [`Api::with_observer`].
pub type Observer = std::sync::Arc<dyn Fn(Observed<'_>) + Send + Sync>;

/// Whether a request to `path` (relative to the base) spends the budget history reads spend.
fn in_history_budget(path: &str) -> bool {
    let path = path.trim_start_matches('/');
    ["api/messages", "api/channels", "api/guilds"]
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

/// The REST API of one server. Cheap to clone (the connection pool is shared).
///
/// Plain `http://` goes only to loopback (127.0.0.0/8, `::1`, `localhost`) unless
/// [`allow_insecure`](Api::allow_insecure) is set: the same rule, and the same opt-in, as the
/// socket's (`tether_core::Config::validate`). Otherwise every call fails with
/// [`ApiError::Insecure`] before a connection is opened.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    /// The road the client's connections take, asked why when a call reached nothing.
    road: Road,
    /// How long that question may take (the connect timeout).
    connect_timeout: Duration,
    base: Url,
    observer: Option<Observer>,
    /// The host, when the base is plain text to a host that is not loopback.
    plain_remote: Option<String>,
    allow_insecure: bool,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base.as_str())
            .field("observed", &self.observer.is_some())
            .field("allow_insecure", &self.allow_insecure)
            .finish()
    }
}

/// The host of `base` when the core's TLS rule refuses it without the opt-in: plain text to a
/// host that is not loopback. The core owns the rule (`Config::validate`); this asks it rather
/// than keeping a second copy of what counts as loopback.
fn plain_remote_host(base: &Url) -> Option<String> {
    let config = tether_core::Config::new(base.as_str()).ok()?;
    match config.validate() {
        Err(tether_core::ConfigError::Insecure(host)) => Some(host),
        _ => None,
    }
}

/// The headers of an answer that matter to read pacing (budget, clock, waits).
pub(crate) fn read_headers(resp: &Response) -> ReadHeaders {
    ReadHeaders::from_headers(
        resp.status().as_u16(),
        resp.headers()
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes())),
    )
}

/// The connect timeout for a request timeout: at most 10 s.
fn connect_timeout(timeout: Duration) -> Duration {
    timeout.min(Duration::from_secs(10))
}

/// A new HTTP client on `road`: its own connection pool, the road's proxy and trust.
fn http_client(timeout: Duration, road: &Road) -> Result<reqwest::Client, ApiError> {
    let builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(connect_timeout(timeout))
        .user_agent(concat!("tether/", env!("CARGO_PKG_VERSION")));
    road.rest(builder)
        .build()
        .map_err(|e| ApiError::Network(e.to_string()))
}

/// The shared HTTP client for `timeout` on the default road, one per tokio runtime. An HTTP
/// client holds a TLS configuration and a connection pool, so thousands of tether clients in
/// one process share one (and its pooled connections) instead of each building its own. Per
/// runtime, because a pooled connection is driven by a task of the runtime that opened it:
/// another runtime (a second one in the app, or the next `#[tokio::test]`) must not reuse it.
/// Outside a runtime, a client of its own.
fn shared_http(timeout: Duration, road: &Road) -> Result<reqwest::Client, ApiError> {
    /// Runtimes remembered; the oldest entry goes first (a test suite makes many).
    const KEEP: usize = 8;
    type Key = (tokio::runtime::Id, Duration);
    static SHARED: std::sync::Mutex<Vec<(Key, reqwest::Client)>> =
        std::sync::Mutex::new(Vec::new());
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return http_client(timeout, road);
    };
    let key = (handle.id(), timeout);
    let mut shared = SHARED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, c)) = shared.iter().find(|(k, _)| *k == key) {
        return Ok(c.clone());
    }
    let c = http_client(timeout, road)?;
    if shared.len() >= KEEP {
        shared.remove(0);
    }
    shared.push((key, c.clone()));
    Ok(c)
}

impl Api {
    /// A client for the server at `base` (`https://chat.example.com`), with a 30 s timeout.
    pub fn new(base: &str) -> Result<Self, ApiError> {
        Self::with_timeout(base, TIMEOUT)
    }

    /// Like [`Api::new`] with another timeout.
    pub fn with_timeout(base: &str, timeout: Duration) -> Result<Self, ApiError> {
        Self::with_options(base, timeout, &Network::default())
    }

    /// Like [`Api::new`] with another timeout and another road: a proxy, extra trusted root
    /// certificates (DER) for a server with a private CA, pins, fixed addresses.
    pub fn with_options(
        base: &str,
        timeout: Duration,
        network: &Network,
    ) -> Result<Self, ApiError> {
        let road = Road::new(network).map_err(ApiError::Settings)?;
        let shared = *network == Network::default();
        Self::on_road(base, timeout, road, shared)
    }

    /// An API on `road` (the one a [`Client`](crate::Client)'s socket takes). `shared`: the
    /// road is the default one, and the process's shared HTTP client serves it.
    pub(crate) fn on_road(
        base: &str,
        timeout: Duration,
        road: Road,
        shared: bool,
    ) -> Result<Self, ApiError> {
        let mut base = Url::parse(base).map_err(|e| ApiError::Url(e.to_string()))?;
        match base.scheme() {
            "http" | "https" => {}
            "ws" => base
                .set_scheme("http")
                .map_err(|_| ApiError::Url("scheme".into()))?,
            "wss" => base
                .set_scheme("https")
                .map_err(|_| ApiError::Url("scheme".into()))?,
            other => return Err(ApiError::Url(format!("unsupported scheme `{other}`"))),
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = if shared {
            shared_http(timeout, &road)?
        } else {
            http_client(timeout, &road)?
        };
        Ok(Self {
            http,
            road,
            connect_timeout: connect_timeout(timeout),
            plain_remote: plain_remote_host(&base),
            base,
            observer: None,
            allow_insecure: false,
        })
    }

    /// The same API, allowed (`true`) or not (`false`, the default) to send credentials over
    /// plain `http://` to a host that is not loopback. Set it only when the user explicitly
    /// asked (the socket's `Config::allow_insecure`, `tether --insecure`): a password or a
    /// token sent that way can be read by anyone on the path.
    pub fn allow_insecure(mut self, allow: bool) -> Self {
        self.allow_insecure = allow;
        self
    }

    /// Whether calls would be refused with [`ApiError::Insecure`].
    pub fn is_refused_as_insecure(&self) -> bool {
        self.plain_remote.is_some() && !self.allow_insecure
    }

    /// The same API, telling `observer` the headers of every answer in the budget history
    /// reads spend ([`Observed::Answer`]: history, channel lists, posts, edits, deletes) and
    /// every message posted ([`Observed::Posted`]). A [`Client`](crate::Client)'s
    /// [`api`](crate::Client::api) reports them to its connection this way, so the app's
    /// requests and the catch-up's share the server's budget (the catch-up keeps a reserve
    /// for the app's posts), and a post whose echo never comes proves the socket deaf.
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// A request to `path`. Every request carries a credential (the token here, or a password
    /// or refresh token in the body), so this is where the TLS rule is applied.
    fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&Secret>,
    ) -> Result<RequestBuilder, ApiError> {
        if let (Some(host), false) = (&self.plain_remote, self.allow_insecure) {
            return Err(ApiError::Insecure(host.clone()));
        }
        let url = self
            .base
            .join(path.trim_start_matches('/'))
            .map_err(|e| ApiError::Url(e.to_string()))?;
        let mut req = self.http.request(method, url);
        if let Some(t) = token {
            req = req.bearer_auth(t.expose());
        }
        Ok(req)
    }

    /// Sends a request and returns the body of a success, or the typed error. The headers
    /// of an answer in the history's budget go to the observer.
    async fn call(&self, req: RequestBuilder) -> Result<(StatusCode, Bytes), ApiError> {
        let (result, headers) = self.call_with_headers(req).await;
        if let (Some(observer), Some(headers)) = (&self.observer, headers) {
            observer(Observed::Answer(&headers));
        }
        result
    }

    /// Whether `url` is a request in the budget history reads spend.
    fn in_budget(&self, url: &Url) -> bool {
        url.path()
            .strip_prefix(self.base.path().trim_end_matches('/'))
            .is_some_and(in_history_budget)
    }

    /// Like [`call`](Self::call), handing back a read's headers instead of observing them.
    async fn call_with_headers(
        &self,
        req: RequestBuilder,
    ) -> (Result<(StatusCode, Bytes), ApiError>, Option<ReadHeaders>) {
        let request = match req.build() {
            Ok(r) => r,
            Err(e) => return (Err(network(e)), None),
        };
        let in_budget = self.in_budget(request.url());
        let resp = match self.execute(request).await {
            Ok(r) => r,
            Err(e) => return (Err(e), None),
        };
        let headers = in_budget.then(|| read_headers(&resp));
        (Self::answer(resp).await, headers)
    }

    /// Sends `request`. When it reached nothing, the road is asked where it fails, so the
    /// error names the step (the proxy's answer, the certificate's issuer).
    async fn execute(&self, request: reqwest::Request) -> Result<Response, ApiError> {
        let url = request.url().clone();
        match self.http.execute(request).await {
            // A forwarding proxy (plain http://) answers for the server it stands before.
            Ok(resp)
                if resp.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED
                    && self.road.proxied(&url) =>
            {
                Err(ApiError::Unreachable {
                    error: tether_core::TransportError::ProxyAuth,
                    detail: "the proxy answered 407 Proxy Authentication Required".into(),
                })
            }
            Ok(resp) => Ok(resp),
            // Asked with the connect timeout: a proxy that never answers must not hold the
            // call longer than reqwest itself would have.
            Err(e) if e.is_connect() => {
                match tokio::time::timeout(self.connect_timeout, self.road.diagnose(&url)).await {
                    Ok(Some(f)) => Err(ApiError::Unreachable {
                        error: f.error,
                        detail: f.detail,
                    }),
                    Ok(None) | Err(_) => Err(network(e)),
                }
            }
            Err(e) => Err(network(e)),
        }
    }

    async fn answer(resp: Response) -> Result<(StatusCode, Bytes), ApiError> {
        let status = resp.status();
        let retry = retry_after(resp.headers());
        let body = read_capped(resp, MAX_BODY).await?;
        if status.is_success() {
            return Ok((status, body));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(ApiError::RateLimited { retry_after: retry });
        }
        Err(error_from(status, &body))
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        req: RequestBuilder,
    ) -> Result<T, ApiError> {
        let (_, body) = self.call(req).await?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Decode(e.to_string()))
    }

    /// A token answer. Kaiku always rotates the refresh token; to a request that carries an
    /// `Origin` header (a browser's) it gives the new one only as the `kaiku_refresh` cookie,
    /// not in the body. These requests never send `Origin`, but a proxy may add one: a body
    /// without `refresh_token` takes it from the cookie, so the rotation is not lost.
    async fn credentials(&self, req: RequestBuilder) -> Result<Credentials, ApiError> {
        let request = req.build().map_err(network)?;
        let resp = self.execute(request).await?;
        let cookie = refresh_cookie(resp.headers());
        let (_, body) = Self::answer(resp).await?;
        let mut creds =
            Credentials::from_token_response(&body).map_err(|e| ApiError::Decode(e.to_string()))?;
        if creds.refresh_token.is_none() {
            creds.refresh_token = cookie;
        }
        Ok(creds)
    }

    /// `POST /auth/login`.
    pub async fn login(&self, username: &str, password: &Secret) -> Result<Credentials, ApiError> {
        let req = self
            .request(Method::POST, "auth/login", None)?
            .json(&json!({"username": username, "password": password.expose()}));
        self.credentials(req).await
    }

    /// `POST /auth/register`.
    pub async fn register(
        &self,
        username: &str,
        password: &Secret,
    ) -> Result<Credentials, ApiError> {
        let req = self
            .request(Method::POST, "auth/register", None)?
            .json(&json!({"username": username, "password": password.expose()}));
        self.credentials(req).await
    }

    /// `POST /auth/refresh`.
    pub async fn refresh(&self, refresh_token: &Secret) -> Result<Credentials, ApiError> {
        let req = self
            .request(Method::POST, "auth/refresh", None)?
            .json(&json!({"refresh_token": refresh_token.expose()}));
        self.credentials(req).await
    }

    /// `POST /auth/logout`.
    pub async fn logout(&self, token: &Secret) -> Result<(), ApiError> {
        self.call(self.request(Method::POST, "auth/logout", Some(token))?)
            .await?;
        Ok(())
    }

    /// `GET /auth/me`.
    pub async fn me(&self, token: &Secret) -> Result<Value, ApiError> {
        self.json(self.request(Method::GET, "auth/me", Some(token))?)
            .await
    }

    /// `GET /api/channels`.
    pub async fn channels(&self, token: &Secret) -> Result<Vec<Value>, ApiError> {
        self.json(self.request(Method::GET, "api/channels", Some(token))?)
            .await
    }

    /// `POST /api/channels`.
    pub async fn create_channel(&self, token: &Secret, name: &str) -> Result<Value, ApiError> {
        let req = self
            .request(Method::POST, "api/channels", Some(token))?
            .json(&json!({"name": name}));
        self.json(req).await
    }

    /// `GET /api/messages/channel/{id}?limit=&before=`: the raw body, for callers that keep
    /// the server's JSON (the connection's catch-up does).
    pub async fn messages_raw(
        &self,
        token: &Secret,
        channel_id: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Bytes, ApiError> {
        let path = format!("api/messages/channel/{}", encode_segment(channel_id));
        let mut req = self
            .request(Method::GET, &path, Some(token))?
            .query(&[("limit", limit.to_string())]);
        if let Some(b) = before {
            req = req.query(&[("before", b)]);
        }
        Ok(self.call(req).await?.1)
    }

    /// Like [`messages_raw`](Self::messages_raw), also handing back the answer's headers (the
    /// server's budget and clock) instead of telling the observer: the connection's own
    /// catch-up reads report them to the core themselves.
    pub async fn messages_raw_with_headers(
        &self,
        token: &Secret,
        channel_id: &str,
        before: Option<&str>,
        limit: u32,
    ) -> (Result<Bytes, ApiError>, Option<ReadHeaders>) {
        let path = format!("api/messages/channel/{}", encode_segment(channel_id));
        let mut req = match self.request(Method::GET, &path, Some(token)) {
            Ok(r) => r.query(&[("limit", limit.to_string())]),
            Err(e) => return (Err(e), None),
        };
        if let Some(b) = before {
            req = req.query(&[("before", b)]);
        }
        let (result, headers) = self.call_with_headers(req).await;
        (result.map(|(_, body)| body), headers)
    }

    /// One page of history, newest first, in either response shape.
    pub async fn messages(
        &self,
        token: &Secret,
        channel_id: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<HistoryPage, ApiError> {
        let body = self.messages_raw(token, channel_id, before, limit).await?;
        HistoryPage::decode(body, MAX_BODY).map_err(|e| ApiError::Decode(e.to_string()))
    }

    /// `POST /api/messages/channel/{id}`.
    pub async fn post_message(
        &self,
        token: &Secret,
        channel_id: &str,
        content: &str,
    ) -> Result<Value, ApiError> {
        let path = format!("api/messages/channel/{}", encode_segment(channel_id));
        let req = self
            .request(Method::POST, &path, Some(token))?
            .json(&json!({"content": content}));
        let sent = std::time::Instant::now();
        let message: Value = self.json(req).await?;
        if let (Some(observer), Some(id)) = (&self.observer, message["id"].as_str()) {
            observer(Observed::Posted {
                channel_id,
                message_id: id,
                elapsed: sent.elapsed(),
            });
        }
        Ok(message)
    }

    /// `PATCH /api/messages/{id}`.
    pub async fn edit_message(
        &self,
        token: &Secret,
        message_id: &str,
        content: &str,
    ) -> Result<Value, ApiError> {
        let path = format!("api/messages/{}", encode_segment(message_id));
        let req = self
            .request(Method::PATCH, &path, Some(token))?
            .json(&json!({"content": content}));
        self.json(req).await
    }

    /// `DELETE /api/messages/{id}`.
    pub async fn delete_message(&self, token: &Secret, message_id: &str) -> Result<(), ApiError> {
        let path = format!("api/messages/{}", encode_segment(message_id));
        self.call(self.request(Method::DELETE, &path, Some(token))?)
            .await?;
        Ok(())
    }
}

/// The refresh token a `Set-Cookie` carries (Kaiku's `kaiku_refresh`), if any.
fn refresh_cookie(headers: &reqwest::header::HeaderMap) -> Option<Secret> {
    headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let pair = v.split(';').next()?.trim();
            let (name, value) = pair.split_once('=')?;
            (matches!(name.trim(), "kaiku_refresh" | "refresh_token") && !value.is_empty())
                .then(|| Secret::new(value.trim()))
        })
}

fn network(e: reqwest::Error) -> ApiError {
    // reqwest errors name the URL, which never carries a token here (tokens go in headers).
    ApiError::Network(e.to_string())
}

/// Percent-encodes one path segment (ids are UUIDs, but nothing from the caller is trusted).
fn encode_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Reads a body up to `max` bytes; a larger body is an error, not an allocation.
async fn read_capped(mut resp: Response, max: usize) -> Result<Bytes, ApiError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(ApiError::Decode(format!("body over {max} bytes")));
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(network)? {
        if buf.len() + chunk.len() > max {
            return Err(ApiError::Decode(format!("body over {max} bytes")));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// The typed error for a failed response; both body shapes are read by the core.
fn error_from(status: StatusCode, body: &[u8]) -> ApiError {
    let e = tether_core::wire::RestError::decode(body);
    ApiError::Http {
        status: status.as_u16(),
        code: e.code,
        message: e.message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_error_shapes_and_plain_text() {
        let e = error_from(
            StatusCode::UNAUTHORIZED,
            br#"{"error":"TOKEN_EXPIRED","message":"Token expired"}"#,
        );
        assert!(
            matches!(e, ApiError::Http { status: 401, ref code, ref message } if code == "TOKEN_EXPIRED" && message == "Token expired")
        );
        let e = error_from(
            StatusCode::NOT_FOUND,
            br#"{"error":"Channel not found","code":"CHANNEL_NOT_FOUND"}"#,
        );
        assert!(
            matches!(e, ApiError::Http { ref code, ref message, .. } if code == "CHANNEL_NOT_FOUND" && message == "Channel not found")
        );
        let e = error_from(
            StatusCode::BAD_REQUEST,
            b"Failed to parse the request body as JSON",
        );
        assert!(
            matches!(e, ApiError::Http { status: 400, ref code, ref message } if code.is_empty() && message.starts_with("Failed"))
        );
    }

    #[test]
    fn the_refresh_cookie_is_found_among_the_set_cookies() {
        use reqwest::header::{HeaderMap, HeaderValue, SET_COOKIE};
        let mut h = HeaderMap::new();
        h.append(SET_COOKIE, HeaderValue::from_static("theme=dark; Path=/"));
        h.append(
            SET_COOKIE,
            HeaderValue::from_static(
                "kaiku_refresh=eyJ.rot.ated; HttpOnly; Secure; SameSite=Strict; Path=/auth",
            ),
        );
        assert_eq!(
            refresh_cookie(&h).map(|s| s.expose().to_owned()),
            Some("eyJ.rot.ated".to_owned())
        );
        let mut h = HeaderMap::new();
        h.append(
            SET_COOKIE,
            HeaderValue::from_static("kaiku_refresh=; Max-Age=0"),
        );
        assert!(refresh_cookie(&h).is_none(), "a cleared cookie is no token");
    }

    #[test]
    fn only_the_history_budgets_routes_are_observed() {
        for p in [
            "api/messages/channel/c",
            "/api/messages",
            "api/channels",
            "api/guilds/g/channels",
        ] {
            assert!(in_history_budget(p), "{p}");
        }
        for p in ["auth/me", "auth/refresh", "api/messagesx", "health"] {
            assert!(!in_history_budget(p), "{p}");
        }
    }

    #[test]
    fn retry_after_is_seconds_and_clamped() {
        assert_eq!(parse_retry_after("60"), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("99999999999"),
            Some(Duration::from_secs(3600))
        );
        // A date already past: no wait.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn retry_after_as_a_date_counts_from_the_answers_date_wherever_it_stands() {
        use reqwest::header::{DATE, HeaderMap, HeaderValue, RETRY_AFTER};
        let mut h = HeaderMap::new();
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 25 Nov 2026 17:47:12 GMT"),
        );
        h.insert(
            DATE,
            HeaderValue::from_static("Wed, 25 Nov 2026 17:46:42 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(30)));
        // No `Date`: this host's clock, so a date 2 minutes ahead of it waits about that.
        let ahead =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(120));
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(&ahead).unwrap());
        let wait = retry_after(&h).unwrap();
        assert!((119..=120).contains(&wait.as_secs()), "{wait:?}");
    }

    #[test]
    fn base_urls_are_normalised() {
        let a = Api::new("https://chat.example.com/base").unwrap();
        assert_eq!(a.base().as_str(), "https://chat.example.com/base/");
        let a = Api::new("wss://chat.example.com").unwrap();
        assert_eq!(a.base().as_str(), "https://chat.example.com/");
        assert!(Api::new("ftp://x").is_err());
        assert!(Api::new("nonsense").is_err());
    }

    #[test]
    fn plain_http_is_refused_only_to_hosts_that_are_not_loopback() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://[::1]:9",
            "http://localhost:1",
            "ws://LOCALHOST",
            "https://chat.example.com",
            "wss://10.0.0.1",
        ] {
            assert!(!Api::new(ok).unwrap().is_refused_as_insecure(), "{ok}");
        }
        for refused in [
            "http://chat.example.com",
            "ws://10.0.0.1",
            "http://[fd00::2]",
            "http://localhost.example.com",
        ] {
            let api = Api::new(refused).unwrap();
            assert!(api.is_refused_as_insecure(), "{refused}");
            assert!(
                !api.allow_insecure(true).is_refused_as_insecure(),
                "{refused}"
            );
        }
    }

    #[tokio::test]
    async fn every_call_over_plain_http_to_a_remote_host_fails_before_sending() {
        // `.invalid` never resolves: a call that tried the network would end in a network
        // error (after a DNS query), not in `Insecure`.
        let api = Api::with_timeout("http://example.invalid", Duration::from_secs(5)).unwrap();
        let password = Secret::new("hunter2");
        let token = Secret::new("a.jwt.token");
        let started = std::time::Instant::now();
        let results = [
            api.login("u", &password).await.map(drop),
            api.register("u", &password).await.map(drop),
            api.refresh(&token).await.map(drop),
            api.logout(&token).await,
            api.me(&token).await.map(drop),
            api.channels(&token).await.map(drop),
            api.create_channel(&token, "c").await.map(drop),
            api.messages(&token, "c", None, 1).await.map(drop),
            api.messages_raw_with_headers(&token, "c", None, 1)
                .await
                .0
                .map(drop),
            api.post_message(&token, "c", "hi").await.map(drop),
            api.edit_message(&token, "m", "hi").await.map(drop),
            api.delete_message(&token, "m").await,
        ];
        for r in results {
            assert!(
                matches!(&r, Err(ApiError::Insecure(host)) if host == "example.invalid"),
                "{r:?}"
            );
        }
        assert!(started.elapsed() < Duration::from_millis(100));
        let e = api.login("u", &password).await.unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }
}
