//! The file system backend's errors: an I/O error and what was being done to which path.
//! Their kind comes from the one mapping, [`ferroftp_backend::io_error_kind`].

use std::io;

use ferroftp_backend::{StorageError, VirtualPath};

/// A [`StorageError`] for `error`, met while doing `action` on `path`.
pub(crate) fn fs_error(
    error: impl Into<io::Error>,
    action: &str,
    path: &VirtualPath,
) -> StorageError {
    StorageError::from_io(error.into(), format!("{action} {path}"))
}
