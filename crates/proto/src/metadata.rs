//! What the storage layer tells the protocol about a file: kind, size, time, permissions.
//! Formatting these for LIST/MLSD lives in [`crate::listing`], never in a backend.

use std::time::SystemTime;

/// The kind of a directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link that the backend chose to show as such (it is never followed outside
    /// the root).
    Symlink,
}

/// Facts about one file or directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMeta {
    /// File, directory or link.
    pub kind: FileKind,
    /// Size in bytes (0 for directories on backends without one).
    pub size: u64,
    /// Last modification time, when the backend knows it.
    pub modified: Option<SystemTime>,
    /// Unix permission bits (`0o644`), shown by LIST and MLSD `UNIX.mode`.
    pub mode: u32,
}

impl FileMeta {
    /// `true` for directories.
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Directory
    }
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name within its directory (no `/`).
    pub name: String,
    /// Its facts.
    pub meta: FileMeta,
}
