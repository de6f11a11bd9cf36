//! `ferroftp serve`: configuration in, running server out.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use ferroftp_auth_file::{AnonymousAuthenticator, FileAuthenticator, UsersFile};
use ferroftp_backend::{Authenticator, Storage};
use ferroftp_config::{
    Account, AdminConfig, AuthBackendConfig, Config, FirewallSummary, ListenerConfig, Overrides,
    StorageConfig, TlsMode,
};
use ferroftp_proto::VirtualPath;
use ferroftp_server::{Server, ServerHandle, ServerOptions, SessionThreads};
use ferroftp_storage_fs::FsStorage;
use ferroftp_storage_object::ObjectStorage;
use rand::Rng;
use rand::distr::Alphanumeric;

use crate::privileges;

/// The account created when the server starts with no users file.
const GENERATED_USER: &str = "ferroftp";

/// Runs the server until SIGINT or SIGTERM (then drains; a second one stops at once).
pub fn run(config_file: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<()> {
    let source = ConfigSource {
        file: config_file,
        overrides,
    };
    let config = source.load()?;
    let logging = crate::logging::init(&config.log)?;
    // At start, once: large transfer buffers go back to the system when freed.
    ferroftp_server::return_large_buffers_when_freed();
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
    runtime.block_on(serve(source, config, session_threads, logging))
}

/// Where the configuration comes from: the file, if any, and the command line over it.
/// Read again on every reload.
struct ConfigSource {
    file: Option<PathBuf>,
    overrides: Overrides,
}

impl ConfigSource {
    /// The configuration to serve: the file (every problem at once), the flags over it.
    fn load(&self) -> anyhow::Result<Config> {
        let (config, problems) = match &self.file {
            Some(path) => {
                let loaded =
                    ferroftp_config::report::load(path, |config| self.overrides.apply_to(config));
                (loaded.config, loaded.problems)
            }
            None => {
                let mut config = Config::default();
                self.overrides.apply_to(&mut config);
                let problems = ferroftp_config::report::check(&config);
                (Some(config), problems)
            }
        };
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => {
                let listed: Vec<String> = problems
                    .iter()
                    .map(|p| format!("  {}: {}", p.field, p.message))
                    .collect();
                let source = self.file.as_ref().map_or_else(
                    || "the command line".to_owned(),
                    |p| p.display().to_string(),
                );
                bail!("invalid configuration in {source}:\n{}", listed.join("\n"))
            }
        }
    }
}

/// What the running server was built from, kept for reloads.
struct Running {
    source: ConfigSource,
    config: Config,
    authenticator: Arc<dyn Authenticator>,
    handle: ServerHandle,
    /// The log files, reopened on SIGHUP, and the transfer log.
    logging: crate::logging::Logging,
}

async fn serve(
    source: ConfigSource,
    config: Config,
    session_threads: Arc<SessionThreads>,
    logging: crate::logging::Logging,
) -> anyhow::Result<()> {
    // Installed before anything else: from now on SIGHUP and SIGTERM are handled, never
    // the default action (which ends the process).
    let signals = Signals::install()?;
    let account = match &config.server.user {
        Some(user) => Some(Account::look_up(user, config.server.group.as_deref())?),
        None => None,
    };
    let (storage, expiry) = open_storage(&config.storage, account.as_ref()).await?;

    let AuthBackendConfig::File { path: users_path } = &config.auth.backend;
    if ensure_users_file(users_path)?
        && let Some(account) = &account
    {
        privileges::take_ownership(account, users_path)?;
    }
    let authenticator = authenticator(&config)?;

    let mut options = ServerOptions::from(&config);
    options.transfer_observer = logging.transfer_log.clone();
    let inherited = crate::systemd::inherited_listeners()?;
    let mut listeners = config.server.listeners.clone();
    let server = if inherited.is_empty() {
        Server::bind(options, Arc::clone(&storage), Arc::clone(&authenticator)).await?
    } else {
        let (matched, sockets) = match_inherited_listeners(&config, inherited)?;
        listeners = matched;
        options.listeners = listeners.iter().map(Into::into).collect();
        Server::from_listeners(
            options,
            sockets,
            Arc::clone(&storage),
            Arc::clone(&authenticator),
        )
        .await?
    }
    .with_session_threads(session_threads);
    let addresses = server.local_addrs();
    if let Some(account) = &account {
        // The log files stay open; they must also be reopenable after logrotate.
        for path in [&config.log.file, &config.log.transfer_log]
            .into_iter()
            .flatten()
        {
            privileges::take_ownership(account, path)?;
        }
        privileges::switch_to(account)?;
        tracing::info!(user = account.name(), "switched to an unprivileged account");
    }
    // After the switch: the sweep removes files as the account that serves them.
    let expiring = tokio::spawn(expiry);
    announce(&config, &addresses, &listeners)?;
    start_admin(&config.admin, server.status()).await?;

    let handle = server.handle();
    let running = Running {
        source,
        config,
        authenticator,
        handle: handle.clone(),
        logging,
    };
    crate::systemd::ready(&status_line(&handle));
    let (drain, stop) = signals.spawn(running);
    let reporting = tokio::spawn(report_to_service_manager(handle));
    server.run_until(drain, stop).await;
    reporting.abort();
    expiring.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Tells the operator on stdout where the server listens, what to open in the firewall and
/// what it serves; `listeners` are the configured ones matching `addresses`, in order.
fn announce(
    config: &Config,
    addresses: &[SocketAddr],
    listeners: &[ListenerConfig],
) -> std::io::Result<()> {
    let AuthBackendConfig::File { path: users_path } = &config.auth.backend;
    let mut stdout = std::io::stdout().lock();
    for (address, listener) in addresses.iter().zip(listeners) {
        match listener.tls {
            TlsMode::Off => writeln!(stdout, "listening on {address}")?,
            TlsMode::Explicit => {
                writeln!(stdout, "listening on {address} (explicit FTPS: AUTH TLS)")?
            }
            TlsMode::Implicit => writeln!(stdout, "listening on {address} (implicit FTPS)")?,
        }
    }
    if let Some(generated) = &config.tls.self_signed {
        writeln!(
            stdout,
            "TLS: self-signed certificate for {} (for trying out only), SHA-256 fingerprint {}",
            generated.names.join(", "),
            generated.fingerprint
        )?;
    }
    let bound = FirewallSummary::of_bound(
        addresses.iter().map(|address| address.port()),
        config.passive.ports,
    );
    writeln!(stdout, "firewall: {bound}")?;
    writeln!(
        stdout,
        "serving {} (users from {})",
        config.storage.describe(),
        users_path.display()
    )?;
    stdout.flush()
}

/// The storage `[storage]` describes, and its partial-upload expiry (a task to spawn once
/// the server runs as its own account).
async fn open_storage(
    storage: &StorageConfig,
    account: Option<&Account>,
) -> anyhow::Result<(
    Arc<dyn Storage>,
    std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
)> {
    match storage {
        StorageConfig::Fs {
            root,
            fsync_uploads,
            chmod_mask,
            partial_expiry,
        } => {
            let created_root = !root.exists();
            std::fs::create_dir_all(root)
                .with_context(|| format!("creating the storage root {}", root.display()))?;
            if let (Some(account), true) = (account, created_root) {
                privileges::take_ownership(account, root)?;
            }
            let storage = FsStorage::new(root.clone())
                .with_context(|| format!("opening the storage root {}", root.display()))?
                .with_fsync_uploads(*fsync_uploads)
                .with_chmod_mask(*chmod_mask);
            let sweeper = storage.partial_sweeper(*partial_expiry);
            Ok((Arc::new(storage), Box::pin(expire_partial_uploads(sweeper))))
        }
        StorageConfig::Object(object) => {
            let settings = object.settings().map_err(|problems| {
                let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
                anyhow::anyhow!("[storage]: {}", problems.join("; "))
            })?;
            let storage = ObjectStorage::new(settings)?;
            // One request now: wrong credentials or a missing bucket stop the start with
            // their reason, rather than failing every login later. A store that is only
            // unreachable for now does not keep the server down.
            match storage.check().await {
                Ok(()) => {}
                Err(error) if error.kind == ferroftp_proto::StorageErrorKind::Transient => {
                    tracing::warn!(%error, "the object store does not answer yet");
                }
                Err(error) => bail!("[storage] {}: {error}", object.describe()),
            }
            let sweeper = storage.partial_sweeper(object.partial_expiry);
            Ok((Arc::new(storage), Box::pin(sweeper.run())))
        }
    }
}

/// Entries one pass of the partial-upload expiry looks at: a pass takes milliseconds on the
/// blocking pool, however large the tree (the next pass goes on where it stopped).
const EXPIRY_PASS_BUDGET: u64 = 10_000;

/// Removes the partial data of uploads abandoned longer than `storage.partial_expiry`: a
/// pass at start, then one every quarter of the expiry (at least every second, at most every
/// hour), and at once again while a round of the tree is unfinished.
async fn expire_partial_uploads(mut sweeper: ferroftp_storage_fs::PartialSweeper) {
    let interval = (sweeper.max_age() / 4).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(3600),
    );
    loop {
        let pass = tokio::task::spawn_blocking(move || {
            let report = sweeper.pass(std::time::SystemTime::now(), EXPIRY_PASS_BUDGET);
            (sweeper, report)
        })
        .await;
        let Ok((returned, report)) = pass else {
            tracing::warn!("the partial-upload expiry stopped: its pass failed");
            return;
        };
        sweeper = returned;
        let pause = if report.round_complete {
            interval
        } else {
            // Large tree: go on soon, but leave the blocking pool to the sessions meanwhile.
            std::time::Duration::from_millis(100)
        };
        tokio::time::sleep(pause).await;
    }
}

fn status_line(handle: &ServerHandle) -> String {
    let sessions = handle.open_sessions();
    if handle.is_draining() {
        format!("draining: {sessions} session(s) open")
    } else {
        format!("serving: {sessions} session(s) open")
    }
}

/// `STATUS=` with the session count while it changes, and `WATCHDOG=1` when systemd
/// watches the service.
async fn report_to_service_manager(handle: ServerHandle) {
    let watchdog = crate::systemd::watchdog_interval();
    let every = watchdog.map_or(STATUS_INTERVAL, |interval| interval.min(STATUS_INTERVAL));
    let mut ticks = tokio::time::interval(every);
    let mut last_status = String::new();
    loop {
        ticks.tick().await;
        if watchdog.is_some() {
            crate::systemd::watchdog();
        }
        let status = status_line(&handle);
        if status != last_status {
            crate::systemd::status(&status);
            last_status = status;
        }
    }
}

/// How often the session count is reported to systemd.
const STATUS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Pairs each inherited socket with its listener settings: a named socket with the
/// `[[server.listeners]]` entry of that `name`, an unnamed one with the first entry's
/// settings (the command line's, e.g. `--tls self-signed`).
fn match_inherited_listeners(
    config: &Config,
    inherited: Vec<crate::systemd::InheritedListener>,
) -> anyhow::Result<(Vec<ListenerConfig>, Vec<std::net::TcpListener>)> {
    let template = config.server.listeners.first().cloned().unwrap_or_default();
    let mut matched = Vec::with_capacity(inherited.len());
    let mut sockets = Vec::with_capacity(inherited.len());
    for socket in inherited {
        let address = socket
            .listener
            .local_addr()
            .context("reading an inherited socket's address")?;
        let settings = match &socket.name {
            Some(name) => config
                .server
                .listeners
                .iter()
                .find(|listener| listener.name.as_deref() == Some(name.as_str()))
                .cloned()
                .with_context(|| {
                    format!(
                        "the inherited socket {name:?} ({address}) matches no \
                         [[server.listeners]] entry with name = {name:?}"
                    )
                })?,
            None => ListenerConfig {
                name: None,
                ..template.clone()
            },
        };
        tracing::info!(
            %address,
            name = socket.name.as_deref().unwrap_or("(none)"),
            "serving an inherited socket (socket activation)"
        );
        matched.push(ListenerConfig {
            listen: address,
            ..settings
        });
        sockets.push(socket.listener);
    }
    Ok((matched, sockets))
}

fn authenticator(config: &Config) -> anyhow::Result<Arc<dyn Authenticator>> {
    let AuthBackendConfig::File { path } = &config.auth.backend;
    let file = FileAuthenticator::open(path.clone())
        .with_context(|| format!("reading the users file {}", path.display()))?;
    Ok(Arc::new(
        AnonymousAuthenticator::new(file, config.auth.anonymous)
            .with_home(config.auth.anonymous_home.clone()),
    ))
}

/// The signal handlers, installed at start.
struct Signals {
    hangup: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            hangup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// Handles signals from now on: SIGHUP reloads, the first SIGTERM or SIGINT completes
    /// the first future (drain), the second the other (stop now).
    fn spawn(
        self,
        running: Running,
    ) -> (
        impl std::future::Future<Output = ()>,
        impl std::future::Future<Output = ()>,
    ) {
        let Self {
            mut hangup,
            mut terminate,
            mut interrupt,
        } = self;
        let (drain, drained) = tokio::sync::oneshot::channel::<()>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut running = running;
            let mut drain = Some(drain);
            let mut stop = Some(stop);
            loop {
                let name = tokio::select! {
                    _ = hangup.recv() => {
                        reload(&mut running).await;
                        continue;
                    }
                    _ = terminate.recv() => "SIGTERM",
                    _ = interrupt.recv() => "SIGINT",
                };
                if let Some(drain) = drain.take() {
                    tracing::info!(
                        signal = name,
                        "shutting down: transfers in flight may finish (server.shutdown_grace); \
                         send it again to stop at once"
                    );
                    crate::systemd::stopping(&status_line(&running.handle));
                    let _ = drain.send(());
                } else if let Some(stop) = stop.take() {
                    tracing::info!(signal = name, "stopping at once");
                    let _ = stop.send(());
                }
            }
        });
        (
            async move {
                let _ = drained.await;
            },
            async move {
                let _ = stopped.await;
            },
        )
    }
}

/// The admin listener, when `[admin] listen` is set: bound now, served on this runtime (the
/// background one, not the session threads).
async fn start_admin(
    config: &AdminConfig,
    status: Arc<ferroftp_server::ServerStatus>,
) -> anyhow::Result<()> {
    let Some(listen) = config.listen else {
        return Ok(());
    };
    let options = ferroftp_admin::AdminOptions {
        listen,
        per_user_metrics: config.per_user_metrics,
    };
    let admin = ferroftp_admin::AdminServer::bind(&options, status).await?;
    println!("admin: listening on {}", admin.local_addr()?);
    tokio::spawn(admin.run());
    Ok(())
}

/// SIGHUP: the config file is read again and everything that can change live is applied;
/// a config with any problem is reported in full and the running one stays.
async fn reload(running: &mut Running) {
    crate::systemd::reloading();
    // First, so that what follows goes to the new files (logrotate moved the old ones).
    if !running.logging.files.is_empty() {
        match running.logging.files.reopen() {
            Ok(()) => tracing::info!("SIGHUP: log files reopened"),
            Err(error) => tracing::warn!(%error, "SIGHUP: a log file could not be reopened"),
        }
    }
    let result = try_reload(running).await;
    ferroftp_server::record_reload(result.is_ok());
    match result {
        Ok(()) => {}
        Err(error) => {
            tracing::error!("SIGHUP: configuration not reloaded, the running one stays: {error:#}")
        }
    }
    crate::systemd::reloaded(&status_line(&running.handle));
}

async fn try_reload(running: &mut Running) -> anyhow::Result<()> {
    let mut config = running.source.load()?;
    let mut needs_restart = running.config.restart_only_changes(&config);
    config.keep_restart_only_values(&running.config);
    let authenticator = if config.auth == running.config.auth {
        Arc::clone(&running.authenticator)
    } else {
        authenticator(&config)?
    };
    let mut options = ServerOptions::from(&config);
    options.transfer_observer = running.logging.transfer_log.clone();
    let report = running
        .handle
        .reload(options, Arc::clone(&authenticator))
        .await?;
    if report.needs_restart.contains(&"server.listeners") {
        config.server.listeners = running.config.server.listeners.clone();
    }
    needs_restart.extend(report.needs_restart.iter().map(|key| key.to_string()));
    running
        .handle
        .status()
        .set_per_user_metrics(config.admin.per_user_metrics);
    running.config = config;
    running.authenticator = authenticator;
    if needs_restart.is_empty() {
        tracing::info!("SIGHUP: configuration reloaded");
    } else {
        tracing::warn!(
            keys = %needs_restart.join(", "),
            "SIGHUP: configuration reloaded, except these settings, which keep their running \
             values until a restart"
        );
    }
    Ok(())
}

/// The first start without a users file creates one with a single generated account and
/// prints its password, once: the file keeps only the argon2id hash. `true` when it did.
fn ensure_users_file(path: &Path) -> anyhow::Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    let password: String = rand::rng()
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
    Ok(true)
}
