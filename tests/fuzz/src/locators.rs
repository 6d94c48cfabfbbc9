//! The parsers of the strings that name stored things, as one fuzz target: the plugin kit's
//! locator and pointer parsers (every bundled backend uses them), the shared job-id rule, and
//! the object-store plugin's URL parser.
//!
//! The first input byte picks the parser; the rest, if it is UTF-8 (pointers and locators come
//! from TOML, JSON and the command line, so they always are), is the string. Each accepted
//! string must give names that cannot leave their place: no empty, `.` or `..` part, no control
//! character, and the documented shape.

use cairn_plugin_api::JobId;
use cairn_plugin_kit::layout::{self, Locator};
use cairn_storage_object::fuzzing as object;

/// The target.
pub fn locators(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(s) = std::str::from_utf8(rest) else {
        return;
    };
    match which % 4 {
        0 => match layout::parse_locator(s) {
            Ok(Locator::Base(key)) => {
                let parts: Vec<&str> = key.split('/').collect();
                assert_eq!(parts.len(), 3, "locator {s:?} gave key {key:?}");
                valid_job_id(parts[0]);
                safe_parts(&key, s);
            }
            Ok(Locator::Full { root, key }) => {
                assert!(
                    key.starts_with("savepoint-") && key.split('/').count() == 2,
                    "locator {s:?} gave a full key {key:?} outside a savepoint"
                );
                safe_parts(&key, s);
                assert!(root.ends_with('/'), "locator {s:?} gave root {root:?}");
            }
            Err(_) => {}
        },
        1 => {
            if let Ok(pointer) = layout::parse_pointer(s) {
                safe_parts(&pointer.key, s);
                assert!(
                    pointer.root.ends_with('/'),
                    "pointer {s:?} gave {pointer:?}"
                );
                match &pointer.checkpoint {
                    Some((job, id)) => assert_eq!(
                        pointer.key,
                        format!("{}/chk-{id}", job.as_str()),
                        "pointer {s:?}"
                    ),
                    None => assert!(pointer.key.starts_with("savepoint-"), "pointer {s:?}"),
                }
            }
        }
        2 => {
            if JobId::parse(s).is_ok() {
                valid_job_id(s);
            }
        }
        _ => {
            if let Ok((scheme, bucket, prefix)) = object::place(s) {
                if !prefix.is_empty() {
                    safe_parts(&prefix, s);
                }
                let cloud = matches!(scheme.as_str(), "s3" | "gs" | "az");
                assert_eq!(
                    cloud,
                    !bucket.is_empty(),
                    "place {s:?} gave {scheme}://{bucket}/{prefix}"
                );
                assert!(
                    bucket != "." && bucket != ".." && !bucket.contains('/'),
                    "place {s:?} gave bucket {bucket:?}"
                );
            }
        }
    }
}

/// Every `/`-separated part of `key` is a real name: not empty, `.` or `..`, and free of
/// control characters.
fn safe_parts(key: &str, input: &str) {
    for part in key.split('/') {
        assert!(
            !part.is_empty() && part != "." && part != ".." && !part.chars().any(char::is_control),
            "{input:?} gave key {key:?}, with the part {part:?}"
        );
    }
}

/// What an accepted job id must be: the shared rule, 1 to 64 ASCII letters, digits, `-` or `_`.
fn valid_job_id(id: &str) {
    assert!(
        (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "job id {id:?} was accepted"
    );
}
