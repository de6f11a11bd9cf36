//! The passive port pool: data listeners only ever bind inside the configured range, so a
//! firewall can be opened for exactly those ports. The pool never falls back to a port
//! outside the range (ProFTPD does, NAT.html): when every port is taken the client gets 425.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};

use rand::Rng;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// Hands out listeners on ports of one range, each port to one session at a time.
#[derive(Debug)]
pub struct PassivePortPool {
    range: RangeInclusive<u16>,
    in_use: Mutex<HashSet<u16>>,
}

/// A bound passive listener; its port returns to the pool when it is dropped.
#[derive(Debug)]
pub(crate) struct PassiveListener {
    pub(crate) listener: TcpListener,
    port: u16,
    pool: Arc<PassivePortPool>,
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
    pub fn new(range: RangeInclusive<u16>) -> Self {
        Self {
            range,
            in_use: Mutex::new(HashSet::new()),
        }
    }

    /// Ports held by sessions now.
    pub fn ports_in_use(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<u16>> {
        self.in_use
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Binds a listener on `ip` at a free port of the range, starting from a random one so
    /// the next port cannot be guessed (a third party racing for the data connection).
    pub(crate) fn bind(self: &Arc<Self>, ip: IpAddr) -> Result<PassiveListener, PassiveError> {
        let first = u32::from(*self.range.start());
        let count = u32::from(*self.range.end()) - first + 1;
        let start = rand::thread_rng().gen_range(0..count);
        let mut last_error = None;
        for step in 0..count {
            let port = (first + (start + step) % count) as u16;
            if !self.lock().insert(port) {
                continue;
            }
            match bind_listener(SocketAddr::new(ip, port)) {
                Ok(listener) => {
                    return Ok(PassiveListener {
                        listener,
                        port,
                        pool: Arc::clone(self),
                    });
                }
                Err(error) => {
                    // Taken by another process, or the address is unusable: try the next.
                    self.lock().remove(&port);
                    if error.kind() != io::ErrorKind::AddrInUse {
                        last_error = Some(error);
                    }
                }
            }
        }
        Err(last_error.map_or(PassiveError::Exhausted, PassiveError::Bind))
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
        self.port
    }
}

impl Drop for PassiveListener {
    fn drop(&mut self) {
        self.pool.lock().remove(&self.port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ports_stay_inside_the_range_and_exhaustion_is_reported() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = probe.local_addr().unwrap().port();
        drop(probe);
        let pool = Arc::new(PassivePortPool::new(base..=base.saturating_add(1)));
        let localhost: IpAddr = "127.0.0.1".parse().unwrap();
        let a = pool.bind(localhost).unwrap();
        let b = pool.bind(localhost).unwrap();
        assert!((base..=base + 1).contains(&a.port()));
        assert!((base..=base + 1).contains(&b.port()));
        assert_ne!(a.port(), b.port());
        assert!(matches!(pool.bind(localhost), Err(PassiveError::Exhausted)));
        let freed = a.port();
        drop(a);
        assert_eq!(pool.bind(localhost).unwrap().port(), freed);
    }
}
