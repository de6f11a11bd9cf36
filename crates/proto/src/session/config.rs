//! The policy every session of a server shares: [`SessionConfig`] and the FTPS rules.

use std::time::Duration;

use super::TlsInfo;
use crate::address::Cidr;

/// Policy shared by every session of a server. Immutable while sessions run.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Text of the 220 greeting.
    pub greeting: String,
    /// Close a session idle this long with 421.
    pub idle_timeout: Duration,
    /// Close a session not logged in this long after it connected with 421, whatever it
    /// sends meanwhile (NOOP does not extend it): otherwise a few addresses that connect and
    /// keep talking without logging in could hold every session slot.
    pub login_timeout: Duration,
    /// After this many failed logins the connection is closed with 421.
    pub max_failed_logins: u32,
    /// PORT/EPRT allowed (RFC 2577 checks still apply).
    pub allow_active: bool,
    /// The storage supports APPE and REST+STOR.
    pub allow_resume_upload: bool,
    /// The storage renames in one step. When it does not (an object store copies, then
    /// deletes), the 350 to RNFR says so, so that a client is not surprised by a rename
    /// that can be seen half done.
    pub atomic_rename: bool,
    /// The storage has permission modes: SITE CHMOD is offered (otherwise 504).
    pub allow_chmod: bool,
    /// The storage can set modification times: FEAT offers MFMT (an object store cannot,
    /// and a client that sees MFMT in FEAT, such as rclone, would use it after every upload
    /// and report its 504 as an error).
    pub allow_set_modified: bool,
    /// A PORT/EPRT naming a private address, from a client whose control connection comes
    /// from a public address (it sits behind NAT and does not know it), is redirected to
    /// that public address instead of being refused.
    pub active_nat_fallback: bool,
    /// FTPS rules (RFC 4217), for sessions of listeners with TLS.
    pub tls: TlsPolicy,
    /// How replies name the settings behind a refusal.
    pub setting_names: SettingNames,
}

/// The names of the settings that replies point to when a rule refuses something (`PROT C
/// refused: data connections must be protected (tls.require_data = all)`). The binary fills
/// them with its configuration's spelling, so that proto does not know the config file;
/// the default is ferroftp's TOML keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingNames {
    /// Who must protect the control connection before USER ([`TlsPolicy::require_control`]).
    pub tls_require: &'static str,
    /// Who must protect data connections ([`TlsPolicy::require_data`]).
    pub tls_require_data: &'static str,
    /// CCC accepted ([`TlsPolicy::allow_ccc`]).
    pub tls_allow_ccc: &'static str,
    /// Data connections must resume the control connection's TLS session
    /// ([`TlsPolicy::require_reuse`]).
    pub tls_require_reuse: &'static str,
    /// [`TlsPolicy::reuse_exempt_users`].
    pub tls_reuse_exempt_users: &'static str,
    /// [`TlsPolicy::reuse_exempt_clients`].
    pub tls_reuse_exempt_clients: &'static str,
    /// The per-account session cap, whose refusal is [`LoginFailure::SessionLimit`].
    ///
    /// [`LoginFailure::SessionLimit`]: super::LoginFailure::SessionLimit
    pub max_sessions: &'static str,
}

impl Default for SettingNames {
    /// The names the replies used before the binary gave them (ferroftp's TOML keys, which
    /// the binary passes still), for drivers and tests that have no configuration file.
    fn default() -> Self {
        Self {
            tls_require: "tls.require",
            tls_require_data: "tls.require_data",
            tls_allow_ccc: "tls.allow_ccc",
            tls_require_reuse: "tls.require_reuse",
            tls_reuse_exempt_users: "tls.reuse_exempt_users",
            tls_reuse_exempt_clients: "tls.reuse_exempt_clients",
            max_sessions: "max_sessions",
        }
    }
}

/// Who must use TLS (`tls.require`, `tls.require_data`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsRequirement {
    /// Nobody.
    #[default]
    None,
    /// Every account except the anonymous names (`anonymous`, `ftp`).
    Accounts,
    /// Everybody.
    All,
}

impl TlsRequirement {
    /// Whether the rule applies to the login name `user`.
    pub fn applies_to(self, user: &str) -> bool {
        match self {
            Self::None => false,
            Self::Accounts => !is_anonymous_name(user),
            Self::All => true,
        }
    }

    /// The value as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Accounts => "accounts",
            Self::All => "all",
        }
    }
}

/// The names anonymous logins use (RFC 1635).
pub fn is_anonymous_name(user: &str) -> bool {
    user.eq_ignore_ascii_case("anonymous") || user.eq_ignore_ascii_case("ftp")
}

/// What a verified client certificate's common name means for the login.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CertificateUser {
    /// Nothing: the certificate only decides whether the connection is accepted.
    #[default]
    Off,
    /// The certificate binds the account: USER must be its CN (the password is still
    /// checked). Clients without a certificate log in as usual.
    CommonName,
}

/// The FTPS policy (RFC 4217) shared by every session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPolicy {
    /// Who must protect the control connection before USER (refused with 530 otherwise).
    pub require_control: TlsRequirement,
    /// Who must protect data connections (PROT C refused with 534, transfers with 521).
    pub require_data: TlsRequirement,
    /// CCC is accepted (otherwise 534).
    pub allow_ccc: bool,
    /// Protected data connections must resume the control connection's TLS session.
    pub require_reuse: bool,
    /// Users whose data connections need not resume (clients that cannot).
    pub reuse_exempt_users: Vec<String>,
    /// Client networks whose data connections need not resume.
    pub reuse_exempt_clients: Vec<Cidr>,
    /// Meaning of a client certificate's CN.
    pub certificate_user: CertificateUser,
}

impl Default for TlsPolicy {
    fn default() -> Self {
        Self {
            require_control: TlsRequirement::None,
            require_data: TlsRequirement::None,
            allow_ccc: false,
            require_reuse: true,
            reuse_exempt_users: Vec::new(),
            reuse_exempt_clients: Vec::new(),
            certificate_user: CertificateUser::Off,
        }
    }
}

/// How the control connection of a new session is secured: the listener's `tls` setting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ControlTransport {
    /// Plain, and AUTH TLS is refused (`tls = "off"`).
    #[default]
    Plain,
    /// Plain until AUTH TLS (`tls = "explicit"`).
    Explicit,
    /// TLS from the first byte, the handshake already done (`tls = "implicit"`); data
    /// connections are protected unless the client sends PROT C.
    Implicit(TlsInfo),
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            greeting: "ferroftp ready".to_owned(),
            idle_timeout: Duration::from_secs(300),
            login_timeout: Duration::from_secs(30),
            max_failed_logins: 3,
            allow_active: true,
            allow_resume_upload: true,
            atomic_rename: true,
            allow_chmod: true,
            allow_set_modified: true,
            active_nat_fallback: false,
            tls: TlsPolicy::default(),
            setting_names: SettingNames::default(),
        }
    }
}
