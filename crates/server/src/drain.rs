//! Graceful shutdown: the phases a server goes through after SIGTERM, and the count of
//! sessions it waits for.
//!
//! ```text
//! Serving ──drain──► Draining ──grace over / second signal──► Stopping
//!                    idle sessions: 421, closed         running transfers: 426, 421
//!                    transfers: finish, 226, 421        every session closed
//! ```
//!
//! Every session watches the phase (a `watch` channel, so sessions on any session thread see
//! it) and holds a [`SessionGuard`] that counts it as open until it ends.

use tokio::sync::watch;

/// Where the server is in its shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Accepting and serving.
    Serving,
    /// No new connections; sessions end after what they are doing.
    Draining,
    /// The grace period is over: running transfers are aborted.
    Stopping,
}

/// The phase, and the open sessions, of one server (shared by every configuration
/// generation: a reload does not restart the count).
#[derive(Debug)]
pub(crate) struct Drain {
    phase: watch::Sender<Phase>,
    sessions: watch::Sender<usize>,
    /// Counts configuration reloads (SIGHUP): open sessions then check their account again,
    /// idle ones included.
    reloads: watch::Sender<u64>,
}

/// What an open session hears from the server besides its socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ServerSignal {
    /// The shutdown moved on.
    Phase(Phase),
    /// The configuration was reloaded.
    Reloaded,
}

impl Drain {
    pub(crate) fn new() -> Self {
        Self {
            phase: watch::Sender::new(Phase::Serving),
            sessions: watch::Sender::new(0),
            reloads: watch::Sender::new(0),
        }
    }

    /// Tells every open session that the configuration was reloaded.
    pub(crate) fn reloaded(&self) {
        self.reloads.send_modify(|count| *count += 1);
    }

    /// Counts a session as open until the guard is dropped; the guard tells it when the
    /// phase changes.
    pub(crate) fn session(self: &std::sync::Arc<Self>) -> SessionGuard {
        self.sessions.send_modify(|open| *open += 1);
        let mut phase = self.phase.subscribe();
        if *phase.borrow() != Phase::Serving {
            // Accepted just before the drain began: it must hear of it too.
            phase.mark_changed();
        }
        SessionGuard {
            drain: std::sync::Arc::clone(self),
            phase,
            reloads: self.reloads.subscribe(),
        }
    }

    /// The count of open sessions, to watch it change.
    pub(crate) fn watch_sessions(&self) -> watch::Receiver<usize> {
        self.sessions.subscribe()
    }

    /// Sessions open now.
    pub(crate) fn open_sessions(&self) -> usize {
        *self.sessions.borrow()
    }

    pub(crate) fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Moves on to `phase` (never back).
    pub(crate) fn advance(&self, phase: Phase) {
        self.phase.send_if_modified(|current| {
            let later = matches!(
                (*current, phase),
                (Phase::Serving, Phase::Draining | Phase::Stopping)
                    | (Phase::Draining, Phase::Stopping)
            );
            if later {
                *current = phase;
            }
            later
        });
    }

    /// Completes once no session is open.
    pub(crate) async fn all_sessions_ended(&self) {
        let mut sessions = self.sessions.subscribe();
        let _ = sessions.wait_for(|open| *open == 0).await;
    }
}

/// One open session's place in the count, and its view of the phase.
#[derive(Debug)]
pub(crate) struct SessionGuard {
    drain: std::sync::Arc<Drain>,
    phase: watch::Receiver<Phase>,
    reloads: watch::Receiver<u64>,
}

impl SessionGuard {
    /// The next phase or reload; never completes while the server keeps serving unchanged.
    pub(crate) async fn next_signal(&mut self) -> ServerSignal {
        tokio::select! {
            phase = next_phase(&mut self.phase) => ServerSignal::Phase(phase),
            () = next_reload(&mut self.reloads) => ServerSignal::Reloaded,
        }
    }

    /// The next phase the server moves to; never completes while it keeps serving.
    #[cfg(test)]
    pub(crate) async fn next_phase(&mut self) -> Phase {
        next_phase(&mut self.phase).await
    }
}

async fn next_phase(phase: &mut watch::Receiver<Phase>) -> Phase {
    if phase.changed().await.is_err() {
        // The server is gone without a shutdown (a test dropping it): nothing to wait for.
        return std::future::pending().await;
    }
    *phase.borrow_and_update()
}

async fn next_reload(reloads: &mut watch::Receiver<u64>) {
    if reloads.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.drain.sessions.send_modify(|open| *open -= 1);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn sessions_hear_each_phase_once_and_are_counted() {
        let drain = Arc::new(Drain::new());
        let mut first = drain.session();
        assert_eq!(drain.open_sessions(), 1);
        drain.advance(Phase::Draining);
        assert_eq!(first.next_phase().await, Phase::Draining);
        // A session accepted after the drain began hears of it at once.
        let mut late = drain.session();
        assert_eq!(late.next_phase().await, Phase::Draining);
        drain.advance(Phase::Serving);
        assert_eq!(drain.phase(), Phase::Draining, "phases never go back");
        drain.advance(Phase::Stopping);
        assert_eq!(first.next_phase().await, Phase::Stopping);
        drop(first);
        drop(late);
        assert_eq!(drain.open_sessions(), 0);
        drain.all_sessions_ended().await;
    }

    #[tokio::test]
    async fn sessions_hear_of_each_reload() {
        let drain = Arc::new(Drain::new());
        let mut session = drain.session();
        drain.reloaded();
        assert_eq!(session.next_signal().await, ServerSignal::Reloaded);
        drain.advance(Phase::Draining);
        assert_eq!(
            session.next_signal().await,
            ServerSignal::Phase(Phase::Draining)
        );
    }
}
