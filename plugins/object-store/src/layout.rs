//! Places: a store and a key prefix, written as a URL (`s3://bucket/prefix`,
//! `gs://bucket/prefix`, `az://container/prefix`, `memory://prefix`) or, for the local
//! filesystem, `file:///abs/path` or just `/abs/path`. Local places are *shown* as plain absolute
//! paths, so a savepoint whose target was a directory gets a pointer under that directory, as
//! with the filesystem backend. Key parts must be non-empty, not `.` or `..`, and free of control
//! characters, so no key can climb out of its prefix. Everything else about names (the layout,
//! locators, pointers, job ids) is the kit's.

use std::fmt;

use object_store::path::Path as KeyPath;

use cairn_plugin_api::{StorageError, StorageResult};

/// Which kind of store a place is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Scheme {
    /// Amazon S3 or an S3-compatible server.
    S3,
    /// Google Cloud Storage.
    Gs,
    /// Azure Blob Storage.
    Az,
    /// The local filesystem.
    File,
    /// The instance's own in-memory store.
    Memory,
}

impl Scheme {
    /// The URL scheme.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scheme::S3 => "s3",
            Scheme::Gs => "gs",
            Scheme::Az => "az",
            Scheme::File => "file",
            Scheme::Memory => "memory",
        }
    }

    /// Whether the scheme names a cloud service (reachable from other hosts).
    pub(crate) fn is_cloud(self) -> bool {
        matches!(self, Scheme::S3 | Scheme::Gs | Scheme::Az)
    }
}

/// A store and a key prefix in it (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Place {
    /// Which store.
    pub(crate) scheme: Scheme,
    /// The bucket or container (cloud schemes only, else empty).
    pub(crate) bucket: String,
    /// The key prefix: parts joined by `/`, without leading or trailing `/` (may be empty).
    pub(crate) prefix: String,
}

impl Place {
    /// Parse a URL or an absolute local path. The error says why, for the caller to wrap.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("it is empty".into());
        }
        if s.chars().any(char::is_control) {
            return Err("it contains a control character".into());
        }
        let (scheme, rest) =
            match s.split_once("://") {
                Some((scheme, rest)) => (scheme, rest),
                None if s.starts_with('/') => ("file", s),
                None => return Err(
                    "expected a URL (s3://, gs://, az://, file://, memory://) or an absolute path"
                        .into(),
                ),
            };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "s3" | "s3a" => Scheme::S3,
            "gs" => Scheme::Gs,
            "az" | "azure" => Scheme::Az,
            "file" => Scheme::File,
            "memory" => Scheme::Memory,
            other => {
                return Err(format!(
                    "the scheme '{other}' is not supported: use s3://, gs://, az://, file:// or memory://"
                ))
            }
        };
        let (bucket, path) = match scheme {
            Scheme::S3 | Scheme::Gs | Scheme::Az => {
                let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(format!("a {}:// URL needs a bucket name", scheme.name()));
                }
                // S3, GCS and Azure all require a letter or digit at both ends, which also keeps
                // out '.' and '..' (a path-style URL would resolve them to another bucket).
                let ends_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
                if !bucket
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
                    || !ends_ok(bucket.bytes().next())
                    || !ends_ok(bucket.bytes().last())
                {
                    return Err(format!(
                        "bucket name '{bucket}' is invalid: use ASCII letters, digits, '-', '.' \
                         and '_', starting and ending with a letter or digit"
                    ));
                }
                (bucket.to_string(), path)
            }
            Scheme::File => match rest.strip_prefix('/') {
                Some(path) => (String::new(), path),
                None => {
                    return Err(
                        "a file:// URL must hold an absolute path (file:///dir), with no host"
                            .into(),
                    )
                }
            },
            Scheme::Memory => (String::new(), rest),
        };
        let path = path.trim_end_matches('/');
        if !path.is_empty() {
            for part in path.split('/') {
                match part {
                    "" => return Err("it has an empty path part ('//')".into()),
                    "." | ".." => return Err("it has a '.' or '..' part".into()),
                    _ => {}
                }
            }
        }
        Ok(Place {
            scheme,
            bucket,
            prefix: path.to_string(),
        })
    }

    /// This place with `part` (one or more `/`-separated parts, all valid) appended.
    pub(crate) fn join(&self, part: &str) -> Place {
        let prefix = if self.prefix.is_empty() {
            part.to_string()
        } else {
            format!("{}/{part}", self.prefix)
        };
        Place {
            prefix,
            ..self.clone()
        }
    }

    /// The key of this place in its store. Valid by construction (see [`Place::parse`]).
    pub(crate) fn key(&self) -> StorageResult<KeyPath> {
        KeyPath::parse(&self.prefix)
            .map_err(|e| StorageError::InvalidConfig(format!("place {self} is invalid: {e}")))
    }

    /// The key of this place, as a listing prefix.
    pub(crate) fn list_prefix(&self) -> StorageResult<Option<KeyPath>> {
        if self.prefix.is_empty() {
            return Ok(None);
        }
        self.key().map(Some)
    }

    /// The URL form, also for local places (`file:///...`), for messages about configuration.
    pub(crate) fn url(&self) -> String {
        match self.scheme {
            Scheme::File => format!("file://{self}"),
            _ => self.to_string(),
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            Scheme::File => write!(f, "/{}", self.prefix),
            Scheme::Memory => write!(f, "memory://{}", self.prefix),
            _ if self.prefix.is_empty() => write!(f, "{}://{}", self.scheme.name(), self.bucket),
            _ => write!(
                f,
                "{}://{}/{}",
                self.scheme.name(),
                self.bucket,
                self.prefix
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(s: &str) -> Place {
        Place::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn urls_parse_and_print_back() {
        for (url, scheme, bucket, prefix, shown) in [
            ("s3://b/p/q", Scheme::S3, "b", "p/q", "s3://b/p/q"),
            ("s3://b", Scheme::S3, "b", "", "s3://b"),
            ("s3://b/p/", Scheme::S3, "b", "p", "s3://b/p"),
            ("gs://b-1/x", Scheme::Gs, "b-1", "x", "gs://b-1/x"),
            ("az://c/x", Scheme::Az, "c", "x", "az://c/x"),
            ("file:///tmp/x", Scheme::File, "", "tmp/x", "/tmp/x"),
            ("/tmp/x/", Scheme::File, "", "tmp/x", "/tmp/x"),
            ("memory://", Scheme::Memory, "", "", "memory://"),
            ("memory://a/b", Scheme::Memory, "", "a/b", "memory://a/b"),
        ] {
            let p = place(url);
            assert_eq!(
                (p.scheme, p.bucket.as_str(), p.prefix.as_str()),
                (scheme, bucket, prefix)
            );
            assert_eq!(p.to_string(), shown);
            assert_eq!(Place::parse(&p.to_string()).unwrap(), p);
        }
        assert_eq!(place("/tmp/x").url(), "file:///tmp/x");
        for bad in [
            "",
            "s3://",
            "s3:///x",
            "s3://b/../x",
            "s3://b/a//c",
            "s3://b/./c",
            "s3://B@d/x",
            "http://x/y",
            "file://host/x",
            "relative/path",
            "s3://b/a\0",
        ] {
            assert!(Place::parse(bad).is_err(), "{bad:?}");
        }
    }
}
