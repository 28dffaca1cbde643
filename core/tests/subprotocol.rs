//! The subprotocol rule end to end through `Connection` (D48, issue 18): a 101 may select only
//! what the upgrade offered; query auth offers nothing, so a v2 entry there is terminal, not a
//! switch to MessagePack.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::*;
use tether_core::wire::{Protocol, V2_JSON, V2_MSGPACK};
use tether_core::{AuthMode, FailReason, Status};

fn query_auth() -> Harness {
    let mut cfg = config();
    cfg.auth_mode = AuthMode::Query;
    let mut h = Harness::with_config(cfg);
    h.connect();
    h
}

#[test]
fn a_v2_subprotocol_never_offered_is_terminal_not_a_switch_to_msgpack() {
    for selected in [V2_MSGPACK, V2_JSON] {
        let mut h = query_auth();
        h.conn.handle_open(h.now, Some(selected));
        h.drain();
        assert_eq!(
            h.conn.status(),
            Status::Failed {
                reason: FailReason::Subprotocol,
                http_status: None,
                detail: None
            },
            "{selected}"
        );
        assert_eq!(h.conn.protocol(), Protocol::V1, "{selected}");
        assert_eq!(h.conn.stats().missing_subprotocol, 1);
    }
}

#[test]
fn query_auth_with_no_subprotocol_selected_opens_in_v1() {
    let mut h = query_auth();
    h.conn.handle_open(h.now, None);
    h.ready();
    assert!(h.conn.is_connected());
    assert_eq!(h.conn.protocol(), Protocol::V1);
}
