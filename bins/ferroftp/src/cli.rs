//! The command line: `serve`, `check-config`, `doctor`, `bench`, `user`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{AdvertiseAddress, Config, PortRange};
use crate::{serve, user_command};

/// What `--version` prints after the name: the version and the commit it was built from
/// (see build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FERROFTP_GIT_COMMIT"),
    ")"
);

/// ferroftp: an FTP server that makes active and passive mode work through NAT and
/// firewalls.
#[derive(Debug, Parser)]
#[command(version = VERSION, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server. With no arguments: serves ./ftp-root on 0.0.0.0:2121 with passive
    /// ports 50000-50100 and an account generated on first start.
    Serve(ServeArgs),
    /// Validate a config file: print every problem at once and the ports a firewall must
    /// open. Exits non-zero when there is any problem.
    CheckConfig {
        /// The TOML config file.
        file: PathBuf,
        /// Print only the firewall rules that open the control port(s) and the passive
        /// range, for this firewall (a valid config is required).
        #[arg(long, value_enum, value_name = "KIND")]
        firewall: Option<crate::firewall::FirewallKind>,
    },
    /// Diagnose a server from the client's side: login, passive address and reachability,
    /// EPSV, active mode, NAT helpers rewriting addresses, TLS. Exits 1 on any error.
    Doctor(crate::doctor::DoctorArgs),
    /// Measure any FTP server: large and small transfers, listings, connection rate, a
    /// burst of sessions, idle sessions' memory (the shared harness's tests). Progress on
    /// stderr, a markdown table on stdout, --json for a JSON report.
    Bench(crate::bench::BenchArgs),
    /// Manage the users file.
    User {
        #[command(subcommand)]
        command: user_command::UserCommand,
    },
}

/// `serve` flags; each one overrides the config file, which overrides the defaults.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML config file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Control-connection listen address (replaces the configured listeners).
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,
    /// Directory served as "/" (created if missing).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Passive data port range, e.g. 50000-50100.
    #[arg(long, value_name = "FIRST-LAST")]
    pub passive_ports: Option<PortRange>,
    /// Address announced in PASV replies (the public address behind NAT): an IP or a DNS
    /// name.
    #[arg(long, value_name = "ADDRESS")]
    pub advertise: Option<AdvertiseAddress>,
    /// Users file (see `ferroftp user add`).
    #[arg(long, value_name = "FILE")]
    pub users: Option<PathBuf>,
    /// Allow anonymous read-only logins (USER anonymous or ftp).
    #[arg(long)]
    pub anonymous: bool,
    /// Publish uploads without fsyncing them first (storage.fsync_uploads = false): faster,
    /// but a power loss can lose recent uploads.
    #[arg(long)]
    pub no_fsync_uploads: bool,
    /// Close sessions idle this long, e.g. 30s, 5m.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Most sessions at once.
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<usize>,
    /// Most sessions at once from one client address.
    #[arg(long, value_name = "N")]
    pub max_sessions_per_ip: Option<usize>,
    /// `self-signed`: generate a certificate at start (printed with its SHA-256 fingerprint)
    /// and offer explicit FTPS (AUTH TLS) on listeners configured without TLS. For trying
    /// FTPS out; use tls.cert and tls.key for real.
    #[arg(long, value_name = "MODE")]
    pub tls: Option<TlsFlag>,
}

/// Values of `serve --tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsFlag {
    /// A certificate generated at start, kept in memory.
    SelfSigned,
}

impl ServeArgs {
    /// Lays the flags over `config`.
    pub fn apply_to(&self, config: &mut Config) {
        if !self.listen.is_empty() {
            let template = config.server.listeners.first().cloned().unwrap_or_default();
            config.server.listeners = self
                .listen
                .iter()
                .map(|&listen| crate::config::ListenerConfig {
                    listen,
                    ..template.clone()
                })
                .collect();
        }
        let crate::config::StorageConfig::Fs {
            root,
            fsync_uploads,
            ..
        } = &mut config.storage;
        if let Some(new_root) = &self.root {
            *root = new_root.clone();
        }
        if self.no_fsync_uploads {
            *fsync_uploads = false;
        }
        if let Some(ports) = self.passive_ports {
            config.passive.ports = ports;
        }
        if let Some(advertise) = &self.advertise {
            config.passive.advertise = Some(advertise.clone());
        }
        if let Some(users) = &self.users {
            config.auth.backend = crate::config::AuthBackendConfig::File {
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
        if self.tls == Some(TlsFlag::SelfSigned) {
            config.tls.self_signed = true;
            config.tls.cert = None;
            config.tls.key = None;
            for listener in &mut config.server.listeners {
                if listener.tls == crate::config::TlsMode::Off {
                    listener.tls = crate::config::TlsMode::Explicit;
                }
            }
        }
    }
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(args).map(|()| ExitCode::SUCCESS),
        Command::CheckConfig { file, firewall } => check_config(&file, firewall),
        Command::Doctor(args) => crate::doctor::run(args),
        Command::Bench(args) => crate::bench::run(args),
        Command::User { command } => user_command::run(command).map(|()| ExitCode::SUCCESS),
    }
}

fn check_config(
    file: &std::path::Path,
    firewall: Option<crate::firewall::FirewallKind>,
) -> anyhow::Result<ExitCode> {
    // Everything the server would load: parse-level problems, rules, certificate and key,
    // users file, account, advertised names; every problem at once.
    let loaded = crate::config_report::load(file, |_| {});
    let problems = loaded.problems;
    if let (Some(config), true) = (&loaded.config, problems.is_empty()) {
        if let Some(kind) = firewall {
            for line in crate::firewall::rules(kind, &crate::firewall::OpenPorts::of_config(config))
            {
                println!("{line}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        println!("{}: ok", file.display());
        println!("firewall: {}", config.firewall_summary());
        return Ok(ExitCode::SUCCESS);
    }
    for problem in &problems {
        println!("{}: {}: {}", file.display(), problem.field, problem.message);
    }
    println!("{} problem(s)", problems.len());
    Ok(ExitCode::FAILURE)
}
