//! Unit tests of `tether_core::auth` (outside the crate: the core never reads a clock, even
//! in its own tests; `support::t0` does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;
use support::t0;

use tether_core::Secret;
use tether_core::auth::*;

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
