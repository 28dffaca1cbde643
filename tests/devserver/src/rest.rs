//! The REST API: auth, channels, messages. Kaiku's shapes and error bodies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::faults::Refusal;
use crate::kaiku_events::ServerEvent;
use crate::limits::{Category, Decision, ReadTicket};
use crate::store::{TokenError, rfc3339_offset};
use crate::{ErrorShape, HistoryShape, Shared};

fn error(shared: &Shared, status: StatusCode, code: &str, message: &str) -> Response {
    let body = match shared.config.error_shape {
        ErrorShape::Modern => json!({"error": code, "message": message}),
        ErrorShape::Legacy => json!({"error": message, "code": code}),
    };
    (status, Json(body)).into_response()
}

/// What the gate decided about a request before it reaches its handler.
enum Verdict {
    /// No limit applies.
    Pass,
    /// Within its budget: answered, with the budget's headers.
    Allowed(Decision),
    /// Over its budget: 429.
    Limited(Decision),
    /// The `rate_limit_rest` fault: 429 with this `Retry-After` in seconds.
    Fault(u64),
    /// The `redis_down` fault on a limited route: 503, counted nowhere.
    RedisDown,
}

/// Every REST request passes here: it is counted against its rate limit on arrival, logged
/// if it is a read, then waits out the REST latency before it is answered.
pub(crate) async fn gate(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let arrived = Instant::now();
    let category = Category::of(request.method(), request.uri().path());
    let user_id = category
        .filter(|c| c.per_user())
        .and_then(|_| check_bearer(&shared, request.headers()).ok());
    // Every GET is a read for the log, whatever budget it spends (history is a write).
    let is_read = request.method() == Method::GET && request.uri().path() != "/health";
    let read = is_read.then(|| {
        let path = request
            .uri()
            .path_and_query()
            .map_or_else(|| request.uri().path(), |p| p.as_str());
        InFlight {
            shared: shared.clone(),
            ticket: Some(
                shared
                    .limits()
                    .begin_read(arrived, user_id.as_deref(), path),
            ),
        }
    });

    let limited = category.and_then(|c| shared.config.rate_limits.of(c).map(|l| (c, l)));
    let verdict = if let Some(r) = Refusal::take(&mut shared.faults().rest_limit) {
        Verdict::Fault(r.retry_after.unwrap_or(60))
    } else if limited.is_some() && shared.faults().redis_down {
        Verdict::RedisDown
    } else if let Some((category, limit)) = limited {
        let key = match user_id {
            Some(ref id) => format!("user:{id}"),
            None => client_ip(&request),
        };
        let d = shared
            .limits()
            .check(arrived, SystemTime::now(), category, &key, limit);
        if d.allowed {
            Verdict::Allowed(d)
        } else {
            Verdict::Limited(d)
        }
    } else {
        Verdict::Pass
    };

    let kaiku_headers = shared.config.rate_limits.kaiku_headers;
    let latency = shared.rest_latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let (response, retry_after) = match verdict {
        Verdict::Pass => (next.run(request).await, None),
        Verdict::Allowed(d) => {
            let mut response = next.run(request).await;
            if shared.config.rate_limit_headers {
                budget_headers(response.headers_mut(), &d, kaiku_headers);
            }
            (response, None)
        }
        Verdict::Limited(d) => {
            // Kaiku's Lua script reads the key's TTL when it refuses; ours, exact, when the
            // answer leaves.
            let secs = if kaiku_headers {
                d.redis_ttl_secs()
            } else {
                d.retry_after_secs(Instant::now())
            };
            (rate_limited(secs, Some(d.limit)), Some(secs))
        }
        Verdict::Fault(secs) => (rate_limited(secs, None), Some(secs)),
        Verdict::RedisDown => (redis_down(), None),
    };
    if let Some(mut read) = read {
        read.answered(
            response.status().as_u16(),
            retry_after.map(Duration::from_secs),
        );
    }
    response
}

/// A read counted in flight; ends when answered, or when dropped because the client went
/// away first.
struct InFlight {
    shared: Arc<Shared>,
    ticket: Option<ReadTicket>,
}

impl InFlight {
    fn answered(&mut self, status: u16, retry_after: Option<Duration>) {
        if let Some(ticket) = self.ticket.take() {
            self.shared
                .limits()
                .end_read(&ticket, Instant::now(), Some((status, retry_after)));
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.shared.limits().end_read(&ticket, Instant::now(), None);
        }
    }
}

/// The peer's IP, the key of per-IP limits (and of per-user ones without a valid token).
fn client_ip(request: &Request) -> String {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "ip:unknown".to_owned(), |c| format!("ip:{}", c.0.ip()))
}

/// `x-ratelimit-*` for an answer within its budget; the reset as Kaiku computes it with
/// `kaiku` (see `RateLimits::kaiku_headers`), exact and rounded up without.
fn budget_headers(headers: &mut HeaderMap, d: &Decision, kaiku: bool) {
    let reset = if kaiku {
        d.kaiku_reset_epoch_secs()
    } else {
        d.reset_epoch_secs()
    };
    for (name, value) in [
        ("x-ratelimit-limit", d.limit.to_string()),
        ("x-ratelimit-remaining", d.remaining.to_string()),
        ("x-ratelimit-reset", reset.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

/// A 429 with `Retry-After: secs`, and no `x-ratelimit-*` headers: Kaiku sends none with
/// it. With `limit`, Kaiku's body byte for byte (its field order, which `json!` would sort);
/// without, the body the `rate_limit_rest` fault has always sent.
fn rate_limited(secs: u64, limit: Option<u32>) -> Response {
    let body = match limit {
        Some(limit) => format!(
            r#"{{"error":"rate_limited","message":"Too many requests. Wait {secs} seconds.","retry_after":{secs},"limit":{limit},"remaining":0}}"#
        ),
        None => json!({
            "error": "rate_limited",
            "message": format!("Too many requests. Wait {secs} seconds."),
            "retry_after": secs,
        })
        .to_string(),
    };
    let mut resp = (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

/// What Kaiku answers on a limited route when Redis is unreachable and `fail_open` is off
/// (its `RateLimitError::RedisUnavailable`): 503, `{"error":"service_unavailable"}`, no
/// `Retry-After` and no budget headers.
fn redis_down() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": "service_unavailable"})),
    )
        .into_response()
}

/// Why a request's `Authorization` was refused.
enum AuthFail {
    Missing,
    Token(TokenError),
}

impl AuthFail {
    /// The 401 Kaiku sends for it.
    fn into_response(self, shared: &Shared) -> Response {
        let (code, message) = match self {
            Self::Missing => ("MISSING_AUTH", "Missing authorization header"),
            Self::Token(TokenError::Expired) => ("TOKEN_EXPIRED", "Token expired"),
            Self::Token(TokenError::Invalid) => ("INVALID_TOKEN", "Invalid or expired token"),
        };
        error(shared, StatusCode::UNAUTHORIZED, code, message)
    }
}

/// The user behind a `Bearer` token, or the 401 Kaiku sends.
#[allow(clippy::result_large_err)] // an axum handler's early return is a whole Response
fn authed(shared: &Shared, headers: &HeaderMap) -> Result<String, Response> {
    check_bearer(shared, headers).map_err(|f| f.into_response(shared))
}

fn check_bearer(shared: &Shared, headers: &HeaderMap) -> Result<String, AuthFail> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(AuthFail::Missing)?;
    let token = value.strip_prefix("Bearer ").unwrap_or_default();
    shared.store().check_access(token).map_err(AuthFail::Token)
}

pub(crate) async fn health(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let limiting = shared.config.rate_limits.any();
    Json(json!({"status": "ok", "database": true, "redis": true, "rate_limiting": limiting}))
}

#[derive(Deserialize)]
pub(crate) struct Credentials {
    username: String,
    password: String,
    #[serde(default)]
    display_name: Option<String>,
}

fn valid_username(u: &str) -> bool {
    (3..=32).contains(&u.len())
        && u.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The refresh token's cookie, as Kaiku's `auth/cookies.rs` names it.
const REFRESH_COOKIE: &str = "kaiku_refresh";

/// A token response: as is, or for a browser (a request with `Origin`) as Kaiku's
/// `auth/handlers.rs` answers it: the refresh token leaves the JSON body (the field is
/// absent, not null) and comes only as an `HttpOnly` cookie scoped to `/auth`. Kaiku's
/// `SameSite` and `Secure` follow its settings (`cookie_same_site`, `cookie_secure`), which
/// the reference does not show; this sends the strict ones.
fn tokens_answer(shared: &Shared, headers: &HeaderMap, mut tokens: Value) -> Response {
    if !headers.contains_key(header::ORIGIN) {
        return Json(tokens).into_response();
    }
    let refresh = tokens
        .as_object_mut()
        .and_then(|t| t.remove("refresh_token"));
    let mut response = Json(tokens).into_response();
    if let Some(token) = refresh.as_ref().and_then(Value::as_str) {
        let max_age = shared.store().refresh_ttl.as_secs();
        let cookie = format!(
            "{REFRESH_COOKIE}={token}; HttpOnly; SameSite=Strict; Secure; Path=/auth; Max-Age={max_age}"
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    response
}

/// The refresh token a browser's `Cookie` header carries, if any.
fn refresh_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == REFRESH_COOKIE)
        .map(|(_, value)| value.to_owned())
}

pub(crate) async fn register(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(c): Json<Credentials>,
) -> Response {
    if !valid_username(&c.username) || !(8..=128).contains(&c.password.len()) {
        return error(
            &shared,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "Validation failed: username must be 3-32 of [a-z0-9_], password 8-128 characters",
        );
    }
    let mut store = shared.store();
    let display = c.display_name.as_deref().unwrap_or(&c.username).to_owned();
    match store.register(&c.username, &c.password, &display) {
        Some(user) => {
            let tokens = store.issue_tokens(&user.id);
            drop(store);
            tokens_answer(&shared, &headers, tokens)
        }
        None => {
            drop(store);
            error(
                &shared,
                StatusCode::CONFLICT,
                "USER_EXISTS",
                "Username or email already taken",
            )
        }
    }
}

pub(crate) async fn login(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(c): Json<Credentials>,
) -> Response {
    let mut store = shared.store();
    match store.login(&c.username, &c.password) {
        Some(user) => {
            let tokens = store.issue_tokens(&user.id);
            drop(store);
            tokens_answer(&shared, &headers, tokens)
        }
        None => {
            drop(store);
            error(
                &shared,
                StatusCode::UNAUTHORIZED,
                "INVALID_CREDENTIALS",
                "Invalid credentials",
            )
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct RefreshBody {
    #[serde(default)]
    refresh_token: Option<String>,
}

/// `POST /auth/refresh`: the token from the body, else from the `kaiku_refresh` cookie (a
/// browser's, which has none in its body).
pub(crate) async fn refresh(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Option<Json<RefreshBody>>,
) -> Response {
    let token = body
        .and_then(|Json(b)| b.refresh_token)
        .or_else(|| refresh_cookie(&headers))
        .unwrap_or_default();
    let result = shared.store().refresh(&token);
    match result {
        Ok(tokens) => tokens_answer(&shared, &headers, tokens),
        Err(TokenError::Expired) => error(
            &shared,
            StatusCode::UNAUTHORIZED,
            "TOKEN_EXPIRED",
            "Token expired",
        ),
        Err(TokenError::Invalid) => error(
            &shared,
            StatusCode::UNAUTHORIZED,
            "INVALID_TOKEN",
            "Invalid or expired token",
        ),
    }
}

pub(crate) async fn logout(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(r) = authed(&shared, &headers) {
        return r;
    }
    if let Some(t) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        shared.store().revoke(t);
    }
    StatusCode::NO_CONTENT.into_response()
}

pub(crate) async fn me(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let user_id = match authed(&shared, &headers) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let store = shared.store();
    match store.user(&user_id) {
        Some(u) => Json(json!({
            "id": u.id, "username": u.username, "display_name": u.display_name,
            "email": null, "avatar_url": null, "status": u.status, "mfa_enabled": false,
        }))
        .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

pub(crate) async fn list_channels(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authed(&shared, &headers) {
        return r;
    }
    let store = shared.store();
    let list: Vec<Value> = store
        .channels
        .values()
        .map(|c| store.channel_json(c))
        .collect();
    Json(list).into_response()
}

#[derive(Deserialize)]
pub(crate) struct NewChannel {
    name: String,
}

pub(crate) async fn create_channel(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(b): Json<NewChannel>,
) -> Response {
    if let Err(r) = authed(&shared, &headers) {
        return r;
    }
    if b.name.trim().is_empty() || b.name.len() > 64 {
        return error(
            &shared,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "name: 1-64 characters",
        );
    }
    let mut store = shared.store();
    let ch = store.create_channel(b.name.trim());
    (StatusCode::CREATED, Json(store.channel_json(&ch))).into_response()
}

#[derive(Deserialize)]
pub(crate) struct Page {
    before: Option<String>,
    limit: Option<usize>,
}

pub(crate) async fn list_messages(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(channel_id): Path<String>,
    Query(page): Query<Page>,
) -> Response {
    let viewer = match authed(&shared, &headers) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let limit = page.limit.unwrap_or(50).clamp(1, 100);
    let store = shared.store();
    let Some((items, has_more)) =
        store.history_for(&channel_id, Some(&viewer), page.before.as_deref(), limit)
    else {
        drop(store);
        return error(
            &shared,
            StatusCode::NOT_FOUND,
            "CHANNEL_NOT_FOUND",
            "Channel not found",
        );
    };
    let cursor = items.last().map(|m| m.id.clone());
    let items: Vec<Value> = items.iter().map(|m| store.message_json(m)).collect();
    let body = match shared.config.history_shape {
        HistoryShape::BareArray => json!(items),
        HistoryShape::Envelope if has_more => {
            json!({"items": items, "has_more": true, "next_cursor": cursor})
        }
        HistoryShape::Envelope => json!({"items": items, "has_more": false}),
    };
    Json(body).into_response()
}

#[derive(Deserialize)]
pub(crate) struct NewMessage {
    content: String,
}

/// Stores a message and broadcasts `message_new`; shared by REST and the test API.
pub(crate) fn post_message(
    shared: &Shared,
    channel_id: &str,
    username: &str,
    content: &str,
) -> Option<String> {
    let mut store = shared.store();
    let author = store.user_by_name(username)?.id.clone();
    let m = store.post(channel_id, &author, content)?;
    let frame = ServerEvent::MessageNew {
        channel_id: channel_id.to_owned(),
        message: store.message_json(&m),
    };
    drop(store);
    shared.broadcast(channel_id, &frame.to_json());
    Some(m.id)
}

/// Begins a message now and commits it (visible, then broadcast) after `delay`, as Kaiku's
/// upload path does; returns its id at once.
pub(crate) fn post_message_delayed(
    shared: &Arc<Shared>,
    channel_id: &str,
    username: &str,
    content: &str,
    delay: Duration,
) -> Option<String> {
    let mut store = shared.store();
    let author = store.user_by_name(username)?.id.clone();
    let m = store.begin_post(channel_id, &author, content)?;
    drop(store);
    let id = m.id.clone();
    let shared = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut store = shared.store();
        let body = store.message_json(&m);
        let channel_id = m.channel_id.clone();
        if !store.commit(m) {
            return;
        }
        drop(store);
        let frame = ServerEvent::MessageNew {
            channel_id: channel_id.clone(),
            message: body,
        };
        shared.broadcast(&channel_id, &frame.to_json());
    });
    Some(id)
}

pub(crate) async fn create_message(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(channel_id): Path<String>,
    Json(b): Json<NewMessage>,
) -> Response {
    let user_id = match authed(&shared, &headers) {
        Ok(u) => u,
        Err(r) => return r,
    };
    if b.content.trim().is_empty() {
        return error(
            &shared,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "content: Content cannot be empty",
        );
    }
    let mut store = shared.store();
    let Some(m) = store.post(&channel_id, &user_id, &b.content) else {
        drop(store);
        return error(
            &shared,
            StatusCode::NOT_FOUND,
            "CHANNEL_NOT_FOUND",
            "Channel not found",
        );
    };
    let body = store.message_json(&m);
    drop(store);
    let frame = ServerEvent::MessageNew {
        channel_id: channel_id.clone(),
        message: body.clone(),
    };
    shared.broadcast(&channel_id, &frame.to_json());
    (StatusCode::CREATED, Json(body)).into_response()
}

pub(crate) async fn edit_message(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(b): Json<NewMessage>,
) -> Response {
    if let Err(r) = authed(&shared, &headers) {
        return r;
    }
    let mut store = shared.store();
    let now = store.now();
    let Some(m) = store.find_message(&id) else {
        drop(store);
        return error(
            &shared,
            StatusCode::NOT_FOUND,
            "MESSAGE_NOT_FOUND",
            "Message not found",
        );
    };
    m.content = b.content.clone();
    m.edited_at = Some(now);
    let m = m.clone();
    let body = store.message_json(&m);
    drop(store);
    let frame = ServerEvent::MessageEdit {
        channel_id: m.channel_id.clone(),
        message_id: m.id.clone(),
        content: m.content.clone(),
        edited_at: rfc3339_offset(now),
    };
    shared.broadcast(&m.channel_id, &frame.to_json());
    Json(body).into_response()
}

pub(crate) async fn delete_message(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authed(&shared, &headers) {
        return r;
    }
    let removed = shared.store().delete_message(&id);
    let Some(m) = removed else {
        return error(
            &shared,
            StatusCode::NOT_FOUND,
            "MESSAGE_NOT_FOUND",
            "Message not found",
        );
    };
    let frame = ServerEvent::MessageDelete {
        channel_id: m.channel_id.clone(),
        message_id: m.id,
    };
    shared.broadcast(&m.channel_id, &frame.to_json());
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use crate::testkit::{Ws, get, http, server_with_user, token_of};
    use crate::{HistoryShape, Limit, RateLimits, ServerConfig};

    fn limited(limits: RateLimits) -> ServerConfig {
        ServerConfig {
            rate_limits: limits,
            ..ServerConfig::default()
        }
    }

    #[tokio::test]
    async fn history_spends_the_posting_budget_as_on_kaiku() {
        let limits = RateLimits {
            write: Some(Limit::new(2, Duration::from_secs(60))),
            ..RateLimits::default()
        };
        let (server, token) = server_with_user(limited(limits), "alice").await;
        let ch = server.create_channel("general");
        let history = format!("/api/messages/channel/{ch}?limit=1");
        for remaining in ["1", "0"] {
            let r = get(server.addr(), &history, &token).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-ratelimit-limit"), Some("2"));
            assert_eq!(r.header("x-ratelimit-remaining"), Some(remaining));
        }
        let auth = format!("Bearer {token}");
        let post = format!("/api/messages/channel/{ch}");
        let refused = http(
            server.addr(),
            "POST",
            &post,
            &[("Authorization", &auth)],
            Some(r#"{"content":"hi"}"#),
        )
        .await;
        assert_eq!(refused.status, 429, "history spent the write budget");
        let me = get(server.addr(), "/auth/me", &token).await;
        assert_eq!(me.status, 200);
        assert_eq!(
            me.header("x-ratelimit-limit"),
            None,
            "/auth/me is unlimited"
        );
    }

    fn wall_secs() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64()
    }

    #[tokio::test]
    async fn kaikus_reset_comes_early_and_a_request_on_it_is_refused_with_a_tiny_retry_after() {
        let limits = RateLimits {
            write: Some(Limit::new(1, Duration::from_secs(2))),
            ..RateLimits::kaiku()
        };
        let (server, token) = server_with_user(limited(limits), "alice").await;
        let ch = server.create_channel("general");
        let history = format!("/api/messages/channel/{ch}");
        // Start the window mid-second, so that flooring the clock moves the reset visibly.
        while !(0.3..0.7).contains(&wall_secs().fract()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let started = wall_secs();
        let first = get(server.addr(), &history, &token).await;
        assert_eq!(first.status, 200);
        let reset: f64 = first
            .header("x-ratelimit-reset")
            .and_then(|v| v.parse().ok())
            .expect("a reset");
        assert!(
            reset < started + 2.0,
            "announced {reset}, ends after {}",
            started + 2.0
        );
        let wait = (reset - wall_secs()).max(0.0);
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        let on_reset = get(server.addr(), &history, &token).await;
        assert_eq!(
            on_reset.status, 429,
            "the window still runs at the announced reset"
        );
        let retry_after = on_reset.header("retry-after").expect("Retry-After");
        assert!(["0", "1"].contains(&retry_after), "{retry_after}");
        assert_eq!(
            on_reset.json()["retry_after"].as_u64(),
            retry_after.parse().ok()
        );
    }

    #[tokio::test]
    async fn with_redis_down_limited_routes_answer_503_without_retry_after_and_count_nothing() {
        let (server, token) = server_with_user(limited(RateLimits::kaiku()), "alice").await;
        let ch = server.create_channel("general");
        let history = format!("/api/messages/channel/{ch}");
        server.faults().redis_down(true);
        for _ in 0..3 {
            let r = get(server.addr(), &history, &token).await;
            assert_eq!(r.status, 503);
            assert_eq!(r.header("retry-after"), None);
            assert_eq!(r.header("x-ratelimit-limit"), None);
            assert_eq!(r.body, r#"{"error":"service_unavailable"}"#);
        }
        let me = get(server.addr(), "/auth/me", &token).await;
        assert_eq!(me.status, 200, "an unlimited route needs no Redis");
        server.faults().redis_down(false);
        let r = get(server.addr(), &history, &token).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            Some("29"),
            "nothing counted"
        );
    }

    /// A server in `shape` where alice blocked eve, and a channel with bob's "old", eve's
    /// "blocked" and bob's "new", in that order.
    async fn blocked_world(shape: HistoryShape) -> (crate::DevServer, String, String) {
        let config = ServerConfig {
            history_shape: shape,
            ..ServerConfig::default()
        };
        let (server, alice) = server_with_user(config, "alice").await;
        token_of(&server, "bob");
        token_of(&server, "eve");
        let ch = server.create_channel("general");
        for (who, text) in [("bob", "old"), ("eve", "blocked"), ("bob", "new")] {
            server.post(&ch, who, text).expect("post");
        }
        assert!(server.block("alice", "eve"));
        (server, alice, ch)
    }

    fn contents(items: &serde_json::Value) -> Vec<&str> {
        items
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|m| m["content"].as_str())
            .collect()
    }

    #[tokio::test]
    async fn a_blocked_author_in_the_extra_row_turns_has_more_false_in_the_envelope() {
        let (server, alice, ch) = blocked_world(HistoryShape::Envelope).await;
        let page = get(
            server.addr(),
            &format!("/api/messages/channel/{ch}?limit=1"),
            &alice,
        )
        .await
        .json();
        assert_eq!(contents(&page["items"]), ["new"]);
        assert_eq!(page["has_more"], false, "bob's old message is still there");
        assert_eq!(page.get("next_cursor"), None);
        let bob = token_of(&server, "bob2");
        let page = get(
            server.addr(),
            &format!("/api/messages/channel/{ch}?limit=1"),
            &bob,
        )
        .await
        .json();
        assert_eq!(page["has_more"], true, "nobody blocked: the truth");
        assert!(server.unblock("alice", "eve"));
        let page = get(
            server.addr(),
            &format!("/api/messages/channel/{ch}"),
            &alice,
        )
        .await
        .json();
        assert_eq!(contents(&page["items"]), ["new", "blocked", "old"]);
    }

    #[tokio::test]
    async fn the_bare_array_leaves_blocked_authors_out_too() {
        let (server, alice, ch) = blocked_world(HistoryShape::BareArray).await;
        let page = get(
            server.addr(),
            &format!("/api/messages/channel/{ch}?limit=2"),
            &alice,
        )
        .await
        .json();
        assert_eq!(contents(&page), ["new", "old"]);
    }

    #[tokio::test]
    async fn a_blockers_socket_hears_no_message_from_the_blocked_author() {
        let (server, alice, ch) = blocked_world(HistoryShape::Envelope).await;
        let mut ws = Ws::connect(server.addr(), &alice).await;
        ws.subscribe(&ch).await;
        server.post(&ch, "eve", "unheard").expect("post");
        server.post(&ch, "bob", "heard").expect("post");
        assert_eq!(
            ws.event_of("message_new").await["message"]["content"],
            "heard"
        );
    }

    #[tokio::test]
    async fn a_thread_reply_is_broadcast_and_moves_its_parent_but_stays_out_of_history() {
        let (server, token) = server_with_user(ServerConfig::default(), "alice").await;
        token_of(&server, "bob");
        let ch = server.create_channel("general");
        let parent = server.post(&ch, "alice", "topic").expect("post");
        let mut ws = Ws::connect(server.addr(), &token).await;
        ws.subscribe(&ch).await;
        let reply = server
            .post_thread_reply(&ch, &parent, "bob", "an answer")
            .expect("reply");
        let e = ws.event_of("thread_reply_new").await;
        assert_eq!(e["channel_id"], ch.as_str());
        assert_eq!(e["parent_id"], parent.as_str());
        assert_eq!(e["message"]["id"], reply.as_str());
        assert_eq!(e["message"]["parent_id"], parent.as_str());
        assert_eq!(e["thread_info"]["reply_count"], 1);
        assert_eq!(
            e["thread_info"]["last_reply_at"],
            e["message"]["created_at"]
        );
        assert_eq!(
            e["thread_info"]["participant_ids"].as_array().map(Vec::len),
            Some(1)
        );

        let page = get(
            server.addr(),
            &format!("/api/messages/channel/{ch}"),
            &token,
        )
        .await
        .json();
        let items = page["items"].as_array().expect("items");
        assert_eq!(items.len(), 1, "the reply is not in channel history");
        assert_eq!(items[0]["id"], parent.as_str());
        assert_eq!(items[0]["thread_reply_count"], 1);
        assert_eq!(items[0]["thread_last_reply_at"], e["message"]["created_at"]);
        assert_eq!(items[0]["thread_info"], e["thread_info"]);
        assert_eq!(server.messages(&ch).len(), 1);
        assert_eq!(
            server.post_thread_reply(&ch, "no-such-parent", "bob", "x"),
            None
        );
    }

    /// Logs in (or registers, or refreshes) with or without `Origin`.
    async fn auth(
        server: &crate::DevServer,
        path: &str,
        body: &str,
        extra: &[(&str, &str)],
    ) -> crate::testkit::Answer {
        http(server.addr(), "POST", path, extra, Some(body)).await
    }

    #[tokio::test]
    async fn a_browser_gets_its_refresh_token_only_as_a_cookie_and_refreshes_with_it() {
        let (server, _) = server_with_user(ServerConfig::default(), "alice").await;
        let creds = r#"{"username":"alice","password":"password123"}"#;
        let origin = [("Origin", "https://chat.example")];

        let plain = auth(&server, "/auth/login", creds, &[]).await;
        assert_eq!(plain.status, 200);
        assert!(
            plain.json()["refresh_token"].is_string(),
            "unchanged without Origin"
        );
        assert_eq!(plain.header("set-cookie"), None);

        let browser = auth(&server, "/auth/login", creds, &origin).await;
        assert_eq!(browser.status, 200);
        let body = browser.json();
        assert!(body["access_token"].is_string());
        assert_eq!(body.get("refresh_token"), None, "absent, not null");
        let cookie = browser.header("set-cookie").expect("Set-Cookie");
        let (pair, attributes) = cookie.split_once(';').expect("attributes");
        let token = pair
            .strip_prefix("kaiku_refresh=")
            .expect("Kaiku's cookie name");
        for a in ["HttpOnly", "Path=/auth"] {
            assert!(attributes.contains(a), "{cookie}");
        }

        // The cookie alone refreshes, and the new token comes the same way.
        let jar = format!("kaiku_refresh={token}");
        let refreshed = http(
            server.addr(),
            "POST",
            "/auth/refresh",
            &[("Origin", "https://chat.example"), ("Cookie", &jar)],
            None,
        )
        .await;
        assert_eq!(refreshed.status, 200, "{refreshed:?}");
        assert_eq!(refreshed.json().get("refresh_token"), None);
        let next = refreshed.header("set-cookie").expect("a rotated cookie");
        assert!(!next.contains(token), "rotated");
        let again = http(
            server.addr(),
            "POST",
            "/auth/refresh",
            &[("Cookie", &jar)],
            Some("{}"),
        )
        .await;
        assert_eq!(again.status, 401, "the old token was spent");

        let registered = auth(
            &server,
            "/auth/register",
            r#"{"username":"bob","password":"password123"}"#,
            &origin,
        )
        .await;
        assert_eq!(registered.json().get("refresh_token"), None);
        assert!(registered.header("set-cookie").is_some());
    }
}
