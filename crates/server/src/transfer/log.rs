//! A transfer's log line and [`TransferRecord`], written once when it ends, and the work
//! that waits until its final reply is written.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ferroftp_proto::listing::ListFormat;
use ferroftp_proto::session::{
    DataProtection, TransferKind, TransferRequest, UploadTarget, WriteMode,
};
use ferroftp_proto::{Escaped, VirtualPath};
use tracing::info;

use super::Progress;
use super::local::Leftovers;
use super::record::{TransferCompletion, TransferDirection, TransferObserver, TransferRecord};
use crate::connection::LOG_TARGET;

/// Who runs a transfer, for its log record.
pub(crate) struct LogIdentity {
    /// The session's number in the logs.
    pub(crate) session: u64,
    pub(crate) client: SocketAddr,
    /// The logged-in user.
    pub(crate) user: String,
    pub(crate) observer: Option<Arc<dyn TransferObserver>>,
}

/// What is logged, and told to the transfer observer, when a transfer ends.
pub(super) struct TransferLog {
    command: &'static str,
    pub(super) direction: TransferDirection,
    /// The file or directory; for STOU, the directory until the storage has chosen the name.
    pub(super) path: VirtualPath,
    ascii: bool,
    protected: bool,
    pub(super) started: Instant,
    /// Bytes moved so far: what a transfer that ends early reports.
    progress: Progress,
    identity: LogIdentity,
}

/// How a transfer ended, for its log.
pub(super) enum TransferEnd {
    /// All of it, with this many bytes.
    Complete(u64),
    /// ABOR.
    Aborted,
    /// Anything else that ended it early, for people.
    Failed(String),
}

impl TransferLog {
    pub(super) fn new(
        request: &TransferRequest,
        identity: LogIdentity,
        progress: Progress,
    ) -> Self {
        let (direction, path) = match &request.kind {
            TransferKind::Retrieve { path, .. } => (TransferDirection::Download, path.clone()),
            TransferKind::Store {
                target: UploadTarget::Path(path) | UploadTarget::UniqueIn(path),
                ..
            } => (TransferDirection::Upload, path.clone()),
            TransferKind::List { path, .. } => (TransferDirection::Listing, path.clone()),
        };
        Self {
            command: command(&request.kind),
            direction,
            path,
            ascii: request.ascii,
            protected: matches!(request.protection, DataProtection::Private { .. }),
            started: Instant::now(),
            progress,
            identity,
        }
    }

    pub(super) fn write(self, end: TransferEnd, duration: Duration) {
        let (bytes, reply, status, completion) = match end {
            TransferEnd::Complete(bytes) => (
                bytes,
                Some(226),
                "ok".to_owned(),
                TransferCompletion::Complete,
            ),
            TransferEnd::Aborted => (
                self.progress.bytes(),
                Some(426),
                "aborted".to_owned(),
                TransferCompletion::Incomplete {
                    reason: "aborted".to_owned(),
                },
            ),
            TransferEnd::Failed(reason) => (
                self.progress.bytes(),
                None,
                reason.clone(),
                TransferCompletion::Incomplete { reason },
            ),
        };
        info!(target: LOG_TARGET,
            command = self.command,
            path = ?Escaped(&self.path),
            bytes,
            duration_ms = duration.as_millis() as u64,
            reply,
            status,
            "transfer"
        );
        let identity = self.identity;
        if let Some(observer) = &identity.observer {
            observer.transfer_finished(&TransferRecord {
                finished: SystemTime::now(),
                duration,
                session: identity.session,
                client: identity.client,
                user: identity.user,
                command: self.command,
                direction: self.direction,
                path: self.path,
                bytes,
                ascii: self.ascii,
                protected: self.protected,
                completion,
            });
        }
    }
}

/// The command that names a transfer in logs: APPE and STOU are not STOR.
fn command(kind: &TransferKind) -> &'static str {
    match kind {
        TransferKind::Retrieve { .. } => "RETR",
        TransferKind::Store {
            target: UploadTarget::UniqueIn(_),
            ..
        } => "STOU",
        TransferKind::Store {
            mode: WriteMode::Append,
            ..
        } => "APPE",
        TransferKind::Store { .. } => "STOR",
        TransferKind::List { format, .. } => match format {
            ListFormat::Long => "LIST",
            ListFormat::NamesOnly => "NLST",
            ListFormat::Machine => "MLSD",
        },
    }
}

/// Work that waits until the replies queued so far are written: a finished download's log
/// line and the closing of its data connection and file. The client has its 226 first.
#[derive(Default)]
pub(super) struct AfterReply {
    /// The log, the bytes and the duration of a download that completed.
    pub(super) log: Option<(TransferLog, u64, Duration)>,
    pub(super) leftovers: Leftovers,
}

impl AfterReply {
    pub(super) fn run(self) {
        drop(self.leftovers);
        if let Some((log, bytes, duration)) = self.log {
            log.write(TransferEnd::Complete(bytes), duration);
        }
    }
}
