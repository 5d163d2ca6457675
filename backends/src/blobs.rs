//! The blob store that keeps file contents: a directory, process memory, or an S3-compatible bucket.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use homestead_config::{Storage, StorageType};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as BlobPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

/// Name prefix of the start-up probe objects (never user data: user blobs start with a z32 key).
pub const PROBE_PREFIX: &str = "homestead-probe-";

/// Why the blob store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BlobsError {
    /// The store could not be built from the configuration.
    #[error("cannot open the {what} blob store: {source}")]
    Open {
        /// Which store.
        what: String,
        /// The cause.
        source: Box<object_store::Error>,
    },
    /// The store was built but a test write, read or delete failed.
    #[error("the {what} blob store is not usable: {step} of {path} failed: {source}")]
    Probe {
        /// Which store.
        what: String,
        /// `write`, `read` or `delete`.
        step: &'static str,
        /// The probe object.
        path: String,
        /// The cause.
        source: Box<object_store::Error>,
    },
}

/// A blob store and a description of it for logs.
#[derive(Debug, Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    what: String,
    /// The directory of a filesystem store.
    fs_root: Option<PathBuf>,
}

impl BlobStore {
    /// Builds the store `[storage]` names; filesystem blobs live under `blobs_dir` (created if missing).
    pub fn open(storage: &Storage, blobs_dir: &Path) -> Result<Self, BlobsError> {
        let (what, built) = match storage.kind {
            StorageType::FileSystem => (
                format!("filesystem ({})", blobs_dir.display()),
                std::fs::create_dir_all(blobs_dir)
                    .map_err(|source| object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: Box::new(source),
                    })
                    .and_then(|()| LocalFileSystem::new_with_prefix(blobs_dir))
                    .map(|fs| Arc::new(fs) as Arc<dyn ObjectStore>),
            ),
            StorageType::InMemory => ("in-memory".to_string(), Ok(Arc::new(InMemory::new()) as _)),
            StorageType::S3 => {
                let bucket = storage.bucket_name.clone().unwrap_or_default();
                let what = match &storage.s3_endpoint {
                    Some(endpoint) => format!("S3 (bucket {bucket} at {endpoint})"),
                    None => format!("S3 (bucket {bucket})"),
                };
                (what, s3(storage).map(|s3| Arc::new(s3) as _))
            }
            StorageType::GoogleBucket => unreachable!("refused by the config crate"),
        };
        let store = built.map_err(|source| BlobsError::Open {
            what: what.clone(),
            source: Box::new(source),
        })?;
        let fs_root = (storage.kind == StorageType::FileSystem).then(|| blobs_dir.to_path_buf());
        Ok(Self {
            store,
            what,
            fs_root,
        })
    }

    /// Removes the staging files of filesystem uploads that a crash cut off, once older than `grace`.
    /// The filesystem store writes `<key>#<n>` and renames it into place; a crash in between leaves the
    /// staging file, which listings never show and the orphan sweep therefore never sees. Returns how many
    /// were removed (always 0 for other stores).
    pub fn sweep_staging(&self, grace: Duration) -> std::io::Result<usize> {
        fn walk(dir: &Path, grace: Duration, removed: &mut usize) -> std::io::Result<()> {
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    walk(&entry.path(), grace, removed)?;
                } else if kind.is_file() && entry.file_name().to_string_lossy().contains('#') {
                    let age = entry.metadata()?.modified()?.elapsed().unwrap_or_default();
                    if age >= grace {
                        std::fs::remove_file(entry.path())?;
                        *removed += 1;
                    }
                }
            }
            Ok(())
        }
        let mut removed = 0;
        if let Some(root) = &self.fs_root {
            walk(root, grace, &mut removed)?;
        }
        Ok(removed)
    }

    /// Makes a written blob of `length` bytes durable on a filesystem store: flushes the file and the
    /// directory entry its rename created, so that a file acknowledged with a 201 survives a power loss,
    /// not only a crash of the process. Other stores are durable once their write returns.
    ///
    /// Once durable, a blob of [`UNCACHED_BLOB_BYTES`] or more leaves the page cache (Linux): an upload
    /// is seldom read back at once, and keeping every upload cached grows the cache into memory the
    /// kernel must first obtain (on VMs whose idle memory goes back to the host, that costs more than
    /// the write) while evicting what is read often. Reads cache it again as usual.
    pub async fn flush(&self, key: &BlobPath, length: u64) -> std::io::Result<()> {
        let Some(root) = &self.fs_root else {
            return Ok(());
        };
        let file = root.join(key.as_ref());
        tokio::task::spawn_blocking(move || {
            let written = std::fs::File::open(&file)?;
            written.sync_all()?;
            if length >= UNCACHED_BLOB_BYTES {
                forget_cached_pages(&written);
            }
            match file.parent() {
                Some(dir) => std::fs::File::open(dir)?.sync_all(),
                None => Ok(()),
            }
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Writes, reads back and deletes a small object, so that a wrong bucket, missing credentials or a
    /// read-only directory stop the start instead of the first upload.
    pub async fn probe(&self) -> Result<(), BlobsError> {
        let path = BlobPath::from(format!("{PROBE_PREFIX}{:032x}", rand::random::<u128>()));
        let fail = |step, source| BlobsError::Probe {
            what: self.what.clone(),
            step,
            path: path.to_string(),
            source: Box::new(source),
        };
        let body = PutPayload::from_static(b"homestead probe");
        self.store
            .put(&path, body)
            .await
            .map_err(|e| fail("write", e))?;
        let read = self.store.get(&path).await.map_err(|e| fail("read", e))?;
        read.bytes().await.map_err(|e| fail("read", e))?;
        self.store
            .delete(&path)
            .await
            .map_err(|e| fail("delete", e))
    }

    /// The underlying object store.
    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// What this store is, for logs.
    pub fn describe(&self) -> &str {
        &self.what
    }
}

/// Blobs at least this large leave the page cache once durable (see [`BlobStore::flush`]).
pub const UNCACHED_BLOB_BYTES: u64 = 256 * 1024;

/// Drops a flushed file's clean pages from the page cache.
#[cfg(target_os = "linux")]
fn forget_cached_pages(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor stays open for the call, which only advises the kernel about the file's
    // cached pages and touches no memory of this process.
    let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// Elsewhere the page cache is left to the kernel.
#[cfg(not(target_os = "linux"))]
fn forget_cached_pages(_file: &std::fs::File) {}

fn s3(storage: &Storage) -> object_store::Result<object_store::aws::AmazonS3> {
    // Credentials and region from AWS_* variables unless the config names them.
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(storage.bucket_name.clone().unwrap_or_default())
        .with_region(&storage.s3_region)
        .with_virtual_hosted_style_request(!storage.s3_path_style)
        .with_client_options(ClientOptions::new().with_connect_timeout(Duration::from_secs(5)))
        // A few quick retries: an S3 outage should surface as an error within seconds, not minutes.
        .with_retry(RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(10),
            ..RetryConfig::default()
        });
    if let Some(endpoint) = &storage.s3_endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    if let Some(key) = &storage.s3_access_key_id {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &storage.s3_secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn filesystem_store_is_created_and_probed() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs");
        let store = BlobStore::open(&Storage::default(), &blobs).unwrap();
        store.probe().await.unwrap();
        assert!(blobs.is_dir());
        assert!(store.describe().starts_with("filesystem"));
    }

    #[tokio::test]
    async fn flushing_needs_the_written_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&Storage::default(), &dir.path().join("blobs")).unwrap();
        let key = BlobPath::from("user/blob");
        assert!(store.flush(&key, 4).await.is_err(), "nothing written yet");
        store
            .objects()
            .put(&key, PutPayload::from_static(b"data"))
            .await
            .unwrap();
        store.flush(&key, 4).await.unwrap();
    }

    #[tokio::test]
    async fn unreachable_s3_fails_the_probe_with_the_bucket_named() {
        let storage = Storage {
            kind: StorageType::S3,
            bucket_name: Some("missing-bucket".into()),
            // Nothing listens on port 1 of loopback: the connection is refused at once.
            s3_endpoint: Some("http://127.0.0.1:1".into()),
            s3_path_style: true,
            s3_access_key_id: Some("test".into()),
            s3_secret_access_key: Some("test".into()),
            ..Storage::default()
        };
        let store = BlobStore::open(&storage, Path::new("/nonexistent")).unwrap();
        let err = store.probe().await.unwrap_err().to_string();
        assert!(err.contains("bucket missing-bucket"), "{err}");
        assert!(err.contains("write of homestead-probe-"), "{err}");
    }
}
