//! What the server reports about every finished or aborted transfer, for whoever wants it:
//! the `xferlog` writer of the binary, metrics. A transfer builds its one
//! [`TransferRecord`] where it ends (`transfer/log.rs`) and hands it to the
//! [`TransferObserver`] of [`ServerOptions`](crate::ServerOptions), on the session's thread:
//! an observer must not block for long (write a line, bump a counter).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use ferroftp_proto::VirtualPath;

/// Which way a transfer's bytes went, seen from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferDirection {
    /// RETR: from the server to the client.
    Download,
    /// STOR, APPE, STOU: from the client to the server.
    Upload,
    /// LIST, NLST, MLSD: a directory listing sent to the client.
    Listing,
}

/// How a transfer ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferCompletion {
    /// All of it moved (and, for an upload, was published).
    Complete,
    /// It ended early: ABOR, the data connection broke, the client left, the storage failed.
    /// An interrupted upload's bytes stay in its partial file, for a resume.
    Incomplete {
        /// Why, for people (not a stable format).
        reason: String,
    },
}

/// One finished or aborted transfer.
#[derive(Clone, Debug)]
pub struct TransferRecord {
    /// When it ended.
    pub finished: SystemTime,
    /// From the transfer command to its end.
    pub duration: Duration,
    /// The session's number, as in the log's `session` spans (`id`).
    pub session: u64,
    /// The client's address (behind a trusted proxy, the one its PROXY header named).
    pub client: SocketAddr,
    /// The logged-in user's name (`anonymous` for anonymous logins).
    pub user: String,
    /// The transfer command: `RETR`, `STOR`, `APPE`, `STOU`, `LIST`, `NLST` or `MLSD`
    /// (REST + STOR is `STOR`).
    pub command: &'static str,
    /// Which way the bytes went.
    pub direction: TransferDirection,
    /// The file (or listed directory) in the storage; for STOU, the name it received.
    pub path: VirtualPath,
    /// Bytes that crossed the data connection, also when it ended early: an interrupted
    /// upload reports what was received (which its partial file keeps for a resume, beyond
    /// the first 16 KiB).
    pub bytes: u64,
    /// TYPE A (line ends converted) rather than TYPE I.
    pub ascii: bool,
    /// The data connection was TLS (PROT P).
    pub protected: bool,
    /// How it ended.
    pub completion: TransferCompletion,
}

/// Receives a [`TransferRecord`] for every transfer that ended, successful or not.
///
/// Called on the session's thread, once per transfer, after the final reply is queued
/// (for a download that completed, after it is written): keep it short.
pub trait TransferObserver: Send + Sync + std::fmt::Debug {
    /// A transfer ended.
    fn transfer_finished(&self, record: &TransferRecord);
}
