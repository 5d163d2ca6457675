//! `homestead export-user KEY [-o FILE]`: the archive of one user's files on stdout or in a new file.

use std::path::Path;

use anyhow::{Context, bail};
use futures_util::TryStreamExt;
use homestead_backends::blob_holds::Hold;
use homestead_backends::blob_transfer::download;
use homestead_backends::metadata::now_micros;
use homestead_backends::metadata::user_transfer::UserSnapshot;
use tokio::io::AsyncWrite;

use super::format::{ArchiveWriter, Header};
use crate::command_context::CommandContext;
use crate::transfer_progress::Progress;

/// Writes the archive of `key`'s files to the new file `file`: under a temporary sibling name
/// (`.<name>.partial-<pid>`), flushed to disk and renamed when complete; removed on failure.
pub async fn export_user_to_file(
    ctx: &CommandContext,
    key: &str,
    file: &Path,
) -> anyhow::Result<()> {
    if file.exists() {
        bail!("{} already exists: export into a new file", file.display());
    }
    let staging = crate::staging::staging_sibling(file, "file")?;
    let out = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&staging)
        .await
        .with_context(|| format!("cannot create {}", staging.display()))?;
    let shown = file.display().to_string();
    let written = async {
        let mut out = out;
        export_user(ctx, key, &mut out, &shown).await?;
        out.sync_all()
            .await
            .with_context(|| format!("writing the archive to {shown}"))?;
        tokio::fs::rename(&staging, file)
            .await
            .with_context(|| format!("cannot rename {} to {shown}", staging.display()))
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&staging).await;
    }
    written
}

/// Writes the archive of `key`'s files to `out`; `shown` names it in errors (a file, or stdout).
pub async fn export_user<W: AsyncWrite + Unpin>(
    ctx: &CommandContext,
    key: &str,
    out: W,
    shown: &str,
) -> anyhow::Result<()> {
    let user = pkarr::PublicKey::try_from(key)
        .map_err(|_| anyhow::anyhow!("{key:?} is not a public key (52 characters of z-base-32)"))?
        .to_string();
    let db = ctx.database().await?;
    let blobs = ctx.blob_store().await?;
    let store = blobs.objects().clone();
    let Some(snapshot) = UserSnapshot::open(&db, &user).await? else {
        bail!("no user {user} in {}", ctx.database_shown());
    };
    snapshot.close().await?;
    let hold = Hold::place(store.clone())
        .await
        .with_context(|| format!("cannot place a hold on the {} blob store", blobs.describe()))?;
    let exported = async {
        let mut snapshot = UserSnapshot::open(&db, &user)
            .await?
            .with_context(|| format!("user {user} was deleted meanwhile"))?;
        let (files, bytes) = snapshot.totals().await?;
        let mut writer = ArchiveWriter::new(tokio::io::BufWriter::with_capacity(256 * 1024, out));
        let header = Header {
            user: user.clone(),
            files,
            bytes,
            exported_at: now_micros(),
        };
        writer.header(&header).await.with_context(|| format!("writing the archive to {shown}"))?;
        let mut entries = snapshot.entries();
        while let Some(entry) = entries.try_next().await? {
            writer.manifest_line(&entry).await.with_context(|| format!("writing the archive to {shown}"))?;
        }
        drop(entries);
        let progress = Progress::new("export-user", files, bytes);
        let mut entries = snapshot.entries();
        while let Some(entry) = entries.try_next().await? {
            let sent = download(&store, &entry.blob_key, &mut writer, &|n| progress.bytes(n))
                .await
                .with_context(|| format!("exporting {} to {shown}", entry.path))?;
            if sent.length != entry.length || sent.hash != entry.hash {
                bail!(
                    "{}: the body in the blob store does not match its recorded hash and length: the blob store is damaged",
                    entry.path
                );
            }
            progress.file_done();
        }
        drop(entries);
        writer.finish().await.with_context(|| format!("writing the archive to {shown}"))?;
        progress.finish();
        snapshot.close().await?;
        Ok(())
    }
    .await;
    hold.release().await;
    db.close().await;
    exported
}
