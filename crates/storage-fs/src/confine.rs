//! Opening paths below the root so that the kernel, not string checks, keeps us inside it.
//!
//! Every lookup goes through `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`
//! relative to an already open directory: symlinks are followed only while they stay below
//! that directory, `/proc` magic links never, and a component swapped for a symlink during
//! the walk cannot take us out either, since the kernel checks the walk itself. Operations
//! that name an entry (mkdir, unlink, rename) run `*at` calls on a single name inside a
//! directory opened that way: a single name has no component left to escape through.
//!
//! The directory every lookup starts from is an [`Anchor`]: the storage root, or, for a
//! user's session, that user's home ([`crate::FsStorage::scoped`]). Paths keep their full
//! form (`/alice/docs/a.txt`) everywhere, for messages and for the session; only the part
//! below the anchor is handed to the kernel, so a symlink in alice's home that points to
//! `../bob` is refused by the kernel like one that points out of the root.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use ferroftp_backend::{FileKind, FileMeta, StorageError, StorageErrorKind, VirtualPath};
use rustix::fs::{Mode, OFlags, ResolveFlags, openat2};
use rustix::io::Errno;

use crate::PARTIAL_PREFIX;
use crate::error::fs_error;

/// The resolve flags of every open: stay beneath the starting directory, no magic links.
const CONFINED: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

/// How often an open is retried when the kernel reports a race it could not rule out.
const RACE_RETRIES: usize = 16;

/// `openat2(base, relative, flags | O_CLOEXEC, mode, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS
/// | extra)`.
pub(crate) fn open_beneath<RelativePath: rustix::path::Arg + Copy>(
    base: impl AsFd,
    relative: RelativePath,
    flags: OFlags,
    mode: Mode,
    extra: ResolveFlags,
) -> io::Result<OwnedFd> {
    let mut attempt = 0;
    loop {
        match openat2(
            base.as_fd(),
            relative,
            flags | OFlags::CLOEXEC,
            mode,
            CONFINED | extra,
        ) {
            // openat2(2): EAGAIN under RESOLVE_BENEATH means a concurrent rename or mount
            // kept the kernel from proving the walk stayed inside; it asks for a retry.
            Err(errno)
                if (errno == Errno::AGAIN || errno == Errno::INTR) && attempt < RACE_RETRIES =>
            {
                attempt += 1;
            }
            result => return result.map_err(io::Error::from),
        }
    }
}

/// An open directory that lookups stay beneath, and where it is in the path namespace.
#[derive(Debug)]
pub(crate) struct Anchor {
    /// The directory itself.
    pub(crate) fd: OwnedFd,
    /// Its path: the root (`/`) for the whole storage, the home for a user's session.
    pub(crate) base: VirtualPath,
}

impl Anchor {
    /// Whether `path` names the anchor directory itself (which has no parent to work in).
    pub(crate) fn is_top(&self, path: &VirtualPath) -> bool {
        *path == self.base
    }
}

/// `path` relative to `anchor`, as `openat2` wants it (`.` for the anchor itself), after
/// refusing names that would address a hidden partial upload. A path outside the anchor (a
/// session's storage asked about another user's directory) is `PermissionDenied`.
pub(crate) fn relative<'path>(
    anchor: &Anchor,
    path: &'path VirtualPath,
) -> Result<&'path str, StorageError> {
    if let Some(segment) = path
        .segments()
        .find(|segment| segment.starts_with(PARTIAL_PREFIX))
    {
        return Err(StorageError::new(
            StorageErrorKind::InvalidName,
            format!("{path}: {segment:?} is reserved for partial uploads"),
        ));
    }
    if anchor.base.is_root() {
        return Ok(if path.is_root() {
            "."
        } else {
            path.relative_str()
        });
    }
    match path.as_str().strip_prefix(anchor.base.as_str()) {
        Some("") => Ok("."),
        Some(rest) if rest.starts_with('/') => Ok(&rest[1..]),
        _ => Err(StorageError::new(
            StorageErrorKind::PermissionDenied,
            format!("{path} is outside {}", anchor.base),
        )),
    }
}

/// Opens `path` below `root`, following symlinks only while they stay inside.
pub(crate) fn open_path(
    anchor: &Anchor,
    path: &VirtualPath,
    flags: OFlags,
) -> Result<OwnedFd, StorageError> {
    open_beneath(
        &anchor.fd,
        relative(anchor, path)?,
        flags,
        Mode::empty(),
        ResolveFlags::empty(),
    )
    .map_err(|error| fs_error(error, "open", path))
}

/// [`open_path`] only if every name on the way is in the kernel's lookup cache
/// (`RESOLVE_CACHED`, Linux 5.12): such an open cannot wait for the disk, so it may run on
/// an async thread. `Ok(None)` when the walk would need the disk (or the kernel does not
/// know the flag): the caller goes to the blocking pool.
pub(crate) fn open_path_cached(
    anchor: &Anchor,
    path: &VirtualPath,
    flags: OFlags,
) -> Result<Option<OwnedFd>, StorageError> {
    match openat2(
        &anchor.fd,
        relative(anchor, path)?,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        CONFINED | ResolveFlags::CACHED,
    ) {
        Ok(fd) => Ok(Some(fd)),
        // EAGAIN: not cached, or a concurrent rename (the blocking path retries that);
        // EINVAL: a kernel before RESOLVE_CACHED.
        Err(errno) if errno == Errno::AGAIN || errno == Errno::INVAL => Ok(None),
        Err(errno) => Err(fs_error(io::Error::from(errno), "open", path)),
    }
}

/// Opens the directory `path`, readable (so it can be listed and fsynced).
pub(crate) fn open_directory(anchor: &Anchor, path: &VirtualPath) -> Result<OwnedFd, StorageError> {
    open_path(anchor, path, OFlags::RDONLY | OFlags::DIRECTORY)
}

/// The directory containing `path`, opened, and `path`'s last name inside it. The root has
/// no parent: callers decide what an operation on the root means before asking.
pub(crate) fn open_parent<'path>(
    anchor: &Anchor,
    path: &'path VirtualPath,
) -> Result<(OwnedFd, &'path str), StorageError> {
    // Checks the last name for the partial prefix too, which `parent()` would not.
    if relative(anchor, path)? == "." {
        return Err(StorageError::new(
            StorageErrorKind::PermissionDenied,
            format!("{path} is the top of this storage: it has no parent here"),
        ));
    }
    let name = path.file_name().ok_or_else(|| {
        StorageError::new(StorageErrorKind::PermissionDenied, "the root has no parent")
    })?;
    Ok((open_directory(anchor, &path.parent())?, name))
}

/// Facts about an open file or directory (an `O_PATH` descriptor is enough).
pub(crate) fn meta_of(fd: OwnedFd) -> io::Result<FileMeta> {
    Ok(stat_meta(&rustix::fs::fstat(&fd)?))
}

/// What the protocol needs from a `stat`.
// The stat field types differ between architectures (unsigned on x86_64, signed elsewhere);
// the kernel's values are signed (`time_t`): a time before 1970 is negative, and read as
// unsigned it became a date billions of years ahead, whose `SystemTime` overflowed (a
// panic that killed the listing of the whole directory).
#[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
pub(crate) fn stat_meta(stat: &rustix::fs::Stat) -> FileMeta {
    let kind = match rustix::fs::FileType::from_raw_mode(stat.st_mode) {
        rustix::fs::FileType::Directory => FileKind::Directory,
        rustix::fs::FileType::Symlink => FileKind::Symlink,
        _ => FileKind::File,
    };
    let modified = modified_time(stat.st_mtime as i64, stat.st_mtime_nsec as i64);
    FileMeta {
        kind,
        size: u64::try_from(stat.st_size).unwrap_or(0),
        modified,
        mode: stat.st_mode & 0o7777,
    }
}

/// The modification time `seconds` (negative before 1970) and `nanoseconds` after it, or
/// `None` when `SystemTime` cannot hold it: any time a filesystem stores is shown, never a
/// panic.
pub(crate) fn modified_time(seconds: i64, nanoseconds: i64) -> Option<std::time::SystemTime> {
    let nanoseconds = u64::try_from(nanoseconds)
        .ok()
        .filter(|nanoseconds| *nanoseconds < 1_000_000_000)
        .unwrap_or(0);
    let whole = std::time::Duration::from_secs(seconds.unsigned_abs());
    let second = if seconds >= 0 {
        std::time::UNIX_EPOCH.checked_add(whole)
    } else {
        std::time::UNIX_EPOCH.checked_sub(whole)
    }?;
    second.checked_add(std::time::Duration::from_nanos(nanoseconds))
}
