//! Credentials, their lifetime, and refresh ahead of expiry (DESIGN 3.7).

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;

use crate::secret::Secret;
use crate::wire::DecodeError;

/// An access token and what is known about it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Credentials {
    /// Bearer token for the socket and REST.
    pub access_token: Secret,
    /// Token for `POST /auth/refresh`, when the server issued one.
    pub refresh_token: Option<Secret>,
    /// Lifetime of the access token from the moment it is handed to the connection.
    pub expires_in: Option<Duration>,
}

/// How a token refresh failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    /// The server refused the refresh token (401/400/403): only a new login helps.
    #[error("refresh token rejected")]
    Rejected,
    /// Network trouble or a 5xx/429: worth trying again later.
    #[error("refresh failed, retryable")]
    Transient {
        /// `Retry-After`, when the server sent one.
        retry_after: Option<Duration>,
    },
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct JwtClaims {
    exp: Option<u64>,
}

impl Credentials {
    /// An access token with nothing else known.
    pub fn new(access_token: impl Into<Secret>) -> Self {
        Self {
            access_token: access_token.into(),
            refresh_token: None,
            expires_in: None,
        }
    }

    /// Adds a refresh token.
    pub fn with_refresh_token(mut self, token: impl Into<Secret>) -> Self {
        self.refresh_token = Some(token.into());
        self
    }

    /// Sets the lifetime.
    pub fn with_expires_in(mut self, lifetime: Duration) -> Self {
        self.expires_in = Some(lifetime);
        self
    }

    /// Reads a token response body: `{access_token, refresh_token, expires_in, token_type}`.
    pub fn from_token_response(body: &[u8]) -> Result<Self, DecodeError> {
        let r: TokenResponse = serde_json::from_slice(body)?;
        Ok(Self {
            access_token: Secret::new(r.access_token),
            refresh_token: r.refresh_token.map(Secret::new),
            expires_in: r.expires_in.map(Duration::from_secs),
        })
    }

    /// Fills `expires_in` from the JWT's `exp` claim when the server gave no `expires_in`.
    /// `unix_now` is the wall-clock time in seconds (the caller reads the clock, not the core).
    pub fn with_jwt_expiry(mut self, unix_now: u64) -> Self {
        if self.expires_in.is_none() {
            self.expires_in = jwt_exp(self.access_token.expose())
                .map(|exp| Duration::from_secs(exp.saturating_sub(unix_now)));
        }
        self
    }
}

/// The `exp` claim of a JWT (seconds since the epoch), without verifying anything.
pub(crate) fn jwt_exp(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    if payload.len() > 8192 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<JwtClaims>(&bytes).ok()?.exp
}

/// Holds the credentials and decides when to refresh them.
///
/// Verbs: [`set`](Self::set), [`begin_refresh`](Self::begin_refresh),
/// [`handle_refresh`](Self::handle_refresh), [`poll_timeout`](Self::poll_timeout).
#[derive(Clone, Debug)]
pub(crate) struct Auth {
    creds: Option<Credentials>,
    expires_at: Option<Instant>,
    refresh_at: Option<Instant>,
    in_flight: bool,
    /// The refresh token the refresh in flight spent.
    spent: Option<Secret>,
    /// `set` installed another session while a refresh was in flight: its answer is stale.
    superseded: bool,
    /// The server refused the current access token; only new credentials clear this.
    rejected: bool,
    /// Counts the credentials installed so far (the app's and the refreshes'). A socket or a
    /// history read remembers the count it went out with: a refusal of credentials replaced
    /// since is no verdict on the current ones.
    generation: u64,
    ahead: f64,
}

/// Background refresh retry after a transient failure.
pub(crate) const REFRESH_RETRY: Duration = Duration::from_secs(30);

/// Longest token lifetime taken at its word (a year).
const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// What became of a refresh answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RefreshOutcome {
    /// The answer was applied.
    Applied,
    /// Credentials were replaced while it was in flight; the answer was dropped.
    Superseded,
}

impl Auth {
    /// No credentials; refresh at `ahead` (0..1) of each token's life.
    pub(crate) fn new(ahead: f64) -> Self {
        Self {
            creds: None,
            expires_at: None,
            refresh_at: None,
            in_flight: false,
            spent: None,
            superseded: false,
            rejected: false,
            generation: 0,
            // NaN would pass `clamp` and panic in `mul_f64`; `Config::validate` refuses it,
            // this keeps `Auth` safe on its own.
            ahead: if ahead.is_finite() {
                ahead.clamp(0.05, 1.0)
            } else {
                0.8
            },
        }
    }

    /// Installs credentials received at `now`. A refresh still in flight is superseded (its
    /// answer will not overwrite these) unless these carry the very refresh token it spent:
    /// the app put the same session back (restored from its store, say), that token is dead
    /// now, and the answer is the session's only way on (D80).
    pub(crate) fn set(&mut self, now: Instant, creds: Credentials) {
        // A server-given lifetime is clamped so `Instant` arithmetic cannot overflow.
        let life = creds.expires_in.map(|d| d.min(MAX_LIFETIME));
        self.expires_at = life.map(|d| now + d);
        self.refresh_at = match (&creds.refresh_token, life) {
            (Some(_), Some(life)) => Some(now + life.mul_f64(self.ahead)),
            _ => None,
        };
        self.superseded = self.in_flight && creds.refresh_token != self.spent;
        self.creds = Some(creds);
        self.rejected = false;
        self.generation += 1;
    }

    /// Which credentials are installed: a count that moves with every [`set`](Self::set).
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The server refused the access token: it is stale whatever its lifetime said.
    pub(crate) fn mark_rejected(&mut self) {
        self.rejected = true;
    }

    /// The current credentials.
    pub(crate) fn credentials(&self) -> Option<&Credentials> {
        self.creds.as_ref()
    }

    /// The access token, if any.
    pub(crate) fn access_token(&self) -> Option<&Secret> {
        self.creds.as_ref().map(|c| &c.access_token)
    }

    /// Whether the access token is past the point where it should have been refreshed.
    pub(crate) fn is_stale(&self, now: Instant) -> bool {
        self.rejected
            || self.refresh_at.is_some_and(|at| now >= at)
            || self.expires_at.is_some_and(|at| now >= at)
    }

    /// Whether a refresh could be started now.
    pub(crate) fn can_refresh(&self) -> bool {
        !self.in_flight
            && self
                .creds
                .as_ref()
                .is_some_and(|c| c.refresh_token.is_some())
    }

    /// Whether a refresh is on its way.
    pub(crate) fn is_refreshing(&self) -> bool {
        self.in_flight
    }

    /// Whether the answer to the refresh on its way will be applied: one is out, and no other
    /// session was installed since.
    pub(crate) fn awaits_refresh(&self) -> bool {
        self.in_flight && !self.superseded
    }

    /// Starts a refresh: returns the refresh token to send, if one exists and none is in flight.
    pub(crate) fn begin_refresh(&mut self) -> Option<Secret> {
        if self.in_flight {
            return None;
        }
        let token = self.creds.as_ref()?.refresh_token.clone()?;
        self.in_flight = true;
        self.spent = Some(token.clone());
        self.refresh_at = None;
        Some(token)
    }

    /// The refresh finished. A rejected refresh token is forgotten, so it is never retried.
    pub(crate) fn handle_refresh(
        &mut self,
        now: Instant,
        result: Result<Credentials, RefreshError>,
    ) -> RefreshOutcome {
        self.in_flight = false;
        self.spent = None;
        if std::mem::take(&mut self.superseded) {
            return RefreshOutcome::Superseded;
        }
        match result {
            Ok(mut creds) => {
                // A server may rotate refresh tokens or not; keep the old one if none came.
                if creds.refresh_token.is_none() {
                    creds.refresh_token = self.creds.as_ref().and_then(|c| c.refresh_token.clone());
                }
                self.set(now, creds);
            }
            Err(RefreshError::Rejected) => {
                if let Some(c) = self.creds.as_mut() {
                    c.refresh_token = None;
                }
                self.refresh_at = None;
            }
            Err(RefreshError::Transient { retry_after }) => {
                let wait = crate::close::clamp_wait(retry_after.unwrap_or(REFRESH_RETRY));
                self.refresh_at = Some(now + wait.max(Duration::from_secs(1)));
            }
        }
        RefreshOutcome::Applied
    }

    /// When the next background refresh is due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.in_flight || !self.can_refresh() {
            return None;
        }
        self.refresh_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    use std::time::Duration;

    use crate::Secret;

    #[test]
    fn reads_the_kaiku_token_response_and_hides_tokens() {
        let body = br#"{"access_token":"a.b.c","refresh_token":"r.s.t","expires_in":900,"token_type":"Bearer","setup_required":true}"#;
        let c = Credentials::from_token_response(body).unwrap();
        assert_eq!(c.access_token.expose(), "a.b.c");
        assert_eq!(c.expires_in, Some(Duration::from_secs(900)));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("a.b.c") && !dbg.contains("r.s.t"), "{dbg}");
        assert!(Credentials::from_token_response(b"{}").is_err());
    }

    #[test]
    fn reads_exp_from_a_real_kaiku_jwt() {
        let jwt = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFZERTQSJ9.eyJzdWIiOiI4ZmY5ZWQwZS1iMGY5LTQ2YTgtODk5MC03MDFmYjc0NGNlODMiLCJleHAiOjE3OTU2Mjk2ODgsImlhdCI6MTc5NTYyODc4OCwidHlwIjoiYWNjZXNzIn0.sig";
        assert_eq!(jwt_exp(jwt), Some(1_795_629_688));
        let c = Credentials::new(jwt).with_jwt_expiry(1_795_628_788);
        assert_eq!(c.expires_in, Some(Duration::from_secs(900)));
        assert_eq!(jwt_exp("garbage"), None);
        assert_eq!(jwt_exp("a.!!!.c"), None);
    }

    #[test]
    fn refreshes_at_eighty_percent_of_the_life() {
        let t = t0();
        let mut a = Auth::new(0.8);
        a.set(
            t,
            Credentials::new("x")
                .with_refresh_token("r")
                .with_expires_in(Duration::from_secs(900)),
        );
        assert_eq!(a.poll_timeout(), Some(t + Duration::from_secs(720)));
        assert!(!a.is_stale(t + Duration::from_secs(719)));
        assert!(a.is_stale(t + Duration::from_secs(720)));
        assert_eq!(
            a.begin_refresh().map(|s| s.expose().to_owned()),
            Some("r".into())
        );
        assert_eq!(a.poll_timeout(), None);
        assert!(a.begin_refresh().is_none(), "one refresh at a time");
    }

    #[test]
    fn a_rejected_refresh_token_is_never_used_again() {
        let t = t0();
        let mut a = Auth::new(0.8);
        a.set(t, Credentials::new("x").with_refresh_token("r"));
        assert!(a.begin_refresh().is_some());
        a.handle_refresh(t, Err(RefreshError::Rejected));
        assert!(!a.can_refresh());
        assert!(a.begin_refresh().is_none());
    }

    #[test]
    fn a_new_token_without_refresh_token_keeps_the_old_one() {
        let t = t0();
        let mut a = Auth::new(0.8);
        a.set(t, Credentials::new("x").with_refresh_token("r"));
        a.begin_refresh();
        a.handle_refresh(t, Ok(Credentials::new("y")));
        assert_eq!(a.access_token().map(Secret::expose), Some("y"));
        assert!(a.can_refresh());
    }

    #[test]
    fn new_credentials_win_over_a_refresh_in_flight() {
        let t = t0();
        let mut a = Auth::new(0.8);
        a.set(t, Credentials::new("x").with_refresh_token("r"));
        a.begin_refresh();
        a.set(t, Credentials::new("from-login").with_refresh_token("r2"));
        let out = a.handle_refresh(t, Ok(Credentials::new("late")));
        assert_eq!(out, RefreshOutcome::Superseded);
        assert_eq!(a.access_token().map(Secret::expose), Some("from-login"));
        assert!(a.can_refresh());
    }

    #[test]
    fn the_same_session_put_back_during_a_refresh_takes_its_answer() {
        let t = t0();
        let mut a = Auth::new(0.8);
        a.set(t, Credentials::new("x").with_refresh_token("r"));
        a.begin_refresh();
        // The app restores the pair it stored: "r" was spent by the refresh on its way, so
        // the answer is the session's only way on.
        a.set(t, Credentials::new("x").with_refresh_token("r"));
        assert!(a.awaits_refresh());
        let out = a.handle_refresh(t, Ok(Credentials::new("y").with_refresh_token("r2")));
        assert_eq!(out, RefreshOutcome::Applied);
        assert_eq!(a.access_token().map(Secret::expose), Some("y"));
        // Another session (no refresh token, or another one) drops it, as before.
        a.begin_refresh();
        a.set(t, Credentials::new("mine"));
        assert!(!a.awaits_refresh() && a.is_refreshing());
        let out = a.handle_refresh(t, Ok(Credentials::new("late").with_refresh_token("r3")));
        assert_eq!(out, RefreshOutcome::Superseded);
        assert_eq!(a.access_token().map(Secret::expose), Some("mine"));
    }

    #[test]
    fn every_install_moves_the_generation_a_dropped_answer_does_not() {
        let t = t0();
        let mut a = Auth::new(0.8);
        a.set(t, Credentials::new("x").with_refresh_token("r"));
        let first = a.generation();
        a.begin_refresh();
        a.handle_refresh(t, Ok(Credentials::new("y")));
        let refreshed = a.generation();
        assert!(refreshed > first, "a refresh installs new credentials");
        a.begin_refresh();
        a.set(t, Credentials::new("z").with_refresh_token("other"));
        let set = a.generation();
        assert!(set > refreshed);
        a.handle_refresh(t, Ok(Credentials::new("late")));
        assert_eq!(a.generation(), set, "a superseded answer installs nothing");
    }

    #[test]
    fn absurd_lifetimes_and_waits_do_not_overflow() {
        let t = t0();
        let mut a = Auth::new(f64::NAN);
        a.set(
            t,
            Credentials::new("x")
                .with_refresh_token("r")
                .with_expires_in(Duration::MAX),
        );
        assert!(a.poll_timeout().is_some());
        a.begin_refresh();
        a.handle_refresh(
            t,
            Err(RefreshError::Transient {
                retry_after: Some(Duration::MAX),
            }),
        );
        assert!(a.poll_timeout().is_some());
    }

    #[test]
    fn transient_failure_retries_later() {
        let t = t0();
        let mut a = Auth::new(0.8);
        a.set(
            t,
            Credentials::new("x")
                .with_refresh_token("r")
                .with_expires_in(Duration::from_secs(10)),
        );
        a.begin_refresh();
        a.handle_refresh(t, Err(RefreshError::Transient { retry_after: None }));
        assert_eq!(a.poll_timeout(), Some(t + REFRESH_RETRY));
    }

    /// The test's start: the one clock read (`crate::test_clock`).
    fn t0() -> Instant {
        crate::test_clock::start()
    }
}
