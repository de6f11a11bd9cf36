//! Publishing an upload: the rule "the client must still be there when its upload is
//! complete", in one place. An upload whose data is all in is made durable
//! ([`secure`]), then published only if its client is still connected and its quota has
//! room ([`Transfer::publish`]); otherwise it stays partial and the previous version stays
//! whole (docs/uploads.md).

use std::future::Future;
use std::io;
use std::time::Duration;

use ferroftp_backend::{StorageError, Upload};
use ferroftp_proto::session::TransferFailure;
use ferroftp_proto::{Escaped, StorageErrorKind};
use tracing::warn;

use super::log::TransferEnd;
use super::{ControlPresence, Stage, Step, Transfer};
use crate::connection::LOG_TARGET;
use crate::status::SessionHandle;
use crate::telemetry;

/// How long after an upload's data connection ended its control connection must still be
/// open for the upload to be published. A client killed mid-upload closes both connections,
/// the data connection first (an orderly FIN, which stream mode takes for end-of-file), its
/// control connection about 100 us later; without this wait an upload whose storage does not
/// fsync (`storage.fsync_uploads = false`) was checked before that close arrived and a
/// truncated file replaced the previous version (5 of 40 killed clients). With fsync, the
/// fsync usually takes longer than this already and nothing is added. docs/uploads.md.
const CLIENT_GONE_GRACE: Duration = Duration::from_millis(1);

/// Makes an upload's data durable (when the storage fsyncs), then waits until
/// [`CLIENT_GONE_GRACE`] after now (the end of its data) if that has not passed yet.
pub(super) fn secure(
    mut upload: Box<dyn Upload>,
) -> impl Future<Output = Result<Box<dyn Upload>, StorageError>> + Send {
    let publish_after = tokio::time::Instant::now() + CLIENT_GONE_GRACE;
    async move {
        upload.make_durable().await?;
        let remaining = publish_after.saturating_duration_since(tokio::time::Instant::now());
        if !remaining.is_zero() {
            // On a blocking thread: the async timer's resolution is a millisecond, which
            // would double the wait. The control loop keeps watching the control connection
            // meanwhile.
            let _ = tokio::task::spawn_blocking(move || std::thread::sleep(remaining)).await;
        }
        Ok(upload)
    }
}

impl Transfer {
    /// The upload is durable: published if its client is still there and its quota has
    /// room, kept partial otherwise.
    pub(super) fn publish(
        &mut self,
        upload: Box<dyn Upload>,
        control: &mut dyn ControlPresence,
        status: &SessionHandle,
    ) -> io::Result<Step> {
        // Stream mode marks end of file by closing the data connection, which a client that
        // is killed also does, and the kernel closes its control connection some 100 us
        // later. Checking only now, at least CLIENT_GONE_GRACE after the data connection
        // ended (and after the fsync), leaves that close time to arrive, with or without
        // fsync: a killed client's upload stays partial and the previous version stays
        // whole. The kernel is asked too, in case the event loop has not seen the close yet.
        if !control.client_still_there()? {
            self.end(
                TransferEnd::Failed("client gone, upload kept as partial".to_owned()),
                status,
            );
            drop(upload);
            return Ok(Step::ClientGone);
        }
        // Charged before publishing, atomically for the account: two sessions that each fit
        // alone cannot together publish past the quota.
        if let Some(quota) = &self.upload_quota
            && !quota.charge(self.received)
        {
            self.upload_quota = None;
            drop(upload);
            let failure = TransferFailure::Storage(StorageErrorKind::QuotaExceeded);
            return Ok(self.finish(Err(failure), status));
        }
        self.stage = Stage::Committing(Box::pin(async move { upload.commit().await }));
        Ok(Step::Continue)
    }

    /// The commit ended: the upload is published (226) or it failed (451/552).
    pub(super) fn committed(
        &mut self,
        result: Result<u64, StorageError>,
        status: &SessionHandle,
    ) -> Step {
        let received = self.received;
        self.settle_quota(result.as_ref().ok().copied());
        if result.is_ok()
            && let Some(data_complete) = self
                .running
                .as_ref()
                .and_then(|running| running.data_complete)
        {
            telemetry::upload_committed(data_complete.elapsed());
        }
        let result = result.map(|_| received).map_err(|error| {
            warn!(target: LOG_TARGET, error = %Escaped(&error), "committing upload failed");
            TransferFailure::Storage(error.kind)
        });
        self.finish(result, status)
    }

    /// After a charged upload's commit: the usage follows the published size, or the charge
    /// is given back when nothing was published.
    pub(super) fn settle_quota(&mut self, published_size: Option<u64>) {
        if let Some(quota) = self.upload_quota.take() {
            match published_size {
                Some(size) => quota.correct(self.received, size),
                None => quota.refund(self.received),
            }
        }
    }
}
