//! Removing the partial data of uploads abandoned long ago (`storage.partial_expiry`).
//!
//! An interrupted upload leaves its hidden partial file for a resume; one nobody resumed
//! would stay forever. A [`PartialSweeper`] walks the tree in passes of bounded work and
//! removes partial files whose last write is older than the expiry. A pass visits whole
//! directories until it has looked at `budget` entries, and the next pass goes on where it
//! stopped; once the tree is done, the next pass starts again at the root.
//!
//! The walk opens each directory beneath the root with `RESOLVE_NO_SYMLINKS`: symlinks are
//! never followed, so it cannot loop or leave the root. A partial file is removed only when
//! it is a regular file (not a link planted under a partial name), it is not locked by an
//! upload in progress (the lock is taken, without waiting, and held over the unlink), it is
//! still the file under that name, and its modification time, read again under the lock, is
//! older than the expiry.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, Dir, FileType, FlockOperation, Mode, OFlags, ResolveFlags};
use tracing::{debug, info};

use crate::confine::{modified_time, open_beneath};
use crate::{Inner, PARTIAL_PREFIX};

/// Walks the tree of an [`FsStorage`](crate::FsStorage) removing expired partial files.
pub struct PartialSweeper {
    inner: Arc<Inner>,
    max_age: Duration,
    /// Directories still to visit in this round, relative to the root.
    pending: Vec<PathBuf>,
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Partial files removed.
    pub removed: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Directory entries looked at.
    pub visited: u64,
    /// The pass reached the end of the tree (the next one starts at the root again).
    pub round_complete: bool,
}

impl PartialSweeper {
    pub(crate) fn new(inner: Arc<Inner>, max_age: Duration) -> Self {
        Self {
            inner,
            max_age,
            pending: Vec::new(),
        }
    }

    /// The expiry this sweeper applies.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// One pass: removes the partial files older than the expiry (at `now`) in the
    /// directories it visits, until about `budget` entries were looked at (whole
    /// directories: a pass ends between two). Blocking; logs what it removed.
    pub fn pass(&mut self, now: SystemTime, budget: u64) -> SweepReport {
        let mut report = SweepReport::default();
        let Some(cutoff) = now.checked_sub(self.max_age) else {
            return report;
        };
        if self.pending.is_empty() {
            self.pending.push(PathBuf::from("."));
        }
        while report.visited < budget {
            let Some(relative) = self.pending.pop() else {
                break;
            };
            self.sweep_directory(&relative, cutoff, &mut report);
        }
        report.round_complete = self.pending.is_empty();
        if report.removed > 0 {
            info!(
                removed = report.removed,
                bytes = report.bytes,
                "removed the partial data of uploads abandoned longer than storage.partial_expiry"
            );
        }
        report
    }

    fn sweep_directory(&mut self, relative: &Path, cutoff: SystemTime, report: &mut SweepReport) {
        let directory = match open_beneath(
            &self.inner.anchor.fd,
            relative,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS,
        ) {
            Ok(directory) => directory,
            // Removed or replaced meanwhile: nothing to do there.
            Err(error) => {
                debug!(directory = %relative.display(), %error, "partial expiry: cannot open");
                return;
            }
        };
        let Ok(entries) = Dir::read_from(&directory) else {
            return;
        };
        for entry in entries {
            let Ok(entry) = entry else {
                return;
            };
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            report.visited += 1;
            let Ok(stat) = rustix::fs::statat(&directory, name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => {
                    use std::os::unix::ffi::OsStrExt;
                    self.pending
                        .push(relative.join(std::ffi::OsStr::from_bytes(name.to_bytes())));
                }
                FileType::RegularFile
                    if name.to_bytes().starts_with(PARTIAL_PREFIX.as_bytes())
                        && is_older(&stat, cutoff) =>
                {
                    if let Some(bytes) = remove_if_expired(&directory, name, cutoff) {
                        report.removed += 1;
                        report.bytes += bytes;
                    }
                }
                _ => {}
            }
        }
    }
}

// The stat field types differ between architectures; the kernel's values are signed.
#[allow(clippy::unnecessary_cast)]
fn is_older(stat: &rustix::fs::Stat, cutoff: SystemTime) -> bool {
    modified_time(stat.st_mtime as i64, stat.st_mtime_nsec as i64)
        .is_some_and(|modified| modified < cutoff)
}

/// Removes the partial file `name` in `directory` if no upload holds it and it is still
/// expired; its size when removed.
fn remove_if_expired(
    directory: &OwnedFd,
    name: &std::ffi::CStr,
    cutoff: SystemTime,
) -> Option<u64> {
    let fd = open_beneath(
        directory,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS,
    )
    .ok()?;
    // An upload in progress (or resuming right now) holds the lock: not ours to remove.
    rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).ok()?;
    let locked = rustix::fs::fstat(&fd).ok()?;
    let current = rustix::fs::statat(directory, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
    if (current.st_dev, current.st_ino) != (locked.st_dev, locked.st_ino)
        || FileType::from_raw_mode(locked.st_mode) != FileType::RegularFile
        || !is_older(&locked, cutoff)
    {
        return None;
    }
    // Unlinked while still locked, so no upload can take it over in between.
    rustix::fs::unlinkat(directory, name, AtFlags::empty()).ok()?;
    Some(u64::try_from(locked.st_size).unwrap_or(0))
}
