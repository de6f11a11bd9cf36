//! Storage errors: a kind that decides the reply, a detail for the operator and the cause
//! underneath, and the one mapping from operating-system errors to kinds that every crate
//! uses (a file system backend opening a file, the driver writing an upload's bytes).

use std::error::Error;
use std::fmt;
use std::io;

use ferroftp_proto::StorageErrorKind;
use rustix::io::Errno;

/// A storage failure: its kind decides the reply, its detail and cause are for the log only.
///
/// Shown as `kind: detail: cause`, so that a log line carries the operating system's words
/// (`No space left on device`) without walking the chain; [`Error::source`] gives the cause
/// itself to code that inspects it (an `io::Error` and its errno, a client library's error).
#[derive(Debug)]
pub struct StorageError {
    /// What went wrong, by meaning.
    pub kind: StorageErrorKind,
    /// What was being done (may contain server paths: never sent to the client).
    pub detail: String,
    /// The error underneath, when there is one (an `io::Error` from the file system, a
    /// client library's error from an object store).
    source: Option<Box<dyn Error + Send + Sync>>,
}

impl StorageError {
    /// A new error with no cause underneath.
    pub fn new(kind: StorageErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            source: None,
        }
    }

    /// An I/O error met while doing `detail`, its kind given by [`io_error_kind`].
    pub fn from_io(error: io::Error, detail: impl Into<String>) -> Self {
        Self::new(io_error_kind(&error), detail).with_source(error)
    }

    /// The same error, caused by `source`.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What was being done and its cause (`detail: cause`), without the kind: for messages
    /// to an operator that say what failed in their own words.
    pub fn detail_and_cause(&self) -> String {
        match &self.source {
            Some(source) if self.detail.is_empty() => source.to_string(),
            Some(source) => format!("{}: {source}", self.detail),
            None => self.detail.clone(),
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:?}: {}", self.kind, self.detail_and_cause())
    }
}

impl Error for StorageError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn Error + 'static))
    }
}

impl From<StorageErrorKind> for StorageError {
    fn from(kind: StorageErrorKind) -> Self {
        Self::new(kind, String::new())
    }
}

impl From<io::Error> for StorageError {
    fn from(error: io::Error) -> Self {
        Self::from_io(error, String::new())
    }
}

/// What an I/O error means for the client: the one mapping from operating-system errors to
/// [`StorageErrorKind`], for the storage operations and for the bytes of a transfer alike
/// (a full disk is 552 whether `open` or a `write` in the middle of an upload found it).
pub fn io_error_kind(error: &io::Error) -> StorageErrorKind {
    let Some(errno) = Errno::from_io_error(error) else {
        // Errors made in Rust rather than by a system call (an upload's writer, a stream
        // adapter) carry only a kind.
        return match error.kind() {
            io::ErrorKind::NotFound => StorageErrorKind::NotFound,
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                StorageErrorKind::PermissionDenied
            }
            io::ErrorKind::AlreadyExists => StorageErrorKind::AlreadyExists,
            io::ErrorKind::NotADirectory => StorageErrorKind::NotADirectory,
            io::ErrorKind::IsADirectory => StorageErrorKind::IsADirectory,
            io::ErrorKind::DirectoryNotEmpty => StorageErrorKind::NotEmpty,
            io::ErrorKind::StorageFull
            | io::ErrorKind::QuotaExceeded
            | io::ErrorKind::FileTooLarge => StorageErrorKind::InsufficientSpace,
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
        // RFC 959 §4.2: 552 "exceeded storage allocation" for a full disk, a quota and a
        // file over the size limit alike.
        Errno::NOSPC | Errno::DQUOT | Errno::FBIG => StorageErrorKind::InsufficientSpace,
        Errno::NAMETOOLONG => StorageErrorKind::InvalidName,
        Errno::WOULDBLOCK | Errno::BUSY | Errno::TXTBSY => StorageErrorKind::Transient,
        _ => StorageErrorKind::Local,
    }
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
            (Errno::ROFS, StorageErrorKind::PermissionDenied),
            (Errno::NOTDIR, StorageErrorKind::NotADirectory),
            (Errno::ISDIR, StorageErrorKind::IsADirectory),
            (Errno::EXIST, StorageErrorKind::AlreadyExists),
            (Errno::NOTEMPTY, StorageErrorKind::NotEmpty),
            (Errno::NOSPC, StorageErrorKind::InsufficientSpace),
            (Errno::DQUOT, StorageErrorKind::InsufficientSpace),
            (Errno::FBIG, StorageErrorKind::InsufficientSpace),
            (Errno::XDEV, StorageErrorKind::PermissionDenied),
            (Errno::LOOP, StorageErrorKind::PermissionDenied),
            (Errno::NAMETOOLONG, StorageErrorKind::InvalidName),
            (Errno::WOULDBLOCK, StorageErrorKind::Transient),
            (Errno::IO, StorageErrorKind::Local),
        ];
        for (errno, kind) in cases {
            assert_eq!(io_error_kind(&io::Error::from(errno)), kind, "{errno:?}");
        }
    }

    #[test]
    fn maps_errors_without_errno_by_kind() {
        let cases = [
            (io::ErrorKind::NotFound, StorageErrorKind::NotFound),
            (
                io::ErrorKind::StorageFull,
                StorageErrorKind::InsufficientSpace,
            ),
            (
                io::ErrorKind::QuotaExceeded,
                StorageErrorKind::InsufficientSpace,
            ),
            (
                io::ErrorKind::FileTooLarge,
                StorageErrorKind::InsufficientSpace,
            ),
            (
                io::ErrorKind::ReadOnlyFilesystem,
                StorageErrorKind::PermissionDenied,
            ),
            (io::ErrorKind::Other, StorageErrorKind::Local),
        ];
        for (error_kind, kind) in cases {
            let error = io::Error::new(error_kind, "made in Rust");
            assert_eq!(io_error_kind(&error), kind, "{error_kind:?}");
        }
    }

    #[test]
    fn keeps_its_cause_and_shows_it() {
        let error = StorageError::from_io(io::Error::from(Errno::NOSPC), "write /a");
        assert_eq!(error.kind, StorageErrorKind::InsufficientSpace);
        let cause = error.source().expect("the I/O error is the source");
        assert!(cause.downcast_ref::<io::Error>().is_some());
        let shown = error.to_string();
        assert!(
            shown.starts_with("InsufficientSpace: write /a: "),
            "{shown}"
        );
        assert!(error.detail_and_cause().starts_with("write /a: "));
        assert_eq!(
            StorageError::new(StorageErrorKind::NotFound, "/a").to_string(),
            "NotFound: /a"
        );
    }
}
