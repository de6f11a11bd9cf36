//! `ferroftp serve`: configuration in, running server out.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use ferroftp_auth_file::{AnonymousAuthenticator, FileAuthenticator, UsersFile};
use ferroftp_proto::session::{CertificateUser, TlsPolicy, TlsRequirement};
use ferroftp_proto::{Cidr, SessionConfig, VirtualPath};
use ferroftp_server::{
    ActiveSourcePort, AdvertiseOptions, AdvertiseTarget, CertificateSource, ClientCertMode,
    DataChannelOptions, ListenerOptions, ListenerTls, ProxyProtocolOptions, Server, ServerOptions,
    SessionThreads, TlsOptions, TlsVersion,
};
use ferroftp_storage_fs::FsStorage;
use rand::Rng;
use rand::distributions::Alphanumeric;

use crate::cli::ServeArgs;
use crate::config::{
    ActiveSourcePortConfig, AdvertiseAddress, AuthBackendConfig, ClientCertConfig,
    ClientCertUserConfig, Config, StorageConfig, TlsMinVersion, TlsMode, TlsRequire,
};

/// The account created when the server starts with no users file.
const GENERATED_USER: &str = "ferroftp";

/// Runs the server until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging();
    let mut config = match &args.config {
        Some(path) => Config::load(path).with_context(|| format!("reading {}", path.display()))?,
        None => Config::default(),
    };
    args.apply_to(&mut config);
    let problems = config.validate();
    if !problems.is_empty() {
        let listed: Vec<String> = problems
            .iter()
            .map(|p| format!("  {}: {}", p.field, p.message))
            .collect();
        bail!("invalid configuration:\n{}", listed.join("\n"));
    }
    let open_files = crate::open_files::raise_open_files_limit();
    let needed = crate::open_files::needed_for_sessions(config.server.max_sessions);
    if open_files < needed {
        tracing::warn!(
            open_files,
            max_sessions = config.server.max_sessions,
            "the open-files limit (RLIMIT_NOFILE, raised to its hard limit) is below {needed}, \
             what max_sessions busy sessions can need; raise it (ulimit -n, LimitNOFILE=) or \
             lower server.max_sessions"
        );
    } else {
        tracing::debug!(open_files, "open-files limit");
    }
    let threads = config
        .server
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let session_threads =
        Arc::new(SessionThreads::start(threads).context("starting the session threads")?);
    // The background jobs (signals, address resolution, certificate reloads) need no more
    // than one thread; the sessions, and the accept loops that start them, have their own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config, session_threads))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERROFTP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(config: Config, session_threads: Arc<SessionThreads>) -> anyhow::Result<()> {
    let StorageConfig::Fs {
        root,
        fsync_uploads,
        chmod_mask,
    } = &config.storage;
    std::fs::create_dir_all(root)
        .with_context(|| format!("creating the storage root {}", root.display()))?;
    let storage = FsStorage::new(root.clone())
        .with_context(|| format!("opening the storage root {}", root.display()))?
        .with_fsync_uploads(*fsync_uploads)
        .with_chmod_mask(*chmod_mask);

    let AuthBackendConfig::File { path: users_path } = &config.auth.backend;
    ensure_users_file(users_path)?;
    let authenticator = FileAuthenticator::open(users_path.clone())
        .with_context(|| format!("reading the users file {}", users_path.display()))?;
    let authenticator = AnonymousAuthenticator::new(authenticator, config.auth.anonymous);

    let mut options = server_options(&config);
    let self_signed = if config.tls.self_signed {
        let generated = self_signed_certificate()?;
        options.tls = Some(tls_options(
            &config,
            CertificateSource::Pem {
                cert: generated.cert_pem.clone(),
                key: generated.key_pem.clone(),
            },
        ));
        Some(generated)
    } else {
        None
    };
    let server = Server::bind(options, Arc::new(storage), Arc::new(authenticator))
        .await?
        .with_session_threads(session_threads);
    let addresses = server.local_addrs();
    let mut stdout = std::io::stdout().lock();
    for (address, listener) in addresses.iter().zip(&config.server.listeners) {
        match listener.tls {
            TlsMode::Off => writeln!(stdout, "listening on {address}")?,
            TlsMode::Explicit => {
                writeln!(stdout, "listening on {address} (explicit FTPS: AUTH TLS)")?
            }
            TlsMode::Implicit => writeln!(stdout, "listening on {address} (implicit FTPS)")?,
        }
    }
    if let Some(generated) = &self_signed {
        writeln!(
            stdout,
            "TLS: self-signed certificate for {} (for trying out only), SHA-256 fingerprint {}",
            generated.names.join(", "),
            generated.fingerprint
        )?;
    }
    let control_ports: Vec<String> = addresses.iter().map(|a| a.port().to_string()).collect();
    writeln!(
        stdout,
        "firewall: open TCP ports {} (control) and {} (passive data: {} transfers at once)",
        control_ports.join(", "),
        config.passive.ports,
        config.passive.ports.len()
    )?;
    writeln!(
        stdout,
        "serving {} (users from {})",
        root.display(),
        users_path.display()
    )?;
    stdout.flush()?;
    drop(stdout);
    if let Some(reloader) = server.tls_reloader()
        && self_signed.is_none()
    {
        tokio::spawn(reload_on_sighup(reloader));
    }
    server.run(shutdown_signal()).await;
    Ok(())
}

/// SIGHUP: the certificate files are read again; running sessions keep their connections.
async fn reload_on_sighup(reloader: ferroftp_server::TlsReloader) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            match reloader.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                Err(error) => {
                    tracing::warn!(%error, "SIGHUP: TLS certificate not reloaded; the previous one stays")
                }
            }
        }
    }
    #[cfg(not(unix))]
    drop(reloader);
}

/// A certificate made at start by `serve --tls self-signed`.
struct SelfSigned {
    cert_pem: String,
    key_pem: String,
    names: Vec<String>,
    fingerprint: String,
}

fn self_signed_certificate() -> anyhow::Result<SelfSigned> {
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let generated = rcgen::generate_simple_self_signed(names.clone())
        .context("generating a self-signed certificate")?;
    Ok(SelfSigned {
        cert_pem: generated.cert.pem(),
        key_pem: generated.signing_key.serialize_pem(),
        fingerprint: fingerprint(generated.cert.der()),
        names,
    })
}

/// SHA-256 of a DER certificate as `AB:CD:…`, the form browsers and `openssl x509
/// -fingerprint -sha256` show.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
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

fn server_options(config: &Config) -> ServerOptions {
    let passive = &config.passive;
    ServerOptions {
        listeners: config
            .server
            .listeners
            .iter()
            .map(|listener| ListenerOptions {
                address: listener.listen,
                advertise: listener.advertise,
                tls: match listener.tls {
                    TlsMode::Off => ListenerTls::Off,
                    TlsMode::Explicit => ListenerTls::Explicit,
                    TlsMode::Implicit => ListenerTls::Implicit,
                },
            })
            .collect(),
        session: SessionConfig {
            greeting: config.server.greeting.clone(),
            idle_timeout: config.server.idle_timeout,
            max_failed_logins: config.server.max_failed_logins,
            allow_active: config.active.enabled,
            allow_resume_upload: true,
            allow_chmod: true,
            active_nat_fallback: config.active.nat_fallback,
            tls: tls_policy(config),
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
        tls: match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => Some(tls_options(
                config,
                CertificateSource::Files {
                    cert: cert.clone(),
                    key: key.clone(),
                },
            )),
            _ => None,
        },
        ..ServerOptions::default()
    }
}

/// The first start without a users file creates one with a single generated account and
/// prints its password, once: the file keeps only the argon2id hash.
fn ensure_users_file(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let password: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(20)
        .map(char::from)
        .collect();
    let mut users = UsersFile::new();
    users
        .add(GENERATED_USER, &password, VirtualPath::root(), false)
        .context("generating the first account")?;
    users
        .save(path)
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "created {} with user '{GENERATED_USER}' and password '{password}' (shown only now; \
         change it with `ferroftp user passwd {GENERATED_USER} --users {}`)",
        path.display(),
        path.display()
    );
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
