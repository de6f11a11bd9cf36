//! Publishing an upload: the rule "the client must still be there when its upload is
//! complete", in one place. An upload whose data is all in is made durable, then published
//! only if its client is still connected and its quota has room — the [`PublishGate`] built
//! here, which the storage asks in the same hand-off as its fsync and rename
//! ([`Upload::publish_if`]); otherwise it stays partial and the previous version stays whole
//! (docs/uploads.md).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ferroftp_backend::{PublishGate, Published, StorageError, Upload, Withheld};
use ferroftp_proto::session::TransferFailure;
use ferroftp_proto::{Escaped, StorageErrorKind};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tracing::warn;

use super::log::TransferEnd;
use super::{Stage, Step, Transfer};
use crate::connection::LOG_TARGET;
use crate::quota::UploadQuota;
use crate::status::SessionHandle;
use crate::telemetry;

/// How long after an upload's data connection ended its control connection must still be
/// open for the upload to be published. A client killed mid-upload closes both connections,
/// the data connection first (an orderly FIN, which stream mode takes for end-of-file), its
/// control connection a little later: microseconds apart in the dying process, unless it
/// loses its CPU in between. Without this wait a truncated file replaced the previous
/// version (5 of 40 killed clients without fsync). A heuristic, as stream mode's end of
/// file is (RFC 959 §3.4.1): on a host whose CPUs are all busy the dying process may wait
/// longer than this between its two closes (seen with two busy loops on two cores beside a
/// local client, 2 runs of 8 × 40 kills). With fsync on a disk, the fsync usually takes
/// longer than this already and nothing is added. docs/uploads.md.
const CLIENT_GONE_GRACE: Duration = Duration::from_millis(1);

/// The control connection's socket, duplicated once per session so that the gate can look
/// at it from whichever thread publishes the upload while the control loop keeps reading it.
#[derive(Clone)]
pub(crate) struct ControlProbe(Arc<OwnedFd>);

impl ControlProbe {
    pub(crate) fn of(socket: impl AsFd) -> io::Result<Self> {
        Ok(Self(Arc::new(rustix::io::fcntl_dupfd_cloexec(socket, 0)?)))
    }

    /// Whether the client is still there, now, without waiting. Gone is the peer's FIN
    /// (`POLLRDHUP`) or a reset or error (`POLLHUP`, `POLLERR`, always reported); bytes
    /// waiting (a command) do not count, since a killed client may have sent them before it
    /// died.
    fn client_there(&self) -> bool {
        let closed = PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR;
        loop {
            let mut watched = [PollFd::new(&*self.0, PollFlags::RDHUP)];
            match rustix::event::poll(&mut watched, Some(&Timespec::default())) {
                Ok(0) => return true,
                Ok(_) => return !watched[0].revents().intersects(closed),
                Err(rustix::io::Errno::INTR) => {}
                // Cannot tell (a descriptor the kernel refuses): the safe side, kept partial.
                Err(_) => return false,
            }
        }
    }
}

/// The end of the client-gone grace, awaited on the session's own event loop: a timerfd the
/// loop watches, made when a session first needs it. tokio's timer would round the
/// millisecond of the grace up to the next millisecond tick, 1 to 2 ms in all; a timerfd
/// wakes within microseconds of its deadline.
#[derive(Clone, Default)]
pub(crate) struct GraceTimer(Arc<OnceLock<Option<AsyncFd<OwnedFd>>>>);

impl GraceTimer {
    /// Resolves at `deadline` (at once if it passed). Must run on the session's event loop,
    /// where the timer is registered.
    async fn until(self, deadline: Instant) {
        let timer = self.0.get_or_init(|| match Self::create() {
            Ok(timer) => Some(timer),
            Err(error) => {
                warn!(target: LOG_TARGET, %error, "creating the grace timer failed");
                None
            }
        });
        let waited = match timer {
            Some(timer) => Self::wait(timer, deadline).await,
            None => Err(io::ErrorKind::Unsupported.into()),
        };
        // Without the timer, tokio's coarser one: later, never earlier.
        if waited.is_err() {
            tokio::time::sleep_until(deadline.into()).await;
        }
    }

    #[allow(unsafe_code)] // registering the timer with the event loop, proven sound below
    fn create() -> io::Result<AsyncFd<OwnedFd>> {
        let flags = TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC;
        let timer = rustix::time::timerfd_create(TimerfdClockId::Monotonic, flags)?;
        // SAFETY: `register_with_interest` requires that the descriptor stay open and name
        // the same file description for the whole life of the `AsyncFd`. The `OwnedFd` is
        // moved into the `AsyncFd`, which owns it alone: nothing else can close it or put
        // another file behind its number, `OwnedFd::as_raw_fd` always returns the same
        // number, and it is closed only when the `AsyncFd` drops it, after deregistering.
        unsafe { AsyncFd::register_with_interest(timer, Interest::READABLE) }
            .map_err(io::Error::from)
    }

    async fn wait(timer: &AsyncFd<OwnedFd>, deadline: Instant) -> io::Result<()> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(());
        }
        let once = Itimerspec {
            it_interval: Timespec::default(),
            it_value: Timespec::try_from(remaining)
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?,
        };
        // Arming it again also clears an expiry an earlier, abandoned wait left behind.
        rustix::time::timerfd_settime(timer, TimerfdTimerFlags::empty(), &once)?;
        loop {
            let mut ready = timer.readable().await?;
            let mut expirations = [0u8; 8];
            // Not yet expired (a readiness left from before the arming): `try_io` clears
            // it on EAGAIN and the loop waits again.
            if let Ok(read) = ready.try_io(|timer| {
                rustix::io::read(timer.get_ref(), &mut expirations).map_err(io::Error::from)
            }) {
                // The read emptied the timer: without this the next wait would find the
                // readiness still set and pay a read that fails with EAGAIN first.
                ready.clear_ready();
                return read.map(drop);
            }
        }
    }
}

/// The upload's charge against its account's quota, made by the gate and settled when the
/// publication ended.
pub(super) struct QuotaCharge {
    quota: Box<UploadQuota>,
    charged: Arc<AtomicBool>,
}

impl QuotaCharge {
    pub(super) fn new(quota: Box<UploadQuota>) -> Self {
        Self {
            quota,
            charged: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Transfer {
    /// The upload's data is all in: from here on the storage makes it durable and publishes
    /// it behind the gate, in one stage the control loop only waits for.
    pub(super) fn publish(&mut self, upload: Box<dyn Upload>, control: Option<BorrowedFd<'_>>) {
        let deadline = Instant::now() + CLIENT_GONE_GRACE;
        if self.control_probe.is_none()
            && let Some(socket) = control
        {
            match ControlProbe::of(socket) {
                Ok(probe) => self.control_probe = Some(probe),
                Err(error) => {
                    warn!(target: LOG_TARGET, %error, "watching the control connection failed");
                }
            }
        }
        let probe = self.control_probe.clone();
        let received = self.received;
        let gate_charge = self
            .quota_charge
            .as_ref()
            .map(|charge| (charge.quota.clone(), Arc::clone(&charge.charged)));
        let gate = PublishGate::new(move || {
            // A stream left closed by a failed upgrade has no client behind it; without a
            // probe (no descriptor left for it, which the descriptor budget makes rare)
            // nothing can tell: the safe side, the upload stays partial.
            if !probe.is_some_and(|probe| probe.client_there()) {
                return Err(Withheld::ClientGone);
            }
            // Charged right before publishing, atomically for the account: two sessions
            // that each fit alone cannot together publish past the quota.
            if let Some((quota, charged)) = gate_charge {
                if !quota.charge(received) {
                    return Err(Withheld::QuotaExceeded);
                }
                charged.store(true, Ordering::Release);
            }
            Ok(())
        })
        .not_before(deadline, self.grace_timer.clone().until(deadline));
        self.stage = Stage::Publishing(Box::pin(upload.publish_if(gate)));
    }

    /// The publication ended: 226, the client gone (the connection ends), or 451/552.
    pub(super) fn published(
        &mut self,
        result: Result<Published, StorageError>,
        status: &SessionHandle,
    ) -> Step {
        let received = self.received;
        match result {
            Ok(Published::Published(size)) => {
                self.settle_quota(Some(size));
                if let Some(data_complete) = self
                    .running
                    .as_ref()
                    .and_then(|running| running.data_complete)
                {
                    telemetry::upload_committed(data_complete.elapsed());
                }
                self.finish(Ok(received), status)
            }
            Ok(Published::Withheld(Withheld::ClientGone)) => {
                self.settle_quota(None);
                self.end(
                    TransferEnd::Failed("client gone, upload kept as partial".to_owned()),
                    status,
                );
                Step::ClientGone
            }
            Ok(Published::Withheld(Withheld::QuotaExceeded)) => {
                self.settle_quota(None);
                let failure = TransferFailure::Storage(StorageErrorKind::QuotaExceeded);
                self.finish(Err(failure), status)
            }
            Err(error) => {
                self.settle_quota(None);
                warn!(target: LOG_TARGET, error = %Escaped(&error), "publishing upload failed");
                self.finish(Err(TransferFailure::Storage(error.kind)), status)
            }
        }
    }

    /// After a publication: a charge the gate made follows the published size, or is given
    /// back when nothing was published.
    pub(super) fn settle_quota(&mut self, published_size: Option<u64>) {
        let Some(QuotaCharge { quota, charged }) = self.quota_charge.take() else {
            return;
        };
        if !charged.load(Ordering::Acquire) {
            return;
        }
        match published_size {
            Some(size) => quota.correct(self.received, size),
            None => quota.refund(self.received),
        }
    }
}
