//! `[defender]`: auto-ban of client addresses across connections (docs/security.md).
//!
//! ```toml
//! [defender]
//! enabled = true
//! threshold = 15
//! window = "10m"
//! ban_time = "15m"
//! ban_time_multiplier = 2.0
//! max_ban_time = "24h"
//! allow = ["10.0.0.0/8"]
//! ipv6_prefix = 64
//! persist = "/var/lib/ferroftp/bans"
//! [defender.weights]
//! failed_login = 3
//! unknown_user = 5
//! bounce = 5
//! foreign_data_connection = 3
//! passive_flood = 5
//! protocol_error = 2
//! tls_handshake_failure = 1
//! ```

use std::path::PathBuf;
use std::time::Duration;

use ferroftp_server::{DefenderOptions, DefenderWeights};
use ipnet::IpNet;
use serde::Deserialize;

use crate::ConfigProblem;

/// `[defender]`. On by default: 5 wrong passwords (or 3 unknown user names) from one address
/// within 10 minutes ban it for 15 minutes, twice as long at each repeat, at most a day.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DefenderConfig {
    /// Score events and ban addresses.
    pub enabled: bool,
    /// The score that bans an address.
    pub threshold: u32,
    /// How long a score is gathered before it starts again from zero.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// The first ban's length.
    #[serde(with = "humantime_serde")]
    pub ban_time: Duration,
    /// Each further ban of an address lasts this many times the previous one (at least 1).
    pub ban_time_multiplier: f64,
    /// The longest ban.
    #[serde(with = "humantime_serde")]
    pub max_ban_time: Duration,
    /// Networks never banned (monitoring, the office, the load balancer's health checks).
    pub allow: Vec<IpNet>,
    /// IPv6 clients are scored and banned per network of this many bits.
    pub ipv6_prefix: u8,
    /// A file that keeps the bans across restarts.
    pub persist: Option<PathBuf>,
    /// Score of each event.
    pub weights: WeightsConfig,
}

/// `[defender.weights]`: what each event adds to the address's score (0: not counted).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WeightsConfig {
    /// A wrong password for an existing user.
    pub failed_login: u32,
    /// A login as a user that does not exist.
    pub unknown_user: u32,
    /// PORT/EPRT naming another host or a port below 1024.
    pub bounce: u32,
    /// A passive data connection from another address than its session's.
    pub foreign_data_connection: u32,
    /// Every 10 passive listeners opened and left unused by one session.
    pub passive_flood: u32,
    /// A command line over the length cap, or more than 64 lines queued.
    pub protocol_error: u32,
    /// A failed TLS handshake on a control connection.
    pub tls_handshake_failure: u32,
}

impl Default for WeightsConfig {
    fn default() -> Self {
        let weights = DefenderWeights::default();
        Self {
            failed_login: weights.failed_login,
            unknown_user: weights.unknown_user,
            bounce: weights.bounce,
            foreign_data_connection: weights.foreign_data_connection,
            passive_flood: weights.passive_flood,
            protocol_error: weights.protocol_error,
            tls_handshake_failure: weights.tls_handshake_failure,
        }
    }
}

impl Default for DefenderConfig {
    fn default() -> Self {
        let options = DefenderOptions::default();
        Self {
            enabled: options.enabled,
            threshold: options.threshold,
            window: options.window,
            ban_time: options.ban_time,
            ban_time_multiplier: options.ban_time_multiplier,
            max_ban_time: options.max_ban_time,
            allow: options.allow,
            ipv6_prefix: options.ipv6_prefix,
            persist: None,
            weights: WeightsConfig::default(),
        }
    }
}

impl DefenderConfig {
    /// Appends what is wrong with the section to `problems`.
    pub fn validate(&self, problems: &mut Vec<ConfigProblem>) {
        if self.threshold == 0 {
            problems.push(ConfigProblem::new(
                "defender.threshold",
                "must be at least 1 (to stop banning, set defender.enabled = false)",
            ));
        }
        for (field, duration) in [
            ("defender.window", self.window),
            ("defender.ban_time", self.ban_time),
            ("defender.max_ban_time", self.max_ban_time),
        ] {
            if duration.is_zero() {
                problems.push(ConfigProblem::new(field, "must be longer than 0s"));
            }
        }
        if self.max_ban_time < self.ban_time {
            problems.push(ConfigProblem::new(
                "defender.max_ban_time",
                format!(
                    "{} is shorter than defender.ban_time ({})",
                    humantime::format_duration(self.max_ban_time),
                    humantime::format_duration(self.ban_time)
                ),
            ));
        }
        if !self.ban_time_multiplier.is_finite() || self.ban_time_multiplier < 1.0 {
            problems.push(ConfigProblem::new(
                "defender.ban_time_multiplier",
                "must be a number of at least 1.0 (1.0: every ban lasts defender.ban_time)",
            ));
        }
        if !(1..=128).contains(&self.ipv6_prefix) {
            problems.push(ConfigProblem::new(
                "defender.ipv6_prefix",
                "must be between 1 and 128 (64: one ban per /64 network)",
            ));
        }
        if let Some(path) = &self.persist
            && path.file_name().is_none()
        {
            problems.push(ConfigProblem::new(
                "defender.persist",
                "must name a file, such as /var/lib/ferroftp/bans",
            ));
        }
    }

    /// The server's options.
    pub fn options(&self) -> DefenderOptions {
        let weights = &self.weights;
        DefenderOptions {
            enabled: self.enabled,
            threshold: self.threshold,
            window: self.window,
            ban_time: self.ban_time,
            ban_time_multiplier: self.ban_time_multiplier,
            max_ban_time: self.max_ban_time,
            weights: DefenderWeights {
                failed_login: weights.failed_login,
                unknown_user: weights.unknown_user,
                bounce: weights.bounce,
                foreign_data_connection: weights.foreign_data_connection,
                passive_flood: weights.passive_flood,
                protocol_error: weights.protocol_error,
                tls_handshake_failure: weights.tls_handshake_failure,
            },
            allow: self.allow.clone(),
            ipv6_prefix: self.ipv6_prefix,
            persist: self.persist.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn the_defaults_ban_after_five_wrong_passwords() {
        let config = Config::parse("").unwrap();
        let defender = &config.defender;
        assert!(defender.enabled);
        assert_eq!(
            defender.threshold.div_ceil(defender.weights.failed_login),
            5
        );
        assert_eq!(defender.options(), DefenderOptions::default());
        assert!(config.validate().is_empty());
    }

    #[test]
    fn a_section_is_read_and_checked() {
        let config = Config::parse(
            r#"
[defender]
threshold = 6
window = "1m"
ban_time = "2s"
ban_time_multiplier = 1.5
max_ban_time = "1h"
allow = ["127.0.0.3/32", "2001:db8::/32"]
ipv6_prefix = 56
persist = "bans"
[defender.weights]
failed_login = 1
tls_handshake_failure = 0
"#,
        )
        .unwrap();
        let options = config.defender.options();
        assert_eq!(options.threshold, 6);
        assert_eq!(options.ban_time, Duration::from_secs(2));
        assert_eq!(options.weights.failed_login, 1);
        assert_eq!(options.weights.tls_handshake_failure, 0);
        assert_eq!(options.weights.unknown_user, 5);
        assert_eq!(options.allow.len(), 2);
        assert_eq!(options.ipv6_prefix, 56);
        assert!(config.validate().is_empty());

        let bad = Config::parse(
            r#"
[defender]
threshold = 0
ban_time = "1h"
max_ban_time = "1m"
ban_time_multiplier = 0.5
ipv6_prefix = 0
"#,
        )
        .unwrap();
        let fields: Vec<_> = bad
            .validate()
            .into_iter()
            .map(|problem| problem.field)
            .collect();
        assert_eq!(
            fields,
            [
                "defender.threshold",
                "defender.max_ban_time",
                "defender.ban_time_multiplier",
                "defender.ipv6_prefix"
            ]
        );
        assert!(Config::parse("[defender]\nscore = 1\n").is_err());
    }

    /// Bans in force are keyed by the running prefix: another one needs a restart; the rest
    /// of the section applies on SIGHUP.
    #[test]
    fn only_the_ipv6_prefix_needs_a_restart() {
        let running = Config::parse("").unwrap();
        let reloaded = Config::parse(
            "[defender]\nthreshold = 30\nipv6_prefix = 56\nallow = [\"10.0.0.0/8\"]\n",
        )
        .unwrap();
        assert_eq!(
            running.restart_only_changes(&reloaded),
            ["defender.ipv6_prefix"]
        );
    }
}
