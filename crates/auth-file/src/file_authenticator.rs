//! [`FileAuthenticator`]: logins checked against a users file that is re-read when it changes.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use ferroftp_backend::{AccountState, AuthError, Authenticator, LoginAttempt, User};

use crate::password_verifier::{ArgonMemory, PasswordVerifier};
use crate::users_file::{UserEntry, UsersFile, UsersFileError, hash_password};
use crate::verified_credentials_cache::{DEFAULT_CACHE_TTL, VerifiedCredentialsCache};

/// Checks logins against a users file.
///
/// - Password verification (argon2id, slow on purpose) runs on dedicated threads, never on
///   an async worker thread, at most [`max_concurrent_verifications`] at a time (by default
///   one per CPU). Each thread reuses its argon2 memory (19 MiB by default), so a login
///   flood queues instead of exhausting memory (see `password_verifier`).
/// - An unknown name costs the same as a wrong password: its attempt is verified against a
///   dummy hash made with the same parameters, and it returns [`AuthError::UnknownUser`],
///   which the server answers exactly like [`AuthError::Rejected`], so neither the reply nor
///   its timing tells which names exist (only the defender's score tells them apart).
/// - Each login first compares the file's modification time, length and inode with those of
///   the last load (one `stat`), and re-reads the file when they differ: `ferroftp user add`
///   takes effect on a running server. A changed file that fails to load is reported once in
///   the log and the previous users stay in force until it is fixed.
/// - Successful verifications are remembered for a short time (see
///   [`VerifiedCredentialsCache`] and [`with_cache_ttl`]): a user logging in again with the
///   same password, against the same hash, skips argon2 and the verification queue. The
///   file's `stat` still happens at each login, a reload forgets everything, and failed
///   attempts always take the slow path.
///
/// [`max_concurrent_verifications`]: Self::with_max_concurrent_verifications
/// [`with_cache_ttl`]: Self::with_cache_ttl
pub struct FileAuthenticator {
    shared: Arc<Shared>,
    verifier: PasswordVerifier,
}

/// What the blocking verification tasks need.
struct Shared {
    path: PathBuf,
    dummy_hash: String,
    /// Locked briefly: on an async thread to compare a stamp and clone the users, on a
    /// verification thread for a `stat` and, after a change, a parse; never held across an
    /// await nor during an argon2 verification.
    snapshot: Mutex<Snapshot>,
    /// Recent successful verifications; cleared whenever the file is reloaded.
    cache: VerifiedCredentialsCache,
}

/// The users as last loaded, and what is known about the file on disk.
struct Snapshot {
    users: Arc<HashMap<String, UserEntry>>,
    /// The file as it was when `users` was loaded.
    loaded: Option<FileStamp>,
    /// A later version of the file that failed to load (so it is reported once, not at each
    /// login).
    rejected: Option<FileStamp>,
    /// Whether the file's disappearance has been reported.
    missing_reported: bool,
}

/// What tells one version of the file from another without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    length: u64,
    /// Atomic saves replace the file, so a new inode is a new version even within the
    /// timestamp granularity of the filesystem.
    inode: u64,
}

impl FileStamp {
    /// Blocking: the path walk may read the disk.
    fn of(path: &Path) -> std::io::Result<Self> {
        Ok(Self::from_stat(&rustix::fs::stat(path)?))
    }

    /// The stamp if every name on `path` is in the kernel's lookup cache (`RESOLVE_CACHED`):
    /// then nothing here waits for the disk and it may run on an async thread. `None` when
    /// it cannot tell that way; [`of`](Self::of) on a blocking thread can.
    fn of_cached(path: &Path) -> Option<Self> {
        use rustix::fs::{CWD, Mode, OFlags, ResolveFlags};
        let file = rustix::fs::openat2(
            CWD,
            path,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::CACHED,
        )
        .ok()?;
        rustix::fs::fstat(&file)
            .ok()
            .map(|stat| Self::from_stat(&stat))
    }

    // The stat field types differ between architectures and rustix versions (unsigned on
    // x86_64 in rustix 0.38, although the kernel's time_t is signed: a time before 1970 read
    // as a huge number there; signed in rustix 1): the cast is the identity on some.
    #[allow(
        clippy::useless_conversion,
        clippy::cast_possible_wrap,
        clippy::unnecessary_cast
    )]
    fn from_stat(stat: &rustix::fs::Stat) -> Self {
        let seconds = stat.st_mtime as i64;
        let nanos = u32::try_from(stat.st_mtime_nsec).unwrap_or(0);
        // Checked both ways: any time the kernel can store gives a stamp or none, no panic.
        let modified = match u64::try_from(seconds) {
            Ok(after) => UNIX_EPOCH.checked_add(Duration::new(after, nanos)),
            Err(_) => UNIX_EPOCH.checked_sub(Duration::from_secs(seconds.unsigned_abs())),
        };
        Self {
            modified,
            length: u64::try_from(stat.st_size).unwrap_or(0),
            inode: u64::from(stat.st_ino),
        }
    }
}

impl FileAuthenticator {
    /// Loads the users file at `path`; fails if it is missing or invalid.
    ///
    /// Also computes the dummy hash for unknown names, which takes as long as one password
    /// hash: call it at startup (or from a blocking context), not on a busy async thread.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, UsersFileError> {
        let path = path.into();
        let stamp = FileStamp::of(&path).ok();
        let file = UsersFile::load(&path)?;
        tracing::info!(path = %path.display(), users = file.len(), "loaded users file");
        let dummy_password: String = std::iter::repeat_with(rand::random::<char>)
            .take(24)
            .collect();
        let shared = Shared {
            dummy_hash: hash_password(&dummy_password),
            snapshot: Mutex::new(Snapshot {
                users: Arc::new(index_by_name(file)),
                loaded: stamp,
                rejected: None,
                missing_reported: false,
            }),
            cache: VerifiedCredentialsCache::new(DEFAULT_CACHE_TTL),
            path,
        };
        let default_limit = std::thread::available_parallelism().map_or(2, |count| count.get());
        Ok(Self {
            shared: Arc::new(shared),
            verifier: PasswordVerifier::start(default_limit),
        })
    }

    /// Sets how many password verifications may run at once (at least 1); later attempts
    /// wait their turn.
    pub fn with_max_concurrent_verifications(mut self, limit: usize) -> Self {
        self.verifier = PasswordVerifier::start(limit);
        self
    }

    /// Sets how long a successful verification is remembered (5 minutes by default); zero
    /// disables the cache, so every login runs argon2.
    pub fn with_cache_ttl(self, ttl: Duration) -> Self {
        self.shared.cache.set_ttl(ttl);
        self
    }

    /// How many logins were confirmed by the cache of recent verifications, without argon2.
    pub fn cache_hits(&self) -> u64 {
        self.shared.cache.hits()
    }

    /// The users file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

impl fmt::Debug for FileAuthenticator {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("FileAuthenticator")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn lock_snapshot(&self) -> MutexGuard<'_, Snapshot> {
        // A panic while holding the lock leaves a consistent snapshot (it is replaced whole),
        // so a poisoned lock is still usable.
        self.snapshot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current users, re-reading the file first if it changed. Blocking.
    fn current_users(&self) -> Arc<HashMap<String, UserEntry>> {
        let mut snapshot = self.lock_snapshot();
        match FileStamp::of(&self.path) {
            Ok(stamp) => {
                snapshot.missing_reported = false;
                if Some(stamp) != snapshot.loaded && Some(stamp) != snapshot.rejected {
                    // If the file changes again between the stat and the read, the newer
                    // text is loaded under the older stamp and simply re-read next time.
                    match UsersFile::load(&self.path) {
                        Ok(file) => {
                            tracing::info!(
                                path = %self.path.display(),
                                users = file.len(),
                                "users file changed, reloaded"
                            );
                            snapshot.users = Arc::new(index_by_name(file));
                            snapshot.loaded = Some(stamp);
                            snapshot.rejected = None;
                            // Simplest and obviously correct; entries are also tied to the
                            // hash they were verified against.
                            self.cache.clear();
                        }
                        Err(error) => {
                            tracing::error!(
                                %error,
                                "users file changed but cannot be loaded; the previous users stay in force"
                            );
                            snapshot.rejected = Some(stamp);
                        }
                    }
                }
            }
            Err(error) => {
                if !snapshot.missing_reported {
                    tracing::error!(
                        path = %self.path.display(),
                        %error,
                        "cannot check the users file; the previous users stay in force"
                    );
                    snapshot.missing_reported = true;
                }
            }
        }
        Arc::clone(&snapshot.users)
    }

    /// The fastest path, right on the async thread, for a returning user: the users file is
    /// stat'ed only through the kernel's lookup cache, and if it is the version loaded and
    /// the cache confirms the password, that is the answer: no thread hand-off at all (two
    /// wake-ups would cost more than the whole check). `None` means "ask the paths below",
    /// never "rejected": a failed attempt always goes on to argon2.
    fn authenticate_inline(&self, username: &str, password: &str) -> Option<User> {
        if !self.cache.is_enabled() {
            return None;
        }
        let stamp = FileStamp::of_cached(&self.path)?;
        let users = {
            let snapshot = self.lock_snapshot();
            if snapshot.loaded != Some(stamp) {
                return None;
            }
            Arc::clone(&snapshot.users)
        };
        let entry = users.get(username)?;
        self.cache
            .confirms(username, entry.password_hash(), password)
            .then(|| entry.to_user())
    }

    /// The whole check, on a verification thread: the users file's `stat` (and a reload if
    /// it changed), the cache, then argon2.
    fn authenticate_blocking(
        &self,
        username: &str,
        password: &str,
        memory: &mut ArgonMemory,
    ) -> Result<User, AuthError> {
        let users = self.current_users();
        match users.get(username) {
            // Many logins of one user arriving at once all miss the cache and queue here;
            // once the first is verified, the rest find its entry instead of each spending
            // an argon2 verification.
            Some(entry)
                if self
                    .cache
                    .confirms(username, entry.password_hash(), password) =>
            {
                Ok(entry.to_user())
            }
            Some(entry) if memory.verify(entry.password_hash(), password) => {
                // Only a successful argon2 verification is remembered.
                self.cache
                    .remember(username, entry.password_hash(), password);
                Ok(entry.to_user())
            }
            Some(_) => Err(AuthError::Rejected),
            None => {
                // Spend the time a real verification takes; the result does not matter.
                let _ = memory.verify(&self.dummy_hash, password);
                Err(AuthError::UnknownUser)
            }
        }
    }
}

/// The state of `name` in `users`; the credentials are a digest of the password hash (a new
/// password is a new salt and hash).
fn account_state_in(users: &HashMap<String, UserEntry>, name: &str) -> AccountState {
    match users.get(name) {
        Some(entry) => {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            entry.password_hash().hash(&mut hasher);
            AccountState::Active {
                read_only: entry.read_only(),
                credentials: hasher.finish(),
            }
        }
        None => AccountState::Gone,
    }
}

fn index_by_name(file: UsersFile) -> HashMap<String, UserEntry> {
    file.list()
        .iter()
        .map(|entry| (entry.name().to_owned(), entry.clone()))
        .collect()
}

#[async_trait]
impl Authenticator for FileAuthenticator {
    async fn authenticate(&self, attempt: &LoginAttempt) -> Result<User, AuthError> {
        if let Some(user) = self
            .shared
            .authenticate_inline(&attempt.username, attempt.password.expose())
        {
            return Ok(user);
        }
        // Everything else (a first login, a wrong password, a users file that changed or
        // whose path is not in the lookup cache) goes to a verification thread, which
        // re-reads the file if needed and asks the cache again before argon2.
        let shared = Arc::clone(&self.shared);
        let username = attempt.username.clone();
        let password = attempt.password.clone();
        self.verifier
            .run(move |memory| shared.authenticate_blocking(&username, password.expose(), memory))
            .await
            .unwrap_or_else(|| {
                Err(AuthError::Unavailable(
                    "too many logins waiting for verification".into(),
                ))
            })
    }

    /// The account as the users file says now. The file is stat'ed each time (through the
    /// kernel's lookup cache, on this thread, when it can: one `openat2` and one `fstat`);
    /// only a changed file, or one whose path is not cached, costs a blocking task, which
    /// reloads it as a login would. So `ferroftp user del`, `passwd` and a change to
    /// `read_only` reach open sessions at their next command.
    async fn account_state(&self, name: &str) -> AccountState {
        if let Some(stamp) = FileStamp::of_cached(&self.shared.path) {
            let snapshot = self.shared.lock_snapshot();
            if snapshot.loaded == Some(stamp) || snapshot.rejected == Some(stamp) {
                return account_state_in(&snapshot.users, name);
            }
        }
        let shared = Arc::clone(&self.shared);
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || account_state_in(&shared.current_users(), &name))
            .await
            .unwrap_or(AccountState::Unchecked)
    }
}
