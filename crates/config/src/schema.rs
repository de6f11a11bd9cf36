//! The schema: one serde type per table of the file, with its defaults. Values with their
//! own syntax (port ranges, advertised addresses, rates) are in `values`, `[storage]` and
//! `[auth]` in `backends`, `[defender]` in `defender`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::values::{AdvertiseAddress, PortRange, deserialize_rate};
use crate::{AuthConfig, DefenderConfig, SelfSignedCertificate, StorageConfig};

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
    /// Auto-ban of misbehaving client addresses (the `defender` module).
    pub defender: DefenderConfig,
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
    pub self_signed: Option<SelfSignedCertificate>,
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
            self_signed: None,
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
