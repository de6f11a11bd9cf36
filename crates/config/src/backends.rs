//! `[storage]` and `[auth]`: the backends, each chosen by `kind`.

use std::path::PathBuf;
use std::time::Duration;

use ferroftp_proto::VirtualPath;
use serde::Deserialize;

use crate::object_storage::{ObjectKind, ObjectStorageConfig, RawObjectFields};
use crate::paths::{default_storage_root, default_users_path};

/// `[storage]`: the storage backend, chosen by `kind` (default `"fs"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawStorageConfig")]
pub enum StorageConfig {
    /// A local directory.
    Fs {
        /// The directory served as `/`; created if missing.
        root: PathBuf,
        /// `fsync_uploads` (default true): an upload is on disk before it replaces the
        /// previous version and before 226. `false` trades durability across a power loss
        /// for the page cache's speed (see `FsStorage::with_fsync_uploads`).
        fsync_uploads: bool,
        /// `chmod_mask` (default `0o755`): the permission bits SITE CHMOD may set; a
        /// client's mode is ANDed with it (see `FsStorage::with_chmod_mask`). At most
        /// `0o777`: setuid, setgid and sticky are never set.
        chmod_mask: u32,
        /// `partial_expiry` (default 24 h): the hidden partial data an interrupted upload
        /// left for a resume is removed once it is older than this (last written), at start
        /// and then in the background (see `FsStorage::partial_sweeper`, docs/uploads.md).
        partial_expiry: Duration,
    },
    /// An object store: `kind = "s3"` (or `"gcs"`, `"azblob"`); docs/object-storage.md.
    Object(ObjectStorageConfig),
}

impl StorageConfig {
    /// Where files go, in one line for the startup banner (no secrets).
    pub fn describe(&self) -> String {
        match self {
            Self::Fs { root, .. } => root.display().to_string(),
            Self::Object(object) => object.describe(),
        }
    }

    /// `storage.partial_expiry`, whatever the backend.
    pub fn partial_expiry(&self) -> Duration {
        match self {
            Self::Fs { partial_expiry, .. } => *partial_expiry,
            Self::Object(object) => object.partial_expiry,
        }
    }
}

/// `storage.partial_expiry` when not set.
pub const DEFAULT_PARTIAL_EXPIRY: Duration = Duration::from_secs(24 * 3600);

impl Default for StorageConfig {
    fn default() -> Self {
        Self::Fs {
            root: default_storage_root(),
            fsync_uploads: true,
            chmod_mask: ferroftp_storage_fs::DEFAULT_CHMOD_MASK,
            partial_expiry: DEFAULT_PARTIAL_EXPIRY,
        }
    }
}

/// The `[storage]` table as written. A flat table with `kind` beside the backend's fields,
/// checked into [`StorageConfig`]: serde's tagged enums cannot both default the tag and
/// refuse unknown fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorageConfig {
    #[serde(default)]
    kind: StorageKind,
    root: Option<PathBuf>,
    fsync_uploads: Option<bool>,
    chmod_mask: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    partial_expiry: Option<Duration>,
    // Object stores (crate::object_storage).
    endpoint: Option<String>,
    region: Option<String>,
    bucket: Option<String>,
    container: Option<String>,
    prefix: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    secret_access_key_file: Option<PathBuf>,
    credential_path: Option<PathBuf>,
    account_name: Option<String>,
    account_key: Option<String>,
    account_key_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "crate::values::deserialize_size")]
    part_size: Option<u64>,
    parts_in_flight: Option<usize>,
    rename_max_objects: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    request_timeout: Option<Duration>,
    resumable_uploads: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StorageKind {
    #[default]
    Fs,
    S3,
    Gcs,
    Azblob,
}

impl TryFrom<RawStorageConfig> for StorageConfig {
    type Error = String;

    fn try_from(raw: RawStorageConfig) -> Result<Self, String> {
        let object_kind = match raw.kind {
            StorageKind::Fs => return raw.into_fs(),
            StorageKind::S3 => ObjectKind::S3,
            StorageKind::Gcs => ObjectKind::Gcs,
            StorageKind::Azblob => ObjectKind::Azblob,
        };
        for (present, field) in [
            (raw.root.is_some(), "root"),
            (raw.fsync_uploads.is_some(), "fsync_uploads"),
            (raw.chmod_mask.is_some(), "chmod_mask"),
        ] {
            if present {
                return Err(format!(
                    "`{field}` is a setting of a local directory (kind = \"fs\"), not of an \
                     object store"
                ));
            }
        }
        let fields = RawObjectFields {
            endpoint: raw.endpoint,
            region: raw.region,
            bucket: raw.bucket,
            container: raw.container,
            prefix: raw.prefix,
            access_key_id: raw.access_key_id,
            secret_access_key: raw.secret_access_key,
            secret_access_key_file: raw.secret_access_key_file,
            credential_path: raw.credential_path,
            account_name: raw.account_name,
            account_key: raw.account_key,
            account_key_file: raw.account_key_file,
            part_size: raw.part_size,
            parts_in_flight: raw.parts_in_flight,
            rename_max_objects: raw.rename_max_objects,
            request_timeout: raw.request_timeout,
            partial_expiry: raw.partial_expiry,
            resumable_uploads: raw.resumable_uploads,
        };
        fields
            .into_config(object_kind, DEFAULT_PARTIAL_EXPIRY)
            .map(Self::Object)
    }
}

impl RawStorageConfig {
    fn into_fs(self) -> Result<StorageConfig, String> {
        for (present, field) in [
            (self.endpoint.is_some(), "endpoint"),
            (self.region.is_some(), "region"),
            (self.bucket.is_some(), "bucket"),
            (self.container.is_some(), "container"),
            (self.prefix.is_some(), "prefix"),
            (self.access_key_id.is_some(), "access_key_id"),
            (self.secret_access_key.is_some(), "secret_access_key"),
            (
                self.secret_access_key_file.is_some(),
                "secret_access_key_file",
            ),
            (self.credential_path.is_some(), "credential_path"),
            (self.account_name.is_some(), "account_name"),
            (self.account_key.is_some(), "account_key"),
            (self.account_key_file.is_some(), "account_key_file"),
            (self.part_size.is_some(), "part_size"),
            (self.parts_in_flight.is_some(), "parts_in_flight"),
            (self.rename_max_objects.is_some(), "rename_max_objects"),
            (self.request_timeout.is_some(), "request_timeout"),
            (self.resumable_uploads.is_some(), "resumable_uploads"),
        ] {
            if present {
                return Err(format!(
                    "unknown field `{field}` for a local directory (kind = \"fs\"); it is a \
                     setting of object stores (kind = \"s3\")"
                ));
            }
        }
        Ok(StorageConfig::Fs {
            root: self.root.unwrap_or_else(default_storage_root),
            fsync_uploads: self.fsync_uploads.unwrap_or(true),
            chmod_mask: self
                .chmod_mask
                .unwrap_or(ferroftp_storage_fs::DEFAULT_CHMOD_MASK),
            partial_expiry: self.partial_expiry.unwrap_or(DEFAULT_PARTIAL_EXPIRY),
        })
    }
}

/// `[auth]`: the user database, chosen by `kind` (default `"file"`), and anonymous login.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawAuthConfig")]
pub struct AuthConfig {
    /// The user database.
    pub backend: AuthBackendConfig,
    /// Let `anonymous` and `ftp` log in read-only with any password.
    pub anonymous: bool,
    /// Where anonymous sessions are confined (a path in the storage, created at the first
    /// anonymous login); default `/pub`.
    pub anonymous_home: VirtualPath,
}

/// A user database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthBackendConfig {
    /// A users file managed with `ferroftp user`.
    File {
        /// The users file.
        path: PathBuf,
    },
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            backend: AuthBackendConfig::File {
                path: default_users_path(),
            },
            anonymous: false,
            anonymous_home: default_anonymous_home(),
        }
    }
}

/// The `[auth]` table as written (see [`RawStorageConfig`] for why it is flat).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthConfig {
    #[serde(default)]
    kind: AuthKind,
    path: Option<PathBuf>,
    #[serde(default)]
    anonymous: bool,
    anonymous_home: Option<String>,
}

fn default_anonymous_home() -> VirtualPath {
    ferroftp_auth_file::parse_home(ferroftp_auth_file::DEFAULT_ANONYMOUS_HOME)
        .expect("the default anonymous home is a valid path")
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum AuthKind {
    #[default]
    File,
}

impl TryFrom<RawAuthConfig> for AuthConfig {
    type Error = String;

    fn try_from(raw: RawAuthConfig) -> Result<Self, String> {
        let backend = match raw.kind {
            AuthKind::File => AuthBackendConfig::File {
                path: raw.path.unwrap_or_else(default_users_path),
            },
        };
        let anonymous_home = match raw.anonymous_home {
            Some(text) => ferroftp_auth_file::parse_home(&text)
                .map_err(|error| format!("auth.anonymous_home: {error}"))?,
            None => default_anonymous_home(),
        };
        Ok(Self {
            backend,
            anonymous: raw.anonymous,
            anonymous_home,
        })
    }
}
