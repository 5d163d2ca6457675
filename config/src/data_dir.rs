//! The data directory: config file, server key, embedded database and blobs live under it.

use std::io;
use std::path::{Path, PathBuf};

/// The data directory used when neither `--data-dir` nor `HOMESTEAD_DATA_DIR` is given.
pub fn default_data_dir() -> PathBuf {
    home().join(".homestead")
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from)
}

/// A data directory that exists and is writable.
#[derive(Debug, Clone)]
pub struct DataDir {
    path: PathBuf,
}

impl DataDir {
    /// Expands a leading `~/`, creates the directory if needed and checks that it is writable.
    pub fn open(path: &Path) -> io::Result<Self> {
        let path = match path.strip_prefix("~") {
            Ok(rest) => home().join(rest),
            Err(_) => path.to_path_buf(),
        };
        if path.is_file() {
            return Err(io::Error::other(format!(
                "data directory {} is a file",
                path.display()
            )));
        }
        std::fs::create_dir_all(&path).map_err(|err| with_path(&path, err))?;
        let probe = path.join(".homestead-write-probe");
        std::fs::write(&probe, b"").map_err(|err| with_path(&path, err))?;
        std::fs::remove_file(&probe).map_err(|err| with_path(&path, err))?;
        Ok(Self { path })
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `config.toml`, the reference's file name.
    pub fn config_file(&self) -> PathBuf {
        self.path.join("config.toml")
    }

    /// `secret`, the server key file (same name and format as the reference).
    pub fn secret_file(&self) -> PathBuf {
        self.path.join("secret")
    }

    /// The embedded SQLite database.
    pub fn sqlite_file(&self) -> PathBuf {
        self.path.join("homestead.db")
    }

    /// The root of the filesystem blob store.
    pub fn blobs_dir(&self) -> PathBuf {
        self.path.join("blobs")
    }
}

fn with_path(path: &Path, err: io::Error) -> io::Error {
    io::Error::new(
        err.kind(),
        format!("data directory {}: {err}", path.display()),
    )
}
