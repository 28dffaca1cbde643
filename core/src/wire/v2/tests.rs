use serde_json::{Value, json};

use super::*;

const MAX: usize = 256 * 1024;

fn text(s: &str) -> Text {
    Text::from(s)
}

fn packed(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    json_to_msgpack(&v.to_string(), &mut out).expect("JSON");
    out
}

fn back(bytes: &[u8]) -> Result<Value, DecodeError> {
    let json = msgpack_to_json(bytes, MAX)?;
    Ok(serde_json::from_str(json.as_str()).expect("the transcoder writes JSON"))
}

#[test]
fn a_kaiku_event_survives_msgpack_both_ways() {
    let event = json!({
        "type": "message_new",
        "channel_id": "239635b7",
        "message": {
            "id": "m1", "content": "héllo \"wörld\" 🎉\n\t\u{1}", "pinned": false,
            "edited_at": null, "thread_reply_count": 0, "attachments": [],
            "author": {"id": "u1", "username": "bob"}, "score": -3, "ratio": 1.5,
            "big": u64::MAX, "small": i64::MIN
        }
    });
    assert_eq!(back(&packed(&event)), Ok(event));
}

#[test]
fn every_integer_width_and_float_reads_as_its_value() {
    let cases: &[(&[u8], Value)] = &[
        (&[0x7f], json!(127)),
        (&[0xe0], json!(-32)),
        (&[0xcc, 0xff], json!(255)),
        (&[0xcd, 0x01, 0x00], json!(256)),
        (&[0xce, 0, 1, 0, 0], json!(65536)),
        (
            &[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            json!(u64::MAX),
        ),
        (&[0xd0, 0x80], json!(-128)),
        (&[0xd1, 0x80, 0x00], json!(-32768)),
        (&[0xd2, 0xff, 0xff, 0xff, 0xff], json!(-1)),
        (&[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0], json!(i64::MIN)),
        (&[0xca, 0x3f, 0xc0, 0, 0], json!(1.5)),
        (
            &[0xcb, 0x40, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18],
            json!(std::f64::consts::PI),
        ),
        (&[0xc0], Value::Null),
        (&[0xc3], json!(true)),
    ];
    for (bytes, want) in cases {
        assert_eq!(back(bytes).as_ref(), Ok(want), "{bytes:02x?}");
    }
}

#[test]
fn what_json_cannot_say_rejects_the_frame() {
    let rejected: &[(&[u8], &str)] = &[
        (&[0xc4, 1, 0], "bin"),
        (&[0xd4, 1, 0], "ext"),
        (&[0xc1], "reserved"),
        (&[0x81, 0x01, 0x02], "non-string key"),
        (&[0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0], "NaN"),
        (&[0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0], "infinity"),
        (&[0xc0, 0xc0], "trailing bytes"),
        (&[0xa3, b'a'], "truncated str"),
        (&[0xa2, 0xff, 0xfe], "str not UTF-8"),
        (&[], "empty"),
    ];
    for (bytes, why) in rejected {
        assert!(back(bytes).is_err(), "{why}: {bytes:02x?} was accepted");
    }
}

#[test]
fn declared_lengths_past_the_input_are_refused_before_anything_is_read() {
    // An array and a map claiming four billion items, and a str claiming four gigabytes.
    for bytes in [
        &[0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0][..],
        &[0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, b'k', 0xc0][..],
        &[0xdb, 0xff, 0xff, 0xff, 0xff, b'x'][..],
    ] {
        assert!(
            matches!(back(bytes), Err(DecodeError::Msgpack(_))),
            "{bytes:02x?}"
        );
    }
}

#[test]
fn nesting_is_capped_at_the_json_limit() {
    let nested = |depth: usize| {
        let mut b = vec![0x91; depth];
        b.push(0xc0);
        b
    };
    assert!(back(&nested(MAX_DEPTH)).is_ok());
    assert_eq!(back(&nested(MAX_DEPTH + 1)), Err(DecodeError::TooDeep));
}

#[test]
fn a_frame_that_would_grow_past_the_cap_is_refused() {
    // 40,000 one-byte control characters become 240,000 bytes of `\u0001` escapes.
    let s = vec![0x01u8; 40_000];
    let mut frame = vec![0xda, 0x9c, 0x40];
    frame.extend_from_slice(&s);
    assert!(msgpack_to_json(&frame, MAX).is_ok());
    assert!(matches!(
        msgpack_to_json(&frame, 200_000),
        Err(DecodeError::TooLarge { .. })
    ));
    // The input itself over the cap is refused before it is read.
    assert!(matches!(
        msgpack_to_json(&vec![0xc0; MAX + 1], MAX),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn a_batch_splits_into_its_events_without_copying_them() {
    let frame = text(r#" [ {"type":"pong"} , {"type":"subscribed","channel_id":"c"} ] "#);
    let events = split_batch(frame.clone()).expect("a batch");
    let got: Vec<&str> = events.iter().map(Text::as_str).collect();
    assert_eq!(
        got,
        [
            r#"{"type":"pong"}"#,
            r#"{"type":"subscribed","channel_id":"c"}"#
        ]
    );
    // Slices of the frame's buffer.
    let base = frame.as_str().as_ptr() as usize;
    let at = events[1].as_str().as_ptr() as usize;
    assert!(at > base && at < base + frame.len());
    // One object is one event; an empty batch is none.
    assert_eq!(
        split_batch(text(r#"{"type":"pong"}"#)).map(|v| v.len()),
        Ok(1)
    );
    assert_eq!(split_batch(text("[]")).map(|v| v.len()), Ok(0));
    assert!(matches!(
        split_batch(text("[{},")),
        Err(DecodeError::Json(_))
    ));
    let too_many = format!("[{}]", vec!["{}"; MAX_BATCH + 1].join(","));
    assert!(split_batch(text(&too_many)).is_err());
}

#[test]
fn outbound_frames_are_one_object_or_a_batch() {
    let a = text(r#"{"type":"subscribe","channel_id":"a"}"#);
    let b = text(r#"{"type":"ping"}"#);
    assert_eq!(
        encode_frame(std::slice::from_ref(&a), Encoding::Json),
        a.as_bytes().clone()
    );
    let both = encode_frame(&[a.clone(), b.clone()], Encoding::Json);
    assert_eq!(
        &both[..],
        br#"[{"type":"subscribe","channel_id":"a"},{"type":"ping"}]"#
    );
    let one = encode_frame(std::slice::from_ref(&a), Encoding::Msgpack);
    assert_eq!(
        back(&one),
        Ok(json!({"type": "subscribe", "channel_id": "a"}))
    );
    let two = encode_frame(&[a, b], Encoding::Msgpack);
    assert_eq!(
        back(&two),
        Ok(json!([{"type": "subscribe", "channel_id": "a"}, {"type": "ping"}]))
    );
}

#[test]
fn subprotocol_names_map_to_protocols_and_back() {
    for p in [Protocol::V2_JSON, Protocol::V2_MSGPACK] {
        let name = p.subprotocol().expect("v2 has a name");
        assert_eq!(Protocol::from_subprotocol(name), Some(p));
        assert!(p.batches());
    }
    assert_eq!(Protocol::V1.subprotocol(), None);
    assert_eq!(Protocol::from_subprotocol("access_token"), None);
    assert!(!Protocol::V1.batches());
    assert_eq!(
        serde_json::to_value(Protocol::V2_MSGPACK).ok(),
        Some(json!({"version": 2, "encoding": "msgpack"}))
    );
}
