//! The plugin's async runtime and its `object_store` clients.
//!
//! # The runtime
//!
//! `object_store` is async; the plugin interface is blocking. Each opened storage owns a small
//! multi-thread tokio runtime ([`Runtime`], two worker threads) created at open, and every
//! storage call runs its future with `block_on` on the caller's thread. Many host threads can
//! `block_on` at once; the workers drive the HTTP connections and the part uploads that run in
//! the background. No runtime or handle ever crosses the plugin boundary: the host sees only
//! blocking calls. The runtime is shut down in the background when the storage is dropped, so
//! dropping never blocks on a hung connection.
//!
//! # Clients
//!
//! [`Stores`] builds one client per bucket from the options (falling back to the environment as
//! the builders' `from_env` read it: `AWS_*`, `GOOGLE_*`, `AZURE_*`), and caches it. The storage
//! URL's client is built at open; others (a savepoint target in another bucket, or on the local
//! filesystem) on first use. Retries are bounded by the options through `RetryConfig`, and
//! `object_store` logs each retry (`object_store::client::retry`, at info level), which reaches
//! the host's log like any plugin event.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, PoisonError},
};

use object_store::{
    aws::AmazonS3Builder, azure::MicrosoftAzureBuilder, gcp::GoogleCloudStorageBuilder,
    local::LocalFileSystem, memory::InMemory, BackoffConfig, ClientOptions, ObjectStore,
    RetryConfig,
};

use cairn_plugin_api::{StorageError, StorageResult};

use crate::{
    layout::{Place, Scheme},
    options::Options,
};

/// The plugin's own tokio runtime (see the module docs).
pub(crate) struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    /// Start a runtime with two worker threads.
    pub(crate) fn start() -> StorageResult<Self> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-object-store")
            .enable_all()
            .build()
            .map(|rt| Runtime(Some(rt)))
            .map_err(|e| StorageError::Io(format!("cannot start the plugin's tokio runtime: {e}")))
    }

    /// Run `future` to completion on the calling thread.
    pub(crate) fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.0.as_ref().expect("runtime is live").block_on(future)
    }

    /// Run `future` in the background on the runtime's workers.
    pub(crate) fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0.as_ref().expect("runtime is live").spawn(future)
    }

    /// Enter the runtime's context, for synchronous calls that spawn tasks.
    pub(crate) fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        self.0.as_ref().expect("runtime is live").enter()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Which client a place needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct StoreKey {
    scheme: Scheme,
    bucket: String,
}

impl StoreKey {
    fn of(place: &Place) -> Self {
        StoreKey {
            scheme: place.scheme,
            bucket: place.bucket.clone(),
        }
    }
}

/// The clients of one storage instance (see the module docs).
pub(crate) struct Stores {
    options: Options,
    clients: Mutex<HashMap<StoreKey, Arc<dyn ObjectStore>>>,
}

impl Stores {
    /// Build the client of the storage URL.
    pub(crate) fn open(options: Options) -> StorageResult<Self> {
        let stores = Stores {
            options,
            clients: Mutex::new(HashMap::new()),
        };
        let base = stores.options.url.clone();
        stores.for_place(&base)?;
        Ok(stores)
    }

    /// The client for `place`. A `memory://` place is only reachable from a storage whose URL
    /// is `memory://` (it is that storage's own memory).
    pub(crate) fn for_place(&self, place: &Place) -> StorageResult<Arc<dyn ObjectStore>> {
        let key = StoreKey::of(place);
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        if place.scheme == Scheme::Memory && self.options.url.scheme != Scheme::Memory {
            return Err(StorageError::InvalidConfig(format!(
                "{place}: memory:// places belong to a storage whose url is memory://"
            )));
        }
        let client = self.build(place)?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    fn build(&self, place: &Place) -> StorageResult<Arc<dyn ObjectStore>> {
        let o = &self.options;
        let c = &o.cloud;
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: o.retry.max_retries,
            retry_timeout: o.retry.retry_timeout,
        };
        let mut client = ClientOptions::new()
            .with_timeout(o.retry.request_timeout)
            .with_connect_timeout(o.retry.connect_timeout);
        if let Some(allow) = c.allow_http {
            client = client.with_allow_http(allow);
        }
        let failed = |e: object_store::Error| {
            cairn_plugin_kit::options::invalid(
                "url",
                format!(
                    "= {:?}: cannot build the client: {}",
                    place.url(),
                    crate::blob::with_root_cause(&e)
                ),
            )
        };
        let store: Arc<dyn ObjectStore> = match place.scheme {
            Scheme::S3 => {
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(&place.bucket)
                    .with_retry(retry)
                    .with_client_options(client)
                    .with_virtual_hosted_style_request(!c.path_style.unwrap_or(true));
                if let Some(v) = &c.endpoint {
                    b = b.with_endpoint(v);
                }
                if let Some(v) = &c.region {
                    b = b.with_region(v);
                }
                if let (Some(k), Some(s)) = (&c.access_key_id, &c.secret_access_key) {
                    b = b.with_access_key_id(k).with_secret_access_key(s);
                }
                if let Some(v) = &c.session_token {
                    b = b.with_token(v);
                }
                if let Some(allow) = c.allow_http {
                    b = b.with_allow_http(allow);
                }
                Arc::new(b.build().map_err(failed)?)
            }
            Scheme::Gs => {
                let mut b = match (&c.endpoint, &c.service_account) {
                    // object_store reads a GCS endpoint from the service-account key only, so
                    // the key is written here, and the environment's credentials stay out.
                    (Some(endpoint), account) => GoogleCloudStorageBuilder::new()
                        .with_service_account_key(gcs_key(endpoint, account.as_deref())?),
                    (None, Some(path)) => {
                        GoogleCloudStorageBuilder::from_env().with_service_account_path(path)
                    }
                    (None, None) => GoogleCloudStorageBuilder::from_env(),
                };
                b = b
                    .with_bucket_name(&place.bucket)
                    .with_retry(retry)
                    .with_client_options(client)
                    .with_skip_signature(c.anonymous);
                Arc::new(b.build().map_err(failed)?)
            }
            Scheme::Az => {
                let mut b = MicrosoftAzureBuilder::from_env()
                    .with_container_name(&place.bucket)
                    .with_retry(retry)
                    .with_client_options(client);
                if let Some(v) = &c.endpoint {
                    // The endpoint is the blob service URL, Azurite's included (the account is
                    // its first path part), so object_store's emulator mode, which would take
                    // the URL from AZURITE_BLOB_STORAGE_URL instead, stays off.
                    b = b.with_endpoint(v.clone()).with_use_emulator(false);
                }
                if let Some(v) = &c.account {
                    b = b.with_account(v);
                }
                if let Some(v) = &c.access_key {
                    b = b.with_access_key(v);
                }
                Arc::new(b.build().map_err(failed)?)
            }
            Scheme::File => Arc::new(LocalFileSystem::new()),
            Scheme::Memory => Arc::new(InMemory::new()),
        };
        tracing::debug!(place = %place.url(), "object store client built");
        Ok(store)
    }
}

/// The service-account key `object_store` is given for a GCS `endpoint`: the key file at
/// `service_account` with `gcs_base_url` set in it, or, with none (`anonymous = true`), a key
/// that only carries the URL and turns OAuth off.
fn gcs_key(endpoint: &str, service_account: Option<&str>) -> StorageResult<String> {
    use cairn_plugin_kit::options::invalid;
    let mut key = match service_account {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid("service-account", format!("= {path:?} cannot be read: {e}"))
            })?;
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(serde_json::Value::Object(map)) => map,
                Ok(_) => {
                    return Err(invalid(
                        "service-account",
                        format!("= {path:?} is not a JSON object (a service-account key)"),
                    ))
                }
                Err(e) => {
                    return Err(invalid(
                        "service-account",
                        format!("= {path:?} is not JSON: {e}"),
                    ))
                }
            }
        }
        None => {
            let mut map = serde_json::Map::new();
            for field in ["private_key", "private_key_id", "client_email"] {
                map.insert(field.into(), "".into());
            }
            map.insert("disable_oauth".into(), true.into());
            map
        }
    };
    key.insert("gcs_base_url".into(), endpoint.into());
    Ok(serde_json::Value::Object(key).to_string())
}

#[cfg(test)]
mod tests {
    use cairn_plugin_api::StorageError;

    use super::*;

    fn json(s: &str) -> serde_json::Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn a_gcs_endpoint_is_written_into_the_service_account_key() {
        // No credentials: a key that only carries the URL, with OAuth off.
        let key = json(&gcs_key("http://127.0.0.1:4443", None).unwrap());
        assert_eq!(key["gcs_base_url"], "http://127.0.0.1:4443");
        assert_eq!(key["disable_oauth"], true);
        // A key file: its fields are kept, the URL is added.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.json");
        std::fs::write(&path, r#"{"client_email":"a@b","private_key":"k"}"#).unwrap();
        let key = json(&gcs_key("https://gcs.example", path.to_str()).unwrap());
        assert_eq!(key["client_email"], "a@b");
        assert_eq!(key["gcs_base_url"], "https://gcs.example");
        // Bad key files name the option and the file.
        std::fs::write(&path, "[1]").unwrap();
        let p = path.to_str().unwrap();
        for (expected, file) in [
            ("is not a JSON object", p),
            ("cannot be read", "/no/such/key.json"),
        ] {
            match gcs_key("http://127.0.0.1:1", Some(file)) {
                Err(StorageError::InvalidConfig(m)) => assert!(
                    m.starts_with("storage.options.service-account = ")
                        && m.contains(file)
                        && m.contains(expected),
                    "{m}"
                ),
                other => panic!("{file}: {other:?}"),
            }
        }
    }
}
