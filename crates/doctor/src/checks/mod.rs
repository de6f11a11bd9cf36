//! The checks, run one after the other on fresh control connections, each bounded in time.
//!
//! `login` runs first and identifies the server; when it fails nothing else can run. The
//! others share what earlier ones observed through [`Context`] (the plain-text PASV address
//! for `alg-rewrite`, whether PASV transfers work for `epsv`).

mod active;
mod alg;
mod epsv;
mod login;
mod passive;
mod tls;

use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use ferroftp_client::{
    Client, ClientError, ClientOptions, ClientTls, ConnectAttempt, Reply, ServerVerification,
    connect_timed,
};

use super::remedies::ServerKind;
use super::{Finding, Severity, Target};

/// How the checks run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// The longest wait for any one network event.
    pub timeout: Duration,
    /// Upgrade the control connection with AUTH TLS.
    pub explicit_tls: bool,
    /// Print progress lines on stderr.
    pub progress: bool,
}

/// Everything the checks found.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// In check order.
    pub findings: Vec<Finding>,
    /// The server software, as identified by `login`.
    pub server: ServerKind,
    /// The address the control connection went to.
    pub control: Option<SocketAddr>,
    /// How long the run took.
    pub elapsed: Duration,
}

/// What the checks share.
pub(super) struct Context {
    target: Target,
    options: Options,
    /// The address the control connection went to.
    control: SocketAddr,
    /// TLS for every session (ftps://, --explicit-tls, or a server that refuses plain
    /// logins); `None`: plain sessions.
    session_tls: Option<ClientTls>,
    /// `ftps://`: TLS from the first byte.
    implicit: bool,
    server: ServerKind,
    /// FEAT lines, trimmed.
    features: Vec<String>,
    /// The plain-text PASV address and whether a PASV transfer worked.
    passive: Option<PassiveObservation>,
    /// PORT/EPRT: the address we sent and the one the server echoed (ferroftp does).
    active_echo: Option<ActiveEcho>,
    /// The PASV reply seen inside TLS, where no middlebox can rewrite it.
    tls_passive: Option<TlsPassive>,
}

#[derive(Debug, Clone)]
pub(super) struct TlsPassive {
    announced: SocketAddrV4,
    reply_line: String,
}

#[derive(Debug, Clone)]
pub(super) struct PassiveObservation {
    /// The address announced.
    announced: SocketAddrV4,
    /// Whether it was seen on a plain-text control connection (a middlebox could rewrite it).
    plain: bool,
    /// The whole 227 reply line.
    reply_line: String,
    /// A LIST over PASV worked (at the announced address, or at the control address).
    works: bool,
}

#[derive(Debug, Clone)]
pub(super) struct ActiveEcho {
    sent: SocketAddr,
    echoed: SocketAddr,
    reply_line: String,
    transfer_worked: bool,
}

impl Context {
    fn timeout(&self) -> Duration {
        self.options.timeout
    }

    /// `LIST` or `LIST <path>` from the URL.
    fn list_command(&self) -> String {
        match &self.target.path {
            Some(path) => format!("LIST {path}"),
            None => "LIST".to_owned(),
        }
    }

    /// TLS settings for the data connections of sessions opened by
    /// [`open_session`](Self::open_session).
    fn data_tls(&self) -> Option<&ClientTls> {
        self.session_tls.as_ref()
    }

    /// A new control connection, logged in, protected like every session of this run. The
    /// error is one line of evidence.
    async fn open_session(&self) -> Result<Client, SessionError> {
        self.open_session_with(self.session_tls.clone(), &mut Vec::new())
            .await
    }

    /// A new control connection, logged in; with `tls`, protected (AUTH TLS, or implicit)
    /// and with PROT P. The replies to AUTH TLS, PBSZ and PROT go to `evidence`.
    async fn open_session_with(
        &self,
        tls: Option<ClientTls>,
        evidence: &mut Vec<String>,
    ) -> Result<Client, SessionError> {
        let attempt = connect_timed(self.control, self.timeout()).await;
        let stream = match attempt.result {
            Ok(stream) => stream,
            Err(_) => return Err(SessionError::Connect(attempt)),
        };
        let options = ClientOptions {
            timeout: self.timeout(),
        };
        let mut client = Client::from_stream(stream, options).map_err(SessionError::Stream)?;
        if let (Some(tls), true) = (&tls, self.implicit) {
            client
                .upgrade_to_tls(tls.clone())
                .await
                .map_err(SessionError::ImplicitTls)?;
        }
        let greeting = client.read_reply().await.map_err(SessionError::Greeting)?;
        if greeting.code.0 != 220 {
            return Err(SessionError::NotReady(greeting));
        }
        if let (Some(tls), false) = (&tls, self.implicit) {
            let reply = client
                .auth_tls(tls.clone())
                .await
                .map_err(SessionError::AuthTls)?;
            evidence.push(format!("AUTH TLS → {}", reply_line(&reply)));
        }
        let password = self.target.password.as_deref().unwrap_or_default();
        client
            .login(&self.target.user, password)
            .await
            .map_err(SessionError::Login)?;
        if tls.is_some() {
            for command in ["PBSZ 0", "PROT P"] {
                let reply = client
                    .command(command)
                    .await
                    .map_err(|error| SessionError::Command { command, error })?;
                evidence.push(format!("{command} → {}", reply_line(&reply)));
                if reply.code.0 != 200 {
                    return Err(SessionError::Refused { command, reply });
                }
            }
            client
                .set_data_protection(true)
                .map_err(SessionError::Protection)?;
        }
        Ok(client)
    }
}

/// Runs every check within ten times the timeout and returns the findings.
pub(crate) async fn run_all(target: Target, options: Options) -> Outcome {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + options.timeout * 10;
    let progress = Progress {
        enabled: options.progress,
    };
    let mut findings = Vec::new();

    progress.start("login");
    let login = tokio::time::timeout_at(deadline, login::run(&target, options)).await;
    let mut context = match login {
        Ok((finding, context)) => {
            progress.done(&finding, started);
            findings.push(finding);
            match context {
                Some(context) => context,
                None => return outcome(findings, ServerKind::Unknown, None, started),
            }
        }
        Err(_elapsed) => {
            let finding = out_of_time("login", options);
            progress.done(&finding, started);
            findings.push(finding);
            return outcome(findings, ServerKind::Unknown, None, started);
        }
    };

    // (ids the step may report, the step)
    macro_rules! step {
        ($ids:expr, $check:expr) => {{
            let step_started = Instant::now();
            progress.start($ids[0]);
            let produced = match tokio::time::timeout_at(deadline, $check).await {
                Ok(produced) => produced,
                Err(_elapsed) => $ids.iter().map(|id| out_of_time(id, options)).collect(),
            };
            for finding in &produced {
                progress.done(finding, step_started);
            }
            findings.extend(produced);
        }};
    }
    step!(
        ["passive-address", "passive-reachability"],
        passive::run(&mut context)
    );
    step!(["epsv"], epsv::run(&mut context));
    step!(["active"], active::run(&mut context));
    step!(["tls"], tls::run(&mut context));
    step!(["alg-rewrite"], alg::run(&mut context));

    // Report in the order of the issue: login, passive-*, epsv, active, alg-rewrite, tls.
    findings.sort_by_key(|finding| check_rank(finding.check));
    outcome(findings, context.server, Some(context.control), started)
}

/// The order findings are reported in.
pub(crate) fn check_rank(check: &str) -> usize {
    const ORDER: [&str; 7] = [
        "login",
        "passive-address",
        "passive-reachability",
        "epsv",
        "active",
        "alg-rewrite",
        "tls",
    ];
    ORDER
        .iter()
        .position(|id| *id == check)
        .unwrap_or(ORDER.len())
}

fn outcome(
    findings: Vec<Finding>,
    server: ServerKind,
    control: Option<SocketAddr>,
    started: Instant,
) -> Outcome {
    Outcome {
        findings,
        server,
        control,
        elapsed: started.elapsed(),
    }
}

fn out_of_time(check: &'static str, options: Options) -> Finding {
    let budget = options.timeout * 10;
    Finding::error(
        check,
        format!(
            "did not finish within the doctor's time budget ({:.0} s)",
            budget.as_secs_f64()
        ),
    )
    .evidence(vec![format!(
        "every network wait is bounded by --timeout {:.1} s; the run by ten times that",
        options.timeout.as_secs_f64()
    )])
    .remedy("run again with a longer --timeout if the server or the network is slow")
}

/// Progress lines on stderr while the checks run.
struct Progress {
    enabled: bool,
}

impl Progress {
    fn start(&self, check: &str) {
        if self.enabled {
            eprintln!("doctor: checking {check} …");
        }
    }

    fn done(&self, finding: &Finding, started: Instant) {
        if self.enabled {
            let mark = match finding.severity {
                Severity::Ok => "ok",
                Severity::Warning => "WARNING",
                Severity::Error => "ERROR",
            };
            eprintln!(
                "doctor: {} {mark} ({:.1} s): {}",
                finding.check,
                started.elapsed().as_secs_f64(),
                finding.summary
            );
        }
    }
}

/// `227 Entering Passive Mode (…)`: a reply on one line (multi-line replies joined by ` | `).
pub(super) fn reply_line(reply: &Reply) -> String {
    format!("{} {}", reply.code, reply.text().replace('\n', " | "))
}

/// `LIST → 150 …`, `data: 213 bytes, then end of file`, `→ 226 …` and the stall, if any.
pub(super) fn transfer_evidence(probe: &ferroftp_client::TransferProbe) -> Vec<String> {
    let mut lines = Vec::new();
    let mut replies = probe.replies.iter();
    if let Some(first) = replies.next() {
        lines.push(format!("{} → {}", probe.command, reply_line(first)));
    } else {
        lines.push(format!("{} → (no reply)", probe.command));
    }
    if let Some((source, after)) = probe.accepted {
        lines.push(format!(
            "the server connected from {source} after {:.3} s",
            after.as_secs_f64()
        ));
    }
    if probe.data_complete {
        lines.push(format!("data: {} bytes, then end of file", probe.bytes));
    } else if probe.bytes > 0 {
        lines.push(format!("data: {} bytes, no end of file", probe.bytes));
    }
    for reply in replies {
        lines.push(format!("→ {}", reply_line(reply)));
    }
    if let Some(stalled) = &probe.stalled {
        lines.push(format!(
            "stalled: {stalled} (after {:.3} s)",
            probe.elapsed.as_secs_f64()
        ));
    }
    lines
}

/// TLS settings that accept any certificate (the `tls` check reports on the certificate
/// separately) and name the server as in the URL.
pub(super) fn doctor_tls(host: &str) -> Result<ClientTls, ClientError> {
    ClientTls::new(ServerVerification::AcceptAny, host, None)
}

/// Why another logged-in session for a check could not be opened. Shown as one line of
/// evidence, its cause included.
#[derive(Debug, thiserror::Error)]
pub(super) enum SessionError {
    /// The TCP connect failed (the attempt: where, how long, why).
    #[error("opening another control connection: {0}")]
    Connect(ConnectAttempt),
    /// The connected socket could not be set up.
    #[error("control connection: {0}")]
    Stream(ClientError),
    /// Implicit FTPS: the handshake failed.
    #[error("implicit TLS handshake: {0}")]
    ImplicitTls(ClientError),
    /// No greeting came.
    #[error("waiting for the greeting: {0}")]
    Greeting(ClientError),
    /// The greeting was not 220 (RFC 959 §5.4: 421 when the server refuses the session).
    #[error("greeting: {}", reply_line(.0))]
    NotReady(Reply),
    /// AUTH TLS failed (RFC 4217 §4).
    #[error("AUTH TLS: {0}")]
    AuthTls(ClientError),
    /// USER/PASS failed.
    #[error("login: {0}")]
    Login(ClientError),
    /// PBSZ or PROT got no reply.
    #[error("{command}: {error}")]
    Command {
        /// The command.
        command: &'static str,
        /// Why there is no reply.
        error: ClientError,
    },
    /// PBSZ or PROT was refused (RFC 4217 §8-§9).
    #[error("{command} refused: {}", reply_line(.reply))]
    Refused {
        /// The command.
        command: &'static str,
        /// The refusal.
        reply: Reply,
    },
    /// Data protection could not be turned on.
    #[error("{0}")]
    Protection(ClientError),
}

/// When the server refused the transfer command itself (a final 4yz/5yz reply other than
/// 425/426, which are about the data connection), a finding for `check` that says so: the
/// network is not the problem then.
pub(super) fn command_refused(
    check: &'static str,
    probe: &ferroftp_client::TransferProbe,
) -> Option<Finding> {
    let reply = probe.final_reply()?;
    let code = reply.code.0;
    if !(400..600).contains(&code) || code == 425 || code == 426 || probe.bytes > 0 {
        return None;
    }
    let text = reply_line(reply);
    let about_tls = matches!(code, 521 | 522 | 533 | 534)
        || text.to_ascii_lowercase().contains("tls")
        || text.to_ascii_lowercase().contains("ssl")
        || text.to_ascii_lowercase().contains("protect");
    let remedy = if about_tls {
        "the server requires TLS for transfers: use FTPS (ferroftp doctor --explicit-tls, or \
         ftps:// for implicit TLS), or relax the server's TLS requirement"
    } else {
        "the server refuses the command itself, not the data connection: check the account's \
         permissions and the path (the URL's path is what LIST lists)"
    };
    Some(
        Finding::error(
            check,
            format!("the server refuses {}: {text}", probe.command),
        )
        .remedy(remedy),
    )
}
