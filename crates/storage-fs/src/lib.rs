//! Local-directory storage for ferroftp, confined to its root by the kernel.
//!
//! [`FsStorage`] serves one directory. Every path is opened relative to a descriptor of that
//! directory with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, so a symlink (or a
//! rename racing the lookup) can never lead outside it: links that stay inside work, links
//! that leave are refused with `PermissionDenied`. Blocking calls run on tokio's blocking
//! pool.
//!
//! Uploads are written to a hidden file beside their target, named [`PARTIAL_PREFIX`] +
//! name and locked with `flock` while in use; commit makes the data durable and renames it
//! over the target, so readers see the old version or the new one, never half of one. An
//! abandoned upload leaves its partial file behind for a later resume. Clients can neither
//! see nor name partial files.
//!
//! Linux only (openat2 needs Linux 5.6).

mod confine;
mod error;
mod expiry;
mod listing;
mod upload;
mod write_behind;

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use ferroftp_backend::{
    Capabilities, Download, DownloadBody, EntryStream, FileMeta, LocalFile, Storage, StorageError,
    StorageErrorKind, Upload, UploadTarget, VirtualPath, WriteMode,
};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Timespec, Timestamps};

use crate::confine::{
    Anchor, meta_of, open_beneath, open_directory, open_parent, open_path, open_path_cached,
};
use crate::error::fs_error;
pub use crate::expiry::{PartialSweeper, SweepReport};

/// The name prefix of hidden partial uploads: `.ferroftp-partial.report.pdf` holds the data
/// of an unfinished upload of `report.pdf` (names too long for that get a hash instead). Listings hide such files and client paths with a
/// segment starting with it are refused as `InvalidName`.
pub const PARTIAL_PREFIX: &str = ".ferroftp-partial.";

/// Permission bits for new files and directories, before the process umask (as `open(2)`
/// and `mkdir(2)` callers conventionally pass them: the operator's umask decides).
const NEW_FILE_MODE: u32 = 0o666;
const NEW_DIRECTORY_MODE: u32 = 0o777;

/// The permission bits SITE CHMOD may set by default (`storage.chmod_mask`): everything but
/// group and other write, which the usual umask (022) keeps off new files too. A client's
/// mode is narrowed to the mask, never refused for bits outside it.
pub const DEFAULT_CHMOD_MASK: u32 = 0o755;

/// The bits a mode may hold at all: setuid, setgid and sticky are never set for a client.
const PERMISSION_BITS: u32 = 0o777;

/// A [`Storage`] on a local directory.
#[derive(Clone)]
pub struct FsStorage {
    inner: Arc<Inner>,
}

/// What the blocking tasks share.
struct Inner {
    /// The directory every lookup starts from and stays beneath: the root, or a user's home
    /// for a [scoped](FsStorage::scoped) storage.
    anchor: Anchor,
    /// For messages only; never used to open anything.
    root_path: PathBuf,
    /// Source of STOU names; seeded from the clock so restarts rarely retry.
    next_unique: Arc<AtomicU64>,
    /// Whether an upload is fsynced before it is published (see
    /// [`FsStorage::with_fsync_uploads`]).
    fsync_uploads: bool,
    /// The bits SITE CHMOD may set (see [`FsStorage::with_chmod_mask`]).
    chmod_mask: u32,
    /// The root is on a filesystem kept in memory (tmpfs, ramfs): nothing is ever written
    /// back, so an upload gives no writeback hints, and filesystem calls run in place
    /// instead of on the blocking pool (they wait for no device). A disk mounted below such
    /// a root is served the same way: its calls then wait on the session's thread.
    memory_backed: bool,
}

impl FsStorage {
    /// Serves the directory `root`, which must exist. The path is resolved once, here (it
    /// may itself be or contain a symlink: it is the operator's choice); everything after
    /// is relative to the directory it named.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root_path = root.into();
        let root = rustix::fs::open(
            &root_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // TMPFS_MAGIC and RAMFS_MAGIC (statfs(2)).
        let memory_backed = rustix::fs::fstatfs(&root)
            .is_ok_and(|filesystem| matches!(filesystem.f_type as u64, 0x0102_1994 | 0x8584_58f6));
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        Ok(Self {
            inner: Arc::new(Inner {
                anchor: Anchor {
                    fd: root,
                    base: VirtualPath::root(),
                },
                root_path,
                next_unique: Arc::new(AtomicU64::new(seed ^ (u64::from(std::process::id()) << 40))),
                fsync_uploads: true,
                chmod_mask: DEFAULT_CHMOD_MASK,
                memory_backed,
            }),
        })
    }

    /// Whether uploads are fsynced before they replace the previous version (default: yes).
    ///
    /// With `true`, a 226 reply means the new version is on disk, and after a power loss
    /// the name holds the old version or the complete new one. With `false` the rename
    /// still publishes the upload atomically and nothing changes for crashes of the server
    /// or the client, but the data reaches the disk when the kernel writes it back (within
    /// about 30 s by default): a power loss before that can lose the new version, and on
    /// filesystems that do not order data before renames (ext4 does, by `auto_da_alloc`)
    /// the old one with it. Costs the disk's write speed per upload and one flush per file.
    pub fn with_fsync_uploads(mut self, fsync: bool) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("configured before the storage is shared")
            .fsync_uploads = fsync;
        self
    }

    /// The permission bits SITE CHMOD may set (default [`DEFAULT_CHMOD_MASK`]): a requested
    /// mode is ANDed with it. Bits above `0o777` in the mask are ignored: setuid, setgid
    /// and sticky are never set.
    pub fn with_chmod_mask(mut self, mask: u32) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("configured before the storage is shared")
            .chmod_mask = mask & PERMISSION_BITS;
        self
    }

    /// This storage as one user sees it: every lookup starts at `home` and stays beneath it,
    /// enforced by the kernel (`RESOLVE_BENEATH` from an open descriptor of the home) like
    /// the root's own confinement, so a symlink in the home that leads to another user's
    /// directory (`rel_bob -> ../bob`) is refused, not followed. Paths keep their full form
    /// (`/alice/...`); one outside `home` is `PermissionDenied`. The home is opened here
    /// (beneath the root, following in-root symlinks: where a home is, is the operator's
    /// choice). Blocking.
    pub fn scoped_to(&self, home: &VirtualPath) -> Result<Self, StorageError> {
        if *home == self.inner.anchor.base {
            return Ok(self.clone());
        }
        let fd = open_directory(&self.inner.anchor, home)?;
        Ok(self.anchored_at(fd, home))
    }

    /// This storage's settings, with lookups starting at `fd`, the directory `home`.
    fn anchored_at(&self, fd: OwnedFd, home: &VirtualPath) -> Self {
        Self {
            inner: Arc::new(Inner {
                anchor: Anchor {
                    fd,
                    base: home.clone(),
                },
                root_path: self.inner.root_path.clone(),
                next_unique: Arc::clone(&self.inner.next_unique),
                fsync_uploads: self.inner.fsync_uploads,
                chmod_mask: self.inner.chmod_mask,
                memory_backed: self.inner.memory_backed,
            }),
        }
    }

    /// A sweeper that removes the partial data of uploads abandoned for longer than
    /// `max_age` (`storage.partial_expiry`), in passes of bounded work: see
    /// [`PartialSweeper::pass`].
    pub fn partial_sweeper(&self, max_age: std::time::Duration) -> PartialSweeper {
        PartialSweeper::new(Arc::clone(&self.inner), max_age)
    }

    /// The directory served, as given to [`new`](Self::new).
    pub fn root(&self) -> &Path {
        &self.inner.root_path
    }

    /// Runs filesystem work: on tokio's blocking pool, or in place when the root is in memory
    /// ([`Inner::memory_backed`]), where no call waits for a device and a hand-off to
    /// another thread would cost more than the call (two wake-ups and a context switch each
    /// way, docs/BENCHMARKS.md "P10").
    async fn filesystem_work<T, Work>(&self, work: Work) -> Result<T, StorageError>
    where
        T: Send + 'static,
        Work: FnOnce(&Inner) -> Result<T, StorageError> + Send + 'static,
    {
        if self.inner.memory_backed {
            return work(&self.inner);
        }
        let inner = Arc::clone(&self.inner);
        on_blocking_pool(move || work(&inner)).await
    }
}

/// Runs blocking filesystem work on tokio's blocking pool.
async fn on_blocking_pool<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        StorageError::new(StorageErrorKind::Local, "blocking filesystem task failed")
            .with_source(error)
    })?
}

impl fmt::Debug for FsStorage {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("FsStorage")
            .field("root", &self.inner.root_path)
            .finish()
    }
}

/// Flags for opening a file to read. `O_NONBLOCK` keeps the open of a FIFO someone put in
/// the tree from hanging; it has no effect on regular files.
const READ_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::NOCTTY).union(OFlags::NONBLOCK);

/// `file` with its size, if it is a regular file.
fn regular_file(file: File, path: &VirtualPath) -> Result<(File, u64), StorageError> {
    let metadata = file
        .metadata()
        .map_err(|error| fs_error(error, "stat", path))?;
    if metadata.is_dir() {
        return Err(StorageError::new(
            StorageErrorKind::IsADirectory,
            format!("{path} is a directory"),
        ));
    }
    if !metadata.is_file() {
        return Err(StorageError::new(
            StorageErrorKind::PermissionDenied,
            format!("{path} is not a regular file"),
        ));
    }
    Ok((file, metadata.len()))
}

/// Checks that `offset` (REST) lies within the file's `size` bytes. The file is not
/// positioned: a download reads at explicit offsets, or seeks when it becomes a stream.
fn check_offset(size: u64, path: &VirtualPath, offset: u64) -> Result<(), StorageError> {
    if offset > size {
        return Err(StorageError::new(
            StorageErrorKind::InvalidRange,
            format!("offset {offset} beyond the {size} bytes of {path}"),
        ));
    }
    Ok(())
}

impl Inner {
    /// A STOU name candidate; uniqueness itself comes from an exclusive create.
    fn unique_name(&self) -> String {
        format!(
            "stou.{:016x}",
            self.next_unique.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn metadata(&self, path: &VirtualPath) -> Result<FileMeta, StorageError> {
        let fd = open_path(&self.anchor, path, OFlags::PATH)?;
        meta_of(fd).map_err(|error| fs_error(error, "stat", path))
    }

    /// Opens a regular file for reading.
    fn open_for_reading(&self, path: &VirtualPath) -> Result<(File, u64), StorageError> {
        let file = File::from(open_path(&self.anchor, path, READ_FLAGS)?);
        regular_file(file, path)
    }

    fn read(&self, path: &VirtualPath, offset: u64) -> Result<(File, u64), StorageError> {
        let (file, size) = self.open_for_reading(path)?;
        check_offset(size, path, offset)?;
        Ok((file, size))
    }

    /// [`read`](Self::read) without waiting for the disk, or `Ok(None)` when the path is not
    /// in the kernel's lookup cache. Opening a cached path and stat-ing the open file touch
    /// only memory; the bytes are read later, by the transfer.
    fn read_cached(
        &self,
        path: &VirtualPath,
        offset: u64,
    ) -> Result<Option<(File, u64)>, StorageError> {
        let Some(fd) = open_path_cached(&self.anchor, path, READ_FLAGS)? else {
            return Ok(None);
        };
        let (file, size) = regular_file(File::from(fd), path)?;
        check_offset(size, path, offset)?;
        Ok(Some((file, size)))
    }

    fn resumable_size(&self, path: &VirtualPath) -> Result<u64, StorageError> {
        match self.metadata(path) {
            Ok(meta) if meta.is_dir() => Err(StorageError::new(
                StorageErrorKind::IsADirectory,
                format!("{path} is a directory"),
            )),
            Ok(meta) => Ok(meta.size),
            Err(error) if error.kind == StorageErrorKind::NotFound && !self.anchor.is_top(path) => {
                let (directory, name) = open_parent(&self.anchor, path)?;
                let partial = open_beneath(
                    &directory,
                    &upload::partial_name(name),
                    OFlags::PATH | OFlags::NOFOLLOW,
                    Mode::empty(),
                    ResolveFlags::NO_SYMLINKS,
                );
                match partial.and_then(meta_of) {
                    Ok(meta) if meta.kind == ferroftp_backend::FileKind::File => Ok(meta.size),
                    _ => Err(error),
                }
            }
            Err(error) => Err(error),
        }
    }

    fn make_dir(&self, path: &VirtualPath) -> Result<(), StorageError> {
        if self.anchor.is_top(path) {
            return Err(StorageError::new(
                StorageErrorKind::AlreadyExists,
                "the root exists",
            ));
        }
        let (directory, name) = open_parent(&self.anchor, path)?;
        rustix::fs::mkdirat(&directory, name, Mode::from_raw_mode(NEW_DIRECTORY_MODE))
            .map_err(|error| fs_error(error, "mkdir", path))
    }

    fn remove_dir(&self, path: &VirtualPath) -> Result<(), StorageError> {
        if self.anchor.is_top(path) {
            return Err(StorageError::new(
                StorageErrorKind::PermissionDenied,
                "the root cannot be removed",
            ));
        }
        let (directory, name) = open_parent(&self.anchor, path)?;
        match rustix::fs::unlinkat(&directory, name, AtFlags::REMOVEDIR) {
            // The client saw an empty directory; hidden leftovers of abandoned uploads must
            // not make RMD fail for a reason it cannot see or fix.
            Err(errno) if errno == rustix::io::Errno::NOTEMPTY => {
                upload::discard_partials_in(&directory, name, path)?;
                rustix::fs::unlinkat(&directory, name, AtFlags::REMOVEDIR)
                    .map_err(|error| fs_error(error, "rmdir", path))
            }
            result => result.map_err(|error| fs_error(error, "rmdir", path)),
        }
    }

    fn remove_file(&self, path: &VirtualPath) -> Result<(), StorageError> {
        if self.anchor.is_top(path) {
            return Err(StorageError::new(
                StorageErrorKind::IsADirectory,
                "the root",
            ));
        }
        let (directory, name) = open_parent(&self.anchor, path)?;
        rustix::fs::unlinkat(&directory, name, AtFlags::empty())
            .map_err(|error| fs_error(error, "unlink", path))
    }

    fn rename(&self, from: &VirtualPath, to: &VirtualPath) -> Result<(), StorageError> {
        if self.anchor.is_top(from) || self.anchor.is_top(to) {
            return Err(StorageError::new(
                StorageErrorKind::PermissionDenied,
                "the root cannot be renamed or replaced",
            ));
        }
        if from != to && to.strip_base(from).is_some() {
            return Err(StorageError::new(
                StorageErrorKind::InvalidName,
                format!("cannot move {from} into itself ({to})"),
            ));
        }
        let (from_directory, from_name) = open_parent(&self.anchor, from)?;
        let (to_directory, to_name) = open_parent(&self.anchor, to)?;
        rustix::fs::renameat(&from_directory, from_name, &to_directory, to_name)
            .map_err(|error| fs_error(error, &format!("rename to {to} from"), from))
    }

    fn set_modified(&self, path: &VirtualPath, time: SystemTime) -> Result<(), StorageError> {
        let fd = open_path(&self.anchor, path, OFlags::PATH)?;
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            },
            last_modification: timespec(time).ok_or_else(|| {
                StorageError::new(StorageErrorKind::InvalidRange, "time out of range")
            })?,
        };
        // An O_PATH descriptor cannot be passed to futimens; utimensat with AT_EMPTY_PATH
        // sets the times of the very inode that was opened beneath the root.
        rustix::fs::utimensat(&fd, "", &times, AtFlags::EMPTY_PATH)
            .map_err(|error| fs_error(error, "set times of", path))
    }
}

impl Inner {
    fn set_mode(&self, path: &VirtualPath, mode: u32) -> Result<(), StorageError> {
        if mode & !PERMISSION_BITS != 0 {
            return Err(StorageError::new(
                StorageErrorKind::PermissionDenied,
                format!("mode {mode:o} for {path} has setuid, setgid or sticky bits"),
            ));
        }
        // The inode is found the way every other operation finds it (beneath the root,
        // in-root symlinks followed), then changed through that very descriptor: a path
        // swapped for a symlink after the lookup changes nothing outside.
        let fd = open_path(&self.anchor, path, OFlags::PATH)?;
        let stat = rustix::fs::fstat(&fd).map_err(|error| fs_error(error, "stat", path))?;
        match rustix::fs::FileType::from_raw_mode(stat.st_mode) {
            rustix::fs::FileType::RegularFile | rustix::fs::FileType::Directory => {}
            _ => {
                return Err(StorageError::new(
                    StorageErrorKind::PermissionDenied,
                    format!("{path} is neither a file nor a directory"),
                ));
            }
        }
        let mode = Mode::from_raw_mode(mode & self.chmod_mask);
        // fchmod refuses O_PATH descriptors (EBADF) and fchmodat has no AT_EMPTY_PATH
        // before fchmodat2 (Linux 6.6); the descriptor's /proc/self/fd entry names the same
        // inode, which is how the C library changes the mode of an O_PATH descriptor.
        let by_descriptor = format!("/proc/self/fd/{}", fd.as_raw_fd());
        rustix::fs::chmod(by_descriptor.as_str(), mode)
            .map_err(|error| fs_error(error, "chmod", path))
    }
}

/// `time` as a `timespec`, also before 1970; `None` beyond what it can hold.
fn timespec(time: SystemTime) -> Option<Timespec> {
    let (seconds, nanoseconds) = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => (
            i64::try_from(after.as_secs()).ok()?,
            i64::from(after.subsec_nanos()),
        ),
        Err(before) => {
            let before = before.duration();
            let seconds = -i64::try_from(before.as_secs()).ok()?;
            match before.subsec_nanos() {
                0 => (seconds, 0),
                nanoseconds => (seconds - 1, 1_000_000_000 - i64::from(nanoseconds)),
            }
        }
    };
    Some(Timespec {
        tv_sec: seconds,
        tv_nsec: nanoseconds as _,
    })
}

#[async_trait]
impl Storage for FsStorage {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            resume_upload: true,
            atomic_rename: true,
            set_modified: true,
            modes: true,
        }
    }

    async fn scoped(&self, home: &VirtualPath) -> Result<Option<Arc<dyn Storage>>, StorageError> {
        if *home == self.inner.anchor.base {
            return Ok(Some(Arc::new(self.clone())));
        }
        // A returning user's home is in the kernel's lookup cache: open it right here
        // rather than pay two thread hand-offs at every login.
        let cached = open_path_cached(&self.inner.anchor, home, OFlags::RDONLY | OFlags::DIRECTORY);
        let scoped = match cached {
            Ok(Some(fd)) => self.anchored_at(fd, home),
            _ => {
                let storage = self.clone();
                let home = home.clone();
                self.filesystem_work(move |_| storage.scoped_to(&home))
                    .await?
            }
        };
        Ok(Some(Arc::new(scoped)))
    }

    async fn metadata(&self, path: &VirtualPath) -> Result<FileMeta, StorageError> {
        let path = path.clone();
        self.filesystem_work(move |inner| inner.metadata(&path))
            .await
    }

    async fn list(&self, path: &VirtualPath) -> Result<EntryStream, StorageError> {
        let directory_path = path.clone();
        let directory = self
            .filesystem_work(move |inner| open_directory(&inner.anchor, &directory_path))
            .await?;
        Ok(listing::stream(
            Arc::clone(&self.inner),
            path.clone(),
            directory,
        ))
    }

    async fn read(&self, path: &VirtualPath, offset: u64) -> Result<Download, StorageError> {
        // A file whose path the kernel has cached opens right here: handing the open to the
        // blocking pool and back costs two thread wake-ups, more than the open itself (and
        // most of a small file's transfer).
        let (file, size) = match self.inner.read_cached(path, offset)? {
            Some(opened) => opened,
            None => {
                let path = path.clone();
                self.filesystem_work(move |inner| inner.read(&path, offset))
                    .await?
            }
        };
        Ok(Download {
            size,
            body: DownloadBody::LocalFile(LocalFile { file, offset }),
        })
    }

    async fn resumable_size(&self, path: &VirtualPath) -> Result<u64, StorageError> {
        let path = path.clone();
        self.filesystem_work(move |inner| inner.resumable_size(&path))
            .await
    }

    async fn start_upload(
        &self,
        target: &UploadTarget,
        mode: WriteMode,
    ) -> Result<Box<dyn Upload>, StorageError> {
        let target = target.clone();
        let prepared = self
            .filesystem_work(move |inner| upload::prepare(inner, &target, mode))
            .await?;
        Ok(Box::new(prepared.into_upload()))
    }

    async fn make_dir(&self, path: &VirtualPath) -> Result<(), StorageError> {
        let path = path.clone();
        self.filesystem_work(move |inner| inner.make_dir(&path))
            .await
    }

    async fn remove_dir(&self, path: &VirtualPath) -> Result<(), StorageError> {
        let path = path.clone();
        self.filesystem_work(move |inner| inner.remove_dir(&path))
            .await
    }

    async fn remove_file(&self, path: &VirtualPath) -> Result<(), StorageError> {
        let path = path.clone();
        self.filesystem_work(move |inner| inner.remove_file(&path))
            .await
    }

    async fn rename(&self, from: &VirtualPath, to: &VirtualPath) -> Result<(), StorageError> {
        let (from, to) = (from.clone(), to.clone());
        self.filesystem_work(move |inner| inner.rename(&from, &to))
            .await
    }

    async fn set_modified(&self, path: &VirtualPath, time: SystemTime) -> Result<(), StorageError> {
        let path = path.clone();
        self.filesystem_work(move |inner| inner.set_modified(&path, time))
            .await
    }

    async fn set_mode(&self, path: &VirtualPath, mode: u32) -> Result<(), StorageError> {
        let path = path.clone();
        self.filesystem_work(move |inner| inner.set_mode(&path, mode))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confine::relative;

    fn anchor_at(base: &str) -> Anchor {
        let fd = rustix::fs::open(".", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        Anchor {
            fd,
            base: VirtualPath::root().resolve(base).unwrap(),
        }
    }

    #[test]
    fn modified_times_cover_the_whole_range() {
        use crate::confine::modified_time;
        use std::time::Duration;
        assert_eq!(
            modified_time(-1, 0),
            Some(UNIX_EPOCH - Duration::from_secs(1))
        );
        assert_eq!(
            modified_time(-2, 500_000_000),
            Some(UNIX_EPOCH - Duration::from_millis(1500))
        );
        assert_eq!(modified_time(7, 3), Some(UNIX_EPOCH + Duration::new(7, 3)));
        // Whatever the platform's SystemTime can hold, the extremes never panic.
        let _ = modified_time(i64::MIN, 0);
        let _ = modified_time(i64::MAX, 999_999_999);
        assert_eq!(modified_time(0, -5), Some(UNIX_EPOCH));
    }

    #[test]
    fn paths_are_taken_relative_to_the_anchor() {
        let home = anchor_at("/alice");
        let path = |text: &str| VirtualPath::root().resolve(text).unwrap();
        assert_eq!(relative(&home, &path("/alice")).unwrap(), ".");
        assert_eq!(relative(&home, &path("/alice/a/b")).unwrap(), "a/b");
        for outside in ["/", "/bob", "/alicex", "/alicex/a"] {
            assert_eq!(
                relative(&home, &path(outside)).unwrap_err().kind,
                StorageErrorKind::PermissionDenied,
                "{outside}"
            );
        }
    }

    #[test]
    fn timespec_handles_times_before_the_epoch() {
        let before = UNIX_EPOCH - std::time::Duration::from_millis(1500);
        let converted = timespec(before).unwrap();
        assert_eq!((converted.tv_sec, converted.tv_nsec), (-2, 500_000_000));
        let after = UNIX_EPOCH + std::time::Duration::new(7, 3);
        let converted = timespec(after).unwrap();
        assert_eq!((converted.tv_sec, converted.tv_nsec), (7, 3));
    }

    #[test]
    fn partial_names_are_refused() {
        let path = VirtualPath::root()
            .resolve("/a/.ferroftp-partial.x/b")
            .unwrap();
        let root = anchor_at("/");
        assert_eq!(
            relative(&root, &path).unwrap_err().kind,
            StorageErrorKind::InvalidName
        );
        let path = VirtualPath::root()
            .resolve("/a/ferroftp-partial.x")
            .unwrap();
        assert_eq!(relative(&root, &path).unwrap(), "a/ferroftp-partial.x");
        assert_eq!(relative(&root, &VirtualPath::root()).unwrap(), ".");
    }
}
