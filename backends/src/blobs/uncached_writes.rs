//! [`UncachedWrites`]: a written local blob of [`UNCACHED_BLOB_BYTES`] or more leaves the page cache
//! (Linux). An upload is seldom read back at once, and keeping every upload cached grows the cache into
//! memory the kernel must first obtain (on VMs whose idle memory goes back to the host, that costs more
//! than the write) while evicting what is read often. Reads cache it again as usual. The wrapped store
//! must have made the file durable before its write returns (`LocalFileSystem::with_fsync`): only clean
//! pages can be dropped.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    MultipartUpload, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
    UploadPart,
};

/// Blobs at least this large leave the page cache once written.
pub const UNCACHED_BLOB_BYTES: u64 = 256 * 1024;

/// A local filesystem store whose large writes leave the page cache.
#[derive(Debug)]
pub struct UncachedWrites {
    inner: Arc<LocalFileSystem>,
}

impl UncachedWrites {
    /// Wraps `inner`.
    pub fn new(inner: LocalFileSystem) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }
}

impl fmt::Display for UncachedWrites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UncachedWrites({})", self.inner)
    }
}

/// Advises the kernel to drop the cached pages of the blob at `location` (failures only cost memory).
async fn forget_cached_pages(store: &LocalFileSystem, location: &Path) {
    let Ok(file) = store.path_to_filesystem(location) else {
        return;
    };
    let _ = tokio::task::spawn_blocking(move || {
        if let Ok(written) = std::fs::File::open(file) {
            drop_clean_pages(&written);
        }
    })
    .await;
}

/// Drops a file's clean pages from the page cache.
#[cfg(target_os = "linux")]
fn drop_clean_pages(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor stays open for the call, which only advises the kernel about the file's
    // cached pages and touches no memory of this process.
    let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// Elsewhere the page cache is left to the kernel.
#[cfg(not(target_os = "linux"))]
fn drop_clean_pages(_file: &std::fs::File) {}

#[async_trait]
impl ObjectStore for UncachedWrites {
    crate::blobs::forward_to_inner!(
        get_opts,
        delete_stream,
        list,
        list_with_delimiter,
        copy_opts,
        rename_opts
    );
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let length = payload.content_length() as u64;
        let written = self.inner.put_opts(location, payload, opts).await?;
        if length >= UNCACHED_BLOB_BYTES {
            forget_cached_pages(&self.inner, location).await;
        }
        Ok(written)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(UncachedUpload {
            store: self.inner.clone(),
            location: location.clone(),
            length: 0,
            upload,
        }))
    }
}

/// A multipart upload whose blob leaves the page cache once complete, if large enough.
#[derive(Debug)]
struct UncachedUpload {
    store: Arc<LocalFileSystem>,
    location: Path,
    length: u64,
    upload: Box<dyn MultipartUpload>,
}

#[async_trait]
impl MultipartUpload for UncachedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.length += data.content_length() as u64;
        self.upload.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let written = self.upload.complete().await?;
        if self.length >= UNCACHED_BLOB_BYTES {
            forget_cached_pages(&self.store, &self.location).await;
        }
        Ok(written)
    }

    async fn abort(&mut self) -> Result<()> {
        self.upload.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::{ObjectStoreExt, WriteMultipart};

    #[tokio::test]
    async fn large_writes_stay_readable() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalFileSystem::new_with_prefix(dir.path())
            .unwrap()
            .with_fsync(true);
        let store = UncachedWrites::new(local);
        let big = vec![7u8; UNCACHED_BLOB_BYTES as usize];
        let key = Path::from("user/one");
        store.put(&key, big.clone().into()).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap().bytes().await.unwrap(), big);
        let key = Path::from("user/parts");
        let mut writer = WriteMultipart::new_with_chunk_size(
            store.put_multipart(&key).await.unwrap(),
            UNCACHED_BLOB_BYTES as usize,
        );
        writer.put(big.clone().into());
        writer.put(big.clone().into());
        writer.finish().await.unwrap();
        let read = store.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(read.len(), 2 * big.len());
    }
}
