//! Users' home directories: created at a user's first login when missing.
//!
//! A users file names each home (`ferroftp user add alice --home /alice`, or an edit by
//! hand), but nothing else creates the directory; without it the user would log in and then
//! get 550 for every command. The server creates it through the storage, so the storage's
//! own confinement applies (a home can only ever be below the root: it is a
//! [`VirtualPath`]).

use std::collections::HashSet;
use std::sync::Mutex;

use ferroftp_backend::{Storage, VirtualPath, make_dir_all};
use ferroftp_proto::Escaped;
use tracing::{info, warn};

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
                    info!(user = ?Escaped(user), home = ?Escaped(home), "created the user's home directory");
                }
                self.existing
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(home.clone());
            }
            Err(error) => {
                warn!(user = ?Escaped(user), home = ?Escaped(home), error = %Escaped(&error), "cannot create the user's home directory");
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
