//! Property tests: random sequences of app commands, transport events, server frames, REST
//! answers and time jumps, driven through `tether_core::fuzz::World` (a faithful fake driver and
//! a tiny Kaiku server), which checks the invariants of DESIGN section 7 after every step (see
//! that module's docs for the list). The cargo-fuzz target `operations` drives the same model.
//!
//! More cases: `PROPTEST_CASES=10000 cargo test -p tether-core --release --test properties`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use proptest::prelude::*;

mod support;
use tether_core::fuzz::{CHANNELS, Model, Op, World};

fn op() -> impl Strategy<Value = Op> {
    let ch = 0..CHANNELS.len();
    prop_oneof![
        2 => Just(Op::Connect),
        1 => Just(Op::Disconnect),
        3 => ch.clone().prop_map(Op::Subscribe),
        1 => ch.clone().prop_map(Op::Unsubscribe),
        2 => (0u8..8, ch.clone()).prop_map(|(k, c)| Op::Send(k, c)),
        5 => Just(Op::Open),
        5 => Just(Op::Ready),
        5 => Just(Op::AnswerSubscribe { refuse: false }),
        1 => Just(Op::AnswerSubscribe { refuse: true }),
        8 => ch.clone().prop_map(Op::Post),
        1 => any::<usize>().prop_map(Op::Echo),
        1 => any::<u8>().prop_map(Op::Garbage),
        1 => Just(Op::Pong),
        3 => Just(Op::Drop),
        2 => (prop::sample::select(vec![401u16, 403, 429, 503, 500]), prop::option::of(0u8..90))
            .prop_map(|(s, r)| Op::Refuse(s, r)),
        6 => (0u8..3, any::<bool>()).prop_map(|(f, b)| Op::AnswerHistory { fail: f == 0, bare: b }),
        2 => (0u8..3).prop_map(Op::AnswerRefresh),
        12 => Just(Op::Progress),
        6 => (0u32..45_000).prop_map(Op::Advance),
        1 => (0u32..7_200).prop_map(Op::Sleep),
    ]
}

/// `op()`, and now and then the road failing before an upgrade (issue 20: a name, a proxy,
/// its credentials, a certificate). Kept apart from `op()` so the other properties' samples
/// (and what they reach) stay as they were.
fn op_or_road_failure() -> impl Strategy<Value = Op> {
    prop_oneof![12 => op(), 1 => (0u8..6).prop_map(Op::Unreachable)]
}

proptest! {
    #![proptest_config(ProptestConfig { max_shrink_iters: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_when_the_road_fails(seed in any::<u64>(), ops in prop::collection::vec(op_or_road_failure(), 1..160)) {
        let mut w = World::new(support::t0(), seed);
        w.apply(&Op::Subscribe(0));
        w.apply(&Op::Connect);
        for op in &ops {
            w.apply(op);
        }
    }

    #[test]
    fn invariants_hold_for_any_sequence(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..160)) {
        let mut w = World::new(support::t0(), seed);
        for op in &ops {
            w.apply(op);
        }
    }

    #[test]
    fn invariants_hold_when_connecting_first(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..160)) {
        let mut w = World::new(support::t0(), seed);
        w.apply(&Op::Subscribe(0));
        w.apply(&Op::Connect);
        w.apply(&Op::Open);
        w.apply(&Op::Ready);
        for op in &ops {
            w.apply(op);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { max_shrink_iters: 2_000, ..ProptestConfig::default() })]

    /// Issue 18: the world with every doubt (a message clock off the `Date` clock, transactions
    /// that commit after a later one, answers given twice, `subscribe_from` on switching back,
    /// a proxy's own `Date`, full v2 batches), `complete: true` checked against the server's
    /// record. Open until the core's fix; then `Model::today` becomes `Model::all` and this
    /// runs by default. On the unfixed core it fails (bug m, the message clock 35 min behind
    /// `Date`) with the shrunk input `seed = 14790365922871737075`, ops: `Post(0)` x6,
    /// `Unsubscribe(0)`, `Post(2)`, `Post(0)` x3, `Connect`, `Post(0)`, `Progress` x2,
    /// `Post(0)` x3, `Drop`, `Advance(5697)`, `Progress` x2, `AnswerSubscribe` x2, `Progress`
    /// (kept in `properties.proptest-regressions`): "Resynced { complete: true } on c, but
    /// m00012 (…, created_at 2026-11-25T16:27:59.643584Z) was never delivered".
    #[test]
    fn invariants_hold_with_every_doubt(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..160)) {
        let mut w = World::with_model(support::t0(), seed, Model::today());
        for (c, _) in CHANNELS.iter().enumerate() {
            w.apply(&Op::Subscribe(c));
        }
        for op in &ops {
            w.apply(op);
        }
    }
}

/// Guards the generator: random sequences must actually reach the deep paths (catch-up,
/// refresh, heartbeat loss...), or the properties above would pass vacuously.
#[test]
fn random_sequences_reach_every_interesting_path() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};

    let mut runner = TestRunner::new_with_rng(
        RunnerConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = prop::collection::vec(op(), 100..160);
    let mut seen = BTreeSet::new();
    for seed in 0..200 {
        let ops = strategy.new_tree(&mut runner).unwrap().current();
        let mut w = World::new(support::t0(), seed);
        for (c, _) in CHANNELS.iter().enumerate() {
            w.apply(&Op::Subscribe(c));
        }
        for op in &ops {
            w.apply(op);
        }
        seen.extend(w.seen);
    }
    for path in [
        "connecting",
        "connected",
        "reconnecting",
        "disconnected",
        "failed",
        "message delivered",
        "resynced complete",
        "resynced incomplete",
        "subscription rejected",
        "refresh",
        "heartbeat timeout",
        "handshake timeout",
        "rate limited",
        "read refused by the budget",
        "read paused",
        "post overtakes a late subscribed",
        "expired token refused",
        "refresh rejected",
        "login after failure",
        "client batch",
        "server batch",
        "full batch",
        // Issue 21's doubts that are on (`Model::today`).
        "app post",
        "app post refused",
        "transient forbidden",
        "silent upgrade",
        "ready timeout",
        "deaf socket",
        "no echo",
        "thread reply",
    ] {
        assert!(
            seen.contains(path),
            "no random run reached `{path}`; seen: {seen:?}"
        );
    }
}

/// A proptest find in the core: a `message_new` confirmed a channel whose `subscribe` was
/// never answered (D75), its catch-up took a read slot, but the read's `FetchHistory` stayed
/// in the catch-up's outputs until the next input, here a 429 answering another read: the
/// read then went out inside the wait the 429 asked for. The confirmation now drains the
/// catch-up at once.
#[test]
fn a_read_started_by_a_heard_confirmation_goes_out_at_once_not_inside_a_later_wait() {
    use tether_core::fuzz::Op::*;
    let ops = [
        Post(0),
        Connect,
        Open,
        Ready,
        Sleep(888),
        Post(0),
        Drop,
        Advance(12337),
        AnswerRefresh(0),
        Post(0),
        Progress,
        Post(0),
        Progress,
        Post(1),
        Progress,
        Advance(5000),
        Pong,
        AnswerHistory {
            fail: true,
            bare: false,
        },
    ];
    let mut w = World::with_model(support::t0(), 5097289178832034537, Model::today());
    for (c, _) in CHANNELS.iter().enumerate() {
        w.apply(&Op::Subscribe(c));
    }
    for op in &ops {
        w.apply(op);
    }
}

/// Both kinds of road failure are reached, and the status keeps the driver's words (the
/// world asserts it at each one).
#[test]
fn a_road_failure_is_retried_or_terminal_and_keeps_its_detail() {
    let mut w = World::new(support::t0(), 1);
    for op in [
        Op::Subscribe(0),
        Op::Connect,
        Op::Unreachable(1), // the proxy is down: retried
        Op::Connect,        // the app retries now: a new socket opens
        Op::Unreachable(3), // the proxy refuses the credentials: terminal
    ] {
        w.apply(&op);
    }
    for path in ["road failure retried", "road failure terminal"] {
        assert!(
            w.seen.contains(path),
            "not reached: {path}; seen {:?}",
            w.seen
        );
    }
}
