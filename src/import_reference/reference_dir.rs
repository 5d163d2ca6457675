//! The reference homeserver's data directory (OPERATIONS.md §11): its server key `secret`, its
//! `config.toml` (read for the database URL and the storage type only, leniently, so keys Homestead
//! does not know do not matter) and its file-system storage tree `data/files/`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use homestead_config::{DatabaseKind, DatabaseUrl};
use pkarr::Keypair;

/// The reference's database when its config names none (OPERATIONS.md §3.3).
const DEFAULT_DATABASE_URL: &str = "postgres://localhost:5432/pubky_homeserver";

/// A reference data directory, checked.
#[derive(Debug)]
pub struct ReferenceDir {
    /// The server key.
    pub keypair: Keypair,
    /// The PostgreSQL database.
    pub database_url: DatabaseUrl,
    /// Where its bodies are.
    pub files_root: PathBuf,
}

impl ReferenceDir {
    /// Reads the directory; `database_url` overrides the one its config names.
    pub fn open(dir: &Path, database_url: Option<&str>) -> anyhow::Result<Self> {
        if !dir.is_dir() {
            bail!("reference data directory {} does not exist", dir.display());
        }
        let secret = dir.join("secret");
        if !secret.is_file() {
            bail!(
                "reference data directory {} has no server key `secret`",
                dir.display()
            );
        }
        let keypair = crate::server_key::load(&secret)?;
        let config_path = dir.join("config.toml");
        let config = match std::fs::read_to_string(&config_path) {
            Ok(text) => text
                .parse::<toml::Table>()
                .with_context(|| format!("{}: not valid TOML", config_path.display()))?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
            Err(err) => {
                return Err(err).with_context(|| format!("cannot read {}", config_path.display()));
            }
        };
        let key = |section: &str, key: &str| {
            config
                .get(section)
                .and_then(|s| s.get(key))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        if let Some(kind) = key("storage", "type")
            && kind != "file_system"
        {
            bail!(
                "{}: `storage.type` is {kind:?}; only the reference's \"file_system\" storage can be imported",
                config_path.display()
            );
        }
        let url = match database_url {
            Some(url) => url.to_string(),
            None => key("general", "database_url").unwrap_or_else(|| DEFAULT_DATABASE_URL.into()),
        };
        let database_url = DatabaseUrl::try_from(url.clone())
            .map_err(|err| anyhow::anyhow!("reference database URL: {err}"))?;
        if database_url.kind() != DatabaseKind::Postgres {
            bail!(
                "reference database URL: the reference keeps its data in PostgreSQL, not in {url}"
            );
        }
        Ok(Self {
            keypair,
            database_url,
            files_root: dir.join("data").join("files"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(secret: Option<&str>, config: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        if let Some(secret) = secret {
            std::fs::write(dir.path().join("secret"), secret).unwrap();
        }
        if let Some(config) = config {
            std::fs::write(dir.path().join("config.toml"), config).unwrap();
        }
        dir
    }

    #[test]
    fn reads_key_url_and_files_root() {
        let dir = dir_with(
            Some(&"00".repeat(32)),
            Some("[general]\ndatabase_url = \"postgres://h/db\"\nfuture_key = 1\n"),
        );
        let found = ReferenceDir::open(dir.path(), None).unwrap();
        assert_eq!(
            found.keypair.public_key().to_string(),
            "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo"
        );
        assert_eq!(found.database_url.as_str(), "postgres://h/db");
        assert_eq!(found.files_root, dir.path().join("data/files"));
        let flag = ReferenceDir::open(dir.path(), Some("postgres://other/db")).unwrap();
        assert_eq!(flag.database_url.as_str(), "postgres://other/db");
        let no_config = dir_with(Some(&"00".repeat(32)), None);
        let defaults = ReferenceDir::open(no_config.path(), None).unwrap();
        assert_eq!(defaults.database_url.as_str(), DEFAULT_DATABASE_URL);
    }

    #[test]
    fn bad_directories_say_what_and_where() {
        let err = |dir: &Path, url: Option<&str>| {
            format!("{:#}", ReferenceDir::open(dir, url).unwrap_err())
        };
        let missing = err(Path::new("/nonexistent/ref"), None);
        assert!(
            missing.contains("/nonexistent/ref does not exist"),
            "{missing}"
        );
        let no_secret = dir_with(None, Some(""));
        let text = err(no_secret.path(), None);
        assert!(text.contains("has no server key `secret`"), "{text}");
        let bad_secret = dir_with(Some("xyz"), None);
        assert!(err(bad_secret.path(), None).contains("server key"));
        let gcs = dir_with(
            Some(&"00".repeat(32)),
            Some("[storage]\ntype = \"google_bucket\"\n"),
        );
        assert!(err(gcs.path(), None).contains("google_bucket"));
        let ok = dir_with(Some(&"00".repeat(32)), None);
        assert!(err(ok.path(), Some("sqlite:///x.db")).contains("PostgreSQL"));
        assert!(err(ok.path(), Some("mysql://x/y")).contains("reference database URL"));
    }
}
