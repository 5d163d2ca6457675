//! `homestead backup DEST` and `homestead restore SRC`.
//!
//! A backup is a directory:
//!
//! | path | what |
//! |---|---|
//! | `BACKUP.json` | what the backup holds: `format` (`"homestead-backup"`), `version` (1), `engine` (`sqlite` or `postgres`), `schema_version` (the newest migration of the copied schema), `tables` (PostgreSQL: the copied tables in restore order), `created_at` (µs since the epoch), `server_public_key`, `files` and `bytes` (the entries and their total length) |
//! | `secret` | the server key, as in the data directory |
//! | `config.toml` | the configuration the backup was taken with, for reference (restore never installs it: it may name the old database and bucket) |
//! | `metadata/homestead.db` | SQLite: the database, copied with `VACUUM INTO` |
//! | `metadata/<table>.copy` | PostgreSQL: each table in `COPY`'s text format, all from one `REPEATABLE READ` transaction |
//! | `blobs.tsv` | one line per entry of the snapshot: blob key, BLAKE3 (hex), length, tab-separated |
//! | `blobs/<blob key>` | each body the snapshot's entries reference, checked against its hash as it was copied |
//!
//! The backup is written under a temporary sibling name (`.<name>.partial-<pid>`) and renamed to DEST
//! when complete, so DEST either holds a whole backup or does not exist.

mod restore;
mod take;

pub use restore::restore;
pub use take::backup;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use homestead_backends::snapshot::{self, BlobRef};
use serde::{Deserialize, Serialize};

/// `BACKUP.json`'s `format`.
pub const FORMAT: &str = "homestead-backup";
/// `BACKUP.json`'s `version`.
pub const VERSION: u32 = 1;
/// The description file.
pub const MANIFEST_FILE: &str = "BACKUP.json";
/// The blob list.
pub const BLOB_LIST: &str = "blobs.tsv";
/// The directory of metadata copies.
pub const METADATA_DIR: &str = "metadata";
/// The directory of bodies.
pub const BLOBS_DIR: &str = "blobs";

/// `BACKUP.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// `sqlite` or `postgres`.
    pub engine: String,
    /// The newest migration of the copied schema.
    pub schema_version: i64,
    /// PostgreSQL: the copied tables, in restore order.
    pub tables: Vec<String>,
    /// When the backup was taken (µs since the epoch).
    pub created_at: i64,
    /// The server's public key (z32).
    pub server_public_key: String,
    /// Entries in the snapshot.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Blobs copied or uploaded at once (S3 latency is hidden behind this many requests).
const BLOBS_IN_FLIGHT: usize = 8;

/// Runs `each` on every blob a blob list names, [`BLOBS_IN_FLIGHT`] at a time. After the first error
/// no new blob is started, but those in flight run to their end, so that nothing is still writing when
/// the caller cleans up; that first error is returned.
async fn for_each_blob<F, Fut>(blob_list: &Path, each: F) -> anyhow::Result<()>
where
    F: Fn(BlobRef) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let failed = AtomicBool::new(false);
    let mut first = None;
    let mut results = futures_util::stream::iter(snapshot::read_blob_list(blob_list)?)
        .map(|blob| async {
            if failed.load(Ordering::Relaxed) {
                return Ok(());
            }
            let done = match blob {
                Ok(blob) => each(blob).await,
                Err(err) => Err(err.into()),
            };
            if done.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            done
        })
        .buffer_unordered(BLOBS_IN_FLIGHT);
    while let Some(result) = results.next().await {
        if let Err(err) = result {
            first.get_or_insert(err);
        }
    }
    first.map_or(Ok(()), Err)
}
