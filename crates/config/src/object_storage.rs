//! `[storage] kind = "s3"` (and `"gcs"`, `"azblob"`): an object store as the storage root.
//!
//! Secrets never have to be in the config file or on the command line: each can come from
//! a file (`secret_access_key_file`, `account_key_file`) or from the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AZURE_STORAGE_KEY`), read when the
//! server starts (and by `check-config`).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use ferroftp_storage_object::{
    DEFAULT_PART_SIZE, DEFAULT_PARTS_IN_FLIGHT, DEFAULT_RENAME_MAX_OBJECTS,
    DEFAULT_REQUEST_TIMEOUT, MAX_PART_SIZE, MIN_PART_SIZE, ObjectStorageSettings, ServiceSettings,
};

use crate::ConfigProblem;

/// The object store and how ferroftp uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectStorageConfig {
    /// Which store and where.
    pub service: ObjectServiceConfig,
    /// `prefix`: the FTP root inside the bucket (`tenants/acme/`); default the bucket's root.
    pub prefix: String,
    /// `part_size` (default 8 MiB, at least 5 MiB): multipart part and read-ahead size.
    pub part_size: u64,
    /// `parts_in_flight` (default 4): parts sent or fetched at once per transfer.
    pub parts_in_flight: usize,
    /// `rename_max_objects` (default 1000): the largest directory RNTO copies.
    pub rename_max_objects: usize,
    /// `request_timeout` (default 60 s): the longest one request to the store may take.
    pub request_timeout: Duration,
    /// `partial_expiry` (default 24 h): resume state older than this is removed.
    pub partial_expiry: Duration,
    /// `resumable_uploads` (S3, default true): keep interrupted uploads for REST + STOR
    /// and APPE; false for S3 servers without ListMultipartUploads or UploadPartCopy.
    pub resumable_uploads: bool,
}

/// A store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectServiceConfig {
    /// `kind = "s3"`.
    S3 {
        /// `endpoint`: omitted for AWS.
        endpoint: Option<String>,
        /// `region` (default `us-east-1`).
        region: String,
        /// `bucket` (required).
        bucket: String,
        /// `access_key_id`, else `AWS_ACCESS_KEY_ID`.
        access_key_id: Secret,
        /// `secret_access_key` / `secret_access_key_file`, else `AWS_SECRET_ACCESS_KEY`.
        secret_access_key: Secret,
    },
    /// `kind = "gcs"`.
    Gcs {
        /// `bucket` (required).
        bucket: String,
        /// `credential_path`: a service account key file.
        credential_path: Option<PathBuf>,
        /// `endpoint`: omitted for Google's.
        endpoint: Option<String>,
    },
    /// `kind = "azblob"`.
    Azblob {
        /// `container` (required; `bucket` is accepted too).
        container: String,
        /// `endpoint` (required: `https://<account>.blob.core.windows.net`).
        endpoint: String,
        /// `account_name` (required).
        account_name: String,
        /// `account_key` / `account_key_file`, else `AZURE_STORAGE_KEY`.
        account_key: Secret,
    },
}

/// Where a credential comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// Written in the config file.
    Inline(String),
    /// The first line of a file.
    File(PathBuf),
    /// An environment variable.
    Environment(&'static str),
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => formatter.write_str("Inline(<redacted>)"),
            Self::File(path) => write!(formatter, "File({})", path.display()),
            Self::Environment(name) => write!(formatter, "Environment({name})"),
        }
    }
}

impl Secret {
    pub(crate) fn new(
        inline: Option<String>,
        file: Option<PathBuf>,
        variable: &'static str,
    ) -> Self {
        match (inline, file) {
            (_, Some(path)) => Self::File(path),
            (Some(value), None) => Self::Inline(value),
            (None, None) => Self::Environment(variable),
        }
    }

    /// The value; `field` names the setting in errors.
    pub fn resolve(&self, field: &str) -> Result<String, ConfigProblem> {
        let value = match self {
            Self::Inline(value) => value.clone(),
            Self::File(path) => std::fs::read_to_string(path)
                .map_err(|error| {
                    ConfigProblem::new(
                        format!("{field}_file"),
                        format!("reading {}: {error}", path.display()),
                    )
                })?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
            Self::Environment(variable) => std::env::var(variable).map_err(|_| {
                ConfigProblem::new(
                    field,
                    format!("not set, and neither is the environment variable {variable}"),
                )
            })?,
        };
        if value.is_empty() {
            return Err(ConfigProblem::new(field, "is empty"));
        }
        Ok(value)
    }

    pub(crate) fn resolve_path(&mut self, resolve: impl Fn(&mut PathBuf)) {
        if let Self::File(path) = self {
            resolve(path);
        }
    }
}

/// The `[storage]` fields of an object store as written (see `RawStorageConfig`).
#[derive(Default)]
pub(crate) struct RawObjectFields {
    pub(crate) endpoint: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) bucket: Option<String>,
    pub(crate) container: Option<String>,
    pub(crate) prefix: Option<String>,
    pub(crate) access_key_id: Option<String>,
    pub(crate) secret_access_key: Option<String>,
    pub(crate) secret_access_key_file: Option<PathBuf>,
    pub(crate) credential_path: Option<PathBuf>,
    pub(crate) account_name: Option<String>,
    pub(crate) account_key: Option<String>,
    pub(crate) account_key_file: Option<PathBuf>,
    pub(crate) part_size: Option<u64>,
    pub(crate) parts_in_flight: Option<usize>,
    pub(crate) rename_max_objects: Option<usize>,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) partial_expiry: Option<Duration>,
    pub(crate) resumable_uploads: Option<bool>,
}

/// Which object store `kind` names.
pub(crate) enum ObjectKind {
    S3,
    Gcs,
    Azblob,
}

impl RawObjectFields {
    /// The typed config; fields that belong to another kind are refused by name.
    pub(crate) fn into_config(
        self,
        kind: ObjectKind,
        default_expiry: Duration,
    ) -> Result<ObjectStorageConfig, String> {
        let refuse = |present: bool, field: &str, kind: &str| {
            if present {
                Err(format!("`{field}` is not a setting of kind = \"{kind}\""))
            } else {
                Ok(())
            }
        };
        let service = match kind {
            ObjectKind::S3 => {
                refuse(self.container.is_some(), "container", "s3")?;
                refuse(self.credential_path.is_some(), "credential_path", "s3")?;
                refuse(self.account_name.is_some(), "account_name", "s3")?;
                refuse(
                    self.account_key.is_some() || self.account_key_file.is_some(),
                    "account_key",
                    "s3",
                )?;
                ObjectServiceConfig::S3 {
                    endpoint: self.endpoint,
                    region: self.region.unwrap_or_else(|| "us-east-1".to_owned()),
                    bucket: self.bucket.unwrap_or_default(),
                    access_key_id: Secret::new(self.access_key_id, None, "AWS_ACCESS_KEY_ID"),
                    secret_access_key: Secret::new(
                        self.secret_access_key,
                        self.secret_access_key_file,
                        "AWS_SECRET_ACCESS_KEY",
                    ),
                }
            }
            ObjectKind::Gcs => {
                refuse(self.region.is_some(), "region", "gcs")?;
                refuse(self.access_key_id.is_some(), "access_key_id", "gcs")?;
                refuse(
                    self.secret_access_key.is_some() || self.secret_access_key_file.is_some(),
                    "secret_access_key",
                    "gcs",
                )?;
                refuse(self.account_name.is_some(), "account_name", "gcs")?;
                refuse(self.resumable_uploads.is_some(), "resumable_uploads", "gcs")?;
                ObjectServiceConfig::Gcs {
                    bucket: self.bucket.unwrap_or_default(),
                    credential_path: self.credential_path,
                    endpoint: self.endpoint,
                }
            }
            ObjectKind::Azblob => {
                refuse(self.region.is_some(), "region", "azblob")?;
                refuse(self.access_key_id.is_some(), "access_key_id", "azblob")?;
                refuse(self.credential_path.is_some(), "credential_path", "azblob")?;
                refuse(
                    self.resumable_uploads.is_some(),
                    "resumable_uploads",
                    "azblob",
                )?;
                ObjectServiceConfig::Azblob {
                    container: self.container.or(self.bucket).unwrap_or_default(),
                    endpoint: self.endpoint.unwrap_or_default(),
                    account_name: self.account_name.unwrap_or_default(),
                    account_key: Secret::new(
                        self.account_key,
                        self.account_key_file,
                        "AZURE_STORAGE_KEY",
                    ),
                }
            }
        };
        Ok(ObjectStorageConfig {
            service,
            prefix: self.prefix.unwrap_or_default(),
            part_size: self.part_size.unwrap_or(DEFAULT_PART_SIZE as u64),
            parts_in_flight: self.parts_in_flight.unwrap_or(DEFAULT_PARTS_IN_FLIGHT),
            rename_max_objects: self
                .rename_max_objects
                .unwrap_or(DEFAULT_RENAME_MAX_OBJECTS),
            request_timeout: self.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            partial_expiry: self.partial_expiry.unwrap_or(default_expiry),
            resumable_uploads: self.resumable_uploads.unwrap_or(true),
        })
    }
}

impl ObjectStorageConfig {
    /// Every problem of these settings (secrets included: files read, variables looked up).
    pub(crate) fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let size = self.part_size;
        if size < MIN_PART_SIZE as u64 || size > MAX_PART_SIZE as u64 {
            problems.push(ConfigProblem::new(
                "storage.part_size",
                format!(
                    "{size} bytes is outside S3's limits, 5MiB to 5GiB (a part under 5 MiB is \
                     refused by the store)"
                ),
            ));
        }
        if self.parts_in_flight == 0 {
            problems.push(ConfigProblem::new(
                "storage.parts_in_flight",
                "must be at least 1",
            ));
        }
        if self.request_timeout.is_zero() {
            problems.push(ConfigProblem::new(
                "storage.request_timeout",
                "must be longer than 0s",
            ));
        }
        if self.partial_expiry.is_zero() {
            problems.push(ConfigProblem::new(
                "storage.partial_expiry",
                "must be longer than 0s",
            ));
        }
        if let Err(error) = self.settings() {
            problems.extend(error);
        }
        problems
    }

    /// The backend's settings, secrets resolved; every problem met.
    pub fn settings(&self) -> Result<ObjectStorageSettings, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let mut resolve = |secret: &Secret, field: &str| match secret.resolve(field) {
            Ok(value) => value,
            Err(problem) => {
                problems.push(problem);
                String::new()
            }
        };
        let required = |value: &str, field: &str, problems: &mut Vec<ConfigProblem>| {
            if value.is_empty() {
                problems.push(ConfigProblem::new(field, "must be set"));
            }
        };
        let service = match &self.service {
            ObjectServiceConfig::S3 {
                endpoint,
                region,
                bucket,
                access_key_id,
                secret_access_key,
            } => {
                let access_key_id = resolve(access_key_id, "storage.access_key_id");
                let secret_access_key = resolve(secret_access_key, "storage.secret_access_key");
                required(bucket, "storage.bucket", &mut problems);
                ServiceSettings::S3 {
                    endpoint: endpoint.clone(),
                    region: region.clone(),
                    bucket: bucket.clone(),
                    access_key_id,
                    secret_access_key,
                }
            }
            ObjectServiceConfig::Gcs {
                bucket,
                credential_path,
                endpoint,
            } => {
                required(bucket, "storage.bucket", &mut problems);
                ServiceSettings::Gcs {
                    bucket: bucket.clone(),
                    credential_path: credential_path
                        .as_ref()
                        .map(|path| path.display().to_string()),
                    endpoint: endpoint.clone(),
                }
            }
            ObjectServiceConfig::Azblob {
                container,
                endpoint,
                account_name,
                account_key,
            } => {
                let account_key = resolve(account_key, "storage.account_key");
                required(container, "storage.container", &mut problems);
                required(endpoint, "storage.endpoint", &mut problems);
                required(account_name, "storage.account_name", &mut problems);
                ServiceSettings::Azblob {
                    container: container.clone(),
                    endpoint: endpoint.clone(),
                    account_name: account_name.clone(),
                    account_key,
                }
            }
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut settings = ObjectStorageSettings::new(service);
        settings.prefix = self.prefix.clone();
        settings.part_size = usize::try_from(self.part_size).unwrap_or(usize::MAX);
        settings.parts_in_flight = self.parts_in_flight;
        settings.rename_max_objects = self.rename_max_objects;
        settings.request_timeout = self.request_timeout;
        settings.resumable_uploads = self.resumable_uploads;
        Ok(settings)
    }

    /// Makes the secret and credential files absolute (see `Config::resolve_relative_to`).
    pub(crate) fn resolve_paths(&mut self, resolve: impl Fn(&mut PathBuf)) {
        match &mut self.service {
            ObjectServiceConfig::S3 {
                secret_access_key, ..
            } => secret_access_key.resolve_path(resolve),
            ObjectServiceConfig::Gcs {
                credential_path, ..
            } => {
                if let Some(path) = credential_path {
                    resolve(path);
                }
            }
            ObjectServiceConfig::Azblob { account_key, .. } => account_key.resolve_path(resolve),
        }
    }

    /// One line for the startup banner and logs: where files go (no secrets).
    pub fn describe(&self) -> String {
        let prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!(" prefix {}", self.prefix)
        };
        match &self.service {
            ObjectServiceConfig::S3 {
                endpoint, bucket, ..
            } => format!(
                "s3 bucket {bucket}{prefix} at {}",
                endpoint.as_deref().unwrap_or("AWS")
            ),
            ObjectServiceConfig::Gcs { bucket, .. } => format!("gcs bucket {bucket}{prefix}"),
            ObjectServiceConfig::Azblob {
                container,
                endpoint,
                ..
            } => format!("azblob container {container}{prefix} at {endpoint}"),
        }
    }
}
