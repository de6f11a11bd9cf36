//! Object storage for ferroftp: an S3-compatible bucket (or, behind cargo features, a
//! Google Cloud Storage bucket or an Azure Blob container) as the storage root, through
//! [OpenDAL](https://opendal.apache.org).
//!
//! What an FTP client expects, and how it is kept on a store that has no directories, no
//! rename and no append (docs/object-storage.md says the same for operators):
//!
//! - **Uploads stream** into an S3 multipart upload on the final key, a part at a time with
//!   a few in flight, nothing on local disk ([`upload`]). The object appears only when the
//!   upload completes, which the server asks for only after the data connection ended
//!   cleanly with the client still there; an interrupted upload never leaves a half object
//!   under the final name, and the previous version stays until the new one replaces it in
//!   one step.
//! - **Resume** (REST + STOR, APPE) is ferroftp's own, because S3-compatible servers
//!   silently overwrite on OpenDAL's "append": an interrupted upload's multipart upload is
//!   left open with its complete parts, and the bytes after the last part are kept in a
//!   hidden object ([`keys::tail_path`]); a resume continues both. APPE to a committed
//!   object composes it server-side (UploadPartCopy) instead of downloading it.
//! - **Directories** are key prefixes; MKD writes a zero-byte `dir/` marker so that an
//!   empty directory stays visible.
//! - **Rename** is copy + delete: not atomic ([`Capabilities::atomic_rename`] is false), a
//!   directory only up to `rename_max_objects` objects.

mod buffers;
mod error;
mod keys;
mod listing;
mod multipart;
mod partial;
mod upload;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use ferroftp_backend::{
    Capabilities, Download, DownloadBody, EntryStream, FileKind, FileMeta, Storage, StorageError,
    StorageErrorKind, Upload, UploadTarget, VirtualPath, WriteMode,
};
use futures_util::{StreamExt, TryStreamExt};

use crate::error::from_opendal;
use crate::keys::KeySpace;
use crate::multipart::{S3Endpoint, S3Multipart};

pub use crate::partial::PartialSweeper;

/// `part_size` when not set: 8 MiB, as the AWS CLI.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
/// The smallest part S3 accepts (but for the last one).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// The largest part S3 accepts.
pub const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;
/// `parts_in_flight` when not set.
pub const DEFAULT_PARTS_IN_FLIGHT: usize = 4;
/// `rename_max_objects` when not set.
pub const DEFAULT_RENAME_MAX_OBJECTS: usize = 1000;
/// `request_timeout` when not set: no single request to the store may take longer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Which object store, and how to reach it.
#[derive(Clone, PartialEq, Eq)]
pub enum ServiceSettings {
    /// Amazon S3 or an S3-compatible server (Garage, MinIO, Ceph RGW, ...).
    S3 {
        /// `http(s)://host[:port]`; `None` for AWS (`https://s3.<region>.amazonaws.com`).
        endpoint: Option<String>,
        /// The region (a server's configured name for S3-compatible ones).
        region: String,
        /// The bucket.
        bucket: String,
        /// The access key id.
        access_key_id: String,
        /// The secret access key.
        secret_access_key: String,
    },
    /// Google Cloud Storage (cargo feature `gcs`).
    Gcs {
        /// The bucket.
        bucket: String,
        /// A service account's JSON key file; `None` for the environment's credentials.
        credential_path: Option<String>,
        /// Another endpoint (an emulator); `None` for Google's.
        endpoint: Option<String>,
    },
    /// Azure Blob Storage (cargo feature `azblob`).
    Azblob {
        /// The container.
        container: String,
        /// `https://<account>.blob.core.windows.net`, or an emulator's address.
        endpoint: String,
        /// The storage account.
        account_name: String,
        /// The account key.
        account_key: String,
    },
}

impl fmt::Debug for ServiceSettings {
    // Never the secrets.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::S3 {
                endpoint,
                region,
                bucket,
                access_key_id,
                ..
            } => formatter
                .debug_struct("S3")
                .field("endpoint", endpoint)
                .field("region", region)
                .field("bucket", bucket)
                .field("access_key_id", access_key_id)
                .finish_non_exhaustive(),
            Self::Gcs {
                bucket, endpoint, ..
            } => formatter
                .debug_struct("Gcs")
                .field("bucket", bucket)
                .field("endpoint", endpoint)
                .finish_non_exhaustive(),
            Self::Azblob {
                container,
                endpoint,
                account_name,
                ..
            } => formatter
                .debug_struct("Azblob")
                .field("container", container)
                .field("endpoint", endpoint)
                .field("account_name", account_name)
                .finish_non_exhaustive(),
        }
    }
}

/// Everything an [`ObjectStorage`] is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectStorageSettings {
    /// The store.
    pub service: ServiceSettings,
    /// The FTP root inside the bucket (`tenants/acme/`); nothing is written outside it.
    pub prefix: String,
    /// Bytes of one multipart part (and of one read-ahead request): at least
    /// [`MIN_PART_SIZE`]. An upload holds at most `part_size × (parts_in_flight + 1)` bytes.
    pub part_size: usize,
    /// Parts uploaded (and downloaded ahead) at once, per transfer.
    pub parts_in_flight: usize,
    /// A directory rename copies at most this many objects; above, RNTO is refused (550).
    pub rename_max_objects: usize,
    /// The longest any single request to the store may take.
    pub request_timeout: Duration,
    /// S3 only: keep interrupted uploads for a resume (multipart uploads made directly,
    /// ListMultipartUploads at resume). `false` writes through OpenDAL's own writer, as on
    /// GCS and Azure Blob: no resume (504), for S3 servers without those calls.
    pub resumable_uploads: bool,
}

impl ObjectStorageSettings {
    /// Settings with the defaults for everything but the store.
    pub fn new(service: ServiceSettings) -> Self {
        Self {
            service,
            prefix: String::new(),
            part_size: DEFAULT_PART_SIZE,
            parts_in_flight: DEFAULT_PARTS_IN_FLIGHT,
            rename_max_objects: DEFAULT_RENAME_MAX_OBJECTS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            resumable_uploads: true,
        }
    }
}

/// Why an [`ObjectStorage`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The settings are unusable.
    #[error("object storage settings: {0}")]
    Settings(String),
    /// This build has no support for the service.
    #[error("this ferroftp was built without {service} support (cargo feature `{feature}`)")]
    NotCompiledIn {
        /// The service's name.
        service: &'static str,
        /// The cargo feature that adds it.
        feature: &'static str,
    },
    /// OpenDAL refused the configuration.
    #[error("object storage: {0}")]
    OpenDal(#[from] opendal::Error),
    /// The HTTP client could not be built.
    #[error("object storage HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// A bucket (or a prefix in one) as ferroftp's storage. Cheap to clone.
#[derive(Clone)]
pub struct ObjectStorage {
    inner: Arc<Inner>,
}

impl fmt::Debug for ObjectStorage {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ObjectStorage")
            .field("service", &self.inner.settings.service)
            .field("prefix", &self.inner.keys.prefix())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    /// OpenDAL, its root at the prefix: stat, list, read, write, copy, delete.
    pub(crate) operator: opendal::Operator,
    /// The multipart calls OpenDAL does not expose (S3 only: resumable uploads).
    pub(crate) multipart: Option<S3Multipart>,
    pub(crate) keys: KeySpace,
    pub(crate) settings: ObjectStorageSettings,
    /// Part buffers, reused (one upload's worth kept).
    pub(crate) part_buffers: Arc<buffers::PartBuffers>,
    /// Object paths with an upload running in this process: a second upload of the same
    /// name waits (`Transient`, 450) rather than mixing its parts with the first, and the
    /// expiry leaves their resume state alone.
    pub(crate) uploading: Mutex<HashMap<String, ClaimState>>,
}

impl ObjectStorage {
    /// Connects nothing yet: the first request does (see [`check`](Self::check)).
    pub fn new(settings: ObjectStorageSettings) -> Result<Self, BuildError> {
        if settings.part_size < MIN_PART_SIZE || settings.part_size > MAX_PART_SIZE {
            return Err(BuildError::Settings(format!(
                "part_size {} is outside {MIN_PART_SIZE}..={MAX_PART_SIZE} bytes (S3's limits)",
                settings.part_size
            )));
        }
        if settings.parts_in_flight == 0 {
            return Err(BuildError::Settings(
                "parts_in_flight must be at least 1".into(),
            ));
        }
        // reqwest is built without a default TLS provider: use ring, as the server does.
        // `install_default` fails only when one is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(10)))
            .read_timeout(settings.request_timeout)
            .build()?;
        let keys = KeySpace::new(&settings.prefix);
        let (operator, multipart) = build_operator(&settings, &keys, client)?;
        let part_buffers =
            buffers::PartBuffers::new(settings.part_size, settings.parts_in_flight + 1);
        Ok(Self {
            inner: Arc::new(Inner {
                operator,
                multipart,
                keys,
                part_buffers,
                settings,
                uploading: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// One request to the store: reachable, the bucket there, the credentials accepted.
    pub async fn check(&self) -> Result<(), StorageError> {
        self.inner
            .first_entries("/", false, 1)
            .await
            .map(drop)
            .map_err(|error| from_opendal(error, "listing the bucket"))
    }

    /// The expiry of abandoned resume state, for a background task (see [`PartialSweeper`]).
    pub fn partial_sweeper(&self, max_age: Duration) -> PartialSweeper {
        PartialSweeper::new(Arc::clone(&self.inner), max_age)
    }
}

fn build_operator(
    settings: &ObjectStorageSettings,
    keys: &KeySpace,
    client: reqwest::Client,
) -> Result<(opendal::Operator, Option<S3Multipart>), BuildError> {
    let root = format!("/{}", keys.prefix());
    let (operator, multipart) = match &settings.service {
        ServiceSettings::S3 {
            endpoint,
            region,
            bucket,
            access_key_id,
            secret_access_key,
        } => {
            let endpoint = endpoint
                .clone()
                .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
            let builder = opendal::services::S3::default()
                .root(&root)
                .endpoint(&endpoint)
                .region(region)
                .bucket(bucket)
                .access_key_id(access_key_id)
                .secret_access_key(secret_access_key)
                // Only what the configuration says: no ~/.aws files, no instance metadata.
                .disable_config_load()
                .disable_ec2_metadata();
            let multipart = S3Multipart::new(
                client.clone(),
                &S3Endpoint {
                    endpoint,
                    region: region.clone(),
                    bucket: bucket.clone(),
                    access_key_id: access_key_id.clone(),
                    secret_access_key: secret_access_key.clone(),
                },
            );
            let multipart = settings.resumable_uploads.then_some(multipart);
            (opendal::Operator::new(builder)?, multipart)
        }
        ServiceSettings::Gcs { .. } => (gcs_operator(settings, &root)?, None),
        ServiceSettings::Azblob { .. } => (azblob_operator(settings, &root)?, None),
    };
    let transport = opendal::HttpTransporter::new(
        opendal_http_transport_reqwest::ReqwestTransport::new(client),
    );
    let context = operator.context().with_http_transport(transport);
    let operator = operator
        .with_context(context)
        // Throttling (503 SlowDown) and outages: retried with jittered backoff, then 451.
        .layer(
            opendal::layers::RetryLayer::new()
                .with_jitter()
                .with_max_times(3),
        )
        .layer(opendal::layers::TimeoutLayer::new().with_timeout(settings.request_timeout));
    Ok((operator, multipart))
}

#[cfg(feature = "gcs")]
fn gcs_operator(
    settings: &ObjectStorageSettings,
    root: &str,
) -> Result<opendal::Operator, BuildError> {
    let ServiceSettings::Gcs {
        bucket,
        credential_path,
        endpoint,
    } = &settings.service
    else {
        return Err(BuildError::Settings("not a GCS service".into()));
    };
    let mut builder = opendal::services::Gcs::default().root(root).bucket(bucket);
    if let Some(path) = credential_path {
        builder = builder.credential_path(path);
    }
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint(endpoint);
    }
    Ok(opendal::Operator::new(builder)?)
}

#[cfg(not(feature = "gcs"))]
fn gcs_operator(_: &ObjectStorageSettings, _: &str) -> Result<opendal::Operator, BuildError> {
    Err(BuildError::NotCompiledIn {
        service: "Google Cloud Storage",
        feature: "gcs",
    })
}

#[cfg(feature = "azblob")]
fn azblob_operator(
    settings: &ObjectStorageSettings,
    root: &str,
) -> Result<opendal::Operator, BuildError> {
    let ServiceSettings::Azblob {
        container,
        endpoint,
        account_name,
        account_key,
    } = &settings.service
    else {
        return Err(BuildError::Settings("not an Azure Blob service".into()));
    };
    let builder = opendal::services::Azblob::default()
        .root(root)
        .container(container)
        .endpoint(endpoint)
        .account_name(account_name)
        .account_key(account_key);
    Ok(opendal::Operator::new(builder)?)
}

#[cfg(not(feature = "azblob"))]
fn azblob_operator(_: &ObjectStorageSettings, _: &str) -> Result<opendal::Operator, BuildError> {
    Err(BuildError::NotCompiledIn {
        service: "Azure Blob Storage",
        feature: "azblob",
    })
}

/// What a file looks like to LIST: objects have no modes, so files show as `rw-r--r--`.
const FILE_MODE: u32 = 0o644;
/// And directories as `rwxr-xr-x`.
const DIR_MODE: u32 = 0o755;

fn file_meta(metadata: &opendal::Metadata) -> FileMeta {
    FileMeta {
        kind: FileKind::File,
        size: metadata.content_length(),
        modified: metadata.last_modified().map(SystemTime::from),
        mode: FILE_MODE,
    }
}

fn dir_meta(modified: Option<SystemTime>) -> FileMeta {
    FileMeta {
        kind: FileKind::Directory,
        size: 0,
        modified,
        mode: DIR_MODE,
    }
}

impl Inner {
    /// The object at `object_path`, if there is one (a `dir/` marker is not a file).
    pub(crate) async fn stat_file(
        &self,
        object_path: &str,
    ) -> Result<Option<opendal::Metadata>, StorageError> {
        match self.operator.stat(object_path).await {
            Ok(metadata) if metadata.is_dir() => Ok(None),
            Ok(metadata) => Ok(Some(metadata)),
            Err(error) if error.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(from_opendal(error, &format!("stat {object_path}"))),
        }
    }

    /// At most `count` entries under `path`, in as few requests as that takes. (OpenDAL's
    /// `list_with(..).limit(n)` sets the page size and still reads every page: a listing
    /// of one key per request through the whole directory.)
    pub(crate) async fn first_entries(
        &self,
        path: &str,
        recursive: bool,
        count: usize,
    ) -> Result<Vec<opendal::Entry>, opendal::Error> {
        self.operator
            .lister_with(path)
            .recursive(recursive)
            .limit(count.clamp(1, 1000))
            .await?
            .take(count)
            .try_collect()
            .await
    }

    /// Whether the directory `path` exists: the root, a `dir/` marker, or any object below.
    /// One request (a listing of at most one key).
    pub(crate) async fn dir_exists(&self, path: &VirtualPath) -> Result<bool, StorageError> {
        Ok(path.is_root() || self.find_dir(path).await?.is_some())
    }

    /// The directory `path` (not the root), if it exists, with its marker's time when MKD
    /// made one: the same one-key listing, which returns the marker first when there is one
    /// (`a/` sorts before `a/x`), with its time, so no HEAD is needed for it.
    pub(crate) async fn find_dir(
        &self,
        path: &VirtualPath,
    ) -> Result<Option<Option<SystemTime>>, StorageError> {
        let prefix = keys::dir_path(path)?;
        let found = self
            .first_entries(&prefix, false, 1)
            .await
            .map_err(|error| from_opendal(error, &format!("looking for directory {path}")))?;
        Ok(found.first().map(|entry| {
            if entry.path() == prefix {
                entry.metadata().last_modified().map(SystemTime::from)
            } else {
                None
            }
        }))
    }

    /// `path` is an existing directory: else `NotFound`, or `NotADirectory` for a file.
    pub(crate) async fn require_dir(&self, path: &VirtualPath) -> Result<(), StorageError> {
        if self.dir_exists(path).await? {
            return Ok(());
        }
        let kind = if self.stat_file(&keys::file_path(path)?).await?.is_some() {
            StorageErrorKind::NotADirectory
        } else {
            StorageErrorKind::NotFound
        };
        Err(StorageError::new(kind, format!("directory {path}")))
    }

    fn claim(self: &Arc<Self>, object_path: &str) -> Option<UploadClaim> {
        let mut uploading = self
            .uploading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if uploading.contains_key(object_path) {
            return None;
        }
        let state = ClaimState {
            abandoning: false,
            released: Arc::new(tokio::sync::Notify::new()),
        };
        uploading.insert(object_path.to_owned(), state);
        Some(UploadClaim {
            inner: Arc::clone(self),
            object_path: object_path.to_owned(),
        })
    }

    pub(crate) fn is_uploading(&self, object_path: &str) -> bool {
        self.uploading
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(object_path)
    }

    /// Waits while a dropped upload of `object_path` is still being kept for a resume in
    /// the background (a client that vanished): what SIZE and a resume then see is its
    /// whole resume state, not half of it. Bounded by the request timeout.
    pub(crate) async fn settle_abandoned(&self, object_path: &str) {
        let deadline = tokio::time::Instant::now() + self.settings.request_timeout;
        loop {
            let released = {
                let uploading = self
                    .uploading
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                match uploading.get(object_path) {
                    Some(state) if state.abandoning => Arc::clone(&state.released),
                    _ => return,
                }
            };
            let notified = released.notified();
            // Checked again after registering, so a release in between is not missed.
            if !self
                .uploading
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(object_path)
                .is_some_and(|state| state.abandoning)
            {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Discards the hidden resume state of `object_path` (its open multipart uploads and
    /// its tail), as a new STOR, a DELE or an expiry does.
    pub(crate) async fn discard_partial(&self, object_path: &str) -> Result<(), StorageError> {
        let Some(multipart) = &self.multipart else {
            return Ok(());
        };
        let key = self.keys.full(object_path);
        for open in multipart.uploads_of(&key).await? {
            multipart.abort(&key, &open.upload_id).await?;
        }
        let tail = keys::tail_path(object_path);
        self.operator
            .delete(&tail)
            .await
            .map_err(|error| from_opendal(error, &format!("removing {tail}")))
    }
}

/// An upload running in this process, by name.
pub(crate) struct ClaimState {
    /// Dropped by its session and being kept for a resume in the background.
    abandoning: bool,
    /// Told when the claim is released.
    released: Arc<tokio::sync::Notify>,
}

/// A name with an upload running in this process; released when dropped.
pub(crate) struct UploadClaim {
    inner: Arc<Inner>,
    object_path: String,
}

impl UploadClaim {
    /// The upload was dropped: SIZE and a resume of the name wait for its abandon.
    pub(crate) fn mark_abandoning(&self) {
        if let Some(state) = self
            .inner
            .uploading
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&self.object_path)
        {
            state.abandoning = true;
        }
    }
}

impl Drop for UploadClaim {
    fn drop(&mut self) {
        let released = self
            .inner
            .uploading
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.object_path);
        if let Some(state) = released {
            state.released.notify_waiters();
        }
    }
}

#[async_trait]
impl Storage for ObjectStorage {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            resume_upload: self.inner.multipart.is_some(),
            atomic_rename: false,
            set_modified: false,
            modes: false,
        }
    }

    async fn metadata(&self, path: &VirtualPath) -> Result<FileMeta, StorageError> {
        if path.is_root() {
            return Ok(dir_meta(None));
        }
        let object_path = keys::file_path(path)?;
        if let Some(metadata) = self.inner.stat_file(&object_path).await? {
            return Ok(file_meta(&metadata));
        }
        if let Some(modified) = self.inner.find_dir(path).await? {
            return Ok(dir_meta(modified));
        }
        // Below a file is "not a directory", as a local filesystem says (one more request,
        // on this path only; a file higher up is not looked for).
        let parent = path.parent();
        let kind = if !parent.is_root()
            && self
                .inner
                .stat_file(&keys::file_path(&parent)?)
                .await?
                .is_some()
        {
            StorageErrorKind::NotADirectory
        } else {
            StorageErrorKind::NotFound
        };
        Err(StorageError::new(kind, format!("{path}")))
    }

    async fn list(&self, path: &VirtualPath) -> Result<EntryStream, StorageError> {
        self.inner.require_dir(path).await?;
        listing::list(&self.inner, path).await
    }

    async fn read(&self, path: &VirtualPath, offset: u64) -> Result<Download, StorageError> {
        let object_path = keys::file_path(path)?;
        let Some(metadata) = self.inner.stat_file(&object_path).await? else {
            let kind = if self.inner.dir_exists(path).await? {
                StorageErrorKind::IsADirectory
            } else {
                StorageErrorKind::NotFound
            };
            return Err(StorageError::new(kind, format!("reading {path}")));
        };
        let size = metadata.content_length();
        if offset > size {
            return Err(StorageError::new(
                StorageErrorKind::InvalidRange,
                format!("reading {path} from {offset}: it has {size} bytes"),
            ));
        }
        if offset == size {
            return Ok(Download {
                size,
                body: DownloadBody::Stream(Box::new(tokio::io::empty())),
            });
        }
        // Range requests of a part each, a few ahead of the one being sent, all of the same
        // version of the object (If-Match on its ETag: a replacement meanwhile fails the
        // transfer rather than splicing two versions).
        let settings = &self.inner.settings;
        let mut reader = self
            .inner
            .operator
            .reader_with(&object_path)
            .chunk(settings.part_size)
            .concurrent(settings.parts_in_flight);
        if let Some(etag) = metadata.etag() {
            reader = reader.if_match(etag);
        }
        let stream = reader
            .await
            .map_err(|error| from_opendal(error, &format!("opening {path}")))?
            .into_bytes_stream(offset..size)
            .await
            .map_err(|error| from_opendal(error, &format!("reading {path}")))?
            .map_err(std::io::Error::other);
        Ok(Download {
            size,
            body: DownloadBody::Stream(Box::new(tokio_util::io::StreamReader::new(stream))),
        })
    }

    async fn resumable_size(&self, path: &VirtualPath) -> Result<u64, StorageError> {
        let object_path = keys::file_path(path)?;
        self.inner.settle_abandoned(&object_path).await;
        if let Some(metadata) = self.inner.stat_file(&object_path).await? {
            return Ok(metadata.content_length());
        }
        match partial::PartialState::find(&self.inner, &object_path).await? {
            Some(state) => Ok(state.len()),
            None => Err(StorageError::new(
                StorageErrorKind::NotFound,
                format!("{path}: nothing to resume"),
            )),
        }
    }

    async fn start_upload(
        &self,
        target: &UploadTarget,
        mode: WriteMode,
    ) -> Result<Box<dyn Upload>, StorageError> {
        let path = match target {
            UploadTarget::Path(path) => path.clone(),
            UploadTarget::UniqueIn(directory) => self.unique_name(directory).await?,
        };
        let object_path = keys::file_path(&path)?;
        self.inner.settle_abandoned(&object_path).await;
        self.inner.require_dir(&path.parent()).await?;
        if self.inner.dir_exists(&path).await? {
            return Err(StorageError::new(
                StorageErrorKind::IsADirectory,
                format!("uploading onto directory {path}"),
            ));
        }
        let Some(claim) = self.inner.claim(&object_path) else {
            return Err(StorageError::new(
                StorageErrorKind::Transient,
                format!("{path}: another upload of this name is running"),
            ));
        };
        let upload =
            upload::ObjectUpload::start(Arc::clone(&self.inner), claim, path, object_path, mode)
                .await?;
        Ok(Box::new(upload))
    }

    async fn make_dir(&self, path: &VirtualPath) -> Result<(), StorageError> {
        if path.is_root() {
            return Err(StorageError::new(
                StorageErrorKind::AlreadyExists,
                "the root",
            ));
        }
        let object_path = keys::file_path(path)?;
        self.inner.require_dir(&path.parent()).await?;
        if self.inner.stat_file(&object_path).await?.is_some()
            || self.inner.dir_exists(path).await?
        {
            return Err(StorageError::new(
                StorageErrorKind::AlreadyExists,
                format!("creating directory {path}"),
            ));
        }
        let marker = keys::dir_path(path)?;
        self.inner
            .operator
            .create_dir(&marker)
            .await
            .map_err(|error| from_opendal(error, &format!("creating directory {path}")))
    }

    async fn remove_dir(&self, path: &VirtualPath) -> Result<(), StorageError> {
        if path.is_root() {
            return Err(StorageError::new(
                StorageErrorKind::PermissionDenied,
                "removing the root",
            ));
        }
        self.inner.require_dir(path).await?;
        let marker = keys::dir_path(path)?;
        // Two keys at most: the marker itself and one more means "not empty".
        let entries = self
            .inner
            .first_entries(&marker, false, 2)
            .await
            .map_err(|error| from_opendal(error, &format!("listing {path}")))?;
        if entries.iter().any(|entry| entry.path() != marker) {
            return Err(StorageError::new(
                StorageErrorKind::NotEmpty,
                format!("removing directory {path}"),
            ));
        }
        self.inner
            .operator
            .delete(&marker)
            .await
            .map_err(|error| from_opendal(error, &format!("removing directory {path}")))?;
        // Resume state below it: the client cannot see it, so it cannot keep RMD from
        // working, and a new directory of the same name must not inherit it.
        partial::discard_below(&self.inner, &keys::dir_prefix(path)?).await
    }

    async fn remove_file(&self, path: &VirtualPath) -> Result<(), StorageError> {
        let object_path = keys::file_path(path)?;
        if self.inner.stat_file(&object_path).await?.is_none() {
            let kind = if self.inner.dir_exists(path).await? {
                StorageErrorKind::IsADirectory
            } else {
                StorageErrorKind::NotFound
            };
            return Err(StorageError::new(kind, format!("removing {path}")));
        }
        self.inner
            .operator
            .delete(&object_path)
            .await
            .map_err(|error| from_opendal(error, &format!("removing {path}")))
    }

    async fn rename(&self, from: &VirtualPath, to: &VirtualPath) -> Result<(), StorageError> {
        listing::rename(&self.inner, from, to).await
    }

    async fn set_modified(&self, path: &VirtualPath, time: SystemTime) -> Result<(), StorageError> {
        let _ = time;
        Err(StorageError::new(
            StorageErrorKind::Unsupported,
            format!("setting the time of {path}: objects keep the time they were written"),
        ))
    }
}

impl ObjectStorage {
    /// STOU: a name not in use in `directory` (checked, then claimed by the upload's own
    /// claim; another node could still pick the same name at the same instant, which the
    /// random part makes improbable).
    async fn unique_name(&self, directory: &VirtualPath) -> Result<VirtualPath, StorageError> {
        for _ in 0..16 {
            let name = format!("ftp-{:016x}", random_u64());
            let path = directory.resolve(&name).map_err(|error| {
                StorageError::new(StorageErrorKind::Local, format!("STOU name {name}"))
                    .with_source(error)
            })?;
            let object_path = keys::file_path(&path)?;
            if self.inner.stat_file(&object_path).await?.is_none()
                && !self.inner.is_uploading(&object_path)
            {
                return Ok(path);
            }
        }
        Err(StorageError::new(
            StorageErrorKind::Transient,
            format!("no unused name found in {directory}"),
        ))
    }
}

/// 64 random bits from the standard library's randomly keyed hasher (no extra dependency
/// for STOU names, which need to be unpredictable enough not to collide, not secret).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish()
}
