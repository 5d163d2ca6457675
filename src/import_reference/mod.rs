//! `homestead import-reference`: switches a reference homeserver (pubky-homeserver 0.9.3 or 0.17.1)
//! to Homestead in place. Reads the reference's data directory and PostgreSQL database without changing
//! either, and fills Homestead's own (the `--data-dir` and config of the command line): the server key,
//! users, signup tokens, sessions, grants, entries with their bodies and the event log under the same
//! ids. Every input is checked before any data is imported (only Homestead's data directory and its
//! migrated, empty database may exist by then); running it again finishes an interrupted run and
//! otherwise changes nothing.

mod reference_dir;

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use homestead_backends::BlobStore;
use homestead_backends::import::{self, Bodies, ImportError, ReferenceDb, Tally, TargetDb};
use homestead_config::{Config, DataDir, DatabaseUrl, StorageType, redact_url};

use crate::server_key;
use crate::transfer_progress::{Counts, Progress};
pub use reference_dir::ReferenceDir;

/// What `import-reference` is pointed at.
#[derive(Debug, Clone, Args)]
pub struct ImportReferenceArgs {
    /// The reference's data directory: its `secret`, `config.toml` and `data/files/` tree
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,

    /// The reference's PostgreSQL URL [default: `general.database_url` of its config.toml]
    #[arg(long, value_name = "URL")]
    pub from_database_url: Option<String>,

    /// Hard-link bodies into a file_system blob store on the same filesystem instead of copying them
    /// (then the reference must never write its files again)
    #[arg(long)]
    pub hard_link: bool,

    /// Testing: end the process abruptly after this many files, as a kill would
    #[arg(long, hide = true, value_name = "N")]
    pub abort_after_files: Option<u64>,
}

/// Runs the import into the data directory and config the command line names.
pub fn run(
    data_dir: &std::path::Path,
    config: Option<&std::path::Path>,
    args: &ImportReferenceArgs,
) -> anyhow::Result<()> {
    let reference = ReferenceDir::open(&args.from, args.from_database_url.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(import_into(reference, data_dir, config, args))
}

async fn import_into(
    reference: ReferenceDir,
    data_dir: &std::path::Path,
    config: Option<&std::path::Path>,
    args: &ImportReferenceArgs,
) -> anyhow::Result<()> {
    let shown = redact_url(reference.database_url.as_str());
    let mut source = ReferenceDb::open(reference.database_url.as_str(), &shown).await?;

    let data_dir = DataDir::open(data_dir)?;
    // No sample config is written here: Homestead's first start writes one where none exists.
    let file = config.map_or_else(|| data_dir.config_file(), std::path::Path::to_path_buf);
    let loaded = if config.is_some() || file.exists() {
        Config::load(&file, false)?
    } else {
        Config::from_sources(None, "(defaults)", std::env::vars())?
    }
    .config;
    if loaded.storage.kind == StorageType::InMemory {
        bail!(
            "storage.type = \"in_memory\" keeps file bodies in the server process's memory: \
             the imported bodies would vanish; import into a \"file_system\" or \"s3\" blob store"
        );
    }
    let target_url = loaded
        .general
        .database_url
        .clone()
        .unwrap_or_else(|| DatabaseUrl::sqlite_file(&data_dir.sqlite_file()));
    if target_url.as_str() == reference.database_url.as_str() {
        bail!(
            "Homestead's `general.database_url` is the reference's database {shown}: give Homestead a database of its own"
        );
    }
    let link_root = match (args.hard_link, loaded.storage.kind) {
        (false, _) => None,
        (true, StorageType::FileSystem) => Some(data_dir.blobs_dir()),
        (true, other) => {
            bail!("--hard-link needs a \"file_system\" blob store, not {other:?} (`storage.type`)")
        }
    };
    let key_missing = key_missing(&data_dir, &reference)?;
    let target = TargetDb::open(&target_url).await?;
    import::check_target(&mut source, &target).await?;
    if key_missing {
        server_key::store(&data_dir.secret_file(), &reference.keypair)
            .context("adopting the reference's server key")?;
    }
    let blobs = BlobStore::open(&loaded.storage, &data_dir.blobs_dir())?;
    blobs.probe().await?;
    let bodies = Bodies::new(
        reference.files_root.clone(),
        blobs.objects().clone(),
        link_root,
    );

    let progress = Progress::new("import-reference", 0, 0);
    let abort_after = args.abort_after_files;
    let tally = import::run(&mut source, &target, &bodies, |tally| {
        progress.set(counts(tally));
        if abort_after.is_some_and(|n| tally.files_done >= n) {
            std::process::abort();
        }
    })
    .await
    .map_err(|err| match err {
        // Its text begins "blob store: writing ...": say which store.
        ImportError::Blob { .. } => anyhow::anyhow!("the {} {err}", blobs.describe()),
        err => err.into(),
    })?;
    progress.set(counts(&tally));
    progress.finish();
    let version = source.schema().version();
    source.close().await;
    target.close().await;
    for mismatch in &tally.mismatches {
        eprintln!("mismatch: {mismatch}");
    }
    println!("{}", summary(&tally, version, &shown));
    if !tally.mismatches.is_empty() {
        bail!(
            "{} file bodies did not match their entries and were not imported (listed above); \
             everything else was",
            tally.mismatches.len()
        );
    }
    Ok(())
}

/// Whether Homestead's data directory still needs the reference's server key; a different key there
/// stops the import before anything is written.
fn key_missing(data_dir: &DataDir, reference: &ReferenceDir) -> anyhow::Result<bool> {
    let path = data_dir.secret_file();
    if !path.exists() {
        return Ok(true);
    }
    let ours = server_key::load(&path)?;
    if ours.public_key() != reference.keypair.public_key() {
        bail!(
            "{} holds server key {}, not the reference's {}: use a fresh data directory",
            path.display(),
            ours.public_key(),
            reference.keypair.public_key()
        );
    }
    Ok(false)
}

/// The progress counts of a tally.
fn counts(tally: &Tally) -> Counts {
    Counts {
        files: tally.files_done,
        files_total: tally.files_total,
        bytes: tally.bytes_done,
        bytes_total: tally.bytes_total,
    }
}

/// The closing line.
fn summary(tally: &Tally, version: &str, shown: &str) -> String {
    format!(
        "imported pubky-homeserver {version} from {shown}: users {}, signup tokens {}, sessions {}, \
         grants {}, bearer sessions {}, files {} ({} copied, {} hard-linked, {} already imported), \
         bytes {}, events {}, mismatches {}",
        tally.users,
        tally.tokens,
        tally.sessions,
        tally.grants,
        tally.grant_sessions,
        tally.files_done - tally.mismatches.len() as u64,
        tally.copied,
        tally.linked,
        tally.already,
        tally.bytes_done,
        tally.events,
        tally.mismatches.len()
    )
}
