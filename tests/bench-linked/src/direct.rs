//! The object-store plugin's baseline: the `object_store` crate used directly, on the same
//! store and the same bytes, with the plugin's upload strategy (see
//! [`cairn_harness::bench::DirectRequest`]).
//!
//! The store is built from the plugin's own options document (`url`, `endpoint`, `region`,
//! `access-key-id`, `secret-access-key`, `session-token`, `allow-http`, `path-style`,
//! `part-size`), so both sides talk to the same server with the same credentials. The `cairn`
//! binary never links `object_store`; this companion does, as a baseline library.

use std::{sync::Arc, time::Instant};

use bytes::Bytes;
use cairn_harness::bench::{self, DirectOutput, DirectRequest, Sample};
use futures::StreamExt;
use object_store::{
    aws::AmazonS3Builder, azure::MicrosoftAzureBuilder, gcp::GoogleCloudStorageBuilder,
    local::LocalFileSystem, memory::InMemory, path::Path as KeyPath, ObjectStore, PutMode,
    PutOptions, PutPayload, WriteMultipart,
};

/// Parts in flight, as in the plugin.
const PARTS_IN_FLIGHT: usize = 4;
/// The plugin's default `part-size`.
const DEFAULT_PART_SIZE: u64 = 8 << 20;

/// Serves [`DirectRequest`]s with one runtime (two workers, like the plugin's).
pub struct Direct {
    rt: tokio::runtime::Runtime,
}

impl Direct {
    /// Start the runtime.
    pub fn new() -> Result<Self, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a tokio runtime: {e}"))?;
        Ok(Direct { rt })
    }

    /// One round.
    pub fn round(&self, request: &DirectRequest) -> Result<DirectOutput, String> {
        let (store, base, part_size) = build(&request.options)?;
        let key = |name: &str| {
            let k = [base.as_str(), request.prefix.as_str(), name]
                .iter()
                .filter(|p| !p.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("/");
            KeyPath::parse(&k).map_err(|e| format!("key {k}: {e}"))
        };
        let (data_key, meta_key) = (key("data")?, key("_metadata")?);
        let chunk = usize::try_from(request.chunk.min(request.size).max(1))
            .map_err(|_| "chunk too large".to_string())?;
        let data = bench::pattern(chunk);
        let size = request.size;
        let result = self.rt.block_on(async {
            let start = Instant::now();
            let mut calls = 0u64;
            if size <= part_size {
                let mut buffer = Vec::with_capacity(size as usize);
                while (buffer.len() as u64) < size {
                    let n = chunk.min((size - buffer.len() as u64) as usize);
                    buffer.extend_from_slice(&data[..n]);
                    calls += 1;
                }
                store
                    .put(&data_key, PutPayload::from(Bytes::from(buffer)))
                    .await?;
            } else {
                let upload = store.put_multipart(&data_key).await?;
                let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size as usize);
                let mut written = 0u64;
                while written < size {
                    let n = chunk.min((size - written) as usize);
                    writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                    writer.write(&data[..n]);
                    written += n as u64;
                    calls += 1;
                }
                writer.finish().await?;
            }
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            store
                .put_opts(&meta_key, PutPayload::from_static(b"metadata"), opts)
                .await?;
            let write = timed(size, calls, start);

            let start = Instant::now();
            let mut body = store.get(&data_key).await?.into_stream();
            let (mut read, mut reads) = (0u64, 0u64);
            while let Some(bytes) = body.next().await {
                read += bytes?.len() as u64;
                reads += 1;
            }
            let read = timed(read, reads, start);
            for k in [&data_key, &meta_key] {
                store.delete(k).await?;
            }
            Ok::<_, object_store::Error>(DirectOutput { write, read })
        });
        result.map_err(|e| format!("object_store direct: {e}"))
    }
}

fn timed(bytes: u64, calls: u64, start: Instant) -> Sample {
    Sample {
        bytes,
        calls,
        seconds: start.elapsed().as_secs_f64().max(1e-9),
    }
}

/// The store, the key prefix and the part size the plugin's options name.
fn build(options: &str) -> Result<(Arc<dyn ObjectStore>, String, u64), String> {
    let table: toml::Table = options
        .parse()
        .map_err(|e| format!("the plugin options are not TOML: {e}"))?;
    let text = |k: &str| table.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let flag = |k: &str| table.get(k).and_then(toml::Value::as_bool);
    let url = text("url").ok_or("the plugin options have no url")?;
    let part_size = match table.get("part-size") {
        None => DEFAULT_PART_SIZE,
        Some(toml::Value::Integer(n)) => u64::try_from(*n).map_err(|_| "bad part-size")?,
        Some(toml::Value::String(s)) => s
            .trim()
            .parse::<bytesize::ByteSize>()
            .map_err(|e| format!("part-size {s:?}: {e}"))?
            .as_u64(),
        Some(other) => return Err(format!("bad part-size {other}")),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("url {url} has no scheme"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_matches('/').to_string();
    let store: Arc<dyn ObjectStore> = match scheme {
        "s3" => {
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_virtual_hosted_style_request(!flag("path-style").unwrap_or(true));
            if let Some(v) = text("endpoint") {
                b = b.with_endpoint(v);
            }
            if let Some(v) = text("region") {
                b = b.with_region(v);
            }
            if let (Some(k), Some(s)) = (text("access-key-id"), text("secret-access-key")) {
                b = b.with_access_key_id(k).with_secret_access_key(s);
            }
            if let Some(v) = text("session-token") {
                b = b.with_token(v);
            }
            if let Some(v) = flag("allow-http") {
                b = b.with_allow_http(v);
            }
            Arc::new(b.build().map_err(|e| e.to_string())?)
        }
        "gs" => Arc::new(
            GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| e.to_string())?,
        ),
        "az" | "azure" => Arc::new(
            MicrosoftAzureBuilder::from_env()
                .with_container_name(bucket)
                .build()
                .map_err(|e| e.to_string())?,
        ),
        // file:///dir: the "bucket" is empty and the prefix is the path.
        "file" => {
            let path = format!("{bucket}/{prefix}");
            return Ok((
                Arc::new(LocalFileSystem::new()),
                path.trim_matches('/').to_string(),
                part_size,
            ));
        }
        "memory" => {
            let path = format!("{bucket}/{prefix}");
            return Ok((
                Arc::new(InMemory::new()),
                path.trim_matches('/').to_string(),
                part_size,
            ));
        }
        other => return Err(format!("url scheme {other}:// is not supported")),
    };
    Ok((store, prefix, part_size))
}
