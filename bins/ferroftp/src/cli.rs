//! The command line: `serve`, `check-config`, `doctor`, `bench`, `user`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ferroftp_config::{
    AdvertiseAddress, FirewallSummary, Overrides, PortRange, SelfSignedCertificate,
};
use ferroftp_doctor::firewall::{self, FirewallKind, OpenPorts};

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
        firewall: Option<FirewallKind>,
    },
    /// Diagnose a server from the client's side: login, passive address and reachability,
    /// EPSV, active mode, NAT helpers rewriting addresses, TLS. Exits 1 on any error.
    Doctor(ferroftp_doctor::DoctorArgs),
    /// Measure any FTP server: large and small transfers, listings, connection rate, a
    /// burst of sessions, idle sessions' memory (the shared harness's tests). Progress on
    /// stderr, a markdown table on stdout, --json for a JSON report.
    Bench(ferroftp_bench::BenchArgs),
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
    /// What the flags change in the config file (or the defaults); `--tls self-signed`
    /// generates its certificate now, once: reloads keep it.
    fn overrides(&self) -> anyhow::Result<Overrides> {
        let self_signed = match self.tls {
            Some(TlsFlag::SelfSigned) => Some(
                SelfSignedCertificate::generate()
                    .context("generating a self-signed certificate")?,
            ),
            None => None,
        };
        Ok(Overrides {
            listen: self.listen.clone(),
            root: self.root.clone(),
            passive_ports: self.passive_ports,
            advertise: self.advertise.clone(),
            users: self.users.clone(),
            anonymous: self.anonymous,
            no_fsync_uploads: self.no_fsync_uploads,
            idle_timeout: self.idle_timeout,
            max_sessions: self.max_sessions,
            max_sessions_per_ip: self.max_sessions_per_ip,
            self_signed,
        })
    }
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            serve::run(args.config.clone(), args.overrides()?).map(|()| ExitCode::SUCCESS)
        }
        Command::CheckConfig { file, firewall } => check_config(&file, firewall),
        Command::Doctor(args) => ferroftp_doctor::run(args),
        Command::Bench(args) => {
            ferroftp_bench::run(args, crate::open_files::raise_open_files_limit())
        }
        Command::User { command } => user_command::run(command).map(|()| ExitCode::SUCCESS),
    }
}

fn check_config(
    file: &std::path::Path,
    firewall: Option<FirewallKind>,
) -> anyhow::Result<ExitCode> {
    // Everything the server would load: parse-level problems, rules, certificate and key,
    // users file, account, advertised names; every problem at once.
    let loaded = ferroftp_config::report::load(file, |_| {});
    let problems = loaded.problems;
    if let (Some(config), true) = (&loaded.config, problems.is_empty()) {
        if let Some(kind) = firewall {
            let mut ports =
                OpenPorts::new(config.control_ports(), Some(config.passive.ports.ports()));
            ports.ipv6 = config.listens_on_ipv6();
            for line in firewall::rules(kind, &ports) {
                println!("{line}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        println!("{}: ok", file.display());
        println!("firewall: {}", FirewallSummary::of_config(config));
        return Ok(ExitCode::SUCCESS);
    }
    for problem in &problems {
        println!("{}: {}: {}", file.display(), problem.field, problem.message);
    }
    println!("{} problem(s)", problems.len());
    Ok(ExitCode::FAILURE)
}
