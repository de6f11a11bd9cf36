//! Sessions on threads of their own: each thread runs a single-threaded tokio runtime with its
//! own event loop, accepts connections itself, and keeps every session it accepted for the
//! session's whole life.
//!
//! Why not tokio's work-stealing runtime: an FTP session is a chain of short steps, and the
//! steps of an upload go to the blocking pool and back (creating the partial file, publishing
//! it). On the work-stealing runtime a step's wake-up could land on the other worker, which
//! then woke its sibling to take over the event loop, and the session moved between threads
//! several times per file (docs/BENCHMARKS.md, "Session threads"). Here a session is woken by
//! its own thread's event loop only, and a blocking job's completion wakes that one loop.
//!
//! Every thread accepts on every listener (each registers the same listening socket with its
//! event loop), so a connection goes to whichever thread gets to it first, the one least
//! busy at that moment, and it is never handed from one event loop to another: a hand-off
//! costs a wake-up of the receiving thread and two `epoll_ctl` calls per connection, which
//! made connect-and-login 10 % slower than accepting in place (measured). Sessions do not
//! move once accepted, which suits FTP: a transfer's heavy work is in the kernel (`sendfile`)
//! or on the blocking pool (disk writes), not on its session's thread.

use std::future::Future;
use std::io;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Threads that run sessions; see the module documentation and
/// [`Server::with_session_threads`](crate::Server::with_session_threads). Dropping it stops
/// the threads: their sessions end as they do when a runtime shuts down (uploads keep their
/// partial files).
#[derive(Debug)]
pub struct SessionThreads {
    threads: Vec<SessionThread>,
}

#[derive(Debug)]
struct SessionThread {
    runtime: Handle,
    /// Dropped to stop the thread.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SessionThreads {
    /// Starts `count` threads (at least one), named `ferroftp-session-N`.
    pub fn start(count: usize) -> io::Result<Self> {
        let threads = (0..count.max(1))
            .map(SessionThread::start)
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self { threads })
    }

    /// How many threads run sessions.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Always false: there is at least one thread.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Runs a future made by `task` on each thread. The future runs only on its thread, so
    /// what it registers when first polled (a listening socket) belongs to that thread's
    /// event loop.
    pub(crate) fn spawn_on_each<Task, Running>(
        &self,
        task: Task,
    ) -> Vec<tokio::task::JoinHandle<()>>
    where
        Task: Fn() -> Running,
        Running: Future<Output = ()> + Send + 'static,
    {
        self.threads
            .iter()
            .map(|thread| thread.runtime.spawn(task()))
            .collect()
    }
}

impl SessionThread {
    fn start(index: usize) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            // Names its blocking pool's threads, which create, write and publish files.
            .thread_name(format!("ferroftp-blocking-{index}"))
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("ferroftp-session-{index}"))
            .spawn(move || {
                // A single-threaded runtime runs its tasks only inside `block_on`: the thread
                // lives until it is told to stop.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Self {
            runtime: handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for SessionThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // Returns once the runtime has dropped its sessions and finished its blocking jobs.
            let _ = thread.join();
        }
    }
}
