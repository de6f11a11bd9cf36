//! The storage battery: the contract of [`Storage`] as executable tests.
//!
//! Each function takes a fresh, empty storage and panics on the first violation. Backends run
//! them all through [`storage_battery!`](crate::storage_battery); a function added here must
//! also be listed in that macro, and a test (`the_battery_macro_lists_every_battery_test`)
//! fails until it is.

// Test support code (behind the `testing` feature): each function here is a test body, and a
// panic is its failure report, so unwrapping is the point. clippy.toml's allow-unwrap-in-tests
// does not reach it because it is not under `#[cfg(test)]`.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferroftp_proto::{FileKind, StorageErrorKind};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{
    assert_bytes_eq, assert_kind, list_names, pattern, put_file, read_file, upload, virtual_path,
    write_chunks,
};
use crate::storage::{PublishGate, Published, Storage, UploadTarget, Withheld, WriteMode};

/// Larger than the usual copy buffers (8 KiB, 64 KiB), and not a round number, so that
/// chunking and buffering bugs show.
const LARGE: usize = 300 * 1024 + 17;

fn at(path: &str) -> UploadTarget {
    UploadTarget::Path(virtual_path(path))
}

/// An upload of `path` (created, replacing what is there) that has been sent `data` and
/// not ended yet: what a transfer holds between its last byte and its commit or abandon.
async fn upload_in_progress(
    storage: &dyn Storage,
    path: &str,
    data: &[u8],
) -> Box<dyn crate::storage::Upload> {
    let mut upload = storage
        .start_upload(&at(path), WriteMode::Create)
        .await
        .unwrap();
    write_chunks(&mut *upload, data).await;
    upload
}

/// Uploaded bytes come back exactly, and `commit` reports their size.
pub async fn write_commit_read_exact_bytes(storage: &dyn Storage) {
    let data = pattern(LARGE, 1);
    let mut upload = storage
        .start_upload(&at("/file.bin"), WriteMode::Create)
        .await
        .unwrap();
    assert_eq!(upload.path(), &virtual_path("/file.bin"));
    assert_eq!(upload.initial_len(), 0);
    write_chunks(&mut *upload, &data).await;
    assert_eq!(upload.commit().await.unwrap(), data.len() as u64);
    assert_bytes_eq(
        &read_file(storage, "/file.bin", 0).await.unwrap(),
        &data,
        "read back",
    );
    let meta = storage.metadata(&virtual_path("/file.bin")).await.unwrap();
    assert_eq!(meta.kind, FileKind::File);
    assert_eq!(meta.size, data.len() as u64);

    put_file(storage, "/empty", b"").await;
    assert_eq!(read_file(storage, "/empty", 0).await.unwrap(), b"");
    assert_eq!(
        storage
            .metadata(&virtual_path("/empty"))
            .await
            .unwrap()
            .size,
        0
    );
}

/// STOR over a longer file leaves no trace of the old tail.
pub async fn create_replaces_longer_file_exactly(storage: &dyn Storage) {
    put_file(storage, "/f", &pattern(LARGE, 1)).await;
    let short = pattern(10, 2);
    put_file(storage, "/f", &short).await;
    assert_bytes_eq(
        &read_file(storage, "/f", 0).await.unwrap(),
        &short,
        "replaced file",
    );
}

/// REST n + RETR: the bytes from n, with the full size reported.
pub async fn read_at_offset(storage: &dyn Storage) {
    let data = pattern(LARGE, 3);
    put_file(storage, "/f", &data).await;
    for offset in [0, 1, 1234, LARGE - 1, LARGE] {
        let read = read_file(storage, "/f", offset as u64).await.unwrap();
        assert_bytes_eq(&read, &data[offset..], &format!("read at offset {offset}"));
    }
}

/// An offset past the end is `InvalidRange`, not an empty read.
pub async fn read_past_end_is_invalid_range(storage: &dyn Storage) {
    put_file(storage, "/f", &pattern(100, 1)).await;
    assert_kind(
        read_file(storage, "/f", 101).await,
        StorageErrorKind::InvalidRange,
        "offset 101",
    );
    put_file(storage, "/empty", b"").await;
    assert_kind(
        read_file(storage, "/empty", 1).await,
        StorageErrorKind::InvalidRange,
        "empty",
    );
}

/// Reading what does not exist is `NotFound`.
pub async fn read_missing_is_not_found(storage: &dyn Storage) {
    assert_kind(
        read_file(storage, "/missing", 0).await,
        StorageErrorKind::NotFound,
        "file",
    );
    assert_kind(
        read_file(storage, "/no/such", 0).await,
        StorageErrorKind::NotFound,
        "nested",
    );
}

/// RETR of a directory is `IsADirectory`.
pub async fn read_directory_is_a_directory(storage: &dyn Storage) {
    storage.make_dir(&virtual_path("/d")).await.unwrap();
    assert_kind(
        read_file(storage, "/d", 0).await,
        StorageErrorKind::IsADirectory,
        "/d",
    );
    assert_kind(
        read_file(storage, "/", 0).await,
        StorageErrorKind::IsADirectory,
        "root",
    );
}

/// Metadata tells files from directories, with sizes and times.
pub async fn metadata_kinds(storage: &dyn Storage) {
    let root = storage.metadata(&virtual_path("/")).await.unwrap();
    assert_eq!(root.kind, FileKind::Directory);
    assert!(root.is_dir());
    storage.make_dir(&virtual_path("/d")).await.unwrap();
    assert_eq!(
        storage.metadata(&virtual_path("/d")).await.unwrap().kind,
        FileKind::Directory
    );
    put_file(storage, "/d/f", &pattern(42, 1)).await;
    let file = storage.metadata(&virtual_path("/d/f")).await.unwrap();
    assert_eq!(file.kind, FileKind::File);
    assert_eq!(file.size, 42);
    assert!(
        file.modified.is_some(),
        "a committed file has a modification time"
    );
    let missing = storage.metadata(&virtual_path("/missing")).await;
    assert_kind(missing, StorageErrorKind::NotFound, "/missing");
    let below_missing = storage.metadata(&virtual_path("/missing/x")).await;
    assert_kind(below_missing, StorageErrorKind::NotFound, "/missing/x");
    let below_file = storage.metadata(&virtual_path("/d/f/x")).await;
    assert_kind(below_file, StorageErrorKind::NotADirectory, "/d/f/x");
}

/// A listing streams every entry of the directory, and only those, with their facts.
pub async fn listing_streams_entries(storage: &dyn Storage) {
    put_file(storage, "/a", b"abc").await;
    put_file(storage, "/b", b"").await;
    storage.make_dir(&virtual_path("/dir")).await.unwrap();
    put_file(storage, "/dir/inner", b"x").await;

    let mut stream = storage.list(&virtual_path("/")).await.unwrap();
    let mut entries = Vec::new();
    while let Some(entry) = stream.next().await {
        entries.push(entry.unwrap());
    }
    entries.sort_by(|left, right| left.name.cmp(&right.name));
    let summary: Vec<(&str, FileKind)> = entries
        .iter()
        .map(|entry| (entry.name.as_str(), entry.meta.kind))
        .collect();
    assert_eq!(
        summary,
        [
            ("a", FileKind::File),
            ("b", FileKind::File),
            ("dir", FileKind::Directory)
        ]
    );
    assert_eq!(entries[0].meta.size, 3);
    assert_eq!(entries[1].meta.size, 0);

    assert_eq!(list_names(storage, "/dir").await.unwrap(), ["inner"]);
    storage.make_dir(&virtual_path("/empty")).await.unwrap();
    assert!(list_names(storage, "/empty").await.unwrap().is_empty());
    assert_kind(
        list_names(storage, "/missing").await,
        StorageErrorKind::NotFound,
        "missing",
    );

    // More entries than any sensible batch or channel size.
    storage.make_dir(&virtual_path("/many")).await.unwrap();
    let expected: Vec<String> = (0..150).map(|index| format!("entry-{index:03}")).collect();
    for name in &expected {
        put_file(storage, &format!("/many/{name}"), name.as_bytes()).await;
    }
    assert_eq!(list_names(storage, "/many").await.unwrap(), expected);
}

/// LIST of a file path (as a directory) is `NotADirectory`.
pub async fn list_file_is_not_a_directory(storage: &dyn Storage) {
    put_file(storage, "/f", b"data").await;
    assert_kind(
        list_names(storage, "/f").await,
        StorageErrorKind::NotADirectory,
        "/f",
    );
}

/// Neither abandoned nor running uploads show in listings.
pub async fn listing_hides_partial_uploads(storage: &dyn Storage) {
    put_file(storage, "/visible", b"v").await;
    let abandoned = upload_in_progress(storage, "/abandoned", &pattern(1000, 1)).await;
    abandoned.abandon().await.unwrap();
    let running = upload_in_progress(storage, "/running", &pattern(1000, 2)).await;

    assert_eq!(list_names(storage, "/").await.unwrap(), ["visible"]);
    running.commit().await.unwrap();
    assert_eq!(
        list_names(storage, "/").await.unwrap(),
        ["running", "visible"]
    );
}

/// MKD and RMD, with every refusal they can meet.
pub async fn make_dir_and_remove_dir(storage: &dyn Storage) {
    let directory = virtual_path("/d");
    storage.make_dir(&directory).await.unwrap();
    assert!(storage.metadata(&directory).await.unwrap().is_dir());
    assert_kind(
        storage.make_dir(&directory).await,
        StorageErrorKind::AlreadyExists,
        "again",
    );
    let orphan = storage.make_dir(&virtual_path("/missing/x")).await;
    assert_kind(orphan, StorageErrorKind::NotFound, "missing parent");
    put_file(storage, "/file", b"f").await;
    let over_file = storage.make_dir(&virtual_path("/file")).await;
    assert_kind(over_file, StorageErrorKind::AlreadyExists, "over a file");
    let below_file = storage.make_dir(&virtual_path("/file/x")).await;
    assert_kind(below_file, StorageErrorKind::NotADirectory, "below a file");

    storage.make_dir(&virtual_path("/d/e")).await.unwrap();
    assert_kind(
        storage.remove_dir(&directory).await,
        StorageErrorKind::NotEmpty,
        "subdir",
    );
    storage.remove_dir(&virtual_path("/d/e")).await.unwrap();
    put_file(storage, "/d/f", b"f").await;
    assert_kind(
        storage.remove_dir(&directory).await,
        StorageErrorKind::NotEmpty,
        "file",
    );
    storage.remove_file(&virtual_path("/d/f")).await.unwrap();
    storage.remove_dir(&directory).await.unwrap();
    assert_kind(
        storage.metadata(&directory).await,
        StorageErrorKind::NotFound,
        "removed",
    );
    assert_kind(
        storage.remove_dir(&directory).await,
        StorageErrorKind::NotFound,
        "twice",
    );
    let file = storage.remove_dir(&virtual_path("/file")).await;
    assert_kind(file, StorageErrorKind::NotADirectory, "RMD of a file");
    assert!(storage.metadata(&virtual_path("/file")).await.is_ok());
}

/// A directory that looks empty can be removed even if abandoned uploads left hidden data
/// in it: the client has no way to see, let alone delete, that data.
pub async fn remove_dir_discards_abandoned_uploads(storage: &dyn Storage) {
    storage.make_dir(&virtual_path("/d")).await.unwrap();
    let abandoned = upload_in_progress(storage, "/d/partial", &pattern(100, 1)).await;
    abandoned.abandon().await.unwrap();
    storage.remove_dir(&virtual_path("/d")).await.unwrap();
    storage.make_dir(&virtual_path("/d")).await.unwrap();
    let leftover = storage.resumable_size(&virtual_path("/d/partial")).await;
    assert_kind(
        leftover,
        StorageErrorKind::NotFound,
        "partial after RMD and MKD",
    );
}

/// DELE removes a file, and only a file.
pub async fn remove_file(storage: &dyn Storage) {
    let file = virtual_path("/f");
    put_file(storage, "/f", b"data").await;
    storage.remove_file(&file).await.unwrap();
    assert_kind(
        storage.metadata(&file).await,
        StorageErrorKind::NotFound,
        "after DELE",
    );
    assert_kind(
        storage.remove_file(&file).await,
        StorageErrorKind::NotFound,
        "twice",
    );
    storage.make_dir(&virtual_path("/d")).await.unwrap();
    let directory = storage.remove_file(&virtual_path("/d")).await;
    assert_kind(
        directory,
        StorageErrorKind::IsADirectory,
        "DELE of a directory",
    );
    assert!(
        storage
            .metadata(&virtual_path("/d"))
            .await
            .unwrap()
            .is_dir()
    );
}

/// RNFR/RNTO of a file, within and across directories.
pub async fn rename_file(storage: &dyn Storage) {
    let data = pattern(5000, 4);
    put_file(storage, "/a", &data).await;
    storage
        .rename(&virtual_path("/a"), &virtual_path("/b"))
        .await
        .unwrap();
    assert_kind(
        storage.metadata(&virtual_path("/a")).await,
        StorageErrorKind::NotFound,
        "/a",
    );
    assert_bytes_eq(
        &read_file(storage, "/b", 0).await.unwrap(),
        &data,
        "renamed",
    );
    storage.make_dir(&virtual_path("/dir")).await.unwrap();
    storage
        .rename(&virtual_path("/b"), &virtual_path("/dir/c"))
        .await
        .unwrap();
    assert_bytes_eq(
        &read_file(storage, "/dir/c", 0).await.unwrap(),
        &data,
        "moved",
    );
    assert_eq!(list_names(storage, "/").await.unwrap(), ["dir"]);

    let missing = storage
        .rename(&virtual_path("/missing"), &virtual_path("/x"))
        .await;
    assert_kind(missing, StorageErrorKind::NotFound, "missing source");
    let no_parent = storage
        .rename(&virtual_path("/dir/c"), &virtual_path("/nodir/c"))
        .await;
    assert_kind(
        no_parent,
        StorageErrorKind::NotFound,
        "missing target directory",
    );
    assert_bytes_eq(
        &read_file(storage, "/dir/c", 0).await.unwrap(),
        &data,
        "after failures",
    );
}

/// RNTO onto an existing file replaces it; onto a directory it is refused.
pub async fn rename_replaces_file(storage: &dyn Storage) {
    let winner = pattern(100, 1);
    put_file(storage, "/a", &winner).await;
    put_file(storage, "/b", &pattern(5000, 2)).await;
    storage
        .rename(&virtual_path("/a"), &virtual_path("/b"))
        .await
        .unwrap();
    assert_bytes_eq(
        &read_file(storage, "/b", 0).await.unwrap(),
        &winner,
        "replaced",
    );
    assert_kind(
        storage.metadata(&virtual_path("/a")).await,
        StorageErrorKind::NotFound,
        "/a",
    );

    storage.make_dir(&virtual_path("/d")).await.unwrap();
    let onto_directory = storage
        .rename(&virtual_path("/b"), &virtual_path("/d"))
        .await;
    assert_kind(
        onto_directory,
        StorageErrorKind::IsADirectory,
        "file onto directory",
    );
    assert_bytes_eq(
        &read_file(storage, "/b", 0).await.unwrap(),
        &winner,
        "after refusal",
    );
}

/// A directory moves with everything inside it.
pub async fn rename_directory(storage: &dyn Storage) {
    storage.make_dir(&virtual_path("/d")).await.unwrap();
    storage.make_dir(&virtual_path("/d/sub")).await.unwrap();
    let data = pattern(777, 5);
    put_file(storage, "/d/f", b"f").await;
    put_file(storage, "/d/sub/g", &data).await;
    storage
        .rename(&virtual_path("/d"), &virtual_path("/e"))
        .await
        .unwrap();
    assert_kind(
        storage.metadata(&virtual_path("/d")).await,
        StorageErrorKind::NotFound,
        "/d",
    );
    assert_eq!(list_names(storage, "/e").await.unwrap(), ["f", "sub"]);
    assert_bytes_eq(
        &read_file(storage, "/e/sub/g", 0).await.unwrap(),
        &data,
        "moved file",
    );

    let into_itself = storage
        .rename(&virtual_path("/e"), &virtual_path("/e/sub/e"))
        .await;
    assert!(
        into_itself.is_err(),
        "moving a directory into itself must fail"
    );
    assert_eq!(list_names(storage, "/e").await.unwrap(), ["f", "sub"]);
}

/// MFMT sets the time that metadata then reports.
pub async fn set_modified(storage: &dyn Storage) {
    if !storage.capabilities().set_modified {
        return;
    }
    let time = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    put_file(storage, "/f", b"data").await;
    storage
        .set_modified(&virtual_path("/f"), time)
        .await
        .unwrap();
    assert_eq!(
        storage
            .metadata(&virtual_path("/f"))
            .await
            .unwrap()
            .modified,
        Some(time)
    );
    storage.make_dir(&virtual_path("/d")).await.unwrap();
    storage
        .set_modified(&virtual_path("/d"), time)
        .await
        .unwrap();
    assert_eq!(
        storage
            .metadata(&virtual_path("/d"))
            .await
            .unwrap()
            .modified,
        Some(time)
    );
    let missing = storage
        .set_modified(&virtual_path("/missing"), SystemTime::now())
        .await;
    assert_kind(missing, StorageErrorKind::NotFound, "missing");
}

/// `make_dir_all` (users' homes) creates every missing parent, accepts an existing
/// directory, and refuses a file in the way.
pub async fn make_dir_all_creates_parents(storage: &dyn Storage) {
    let home = virtual_path("/home/alice/ftp");
    assert!(crate::make_dir_all(storage, &home).await.unwrap());
    assert!(storage.metadata(&home).await.unwrap().is_dir());
    assert!(!crate::make_dir_all(storage, &home).await.unwrap());
    assert!(
        crate::make_dir_all(storage, &virtual_path("/home/bob"))
            .await
            .unwrap()
    );
    assert_eq!(
        list_names(storage, "/home").await.unwrap(),
        ["alice", "bob"]
    );
    put_file(storage, "/file", b"x").await;
    let onto_file = crate::make_dir_all(storage, &virtual_path("/file")).await;
    assert_kind(onto_file, StorageErrorKind::NotADirectory, "a file as home");
    let below_file = crate::make_dir_all(storage, &virtual_path("/file/home")).await;
    assert!(below_file.is_err(), "a home below a file: {below_file:?}");
}

/// SITE CHMOD: with modes, the permission bits metadata reports afterwards are the ones
/// set (the bits used here lie within every sensible mask: no group or other write), and
/// setuid, setgid and sticky are refused; without modes, every request is `Unsupported`.
pub async fn set_mode(storage: &dyn Storage) {
    put_file(storage, "/f", b"data").await;
    storage.make_dir(&virtual_path("/d")).await.unwrap();
    if !storage.capabilities().modes {
        let refused = storage.set_mode(&virtual_path("/f"), 0o640).await;
        assert_kind(refused, StorageErrorKind::Unsupported, "no modes");
        return;
    }
    for (path, mode) in [("/f", 0o640), ("/f", 0o400), ("/d", 0o750), ("/d", 0o700)] {
        storage.set_mode(&virtual_path(path), mode).await.unwrap();
        let meta = storage.metadata(&virtual_path(path)).await.unwrap();
        assert_eq!(meta.mode, mode, "{path} after set_mode({mode:o})");
    }
    for special in [0o4755, 0o2755, 0o1777] {
        let refused = storage.set_mode(&virtual_path("/f"), special).await;
        assert_kind(refused, StorageErrorKind::PermissionDenied, "special bits");
    }
    assert_eq!(
        storage.metadata(&virtual_path("/f")).await.unwrap().mode,
        0o400,
        "a refused mode leaves the file as it was"
    );
    let missing = storage.set_mode(&virtual_path("/missing"), 0o644).await;
    assert_kind(missing, StorageErrorKind::NotFound, "missing");
}

/// Until commit, an upload is invisible under its final name: a new name does not exist, an
/// existing one still shows and reads as its previous version.
pub async fn upload_in_progress_is_invisible(storage: &dyn Storage) {
    let new = virtual_path("/new");
    let fresh = upload_in_progress(storage, "/new", &pattern(LARGE, 1)).await;
    assert_kind(
        storage.metadata(&new).await,
        StorageErrorKind::NotFound,
        "metadata",
    );
    assert_kind(
        read_file(storage, "/new", 0).await,
        StorageErrorKind::NotFound,
        "read",
    );
    fresh.commit().await.unwrap();
    assert_eq!(storage.metadata(&new).await.unwrap().size, LARGE as u64);

    let old = pattern(1000, 2);
    let replacement = pattern(LARGE, 3);
    put_file(storage, "/old", &old).await;
    let replacing = upload_in_progress(storage, "/old", &replacement).await;
    assert_eq!(
        storage.metadata(&virtual_path("/old")).await.unwrap().size,
        old.len() as u64
    );
    assert_bytes_eq(
        &read_file(storage, "/old", 0).await.unwrap(),
        &old,
        "during upload",
    );
    replacing.commit().await.unwrap();
    assert_bytes_eq(
        &read_file(storage, "/old", 0).await.unwrap(),
        &replacement,
        "committed",
    );
}

/// An abandoned upload leaves the previous version intact, byte for byte, and the committed
/// file stays the resumable content.
pub async fn abandon_keeps_previous_version(storage: &dyn Storage) {
    let old = pattern(LARGE, 1);
    put_file(storage, "/f", &old).await;
    let upload = upload_in_progress(storage, "/f", &pattern(LARGE / 2, 2)).await;
    upload.abandon().await.unwrap();
    assert_bytes_eq(
        &read_file(storage, "/f", 0).await.unwrap(),
        &old,
        "after abandon",
    );
    let resumable = storage.resumable_size(&virtual_path("/f")).await.unwrap();
    assert_eq!(
        resumable,
        old.len() as u64,
        "the committed file is the resumable content"
    );
}

/// The gate of `publish_if` decides once the data is in, no earlier than the moment it
/// names, and its yes publishes the exact bytes.
pub async fn publish_if_decides_at_the_gates_moment(storage: &dyn Storage) {
    let data = pattern(LARGE, 6);
    let upload = upload_in_progress(storage, "/gated", &data).await;
    let moment = Instant::now() + Duration::from_millis(30);
    let decided_at = Arc::new(Mutex::new(None));
    let record = Arc::clone(&decided_at);
    let gate = PublishGate::new(move || {
        *record.lock().unwrap() = Some(Instant::now());
        Ok(())
    })
    .not_before(moment, tokio::time::sleep_until(moment.into()));
    assert_eq!(
        upload.publish_if(gate).await.unwrap(),
        Published::Published(data.len() as u64)
    );
    let decided_at = decided_at.lock().unwrap().expect("the gate was asked");
    assert!(
        decided_at >= moment,
        "decided {:?} before its moment",
        moment - decided_at
    );
    assert_bytes_eq(
        &read_file(storage, "/gated", 0).await.unwrap(),
        &data,
        "published through the gate",
    );
}

/// A gate that refuses (the client gone) leaves the previous version whole, as an abandon
/// does.
pub async fn publish_if_withheld_keeps_previous_version(storage: &dyn Storage) {
    let old = pattern(LARGE, 7);
    put_file(storage, "/kept", &old).await;
    let upload = upload_in_progress(storage, "/kept", &pattern(LARGE / 3, 8)).await;
    let gate = PublishGate::new(|| Err(Withheld::ClientGone));
    assert_eq!(
        upload.publish_if(gate).await.unwrap(),
        Published::Withheld(Withheld::ClientGone)
    );
    assert_bytes_eq(
        &read_file(storage, "/kept", 0).await.unwrap(),
        &old,
        "after a refusing gate",
    );
}

/// An abandoned upload of a new name keeps its data hidden but resumable: SIZE reports it,
/// APPE continues it, and the committed result is exact.
pub async fn abandon_leaves_resumable_data(storage: &dyn Storage) {
    let path = virtual_path("/r");
    let first = pattern(70_001, 3);
    let rest = pattern(LARGE, 4);
    let upload = upload_in_progress(storage, "/r", &first).await;
    upload.abandon().await.unwrap();
    assert_kind(
        storage.metadata(&path).await,
        StorageErrorKind::NotFound,
        "after abandon",
    );
    assert_eq!(
        storage.resumable_size(&path).await.unwrap(),
        first.len() as u64
    );

    let mut resumed = storage
        .start_upload(&at("/r"), WriteMode::Append)
        .await
        .unwrap();
    assert_eq!(resumed.initial_len(), first.len() as u64);
    write_chunks(&mut *resumed, &rest).await;
    let expected = [first, rest].concat();
    assert_eq!(resumed.commit().await.unwrap(), expected.len() as u64);
    assert_bytes_eq(
        &read_file(storage, "/r", 0).await.unwrap(),
        &expected,
        "resumed file",
    );
    assert_eq!(
        storage.resumable_size(&path).await.unwrap(),
        expected.len() as u64
    );
}

/// Dropping an upload without commit or abandon is an abandon (a client vanishing).
pub async fn drop_without_commit_is_abandon(storage: &dyn Storage) {
    let first = pattern(5000, 5);
    let upload = upload_in_progress(storage, "/dropped", &first).await;
    drop(upload);
    let path = virtual_path("/dropped");
    assert_kind(
        storage.metadata(&path).await,
        StorageErrorKind::NotFound,
        "after drop",
    );
    assert_eq!(
        storage.resumable_size(&path).await.unwrap(),
        first.len() as u64
    );
    let rest = pattern(3000, 6);
    let target = at("/dropped");
    upload_with_retry(storage, &target, WriteMode::Append, &rest).await;
    let expected = [first, rest].concat();
    assert_bytes_eq(
        &read_file(storage, "/dropped", 0).await.unwrap(),
        &expected,
        "resumed",
    );

    let old = pattern(2000, 7);
    put_file(storage, "/kept", &old).await;
    let replacing = upload_in_progress(storage, "/kept", &pattern(4000, 8)).await;
    drop(replacing);
    assert_bytes_eq(
        &read_file(storage, "/kept", 0).await.unwrap(),
        &old,
        "previous version",
    );
}

/// A dropped upload may release its claim on the name a moment later (a backend closing a
/// file in the background): retry a `Transient` refusal briefly.
async fn upload_with_retry(
    storage: &dyn Storage,
    target: &UploadTarget,
    mode: WriteMode,
    data: &[u8],
) {
    for _ in 0..200 {
        match upload(storage, target, mode, data).await {
            Ok(_) => return,
            Err(error) if error.kind == StorageErrorKind::Transient => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(error) => panic!("upload to {target:?}: {error}"),
        }
    }
    panic!("upload to {target:?} still refused as busy after two seconds");
}

/// STOR after an abandoned upload starts from nothing.
pub async fn create_discards_abandoned_partial(storage: &dyn Storage) {
    let upload = upload_in_progress(storage, "/p", &pattern(5000, 1)).await;
    upload.abandon().await.unwrap();
    let fresh = pattern(100, 2);
    put_file(storage, "/p", &fresh).await;
    assert_bytes_eq(
        &read_file(storage, "/p", 0).await.unwrap(),
        &fresh,
        "fresh upload",
    );
}

/// REST n + STOR on an abandoned upload: its data cut at n, then the new bytes. With
/// n = SIZE it is the `curl -C -` resume.
pub async fn resume_at_cuts_partial(storage: &dyn Storage) {
    let first = pattern(1000, 1);
    let upload = upload_in_progress(storage, "/p", &first).await;
    upload.abandon().await.unwrap();
    let tail = pattern(300, 2);
    let mut resumed = storage
        .start_upload(&at("/p"), WriteMode::ResumeAt(400))
        .await
        .unwrap();
    assert_eq!(resumed.initial_len(), 400);
    write_chunks(&mut *resumed, &tail).await;
    assert_eq!(resumed.commit().await.unwrap(), 700);
    let expected = [&first[..400], &tail[..]].concat();
    assert_bytes_eq(
        &read_file(storage, "/p", 0).await.unwrap(),
        &expected,
        "cut partial",
    );

    let whole = pattern(LARGE, 3);
    let split = 123_457;
    let upload = upload_in_progress(storage, "/q", &whole[..split]).await;
    upload.abandon().await.unwrap();
    let size = storage.resumable_size(&virtual_path("/q")).await.unwrap();
    assert_eq!(size, split as u64);
    let target = at("/q");
    upload_with_retry(storage, &target, WriteMode::ResumeAt(size), &whole[split..]).await;
    assert_bytes_eq(
        &read_file(storage, "/q", 0).await.unwrap(),
        &whole,
        "REST SIZE + STOR",
    );
}

/// REST n + STOR on a committed file: the file cut at n, then the new bytes, published only
/// at commit.
pub async fn resume_at_cuts_committed_file(storage: &dyn Storage) {
    let old = pattern(1000, 1);
    put_file(storage, "/f", &old).await;
    let tail = pattern(50, 2);
    let mut resumed = storage
        .start_upload(&at("/f"), WriteMode::ResumeAt(600))
        .await
        .unwrap();
    assert_eq!(resumed.initial_len(), 600);
    write_chunks(&mut *resumed, &tail).await;
    assert_bytes_eq(
        &read_file(storage, "/f", 0).await.unwrap(),
        &old,
        "before commit",
    );
    assert_eq!(resumed.commit().await.unwrap(), 650);
    let expected = [&old[..600], &tail[..]].concat();
    assert_bytes_eq(
        &read_file(storage, "/f", 0).await.unwrap(),
        &expected,
        "cut file",
    );

    let from_start = pattern(10, 3);
    upload(storage, &at("/f"), WriteMode::ResumeAt(0), &from_start)
        .await
        .unwrap();
    assert_bytes_eq(
        &read_file(storage, "/f", 0).await.unwrap(),
        &from_start,
        "REST 0",
    );

    let more = pattern(5, 4);
    upload(storage, &at("/f"), WriteMode::ResumeAt(10), &more)
        .await
        .unwrap();
    let expected = [from_start, more].concat();
    assert_bytes_eq(
        &read_file(storage, "/f", 0).await.unwrap(),
        &expected,
        "REST at end",
    );
}

/// REST beyond the resumable content is `InvalidRange`, and changes nothing.
pub async fn resume_at_beyond_is_invalid_range(storage: &dyn Storage) {
    let old = pattern(100, 1);
    put_file(storage, "/f", &old).await;
    let beyond_file = storage
        .start_upload(&at("/f"), WriteMode::ResumeAt(101))
        .await;
    assert_kind(
        beyond_file.map(|_| ()),
        StorageErrorKind::InvalidRange,
        "beyond file",
    );
    assert_bytes_eq(
        &read_file(storage, "/f", 0).await.unwrap(),
        &old,
        "file untouched",
    );

    let upload = upload_in_progress(storage, "/p", &pattern(10, 2)).await;
    upload.abandon().await.unwrap();
    let beyond_partial = storage
        .start_upload(&at("/p"), WriteMode::ResumeAt(11))
        .await;
    assert_kind(
        beyond_partial.map(|_| ()),
        StorageErrorKind::InvalidRange,
        "beyond partial",
    );
    assert_eq!(
        storage.resumable_size(&virtual_path("/p")).await.unwrap(),
        10
    );

    // A name with no content at all has empty resumable content.
    let beyond_nothing = storage
        .start_upload(&at("/none"), WriteMode::ResumeAt(1))
        .await;
    assert_kind(
        beyond_nothing.map(|_| ()),
        StorageErrorKind::InvalidRange,
        "beyond nothing",
    );
    let data = pattern(20, 3);
    upload_with_retry(storage, &at("/none"), WriteMode::ResumeAt(0), &data).await;
    assert_bytes_eq(
        &read_file(storage, "/none", 0).await.unwrap(),
        &data,
        "REST 0 on new",
    );
}

/// APPE onto a committed file: the old bytes, then the new ones, published at commit.
pub async fn append_onto_committed_file(storage: &dyn Storage) {
    let first = pattern(LARGE, 1);
    put_file(storage, "/f", &first).await;
    let second = pattern(4321, 2);
    let mut append = storage
        .start_upload(&at("/f"), WriteMode::Append)
        .await
        .unwrap();
    assert_eq!(append.initial_len(), first.len() as u64);
    write_chunks(&mut *append, &second).await;
    assert_bytes_eq(
        &read_file(storage, "/f", 0).await.unwrap(),
        &first,
        "before commit",
    );
    let expected = [first, second].concat();
    assert_eq!(append.commit().await.unwrap(), expected.len() as u64);
    assert_bytes_eq(
        &read_file(storage, "/f", 0).await.unwrap(),
        &expected,
        "appended",
    );

    upload(storage, &at("/f"), WriteMode::Append, b"")
        .await
        .unwrap();
    assert_bytes_eq(
        &read_file(storage, "/f", 0).await.unwrap(),
        &expected,
        "empty append",
    );
}

/// APPE to a name that does not exist creates it (RFC 959).
pub async fn append_to_missing_name_creates_it(storage: &dyn Storage) {
    let data = pattern(999, 1);
    let mut append = storage
        .start_upload(&at("/new"), WriteMode::Append)
        .await
        .unwrap();
    assert_eq!(append.initial_len(), 0);
    write_chunks(&mut *append, &data).await;
    append.commit().await.unwrap();
    assert_bytes_eq(
        &read_file(storage, "/new", 0).await.unwrap(),
        &data,
        "created by APPE",
    );
}

/// STOU picks a fresh name inside the directory every time, even while earlier STOU
/// uploads are still running.
pub async fn unique_in_gives_distinct_names(storage: &dyn Storage) {
    let directory = virtual_path("/u");
    storage.make_dir(&directory).await.unwrap();
    let target = UploadTarget::UniqueIn(directory.clone());
    let mut first = storage
        .start_upload(&target, WriteMode::Create)
        .await
        .unwrap();
    let mut second = storage
        .start_upload(&target, WriteMode::Create)
        .await
        .unwrap();
    let first_data = pattern(1000, 1);
    let second_data = pattern(2000, 2);
    write_chunks(&mut *first, &first_data).await;
    write_chunks(&mut *second, &second_data).await;
    let first_path = first.path().clone();
    let second_path = second.path().clone();
    assert_ne!(first_path, second_path);
    assert_eq!(first_path.parent(), directory);
    assert_eq!(second_path.parent(), directory);
    assert_eq!(first.commit().await.unwrap(), 1000);
    assert_eq!(second.commit().await.unwrap(), 2000);

    let third_data = pattern(3000, 3);
    let (third_path, _) = upload(storage, &target, WriteMode::Create, &third_data)
        .await
        .unwrap();
    assert_eq!(third_path.parent(), directory);
    assert!(third_path != first_path && third_path != second_path);

    for (path, data) in [
        (&first_path, &first_data),
        (&second_path, &second_data),
        (&third_path, &third_data),
    ] {
        let read = read_file(storage, path.as_str(), 0).await.unwrap();
        assert_bytes_eq(&read, data, path.as_str());
    }
    assert_eq!(list_names(storage, "/u").await.unwrap().len(), 3);

    let at_root = UploadTarget::UniqueIn(virtual_path("/"));
    let (root_path, _) = upload(storage, &at_root, WriteMode::Create, b"r")
        .await
        .unwrap();
    assert!(root_path.parent().is_root());
    let missing = UploadTarget::UniqueIn(virtual_path("/missing"));
    let refused = storage.start_upload(&missing, WriteMode::Create).await;
    assert_kind(
        refused.map(|_| ()),
        StorageErrorKind::NotFound,
        "STOU in a missing directory",
    );
}

/// STOR into a directory that does not exist is `NotFound` (or `NotADirectory` below a
/// file), refused at the start, not at commit.
pub async fn upload_into_missing_directory_is_not_found(storage: &dyn Storage) {
    let missing = storage
        .start_upload(&at("/missing/f"), WriteMode::Create)
        .await;
    assert_kind(
        missing.map(|_| ()),
        StorageErrorKind::NotFound,
        "missing directory",
    );
    put_file(storage, "/file", b"f").await;
    let below_file = storage
        .start_upload(&at("/file/f"), WriteMode::Create)
        .await;
    assert_kind(
        below_file.map(|_| ()),
        StorageErrorKind::NotADirectory,
        "below a file",
    );
}

/// STOR onto a directory's name is `IsADirectory`, and the directory survives.
pub async fn upload_onto_directory_is_a_directory(storage: &dyn Storage) {
    storage.make_dir(&virtual_path("/d")).await.unwrap();
    for mode in [WriteMode::Create, WriteMode::Append, WriteMode::ResumeAt(0)] {
        let refused = storage.start_upload(&at("/d"), mode).await;
        assert_kind(
            refused.map(|_| ()),
            StorageErrorKind::IsADirectory,
            "onto /d",
        );
    }
    let root = storage.start_upload(&at("/"), WriteMode::Create).await;
    assert_kind(
        root.map(|_| ()),
        StorageErrorKind::IsADirectory,
        "onto the root",
    );
    assert!(
        storage
            .metadata(&virtual_path("/d"))
            .await
            .unwrap()
            .is_dir()
    );
    // Writing through an upload flushes like any AsyncWrite.
    let mut upload = storage
        .start_upload(&at("/d/inside"), WriteMode::Create)
        .await
        .unwrap();
    upload.write_all(b"inside").await.unwrap();
    upload.shutdown().await.unwrap();
    upload.commit().await.unwrap();
    assert_eq!(read_file(storage, "/d/inside", 0).await.unwrap(), b"inside");
}
