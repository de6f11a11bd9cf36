//! Password verification on a few dedicated threads that keep their argon2 memory.
//!
//! argon2id needs its memory cost (19 MiB with the default parameters) for every
//! verification. Allocated and freed per login, that memory is not reliably returned to the
//! system by glibc (its mmap threshold adapts upwards after the first free), and a server
//! that had verified a few hundred logins held gigabytes. Here each worker thread owns one
//! block buffer for its whole life, so verification memory is bounded by
//! `workers × memory cost`, and no login pays the page faults of a fresh 19 MiB allocation.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;

/// A job for a worker: runs with the worker's reusable argon2 memory.
type Job = Box<dyn FnOnce(&mut ArgonMemory) + Send>;

/// Logins that may wait for a worker; beyond this the login is refused as unavailable (421)
/// instead of queueing without bound.
const MAX_WAITING: usize = 4096;

/// A worker's reusable argon2 block memory.
#[derive(Default)]
pub(crate) struct ArgonMemory {
    blocks: Vec<Block>,
}

impl ArgonMemory {
    /// Checks `password` against a PHC string; `false` for a wrong password and for a string
    /// that is not a valid argon2 hash.
    pub(crate) fn verify(&mut self, phc: &str, password: &str) -> bool {
        self.try_verify(phc, password).unwrap_or(false)
    }

    fn try_verify(&mut self, phc: &str, password: &str) -> Option<bool> {
        let hash = PasswordHash::new(phc).ok()?;
        let algorithm = Algorithm::try_from(hash.algorithm).ok()?;
        let version = match hash.version {
            Some(number) => Version::try_from(number).ok()?,
            None => Version::default(),
        };
        let params = Params::try_from(&hash).ok()?;
        let expected = hash.hash?;
        let mut salt = [0u8; 64];
        let salt = hash.salt?.decode_b64(&mut salt).ok()?;
        let block_count = params.block_count();
        if self.blocks.len() != block_count {
            self.blocks = vec![Block::default(); block_count];
        }
        let mut computed = vec![0u8; expected.len()];
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(
                password.as_bytes(),
                salt,
                &mut computed,
                &mut self.blocks,
            )
            .ok()?;
        // `Output`'s equality is constant-time.
        let computed = argon2::password_hash::Output::new(&computed).ok()?;
        Some(computed == expected)
    }
}

/// A fixed set of verification threads fed through a bounded queue.
pub(crate) struct PasswordVerifier {
    jobs: SyncSender<Job>,
}

impl PasswordVerifier {
    /// Starts `workers` threads (at least one). They end when the verifier is dropped.
    pub(crate) fn start(workers: usize) -> Self {
        let (jobs, receiver) = mpsc::sync_channel::<Job>(MAX_WAITING);
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..workers.max(1) {
            let receiver = Arc::clone(&receiver);
            let spawned = std::thread::Builder::new()
                .name(format!("ferroftp-verify-{index}"))
                .spawn(move || work(&receiver));
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a password verification thread");
            }
        }
        Self { jobs }
    }

    /// Runs `check` on a worker with its argon2 memory and returns its result; `None` when
    /// the queue is full or the workers are gone.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        check: impl FnOnce(&mut ArgonMemory) -> T + Send + 'static,
    ) -> Option<T> {
        let (sender, receiver) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            // Nobody waits any more (the login gave up: its client left, or its address was
            // banned meanwhile): no argon2 for it.
            if sender.is_closed() {
                return;
            }
            let _ = sender.send(check(memory));
        });
        match self.jobs.try_send(job) {
            Ok(()) => receiver.await.ok(),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => None,
        }
    }
}

fn work(receiver: &Mutex<Receiver<Job>>) {
    let mut memory = ArgonMemory::default();
    loop {
        // The lock is held only while taking one job, never while verifying.
        let job = match receiver.lock() {
            Ok(guard) => guard.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        match job {
            Ok(job) => job(&mut memory),
            Err(_) => return, // the verifier was dropped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash_password;

    #[test]
    fn verifies_with_reused_memory() {
        let hash = hash_password("right");
        let mut memory = ArgonMemory::default();
        assert!(memory.verify(&hash, "right"));
        assert!(!memory.verify(&hash, "wrong"));
        assert!(memory.verify(&hash, "right"));
        assert!(!memory.verify("not a hash", "right"));
    }

    #[tokio::test]
    async fn workers_answer_jobs() {
        let verifier = PasswordVerifier::start(2);
        let hash = hash_password("pw");
        let results = futures_join(&verifier, &hash).await;
        assert_eq!(results, [true, false]);
    }

    /// A job whose login gave up while it was queued is skipped: no argon2 for nobody.
    #[tokio::test]
    async fn a_job_nobody_waits_for_is_skipped() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let verifier = PasswordVerifier::start(1);
        // The one worker is busy until `release` is sent.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let busy = verifier.run(move |_| held.recv().is_ok());
        tokio::pin!(busy);
        assert!(poll_once(&mut busy).await.is_none());
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        // Boxed, so that dropping it drops the future (and its answer's receiver).
        let mut given_up = Box::pin(verifier.run(move |_| flag.store(true, Ordering::Relaxed)));
        assert!(poll_once(&mut given_up).await.is_none());
        drop(given_up);
        release.send(()).unwrap();
        assert_eq!(busy.await, Some(true));
        // Jobs run in order: once a later one answered, the given-up one was skipped.
        assert_eq!(verifier.run(|_| 7).await, Some(7));
        assert!(!ran.load(Ordering::Relaxed));
    }

    /// Polls `future` once: `Some` when it completed.
    async fn poll_once<F: std::future::Future + Unpin>(future: &mut F) -> Option<F::Output> {
        std::future::poll_fn(|context| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut *future).poll(context) {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }

    async fn futures_join(verifier: &PasswordVerifier, hash: &str) -> [bool; 2] {
        let (first, second) = (hash.to_owned(), hash.to_owned());
        let a = verifier.run(move |memory| memory.verify(&first, "pw"));
        let b = verifier.run(move |memory| memory.verify(&second, "nope"));
        let (a, b) = tokio::join!(a, b);
        [a.unwrap(), b.unwrap()]
    }
}
