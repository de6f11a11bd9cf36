//! Users' home directories: created at a user's first login when missing.
//!
//! A users file names each home (`ferroftp user add alice --home /alice`, or an edit by
//! hand), but nothing else creates the directory; without it the user would log in and then
//! get 550 for every command. The server creates it through the storage, so the storage's
//! own confinement applies (a home can only ever be below the root: it is a
//! [`VirtualPath`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use ferroftp_backend::{
    Capabilities, Download, EntryStream, FileMeta, Storage, StorageError, Upload, UploadTarget,
    VirtualPath, WriteMode, make_dir_all,
};
use tracing::{info, warn};

/// The storage a user's session works with: `storage` confined to `home` by the storage's
/// own means (`Storage::scoped`: for local directories, the kernel resolves every path
/// beneath the open home, so a symlink in one home cannot lead into another). A home that
/// cannot be opened is logged, and the session gets a storage that answers every operation
/// with that failure: the login still succeeds, as for a home that could not be created,
/// and nothing is ever reached through the unconfined storage.
pub(crate) async fn scoped(
    storage: &Arc<dyn Storage>,
    user: &str,
    home: &VirtualPath,
) -> Arc<dyn Storage> {
    match storage.scoped(home).await {
        Ok(Some(scoped)) => scoped,
        Ok(None) => Arc::clone(storage),
        Err(error) => {
            warn!(user, home = %home, %error, "cannot open the user's home directory");
            Arc::new(UnreachableHome {
                capabilities: storage.capabilities(),
                error: error.kind,
                home: home.clone(),
            })
        }
    }
}

/// The storage of a session whose home could not be opened: every operation fails as the
/// opening did.
#[derive(Debug)]
struct UnreachableHome {
    capabilities: Capabilities,
    error: ferroftp_backend::StorageErrorKind,
    home: VirtualPath,
}

impl UnreachableHome {
    fn fail<T>(&self) -> Result<T, StorageError> {
        Err(StorageError::new(
            self.error,
            format!("the home {} could not be opened", self.home),
        ))
    }
}

#[async_trait]
impl Storage for UnreachableHome {
    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }
    async fn metadata(&self, _: &VirtualPath) -> Result<FileMeta, StorageError> {
        self.fail()
    }
    async fn list(&self, _: &VirtualPath) -> Result<EntryStream, StorageError> {
        self.fail()
    }
    async fn read(&self, _: &VirtualPath, _: u64) -> Result<Download, StorageError> {
        self.fail()
    }
    async fn resumable_size(&self, _: &VirtualPath) -> Result<u64, StorageError> {
        self.fail()
    }
    async fn start_upload(
        &self,
        _: &UploadTarget,
        _: WriteMode,
    ) -> Result<Box<dyn Upload>, StorageError> {
        self.fail()
    }
    async fn make_dir(&self, _: &VirtualPath) -> Result<(), StorageError> {
        self.fail()
    }
    async fn remove_dir(&self, _: &VirtualPath) -> Result<(), StorageError> {
        self.fail()
    }
    async fn remove_file(&self, _: &VirtualPath) -> Result<(), StorageError> {
        self.fail()
    }
    async fn rename(&self, _: &VirtualPath, _: &VirtualPath) -> Result<(), StorageError> {
        self.fail()
    }
    async fn set_modified(&self, _: &VirtualPath, _: SystemTime) -> Result<(), StorageError> {
        self.fail()
    }
    async fn set_mode(&self, _: &VirtualPath, _: u32) -> Result<(), StorageError> {
        self.fail()
    }
}

/// The homes known to exist, so that only a user's first login since the start pays for a
/// lookup (logins are frequent; a lookup may wait for the disk). A home removed while the
/// server runs is made again only after a restart. Holds one entry per home of the users
/// file at most.
#[derive(Debug, Default)]
pub(crate) struct KnownHomes {
    existing: Mutex<HashSet<VirtualPath>>,
}

impl KnownHomes {
    /// Makes sure `home` exists, creating it and its missing parents. Failures are logged,
    /// not returned: the login still succeeds, and the user's commands report what is
    /// wrong, as they would for any other storage trouble.
    pub(crate) async fn ensure(&self, storage: &dyn Storage, user: &str, home: &VirtualPath) {
        if home.is_root() || self.is_known(home) {
            return;
        }
        match make_dir_all(storage, home).await {
            Ok(created) => {
                if created {
                    info!(user, home = %home, "created the user's home directory");
                }
                self.existing
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(home.clone());
            }
            Err(error) => {
                warn!(user, home = %home, %error, "cannot create the user's home directory");
            }
        }
    }

    fn is_known(&self, home: &VirtualPath) -> bool {
        self.existing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(home)
    }
}
