//! [`SmallDisk`]: a small tmpfs mounted on a directory, to run a command out of space. Needs root (as
//! in CI); where `mount` fails the test fails, unless `TEST_ALLOW_NO_TMPFS=1` says to skip it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a fixed size on a directory, unmounted when dropped.
pub struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it: `4m`) on `dir`, which must exist. None
    /// (the test should end) when it cannot and `TEST_ALLOW_NO_TMPFS=1`; a panic otherwise.
    pub fn mount(dir: &Path, size: &str) -> Option<Self> {
        let mount = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("run mount");
        if mount.status.success() {
            return Some(Self {
                dir: dir.to_path_buf(),
            });
        }
        let why = String::from_utf8_lossy(&mount.stderr);
        if std::env::var("TEST_ALLOW_NO_TMPFS").as_deref() == Ok("1") {
            eprintln!("SKIPPED (TEST_ALLOW_NO_TMPFS=1): cannot mount a small tmpfs: {why}");
            return None;
        }
        panic!(
            "cannot mount a small tmpfs on {} (needs root; set TEST_ALLOW_NO_TMPFS=1 to skip): {why}",
            dir.display()
        );
    }

    /// Grows (or shrinks) the tmpfs to `size`, keeping its files.
    pub fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "remount {} to {size}", self.dir.display());
    }

    /// The files under the mount point, relative to it, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut files = Vec::new();
        collect(&self.dir, &self.dir, &mut files);
        files.sort();
        files
    }
}

fn collect(root: &Path, dir: &Path, into: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir)
        .expect("read the small disk")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, into);
        } else {
            into.push(path.strip_prefix(root).unwrap().display().to_string());
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a server that still has a file open there does not keep the mount.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
