//! What a session asks its driver to do ([`Action`]) and what the driver reports back
//! ([`Outcome`]).

use std::fmt;
use std::net::SocketAddr;
use std::time::SystemTime;

use crate::error::StorageErrorKind;
use crate::listing::{ListFormat, MlstFacts};
use crate::metadata::{DirEntry, FileMeta};
use crate::path::VirtualPath;
use crate::policy::UserPolicy;
use crate::reply::Reply;

/// A logged-in user as the protocol sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The account name.
    pub name: String,
    /// The user's home in the storage namespace; the user sees it as `/` (chroot).
    pub home: VirtualPath,
    /// Refuse every command that changes storage.
    pub read_only: bool,
    /// Sessions, bandwidth, quotas and allowed networks of the account.
    pub policy: UserPolicy,
}

/// Credentials to check. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginRequest {
    /// USER's argument.
    pub username: String,
    /// PASS's argument (empty when PASS had none).
    pub password: String,
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("password", &"*****")
            .finish()
    }
}

/// A storage operation; every path is already in the storage namespace (home applied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageRequest {
    /// Facts about a path; answered with [`StorageResult::Metadata`].
    Metadata(VirtualPath),
    /// The size SIZE reports (see the backend's `resumable_size`); [`StorageResult::Size`].
    ResumableSize(VirtualPath),
    /// The entries of a directory, or the file itself as one entry, for `STAT path`;
    /// [`StorageResult::Entries`].
    StatListing(VirtualPath),
    /// MKD.
    MakeDir(VirtualPath),
    /// RMD.
    RemoveDir(VirtualPath),
    /// DELE.
    RemoveFile(VirtualPath),
    /// RNFR + RNTO.
    Rename {
        /// Source.
        from: VirtualPath,
        /// Destination.
        to: VirtualPath,
    },
    /// MFMT.
    SetModified {
        /// The file.
        path: VirtualPath,
        /// The new modification time.
        time: SystemTime,
    },
    /// SITE CHMOD.
    SetMode {
        /// The file or directory.
        path: VirtualPath,
        /// Permission bits only (at most `0o777`); the storage may narrow them further.
        mode: u32,
    },
    /// SITE QUOTA: the account's usage as the server counts it (not a storage operation,
    /// but answered the same way); [`StorageResult::QuotaUsage`].
    QuotaUsage,
}

/// What a successful storage operation returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageResult {
    /// Done, nothing to report.
    Done,
    /// Facts about one path.
    Metadata(FileMeta),
    /// A size in bytes.
    Size(u64),
    /// Directory entries.
    Entries {
        /// The entries, in the order to show.
        entries: Vec<DirEntry>,
        /// The wall-clock time the driver listed them at: a long listing shows the time
        /// of day for recent files and the year for older ones ([`listing::format_long`]),
        /// and proto reads no clock.
        ///
        /// [`listing::format_long`]: crate::listing::format_long
        now: SystemTime,
    },
    /// Bytes and files under the user's home; `None` while the first count runs.
    QuotaUsage(Option<QuotaUsage>),
}

/// What an account stores under its home, as counted for its quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuotaUsage {
    /// Bytes of all files.
    pub bytes: u64,
    /// Number of files (directories are not counted).
    pub files: u64,
}

/// How an upload combines with what is stored under its name (see the backend's docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// STOR: replace.
    Create,
    /// APPE: continue the resumable content.
    Append,
    /// REST n + STOR: the resumable content cut at n, then the upload.
    ResumeAt(u64),
}

/// Where an upload goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadTarget {
    /// This exact name.
    Path(VirtualPath),
    /// STOU: a new, unused name inside this directory, chosen by the storage.
    UniqueIn(VirtualPath),
}

/// Which way the data flows and what is transferred.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferKind {
    /// RETR from `offset` (REST).
    Retrieve {
        /// Storage path.
        path: VirtualPath,
        /// Start offset.
        offset: u64,
    },
    /// STOR, APPE, STOU.
    Store {
        /// Where to.
        target: UploadTarget,
        /// How.
        mode: WriteMode,
    },
    /// LIST, NLST, MLSD of a directory (or of one file, for LIST and NLST).
    List {
        /// Storage path.
        path: VirtualPath,
        /// Line format.
        format: ListFormat,
        /// MLSD facts to include.
        facts: MlstFacts,
        /// Whether the user may write (the MLSD `perm` fact).
        writable: bool,
    },
}

/// How the data connection is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataEndpoint {
    /// Accept on the passive listener opened by the last PASV/EPSV.
    Passive,
    /// Connect to this validated address (PORT/EPRT).
    Active(SocketAddr),
}

/// Whether the data connection is protected (PROT, RFC 4217 §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataProtection {
    /// PROT C: plain TCP.
    Clear,
    /// PROT P: TLS on the data connection, the server acting as TLS server in both modes
    /// (RFC 4217 §7). The handshake follows the 150 reply (clients wait for it).
    Private {
        /// The data connection must resume the control connection's TLS session, otherwise
        /// the transfer ends with [`DataTlsFailure::NotResumed`].
        require_resumption: bool,
    },
}

/// A transfer to perform. The driver opens storage first, then the data connection, then
/// reports [`Outcome::TransferStarted`] and finally [`Outcome::TransferFinished`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferRequest {
    /// What.
    pub kind: TransferKind,
    /// Over which connection.
    pub endpoint: DataEndpoint,
    /// TYPE A: convert line ends on the wire.
    pub ascii: bool,
    /// PROT C or P.
    pub protection: DataProtection,
    /// The size announced by ALLO before this upload (RFC 959 §4.1.3), checked against the
    /// quota before any byte is received.
    pub allocated_size: Option<u64>,
}

/// What the driver learned from a completed TLS handshake on the control connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// The common name (CN) of the client certificate, when the client presented one that
    /// verified against the configured CA.
    pub client_name: Option<String>,
}

/// What the driver must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this reply on the control connection.
    Reply(Reply),
    /// Check these credentials; report [`Outcome::Authenticated`].
    Authenticate(LoginRequest),
    /// Perform this storage operation; report [`Outcome::Storage`].
    Storage(StorageRequest),
    /// Open a passive listener (closing any previous one); report
    /// [`Outcome::PassiveOpened`] with the address to announce.
    OpenPassive,
    /// Close the passive listener, if any.
    ClosePassive,
    /// Run a transfer; report [`Outcome::TransferStarted`] then
    /// [`Outcome::TransferFinished`].
    Transfer(TransferRequest),
    /// Stop the running transfer; it still reports [`Outcome::TransferFinished`].
    AbortTransfer,
    /// AUTH TLS was accepted (its 234 reply is the action before this one): send the replies,
    /// discard every byte received but not yet executed, run the TLS handshake as server
    /// and report [`Outcome::TlsEstablished`].
    UpgradeToTls,
    /// CCC was accepted (its 200 reply, sent under TLS, comes before): end TLS on the control
    /// connection with close_notify and continue in plain text. No outcome.
    ClearControlTls,
    /// Close the control connection after sending the replies before this action.
    Close,
}

/// Why a login failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginFailure {
    /// Wrong name or password.
    Rejected,
    /// The user database could not be consulted.
    Unavailable,
    /// The account has as many sessions as `max_sessions` allows (530, not counted as a
    /// failed login: the password was right).
    SessionLimit,
    /// The client's address is banned (the driver's defender); no password was verified.
    Banned,
}

/// Why no passive listener could be opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PassiveFailure {
    /// Every port of the configured range is in use.
    Exhausted,
    /// Anything else (bind error), with text for the client.
    Other(String),
}

/// Why a transfer ended without success.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferFailure {
    /// The storage refused (before the transfer: 550 and friends; during it: 451/552).
    Storage(StorageErrorKind),
    /// The data connection could not be made (425).
    DataConnection(String),
    /// ABOR stopped it (426, then 226 for the ABOR).
    Aborted,
    /// The data connection broke mid-transfer (426).
    ConnectionLost(String),
    /// TLS on the data connection failed.
    DataTls(DataTlsFailure),
}

/// Why a protected data connection was not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataTlsFailure {
    /// The handshake completed without resuming the control connection's TLS session (522).
    NotResumed,
    /// The handshake failed (425).
    Handshake(String),
}

/// Summary of a successful transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferSummary {
    /// Bytes that crossed the data connection.
    pub bytes: u64,
}

/// What the driver reports back after performing an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Result of [`Action::Authenticate`].
    Authenticated(Result<User, LoginFailure>),
    /// Result of [`Action::Storage`].
    Storage(Result<StorageResult, StorageErrorKind>),
    /// Result of [`Action::OpenPassive`]: the address and port to announce.
    PassiveOpened(Result<SocketAddr, PassiveFailure>),
    /// Storage and data connection are ready: the 150 reply goes out now.
    TransferStarted {
        /// The file size, when known (shown in the 150 text).
        size: Option<u64>,
        /// The storage path a STOU upload received.
        stored_as: Option<VirtualPath>,
    },
    /// The transfer ended.
    TransferFinished(Result<TransferSummary, TransferFailure>),
    /// Result of [`Action::UpgradeToTls`]: the handshake completed, or failed with this text
    /// (the session then closes without a reply: nothing can be said in plain text any more).
    TlsEstablished(Result<TlsInfo, String>),
}
