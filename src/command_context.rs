//! What the operator commands (backup, restore, export-user, import-user) run against, found the way
//! the server finds it: `--data-dir` (default `~/.homestead`), then `--config` or
//! `<data-dir>/config.toml` with `HOMESTEAD_*` overrides, then the database URL (the embedded SQLite
//! file unless `general.database_url` names one) and the blob store of `[storage]`. Unlike the server,
//! a command never writes a sample config or a key: a missing config file means the defaults.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use homestead_backends::BlobStore;
use homestead_backends::database::Database;
use homestead_config::{Config, DataDir, DatabaseUrl, StorageType, default_data_dir, redact_url};

/// A data directory with its configuration.
#[derive(Debug)]
pub struct CommandContext {
    /// The data directory.
    pub data_dir: DataDir,
    /// The configuration.
    pub config: Config,
    /// The metadata database.
    pub database_url: DatabaseUrl,
}

impl CommandContext {
    /// The context of a server that exists: its data directory must hold the server key.
    pub fn existing(data_dir: Option<&Path>, config: Option<&Path>) -> anyhow::Result<Self> {
        let path = expand(data_dir);
        if !path.is_dir() {
            bail!("data directory {} does not exist", path.display());
        }
        let secret = path.join("secret");
        if !secret.is_file() {
            bail!(
                "data directory {} has no server key ({}): is it a Homestead data directory?",
                path.display(),
                secret.display()
            );
        }
        crate::server_key::load_or_create(&secret)?;
        Self::resolve(&path, config)
    }

    /// The context of a server to fill: the data directory is created when missing.
    pub fn target(data_dir: Option<&Path>, config: Option<&Path>) -> anyhow::Result<Self> {
        Self::resolve(&expand(data_dir), config)
    }

    fn resolve(path: &Path, config: Option<&Path>) -> anyhow::Result<Self> {
        let data_dir = DataDir::open(path)?;
        let file = config.map_or_else(|| data_dir.config_file(), Path::to_path_buf);
        let loaded = if config.is_some() || file.exists() {
            Config::load(&file, false)?
        } else {
            Config::from_sources(None, "(defaults)", std::env::vars())?
        };
        let database_url = loaded
            .config
            .general
            .database_url
            .clone()
            .unwrap_or_else(|| DatabaseUrl::sqlite_file(&data_dir.sqlite_file()));
        Ok(Self {
            data_dir,
            config: loaded.config,
            database_url,
        })
    }

    /// Connects to the metadata database (a SQLite file must exist).
    pub async fn database(&self) -> anyhow::Result<Database> {
        Ok(Database::connect(&self.database_url, false).await?)
    }

    /// Connects to the metadata database, creating a SQLite file, and migrates it.
    pub async fn migrated_database(&self) -> anyhow::Result<Database> {
        let db = Database::connect(&self.database_url, true).await?;
        db.migrate().await?;
        Ok(db)
    }

    /// Opens the blob store and checks that it works.
    pub async fn blob_store(&self) -> anyhow::Result<BlobStore> {
        if self.config.storage.kind == StorageType::InMemory {
            bail!(
                "storage.type = \"in_memory\" keeps file bodies in the server process's memory: \
                 no other process can read or fill them"
            );
        }
        let blobs = BlobStore::open(&self.config.storage, &self.data_dir.blobs_dir())?;
        blobs.probe().await?;
        Ok(blobs)
    }

    /// The database URL with its password hidden.
    pub fn database_shown(&self) -> String {
        redact_url(self.database_url.as_str())
    }

    /// The server key file.
    pub fn secret_file(&self) -> PathBuf {
        self.data_dir.secret_file()
    }

    /// The server key, read from its file.
    pub fn secret(&self) -> anyhow::Result<String> {
        let path = self.secret_file();
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    }
}

/// `--data-dir` (or the default) with a leading `~` expanded.
fn expand(data_dir: Option<&Path>) -> PathBuf {
    let path = data_dir.map_or_else(default_data_dir, Path::to_path_buf);
    match path.strip_prefix("~") {
        Ok(rest) => std::env::var_os("HOME")
            .map_or_else(|| PathBuf::from("."), PathBuf::from)
            .join(rest),
        Err(_) => path,
    }
}
