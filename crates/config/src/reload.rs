//! SIGHUP: which keys a running server cannot change, and keeping their running values.

use crate::Config;

impl Config {
    /// The settings that differ in `new` and only a restart applies.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<String> {
        let mut keys = Vec::new();
        if self.server.threads != new.server.threads {
            keys.push("server.threads".to_owned());
        }
        if self.server.user != new.server.user || self.server.group != new.server.group {
            keys.push("server.user".to_owned());
        }
        if self.storage != new.storage {
            keys.push("storage".to_owned());
        }
        if self.admin.listen != new.admin.listen {
            keys.push("admin.listen".to_owned());
        }
        if self.defender.ipv6_prefix != new.defender.ipv6_prefix {
            keys.push("defender.ipv6_prefix".to_owned());
        }
        if self.log != new.log {
            // The files are reopened on every SIGHUP; another format or path needs a restart.
            keys.push("log".to_owned());
        }
        keys
    }

    /// Gives the settings only a restart applies their values in `running`, so that the
    /// config kept for the next reload says what really runs.
    pub fn keep_restart_only_values(&mut self, running: &Config) {
        self.server.threads = running.server.threads;
        self.server.user.clone_from(&running.server.user);
        self.server.group.clone_from(&running.server.group);
        self.storage = running.storage.clone();
        self.admin.listen = running.admin.listen;
        self.log = running.log.clone();
        // Bans in force are keyed by their IPv6 network: another prefix would not find them.
        self.defender.ipv6_prefix = running.defender.ipv6_prefix;
    }
}
