//! `docs/embedding.md`, the maintainer's checklist, against the port it describes: every
//! command is named, every check it cites is a test here, the capability it shows is the
//! shim's, and nothing points outside the repository or at this crate's name (Kaiku copies
//! the files; it does not depend on `kaiku-shim`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

const GUIDE: &str = include_str!("../../../../../docs/embedding.md");
const LIB: &str = include_str!("../src/lib.rs");
const TESTS: &[&str] = &[
    include_str!("kaiku_frontend.rs"),
    include_str!("frontend_events.rs"),
];

#[test]
fn the_guide_names_every_command_the_port_registers() {
    let registered: Vec<&str> = LIB
        .lines()
        .filter_map(|l| l.trim().strip_prefix("commands::"))
        .filter_map(|l| l.trim_end_matches(',').rsplit("::").next())
        .collect();
    assert_eq!(registered.len(), 18, "{registered:?}");
    for command in registered {
        let named = command.starts_with("ws_") || GUIDE.contains(command);
        assert!(named && GUIDE.contains("commands/"), "{command}");
    }
    assert!(GUIDE.contains("ws_send"));
    for voice in [
        "join_voice",
        "handle_voice_offer",
        "leave_voice",
        "set_mute",
    ] {
        assert!(GUIDE.contains(voice), "{voice}");
    }
}

#[test]
fn every_check_the_guide_cites_is_a_test_of_the_port() {
    let cited: Vec<&str> = GUIDE
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.matches('_').count() >= 5
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
        })
        .collect();
    assert!(cited.len() >= 6, "{cited:?}");
    for name in cited {
        let pattern = format!("fn {name}(");
        assert!(
            TESTS.iter().any(|t| t.contains(&pattern)),
            "the guide cites `{name}`, which is no test of the shim"
        );
    }
}

#[test]
fn the_capability_in_the_guide_is_the_shim_s() {
    let file: serde_json::Value =
        serde_json::from_str(include_str!("../capabilities/kaiku.json")).unwrap();
    for p in file["permissions"].as_array().unwrap() {
        assert!(GUIDE.contains(p.as_str().unwrap()), "{p}");
    }
    assert!(!GUIDE.contains("\"tether:default\""), "least privilege");
}

#[test]
fn the_guide_stands_on_its_own() {
    for outside in [
        "../shared",
        "shared/reference",
        "kaiku_shim::",
        "kaiku-shim =",
    ] {
        assert!(!GUIDE.contains(outside), "the guide mentions {outside}");
    }
}
