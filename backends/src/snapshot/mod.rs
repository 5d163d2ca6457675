//! Consistent copies of the metadata database for `homestead backup` and `homestead restore`, taken
//! through each engine's own means while instances keep serving: SQLite's `VACUUM INTO` (one read
//! transaction, a compact copy of the file), PostgreSQL's `COPY ... TO STDOUT` of every table inside
//! one `REPEATABLE READ` transaction (what `pg_dump` does, without needing its binary of the server's
//! version). Beside the copy goes the list of blobs its entries reference ([`BlobRef`], one per line),
//! so that the backup copies exactly those.

mod postgres;
mod sqlite;

use std::io::{BufRead, Write};
use std::path::Path;

use homestead_config::{DatabaseKind, DatabaseUrl};

use crate::database::Database;
use crate::metadata::MetadataError;

/// The SQLite copy's file name in the metadata directory of a backup.
pub const SQLITE_FILE: &str = "homestead.db";
/// The extension of a PostgreSQL table's copy (`<table>.copy`, COPY's text format).
pub const TABLE_EXTENSION: &str = "copy";

/// Why a snapshot or a restore failed; each variant says what and where.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The database failed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// A file of the snapshot could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The target or the snapshot is not what a restore needs.
    #[error("{0}")]
    Refused(String),
}

/// Shorthand for results of this module.
pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The newest migration of the copied schema.
    pub schema_version: i64,
    /// PostgreSQL: the copied tables, parents before the tables that reference them (empty for SQLite).
    pub tables: Vec<String>,
    /// Entries (files) in the snapshot.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// One blob the snapshot's entries reference: a line `<key>\t<blake3 hex>\t<length>` of the blob list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    /// The blob key.
    pub key: String,
    /// BLAKE3 of the body.
    pub hash: [u8; 32],
    /// Bytes.
    pub length: u64,
}

impl BlobRef {
    /// Parses a line of the blob list (without its newline).
    pub fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split('\t');
        let key = fields.next()?;
        let hash = fields.next()?;
        let length = fields.next()?.parse().ok()?;
        let mut bytes = [0u8; 32];
        if fields.next().is_some() || key.is_empty() || key.starts_with('/') || key.contains("..") {
            return None;
        }
        decode_hex(hash, &mut bytes)?;
        Some(Self {
            key: key.to_string(),
            hash: bytes,
            length,
        })
    }

    fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "{}\t{}\t{}",
            self.key,
            encode_hex(&self.hash),
            self.length
        )
    }
}

/// Lower-case hex.
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes hex into exactly `out.len()` bytes.
pub fn decode_hex(text: &str, out: &mut [u8]) -> Option<()> {
    if text.len() != out.len() * 2 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(())
}

/// Reads a blob list back, line by line.
pub fn read_blob_list(path: &Path) -> Result<impl Iterator<Item = Result<BlobRef>> + use<>> {
    let file = std::fs::File::open(path).map_err(io_at(path))?;
    let shown = path.display().to_string();
    Ok(std::io::BufReader::new(file)
        .lines()
        .enumerate()
        .map(move |(n, line)| {
            let line = line.map_err(|source| SnapshotError::Io {
                path: shown.clone(),
                source,
            })?;
            BlobRef::parse(&line).ok_or_else(|| {
                SnapshotError::Refused(format!("{shown}: line {} is not a blob reference", n + 1))
            })
        }))
}

/// Takes a snapshot of `db` into `metadata_dir` (which exists) and writes the list of the blobs its
/// entries reference to `blob_list`.
pub async fn take(db: &Database, metadata_dir: &Path, blob_list: &Path) -> Result<Taken> {
    match db {
        Database::Sqlite(pool, _) => sqlite::take(pool, metadata_dir, blob_list).await,
        Database::Postgres(pool, _) => postgres::take(pool, metadata_dir, blob_list).await,
    }
}

/// Checks that a snapshot of `engine` at `schema_version` can go into the database at `url`, and that
/// the database holds nothing yet. Touches nothing.
pub async fn check_target(
    url: &DatabaseUrl,
    engine: DatabaseKind,
    schema_version: i64,
) -> Result<()> {
    if url.kind() != engine {
        return Err(SnapshotError::Refused(format!(
            "the backup holds a {} database and the target is configured for {}: restore into the same engine",
            engine_name(engine),
            engine_name(url.kind())
        )));
    }
    match engine {
        DatabaseKind::Sqlite => sqlite::check_target(url, schema_version).await,
        DatabaseKind::Postgres => postgres::check_target(url, schema_version).await,
    }
}

/// Restores a snapshot from `metadata_dir` into the database at `url` (checked with [`check_target`]):
/// all of it or, on failure, nothing.
pub async fn restore(url: &DatabaseUrl, metadata_dir: &Path, taken: &Taken) -> Result<()> {
    match url.kind() {
        DatabaseKind::Sqlite => sqlite::restore(url, metadata_dir).await,
        DatabaseKind::Postgres => postgres::restore(url, metadata_dir, taken).await,
    }
}

/// `sqlite` or `postgres`, as backups name engines.
pub fn engine_name(kind: DatabaseKind) -> &'static str {
    match kind {
        DatabaseKind::Sqlite => "sqlite",
        DatabaseKind::Postgres => "postgres",
    }
}

/// The engine a backup names.
pub fn engine_from_name(name: &str) -> Option<DatabaseKind> {
    match name {
        "sqlite" => Some(DatabaseKind::Sqlite),
        "postgres" => Some(DatabaseKind::Postgres),
        _ => None,
    }
}

/// Refuses a snapshot newer than this build.
fn check_version(kind: DatabaseKind, schema_version: i64) -> Result<()> {
    let known = crate::database::known_schema_version(kind);
    if schema_version > known {
        return Err(SnapshotError::Refused(format!(
            "the backup has schema version {schema_version}, newer than this homestead's {known}: \
             restore with the homestead that made it"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_references_round_trip_and_bad_lines_are_refused() {
        let blob = BlobRef {
            key: "user/00ff".into(),
            hash: [7; 32],
            length: 12,
        };
        let mut line = Vec::new();
        blob.write(&mut line).unwrap();
        let line = String::from_utf8(line).unwrap();
        assert_eq!(BlobRef::parse(line.trim_end()), Some(blob));
        for bad in [
            "",
            "k\tzz\t1",
            "k\t0707\t1",
            "../k\t0707070707070707070707070707070707070707070707070707070707070707\t1",
            "k\t0707070707070707070707070707070707070707070707070707070707070707\t-1",
        ] {
            assert_eq!(BlobRef::parse(bad), None, "{bad}");
        }
    }
}
