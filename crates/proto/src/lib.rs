//! Sans-IO FTP protocol core.
//!
//! ```text
//!  bytes ─► LineBuffer ─► Command::parse ─► Session ─► Action (reply, storage op, transfer…)
//!                                              ▲                      │
//!                                              └──── Outcome ◄── driver (server crate)
//! ```
//!
//! Nothing here touches a socket, a file or the clock: the driver feeds received lines and the
//! outcomes of the actions it performed, and passes the current time in. Every protocol rule
//! can therefore be tested by feeding lines and asserting actions.

mod address;
pub mod ascii;
pub mod command;
mod error;
mod escaped;
pub mod framing;
pub mod host_port;
pub mod listing;
mod metadata;
mod path;
pub mod policy;
mod reply;
pub mod session;
pub mod time;

pub use address::{Cidr, is_private_address};
pub use command::{Command, ParseError, Verb};
pub use error::StorageErrorKind;
pub use escaped::Escaped;
pub use metadata::{DirEntry, FileKind, FileMeta};
pub use path::{MAX_PATH_BYTES, PathError, VirtualPath};
pub use policy::UserPolicy;
pub use reply::{Reply, ReplyCode, ReplyParseError, ReplyParser};
pub use session::{Action, Outcome, Session, SessionConfig, UploadTarget, User, WriteMode};
