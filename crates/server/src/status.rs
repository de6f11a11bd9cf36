//! The live view of a running server, for the admin listener's status page and readiness
//! check: which sessions are open (user, client, idle time, the running transfer and its
//! bytes so far), the passive pool's use, whether the server accepts or drains, and the
//! recent warnings and errors.
//!
//! Cheap for the sessions that feed it: the registry's lock is taken when a session opens or
//! closes, logs in, or starts and ends a transfer; a transfer's bytes go to an `AtomicU64`
//! with one relaxed add per chunk (per `sendfile` call or socket read, never per byte), and a
//! line received stores one relaxed `u64`. Readers (the status page) take a snapshot.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use ferroftp_backend::{Storage, StorageError};
use ferroftp_proto::VirtualPath;

use crate::TransferDirection;
use crate::passive::PassivePortPool;
use crate::transfer::Progress;

/// The shared live view of one [`Server`](crate::Server); see the module documentation.
#[derive(Debug)]
pub struct ServerStatus {
    started: Instant,
    /// Each control listener's bound address, by listener index (the `listener` label).
    listeners: Vec<String>,
    sessions: Mutex<BTreeMap<u64, Arc<SessionEntry>>>,
    /// The pool of the current configuration generation (a reload can replace it).
    passive_pool: Mutex<Option<Arc<PassivePortPool>>>,
    storage: Arc<dyn Storage>,
    accepting: AtomicBool,
    draining: AtomicBool,
    per_user_metrics: AtomicBool,
    /// The defender's bans, for the admin listener (set once the server is built).
    defender: Mutex<Option<Arc<crate::Defender>>>,
}

/// One open session, as the registry keeps it.
#[derive(Debug)]
struct SessionEntry {
    id: u64,
    client: SocketAddr,
    listener: usize,
    connected: Instant,
    /// Milliseconds from the status's start to the last line received.
    last_activity: AtomicU64,
    user: Mutex<Option<String>>,
    transfer: Mutex<Option<LiveTransfer>>,
}

#[derive(Debug)]
struct LiveTransfer {
    direction: TransferDirection,
    path: String,
    started: Instant,
    progress: Progress,
}

/// A session at the moment of a [`StatusSnapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSnapshot {
    /// The session's number, as in the logs (`session{id=…}`).
    pub id: u64,
    /// The logged-in user, if any.
    pub user: Option<String>,
    /// The client (the one a trusted proxy named, behind a proxy).
    pub client: SocketAddr,
    /// The address of the listener it came in on.
    pub listener: String,
    /// Since the control connection was accepted.
    pub connected_for: Duration,
    /// Since the last command line arrived.
    pub idle_for: Duration,
    /// The running transfer, if any.
    pub transfer: Option<TransferSnapshot>,
}

/// A running transfer at the moment of a [`StatusSnapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferSnapshot {
    /// Which way.
    pub direction: TransferDirection,
    /// The path the client named (under its home).
    pub path: String,
    /// Bytes moved so far.
    pub bytes: u64,
    /// Since the transfer command was accepted.
    pub elapsed: Duration,
}

impl TransferSnapshot {
    /// Bytes per second over the transfer so far (0 in its first millisecond).
    pub fn rate(&self) -> u64 {
        let millis = self.elapsed.as_millis();
        if millis == 0 {
            return 0;
        }
        u64::try_from(u128::from(self.bytes) * 1000 / millis).unwrap_or(u64::MAX)
    }
}

/// Everything the status page shows, taken at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusSnapshot {
    /// Since the server was bound.
    pub uptime: Duration,
    /// Open sessions, oldest first.
    pub sessions: Vec<SessionSnapshot>,
    /// Passive ports held by sessions.
    pub passive_in_use: usize,
    /// Ports of the passive range.
    pub passive_capacity: usize,
    /// The listeners accept connections.
    pub accepting: bool,
    /// The server is stopping (see [`ServerStatus::set_draining`]).
    pub draining: bool,
    /// Client addresses the defender bans now.
    pub banned_addresses: usize,
}

impl ServerStatus {
    pub(crate) fn new(listeners: Vec<String>, storage: Arc<dyn Storage>) -> Self {
        Self {
            started: Instant::now(),
            listeners,
            sessions: Mutex::new(BTreeMap::new()),
            passive_pool: Mutex::new(None),
            storage,
            accepting: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            per_user_metrics: AtomicBool::new(false),
            defender: Mutex::new(None),
        }
    }

    /// Marks the server as stopping: readiness checks fail from now on (load balancers stop
    /// sending clients) while running sessions finish.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether [`set_draining`](Self::set_draining) was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Whether every listener's accept loop runs ([`Server::run`](crate::Server::run) started
    /// them and has not stopped them).
    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::Relaxed)
    }

    pub(crate) fn set_accepting(&self, accepting: bool) {
        self.accepting.store(accepting, Ordering::Relaxed);
    }

    /// Whether the transfer and login metrics also get a series per user (the `user` label);
    /// off by default, since every user adds series.
    pub fn set_per_user_metrics(&self, enabled: bool) {
        self.per_user_metrics.store(enabled, Ordering::Relaxed);
    }

    pub(crate) fn per_user_metrics(&self) -> bool {
        self.per_user_metrics.load(Ordering::Relaxed)
    }

    /// The control listeners' bound addresses, by listener index.
    pub fn listeners(&self) -> &[String] {
        &self.listeners
    }

    /// Since the server was bound.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub(crate) fn set_defender(&self, defender: Arc<crate::Defender>) {
        *lock(&self.defender) = Some(defender);
    }

    /// The server's defender (`GET /bans`, `DELETE /bans/ADDR`); `None` before the server
    /// is built.
    pub fn defender(&self) -> Option<Arc<crate::Defender>> {
        lock(&self.defender).clone()
    }

    pub(crate) fn set_passive_pool(&self, pool: Arc<PassivePortPool>) {
        *lock(&self.passive_pool) = Some(pool);
    }

    fn current_passive_pool(&self) -> Option<Arc<PassivePortPool>> {
        lock(&self.passive_pool).clone()
    }

    /// Passive ports held by sessions now (one pass over the pool's slots).
    pub fn passive_ports_in_use(&self) -> usize {
        self.current_passive_pool()
            .map_or(0, |pool| pool.ports_in_use())
    }

    /// Ports of the passive range.
    pub fn passive_ports_capacity(&self) -> usize {
        self.current_passive_pool()
            .map_or(0, |pool| pool.capacity())
    }

    /// Open sessions per listener, by listener index.
    pub fn sessions_per_listener(&self) -> Vec<usize> {
        let mut counts = vec![0; self.listeners.len()];
        for entry in self.lock_sessions().values() {
            if let Some(count) = counts.get_mut(entry.listener) {
                *count += 1;
            }
        }
        counts
    }

    /// Asks the storage for the metadata of its root: the cheapest call that shows it answers
    /// (a local directory that was unmounted or lost its permissions fails it).
    pub async fn check_storage(&self) -> Result<(), StorageError> {
        self.storage.metadata(&VirtualPath::root()).await.map(drop)
    }

    /// The recent warnings and errors of the process (see [`RecentErrors`]).
    pub fn recent_errors(&self) -> &'static RecentErrors {
        RecentErrors::global()
    }

    /// The sessions and the pool, now.
    pub fn snapshot(&self) -> StatusSnapshot {
        let now = Instant::now();
        let since_start = millis_between(self.started, now);
        let sessions = self
            .lock_sessions()
            .values()
            .map(|entry| {
                let idle_millis =
                    since_start.saturating_sub(entry.last_activity.load(Ordering::Relaxed));
                SessionSnapshot {
                    id: entry.id,
                    user: lock(&entry.user).clone(),
                    client: entry.client,
                    listener: self
                        .listeners
                        .get(entry.listener)
                        .cloned()
                        .unwrap_or_default(),
                    connected_for: now.saturating_duration_since(entry.connected),
                    idle_for: Duration::from_millis(idle_millis),
                    transfer: lock(&entry.transfer)
                        .as_ref()
                        .map(|transfer| TransferSnapshot {
                            direction: transfer.direction,
                            path: transfer.path.clone(),
                            bytes: transfer.progress.bytes(),
                            elapsed: now.saturating_duration_since(transfer.started),
                        }),
                }
            })
            .collect();
        StatusSnapshot {
            uptime: now.saturating_duration_since(self.started),
            sessions,
            passive_in_use: self.passive_ports_in_use(),
            passive_capacity: self.passive_ports_capacity(),
            accepting: self.is_accepting(),
            draining: self.is_draining(),
            banned_addresses: self
                .defender()
                .map_or(0, |defender| defender.banned_count()),
        }
    }

    /// Adds session `id` (the number the logs give it, unique in the process); it leaves the
    /// registry when the returned handle is dropped.
    pub(crate) fn register(
        self: &Arc<Self>,
        id: u64,
        client: SocketAddr,
        listener: usize,
        now: Instant,
    ) -> SessionHandle {
        let entry = Arc::new(SessionEntry {
            id,
            client,
            listener,
            connected: now,
            last_activity: AtomicU64::new(millis_between(self.started, now)),
            user: Mutex::new(None),
            transfer: Mutex::new(None),
        });
        self.lock_sessions().insert(entry.id, Arc::clone(&entry));
        SessionHandle {
            status: Arc::clone(self),
            entry,
        }
    }

    fn lock_sessions(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<SessionEntry>>> {
        lock(&self.sessions)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values are plain data, whole after any panic.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn millis_between(earlier: Instant, later: Instant) -> u64 {
    u64::try_from(later.saturating_duration_since(earlier).as_millis()).unwrap_or(u64::MAX)
}

/// A session's entry in the registry, held by its control connection.
#[derive(Debug)]
pub(crate) struct SessionHandle {
    status: Arc<ServerStatus>,
    entry: Arc<SessionEntry>,
}

impl SessionHandle {
    /// A line arrived.
    pub(crate) fn touch(&self, now: Instant) {
        self.entry
            .last_activity
            .store(millis_between(self.status.started, now), Ordering::Relaxed);
    }

    pub(crate) fn set_user(&self, user: &str) {
        *lock(&self.entry.user) = Some(user.to_owned());
    }

    /// The running transfer, shown until [`end_transfer`](Self::end_transfer), with the bytes
    /// the data channel counts in `progress`.
    pub(crate) fn start_transfer(
        &self,
        direction: TransferDirection,
        path: String,
        now: Instant,
        progress: Progress,
    ) {
        *lock(&self.entry.transfer) = Some(LiveTransfer {
            direction,
            path,
            started: now,
            progress,
        });
    }

    pub(crate) fn end_transfer(&self) {
        *lock(&self.entry.transfer) = None;
    }

    pub(crate) fn status(&self) -> &ServerStatus {
        &self.status
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        self.status.lock_sessions().remove(&self.entry.id);
    }
}

/// How many recent warnings and errors are kept.
pub(crate) const RECENT_ERRORS_KEPT: usize = 32;

/// Longest message kept, in bytes; a longer one is cut (at a character boundary).
const RECENT_ERROR_MAX_LEN: usize = 512;

/// The newest warnings and errors of the process, at most 32 (`RECENT_ERRORS_KEPT`), fed by the
/// logging (the admin crate's layer) and shown on the status page.
#[derive(Debug)]
pub struct RecentErrors {
    entries: Mutex<VecDeque<RecentError>>,
    capacity: usize,
}

/// One warning or error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecentError {
    /// When it was logged.
    pub at: SystemTime,
    /// `WARN` or `ERROR`.
    pub level: &'static str,
    /// The message and its fields, as logged.
    pub message: String,
}

static GLOBAL_RECENT_ERRORS: RecentErrors = RecentErrors::new(RECENT_ERRORS_KEPT);

impl RecentErrors {
    /// An empty ring that keeps `capacity` entries.
    pub const fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(VecDeque::new()),
            capacity,
        }
    }

    /// The process's ring: logging is process-wide, and so is what it saw.
    pub fn global() -> &'static Self {
        &GLOBAL_RECENT_ERRORS
    }

    /// Keeps `message`, dropping the oldest entry when full.
    pub fn push(&self, level: &'static str, mut message: String) {
        if message.len() > RECENT_ERROR_MAX_LEN {
            let mut cut = RECENT_ERROR_MAX_LEN;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let mut entries = lock(&self.entries);
        if self.capacity == 0 {
            return;
        }
        if entries.len() == self.capacity {
            entries.pop_front();
        }
        entries.push_back(RecentError {
            at: SystemTime::now(),
            level,
            message,
        });
    }

    /// The entries, newest first.
    pub fn newest_first(&self) -> Vec<RecentError> {
        lock(&self.entries).iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferroftp_backend::testing::MemoryStorage;

    fn status() -> Arc<ServerStatus> {
        let status = Arc::new(ServerStatus::new(
            vec!["127.0.0.1:2121".to_owned(), "127.0.0.1:990".to_owned()],
            Arc::new(MemoryStorage::new()),
        ));
        status.set_passive_pool(Arc::new(PassivePortPool::new(
            50000..=50009,
            Duration::from_secs(1),
        )));
        status
    }

    #[test]
    fn sessions_are_listed_while_their_handles_live() {
        let status = status();
        let now = Instant::now();
        let first = status.register(1, "192.0.2.1:40000".parse().unwrap(), 0, now);
        let second = status.register(2, "192.0.2.2:40001".parse().unwrap(), 1, now);
        second.set_user("alice");
        let snapshot = status.snapshot();
        assert_eq!(snapshot.sessions.len(), 2);
        assert_eq!(snapshot.sessions[0].user, None);
        assert_eq!(snapshot.sessions[1].user.as_deref(), Some("alice"));
        assert_eq!(snapshot.sessions[1].listener, "127.0.0.1:990");
        assert_eq!(status.sessions_per_listener(), vec![1, 1]);
        drop(first);
        let snapshot = status.snapshot();
        assert_eq!(snapshot.sessions.len(), 1);
        assert_eq!(snapshot.sessions[0].client.to_string(), "192.0.2.2:40001");
        assert_eq!(status.sessions_per_listener(), vec![0, 1]);
        drop(second);
        assert!(status.snapshot().sessions.is_empty());
    }

    #[test]
    fn a_transfer_shows_its_bytes_until_it_ends() {
        let status = status();
        let session = status.register(1, "192.0.2.1:40000".parse().unwrap(), 0, Instant::now());
        let progress = Progress::default();
        session.start_transfer(
            TransferDirection::Upload,
            "/a.bin".to_owned(),
            Instant::now(),
            progress.clone(),
        );
        progress.add(1000);
        progress.add(24);
        let transfer = status.snapshot().sessions[0].transfer.clone().unwrap();
        assert_eq!(transfer.direction, TransferDirection::Upload);
        assert_eq!(transfer.path, "/a.bin");
        assert_eq!(transfer.bytes, 1024);
        session.end_transfer();
        assert_eq!(status.snapshot().sessions[0].transfer, None);
    }

    #[test]
    fn idle_time_counts_from_the_last_line() {
        let status = status();
        let start = Instant::now();
        let session = status.register(1, "192.0.2.1:40000".parse().unwrap(), 0, start);
        // A line that "arrives" an hour from now: the session is not idle at all now.
        session.touch(start + Duration::from_secs(3600));
        assert_eq!(status.snapshot().sessions[0].idle_for, Duration::ZERO);
    }

    #[test]
    fn rate_is_bytes_per_second_so_far() {
        let transfer = TransferSnapshot {
            direction: TransferDirection::Download,
            path: "/f".to_owned(),
            bytes: 3_000_000,
            elapsed: Duration::from_millis(1500),
        };
        assert_eq!(transfer.rate(), 2_000_000);
        let just_started = TransferSnapshot {
            elapsed: Duration::ZERO,
            ..transfer
        };
        assert_eq!(just_started.rate(), 0);
    }

    #[test]
    fn draining_and_accepting_flags() {
        let status = status();
        assert!(!status.is_draining());
        assert!(!status.is_accepting());
        status.set_accepting(true);
        status.set_draining();
        let snapshot = status.snapshot();
        assert!(snapshot.draining && snapshot.accepting);
        assert_eq!(snapshot.passive_capacity, 10);
        assert_eq!(snapshot.passive_in_use, 0);
    }

    #[test]
    fn recent_errors_keep_the_newest_and_cut_long_messages() {
        let ring = RecentErrors::new(3);
        for index in 0..5 {
            ring.push("WARN", format!("warning {index}"));
        }
        let messages: Vec<String> = ring
            .newest_first()
            .into_iter()
            .map(|entry| entry.message)
            .collect();
        assert_eq!(messages, ["warning 4", "warning 3", "warning 2"]);
        ring.push("ERROR", "é".repeat(RECENT_ERROR_MAX_LEN));
        let newest = &ring.newest_first()[0];
        assert_eq!(newest.level, "ERROR");
        assert!(newest.message.len() <= RECENT_ERROR_MAX_LEN + '…'.len_utf8());
        assert!(newest.message.ends_with('…'));
    }

    #[tokio::test]
    async fn storage_check_answers_for_a_working_storage() {
        assert!(status().check_storage().await.is_ok());
    }
}
