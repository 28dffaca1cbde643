//! The REST API: auth, channels, messages. Kaiku's shapes and error bodies.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::faults::Refusal;
use crate::store::{TokenError, rfc3339_offset};
use crate::{ErrorShape, HistoryShape, Shared};

fn error(shared: &Shared, status: StatusCode, code: &str, message: &str) -> Response {
    let body = match shared.config.error_shape {
        ErrorShape::Modern => json!({"error": code, "message": message}),
        ErrorShape::Legacy => json!({"error": message, "code": code}),
    };
    (status, Json(body)).into_response()
}

/// Answers 429 while the rate-limit fault is in force.
pub(crate) async fn rate_limit(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(r) = Refusal::take(&mut shared.faults().rest_limit) else {
        return next.run(request).await;
    };
    let secs = r.retry_after.unwrap_or(60);
    let body = json!({
        "error": "rate_limited",
        "message": format!("Too many requests. Wait {secs} seconds."),
        "retry_after": secs,
    });
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
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

pub(crate) async fn health() -> Json<Value> {
    Json(json!({"status": "ok", "database": true, "redis": true, "rate_limiting": false}))
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

pub(crate) async fn register(
    State(shared): State<Arc<Shared>>,
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
        Some(user) => Json(store.issue_tokens(&user.id)).into_response(),
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
    Json(c): Json<Credentials>,
) -> Response {
    let mut store = shared.store();
    match store.login(&c.username, &c.password) {
        Some(user) => Json(store.issue_tokens(&user.id)).into_response(),
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
    refresh_token: String,
}

pub(crate) async fn refresh(
    State(shared): State<Arc<Shared>>,
    Json(b): Json<RefreshBody>,
) -> Response {
    let result = shared.store().refresh(&b.refresh_token);
    match result {
        Ok(tokens) => Json(tokens).into_response(),
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
    if let Err(r) = authed(&shared, &headers) {
        return r;
    }
    let limit = page.limit.unwrap_or(50).clamp(1, 100);
    let store = shared.store();
    let Some((items, has_more)) = store.history(&channel_id, page.before.as_deref(), limit) else {
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
    let frame =
        json!({"type": "message_new", "channel_id": channel_id, "message": store.message_json(&m)});
    drop(store);
    shared.broadcast(channel_id, &frame.to_string());
    Some(m.id)
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
    let frame = json!({"type": "message_new", "channel_id": channel_id, "message": body});
    shared.broadcast(&channel_id, &frame.to_string());
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
    let frame = json!({
        "type": "message_edit", "channel_id": m.channel_id, "message_id": m.id,
        "content": m.content, "edited_at": rfc3339_offset(now),
    });
    shared.broadcast(&m.channel_id, &frame.to_string());
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
    let frame = json!({"type": "message_delete", "channel_id": m.channel_id, "message_id": m.id});
    shared.broadcast(&m.channel_id, &frame.to_string());
    StatusCode::NO_CONTENT.into_response()
}
