//! The object-store plugin's baseline: the `object_store` crate used directly, on the same
//! store and the same bytes, with the plugin's upload strategy (see
//! [`cairn_conformance::bench::DirectRequest`]).
//!
//! The client is built by the plugin's own code (`cairn_storage_object::client`, the same
//! option parsing, builders, retries and timeouts), so both sides talk to the same server with
//! identically configured clients, and "plugin ÷ direct" measures only what the plugin adds.
//! The `cairn` binary never links `object_store`; this companion does, as a baseline library.

use std::time::Instant;

use bytes::Bytes;
use cairn_conformance::bench::{self, DirectOutput, DirectRequest, Sample};
use cairn_storage_object::MAX_PARTS_IN_FLIGHT as PARTS_IN_FLIGHT;
use futures::StreamExt;
use object_store::{path::Path as KeyPath, PutMode, PutOptions, PutPayload, WriteMultipart};

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
        let (store, base, part_size) = cairn_storage_object::client(&request.options)
            .map_err(|e| format!("building the plugin's client: {e}"))?;
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
