//! The crate documentation's drive loop, run: the doc example only compiles, since it needs a
//! clock reading and the core's sources never take one.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::time::Instant;

use tether_core::{Action, Config, Connection, Credentials, Event, drain};

fn drive(start: Instant) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::new("http://127.0.0.1:8080")?;
    config.seed = 7;
    let mut conn = Connection::new(config)?;
    let mut now = start;
    conn.set_credentials(now, Credentials::new("eyJ...access"));
    conn.subscribe(now, "general")?;
    conn.connect(now)?;

    let mut opened = false;
    drain(&mut conn, |action| match action {
        Action::Open(_request) => opened = true,
        Action::Send(_frame) => {}
        Action::Emit(Event::Status(status)) => println!("status: {}", status.name()),
        _ => {}
    });
    assert!(opened);
    conn.handle_open(now, Some("access_token"));
    conn.handle_frame(now, r#"{"type":"ready","user_id":"u1"}"#.into());
    let mut sent = Vec::new();
    let mut next_timer = drain(&mut conn, |action| {
        if let Action::Send(frame) = action {
            sent.push(frame.to_string());
        }
    });
    assert!(conn.is_connected());
    assert_eq!(sent, [r#"{"type":"subscribe","channel_id":"general"}"#]);

    if let Some(deadline) = next_timer {
        now = deadline;
        conn.handle_timeout(now);
        next_timer = drain(&mut conn, |_| {});
    }
    assert!(next_timer.is_some_and(|t| t > now));
    Ok(())
}

#[test]
fn the_documented_drive_loop_connects_subscribes_and_moves_its_deadline_on() {
    drive(support::t0()).unwrap();
}
