//! Where an operator command writes its output (a backup directory, a user archive) before renaming it
//! into place: a hidden sibling, `.<name>.partial-<pid>`, so a failed or interrupted run never leaves a
//! half-written destination under its real name.

use std::path::{Path, PathBuf};

use anyhow::bail;

/// The staging sibling of `dest`; `what` ("directory", "file") names the kind in a refusal when `dest`
/// names nothing to create or its parent directory does not exist.
pub fn staging_sibling(dest: &Path, what: &str) -> anyhow::Result<PathBuf> {
    let Some(name) = dest.file_name() else {
        bail!("{} does not name a {what} to create", dest.display());
    };
    let parent = match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        bail!("{} does not exist", parent.display());
    }
    Ok(parent.join(format!(
        ".{}.partial-{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sibling_is_hidden_beside_the_destination() {
        let dir = tempfile::tempdir().unwrap();
        let staging = staging_sibling(&dir.path().join("out.tar"), "file").unwrap();
        assert_eq!(staging.parent(), Some(dir.path()));
        let name = staging.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(name, format!(".out.tar.partial-{}", std::process::id()));
        let bare = staging_sibling(Path::new("out.tar"), "file").unwrap();
        assert_eq!(bare.parent(), Some(Path::new(".")));
        let missing = dir.path().join("nowhere/out.tar");
        let refused = staging_sibling(&missing, "file").unwrap_err().to_string();
        assert!(refused.ends_with("nowhere does not exist"), "{refused}");
        let refused = staging_sibling(Path::new("/"), "directory")
            .unwrap_err()
            .to_string();
        assert_eq!(refused, "/ does not name a directory to create");
    }
}
