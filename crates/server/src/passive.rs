//! The passive port pool: data listeners only ever bind inside the configured range, so a
//! firewall can be opened for exactly those ports. The pool never falls back to a port
//! outside the range (ProFTPD does, NAT.html): when every port is taken the client gets 425.
//!
//! A port stays taken from PASV until its data connection ends. After that, the same
//! (port, client) pair is not handed out again for `reuse_delay` while another free port
//! exists: the old connection may sit in TIME_WAIT, and a client that also reused its source
//! port would collide with it. When only such ports are free, the one whose cooldown is
//! oldest is reused rather than refusing service (counted, logged at debug).
//!
//! The state is one slot per port of the range, so a PASV costs one pass over a small array
//! (no hashing): with a long-lived client every port may be cooling for it, and each PASV
//! then looks at every port.
//!
//! No one account and no one client address may hold the whole range ([`PassiveLimits`]):
//! the ports held (bound listeners and their data connections, until they end) are counted
//! per user and per client address, and a PASV past either cap gets 425 at once.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

/// Hands out listeners on ports of one range, each port to one session at a time.
#[derive(Debug)]
pub struct PassivePortPool {
    range: RangeInclusive<u16>,
    reuse_delay: Duration,
    state: Mutex<PoolState>,
}

/// Most passive ports held at once by one user (all their sessions, from any address) and
/// by one client address (all its sessions, any user).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassiveLimits {
    /// `passive.max_per_user`.
    pub per_user: usize,
    /// `passive.max_per_client`.
    pub per_client: usize,
}

impl PassiveLimits {
    /// The defaults for a range of `ports` ports: a quarter of the range per user and half of
    /// it per client address (rounded up, at least 1), so that holding the whole range takes
    /// four accounts and two addresses, while one address behind which several users sit (a
    /// NAT, an office) still gets half of it.
    pub fn for_range(ports: usize) -> Self {
        Self {
            per_user: ports.div_ceil(4).max(1),
            per_client: ports.div_ceil(2).max(1),
        }
    }
}

#[derive(Debug)]
struct PoolState {
    /// Slot `i` is port `range.start() + i`.
    slots: Vec<PortSlot>,
    limits: PassiveLimits,
    /// Ports held per user and per client address (entries removed at zero).
    held_by_user: HashMap<Arc<str>, usize>,
    held_by_client: HashMap<IpAddr, usize>,
}

impl PoolState {
    /// The free port that cools down for `client` with the oldest use (ties by port number)
    /// after `after` in that order: each call is one pass over the slots, and a port that
    /// failed to bind is passed as `after` to get the next.
    fn oldest_cooling_after(
        &self,
        range: &RangeInclusive<u16>,
        client: IpAddr,
        cooled: Option<Instant>,
        after: Option<(Instant, u16)>,
    ) -> Option<(Instant, u16)> {
        range
            .clone()
            .zip(&self.slots)
            .filter(|(_, slot)| !slot.in_use)
            .filter_map(|(port, slot)| Some((slot.cooling_since(client, cooled)?, port)))
            .filter(|candidate| after.is_none_or(|after| *candidate > after))
            .min()
    }
}

/// Clients remembered per port for the reuse delay. A port used by more clients within the
/// delay forgets the longest-ago one (which may then get the port early: rare, and only an
/// early reuse, never a failure).
const RECENT_CLIENTS_PER_PORT: usize = 4;

/// How long a port that another socket held (bind: EADDRINUSE) is passed over before it
/// is tried again. Such a port is usually held by a connection of this host's own in
/// TIME_WAIT whose ephemeral source port fell in the range (60 s on Linux): a client on
/// the same host, or the server's own outgoing connections (active mode, an object store).
/// Without the memo every PASV tried each of them again: measured on loopback with 11,000
/// connections in TIME_WAIT, 42 failed binds (socket, setsockopt, bind, close) per PASV.
const HELD_ELSEWHERE_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct PortSlot {
    in_use: bool,
    /// When a bind of this port last failed because another socket held it.
    held_elsewhere_since: Option<Instant>,
    /// When the port last carried a data connection of each of its recent clients. Inline,
    /// so a pass over the slots reads one contiguous array.
    recent: [Option<(IpAddr, Instant)>; RECENT_CLIENTS_PER_PORT],
}

impl PortSlot {
    /// When `client` last used this port, if it is still cooling down for them: if that
    /// use came after `cooled` (now minus the reuse delay; `None` when the clock is younger
    /// than the delay, so every use is recent).
    fn cooling_since(&self, client: IpAddr, cooled: Option<Instant>) -> Option<Instant> {
        self.recent
            .iter()
            .flatten()
            .find(|(recent, _)| *recent == client)
            .map(|&(_, used)| used)
            .filter(|used| cooled.is_none_or(|cooled| *used > cooled))
    }

    /// Whether another socket held this port less than [`HELD_ELSEWHERE_RETRY`] ago.
    fn held_elsewhere(&self, now: Instant) -> bool {
        self.held_elsewhere_since
            .is_some_and(|since| now.saturating_duration_since(since) < HELD_ELSEWHERE_RETRY)
    }

    fn record_use(&mut self, client: IpAddr, now: Instant) {
        let entries = &mut self.recent;
        if let Some(entry) = entries
            .iter_mut()
            .flatten()
            .find(|(recent, _)| *recent == client)
        {
            entry.1 = now;
        } else if let Some(empty) = entries.iter_mut().find(|entry| entry.is_none()) {
            *empty = Some((client, now));
        } else if let Some(oldest) = entries
            .iter_mut()
            .min_by_key(|entry| entry.map(|(_, used)| used))
        {
            *oldest = Some((client, now));
        }
    }
}

/// A bound passive listener for one client. Dropped unused, its port is free at once;
/// turned into a [`PortLease`] once the client connected.
///
/// The listener joins the event loop only if its client has not connected by the time the
/// transfer command needs the connection. Most clients connect right after the PASV reply,
/// before sending the command, so the connection is taken with one non-blocking accept and
/// the listener never costs an epoll registration nor a wake-up when the client connects.
#[derive(Debug)]
pub(crate) struct PassiveListener {
    listener: Listening,
    lease: PortLease,
}

#[derive(Debug)]
enum Listening {
    /// Non-blocking, not registered with the event loop.
    Bound(std::net::TcpListener),
    Registered(TcpListener),
    /// Only while switching from one to the other.
    Switching,
}

/// Keeps a port taken; when dropped after a data connection, starts the port's cooldown
/// for that client.
#[derive(Debug)]
pub(crate) struct PortLease {
    port: u16,
    client: IpAddr,
    user: Arc<str>,
    pool: Arc<PassivePortPool>,
    connected: bool,
}

/// Why no listener could be bound.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PassiveError {
    #[error("every port of the passive range is in use")]
    Exhausted,
    #[error("the user holds {0} passive ports already (passive.max_per_user)")]
    UserLimit(usize),
    #[error("the client address holds {0} passive ports already (passive.max_per_client)")]
    ClientLimit(usize),
    #[error("binding a passive listener failed: {0}")]
    Bind(io::Error),
}

impl PassivePortPool {
    /// A pool over `range` (inclusive), with the default [`PassiveLimits`] for its size.
    pub fn new(range: RangeInclusive<u16>, reuse_delay: Duration) -> Self {
        let slots: Vec<PortSlot> = range.clone().map(|_| PortSlot::default()).collect();
        let limits = PassiveLimits::for_range(slots.len());
        Self {
            range,
            reuse_delay,
            state: Mutex::new(PoolState {
                slots,
                limits,
                held_by_user: HashMap::new(),
                held_by_client: HashMap::new(),
            }),
        }
    }

    /// Sets the caps; ports already held stay held (a lower cap applies to the next PASV).
    pub fn set_limits(&self, limits: PassiveLimits) {
        self.lock().limits = limits;
    }

    /// The caps in force.
    pub fn limits(&self) -> PassiveLimits {
        self.lock().limits
    }

    /// Ports held by sessions now (counted: asked only when reporting an exhausted range).
    pub fn ports_in_use(&self) -> usize {
        self.lock().slots.iter().filter(|slot| slot.in_use).count()
    }

    /// Ports of the range.
    pub fn capacity(&self) -> usize {
        self.range.clone().count()
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Binds a listener on `ip` at a free port of the range for `client`, starting from a
    /// random port so the next one cannot be guessed (a third party racing for the data
    /// connection).
    pub(crate) fn bind(
        self: &Arc<Self>,
        ip: IpAddr,
        client: IpAddr,
        user: &str,
    ) -> Result<PassiveListener, PassiveError> {
        let client = client.to_canonical();
        let first = u32::from(*self.range.start());
        let count = u32::from(*self.range.end()) - first + 1;
        let start = rand::rng().random_range(0..count);
        // One subtraction here instead of a duration per port in the loop.
        let now = Instant::now();
        let cooled = now.checked_sub(self.reuse_delay);
        let mut state = self.lock();
        let held_by_user = state.held_by_user.get(user).copied().unwrap_or(0);
        if held_by_user >= state.limits.per_user {
            return Err(PassiveError::UserLimit(held_by_user));
        }
        let held_by_client = state.held_by_client.get(&client).copied().unwrap_or(0);
        if held_by_client >= state.limits.per_client {
            return Err(PassiveError::ClientLimit(held_by_client));
        }
        let user: Arc<str> = Arc::from(user);
        // The same pass finds the port that cools down for this client since the longest,
        // for when every free port does.
        let mut oldest_cooling: Option<(Instant, u16)> = None;
        let mut last_error = None;
        let mut passed_over_held = false;
        // From the random start to the end, then from the beginning: no division per port.
        for offset in (start..count).chain(0..start) {
            let port = (first + offset) as u16;
            let offset = offset as usize;
            let slot = &state.slots[offset];
            if slot.in_use {
                continue;
            }
            if slot.held_elsewhere(now) {
                passed_over_held = true;
                continue;
            }
            if let Some(used) = slot.cooling_since(client, cooled) {
                if oldest_cooling.is_none_or(|oldest| (used, port) < oldest) {
                    oldest_cooling = Some((used, port));
                }
                continue;
            }
            match self.try_bind(&mut state, ip, port, client, &user) {
                Ok(listener) => return Ok(listener),
                Err(error) => last_error = error,
            }
        }
        // Every free port is cooling down for this client: reuse the one it used longest
        // ago, or, if that one cannot be bound (another socket holds it), the next oldest.
        let mut candidate = oldest_cooling;
        while let Some((used, port)) = candidate {
            match self.try_bind(&mut state, ip, port, client, &user) {
                Ok(listener) => {
                    crate::telemetry::passive_early_reuse();
                    tracing::debug!(port, %client, "passive port reused within its reuse delay");
                    return Ok(listener);
                }
                Err(error) => last_error = last_error.or(error),
            }
            candidate = state.oldest_cooling_after(&self.range, client, cooled, Some((used, port)));
        }
        // Last: the ports another socket held a moment ago may be free again.
        if passed_over_held {
            for offset in 0..state.slots.len() {
                let slot = &state.slots[offset];
                if slot.in_use || !slot.held_elsewhere(now) {
                    continue;
                }
                let port = (first + offset as u32) as u16;
                match self.try_bind(&mut state, ip, port, client, &user) {
                    Ok(listener) => return Ok(listener),
                    Err(error) => last_error = last_error.or(error),
                }
            }
        }
        crate::telemetry::passive_exhausted();
        Err(last_error.map_or(PassiveError::Exhausted, PassiveError::Bind))
    }

    /// Binds one port; `Err(None)` when another process holds it.
    fn try_bind(
        self: &Arc<Self>,
        state: &mut PoolState,
        ip: IpAddr,
        port: u16,
        client: IpAddr,
        user: &Arc<str>,
    ) -> Result<PassiveListener, Option<io::Error>> {
        let offset = self.offset_of(port);
        match bind_listener(SocketAddr::new(ip, port)) {
            Ok(listener) => {
                let slot = &mut state.slots[offset];
                slot.in_use = true;
                slot.held_elsewhere_since = None;
                *state.held_by_user.entry(Arc::clone(user)).or_default() += 1;
                *state.held_by_client.entry(client).or_default() += 1;
                let lease = PortLease {
                    port,
                    client,
                    user: Arc::clone(user),
                    pool: Arc::clone(self),
                    connected: false,
                };
                Ok(PassiveListener {
                    listener: Listening::Bound(listener),
                    lease,
                })
            }
            Err(error) if error.kind() == io::ErrorKind::AddrInUse => {
                state.slots[offset].held_elsewhere_since = Some(Instant::now());
                Err(None)
            }
            Err(error) => Err(Some(error)),
        }
    }

    fn release(&self, lease: &PortLease) {
        let offset = self.offset_of(lease.port);
        let mut state = self.lock();
        let slot = &mut state.slots[offset];
        slot.in_use = false;
        if lease.connected {
            slot.record_use(lease.client, Instant::now());
        }
        if let Some(held) = state.held_by_user.get_mut(&lease.user) {
            *held -= 1;
            if *held == 0 {
                state.held_by_user.remove(&lease.user);
            }
        }
        if let Some(held) = state.held_by_client.get_mut(&lease.client) {
            *held -= 1;
            if *held == 0 {
                state.held_by_client.remove(&lease.client);
            }
        }
    }

    fn offset_of(&self, port: u16) -> usize {
        usize::from(port - *self.range.start())
    }
}

fn bind_listener(address: SocketAddr) -> io::Result<std::net::TcpListener> {
    // Non-blocking from creation: no fcntl pair on every PASV.
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    // A port whose last data connection is in TIME_WAIT can still be listened on.
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    // Accepted connections inherit it: one setsockopt per PASV rather than per connection
    // of every listener (a data connection's last segment must not wait for an ACK).
    socket.set_tcp_nodelay(true)?;
    // One data connection per listener; a small backlog leaves no room for a queue of
    // strangers.
    socket.listen(4)?;
    Ok(socket.into())
}

impl PassiveListener {
    /// The bound port.
    pub(crate) fn port(&self) -> u16 {
        self.lease.port
    }

    /// The next connection to the port, non-blocking and with `TCP_NODELAY` set. A
    /// connection already waiting is taken at once; otherwise the listener is registered
    /// with the event loop and awaited.
    pub(crate) async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        if let Listening::Bound(listener) = &self.listener {
            match rustix::net::acceptfrom_with(
                listener,
                rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC,
            ) {
                Ok((socket, peer)) => {
                    // A TCP listener's peers always have an IP address.
                    let peer = peer.as_ref().and_then(peer_address).ok_or_else(|| {
                        io::Error::other("accepted a connection without an IP address")
                    })?;
                    let stream = std::net::TcpStream::from(socket);
                    return Ok((TcpStream::from_std(stream)?, peer));
                }
                Err(rustix::io::Errno::AGAIN) => {}
                Err(error) => return Err(error.into()),
            }
            let Listening::Bound(listener) =
                std::mem::replace(&mut self.listener, Listening::Switching)
            else {
                unreachable!("matched above");
            };
            self.listener = Listening::Registered(TcpListener::from_std(listener)?);
        }
        match &self.listener {
            Listening::Registered(listener) => listener.accept().await,
            Listening::Bound(_) | Listening::Switching => {
                Err(io::Error::other("passive listener in an unusable state"))
            }
        }
    }

    /// The data connection was accepted: stop listening, keep the port until the
    /// connection ends.
    pub(crate) fn into_lease(self) -> PortLease {
        let mut lease = self.lease;
        lease.connected = true;
        lease
    }
}

fn peer_address(address: &rustix::net::SocketAddrAny) -> Option<SocketAddr> {
    SocketAddr::try_from(address.clone()).ok()
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool.release(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A base port with `count` free ports after it. Each test searches its own region
    /// (`region` 0..8, each used once) so tests running in parallel never pick the same
    /// ports; all regions lie above the kernel's ephemeral range (32768-60999), where no
    /// outgoing connection of another process takes a port between this check and the
    /// test's bind.
    fn free_base(count: u16, region: u16) -> u16 {
        let start = 61000 + region * 500;
        for base in (start..start + 500 - count).step_by(97) {
            let all_free = (base..base + count)
                .all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
            if all_free {
                return base;
            }
        }
        panic!("no free port range");
    }

    /// A pool without per-user and per-client caps, for the tests of the port choice.
    fn uncapped(pool: PassivePortPool) -> Arc<PassivePortPool> {
        pool.set_limits(PassiveLimits {
            per_user: usize::MAX,
            per_client: usize::MAX,
        });
        Arc::new(pool)
    }

    const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn ports_stay_inside_the_range_and_exhaustion_is_reported() {
        let base = free_base(2, 0);
        let pool = uncapped(PassivePortPool::new(
            base..=base + 1,
            Duration::from_secs(60),
        ));
        let a = pool.bind(LOCALHOST, LOCALHOST, "alice").unwrap();
        let b = pool.bind(LOCALHOST, LOCALHOST, "alice").unwrap();
        assert!((base..=base + 1).contains(&a.port()));
        assert!((base..=base + 1).contains(&b.port()));
        assert_ne!(a.port(), b.port());
        assert!(matches!(
            pool.bind(LOCALHOST, LOCALHOST, "alice"),
            Err(PassiveError::Exhausted)
        ));
        // An unused listener frees its port at once, with no cooldown.
        let freed = a.port();
        drop(a);
        assert_eq!(
            pool.bind(LOCALHOST, LOCALHOST, "alice").unwrap().port(),
            freed
        );
    }

    #[tokio::test]
    async fn a_used_port_cools_down_for_that_client_only() {
        let base = free_base(2, 1);
        let pool = uncapped(PassivePortPool::new(
            base..=base + 1,
            Duration::from_secs(60),
        ));
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..10 {
            let first = pool.bind(LOCALHOST, LOCALHOST, "alice").unwrap();
            let used = first.port();
            drop(first.into_lease());
            // The same client gets the other port while `used` cools down …
            let next = pool.bind(LOCALHOST, LOCALHOST, "alice").unwrap();
            assert_ne!(next.port(), used);
            drop(next);
            // … another client may have it.
            let _ = pool.bind(LOCALHOST, other, "alice").unwrap();
            // Reset: both ports' cooldowns for LOCALHOST are cleared by a fresh pool state.
            for slot in &mut pool.lock().slots {
                slot.recent = Default::default();
            }
        }
    }

    #[tokio::test]
    async fn connections_made_before_and_after_accept_is_asked_are_taken_with_nodelay() {
        let base = free_base(1, 7);
        let pool = uncapped(PassivePortPool::new(base..=base, Duration::ZERO));
        let address = SocketAddr::new(LOCALHOST, base);
        // The client connected before the transfer command: one non-blocking accept.
        let mut early = pool.bind(LOCALHOST, LOCALHOST, "alice").unwrap();
        let client = tokio::net::TcpStream::connect(address).await.unwrap();
        let (accepted, peer) = early.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert!(accepted.nodelay().unwrap());
        assert!(matches!(early.listener, Listening::Bound(_)));
        drop((early, accepted, client));
        // The client connects only later: the listener joins the event loop and waits.
        let mut late = pool.bind(LOCALHOST, LOCALHOST, "alice").unwrap();
        let (accepted, client) = tokio::join!(late.accept(), async {
            tokio::task::yield_now().await;
            tokio::net::TcpStream::connect(address).await.unwrap()
        });
        let (accepted, peer) = accepted.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert!(accepted.nodelay().unwrap());
        assert!(matches!(late.listener, Listening::Registered(_)));
    }

    #[tokio::test]
    async fn when_every_free_port_cools_down_the_oldest_is_reused() {
        let base = free_base(2, 2);
        let pool = uncapped(PassivePortPool::new(
            base..=base + 1,
            Duration::from_secs(60),
        ));
        let first = pool.bind(LOCALHOST, LOCALHOST, "alice").unwrap();
        let first_port = first.port();
        drop(first.into_lease());
        let second = pool.bind(LOCALHOST, LOCALHOST, "alice").unwrap();
        drop(second.into_lease());
        // Both cool down for this client: the older one is handed out rather than a 425.
        assert_eq!(
            pool.bind(LOCALHOST, LOCALHOST, "alice").unwrap().port(),
            first_port
        );
    }

    #[test]
    fn a_port_remembers_its_most_recent_clients() {
        let mut slot = PortSlot::default();
        let start = Instant::now();
        let delay = Duration::from_secs(60);
        let client = |n: u8| IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, n));
        for n in 0..=RECENT_CLIENTS_PER_PORT as u8 {
            slot.record_use(client(n), start + Duration::from_secs(u64::from(n)));
        }
        let now = start + Duration::from_secs(10);
        let cooled = now.checked_sub(delay);
        // The first client was the longest ago and made room for the last one.
        assert_eq!(slot.cooling_since(client(0), cooled), None);
        for n in 1..=RECENT_CLIENTS_PER_PORT as u8 {
            assert_eq!(
                slot.cooling_since(client(n), cooled),
                Some(start + Duration::from_secs(u64::from(n)))
            );
        }
        // A repeat use by a remembered client updates its time instead of adding it again.
        slot.record_use(client(2), now);
        assert_eq!(
            slot.recent.iter().flatten().count(),
            RECENT_CLIENTS_PER_PORT
        );
        assert_eq!(slot.cooling_since(client(2), cooled), Some(now));
        // Once the delay has passed, nobody is cooling any more.
        assert_eq!(slot.cooling_since(client(2), Some(now)), None);
    }

    #[tokio::test]
    async fn a_cooling_port_held_elsewhere_is_skipped_for_the_next_oldest() {
        let base = free_base(3, 4);
        let pool = uncapped(PassivePortPool::new(
            base..=base + 2,
            Duration::from_secs(60),
        ));
        let mut order = Vec::new();
        for _ in 0..3 {
            let listener = pool.bind(LOCALHOST, LOCALHOST, "alice").unwrap();
            order.push(listener.port());
            drop(listener.into_lease());
        }
        // All three cool down for this client; the oldest is taken by another socket.
        let squatter = std::net::TcpListener::bind((LOCALHOST, order[0])).unwrap();
        assert_eq!(
            pool.bind(LOCALHOST, LOCALHOST, "alice").unwrap().port(),
            order[1]
        );
        drop(squatter);
    }

    #[tokio::test]
    async fn a_port_held_elsewhere_is_passed_over_until_no_other_is_free() {
        let base = free_base(2, 5);
        let pool = uncapped(PassivePortPool::new(
            base..=base + 1,
            Duration::from_secs(60),
        ));
        let squatter = std::net::TcpListener::bind((LOCALHOST, base)).unwrap();
        // Every PASV gets the free port. The scan starts at a random port, so the held one is
        // tried only by a scan that starts there: one in two, and at the latest within 64
        // PASVs but for a chance of 2^-64 (four tries failed this once in 16 runs).
        let held_since = (0..64)
            .find_map(|_| {
                let listener = pool.bind(LOCALHOST, LOCALHOST, "alice").unwrap();
                assert_eq!(listener.port(), base + 1);
                drop(listener);
                pool.lock().slots[0].held_elsewhere_since
            })
            .expect("no scan in 64 started at the held port");
        // Once found held, it is passed over whatever the start: never tried again meanwhile.
        for _ in 0..8 {
            let listener = pool.bind(LOCALHOST, LOCALHOST, "alice").unwrap();
            assert_eq!(listener.port(), base + 1);
            drop(listener);
            assert_eq!(pool.lock().slots[0].held_elsewhere_since, Some(held_since));
        }
        // With the other port taken, the held one is tried again: free now, it is bound.
        let other = pool.bind(LOCALHOST, LOCALHOST, "alice").unwrap();
        drop(squatter);
        let again = pool.bind(LOCALHOST, LOCALHOST, "alice").unwrap();
        assert_eq!(again.port(), base);
        assert!(pool.lock().slots[0].held_elsewhere_since.is_none());
        drop(other);
    }

    #[tokio::test]
    async fn a_lease_keeps_its_port_taken() {
        let base = free_base(1, 3);
        let pool = uncapped(PassivePortPool::new(base..=base, Duration::ZERO));
        let lease = pool
            .bind(LOCALHOST, LOCALHOST, "alice")
            .unwrap()
            .into_lease();
        assert!(matches!(
            pool.bind(LOCALHOST, LOCALHOST, "alice"),
            Err(PassiveError::Exhausted)
        ));
        drop(lease);
        assert!(pool.bind(LOCALHOST, LOCALHOST, "alice").is_ok());
    }

    #[tokio::test]
    async fn ports_held_are_capped_per_user_and_per_client_address() {
        let base = free_base(8, 6);
        let pool = Arc::new(PassivePortPool::new(
            base..=base + 7,
            Duration::from_secs(60),
        ));
        // Defaults for 8 ports: 2 per user, 4 per client address.
        assert_eq!(
            pool.limits(),
            PassiveLimits {
                per_user: 2,
                per_client: 4
            }
        );
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let a = pool.bind(LOCALHOST, LOCALHOST, "alice").unwrap();
        let b = pool.bind(LOCALHOST, other, "alice").unwrap().into_lease();
        // alice holds 2 from two addresses: a third is refused from either.
        assert!(matches!(
            pool.bind(LOCALHOST, other, "alice"),
            Err(PassiveError::UserLimit(2))
        ));
        // Other users from the same address, up to the address's 4.
        let c = pool.bind(LOCALHOST, LOCALHOST, "bob").unwrap();
        let d = pool.bind(LOCALHOST, LOCALHOST, "carol").unwrap();
        let e = pool.bind(LOCALHOST, LOCALHOST, "dave").unwrap();
        assert!(matches!(
            pool.bind(LOCALHOST, LOCALHOST, "erin"),
            Err(PassiveError::ClientLimit(4))
        ));
        assert!(pool.bind(LOCALHOST, other, "erin").is_ok());
        // Only ports held count: a listener dropped or a data connection ended frees its share.
        drop(a);
        let a = pool.bind(LOCALHOST, LOCALHOST, "alice").unwrap();
        drop(b);
        assert!(pool.bind(LOCALHOST, other, "alice").is_ok());
        drop((a, c, d, e));
        assert!(pool.lock().held_by_user.is_empty());
        assert!(pool.lock().held_by_client.is_empty());
    }
}
