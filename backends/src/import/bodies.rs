//! File bodies from the reference's storage tree (`<data_dir>/data/files/<z32><path>`) into the blob
//! store, each checked against the length and BLAKE3 hash its entry records before it can be referenced:
//! a small body is read whole (at most [`WHOLE_BYTES`]) and written only when it matches; a larger one
//! streams into a multipart upload that is aborted when the hash turns out wrong. With hard links on,
//! a filesystem blob store on the same filesystem links the checked file instead of copying it.

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use object_store::path::Path as BlobPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;

use super::ImportError;

/// Bodies up to this size are read whole and written with one put.
const WHOLE_BYTES: u64 = 8 << 20;
/// Read size and multipart part size of larger bodies.
const CHUNK_BYTES: usize = 1 << 20;
const PART_BYTES: usize = 8 << 20;
/// Parts in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// How bringing one body over ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Brought {
    /// Copied into the blob store.
    Copied,
    /// Hard-linked into the filesystem blob store.
    Linked,
    /// Not imported: the file is missing or differs from its entry (the reason says how).
    Mismatch(String),
}

/// Where bodies come from and go to.
#[derive(Debug, Clone)]
pub struct Bodies {
    files_root: PathBuf,
    blobs: Arc<dyn ObjectStore>,
    /// The directory of a filesystem blob store, when hard links are wanted.
    link_root: Option<PathBuf>,
}

impl Bodies {
    /// Bodies from `files_root` (the reference's `data/files`) into `blobs`; with `link_root` (the
    /// directory of a filesystem blob store), hard-linked where the filesystem allows.
    pub fn new(
        files_root: PathBuf,
        blobs: Arc<dyn ObjectStore>,
        link_root: Option<PathBuf>,
    ) -> Self {
        Self {
            files_root,
            blobs,
            link_root,
        }
    }

    /// The reference's file of a user's path, or None when the key is not a public key or the path
    /// could leave the user's directory.
    fn source(&self, public_key: &str, path: &str) -> Option<PathBuf> {
        let relative = Path::new(path.trim_start_matches('/'));
        let plain = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        (plain && super::is_public_key(public_key))
            .then(|| self.files_root.join(public_key).join(relative))
    }

    /// Brings one body to the blob `key` if it matches `length` and `hash`.
    pub async fn bring(
        &self,
        public_key: &str,
        path: &str,
        length: i64,
        hash: &[u8],
        key: &str,
    ) -> Result<Brought, ImportError> {
        let Some(source) = self.source(public_key, path) else {
            return Ok(Brought::Mismatch(
                "the key is not a public key, or the path leaves the user's directory".into(),
            ));
        };
        let on_disk = match tokio::fs::metadata(&source).await {
            Ok(meta) if meta.is_file() => meta.len(),
            Ok(_) => {
                return Ok(Brought::Mismatch(format!(
                    "{} is not a file",
                    source.display()
                )));
            }
            Err(err) if err.kind() == ErrorKind::NotFound => {
                return Ok(Brought::Mismatch(format!(
                    "{} is missing",
                    source.display()
                )));
            }
            Err(err) => return Err(ImportError::io(&source, err)),
        };
        if i64::try_from(on_disk) != Ok(length) {
            return Ok(Brought::Mismatch(format!(
                "{} has {on_disk} bytes, its entry says {length}",
                source.display()
            )));
        }
        if let Some(root) = &self.link_root
            && let Some(outcome) = self.link(&source, root, key, hash).await?
        {
            return Ok(outcome);
        }
        if on_disk <= WHOLE_BYTES {
            self.copy_whole(&source, hash, key).await
        } else {
            self.copy_streaming(&source, hash, key).await
        }
    }

    async fn copy_whole(
        &self,
        source: &Path,
        hash: &[u8],
        key: &str,
    ) -> Result<Brought, ImportError> {
        let body = tokio::fs::read(source)
            .await
            .map_err(|err| ImportError::io(source, err))?;
        if blake3::hash(&body).as_bytes() != hash {
            return Ok(mismatch(source));
        }
        self.blobs
            .put(&BlobPath::from(key), PutPayload::from(body))
            .await
            .map_err(|err| ImportError::blob(key, err))?;
        Ok(Brought::Copied)
    }

    async fn copy_streaming(
        &self,
        source: &Path,
        hash: &[u8],
        key: &str,
    ) -> Result<Brought, ImportError> {
        let mut file = tokio::fs::File::open(source)
            .await
            .map_err(|err| ImportError::io(source, err))?;
        let upload = self
            .blobs
            .put_multipart(&BlobPath::from(key))
            .await
            .map_err(|err| ImportError::blob(key, err))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut hasher = blake3::Hasher::new();
        let mut buffer = vec![0u8; CHUNK_BYTES];
        loop {
            let read = match file.read(&mut buffer).await {
                Ok(read) => read,
                Err(err) => {
                    let _ = writer.abort().await;
                    return Err(ImportError::io(source, err));
                }
            };
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
            if let Err(err) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(ImportError::blob(key, err));
            }
            writer.write(&buffer[..read]);
        }
        if hasher.finalize().as_bytes() != hash {
            let _ = writer.abort().await;
            return Ok(mismatch(source));
        }
        writer
            .finish()
            .await
            .map_err(|err| ImportError::blob(key, err))?;
        Ok(Brought::Copied)
    }

    /// Checks the file, then hard-links it as the blob; None when linking is not possible here (another
    /// filesystem), so the caller copies instead.
    async fn link(
        &self,
        source: &Path,
        root: &Path,
        key: &str,
        hash: &[u8],
    ) -> Result<Option<Brought>, ImportError> {
        if hash_file(source).await? != hash {
            return Ok(Some(mismatch(source)));
        }
        let target = root.join(key);
        let (source, linked) = (source.to_path_buf(), target.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            if let Some(dir) = linked.parent() {
                std::fs::create_dir_all(dir)?;
            }
            match std::fs::remove_file(&linked) {
                Ok(()) => {}
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
            std::fs::hard_link(&source, &linked)
        })
        .await
        .map_err(|err| ImportError::io(&target, std::io::Error::other(err)))?;
        match outcome {
            Ok(()) => Ok(Some(Brought::Linked)),
            Err(err) if err.kind() == ErrorKind::CrossesDevices => Ok(None),
            Err(err) => Err(ImportError::io(&target, err)),
        }
    }
}

impl Bodies {
    /// Deletes a blob an earlier run wrote for a body the reference has replaced since; a failure is
    /// left to the server's sweeper.
    pub async fn forget(&self, key: &str) -> Result<(), ImportError> {
        match self.blobs.delete(&BlobPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(ImportError::blob(key, err)),
        }
    }
}

fn mismatch(source: &Path) -> Brought {
    Brought::Mismatch(format!(
        "{} does not match the hash its entry records",
        source.display()
    ))
}

async fn hash_file(path: &Path) -> Result<[u8; 32], ImportError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|err| ImportError::io(path, err))?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; CHUNK_BYTES];
    loop {
        let read = file
            .read(&mut buffer)
            .await
            .map_err(|err| ImportError::io(path, err))?;
        if read == 0 {
            return Ok(*hasher.finalize().as_bytes());
        }
        hasher.update(&buffer[..read]);
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use object_store::local::LocalFileSystem;

    use super::*;

    const USER: &str = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo";

    async fn setup(body: &[u8]) -> (tempfile::TempDir, Bodies, Arc<dyn ObjectStore>) {
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("files");
        std::fs::create_dir_all(files.join(USER).join("pub/a")).unwrap();
        std::fs::write(files.join(USER).join("pub/a/file.txt"), body).unwrap();
        std::fs::create_dir_all(dir.path().join("blobs")).unwrap();
        let blobs: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path().join("blobs")).unwrap());
        let bodies = Bodies::new(files, blobs.clone(), None);
        (dir, bodies, blobs)
    }

    #[tokio::test]
    async fn matching_bodies_are_copied_small_and_large() {
        for length in [5usize, WHOLE_BYTES as usize + 3] {
            let body: Vec<u8> = (0..length).map(|i| (i % 251) as u8).collect();
            let (_dir, bodies, blobs) = setup(&body).await;
            let hash = blake3::hash(&body);
            let brought = bodies
                .bring(
                    USER,
                    "/pub/a/file.txt",
                    length as i64,
                    hash.as_bytes(),
                    "user/k",
                )
                .await
                .unwrap();
            assert_eq!(brought, Brought::Copied);
            let read = blobs.get(&BlobPath::from("user/k")).await.unwrap();
            assert_eq!(read.bytes().await.unwrap(), body);
        }
    }

    #[tokio::test]
    async fn a_tampered_missing_or_escaping_body_is_a_mismatch_and_writes_nothing() {
        for length in [5usize, WHOLE_BYTES as usize + 3] {
            let body = vec![7u8; length];
            let (_dir, bodies, blobs) = setup(&body).await;
            let wrong = blake3::hash(b"something else");
            let brought = bodies
                .bring(
                    USER,
                    "/pub/a/file.txt",
                    length as i64,
                    wrong.as_bytes(),
                    "user/k",
                )
                .await
                .unwrap();
            assert!(
                matches!(brought, Brought::Mismatch(ref why) if why.contains("hash")),
                "{brought:?}"
            );
            assert!(blobs.get(&BlobPath::from("user/k")).await.is_err());
        }
        let (_dir, bodies, _) = setup(b"abc").await;
        let hash = blake3::hash(b"abc");
        for (path, length, why) in [
            ("/pub/a/other.txt", 3, "missing"),
            ("/pub/a/file.txt", 4, "has 3 bytes"),
            ("/pub/../../etc/passwd", 3, "leaves"),
        ] {
            let brought = bodies
                .bring(USER, path, length, hash.as_bytes(), "user/k")
                .await
                .unwrap();
            assert!(
                matches!(brought, Brought::Mismatch(ref r) if r.contains(why)),
                "{brought:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_key_that_is_not_a_public_key_reads_and_links_nothing() {
        let (dir, bodies, blobs) = setup(b"abc").await;
        // A file beside the files root, as `..` would reach it.
        std::fs::write(dir.path().join("secret"), b"abc").unwrap();
        let root = dir.path().join("blobs");
        let bodies = Bodies {
            link_root: Some(root.clone()),
            ..bodies
        };
        let hash = blake3::hash(b"abc");
        for key in ["..", "", "a/b", &USER[..51]] {
            let brought = bodies
                .bring(key, "/secret", 3, hash.as_bytes(), "../outside")
                .await
                .unwrap();
            assert!(
                matches!(brought, Brought::Mismatch(ref r) if r.contains("not a public key")),
                "{key:?}: {brought:?}"
            );
        }
        assert!(!dir.path().join("outside").exists());
        assert!(
            blobs.list(None).next().await.is_none(),
            "nothing was written"
        );
    }

    #[tokio::test]
    async fn a_linked_body_shares_the_reference_file() {
        let dir = tempfile::tempdir().unwrap();
        let (_keep, bodies, _) = setup(b"linked").await;
        let root = dir.path().join("blobs");
        let bodies = Bodies {
            link_root: Some(root.clone()),
            files_root: bodies.files_root.clone(),
            ..bodies
        };
        let hash = blake3::hash(b"linked");
        let brought = bodies
            .bring(USER, "/pub/a/file.txt", 6, hash.as_bytes(), "user/k")
            .await
            .unwrap();
        assert_eq!(brought, Brought::Linked);
        assert_eq!(std::fs::read(root.join("user/k")).unwrap(), b"linked");
        // Again: the link is replaced, not refused.
        let again = bodies
            .bring(USER, "/pub/a/file.txt", 6, hash.as_bytes(), "user/k")
            .await
            .unwrap();
        assert_eq!(again, Brought::Linked);
    }
}
