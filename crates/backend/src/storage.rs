//! Storage: the interface every backend (local directory, object store, memory) implements.

use std::fmt;
use std::future::Future;
use std::io::{self, Seek, SeekFrom};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use ferroftp_proto::{DirEntry, FileMeta, StorageErrorKind, VirtualPath};
use futures_core::Stream;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::StorageError;

/// A streamed directory listing: large directories are never held in memory whole.
pub type EntryStream = Pin<Box<dyn Stream<Item = Result<DirEntry, StorageError>> + Send>>;

/// What a backend can do, advertised in FEAT and checked before a command is attempted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// APPE and REST+STOR are supported.
    pub resume_upload: bool,
    /// RNFR/RNTO is atomic (false on object stores, where it is copy + delete).
    pub atomic_rename: bool,
    /// MFMT can set modification times.
    pub set_modified: bool,
    /// Files and directories have Unix permission bits that SITE CHMOD can set
    /// ([`Storage::set_mode`]). Without it SITE CHMOD is refused with 504.
    pub modes: bool,
}

/// How an upload combines with what is already stored under its name.
///
/// Every mode writes to a hidden place and only [`Upload::commit`] makes the result visible
/// under the final name, so a failed or interrupted upload never destroys the previous
/// version. The *resumable content* of a name is its committed file if there is one, else
/// the partial data an interrupted upload left behind; `Append` and `ResumeAt(n)` build on
/// it (`ResumeAt(n)` cuts it at n; an n beyond its end is an error of kind `InvalidRange`).
/// `UploadTarget::UniqueIn(dir)` (STOU) makes a new, unused name inside `dir`.
pub use ferroftp_proto::{UploadTarget, WriteMode};

/// A file being read: its total size and its bytes from the requested offset.
pub struct Download {
    /// The file's full size (not reduced by the offset).
    pub size: u64,
    /// The bytes from the offset to the end.
    pub body: DownloadBody,
}

/// A download's bytes, from the requested offset to the end.
pub enum DownloadBody {
    /// A stream that starts at the requested offset.
    Stream(Box<dyn AsyncRead + Send + Unpin>),
    /// In a local file: the server may send them with `sendfile` (zero copy through user
    /// space), or read them through [`into_stream`](Self::into_stream).
    LocalFile(LocalFile),
}

impl DownloadBody {
    /// The bytes as a stream, whichever way the backend has them.
    pub fn into_stream(self) -> io::Result<Box<dyn AsyncRead + Send + Unpin>> {
        match self {
            Self::Stream(stream) => Ok(stream),
            Self::LocalFile(LocalFile { mut file, offset }) => {
                // Moving the file position touches only memory: no disk wait here.
                file.seek(SeekFrom::Start(offset))?;
                Ok(Box::new(tokio::fs::File::from_std(file)))
            }
        }
    }
}

/// A download's bytes in a local file: from `offset` to the end of `file`.
#[derive(Debug)]
pub struct LocalFile {
    /// The open file. Its position is not relied on: zero-copy sends read at explicit
    /// offsets, and [`DownloadBody::into_stream`] seeks.
    pub file: std::fs::File,
    /// Where the download starts.
    pub offset: u64,
}

/// An upload's partial file on the local filesystem, for a server that receives straight
/// into it (see [`Upload::local_file`]).
#[derive(Debug)]
pub struct LocalUploadFile {
    /// The open file, shared with the upload (written at explicit offsets; the upload
    /// writes nothing while this is in use).
    pub file: Arc<std::fs::File>,
    /// Where the next byte goes.
    pub offset: u64,
    /// The storage fsyncs the file before publishing it: the receiver should start writing
    /// received bytes back to the disk as they arrive, so that fsync waits only for the
    /// last ones instead of the whole file.
    pub write_back_early: bool,
}

impl fmt::Debug for Download {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Download")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// An upload in progress. Write the data through [`AsyncWrite`], then either
/// [`commit`](Upload::commit) it (atomically visible under its final name) or
/// [`abandon`](Upload::abandon) it (the previous version stays; the partial data is kept for
/// a later resume). Dropping it without either is an abandon.
#[async_trait]
pub trait Upload: AsyncWrite + Send + Unpin {
    /// The name the upload will be committed under (the chosen one for STOU).
    fn path(&self) -> &VirtualPath;

    /// Bytes already in place before the first write (the resume offset).
    fn initial_len(&self) -> u64;

    /// The partial file itself, when the upload writes a local file and nothing has been
    /// written through this `Upload` yet: the server may then receive a plain binary
    /// transfer straight into it, from `offset` on, on a thread of its own. Once bytes went
    /// in that way, write only that way; `make_durable`, `commit` and `abandon` work as
    /// before.
    fn local_file(&mut self) -> Option<LocalUploadFile> {
        None
    }

    /// A hint that the client paused: start writing anything buffered, without waiting for
    /// it. The server calls it when the data connection has nothing more to read yet.
    fn write_soon(&mut self) {}

    /// Flushes and makes the data written so far durable, without publishing it (the first
    /// half of [`publish_if`](Upload::publish_if)'s default).
    async fn make_durable(&mut self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Flushes, makes the data durable, and publishes it under [`path`](Upload::path).
    /// Returns the final size.
    async fn commit(self: Box<Self>) -> Result<u64, StorageError>;

    /// Makes the data durable, then asks `gate` whether to publish it, right before
    /// publishing: [`commit`](Upload::commit) if it agrees, [`abandon`](Upload::abandon) if
    /// not (the data stays hidden, for a resume). This is how the server publishes: a client
    /// killed mid-upload also ends its data connection cleanly, and its control connection
    /// may close only a little after, so the gate decides no earlier than a moment the server
    /// names, once the data is durable. A storage that publishes on a blocking thread should
    /// let [`PublishGate::decide`] wait there, in the same hand-off; on an event loop,
    /// [`PublishGate::wait`] first.
    async fn publish_if(
        mut self: Box<Self>,
        mut gate: PublishGate,
    ) -> Result<Published, StorageError> {
        self.make_durable().await?;
        gate.wait().await;
        match gate.decide() {
            Ok(()) => self.commit().await.map(Published::Published),
            Err(withheld) => {
                self.abandon().await?;
                Ok(Published::Withheld(withheld))
            }
        }
    }

    /// Stops without publishing. The partial data stays hidden, for a resume.
    async fn abandon(self: Box<Self>) -> Result<(), StorageError>;
}

/// The last check before an upload is published ([`Upload::publish_if`]): a decision that
/// may refuse, made no earlier than a moment the server may name (the client-gone grace).
/// The decision itself is quick; only reaching that moment takes time.
pub struct PublishGate {
    decide: Box<dyn FnOnce() -> Result<(), Withheld> + Send>,
    not_before: Option<Instant>,
    /// Resolves at `not_before`, on the caller's event loop, more precisely than tokio's
    /// millisecond timer (the grace is a millisecond).
    wait_until: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl PublishGate {
    /// A gate that runs `decide` (without blocking) as soon as it is asked.
    pub fn new(decide: impl FnOnce() -> Result<(), Withheld> + Send + 'static) -> Self {
        Self {
            decide: Box::new(decide),
            not_before: None,
            wait_until: None,
        }
    }

    /// A gate that always lets the upload through.
    pub fn open() -> Self {
        Self::new(|| Ok(()))
    }

    /// Decides no earlier than `instant`; `wait_until` resolves then, on the event loop that
    /// awaits it ([`wait`](Self::wait)).
    pub fn not_before(
        mut self,
        instant: Instant,
        wait_until: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.not_before = Some(instant);
        self.wait_until = Some(Box::pin(wait_until));
        self
    }

    /// Waits until the gate may decide, without blocking the thread.
    pub async fn wait(&mut self) {
        if let Some(wait_until) = self.wait_until.take() {
            wait_until.await;
        }
    }

    /// Decides: blocks until the gate's moment first if it has not come yet (on an event
    /// loop, [`wait`](Self::wait) for it first).
    pub fn decide(self) -> Result<(), Withheld> {
        if let Some(instant) = self.not_before {
            let remaining = instant.saturating_duration_since(Instant::now());
            if !remaining.is_zero() {
                std::thread::sleep(remaining);
            }
        }
        (self.decide)()
    }
}

impl fmt::Debug for PublishGate {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("PublishGate")
    }
}

/// Why a [`PublishGate`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Withheld {
    /// The client is gone: its upload may be truncated.
    ClientGone,
    /// Publishing would take the account past its quota.
    QuotaExceeded,
}

/// How [`Upload::publish_if`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    /// Published; the final size.
    Published(u64),
    /// The gate refused; the data stays hidden, for a resume.
    Withheld(Withheld),
}

/// A storage backend. Paths are virtual and already confined by the caller; a backend must
/// still refuse to leave its own root (symlinks, races) on its own.
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// What this backend supports.
    fn capabilities(&self) -> Capabilities;

    /// This storage as a user whose home is `home` sees it, for that user's whole session:
    /// every operation must stay beneath `home` by the backend's own means, as it stays
    /// beneath the root (a symlink in one home that leads into another is refused). Paths
    /// keep their full form (`home/...`); one outside `home` is `PermissionDenied`.
    ///
    /// `Ok(None)`: this backend has nothing that could lead out of a directory (no links),
    /// so the session's textual mapping of paths under the home is confinement enough, and
    /// the storage itself is used. A backend with links must override this.
    async fn scoped(&self, home: &VirtualPath) -> Result<Option<Arc<dyn Storage>>, StorageError> {
        let _ = home;
        Ok(None)
    }

    /// Facts about a file or directory.
    async fn metadata(&self, path: &VirtualPath) -> Result<FileMeta, StorageError>;

    /// The entries of a directory, hidden partial uploads excluded, in no particular order.
    async fn list(&self, path: &VirtualPath) -> Result<EntryStream, StorageError>;

    /// Opens a file for reading from `offset` (REST). An offset past the end is an error of
    /// kind `InvalidRange`.
    async fn read(&self, path: &VirtualPath, offset: u64) -> Result<Download, StorageError>;

    /// The size of a name's resumable content (see [`WriteMode`]): what SIZE reports, so
    /// `curl -C -` and `lftp put -c` resume where an interrupted upload stopped.
    async fn resumable_size(&self, path: &VirtualPath) -> Result<u64, StorageError>;

    /// Starts an upload.
    async fn start_upload(
        &self,
        target: &UploadTarget,
        mode: WriteMode,
    ) -> Result<Box<dyn Upload>, StorageError>;

    /// Creates one directory (its parent must exist).
    async fn make_dir(&self, path: &VirtualPath) -> Result<(), StorageError>;

    /// Removes an empty directory.
    async fn remove_dir(&self, path: &VirtualPath) -> Result<(), StorageError>;

    /// Removes a file.
    async fn remove_file(&self, path: &VirtualPath) -> Result<(), StorageError>;

    /// Renames a file or directory, replacing a file at `to`.
    async fn rename(&self, from: &VirtualPath, to: &VirtualPath) -> Result<(), StorageError>;

    /// Sets a file's modification time (MFMT).
    async fn set_modified(&self, path: &VirtualPath, time: SystemTime) -> Result<(), StorageError>;

    /// Sets the permission bits of a file or directory (SITE CHMOD). `mode` holds
    /// permission bits only: a backend refuses anything above `0o777` (setuid, setgid,
    /// sticky) with `PermissionDenied`, and may narrow the rest by its own mask. Backends
    /// without modes ([`Capabilities::modes`] false) keep this default, which refuses with
    /// `Unsupported` (504).
    async fn set_mode(&self, path: &VirtualPath, mode: u32) -> Result<(), StorageError> {
        Err(StorageError::new(
            StorageErrorKind::Unsupported,
            format!("set mode {mode:o} of {path}: this storage has no permission modes"),
        ))
    }
}

/// Creates `directory` and its missing parents through `storage`, like `mkdir -p`: `Ok(true)`
/// when something was created, `Ok(false)` when it existed already. Something other than a
/// directory in the way is `NotADirectory`. Used for users' homes, which the users file names
/// but nothing else creates.
pub async fn make_dir_all(
    storage: &dyn Storage,
    directory: &VirtualPath,
) -> Result<bool, StorageError> {
    let not_a_directory = || {
        StorageError::new(
            StorageErrorKind::NotADirectory,
            format!("{directory} is not a directory"),
        )
    };
    match storage.metadata(directory).await {
        Ok(meta) if meta.is_dir() => return Ok(false),
        Ok(_) => return Err(not_a_directory()),
        Err(error) if error.kind == StorageErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let mut path = VirtualPath::root();
    for segment in directory.segments() {
        path = path.resolve(segment).map_err(|error| {
            StorageError::new(
                StorageErrorKind::InvalidName,
                format!("{directory}: {error}"),
            )
        })?;
        match storage.make_dir(&path).await {
            // A parent that existed, or one made by someone else meanwhile; whatever is
            // there is checked by the next step, or below for the last one.
            Ok(())
            | Err(StorageError {
                kind: StorageErrorKind::AlreadyExists,
                ..
            }) => {}
            Err(error) => return Err(error),
        }
    }
    match storage.metadata(directory).await {
        Ok(meta) if meta.is_dir() => Ok(true),
        Ok(_) => Err(not_a_directory()),
        Err(error) => Err(error),
    }
}
