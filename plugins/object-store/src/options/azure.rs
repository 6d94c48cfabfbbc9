//! Azure's own ways of naming an account: the connection string (what the portal's "Access
//! keys" page and Azurite's documentation give) and Azurite's well-known development account.
//!
//! A connection string is `Key=Value` pairs separated by `;`. The blob client needs the
//! account, its key and the blob service URL; these keys say them:
//!
//! | key | meaning |
//! |---|---|
//! | `AccountName`, `AccountKey` | the account and its key |
//! | `BlobEndpoint` | the blob service URL (Azurite: `http://127.0.0.1:10000/devstoreaccount1`) |
//! | `DefaultEndpointsProtocol`, `EndpointSuffix` | without `BlobEndpoint`: `<protocol>://<account>.blob.<suffix>` |
//! | `UseDevelopmentStorage=true` | Azurite on its default port, with its well-known account |
//! | `QueueEndpoint`, `TableEndpoint`, `FileEndpoint` | other services' URLs, which a blob client has no use for |
//!
//! Keys are matched without regard to case, as Azure's SDKs do. Any other key is refused with
//! its name, and so is `SharedAccessSignature` (SAS tokens are not supported by this plugin);
//! no message ever repeats the string, since it holds the key.

use base64::Engine;

use cairn_plugin_api::StorageResult;
use cairn_plugin_kit::options;

/// Azurite's (and the old storage emulator's) well-known account name, published by Microsoft.
pub(crate) const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
/// The well-known key of [`EMULATOR_ACCOUNT`], published by Microsoft.
pub(crate) const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Where Azurite's blob service listens by default; the account is the first path part.
pub(crate) const EMULATOR_URL: &str = "http://127.0.0.1:10000";

const OPTION: &str = "connection-string";

/// What a connection string says about the blob service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectionString {
    pub(crate) account: String,
    pub(crate) access_key: Option<String>,
    /// The blob service URL, without a trailing `/`.
    pub(crate) endpoint: String,
    /// It asks for plain http (`DefaultEndpointsProtocol=http`, an `http://` `BlobEndpoint`,
    /// or the development storage).
    pub(crate) http: bool,
}

impl ConnectionString {
    /// Parse `s`; errors name `storage.options.connection-string` and the key at fault.
    pub(crate) fn parse(s: &str) -> StorageResult<Self> {
        let bad = |why: String| options::invalid(OPTION, why);
        let mut account = None;
        let mut key = None;
        let mut blob_endpoint = None;
        let mut protocol = None;
        let mut suffix = None;
        let mut development = false;
        for (i, pair) in s.split(';').enumerate() {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let Some((name, value)) = pair.split_once('=') else {
                return Err(bad(format!(
                    "has a part without '=' (part {}): write Key=Value pairs separated by ';'",
                    i + 1
                )));
            };
            let (name, value) = (name.trim(), value.trim().to_string());
            let slot = match name.to_ascii_lowercase().as_str() {
                "accountname" => &mut account,
                "accountkey" => &mut key,
                "blobendpoint" => &mut blob_endpoint,
                "defaultendpointsprotocol" => &mut protocol,
                "endpointsuffix" => &mut suffix,
                "usedevelopmentstorage" => {
                    development = match value.to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(bad(format!(
                                "has UseDevelopmentStorage={value:?}: write true or false"
                            )))
                        }
                    };
                    continue;
                }
                "queueendpoint" | "tableendpoint" | "fileendpoint" => continue,
                "sharedaccesssignature" => {
                    return Err(bad(
                        "has SharedAccessSignature, which the object-store plugin does not \
                         support: use a connection string with AccountName and AccountKey"
                            .to_string(),
                    ))
                }
                _ => {
                    return Err(bad(format!(
                        "has an unknown key {name:?} (known: AccountName, AccountKey, \
                         BlobEndpoint, DefaultEndpointsProtocol, EndpointSuffix, \
                         UseDevelopmentStorage)"
                    )))
                }
            };
            if slot.is_some() {
                return Err(bad(format!("has {name} twice")));
            }
            if value.is_empty() {
                return Err(bad(format!("has an empty {name}")));
            }
            *slot = Some(value);
        }
        let protocol = match protocol.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => None,
            Some("http") => Some("http"),
            Some("https") => Some("https"),
            Some(_) => {
                return Err(bad(
                    "has a DefaultEndpointsProtocol that is neither http nor https".to_string(),
                ))
            }
        };
        if development {
            let account = account.unwrap_or_else(|| EMULATOR_ACCOUNT.to_string());
            let key = match key {
                Some(key) => key,
                None if account == EMULATOR_ACCOUNT => EMULATOR_KEY.to_string(),
                None => {
                    return Err(bad(format!(
                        "names AccountName={account:?} for the development storage without \
                         its AccountKey (the well-known key is {EMULATOR_ACCOUNT}'s only)"
                    )))
                }
            };
            let endpoint = blob_endpoint.unwrap_or_else(|| format!("{EMULATOR_URL}/{account}"));
            return Ok(ConnectionString {
                account,
                access_key: Some(key),
                http: protocol != Some("https"),
                endpoint: endpoint.trim_end_matches('/').to_string(),
            });
        }
        let Some(account) = account else {
            return Err(bad(
                "has no AccountName (nor UseDevelopmentStorage=true)".to_string()
            ));
        };
        let endpoint = match blob_endpoint {
            Some(url) => url,
            None => format!(
                "{}://{account}.blob.{}",
                protocol.unwrap_or("https"),
                suffix.as_deref().unwrap_or("core.windows.net")
            ),
        };
        let endpoint = endpoint.trim_end_matches('/').to_string();
        Ok(ConnectionString {
            http: protocol == Some("http") || endpoint.starts_with("http://"),
            account,
            access_key: key,
            endpoint,
        })
    }
}

/// Whether `key` can be an account key (base64 of some bytes); the reason if not, without the
/// key itself.
pub(crate) fn check_key(key: &str) -> Result<(), String> {
    match base64::engine::general_purpose::STANDARD.decode(key.trim()) {
        Ok(bytes) if !bytes.is_empty() => Ok(()),
        _ => Err(
            "holds an account key that is not base64, as Azure's keys are \
                  (the key is not shown)"
                .to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use cairn_plugin_api::StorageError;

    use super::*;

    fn parse(s: &str) -> Result<ConnectionString, String> {
        ConnectionString::parse(s).map_err(|e| match e {
            StorageError::InvalidConfig(m) => m,
            other => panic!("expected InvalidConfig, got {other:?}"),
        })
    }

    #[test]
    fn azurite_connection_strings_resolve_to_its_account_and_url() {
        let dev = parse("UseDevelopmentStorage=true").unwrap();
        assert_eq!(
            dev,
            ConnectionString {
                account: EMULATOR_ACCOUNT.into(),
                access_key: Some(EMULATOR_KEY.into()),
                endpoint: "http://127.0.0.1:10000/devstoreaccount1".into(),
                http: true,
            }
        );
        // The full form from Azurite's documentation, on another port.
        let full = parse(&format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={EMULATOR_KEY};\
             BlobEndpoint=http://127.0.0.1:10010/devstoreaccount1;\
             QueueEndpoint=http://127.0.0.1:10011/devstoreaccount1;"
        ))
        .unwrap();
        assert_eq!(full.endpoint, "http://127.0.0.1:10010/devstoreaccount1");
        assert_eq!(full.access_key.as_deref(), Some(EMULATOR_KEY));
        assert!(full.http);
    }

    #[test]
    fn a_cloud_connection_string_gives_the_account_url() {
        let cs = parse("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.chinacloudapi.cn").unwrap();
        assert_eq!(cs.endpoint, "https://acct.blob.core.chinacloudapi.cn");
        assert!(!cs.http);
        let cs = parse("accountname=acct;accountkey=a2V5").unwrap();
        assert_eq!(cs.endpoint, "https://acct.blob.core.windows.net");
    }

    #[test]
    fn bad_connection_strings_name_the_key_and_never_echo_the_string() {
        for (s, expected) in [
            ("AccountKey=c2VjcmV0", "has no AccountName"),
            ("AccountName=a;Bogus=1", "has an unknown key \"Bogus\""),
            ("AccountName=a;AccountName=b", "has AccountName twice"),
            (
                "AccountName=a;SharedAccessSignature=sv=1",
                "has SharedAccessSignature",
            ),
            ("AccountName", "has a part without '=' (part 1)"),
            (
                "AccountName=a;DefaultEndpointsProtocol=ftp",
                "neither http nor https",
            ),
            ("UseDevelopmentStorage=yes", "UseDevelopmentStorage=\"yes\""),
            (
                "UseDevelopmentStorage=true;AccountName=other",
                "without its AccountKey",
            ),
        ] {
            let m = parse(s).unwrap_err();
            assert!(
                m.starts_with("storage.options.connection-string ") && m.contains(expected),
                "{s}: {m}"
            );
            assert!(!m.contains("c2VjcmV0"), "the key was echoed: {m}");
        }
    }

    #[test]
    fn keys_must_be_base64() {
        assert!(check_key(EMULATOR_KEY).is_ok());
        let why = check_key("not base64!").unwrap_err();
        assert!(!why.contains("not base64!"), "{why}");
    }
}
