//! PostgreSQL: every table of the schema (but sqlx's migration record) copied out with
//! `COPY ... TO STDOUT` inside one `REPEATABLE READ READ ONLY` transaction, so all of them, and the blob
//! list, show one moment of the database; restored with `COPY ... FROM STDIN` into a freshly migrated,
//! empty database in one transaction, with the id sequences moved past the restored ids.

use std::path::Path;

use futures_util::StreamExt;
use homestead_config::{DatabaseKind, DatabaseUrl};
use sqlx::postgres::PgPool;
use sqlx::{Connection, PgConnection};
use tokio::io::AsyncWriteExt;

use super::{Result, SnapshotError, TABLE_EXTENSION, Taken, io_at};
use crate::database::Database;
use crate::metadata::query;

/// The tables of the current schema, but sqlx's own.
const TABLES: &str = "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() \
     AND tablename <> '_sqlx_migrations' ORDER BY tablename";
/// Foreign keys between tables of the current schema: (referencing table, referenced table).
const REFERENCES: &str = "SELECT c.relname::text, f.relname::text FROM pg_constraint k \
     JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class f ON f.oid = k.confrelid \
     WHERE k.contype = 'f' AND k.connamespace = current_schema()::regnamespace";
/// Columns filled from a sequence: (table, column).
const SERIAL_COLUMNS: &str = "SELECT table_name::text, column_name::text FROM information_schema.columns \
     WHERE table_schema = current_schema() AND column_default LIKE 'nextval(%'";
/// The blobs the entries reference, as lines of the blob list.
const BLOB_LIST: &str = "COPY (SELECT blob_key, encode(content_hash, 'hex'), content_length \
     FROM entries ORDER BY blob_key) TO STDOUT";

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The tables, each after the tables it references.
async fn tables_in_order(conn: &mut PgConnection) -> Result<Vec<String>> {
    let mut left: Vec<String> = sqlx::query_scalar(TABLES)
        .fetch_all(&mut *conn)
        .await
        .map_err(query("list the tables"))?;
    let references: Vec<(String, String)> = sqlx::query_as(REFERENCES)
        .fetch_all(&mut *conn)
        .await
        .map_err(query("list the foreign keys"))?;
    let mut ordered = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let ready = left.iter().position(|table| {
            references
                .iter()
                .filter(|(from, to)| from == table && to != table)
                .all(|(_, to)| ordered.contains(to))
        });
        let Some(ready) = ready else {
            return Err(SnapshotError::Refused(format!(
                "the tables {left:?} reference each other in a cycle"
            )));
        };
        ordered.push(left.remove(ready));
    }
    Ok(ordered)
}

/// Copies out `statement` into `path`.
async fn copy_out(conn: &mut PgConnection, statement: &str, path: &Path) -> Result<()> {
    let mut file =
        tokio::io::BufWriter::new(tokio::fs::File::create(path).await.map_err(io_at(path))?);
    let mut data = conn
        .copy_out_raw(statement)
        .await
        .map_err(query("copy a table out"))?;
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(query("copy a table out"))?;
        file.write_all(&chunk).await.map_err(io_at(path))?;
    }
    drop(data);
    file.flush().await.map_err(io_at(path))?;
    file.into_inner().sync_all().await.map_err(io_at(path))
}

pub(super) async fn take(pool: &PgPool, metadata_dir: &Path, blob_list: &Path) -> Result<Taken> {
    let mut conn = pool.acquire().await.map_err(query("connect"))?;
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *conn)
        .await
        .map_err(query("begin the snapshot"))?;
    let schema_version: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *conn)
            .await
            .map_err(query("read the schema version"))?;
    let tables = tables_in_order(&mut conn).await?;
    for table in &tables {
        let path = metadata_dir.join(format!("{table}.{TABLE_EXTENSION}"));
        copy_out(
            &mut conn,
            &format!("COPY {} TO STDOUT", quoted(table)),
            &path,
        )
        .await?;
    }
    copy_out(&mut conn, BLOB_LIST, blob_list).await?;
    let (files, bytes): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(content_length), 0) AS BIGINT) FROM entries",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(query("count the entries"))?;
    sqlx::query("COMMIT")
        .execute(&mut *conn)
        .await
        .map_err(query("end the snapshot"))?;
    Ok(Taken {
        schema_version: schema_version.unwrap_or(0),
        tables,
        files: files as u64,
        bytes: bytes as u64,
    })
}

pub(super) async fn check_target(url: &DatabaseUrl, schema_version: i64) -> Result<()> {
    let known = crate::database::known_schema_version(DatabaseKind::Postgres);
    if schema_version != known {
        return Err(SnapshotError::Refused(format!(
            "the backup has schema version {schema_version} and this homestead's is {known}: restore \
             a PostgreSQL backup with the homestead version that made it"
        )));
    }
    let db = Database::connect(url, false).await?;
    let empty = db.is_empty().await;
    db.close().await;
    if !empty? {
        return Err(SnapshotError::Refused(format!(
            "{} already holds users, tokens, files or events: restore needs an empty database",
            db.shown()
        )));
    }
    Ok(())
}

pub(super) async fn restore(url: &DatabaseUrl, metadata_dir: &Path, taken: &Taken) -> Result<()> {
    let db = Database::connect(url, false).await?;
    db.migrate().await?;
    let Database::Postgres(pool, shown) = &db else {
        unreachable!("a PostgreSQL URL");
    };
    let mut conn = pool.acquire().await.map_err(query("connect"))?;
    let restored = restore_tables(&mut conn, shown, metadata_dir, taken).await;
    drop(conn);
    db.close().await;
    restored
}

async fn restore_tables(
    conn: &mut PgConnection,
    shown: &str,
    metadata_dir: &Path,
    taken: &Taken,
) -> Result<()> {
    let mut tx = conn.begin().await.map_err(query("begin the restore"))?;
    let existing = tables_in_order(&mut tx).await?;
    for table in &taken.tables {
        if !existing.contains(table) {
            return Err(SnapshotError::Refused(format!(
                "the backup has a table {table} that {shown} does not"
            )));
        }
    }
    for table in ["users", "signup_tokens", "entries", "events"] {
        let any: bool = sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 FROM {table})"))
            .fetch_one(&mut *tx)
            .await
            .map_err(query("look for existing data"))?;
        if any {
            return Err(SnapshotError::Refused(format!(
                "{shown} already holds {table}: restore needs an empty database"
            )));
        }
    }
    for table in &taken.tables {
        let path = metadata_dir.join(format!("{table}.{TABLE_EXTENSION}"));
        let file = tokio::fs::File::open(&path).await.map_err(io_at(&path))?;
        let mut copy = tx
            .copy_in_raw(&format!("COPY {} FROM STDIN", quoted(table)))
            .await
            .map_err(query("copy a table in"))?;
        if let Err(err) = copy.read_from(file).await {
            let _ = copy.abort("reading the backup failed").await;
            return Err(query("copy a table in")(err).into());
        }
        copy.finish().await.map_err(query("copy a table in"))?;
    }
    let serials: Vec<(String, String)> = sqlx::query_as(SERIAL_COLUMNS)
        .fetch_all(&mut *tx)
        .await
        .map_err(query("list the sequences"))?;
    for (table, column) in serials {
        let statement = format!(
            "SELECT setval(pg_get_serial_sequence($1, $2), COALESCE(MAX({}), 0) + 1, false) FROM {}",
            quoted(&column),
            quoted(&table)
        );
        sqlx::query(&statement)
            .bind(quoted(&table))
            .bind(&column)
            .execute(&mut *tx)
            .await
            .map_err(query("move a sequence past the restored ids"))?;
    }
    tx.commit().await.map_err(query("commit the restore"))?;
    Ok(())
}
