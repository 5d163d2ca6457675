//! `homestead import-user`: an archive from stdin into this server, all of it or nothing.

use std::sync::Arc;

use anyhow::{Context, bail};
use homestead_backends::blob_holds::Hold;
use homestead_backends::blob_transfer::{TransferError, delete_all, upload};
use homestead_backends::metadata::user_transfer::{
    Import, ImportOutcome, UserEntry, UserSnapshot, import_user as commit,
};
use homestead_backends::metadata::{Quota, now_micros};
use homestead_config::SignupMode;
use object_store::ObjectStore;
use tokio::io::AsyncRead;

use super::format::{ArchiveReader, Header};
use crate::command_context::CommandContext;
use crate::transfer_progress::Progress;

/// Imports the archive read from `input`; `token` is the signup token for a server that requires one.
pub async fn import_user<R: AsyncRead + Unpin>(
    ctx: &CommandContext,
    input: R,
    token: Option<&str>,
) -> anyhow::Result<()> {
    let mut reader = ArchiveReader::new(input);
    let header = reader.header().await?;
    let user = pkarr::PublicKey::try_from(header.user.as_str())
        .map_err(|_| anyhow::anyhow!("the header's user {:?} is not a public key", header.user))?
        .to_string();
    let token = match ctx.config.general.signup_mode {
        SignupMode::TokenRequired => token,
        SignupMode::Open => {
            if token.is_some() {
                eprintln!("import-user: sign-up is open here; the signup token is not used");
            }
            None
        }
    };
    let db = ctx.migrated_database().await?;
    let blobs = ctx.blob_store().await?;
    let store = blobs.objects().clone();
    // Refusals that need no body: found before anything is staged (the commit checks them again).
    match UserSnapshot::open(&db, &user).await? {
        Some(mut snapshot) => {
            let (files, _) = snapshot.totals().await?;
            snapshot.close().await?;
            if files > 0 {
                return not_empty(&user, ctx);
            }
        }
        None if token.is_none() && ctx.config.general.signup_mode == SignupMode::TokenRequired => {
            return needs_token(&user);
        }
        None => {}
    }
    let entries = reader.manifest(&header).await?;
    // Staged blobs are unreferenced until the commit: the hold keeps a serving instance's sweeper
    // from deleting them however long the import takes.
    let hold = Hold::place(store.clone())
        .await
        .with_context(|| format!("cannot place a hold on the {} blob store", blobs.describe()));
    let hold = match hold {
        Ok(hold) => hold,
        Err(err) => {
            db.close().await;
            return Err(err);
        }
    };
    let mut staged = Vec::with_capacity(entries.len());
    let imported = async {
        let target = Target {
            store: &store,
            described: blobs.describe(),
            user: &user,
        };
        let progress = stage(&mut reader, &target, &header, entries, &mut staged).await?;
        let default_quota = ctx
            .config
            .storage
            .default_quota_mb
            .map_or(Quota::Unlimited, |mb| Quota::Bytes(mb.saturating_mul(1 << 20)));
        let import = Import {
            user: &user,
            token,
            token_required: ctx.config.general.signup_mode == SignupMode::TokenRequired,
            entries: &staged,
            default_quota,
            now: now_micros(),
        };
        match commit(&db, &import).await? {
            ImportOutcome::Imported { created } => {
                progress.finish();
                Ok(created)
            }
            ImportOutcome::NotEmpty => not_empty(&user, ctx),
            ImportOutcome::TokenMissing => needs_token(&user),
            ImportOutcome::TokenUnknown => bail!("no such signup token"),
            ImportOutcome::TokenUsed => bail!("the signup token was already used"),
            ImportOutcome::QuotaExceeded { needed } => bail!(
                "the files need {needed} bytes (256 per file included), more than user {user}'s quota"
            ),
        }
    }
    .await;
    db.close().await;
    let outcome = match imported {
        Ok(created) => {
            eprintln!(
                "import-user: {} files, {} bytes for {user}{}; a PUT event for each",
                header.files,
                header.bytes,
                if created { " (signed up)" } else { "" }
            );
            Ok(())
        }
        Err(err) => {
            let keys = staged.into_iter().map(|entry| entry.blob_key);
            if let Err(cleanup) = delete_all(&store, keys).await {
                eprintln!("import-user: cannot remove the staged blobs: {cleanup}");
            }
            Err(err)
        }
    };
    hold.release().await;
    outcome
}

fn not_empty<T>(user: &str, ctx: &CommandContext) -> anyhow::Result<T> {
    bail!(
        "user {user} already has files in {}: import needs an absent or empty user",
        ctx.database_shown()
    )
}

fn needs_token<T>(user: &str) -> anyhow::Result<T> {
    bail!(
        "user {user} does not exist here and sign-up here needs a token: pass --signup-token TOKEN"
    )
}

/// Where staged bodies go: the blob store, described for errors, and the user whose blobs they are.
struct Target<'a> {
    store: &'a Arc<dyn ObjectStore>,
    described: &'a str,
    user: &'a str,
}

/// Streams each body into a fresh blob of the user, checking it against the manifest; then the trailer.
async fn stage<R: AsyncRead + Unpin>(
    reader: &mut ArchiveReader<R>,
    target: &Target<'_>,
    header: &Header,
    entries: Vec<UserEntry>,
    staged: &mut Vec<UserEntry>,
) -> anyhow::Result<Progress> {
    let progress = Progress::new("import-user", header.files, header.bytes);
    for mut entry in entries {
        entry.blob_key = format!("{}/{:032x}", target.user, rand::random::<u128>());
        let key = entry.blob_key.clone();
        let path = entry.path.clone();
        let hash = entry.hash;
        staged.push(entry);
        let length = staged.last().map_or(0, |e| e.length);
        let sent = upload(target.store, &key, reader, length, &|n| progress.bytes(n))
            .await
            .map_err(|err| match err {
                TransferError::Truncated { .. } => {
                    anyhow::anyhow!("the archive ends inside the body of {path} (truncated)")
                }
                err => anyhow::Error::new(err).context(format!(
                    "staging the body of {path} in the {} blob store",
                    target.described
                )),
            })?;
        if sent.hash != hash {
            bail!(
                "the body of {path} does not match its hash in the manifest (tampered or corrupted)"
            );
        }
        progress.file_done();
    }
    let expected = reader.hash_so_far();
    reader.trailer(expected).await?;
    Ok(progress)
}
