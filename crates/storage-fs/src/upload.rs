//! Uploads: hidden, locked partial files beside their target, renamed over it on commit.
//!
//! The partial file of `name` is `PARTIAL_PREFIX + name` (or, for a name too long for that,
//! a fixed-length name derived from its hash: [`partial_name`]) in the same directory, so the
//! commit is a rename within one directory (atomic, never a copy) and an abandoned upload
//! is found again by name for a resume. An exclusive `flock` on the partial file marks the
//! upload in progress: a second upload of the same name is refused as `Transient` instead of
//! interleaving its bytes with the first.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use ferroftp_backend::{
    LocalUploadFile, PublishGate, Published, StorageError, StorageErrorKind, Upload, UploadTarget,
    VirtualPath, WriteMode,
};
use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, RenameFlags, ResolveFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWrite;

use crate::confine::{open_beneath, open_directory, open_parent};
use crate::error::fs_error;
use crate::write_behind::{Tail, WriteBehind};
use crate::{Inner, NEW_FILE_MODE, PARTIAL_PREFIX, on_blocking_pool};

/// How often to look for a fresh STOU name before giving up.
const UNIQUE_ATTEMPTS: usize = 64;
/// How often to reopen a partial file that a finishing upload renamed under us.
const LOCK_ATTEMPTS: usize = 8;

/// The longest file name Linux filesystems take (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// The hidden name holding the partial upload of `name`: [`PARTIAL_PREFIX`] + `name`, so an
/// operator sees whose data it is, as long as that fits in a file name. A longer name (over
/// 237 bytes, which MKD and every other command accept up to 255) gets a fixed-length
/// partial name instead, [`PARTIAL_PREFIX`] + `sha256-` + the first 128 bits of the name's
/// SHA-256 in hex, so the partial file never limits the final name. Both forms are
/// deterministic: a resume (REST + STOR, APPE) and SIZE find the partial data again from
/// the name alone. A readable form can never equal a hashed one of another name except by
/// a SHA-256 collision.
pub(crate) fn partial_name(name: &str) -> String {
    if PARTIAL_PREFIX.len() + name.len() <= NAME_MAX {
        return format!("{PARTIAL_PREFIX}{name}");
    }
    let digest = Sha256::digest(name.as_bytes());
    let mut partial = String::with_capacity(PARTIAL_PREFIX.len() + 7 + 32);
    partial.push_str(PARTIAL_PREFIX);
    partial.push_str("sha256-");
    for byte in &digest[..16] {
        partial.push_str(&format!("{byte:02x}"));
    }
    partial
}

/// An upload opened and positioned on the blocking pool, ready to become an [`FsUpload`].
pub(crate) struct Prepared {
    file: File,
    directory: OwnedFd,
    partial_name: String,
    final_name: String,
    path: VirtualPath,
    initial_len: u64,
    unique: bool,
    fsync: bool,
    write_back_early: bool,
    in_place: bool,
}

impl Prepared {
    /// Puts the file behind a write-behind buffer, which writes on the blocking pool.
    pub(crate) fn into_upload(self) -> FsUpload {
        FsUpload {
            file: WriteBehind::new(self.file, self.initial_len),
            directory: self.directory,
            partial_name: self.partial_name,
            final_name: self.final_name,
            path: self.path,
            initial_len: self.initial_len,
            unique: self.unique,
            fsync: self.fsync,
            write_back_early: self.write_back_early,
            in_place: self.in_place,
        }
    }
}

/// Opens and locks the partial file for `target` and fills it with what `mode` keeps of the
/// resumable content. Blocking.
pub(crate) fn prepare(
    inner: &Inner,
    target: &UploadTarget,
    mode: WriteMode,
) -> Result<Prepared, StorageError> {
    let (directory, final_name, path, locked, unique) = match target {
        UploadTarget::Path(path) => {
            if inner.anchor.is_top(path) {
                return Err(StorageError::new(
                    StorageErrorKind::IsADirectory,
                    "the root",
                ));
            }
            let (directory, name) = open_parent(&inner.anchor, path)?;
            refuse_directory(&directory, name, path)?;
            let locked = lock_partial(&directory, &partial_name(name), path, false)?;
            (directory, name.to_owned(), path.clone(), locked, false)
        }
        UploadTarget::UniqueIn(directory_path) => {
            let directory = open_directory(&inner.anchor, directory_path)?;
            let (name, locked) = claim_unique_name(inner, &directory, directory_path)?;
            let path = directory_path.resolve(&name).map_err(|error| {
                StorageError::new(StorageErrorKind::Local, format!("STOU name {name}"))
                    .with_source(error)
            })?;
            (directory, name, path, locked, true)
        }
    };
    let partial = partial_name(&final_name);
    let initial_len = match fill(inner, &locked, &path, mode) {
        Ok(length) => length,
        Err(error) => {
            // Do not leave an empty hidden file behind for an upload that never started.
            if locked
                .file
                .metadata()
                .is_ok_and(|metadata| metadata.len() == 0)
            {
                let _ = rustix::fs::unlinkat(&directory, partial.as_str(), AtFlags::empty());
            }
            return Err(error);
        }
    };
    Ok(Prepared {
        file: locked.file,
        directory,
        partial_name: partial,
        final_name,
        path,
        initial_len,
        unique,
        fsync: inner.fsync_uploads,
        // Early writeback only shortens an fsync that has something to write.
        write_back_early: inner.fsync_uploads && !inner.memory_backed,
        in_place: inner.memory_backed,
    })
}

/// Refuses to start an upload whose target is a directory, before the client sends data.
fn refuse_directory(
    directory: &OwnedFd,
    name: &str,
    path: &VirtualPath,
) -> Result<(), StorageError> {
    match rustix::fs::statat(directory, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
            Err(StorageError::new(
                StorageErrorKind::IsADirectory,
                format!("{path} is a directory"),
            ))
        }
        Ok(_) => Ok(()),
        Err(errno) if errno == Errno::NOENT => Ok(()),
        Err(errno) => Err(fs_error(errno, "stat", path)),
    }
}

/// A partial file opened and locked, with its length when the lock was taken: the lock
/// keeps other uploads out, so that is still its length when the upload is prepared (and
/// no second `stat` is needed for it).
struct LockedPartial {
    file: File,
    length: u64,
}

/// Opens (creating it if needed, or only creating it when `exclusive`) and locks the
/// partial file `partial` in `directory`.
fn lock_partial(
    directory: &OwnedFd,
    partial: &str,
    path: &VirtualPath,
    exclusive: bool,
) -> Result<LockedPartial, StorageError> {
    let mut flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOCTTY;
    if exclusive {
        flags |= OFlags::EXCL;
    }
    for _ in 0..LOCK_ATTEMPTS {
        // RESOLVE_NO_SYMLINKS: a symlink planted under a partial name is never written through.
        let fd = open_beneath(
            directory,
            partial,
            flags,
            Mode::from_raw_mode(NEW_FILE_MODE),
            ResolveFlags::NO_SYMLINKS,
        )
        .map_err(|error| fs_error(error, "open partial upload of", path))?;
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(errno) if errno == Errno::WOULDBLOCK => {
                return Err(StorageError::new(
                    StorageErrorKind::Transient,
                    format!("another upload of {path} is in progress"),
                ));
            }
            Err(errno) => return Err(fs_error(errno, "lock partial upload of", path)),
        }
        // An upload that committed between our open and our lock has renamed this inode to
        // the final name: writing into it would change a published file in place. Keep the
        // lock only if the inode is still the one under the partial name.
        let locked = rustix::fs::fstat(&fd).map_err(|error| fs_error(error, "stat", path))?;
        match rustix::fs::statat(directory, partial, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(current) if current.st_dev == locked.st_dev && current.st_ino == locked.st_ino => {
                return Ok(LockedPartial {
                    file: File::from(fd),
                    length: u64::try_from(locked.st_size).unwrap_or(0),
                });
            }
            Ok(_) => {}
            Err(errno) if errno == Errno::NOENT => {}
            Err(errno) => return Err(fs_error(errno, "stat partial upload of", path)),
        }
    }
    Err(StorageError::new(
        StorageErrorKind::Transient,
        format!("the partial upload of {path} kept changing"),
    ))
}

/// Picks an unused STOU name in `directory` and claims it by creating its partial file
/// with `O_EXCL`. The final name is only checked here; the commit's `RENAME_NOREPLACE`
/// settles a race with anything created under it meanwhile.
fn claim_unique_name(
    inner: &Inner,
    directory: &OwnedFd,
    directory_path: &VirtualPath,
) -> Result<(String, LockedPartial), StorageError> {
    for _ in 0..UNIQUE_ATTEMPTS {
        let name = inner.unique_name();
        match rustix::fs::statat(directory, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => continue,
            Err(errno) if errno == Errno::NOENT => {}
            Err(errno) => return Err(fs_error(errno, "stat in", directory_path)),
        }
        match lock_partial(directory, &partial_name(&name), directory_path, true) {
            Ok(locked) => return Ok((name, locked)),
            Err(error) if error.kind == StorageErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
    Err(StorageError::new(
        StorageErrorKind::Transient,
        format!("no unused STOU name found in {directory_path}"),
    ))
}

/// Puts what `mode` keeps of the resumable content into the locked partial file and leaves
/// it positioned at the end of that. Returns the length kept.
fn fill(
    inner: &Inner,
    locked: &LockedPartial,
    path: &VirtualPath,
    mode: WriteMode,
) -> Result<u64, StorageError> {
    let io_error = |error: io::Error| fs_error(error, "prepare partial upload of", path);
    let partial = &locked.file;
    let keep = match mode {
        WriteMode::Create => {
            cut_to(partial, locked.length, 0).map_err(io_error)?;
            0
        }
        WriteMode::Append | WriteMode::ResumeAt(_) => match open_committed(inner, path)? {
            // The committed file is the resumable content: copy the part kept (the kernel
            // copies, or shares extents where the filesystem can) so the published file
            // stays untouched until commit.
            Some(committed) => {
                let length = committed.metadata().map_err(io_error)?.len();
                let keep = kept_length(mode, length, path)?;
                cut_to(partial, locked.length, 0).map_err(io_error)?;
                let mut source = (&committed).take(keep);
                let mut destination = partial;
                destination.seek(SeekFrom::Start(0)).map_err(io_error)?;
                let copied = io::copy(&mut source, &mut destination).map_err(io_error)?;
                if copied != keep {
                    return Err(StorageError::new(
                        StorageErrorKind::Transient,
                        format!("{path} shrank while an upload resumed it"),
                    ));
                }
                keep
            }
            // Else what an abandoned upload left in the partial file.
            None => {
                let keep = kept_length(mode, locked.length, path)?;
                cut_to(partial, locked.length, keep).map_err(io_error)?;
                keep
            }
        },
    };
    // No seek to `keep`: every write of an upload names its offset (`pwrite`).
    Ok(keep)
}

/// The committed file at `path` opened for reading, or `None` when there is none.
fn open_committed(inner: &Inner, path: &VirtualPath) -> Result<Option<File>, StorageError> {
    match inner.open_for_reading(path) {
        Ok((file, _)) => Ok(Some(file)),
        Err(error) if error.kind == StorageErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Gives the partial file, `current` bytes long, `length` bytes, leaving a file that already
/// has them alone: ext4
/// marks a file truncated to zero for a flush of all its data when it is closed
/// (`auto_da_alloc`, meant for programs that rewrite a file in place), and for a fresh
/// upload, whose partial file is new and empty anyway, that meant queueing the whole upload
/// for writeback before the 226: measured, half the upload speed with idle CPUs.
fn cut_to(file: &File, current: u64, length: u64) -> io::Result<()> {
    if current != length {
        file.set_len(length)?;
    }
    Ok(())
}

/// How much of `length` bytes of resumable content `mode` keeps.
fn kept_length(mode: WriteMode, length: u64, path: &VirtualPath) -> Result<u64, StorageError> {
    match mode {
        WriteMode::Create => Ok(0),
        WriteMode::Append => Ok(length),
        WriteMode::ResumeAt(offset) if offset <= length => Ok(offset),
        WriteMode::ResumeAt(offset) => Err(StorageError::new(
            StorageErrorKind::InvalidRange,
            format!("resume offset {offset} beyond the {length} bytes of {path}"),
        )),
    }
}

/// Removes the abandoned partial uploads inside `directory/name`, which must hold nothing
/// else: the client sees an empty directory and asked to remove it. An upload still running
/// there makes it `Transient`. Blocking.
pub(crate) fn discard_partials_in(
    directory: &OwnedFd,
    name: &str,
    path: &VirtualPath,
) -> Result<(), StorageError> {
    let not_empty = || StorageError::new(StorageErrorKind::NotEmpty, format!("{path} has entries"));
    let inside = open_beneath(
        directory,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS,
    )
    .map_err(|error| fs_error(error, "open", path))?;
    let mut partials = Vec::new();
    for entry in
        rustix::fs::Dir::read_from(&inside).map_err(|error| fs_error(error, "list", path))?
    {
        let entry = entry.map_err(|error| fs_error(error, "list", path))?;
        let entry_name = entry.file_name().to_bytes();
        if entry_name == b"." || entry_name == b".." {
            continue;
        }
        if !entry_name.starts_with(PARTIAL_PREFIX.as_bytes()) {
            return Err(not_empty());
        }
        partials.push(entry.file_name().to_owned());
    }
    for partial in partials {
        let Ok(fd) = open_beneath(
            &inside,
            partial.as_c_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS,
        ) else {
            // Something planted under a partial name (a symlink): not ours to delete.
            return Err(not_empty());
        };
        if rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(StorageError::new(
                StorageErrorKind::Transient,
                format!("an upload into {path} is in progress"),
            ));
        }
        // Unlinked while still locked, so no upload can take it over in between.
        rustix::fs::unlinkat(&inside, partial.as_c_str(), AtFlags::empty())
            .map_err(|error| fs_error(error, "remove partial upload in", path))?;
    }
    Ok(())
}

/// An upload into [`FsStorage`](crate::FsStorage), writing its hidden partial file.
/// Dropping it keeps the partial file (closing it releases the lock).
pub(crate) struct FsUpload {
    file: WriteBehind,
    /// The directory of both the partial and the final name: renames and fsyncs happen
    /// through it, wherever the directory has moved meanwhile.
    directory: OwnedFd,
    partial_name: String,
    final_name: String,
    path: VirtualPath,
    initial_len: u64,
    /// STOU: the commit must not replace a file created under the chosen name meanwhile.
    unique: bool,
    /// [`crate::FsStorage::with_fsync_uploads`].
    fsync: bool,
    /// [`LocalUploadFile::write_back_early`]: fsynced, and on a filesystem that writes back.
    write_back_early: bool,
    /// Published in place rather than on the blocking pool: the root is in memory
    /// (`FsStorage::filesystem_work`).
    in_place: bool,
}

impl AsyncWrite for FsUpload {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().file).poll_write(context, data)
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_shutdown(context)
    }
}

impl FsUpload {
    /// The end of an upload: the last bytes written, the file made durable, the gate asked
    /// (no earlier than the client-gone grace, which the fsync has usually covered already
    /// on a disk), then the rename and the directory's fsync. On a disk all of it is one
    /// hand-off to the blocking pool, where the gate waits as well; on a root in memory it
    /// runs in place and the gate's wait is the event loop's. Withheld: the handles close
    /// and the data stays in the partial file, for a resume.
    async fn publish(
        mut self: Box<Self>,
        mut gate: Option<PublishGate>,
    ) -> Result<Published, StorageError> {
        let tail = self.take_tail().await?;
        let upload = *self;
        let ending = Ending {
            tail,
            _file: upload.file,
            directory: upload.directory,
            partial_name: upload.partial_name,
            final_name: upload.final_name,
            path: upload.path,
            unique: upload.unique,
            fsync: upload.fsync,
        };
        if upload.in_place {
            ending.make_durable()?;
            if let Some(gate) = &mut gate {
                gate.wait().await;
            }
            return ending.publish_if(gate);
        }
        on_blocking_pool(move || {
            ending.make_durable()?;
            ending.publish_if(gate)
        })
        .await
    }

    /// The bytes not yet written, once the writes in flight are done (their errors reported).
    async fn take_tail(&mut self) -> Result<Tail, StorageError> {
        self.file
            .take_tail()
            .await
            .map_err(|error| fs_error(error, "write", &self.path))
    }
}

/// What publishing an upload needs once its writes in flight are done ([`FsUpload::publish`]).
struct Ending {
    tail: Tail,
    /// Held to the end: the last handle on the file releases the partial file's lock.
    _file: WriteBehind,
    directory: OwnedFd,
    partial_name: String,
    final_name: String,
    path: VirtualPath,
    unique: bool,
    fsync: bool,
}

impl Ending {
    /// Writes the last bytes and, unless uploads are not fsynced, makes the file durable.
    /// Blocking.
    fn make_durable(&self) -> Result<(), StorageError> {
        self.tail
            .write()
            .map_err(|error| fs_error(error, "write", &self.path))?;
        // Durable before visible: after a crash the name holds the old file or the
        // complete new one, never a new one with missing blocks.
        if self.fsync {
            self.tail
                .file
                .sync_all()
                .map_err(|error| fs_error(error, "fsync", &self.path))?;
        }
        Ok(())
    }

    /// Asks the gate, then renames the partial file over the final name and makes the
    /// rename durable. Blocking.
    fn publish_if(self, gate: Option<PublishGate>) -> Result<Published, StorageError> {
        if let Some(gate) = gate
            && let Err(withheld) = gate.decide()
        {
            return Ok(Published::Withheld(withheld));
        }
        let size = self
            .tail
            .file
            .metadata()
            .map_err(|error| fs_error(error, "stat", &self.path))?
            .len();
        keep_permissions(&self.tail.file, &self.directory, &self.final_name);
        rename_into_place(
            &self.directory,
            &self.partial_name,
            &self.final_name,
            self.unique,
        )
        .map_err(|error| fs_error(error, "publish upload of", &self.path))?;
        // Makes the rename itself durable. The data is published either way, so a
        // filesystem that cannot fsync directories is no reason to report a failure.
        if self.fsync {
            let _ = rustix::fs::fsync(&self.directory);
        }
        // The lock goes with the last handle on the file (`tail` and `file` drop here),
        // only now that the partial name is free again.
        Ok(Published::Published(size))
    }
}

#[async_trait]
impl Upload for FsUpload {
    fn path(&self) -> &VirtualPath {
        &self.path
    }

    fn initial_len(&self) -> u64 {
        self.initial_len
    }

    fn write_soon(&mut self) {
        self.file.write_soon();
    }

    fn local_file(&mut self) -> Option<LocalUploadFile> {
        // The same open file, and so the partial file's lock while it is held.
        let (file, offset) = self.file.bypass()?;
        Some(LocalUploadFile {
            file,
            offset,
            write_back_early: self.write_back_early,
        })
    }

    async fn commit(self: Box<Self>) -> Result<u64, StorageError> {
        match self.publish(None).await? {
            Published::Published(size) => Ok(size),
            Published::Withheld(withheld) => Err(StorageError::new(
                StorageErrorKind::Local,
                format!("publishing withheld without a gate: {withheld:?}"),
            )),
        }
    }

    async fn publish_if(self: Box<Self>, gate: PublishGate) -> Result<Published, StorageError> {
        self.publish(Some(gate)).await
    }

    async fn abandon(mut self: Box<Self>) -> Result<(), StorageError> {
        // The bytes already accepted belong to the resumable data: let them land.
        let tail = self.take_tail().await?;
        let path = self.path.clone();
        let write = move || {
            tail.write()
                .map_err(|error| fs_error(error, "write", &path))
        };
        if self.in_place {
            return write();
        }
        on_blocking_pool(write).await
    }
}

/// Gives the new version the permission bits of the file it replaces, as an in-place write
/// would have kept them. Best effort: publishing the data matters more. Set-user-ID and
/// set-group-ID are dropped, as the kernel drops them when a file is written, and a symlink
/// under the final name is not followed (it may point outside the root).
fn keep_permissions(file: &File, directory: &OwnedFd, final_name: &str) {
    let Ok(stat) = rustix::fs::statat(directory, final_name, AtFlags::SYMLINK_NOFOLLOW) else {
        return;
    };
    if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile {
        let _ = rustix::fs::fchmod(file, Mode::from_raw_mode(stat.st_mode & 0o777));
    }
}

/// Renames the partial file over the final name; for STOU only if that name is still free.
fn rename_into_place(
    directory: &impl AsFd,
    partial: &str,
    final_name: &str,
    unique: bool,
) -> io::Result<()> {
    if unique {
        match rustix::fs::renameat_with(
            directory,
            partial,
            directory,
            final_name,
            RenameFlags::NOREPLACE,
        ) {
            // Filesystems without RENAME_NOREPLACE: the name was checked free at start.
            Err(errno) if errno == Errno::INVAL => {}
            result => return result.map_err(io::Error::from),
        }
    }
    rustix::fs::renameat(directory, partial, directory, final_name).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names_fit_whatever_the_final_name() {
        assert_eq!(partial_name("report.pdf"), ".ferroftp-partial.report.pdf");
        let longest_readable = "r".repeat(NAME_MAX - PARTIAL_PREFIX.len());
        assert_eq!(
            partial_name(&longest_readable),
            format!("{PARTIAL_PREFIX}{longest_readable}")
        );
        for length in [NAME_MAX - PARTIAL_PREFIX.len() + 1, NAME_MAX] {
            let long = "l".repeat(length);
            let partial = partial_name(&long);
            assert!(
                partial.starts_with(".ferroftp-partial.sha256-"),
                "{partial}"
            );
            assert_eq!(partial.len(), PARTIAL_PREFIX.len() + 7 + 32);
            assert_eq!(partial, partial_name(&long), "deterministic");
        }
        assert_ne!(
            partial_name(&"a".repeat(250)),
            partial_name(&"b".repeat(250))
        );
    }

    #[test]
    fn kept_length_follows_the_write_mode() {
        let path = VirtualPath::root().resolve("/f").unwrap();
        assert_eq!(kept_length(WriteMode::Create, 10, &path).unwrap(), 0);
        assert_eq!(kept_length(WriteMode::Append, 10, &path).unwrap(), 10);
        assert_eq!(kept_length(WriteMode::ResumeAt(4), 10, &path).unwrap(), 4);
        assert_eq!(kept_length(WriteMode::ResumeAt(10), 10, &path).unwrap(), 10);
        let beyond = kept_length(WriteMode::ResumeAt(11), 10, &path).unwrap_err();
        assert_eq!(beyond.kind, StorageErrorKind::InvalidRange);
    }
}
