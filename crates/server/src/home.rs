//! Users' home directories: created at a user's first login when missing.
//!
//! A users file names each home (`ferroftp user add alice --home /alice`, or an edit by
//! hand), but nothing else creates the directory; without it the user would log in and then
//! get 550 for every command. The server creates it through the storage, so the storage's
//! own confinement applies (a home can only ever be below the root: it is a
//! [`VirtualPath`]).

use std::collections::HashSet;
use std::sync::Mutex;

use ferroftp_backend::{Storage, StorageError, StorageErrorKind, VirtualPath};
use tracing::{info, warn};

/// The homes known to exist, so that only a user's first login since the start pays for a
/// lookup (logins are frequent; a lookup may wait for the disk).
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
        match create_missing(storage, home).await {
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

/// Creates `directory` and its missing parents, like `mkdir -p`; `Ok(true)` when something
/// was created. A file in the way is `NotADirectory`.
async fn create_missing(
    storage: &dyn Storage,
    directory: &VirtualPath,
) -> Result<bool, StorageError> {
    match storage.metadata(directory).await {
        Ok(meta) if meta.is_dir() => return Ok(false),
        Ok(_) => {
            return Err(StorageError::new(
                StorageErrorKind::NotADirectory,
                format!("{directory} is not a directory"),
            ));
        }
        Err(error) if error.kind == StorageErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let mut path = VirtualPath::root();
    for segment in directory.segments() {
        path = path
            .resolve(segment)
            .map_err(|error| StorageError::new(StorageErrorKind::InvalidName, error.to_string()))?;
        match storage.make_dir(&path).await {
            Ok(()) => {}
            // Made by someone else meanwhile, or a parent that existed: checked by the next
            // step (or by the metadata below for the last one).
            Err(error) if error.kind == StorageErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
    }
    match storage.metadata(directory).await {
        Ok(meta) if meta.is_dir() => Ok(true),
        Ok(_) => Err(StorageError::new(
            StorageErrorKind::NotADirectory,
            format!("{directory} is not a directory"),
        )),
        Err(error) => Err(error),
    }
}
