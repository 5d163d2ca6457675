//! `homestead export-user KEY`: the archive of one user's files on stdout.

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

/// Writes the archive of `key`'s files to `out`.
pub async fn export_user<W: AsyncWrite + Unpin>(
    ctx: &CommandContext,
    key: &str,
    out: W,
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
        writer.header(&header).await.context("writing the archive")?;
        let mut entries = snapshot.entries();
        while let Some(entry) = entries.try_next().await? {
            writer.manifest_line(&entry).await.context("writing the archive")?;
        }
        drop(entries);
        let progress = Progress::new("export-user", files, bytes);
        let mut entries = snapshot.entries();
        while let Some(entry) = entries.try_next().await? {
            let sent = download(&store, &entry.blob_key, &mut writer, &|n| progress.bytes(n))
                .await
                .with_context(|| format!("exporting {}", entry.path))?;
            if sent.length != entry.length || sent.hash != entry.hash {
                bail!(
                    "{}: the body in the blob store does not match its recorded hash and length: the blob store is damaged",
                    entry.path
                );
            }
            progress.file_done();
        }
        drop(entries);
        writer.finish().await.context("writing the archive")?;
        progress.finish();
        snapshot.close().await?;
        Ok(())
    }
    .await;
    hold.release().await;
    db.close().await;
    exported
}
