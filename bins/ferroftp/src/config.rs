//! The configuration file (TOML, every field optional, unknown fields refused).
//!
//! Parsing checks types (durations such as `"5m"`, port ranges such as `"50000-50100"`,
//! addresses); [`Config::validate`] then checks the rules that span fields. Loading a file
//! with every problem reported at once, parse-level ones included, is `config_report`'s job.
//! Relative paths in a file are relative to the file's directory.
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
//! `[defender]` is described in `defender_config.rs`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ferroftp_proto::VirtualPath;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// The control port used when no listener is configured: unprivileged, so no root needed.
pub const DEFAULT_CONTROL_PORT: u16 = 2121;

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Control connections: listeners, limits, timeouts.
    pub server: ServerConfig,
    /// Passive mode (PASV/EPSV): the port range and the advertised address.
    pub passive: PassiveConfig,
    /// Active mode (PORT/EPRT).
    pub active: ActiveConfig,
    /// Data connections in either mode.
    pub data: DataConfig,
    /// Server-wide bandwidth and the default session cap per account.
    pub limits: LimitsConfig,
    /// Where files live.
    pub storage: StorageConfig,
    /// Who may log in.
    pub auth: AuthConfig,
    /// PROXY protocol from load balancers.
    pub proxy_protocol: ProxyProtocolConfig,
    /// FTPS: certificate, policies, client certificates.
    pub tls: TlsConfig,
    /// The admin listener: metrics, health, readiness, status page.
    pub admin: AdminConfig,
    /// The event log's format and file, the transfer log.
    pub log: LogConfig,
    /// Auto-ban of misbehaving client addresses (`defender_config.rs`).
    pub defender: crate::defender_config::DefenderConfig,
}

/// `[admin]`: the HTTP listener for metrics (`/metrics`), health (`/healthz`, `/readyz`) and
/// the status page (`/status`). Off unless `listen` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Where to listen, e.g. `127.0.0.1:9121`; a loopback address unless `allow_remote`.
    pub listen: Option<SocketAddr>,
    /// Let `listen` be a non-loopback address. The listener has no authentication and its
    /// status page shows user names and client addresses.
    pub allow_remote: bool,
    /// Also keep the transfer and login series per user (one series per account).
    pub per_user_metrics: bool,
}

impl AdminConfig {
    fn validate(&self, problems: &mut Vec<ConfigProblem>) {
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

/// `[tls]`: FTPS (RFC 4217), used by listeners with `tls = "explicit"` or `"implicit"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. Reloaded on SIGHUP and when the file changes.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// Who must protect the control connection before logging in.
    pub require: TlsRequire,
    /// Who must protect data connections (PROT P).
    pub require_data: TlsRequire,
    /// Lowest TLS version: "1.2" (1.2 and 1.3) or "1.3".
    pub min_version: TlsMinVersion,
    /// A protected data connection must resume the control connection's TLS session.
    pub require_reuse: bool,
    /// Users exempt from `require_reuse` (clients that cannot resume, e.g. Python ftplib).
    pub reuse_exempt_users: Vec<String>,
    /// Client networks exempt from `require_reuse`.
    pub reuse_exempt_clients: Vec<IpNet>,
    /// Accept CCC (back to a plain control connection after login).
    pub allow_ccc: bool,
    /// PEM file of the CA(s) that sign client certificates.
    pub client_ca: Option<PathBuf>,
    /// Ask for client certificates: "off", "optional" or "required".
    pub client_cert: ClientCertConfig,
    /// "cn": a client certificate's common name is the only account it may log in as.
    pub client_cert_user: ClientCertUserConfig,
    /// Longest a TLS handshake may take.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// How often the certificate files are checked for changes ("0s": only on SIGHUP).
    #[serde(with = "humantime_serde")]
    pub reload_check: Duration,
    /// Set by `serve --tls self-signed`: a generated certificate stands in for cert/key.
    #[serde(skip)]
    pub self_signed: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            require: TlsRequire::Accounts,
            require_data: TlsRequire::Accounts,
            min_version: TlsMinVersion::V1_2,
            require_reuse: true,
            reuse_exempt_users: Vec::new(),
            reuse_exempt_clients: Vec::new(),
            allow_ccc: false,
            client_ca: None,
            client_cert: ClientCertConfig::Off,
            client_cert_user: ClientCertUserConfig::Off,
            handshake_timeout: Duration::from_secs(10),
            reload_check: Duration::from_secs(10),
            self_signed: false,
        }
    }
}

/// `tls.require`, `tls.require_data`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsRequire {
    /// Nobody must.
    None,
    /// Every account except anonymous (`anonymous`, `ftp`).
    #[default]
    Accounts,
    /// Everybody.
    All,
}

/// `tls.min_version`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum TlsMinVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    V1_3,
}

/// `tls.client_cert`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertConfig {
    /// Not asked for.
    #[default]
    Off,
    /// Asked for; clients without one are accepted.
    Optional,
    /// Needed for the handshake to complete.
    Required,
}

/// `tls.client_cert_user`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertUserConfig {
    /// The certificate does not name the account.
    #[default]
    Off,
    /// USER must be the certificate's common name.
    Cn,
}

/// `[server]`: control connections.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// A control connection idle this long is closed (421).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A control connection not logged in this long after it connected is closed (421),
    /// whatever it sends meanwhile.
    #[serde(with = "humantime_serde")]
    pub login_timeout: Duration,
    /// Sessions served at once; more are refused with 421.
    pub max_sessions: usize,
    /// Sessions served at once from one client address.
    pub max_sessions_per_ip: usize,
    /// Threads that run sessions (each session stays on one); absent: one per CPU.
    pub threads: Option<usize>,
    /// Pause before answering a failed login (slows password guessing).
    #[serde(with = "humantime_serde")]
    pub failed_login_delay: Duration,
    /// Failed logins on one connection before it is closed with 421.
    pub max_failed_logins: u32,
    /// The text of the 220 greeting.
    pub greeting: String,
    /// The control sockets; one on `0.0.0.0:2121` when none is given.
    pub listeners: Vec<ListenerConfig>,
    /// After SIGTERM, how long running transfers may take to finish before they are
    /// aborted (426).
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Started as root: the account to switch to once the listeners are bound.
    pub user: Option<String>,
    /// With `user`: the group to switch to (default: the user's own group).
    pub group: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(5 * 60),
            login_timeout: Duration::from_secs(30),
            max_sessions: 1000,
            max_sessions_per_ip: 50,
            threads: None,
            failed_login_delay: Duration::from_secs(1),
            max_failed_logins: 3,
            greeting: "ferroftp ready".to_owned(),
            listeners: vec![ListenerConfig::default()],
            shutdown_grace: Duration::from_secs(30),
            user: None,
            group: None,
        }
    }
}

/// `[[server.listeners]]`: one control socket.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Whether and how TLS is used on this socket.
    pub tls: TlsMode,
    /// What PASV announces to clients of this listener (before `passive.advertise`).
    pub advertise: Option<IpAddr>,
    /// Under socket activation: the `FileDescriptorName=` of the inherited socket this
    /// listener's settings apply to (its `listen` is then not bound).
    pub name: Option<String>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_CONTROL_PORT),
            tls: TlsMode::Off,
            advertise: None,
            name: None,
        }
    }
}

/// TLS on a control socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain FTP.
    #[default]
    Off,
    /// Plain connection upgraded by `AUTH TLS` (RFC 4217).
    Explicit,
    /// TLS from the first byte (the traditional port 990).
    Implicit,
}

/// `[passive]`: passive mode.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PassiveConfig {
    /// The ports passive data connections listen on; the firewall must let them in.
    pub ports: PortRange,
    /// The address announced in PASV replies when clients reach the server through NAT: an
    /// IP, or a DNS name resolved in the background every `advertise_refresh`. Otherwise the
    /// control connection's local address is announced.
    pub advertise: Option<AdvertiseAddress>,
    /// How often a DNS name in `advertise` is resolved again.
    #[serde(with = "humantime_serde")]
    pub advertise_refresh: Duration,
    /// The address announced on TLS-protected control connections (a NAT helper can
    /// rewrite a plain PASV reply but not an encrypted one).
    pub advertise_tls: Option<IpAddr>,
    /// Ports announced instead of the listening ones, mapped 1:1 (a load balancer or
    /// Kubernetes Service that translates ports); as many as `ports`.
    pub advertise_ports: Option<PortRange>,
    /// Per client network, the address to announce (split horizon); first match wins.
    pub advertise_by_client: Vec<AdvertiseByClient>,
    /// A port is not handed to the same client again within this delay while another is
    /// free (its last connection may still be in TIME_WAIT).
    #[serde(with = "humantime_serde")]
    pub reuse_delay: Duration,
    /// How long a passive listener waits for the client to connect.
    #[serde(with = "humantime_serde")]
    pub accept_timeout: Duration,
    /// Most passive ports one user holds at once (all sessions, any address); absent: a
    /// quarter of the range, rounded up.
    pub max_per_user: Option<usize>,
    /// Most passive ports one client address holds at once (all sessions, any user);
    /// absent: half of the range, rounded up.
    pub max_per_client: Option<usize>,
}

impl Default for PassiveConfig {
    fn default() -> Self {
        Self {
            ports: PortRange {
                first: 50000,
                last: 50100,
            },
            advertise: None,
            advertise_refresh: Duration::from_secs(60),
            advertise_tls: None,
            advertise_ports: None,
            advertise_by_client: Vec::new(),
            reuse_delay: Duration::from_secs(60),
            accept_timeout: Duration::from_secs(30),
            max_per_user: None,
            max_per_client: None,
        }
    }
}

/// `[[passive.advertise_by_client]]`: clients in `cidr` are told `address`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvertiseByClient {
    /// The client network, e.g. `192.168.0.0/16`.
    pub cidr: IpNet,
    /// The address those clients reach the server at.
    pub address: IpAddr,
}

/// An advertised address: an IP, or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdvertiseAddress {
    /// A fixed IP.
    Ip(IpAddr),
    /// A DNS name, resolved in the background.
    Name(String),
}

impl FromStr for AdvertiseAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        let is_name = !text.is_empty()
            && text.len() <= 253
            && text.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if is_name {
            Ok(Self::Name(text.to_owned()))
        } else {
            Err(format!("{text:?} is neither an IP address nor a DNS name"))
        }
    }
}

impl<'de> Deserialize<'de> for AdvertiseAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for AdvertiseAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => ip.fmt(formatter),
            Self::Name(name) => formatter.write_str(name),
        }
    }
}

/// `[active]`: active mode.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActiveConfig {
    /// Whether PORT and EPRT are accepted.
    pub enabled: bool,
    /// How long connecting to the client may take before 425.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The local port active data connections leave from.
    pub source_port: ActiveSourcePortConfig,
    /// A PORT/EPRT naming a private address from a client connected from a public one is
    /// redirected to that public address instead of refused.
    pub nat_fallback: bool,
}

impl Default for ActiveConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            connect_timeout: Duration::from_secs(10),
            source_port: ActiveSourcePortConfig::Any,
            nat_fallback: false,
        }
    }
}

/// `active.source_port`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActiveSourcePortConfig {
    /// An ephemeral port.
    #[default]
    Any,
    /// The control port minus one (20 for 21) when it can be bound.
    ControlMinusOne,
}

/// `[proxy_protocol]`: HAProxy's PROXY protocol (v1 and v2).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyProtocolConfig {
    /// Sources whose control and passive data connections start with a PROXY header; a
    /// header from anyone else is refused. Empty: off.
    pub trusted: Vec<IpNet>,
    /// How long a trusted source may take to send its header.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
}

impl Default for ProxyProtocolConfig {
    fn default() -> Self {
        Self {
            trusted: Vec::new(),
            header_timeout: Duration::from_secs(5),
        }
    }
}

/// `[data]`: data connections.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// A transfer that moves no byte for this long is aborted (426).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(5 * 60),
        }
    }
}

/// `[limits]`: bandwidth shared by every session of the server, and the session cap of
/// accounts without their own `max_sessions` (docs/security.md, "Limits and quotas").
/// Applied on reload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Bytes per second sent by the whole server (`"100MB/s"`, `"1GiB/s"`, or a number).
    #[serde(deserialize_with = "deserialize_rate")]
    pub download_rate: Option<u64>,
    /// Bytes per second received by the whole server.
    #[serde(deserialize_with = "deserialize_rate")]
    pub upload_rate: Option<u64>,
    /// Logged-in sessions per account (530 beyond), unless the account sets `max_sessions`.
    pub max_sessions_per_user: Option<u32>,
}

/// A rate: a number of bytes per second, or text with a unit (`"10MB/s"`: MB = 10^6 bytes,
/// MiB = 2^20).
fn deserialize_rate<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Rate {
        Bytes(u64),
        Text(String),
    }
    let rate = match Rate::deserialize(deserializer)? {
        Rate::Bytes(0) => {
            Err("a rate of 0 would stop every transfer (leave it out for no limit)".to_owned())
        }
        Rate::Bytes(bytes) => Ok(bytes),
        Rate::Text(text) => {
            ferroftp_proto::policy::parse_byte_rate(&text).map_err(|error| error.to_string())
        }
    };
    rate.map(Some).map_err(serde::de::Error::custom)
}

/// `[storage]`: the storage backend, chosen by `kind` (default `"fs"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawStorageConfig")]
pub enum StorageConfig {
    /// A local directory.
    Fs {
        /// The directory served as `/`; created if missing.
        root: PathBuf,
        /// `fsync_uploads` (default true): an upload is on disk before it replaces the
        /// previous version and before 226. `false` trades durability across a power loss
        /// for the page cache's speed (see `FsStorage::with_fsync_uploads`).
        fsync_uploads: bool,
        /// `chmod_mask` (default `0o755`): the permission bits SITE CHMOD may set; a
        /// client's mode is ANDed with it (see `FsStorage::with_chmod_mask`). At most
        /// `0o777`: setuid, setgid and sticky are never set.
        chmod_mask: u32,
        /// `partial_expiry` (default 24 h): the hidden partial data an interrupted upload
        /// left for a resume is removed once it is older than this (last written), at start
        /// and then in the background (see `FsStorage::partial_sweeper`, docs/uploads.md).
        partial_expiry: Duration,
    },
}

/// `storage.partial_expiry` when not set.
pub const DEFAULT_PARTIAL_EXPIRY: Duration = Duration::from_secs(24 * 3600);

impl Default for StorageConfig {
    fn default() -> Self {
        Self::Fs {
            root: default_storage_root(),
            fsync_uploads: true,
            chmod_mask: ferroftp_storage_fs::DEFAULT_CHMOD_MASK,
            partial_expiry: DEFAULT_PARTIAL_EXPIRY,
        }
    }
}

/// The state directory systemd gives a service with `StateDirectory=` (`/var/lib/ferroftp`
/// in contrib/systemd/ferroftp.service): where the defaults put the storage root and the
/// users file when ferroftp runs as such a service.
fn service_state_directory() -> Option<PathBuf> {
    std::env::var_os("STATE_DIRECTORY")
        // Several directories are separated by colons; the first is ours.
        .and_then(|dirs| {
            dirs.to_str()
                .and_then(|d| d.split(':').next())
                .map(PathBuf::from)
        })
        .filter(|dir| dir.is_absolute())
}

/// `storage.root` when not set: `root` in the service's state directory, else `./ftp-root`
/// beside the config file (or in the current directory without one).
fn default_storage_root() -> PathBuf {
    service_state_directory().map_or_else(|| PathBuf::from("./ftp-root"), |dir| dir.join("root"))
}

/// `auth.path` when not set: `users.toml` in the service's state directory, else beside
/// the config file (or in the current directory without one).
fn default_users_path() -> PathBuf {
    service_state_directory()
        .map_or_else(|| PathBuf::from("users.toml"), |dir| dir.join("users.toml"))
}

/// The `[storage]` table as written. A flat table with `kind` beside the backend's fields,
/// checked into [`StorageConfig`]: serde's tagged enums cannot both default the tag and
/// refuse unknown fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorageConfig {
    #[serde(default)]
    kind: StorageKind,
    root: Option<PathBuf>,
    fsync_uploads: Option<bool>,
    chmod_mask: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    partial_expiry: Option<Duration>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StorageKind {
    #[default]
    Fs,
}

impl TryFrom<RawStorageConfig> for StorageConfig {
    type Error = String;

    fn try_from(raw: RawStorageConfig) -> Result<Self, String> {
        match raw.kind {
            StorageKind::Fs => Ok(Self::Fs {
                root: raw.root.unwrap_or_else(default_storage_root),
                fsync_uploads: raw.fsync_uploads.unwrap_or(true),
                chmod_mask: raw
                    .chmod_mask
                    .unwrap_or(ferroftp_storage_fs::DEFAULT_CHMOD_MASK),
                partial_expiry: raw.partial_expiry.unwrap_or(DEFAULT_PARTIAL_EXPIRY),
            }),
        }
    }
}

/// `[auth]`: the user database, chosen by `kind` (default `"file"`), and anonymous login.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawAuthConfig")]
pub struct AuthConfig {
    /// The user database.
    pub backend: AuthBackendConfig,
    /// Let `anonymous` and `ftp` log in read-only with any password.
    pub anonymous: bool,
    /// Where anonymous sessions are confined (a path in the storage, created at the first
    /// anonymous login); default `/pub`.
    pub anonymous_home: VirtualPath,
}

/// A user database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthBackendConfig {
    /// A users file managed with `ferroftp user`.
    File {
        /// The users file.
        path: PathBuf,
    },
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            backend: AuthBackendConfig::File {
                path: default_users_path(),
            },
            anonymous: false,
            anonymous_home: default_anonymous_home(),
        }
    }
}

/// The `[auth]` table as written (see [`RawStorageConfig`] for why it is flat).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthConfig {
    #[serde(default)]
    kind: AuthKind,
    path: Option<PathBuf>,
    #[serde(default)]
    anonymous: bool,
    anonymous_home: Option<String>,
}

fn default_anonymous_home() -> VirtualPath {
    ferroftp_auth_file::parse_home(ferroftp_auth_file::DEFAULT_ANONYMOUS_HOME)
        .expect("the default anonymous home is a valid path")
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum AuthKind {
    #[default]
    File,
}

impl TryFrom<RawAuthConfig> for AuthConfig {
    type Error = String;

    fn try_from(raw: RawAuthConfig) -> Result<Self, String> {
        let backend = match raw.kind {
            AuthKind::File => AuthBackendConfig::File {
                path: raw.path.unwrap_or_else(default_users_path),
            },
        };
        let anonymous_home = match raw.anonymous_home {
            Some(text) => ferroftp_auth_file::parse_home(&text)
                .map_err(|error| format!("auth.anonymous_home: {error}"))?,
            None => default_anonymous_home(),
        };
        Ok(Self {
            backend,
            anonymous: raw.anonymous,
            anonymous_home,
        })
    }
}

/// An inclusive, non-empty range of TCP ports, written `"50000-50100"` (or `"50000"` for one
/// port). Port 0 ("any port") is never part of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    first: u16,
    last: u16,
}

/// Why a port range was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortRangeError {
    /// Not `FIRST-LAST` or `PORT`.
    #[error("expected a port range such as \"50000-50100\", got {0:?}")]
    Syntax(String),
    /// A bound is not a number from 1 to 65535.
    #[error("{0:?} is not a port number from 1 to 65535")]
    BadPort(String),
    /// The first port is after the last.
    #[error("the first port {first} is after the last port {last}")]
    Reversed {
        /// The first port given.
        first: u16,
        /// The last port given.
        last: u16,
    },
}

impl PortRange {
    /// The range `first..=last`; both must be non-zero and `first <= last`.
    pub fn new(first: u16, last: u16) -> Result<Self, PortRangeError> {
        if first == 0 {
            return Err(PortRangeError::BadPort("0".to_owned()));
        }
        if first > last {
            return Err(PortRangeError::Reversed { first, last });
        }
        Ok(Self { first, last })
    }

    /// The lowest port.
    pub fn first(&self) -> u16 {
        self.first
    }

    /// The number of ports, at least 1.
    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// The ports, lowest first.
    pub fn ports(&self) -> RangeInclusive<u16> {
        self.first..=self.last
    }
}

impl FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(text: &str) -> Result<Self, PortRangeError> {
        let parse_port = |part: &str| {
            let part = part.trim();
            match part.parse::<u16>() {
                Ok(port) if port != 0 => Ok(port),
                _ if part.is_empty() => Err(PortRangeError::Syntax(text.to_owned())),
                _ => Err(PortRangeError::BadPort(part.to_owned())),
            }
        };
        match text.split_once('-') {
            Some((first, last)) => Self::new(parse_port(first)?, parse_port(last)?),
            None => {
                let port = parse_port(text)?;
                Self::new(port, port)
            }
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(formatter, "{}", self.first)
        } else {
            write!(formatter, "{}-{}", self.first, self.last)
        }
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

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
    /// Makes every relative path absolute against `base` (the config file's directory), so
    /// that a config means the same files whatever directory the server starts in.
    pub fn resolve_relative_to(&mut self, base: &Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(path.strip_prefix(".").unwrap_or(path));
            }
        };
        match &mut self.storage {
            StorageConfig::Fs { root, .. } => resolve(root),
        }
        match &mut self.auth.backend {
            AuthBackendConfig::File { path } => resolve(path),
        }
        for path in [
            self.tls.cert.as_mut(),
            self.tls.key.as_mut(),
            self.tls.client_ca.as_mut(),
            self.log.file.as_mut(),
            self.log.transfer_log.as_mut(),
            self.defender.persist.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            resolve(path);
        }
    }

    /// Parses configuration text, stopping at the first problem (`config_report` reports
    /// them all).
    #[cfg(test)]
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        toml::from_str(text).map_err(|error| anyhow::anyhow!("{}", error.to_string().trim_end()))
    }

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
        if server.listeners.is_empty() {
            problems.push(ConfigProblem::new(
                "server.listeners",
                "at least one listener is needed",
            ));
        }
        let has_certificate = self.tls.self_signed || self.tls.cert.is_some();
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
        self.validate_tls(&mut problems);
        self.admin.validate(&mut problems);
        self.defender.validate(&mut problems);
        if !self.proxy_protocol.trusted.is_empty() && self.proxy_protocol.header_timeout.is_zero() {
            problems.push(ConfigProblem::new(
                "proxy_protocol.header_timeout",
                "must be longer than 0s",
            ));
        }

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
        }
        match &self.auth.backend {
            AuthBackendConfig::File { path } => {
                if path.as_os_str().is_empty() {
                    problems.push(ConfigProblem::new("auth.path", "must not be empty"));
                }
            }
        }
        problems
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

    /// The ports a firewall must let in, as one sentence:
    /// `open TCP ports 2121 (control) and 50000-50100 (passive data)`.
    pub fn firewall_summary(&self) -> String {
        let mut control_ports: Vec<u16> = Vec::new();
        for listener in &self.server.listeners {
            let port = listener.listen.port();
            if !control_ports.contains(&port) {
                control_ports.push(port);
            }
        }
        let control = control_ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "open TCP ports {control} (control) and {} (passive data)",
            self.passive.ports
        )
    }
}

/// The directory relative paths of the config file at `path` are relative to.
/// Absolute (without resolving symbolic links), so that logs name the files unambiguously.
pub fn config_directory(path: &Path) -> PathBuf {
    let directory = path.parent().unwrap_or(Path::new(""));
    let directory = if directory.as_os_str().is_empty() {
        Path::new(".")
    } else {
        directory
    };
    std::path::absolute(directory).unwrap_or_else(|_| directory.to_path_buf())
}

fn is_broadcast(address: IpAddr) -> bool {
    matches!(address, IpAddr::V4(v4) if v4.is_broadcast())
}

/// `[log]`: the event log and the transfer log (docs/operations.md, "Logs"). Both files are
/// opened for appending and reopened on SIGHUP (logrotate). The filter comes from the
/// `FERROFTP_LOG` environment variable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `"text"` (default): human-readable lines; `"json"`: one JSON object per line.
    pub format: LogFormat,
    /// The event log's file; standard error when unset.
    pub file: Option<PathBuf>,
    /// One `xferlog` line per finished or aborted transfer; none when unset.
    pub transfer_log: Option<PathBuf>,
}

/// `log.format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (`tracing`'s format), coloured only on a terminal.
    #[default]
    Text,
    /// JSON lines with stable field names.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
[server]
idle_timeout = "5m"            # humantime duration
max_sessions = 1000
max_sessions_per_ip = 50
threads = 2                    # session threads; default one per CPU
failed_login_delay = "1s"
max_failed_logins = 3          # then 421 and close
greeting = "ferroftp ready"
[[server.listeners]]
listen = "0.0.0.0:2121"        # default one listener like this when none given
tls = "off"
[passive]
ports = "50000-50100"
advertise = "203.0.113.7"      # optional IP
accept_timeout = "30s"
[active]
enabled = true
connect_timeout = "10s"
[data]
idle_timeout = "5m"
[storage]
kind = "fs"
root = "./ftp-root"
fsync_uploads = false
chmod_mask = 0o700
partial_expiry = "2h"
[auth]
kind = "file"
path = "users.toml"
anonymous = false
"#;

    const NAT_SAMPLE: &str = r#"
[[server.listeners]]
listen = "0.0.0.0:2121"
advertise = "198.51.100.1"
[passive]
ports = "50000-50100"
advertise = "ftp.example.com"
advertise_refresh = "30s"
advertise_tls = "203.0.113.8"
advertise_ports = "60000-60100"
reuse_delay = "10s"
[[passive.advertise_by_client]]
cidr = "192.168.0.0/16"
address = "192.168.1.10"
[active]
source_port = "control-minus-one"
nat_fallback = true
[proxy_protocol]
trusted = ["10.0.0.0/8", "fd00::/8"]
header_timeout = "2s"
"#;

    #[test]
    fn nat_settings_parse() {
        let config = Config::parse(NAT_SAMPLE).unwrap();
        assert!(config.validate().is_empty(), "{:?}", config.validate());
        assert_eq!(
            config.server.listeners[0].advertise,
            Some("198.51.100.1".parse().unwrap())
        );
        assert_eq!(
            config.passive.advertise,
            Some(AdvertiseAddress::Name("ftp.example.com".to_owned()))
        );
        assert_eq!(config.passive.advertise_ports.unwrap().len(), 101);
        assert_eq!(
            config.passive.advertise_by_client[0].cidr,
            "192.168.0.0/16".parse().unwrap()
        );
        assert_eq!(
            config.active.source_port,
            ActiveSourcePortConfig::ControlMinusOne
        );
        assert!(config.active.nat_fallback);
        assert_eq!(config.proxy_protocol.trusted.len(), 2);
        assert_eq!(config.proxy_protocol.header_timeout, Duration::from_secs(2));
    }

    #[test]
    fn nat_settings_are_validated() {
        let text = r#"
[passive]
ports = "50000-50100"
advertise = "not a name!"
"#;
        assert!(
            error_of(text).contains("neither an IP address nor a DNS name"),
            "{}",
            error_of(text)
        );
        let text = r#"
[passive]
ports = "50000-50100"
advertise_ports = "60000-60009"
advertise_tls = "0.0.0.0"
"#;
        let problems = Config::parse(text).unwrap().validate();
        assert_eq!(
            fields(&problems),
            ["passive.advertise_tls", "passive.advertise_ports"]
        );
    }

    fn error_of(text: &str) -> String {
        format!("{:#}", Config::parse(text).unwrap_err())
    }

    fn fields(problems: &[ConfigProblem]) -> Vec<&str> {
        problems
            .iter()
            .map(|problem| problem.field.as_str())
            .collect()
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.server.idle_timeout, Duration::from_secs(300));
        assert_eq!(config.server.max_sessions, 1000);
        assert_eq!(config.server.max_sessions_per_ip, 50);
        assert_eq!(config.server.threads, None);
        assert_eq!(config.server.failed_login_delay, Duration::from_secs(1));
        assert_eq!(config.server.max_failed_logins, 3);
        assert_eq!(config.server.greeting, "ferroftp ready");
        assert_eq!(
            config.server.listeners,
            [ListenerConfig {
                listen: "0.0.0.0:2121".parse().unwrap(),
                tls: TlsMode::Off,
                advertise: None,
                name: None,
            }]
        );
        assert_eq!(config.passive.ports, PortRange::new(50000, 50100).unwrap());
        assert_eq!(config.passive.advertise, None);
        assert_eq!(config.passive.accept_timeout, Duration::from_secs(30));
        assert!(config.active.enabled);
        assert_eq!(config.active.connect_timeout, Duration::from_secs(10));
        assert_eq!(config.data.idle_timeout, Duration::from_secs(300));
        assert_eq!(
            config.storage,
            StorageConfig::Fs {
                root: "./ftp-root".into(),
                fsync_uploads: true,
                chmod_mask: 0o755,
                partial_expiry: DEFAULT_PARTIAL_EXPIRY,
            }
        );
        assert_eq!(
            config.auth.backend,
            AuthBackendConfig::File {
                path: "users.toml".into()
            }
        );
        assert!(!config.auth.anonymous);
        assert_eq!(config.validate(), []);
        assert_eq!(
            config.firewall_summary(),
            "open TCP ports 2121 (control) and 50000-50100 (passive data)"
        );
    }

    #[test]
    fn parses_the_sample() {
        let config = Config::parse(SAMPLE).unwrap();
        let expected = Config {
            server: ServerConfig {
                threads: Some(2),
                ..ServerConfig::default()
            },
            passive: PassiveConfig {
                advertise: Some("203.0.113.7".parse().unwrap()),
                ..PassiveConfig::default()
            },
            storage: StorageConfig::Fs {
                root: "./ftp-root".into(),
                fsync_uploads: false,
                chmod_mask: 0o700,
                partial_expiry: Duration::from_secs(2 * 3600),
            },
            ..Config::default()
        };
        assert_eq!(config, expected);
        assert_eq!(config.validate(), []);
    }

    #[test]
    fn the_anonymous_home_is_an_absolute_path_in_the_storage() {
        let config = Config::parse("[auth]\nanonymous_home = \"/srv/./public/\"\n").unwrap();
        assert_eq!(config.auth.anonymous_home.to_string(), "/srv/public");
        let error = Config::parse("[auth]\nanonymous_home = \"pub\"\n").unwrap_err();
        assert!(error.to_string().contains("anonymous_home"), "{error}");
    }

    #[test]
    fn partial_tables_keep_the_other_defaults() {
        let config = Config::parse(
            "[server]\nmax_sessions = 7\n[[server.listeners]]\nlisten = \"[::]:21\"\n\
             [[server.listeners]]\nlisten = \"127.0.0.1:2100\"\n\
             [passive]\nports = \"60000\"\n[storage]\nroot = \"/srv/ftp\"\n[auth]\nanonymous = true\n",
        )
        .unwrap();
        assert_eq!(config.server.max_sessions, 7);
        assert_eq!(config.server.idle_timeout, Duration::from_secs(300));
        assert_eq!(config.server.listeners.len(), 2);
        assert_eq!(config.passive.ports.len(), 1);
        assert_eq!(
            config.storage,
            StorageConfig::Fs {
                root: "/srv/ftp".into(),
                fsync_uploads: true,
                chmod_mask: 0o755,
                partial_expiry: DEFAULT_PARTIAL_EXPIRY,
            }
        );
        assert!(config.auth.anonymous);
        assert_eq!(config.auth.anonymous_home.to_string(), "/pub");
        assert_eq!(
            config.firewall_summary(),
            "open TCP ports 21, 2100 (control) and 60000 (passive data)"
        );
    }

    #[test]
    fn unknown_fields_are_rejected_everywhere() {
        for (text, field) in [
            ("[server]\nidle_timout = \"5m\"\n", "idle_timout"),
            ("[[server.listeners]]\nport = 21\n", "port"),
            ("[passive]\nrange = \"1-2\"\n", "range"),
            ("[storage]\nkind = \"fs\"\nbucket = \"b\"\n", "bucket"),
            ("[auth]\nfile = \"u.toml\"\n", "file"),
            ("[tls]\ncertificate = \"c.pem\"\n", "certificate"),
        ] {
            let message = error_of(text);
            assert!(
                message.contains(&format!("unknown field `{field}`")),
                "{text:?}: {message}"
            );
            assert!(message.contains("line "), "{message}");
        }
        assert!(error_of("[storage]\nkind = \"s3\"\n").contains("unknown variant `s3`"));
        assert!(error_of("[server]\nidle_timeout = \"5 parsecs\"\n").contains("line 2"));
    }

    #[test]
    fn port_ranges_parse_display_and_refuse_nonsense() {
        let range: PortRange = "50000-50100".parse().unwrap();
        assert_eq!((range.ports(), range.len()), (50000..=50100, 101));
        assert_eq!(range.to_string(), "50000-50100");
        assert!(range.contains(50000) && range.contains(50100) && !range.contains(50101));
        assert_eq!(range.ports().count(), 101);
        assert_eq!(" 2000 - 2001 ".parse::<PortRange>().unwrap().len(), 2);
        let single: PortRange = "60000".parse().unwrap();
        assert_eq!((single.len(), single.to_string()), (1, "60000".to_owned()));
        assert_eq!(
            "65535-65535".parse::<PortRange>().unwrap().len(),
            1,
            "the top port"
        );

        assert_eq!(
            "50100-50000".parse::<PortRange>(),
            Err(PortRangeError::Reversed {
                first: 50100,
                last: 50000
            })
        );
        assert_eq!(
            "0-10".parse::<PortRange>(),
            Err(PortRangeError::BadPort("0".into()))
        );
        assert_eq!(
            "1-70000".parse::<PortRange>(),
            Err(PortRangeError::BadPort("70000".into()))
        );
        assert!(matches!(
            "".parse::<PortRange>(),
            Err(PortRangeError::Syntax(_))
        ));
        assert!(matches!(
            "5-".parse::<PortRange>(),
            Err(PortRangeError::Syntax(_))
        ));
        assert!(matches!(
            "a-b".parse::<PortRange>(),
            Err(PortRangeError::BadPort(_))
        ));

        let message = error_of("[passive]\nports = \"50100-50000\"\n");
        assert!(message.contains("line 2"), "{message}");
        assert!(
            message.contains("the first port 50100 is after the last port 50000"),
            "{message}"
        );
    }

    #[test]
    fn chmod_mask_is_octal_and_never_has_special_bits() {
        let config = Config::parse("[storage]\nchmod_mask = 0o750\n").unwrap();
        let StorageConfig::Fs { chmod_mask, .. } = config.storage;
        assert_eq!(chmod_mask, 0o750);
        assert_eq!(config.validate(), []);
        let config = Config::parse("[storage]\nchmod_mask = 0o4755\n").unwrap();
        let problems = config.validate();
        assert_eq!(fields(&problems), ["storage.chmod_mask"]);
        assert!(problems[0].message.contains("setuid"), "{problems:?}");
    }

    #[test]
    fn reports_every_problem_at_once() {
        let config = Config::parse(
            r#"
[server]
idle_timeout = "0s"
max_sessions = 0
threads = 0
greeting = "two\r\nlines"
[[server.listeners]]
listen = "0.0.0.0:50050"
tls = "explicit"
[[server.listeners]]
listen = "0.0.0.0:50050"
tls = "implicit"
[passive]
ports = "1000-50100"
advertise = "0.0.0.0"
[storage]
root = ""
"#,
        )
        .unwrap();
        let problems = config.validate();
        assert_eq!(
            fields(&problems),
            [
                "server.idle_timeout",
                "server.max_sessions",
                "server.threads",
                "server.greeting",
                "server.listeners[0].tls",
                "passive.ports",
                "server.listeners[1].tls",
                "server.listeners[1].listen",
                "passive.ports",
                "passive.ports",
                "passive.advertise",
                "storage.root",
            ]
        );
        assert_eq!(
            problems[4].to_string(),
            "server.listeners[0].tls: TLS needs a certificate: set tls.cert and tls.key (or try `serve --tls self-signed`)"
        );
        assert!(
            problems[9].message.contains("privileged"),
            "{}",
            problems[9]
        );

        let no_listener = Config {
            server: ServerConfig {
                listeners: Vec::new(),
                ..ServerConfig::default()
            },
            ..Config::default()
        };
        assert_eq!(fields(&no_listener.validate()), ["server.listeners"]);
    }

    #[test]
    fn limits_take_rates_with_units() {
        let config = Config::parse(
            "[limits]\ndownload_rate = \"10MB/s\"\nupload_rate = 1048576\nmax_sessions_per_user = 3\n",
        )
        .unwrap();
        assert_eq!(
            config.limits,
            LimitsConfig {
                download_rate: Some(10_000_000),
                upload_rate: Some(1 << 20),
                max_sessions_per_user: Some(3),
            }
        );
        assert_eq!(Config::parse("").unwrap().limits, LimitsConfig::default());
        let error = Config::parse("[limits]\ndownload_rate = \"10Mb/s\"\n").unwrap_err();
        assert!(error.to_string().contains("not bits"), "{error}");
        assert!(Config::parse("[limits]\nupload_rate = 0\n").is_err());
        let problems = Config::parse("[limits]\nmax_sessions_per_user = 0\n")
            .unwrap()
            .validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
    }
}

#[cfg(test)]
mod tls_tests {
    use super::*;

    #[test]
    fn tls_settings_parse_with_modern_defaults() {
        let config = Config::parse(
            r#"
[[server.listeners]]
listen = "127.0.0.1:2121"
tls = "explicit"
[[server.listeners]]
listen = "127.0.0.1:990"
tls = "implicit"
[tls]
cert = "cert.pem"
key = "key.pem"
require = "all"
reuse_exempt_users = ["pyftp"]
reuse_exempt_clients = ["192.0.2.0/24"]
client_ca = "ca.pem"
client_cert = "optional"
client_cert_user = "cn"
reload_check = "2s"
"#,
        )
        .unwrap();
        assert_eq!(config.validate(), []);
        assert_eq!(config.server.listeners[1].tls, TlsMode::Implicit);
        assert_eq!(config.tls.require, TlsRequire::All);
        assert_eq!(config.tls.require_data, TlsRequire::Accounts);
        assert_eq!(config.tls.min_version, TlsMinVersion::V1_2);
        assert!(config.tls.require_reuse);
        assert!(!config.tls.allow_ccc);
        assert_eq!(config.tls.client_cert, ClientCertConfig::Optional);
        assert_eq!(config.tls.reload_check, Duration::from_secs(2));
    }

    #[test]
    fn tls_problems_are_reported() {
        let config = Config::parse(
            r#"
[[server.listeners]]
listen = "127.0.0.1:990"
tls = "implicit"
[tls]
key = "key.pem"
client_cert_user = "cn"
min_version = "1.3"
"#,
        )
        .unwrap();
        let problems = config.validate();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "server.listeners[0].tls",
                "tls.cert",
                "tls.client_cert_user"
            ]
        );
        assert!(Config::parse("[tls]\nmin_version = \"1.1\"\n").is_err());
        assert!(Config::parse("[tls]\nrequire = \"some\"\n").is_err());
    }

    #[test]
    fn admin_listener_is_off_by_default_and_loopback_unless_allowed() {
        assert_eq!(Config::default().admin.listen, None);
        let config = Config::parse("[admin]\nlisten = \"127.0.0.1:9121\"\n").unwrap();
        assert_eq!(config.admin.listen, Some("127.0.0.1:9121".parse().unwrap()));
        assert!(config.validate().is_empty());
        assert!(
            Config::parse("[admin]\nlisten = \"[::1]:9121\"\nper_user_metrics = true\n")
                .unwrap()
                .validate()
                .is_empty()
        );
        let remote = Config::parse("[admin]\nlisten = \"0.0.0.0:9121\"\n").unwrap();
        let problems = remote.validate();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "admin.listen");
        assert!(problems[0].message.contains("admin.allow_remote"));
        let allowed =
            Config::parse("[admin]\nlisten = \"0.0.0.0:9121\"\nallow_remote = true\n").unwrap();
        assert!(allowed.validate().is_empty());
        assert!(Config::parse("[admin]\nport = 9121\n").is_err());
    }
}
