//! Fuzz targets: cairn's decoders of untrusted bytes, each as a function of one input that
//! panics when a property fails. A decoder may refuse any input, but it must never panic, hang
//! or accept something it would not have written.
//!
//! - [`config`]: the config file parser (`Config::parse_bytes`). Every error is one line, with no
//!   raw control or bidirectional character, and names a line.
//! - [`metadata`]: the checkpoint metadata decoder. What decodes re-encodes to bytes that decode
//!   to the same metadata, and every handle in it converts. [`metadata_payload`] drives the same
//!   decoder from its payload (the JSON inside the frame): random bytes rarely pass the frame's
//!   checksum, so this is how a fuzzer reaches the payload parser.
//! - [`handle`]: the handle records inside metadata (JSON, base64 inline bytes). What converts
//!   converts back to the same record.
//! - [`locators::locators`]: the plugin kit's locator and pointer parsers (every bundled backend
//!   uses them), the shared job-id rule, and the object-store plugin's URL parser.
//! - [`manifest_section`]: the plugin manifest section decoder.
//!
//! Two drivers call them: the coverage-guided AFL++ harness in `afl/` (the long campaign; see the
//! README), and `tests/campaign.rs`, which replays the corpus in `corpus/` and runs a bounded
//! random-mutation campaign in `cargo test`.

use std::path::Path;

use cairn_host::{
    config::Config,
    metadata::{CheckpointMetadata, HandleRecord},
};

pub mod locators;

/// A fuzz target: one input, a panic when a property fails.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus folder.
pub const TARGETS: &[(&str, Target)] = &[
    ("config", config),
    ("metadata", metadata),
    ("metadata-payload", metadata_payload),
    ("handle", handle),
    ("locators", locators::locators),
    ("manifest-section", manifest_section),
];

/// What must never reach a terminal raw: control characters and invisible formatting
/// characters (bidirectional controls, zero-width characters, separators, the byte-order mark).
fn forbidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c as u32,
            0x00ad | 0x061c | 0x200b..=0x200f | 0x2028..=0x202e | 0x2060..=0x2069 | 0xfeff
        )
}

/// The config parser.
pub fn config(data: &[u8]) {
    if let Err(e) = Config::parse_bytes(data, Path::new("fuzz.toml")) {
        let shown = e.to_string();
        assert!(
            !shown.chars().any(forbidden),
            "an error shows a raw control character: {shown:?}"
        );
        let line = e
            .line
            .unwrap_or_else(|| panic!("an error names no line: {shown:?}"));
        assert!(
            shown.starts_with(&format!("config error at fuzz.toml:{line}")),
            "{shown:?}"
        );
    }
}

/// The metadata decoder.
pub fn metadata(data: &[u8]) {
    let Ok(m) = CheckpointMetadata::decode(data) else {
        return;
    };
    let again = CheckpointMetadata::decode(&m.encode()).expect("re-encoded metadata decodes");
    assert_eq!(again, m, "metadata does not survive a re-encode");
    for t in &m.tasks {
        for h in &t.handles {
            let _ = h.to_handle();
        }
    }
}

/// The metadata decoder from the payload: the input is the JSON document; what parses must
/// survive encoding, decoding and comparing, exactly as [`metadata`] checks.
pub fn metadata_payload(data: &[u8]) {
    let Ok(m) = serde_json::from_slice::<CheckpointMetadata>(data) else {
        return;
    };
    metadata(&m.encode());
    let again = CheckpointMetadata::decode(&m.encode()).expect("encoded metadata decodes");
    assert_eq!(again, m, "metadata does not survive an encode");
}

/// The handle records of metadata.
pub fn handle(data: &[u8]) {
    let Ok(record) = serde_json::from_slice::<HandleRecord>(data) else {
        return;
    };
    let _ = record.size();
    if let Ok(h) = record.to_handle() {
        assert_eq!(
            HandleRecord::from(&h),
            record,
            "a handle record does not survive a round trip"
        );
    }
}

/// The plugin manifest section decoder.
pub fn manifest_section(data: &[u8]) {
    if let Ok(Some(s)) = cairn_plugin_api::section::decode_section(data) {
        assert!(s.manifest.validate().is_ok());
    }
}
