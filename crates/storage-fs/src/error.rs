//! The one mapping from operating-system errors to [`StorageErrorKind`].

use std::io;

use ferroftp_backend::{StorageError, StorageErrorKind, VirtualPath};
use rustix::io::Errno;

/// What an I/O error from this backend means for the client.
///
/// Public so that the driver can classify errors from an upload's `AsyncWrite` side too
/// (a full disk while writing is 552, not 451).
pub fn error_kind(error: &io::Error) -> StorageErrorKind {
    let Some(errno) = Errno::from_io_error(error) else {
        // Errors made in Rust rather than by a system call carry only a kind.
        return match error.kind() {
            io::ErrorKind::NotFound => StorageErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => StorageErrorKind::PermissionDenied,
            io::ErrorKind::AlreadyExists => StorageErrorKind::AlreadyExists,
            io::ErrorKind::WouldBlock => StorageErrorKind::Transient,
            _ => StorageErrorKind::Local,
        };
    };
    match errno {
        Errno::NOENT => StorageErrorKind::NotFound,
        Errno::ACCESS | Errno::PERM | Errno::ROFS => StorageErrorKind::PermissionDenied,
        // openat2 answers EXDEV when a path (through `..` in a symlink, or an absolute
        // symlink) would leave the root under RESOLVE_BENEATH, and ELOOP for magic links
        // and for the symlinks refused on purpose: both are attempts to reach elsewhere.
        Errno::XDEV | Errno::LOOP => StorageErrorKind::PermissionDenied,
        Errno::NOTDIR => StorageErrorKind::NotADirectory,
        Errno::ISDIR => StorageErrorKind::IsADirectory,
        Errno::EXIST => StorageErrorKind::AlreadyExists,
        Errno::NOTEMPTY => StorageErrorKind::NotEmpty,
        Errno::NOSPC | Errno::DQUOT | Errno::FBIG => StorageErrorKind::InsufficientSpace,
        Errno::NAMETOOLONG => StorageErrorKind::InvalidName,
        Errno::WOULDBLOCK | Errno::BUSY | Errno::TXTBSY => StorageErrorKind::Transient,
        _ => StorageErrorKind::Local,
    }
}

/// A [`StorageError`] for `error`, met while doing `action` on `path`.
pub(crate) fn fs_error(
    error: impl Into<io::Error>,
    action: &str,
    path: &VirtualPath,
) -> StorageError {
    let error = error.into();
    StorageError::new(error_kind(&error), format!("{action} {path}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_errno_values() {
        let cases = [
            (Errno::NOENT, StorageErrorKind::NotFound),
            (Errno::ACCESS, StorageErrorKind::PermissionDenied),
            (Errno::PERM, StorageErrorKind::PermissionDenied),
            (Errno::NOTDIR, StorageErrorKind::NotADirectory),
            (Errno::ISDIR, StorageErrorKind::IsADirectory),
            (Errno::EXIST, StorageErrorKind::AlreadyExists),
            (Errno::NOTEMPTY, StorageErrorKind::NotEmpty),
            (Errno::NOSPC, StorageErrorKind::InsufficientSpace),
            (Errno::DQUOT, StorageErrorKind::InsufficientSpace),
            (Errno::XDEV, StorageErrorKind::PermissionDenied),
            (Errno::LOOP, StorageErrorKind::PermissionDenied),
            (Errno::NAMETOOLONG, StorageErrorKind::InvalidName),
            (Errno::WOULDBLOCK, StorageErrorKind::Transient),
            (Errno::IO, StorageErrorKind::Local),
        ];
        for (errno, kind) in cases {
            assert_eq!(error_kind(&io::Error::from(errno)), kind, "{errno:?}");
        }
    }

    #[test]
    fn maps_errors_without_errno_by_kind() {
        let error = io::Error::new(io::ErrorKind::NotFound, "gone");
        assert_eq!(error_kind(&error), StorageErrorKind::NotFound);
        let error = io::Error::other("strange");
        assert_eq!(error_kind(&error), StorageErrorKind::Local);
    }
}
