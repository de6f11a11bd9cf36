//! ObjectStorage against a real S3 server (Garage, started by scripts/object-storage.sh):
//! the shared storage battery, then what only an object store can get wrong: multipart
//! uploads of several parts, resume across parts, server-side APPE, hidden state that never
//! shows and never leaves the prefix, names that need encoding, directory renames.
//!
//! The server is given by `FERROFTP_S3_ENDPOINT`, `FERROFTP_S3_REGION`, `FERROFTP_S3_BUCKET`,
//! `FERROFTP_S3_ACCESS_KEY_ID` and `FERROFTP_S3_SECRET_ACCESS_KEY`. Without them the tests
//! skip, unless `FERROFTP_REQUIRE_S3=1` (CI), where they fail. Every test works in a prefix
//! of its own, so they run in parallel on one bucket.

// Test code: a panic is the failure report, so unwrapping is the point (the helpers
// outside `#[test]` functions are not covered by clippy.toml's allow-unwrap-in-tests).
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use ferroftp_backend::testing::{
    assert_bytes_eq, assert_kind, list_names, pattern, put_file, read_file, upload, virtual_path,
    write_chunks,
};
use ferroftp_backend::{Storage, StorageErrorKind, UploadTarget, WriteMode};
use ferroftp_storage_object::{
    MIN_PART_SIZE, ObjectStorage, ObjectStorageSettings, ServiceSettings,
};

/// `Some(reason)` when there is no S3 server to test against (and none is required).
fn skip() -> Option<String> {
    if std::env::var_os("FERROFTP_S3_ENDPOINT").is_some() {
        return None;
    }
    if std::env::var("FERROFTP_REQUIRE_S3").is_ok_and(|value| value == "1") {
        panic!("FERROFTP_REQUIRE_S3=1 but FERROFTP_S3_ENDPOINT is not set");
    }
    Some("no S3 server: FERROFTP_S3_ENDPOINT is not set (scripts/object-storage.sh)".into())
}

fn variable(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn service() -> ServiceSettings {
    ServiceSettings::S3 {
        endpoint: Some(variable("FERROFTP_S3_ENDPOINT")),
        region: variable("FERROFTP_S3_REGION"),
        bucket: variable("FERROFTP_S3_BUCKET"),
        access_key_id: variable("FERROFTP_S3_ACCESS_KEY_ID"),
        secret_access_key: variable("FERROFTP_S3_SECRET_ACCESS_KEY"),
    }
}

/// A prefix no other test (nor an earlier run) uses.
fn unique_prefix(what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let run = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "tests/{what}-{run}-{}-{}/",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn settings(prefix: &str) -> ObjectStorageSettings {
    let mut settings = ObjectStorageSettings::new(service());
    settings.prefix = prefix.to_owned();
    settings.part_size = MIN_PART_SIZE;
    settings.parts_in_flight = 2;
    settings.rename_max_objects = 5;
    settings
}

fn storage(what: &str) -> ObjectStorage {
    ObjectStorage::new(settings(&unique_prefix(what))).unwrap()
}

ferroftp_backend::storage_battery!(battery, storage("battery"), skip_when = skip());

/// The same bucket seen without a prefix: to check where keys really are.
fn whole_bucket() -> opendal::Operator {
    let ServiceSettings::S3 {
        endpoint,
        region,
        bucket,
        access_key_id,
        secret_access_key,
    } = service()
    else {
        unreachable!()
    };
    let builder = opendal::services::S3::default()
        .endpoint(&endpoint.unwrap())
        .region(&region)
        .bucket(&bucket)
        .access_key_id(&access_key_id)
        .secret_access_key(&secret_access_key)
        .disable_config_load()
        .disable_ec2_metadata();
    let operator = opendal::Operator::new(builder).unwrap();
    let transport = opendal::HttpTransporter::new(
        opendal_http_transport_reqwest::ReqwestTransport::new(reqwest::Client::new()),
    );
    let context = operator.context().with_http_transport(transport);
    operator.with_context(context)
}

async fn keys_under(prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = whole_bucket()
        .list_with(prefix)
        .recursive(true)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.path().to_owned())
        .collect();
    keys.sort();
    keys
}

macro_rules! skip_without_s3 {
    () => {
        if let Some(reason) = skip() {
            eprintln!("skipped: {reason}");
            return;
        }
    };
}

const PART: usize = MIN_PART_SIZE;

#[tokio::test]
async fn a_file_of_several_parts_comes_back_exactly() {
    skip_without_s3!();
    let storage = storage("parts");
    let data = pattern(2 * PART + 12_345, 1);
    let (_, size) = upload(
        &storage,
        &UploadTarget::Path(virtual_path("/big")),
        WriteMode::Create,
        &data,
    )
    .await
    .unwrap();
    assert_eq!(size, data.len() as u64);
    assert_bytes_eq(
        &read_file(&storage, "/big", 0).await.unwrap(),
        &data,
        "whole",
    );
    let offset = PART + 7;
    assert_bytes_eq(
        &read_file(&storage, "/big", offset as u64).await.unwrap(),
        &data[offset..],
        "from an offset inside the second part",
    );
}

#[tokio::test]
async fn an_interrupted_upload_of_several_parts_resumes_exactly() {
    skip_without_s3!();
    let storage = storage("resume");
    let whole = pattern(3 * PART + 999, 2);
    let cut = 2 * PART + 4321;
    let target = UploadTarget::Path(virtual_path("/r"));
    let mut first = storage
        .start_upload(&target, WriteMode::Create)
        .await
        .unwrap();
    write_chunks(&mut *first, &whole[..cut]).await;
    first.abandon().await.unwrap();
    assert_kind(
        storage.metadata(&virtual_path("/r")).await,
        StorageErrorKind::NotFound,
        "hidden",
    );
    let size = storage.resumable_size(&virtual_path("/r")).await.unwrap();
    assert_eq!(size, cut as u64, "SIZE counts the parts and the tail");
    // A cut inside a part that was sent cannot be served; at a part boundary it can.
    let inside = storage
        .start_upload(&target, WriteMode::ResumeAt(PART as u64 + 1))
        .await;
    assert_kind(
        inside.map(drop),
        StorageErrorKind::InvalidRange,
        "inside a sent part",
    );
    upload(&storage, &target, WriteMode::ResumeAt(size), &whole[cut..])
        .await
        .unwrap();
    assert_bytes_eq(
        &read_file(&storage, "/r", 0).await.unwrap(),
        &whole,
        "resumed",
    );
}

#[tokio::test]
async fn a_resume_at_a_part_boundary_drops_the_later_parts() {
    skip_without_s3!();
    let storage = storage("boundary");
    let target = UploadTarget::Path(virtual_path("/b"));
    let mut first = storage
        .start_upload(&target, WriteMode::Create)
        .await
        .unwrap();
    write_chunks(&mut *first, &pattern(2 * PART + 10, 3)).await;
    first.abandon().await.unwrap();
    let rest = pattern(1000, 4);
    upload(&storage, &target, WriteMode::ResumeAt(PART as u64), &rest)
        .await
        .unwrap();
    let expected = [&pattern(2 * PART + 10, 3)[..PART], &rest[..]].concat();
    assert_bytes_eq(
        &read_file(&storage, "/b", 0).await.unwrap(),
        &expected,
        "cut at a boundary",
    );
}

#[tokio::test]
async fn append_to_a_large_object_copies_it_inside_the_store() {
    skip_without_s3!();
    let storage = storage("append");
    let first = pattern(PART + PART / 2, 5);
    put_file(&storage, "/a", &first).await;
    let second = pattern(PART + 77, 6);
    let target = UploadTarget::Path(virtual_path("/a"));
    let (_, size) = upload(&storage, &target, WriteMode::Append, &second)
        .await
        .unwrap();
    let expected = [first.clone(), second].concat();
    assert_eq!(size, expected.len() as u64);
    assert_bytes_eq(
        &read_file(&storage, "/a", 0).await.unwrap(),
        &expected,
        "appended",
    );
    // REST n + STOR on the committed object keeps exactly its first n bytes.
    let keep = PART as u64 + 3;
    let more = pattern(10, 7);
    upload(&storage, &target, WriteMode::ResumeAt(keep), &more)
        .await
        .unwrap();
    let expected = [&expected[..keep as usize], &more[..]].concat();
    assert_bytes_eq(
        &read_file(&storage, "/a", 0).await.unwrap(),
        &expected,
        "cut",
    );
}

#[tokio::test]
async fn hidden_state_stays_inside_the_prefix_and_out_of_listings() {
    skip_without_s3!();
    let prefix = unique_prefix("hidden");
    let storage = ObjectStorage::new(settings(&prefix)).unwrap();
    storage.make_dir(&virtual_path("/d")).await.unwrap();
    let mut abandoned = storage
        .start_upload(&UploadTarget::Path(virtual_path("/d/p")), WriteMode::Create)
        .await
        .unwrap();
    write_chunks(&mut *abandoned, &pattern(PART + 5, 8)).await;
    abandoned.abandon().await.unwrap();
    assert_eq!(list_names(&storage, "/").await.unwrap(), ["d"]);
    assert!(list_names(&storage, "/d").await.unwrap().is_empty());
    let reserved = storage.metadata(&virtual_path("/.ferroftp-partial")).await;
    assert_kind(reserved, StorageErrorKind::InvalidName, "the reserved name");
    let keys = keys_under(&prefix).await;
    assert_eq!(
        keys,
        [
            format!("{prefix}.ferroftp-partial/d/p"),
            format!("{prefix}d/")
        ]
    );
    // RMD of the (visibly empty) directory takes the hidden state with it.
    storage.remove_dir(&virtual_path("/d")).await.unwrap();
    assert!(keys_under(&prefix).await.is_empty());
}

#[tokio::test]
async fn names_that_need_encoding_map_to_the_same_keys() {
    skip_without_s3!();
    let prefix = unique_prefix("names");
    let storage = ObjectStorage::new(settings(&prefix)).unwrap();
    let names = ["a b.txt", "plus+sign", "per%cent", "émoji 🦀", "q?x#y&z=1"];
    for (index, name) in names.iter().enumerate() {
        put_file(&storage, &format!("/{name}"), &pattern(10, index as u8)).await;
    }
    let mut listed = list_names(&storage, "/").await.unwrap();
    listed.sort();
    let mut expected: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    let mut keys = keys_under(&prefix).await;
    keys.sort();
    let mut expected_keys: Vec<String> =
        names.iter().map(|name| format!("{prefix}{name}")).collect();
    expected_keys.sort();
    assert_eq!(keys, expected_keys);
}

#[tokio::test]
async fn a_directory_rename_stops_at_the_configured_number_of_objects() {
    skip_without_s3!();
    let storage = storage("rename");
    storage.make_dir(&virtual_path("/small")).await.unwrap();
    storage.make_dir(&virtual_path("/large")).await.unwrap();
    for index in 0..3 {
        put_file(&storage, &format!("/small/{index}"), b"s").await;
    }
    for index in 0..6 {
        put_file(&storage, &format!("/large/{index}"), b"l").await;
    }
    storage
        .rename(&virtual_path("/small"), &virtual_path("/moved"))
        .await
        .unwrap();
    assert_eq!(
        list_names(&storage, "/moved").await.unwrap(),
        ["0", "1", "2"]
    );
    let refused = storage
        .rename(&virtual_path("/large"), &virtual_path("/elsewhere"))
        .await;
    assert_kind(
        refused,
        StorageErrorKind::TooLarge,
        "above rename_max_objects",
    );
    assert_eq!(
        list_names(&storage, "/large").await.unwrap().len(),
        6,
        "untouched"
    );
    assert_eq!(list_names(&storage, "/").await.unwrap(), ["large", "moved"]);
}

#[tokio::test]
async fn expiry_removes_old_resume_state_only() {
    skip_without_s3!();
    let prefix = unique_prefix("expiry");
    let storage = ObjectStorage::new(settings(&prefix)).unwrap();
    let target = UploadTarget::Path(virtual_path("/old"));
    let mut old = storage
        .start_upload(&target, WriteMode::Create)
        .await
        .unwrap();
    write_chunks(&mut *old, &pattern(PART + 1, 9)).await;
    old.abandon().await.unwrap();
    let sweeper = storage.partial_sweeper(Duration::from_secs(3600));
    let report = sweeper.pass(SystemTime::now()).await.unwrap();
    assert_eq!(
        report.uploads_aborted + report.tails_removed,
        0,
        "young state is kept"
    );
    assert_eq!(
        storage.resumable_size(&virtual_path("/old")).await.unwrap(),
        PART as u64 + 1
    );
    let later = SystemTime::now() + Duration::from_secs(7200);
    let report = sweeper.pass(later).await.unwrap();
    assert!(
        report.uploads_aborted >= 1 && report.tails_removed == 1,
        "{report:?}"
    );
    assert_kind(
        storage.resumable_size(&virtual_path("/old")).await,
        StorageErrorKind::NotFound,
        "expired",
    );
    assert!(keys_under(&prefix).await.is_empty());
}

#[tokio::test]
async fn a_wrong_secret_is_refused_as_permission_denied() {
    skip_without_s3!();
    let mut settings = settings(&unique_prefix("secret"));
    if let ServiceSettings::S3 {
        secret_access_key, ..
    } = &mut settings.service
    {
        *secret_access_key = "not-the-secret-0123456789".into();
    }
    let storage = ObjectStorage::new(settings).unwrap();
    let error = storage.check().await.unwrap_err();
    assert_eq!(error.kind, StorageErrorKind::PermissionDenied, "{error}");
}

// Without the direct multipart client, as on GCS and Azure Blob: OpenDAL's own writer, no
// resume (the battery's resume tests check `Capabilities::resume_upload` and expect 504-kind
// refusals where it is false).
fn storage_without_resume(what: &str) -> ObjectStorage {
    let mut settings = settings(&unique_prefix(what));
    settings.resumable_uploads = false;
    ObjectStorage::new(settings).unwrap()
}

#[tokio::test]
async fn without_resume_large_uploads_go_through_opendals_writer() {
    skip_without_s3!();
    let storage = storage_without_resume("writer");
    assert!(!storage.capabilities().resume_upload);
    let data = pattern(2 * PART + 3, 10);
    let target = UploadTarget::Path(virtual_path("/w"));
    let (_, size) = upload(&storage, &target, WriteMode::Create, &data)
        .await
        .unwrap();
    assert_eq!(size, data.len() as u64);
    assert_bytes_eq(
        &read_file(&storage, "/w", 0).await.unwrap(),
        &data,
        "written",
    );
    // An abandoned upload publishes nothing and keeps the previous version.
    let mut abandoned = storage
        .start_upload(&target, WriteMode::Create)
        .await
        .unwrap();
    write_chunks(&mut *abandoned, &pattern(PART + 9, 11)).await;
    abandoned.abandon().await.unwrap();
    assert_bytes_eq(&read_file(&storage, "/w", 0).await.unwrap(), &data, "kept");
    let append = storage.start_upload(&target, WriteMode::Append).await;
    assert_kind(append.map(drop), StorageErrorKind::Unsupported, "no resume");
}

#[tokio::test]
async fn a_missing_bucket_is_not_taken_for_an_outage() {
    skip_without_s3!();
    let mut settings = settings(&unique_prefix("bucket"));
    if let ServiceSettings::S3 { bucket, .. } = &mut settings.service {
        *bucket = "no-such-bucket-here".into();
    }
    let error = ObjectStorage::new(settings)
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert_ne!(error.kind, StorageErrorKind::Transient, "{error}");
}

#[tokio::test]
async fn a_directory_made_by_mkd_has_its_markers_time() {
    skip_without_s3!();
    let prefix = unique_prefix("dir-time");
    let storage = ObjectStorage::new(settings(&prefix)).unwrap();
    storage.make_dir(&virtual_path("/d")).await.unwrap();
    let meta = storage.metadata(&virtual_path("/d")).await.unwrap();
    assert!(meta.is_dir());
    assert!(
        meta.modified.is_some(),
        "the marker's time, from the listing"
    );
    // A directory implied by an object below it (written by another S3 client) has none.
    whole_bucket()
        .write(&format!("{prefix}implied/f"), b"x".to_vec())
        .await
        .unwrap();
    let implied = storage.metadata(&virtual_path("/implied")).await.unwrap();
    assert!(implied.is_dir());
    assert_eq!(implied.modified, None);
}
