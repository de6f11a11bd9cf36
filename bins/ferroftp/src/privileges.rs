//! Dropping root: started as root to bind port 21 (or 990), the server switches to
//! `server.user` (and `server.group`, looked up by `ferroftp_config::Account`) once its
//! listeners are bound, before it serves anyone.
//!
//! The switch goes through the C library (`setgroups`, `setgid`, `setuid`), which on Linux
//! changes the credentials of every thread of the process, not only the calling one: the
//! session threads are already running at this point.

use std::path::Path;

use anyhow::{Context, bail};
use ferroftp_config::Account;
use nix::unistd::{Uid, chown, getuid, setgid, setgroups, setuid};

/// Gives `path` to the account (the storage root and the files the server writes), when
/// the process may.
pub fn take_ownership(account: &Account, path: &Path) -> anyhow::Result<()> {
    chown(path, Some(account.uid()), Some(account.gid()))
        .with_context(|| format!("giving {} to {}", path.display(), account.name()))
}

/// Switches the whole process to the account, for good: supplementary groups, group, then
/// user (in that order: once the user is changed, the groups can no longer be).
pub fn switch_to(account: &Account) -> anyhow::Result<()> {
    if !getuid().is_root() {
        bail!(
            "server.user is {:?} but the server was not started as root; \
             remove server.user or start it as root",
            account.name()
        );
    }
    setgroups(&[account.gid()]).context("setgroups")?;
    setgid(account.gid()).context("setgid")?;
    setuid(account.uid()).context("setuid")?;
    // Proof that it is for good: root cannot be taken back.
    if setuid(Uid::from_raw(0)).is_ok() {
        bail!(
            "root privileges could be regained after switching to {:?}",
            account.name()
        );
    }
    Ok(())
}
