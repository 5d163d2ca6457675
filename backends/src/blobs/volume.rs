//! The size and free space of the volume that holds a filesystem blob store, for the console's
//! overview: a directory has a fixed total, unlike process memory or an S3 bucket.

use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A volume's size and the bytes still free on it for unprivileged writers (`statvfs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeSpace {
    /// The volume's size.
    pub total_bytes: u64,
    /// The bytes a process without root privileges can still write.
    pub free_bytes: u64,
}

/// The [`VolumeSpace`] of the volume holding `dir`.
pub(crate) fn of(dir: &Path) -> io::Result<VolumeSpace> {
    let path = CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut stat = MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and `stat` points to memory
    // the size of a `statvfs` that the call fills in.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the call succeeded, so it filled the structure (which started zeroed anyway).
    let stat = unsafe { stat.assume_init() };
    // The field types differ between platforms (c_ulong, fsblkcnt_t, u32 or u64): all fit a u64, and
    // on Linux the casts change nothing.
    #[allow(clippy::unnecessary_cast)]
    let fragment = stat.f_frsize as u64;
    #[allow(clippy::unnecessary_cast)]
    let (blocks, available) = (stat.f_blocks as u64, stat.f_bavail as u64);
    Ok(VolumeSpace {
        total_bytes: blocks.saturating_mul(fragment),
        free_bytes: available.saturating_mul(fragment),
    })
}
