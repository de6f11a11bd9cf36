//! [`MemoryStorage`]: a complete in-memory backend, the reference the storage battery is
//! written against and a fast stand-in for tests of the layers above.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::SystemTime;

use async_trait::async_trait;
use ferroftp_proto::{DirEntry, FileKind, FileMeta, StorageErrorKind, VirtualPath};
use tokio::io::AsyncWrite;

use crate::StorageError;
use crate::storage::{
    Capabilities, Download, DownloadBody, EntryStream, Storage, Upload, UploadTarget, WriteMode,
};

/// Permission bits reported for files (there is no real owner to check them against).
const FILE_MODE: u32 = 0o644;
/// Permission bits reported for directories.
const DIRECTORY_MODE: u32 = 0o755;

/// A [`Storage`] that keeps everything in memory, implementing the whole contract: hidden
/// partial uploads kept on abandon, resumable content, `Append`/`ResumeAt`, `UniqueIn`,
/// `InvalidRange`, `NotEmpty` and the rest.
///
/// Clones share the same tree, so a test can keep one handle and give another to a server.
#[derive(Clone, Debug)]
pub struct MemoryStorage {
    state: Arc<Mutex<State>>,
}

impl MemoryStorage {
    /// An empty storage: only the root directory exists.
    pub fn new() -> Self {
        let mut entries = BTreeMap::new();
        entries.insert(
            VirtualPath::root(),
            Entry::Directory {
                modified: SystemTime::now(),
            },
        );
        Self {
            state: Arc::new(Mutex::new(State {
                entries,
                partials: HashMap::new(),
                next_unique: 1,
            })),
        }
    }

    /// Locks the tree. A panic in another test thread must not cascade into every later
    /// operation, so a poisoned lock is taken over: every mutation below leaves the tree
    /// consistent before anything can panic.
    fn lock(&self) -> MutexGuard<'_, State> {
        lock_state(&self.state)
    }
}

impl Default for MemoryStorage {
    fn default() -> Self {
        Self::new()
    }
}

fn lock_state(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The whole tree. Keys are full virtual paths; the root is always present.
#[derive(Debug)]
struct State {
    entries: BTreeMap<VirtualPath, Entry>,
    /// Hidden partial uploads, keyed by the final path they will be committed under.
    partials: HashMap<VirtualPath, Partial>,
    /// Suffix of the next name tried for STOU.
    next_unique: u64,
}

#[derive(Clone, Debug)]
enum Entry {
    /// File contents are shared with open downloads, which therefore see a stable snapshot.
    File {
        data: Arc<Vec<u8>>,
        modified: SystemTime,
    },
    Directory {
        modified: SystemTime,
    },
}

impl Entry {
    fn meta(&self) -> FileMeta {
        match self {
            Self::File { data, modified } => FileMeta {
                kind: FileKind::File,
                size: data.len() as u64,
                modified: Some(*modified),
                mode: FILE_MODE,
            },
            Self::Directory { modified } => FileMeta {
                kind: FileKind::Directory,
                size: 0,
                modified: Some(*modified),
                mode: DIRECTORY_MODE,
            },
        }
    }
}

/// The hidden data of an upload that has not been committed.
#[derive(Debug)]
enum Partial {
    /// An upload is writing it now; its bytes live in the [`MemoryUpload`] until it ends.
    InProgress,
    /// What an abandoned upload left behind, for a resume.
    Abandoned(Vec<u8>),
}

impl State {
    /// The entry at `path`, checking every ancestor the way a filesystem walk would: a
    /// missing ancestor is `NotFound`, a file used as a directory is `NotADirectory`.
    fn lookup(&self, path: &VirtualPath) -> Result<&Entry, StorageError> {
        self.check_ancestors(path)?;
        self.entries.get(path).ok_or_else(|| not_found(path))
    }

    /// Every proper ancestor of `path` exists and is a directory.
    fn check_ancestors(&self, path: &VirtualPath) -> Result<(), StorageError> {
        let mut ancestor = VirtualPath::root();
        let segments: Vec<&str> = path.segments().collect();
        for segment in segments.iter().take(segments.len().saturating_sub(1)) {
            ancestor = child_path(&ancestor, segment);
            match self.entries.get(&ancestor) {
                None => return Err(not_found(path)),
                Some(Entry::File { .. }) => {
                    return Err(StorageError::new(
                        StorageErrorKind::NotADirectory,
                        format!("{ancestor} is a file, in {path}"),
                    ));
                }
                Some(Entry::Directory { .. }) => {}
            }
        }
        Ok(())
    }

    /// `path`'s parent exists and is a directory, so a new entry may be created at `path`.
    fn check_parent(&self, path: &VirtualPath) -> Result<(), StorageError> {
        match self.lookup(&path.parent())? {
            Entry::Directory { .. } => Ok(()),
            Entry::File { .. } => Err(StorageError::new(
                StorageErrorKind::NotADirectory,
                format!("parent of {path} is a file"),
            )),
        }
    }

    /// The entries directly inside `directory`. A linear scan: string order interleaves
    /// `/a b` between `/a` and `/a/x`, so a range would need care this test backend does
    /// not deserve.
    fn children<'a>(
        &'a self,
        directory: &'a VirtualPath,
    ) -> impl Iterator<Item = (&'a VirtualPath, &'a Entry)> + 'a {
        self.entries
            .iter()
            .filter(move |(path, _)| !path.is_root() && path.parent() == *directory)
    }

    /// The resumable content of `path` (see [`WriteMode`]): the committed file, else the
    /// abandoned partial, else nothing.
    fn resumable_content(&self, path: &VirtualPath) -> Result<Vec<u8>, StorageError> {
        match self.lookup(path) {
            Ok(Entry::File { data, .. }) => Ok(data.as_ref().clone()),
            Ok(Entry::Directory { .. }) => Err(is_a_directory(path)),
            Err(error) if error.kind == StorageErrorKind::NotFound => {
                match self.partials.get(path) {
                    Some(Partial::Abandoned(data)) => Ok(data.clone()),
                    Some(Partial::InProgress) => Err(busy(path)),
                    None => Ok(Vec::new()),
                }
            }
            Err(error) => Err(error),
        }
    }

    /// Chooses a STOU name inside `directory` that is neither a visible entry nor a hidden
    /// partial upload.
    fn unique_name_in(&mut self, directory: &VirtualPath) -> VirtualPath {
        loop {
            let candidate = child_path(directory, &format!("stou.{}", self.next_unique));
            self.next_unique += 1;
            if !self.entries.contains_key(&candidate) && !self.partials.contains_key(&candidate) {
                return candidate;
            }
        }
    }
}

/// `directory/name`. `name` is a single segment produced by this module or taken from an
/// existing [`VirtualPath`], so resolving it cannot fail.
fn child_path(directory: &VirtualPath, name: &str) -> VirtualPath {
    directory
        .resolve(name)
        .expect("a single plain segment always resolves")
}

/// `path` is `directory` itself or lies below it.
fn is_inside(path: &VirtualPath, directory: &VirtualPath) -> bool {
    path.strip_base(directory).is_some()
}

fn not_found(path: &VirtualPath) -> StorageError {
    StorageError::new(StorageErrorKind::NotFound, format!("{path} does not exist"))
}

fn is_a_directory(path: &VirtualPath) -> StorageError {
    StorageError::new(
        StorageErrorKind::IsADirectory,
        format!("{path} is a directory"),
    )
}

fn busy(path: &VirtualPath) -> StorageError {
    StorageError::new(
        StorageErrorKind::Transient,
        format!("an upload of {path} is in progress"),
    )
}

/// A file's bytes as a reader: shares the committed data instead of copying it.
struct SharedBytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            resume_upload: true,
            atomic_rename: true,
            set_modified: true,
            // Memory files have fixed modes: set_mode keeps the trait's refusing default.
            modes: false,
        }
    }

    async fn metadata(&self, path: &VirtualPath) -> Result<FileMeta, StorageError> {
        Ok(self.lock().lookup(path)?.meta())
    }

    async fn list(&self, path: &VirtualPath) -> Result<EntryStream, StorageError> {
        let state = self.lock();
        match state.lookup(path)? {
            Entry::Directory { .. } => {}
            Entry::File { .. } => {
                return Err(StorageError::new(
                    StorageErrorKind::NotADirectory,
                    format!("{path} is a file"),
                ));
            }
        }
        // A snapshot taken under the lock: the stream must not hold it across awaits.
        let entries: Vec<Result<DirEntry, StorageError>> = state
            .children(path)
            .map(|(child, entry)| {
                Ok(DirEntry {
                    name: child.file_name().unwrap_or_default().to_owned(),
                    meta: entry.meta(),
                })
            })
            .collect();
        Ok(Box::pin(futures_util::stream::iter(entries)))
    }

    async fn read(&self, path: &VirtualPath, offset: u64) -> Result<Download, StorageError> {
        let data = match self.lock().lookup(path)? {
            Entry::File { data, .. } => Arc::clone(data),
            Entry::Directory { .. } => return Err(is_a_directory(path)),
        };
        let size = data.len() as u64;
        if offset > size {
            return Err(StorageError::new(
                StorageErrorKind::InvalidRange,
                format!("offset {offset} beyond the {size} bytes of {path}"),
            ));
        }
        let mut cursor = io::Cursor::new(SharedBytes(data));
        cursor.set_position(offset);
        Ok(Download {
            size,
            body: DownloadBody::Stream(Box::new(cursor)),
        })
    }

    async fn resumable_size(&self, path: &VirtualPath) -> Result<u64, StorageError> {
        let state = self.lock();
        match state.lookup(path) {
            Ok(Entry::File { data, .. }) => Ok(data.len() as u64),
            Ok(Entry::Directory { .. }) => Err(is_a_directory(path)),
            Err(error) if error.kind == StorageErrorKind::NotFound => {
                match state.partials.get(path) {
                    Some(Partial::Abandoned(data)) => Ok(data.len() as u64),
                    Some(Partial::InProgress) => Err(busy(path)),
                    None => Err(error),
                }
            }
            Err(error) => Err(error),
        }
    }

    async fn start_upload(
        &self,
        target: &UploadTarget,
        mode: WriteMode,
    ) -> Result<Box<dyn Upload>, StorageError> {
        let mut state = self.lock();
        let (path, unique) = match target {
            UploadTarget::Path(path) => {
                if path.is_root() {
                    return Err(is_a_directory(path));
                }
                state.check_parent(path)?;
                if let Some(Entry::Directory { .. }) = state.entries.get(path) {
                    return Err(is_a_directory(path));
                }
                (path.clone(), false)
            }
            UploadTarget::UniqueIn(directory) => {
                match state.lookup(directory)? {
                    Entry::Directory { .. } => {}
                    Entry::File { .. } => {
                        return Err(StorageError::new(
                            StorageErrorKind::NotADirectory,
                            format!("{directory} is a file"),
                        ));
                    }
                }
                (state.unique_name_in(directory), true)
            }
        };
        if let Some(Partial::InProgress) = state.partials.get(&path) {
            return Err(busy(&path));
        }
        let buffer = match mode {
            WriteMode::Create => Vec::new(),
            WriteMode::Append => state.resumable_content(&path)?,
            WriteMode::ResumeAt(offset) => {
                let mut content = state.resumable_content(&path)?;
                let length = content.len() as u64;
                if offset > length {
                    return Err(StorageError::new(
                        StorageErrorKind::InvalidRange,
                        format!("resume offset {offset} beyond the {length} bytes of {path}"),
                    ));
                }
                // `offset <= length`, a usize, so the conversion cannot truncate.
                content.truncate(offset as usize);
                content
            }
        };
        // Claims the name: a second upload of it now gets `Transient`, and for STOU the
        // chosen name can no longer be chosen again.
        state.partials.insert(path.clone(), Partial::InProgress);
        drop(state);
        Ok(Box::new(MemoryUpload {
            state: Arc::clone(&self.state),
            initial_len: buffer.len() as u64,
            buffer,
            path,
            unique,
            finished: false,
        }))
    }

    async fn make_dir(&self, path: &VirtualPath) -> Result<(), StorageError> {
        let mut state = self.lock();
        if state.entries.contains_key(path) {
            state.check_ancestors(path)?;
            return Err(StorageError::new(
                StorageErrorKind::AlreadyExists,
                format!("{path} exists"),
            ));
        }
        state.check_parent(path)?;
        state.entries.insert(
            path.clone(),
            Entry::Directory {
                modified: SystemTime::now(),
            },
        );
        Ok(())
    }

    async fn remove_dir(&self, path: &VirtualPath) -> Result<(), StorageError> {
        if path.is_root() {
            return Err(StorageError::new(
                StorageErrorKind::PermissionDenied,
                "the root cannot be removed",
            ));
        }
        let mut state = self.lock();
        match state.lookup(path)? {
            Entry::Directory { .. } => {}
            Entry::File { .. } => {
                return Err(StorageError::new(
                    StorageErrorKind::NotADirectory,
                    format!("{path} is a file"),
                ));
            }
        }
        if state.children(path).next().is_some() {
            return Err(StorageError::new(
                StorageErrorKind::NotEmpty,
                format!("{path} has entries"),
            ));
        }
        // The directory looks empty to the client; hidden leftovers of abandoned uploads
        // must not make RMD fail inexplicably, but an upload still running must not lose
        // its directory.
        let hidden: Vec<VirtualPath> = state
            .partials
            .keys()
            .filter(|partial| partial.parent() == *path)
            .cloned()
            .collect();
        if hidden
            .iter()
            .any(|partial| matches!(state.partials[partial], Partial::InProgress))
        {
            return Err(StorageError::new(
                StorageErrorKind::Transient,
                format!("an upload into {path} is in progress"),
            ));
        }
        for partial in hidden {
            state.partials.remove(&partial);
        }
        state.entries.remove(path);
        Ok(())
    }

    async fn remove_file(&self, path: &VirtualPath) -> Result<(), StorageError> {
        let mut state = self.lock();
        match state.lookup(path)? {
            Entry::File { .. } => {
                state.entries.remove(path);
                Ok(())
            }
            Entry::Directory { .. } => Err(is_a_directory(path)),
        }
    }

    async fn rename(&self, from: &VirtualPath, to: &VirtualPath) -> Result<(), StorageError> {
        if from.is_root() || to.is_root() {
            return Err(StorageError::new(
                StorageErrorKind::PermissionDenied,
                "the root cannot be renamed or replaced",
            ));
        }
        let mut state = self.lock();
        let source_is_directory = match state.lookup(from)? {
            Entry::Directory { .. } => true,
            Entry::File { .. } => false,
        };
        state.check_parent(to)?;
        if from == to {
            return Ok(());
        }
        if is_inside(to, from) {
            return Err(StorageError::new(
                StorageErrorKind::InvalidName,
                format!("cannot move {from} into itself ({to})"),
            ));
        }
        // The same rules as rename(2): a file replaces a file, a directory replaces an
        // empty directory, anything else is refused.
        match (source_is_directory, state.entries.get(to)) {
            (_, None) => {}
            (false, Some(Entry::File { .. })) => {}
            (false, Some(Entry::Directory { .. })) => return Err(is_a_directory(to)),
            (true, Some(Entry::File { .. })) => {
                return Err(StorageError::new(
                    StorageErrorKind::NotADirectory,
                    format!("{to} is a file"),
                ));
            }
            (true, Some(Entry::Directory { .. })) => {
                if state.children(to).next().is_some() {
                    return Err(StorageError::new(
                        StorageErrorKind::NotEmpty,
                        format!("{to} has entries"),
                    ));
                }
            }
        }
        let moved: Vec<VirtualPath> = state
            .entries
            .keys()
            .filter(|path| is_inside(path, from))
            .cloned()
            .collect();
        state.entries.remove(to);
        for old in moved {
            let entry = state
                .entries
                .remove(&old)
                .expect("collected from the map just above");
            let relative = old.strip_base(from).expect("collected as inside `from`");
            state.entries.insert(to.join(&relative), entry);
        }
        // Abandoned uploads inside a moved directory move with it, as they do on disk.
        let moved_partials: Vec<VirtualPath> = state
            .partials
            .iter()
            .filter(|(path, partial)| {
                matches!(partial, Partial::Abandoned(_)) && is_inside(path, from)
            })
            .map(|(path, _)| path.clone())
            .collect();
        for old in moved_partials {
            let partial = state
                .partials
                .remove(&old)
                .expect("collected from the map just above");
            let relative = old.strip_base(from).expect("collected as inside `from`");
            state.partials.insert(to.join(&relative), partial);
        }
        Ok(())
    }

    async fn set_modified(&self, path: &VirtualPath, time: SystemTime) -> Result<(), StorageError> {
        let mut state = self.lock();
        state.lookup(path)?;
        match state.entries.get_mut(path) {
            Some(Entry::File { modified, .. } | Entry::Directory { modified }) => {
                *modified = time;
                Ok(())
            }
            None => Err(not_found(path)),
        }
    }
}

/// An upload into [`MemoryStorage`]. The bytes accumulate here, outside the lock, and reach
/// the tree only on commit (as the file) or abandon (as the hidden partial).
struct MemoryUpload {
    state: Arc<Mutex<State>>,
    path: VirtualPath,
    buffer: Vec<u8>,
    initial_len: u64,
    /// STOU: the chosen name must still be free at commit.
    unique: bool,
    /// Committed or abandoned: `Drop` has nothing left to do.
    finished: bool,
}

impl MemoryUpload {
    /// Keeps the data as the hidden partial of the name, for a later resume.
    fn keep_partial(&mut self) {
        self.finished = true;
        let data = std::mem::take(&mut self.buffer);
        lock_state(&self.state)
            .partials
            .insert(self.path.clone(), Partial::Abandoned(data));
    }
}

impl AsyncWrite for MemoryUpload {
    fn poll_write(
        self: Pin<&mut Self>,
        _context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().buffer.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[async_trait]
impl Upload for MemoryUpload {
    fn path(&self) -> &VirtualPath {
        &self.path
    }

    fn initial_len(&self) -> u64 {
        self.initial_len
    }

    async fn commit(mut self: Box<Self>) -> Result<u64, StorageError> {
        let mut state = lock_state(&self.state);
        let outcome = match state.check_parent(&self.path) {
            Err(error) => Err(error),
            Ok(()) => match state.entries.get(&self.path) {
                Some(Entry::Directory { .. }) => Err(is_a_directory(&self.path)),
                Some(Entry::File { .. }) if self.unique => Err(StorageError::new(
                    StorageErrorKind::AlreadyExists,
                    format!("{} was created during the upload", self.path),
                )),
                _ => Ok(()),
            },
        };
        if let Err(error) = outcome {
            drop(state);
            // A failed commit is an abandon: the data stays resumable.
            self.keep_partial();
            return Err(error);
        }
        let data = std::mem::take(&mut self.buffer);
        let size = data.len() as u64;
        state.partials.remove(&self.path);
        state.entries.insert(
            self.path.clone(),
            Entry::File {
                data: Arc::new(data),
                modified: SystemTime::now(),
            },
        );
        drop(state);
        self.finished = true;
        Ok(size)
    }

    async fn abandon(mut self: Box<Self>) -> Result<(), StorageError> {
        self.keep_partial();
        Ok(())
    }
}

impl Drop for MemoryUpload {
    fn drop(&mut self) {
        if !self.finished {
            self.keep_partial();
        }
    }
}
