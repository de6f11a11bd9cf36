//! The file-descriptor budget: new sessions are refused with 421 while the descriptors left
//! would not let every open session make its next transfer.
//!
//! Out of descriptors, `accept` fails with `EMFILE` and the connection stays in the kernel's
//! queue, unanswered, while the sessions already open fail too: their next passive listener,
//! data connection or file cannot be opened. So the accept loops refuse new sessions early:
//!
//! - a session may hold [`DESCRIPTORS_PER_SESSION`] descriptors (its control connection; a
//!   passive listener or data connection; a file; for an upload into a local directory also
//!   that directory, and from its first upload on the control connection's probe and, on a
//!   root in memory, the grace timer: `transfer/publish.rs`) — counted for every open session,
//!   busy or not, so that each can make its next transfer;
//! - [`RESERVE`] more stay free for everything else: the moment a passive listener and its
//!   data connection overlap, refusing a connection (its socket until the 421 is written),
//!   log files reopened, the users file and certificates read again, admin requests;
//! - so at most `(RLIMIT_NOFILE soft limit − descriptors open at start − RESERVE) /
//!   DESCRIPTORS_PER_SESSION` sessions are open at once, whatever `max_sessions` says
//!   ([`session_cap`]), measured when the server starts running.
//!
//! Should the table fill up anyway (another part of the process, a lower limit set from
//! outside), each accept loop keeps one spare descriptor ([`SpareDescriptor`]): on `EMFILE`
//! it closes it, accepts the waiting connection, answers it 421, closes it and opens the
//! spare again, so that no client waits in the queue.

use std::fs::File;
use std::io;

use tokio::net::TcpListener;
use tracing::warn;

/// Descriptors counted per open session: control connection, passive listener or data
/// connection, file; and what an upload adds: the file's directory, the control probe, the
/// grace timer. Counting only the first three let every session at the limit fail its
/// uploads with "Too many open files" (measured: 2 of 23 sessions at 128 descriptors, every
/// one of 67 at 256).
pub const DESCRIPTORS_PER_SESSION: usize = 6;

/// Descriptors kept free beyond the sessions' share.
pub(crate) const RESERVE: usize = 32;

/// The 421 of a connection refused for lack of descriptors.
pub(crate) const REFUSAL: &[u8] = b"421 Server busy (out of file descriptors), try later\r\n";

/// Most sessions the descriptors allow: `limit` the soft RLIMIT_NOFILE (`None`: unlimited),
/// `in_use` the descriptors open now (before any session).
pub(crate) fn sessions_for(limit: Option<u64>, in_use: usize) -> usize {
    let Some(limit) = limit else {
        return usize::MAX;
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    limit.saturating_sub(in_use).saturating_sub(RESERVE) / DESCRIPTORS_PER_SESSION
}

/// [`sessions_for`] this process now: its soft limit and its open descriptors (counted in
/// `/proc/self/fd`; where that cannot be read, the budget is not enforced).
pub(crate) fn session_cap() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    match std::fs::read_dir("/proc/self/fd") {
        // The directory's own descriptor is listed too: one more than will stay open.
        Ok(entries) => sessions_for(limit, entries.count().saturating_sub(1)),
        Err(_) => usize::MAX,
    }
}

/// One descriptor an accept loop holds in reserve to answer a connection when the table is
/// full (see the module docs).
#[derive(Debug)]
pub(crate) struct SpareDescriptor(Option<File>);

impl SpareDescriptor {
    pub(crate) fn open() -> Self {
        Self(File::open("/dev/null").ok())
    }

    /// After `accept` failed with `error`: if the table is full, frees the spare, answers the
    /// waiting connection with 421 and closes it, then takes the spare again. `true` when it
    /// did (the caller accepts on at once), `false` for other errors.
    pub(crate) async fn refuse_one(&mut self, listener: &TcpListener, error: &io::Error) -> bool {
        let full = matches!(
            error.raw_os_error(),
            Some(code) if code == rustix::io::Errno::MFILE.raw_os_error()
                || code == rustix::io::Errno::NFILE.raw_os_error()
        );
        if !full || self.0.take().is_none() {
            self.0 = self.0.take().or_else(|| File::open("/dev/null").ok());
            return false;
        }
        // The freed descriptor goes to the connection: waiting is immediate (it is queued).
        if let Ok(Ok((stream, peer))) =
            tokio::time::timeout(std::time::Duration::from_millis(100), listener.accept()).await
        {
            warn!(%peer, "session refused: out of file descriptors");
            let _ = stream.try_write(REFUSAL);
            drop(stream);
        }
        self.0 = File::open("/dev/null").ok();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_descriptors_per_session_and_a_reserve() {
        assert_eq!(sessions_for(Some(64), 20), 2);
        assert_eq!(sessions_for(Some(1024), 40), 158);
        assert_eq!(sessions_for(Some(40), 20), 0);
        assert_eq!(sessions_for(None, 20), usize::MAX);
    }
}
