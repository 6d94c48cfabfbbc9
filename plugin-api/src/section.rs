//! The manifest section: a plugin's manifest as plain bytes in its shared library, so a host can
//! read what a file is (name, versions, capabilities) without running any of its code.
//!
//! Since API 1.1.
//!
//! A host looking for plugin `filesystem` used to `dlopen` every library in the search path to
//! ask it its name, running every library's initialisers; the object-store plugin alone is tens
//! of megabytes. With the section, a host reads a few hundred bytes of each file (the ELF section
//! table and this section, through the `object` crate) and `dlopen`s only the plugin it uses.
//!
//! # Contract
//!
//! This is part of the plugin contract, like the ABI, though it is data and not functions:
//!
//! - [`export_storage_plugin!`](crate::export_storage_plugin) writes it, from
//!   [`StoragePlugin::STATIC_MANIFEST`](crate::StoragePlugin::STATIC_MANIFEST), into the ELF
//!   section [`SECTION_NAME`], exported as the symbol `cairn_plugin_manifest_section` so the
//!   linker keeps it. A plugin that declares no static manifest gets an empty section, and a
//!   plugin built before API 1.1 has none: a host then falls back to loading the library and
//!   asking it (the probe), exactly as API 1.0 hosts do.
//! - A host that uses a plugin found through its section still loads it and checks that the
//!   API version and the manifest the code reports are the ones in the section; a file whose
//!   section lies is refused.
//! - Only ELF targets get a section today; on other targets the host probes.
//!
//! # Format 1 (all integers little-endian)
//!
//! ```text
//! magic "CAIRNMAN" (8) | format version (u32) | total length in bytes (u32)
//! | plugin API version word (u64, major << 32 | minor) | capability bits (u64)
//! | name | version | description | test options      each: length (u32) + UTF-8 bytes
//! ```
//!
//! The total length covers everything from the magic on, so a reader can tell a truncated
//! section from a complete one. A newer format version is refused by an older reader rather than
//! guessed at; a format change adds a constant below.

use crate::{
    manifest::{Capabilities, Manifest, StaticManifest},
    storage::StoragePlugin,
    version::ApiVersion,
};

/// The ELF section that holds the manifest.
pub const SECTION_NAME: &str = ".cairn_manifest";

/// The first bytes of every manifest section.
pub const SECTION_MAGIC: &[u8; 8] = b"CAIRNMAN";

/// Format 1 (API 1.1): magic, format, length, API version, capabilities, four strings.
pub const SECTION_FORMAT_1: u32 = 1;

/// The format this crate writes. Always the last constant above.
pub const SECTION_FORMAT: u32 = SECTION_FORMAT_1;

/// The longest section a reader accepts: a manifest is a few hundred bytes; anything near this
/// is not one.
pub const MAX_SECTION_LEN: usize = 64 * 1024;

const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 8;

/// A manifest read from a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionManifest {
    /// The section's format version.
    pub format: u32,
    /// The manifest, with the API version the section states.
    pub manifest: Manifest,
}

/// Why a section's bytes are not a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SectionError {
    /// Shorter than its header, or than its length field says.
    #[error("the manifest section is truncated: {0}")]
    Truncated(String),
    /// Not our magic number.
    #[error("the manifest section does not start with the cairn magic number")]
    BadMagic,
    /// Written in a format this reader does not know.
    #[error("manifest section format {found} is newer than this host understands (up to {SECTION_FORMAT}); upgrade cairn")]
    NewerFormat {
        /// The format found.
        found: u32,
    },
    /// A field is malformed.
    #[error("the manifest section is invalid: {0}")]
    Invalid(String),
}

/// The number of bytes [`section_bytes`] writes for plugin `P`: 0 without a static manifest.
pub const fn section_len<P: StoragePlugin>() -> usize {
    match &P::STATIC_MANIFEST {
        None => 0,
        Some(m) => {
            HEADER_LEN
                + 16
                + m.name.len()
                + m.version.len()
                + m.description.len()
                + m.test_options.len()
        }
    }
}

/// The section of plugin `P`, built against API `api`, as bytes; `N` is [`section_len`].
pub const fn section_bytes<P: StoragePlugin, const N: usize>(api: ApiVersion) -> [u8; N] {
    let mut out = [0u8; N];
    let Some(m) = &P::STATIC_MANIFEST else {
        return out;
    };
    assert!(N == section_len::<P>(), "N must be section_len::<P>()");
    assert!(
        N <= MAX_SECTION_LEN,
        "the manifest is too long for its section"
    );
    let mut at = put(&mut out, 0, SECTION_MAGIC);
    at = put(&mut out, at, &SECTION_FORMAT.to_le_bytes());
    at = put(&mut out, at, &(N as u32).to_le_bytes());
    at = put(&mut out, at, &api.to_word().to_le_bytes());
    at = put(&mut out, at, &m.capabilities.bits().to_le_bytes());
    at = put_str(&mut out, at, m.name);
    at = put_str(&mut out, at, m.version);
    at = put_str(&mut out, at, m.description);
    at = put_str(&mut out, at, m.test_options);
    assert!(at == N, "every byte of the section is written");
    out
}

const fn put<const N: usize>(out: &mut [u8; N], at: usize, bytes: &[u8]) -> usize {
    let mut i = 0;
    while i < bytes.len() {
        out[at + i] = bytes[i];
        i += 1;
    }
    at + bytes.len()
}

const fn put_str<const N: usize>(out: &mut [u8; N], at: usize, s: &str) -> usize {
    let at = put(out, at, &(s.len() as u32).to_le_bytes());
    put(out, at, s.as_bytes())
}

/// Decode a manifest section. `Ok(None)` for an empty section (a plugin that declares no static
/// manifest); every malformed section is an error, never a panic.
pub fn decode_section(bytes: &[u8]) -> Result<Option<SectionManifest>, SectionError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    if bytes.len() > MAX_SECTION_LEN {
        return Err(SectionError::Invalid(format!(
            "{} bytes is more than a manifest section may hold ({MAX_SECTION_LEN})",
            bytes.len()
        )));
    }
    let mut r = Reader { bytes, at: 0 };
    if r.take(8, "magic")? != SECTION_MAGIC {
        return Err(SectionError::BadMagic);
    }
    let format = r.u32("format version")?;
    if format == 0 {
        return Err(SectionError::Invalid(
            "format version 0 does not exist".to_string(),
        ));
    }
    if format > SECTION_FORMAT {
        return Err(SectionError::NewerFormat { found: format });
    }
    let total = r.u32("length")? as usize;
    if total != bytes.len() {
        return Err(if total > bytes.len() {
            SectionError::Truncated(format!(
                "its header says {total} bytes, there are {}",
                bytes.len()
            ))
        } else {
            SectionError::Invalid(format!(
                "its header says {total} bytes, there are {}",
                bytes.len()
            ))
        });
    }
    let api = ApiVersion::from_word(r.u64("API version")?);
    let capabilities = Capabilities::from_bits_retain(r.u64("capabilities")?);
    let name = r.string("name")?;
    let version = r.string("version")?;
    let description = r.string("description")?;
    let test_options = r.string("test options")?;
    if r.at != bytes.len() {
        return Err(SectionError::Invalid(format!(
            "{} bytes after the last field",
            bytes.len() - r.at
        )));
    }
    let manifest = Manifest {
        name,
        version,
        api_version: api,
        description,
        capabilities,
        test_options,
    };
    manifest.validate().map_err(SectionError::Invalid)?;
    Ok(Some(SectionManifest { format, manifest }))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], SectionError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(SectionError::Truncated(format!(
                "{what} needs {n} bytes at offset {}, the section has {}",
                self.at,
                self.bytes.len()
            )));
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, SectionError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, SectionError> {
        let b = self.take(8, what)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(b);
        Ok(u64::from_le_bytes(word))
    }

    fn string(&mut self, what: &str) -> Result<String, SectionError> {
        let len = self.u32(what)? as usize;
        let b = self.take(len, what)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| SectionError::Invalid(format!("the {what} is not UTF-8")))
    }
}

impl StaticManifest {
    /// The manifest this declares, for a plugin built against this crate's API version: what
    /// [`StoragePlugin::manifest`] should return when the plugin declares a static manifest.
    pub fn to_manifest(&self) -> Manifest {
        Manifest::new(self.name, self.version, self.description, self.capabilities)
            .with_test_options(self.test_options)
    }
}

impl From<StaticManifest> for Manifest {
    fn from(m: StaticManifest) -> Self {
        m.to_manifest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CheckpointStorage, StorageResult, API_VERSION};

    struct P;
    impl StoragePlugin for P {
        const STATIC_MANIFEST: Option<StaticManifest> = Some(
            StaticManifest::new(
                "sect-test",
                "1.2.3",
                "a plugin for the section tests",
                Capabilities::PERSISTENT.union(Capabilities::SAVEPOINTS),
            )
            .with_test_options("dir = \"{scratch}\"\n"),
        );
        fn manifest() -> Manifest {
            P::STATIC_MANIFEST
                .map(Manifest::from)
                .unwrap_or_else(|| unreachable!())
        }
        fn open(_: &str) -> StorageResult<Box<dyn CheckpointStorage>> {
            unreachable!("never opened")
        }
    }

    struct Old;
    impl StoragePlugin for Old {
        fn manifest() -> Manifest {
            Manifest::new("old", "1", "no static manifest", Capabilities::empty())
        }
        fn open(_: &str) -> StorageResult<Box<dyn CheckpointStorage>> {
            unreachable!("never opened")
        }
    }

    const BYTES: [u8; section_len::<P>()] = section_bytes::<P, { section_len::<P>() }>(API_VERSION);

    #[test]
    fn a_section_decodes_to_the_manifest_the_code_reports() {
        let s = decode_section(&BYTES).unwrap().unwrap();
        assert_eq!(s.format, SECTION_FORMAT);
        assert_eq!(s.manifest, P::manifest());
    }

    #[test]
    fn no_static_manifest_gives_an_empty_section() {
        assert_eq!(section_len::<Old>(), 0);
        assert_eq!(decode_section(&[]).unwrap(), None);
    }

    #[test]
    fn every_truncation_and_bit_flip_is_an_error_or_a_valid_manifest_never_a_panic() {
        for n in 1..BYTES.len() {
            assert!(decode_section(&BYTES[..n]).is_err(), "truncated to {n}");
        }
        for i in 0..BYTES.len() * 8 {
            let mut b = BYTES;
            b[i / 8] ^= 1 << (i % 8);
            let _ = decode_section(&b);
        }
        let mut newer = BYTES;
        newer[8] = 2;
        assert_eq!(
            decode_section(&newer).unwrap_err(),
            SectionError::NewerFormat { found: 2 }
        );
    }
}
