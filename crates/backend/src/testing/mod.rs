//! Test support for storage backends: [`MemoryStorage`] and the storage battery, the shared
//! tests every backend must pass.
//!
//! A backend runs the whole battery with one line in its tests, building a fresh, empty
//! storage for every test:
//!
//! ```ignore
//! ferroftp_backend::storage_battery!(memory, ferroftp_backend::testing::MemoryStorage::new());
//! ```
//!
//! The constructor may also return `(storage, guard)`, where the guard (a temporary
//! directory, a server handle) lives as long as the test; see [`StorageFixture`]. The
//! expansion uses `#[tokio::test]`, so the calling crate needs `tokio` (features `macros`
//! and `rt`) among its dev-dependencies.

pub mod battery;
mod memory;

use std::fmt;

use ferroftp_proto::{StorageErrorKind, VirtualPath};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use memory::MemoryStorage;

use crate::StorageError;
use crate::storage::{Storage, UploadTarget, WriteMode};

/// What a battery constructor returns: a storage, possibly with something that must live as
/// long as the test (the guard of a tuple is kept alive, never used).
pub trait StorageFixture {
    /// The storage under test.
    fn storage(&self) -> &dyn Storage;
}

impl<S: Storage> StorageFixture for S {
    fn storage(&self) -> &dyn Storage {
        self
    }
}

impl<S: Storage, Guard> StorageFixture for (S, Guard) {
    fn storage(&self) -> &dyn Storage {
        &self.0
    }
}

/// Runs every battery test against a backend: expands to a module `$name` holding one
/// `#[tokio::test]` per function of [`battery`], each on a fresh fixture built by
/// evaluating `$constructor` (see [`StorageFixture`]).
#[macro_export]
macro_rules! storage_battery {
    ($name:ident, $constructor:expr $(,)?) => {
        $crate::storage_battery!($name, $constructor, skip_when = None::<String>);
    };
    // `skip_when`: an `Option<String>` evaluated first in each test; `Some(reason)` skips
    // it (a backend that needs a service the machine may not run, such as an S3 server).
    ($name:ident, $constructor:expr, skip_when = $skip:expr $(,)?) => {
        $crate::storage_battery!(@module $name, $constructor, $skip;
            write_commit_read_exact_bytes,
            create_replaces_longer_file_exactly,
            read_at_offset,
            read_past_end_is_invalid_range,
            read_missing_is_not_found,
            read_directory_is_a_directory,
            metadata_kinds,
            listing_streams_entries,
            list_file_is_not_a_directory,
            listing_hides_partial_uploads,
            make_dir_and_remove_dir,
            remove_dir_discards_abandoned_uploads,
            remove_file,
            rename_file,
            rename_replaces_file,
            rename_directory,
            set_modified,
            set_mode,
            make_dir_all_creates_parents,
            upload_in_progress_is_invisible,
            abandon_keeps_previous_version,
            publish_if_decides_at_the_gates_moment,
            publish_if_withheld_keeps_previous_version,
            abandon_leaves_resumable_data,
            drop_without_commit_is_abandon,
            create_discards_abandoned_partial,
            resume_at_cuts_partial,
            resume_at_cuts_committed_file,
            resume_at_beyond_is_invalid_range,
            append_onto_committed_file,
            append_to_missing_name_creates_it,
            unique_in_gives_distinct_names,
            upload_into_missing_directory_is_not_found,
            upload_onto_directory_is_a_directory,
        );
    };
    (@module $name:ident, $constructor:expr, $skip:expr; $($test:ident),* $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $test() {
                    if let Some(reason) = $skip {
                        eprintln!("skipped: {reason}");
                        return;
                    }
                    let fixture = $constructor;
                    $crate::testing::battery::$test(
                        $crate::testing::StorageFixture::storage(&fixture),
                    )
                    .await;
                }
            )*
        }
    };
}

/// A [`VirtualPath`] from an absolute literal; panics on an invalid one (tests only).
pub fn virtual_path(text: &str) -> VirtualPath {
    VirtualPath::root()
        .resolve(text)
        .unwrap_or_else(|error| panic!("invalid test path {text:?}: {error}"))
}

/// `length` bytes of a pattern that repeats only every 251 bytes, so shifted or truncated
/// data never compares equal by accident. `seed` tells different contents apart.
pub fn pattern(length: usize, seed: u8) -> Vec<u8> {
    (0..length)
        .map(|index| ((index % 251) as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

/// Uploads `data` (in uneven chunks, as a network would deliver it) and commits. Returns
/// the committed path and the size `commit` reported.
pub async fn upload(
    storage: &dyn Storage,
    target: &UploadTarget,
    mode: WriteMode,
    data: &[u8],
) -> Result<(VirtualPath, u64), StorageError> {
    let mut upload = storage.start_upload(target, mode).await?;
    write_chunks(&mut *upload, data).await;
    let path = upload.path().clone();
    let size = upload.commit().await?;
    Ok((path, size))
}

/// Writes `data` into an upload in chunks of varying sizes and flushes; panics on error.
pub async fn write_chunks(upload: &mut dyn crate::storage::Upload, data: &[u8]) {
    let mut rest = data;
    let mut chunk = 1;
    while !rest.is_empty() {
        let (now, later) = rest.split_at(chunk.min(rest.len()));
        upload.write_all(now).await.expect("write to upload");
        rest = later;
        chunk = (chunk * 3 + 1) % 70_000;
    }
    upload.flush().await.expect("flush upload");
}

/// Creates (or replaces) the file at `path` with `data`; panics on error.
pub async fn put_file(storage: &dyn Storage, path: &str, data: &[u8]) {
    let target = UploadTarget::Path(virtual_path(path));
    let (_, size) = upload(storage, &target, WriteMode::Create, data)
        .await
        .unwrap_or_else(|error| panic!("uploading {path}: {error}"));
    assert_eq!(size, data.len() as u64, "size reported by commit of {path}");
}

/// The bytes of `path` from `offset` to the end. Also checks that the download's `size` is
/// the file's full size, not reduced by the offset.
pub async fn read_file(
    storage: &dyn Storage,
    path: &str,
    offset: u64,
) -> Result<Vec<u8>, StorageError> {
    let download = storage.read(&virtual_path(path), offset).await?;
    let mut data = Vec::new();
    let mut body = download.body.into_stream().map_err(|error| {
        StorageError::new(
            StorageErrorKind::Local,
            format!("seeking in {path}: {error}"),
        )
    })?;
    body.read_to_end(&mut data).await.map_err(|error| {
        StorageError::new(StorageErrorKind::Local, format!("reading {path}: {error}"))
    })?;
    assert_eq!(
        download.size,
        offset + data.len() as u64,
        "Download::size of {path}"
    );
    Ok(data)
}

/// The names listed in `path`, sorted.
pub async fn list_names(storage: &dyn Storage, path: &str) -> Result<Vec<String>, StorageError> {
    let mut stream = storage.list(&virtual_path(path)).await?;
    let mut names = Vec::new();
    while let Some(entry) = stream.next().await {
        names.push(entry?.name);
    }
    names.sort();
    Ok(names)
}

/// Asserts exact bytes, reporting the lengths and the first difference rather than two
/// walls of numbers.
#[track_caller]
pub fn assert_bytes_eq(actual: &[u8], expected: &[u8], context: &str) {
    if actual == expected {
        return;
    }
    let first_difference = actual
        .iter()
        .zip(expected)
        .position(|(left, right)| left != right)
        .unwrap_or(actual.len().min(expected.len()));
    panic!(
        "{context}: got {} bytes, expected {}; first difference at byte {first_difference}",
        actual.len(),
        expected.len()
    );
}

/// Asserts that `result` failed with `kind`.
#[track_caller]
pub fn assert_kind<T: fmt::Debug>(
    result: Result<T, StorageError>,
    kind: StorageErrorKind,
    context: &str,
) {
    match result {
        Err(error) => assert_eq!(error.kind, kind, "{context}: wrong error kind ({error})"),
        Ok(value) => panic!("{context}: expected {kind:?}, got Ok({value:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::storage_battery!(memory, MemoryStorage::new());

    // The tuple form, as backends with a temporary directory use it.
    crate::storage_battery!(memory_with_guard, (MemoryStorage::new(), "guard"));

    #[tokio::test]
    async fn second_upload_of_the_same_name_is_transient() {
        let storage = MemoryStorage::new();
        let target = UploadTarget::Path(virtual_path("/busy"));
        let first = storage
            .start_upload(&target, WriteMode::Create)
            .await
            .unwrap();
        assert_kind(
            storage
                .start_upload(&target, WriteMode::Create)
                .await
                .map(|_| ()),
            StorageErrorKind::Transient,
            "second upload",
        );
        first.abandon().await.unwrap();
        let second = storage
            .start_upload(&target, WriteMode::Create)
            .await
            .unwrap();
        second.commit().await.unwrap();
    }

    #[tokio::test]
    async fn clones_share_the_tree() {
        let storage = MemoryStorage::new();
        let clone = storage.clone();
        put_file(&storage, "/shared", b"data").await;
        assert_eq!(read_file(&clone, "/shared", 0).await.unwrap(), b"data");
    }

    /// The battery's test list is written out in [`storage_battery!`]; this keeps it honest:
    /// every `pub async fn` of battery.rs is listed there exactly once, and nothing else is, so
    /// a battery test that was written but not listed cannot silently never run.
    #[test]
    fn the_battery_macro_lists_every_battery_test() {
        fn names_after<'a>(source: &'a str, prefix: &str) -> Vec<&'a str> {
            source
                .lines()
                .filter_map(|line| line.trim_start().strip_prefix(prefix))
                .map(|rest| {
                    rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .next()
                })
                .map(|name| name.unwrap_or_default())
                .collect()
        }
        let mut defined = names_after(include_str!("battery.rs"), "pub async fn ");
        let macro_source = include_str!("mod.rs");
        let list_start = macro_source
            .find("storage_battery!(@module $name, $constructor, $skip;")
            .expect("the battery macro's list");
        let list_end = list_start + macro_source[list_start..].find(");").expect("list end");
        let mut listed: Vec<&str> = macro_source[list_start..list_end]
            .lines()
            .skip(1)
            .map(|line| line.trim().trim_end_matches(','))
            .filter(|name| !name.is_empty())
            .collect();
        defined.sort_unstable();
        listed.sort_unstable();
        assert!(!defined.is_empty());
        assert_eq!(
            listed, defined,
            "storage_battery! must list every pub async fn of testing/battery.rs exactly once"
        );
    }
}
