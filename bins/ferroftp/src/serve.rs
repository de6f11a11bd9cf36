//! `ferroftp serve`: configuration in, running server out.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use ferroftp_auth_file::{AnonymousAuthenticator, FileAuthenticator, UsersFile};
use ferroftp_proto::{SessionConfig, VirtualPath};
use ferroftp_server::{
    ActiveSourcePort, AdvertiseOptions, AdvertiseTarget, DataChannelOptions, ListenerOptions,
    ProxyProtocolOptions, Server, ServerOptions,
};
use ferroftp_storage_fs::FsStorage;
use rand::Rng;
use rand::distributions::Alphanumeric;

use crate::cli::ServeArgs;
use crate::config::{
    ActiveSourcePortConfig, AdvertiseAddress, AuthBackendConfig, Config, StorageConfig,
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERROFTP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let StorageConfig::Fs { root } = &config.storage;
    std::fs::create_dir_all(root)
        .with_context(|| format!("creating the storage root {}", root.display()))?;
    let storage = FsStorage::new(root.clone())
        .with_context(|| format!("opening the storage root {}", root.display()))?;

    let AuthBackendConfig::File { path: users_path } = &config.auth.backend;
    ensure_users_file(users_path)?;
    let authenticator = FileAuthenticator::open(users_path.clone())
        .with_context(|| format!("reading the users file {}", users_path.display()))?;
    let authenticator = AnonymousAuthenticator::new(authenticator, config.auth.anonymous);

    let options = server_options(&config);
    let server = Server::bind(options, Arc::new(storage), Arc::new(authenticator)).await?;
    let addresses = server.local_addrs();
    let mut stdout = std::io::stdout().lock();
    for address in &addresses {
        writeln!(stdout, "listening on {address}")?;
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
    server.run(shutdown_signal()).await;
    Ok(())
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
            })
            .collect(),
        session: SessionConfig {
            greeting: config.server.greeting.clone(),
            idle_timeout: config.server.idle_timeout,
            max_failed_logins: config.server.max_failed_logins,
            allow_active: config.active.enabled,
            allow_resume_upload: true,
            active_nat_fallback: config.active.nat_fallback,
            ..SessionConfig::default()
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
