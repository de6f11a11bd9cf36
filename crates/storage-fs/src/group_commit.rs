//! Group commit: the uploads that become durable at the same time share one flush.
//!
//! A durable upload waits for two flushes, its data before the rename and the rename after
//! it (docs/uploads.md). On a disk one flush costs milliseconds whatever it carries, so
//! sessions that publish at the same time each paying their own is what limits many small
//! uploads. Here an upload that needs a flush while another is running waits for it to end
//! and then for one more, started by one of the waiters on behalf of all of them:
//! `syncfs(2)` of the filesystem, which writes back and flushes everything dirty on it, so
//! every waiter's data and renames are covered. Alone (no one else waiting), an upload syncs
//! only its own file or directory, as without the group: `syncfs` would also wait for
//! unrelated dirty data, such as a large upload's pages still being written.
//!
//! Each upload's 226 still waits for its own data and name to be durable: a flush covers a
//! request only if it started after the request was made.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use rustix::io::Errno;

/// What an upload needs durable.
#[derive(Clone, Copy)]
pub(crate) enum Durable<'a> {
    /// A file's data and size (`fsync` of the file).
    Data(&'a File),
    /// The entries of a directory, a rename into it (`fsync` of the directory).
    Names(&'a OwnedFd),
}

impl Durable<'_> {
    /// Blocking: syncs this, sharing the flush with `group`'s other uploads if given.
    pub(crate) fn sync_in(self, group: Option<&GroupCommit>) -> io::Result<()> {
        match group {
            Some(group) => group.sync(self),
            None => self.sync_alone(),
        }
    }

    /// Syncs just this.
    fn sync_alone(self) -> io::Result<()> {
        match self {
            Self::Data(file) => file.sync_all(),
            Self::Names(directory) => rustix::fs::fsync(directory).map_err(io::Error::from),
        }
    }
}

/// The flushes of one filesystem, shared by the uploads on it.
pub(crate) struct GroupCommit {
    /// A directory on the filesystem, for `syncfs`.
    filesystem: OwnedFd,
    /// Its device number: only uploads on it join the group.
    device: u64,
    state: Mutex<Flushes>,
    flushed: Condvar,
}

/// Flushes are numbered; a request is covered by the first one that starts after it.
#[derive(Default)]
struct Flushes {
    started: u64,
    finished: u64,
    /// A flush is running (the last one started has not finished).
    running: bool,
    /// Requests not yet answered, the running flush's included.
    waiting: usize,
    /// The last flush that failed, and how: its requests fail, even if a later one
    /// succeeds (the kernel reports a writeback error only once).
    failed: Option<(u64, Errno)>,
}

impl GroupCommit {
    /// The group of the filesystem `directory` is on.
    pub(crate) fn new(directory: OwnedFd) -> io::Result<Self> {
        let device = rustix::fs::fstat(&directory)?.st_dev;
        Ok(Self {
            filesystem: directory,
            device,
            state: Mutex::new(Flushes::default()),
            flushed: Condvar::new(),
        })
    }

    /// Whether a file whose `st_dev` is `device` is on this group's filesystem.
    pub(crate) fn covers(&self, device: u64) -> bool {
        self.device == device
    }

    /// Blocking: returns once `what` (on this group's filesystem) is durable.
    pub(crate) fn sync(&self, what: Durable<'_>) -> io::Result<()> {
        let mut state = self.lock();
        // A flush already running may have started before the caller's writes ended.
        let covering = state.started + 1;
        state.waiting += 1;
        loop {
            if state.finished >= covering {
                state.waiting -= 1;
                return match state.failed {
                    Some((flush, errno)) if flush >= covering => Err(errno.into()),
                    _ => Ok(()),
                };
            }
            if !state.running {
                // The previous flush ended before ours started: this caller runs it, for
                // everyone waiting now.
                state.running = true;
                state.started += 1;
                let flush = state.started;
                let alone = state.waiting == 1;
                drop(state);
                let result = if alone {
                    what.sync_alone()
                } else {
                    rustix::fs::syncfs(&self.filesystem).map_err(io::Error::from)
                };
                state = self.lock();
                state.running = false;
                state.finished = flush;
                state.waiting -= 1;
                if let Err(error) = &result
                    && !alone
                {
                    state.failed = Some((flush, Errno::from_io_error(error).unwrap_or(Errno::IO)));
                }
                drop(state);
                self.flushed.notify_all();
                return result;
            }
            state = self
                .flushed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Flushes> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::sync::Arc;

    use super::*;

    fn group_in(directory: &std::path::Path) -> GroupCommit {
        let fd = rustix::fs::open(
            directory,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        GroupCommit::new(fd).unwrap()
    }

    #[test]
    fn one_caller_syncs_its_own_file_and_directory() {
        let directory = tempfile::tempdir().unwrap();
        let group = group_in(directory.path());
        let mut file = File::create(directory.path().join("a")).unwrap();
        file.write_all(b"data").unwrap();
        group.sync(Durable::Data(&file)).unwrap();
        let names = rustix::fs::open(
            directory.path(),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        group.sync(Durable::Names(&names)).unwrap();
        let state = group.lock();
        assert_eq!((state.started, state.finished, state.waiting), (2, 2, 0));
        assert!(!state.running);
    }

    #[test]
    fn callers_at_once_all_return_and_share_flushes() {
        let directory = tempfile::tempdir().unwrap();
        let group = Arc::new(group_in(directory.path()));
        let callers = 8;
        let rounds = 20;
        let threads: Vec<_> = (0..callers)
            .map(|caller| {
                let group = Arc::clone(&group);
                let path = directory.path().join(format!("f{caller}"));
                std::thread::spawn(move || {
                    let mut file = File::create(path).unwrap();
                    for _ in 0..rounds {
                        file.write_all(b"more").unwrap();
                        group.sync(Durable::Data(&file)).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let state = group.lock();
        assert_eq!(state.waiting, 0);
        assert!(!state.running);
        assert_eq!(state.started, state.finished);
        assert!(state.finished <= callers * rounds);
        assert!(state.failed.is_none());
    }

    #[test]
    fn a_failed_shared_flush_fails_the_requests_it_covered_only() {
        let directory = tempfile::tempdir().unwrap();
        let group = Arc::new(group_in(directory.path()));
        let file = File::create(directory.path().join("a")).unwrap();
        // Flush 1 runs (as another caller's would): a request now waits for flush 2.
        {
            let mut state = group.lock();
            state.started = 1;
            state.running = true;
            state.waiting = 1;
        }
        let waiter = {
            let group = Arc::clone(&group);
            let file = file.try_clone().unwrap();
            std::thread::spawn(move || group.sync(Durable::Data(&file)))
        };
        while group.lock().waiting < 2 {
            std::thread::yield_now();
        }
        // Flushes 1 and 2 end (2 run by a third caller) and flush 2 failed.
        {
            let mut state = group.lock();
            state.started = 2;
            state.finished = 2;
            state.running = false;
            state.waiting -= 1;
            state.failed = Some((2, Errno::IO));
        }
        group.flushed.notify_all();
        let error = waiter.join().unwrap().unwrap_err();
        assert_eq!(error.raw_os_error(), Some(Errno::IO.raw_os_error()));
        // A later request is covered by a later flush: the old failure is not its.
        group.sync(Durable::Data(&file)).unwrap();
        assert_eq!(group.lock().finished, 3);
    }
}
