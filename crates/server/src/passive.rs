//! The passive port pool: data listeners only ever bind inside the configured range, so a
//! firewall can be opened for exactly those ports. The pool never falls back to a port
//! outside the range (ProFTPD does, NAT.html): when every port is taken the client gets 425.
//!
//! A port stays taken from PASV until its data connection ends. After that, the same
//! (port, client) pair is not handed out again for `reuse_delay` while another free port
//! exists: the old connection may sit in TIME_WAIT, and a client that also reused its source
//! port would collide with it. When only such ports are free, the one whose cooldown is
//! oldest is reused rather than refusing service (counted, logged at debug).

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// Hands out listeners on ports of one range, each port to one session at a time.
#[derive(Debug)]
pub struct PassivePortPool {
    range: RangeInclusive<u16>,
    reuse_delay: Duration,
    state: Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    in_use: HashSet<u16>,
    /// When each (port, client) pair last carried a data connection.
    last_used: HashMap<(u16, IpAddr), Instant>,
}

/// A bound passive listener for one client. Dropped unused, its port is free at once;
/// turned into a [`PortLease`] once the client connected.
#[derive(Debug)]
pub(crate) struct PassiveListener {
    pub(crate) listener: TcpListener,
    lease: PortLease,
}

/// Keeps a port taken; when dropped after a data connection, starts the port's cooldown
/// for that client.
#[derive(Debug)]
pub(crate) struct PortLease {
    port: u16,
    client: IpAddr,
    pool: Arc<PassivePortPool>,
    connected: bool,
}

/// Why no listener could be bound.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PassiveError {
    #[error("every port of the passive range is in use")]
    Exhausted,
    #[error("binding a passive listener failed: {0}")]
    Bind(io::Error),
}

impl PassivePortPool {
    /// A pool over `range` (inclusive).
    pub fn new(range: RangeInclusive<u16>, reuse_delay: Duration) -> Self {
        Self {
            range,
            reuse_delay,
            state: Mutex::new(PoolState::default()),
        }
    }

    /// Ports held by sessions now.
    pub fn ports_in_use(&self) -> usize {
        self.lock().in_use.len()
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
    ) -> Result<PassiveListener, PassiveError> {
        let client = client.to_canonical();
        let first = u32::from(*self.range.start());
        let count = u32::from(*self.range.end()) - first + 1;
        let start = rand::thread_rng().gen_range(0..count);
        let now = Instant::now();
        let mut state = self.lock();
        if state.last_used.len() > 4 * count as usize {
            state
                .last_used
                .retain(|_, used| now.duration_since(*used) < self.reuse_delay);
        }
        let mut cooling: Option<(u16, Instant)> = None;
        let mut last_error = None;
        for step in 0..count {
            let port = (first + (start + step) % count) as u16;
            if state.in_use.contains(&port) {
                continue;
            }
            if let Some(&used) = state.last_used.get(&(port, client))
                && now.duration_since(used) < self.reuse_delay
            {
                if cooling.is_none_or(|(_, oldest)| used < oldest) {
                    cooling = Some((port, used));
                }
                continue;
            }
            match self.try_bind(&mut state, ip, port, client) {
                Ok(listener) => return Ok(listener),
                Err(error) => last_error = error,
            }
        }
        if let Some((port, _)) = cooling {
            match self.try_bind(&mut state, ip, port, client) {
                Ok(listener) => {
                    metrics::counter!("ferroftp_passive_early_reuse_total").increment(1);
                    tracing::debug!(port, %client, "passive port reused within its reuse delay");
                    return Ok(listener);
                }
                Err(error) => last_error = last_error.or(error),
            }
        }
        metrics::counter!("ferroftp_passive_exhausted_total").increment(1);
        Err(last_error.map_or(PassiveError::Exhausted, PassiveError::Bind))
    }

    /// Binds one port; `Err(None)` when another process holds it.
    fn try_bind(
        self: &Arc<Self>,
        state: &mut PoolState,
        ip: IpAddr,
        port: u16,
        client: IpAddr,
    ) -> Result<PassiveListener, Option<io::Error>> {
        match bind_listener(SocketAddr::new(ip, port)) {
            Ok(listener) => {
                state.in_use.insert(port);
                let lease = PortLease {
                    port,
                    client,
                    pool: Arc::clone(self),
                    connected: false,
                };
                Ok(PassiveListener { listener, lease })
            }
            Err(error) if error.kind() == io::ErrorKind::AddrInUse => Err(None),
            Err(error) => Err(Some(error)),
        }
    }

    fn release(&self, port: u16, used_by: Option<IpAddr>) {
        let mut state = self.lock();
        state.in_use.remove(&port);
        if let Some(client) = used_by {
            state.last_used.insert((port, client), Instant::now());
        }
    }
}

fn bind_listener(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    // A port whose last data connection is in TIME_WAIT can still be listened on.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    // One data connection per listener; a small backlog leaves no room for a queue of
    // strangers.
    socket.listen(4)?;
    TcpListener::from_std(socket.into())
}

impl PassiveListener {
    /// The bound port.
    pub(crate) fn port(&self) -> u16 {
        self.lease.port
    }

    /// The data connection was accepted: stop listening, keep the port until the
    /// connection ends.
    pub(crate) fn into_lease(self) -> PortLease {
        let mut lease = self.lease;
        lease.connected = true;
        lease
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool
            .release(self.port, self.connected.then_some(self.client));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A base port with `count` free ports after it. Each test searches its own region
    /// (`region` 0..4) so tests running in parallel never pick the same ports.
    fn free_base(count: u16, region: u16) -> u16 {
        let start = 42000 + region * 4000;
        for base in (start..start + 4000 - count).step_by(97) {
            let all_free = (base..base + count)
                .all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
            if all_free {
                return base;
            }
        }
        panic!("no free port range");
    }

    const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn ports_stay_inside_the_range_and_exhaustion_is_reported() {
        let base = free_base(2, 0);
        let pool = Arc::new(PassivePortPool::new(
            base..=base + 1,
            Duration::from_secs(60),
        ));
        let a = pool.bind(LOCALHOST, LOCALHOST).unwrap();
        let b = pool.bind(LOCALHOST, LOCALHOST).unwrap();
        assert!((base..=base + 1).contains(&a.port()));
        assert!((base..=base + 1).contains(&b.port()));
        assert_ne!(a.port(), b.port());
        assert!(matches!(
            pool.bind(LOCALHOST, LOCALHOST),
            Err(PassiveError::Exhausted)
        ));
        // An unused listener frees its port at once, with no cooldown.
        let freed = a.port();
        drop(a);
        assert_eq!(pool.bind(LOCALHOST, LOCALHOST).unwrap().port(), freed);
    }

    #[tokio::test]
    async fn a_used_port_cools_down_for_that_client_only() {
        let base = free_base(2, 1);
        let pool = Arc::new(PassivePortPool::new(
            base..=base + 1,
            Duration::from_secs(60),
        ));
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..10 {
            let first = pool.bind(LOCALHOST, LOCALHOST).unwrap();
            let used = first.port();
            drop(first.into_lease());
            // The same client gets the other port while `used` cools down …
            let next = pool.bind(LOCALHOST, LOCALHOST).unwrap();
            assert_ne!(next.port(), used);
            drop(next);
            // … another client may have it.
            let _ = pool.bind(LOCALHOST, other).unwrap();
            // Reset: both ports' cooldowns for LOCALHOST are cleared by a fresh pool state.
            pool.lock().last_used.clear();
        }
    }

    #[tokio::test]
    async fn when_every_free_port_cools_down_the_oldest_is_reused() {
        let base = free_base(2, 2);
        let pool = Arc::new(PassivePortPool::new(
            base..=base + 1,
            Duration::from_secs(60),
        ));
        let first = pool.bind(LOCALHOST, LOCALHOST).unwrap();
        let first_port = first.port();
        drop(first.into_lease());
        let second = pool.bind(LOCALHOST, LOCALHOST).unwrap();
        drop(second.into_lease());
        // Both cool down for this client: the older one is handed out rather than a 425.
        assert_eq!(pool.bind(LOCALHOST, LOCALHOST).unwrap().port(), first_port);
    }

    #[tokio::test]
    async fn a_lease_keeps_its_port_taken() {
        let base = free_base(1, 3);
        let pool = Arc::new(PassivePortPool::new(base..=base, Duration::ZERO));
        let lease = pool.bind(LOCALHOST, LOCALHOST).unwrap().into_lease();
        assert!(matches!(
            pool.bind(LOCALHOST, LOCALHOST),
            Err(PassiveError::Exhausted)
        ));
        drop(lease);
        assert!(pool.bind(LOCALHOST, LOCALHOST).is_ok());
    }
}
