//! Reading and writing the user archive format (see the module above): header, manifest lines and the
//! trailer, with a BLAKE3 of every byte that passes.

use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::{Context as _, bail};
use homestead_backends::EntryPath;
use homestead_backends::metadata::user_transfer::UserEntry;
use homestead_backends::snapshot::{decode_hex, encode_hex};
use serde::{Deserialize, Serialize};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
    ReadBuf,
};

/// The first line.
pub const MAGIC: &str = "homestead-user-archive 1";
/// The longest header or manifest line accepted.
const MAX_LINE: u64 = 64 * 1024;
/// The trailer's first word.
const TRAILER: &str = "end ";

/// The header line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The user's key (z32).
    pub user: String,
    /// Manifest lines.
    pub files: u64,
    /// Body bytes.
    pub bytes: u64,
    /// When the export began (µs since the epoch).
    pub exported_at: i64,
}

/// A manifest line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestLine {
    /// The file's path.
    pub path: String,
    /// BLAKE3 of the body, hex.
    pub hash: String,
    /// Body bytes.
    pub length: u64,
    /// The content type.
    pub content_type: String,
    /// First written (µs).
    pub created_at: i64,
    /// Last written (µs).
    pub modified_at: i64,
}

impl ManifestLine {
    /// The line of an entry.
    pub fn of(entry: &UserEntry) -> Self {
        Self {
            path: entry.path.clone(),
            hash: encode_hex(&entry.hash),
            length: entry.length,
            content_type: entry.content_type.clone(),
            created_at: entry.created_at,
            modified_at: entry.modified_at,
        }
    }

    /// Checks the line and makes it an entry (without a blob key yet).
    fn into_entry(self) -> anyhow::Result<UserEntry> {
        let path = EntryPath::parse(&self.path)
            .ok()
            .filter(|path| path.as_str() == self.path)
            .with_context(|| format!("{:?} is not a normalized file path", self.path))?;
        let mut hash = [0u8; 32];
        decode_hex(&self.hash, &mut hash)
            .with_context(|| format!("{}: hash {:?} is not 64 hex digits", self.path, self.hash))?;
        if self.content_type.is_empty()
            || self.content_type.len() > 255
            || self.content_type.chars().any(char::is_control)
        {
            bail!(
                "{}: content type {:?} is not valid",
                self.path,
                self.content_type
            );
        }
        if i64::try_from(self.length).is_err() {
            bail!("{}: length {} is too large", self.path, self.length);
        }
        Ok(UserEntry {
            path: path.as_str().to_string(),
            hash,
            length: self.length,
            content_type: self.content_type,
            created_at: self.created_at,
            modified_at: self.modified_at,
            blob_key: String::new(),
        })
    }
}

/// Writes an archive, hashing every byte.
pub struct ArchiveWriter<W> {
    out: W,
    hasher: blake3::Hasher,
}

impl<W: AsyncWrite + Unpin> ArchiveWriter<W> {
    /// Starts an archive.
    pub fn new(out: W) -> Self {
        Self {
            out,
            hasher: blake3::Hasher::new(),
        }
    }

    /// The first line and the header.
    pub async fn header(&mut self, header: &Header) -> std::io::Result<()> {
        self.line(format!("{MAGIC}\n")).await?;
        self.line(format!("{}\n", serde_json::to_string(header)?))
            .await
    }

    /// One manifest line.
    pub async fn manifest_line(&mut self, entry: &UserEntry) -> std::io::Result<()> {
        let line = serde_json::to_string(&ManifestLine::of(entry))?;
        self.line(format!("{line}\n")).await
    }

    async fn line(&mut self, line: String) -> std::io::Result<()> {
        self.write_all(line.as_bytes()).await
    }

    /// The trailer; flushes.
    pub async fn finish(mut self) -> std::io::Result<()> {
        let trailer = format!("{TRAILER}{}\n", self.hasher.finalize().to_hex());
        self.out.write_all(trailer.as_bytes()).await?;
        self.out.flush().await
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for ArchiveWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.out).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.hasher.update(&buf[..n]);
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().out).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().out).poll_shutdown(cx)
    }
}

/// Reads an archive, hashing every byte consumed (never bytes only buffered ahead).
pub struct ArchiveReader<R> {
    inner: BufReader<R>,
    hasher: blake3::Hasher,
}

impl<R: AsyncRead + Unpin> ArchiveReader<R> {
    /// Starts reading.
    pub fn new(input: R) -> Self {
        Self {
            inner: BufReader::with_capacity(256 * 1024, input),
            hasher: blake3::Hasher::new(),
        }
    }

    /// One line without its `\n`; `what` names it in errors.
    async fn line(&mut self, what: &str) -> anyhow::Result<String> {
        let mut line = Vec::new();
        (&mut *self)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut line)
            .await
            .with_context(|| format!("reading the {what}"))?;
        if line.last() != Some(&b'\n') {
            if line.len() as u64 > MAX_LINE {
                bail!("the {what} is longer than {MAX_LINE} bytes");
            }
            bail!("the archive ends inside the {what} (truncated)");
        }
        line.pop();
        String::from_utf8(line).with_context(|| format!("the {what} is not UTF-8"))
    }

    /// The first line and the header.
    pub async fn header(&mut self) -> anyhow::Result<Header> {
        let magic = self.line("first line").await?;
        if magic != MAGIC {
            bail!("not a user archive: the first line is not {MAGIC:?}");
        }
        let header = self.line("header").await?;
        serde_json::from_str(&header).context("the header is not valid")
    }

    /// The manifest: `files` lines in strictly increasing path order, their lengths adding up to
    /// `bytes`.
    pub async fn manifest(&mut self, header: &Header) -> anyhow::Result<Vec<UserEntry>> {
        let mut entries: Vec<UserEntry> = Vec::new();
        let mut bytes = 0u64;
        for n in 1..=header.files {
            let what = format!("manifest line {n}");
            let line = self.line(&what).await?;
            let parsed: ManifestLine =
                serde_json::from_str(&line).with_context(|| format!("{what} is not valid"))?;
            let entry = parsed.into_entry().with_context(|| what.clone())?;
            if let Some(previous) = entries.last()
                && previous.path.as_bytes() >= entry.path.as_bytes()
            {
                bail!("{what}: {} is out of order or repeated", entry.path);
            }
            bytes = bytes.saturating_add(entry.length);
            entries.push(entry);
        }
        if bytes != header.bytes {
            bail!(
                "the manifest's lengths add up to {bytes} bytes, the header says {}",
                header.bytes
            );
        }
        Ok(entries)
    }

    /// The hash of everything read so far.
    pub fn hash_so_far(&self) -> [u8; 32] {
        *self.hasher.finalize().as_bytes()
    }

    /// Reads the trailer and checks it against `expected` (from [`Self::hash_so_far`] after the last
    /// body), then that nothing follows.
    pub async fn trailer(&mut self, expected: [u8; 32]) -> anyhow::Result<()> {
        let line = self.line("trailer").await?;
        let Some(hex) = line.strip_prefix(TRAILER) else {
            bail!("the archive has no trailer after the last body (truncated or tampered)");
        };
        let mut found = [0u8; 32];
        if decode_hex(hex, &mut found).is_none() || found != expected {
            bail!("the archive's checksum does not match its contents (tampered or corrupted)");
        }
        let mut extra = [0u8; 1];
        if self
            .inner
            .read(&mut extra)
            .await
            .context("reading past the trailer")?
            != 0
        {
            bail!("the archive goes on after its trailer");
        }
        Ok(())
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for ArchiveReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let available = match Pin::new(&mut this.inner).poll_fill_buf(cx) {
            Poll::Ready(Ok(available)) => available,
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
            Poll::Pending => return Poll::Pending,
        };
        let n = available.len().min(buf.remaining());
        buf.put_slice(&available[..n]);
        this.hasher.update(&available[..n]);
        Pin::new(&mut this.inner).consume(n);
        Poll::Ready(Ok(()))
    }
}

impl<R: AsyncRead + Unpin> AsyncBufRead for ArchiveReader<R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<&[u8]>> {
        Pin::new(&mut self.get_mut().inner).poll_fill_buf(cx)
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.hasher.update(&this.inner.buffer()[..amt]);
        Pin::new(&mut this.inner).consume(amt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, body: &[u8]) -> UserEntry {
        UserEntry {
            path: path.into(),
            hash: *blake3::hash(body).as_bytes(),
            length: body.len() as u64,
            content_type: "text/plain".into(),
            created_at: 1,
            modified_at: 2,
            blob_key: String::new(),
        }
    }

    async fn archive(bodies: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut writer = ArchiveWriter::new(&mut out);
        let header = Header {
            user: "u".into(),
            files: bodies.len() as u64,
            bytes: bodies.iter().map(|(_, b)| b.len() as u64).sum(),
            exported_at: 3,
        };
        writer.header(&header).await.unwrap();
        for (path, body) in bodies {
            writer.manifest_line(&entry(path, body)).await.unwrap();
        }
        for (_, body) in bodies {
            writer.write_all(body).await.unwrap();
        }
        writer.finish().await.unwrap();
        out
    }

    async fn read(bytes: &[u8]) -> anyhow::Result<Vec<(UserEntry, Vec<u8>)>> {
        let mut reader = ArchiveReader::new(bytes);
        let header = reader.header().await?;
        let entries = reader.manifest(&header).await?;
        let mut read = Vec::new();
        for entry in entries {
            let mut body = vec![0; entry.length as usize];
            reader.read_exact(&mut body).await?;
            read.push((entry, body));
        }
        let hash = reader.hash_so_far();
        reader.trailer(hash).await?;
        Ok(read)
    }

    #[tokio::test]
    async fn an_archive_reads_back_as_written() {
        let bytes = archive(&[("/pub/a", b"one"), ("/priv/b", b""), ("/pub/c/d", b"three")]).await;
        let err = read(&bytes).await.unwrap_err().to_string();
        assert!(err.contains("out of order"), "{err}");
        let bytes = archive(&[("/priv/b", b""), ("/pub/a", b"one"), ("/pub/c/d", b"three")]).await;
        let read = read(&bytes).await.unwrap();
        assert_eq!(read.len(), 3);
        assert_eq!(read[2].1, b"three");
        assert_eq!(read[2].0.path, "/pub/c/d");
    }

    #[tokio::test]
    async fn truncation_and_tampering_are_refused() {
        let bytes = archive(&[("/pub/a", b"one"), ("/pub/b", b"two")]).await;
        for cut in [5, 40, bytes.len() - 70, bytes.len() - 1] {
            let err = read(&bytes[..cut]).await.unwrap_err();
            assert!(
                format!("{err:#}").contains("truncated") || format!("{err:#}").contains("eof"),
                "cut at {cut}: {err:#}"
            );
        }
        let mut tampered = bytes.clone();
        let body_at = tampered.len() - 70;
        tampered[body_at] ^= 1;
        assert!(read(&tampered).await.is_err());
        let mut longer = bytes.clone();
        longer.push(b'x');
        let err = read(&longer).await.unwrap_err().to_string();
        assert!(err.contains("goes on after"), "{err}");
    }
}
