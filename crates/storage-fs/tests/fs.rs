//! FsStorage: the shared storage battery, then what only a real directory can get wrong:
//! symlinks leading out of the root, hidden partial files, atomic commits.

// Test code: a panic is the failure report, so unwrapping is the point (the helpers
// outside `#[test]` functions are not covered by clippy.toml's allow-unwrap-in-tests).
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use ferroftp_backend::testing::{
    assert_bytes_eq, assert_kind, list_names, pattern, put_file, read_file, upload, virtual_path,
    write_chunks,
};
use ferroftp_backend::{
    FileKind, Storage, StorageError, StorageErrorKind, UploadTarget, WriteMode,
};
use ferroftp_storage_fs::{FsStorage, PARTIAL_PREFIX};
use futures_util::StreamExt;
use tempfile::TempDir;

ferroftp_backend::storage_battery!(battery, {
    let directory = tempfile::tempdir().expect("temporary directory");
    let storage = FsStorage::new(directory.path()).expect("open storage");
    (storage, directory)
});

// The same contract holds when uploads are published without fsync: only durability across
// a power loss differs, which no test on a running kernel can observe.
ferroftp_backend::storage_battery!(battery_without_fsync, {
    let directory = tempfile::tempdir().expect("temporary directory");
    let storage = FsStorage::new(directory.path())
        .expect("open storage")
        .with_fsync_uploads(false);
    (storage, directory)
});

// On a root in memory the storage works in place instead of on the blocking pool, uploads
// published included (the gate's wait is the event loop's): the same contract.
ferroftp_backend::storage_battery!(battery_in_memory, {
    // /dev/shm is a tmpfs on Linux.
    let directory = tempfile::tempdir_in("/dev/shm").expect("a tmpfs at /dev/shm");
    let storage = FsStorage::new(directory.path()).expect("open storage");
    (storage, directory)
});

/// A served root with a sibling directory `outside` holding a secret, both in a temporary
/// directory that lives as long as the value.
struct Sandbox {
    storage: FsStorage,
    base: TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let base = tempfile::tempdir().expect("temporary directory");
        std::fs::create_dir(base.path().join("root")).unwrap();
        std::fs::create_dir(base.path().join("outside")).unwrap();
        std::fs::write(base.path().join("outside/secret.txt"), b"secret").unwrap();
        let storage = FsStorage::new(base.path().join("root")).expect("open storage");
        Self { storage, base }
    }

    fn root(&self) -> PathBuf {
        self.base.path().join("root")
    }

    fn outside(&self) -> PathBuf {
        self.base.path().join("outside")
    }

    fn on_disk(&self, relative: &str) -> PathBuf {
        self.root().join(relative)
    }
}

fn at(path: &str) -> UploadTarget {
    UploadTarget::Path(virtual_path(path))
}

/// Refused for leaving the root: PermissionDenied (EXDEV) or NotFound, both 550.
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(result: Result<T, StorageError>, context: &str) {
    match result {
        Err(error) => assert!(
            matches!(
                error.kind,
                StorageErrorKind::PermissionDenied | StorageErrorKind::NotFound
            ),
            "{context}: refused with the wrong kind ({error})"
        ),
        Ok(value) => panic!("{context}: escaped the root: {value:?}"),
    }
}

fn tree_of(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn new_refuses_a_missing_root() {
    let base = tempfile::tempdir().unwrap();
    assert!(FsStorage::new(base.path().join("missing")).is_err());
    std::fs::write(base.path().join("file"), b"").unwrap();
    assert!(FsStorage::new(base.path().join("file")).is_err());
    let storage = FsStorage::new(base.path()).unwrap();
    assert_eq!(storage.root(), base.path());
}

#[tokio::test]
async fn symlinks_leaving_the_root_are_refused() {
    let sandbox = Sandbox::new();
    let storage = &sandbox.storage;
    symlink("../outside", sandbox.on_disk("relative_escape")).unwrap();
    symlink(sandbox.outside(), sandbox.on_disk("absolute_escape")).unwrap();
    symlink("../outside/secret.txt", sandbox.on_disk("secret_link")).unwrap();
    symlink("/etc/passwd", sandbox.on_disk("passwd_link")).unwrap();

    for link in [
        "/secret_link",
        "/passwd_link",
        "/relative_escape/secret.txt",
    ] {
        assert_refused(read_file(storage, link, 0).await, &format!("read {link}"));
        assert_refused(storage.resumable_size(&virtual_path(link)).await, "SIZE");
        let append = storage.start_upload(&at(link), WriteMode::Append).await;
        assert_refused(append.map(|_| ()), &format!("APPE {link}"));
    }
    assert_refused(
        read_file(storage, "/absolute_escape/secret.txt", 0).await,
        "absolute",
    );
    for directory in ["/relative_escape", "/absolute_escape"] {
        assert_refused(
            list_names(storage, directory).await,
            &format!("LIST {directory}"),
        );
        // CWD checks metadata of the target directory.
        let cwd = storage.metadata(&virtual_path(directory)).await;
        assert_refused(cwd, &format!("CWD {directory}"));
        let target = at(&format!("{directory}/new"));
        let upload = storage.start_upload(&target, WriteMode::Create).await;
        assert_refused(upload.map(|_| ()), &format!("STOR into {directory}"));
        let unique = UploadTarget::UniqueIn(virtual_path(directory));
        let stou = storage.start_upload(&unique, WriteMode::Create).await;
        assert_refused(stou.map(|_| ()), &format!("STOU into {directory}"));
        let mkdir = storage
            .make_dir(&virtual_path(&format!("{directory}/new")))
            .await;
        assert_refused(mkdir, &format!("MKD in {directory}"));
    }
    let delete = storage
        .remove_file(&virtual_path("/relative_escape/secret.txt"))
        .await;
    assert_refused(delete, "DELE through a link");
    let (secret, stolen) = (
        virtual_path("/relative_escape/secret.txt"),
        virtual_path("/x"),
    );
    assert_refused(
        storage.rename(&secret, &stolen).await,
        "RNFR through a link",
    );
    put_file(storage, "/mine", b"mine").await;
    let (mine, planted) = (virtual_path("/mine"), virtual_path("/relative_escape/mine"));
    assert_refused(storage.rename(&mine, &planted).await, "RNTO through a link");
    let link = virtual_path("/secret_link");
    let touch = storage.set_modified(&link, std::time::UNIX_EPOCH).await;
    assert_refused(touch, "MFMT through a link");
    let secret_mode_before = std::fs::metadata(sandbox.outside().join("secret.txt"))
        .unwrap()
        .permissions()
        .mode();
    for path in [
        "/secret_link",
        "/relative_escape/secret.txt",
        "/absolute_escape",
    ] {
        let chmod = storage.set_mode(&virtual_path(path), 0o700).await;
        assert_refused(chmod, &format!("SITE CHMOD {path}"));
    }
    assert_eq!(
        std::fs::metadata(sandbox.outside().join("secret.txt"))
            .unwrap()
            .permissions()
            .mode(),
        secret_mode_before,
        "SITE CHMOD through a link changed a file outside the root"
    );

    // Nothing outside changed.
    assert_eq!(tree_of(&sandbox.outside()), ["secret.txt"]);
    assert_eq!(
        std::fs::read(sandbox.outside().join("secret.txt")).unwrap(),
        b"secret"
    );
    let secret_time = std::fs::metadata(sandbox.outside().join("secret.txt")).unwrap();
    assert_ne!(secret_time.modified().unwrap(), std::time::UNIX_EPOCH);

    // Listed, but as bare links: their targets are not examined.
    let mut stream = storage.list(&virtual_path("/")).await.unwrap();
    while let Some(entry) = stream.next().await {
        let entry = entry.unwrap();
        if entry.name != "mine" {
            assert_eq!(entry.meta.kind, FileKind::Symlink, "{}", entry.name);
        }
    }

    // STOR onto a link's own name replaces the link inside the root, never its target.
    put_file(storage, "/secret_link", b"replacement").await;
    assert!(
        std::fs::symlink_metadata(sandbox.on_disk("secret_link"))
            .unwrap()
            .is_file()
    );
    assert_eq!(
        std::fs::read(sandbox.outside().join("secret.txt")).unwrap(),
        b"secret"
    );
}

#[tokio::test]
async fn symlinks_inside_the_root_work() {
    let sandbox = Sandbox::new();
    let storage = &sandbox.storage;
    std::fs::create_dir(sandbox.on_disk("dir")).unwrap();
    std::fs::write(sandbox.on_disk("dir/file.txt"), b"inside").unwrap();
    symlink("dir", sandbox.on_disk("dir_link")).unwrap();
    symlink("dir/file.txt", sandbox.on_disk("file_link")).unwrap();
    // Climbs with `..` but stays inside: allowed.
    symlink("../dir/file.txt", sandbox.on_disk("dir/up_and_back")).unwrap();

    assert_eq!(
        read_file(storage, "/file_link", 0).await.unwrap(),
        b"inside"
    );
    assert_eq!(
        read_file(storage, "/dir_link/file.txt", 0).await.unwrap(),
        b"inside"
    );
    assert_eq!(
        read_file(storage, "/dir/up_and_back", 0).await.unwrap(),
        b"inside"
    );
    assert!(
        storage
            .metadata(&virtual_path("/dir_link"))
            .await
            .unwrap()
            .is_dir()
    );
    assert_eq!(
        list_names(storage, "/dir_link").await.unwrap(),
        ["file.txt", "up_and_back"]
    );

    let mut stream = storage.list(&virtual_path("/")).await.unwrap();
    let mut kinds = Vec::new();
    while let Some(entry) = stream.next().await {
        let entry = entry.unwrap();
        kinds.push((entry.name, entry.meta.kind));
    }
    kinds.sort_by(|left, right| left.0.cmp(&right.0));
    assert_eq!(
        kinds,
        [
            ("dir".to_owned(), FileKind::Directory),
            ("dir_link".to_owned(), FileKind::Directory),
            ("file_link".to_owned(), FileKind::File),
        ]
    );
    put_file(storage, "/dir_link/new", b"through a link").await;
    assert_eq!(
        std::fs::read(sandbox.on_disk("dir/new")).unwrap(),
        b"through a link"
    );
}

#[tokio::test]
async fn names_that_only_look_like_traversal_are_plain_names() {
    let sandbox = Sandbox::new();
    let storage = &sandbox.storage;
    for name in ["...", "..x", ".hidden", "%2e%2e"] {
        put_file(storage, &format!("/{name}"), name.as_bytes()).await;
        assert_eq!(
            std::fs::read(sandbox.on_disk(name)).unwrap(),
            name.as_bytes()
        );
    }
    assert_eq!(tree_of(&sandbox.outside()), ["secret.txt"]);
    // `..` itself never reaches a backend: VirtualPath refuses to climb above the root.
    assert!(virtual_path("/").resolve("../outside").is_err());
}

#[tokio::test]
async fn partial_files_are_hidden_and_not_addressable() {
    let sandbox = Sandbox::new();
    let storage = &sandbox.storage;
    let mut upload = storage
        .start_upload(&at("/f"), WriteMode::Create)
        .await
        .unwrap();
    write_chunks(&mut *upload, b"partial").await;
    upload.abandon().await.unwrap();
    let partial = format!("{PARTIAL_PREFIX}f");
    assert_eq!(tree_of(&sandbox.root()), std::slice::from_ref(&partial));
    assert!(list_names(storage, "/").await.unwrap().is_empty());

    let hidden = format!("/{partial}");
    let invalid = StorageErrorKind::InvalidName;
    assert_kind(read_file(storage, &hidden, 0).await, invalid, "RETR");
    assert_kind(
        storage.metadata(&virtual_path(&hidden)).await,
        invalid,
        "MLST",
    );
    assert_kind(
        storage.resumable_size(&virtual_path(&hidden)).await,
        invalid,
        "SIZE",
    );
    assert_kind(
        list_names(storage, &format!("{hidden}/x")).await,
        invalid,
        "LIST below",
    );
    let stor = storage.start_upload(&at(&hidden), WriteMode::Create).await;
    assert_kind(stor.map(|_| ()), invalid, "STOR");
    assert_kind(
        storage.remove_file(&virtual_path(&hidden)).await,
        invalid,
        "DELE",
    );
    let rename_to = storage
        .rename(&virtual_path("/f"), &virtual_path(&hidden))
        .await;
    assert_kind(rename_to, invalid, "RNTO");
    let rename_from = storage
        .rename(&virtual_path(&hidden), &virtual_path("/stolen"))
        .await;
    assert_kind(rename_from, invalid, "RNFR");
    let mkdir = storage
        .make_dir(&virtual_path(&format!("/{PARTIAL_PREFIX}dir")))
        .await;
    assert_kind(mkdir, invalid, "MKD");
    assert_eq!(
        std::fs::read(sandbox.on_disk(&partial)).unwrap(),
        b"partial"
    );
}

#[tokio::test]
async fn abandon_leaves_the_partial_on_disk_and_the_old_file_intact() {
    let sandbox = Sandbox::new();
    let storage = &sandbox.storage;
    let old = pattern(100_000, 1);
    let new = pattern(60_000, 2);
    put_file(storage, "/f", &old).await;
    let mut upload = storage
        .start_upload(&at("/f"), WriteMode::Create)
        .await
        .unwrap();
    write_chunks(&mut *upload, &new).await;
    upload.abandon().await.unwrap();
    let partial = std::fs::read(sandbox.on_disk(&format!("{PARTIAL_PREFIX}f"))).unwrap();
    assert_bytes_eq(&partial, &new, "partial file on disk");
    assert_bytes_eq(
        &std::fs::read(sandbox.on_disk("f")).unwrap(),
        &old,
        "old file on disk",
    );

    // Dropped, not abandoned: the same.
    let mut dropped = storage
        .start_upload(&at("/f"), WriteMode::Create)
        .await
        .unwrap();
    write_chunks(&mut *dropped, &new[..1000]).await;
    drop(dropped);
    assert_bytes_eq(
        &std::fs::read(sandbox.on_disk("f")).unwrap(),
        &old,
        "after drop",
    );
}

#[tokio::test]
async fn commit_is_atomic() {
    let sandbox = Sandbox::new();
    let storage = &sandbox.storage;
    let old = pattern(50_000, 1);
    let new = pattern(1_000_000, 2);
    put_file(storage, "/f", &old).await;
    let mut upload = storage
        .start_upload(&at("/f"), WriteMode::Create)
        .await
        .unwrap();
    for chunk in new.chunks(100_000) {
        write_chunks(&mut *upload, chunk).await;
        let on_disk = std::fs::read(sandbox.on_disk("f")).unwrap();
        assert_bytes_eq(&on_disk, &old, "final name during the upload");
    }
    assert_eq!(upload.commit().await.unwrap(), new.len() as u64);
    assert_bytes_eq(
        &std::fs::read(sandbox.on_disk("f")).unwrap(),
        &new,
        "after commit",
    );
    assert_eq!(
        tree_of(&sandbox.root()),
        ["f"],
        "no partial file left after commit"
    );
}

#[tokio::test]
async fn second_upload_of_the_same_name_is_transient() {
    let sandbox = Sandbox::new();
    let storage = &sandbox.storage;
    let first = storage
        .start_upload(&at("/f"), WriteMode::Create)
        .await
        .unwrap();
    for mode in [WriteMode::Create, WriteMode::Append, WriteMode::ResumeAt(0)] {
        let second = storage.start_upload(&at("/f"), mode).await;
        assert_kind(
            second.map(|_| ()),
            StorageErrorKind::Transient,
            "while uploading",
        );
    }
    first.commit().await.unwrap();
    put_file(storage, "/f", b"second").await;
    assert_eq!(read_file(storage, "/f", 0).await.unwrap(), b"second");
}

#[tokio::test]
async fn remove_dir_refuses_while_an_upload_runs_inside() {
    let sandbox = Sandbox::new();
    let storage = &sandbox.storage;
    storage.make_dir(&virtual_path("/d")).await.unwrap();
    let upload = storage
        .start_upload(&at("/d/f"), WriteMode::Create)
        .await
        .unwrap();
    let refused = storage.remove_dir(&virtual_path("/d")).await;
    assert_kind(refused, StorageErrorKind::Transient, "RMD during upload");
    upload.abandon().await.unwrap();
    storage.remove_dir(&virtual_path("/d")).await.unwrap();
    assert!(tree_of(&sandbox.root()).is_empty());
}

#[tokio::test]
async fn upload_follows_its_directory_when_renamed() {
    let sandbox = Sandbox::new();
    let storage = &sandbox.storage;
    storage.make_dir(&virtual_path("/d")).await.unwrap();
    let mut upload = storage
        .start_upload(&at("/d/f"), WriteMode::Create)
        .await
        .unwrap();
    write_chunks(&mut *upload, b"data").await;
    storage
        .rename(&virtual_path("/d"), &virtual_path("/e"))
        .await
        .unwrap();
    upload.commit().await.unwrap();
    assert_eq!(std::fs::read(sandbox.on_disk("e/f")).unwrap(), b"data");
}

#[tokio::test]
async fn unique_uploads_claim_hidden_names_and_stay_resumable() {
    let sandbox = Sandbox::new();
    let storage = &sandbox.storage;
    let target = UploadTarget::UniqueIn(virtual_path("/"));
    let mut upload = storage
        .start_upload(&target, WriteMode::Create)
        .await
        .unwrap();
    let path = upload.path().clone();
    let name = path.file_name().unwrap().to_owned();
    assert!(name.starts_with("stou."), "{name}");
    write_chunks(&mut *upload, b"first").await;
    upload.abandon().await.unwrap();
    assert_eq!(
        tree_of(&sandbox.root()),
        [format!("{PARTIAL_PREFIX}{name}")]
    );
    assert_eq!(storage.resumable_size(&path).await.unwrap(), 5);
    // The abandoned STOU's name is taken: the next STOU picks another.
    let mut next = storage
        .start_upload(&target, WriteMode::Create)
        .await
        .unwrap();
    assert_ne!(next.path(), &path);
    write_chunks(&mut *next, b"next").await;
    next.commit().await.unwrap();
}

#[tokio::test]
async fn metadata_reports_mode_bits() {
    let sandbox = Sandbox::new();
    let storage = &sandbox.storage;
    put_file(storage, "/f", b"data").await;
    std::fs::set_permissions(sandbox.on_disk("f"), std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(
        storage.metadata(&virtual_path("/f")).await.unwrap().mode,
        0o640
    );
    std::fs::create_dir(sandbox.on_disk("d")).unwrap();
    std::fs::set_permissions(sandbox.on_disk("d"), std::fs::Permissions::from_mode(0o750)).unwrap();
    let directory = storage.metadata(&virtual_path("/d")).await.unwrap();
    assert_eq!(
        (directory.kind, directory.mode),
        (FileKind::Directory, 0o750)
    );
}

#[tokio::test]
async fn replacing_a_file_keeps_its_permissions() {
    let sandbox = Sandbox::new();
    let storage = &sandbox.storage;
    put_file(storage, "/f", b"old").await;
    std::fs::set_permissions(
        sandbox.on_disk("f"),
        std::fs::Permissions::from_mode(0o4640),
    )
    .unwrap();
    put_file(storage, "/f", b"new").await;
    // Set-user-ID does not survive a write, as with an in-place write by its owner.
    assert_eq!(
        storage.metadata(&virtual_path("/f")).await.unwrap().mode,
        0o640
    );
    upload(storage, &at("/f"), WriteMode::Append, b" and more")
        .await
        .unwrap();
    assert_eq!(
        storage.metadata(&virtual_path("/f")).await.unwrap().mode,
        0o640
    );
    assert_eq!(read_file(storage, "/f", 0).await.unwrap(), b"new and more");
}

#[tokio::test]
async fn special_files_are_not_read() {
    let sandbox = Sandbox::new();
    let storage = &sandbox.storage;
    rustix::fs::mknodat(
        rustix::fs::CWD,
        sandbox.on_disk("fifo").as_path(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    // Would hang forever if the FIFO were opened in blocking mode.
    let refused = read_file(storage, "/fifo", 0).await;
    assert_kind(
        refused,
        StorageErrorKind::PermissionDenied,
        "RETR of a FIFO",
    );
}

#[tokio::test]
async fn an_upload_on_a_memory_filesystem_gives_no_writeback_hints() {
    // /dev/shm is a tmpfs on Linux.
    let directory = tempfile::tempdir_in("/dev/shm").expect("a tmpfs at /dev/shm");
    let storage = FsStorage::new(directory.path()).unwrap();
    let mut upload = storage
        .start_upload(&UploadTarget::Path(virtual_path("/f")), WriteMode::Create)
        .await
        .unwrap();
    let local = upload.local_file().expect("a local file before any write");
    assert!(!local.write_back_early);
}

#[tokio::test]
async fn a_local_upload_file_says_whether_to_write_back_early_and_receives_bytes() {
    for fsync in [true, false] {
        // Beside the build, on a disk: a temporary directory may be a tmpfs.
        let directory = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let storage = FsStorage::new(directory.path())
            .unwrap()
            .with_fsync_uploads(fsync);
        let mut upload = storage
            .start_upload(&UploadTarget::Path(virtual_path("/f")), WriteMode::Create)
            .await
            .unwrap();
        let local = upload.local_file().expect("a local file before any write");
        // Early writeback only helps an upload that will be fsynced.
        assert_eq!(local.write_back_early, fsync);
        assert_eq!(local.offset, 0);
        std::os::unix::fs::FileExt::write_all_at(&*local.file, b"direct", 0).unwrap();
        drop(local);
        assert_eq!(upload.commit().await.unwrap(), 6);
        assert_eq!(
            std::fs::read(directory.path().join("f")).unwrap(),
            b"direct"
        );
    }
}

#[tokio::test]
async fn set_mode_narrows_to_the_mask_and_follows_links_inside_the_root() {
    let sandbox = Sandbox::new();
    let mode_of = |relative: &str| {
        std::fs::metadata(sandbox.on_disk(relative))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    std::fs::create_dir(sandbox.on_disk("dir")).unwrap();
    std::fs::write(sandbox.on_disk("dir/file.txt"), b"inside").unwrap();
    symlink("dir/file.txt", sandbox.on_disk("file_link")).unwrap();

    // The default mask (0o755) takes group and other write away.
    let storage = &sandbox.storage;
    storage
        .set_mode(&virtual_path("/dir/file.txt"), 0o666)
        .await
        .unwrap();
    assert_eq!(mode_of("dir/file.txt"), 0o644);
    storage
        .set_mode(&virtual_path("/dir"), 0o777)
        .await
        .unwrap();
    assert_eq!(mode_of("dir"), 0o755);

    // A link that stays inside changes its target, as chmod(1) does.
    storage
        .set_mode(&virtual_path("/file_link"), 0o600)
        .await
        .unwrap();
    assert_eq!(mode_of("dir/file.txt"), 0o600);

    // A wider mask lets every permission bit through, never the special ones.
    let wide = FsStorage::new(sandbox.root())
        .unwrap()
        .with_chmod_mask(0o7777);
    wide.set_mode(&virtual_path("/dir/file.txt"), 0o666)
        .await
        .unwrap();
    assert_eq!(mode_of("dir/file.txt"), 0o666);
    let setuid = wide.set_mode(&virtual_path("/dir/file.txt"), 0o4755).await;
    assert_kind(setuid, StorageErrorKind::PermissionDenied, "setuid");
    assert_eq!(mode_of("dir/file.txt"), 0o666);
}

#[tokio::test]
async fn set_mode_refuses_special_files() {
    let sandbox = Sandbox::new();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        sandbox.on_disk("fifo").as_path(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let refused = sandbox
        .storage
        .set_mode(&virtual_path("/fifo"), 0o644)
        .await;
    assert_kind(refused, StorageErrorKind::PermissionDenied, "FIFO");
}

#[tokio::test]
async fn times_before_1970_are_kept_and_listed() {
    let directory = tempfile::tempdir().unwrap();
    let storage = FsStorage::new(directory.path()).unwrap();
    put_file(&storage, "/old", b"old").await;
    put_file(&storage, "/new", b"new").await;
    // 1969 and 1920 (within the 32-bit time_t range every filesystem stores).
    for seconds_before in [1, 86_400 * 365 * 50] {
        let time = std::time::UNIX_EPOCH - std::time::Duration::from_secs(seconds_before);
        storage
            .set_modified(&virtual_path("/old"), time)
            .await
            .unwrap();
        let meta = storage.metadata(&virtual_path("/old")).await.unwrap();
        assert_eq!(meta.modified, Some(time));
        assert_eq!(meta.size, 3);
        assert_eq!(
            list_names(&storage, "/").await.unwrap(),
            ["new", "old"],
            "{seconds_before} s before 1970"
        );
    }
}

#[tokio::test]
async fn names_that_cannot_be_sent_are_left_out_of_listings() {
    use std::os::unix::ffi::OsStrExt;
    let directory = tempfile::tempdir().unwrap();
    let storage = FsStorage::new(directory.path()).unwrap();
    std::fs::write(directory.path().join("plain"), b"x").unwrap();
    std::fs::write(
        directory
            .path()
            .join("a\r\n-rw-r--r-- 1 ftp ftp 1 Jan  1  1970 fake"),
        b"x",
    )
    .unwrap();
    std::fs::write(directory.path().join("b\nc"), b"x").unwrap();
    std::fs::write(
        directory
            .path()
            .join(std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9")),
        b"x",
    )
    .unwrap();
    assert_eq!(list_names(&storage, "/").await.unwrap(), ["plain"]);
}

#[tokio::test]
async fn names_up_to_255_bytes_upload_resume_and_stay_hidden_while_partial() {
    let sandbox = Sandbox::new();
    let storage = &sandbox.storage;
    for length in [237, 238, 255] {
        let name = format!("{}.bin", "n".repeat(length - 4));
        let path = format!("/{name}");
        let data = pattern(50_000, 3);
        // Interrupted: hidden, and its size is what SIZE reports for a resume.
        let mut upload = storage
            .start_upload(&at(&path), WriteMode::Create)
            .await
            .unwrap();
        write_chunks(&mut *upload, &data[..20_000]).await;
        upload.abandon().await.unwrap();
        assert_eq!(
            list_names(storage, "/").await.unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            storage.resumable_size(&virtual_path(&path)).await.unwrap(),
            20_000
        );
        // Resumed and published under the full name.
        let mut upload = storage
            .start_upload(&at(&path), WriteMode::ResumeAt(20_000))
            .await
            .unwrap();
        write_chunks(&mut *upload, &data[20_000..]).await;
        assert_eq!(upload.commit().await.unwrap(), 50_000);
        assert_bytes_eq(
            &std::fs::read(sandbox.on_disk(&name)).unwrap(),
            &data,
            &format!("{length}-byte name"),
        );
        assert_eq!(
            list_names(storage, "/").await.unwrap(),
            std::slice::from_ref(&name)
        );
        storage.remove_file(&virtual_path(&path)).await.unwrap();
        assert_eq!(tree_of(&sandbox.root()), Vec::<String>::new());
    }
}

/// Sets the modification time of a file on disk `age` before now.
fn age_file(path: &Path, age: std::time::Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now() - age)
        .unwrap();
}

#[tokio::test]
async fn expired_partial_data_is_removed_in_bounded_passes() {
    let sandbox = Sandbox::new();
    let storage = &sandbox.storage;
    let hour = std::time::Duration::from_secs(3600);
    // Abandoned uploads: two old ones (one nested), one recent; one old one still running.
    for path in ["/old", "/d/e/nested-old", "/recent", "/running"] {
        if let Some(parent) = std::path::Path::new(path).parent()
            && parent != std::path::Path::new("/")
        {
            std::fs::create_dir_all(sandbox.on_disk(&parent.to_string_lossy()[1..])).unwrap();
        }
        let mut upload = storage
            .start_upload(&at(path), WriteMode::Create)
            .await
            .unwrap();
        write_chunks(&mut *upload, b"partial data").await;
        upload.abandon().await.unwrap();
    }
    put_file(storage, "/committed", b"kept").await;
    let running = storage
        .start_upload(&at("/running"), WriteMode::Append)
        .await
        .unwrap();
    for partial in ["old", "d/e/nested-old", "running"] {
        let (directory, name) = partial.rsplit_once('/').unwrap_or(("", partial));
        let on_disk = sandbox
            .root()
            .join(directory)
            .join(format!("{PARTIAL_PREFIX}{name}"));
        age_file(&on_disk, 3 * hour);
    }
    age_file(&sandbox.on_disk("committed"), 3 * hour);
    // A symlink under a partial name, pointing outside: never followed, never removed.
    symlink(
        sandbox.outside().join("secret.txt"),
        sandbox.on_disk(&format!("{PARTIAL_PREFIX}link")),
    )
    .unwrap();

    let mut sweeper = storage.partial_sweeper(2 * hour);
    // A budget of one entry: each pass visits one directory, so the round takes several.
    let mut removed = 0;
    let mut passes = 0;
    loop {
        let report = sweeper.pass(std::time::SystemTime::now(), 1);
        removed += report.removed;
        passes += 1;
        if report.round_complete {
            break;
        }
        assert!(passes < 10, "the round never ends");
    }
    assert!(passes >= 3, "{passes} passes for root, d and d/e");
    assert_eq!(removed, 2);
    assert_eq!(
        tree_of(&sandbox.root()),
        [
            format!("{PARTIAL_PREFIX}link"),
            format!("{PARTIAL_PREFIX}recent"),
            format!("{PARTIAL_PREFIX}running"),
            "committed".to_owned(),
            "d".to_owned(),
        ]
    );
    assert_eq!(tree_of(&sandbox.on_disk("d/e")), Vec::<String>::new());
    assert_eq!(
        std::fs::read(sandbox.outside().join("secret.txt")).unwrap(),
        b"secret"
    );
    // Once the upload that held it is gone, the old partial goes at the next round.
    drop(running);
    let report = sweeper.pass(std::time::SystemTime::now(), 1000);
    assert_eq!((report.removed, report.round_complete), (1, true));
    assert!(
        !sandbox
            .on_disk(&format!("{PARTIAL_PREFIX}running"))
            .exists()
    );
    assert_eq!(
        storage
            .resumable_size(&virtual_path("/recent"))
            .await
            .unwrap(),
        12
    );
}

#[tokio::test]
async fn a_scoped_storage_stays_beneath_the_home() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.on_disk("home/alice")).unwrap();
    std::fs::create_dir_all(sandbox.on_disk("home/bob")).unwrap();
    std::fs::write(sandbox.on_disk("home/bob/secret"), b"bob").unwrap();
    std::fs::write(sandbox.on_disk("home/alice/mine"), b"alice").unwrap();
    symlink("../bob", sandbox.on_disk("home/alice/rel_bob")).unwrap();
    symlink("mine", sandbox.on_disk("home/alice/alias")).unwrap();
    let alice = sandbox
        .storage
        .scoped_to(&virtual_path("/home/alice"))
        .unwrap();
    let alice: &dyn Storage = &alice;
    assert_refused(
        alice
            .metadata(&virtual_path("/home/alice/rel_bob/secret"))
            .await,
        "metadata through ../bob",
    );
    assert_refused(
        read_file(alice, "/home/alice/rel_bob/secret", 0).await,
        "read through ../bob",
    );
    assert_refused(
        alice
            .start_upload(&at("/home/alice/rel_bob/new"), WriteMode::Create)
            .await
            .map(|_| ()),
        "upload through ../bob",
    );
    assert_refused(
        alice
            .rename(
                &virtual_path("/home/alice/mine"),
                &virtual_path("/home/alice/rel_bob/stolen"),
            )
            .await,
        "rename into ../bob",
    );
    // Paths outside the home are refused outright, the home itself cannot be removed.
    assert_refused(
        alice.metadata(&virtual_path("/home/bob/secret")).await,
        "another home by name",
    );
    assert_kind(
        alice.remove_dir(&virtual_path("/home/alice")).await,
        StorageErrorKind::PermissionDenied,
        "removing the home",
    );
    // Inside, everything works, links included, and paths keep their full form.
    assert_eq!(
        read_file(alice, "/home/alice/alias", 0).await.unwrap(),
        b"alice"
    );
    put_file(alice, "/home/alice/new", b"new").await;
    assert_eq!(
        list_names(alice, "/home/alice").await.unwrap(),
        ["alias", "mine", "new", "rel_bob"]
    );
    assert_eq!(tree_of(&sandbox.on_disk("home/bob")), ["secret".to_owned()]);
}
