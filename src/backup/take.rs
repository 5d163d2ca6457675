//! `homestead backup DEST`: a consistent snapshot of a serving deployment. A hold on the blob store
//! keeps replaced blobs in place (see `homestead_backends::blob_holds`), then the metadata is copied in
//! one transaction, then every blob its entries reference is copied and checked against its hash.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use homestead_backends::blob_holds::Hold;
use homestead_backends::blob_transfer::download;
use homestead_backends::metadata::now_micros;
use homestead_backends::snapshot::{self, BlobRef, encode_hex};
use object_store::ObjectStore;
use std::sync::Arc;

use super::{
    BLOB_LIST, BLOBS_DIR, BackupManifest, FORMAT, MANIFEST_FILE, METADATA_DIR, VERSION,
    for_each_blob,
};
use crate::command_context::CommandContext;
use crate::transfer_progress::Progress;

/// Backs up the deployment `ctx` names into the new directory `dest`.
pub async fn backup(ctx: &CommandContext, dest: &Path) -> anyhow::Result<()> {
    let staging = staging_dir(dest)?;
    std::fs::create_dir(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    let written = write(ctx, &staging).await;
    let finished = written.and_then(|manifest| {
        if dest.is_dir() {
            std::fs::remove_dir(dest)
                .with_context(|| format!("cannot replace {}", dest.display()))?;
        }
        std::fs::rename(&staging, dest).with_context(|| {
            format!("cannot rename {} to {}", staging.display(), dest.display())
        })?;
        sync_dir(dest.parent().unwrap_or(Path::new(".")));
        Ok(manifest)
    });
    match finished {
        Ok(manifest) => {
            eprintln!(
                "backup: {} files, {} bytes of {} ({}) in {}",
                manifest.files,
                manifest.bytes,
                manifest.server_public_key,
                manifest.engine,
                dest.display()
            );
            Ok(())
        }
        Err(err) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(err)
        }
    }
}

/// Checks DEST (missing, or an empty directory, in a directory that exists) and names its staging
/// sibling.
fn staging_dir(dest: &Path) -> anyhow::Result<PathBuf> {
    if dest.exists() {
        let empty = dest.is_dir()
            && std::fs::read_dir(dest)
                .with_context(|| format!("cannot read {}", dest.display()))?
                .next()
                .is_none();
        if !empty {
            bail!(
                "{} already exists and is not an empty directory: back up into a new directory",
                dest.display()
            );
        }
    }
    crate::staging::staging_sibling(dest, "directory")
}

fn sync_dir(dir: &Path) {
    let _ = std::fs::File::open(dir).and_then(|dir| dir.sync_all());
}

async fn write(ctx: &CommandContext, staging: &Path) -> anyhow::Result<BackupManifest> {
    let db = ctx.database().await?;
    let blobs = ctx.blob_store().await?;
    let store = blobs.objects().clone();
    let hold = Hold::place(store.clone())
        .await
        .with_context(|| format!("cannot place a hold on the {} blob store", blobs.describe()))?;
    let written = copy(ctx, &db, &store, staging).await;
    hold.release().await;
    db.close().await;
    written
}

async fn copy(
    ctx: &CommandContext,
    db: &homestead_backends::database::Database,
    store: &Arc<dyn ObjectStore>,
    staging: &Path,
) -> anyhow::Result<BackupManifest> {
    let metadata_dir = staging.join(METADATA_DIR);
    let blobs_dir = staging.join(BLOBS_DIR);
    for dir in [&metadata_dir, &blobs_dir] {
        std::fs::create_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let created_at = now_micros();
    let blob_list = staging.join(BLOB_LIST);
    let taken = snapshot::take(db, &metadata_dir, &blob_list).await?;
    let progress = Progress::new("backup", taken.files, taken.bytes);
    for_each_blob(&blob_list, |blob| {
        let (blobs_dir, progress) = (&blobs_dir, &progress);
        async move { copy_blob(store, &blob, blobs_dir, progress).await }
    })
    .await?;
    let secret = ctx.secret()?;
    write_file(&staging.join("secret"), secret.as_bytes())?;
    let config_file = ctx.data_dir.config_file();
    if config_file.is_file() {
        let config = std::fs::read(&config_file)
            .with_context(|| format!("cannot read {}", config_file.display()))?;
        write_file(&staging.join("config.toml"), &config)?;
    }
    let keypair = crate::server_key::load_or_create(&ctx.secret_file())?;
    let manifest = BackupManifest {
        format: FORMAT.into(),
        version: VERSION,
        engine: snapshot::engine_name(ctx.database_url.kind()).into(),
        schema_version: taken.schema_version,
        tables: taken.tables,
        created_at,
        server_public_key: keypair.public_key().to_string(),
        files: taken.files,
        bytes: taken.bytes,
    };
    let json = serde_json::to_vec_pretty(&manifest)?;
    write_file(&staging.join(MANIFEST_FILE), &json)?;
    sync_dir(staging);
    progress.finish();
    Ok(manifest)
}

async fn copy_blob(
    store: &Arc<dyn ObjectStore>,
    blob: &BlobRef,
    blobs_dir: &Path,
    progress: &Progress,
) -> anyhow::Result<()> {
    let path = blobs_dir.join(&blob.key);
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = tokio::fs::File::create(&path)
        .await
        .with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = tokio::io::BufWriter::with_capacity(256 * 1024, file);
    let copied = download(store, &blob.key, &mut out, &|n| progress.bytes(n))
        .await
        .with_context(|| format!("copying to {}", path.display()))?;
    use tokio::io::AsyncWriteExt;
    out.flush()
        .await
        .with_context(|| format!("writing {}", path.display()))?;
    out.into_inner()
        .sync_all()
        .await
        .with_context(|| format!("writing {}", path.display()))?;
    if copied.length != blob.length || copied.hash != blob.hash {
        bail!(
            "blob {}: {} bytes with BLAKE3 {}, but its entry records {} bytes with {}: the blob store is damaged",
            blob.key,
            copied.length,
            encode_hex(&copied.hash),
            blob.length,
            encode_hex(&blob.hash)
        );
    }
    progress.file_done();
    Ok(())
}

/// Writes a small file and flushes it to disk.
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    std::fs::File::create(path)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .with_context(|| format!("cannot write {}", path.display()))
}
