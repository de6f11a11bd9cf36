//! One transfer (RETR, STOR/APPE/STOU, LIST/NLST/MLSD), from `prepare` to the reply after
//! it: [`Transfer`] owns its stage, its log record, its byte count, its quota charge and
//! what is left to close once the final reply is written. The control loop starts it, waits
//! on [`Transfer::next_event`] beside the control connection, hands each event to
//! [`Transfer::advance`] and gives the session the outcome it returns.
//!
//! Stages, so the control loop can speak between them (RFC 959 §5.4 orders the replies):
//!
//! 1. preparing ([`work::prepare`]): the storage side first (a missing file is a 550 with no
//!    data connection made), then the data connection ([`connect`], 425 on failure); the
//!    session then sends 150;
//! 2. moving ([`work::run`]): the TLS handshake for PROT P, then the bytes, through the
//!    local-file fast paths ([`local`]) when the storage hands out a local file and nothing
//!    has to see each chunk, through the generic stream copy ([`stream`]) otherwise;
//! 3. for an upload, publishing ([`publish`]): the one place that decides whether a
//!    received upload is published, asked by the storage between its fsync and its rename.
//!
//! A storage without local files (an object store) takes the generic path: its downloads
//! are [`DownloadBody::Stream`](ferroftp_backend::DownloadBody) and its uploads have no
//! `local_file`, and nothing here or in the loop asks which storage runs.

mod connect;
mod local;
mod log;
mod publish;
mod record;
mod stream;
mod work;

use std::future::Future;
use std::os::fd::BorrowedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ferroftp_backend::{Published, Storage, StorageError};
use ferroftp_proto::session::{Outcome, TransferFailure, TransferRequest, TransferSummary};
use futures_util::FutureExt as _;

pub use self::connect::DataChannelOptions;
pub(crate) use self::connect::{DataConnectionError, DataSource, DataTls};
pub(crate) use self::log::LogIdentity;
use self::log::{AfterReply, TransferEnd, TransferLog};
pub use self::record::{TransferCompletion, TransferDirection, TransferObserver, TransferRecord};
pub(crate) use self::work::TransferPolicy;
use self::work::{Moved, Prepared};
use crate::status::SessionHandle;
use crate::telemetry::{self, TransferResult};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Bytes a running transfer has moved so far. Read when the transfer ends early (ABOR, a
/// broken connection, the client gone), when its future is dropped or failed and cannot say:
/// an interrupted upload's log shows what was received and kept for a resume.
#[derive(Clone, Debug, Default)]
pub(crate) struct Progress(Arc<AtomicU64>);

impl Progress {
    pub(crate) fn add(&self, bytes: usize) {
        self.0.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a transfer needs besides the session's request, gathered by the control loop.
pub(crate) struct Setup {
    /// The storage as the logged-in user sees it.
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) source: DataSource,
    /// PROT P.
    pub(crate) tls: Option<DataTls>,
    pub(crate) options: DataChannelOptions,
    pub(crate) policy: TransferPolicy,
    /// Who runs it, for its log line and transfer record.
    pub(crate) identity: LogIdentity,
    /// The user named in the transfer metrics (when they are counted per user).
    pub(crate) metrics_user: Option<String>,
}

/// The stage of the running transfer, if any.
#[derive(Default)]
enum Stage {
    #[default]
    Idle,
    Preparing(BoxFuture<Result<Prepared, TransferFailure>>),
    Moving(BoxFuture<Result<Moved, TransferFailure>>),
    /// An upload's data is all in: the storage makes it durable, asks the gate and
    /// publishes it ([`publish`]).
    Publishing(BoxFuture<Result<Published, StorageError>>),
}

/// A stage that completed, for [`Transfer::advance`].
pub(crate) enum Event {
    Prepared(Result<Prepared, TransferFailure>),
    Moved(Result<Moved, TransferFailure>),
    Published(Result<Published, StorageError>),
}

/// What the control loop does after [`Transfer::advance`].
pub(crate) enum Step {
    /// Nothing to tell the session: the next stage runs.
    Continue,
    /// Give the session this outcome (150 for a started transfer, the final reply).
    Tell(Outcome),
    /// The client left before its upload was published: the connection ends.
    ClientGone,
}

/// The running transfer as the status and the metrics see it (its bytes are `progress`).
struct Running {
    direction: TransferDirection,
    started: Instant,
    /// When an upload's last byte arrived (the commit latency is measured from there).
    data_complete: Option<Instant>,
    metrics_user: Option<String>,
}

/// The session's transfer: idle, or one transfer from `prepare` to the reply after it.
#[derive(Default)]
pub(crate) struct Transfer {
    stage: Stage,
    /// Until the transfer is counted in the metrics and gone from the status.
    running: Option<Running>,
    /// Until the transfer's log line is written: for a completed download, once its 226 is.
    log: Option<TransferLog>,
    /// Bytes the running transfer moved so far.
    progress: Progress,
    /// Bytes the running upload received, for its log line and its quota charge.
    received: u64,
    /// The running upload's quota: charged by the gate when it is published, settled when
    /// the publication ended.
    quota_charge: Option<publish::QuotaCharge>,
    /// The control connection, as the gate of an upload looks at it (made at the session's
    /// first upload).
    control_probe: Option<publish::ControlProbe>,
    /// The end of the client-gone grace, on this session's event loop.
    grace_timer: publish::GraceTimer,
    /// What waits until the final reply is written.
    after_reply: AfterReply,
}

impl Transfer {
    /// Starts `request`: its storage side and data connection are prepared next.
    pub(crate) fn start(&mut self, request: TransferRequest, setup: Setup, status: &SessionHandle) {
        let Setup {
            storage,
            source,
            tls,
            options,
            policy,
            identity,
            metrics_user,
        } = setup;
        self.progress = Progress::default();
        self.received = 0;
        self.quota_charge = None;
        let log = TransferLog::new(&request, identity, self.progress.clone());
        let started = Instant::now();
        status.start_transfer(
            log.direction,
            log.path.to_string(),
            started,
            self.progress.clone(),
        );
        self.running = Some(Running {
            direction: log.direction,
            started,
            data_complete: None,
            metrics_user,
        });
        self.log = Some(log);
        self.stage = Stage::Preparing(Box::pin(async move {
            work::prepare(request, storage, source, tls, &options, policy).await
        }));
    }

    /// The next stage that completes; never, when no transfer runs.
    pub(crate) async fn next_event(&mut self) -> Event {
        match &mut self.stage {
            Stage::Idle => std::future::pending().await,
            Stage::Preparing(future) => Event::Prepared(future.await),
            Stage::Moving(future) => Event::Moved(future.await),
            Stage::Publishing(future) => Event::Published(future.await),
        }
    }

    /// The next stage's event if it is ready without waiting.
    pub(crate) fn ready_event(&mut self) -> Option<Event> {
        self.next_event().now_or_never()
    }

    /// Moves the transfer on by one stage. `control` is the control connection's socket
    /// (none when a failed TLS upgrade left it closed): an upload is published only while
    /// its client is there.
    pub(crate) fn advance(
        &mut self,
        event: Event,
        control: Option<BorrowedFd<'_>>,
        status: &SessionHandle,
    ) -> Step {
        self.stage = Stage::Idle;
        match event {
            Event::Prepared(Ok(prepared)) => {
                let outcome = Outcome::TransferStarted {
                    size: prepared.size,
                    stored_as: prepared.stored_as.clone(),
                };
                if let (Some(log), Some(stored_as)) = (&mut self.log, &prepared.stored_as) {
                    log.path = stored_as.clone();
                }
                self.quota_charge = prepared.upload_quota.clone().map(publish::QuotaCharge::new);
                let progress = self.progress.clone();
                self.stage = Stage::Moving(Box::pin(work::run(prepared, progress)));
                Step::Tell(outcome)
            }
            Event::Moved(Ok(Moved::Received { upload, bytes })) => {
                self.received = bytes;
                if let Some(running) = &mut self.running {
                    running.data_complete = Some(Instant::now());
                }
                self.publish(upload, control);
                Step::Continue
            }
            Event::Moved(Ok(Moved::Sent { bytes, leftovers })) => {
                // The 226 first; the log line and the closes once it is written.
                self.end_metrics(TransferResult::Ok, Some(bytes), status);
                self.after_reply = AfterReply {
                    log: self.log.take().map(|log| {
                        let duration = log.started.elapsed();
                        (log, bytes, duration)
                    }),
                    leftovers,
                };
                Step::Tell(finished(Ok(bytes)))
            }
            Event::Prepared(Err(failure)) | Event::Moved(Err(failure)) => {
                self.finish(Err(failure), status)
            }
            Event::Published(result) => self.published(result, status),
        }
    }

    /// ABOR: the outcome for the session, when a transfer was stopped.
    pub(crate) fn abort(&mut self, status: &SessionHandle) -> Option<Outcome> {
        match self.stage {
            // The data is all in; publishing it is quicker than arguing (RFC 959 §4.1.3:
            // a transfer already complete is answered 226). The session answers "226
            // Transfer complete, ABOR ignored".
            Stage::Publishing(_) | Stage::Idle => None,
            Stage::Preparing(_) | Stage::Moving(_) => {
                // Dropping the future closes the data connection; an upload is abandoned
                // (its previous version stays, its partial data is kept for a resume).
                self.stage = Stage::Idle;
                self.end(TransferEnd::Aborted, status);
                Some(finished(Err(TransferFailure::Aborted)))
            }
        }
    }

    /// The client closed the control connection. A publication under way finishes: its gate
    /// sees the close too, unless it had already found the client there when the upload was
    /// complete (then only the 226 has no one to go to). Anything else ends here.
    pub(crate) async fn client_gone(&mut self, status: &SessionHandle) {
        match std::mem::take(&mut self.stage) {
            Stage::Idle => {}
            Stage::Publishing(publication) => {
                let _ = self.published(publication.await, status);
            }
            _ => self.end(
                TransferEnd::Failed("client closed the control connection".to_owned()),
                status,
            ),
        }
    }

    /// The replies queued so far are written: a finished download's log line is written
    /// and its data connection, file and passive port are closed.
    pub(crate) fn after_reply_written(&mut self) {
        std::mem::take(&mut self.after_reply).run();
    }

    /// The control connection ended: what waited for a reply is done, and a transfer cut by
    /// the connection's own end (a failed write) is counted as failed.
    pub(crate) fn connection_ended(&mut self, status: &SessionHandle) {
        self.after_reply_written();
        self.end_metrics(TransferResult::Failed, None, status);
    }

    /// The transfer ended with `result`: logged, counted, and the outcome for the session.
    fn finish(&mut self, result: Result<u64, TransferFailure>, status: &SessionHandle) -> Step {
        let end = match &result {
            Ok(bytes) => TransferEnd::Complete(*bytes),
            Err(TransferFailure::Aborted) => TransferEnd::Aborted,
            Err(failure) => TransferEnd::Failed(format!("{failure:?}")),
        };
        self.end(end, status);
        Step::Tell(finished(result))
    }

    /// Counts the transfer in the metrics, takes it off the status and writes its log.
    fn end(&mut self, end: TransferEnd, status: &SessionHandle) {
        match &end {
            TransferEnd::Complete(bytes) => {
                self.end_metrics(TransferResult::Ok, Some(*bytes), status);
            }
            TransferEnd::Aborted => self.end_metrics(TransferResult::Aborted, None, status),
            TransferEnd::Failed(_) => self.end_metrics(TransferResult::Failed, None, status),
        }
        if let Some(log) = self.log.take() {
            let duration = log.started.elapsed();
            log.write(end, duration);
        }
    }

    /// The running transfer is over for the metrics (with `bytes`, or the bytes moved so
    /// far) and the status. Nothing when no transfer runs.
    fn end_metrics(&mut self, result: TransferResult, bytes: Option<u64>, status: &SessionHandle) {
        let Some(running) = self.running.take() else {
            return;
        };
        status.end_transfer();
        telemetry::transfer_finished(
            running.direction,
            result,
            bytes.unwrap_or_else(|| self.progress.bytes()),
            running.started.elapsed(),
            running.metrics_user.as_deref(),
        );
    }
}

/// The session's outcome for a transfer that ended with `result`.
fn finished(result: Result<u64, TransferFailure>) -> Outcome {
    Outcome::TransferFinished(result.map(|bytes| TransferSummary { bytes }))
}
