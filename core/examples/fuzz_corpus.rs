//! Writes the seed corpora of the cargo-fuzz targets: realistic server frames, REST bodies in
//! every shape the core reads, and seeded random operation sequences.
//!
//! Run: `cargo run -p tether-core --features fuzzing --example fuzz_corpus -- fuzz/seeds`

#![allow(clippy::print_stdout, clippy::unwrap_used, missing_docs)]

use std::fs;
use std::path::Path;

use tether_core::fuzz::Rng;
use tether_core::fuzz::message;

const CH: &str = "239635b7-3d0d-4b53-8545-40410b608fb6";
const USER: &str = "8ff9ed0e-b0f9-46a8-8990-701fb744ce83";

fn frames() -> Vec<String> {
    let mut v = vec![
        format!(r#"{{"type":"ready","user_id":"{USER}"}}"#),
        r#"{"type":"pong"}"#.to_owned(),
        format!(r#"{{"type":"subscribed","channel_id":"{CH}"}}"#),
        format!(r#"{{"type":"unsubscribed","channel_id":"{CH}"}}"#),
        r#"{"type":"error","code":"channel_not_found","message":"Channel not found"}"#.to_owned(),
        r#"{"type":"error","code":"message_error","message":"expected ident at line 1 column 2"}"#
            .to_owned(),
        format!(
            r#"{{"type":"message_new","channel_id":"{CH}","message":{}}}"#,
            message(CH, "7778fcba-2db0-4a65-8e1f-d0b0a5490061", 47)
        ),
        format!(
            r#"{{"type":"message_edit","channel_id":"{CH}","message_id":"m1","content":"edited text","edited_at":"2026-11-25T17:46:42.176549+00:00"}}"#
        ),
        format!(r#"{{"type":"message_delete","channel_id":"{CH}","message_id":"m1"}}"#),
        format!(r#"{{"type":"typing_start","channel_id":"{CH}","user_id":"{USER}"}}"#),
        format!(r#"{{"type":"typing_stop","channel_id":"{CH}","user_id":"{USER}"}}"#),
        format!(r#"{{"type":"presence_update","user_id":"{USER}","status":"online"}}"#),
        format!(r#"{{"type":"voice_offer","channel_id":"{CH}","sdp":"v=0"}}"#),
        format!(
            r#"{{"type":"reaction_add","channel_id":"{CH}","message_id":"m1","user_id":"{USER}","emoji":"👍"}}"#
        ),
        r#"{"type":"brand_new_event","nested":{"a":[1,null,"x\u0041"]}}"#.to_owned(),
    ];
    v.push(format!(
        r#"{{"type":"deep","v":{}{}}}"#,
        "[".repeat(70),
        "]".repeat(70)
    ));
    v
}

fn rest_bodies() -> Vec<String> {
    let items = |n: u32| -> Vec<String> {
        (0..n)
            .rev()
            .map(|i| message(CH, &format!("m{i}"), i))
            .collect()
    };
    vec![
        format!(r#"{{"items":[{}],"has_more":true,"next_cursor":"m1"}}"#, items(2).join(",")),
        format!(r#"{{"items":[{}],"has_more":false}}"#, items(3).join(",")),
        r#"{"items":[],"has_more":false}"#.to_owned(),
        format!("[{}]", items(2).join(",")),
        "[]".to_owned(),
        r#"{"access_token":"eyJ0eXAiOiJKV1QiLCJhbGciOiJFZERTQSJ9.eyJleHAiOjE3OTU2Mjk2ODh9.sig","refresh_token":"r","expires_in":900,"token_type":"Bearer","setup_required":true}"#.to_owned(),
        r#"{"error":"TOKEN_EXPIRED","message":"Token expired"}"#.to_owned(),
        r#"{"error":"Channel not found","code":"CHANNEL_NOT_FOUND"}"#.to_owned(),
        "Failed to parse the request body as JSON: key must be a string at line 1 column 2".to_owned(),
    ]
}

fn write(dir: &Path, name: &str, data: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), data).unwrap();
}

fn main() {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/seeds".into());
    let root = Path::new(&root);
    for (i, f) in frames().iter().enumerate() {
        write(
            &root.join("server_frame"),
            &format!("seed-{i:02}"),
            f.as_bytes(),
        );
    }
    // Protocol v2: a JSON batch of every frame, each frame as MessagePack, and a MessagePack
    // batch.
    let frames = frames();
    let batch = format!("[{}]", frames[..frames.len() - 1].join(","));
    write(
        &root.join("server_frame"),
        "v2-json-batch",
        batch.as_bytes(),
    );
    for (i, f) in frames[..frames.len() - 1].iter().enumerate() {
        let packed = tether_core::fuzz::to_msgpack(f);
        write(
            &root.join("server_frame"),
            &format!("v2-msgpack-{i:02}"),
            &packed,
        );
    }
    let packed = tether_core::fuzz::to_msgpack(&batch);
    write(&root.join("server_frame"), "v2-msgpack-batch", &packed);
    for (i, b) in rest_bodies().iter().enumerate() {
        write(
            &root.join("rest_body"),
            &format!("seed-{i:02}"),
            b.as_bytes(),
        );
    }
    for (i, answer) in [
        "permessage-deflate",
        "permessage-deflate; server_max_window_bits=10; server_no_context_takeover; client_max_window_bits=9",
        "Permessage-Deflate; client_no_context_takeover; server_max_window_bits=\"8\"",
        "permessage-deflate; server_max_window_bits=16, x-other",
    ]
    .iter()
    .enumerate()
    {
        write(
            &root.join("extensions"),
            &format!("seed-{i:02}"),
            answer.as_bytes(),
        );
    }
    let mut rng = Rng::new(0x7e7e);
    for i in 0..32 {
        let data: Vec<u8> = (0..1024).map(|_| rng.next_u64() as u8).collect();
        write(&root.join("operations"), &format!("seed-{i:02}"), &data);
    }
    println!("corpora written under {}", root.display());
}
