//! Dropping root: started as root to bind port 21 (or 990), the server switches to
//! `server.user` (and `server.group`) once its listeners are bound, before it serves anyone.
//!
//! The switch goes through the C library (`setgroups`, `setgid`, `setuid`), which on Linux
//! changes the credentials of every thread of the process, not only the calling one: the
//! session threads are already running at this point.

use std::path::Path;

use anyhow::{Context, bail};
use nix::unistd::{Gid, Group, Uid, User, chown, getuid, setgid, setgroups, setuid};

/// The account to switch to.
#[derive(Debug, Clone)]
pub struct Account {
    name: String,
    uid: Uid,
    gid: Gid,
}

impl Account {
    /// Looks `user` (and `group`, default the user's primary group) up in the system's
    /// account database.
    pub fn look_up(user: &str, group: Option<&str>) -> anyhow::Result<Self> {
        let found = User::from_name(user)
            .with_context(|| format!("looking up the user {user:?}"))?
            .with_context(|| format!("no such user: {user:?}"))?;
        let gid = match group {
            Some(group) => {
                Group::from_name(group)
                    .with_context(|| format!("looking up the group {group:?}"))?
                    .with_context(|| format!("no such group: {group:?}"))?
                    .gid
            }
            None => found.gid,
        };
        if found.uid.is_root() {
            bail!("server.user {user:?} is root: name an unprivileged account");
        }
        Ok(Self {
            name: user.to_owned(),
            uid: found.uid,
            gid,
        })
    }

    /// The account's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Gives `path` to the account (the storage root and the files the server writes), when
    /// the process may.
    pub fn take_ownership(&self, path: &Path) -> anyhow::Result<()> {
        chown(path, Some(self.uid), Some(self.gid))
            .with_context(|| format!("giving {} to {}", path.display(), self.name))
    }

    /// Switches the whole process to the account, for good: supplementary groups, group,
    /// then user (in that order: once the user is changed, the groups can no longer be).
    pub fn switch_to(&self) -> anyhow::Result<()> {
        if !getuid().is_root() {
            bail!(
                "server.user is {:?} but the server was not started as root; \
                 remove server.user or start it as root",
                self.name
            );
        }
        setgroups(&[self.gid]).context("setgroups")?;
        setgid(self.gid).context("setgid")?;
        setuid(self.uid).context("setuid")?;
        // Proof that it is for good: root cannot be taken back.
        if setuid(Uid::from_raw(0)).is_ok() {
            bail!(
                "root privileges could be regained after switching to {:?}",
                self.name
            );
        }
        Ok(())
    }
}
