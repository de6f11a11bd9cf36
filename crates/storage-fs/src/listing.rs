//! Streamed directory listings: a blocking task reads the directory and sends entries
//! through a bounded channel, so a huge directory is never held in memory and a client that
//! stops reading stops the reading too. Entries travel in batches: one channel message (and
//! at most one wake-up of the consumer) per [`BATCH`] entries instead of per entry.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use ferroftp_backend::{
    DirEntry, EntryStream, FileKind, FileMeta, StorageError, StorageErrorKind, VirtualPath,
};
use ferroftp_backend::{Escaped, is_listable_name};
use rustix::fs::{AtFlags, Dir, OFlags};
use tokio::sync::mpsc;
use tracing::warn;

use crate::confine::{meta_of, open_path, stat_meta};
use crate::error::fs_error;
use crate::{Inner, PARTIAL_PREFIX};

/// Entries per channel message.
const BATCH: usize = 256;
/// Batches buffered between the directory reader and the consumer.
const CHANNEL_CAPACITY: usize = 4;

type Item = Result<DirEntry, StorageError>;

/// The entries of the already opened `directory` (at `path`), as a stream.
pub(crate) fn stream(inner: Arc<Inner>, path: VirtualPath, directory: OwnedFd) -> EntryStream {
    let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
    let listed = path.clone();
    let producer =
        tokio::task::spawn_blocking(move || produce(&inner, &listed, &directory, &sender));
    let batch: std::vec::IntoIter<Item> = Vec::new().into_iter();
    Box::pin(futures_util::stream::unfold(
        (receiver, batch, Some(producer), path),
        |(mut receiver, mut batch, mut producer, path)| async move {
            loop {
                if let Some(item) = batch.next() {
                    return Some((item, (receiver, batch, producer, path)));
                }
                match receiver.recv().await {
                    Some(next) => batch = next.into_iter(),
                    None => {
                        // The reader is done. If it died instead (a panic), the listing is
                        // incomplete: say so rather than end it as if it were whole.
                        let failed = producer.take()?.await.err()?;
                        let error = StorageError::new(
                            StorageErrorKind::Local,
                            format!("listing {path} failed: {failed}"),
                        );
                        return Some((Err(error), (receiver, batch, None, path)));
                    }
                }
            }
        },
    ))
}

/// Reads the directory and sends its entries until the end, the first error, or the
/// consumer going away.
fn produce(
    inner: &Inner,
    path: &VirtualPath,
    directory: &OwnedFd,
    sender: &mpsc::Sender<Vec<Item>>,
) {
    let entries = match Dir::read_from(directory) {
        Ok(entries) => entries,
        Err(error) => {
            let _ = sender.blocking_send(vec![Err(fs_error(error, "read directory", path))]);
            return;
        }
    };
    let mut batch = Vec::with_capacity(BATCH);
    let mut unlistable = Unlistable::default();
    for entry in entries {
        let item = match entry {
            Err(error) => Err(fs_error(error, "read directory", path)),
            Ok(entry) => {
                // A name that is not UTF-8 cannot be expressed as a VirtualPath, so a client
                // could not address it anyway; one holding CR or LF would break the listing
                // into forged lines. Both are left out, and counted for the log below
                // (docs/protocol.md, "Names in listings").
                let name = match entry.file_name().to_str() {
                    Ok(name) if is_listable_name(name) => name,
                    _ => {
                        unlistable.note(entry.file_name().to_bytes());
                        continue;
                    }
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
                    // One entry that cannot be examined must not end the listing of all the
                    // others: it is shown with what is known (its name), and logged.
                    Err(error) => {
                        warn!(directory = ?Escaped(path), entry = ?Escaped(name), error = %Escaped(&error), "listing an entry that cannot be examined");
                        Ok(DirEntry {
                            name: name.to_owned(),
                            meta: FileMeta {
                                kind: FileKind::File,
                                size: 0,
                                modified: None,
                                mode: 0,
                            },
                        })
                    }
                }
            }
        };
        let failed = item.is_err();
        batch.push(item);
        if failed || batch.len() == BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if sender.blocking_send(full).is_err() || failed {
                unlistable.log(path);
                return;
            }
        }
    }
    unlistable.log(path);
    if !batch.is_empty() {
        let _ = sender.blocking_send(batch);
    }
}

/// Entries left out of one listing because their names cannot be sent: one log line per
/// listing, not one per entry.
#[derive(Default)]
struct Unlistable {
    count: u64,
    /// The first one, escaped (`Debug` of the lossy text: no raw control characters).
    example: Option<String>,
}

impl Unlistable {
    fn note(&mut self, name: &[u8]) {
        self.count += 1;
        if self.example.is_none() {
            self.example = Some(format!("{:?}", String::from_utf8_lossy(name)));
        }
    }

    fn log(&self, path: &VirtualPath) {
        if let Some(example) = &self.example {
            warn!(
                directory = ?Escaped(path),
                left_out = self.count,
                first = %example,
                "listing left out names that are not UTF-8 or hold CR or LF"
            );
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
    // `name` came from this directory's readdir: one component, never `.`/`..`, so a
    // no-follow stat relative to the directory examines the entry itself and nothing
    // outside it (a symlink is reported as a symlink, its target untouched). One syscall
    // per entry, where opening the entry first would cost three.
    let own =
        rustix::fs::statat(directory, name, AtFlags::SYMLINK_NOFOLLOW).map(|stat| stat_meta(&stat));
    let entry_path = || {
        path.resolve(name).map_err(|error| {
            StorageError::new(StorageErrorKind::InvalidName, format!("{name:?} in {path}"))
                .with_source(error)
        })
    };
    let own = match own {
        Ok(own) => own,
        Err(error) => return Err(fs_error(error, "stat", &entry_path()?)),
    };
    if own.kind != FileKind::Symlink {
        return Ok(own);
    }
    let entry_path = entry_path()?;
    // From the anchor (the root, or the user's home), not from `directory`: a link to
    // `../other` that stays inside it is fine, only leaving it is not.
    let target = open_path(&inner.anchor, &entry_path, OFlags::PATH)
        .ok()
        .and_then(|fd| meta_of(fd).ok());
    Ok(target.unwrap_or(own))
}
