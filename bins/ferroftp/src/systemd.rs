//! systemd integration without libsystemd: readiness notifications (`sd_notify(3)`, a
//! datagram to `NOTIFY_SOCKET`) and socket activation (`sd_listen_fds(3)`: listening
//! sockets inherited from file descriptor 3 on). Outside systemd both do nothing.

use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use anyhow::{Context, bail};
use sd_notify::NotifyState;

/// Tells the service manager something; errors are logged, never fatal (a server must not
/// stop because its supervisor went away).
fn notify(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(error) = sd_notify::notify(states) {
        tracing::debug!(%error, "sd_notify failed");
    }
}

/// `READY=1` with the status line: the listeners are up.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` (with the monotonic time systemd asks for) before a reload.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    notify(&states);
}

/// `READY=1` after a reload, with the status line.
pub fn reloaded(status: &str) {
    ready(status);
}

/// `STOPPING=1`: the drain has begun.
pub fn stopping(status: &str) {
    notify(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// `STATUS=…`: shown by `systemctl status`.
pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// `WATCHDOG=1`.
pub fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}

/// How often to send `WATCHDOG=1`: half the interval systemd set (`WatchdogSec=`).
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|interval| interval / 2)
}

/// A listening socket handed over by the service manager.
#[derive(Debug)]
pub struct InheritedListener {
    /// Its name (`FileDescriptorName=` in the .socket unit, `--fdname` of
    /// systemd-socket-activate); `None` when none was given.
    pub name: Option<String>,
    /// The socket.
    pub listener: TcpListener,
}

/// The listening sockets passed by socket activation, in order; empty when the process was
/// not socket-activated (`LISTEN_PID` is not ours or `LISTEN_FDS` is unset).
pub fn inherited_listeners() -> anyhow::Result<Vec<InheritedListener>> {
    let fds: Vec<RawFd> = sd_notify::listen_fds()
        .context("reading LISTEN_FDS")?
        .collect();
    if fds.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<Option<String>> = match std::env::var("LISTEN_FDNAMES") {
        Ok(names) => names
            .split(':')
            // systemd names unnamed sockets "unknown".
            .map(|name| (!name.is_empty() && name != "unknown").then(|| name.to_owned()))
            .collect(),
        Err(_) => Vec::new(),
    };
    let mut listeners = Vec::with_capacity(fds.len());
    for (index, fd) in fds.into_iter().enumerate() {
        // SAFETY: sd_listen_fds(3): when LISTEN_PID is this process (checked by
        // `listen_fds`), descriptors 3 .. 3+LISTEN_FDS are open and passed to this process
        // to own; nothing else in it opened or uses them (they were inherited before main,
        // and this function runs once, at start, before any other descriptor is handed out
        // under these numbers). Each number is taken exactly once, here, so the OwnedFd is
        // the only owner and closes it exactly once.
        #[allow(unsafe_code)]
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let accepting = rustix::net::sockopt::socket_acceptconn(&owned)
            .with_context(|| format!("inherited descriptor {fd} is not a socket"))?;
        let kind = rustix::net::sockopt::socket_type(&owned)
            .with_context(|| format!("inherited descriptor {fd} is not a socket"))?;
        if !accepting || kind != rustix::net::SocketType::STREAM {
            bail!(
                "inherited descriptor {fd} is not a listening TCP socket \
                 (use ListenStream= in the .socket unit)"
            );
        }
        listeners.push(InheritedListener {
            name: names.get(index).cloned().flatten(),
            listener: TcpListener::from(owned),
        });
    }
    Ok(listeners)
}
