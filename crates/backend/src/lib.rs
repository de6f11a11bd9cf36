//! The plug-in interfaces of ferroftp: [`Storage`] for where files live and
//! [`Authenticator`] for who may log in.
//!
//! Backends depend on this crate (and on `ferroftp-proto` for [`VirtualPath`] and the error
//! kinds), never on the server. With the `testing` feature it also provides
//! [`testing::MemoryStorage`] and the storage battery, the shared tests every backend runs.

mod auth;
mod error;
mod storage;
#[cfg(feature = "testing")]
pub mod testing;

pub use auth::{AccountState, AuthError, Authenticator, LoginAttempt, Password, User};
pub use error::{StorageError, io_error_kind};
pub use ferroftp_proto::listing::is_listable_name;
pub use ferroftp_proto::{DirEntry, Escaped, FileKind, FileMeta, StorageErrorKind, VirtualPath};
pub use storage::{
    Capabilities, Download, DownloadBody, EntryStream, LocalFile, LocalUploadFile, PublishGate,
    Published, Storage, Upload, UploadTarget, Withheld, WriteMode, make_dir_all,
};
