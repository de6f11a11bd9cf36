//! The rules that span fields: [`Config::validate`] returns every problem at once.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::{
    AdminConfig, AdvertiseAddress, AuthBackendConfig, ClientCertConfig, ClientCertUserConfig,
    Config, StorageConfig, TlsMode,
};

/// One thing wrong with a configuration, found by [`Config::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where: a dotted path such as `passive.ports` or `server.listeners[1].tls`.
    pub field: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl ConfigProblem {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.field, self.message)
    }
}

impl Config {
    /// Every problem of the configuration at once; empty when it can be served.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut require_positive = |field: &str, duration: Duration| {
            if duration.is_zero() {
                problems.push(ConfigProblem::new(field, "must be longer than 0s"));
            }
        };
        require_positive("server.idle_timeout", self.server.idle_timeout);
        require_positive("server.login_timeout", self.server.login_timeout);
        require_positive("passive.accept_timeout", self.passive.accept_timeout);
        require_positive("active.connect_timeout", self.active.connect_timeout);
        require_positive("data.idle_timeout", self.data.idle_timeout);

        self.validate_sessions(&mut problems);
        self.validate_listeners(&mut problems);
        self.validate_passive(&mut problems);
        self.validate_tls(&mut problems);
        self.admin.validate(&mut problems);
        self.defender.validate(&mut problems);
        if !self.proxy_protocol.trusted.is_empty() && self.proxy_protocol.header_timeout.is_zero() {
            problems.push(ConfigProblem::new(
                "proxy_protocol.header_timeout",
                "must be longer than 0s",
            ));
        }

        self.validate_storage(&mut problems);
        problems
    }

    /// Session counts and limits, and the greeting.
    fn validate_sessions(&self, problems: &mut Vec<ConfigProblem>) {
        let server = &self.server;
        if server.max_sessions == 0 {
            problems.push(ConfigProblem::new(
                "server.max_sessions",
                "must be at least 1",
            ));
        }
        if server.max_sessions_per_ip == 0 {
            problems.push(ConfigProblem::new(
                "server.max_sessions_per_ip",
                "must be at least 1",
            ));
        }
        if self.limits.max_sessions_per_user == Some(0) {
            problems.push(ConfigProblem::new(
                "limits.max_sessions_per_user",
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        if server.threads == Some(0) {
            problems.push(ConfigProblem::new("server.threads", "must be at least 1"));
        }
        if server.max_failed_logins == 0 {
            problems.push(ConfigProblem::new(
                "server.max_failed_logins",
                "must be at least 1",
            ));
        }
        if server.greeting.chars().any(char::is_control) {
            problems.push(ConfigProblem::new(
                "server.greeting",
                "must be one line without control characters",
            ));
        }
    }

    /// The listeners: at least one, none with TLS but no certificate, no address used twice,
    /// no control port inside the passive range.
    fn validate_listeners(&self, problems: &mut Vec<ConfigProblem>) {
        let server = &self.server;
        if server.listeners.is_empty() {
            problems.push(ConfigProblem::new(
                "server.listeners",
                "at least one listener is needed",
            ));
        }
        let has_certificate = self.tls.self_signed.is_some() || self.tls.cert.is_some();
        for (index, listener) in server.listeners.iter().enumerate() {
            let field = format!("server.listeners[{index}]");
            if listener.tls != TlsMode::Off && !has_certificate {
                problems.push(ConfigProblem::new(
                    format!("{field}.tls"),
                    "TLS needs a certificate: set tls.cert and tls.key (or try `serve --tls self-signed`)",
                ));
            }
            // Port 0 is allowed: the kernel picks a free port and `serve` prints it (tests
            // and ad-hoc runs rely on that).
            let port = listener.listen.port();
            if let Some(earlier) = server.listeners[..index]
                .iter()
                .position(|other| other.listen == listener.listen && port != 0)
            {
                problems.push(ConfigProblem::new(
                    format!("{field}.listen"),
                    format!(
                        "{} is already used by server.listeners[{earlier}]",
                        listener.listen
                    ),
                ));
            }
            if self.passive.ports.contains(port) {
                problems.push(ConfigProblem::new(
                    "passive.ports",
                    format!(
                        "{} includes port {port}, the control port of {field}",
                        self.passive.ports
                    ),
                ));
            }
        }
    }

    /// The passive range, its caps, and the addresses and ports PASV announces (any
    /// listener's `advertise` included).
    fn validate_passive(&self, problems: &mut Vec<ConfigProblem>) {
        for (field, cap) in [
            ("passive.max_per_user", self.passive.max_per_user),
            ("passive.max_per_client", self.passive.max_per_client),
        ] {
            if cap == Some(0) {
                problems.push(ConfigProblem::new(field, "must be at least 1"));
            }
        }
        if self.passive.ports.first() < 1024 {
            problems.push(ConfigProblem::new(
                "passive.ports",
                format!(
                    "{} includes privileged ports (below 1024); use a range such as 50000-50100",
                    self.passive.ports
                ),
            ));
        }
        let unusable = |address: IpAddr| {
            address.is_unspecified() || address.is_multicast() || is_broadcast(address)
        };
        let mut check_address = |field: String, address: IpAddr| {
            if unusable(address) {
                problems.push(ConfigProblem::new(
                    field,
                    format!(
                        "{address} is not an address clients can connect to; \
                         give the address clients reach the server at"
                    ),
                ));
            }
        };
        if let Some(AdvertiseAddress::Ip(address)) = &self.passive.advertise {
            check_address("passive.advertise".to_owned(), *address);
        }
        if let Some(address) = self.passive.advertise_tls {
            check_address("passive.advertise_tls".to_owned(), address);
        }
        for (index, rule) in self.passive.advertise_by_client.iter().enumerate() {
            check_address(
                format!("passive.advertise_by_client[{index}].address"),
                rule.address,
            );
        }
        for (index, listener) in self.server.listeners.iter().enumerate() {
            if let Some(address) = listener.advertise {
                check_address(format!("server.listeners[{index}].advertise"), address);
            }
        }
        if let Some(announced) = self.passive.advertise_ports
            && announced.len() != self.passive.ports.len()
        {
            problems.push(ConfigProblem::new(
                "passive.advertise_ports",
                format!(
                    "{announced} has {} ports but passive.ports {} has {}: they map 1:1",
                    announced.len(),
                    self.passive.ports,
                    self.passive.ports.len()
                ),
            ));
        }
        if matches!(self.passive.advertise, Some(AdvertiseAddress::Name(_)))
            && self.passive.advertise_refresh.is_zero()
        {
            problems.push(ConfigProblem::new(
                "passive.advertise_refresh",
                "must be longer than 0s when passive.advertise is a DNS name",
            ));
        }
    }

    /// The storage root and its settings, and the users file.
    fn validate_storage(&self, problems: &mut Vec<ConfigProblem>) {
        match &self.storage {
            StorageConfig::Fs {
                root,
                chmod_mask,
                partial_expiry,
                ..
            } => {
                if root.as_os_str().is_empty() {
                    problems.push(ConfigProblem::new("storage.root", "must not be empty"));
                }
                if partial_expiry.is_zero() {
                    problems.push(ConfigProblem::new(
                        "storage.partial_expiry",
                        "must be longer than 0s",
                    ));
                }
                if *chmod_mask > 0o777 {
                    problems.push(ConfigProblem::new(
                        "storage.chmod_mask",
                        format!(
                            "{chmod_mask:#o} has bits above 0o777: setuid, setgid and sticky \
                             are never set by SITE CHMOD"
                        ),
                    ));
                }
            }
            StorageConfig::Object(object) => problems.extend(object.problems()),
        }
        match &self.auth.backend {
            AuthBackendConfig::File { path } => {
                if path.as_os_str().is_empty() {
                    problems.push(ConfigProblem::new("auth.path", "must not be empty"));
                }
            }
        }
    }

    fn validate_tls(&self, problems: &mut Vec<ConfigProblem>) {
        let tls = &self.tls;
        match (&tls.cert, &tls.key) {
            (Some(_), None) => problems.push(ConfigProblem::new(
                "tls.key",
                "tls.cert is set but tls.key is not",
            )),
            (None, Some(_)) => problems.push(ConfigProblem::new(
                "tls.cert",
                "tls.key is set but tls.cert is not",
            )),
            _ => {}
        }
        if tls.handshake_timeout.is_zero() {
            problems.push(ConfigProblem::new(
                "tls.handshake_timeout",
                "must be longer than 0s",
            ));
        }
        if tls.client_cert != ClientCertConfig::Off && tls.client_ca.is_none() {
            problems.push(ConfigProblem::new(
                "tls.client_ca",
                "tls.client_cert needs the CA that signs client certificates (a PEM file)",
            ));
        }
        if tls.client_cert_user == ClientCertUserConfig::Cn
            && tls.client_cert == ClientCertConfig::Off
        {
            problems.push(ConfigProblem::new(
                "tls.client_cert_user",
                "\"cn\" needs tls.client_cert = \"optional\" or \"required\"",
            ));
        }
        for (index, user) in tls.reuse_exempt_users.iter().enumerate() {
            if user.is_empty() || user.chars().any(char::is_control) {
                problems.push(ConfigProblem::new(
                    format!("tls.reuse_exempt_users[{index}]"),
                    "must be a user name",
                ));
            }
        }
    }
}

impl AdminConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<ConfigProblem>) {
        if let Some(listen) = self.listen
            && !listen.ip().is_loopback()
            && !self.allow_remote
        {
            problems.push(ConfigProblem::new(
                "admin.listen",
                format!(
                    "{listen} is not a loopback address: the admin listener has no \
                     authentication; use 127.0.0.1 (or ::1), or set admin.allow_remote = true"
                ),
            ));
        }
    }
}

fn is_broadcast(address: IpAddr) -> bool {
    matches!(address, IpAddr::V4(v4) if v4.is_broadcast())
}
