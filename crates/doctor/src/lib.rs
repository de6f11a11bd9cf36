//! `ferroftp doctor URL`: why a transfer hangs, seen from the client's side, for any FTP
//! server.
//!
//! Each check (`checks`) talks to the server with `ferroftp-client` only and yields
//! [`Finding`]s: plain values with a stable check id, a severity, the evidence (the exact
//! replies and addresses seen) and a remedy (`remedies`: the settings of the identified
//! server, firewall commands). `report` prints them as text or JSON. Every network wait is
//! bounded by `--timeout`, and the whole run by ten times that.

mod address;
mod checks;
pub mod firewall;
mod remedies;
mod report;
mod target;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

pub use target::{HostPortError, Security, Target, UrlError};

/// `ferroftp doctor` arguments.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// The server: ftp://user:password@host:port/path (ftps:// for implicit TLS). Without a
    /// user, anonymous; without a password, FERROFTP_PASSWORD or a prompt.
    pub url: String,
    /// Upgrade the control connection with AUTH TLS (explicit FTPS) for the transfers.
    #[arg(long)]
    pub explicit_tls: bool,
    /// Print the findings as JSON: {"verdict": ..., "findings": [...]}.
    #[arg(long)]
    pub json: bool,
    /// The longest wait for any one network event (connect, reply, data); the whole run is
    /// bounded by ten times this.
    #[arg(long, value_name = "DURATION", default_value = "4s",
          value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Print no progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Works.
    Ok,
    /// Works for some clients or settings, or could not be fully checked.
    Warning,
    /// Transfers hang or fail.
    Error,
}

impl Severity {
    /// `ok`, `warning` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// One result of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable id: `login`, `passive-address`, `passive-reachability`, `epsv`, `active`,
    /// `alg-rewrite`, `tls`.
    pub check: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// One sentence.
    pub summary: String,
    /// What was seen: commands, exact replies, addresses, timings.
    pub evidence: Vec<String>,
    /// What to change (settings, firewall commands), one item a line; `None` when nothing.
    pub remedy: Option<String>,
}

impl Finding {
    fn new(check: &'static str, severity: Severity, summary: impl Into<String>) -> Self {
        Self {
            check,
            severity,
            summary: summary.into(),
            evidence: Vec::new(),
            remedy: None,
        }
    }

    fn ok(check: &'static str, summary: impl Into<String>) -> Self {
        Self::new(check, Severity::Ok, summary)
    }

    fn warning(check: &'static str, summary: impl Into<String>) -> Self {
        Self::new(check, Severity::Warning, summary)
    }

    fn error(check: &'static str, summary: impl Into<String>) -> Self {
        Self::new(check, Severity::Error, summary)
    }

    fn evidence(mut self, evidence: Vec<String>) -> Self {
        self.evidence = evidence;
        self
    }

    fn remedy(mut self, remedy: impl Into<String>) -> Self {
        let remedy = remedy.into();
        self.remedy = (!remedy.is_empty()).then_some(remedy);
        self
    }
}

/// Runs the doctor and prints its report; exit code 0 when no finding is an error.
pub fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut target = Target::parse(&args.url)?;
    if target.password.is_none() {
        target.password = Some(password_for(&target)?);
    }
    anyhow::ensure!(!args.timeout.is_zero(), "--timeout must be longer than 0s");
    let options = checks::Options {
        timeout: args.timeout,
        explicit_tls: args.explicit_tls,
        progress: !args.quiet,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(checks::run_all(target.clone(), options));
    let worst = outcome
        .findings
        .iter()
        .map(|finding| finding.severity)
        .max()
        .unwrap_or(Severity::Ok);
    if args.json {
        println!("{}", report::json(&target, &outcome));
    } else {
        print!("{}", report::text(&target, &outcome));
    }
    Ok(if worst == Severity::Error {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The password when the URL has none: FERROFTP_PASSWORD, else a prompt on a terminal,
/// else the customary e-mail-like anonymous password.
fn password_for(target: &Target) -> anyhow::Result<String> {
    if let Ok(password) = std::env::var("FERROFTP_PASSWORD") {
        return Ok(password);
    }
    let anonymous = matches!(target.user.as_str(), "anonymous" | "ftp");
    if !anonymous && std::io::stdin().is_terminal() {
        return rpassword::prompt_password(format!("password for {}: ", target.user))
            .context("reading the password");
    }
    anyhow::ensure!(
        anonymous,
        "no password for {}: put it in the URL, in FERROFTP_PASSWORD, or run on a terminal",
        target.user
    );
    Ok("doctor@ferroftp.invalid".to_owned())
}
