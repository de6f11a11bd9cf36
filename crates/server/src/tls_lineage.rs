//! Which control connection every TLS session descends from, so that a protected data
//! connection can be checked against its control connection on TLS 1.2 and TLS 1.3 alike.
//!
//! # Why not rustls's resumption data
//!
//! rustls carries `set_resumption_data` bytes inside the sessions it issues, but gives them
//! back (`received_resumption_data`) only after a TLS 1.3 resumption: a TLS 1.2 resumption,
//! by session ID or by ticket, resumes with `HandshakeKind::Resumed` and no data. So the
//! server tags the sessions itself.
//!
//! # How sessions are tagged
//!
//! Every control connection gets a [`LineageId`]. Each TLS connection (control or data) runs
//! its handshake with its own copy of the shared `ServerConfig` whose session store and
//! ticketer are wrapped ([`tagged_config`]):
//!
//! - what the connection *issues* (a TLS 1.2 session-cache entry, a TLS 1.2 or 1.3 ticket) is
//!   prefixed with the lineage of its control connection before the shared store or ticketer
//!   sees it; tickets are encrypted and authenticated by the ticketer together with the
//!   prefix, so a client cannot change it;
//! - what the connection *resumes* (a cache entry it looked up, a ticket that decrypted)
//!   gives its lineage back to the connection ([`ResumedLineage`]), and rustls gets the
//!   session without the prefix.
//!
//! rustls looks up at most one session per handshake that it then resumes (TLS 1.2: the
//! ticket, else the session ID; TLS 1.3: the first pre-shared key that decrypts and fits, and
//! it stops there), so the last lineage recorded is the resumed session's whenever
//! `handshake_kind()` is `Resumed`.
//!
//! # The rule
//!
//! A data connection is accepted when it resumed a session whose lineage is
//!
//! - its own control connection's (the control session, or one issued on one of its data
//!   connections, transitively: data connections issue sessions with their control
//!   connection's lineage), or
//! - the lineage of the session the control connection itself resumed (a TLS 1.2 client that
//!   resumed an older session on its control connection keeps using that session), or
//! - the lineage of another control connection from the same client IP address on which the
//!   same user logged in (clients such as rclone share one session cache between parallel
//!   control connections, and keep only the newest session).
//!
//! Nothing else: a third party holds none of those sessions' secrets.
//!
//! A client with a shared cache may resume the session of a control connection that has not
//! finished logging in yet (rclone opens its parallel control connections while it transfers,
//! and its cache hands out the newest session at once). The check then waits, at most the
//! handshake timeout, until that connection logs in or closes, and decides on that: a session
//! of a connection that never logs in as the same user is refused.
//!
//! # Memory
//!
//! The registry ([`Lineages`]) holds one small entry per control connection that has TLS
//! configured: the client address, the user once logged in, and times. Entries of closed
//! connections that never logged in are dropped at once; the others are kept for [`RETENTION`] after their last use (a data connection of another
//! session may still resume one of their sessions) and at most [`MAX_CLOSED`] of them, the
//! least recently used going first; entries of open connections are bounded by the session
//! limits.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use rustls::server::{ProducesTickets, StoresServerSessions};
use tokio::sync::Notify;

/// How long the lineage of a closed control connection is remembered after its last use.
pub(crate) const RETENTION: Duration = Duration::from_secs(60 * 60);

/// Most lineages of closed control connections remembered at once.
pub(crate) const MAX_CLOSED: usize = 32 * 1024;

/// First byte of a tagged session value or ticket plaintext: marks the format.
const TAG_MARK: u8 = 0xF7;
/// The mark and a little-endian `u64`.
const TAG_BYTES: usize = 9;

/// The control connection a TLS session descends from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct LineageId(u64);

fn tag(lineage: LineageId, value: &[u8]) -> Vec<u8> {
    let mut tagged = Vec::with_capacity(TAG_BYTES + value.len());
    tagged.push(TAG_MARK);
    tagged.extend_from_slice(&lineage.0.to_le_bytes());
    tagged.extend_from_slice(value);
    tagged
}

fn untag(mut tagged: Vec<u8>) -> Option<(LineageId, Vec<u8>)> {
    if tagged.len() < TAG_BYTES || tagged[0] != TAG_MARK {
        return None;
    }
    let id = u64::from_le_bytes(tagged[1..TAG_BYTES].try_into().ok()?);
    tagged.drain(..TAG_BYTES);
    Some((LineageId(id), tagged))
}

/// What a connection's handshake resumed: set by its wrapped store or ticketer.
#[derive(Debug, Default)]
pub(crate) struct ResumedLineage(Mutex<Option<LineageId>>);

impl ResumedLineage {
    fn record(&self, lineage: LineageId) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(lineage);
    }

    /// The lineage of the last session looked up; meaningful only when the handshake's kind
    /// is `Resumed` (see the module documentation).
    pub(crate) fn get(&self) -> Option<LineageId> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The shared session cache, seen by one connection.
#[derive(Debug)]
struct TaggingStore {
    inner: Arc<dyn StoresServerSessions>,
    issuer: LineageId,
    resumed: Arc<ResumedLineage>,
}

impl TaggingStore {
    fn recover(&self, value: Option<Vec<u8>>) -> Option<Vec<u8>> {
        let (lineage, value) = untag(value?)?;
        self.resumed.record(lineage);
        Some(value)
    }
}

impl StoresServerSessions for TaggingStore {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.inner.put(key, tag(self.issuer, &value))
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.recover(self.inner.get(key))
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.recover(self.inner.take(key))
    }

    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}

/// The shared ticketer, seen by one connection.
#[derive(Debug)]
struct TaggingTicketer {
    inner: Arc<dyn ProducesTickets>,
    issuer: LineageId,
    resumed: Arc<ResumedLineage>,
}

impl ProducesTickets for TaggingTicketer {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.inner.lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        // The lineage is encrypted and authenticated with the session.
        self.inner.encrypt(&tag(self.issuer, plain))
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let (lineage, plain) = untag(self.inner.decrypt(cipher)?)?;
        self.resumed.record(lineage);
        Some(plain)
    }
}

/// A copy of `shared` for one connection of the control connection `issuer`: the sessions it
/// issues carry `issuer`, and the returned cell learns what it resumed. The copy shares the
/// session cache, ticketer and certificate with `shared`.
pub(crate) fn tagged_config(
    shared: &Arc<ServerConfig>,
    issuer: LineageId,
) -> (Arc<ServerConfig>, Arc<ResumedLineage>) {
    let resumed = Arc::new(ResumedLineage::default());
    let mut config = ServerConfig::clone(shared);
    config.session_storage = Arc::new(TaggingStore {
        inner: Arc::clone(&shared.session_storage),
        issuer,
        resumed: Arc::clone(&resumed),
    });
    config.ticketer = Arc::new(TaggingTicketer {
        inner: Arc::clone(&shared.ticketer),
        issuer,
        resumed: Arc::clone(&resumed),
    });
    (Arc::new(config), resumed)
}

#[derive(Debug)]
struct Entry {
    client: IpAddr,
    user: Option<Arc<str>>,
    /// Woken when the connection logs in or closes: data connections of other connections
    /// may wait for that (see the module documentation).
    changed: Arc<Notify>,
    /// `None` while the control connection is open.
    closed: Option<Instant>,
    last_used: Instant,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        self.closed.is_some() && now.saturating_duration_since(self.last_used) > RETENTION
    }
}

#[derive(Debug, Default)]
struct Registry {
    entries: HashMap<LineageId, Entry>,
    closed: usize,
}

impl Registry {
    /// Drops expired entries, then the least recently used closed ones beyond `MAX_CLOSED`.
    fn trim(&mut self, now: Instant) {
        self.entries.retain(|_, entry| !entry.expired(now));
        let mut closed: Vec<(Instant, LineageId)> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.closed.is_some())
            .map(|(id, entry)| (entry.last_used, *id))
            .collect();
        // Down to three quarters, so that trimming (a pass over all entries) happens at most
        // once per `MAX_CLOSED / 4` closed connections.
        let keep = MAX_CLOSED / 4 * 3;
        if closed.len() > keep {
            let drop = closed.len() - keep;
            closed.select_nth_unstable(drop - 1);
            for (_, id) in &closed[..drop] {
                self.entries.remove(id);
            }
            self.closed = keep;
        } else {
            self.closed = closed.len();
        }
    }
}

/// The lineages of a server's control connections (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct Lineages {
    next: AtomicU64,
    registry: Mutex<Registry>,
}

impl Lineages {
    /// A new control connection from `client`.
    pub(crate) fn register(self: &Arc<Self>, client: IpAddr, now: Instant) -> ControlLineage {
        let id = LineageId(self.next.fetch_add(1, Ordering::Relaxed));
        self.lock().entries.insert(
            id,
            Entry {
                client,
                user: None,
                changed: Arc::new(Notify::new()),
                closed: None,
                last_used: now,
            },
        );
        ControlLineage {
            id,
            client,
            user: None,
            resumed_on_control: None,
            lineages: Arc::clone(self),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_user(&self, id: LineageId, user: &Arc<str>) {
        if let Some(entry) = self.lock().entries.get_mut(&id) {
            entry.user = Some(Arc::clone(user));
            entry.changed.notify_waiters();
        }
    }

    fn close(&self, id: LineageId, now: Instant) {
        let mut registry = self.lock();
        if let Some(entry) = registry.entries.get_mut(&id) {
            entry.changed.notify_waiters();
            if entry.user.is_none() {
                // Never logged in: its sessions can serve no one (a flood of connections
                // that never log in costs no memory).
                registry.entries.remove(&id);
                return;
            }
            entry.closed = Some(now);
            entry.last_used = now;
            registry.closed += 1;
            if registry.closed > MAX_CLOSED {
                registry.trim(now);
            }
        }
    }

    /// Whether `lineage` belongs to a control connection from `client` on which `user` logged
    /// in (open, or closed within the retention); a hit counts as a use.
    fn verdict(&self, lineage: LineageId, client: IpAddr, user: &str, now: Instant) -> Verdict {
        let mut registry = self.lock();
        let Some(entry) = registry.entries.get_mut(&lineage) else {
            return Verdict::Refused;
        };
        if entry.expired(now) || entry.client != client {
            return Verdict::Refused;
        }
        match entry.user.as_deref() {
            Some(name) if name == user => {
                entry.last_used = now;
                Verdict::Accepted
            }
            Some(_) => Verdict::Refused,
            None if entry.closed.is_some() => Verdict::Refused,
            None => Verdict::UntilLogin(Arc::clone(&entry.changed)),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

/// What the registry says about a resumed session's lineage.
#[derive(Debug)]
enum Verdict {
    Accepted,
    Refused,
    /// From the same address, not logged in yet: ask again once this is notified.
    UntilLogin(Arc<Notify>),
}

/// One control connection's place in the registry; closing it (drop) starts the retention.
pub(crate) struct ControlLineage {
    id: LineageId,
    client: IpAddr,
    user: Option<Arc<str>>,
    /// The lineage of the session the control connection's own handshake resumed.
    resumed_on_control: Option<LineageId>,
    lineages: Arc<Lineages>,
}

impl fmt::Debug for ControlLineage {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ControlLineage")
            .field("id", &self.id)
            .field("client", &self.client)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl ControlLineage {
    pub(crate) fn id(&self) -> LineageId {
        self.id
    }

    /// The control connection's handshake resumed a session of `lineage`.
    pub(crate) fn resumed_on_control(&mut self, lineage: Option<LineageId>) {
        self.resumed_on_control = lineage;
    }

    /// `user` logged in on this control connection.
    pub(crate) fn logged_in(&mut self, user: &str) {
        let user: Arc<str> = Arc::from(user);
        self.lineages.set_user(self.id, &user);
        self.user = Some(user);
    }

    /// What a data connection of this control connection needs for its check.
    pub(crate) fn for_data(&self) -> DataLineage {
        DataLineage {
            id: self.id,
            client: self.client,
            user: self.user.clone(),
            resumed_on_control: self.resumed_on_control,
            lineages: Arc::clone(&self.lineages),
        }
    }
}

impl Drop for ControlLineage {
    fn drop(&mut self) {
        self.lineages.close(self.id, Instant::now());
    }
}

/// A data connection's view of its control connection's lineage.
#[derive(Debug)]
pub(crate) struct DataLineage {
    id: LineageId,
    client: IpAddr,
    user: Option<Arc<str>>,
    resumed_on_control: Option<LineageId>,
    lineages: Arc<Lineages>,
}

impl DataLineage {
    /// The lineage the data connection's sessions are issued with.
    pub(crate) fn id(&self) -> LineageId {
        self.id
    }

    /// Whether a data connection that resumed a session of `resumed` may be used (see the
    /// module documentation for the rule). Waits at most `wait` for the login of a control
    /// connection from the same address that has not logged in yet. `now`: for the retention.
    pub(crate) async fn accepts(&self, resumed: LineageId, wait: Duration, now: Instant) -> bool {
        if resumed == self.id || Some(resumed) == self.resumed_on_control {
            return true;
        }
        let Some(user) = &self.user else {
            return false;
        };
        let deadline = tokio::time::Instant::now() + wait;
        // The entry changes twice at most (login, close): a few rounds are enough.
        for _ in 0..4 {
            let changed = match self.lineages.verdict(resumed, self.client, user, now) {
                Verdict::Accepted => return true,
                Verdict::Refused => return false,
                Verdict::UntilLogin(changed) => changed,
            };
            let notified = changed.notified();
            tokio::pin!(notified);
            // Registered before looking again, so a login in between is not missed.
            notified.as_mut().enable();
            match self.lineages.verdict(resumed, self.client, user, now) {
                Verdict::Accepted => return true,
                Verdict::Refused => return false,
                Verdict::UntilLogin(_) => {}
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn tags_round_trip_and_foreign_values_are_refused() {
        let tagged = tag(LineageId(7), b"session");
        assert_eq!(untag(tagged), Some((LineageId(7), b"session".to_vec())));
        assert_eq!(untag(b"session value".to_vec()), None);
        assert_eq!(untag(vec![TAG_MARK, 1, 2]), None);
    }

    #[tokio::test]
    async fn own_lineage_and_the_control_connections_resumed_one_are_accepted() {
        let lineages = Arc::new(Lineages::default());
        let now = Instant::now();
        let older = lineages.register(ip("192.0.2.1"), now);
        let mut control = lineages.register(ip("192.0.2.1"), now);
        control.resumed_on_control(Some(older.id()));
        let data = control.for_data();
        // Not logged in yet: only the control connection's own and resumed lineages.
        assert!(data.accepts(control.id(), Duration::ZERO, now).await);
        assert!(data.accepts(older.id(), Duration::ZERO, now).await);
        let stranger = lineages.register(ip("192.0.2.1"), now);
        assert!(!data.accepts(stranger.id(), Duration::ZERO, now).await);
    }

    #[tokio::test]
    async fn same_user_same_address_only() {
        let lineages = Arc::new(Lineages::default());
        let now = Instant::now();
        let mut first = lineages.register(ip("192.0.2.1"), now);
        first.logged_in("alice");
        let mut second = lineages.register(ip("192.0.2.1"), now);
        second.logged_in("alice");
        let mut other_user = lineages.register(ip("192.0.2.1"), now);
        other_user.logged_in("bob");
        let mut other_address = lineages.register(ip("192.0.2.2"), now);
        other_address.logged_in("alice");
        let never_logged_in = lineages.register(ip("192.0.2.1"), now);

        let data = second.for_data();
        assert!(data.accepts(first.id(), Duration::ZERO, now).await);
        assert!(!data.accepts(other_user.id(), Duration::ZERO, now).await);
        assert!(!data.accepts(other_address.id(), Duration::ZERO, now).await);
        assert!(
            !data
                .accepts(never_logged_in.id(), Duration::ZERO, now)
                .await
        );
        assert!(
            !data.accepts(LineageId(u64::MAX), Duration::ZERO, now).await,
            "unknown lineage"
        );
    }

    #[tokio::test]
    async fn closed_lineages_are_kept_for_the_retention_after_their_last_use() {
        let lineages = Arc::new(Lineages::default());
        let start = Instant::now();
        let mut first = lineages.register(ip("192.0.2.1"), start);
        first.logged_in("alice");
        let first_id = first.id();
        drop(first);
        let mut second = lineages.register(ip("192.0.2.1"), start);
        second.logged_in("alice");
        let data = second.for_data();
        // The drop stamped the real clock; measure from it.
        let closed = Instant::now();
        assert!(
            data.accepts(first_id, Duration::ZERO, closed + RETENTION / 2)
                .await
        );
        // That use restarted the retention.
        assert!(
            data.accepts(first_id, Duration::ZERO, closed + RETENTION)
                .await
        );
        assert!(
            !data
                .accepts(first_id, Duration::ZERO, closed + RETENTION * 3)
                .await
        );
    }

    #[test]
    fn closed_lineages_are_bounded() {
        let lineages = Arc::new(Lineages::default());
        let now = Instant::now();
        let open = lineages.register(ip("192.0.2.1"), now);
        for _ in 0..MAX_CLOSED + 10 {
            let mut closed = lineages.register(ip("192.0.2.1"), now);
            closed.logged_in("alice");
        }
        for _ in 0..10 {
            // Never logged in: forgotten at once.
            drop(lineages.register(ip("192.0.2.1"), now));
        }
        assert!(lineages.len() <= MAX_CLOSED + 1, "{}", lineages.len());
        assert!(lineages.lock().entries.contains_key(&open.id()));
    }

    #[tokio::test]
    async fn a_session_of_a_connection_still_logging_in_waits_for_its_login() {
        let lineages = Arc::new(Lineages::default());
        let now = Instant::now();
        let mut mine = lineages.register(ip("192.0.2.1"), now);
        mine.logged_in("alice");
        let data = mine.for_data();
        let wait = Duration::from_secs(60);

        let mut same_user = lineages.register(ip("192.0.2.1"), now);
        let (accepted, ()) = tokio::join!(data.accepts(same_user.id(), wait, now), async {
            tokio::task::yield_now().await;
            same_user.logged_in("alice");
        });
        assert!(accepted);

        let mut other_user = lineages.register(ip("192.0.2.1"), now);
        let (accepted, ()) = tokio::join!(data.accepts(other_user.id(), wait, now), async {
            tokio::task::yield_now().await;
            other_user.logged_in("bob");
        });
        assert!(!accepted);

        let gone = lineages.register(ip("192.0.2.1"), now);
        let gone_id = gone.id();
        let (accepted, ()) = tokio::join!(data.accepts(gone_id, wait, now), async {
            tokio::task::yield_now().await;
            drop(gone);
        });
        assert!(!accepted);
    }
}
