//! Streamed directory listings: a blocking task reads the directory and sends entries
//! through a bounded channel, so a huge directory is never held in memory and a client that
//! stops reading stops the reading too.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use ferroftp_backend::{
    DirEntry, EntryStream, FileKind, FileMeta, StorageError, StorageErrorKind, VirtualPath,
};
use rustix::fs::{Dir, Mode, OFlags, ResolveFlags};
use tokio::sync::mpsc;

use crate::confine::{meta_of, open_beneath};
use crate::error::fs_error;
use crate::{Inner, PARTIAL_PREFIX};

/// Entries buffered between the directory reader and the consumer.
const CHANNEL_CAPACITY: usize = 128;

type Item = Result<DirEntry, StorageError>;

/// The entries of the already opened `directory` (at `path`), as a stream.
pub(crate) fn stream(inner: Arc<Inner>, path: VirtualPath, directory: OwnedFd) -> EntryStream {
    let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
    tokio::task::spawn_blocking(move || produce(&inner, &path, &directory, &sender));
    Box::pin(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move {
            let item = receiver.recv().await?;
            Some((item, receiver))
        },
    ))
}

/// Reads the directory and sends its entries until the end, the first error, or the
/// consumer going away.
fn produce(inner: &Inner, path: &VirtualPath, directory: &OwnedFd, sender: &mpsc::Sender<Item>) {
    let entries = match Dir::read_from(directory) {
        Ok(entries) => entries,
        Err(error) => {
            let _ = sender.blocking_send(Err(fs_error(error, "read directory", path)));
            return;
        }
    };
    for entry in entries {
        let item = match entry {
            Err(error) => Err(fs_error(error, "read directory", path)),
            Ok(entry) => {
                // A name that is not UTF-8 cannot be expressed as a VirtualPath, so a client
                // could not address it anyway.
                let Ok(name) = entry.file_name().to_str() else {
                    continue;
                };
                if name == "." || name == ".." || name.starts_with(PARTIAL_PREFIX) {
                    continue;
                }
                match entry_meta(inner, path, directory, name) {
                    Ok(meta) => Ok(DirEntry {
                        name: name.to_owned(),
                        meta,
                    }),
                    // Removed between readdir and stat: it is simply no longer there.
                    Err(error) if error.kind == StorageErrorKind::NotFound => continue,
                    Err(error) => Err(error),
                }
            }
        };
        let failed = item.is_err();
        if sender.blocking_send(item).is_err() || failed {
            return;
        }
    }
}

/// The facts of one entry. A symlink shows as what it points to when that is inside the
/// root, and as a bare symlink otherwise: its target is never examined outside the root.
fn entry_meta(
    inner: &Inner,
    path: &VirtualPath,
    directory: &OwnedFd,
    name: &str,
) -> Result<FileMeta, StorageError> {
    let entry_path = path.resolve(name).map_err(|error| {
        StorageError::new(
            StorageErrorKind::InvalidName,
            format!("{name:?} in {path}: {error}"),
        )
    })?;
    // O_PATH | O_NOFOLLOW opens the entry itself, even a symlink, without touching its target.
    let own = open_beneath(
        directory,
        name,
        OFlags::PATH | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::empty(),
    )
    .and_then(meta_of)
    .map_err(|error| fs_error(error, "stat", &entry_path))?;
    if own.kind != FileKind::Symlink {
        return Ok(own);
    }
    // From the root, not from `directory`: a link to `../other` that stays inside the root
    // is fine, only leaving the root is not.
    let target = open_beneath(
        &inner.root,
        entry_path.relative_str(),
        OFlags::PATH,
        Mode::empty(),
        ResolveFlags::empty(),
    )
    .and_then(meta_of);
    Ok(target.unwrap_or(own))
}
