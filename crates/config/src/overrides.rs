//! The command line laid over a config: each flag of `serve` replaces the file's value,
//! which replaces the default. The binary parses the flags (clap) into [`Overrides`]; what
//! they mean for the config is decided here, once for the first load and every reload.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::{
    AdvertiseAddress, AuthBackendConfig, Config, ListenerConfig, PortRange, SelfSignedCertificate,
    StorageConfig, TlsMode,
};

/// The values given on the command line; `None` (or empty, or false) leaves the config's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Control listen addresses: replace the configured listeners, keeping the first one's
    /// other settings.
    pub listen: Vec<SocketAddr>,
    /// `storage.root`.
    pub root: Option<PathBuf>,
    /// `passive.ports`.
    pub passive_ports: Option<PortRange>,
    /// `passive.advertise`.
    pub advertise: Option<AdvertiseAddress>,
    /// The users file (`auth.path`).
    pub users: Option<PathBuf>,
    /// `auth.anonymous = true`.
    pub anonymous: bool,
    /// `storage.fsync_uploads = false`.
    pub no_fsync_uploads: bool,
    /// `server.idle_timeout`.
    pub idle_timeout: Option<Duration>,
    /// `server.max_sessions`.
    pub max_sessions: Option<usize>,
    /// `server.max_sessions_per_ip`.
    pub max_sessions_per_ip: Option<usize>,
    /// `--tls self-signed`: this certificate instead of `tls.cert` and `tls.key`, and
    /// explicit FTPS on the listeners configured without TLS.
    pub self_signed: Option<SelfSignedCertificate>,
}

impl Overrides {
    /// Lays the values over `config`.
    pub fn apply_to(&self, config: &mut Config) {
        if !self.listen.is_empty() {
            let template = config.server.listeners.first().cloned().unwrap_or_default();
            config.server.listeners = self
                .listen
                .iter()
                .map(|&listen| ListenerConfig {
                    listen,
                    ..template.clone()
                })
                .collect();
        }
        if let Some(new_root) = &self.root {
            // `--root DIR` serves that directory, whatever `[storage]` said.
            match &mut config.storage {
                StorageConfig::Fs { root, .. } => *root = new_root.clone(),
                StorageConfig::Object(_) => {
                    config.storage = StorageConfig::Fs {
                        root: new_root.clone(),
                        fsync_uploads: true,
                        chmod_mask: ferroftp_storage_fs::DEFAULT_CHMOD_MASK,
                        partial_expiry: config.storage.partial_expiry(),
                    };
                }
            }
        }
        if self.no_fsync_uploads
            && let StorageConfig::Fs { fsync_uploads, .. } = &mut config.storage
        {
            *fsync_uploads = false;
        }
        if let Some(ports) = self.passive_ports {
            config.passive.ports = ports;
        }
        if let Some(advertise) = &self.advertise {
            config.passive.advertise = Some(advertise.clone());
        }
        if let Some(users) = &self.users {
            config.auth.backend = AuthBackendConfig::File {
                path: users.clone(),
            };
        }
        if self.anonymous {
            config.auth.anonymous = true;
        }
        if let Some(idle_timeout) = self.idle_timeout {
            config.server.idle_timeout = idle_timeout;
        }
        if let Some(max_sessions) = self.max_sessions {
            config.server.max_sessions = max_sessions;
        }
        if let Some(max_sessions_per_ip) = self.max_sessions_per_ip {
            config.server.max_sessions_per_ip = max_sessions_per_ip;
        }
        if let Some(certificate) = &self.self_signed {
            config.tls.self_signed = Some(certificate.clone());
            config.tls.cert = None;
            config.tls.key = None;
            for listener in &mut config.server.listeners {
                if listener.tls == TlsMode::Off {
                    listener.tls = TlsMode::Explicit;
                }
            }
        }
    }
}
