//! The configuration as the server takes it: `From<&Config> for ServerOptions`. The one
//! place where the file's enums (`TlsMode`, `TlsRequire`, `ClientCertConfig`, …) become the
//! server's and the protocol's, so that the file's words and the code's can differ without
//! a second mirror anywhere.

use ferroftp_proto::session::{CertificateUser, SettingNames, TlsPolicy, TlsRequirement};
use ferroftp_proto::{Cidr, SessionConfig};
use ferroftp_server::{
    ActiveSourcePort, AdvertiseOptions, AdvertiseTarget, CertificateSource, ClientCertMode,
    DataChannelOptions, ListenerOptions, ListenerTls, PassiveLimits, ProxyProtocolOptions,
    ServerOptions, TlsError, TlsOptions, TlsVersion, UserLimitsOptions,
};

use crate::{
    ActiveSourcePortConfig, AdvertiseAddress, ClientCertConfig, ClientCertUserConfig, Config,
    ListenerConfig, TlsMinVersion, TlsMode, TlsRequire,
};

/// The settings a reply may name, as this file spells them (the protocol core does not know
/// the file's keys).
const SETTING_NAMES: SettingNames = SettingNames {
    tls_require: "tls.require",
    tls_require_data: "tls.require_data",
    tls_allow_ccc: "tls.allow_ccc",
    tls_require_reuse: "tls.require_reuse",
    tls_reuse_exempt_users: "tls.reuse_exempt_users",
    tls_reuse_exempt_clients: "tls.reuse_exempt_clients",
    max_sessions: "max_sessions",
};

impl From<&Config> for ServerOptions {
    /// Everything but `transfer_observer`, which the binary's transfer log provides.
    fn from(config: &Config) -> Self {
        let passive = &config.passive;
        Self {
            listeners: config.server.listeners.iter().map(Into::into).collect(),
            session: SessionConfig {
                greeting: config.server.greeting.clone(),
                idle_timeout: config.server.idle_timeout,
                login_timeout: config.server.login_timeout,
                max_failed_logins: config.server.max_failed_logins,
                allow_active: config.active.enabled,
                // Narrowed to what the storage can do when the server starts.
                allow_resume_upload: true,
                atomic_rename: true,
                allow_chmod: true,
                allow_set_modified: true,
                active_nat_fallback: config.active.nat_fallback,
                tls: tls_policy(config),
                setting_names: SETTING_NAMES,
            },
            passive_ports: passive.ports.ports(),
            advertise: AdvertiseOptions {
                by_client: passive
                    .advertise_by_client
                    .iter()
                    .map(|rule| (rule.cidr, rule.address))
                    .collect(),
                tls: passive.advertise_tls,
                global: passive.advertise.as_ref().map(|address| match address {
                    AdvertiseAddress::Ip(ip) => AdvertiseTarget::Address(*ip),
                    AdvertiseAddress::Name(name) => AdvertiseTarget::Name(name.clone()),
                }),
                refresh: passive.advertise_refresh,
            },
            advertise_ports: passive.advertise_ports.map(|ports| ports.ports()),
            passive_reuse_delay: passive.reuse_delay,
            passive_limits: {
                let defaults = PassiveLimits::for_range(passive.ports.len());
                Some(PassiveLimits {
                    per_user: passive.max_per_user.unwrap_or(defaults.per_user),
                    per_client: passive.max_per_client.unwrap_or(defaults.per_client),
                })
            },
            active_source_port: match config.active.source_port {
                ActiveSourcePortConfig::Any => ActiveSourcePort::Any,
                ActiveSourcePortConfig::ControlMinusOne => ActiveSourcePort::ControlMinusOne,
            },
            proxy_protocol: ProxyProtocolOptions {
                trusted: config.proxy_protocol.trusted.clone(),
                header_timeout: config.proxy_protocol.header_timeout,
            },
            data: DataChannelOptions {
                accept_timeout: passive.accept_timeout,
                connect_timeout: config.active.connect_timeout,
                idle_timeout: config.data.idle_timeout,
            },
            max_sessions: config.server.max_sessions,
            max_sessions_per_ip: config.server.max_sessions_per_ip,
            failed_login_delay: config.server.failed_login_delay,
            tls: certificate(config).map(|certificate| tls_options(config, certificate)),
            shutdown_grace: config.server.shutdown_grace,
            limits: UserLimitsOptions {
                download_rate: config.limits.download_rate,
                upload_rate: config.limits.upload_rate,
                max_sessions_per_user: config.limits.max_sessions_per_user,
            },
            defender: config.defender.options(),
            ..Self::default()
        }
    }
}

impl From<&ListenerConfig> for ListenerOptions {
    fn from(listener: &ListenerConfig) -> Self {
        Self {
            address: listener.listen,
            advertise: listener.advertise,
            tls: match listener.tls {
                TlsMode::Off => ListenerTls::Off,
                TlsMode::Explicit => ListenerTls::Explicit,
                TlsMode::Implicit => ListenerTls::Implicit,
            },
        }
    }
}

impl Config {
    /// Loads the certificate and key of the config as the server will (for `check-config`).
    pub fn check_tls(&self) -> Result<(), TlsError> {
        match ServerOptions::from(self).tls {
            Some(tls) => ferroftp_server::check_tls_options(&tls),
            None => Ok(()),
        }
    }
}

/// The generated certificate of `serve --tls self-signed`, else `tls.cert` and `tls.key`.
fn certificate(config: &Config) -> Option<CertificateSource> {
    match (&config.tls.self_signed, &config.tls.cert, &config.tls.key) {
        (Some(generated), _, _) => Some(CertificateSource::Pem {
            cert: generated.cert_pem.clone(),
            key: generated.key_pem.clone(),
        }),
        (None, Some(cert), Some(key)) => Some(CertificateSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    }
}

fn tls_options(config: &Config, certificate: CertificateSource) -> TlsOptions {
    let tls = &config.tls;
    TlsOptions {
        certificate,
        client_ca: tls.client_ca.clone(),
        client_cert: match tls.client_cert {
            ClientCertConfig::Off => ClientCertMode::Off,
            ClientCertConfig::Optional => ClientCertMode::Optional,
            ClientCertConfig::Required => ClientCertMode::Required,
        },
        min_version: match tls.min_version {
            TlsMinVersion::V1_2 => TlsVersion::Tls12,
            TlsMinVersion::V1_3 => TlsVersion::Tls13,
        },
        handshake_timeout: tls.handshake_timeout,
        reload_check: (!tls.reload_check.is_zero()).then_some(tls.reload_check),
    }
}

/// The FTPS rules the session applies (RFC 4217 §6-§9: who must protect what).
fn tls_policy(config: &Config) -> TlsPolicy {
    let tls = &config.tls;
    let requirement = |require: TlsRequire| match require {
        TlsRequire::None => TlsRequirement::None,
        TlsRequire::Accounts => TlsRequirement::Accounts,
        TlsRequire::All => TlsRequirement::All,
    };
    TlsPolicy {
        require_control: requirement(tls.require),
        require_data: requirement(tls.require_data),
        allow_ccc: tls.allow_ccc,
        require_reuse: tls.require_reuse,
        reuse_exempt_users: tls.reuse_exempt_users.clone(),
        reuse_exempt_clients: tls
            .reuse_exempt_clients
            .iter()
            .filter_map(|net| Cidr::new(net.network(), net.prefix_len()))
            .collect(),
        certificate_user: match tls.client_cert_user {
            ClientCertUserConfig::Off => CertificateUser::Off,
            ClientCertUserConfig::Cn => CertificateUser::CommonName,
        },
    }
}
