//! The `[storage.options]` table: parsing, defaults and validation.
//!
//! The table is read into a map of option name to TOML value, and every entry is then checked by
//! this module, so that an unknown option, a value of the wrong type and a value out of range
//! all give an error that names the option in full (`storage.options.part-size = "1MiB" is
//! below the minimum of 5MiB`). Options that do not apply to the URL's scheme (a `region` for a
//! `gs://` URL, say) are refused too, rather than silently ignored.
//!
//! Sizes are written as an integer number of bytes or as a string like `"20KiB"` (parsed by the
//! `bytesize` crate); durations as strings like `"30s"` (parsed by `humantime`).

use std::{collections::BTreeMap, fmt, time::Duration};

use cairn_plugin_api::StorageResult;
use cairn_plugin_kit::options::{self, CommonSpec};

use crate::layout::{Place, Scheme};

mod azure;

const MIB: u64 = 1024 * 1024;
/// Default of `part-size`.
pub(crate) const DEFAULT_PART_SIZE: u64 = 8 * MIB;
/// Smallest `part-size`: S3 refuses smaller parts (except the last).
pub(crate) const MIN_PART_SIZE: u64 = 5 * MIB;
/// Largest `part-size`: every open stream may buffer this much, and a few parts are in flight.
pub(crate) const MAX_PART_SIZE: u64 = 512 * MIB;
/// Default of `max-retries`.
pub(crate) const DEFAULT_MAX_RETRIES: u64 = 5;
/// Largest `max-retries`: retries are bounded by design.
pub(crate) const MAX_MAX_RETRIES: u64 = 20;
/// Default of `retry-timeout`.
pub(crate) const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest `retry-timeout`: object_store retries without re-signing, and signatures expire.
pub(crate) const MAX_RETRY_TIMEOUT: Duration = Duration::from_secs(300);
/// Default of `request-timeout`.
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of `connect-timeout`.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Every option, with the schemes it applies to (`None`: all).
const KNOWN: &[(&str, Option<&[Scheme]>)] = &[
    ("url", None),
    ("savepoint-url", None),
    ("endpoint", Some(&[Scheme::S3, Scheme::Gs, Scheme::Az])),
    ("region", Some(&[Scheme::S3])),
    ("access-key-id", Some(&[Scheme::S3])),
    ("secret-access-key", Some(&[Scheme::S3])),
    ("session-token", Some(&[Scheme::S3])),
    ("path-style", Some(&[Scheme::S3])),
    ("account", Some(&[Scheme::Az])),
    ("access-key", Some(&[Scheme::Az])),
    ("connection-string", Some(&[Scheme::Az])),
    ("use-emulator", Some(&[Scheme::Az])),
    ("service-account", Some(&[Scheme::Gs])),
    ("anonymous", Some(&[Scheme::Gs])),
    ("allow-http", Some(&[Scheme::S3, Scheme::Gs, Scheme::Az])),
    ("part-size", None),
    ("max-retries", None),
    ("retry-timeout", None),
    ("request-timeout", None),
    ("connect-timeout", None),
];

/// What to write instead of an option that belongs to another cloud, for the message that
/// refuses it: (option, scheme of the URL, hint).
const INSTEAD: &[(&str, Scheme, &str)] = &[
    (
        "access-key-id",
        Scheme::Az,
        "on az:// the account name is `account`",
    ),
    (
        "secret-access-key",
        Scheme::Az,
        "on az:// the account key is `access-key`",
    ),
    (
        "access-key-id",
        Scheme::Gs,
        "on gs:// credentials are a `service-account` key file",
    ),
    (
        "secret-access-key",
        Scheme::Gs,
        "on gs:// credentials are a `service-account` key file",
    ),
    (
        "region",
        Scheme::Az,
        "an Azure account's region is part of the account",
    ),
    (
        "region",
        Scheme::Gs,
        "a GCS bucket's location is part of the bucket",
    ),
];

/// The validated options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    /// Where checkpoints go.
    pub(crate) url: Place,
    /// The default savepoint target.
    pub(crate) savepoint_url: Option<Place>,
    /// How to reach and sign in to the cloud service.
    pub(crate) cloud: CloudOptions,
    /// Streams of at most this many bytes give inline handles.
    pub(crate) inline_threshold: u64,
    /// Bytes per uploaded part; also the most a stream buffers before its upload starts.
    pub(crate) part_size: u64,
    /// Retries and timeouts.
    pub(crate) retry: RetryOptions,
}

/// Connection and credential options, resolved: an Azure connection string or `use-emulator`
/// has become `account`, `access_key`, `endpoint` and `allow_http`. Unset ones fall back to the
/// environment, as the `object_store` builders' `from_env` read it.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct CloudOptions {
    /// S3: the server's URL. Azure: the blob service URL (the account's, with the account as the
    /// first path part on Azurite). GCS: the base URL of the JSON and XML APIs.
    pub(crate) endpoint: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) access_key_id: Option<String>,
    pub(crate) secret_access_key: Option<String>,
    pub(crate) session_token: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`) rather than virtual-hosted ones.
    pub(crate) path_style: Option<bool>,
    /// Azure: the storage account name.
    pub(crate) account: Option<String>,
    /// Azure: the account key (base64).
    pub(crate) access_key: Option<String>,
    /// GCS: the path of a service-account JSON key.
    pub(crate) service_account: Option<String>,
    /// GCS: send no credentials at all.
    pub(crate) anonymous: bool,
    pub(crate) allow_http: Option<bool>,
}

impl fmt::Debug for CloudOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a secret, not even at debug level.
        let hidden = |o: &Option<String>| o.as_ref().map(|_| "<set>");
        f.debug_struct("CloudOptions")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("session_token", &hidden(&self.session_token))
            .field("path_style", &self.path_style)
            .field("account", &self.account)
            .field("access_key", &hidden(&self.access_key))
            .field("service_account", &self.service_account)
            .field("anonymous", &self.anonymous)
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// Bounded retries, and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryOptions {
    pub(crate) max_retries: usize,
    pub(crate) retry_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
}

impl Options {
    /// Parse and validate an options document.
    pub(crate) fn parse(document: &str) -> StorageResult<Self> {
        let (common, mut raw): (_, BTreeMap<String, toml::Value>) =
            options::parse(document, CommonSpec::ALL)?;
        for key in raw.keys() {
            if !KNOWN.iter().any(|(k, _)| k == key) {
                let mut known: Vec<&str> = KNOWN.iter().map(|(k, _)| *k).collect();
                known.push("inline-threshold");
                let near = cairn_plugin_api::did_you_mean(key, known.iter().copied())
                    .map(|near| format!("did you mean `{near}`? "))
                    .unwrap_or_default();
                return Err(options::invalid(
                    key,
                    format!(
                        "is not an option of the object-store plugin ({near}known: {})",
                        known.join(", ")
                    ),
                ));
            }
        }
        let url = match raw.remove("url") {
            Some(v) => place("url", &v)?,
            None => {
                return Err(options::missing(
                    "url",
                    "set it to where checkpoints go, for example \"s3://bucket/prefix\"",
                ))
            }
        };
        for (key, schemes) in KNOWN {
            if let (Some(schemes), true) = (schemes, raw.contains_key(*key)) {
                if !schemes.contains(&url.scheme) {
                    let names: Vec<String> =
                        schemes.iter().map(|s| format!("{}://", s.name())).collect();
                    let hint = INSTEAD
                        .iter()
                        .find(|(k, s, _)| k == key && *s == url.scheme)
                        .map_or(String::new(), |(_, _, hint)| format!("; {hint}"));
                    return Err(options::invalid(
                        key,
                        format!(
                            "does not apply to {}:// URLs (only to {}){hint}",
                            url.scheme.name(),
                            names.join(", ")
                        ),
                    ));
                }
            }
        }
        let savepoint_url = raw
            .remove("savepoint-url")
            .map(|v| place("savepoint-url", &v))
            .transpose()?;
        if let Some(sp) = &savepoint_url {
            if sp.scheme == Scheme::Memory && url.scheme != Scheme::Memory {
                return Err(options::invalid(
                    "savepoint-url",
                    format!(
                        "= {:?} is in memory, which only a memory:// url can reach",
                        sp.to_string()
                    ),
                ));
            }
        }
        let cloud = cloud_options(&mut raw, url.scheme)?;
        let inline_threshold = common.inline_threshold;
        let part_size = match raw.remove("part-size") {
            Some(v) => options::size("part-size", &v, MIN_PART_SIZE, MAX_PART_SIZE)?,
            None => DEFAULT_PART_SIZE,
        };
        let max_retries = match raw.remove("max-retries") {
            Some(v) => options::integer("max-retries", &v, 0, MAX_MAX_RETRIES)?,
            None => DEFAULT_MAX_RETRIES,
        };
        let duration_of =
            |raw: &mut BTreeMap<String, toml::Value>, key: &str, default, min, max| {
                raw.remove(key)
                    .map_or(Ok(default), |v| options::duration(key, &v, min, max))
            };
        let ms = Duration::from_millis;
        let retry = RetryOptions {
            max_retries: max_retries as usize,
            retry_timeout: duration_of(
                &mut raw,
                "retry-timeout",
                DEFAULT_RETRY_TIMEOUT,
                ms(0),
                MAX_RETRY_TIMEOUT,
            )?,
            request_timeout: duration_of(
                &mut raw,
                "request-timeout",
                DEFAULT_REQUEST_TIMEOUT,
                ms(100),
                Duration::from_secs(3600),
            )?,
            connect_timeout: duration_of(
                &mut raw,
                "connect-timeout",
                DEFAULT_CONNECT_TIMEOUT,
                ms(100),
                Duration::from_secs(600),
            )?,
        };
        Ok(Options {
            url,
            savepoint_url,
            cloud,
            inline_threshold,
            part_size,
            retry,
        })
    }
}

/// The connection and credential options of a URL of `scheme` (the scheme check is done),
/// resolved and checked: pairs that go together, options that exclude each other, an
/// `http://` endpoint only with `allow-http`.
fn cloud_options(
    raw: &mut BTreeMap<String, toml::Value>,
    scheme: Scheme,
) -> StorageResult<CloudOptions> {
    let mut text = |key: &str| {
        raw.remove(key)
            .map(|v| options::string(key, &v))
            .transpose()
    };
    let mut cloud = CloudOptions {
        endpoint: text("endpoint")?,
        region: text("region")?,
        access_key_id: text("access-key-id")?,
        secret_access_key: text("secret-access-key")?,
        session_token: text("session-token")?,
        account: text("account")?,
        access_key: text("access-key")?,
        service_account: text("service-account")?,
        ..CloudOptions::default()
    };
    let connection_string = text("connection-string")?;
    let mut flag = |key: &str| {
        raw.remove(key)
            .map(|v| options::boolean(key, &v))
            .transpose()
    };
    cloud.allow_http = flag("allow-http")?;
    cloud.path_style = flag("path-style")?;
    let use_emulator = flag("use-emulator")?.unwrap_or(false);
    cloud.anonymous = flag("anonymous")?.unwrap_or(false);
    if let Some(endpoint) = &mut cloud.endpoint {
        *endpoint = endpoint.trim_end_matches('/').to_string();
    }
    if cloud.access_key_id.is_some() != cloud.secret_access_key.is_some() {
        let missing = if cloud.access_key_id.is_none() {
            "access-key-id"
        } else {
            "secret-access-key"
        };
        return Err(options::invalid(
            missing,
            "is missing: access-key-id and secret-access-key go together",
        ));
    }
    // Whether the endpoint's own description asks for plain http (Azurite's connection string
    // or the emulator's default endpoint), so `allow-http` need not be repeated.
    let mut http_implied = false;
    match scheme {
        Scheme::Az => {
            if let Some(cs) = &connection_string {
                for other in ["account", "access-key", "endpoint", "use-emulator"] {
                    let set = match other {
                        "account" => cloud.account.is_some(),
                        "access-key" => cloud.access_key.is_some(),
                        "endpoint" => cloud.endpoint.is_some(),
                        _ => use_emulator,
                    };
                    if set {
                        return Err(options::invalid(
                            other,
                            "cannot be set together with connection-string, which says it",
                        ));
                    }
                }
                let parsed = azure::ConnectionString::parse(cs)?;
                http_implied = parsed.http;
                cloud.account = Some(parsed.account);
                cloud.access_key = parsed.access_key;
                cloud.endpoint = Some(parsed.endpoint);
            } else if use_emulator {
                let account = cloud
                    .account
                    .get_or_insert_with(|| azure::EMULATOR_ACCOUNT.to_string())
                    .clone();
                if cloud.access_key.is_none() {
                    if account != azure::EMULATOR_ACCOUNT {
                        return Err(options::invalid(
                            "access-key",
                            format!(
                                "is missing: Azurite's well-known key is the key of {} only, \
                                 and account = {account:?}",
                                azure::EMULATOR_ACCOUNT
                            ),
                        ));
                    }
                    cloud.access_key = Some(azure::EMULATOR_KEY.to_string());
                }
                if cloud.endpoint.is_none() {
                    cloud.endpoint = Some(format!("{}/{account}", azure::EMULATOR_URL));
                    http_implied = true;
                }
            }
            if let Some(key) = &cloud.access_key {
                azure::check_key(key).map_err(|why| {
                    let option = match &connection_string {
                        Some(_) => "connection-string",
                        None => "access-key",
                    };
                    options::invalid(option, why)
                })?;
            }
        }
        Scheme::Gs => {
            if cloud.anonymous && cloud.service_account.is_some() {
                return Err(options::invalid(
                    "anonymous",
                    "= true cannot be set together with service-account: choose one",
                ));
            }
            if cloud.endpoint.is_some() && !cloud.anonymous && cloud.service_account.is_none() {
                return Err(options::invalid(
                    "endpoint",
                    "on a gs:// URL needs service-account or anonymous = true as well \
                     (object_store takes a GCS endpoint from the service-account key, so \
                     credentials from the environment cannot go with it)",
                ));
            }
        }
        _ => {}
    }
    if let Some(endpoint) = &cloud.endpoint {
        let option = match &connection_string {
            Some(_) => "connection-string",
            None => "endpoint",
        };
        let parsed = url::Url::parse(endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        let Some(parsed) = parsed else {
            return Err(options::invalid(
                option,
                format!("= {endpoint:?} is not an http:// or https:// URL"),
            ));
        };
        if parsed.scheme() == "http" {
            match cloud.allow_http {
                Some(true) => {}
                None if http_implied => cloud.allow_http = Some(true),
                _ => {
                    return Err(options::invalid(
                        option,
                        format!("= {endpoint:?} is plain http, which allow-http = true must allow"),
                    ))
                }
            }
        }
    }
    Ok(cloud)
}

fn place(key: &str, value: &toml::Value) -> StorageResult<Place> {
    let s = options::string(key, value)?;
    Place::parse(&s).map_err(|why| options::invalid(key, format!("= {s:?} is invalid: {why}")))
}

#[cfg(test)]
mod tests {
    use cairn_plugin_api::StorageError;

    use super::*;

    #[test]
    fn the_manifest_lists_every_option_and_no_other() {
        let listed: Vec<&str> = crate::MANIFEST.options.iter().map(|o| o.name).collect();
        let mut known: Vec<&str> = KNOWN.iter().map(|(k, _)| *k).collect();
        known.push("inline-threshold");
        let (mut listed_sorted, mut known_sorted) = (listed.clone(), known.clone());
        listed_sorted.sort_unstable();
        known_sorted.sort_unstable();
        assert_eq!(
            listed_sorted, known_sorted,
            "plugins info would show {listed:?}"
        );
    }

    fn parse(doc: &str) -> Result<Options, String> {
        Options::parse(doc).map_err(|e| match e {
            StorageError::InvalidConfig(m) => m,
            other => panic!("expected InvalidConfig, got {other:?}"),
        })
    }

    #[test]
    fn defaults() {
        let o = parse("url = \"s3://b/p\"").unwrap();
        assert_eq!(o.url.to_string(), "s3://b/p");
        assert_eq!(o.savepoint_url, None);
        assert_eq!(o.inline_threshold, 20 * 1024);
        assert_eq!(o.part_size, 8 << 20);
        assert_eq!(o.retry.max_retries, 5);
        assert_eq!(o.retry.retry_timeout, Duration::from_secs(30));
        assert_eq!(o.cloud, CloudOptions::default());
    }

    #[test]
    fn every_option_is_read() {
        let o = parse(
            "url = \"s3://b/p\"\nsavepoint-url = \"s3://b/sp\"\nendpoint = \"http://127.0.0.1:1\"\n\
             region = \"eu-west-1\"\naccess-key-id = \"k\"\nsecret-access-key = \"s\"\n\
             session-token = \"t\"\nallow-http = true\npath-style = false\n\
             inline-threshold = \"1KiB\"\npart-size = \"5MiB\"\nmax-retries = 0\n\
             retry-timeout = \"2s\"\nrequest-timeout = \"5s\"\nconnect-timeout = \"1s\"\n",
        )
        .unwrap();
        assert_eq!(o.savepoint_url.unwrap().to_string(), "s3://b/sp");
        assert_eq!(o.cloud.endpoint.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(o.cloud.allow_http, Some(true));
        assert_eq!(o.cloud.path_style, Some(false));
        assert_eq!((o.inline_threshold, o.part_size), (1024, 5 << 20));
        assert_eq!(o.retry.max_retries, 0);
        assert_eq!(o.retry.request_timeout, Duration::from_secs(5));
        assert!(
            !format!("{:?}", o.cloud).contains("\"s\""),
            "a secret was printed"
        );
    }

    #[test]
    fn bad_values_name_the_option() {
        let cases = [
            ("", "storage.options.url is missing"),
            ("url = 3", "storage.options.url = 3 is not a string"),
            (
                "url = \"ftp://x\"",
                "storage.options.url = \"ftp://x\" is invalid",
            ),
            (
                "url = \"s3://b\"\nno-such = 1",
                "storage.options.no-such is not an option",
            ),
            (
                "url = \"s3://b\"\npart-size = \"1MiB\"",
                "storage.options.part-size = \"1MiB\" is below the minimum of 5MiB",
            ),
            (
                "url = \"s3://b\"\ninline-threshold = \"2MiB\"",
                "storage.options.inline-threshold = \"2MiB\" is above the maximum of 1MiB",
            ),
            (
                "url = \"s3://b\"\nmax-retries = 100",
                "storage.options.max-retries = 100 is above the maximum of 20",
            ),
            (
                "url = \"s3://b\"\nmax-retries = \"x\"",
                "storage.options.max-retries = \"x\" is not a whole number",
            ),
            (
                "url = \"s3://b\"\nretry-timeout = \"soon\"",
                "storage.options.retry-timeout = \"soon\" is not a duration",
            ),
            (
                "url = \"s3://b\"\nallow-http = \"yes\"",
                "storage.options.allow-http = \"yes\" is not true or false",
            ),
            (
                "url = \"s3://b\"\naccess-key-id = \"k\"",
                "storage.options.secret-access-key is missing",
            ),
            (
                "url = \"gs://b\"\nregion = \"x\"",
                "storage.options.region does not apply to gs:// URLs",
            ),
            (
                "url = \"memory://\"\nendpoint = \"http://x\"",
                "storage.options.endpoint does not apply to memory:// URLs",
            ),
            (
                "url = \"s3://b\"\nendpoint = \"\"",
                "storage.options.endpoint = \"\" is empty",
            ),
            (
                "url = \"s3://b\"\nsavepoint-url = \"memory://x\"",
                "storage.options.savepoint-url = \"memory://x\" is in memory",
            ),
        ];
        for (doc, expected) in cases {
            let msg = parse(doc).unwrap_err();
            assert!(msg.starts_with(expected), "{doc}: {msg}");
        }
    }
    #[test]
    fn azure_options_resolve_to_account_key_and_endpoint() {
        let key = azure::EMULATOR_KEY;
        let o = parse(&format!(
            "url = \"az://c/p\"\nendpoint = \"http://127.0.0.1:10000/acct/\"\n\
             account = \"acct\"\naccess-key = \"{key}\"\nallow-http = true\n"
        ))
        .unwrap();
        assert_eq!(o.cloud.account.as_deref(), Some("acct"));
        assert_eq!(o.cloud.access_key.as_deref(), Some(key));
        assert_eq!(
            o.cloud.endpoint.as_deref(),
            Some("http://127.0.0.1:10000/acct")
        );
        assert!(
            !format!("{:?}", o.cloud).contains(key),
            "the key was printed"
        );
        // Azurite's defaults, and a connection string that implies plain http.
        let o = parse("url = \"az://c/p\"\nuse-emulator = true\n").unwrap();
        assert_eq!(o.cloud.account.as_deref(), Some(azure::EMULATOR_ACCOUNT));
        assert_eq!(o.cloud.access_key.as_deref(), Some(azure::EMULATOR_KEY));
        assert_eq!(
            o.cloud.endpoint.as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
        assert_eq!(o.cloud.allow_http, Some(true));
        let o = parse(&format!(
            "url = \"az://c/p\"\nconnection-string = \"DefaultEndpointsProtocol=http;\
             AccountName=a;AccountKey={key};BlobEndpoint=http://127.0.0.1:9/a;\"\n"
        ))
        .unwrap();
        assert_eq!(o.cloud.account.as_deref(), Some("a"));
        assert_eq!(o.cloud.endpoint.as_deref(), Some("http://127.0.0.1:9/a"));
        assert_eq!(o.cloud.allow_http, Some(true));
    }

    #[test]
    fn cloud_option_rules_name_the_option() {
        let key = azure::EMULATOR_KEY;
        let cases = [
            (
                "url = \"az://c\"\naccess-key-id = \"k\"".to_string(),
                "storage.options.access-key-id does not apply to az:// URLs (only to s3://); \
                 on az:// the account name is `account`",
            ),
            (
                "url = \"gs://b\"\nsecret-access-key = \"k\"".to_string(),
                "storage.options.secret-access-key does not apply to gs:// URLs (only to s3://); \
                 on gs:// credentials are a `service-account` key file",
            ),
            (
                "url = \"s3://b\"\naccount = \"a\"".to_string(),
                "storage.options.account does not apply to s3:// URLs (only to az://)",
            ),
            (
                format!(
                    "url = \"az://c\"\naccount = \"a\"\nconnection-string = \
                     \"AccountName=a;AccountKey={key}\""
                ),
                "storage.options.account cannot be set together with connection-string",
            ),
            (
                "url = \"az://c\"\nuse-emulator = true\naccount = \"other\"".to_string(),
                "storage.options.access-key is missing: Azurite's well-known key is the key of \
                 devstoreaccount1 only",
            ),
            (
                "url = \"az://c\"\naccess-key = \"not base64!\"".to_string(),
                "storage.options.access-key ",
            ),
            (
                format!(
                    "url = \"az://c\"\nendpoint = \"http://127.0.0.1:1/a\"\naccount = \"a\"\n\
                     access-key = \"{key}\""
                ),
                "storage.options.endpoint = \"http://127.0.0.1:1/a\" is plain http, which \
                 allow-http = true must allow",
            ),
            (
                "url = \"gs://b\"\nendpoint = \"http://127.0.0.1:1\"\nallow-http = true"
                    .to_string(),
                "storage.options.endpoint on a gs:// URL needs service-account or anonymous = \
                 true as well",
            ),
            (
                "url = \"gs://b\"\nanonymous = true\nservice-account = \"/k.json\"".to_string(),
                "storage.options.anonymous = true cannot be set together with service-account",
            ),
            (
                "url = \"gs://b\"\nendpoint = \"127.0.0.1:1\"\nanonymous = true".to_string(),
                "storage.options.endpoint = \"127.0.0.1:1\" is not an http:// or https:// URL",
            ),
        ];
        for (doc, expected) in cases {
            let msg = parse(&doc).unwrap_err();
            assert!(msg.starts_with(expected), "{doc}:\n{msg}");
            assert!(!msg.contains(key), "{doc}: the key was echoed: {msg}");
        }
    }
}
