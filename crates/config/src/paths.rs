//! Paths: the defaults under a systemd service's state directory, and relative paths in a
//! file made absolute against the file's directory.

use std::path::{Path, PathBuf};

use crate::{AuthBackendConfig, Config, StorageConfig};

/// The state directory systemd gives a service with `StateDirectory=` (`/var/lib/ferroftp`
/// in contrib/systemd/ferroftp.service): where the defaults put the storage root and the
/// users file when ferroftp runs as such a service.
fn service_state_directory() -> Option<PathBuf> {
    std::env::var_os("STATE_DIRECTORY")
        // Several directories are separated by colons; the first is ours.
        .and_then(|dirs| {
            dirs.to_str()
                .and_then(|d| d.split(':').next())
                .map(PathBuf::from)
        })
        .filter(|dir| dir.is_absolute())
}

/// `storage.root` when not set: `root` in the service's state directory, else `./ftp-root`
/// beside the config file (or in the current directory without one).
pub(crate) fn default_storage_root() -> PathBuf {
    service_state_directory().map_or_else(|| PathBuf::from("./ftp-root"), |dir| dir.join("root"))
}

/// `auth.path` when not set: `users.toml` in the service's state directory, else beside
/// the config file (or in the current directory without one).
pub(crate) fn default_users_path() -> PathBuf {
    service_state_directory()
        .map_or_else(|| PathBuf::from("users.toml"), |dir| dir.join("users.toml"))
}

impl Config {
    /// Makes every relative path absolute against `base` (the config file's directory), so
    /// that a config means the same files whatever directory the server starts in.
    pub fn resolve_relative_to(&mut self, base: &Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(path.strip_prefix(".").unwrap_or(path));
            }
        };
        match &mut self.storage {
            StorageConfig::Fs { root, .. } => resolve(root),
            StorageConfig::Object(object) => object.resolve_paths(resolve),
        }
        match &mut self.auth.backend {
            AuthBackendConfig::File { path } => resolve(path),
        }
        for path in [
            self.tls.cert.as_mut(),
            self.tls.key.as_mut(),
            self.tls.client_ca.as_mut(),
            self.log.file.as_mut(),
            self.log.transfer_log.as_mut(),
            self.defender.persist.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            resolve(path);
        }
    }
}

/// The directory relative paths of the config file at `path` are relative to.
/// Absolute (without resolving symbolic links), so that logs name the files unambiguously.
pub fn config_directory(path: &Path) -> PathBuf {
    let directory = path.parent().unwrap_or(Path::new(""));
    let directory = if directory.as_os_str().is_empty() {
        Path::new(".")
    } else {
        directory
    };
    std::path::absolute(directory).unwrap_or_else(|_| directory.to_path_buf())
}
