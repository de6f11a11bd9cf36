//! `server.user` and `server.group`: the account a server started as root switches to,
//! looked up in the system's account database (by `check-config` too). The switch itself
//! is the binary's (`privileges.rs`).

use anyhow::{Context, bail};
use nix::unistd::{Gid, Group, Uid, User};

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

    /// The account's user id.
    pub fn uid(&self) -> Uid {
        self.uid
    }

    /// The group to switch to.
    pub fn gid(&self) -> Gid {
        self.gid
    }
}
