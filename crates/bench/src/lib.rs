//! `ferroftp bench URL`: the shared harness's measurements (`../shared/bench`) against any FTP
//! server, with this project's client.
//!
//! `measurements` holds one function per test, `fixtures` creates the files they read
//! through FTP itself, `session` is one logged-in session and its allocation-free transfer
//! loops, `process_stats` reads the server's CPU and memory from `/proc`, and `report`
//! turns the run records into the progress lines, the markdown table and the JSON document.
//! This module parses the arguments and drives the runs: one test after the other, each run
//! timed, its CPU sampled and bounded by `--run-timeout`, no new run after `--max-minutes`.
//! What the run created on the server is removed at the end, after errors and on SIGINT or
//! SIGTERM too (`cleanup`); failed runs are explained in words (`hints`).

mod cleanup;
mod fixtures;
mod hints;
mod measurements;
mod plan;
mod process_stats;
mod report;
mod session;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, anyhow};
use ferroftp_client::ReplyCode;

use cleanup::{Cleanup, CleanupRecord};
use ferroftp_config::PortRange;
use ferroftp_doctor::Target;
use fixtures::{Layout, PseudoRandom};
use measurements::{Bench, Measurement};
use plan::{Plan, TestId};
use process_stats::{CpuSample, MachineFacts, ServerProcess};
use report::{Document, RunRecord, ServerFacts, TestReport, round3};
use session::{DataChannel, Endpoint, Failure, Session};

/// The buffer every single-stream transfer reads into or sends from.
const TRANSFER_BUFFER_BYTES: usize = 256 * 1024;

/// Longest wait for a forking server's session processes to exit between runs.
const QUIET_LIMIT: Duration = Duration::from_secs(20);

/// Pause between runs.
const PAUSE_BETWEEN_RUNS: Duration = Duration::from_millis(500);

/// Longest the removal of the benchmark's files may take after an interruption.
const CLEANUP_LIMIT: Duration = Duration::from_secs(120);

/// `ferroftp bench` arguments.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The server: ftp://user:password@host:port/[directory]. Fixtures and uploads go under
    /// the directory (default: the login directory); the account needs write access.
    pub url: String,
    /// User name (overrides the URL's).
    #[arg(long)]
    pub user: Option<String>,
    /// Password (overrides the URL's); else the URL's, else FERROFTP_BENCH_PASSWORD.
    #[arg(long)]
    pub password: Option<String>,
    /// Tests to run, comma-separated, in this order (default: all): retr_pasv, retr_actv,
    /// stor_pasv, small_get, small_put, small_put_8, list_LIST, list_MLSD, connrate,
    /// burst500, idle1000.
    #[arg(long, value_delimiter = ',', value_name = "TESTS")]
    pub only: Vec<String>,
    /// Runs per test.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub runs: u32,
    /// Runs of burst500 and idle1000 (default: --runs, at most 3).
    #[arg(long, value_name = "N")]
    pub heavy_runs: Option<u32>,
    /// Size of the large file (retr_pasv, retr_actv, stor_pasv), MiB.
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    pub big_mib: u64,
    /// Small files per run (small_get, small_put; burst500 reads them).
    #[arg(long, default_value_t = 2000, value_name = "N")]
    pub small_count: u32,
    /// Bytes per small file.
    #[arg(long, default_value_t = 4096, value_name = "BYTES")]
    pub small_size: u64,
    /// Sessions of small_put_8, all uploading at once.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub small_put_sessions: u32,
    /// Files each small_put_8 session stores per run.
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub small_put_per_session: u32,
    /// Entries of the listed directory (list_LIST, list_MLSD).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub list_entries: u32,
    /// Listings per run, one session; the run's value is their median.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub list_repeat: u32,
    /// Concurrent clients of connrate. This, --burst-sessions and --idle-sessions must fit the
    /// server's session limits (ferroftp: max_sessions_per_ip, 50 by default).
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub conn_concurrency: u32,
    /// Length of a connrate run: seconds (0.5) or a duration (5s).
    #[arg(long, default_value = "5", value_name = "SECONDS", value_parser = parse_seconds)]
    pub conn_duration: f64,
    /// Sessions of burst500.
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub burst_sessions: u32,
    /// Sessions of idle1000.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub idle_sessions: u32,
    /// How long idle1000 holds its sessions (NOOP on each every 10 s and at the end):
    /// seconds or a duration. `--idle-sessions 10000 --idle-hold 60` is the scale check.
    #[arg(long, default_value = "3", value_name = "SECONDS", value_parser = parse_seconds)]
    pub idle_hold: f64,
    /// The server's PID: its CPU and memory, and its descendants', are read from /proc (the
    /// server must run on this machine). Without it idle1000 has no value.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Ports the client listens on for active mode (retr_actv), e.g. 30900-30999; default:
    /// any free port.
    #[arg(long, value_name = "FIRST-LAST")]
    pub active_ports: Option<PortRange>,
    /// Passive data connections with PASV instead of EPSV.
    #[arg(long)]
    pub pasv: bool,
    /// Keep bench_fixtures on the server for a following run (it is reused when present);
    /// by default everything the benchmark created is removed at the end.
    #[arg(long)]
    pub keep_fixtures: bool,
    /// Write the JSON report to FILE (`-`: standard output, instead of the markdown).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the markdown report to FILE as well.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Append one line per run to FILE in the shared harness's results format (bench.py's
    /// `"type": "run"` lines), so its report merges these runs with its own.
    #[arg(long, value_name = "FILE")]
    pub harness_jsonl: Option<PathBuf>,
    /// The server's label in those lines, as bench.py's --name (default: HOST:PORT).
    #[arg(long, value_name = "NAME", requires = "harness_jsonl")]
    pub harness_name: Option<String>,
    /// Start no new run after this many minutes.
    #[arg(long, default_value_t = 45.0, value_name = "MINUTES")]
    pub max_minutes: f64,
    /// The longest wait for any one network event (connect, reply, data read or write).
    #[arg(long, default_value = "30s", value_name = "DURATION",
          value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The longest one run may take (plus --conn-duration or --idle-hold); a run cut short
    /// is reported with the error `run:deadline`.
    #[arg(long, default_value = "10m", value_name = "DURATION",
          value_parser = humantime::parse_duration)]
    pub run_timeout: Duration,
}

/// `0.5`, `60` (seconds) or a humantime duration such as `500ms`, `1m`.
fn parse_seconds(text: &str) -> Result<f64, String> {
    let seconds = match text.trim().parse::<f64>() {
        Ok(seconds) => seconds,
        Err(_) => humantime::parse_duration(text.trim())
            .map_err(|error| format!("{text:?}: {error}"))?
            .as_secs_f64(),
    };
    if seconds.is_finite() && (0.0..=86_400.0).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(format!(
            "{text:?} is not a number of seconds from 0 to 86400"
        ))
    }
}

/// Runs the benchmark and prints its report; exit code 1 when any run had errors.
/// `open_files` is the process's open-files limit (the binary raises it at start): each
/// session of the heavy tests is a socket.
pub fn run(args: BenchArgs, open_files: u64) -> anyhow::Result<ExitCode> {
    let plan = Plan::from_args(&args)?;
    let needed = plan.sockets_needed() + 64;
    if needed > open_files {
        eprintln!(
            "bench: warning: {needed} sockets needed but the open-files limit is {open_files}; \
             raise it (ulimit -n) or expect EMFILE errors"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let created = CleanupRecord::default();
    let document = runtime.block_on(async {
        tokio::select! {
            document = drive(&plan, open_files, &created) => document,
            signal = interruption() => {
                // The runs were dropped with their sessions; a new one removes the files.
                progress(&format!("{signal}: removing what the benchmark created"));
                tokio::select! {
                    _ = clean_up(&created) => {}
                    _ = interruption() => progress("interrupted again: files left on the server"),
                }
                Err(anyhow!("interrupted by {signal}"))
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    let document = document?;

    let markdown = report::markdown(&document);
    let json_to_stdout = args.json.as_deref() == Some(std::path::Path::new("-"));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&document)? + "\n";
        if json_to_stdout {
            print!("{text}");
        } else {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, &markdown).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.harness_jsonl {
        let label = args
            .harness_name
            .clone()
            .unwrap_or_else(|| format!("{}:{}", plan.target.host, plan.target.port));
        append_harness_lines(path, &report::harness_lines(&document, &label))?;
    }
    if !json_to_stdout {
        print!("{markdown}");
    }
    Ok(if document.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Appends `lines` to the harness's results file, which other runs (bench.py's, earlier
/// targets') write to as well.
fn append_harness_lines(path: &std::path::Path, lines: &[String]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .with_context(|| format!("appending to {}", path.display()))
}

fn progress(line: &str) {
    eprintln!("bench: {line}");
}

/// SIGINT (Ctrl-C) or SIGTERM, by name; never completes when neither can be watched.
async fn interruption() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}

/// Removes what the run created (see [`cleanup`]), bounded by [`CLEANUP_LIMIT`]; `true`
/// when it is all gone. Problems are reported as progress lines.
async fn clean_up(created: &CleanupRecord) -> bool {
    let Some(cleanup) = cleanup::snapshot(created) else {
        return true;
    };
    let mut buffer = vec![0u8; TRANSFER_BUFFER_BYTES];
    let mut report = |line: String| progress(&line);
    let removal = cleanup::remove_created(&cleanup, &mut buffer, &mut report);
    let failure = match tokio::time::timeout(CLEANUP_LIMIT, removal).await {
        Ok(Ok(())) => return true,
        Ok(Err(failure)) => failure.to_string(),
        Err(_elapsed) => format!("not done within {CLEANUP_LIMIT:?}"),
    };
    let layout = &cleanup.layout;
    progress(&format!(
        "warning: could not remove {} and {}: {failure}",
        layout.upload_dir(),
        layout.fixtures()
    ));
    false
}

async fn drive(plan: &Plan, open_files: u64, created: &CleanupRecord) -> anyhow::Result<Document> {
    let started_at = SystemTime::now();
    let started = Instant::now();
    let address = tokio::net::lookup_host((plan.target.host.as_str(), plan.target.port))
        .await
        .with_context(|| format!("resolving {}", plan.target.host))?
        .next()
        .ok_or_else(|| anyhow!("{} resolves to no address", plan.target.host))?;
    let endpoint = Arc::new(Endpoint {
        address,
        user: plan.user.clone(),
        password: plan.password.clone(),
        timeout: plan.timeout,
    });
    let target = Target {
        user: plan.user.clone(),
        password: None,
        ..plan.target.clone()
    }
    .display();
    progress(&format!("{target} ({address})"));

    let (mut session, greeting) = Session::open(&endpoint)
        .await
        .map_err(|failure| anyhow!("cannot log in to {target}: {failure}"))?;
    let system = match session.command("SYST").await {
        Ok(reply) if reply.code == ReplyCode(215) => Some(reply.text()),
        _ => None,
    };
    let _ = session.quit().await;

    let bench = Bench {
        endpoint: Arc::clone(&endpoint),
        passive: DataChannel::Passive(plan.passive_mode),
        active: DataChannel::Active {
            ports: plan.active_ports,
        },
        layout: Layout::new(plan.target.path.as_deref()),
        sizes: plan.sizes,
        server: plan.server,
    };
    let mut buffer = vec![0u8; TRANSFER_BUFFER_BYTES];
    let mut block = vec![0u8; TRANSFER_BUFFER_BYTES];
    PseudoRandom::new(0x5EED).fill(&mut block);
    prepare_fixtures(plan, &bench, created, &mut buffer).await?;

    let base_processes = plan.server.map_or(0, |server| server.tree().len());
    let mut tests = Vec::new();
    let mut skipped = Vec::new();
    for &test in &plan.tests {
        if started.elapsed() >= plan.max_duration {
            skipped.push(test.name().to_owned());
            continue;
        }
        tests.push(
            run_test(
                &bench,
                plan,
                test,
                started,
                base_processes,
                &mut buffer,
                &mut block,
            )
            .await,
        );
    }

    let mut errors: u64 = tests.iter().map(|test| test.errors).sum();
    if !clean_up(created).await {
        errors += 1;
    }
    Ok(Document {
        tool: "ferroftp bench",
        version: env!("CARGO_PKG_VERSION"),
        started: humantime::format_rfc3339_seconds(started_at).to_string(),
        target,
        server: ServerFacts {
            greeting: greeting.text(),
            system,
            pid: plan.server.map(|server| server.pid),
        },
        machine: MachineFacts::read(open_files),
        parameters: plan.parameters(),
        tests,
        errors,
        skipped,
    })
}

/// Records what to clean up, then creates the fixtures the plan's tests read; when that
/// fails, removes what was created and says where the benchmark needs to write.
async fn prepare_fixtures(
    plan: &Plan,
    bench: &Bench,
    created: &CleanupRecord,
    buffer: &mut [u8],
) -> anyhow::Result<()> {
    let needs = plan.fixture_needs();
    *created
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Cleanup {
        endpoint: Arc::clone(&bench.endpoint),
        layout: bench.layout.clone(),
        channel: bench.passive,
        keep_fixtures: plan.keep_fixtures,
        created_fixtures: false,
        created_uploads: false,
    });
    let prepared = fixtures::prepare(
        &bench.endpoint,
        &bench.layout,
        needs,
        bench.passive,
        buffer,
        created,
        &mut |line| progress(&line),
    )
    .await;
    if let Err(failure) = prepared {
        clean_up(created).await;
        let directory = plan.target.path.as_deref().unwrap_or("the login directory");
        return Err(anyhow!(
            "preparing the fixtures: {failure}\n\
             the benchmark works in {directory} (the URL's path): it must exist and {} must \
             be able to create directories and files there",
            plan.user
        ));
    }
    Ok(())
}

/// The runs of one test, each after the server has settled, with the hints its failures
/// call for; stops early at `--max-minutes`, or after a failed first run when the others
/// would fail the same way.
async fn run_test(
    bench: &Bench,
    plan: &Plan,
    test: TestId,
    started: Instant,
    base_processes: usize,
    buffer: &mut [u8],
    block: &mut [u8],
) -> TestReport {
    let runs = plan.runs_of(test);
    let mut records = Vec::new();
    let mut notes = Vec::new();
    for run in 1..=runs {
        if started.elapsed() >= plan.max_duration {
            notes.push(format!(
                "runs {run}–{runs} not started: --max-minutes reached"
            ));
            break;
        }
        wait_quiet(plan.server, base_processes).await;
        let record = run_once(bench, plan, test, run, buffer, block).await;
        progress(&report::progress_line(
            test.name(),
            runs,
            test.unit(),
            &record,
        ));
        let failed = record.value.is_none() && record.errors > 0;
        for hint in hints::explain(
            test,
            &record.error_kinds,
            session::first_refused_greeting(),
            &bench.layout.upload_dir(),
        ) {
            progress(&format!("{}: {hint}", test.name()));
            if !notes.contains(&hint) {
                notes.push(hint);
            }
        }
        let refused = hints::sessions_refused(&record.error_kinds);
        records.push(record);
        if failed && run == 1 && (test.is_big_transfer() || refused) && runs > 1 {
            notes.push("the first run failed; the others were skipped".to_owned());
            break;
        }
    }
    let passive = plan.passive_mode.verb();
    TestReport::new(
        test.name(),
        test.measures(&plan.sizes, passive),
        test.unit(),
        test.higher_is_better(),
        records,
        notes,
    )
}

/// Runs one run of `test`, bounded by the plan's run limit, and records it.
async fn run_once(
    bench: &Bench,
    plan: &Plan,
    test: TestId,
    run: u32,
    buffer: &mut [u8],
    block: &mut [u8],
) -> RunRecord {
    let before = CpuSample::take(bench.server);
    let measuring = async {
        match test {
            TestId::RetrPasv => measurements::retrieve_big(bench, bench.passive, buffer).await,
            TestId::RetrActv => measurements::retrieve_big(bench, bench.active, buffer).await,
            TestId::StorPasv => measurements::store_big(bench, run, block).await,
            TestId::SmallGet => measurements::small_get(bench, buffer).await,
            TestId::SmallPut => measurements::small_put(bench, run, block, buffer).await,
            TestId::SmallPutSessions => measurements::small_put_sessions(bench, run).await,
            TestId::ListList => measurements::listing(bench, "LIST", buffer).await,
            TestId::ListMlsd => measurements::listing(bench, "MLSD", buffer).await,
            TestId::Connrate => measurements::connection_rate(bench).await,
            TestId::Burst => measurements::burst(bench).await,
            TestId::Idle => measurements::idle(bench).await,
        }
    };
    let measurement = match tokio::time::timeout(plan.run_limit(test), measuring).await {
        Ok(Ok(measurement)) => measurement,
        Ok(Err(failure)) => Measurement::failed(&failure),
        Err(_elapsed) => Measurement::failed(&Failure::new("run:deadline")),
    };
    let cpu = before.until(&CpuSample::take(bench.server));
    let errors = measurement.failures.total();
    RunRecord {
        run,
        value: if errors == 0 {
            measurement.value.map(round3)
        } else {
            None
        },
        cpu,
        measured_phase: measurement.measured_phase,
        errors,
        error_kinds: measurement.failures.kinds().clone(),
        details: measurement.details,
        note: measurement.note,
    }
}

/// Waits (bounded) until a forking server's session processes of the previous run exited,
/// then pauses briefly.
async fn wait_quiet(server: Option<ServerProcess>, base_processes: usize) {
    if let Some(server) = server {
        let deadline = Instant::now() + QUIET_LIMIT;
        while Instant::now() < deadline && server.tree().len() > base_processes {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    tokio::time::sleep(PAUSE_BETWEEN_RUNS).await;
}
