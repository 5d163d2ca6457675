//! Blob bodies in and out of the blob store for the operator commands (backup, restore, user export
//! and import): streamed in bounded pieces, hashed with BLAKE3 on the way, never whole in memory.

use std::sync::Arc;

use bytes::BytesMut;
use futures_util::StreamExt;
use object_store::path::Path as BlobPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bodies up to this size go up in one request; larger ones as multipart uploads in parts of this size.
const PART_BYTES: usize = 5 * 1024 * 1024;
/// Parts uploaded at once.
const PARTS_IN_FLIGHT: usize = 2;
/// Bytes read from the source per step.
const READ_BYTES: usize = 256 * 1024;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The blob store failed (a missing blob included). The cause is part of the message, not a
    /// `source`: object_store's errors already spell out their own causes, which a chain would repeat.
    #[error("blob {key}: {cause}")]
    Blob {
        /// The blob.
        key: String,
        /// The cause.
        cause: Box<object_store::Error>,
    },
    /// Reading the source or writing the destination failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The source ended before the promised length.
    #[error("ended after {read} of {expected} bytes")]
    Truncated {
        /// Bytes read.
        read: u64,
        /// Bytes promised.
        expected: u64,
    },
}

/// What went through: its length and BLAKE3 hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transferred {
    /// Bytes.
    pub length: u64,
    /// BLAKE3 of the bytes.
    pub hash: [u8; 32],
}

/// Streams the blob `key` into `out`, calling `progress` with each piece's length.
pub async fn download<W: AsyncWrite + Unpin>(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    out: &mut W,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Transferred, TransferError> {
    let blob_error = |cause| TransferError::Blob {
        key: key.to_string(),
        cause: Box::new(cause),
    };
    let path = BlobPath::from(key);
    let mut body = store.get(&path).await.map_err(blob_error)?.into_stream();
    let mut hasher = blake3::Hasher::new();
    let mut length = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(blob_error)?;
        hasher.update(&chunk);
        out.write_all(&chunk).await?;
        length += chunk.len() as u64;
        progress(chunk.len() as u64);
    }
    Ok(Transferred {
        length,
        hash: *hasher.finalize().as_bytes(),
    })
}

/// Streams exactly `length` bytes of `source` into a new blob `key` (one request up to 5 MiB, a
/// multipart upload beyond), calling `progress` with each piece's length. On failure nothing is left
/// under `key`.
pub async fn upload<R: AsyncRead + Unpin>(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    source: &mut R,
    length: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Transferred, TransferError> {
    let blob_error = |cause| TransferError::Blob {
        key: key.to_string(),
        cause: Box::new(cause),
    };
    let path = BlobPath::from(key);
    let mut hasher = blake3::Hasher::new();
    let mut read = 0u64;
    let mut next_piece = async |hasher: &mut blake3::Hasher, read: &mut u64| {
        let want = (length - *read).min(READ_BYTES as u64) as usize;
        let mut piece = BytesMut::zeroed(want);
        let mut filled = 0;
        while filled < want {
            let n = source.read(&mut piece[filled..]).await?;
            if n == 0 {
                return Err(TransferError::Truncated {
                    read: *read + filled as u64,
                    expected: length,
                });
            }
            filled += n;
        }
        hasher.update(&piece);
        *read += want as u64;
        progress(want as u64);
        Ok(piece.freeze())
    };
    if length <= PART_BYTES as u64 {
        let mut pieces = Vec::new();
        while read < length {
            pieces.push(next_piece(&mut hasher, &mut read).await?);
        }
        store
            .put(&path, PutPayload::from_iter(pieces))
            .await
            .map_err(blob_error)?;
    } else {
        let upload = store.put_multipart(&path).await.map_err(blob_error)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let streamed: Result<(), TransferError> = async {
            while read < length {
                let piece = next_piece(&mut hasher, &mut read).await?;
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(blob_error)?;
                writer.put(piece);
            }
            Ok(())
        }
        .await;
        if let Err(err) = streamed {
            let _ = writer.abort().await;
            return Err(err);
        }
        writer.finish().await.map_err(blob_error)?;
    }
    Ok(Transferred {
        length,
        hash: *hasher.finalize().as_bytes(),
    })
}

/// Deletes blobs, ignoring those already gone; the first other failure is returned after trying all.
pub async fn delete_all(
    store: &Arc<dyn ObjectStore>,
    keys: impl IntoIterator<Item = String>,
) -> Result<(), TransferError> {
    let mut first = None;
    for key in keys {
        match store.delete(&BlobPath::from(key.as_str())).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(source) => {
                first.get_or_insert(TransferError::Blob {
                    key,
                    cause: Box::new(source),
                });
            }
        }
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    #[tokio::test]
    async fn bodies_go_up_and_down_with_their_hash() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        for length in [0usize, 10, PART_BYTES + 3] {
            let body: Vec<u8> = (0..length).map(|i| (i % 251) as u8).collect();
            let up = upload(&store, "u/k", &mut body.as_slice(), length as u64, &|_| {})
                .await
                .unwrap();
            assert_eq!(up.hash, *blake3::hash(&body).as_bytes());
            let mut out = Vec::new();
            let down = download(&store, "u/k", &mut out, &|_| {}).await.unwrap();
            assert_eq!((down, out), (up, body));
        }
    }

    #[tokio::test]
    async fn a_short_source_leaves_no_blob() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        for length in [100u64, PART_BYTES as u64 + 100] {
            let body = vec![1u8; length as usize - 1];
            let err = upload(&store, "u/short", &mut body.as_slice(), length, &|_| {})
                .await
                .unwrap_err();
            assert!(matches!(err, TransferError::Truncated { .. }), "{err}");
            let gone = store.head(&BlobPath::from("u/short")).await.unwrap_err();
            assert!(matches!(gone, object_store::Error::NotFound { .. }));
        }
    }
}
