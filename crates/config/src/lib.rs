//! The configuration file of `ferroftp serve` (TOML, every field optional, unknown fields
//! refused), and what it becomes: the server's `ServerOptions`.
//!
//! ```toml
//! [server]
//! idle_timeout = "5m"
//! login_timeout = "30s"
//! max_sessions = 1000
//! max_sessions_per_ip = 50
//! threads = 2
//! failed_login_delay = "1s"
//! max_failed_logins = 3
//! greeting = "ferroftp ready"
//! [[server.listeners]]
//! listen = "0.0.0.0:2121"
//! tls = "explicit"
//! [[server.listeners]]
//! listen = "0.0.0.0:990"
//! tls = "implicit"
//! [tls]
//! cert = "cert.pem"
//! key = "key.pem"
//! require = "accounts"
//! require_data = "accounts"
//! [passive]
//! ports = "50000-50100"
//! advertise = "203.0.113.7"
//! accept_timeout = "30s"
//! max_per_user = 25
//! max_per_client = 50
//! [active]
//! enabled = true
//! connect_timeout = "10s"
//! [data]
//! idle_timeout = "5m"
//! [limits]
//! download_rate = "100MB/s"
//! upload_rate = "50MB/s"
//! max_sessions_per_user = 8
//! [storage]
//! kind = "fs"
//! root = "./ftp-root"
//! fsync_uploads = true
//! chmod_mask = 0o755
//! partial_expiry = "24h"
//! [auth]
//! kind = "file"
//! path = "users.toml"
//! anonymous = false
//! anonymous_home = "/pub"
//! [admin]
//! listen = "127.0.0.1:9121"
//! [defender]
//! threshold = 15
//! ban_time = "15m"
//! ```
//!
//! `[defender]` is described in the `defender` module.
//!
//! The modules, by concern:
//!
//! - `schema`: one serde type per table, with the defaults; `backends`: `[storage]` and
//!   `[auth]`; `defender`: `[defender]`; `values`: port ranges, advertised addresses, rates;
//! - `validate`: [`Config::validate`], the rules that span fields, every problem at once;
//! - [`report`]: loading a file the way `check-config`, `serve` and a reload need it, with
//!   every problem (parse-level ones too, and the files, accounts and names it refers to);
//! - `convert`: `From<&Config> for ServerOptions`, the one place the config's enums become
//!   the server's and the protocol's;
//! - `overrides`: the command line's flags laid over a config; `self_signed`: the
//!   certificate of `serve --tls self-signed`; `account`: `server.user` looked up;
//! - `firewall`: the sentence telling the operator which ports to open; `reload`: the keys
//!   only a restart applies; `paths`: default and relative paths.
//!
//! Parsing checks types (durations such as `"5m"`, port ranges such as `"50000-50100"`,
//! addresses); [`Config::validate`] then checks the rules that span fields. Relative paths
//! in a file are relative to the file's directory.

mod account;
mod backends;
mod convert;
mod defender;
mod firewall;
mod object_storage;
mod overrides;
mod paths;
mod reload;
pub mod report;
mod schema;
mod self_signed;
mod validate;
mod values;

#[cfg(test)]
mod tests;

pub use account::Account;
pub use backends::{AuthBackendConfig, AuthConfig, DEFAULT_PARTIAL_EXPIRY, StorageConfig};
pub use defender::{DefenderConfig, WeightsConfig};
pub use firewall::FirewallSummary;
pub use object_storage::{ObjectServiceConfig, ObjectStorageConfig, Secret};
pub use overrides::Overrides;
pub use paths::config_directory;
pub use schema::{
    ActiveConfig, ActiveSourcePortConfig, AdminConfig, AdvertiseByClient, ClientCertConfig,
    ClientCertUserConfig, Config, DEFAULT_CONTROL_PORT, DataConfig, LimitsConfig, ListenerConfig,
    LogConfig, LogFormat, PassiveConfig, ProxyProtocolConfig, ServerConfig, TlsConfig,
    TlsMinVersion, TlsMode, TlsRequire,
};
pub use self_signed::{SelfSignedCertificate, fingerprint};
pub use validate::ConfigProblem;
pub use values::{AdvertiseAddress, PortRange, PortRangeError};

impl Config {
    /// Parses configuration text, stopping at the first problem ([`report`] reports them
    /// all).
    #[cfg(test)]
    pub(crate) fn parse(text: &str) -> anyhow::Result<Self> {
        toml::from_str(text).map_err(|error| anyhow::anyhow!("{}", error.to_string().trim_end()))
    }
}
