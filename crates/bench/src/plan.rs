//! What to run: the tests ([`TestId`]) and the plan made of the arguments ([`Plan`]): the
//! target, the account, the sizes, the runs of each test and their limits.

use std::time::Duration;

use anyhow::{anyhow, bail, ensure};
use ferroftp_client::DataMode;
use ferroftp_config::PortRange;
use ferroftp_doctor::{Security, Target};
use serde_json::json;

use crate::fixtures::FixtureNeeds;
use crate::measurements::{IDLE_NOOP_INTERVAL, LOGIN_RAMP, Sizes};
use crate::process_stats::ServerProcess;
use crate::report::format_bytes;
use crate::{BenchArgs, TRANSFER_BUFFER_BYTES};

/// The password used for `anonymous` and `ftp` when none is given.
const ANONYMOUS_PASSWORD: &str = "bench@ferroftp.invalid";

/// The environment variable read for the password when neither the URL nor `--password`
/// gives one.
const PASSWORD_VARIABLE: &str = "FERROFTP_BENCH_PASSWORD";

/// The tests, in their default order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TestId {
    RetrPasv,
    RetrActv,
    StorPasv,
    SmallGet,
    SmallPut,
    SmallPutSessions,
    ListList,
    ListMlsd,
    Connrate,
    Burst,
    Idle,
}

impl TestId {
    const ALL: [Self; 11] = [
        Self::RetrPasv,
        Self::RetrActv,
        Self::StorPasv,
        Self::SmallGet,
        Self::SmallPut,
        Self::SmallPutSessions,
        Self::ListList,
        Self::ListMlsd,
        Self::Connrate,
        Self::Burst,
        Self::Idle,
    ];

    /// The shared harness's name for it; `small_put_8`, which the harness does not have,
    /// is named after its default session count as burst500 and idle1000 are.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::RetrPasv => "retr_pasv",
            Self::RetrActv => "retr_actv",
            Self::StorPasv => "stor_pasv",
            Self::SmallGet => "small_get",
            Self::SmallPut => "small_put",
            Self::SmallPutSessions => "small_put_8",
            Self::ListList => "list_LIST",
            Self::ListMlsd => "list_MLSD",
            Self::Connrate => "connrate",
            Self::Burst => "burst500",
            Self::Idle => "idle1000",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|test| test.name() == name)
    }

    pub(crate) fn unit(self) -> &'static str {
        match self {
            Self::RetrPasv | Self::RetrActv | Self::StorPasv => "MB/s",
            Self::SmallGet | Self::SmallPut | Self::SmallPutSessions => "files/s",
            Self::ListList | Self::ListMlsd => "ms",
            Self::Connrate => "sessions/s",
            Self::Burst => "s",
            Self::Idle => "KiB/session",
        }
    }

    pub(crate) fn higher_is_better(self) -> bool {
        matches!(self.unit(), "MB/s" | "files/s" | "sessions/s")
    }

    /// burst500 and idle1000 run `--heavy-runs` times.
    pub(crate) fn is_heavy(self) -> bool {
        matches!(self, Self::Burst | Self::Idle)
    }

    /// One large transfer: a failed first run skips the others.
    pub(crate) fn is_big_transfer(self) -> bool {
        matches!(self, Self::RetrPasv | Self::RetrActv | Self::StorPasv)
    }

    /// What the test measures, with the sizes in use.
    pub(crate) fn measures(self, sizes: &Sizes, passive: &str) -> String {
        let big = format_bytes(sizes.big_bytes);
        let small = format_bytes(sizes.small_size);
        match self {
            Self::RetrPasv => format!("RETR {big}, {passive}"),
            Self::RetrActv => format!("RETR {big}, active (PORT)"),
            Self::StorPasv => format!("STOR {big}, {passive}"),
            Self::SmallGet => format!("{} × {small} RETR, one session", sizes.small_count),
            Self::SmallPut => format!("{} × {small} STOR, one session", sizes.small_count),
            Self::SmallPutSessions => format!(
                "{} sessions × {} × {small} STOR, all at once",
                sizes.small_put_sessions, sizes.small_put_per_session
            ),
            Self::ListList | Self::ListMlsd => format!(
                "{} of {} entries, median of {} in one session",
                &self.name()[5..],
                sizes.list_entries,
                sizes.list_repeat
            ),
            Self::Connrate => format!(
                "connect + login + QUIT, {} clients for {} s",
                sizes.conn_concurrency, sizes.conn_duration_s
            ),
            Self::Burst => format!(
                "{} sessions log in ({LOGIN_RAMP} at a time), then all RETR {small} at once",
                sizes.burst_sessions
            ),
            Self::Idle => format!(
                "server RSS per idle session, {} sessions held {} s with NOOP",
                sizes.idle_sessions, sizes.idle_hold_s
            ),
        }
    }
}

/// Everything the arguments decide, checked.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) target: Target,
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) tests: Vec<TestId>,
    pub(crate) runs: u32,
    pub(crate) heavy_runs: u32,
    pub(crate) sizes: Sizes,
    pub(crate) server: Option<ServerProcess>,
    pub(crate) active_ports: Option<PortRange>,
    pub(crate) passive_mode: DataMode,
    pub(crate) keep_fixtures: bool,
    pub(crate) timeout: Duration,
    pub(crate) run_timeout: Duration,
    pub(crate) max_duration: Duration,
}

impl Plan {
    pub(crate) fn from_args(args: &BenchArgs) -> anyhow::Result<Self> {
        let target = Target::parse(&args.url)?;
        ensure!(
            target.security == Security::Plain,
            "ftps:// is not supported by the benchmark; use ftp://"
        );
        let user = args.user.clone().unwrap_or_else(|| target.user.clone());
        let password = resolve_password(
            args.password.as_deref(),
            target.password.as_deref(),
            std::env::var(PASSWORD_VARIABLE).ok().as_deref(),
            &user,
        )?;
        let tests = selected_tests(&args.only)?;
        let within = |value: u64, low: u64, high: u64, flag: &str| {
            ensure!(
                (low..=high).contains(&value),
                "{flag} must be from {low} to {high}"
            );
            Ok(())
        };
        within(args.runs.into(), 1, 1000, "--runs")?;
        let heavy_runs = args.heavy_runs.unwrap_or(args.runs.min(3));
        within(heavy_runs.into(), 1, 1000, "--heavy-runs")?;
        within(args.big_mib, 1, 1 << 20, "--big-mib")?;
        within(args.small_count.into(), 1, 1_000_000, "--small-count")?;
        within(args.small_size, 1, 1 << 30, "--small-size")?;
        within(
            args.small_put_sessions.into(),
            1,
            100_000,
            "--small-put-sessions",
        )?;
        within(
            args.small_put_per_session.into(),
            1,
            1_000_000,
            "--small-put-per-session",
        )?;
        within(args.list_entries.into(), 1, 1_000_000, "--list-entries")?;
        within(args.list_repeat.into(), 1, 10_000, "--list-repeat")?;
        within(
            args.conn_concurrency.into(),
            1,
            100_000,
            "--conn-concurrency",
        )?;
        within(args.burst_sessions.into(), 1, 100_000, "--burst-sessions")?;
        within(args.idle_sessions.into(), 1, 100_000, "--idle-sessions")?;
        ensure!(
            args.conn_duration > 0.0,
            "--conn-duration must be longer than 0"
        );
        ensure!(
            args.max_minutes.is_finite() && args.max_minutes > 0.0,
            "--max-minutes must be more than 0"
        );
        ensure!(!args.timeout.is_zero(), "--timeout must be longer than 0s");
        ensure!(
            !args.run_timeout.is_zero(),
            "--run-timeout must be longer than 0s"
        );
        let server = args.server_pid.map(|pid| ServerProcess { pid });
        if let Some(server) = server {
            ensure!(
                server.is_alive(),
                "no process {} (--server-pid)",
                server.pid
            );
        }
        Ok(Self {
            target,
            user,
            password,
            tests,
            runs: args.runs,
            heavy_runs,
            sizes: Sizes {
                big_bytes: args.big_mib << 20,
                small_count: args.small_count,
                small_size: args.small_size,
                small_put_sessions: args.small_put_sessions,
                small_put_per_session: args.small_put_per_session,
                list_entries: args.list_entries,
                list_repeat: args.list_repeat,
                conn_concurrency: args.conn_concurrency,
                conn_duration_s: args.conn_duration,
                burst_sessions: args.burst_sessions,
                idle_sessions: args.idle_sessions,
                idle_hold_s: args.idle_hold,
            },
            server,
            active_ports: args.active_ports,
            passive_mode: if args.pasv {
                DataMode::Passive
            } else {
                DataMode::ExtendedPassive
            },
            keep_fixtures: args.keep_fixtures,
            timeout: args.timeout,
            run_timeout: args.run_timeout,
            max_duration: Duration::from_secs_f64(args.max_minutes * 60.0),
        })
    }

    pub(crate) fn selected(&self, test: TestId) -> bool {
        self.tests.contains(&test)
    }

    pub(crate) fn runs_of(&self, test: TestId) -> u32 {
        if test.is_heavy() {
            self.heavy_runs
        } else {
            self.runs
        }
    }

    /// The fixtures the selected tests read.
    pub(crate) fn fixture_needs(&self) -> FixtureNeeds {
        use TestId::*;
        let any = |tests: &[TestId]| tests.iter().any(|&test| self.selected(test));
        FixtureNeeds {
            big_bytes: any(&[RetrPasv, RetrActv]).then_some(self.sizes.big_bytes),
            small: any(&[SmallGet, Burst])
                .then_some((self.sizes.small_count, self.sizes.small_size)),
            list_entries: any(&[ListList, ListMlsd]).then_some(self.sizes.list_entries),
            uploads: any(&[StorPasv, SmallPut, SmallPutSessions]),
        }
    }

    /// The most sockets a test holds at once.
    pub(crate) fn sockets_needed(&self) -> u64 {
        let mut most = 0;
        for test in &self.tests {
            let sockets = match test {
                TestId::Connrate => self.sizes.conn_concurrency,
                TestId::Burst => self.sizes.burst_sessions.saturating_mul(2),
                TestId::SmallPutSessions => self.sizes.small_put_sessions.saturating_mul(2),
                TestId::Idle => self.sizes.idle_sessions,
                _ => 2,
            };
            most = most.max(u64::from(sockets));
        }
        most
    }

    /// How long one run of `test` may take.
    pub(crate) fn run_limit(&self, test: TestId) -> Duration {
        let extra = match test {
            TestId::Connrate => self.sizes.conn_duration_s,
            TestId::Idle => self.sizes.idle_hold_s,
            _ => 0.0,
        };
        self.run_timeout + Duration::from_secs_f64(extra)
    }

    pub(crate) fn parameters(&self) -> serde_json::Value {
        json!({
            "sizes": self.sizes,
            "runs": self.runs,
            "heavy_runs": self.heavy_runs,
            "passive": self.passive_mode.verb(),
            "active_ports": self.active_ports.map(|ports| ports.to_string()),
            "timeout_s": self.timeout.as_secs_f64(),
            "run_timeout_s": self.run_timeout.as_secs_f64(),
            "max_minutes": self.max_duration.as_secs_f64() / 60.0,
            "login_ramp": LOGIN_RAMP,
            "idle_noop_interval_s": IDLE_NOOP_INTERVAL.as_secs_f64(),
            "transfer_buffer_bytes": TRANSFER_BUFFER_BYTES,
        })
    }
}

/// The tests `--only` names, each once and in the order given (all of them when none is
/// named); an unknown name is an error that lists the known ones.
fn selected_tests(only: &[String]) -> anyhow::Result<Vec<TestId>> {
    let mut tests = Vec::new();
    for name in only
        .iter()
        .map(|name| name.trim())
        .filter(|name| !name.is_empty())
    {
        let test = TestId::parse(name).ok_or_else(|| {
            let known: Vec<&str> = TestId::ALL.iter().map(|test| test.name()).collect();
            anyhow!("unknown test {name:?} (known: {})", known.join(", "))
        })?;
        if !tests.contains(&test) {
            tests.push(test);
        }
    }
    if tests.is_empty() {
        tests = TestId::ALL.to_vec();
    }
    Ok(tests)
}

/// The password: `--password`, else the URL's, else FERROFTP_BENCH_PASSWORD, else the
/// customary one for anonymous users.
fn resolve_password(
    flag: Option<&str>,
    url: Option<&str>,
    environment: Option<&str>,
    user: &str,
) -> anyhow::Result<String> {
    if let Some(password) = flag.or(url).or(environment) {
        return Ok(password.to_owned());
    }
    if matches!(user, "anonymous" | "ftp") {
        return Ok(ANONYMOUS_PASSWORD.to_owned());
    }
    bail!("no password for {user}: put it in the URL, pass --password or set {PASSWORD_VARIABLE}")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::fixtures::Layout;
    use crate::parse_seconds;

    #[derive(Debug, clap::Parser)]
    struct Harness {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn plan_of(arguments: &[&str]) -> anyhow::Result<Plan> {
        let harness =
            Harness::try_parse_from(std::iter::once("bench").chain(arguments.iter().copied()))?;
        Plan::from_args(&harness.bench)
    }

    #[test]
    fn url_gives_target_account_and_directory() {
        let plan = plan_of(&["ftp://bench:s%40cret@127.0.0.1:2135/pub/"]).unwrap();
        assert_eq!(
            (plan.target.host.as_str(), plan.target.port),
            ("127.0.0.1", 2135)
        );
        assert_eq!(
            (plan.user.as_str(), plan.password.as_str()),
            ("bench", "s@cret")
        );
        assert_eq!(
            Layout::new(plan.target.path.as_deref()).big(),
            "/pub/bench_fixtures/big.bin"
        );
        assert_eq!(plan.tests, TestId::ALL.to_vec());
        assert_eq!((plan.runs, plan.heavy_runs), (5, 3));
        assert_eq!(plan.sizes.big_bytes, 1 << 30);
        assert_eq!(plan.passive_mode, DataMode::ExtendedPassive);
        let flags = plan_of(&[
            "ftp://bench:url@[::1]:21",
            "--user",
            "alice",
            "--password",
            "flag",
            "--only",
            "idle1000,small_get,idle1000,small_put_8",
            "--runs",
            "1",
            "--conn-duration",
            "500ms",
            "--idle-hold",
            "60",
            "--active-ports",
            "40900-40999",
            "--pasv",
        ])
        .unwrap();
        assert_eq!(flags.target.host, "::1");
        assert_eq!(
            (flags.user.as_str(), flags.password.as_str()),
            ("alice", "flag")
        );
        assert_eq!(
            flags.tests,
            vec![TestId::Idle, TestId::SmallGet, TestId::SmallPutSessions]
        );
        assert_eq!((flags.runs, flags.heavy_runs), (1, 1));
        assert_eq!(flags.sizes.conn_duration_s, 0.5);
        assert_eq!(flags.sizes.idle_hold_s, 60.0);
        assert_eq!(flags.active_ports.unwrap().first(), 40900);
        assert_eq!(flags.passive_mode, DataMode::Passive);
    }

    #[test]
    fn bad_arguments_are_refused() {
        for arguments in [
            &["http://host/"][..],
            &["ftps://user:pw@host/"],
            &["ftp://user:pw@host/", "--only", "retr_pasv,nonsense"],
            &["ftp://user:pw@host/", "--runs", "0"],
            &["ftp://user:pw@host/", "--conn-duration", "0"],
            &["ftp://user:pw@host/", "--idle-sessions", "1000000"],
            &["ftp://user:pw@host/", "--small-put-sessions", "0"],
            &["ftp://user:pw@host/", "--small-put-per-session", "0"],
            &["ftp://user:pw@host/", "--idle-hold", "forever"],
            &["ftp://user:pw@host/", "--active-ports", "0-10"],
        ] {
            assert!(plan_of(arguments).is_err(), "{arguments:?}");
        }
    }

    #[test]
    fn password_precedence() {
        let resolve = |flag, url, environment, user| resolve_password(flag, url, environment, user);
        assert_eq!(
            resolve(Some("f"), Some("u"), Some("e"), "bob").unwrap(),
            "f"
        );
        assert_eq!(resolve(None, Some("u"), Some("e"), "bob").unwrap(), "u");
        assert_eq!(resolve(None, None, Some("e"), "bob").unwrap(), "e");
        assert_eq!(
            resolve(None, None, None, "anonymous").unwrap(),
            ANONYMOUS_PASSWORD
        );
        assert!(resolve(None, None, None, "bob").is_err());
    }

    #[test]
    fn seconds_accept_numbers_and_durations() {
        assert_eq!(parse_seconds("0.5"), Ok(0.5));
        assert_eq!(parse_seconds("60"), Ok(60.0));
        assert_eq!(parse_seconds("1m"), Ok(60.0));
        assert_eq!(parse_seconds("250ms"), Ok(0.25));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("NaN").is_err());
        assert!(parse_seconds("soon").is_err());
    }

    #[test]
    fn fixtures_follow_the_selected_tests() {
        let only = |tests: &str| {
            plan_of(&["ftp://u:p@h/", "--only", tests])
                .unwrap()
                .fixture_needs()
        };
        let list = only("list_MLSD");
        assert_eq!(list.list_entries, Some(10_000));
        assert_eq!(
            (list.big_bytes, list.small, list.uploads),
            (None, None, false)
        );
        let burst = only("burst500,stor_pasv");
        assert_eq!(burst.small, Some((2000, 4096)));
        assert!(burst.uploads);
        assert_eq!(
            burst.big_bytes, None,
            "STOR sends generated bytes, not big.bin"
        );
        let sessions = only("small_put_8");
        assert!(sessions.uploads);
        assert_eq!(
            (sessions.big_bytes, sessions.small, sessions.list_entries),
            (None, None, None),
            "the uploads send generated bytes"
        );
    }

    #[test]
    fn test_ids_round_trip_and_describe_their_sizes() {
        for test in TestId::ALL {
            assert_eq!(TestId::parse(test.name()), Some(test));
        }
        let sizes = plan_of(&["ftp://u:p@h/"]).unwrap().sizes;
        assert_eq!(
            TestId::RetrPasv.measures(&sizes, "EPSV"),
            "RETR 1 GiB, EPSV"
        );
        assert_eq!(
            TestId::SmallGet.measures(&sizes, "EPSV"),
            "2000 × 4 KiB RETR, one session"
        );
        assert_eq!(
            TestId::SmallPutSessions.measures(&sizes, "EPSV"),
            "8 sessions × 500 × 4 KiB STOR, all at once"
        );
        assert_eq!(TestId::SmallPutSessions.unit(), "files/s");
        assert!(TestId::SmallPutSessions.higher_is_better());
        assert!(!TestId::SmallPutSessions.is_heavy());
        let custom = plan_of(&[
            "ftp://u:p@h/",
            "--only",
            "small_put_8",
            "--small-put-sessions",
            "3",
            "--small-put-per-session",
            "20",
        ])
        .unwrap();
        assert_eq!(
            (
                custom.sizes.small_put_sessions,
                custom.sizes.small_put_per_session
            ),
            (3, 20)
        );
        assert_eq!(custom.sockets_needed(), 6);
        assert_eq!(
            TestId::ListMlsd.measures(&sizes, "EPSV"),
            "MLSD of 10000 entries, median of 5 in one session"
        );
        assert!(TestId::Connrate.higher_is_better());
        assert!(!TestId::Burst.higher_is_better());
        assert!(!TestId::Idle.higher_is_better());
    }
}
