//! `homestead restore SRC`: a backup into the empty database and blob store of a data directory (run
//! it before the server starts there). The bodies go up first, each checked against its hash; then the
//! server key is written if the directory has none; then the metadata is restored in one step (a
//! renamed SQLite file, or one PostgreSQL transaction). A failure removes what was written.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use homestead_backends::blob_holds::is_hold_marker;
use homestead_backends::blob_transfer::{delete_all, upload};
use homestead_backends::blobs::PROBE_PREFIX;
use homestead_backends::snapshot::{self, BlobRef, Taken, encode_hex};
use object_store::ObjectStore;

use super::{
    BLOB_LIST, BLOBS_DIR, BackupManifest, FORMAT, MANIFEST_FILE, METADATA_DIR, VERSION,
    for_each_blob,
};
use crate::command_context::CommandContext;
use crate::transfer_progress::Progress;

/// Restores the backup in `src` into the deployment `ctx` names.
pub async fn restore(ctx: &CommandContext, src: &Path) -> anyhow::Result<()> {
    let manifest = read_manifest(src)?;
    let Some(engine) = snapshot::engine_from_name(&manifest.engine) else {
        bail!(
            "{}: unknown engine {:?}",
            src.join(MANIFEST_FILE).display(),
            manifest.engine
        );
    };
    let secret_file = ctx.secret_file();
    let backup_secret = std::fs::read_to_string(src.join("secret"))
        .with_context(|| format!("{} is not a whole backup", src.display()))?;
    let write_secret = match std::fs::read_to_string(&secret_file) {
        Ok(existing) if existing.trim() == backup_secret.trim() => false,
        Ok(_) => bail!(
            "{} holds another server key than the backup's: restore into a data directory without one",
            secret_file.display()
        ),
        Err(_) => true,
    };
    snapshot::check_target(&ctx.database_url, engine, manifest.schema_version).await?;
    let blobs = ctx.blob_store().await?;
    let store = blobs.objects().clone();
    if let Some(key) = first_blob(&store).await? {
        bail!(
            "the {} blob store already holds blobs (e.g. {key}): restore needs an empty one",
            blobs.describe()
        );
    }
    let blob_list = src.join(BLOB_LIST);
    let uploaded = upload_all(&store, blobs.describe(), src, &blob_list, &manifest).await;
    let restored = match uploaded {
        Ok(progress) => finish(ctx, src, &manifest, write_secret, &backup_secret)
            .await
            .map(|()| progress.finish()),
        Err(err) => Err(err),
    };
    if let Err(err) = restored {
        let keys =
            snapshot::read_blob_list(&blob_list)?.filter_map(|blob| blob.ok().map(|blob| blob.key));
        if let Err(cleanup) = delete_all(&store, keys).await {
            eprintln!("restore: cannot remove the blobs it uploaded: {cleanup}");
        }
        return Err(err);
    }
    eprintln!(
        "restore: {} files, {} bytes of {} into {} and the {} blob store",
        manifest.files,
        manifest.bytes,
        manifest.server_public_key,
        ctx.database_shown(),
        blobs.describe()
    );
    Ok(())
}

fn read_manifest(src: &Path) -> anyhow::Result<BackupManifest> {
    let path = src.join(MANIFEST_FILE);
    let text = std::fs::read(&path).with_context(|| {
        format!(
            "{} is not a backup: cannot read {}",
            src.display(),
            path.display()
        )
    })?;
    let manifest: BackupManifest = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a backup description", path.display()))?;
    if manifest.format != FORMAT || manifest.version != VERSION {
        bail!(
            "{}: format {:?} version {} is not one this homestead restores ({FORMAT:?} version {VERSION})",
            path.display(),
            manifest.format,
            manifest.version
        );
    }
    Ok(manifest)
}

/// A user blob already in the store, if any (hold markers and probes do not count).
async fn first_blob(store: &Arc<dyn ObjectStore>) -> anyhow::Result<Option<String>> {
    let mut listing = store.list(None);
    while let Some(meta) = listing.next().await.transpose()? {
        let key = meta.location.to_string();
        if !is_hold_marker(&key) && !key.starts_with(PROBE_PREFIX) {
            return Ok(Some(key));
        }
    }
    Ok(None)
}

async fn upload_all(
    store: &Arc<dyn ObjectStore>,
    described: &str,
    src: &Path,
    blob_list: &Path,
    manifest: &BackupManifest,
) -> anyhow::Result<Progress> {
    let progress = Progress::new("restore", manifest.files, manifest.bytes);
    let blobs_dir = src.join(BLOBS_DIR);
    for_each_blob(blob_list, |blob| {
        let (blobs_dir, progress) = (&blobs_dir, &progress);
        async move { upload_one(store, described, &blob, blobs_dir, progress).await }
    })
    .await?;
    Ok(progress)
}

async fn upload_one(
    store: &Arc<dyn ObjectStore>,
    described: &str,
    blob: &BlobRef,
    blobs_dir: &Path,
    progress: &Progress,
) -> anyhow::Result<()> {
    let path = blobs_dir.join(&blob.key);
    let file = tokio::fs::File::open(&path)
        .await
        .with_context(|| format!("the backup lacks a body it lists: {}", path.display()))?;
    let mut body = tokio::io::BufReader::with_capacity(256 * 1024, file);
    let sent = upload(store, &blob.key, &mut body, blob.length, &|n| {
        progress.bytes(n)
    })
    .await
    .with_context(|| {
        format!(
            "restoring {} into the {described} blob store",
            path.display()
        )
    })?;
    if sent.hash != blob.hash {
        let _ = delete_all(store, [blob.key.clone()]).await;
        bail!(
            "{}: BLAKE3 {} but the backup lists {}: the backup is damaged",
            path.display(),
            encode_hex(&sent.hash),
            encode_hex(&blob.hash)
        );
    }
    progress.file_done();
    Ok(())
}

async fn finish(
    ctx: &CommandContext,
    src: &Path,
    manifest: &BackupManifest,
    write_secret: bool,
    secret: &str,
) -> anyhow::Result<()> {
    let secret_file = ctx.secret_file();
    if write_secret {
        write_secret_file(&secret_file, secret)?;
    }
    let taken = Taken {
        schema_version: manifest.schema_version,
        tables: manifest.tables.clone(),
        files: manifest.files,
        bytes: manifest.bytes,
    };
    let restored = snapshot::restore(&ctx.database_url, &src.join(METADATA_DIR), &taken).await;
    if restored.is_err() && write_secret {
        let _ = std::fs::remove_file(&secret_file);
    }
    Ok(restored?)
}

/// Writes the key under a temporary name (mode 0600, like the server writes it) and renames it.
fn write_secret_file(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temp = path.with_extension("restoring");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(secret.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temp, path))
        .with_context(|| format!("cannot write {}", path.display()))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&temp);
        })
}
