//! [`ChunkedReads`]: reads of local files in large pieces. `LocalFileSystem` hands out an open file,
//! which object_store itself would stream in 8 KiB reads, one blocking call each; that makes large
//! downloads from the filesystem CPU-bound. This wrapper streams such files [`FILE_CHUNK`] bytes per
//! blocking call instead.

use std::fmt;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetResult, GetResultPayload, ObjectStore, Result};

/// Bytes read from a local file per blocking call.
pub const FILE_CHUNK: u64 = 256 * 1024;

/// An object store whose local-file reads come as a stream of [`FILE_CHUNK`] pieces.
#[derive(Debug)]
pub struct ChunkedReads<T: ObjectStore> {
    inner: T,
}

impl<T: ObjectStore> ChunkedReads<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        Self { inner }
    }
}

impl<T: ObjectStore> fmt::Display for ChunkedReads<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkedReads({})", self.inner)
    }
}

#[async_trait]
impl<T: ObjectStore> ObjectStore for ChunkedReads<T> {
    crate::blobs::forward_to_inner!(
        put_opts,
        put_multipart_opts,
        delete_stream,
        list,
        list_with_delimiter,
        copy_opts,
        rename_opts
    );
    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let result = self.inner.get_opts(location, options).await?;
        let payload = match result.payload {
            GetResultPayload::File(file, _) => {
                GetResultPayload::Stream(file_stream(file, result.range.clone()))
            }
            stream @ GetResultPayload::Stream(_) => stream,
        };
        Ok(GetResult { payload, ..result })
    }
}

/// Streams `range` of an open local file in [`FILE_CHUNK`] pieces.
fn file_stream(file: std::fs::File, range: Range<u64>) -> BoxStream<'static, Result<Bytes>> {
    use std::io::{Read, Seek, SeekFrom};
    let failed = |err: std::io::Error| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(err),
    };
    let state = (file, range.start, range.end);
    let start = range.start;
    futures_util::stream::try_unfold(state, move |(mut file, at, end)| async move {
        if at >= end {
            return Ok(None);
        }
        let (file, chunk) = tokio::task::spawn_blocking(move || {
            let mut chunk = vec![0; (end - at).min(FILE_CHUNK) as usize];
            if at == start {
                file.seek(SeekFrom::Start(at))?;
            }
            file.read_exact(&mut chunk)?;
            Ok::<_, std::io::Error>((file, chunk))
        })
        .await
        .map_err(|err| failed(std::io::Error::other(err)))?
        .map_err(failed)?;
        let next = at + chunk.len() as u64;
        Ok(Some((Bytes::from(chunk), (file, next, end))))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::local::LocalFileSystem;
    use object_store::{GetRange, ObjectStoreExt};

    #[tokio::test]
    async fn local_files_stream_in_large_chunks_and_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkedReads::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let key = Path::from("user/blob");
        let data: Vec<u8> = (0..FILE_CHUNK as usize * 2 + 10).map(|i| i as u8).collect();
        store.put(&key, data.clone().into()).await.unwrap();
        let whole = store.get(&key).await.unwrap();
        let GetResultPayload::Stream(stream) = whole.payload else {
            panic!("a file payload was left as it was");
        };
        let chunks: Vec<Bytes> = stream.map(|c| c.unwrap()).collect().await;
        let sizes: Vec<usize> = chunks.iter().map(Bytes::len).collect();
        assert_eq!(sizes, [FILE_CHUNK as usize, FILE_CHUNK as usize, 10]);
        assert_eq!(chunks.concat(), data);
        let options = GetOptions {
            range: Some(GetRange::Bounded(5..FILE_CHUNK + 7)),
            ..GetOptions::default()
        };
        let part = store.get_opts(&key, options).await.unwrap();
        assert_eq!(
            part.bytes().await.unwrap(),
            &data[5..FILE_CHUNK as usize + 7]
        );
    }
}
