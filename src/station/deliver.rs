//! Delivery (SPEC §6): the outbox directory sink. Each shipment's result is
//! written atomically (temp file, fsync, rename, fsync of the directory); the
//! rename is the sink's acknowledgement, after which the store purges the
//! responses. Re-delivery after a crash rewrites the same file with the same
//! content, so a result is never delivered twice as two different files.

use crate::store::{Store, StoreError};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DeliveryError {
    #[error("outbox {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Http(#[from] super::http_sink::HttpSinkError),
}

/// Path of a shipment's result file (ids are validated to a safe alphabet).
pub fn result_path(outbox: &Path, shipment_id: &str) -> PathBuf {
    let safe: String = shipment_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    outbox.join(format!("{safe}.json"))
}

/// Writes `bytes` to `path` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), std::io::Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("result")
    ));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Delivers every pending result — to the HTTP sink when one is configured,
/// else to `outbox` — and purges each once acknowledged; returns how many.
pub fn deliver_pending(
    store: &Store,
    outbox: &Path,
    http: Option<&super::http_sink::HttpSink>,
) -> Result<usize, DeliveryError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DeliveryError::Io { path, source }
    };
    if http.is_none() {
        fs::create_dir_all(outbox).map_err(io(outbox))?;
    }
    let mut n = 0;
    for (id, json) in store.pending_deliveries()? {
        match http {
            Some(sink) => {
                sink.post(&id, &json)?;
                store.delivered(&id, sink.url())?;
            }
            None => {
                let path = result_path(outbox, &id);
                write_atomic(&path, json.as_bytes()).map_err(io(&path))?;
                store.delivered(&id, "outbox")?;
            }
        }
        n += 1;
    }
    Ok(n)
}
