//! The sweep of abandoned staging files of a filesystem store. `LocalFileSystem` writes a blob to
//! `<key>#<n>` and renames it into place; a crash in between leaves the staging file, which listings
//! never show (object_store hides such names) and the orphan sweep therefore never sees. object_store
//! offers no way to find them, so this walk does, by that naming.

use std::path::Path;
use std::time::Duration;

/// Removes the staging files under `root` older than `grace`; returns how many were removed.
pub fn sweep(root: &Path, grace: Duration) -> std::io::Result<usize> {
    let mut removed = 0;
    walk(root, grace, &mut removed)?;
    Ok(removed)
}

fn walk(dir: &Path, grace: Duration, removed: &mut usize) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&entry.path(), grace, removed)?;
        } else if kind.is_file() && is_staging(&entry.file_name().to_string_lossy()) {
            let age = entry.metadata()?.modified()?.elapsed().unwrap_or_default();
            if age >= grace {
                std::fs::remove_file(entry.path())?;
                *removed += 1;
            }
        }
    }
    Ok(())
}

/// Whether a file name is a staging name, `<name>#<digits>` (the names object_store never lists).
fn is_staging(name: &str) -> bool {
    name.split_once('#')
        .is_some_and(|(_, suffix)| !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_staging_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user");
        std::fs::create_dir(&user).unwrap();
        for name in ["blob", "blob#1", "other#x"] {
            std::fs::write(user.join(name), b"x").unwrap();
        }
        assert_eq!(sweep(dir.path(), Duration::from_secs(3600)).unwrap(), 0);
        assert_eq!(sweep(dir.path(), Duration::ZERO).unwrap(), 1);
        assert!(!user.join("blob#1").exists());
        assert!(user.join("blob").exists() && user.join("other#x").exists());
    }
}
