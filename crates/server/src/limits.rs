//! Session caps: a global maximum and a per-client-IP maximum, answered with 421 by the
//! listener before any session state exists.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Counts open sessions, globally and per client IP.
#[derive(Debug)]
pub(crate) struct SessionLimiter {
    /// Changed by a reload; sessions over a lowered cap stay, new ones wait for room.
    max_sessions: AtomicUsize,
    max_sessions_per_ip: AtomicUsize,
    /// What the file-descriptor budget allows (`descriptors.rs`), set when the server starts
    /// running.
    max_sessions_for_descriptors: AtomicUsize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a session was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitExceeded {
    Global,
    PerIp,
    /// Another session would eat into the descriptors open sessions need.
    Descriptors,
}

/// Holds one session's place; the place is released when it is dropped.
#[derive(Debug)]
pub(crate) struct SessionPermit {
    limiter: Arc<SessionLimiter>,
    ip: IpAddr,
}

impl SessionLimiter {
    pub(crate) fn new(max_sessions: usize, max_sessions_per_ip: usize) -> Self {
        Self {
            max_sessions: AtomicUsize::new(max_sessions),
            max_sessions_per_ip: AtomicUsize::new(max_sessions_per_ip),
            max_sessions_for_descriptors: AtomicUsize::new(usize::MAX),
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Takes a place for a session from `ip`, or says which cap is reached.
    pub(crate) fn try_acquire(
        self: &Arc<Self>,
        ip: IpAddr,
    ) -> Result<SessionPermit, LimitExceeded> {
        let ip = ip.to_canonical();
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if counts.total >= self.max_sessions.load(Ordering::Relaxed) {
            return Err(LimitExceeded::Global);
        }
        if counts.total >= self.max_sessions_for_descriptors.load(Ordering::Relaxed) {
            return Err(LimitExceeded::Descriptors);
        }
        let for_ip = counts.per_ip.entry(ip).or_insert(0);
        if *for_ip >= self.max_sessions_per_ip.load(Ordering::Relaxed) {
            return Err(LimitExceeded::PerIp);
        }
        *for_ip += 1;
        counts.total += 1;
        Ok(SessionPermit {
            limiter: Arc::clone(self),
            ip,
        })
    }

    /// New caps, for the sessions that start from now on.
    pub(crate) fn set_limits(&self, max_sessions: usize, max_sessions_per_ip: usize) {
        self.max_sessions.store(max_sessions, Ordering::Relaxed);
        self.max_sessions_per_ip
            .store(max_sessions_per_ip, Ordering::Relaxed);
    }

    /// The most sessions the file descriptors allow.
    pub(crate) fn set_descriptor_cap(&self, sessions: usize) {
        self.max_sessions_for_descriptors
            .store(sessions, Ordering::Relaxed);
    }

    /// Sessions open now.
    #[cfg(test)]
    pub(crate) fn open_sessions(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .total
    }
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        let mut counts = self
            .limiter
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        counts.total -= 1;
        if let Some(for_ip) = counts.per_ip.get_mut(&self.ip) {
            *for_ip -= 1;
            if *for_ip == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_are_enforced_and_released() {
        let limiter = Arc::new(SessionLimiter::new(3, 2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = limiter.try_acquire(a).unwrap();
        let _second = limiter.try_acquire(a).unwrap();
        assert_eq!(limiter.try_acquire(a).unwrap_err(), LimitExceeded::PerIp);
        let _third = limiter.try_acquire(b).unwrap();
        assert_eq!(limiter.try_acquire(b).unwrap_err(), LimitExceeded::Global);
        drop(first);
        let _again = limiter.try_acquire(a).unwrap();
        assert_eq!(limiter.open_sessions(), 3);
        limiter.set_limits(10, 10);
        limiter.set_descriptor_cap(3);
        assert_eq!(
            limiter.try_acquire(b).unwrap_err(),
            LimitExceeded::Descriptors
        );
    }
}
