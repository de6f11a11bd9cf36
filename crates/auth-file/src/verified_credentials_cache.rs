//! [`VerifiedCredentialsCache`]: recent successful logins, so a returning user skips argon2.
//!
//! argon2id is slow on purpose (tens of milliseconds), which alone would cap the login rate
//! far below what the server otherwise sustains. Like SFTPGo's password cache, this keeps, for
//! a short time, proof that a user's password was verified:
//!
//! - never the password itself, but a keyed BLAKE2b MAC of it under a random key made when
//!   the cache is created and never stored anywhere, so the cache's contents are useless
//!   outside this process;
//! - the PHC hash string the password was verified against: an entry only counts while the
//!   user's current hash is that same string, so a password change (or a removed user)
//!   invalidates it even before the users file reload clears the whole cache;
//! - an expiry (5 minutes by default).
//!
//! Only successful argon2 verifications insert, and a lookup can only confirm a password, never
//! reject one: a mismatch goes the normal (slow) way, so failed attempts never take a fast
//! path. The MACs compare in constant time, and neither passwords nor MACs are logged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use blake2::Blake2bMac;
use blake2::digest::consts::U32;
use blake2::digest::{KeyInit, Mac};

/// How long a verification is remembered unless configured otherwise.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(5 * 60);

/// Most users remembered at once; past this, expired entries go first, then everything.
const MAX_ENTRIES: usize = 100_000;

type CredentialMac = Blake2bMac<U32>;

/// Successful password verifications, by user name, for a short time.
pub struct VerifiedCredentialsCache {
    /// The MAC key: random, per cache, never leaves memory.
    key: [u8; 32],
    inner: Mutex<Inner>,
    hits: AtomicU64,
}

struct Inner {
    ttl: Duration,
    entries: HashMap<String, Entry>,
}

struct Entry {
    /// The PHC hash string the password was verified against.
    phc: String,
    /// MAC of the user name and password.
    mac: [u8; 32],
    expires: Instant,
}

impl VerifiedCredentialsCache {
    /// An empty cache remembering verifications for `ttl` (zero disables it).
    pub fn new(ttl: Duration) -> Self {
        Self {
            key: rand::random(),
            inner: Mutex::new(Inner {
                ttl,
                entries: HashMap::new(),
            }),
            hits: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves the map consistent, so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes how long verifications are remembered (zero disables the cache) and forgets
    /// everything remembered so far.
    pub fn set_ttl(&self, ttl: Duration) {
        let mut inner = self.lock();
        inner.ttl = ttl;
        inner.entries.clear();
    }

    /// Whether verifications are remembered at all.
    pub fn is_enabled(&self) -> bool {
        !self.lock().ttl.is_zero()
    }

    /// How many logins the cache has confirmed.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// How many verifications are currently remembered (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn mac(&self, username: &str, password: &str) -> CredentialMac {
        let mut mac = <CredentialMac as KeyInit>::new_from_slice(&self.key)
            .expect("a 32-byte key suits BLAKE2b");
        // Length-prefixed, so no two (name, password) pairs feed the same bytes.
        mac.update(&(username.len() as u64).to_le_bytes());
        mac.update(username.as_bytes());
        mac.update(password.as_bytes());
        mac
    }

    /// Whether `password` was verified for `username` against `current_phc` (the user's hash
    /// as of now) and that is still remembered. `false` never means the password is wrong,
    /// only that it must be verified the slow way.
    pub fn confirms(&self, username: &str, current_phc: &str, password: &str) -> bool {
        // Computed before locking, so the lock is held only for a lookup.
        let mac = self.mac(username, password);
        let now = Instant::now();
        let confirmed = {
            let inner = self.lock();
            match inner.entries.get(username) {
                Some(entry) if entry.expires > now && entry.phc == current_phc => {
                    // Constant-time comparison.
                    mac.verify_slice(&entry.mac).is_ok()
                }
                _ => false,
            }
        };
        if confirmed {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        confirmed
    }

    /// Remembers that `password` was just verified (by argon2) for `username` against `phc`.
    /// Call only after a successful verification.
    pub fn remember(&self, username: &str, phc: &str, password: &str) {
        let mac: [u8; 32] = self.mac(username, password).finalize().into_bytes().into();
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.ttl.is_zero() {
            return;
        }
        let Some(expires) = now.checked_add(inner.ttl) else {
            return;
        };
        if inner.entries.len() >= MAX_ENTRIES && !inner.entries.contains_key(username) {
            inner.entries.retain(|_, entry| entry.expires > now);
            if inner.entries.len() >= MAX_ENTRIES {
                inner.entries.clear();
            }
        }
        inner.entries.insert(
            username.to_owned(),
            Entry {
                phc: phc.to_owned(),
                mac,
                expires,
            },
        );
    }

    /// Forgets everything (the users file changed).
    pub fn clear(&self) {
        self.lock().entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_only_the_remembered_password_and_hash() {
        let cache = VerifiedCredentialsCache::new(DEFAULT_CACHE_TTL);
        assert!(!cache.confirms("alice", "$phc1", "pw"));
        cache.remember("alice", "$phc1", "pw");
        assert!(cache.confirms("alice", "$phc1", "pw"));
        assert!(!cache.confirms("alice", "$phc1", "wrong"));
        assert!(!cache.confirms("alice", "$phc2", "pw"));
        assert!(!cache.confirms("bob", "$phc1", "pw"));
        assert_eq!(cache.hits(), 1);
        cache.clear();
        assert!(!cache.confirms("alice", "$phc1", "pw"));
    }

    #[test]
    fn expires_and_can_be_disabled() {
        let cache = VerifiedCredentialsCache::new(Duration::from_millis(1));
        cache.remember("alice", "$phc", "pw");
        std::thread::sleep(Duration::from_millis(5));
        assert!(!cache.confirms("alice", "$phc", "pw"));

        cache.set_ttl(Duration::ZERO);
        assert!(!cache.is_enabled());
        cache.remember("alice", "$phc", "pw");
        assert!(cache.is_empty());
        assert!(!cache.confirms("alice", "$phc", "pw"));
    }
}
