//! The checked-in TypeScript bindings must match the Rust types they come from.

#[test]
fn checked_in_typescript_bindings_match_the_rust_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("guest-js/src/bindings.ts");
    let generated = tauri_plugin_tether::typescript_bindings();
    if std::env::var_os("TETHER_UPDATE_BINDINGS").is_some() {
        std::fs::write(&path, &generated).expect("write bindings");
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "guest-js/src/bindings.ts drifted from the Rust types; regenerate with \
         TETHER_UPDATE_BINDINGS=1 cargo test -p tauri-plugin-tether --test bindings"
    );
}
