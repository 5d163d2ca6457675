//! The server key: a 32-byte Ed25519 seed in `<data-dir>/secret`, lower-case hex, mode 0600, the same file
//! and format as the reference homeserver, so an operator who switches keeps the server's identity.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, bail};
use pkarr::Keypair;

/// Reads the key, or creates it from the OS CSPRNG when the file does not exist. An existing file is never
/// overwritten, even when it is invalid: that stops the start instead.
pub fn load_or_create(path: &Path) -> anyhow::Result<Keypair> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text).with_context(|| format!("server key {}", path.display())),
        Err(err) if err.kind() == ErrorKind::NotFound => create(path),
        Err(err) => {
            Err(err).with_context(|| format!("cannot read the server key {}", path.display()))
        }
    }
}

/// Reads an existing key file (the reference's, when importing it); a missing file is an error.
pub fn load(path: &Path) -> anyhow::Result<Keypair> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the server key {}", path.display()))?;
    parse(&text).with_context(|| format!("server key {}", path.display()))
}

fn parse(text: &str) -> anyhow::Result<Keypair> {
    let hex_text = text.trim();
    if hex_text.len() != 64 {
        bail!("expected 64 hex characters, found {}", hex_text.len());
    }
    let mut seed = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut seed).context("not hexadecimal")?;
    Ok(Keypair::from_secret_key(&seed))
}

fn create(path: &Path) -> anyhow::Result<Keypair> {
    let keypair = Keypair::random();
    store(path, &keypair)?;
    Ok(keypair)
}

/// Writes `keypair` as a new key file, mode 0600; an existing file is never replaced.
pub fn store(path: &Path, keypair: &Keypair) -> anyhow::Result<()> {
    // create_new: if another process wrote the file meanwhile, fail rather than replace its key.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create the server key {}", path.display()))?;
    file.write_all(hex::encode(keypair.secret_key()).as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write the server key {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn created_once_with_mode_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let created = load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 64);
        assert!(
            text.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
        let again = load_or_create(&path).unwrap();
        assert_eq!(again.public_key(), created.public_key());
    }

    #[test]
    fn reads_the_reference_format_and_test_vector() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, format!("  {}\n", "00".repeat(32))).unwrap();
        let key = load_or_create(&path).unwrap();
        assert_eq!(
            key.public_key().to_string(),
            "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo"
        );
        std::fs::write(&path, "0A".repeat(32)).unwrap();
        assert!(load_or_create(&path).is_ok(), "upper-case hex is accepted");
    }

    #[test]
    fn an_invalid_file_stops_the_start_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        for bad in ["abc", &"zz".repeat(32), &"00".repeat(33)] {
            std::fs::write(&path, bad).unwrap();
            let err = format!("{:#}", load_or_create(&path).unwrap_err());
            assert!(err.starts_with("server key"), "{err}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), bad);
        }
    }
}
