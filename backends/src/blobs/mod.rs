//! The blob store that keeps file contents: a directory, process memory, or an S3-compatible bucket,
//! seen by the Store as one `ObjectStore` built of wrappers, one per behaviour:
//!
//! - filesystem: [`SmallBlobCache`] over [`ChunkedReads`] over [`UncachedWrites`] over a
//!   `LocalFileSystem` that fsyncs every write (file and directory entry) before it returns, so that a
//!   blob is durable before its metadata commits, and a crash never leaves a torn file in place;
//! - memory and S3: [`SmallBlobCache`] over the store.

mod chunked_reads;
mod staging;
mod uncached_writes;
mod volume;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use homestead_config::{Storage, StorageType};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as BlobPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

pub use chunked_reads::{ChunkedReads, FILE_CHUNK};
pub use uncached_writes::{UNCACHED_BLOB_BYTES, UncachedWrites};
pub use volume::VolumeSpace;

use crate::small_blobs::SmallBlobCache;

/// Pass-through methods of an `ObjectStore` wrapper whose wrapped store is its field `inner`: each
/// method named hands its call on unchanged and returns the inner store's own future or stream.
macro_rules! forward_to_inner {
    ($($method:ident),+ $(,)?) => {
        $($crate::blobs::forward_to_inner!(@ $method);)+
    };
    (@ put_opts) => {
        $crate::blobs::forward_to_inner!(@future put_opts<'life1>(
            location: &'life1 object_store::path::Path,
            payload: object_store::PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::PutResult);
    };
    (@ put_multipart_opts) => {
        $crate::blobs::forward_to_inner!(@future put_multipart_opts<'life1>(
            location: &'life1 object_store::path::Path,
            opts: object_store::PutMultipartOptions,
        ) -> Box<dyn object_store::MultipartUpload>);
    };
    (@ get_opts) => {
        $crate::blobs::forward_to_inner!(@future get_opts<'life1>(
            location: &'life1 object_store::path::Path,
            options: object_store::GetOptions,
        ) -> object_store::GetResult);
    };
    (@ list_with_delimiter) => {
        $crate::blobs::forward_to_inner!(@future list_with_delimiter<'life1>(
            prefix: Option<&'life1 object_store::path::Path>,
        ) -> object_store::ListResult);
    };
    (@ copy_opts) => {
        $crate::blobs::forward_to_inner!(@future copy_opts<'life1, 'life2>(
            from: &'life1 object_store::path::Path,
            to: &'life2 object_store::path::Path,
            options: object_store::CopyOptions,
        ) -> ());
    };
    (@ rename_opts) => {
        $crate::blobs::forward_to_inner!(@future rename_opts<'life1, 'life2>(
            from: &'life1 object_store::path::Path,
            to: &'life2 object_store::path::Path,
            options: object_store::RenameOptions,
        ) -> ());
    };
    (@ delete_stream) => {
        fn delete_stream(
            &self,
            locations: futures_util::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>,
        ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
            self.inner.delete_stream(locations)
        }
    };
    (@ list) => {
        fn list(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
            self.inner.list(prefix)
        }
    };
    // An `async_trait` method, spelled out: its future is the inner store's.
    (@future $name:ident<$($lifetime:lifetime),+>($($arg:ident: $type:ty),+ $(,)?) -> $output:ty) => {
        fn $name<'life0, $($lifetime,)+ 'async_trait>(
            &'life0 self,
            $($arg: $type),+
        ) -> futures_util::future::BoxFuture<'async_trait, object_store::Result<$output>>
        where
            'life0: 'async_trait,
            $($lifetime: 'async_trait,)+
            Self: 'async_trait,
        {
            self.inner.$name($($arg),+)
        }
    };
}
pub(crate) use forward_to_inner;

/// Name prefix of the start-up probe objects (never user data: user blobs start with a z32 key).
pub const PROBE_PREFIX: &str = "homestead-probe-";

/// Why the blob store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BlobsError {
    /// The configuration names a store Homestead does not support.
    #[error(
        "\"google_bucket\" is a reference setting Homestead does not support; allowed: \"file_system\", \"in_memory\", \"s3\""
    )]
    GoogleBucket,
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
    /// The directory of a filesystem store, where crashed uploads may leave staging files.
    fs_root: Option<PathBuf>,
}

impl BlobStore {
    /// Builds the store `[storage]` names; filesystem blobs live under `blobs_dir` (created if missing).
    pub fn open(storage: &Storage, blobs_dir: &Path) -> Result<Self, BlobsError> {
        let (what, built) = match storage.kind {
            StorageType::FileSystem => (
                format!("filesystem ({})", blobs_dir.display()),
                local(blobs_dir),
            ),
            StorageType::InMemory => (
                "in-memory".to_string(),
                Ok(Arc::new(SmallBlobCache::new(InMemory::new())) as _),
            ),
            StorageType::S3 => {
                let bucket = storage.bucket_name.clone().unwrap_or_default();
                let what = match &storage.s3_endpoint {
                    Some(endpoint) => format!("S3 (bucket {bucket} at {endpoint})"),
                    None => format!("S3 (bucket {bucket})"),
                };
                (
                    what,
                    s3(storage).map(|s3| Arc::new(SmallBlobCache::new(s3)) as _),
                )
            }
            StorageType::GoogleBucket => return Err(BlobsError::GoogleBucket),
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

    /// Removes the staging files of filesystem uploads that a crash cut off, once older than `grace`
    /// (see [`staging`]). Returns how many were removed (always 0 for other stores).
    pub async fn sweep_staging(&self, grace: Duration) -> std::io::Result<usize> {
        let Some(root) = self.fs_root.clone() else {
            return Ok(0);
        };
        tokio::task::spawn_blocking(move || staging::sweep(&root, grace))
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

    /// The object store, with its wrappers.
    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// What this store is, for logs.
    pub fn describe(&self) -> &str {
        &self.what
    }

    /// The size and free space of the volume holding a filesystem store's directory; `None` for
    /// memory and S3, which have no fixed total. Blocks for one `statvfs` call.
    pub fn volume_space(&self) -> Option<std::io::Result<VolumeSpace>> {
        self.fs_root.as_deref().map(volume::of)
    }
}

/// The filesystem store under `dir` (created if missing), durable and wrapped.
fn local(dir: &Path) -> object_store::Result<Arc<dyn ObjectStore>> {
    std::fs::create_dir_all(dir).map_err(|source| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(source),
    })?;
    let durable = LocalFileSystem::new_with_prefix(dir)?.with_fsync(true);
    Ok(Arc::new(SmallBlobCache::new(ChunkedReads::new(
        UncachedWrites::new(durable),
    ))))
}

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
    async fn filesystem_writes_are_read_back_through_every_wrapper() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&Storage::default(), &dir.path().join("blobs")).unwrap();
        let key = BlobPath::from("user/blob");
        for length in [4, UNCACHED_BLOB_BYTES as usize + 1] {
            let data = vec![9u8; length];
            store
                .objects()
                .put(&key, data.clone().into())
                .await
                .unwrap();
            let read = store.objects().get(&key).await.unwrap();
            assert_eq!(read.bytes().await.unwrap(), data);
            assert!(dir.path().join("blobs/user/blob").is_file());
            store.objects().delete(&key).await.unwrap();
        }
    }

    #[tokio::test]
    async fn staging_files_of_a_filesystem_store_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&Storage::default(), &dir.path().join("blobs")).unwrap();
        std::fs::create_dir(dir.path().join("blobs/user")).unwrap();
        std::fs::write(dir.path().join("blobs/user/blob#1"), b"torn").unwrap();
        assert_eq!(store.sweep_staging(Duration::ZERO).await.unwrap(), 1);
        let memory = Storage {
            kind: StorageType::InMemory,
            ..Storage::default()
        };
        let store = BlobStore::open(&memory, dir.path()).unwrap();
        assert_eq!(store.sweep_staging(Duration::ZERO).await.unwrap(), 0);
    }

    #[test]
    fn only_a_filesystem_store_has_a_volume_with_a_total() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&Storage::default(), &dir.path().join("blobs")).unwrap();
        let space = store.volume_space().unwrap().unwrap();
        assert!(space.total_bytes > 0, "{space:?}");
        assert!(space.free_bytes <= space.total_bytes, "{space:?}");
        let memory = Storage {
            kind: StorageType::InMemory,
            ..Storage::default()
        };
        let store = BlobStore::open(&memory, dir.path()).unwrap();
        assert!(store.volume_space().is_none());
        // A directory that went away is an error, not a made-up size.
        let gone = BlobStore::open(&Storage::default(), &dir.path().join("gone")).unwrap();
        std::fs::remove_dir(dir.path().join("gone")).unwrap();
        assert!(gone.volume_space().unwrap().is_err());
    }

    #[test]
    fn a_google_bucket_is_refused_by_type() {
        let storage = Storage {
            kind: StorageType::GoogleBucket,
            ..Storage::default()
        };
        let err = BlobStore::open(&storage, Path::new("/nonexistent")).unwrap_err();
        assert!(matches!(err, BlobsError::GoogleBucket));
        assert!(err.to_string().contains("does not support"), "{err}");
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
