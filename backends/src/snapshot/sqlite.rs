//! SQLite: `VACUUM INTO` a file of the backup (a consistent copy, made in one read transaction while
//! the serving process goes on writing), restored by copying it under a temporary name, migrating it
//! and renaming it into place.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use futures_util::TryStreamExt;
use homestead_config::DatabaseUrl;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use super::{BlobRef, Result, SQLITE_FILE, SnapshotError, Taken, io_at};
use crate::metadata::{MetadataError, query};

/// Copies the database into `metadata_dir/homestead.db` and lists its blobs into `blob_list`.
pub(super) async fn take(
    pool: &SqlitePool,
    metadata_dir: &Path,
    blob_list: &Path,
) -> Result<Taken> {
    let copy = metadata_dir.join(SQLITE_FILE);
    let literal = copy.display().to_string().replace('\'', "''");
    sqlx::query(&format!("VACUUM INTO '{literal}'"))
        .execute(pool)
        .await
        .map_err(query("copy the database (VACUUM INTO)"))?;
    let snapshot = open_file(&copy, false).await?;
    let taken = describe(&snapshot, blob_list).await;
    snapshot.close().await;
    taken
}

async fn open_file(path: &Path, create: bool) -> Result<SqlitePool> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(create)
        .foreign_keys(true);
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(|source| {
            MetadataError::Connect {
                url: path.display().to_string(),
                source,
            }
            .into()
        })
}

/// The snapshot's schema version and totals, and its blob list written to `blob_list`.
async fn describe(snapshot: &SqlitePool, blob_list: &Path) -> Result<Taken> {
    let schema_version: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(snapshot)
            .await
            .map_err(query("read the schema version"))?;
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(blob_list).map_err(io_at(blob_list))?);
    let mut rows = sqlx::query_as::<_, (String, Vec<u8>, i64)>(
        "SELECT blob_key, content_hash, content_length FROM entries ORDER BY blob_key",
    )
    .fetch(snapshot);
    let (mut files, mut bytes) = (0u64, 0u64);
    while let Some((key, hash, length)) = rows.try_next().await.map_err(query("list the blobs"))? {
        let blob = BlobRef {
            key,
            hash: hash.try_into().map_err(|_| {
                SnapshotError::Refused("an entry's content hash is not 32 bytes".into())
            })?,
            length: u64::try_from(length).unwrap_or(0),
        };
        blob.write(&mut out).map_err(io_at(blob_list))?;
        files += 1;
        bytes += blob.length;
    }
    out.into_inner()
        .map_err(|err| err.into_error())
        .and_then(|file| file.sync_all())
        .map_err(io_at(blob_list))?;
    Ok(Taken {
        schema_version: schema_version.unwrap_or(0),
        tables: Vec::new(),
        files,
        bytes,
    })
}

/// The database file a SQLite URL names.
fn file_of(url: &DatabaseUrl) -> Result<PathBuf> {
    let options =
        SqliteConnectOptions::from_str(url.as_str()).map_err(|source| MetadataError::Connect {
            url: url.as_str().to_string(),
            source,
        })?;
    Ok(options.get_filename().to_path_buf())
}

pub(super) async fn check_target(url: &DatabaseUrl, schema_version: i64) -> Result<()> {
    let target = file_of(url)?;
    if target.exists() {
        return Err(SnapshotError::Refused(format!(
            "{} already exists: restore needs a data directory without a database",
            target.display()
        )));
    }
    if let Some(dir) = target.parent()
        && !dir.as_os_str().is_empty()
        && !dir.is_dir()
    {
        return Err(SnapshotError::Refused(format!(
            "{} does not exist: the database {} cannot be created there",
            dir.display(),
            target.display()
        )));
    }
    super::check_version(homestead_config::DatabaseKind::Sqlite, schema_version)
}

/// Copies the snapshot next to the target under a temporary name, migrates it, and renames it into
/// place; on failure removes the copy.
pub(super) async fn restore(url: &DatabaseUrl, metadata_dir: &Path) -> Result<()> {
    let target = file_of(url)?;
    let mut staged = target.clone().into_os_string();
    staged.push(".restoring");
    let staged = PathBuf::from(staged);
    let restored = async {
        let source = metadata_dir.join(SQLITE_FILE);
        tokio::fs::copy(&source, &staged)
            .await
            .map_err(io_at(&staged))?;
        let pool = open_file(&staged, false).await?;
        let migrated = sqlx::migrate!("../migrations/sqlite").run(&pool).await;
        pool.close().await;
        migrated.map_err(|source| MetadataError::Migrate {
            url: staged.display().to_string(),
            source,
        })?;
        std::fs::File::open(&staged)
            .and_then(|file| file.sync_all())
            .map_err(io_at(&staged))?;
        if target.exists() {
            return Err(SnapshotError::Refused(format!(
                "{} appeared during the restore",
                target.display()
            )));
        }
        std::fs::rename(&staged, &target).map_err(io_at(&target))?;
        if let Some(dir) = target.parent() {
            let _ = std::fs::File::open(dir).and_then(|dir| dir.sync_all());
        }
        Ok(())
    }
    .await;
    if restored.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    restored
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::database::Database;

    #[tokio::test]
    async fn a_snapshot_lists_the_blobs_of_its_entries_and_restores_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let live = DatabaseUrl::sqlite_file(&dir.path().join("live.db"));
        let db = Database::connect(&live, true).await.unwrap();
        db.migrate().await.unwrap();
        let Database::Sqlite(pool, _) = &db else {
            unreachable!()
        };
        sqlx::query("INSERT INTO users (public_key, created_at) VALUES ('u', 1)")
            .execute(pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO entries (user_id, path, content_hash, content_length, content_type, blob_key, created_at, modified_at) \
             VALUES (1, '/pub/a', ?, 3, 'text/plain', 'u/blob', 1, 1)",
        )
        .bind(vec![5u8; 32])
        .execute(pool)
        .await
        .unwrap();
        let backup = dir.path().join("backup");
        std::fs::create_dir(&backup).unwrap();
        let list = backup.join("blobs.tsv");
        let taken = super::super::take(&db, &backup, &list).await.unwrap();
        assert_eq!((taken.files, taken.bytes), (1, 3));
        assert_eq!(
            taken.schema_version,
            crate::database::known_schema_version(homestead_config::DatabaseKind::Sqlite)
        );
        let blobs: Vec<BlobRef> = super::super::read_blob_list(&list)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(blobs[0].key, "u/blob");

        let target = DatabaseUrl::sqlite_file(&dir.path().join("restored.db"));
        super::super::check_target(
            &target,
            homestead_config::DatabaseKind::Sqlite,
            taken.schema_version,
        )
        .await
        .unwrap();
        super::super::restore(&target, &backup, &taken)
            .await
            .unwrap();
        let err = super::super::check_target(&target, homestead_config::DatabaseKind::Sqlite, 1)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        let restored = Database::connect(&target, false).await.unwrap();
        assert!(!restored.is_empty().await.unwrap());
    }
}
