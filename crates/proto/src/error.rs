//! Error kinds shared by the protocol and the storage interface, and the one place where a
//! storage failure becomes a reply code.

use crate::reply::{Reply, ReplyCode};

/// What went wrong in a storage operation, by meaning. The kind alone decides the FTP reply;
/// details go to the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StorageErrorKind {
    /// No such file or directory.
    NotFound,
    /// The user or the backend does not allow this.
    PermissionDenied,
    /// Expected a directory.
    NotADirectory,
    /// Expected a file.
    IsADirectory,
    /// The target exists already (MKD of an existing directory).
    AlreadyExists,
    /// RMD of a directory that still has entries.
    NotEmpty,
    /// The name is not allowed by the backend (reserved, too long, invalid).
    InvalidName,
    /// Out of space.
    InsufficientSpace,
    /// The account's quota (`quota_bytes`, `quota_files`) would be exceeded.
    QuotaExceeded,
    /// A REST offset beyond the end of the file.
    InvalidRange,
    /// The backend cannot do this at all (append on an object store without it, say).
    Unsupported,
    /// A temporary failure worth retrying (busy file, backend unreachable).
    Transient,
    /// Too much to do in one operation on this backend: a directory rename on an object
    /// store, which copies every object, above its configured limit.
    TooLarge,
    /// Anything else: an I/O error the client cannot fix.
    Local,
}

impl StorageErrorKind {
    /// RFC 959 §4.2: the single mapping from a storage failure to a reply code.
    pub fn reply_code(self) -> ReplyCode {
        match self {
            Self::NotFound
            | Self::PermissionDenied
            | Self::NotADirectory
            | Self::IsADirectory
            | Self::AlreadyExists
            | Self::NotEmpty
            | Self::TooLarge => ReplyCode::FILE_UNAVAILABLE,
            Self::InvalidName => ReplyCode::NAME_NOT_ALLOWED,
            Self::InsufficientSpace | Self::QuotaExceeded => ReplyCode::EXCEEDED_STORAGE,
            Self::InvalidRange => ReplyCode::INVALID_RANGE,
            Self::Unsupported => ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
            Self::Transient => ReplyCode::FILE_BUSY,
            Self::Local => ReplyCode::LOCAL_ERROR,
        }
    }

    /// A short text for the client that reveals nothing about the server's own paths.
    pub fn describe(self) -> &'static str {
        match self {
            Self::NotFound => "No such file or directory",
            Self::PermissionDenied => "Permission denied",
            Self::NotADirectory => "Not a directory",
            Self::IsADirectory => "Is a directory",
            Self::AlreadyExists => "File exists",
            Self::NotEmpty => "Directory not empty",
            Self::InvalidName => "File name not allowed",
            Self::InsufficientSpace => "Insufficient storage space",
            Self::QuotaExceeded => "Quota exceeded",
            Self::InvalidRange => "Restart offset beyond the end of the file",
            Self::Unsupported => "Not supported by this storage",
            Self::Transient => "Temporarily unavailable, try again",
            Self::TooLarge => "Too many objects to do this in one step on this storage",
            Self::Local => "Local error in processing",
        }
    }

    /// The reply for this failure, naming the path the client used.
    pub fn reply(self, client_path: &str) -> Reply {
        Reply::new(
            self.reply_code(),
            format!("{client_path}: {}", self.describe()),
        )
    }
}
