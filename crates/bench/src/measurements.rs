//! One function per measurement. Each runs one run of its test against the server and
//! returns the figure with what it verified; the driver times the run, samples CPU and
//! enforces the run's deadline (dropping a measurement aborts every task it spawned).
//!
//! A measurement sets a value even when it counted failures: the driver reports a run with
//! failures as failed, without a value.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferroftp_client::ReplyCode;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::{Barrier, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::fixtures::{Layout, PseudoRandom, check_size, entry_name, remove_dir};
use super::process_stats::{CpuSample, CpuUse, ServerProcess, TreeMemory};
use super::report::{median, percentile};
use super::session::{DataChannel, Endpoint, Failure, FailureTally, Session};

/// Logins in flight at once in the burst and idle tests (as in the shared harness).
pub(crate) const LOGIN_RAMP: usize = 50;

/// Size of the per-session read buffer of the burst test and of small_put_8's listings (500
/// sessions read at once; the single-stream tests share one 256 KiB buffer).
const BURST_BUFFER_BYTES: usize = 64 * 1024;

/// How long the idle test waits after the last login before reading the server's memory.
const IDLE_SETTLE: Duration = Duration::from_secs(2);

/// How often the idle test sends NOOP on every session while it holds them (and once more at
/// the end of the hold).
pub(crate) const IDLE_NOOP_INTERVAL: Duration = Duration::from_secs(10);

/// The sizes and counts of the tests.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Sizes {
    /// The large file, bytes.
    pub big_bytes: u64,
    /// Small files per run.
    pub small_count: u32,
    /// Bytes per small file.
    pub small_size: u64,
    /// Sessions of small_put_8.
    pub small_put_sessions: u32,
    /// Files each small_put_8 session stores per run.
    pub small_put_per_session: u32,
    /// Entries of the listed directory.
    pub list_entries: u32,
    /// Listings per run.
    pub list_repeat: u32,
    /// Concurrent clients of the connection-rate test.
    pub conn_concurrency: u32,
    /// Length of the connection-rate test, seconds.
    pub conn_duration_s: f64,
    /// Sessions of the burst test.
    pub burst_sessions: u32,
    /// Sessions of the idle test.
    pub idle_sessions: u32,
    /// How long the idle test holds its sessions, seconds.
    pub idle_hold_s: f64,
}

/// Everything a measurement needs to know about the target.
#[derive(Debug, Clone)]
pub(crate) struct Bench {
    /// Server address and account.
    pub endpoint: Arc<Endpoint>,
    /// Passive data connections: EPSV, or PASV with `--pasv`.
    pub passive: DataChannel,
    /// Active data connections, in `--active-ports` when given.
    pub active: DataChannel,
    /// Where the fixtures and uploads are.
    pub layout: Layout,
    /// Sizes and counts.
    pub sizes: Sizes,
    /// The server's process tree, with `--server-pid`.
    pub server: Option<ServerProcess>,
}

/// What one run measured.
#[derive(Debug, Default)]
pub(crate) struct Measurement {
    /// The figure in the test's unit.
    pub value: Option<f64>,
    /// Failures by kind; any makes the run failed.
    pub failures: FailureTally,
    /// Test-specific facts (bytes, counts, phases, memory), for the JSON report.
    pub details: Map<String, Value>,
    /// Why there is no value although nothing failed.
    pub note: Option<String>,
    /// Wall time and CPU of the phase the value measures, when the run does much besides.
    pub measured_phase: Option<CpuUse>,
}

impl Measurement {
    /// A run that failed before it measured anything.
    pub(crate) fn failed(failure: &Failure) -> Self {
        let mut measurement = Self::default();
        measurement.failures.add(failure);
        measurement
    }

    fn detail(&mut self, key: &str, value: impl Into<Value>) {
        self.details.insert(key.to_owned(), value.into());
    }

    fn fail(&mut self, failure: &Failure) {
        self.failures.add(failure);
    }
}

/// Rounds seconds to microseconds for the report.
fn seconds(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e6
}

/// Milliseconds, to the microsecond.
fn milliseconds(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// MB/s (10^6 bytes per second).
fn megabytes_per_second(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64().max(1e-9) / 1e6
}

/// Opens a session and sets binary mode.
async fn binary_session(endpoint: &Endpoint) -> Result<Session, Failure> {
    let (mut session, _greeting) = Session::open(endpoint).await?;
    session.expect("TYPE I", ReplyCode::OK).await?;
    Ok(session)
}

/// retr_pasv / retr_actv: RETR of the large file over `channel`, MB/s from the data-connection
/// setup to the final reply. Verifies the byte count.
pub(crate) async fn retrieve_big(
    bench: &Bench,
    channel: DataChannel,
    buffer: &mut [u8],
) -> Result<Measurement, Failure> {
    let mut session = binary_session(&bench.endpoint).await?;
    let started = Instant::now();
    let received = session
        .download(&format!("RETR {}", bench.layout.big()), channel, buffer)
        .await;
    let elapsed = started.elapsed();
    let _ = session.quit().await;
    let received = received?;
    let mut measurement = Measurement::default();
    measurement.detail("bytes", received.bytes);
    measurement.detail("transfer_s", seconds(elapsed));
    if received.bytes != bench.sizes.big_bytes {
        measurement.fail(&Failure::new("RETR:wrong-size"));
    }
    measurement.value = Some(megabytes_per_second(received.bytes, elapsed));
    Ok(measurement)
}

/// stor_pasv: STOR of `--big-mib` to bench_upload/stor_RUN.bin, sending `block` again and
/// again; MB/s from the data-connection setup to the final reply. Verifies the stored size
/// with SIZE, then deletes the file.
pub(crate) async fn store_big(
    bench: &Bench,
    run: u32,
    block: &mut [u8],
) -> Result<Measurement, Failure> {
    let path = bench.layout.stor_file(run);
    let mut session = binary_session(&bench.endpoint).await?;
    let started = Instant::now();
    let sent = session
        .upload(&path, bench.passive, bench.sizes.big_bytes, block, |_| {})
        .await;
    let elapsed = started.elapsed();
    let mut measurement = Measurement::default();
    match sent {
        Ok(()) => {
            if let Err(failure) = check_size(&mut session, &path, bench.sizes.big_bytes).await {
                measurement.fail(&failure);
            }
            measurement.value = Some(megabytes_per_second(bench.sizes.big_bytes, elapsed));
            measurement.detail("bytes", bench.sizes.big_bytes);
            measurement.detail("transfer_s", seconds(elapsed));
        }
        Err(failure) => measurement.fail(&failure),
    }
    let deleted = session.command(&format!("DELE {path}")).await;
    match deleted {
        Ok(reply) if reply.code == ReplyCode::FILE_ACTION_OK => {}
        // Nothing stored, nothing to delete.
        _ if measurement.value.is_none() => {}
        Ok(reply) => measurement.fail(&Failure::new(format!("cleanup:DELE:{}", reply.code))),
        Err(failure) => measurement.fail(&failure.within("cleanup")),
    }
    let _ = session.quit().await;
    Ok(measurement)
}

/// small_get: RETR of every small file, one session, files/s. Verifies each file's size;
/// stops at the first failure.
pub(crate) async fn small_get(bench: &Bench, buffer: &mut [u8]) -> Result<Measurement, Failure> {
    let sizes = bench.sizes;
    let mut session = binary_session(&bench.endpoint).await?;
    let mut measurement = Measurement::default();
    let (mut files, mut bytes) = (0u32, 0u64);
    let started = Instant::now();
    for index in 0..sizes.small_count {
        let line = format!("RETR {}", bench.layout.small(index));
        match session.download(&line, bench.passive, buffer).await {
            Ok(received) if received.bytes == sizes.small_size => {
                files += 1;
                bytes += received.bytes;
            }
            Ok(_) => {
                measurement.fail(&Failure::new("RETR:wrong-size"));
                break;
            }
            Err(failure) => {
                measurement.fail(&failure);
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    let _ = session.quit().await;
    measurement.detail("files", files);
    measurement.detail("bytes", bytes);
    measurement.detail("transfer_s", seconds(elapsed));
    measurement.value = Some(f64::from(files) / elapsed.as_secs_f64().max(1e-9));
    Ok(measurement)
}

/// small_put: STOR of `--small-count` files of `--small-size` bytes into
/// bench_upload/put_RUN/, one session, files/s. Then checks every stored size with SIZE and
/// deletes the files and the directory.
pub(crate) async fn small_put(
    bench: &Bench,
    run: u32,
    block: &mut [u8],
    buffer: &mut [u8],
) -> Result<Measurement, Failure> {
    let sizes = bench.sizes;
    let dir = bench.layout.put_dir(run);
    let mut session = binary_session(&bench.endpoint).await?;
    // Leftovers of an interrupted earlier run.
    let _ = remove_dir(&mut session, &dir, bench.passive, buffer).await;
    session
        .expect(&format!("MKD {dir}"), ReplyCode::PATH_CREATED)
        .await?;
    let mut measurement = Measurement::default();
    let block_len =
        usize::try_from(sizes.small_size).map_or(block.len(), |size| size.min(block.len()));
    let block = &mut block[..block_len.max(1)];
    let mut files = 0u32;
    let started = Instant::now();
    for index in 0..sizes.small_count {
        let path = format!("{dir}/{}", entry_name(index));
        match session
            .upload(&path, bench.passive, sizes.small_size, block, |_| {})
            .await
        {
            Ok(()) => files += 1,
            Err(failure) => {
                measurement.fail(&failure);
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    measurement.value = Some(f64::from(files) / elapsed.as_secs_f64().max(1e-9));
    let mut stored = 0u32;
    for index in 0..files {
        let path = format!("{dir}/{}", entry_name(index));
        match check_size(&mut session, &path, sizes.small_size).await {
            Ok(()) => stored += 1,
            Err(failure) => measurement.fail(&failure),
        }
    }
    if let Err(failure) = remove_dir(&mut session, &dir, bench.passive, buffer).await {
        measurement.fail(&failure.within("cleanup"));
    }
    let _ = session.quit().await;
    measurement.detail("files", files);
    measurement.detail("stored_with_right_size", stored);
    measurement.detail("transfer_s", seconds(elapsed));
    Ok(measurement)
}

/// What one small_put_8 session did.
struct PutSession {
    /// Uploads confirmed by their final reply.
    stored: u32,
    /// Of those, files whose SIZE was right afterwards.
    verified: u32,
    /// Login, upload, check and cleanup failures.
    failures: FailureTally,
    /// Whether it logged in and made its directory.
    prepared: bool,
    /// When the barrier let it start uploading, from the run's start.
    released: Duration,
    /// When its last upload ended (confirmed or failed), from the run's start.
    finished: Duration,
}

/// What every small_put_8 session shares.
struct PutSessionShared {
    endpoint: Arc<Endpoint>,
    passive: DataChannel,
    sizes: Sizes,
    /// Logins in flight at once.
    ramp: Semaphore,
    /// Every session has logged in and made its directory: the uploads start together.
    /// The measurement waits on it too, to read the CPU counters as they start.
    ready: Barrier,
    /// Every session has done its uploads: the checks and the cleanup (SIZE, NLST, DELE,
    /// RMD) start only then, so they do not slow down a session still uploading. The
    /// measurement waits on it too, to read the CPU counters of the upload phase.
    uploaded: Barrier,
    started: Instant,
}

/// small_put_8: `--small-put-sessions` sessions (8) log in (at most 50 logins in flight),
/// each makes its own directory bench_upload/put_sessions_RUN_SESSION, and all wait for each
/// other; then each STORs `--small-put-per-session` files (500) of `--small-size` bytes in a
/// loop, all at once. Files/s: all files stored over the time from the release to the last
/// session's last final reply. Then every stored size is checked with SIZE and the files and
/// directories are deleted. A session stops at its first failed upload.
pub(crate) async fn small_put_sessions(bench: &Bench, run: u32) -> Result<Measurement, Failure> {
    let sizes = bench.sizes;
    // The sessions and this function.
    let parties = usize::try_from(sizes.small_put_sessions)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    let shared = Arc::new(PutSessionShared {
        endpoint: Arc::clone(&bench.endpoint),
        passive: bench.passive,
        sizes,
        ramp: Semaphore::new(LOGIN_RAMP),
        ready: Barrier::new(parties),
        uploaded: Barrier::new(parties),
        started: Instant::now(),
    });
    let mut sessions = JoinSet::new();
    for index in 0..sizes.small_put_sessions {
        let dir = bench.layout.session_put_dir(run, index);
        sessions.spawn(put_session(Arc::clone(&shared), dir));
    }
    let mut measurement = Measurement::default();
    shared.ready.wait().await;
    let uploading = CpuSample::take(bench.server);
    shared.uploaded.wait().await;
    measurement.measured_phase = Some(uploading.until(&CpuSample::take(bench.server)));
    let (mut stored, mut verified, mut prepared) = (0u32, 0u32, 0u32);
    let mut first_release = None::<Duration>;
    let mut last_finish = Duration::ZERO;
    let mut upload_times = Vec::new();
    while let Some(joined) = sessions.join_next().await {
        let Ok(session) = joined else {
            measurement.fail(&Failure::new("session:panicked"));
            continue;
        };
        stored += session.stored;
        verified += session.verified;
        prepared += u32::from(session.prepared);
        measurement.failures.merge(session.failures);
        first_release =
            Some(first_release.map_or(session.released, |first| first.min(session.released)));
        last_finish = last_finish.max(session.finished);
        if session.prepared {
            upload_times.push(session.finished.saturating_sub(session.released));
        }
    }
    let first_release = first_release.unwrap_or(Duration::ZERO);
    let elapsed = last_finish.saturating_sub(first_release);
    measurement.value = Some(f64::from(stored) / elapsed.as_secs_f64().max(1e-9));
    measurement.detail("sessions", sizes.small_put_sessions);
    measurement.detail("prepared", prepared);
    measurement.detail("files", stored);
    measurement.detail("stored_with_right_size", verified);
    measurement.detail("login_phase_s", seconds(first_release));
    measurement.detail("transfer_s", seconds(elapsed));
    if let (Some(fastest), Some(slowest)) = (upload_times.iter().min(), upload_times.iter().max()) {
        measurement.detail("fastest_session_s", seconds(*fastest));
        measurement.detail("slowest_session_s", seconds(*slowest));
    }
    Ok(measurement)
}

/// One small_put_8 session: log in and make `dir`, wait for the others, upload, wait for
/// the others again, then check and remove what it stored.
async fn put_session(shared: Arc<PutSessionShared>, dir: String) -> PutSession {
    let sizes = shared.sizes;
    let mut failures = FailureTally::default();
    let mut listing_buffer = vec![0u8; BURST_BUFFER_BYTES];
    let block_len = usize::try_from(sizes.small_size)
        .map_or(BURST_BUFFER_BYTES, |size| size.min(BURST_BUFFER_BYTES))
        .max(1);
    let mut block = vec![0u8; block_len];
    PseudoRandom::new(0x5EED).fill(&mut block);

    let prepared = async {
        let permit = shared.ramp.acquire().await;
        let mut session = binary_session(&shared.endpoint).await?;
        drop(permit);
        // Leftovers of an interrupted earlier run.
        let _ = remove_dir(&mut session, &dir, shared.passive, &mut listing_buffer).await;
        session
            .expect(&format!("MKD {dir}"), ReplyCode::PATH_CREATED)
            .await?;
        Ok::<_, Failure>(session)
    }
    .await;
    // A session that could not start still waits, or the others would wait for it forever.
    shared.ready.wait().await;
    let released = shared.started.elapsed();
    let mut session = match prepared {
        Ok(session) => Some(session),
        Err(failure) => {
            failures.add(&failure);
            None
        }
    };
    let prepared = session.is_some();

    let mut stored = 0u32;
    if let Some(session) = session.as_mut() {
        for index in 0..sizes.small_put_per_session {
            let path = format!("{dir}/{}", entry_name(index));
            match session
                .upload(&path, shared.passive, sizes.small_size, &mut block, |_| {})
                .await
            {
                Ok(()) => stored += 1,
                Err(failure) => {
                    failures.add(&failure);
                    break;
                }
            }
        }
    }
    let finished = shared.started.elapsed();
    shared.uploaded.wait().await;

    let mut verified = 0u32;
    if let Some(mut session) = session {
        for index in 0..stored {
            let path = format!("{dir}/{}", entry_name(index));
            match check_size(&mut session, &path, sizes.small_size).await {
                Ok(()) => verified += 1,
                Err(failure) => failures.add(&failure),
            }
        }
        if let Err(failure) =
            remove_dir(&mut session, &dir, shared.passive, &mut listing_buffer).await
        {
            failures.add(&failure.within("cleanup"));
        }
        let _ = session.quit().await;
    }
    PutSession {
        stored,
        verified,
        failures,
        prepared,
        released,
        finished,
    }
}

/// list_LIST / list_MLSD: `--list-repeat` listings of the listing directory with `verb`, one
/// session, ms per listing (median of the run), from the data-connection setup to the final
/// reply. Verifies that each listing has at least one line per entry.
pub(crate) async fn listing(
    bench: &Bench,
    verb: &str,
    buffer: &mut [u8],
) -> Result<Measurement, Failure> {
    let sizes = bench.sizes;
    let dir = bench.layout.list_dir(sizes.list_entries);
    let (mut session, _greeting) = Session::open(&bench.endpoint).await?;
    // Listings are text; a server that refuses TYPE A lists anyway.
    let _ = session.command("TYPE A").await;
    let mut measurement = Measurement::default();
    let mut times_ms = Vec::new();
    let mut lines = Vec::new();
    for _ in 0..sizes.list_repeat {
        let started = Instant::now();
        match session
            .download(&format!("{verb} {dir}"), bench.passive, buffer)
            .await
        {
            Ok(received) => {
                times_ms.push(milliseconds(started.elapsed()));
                lines.push(received.lines);
                if received.lines < u64::from(sizes.list_entries) {
                    measurement.fail(&Failure::new(format!("{verb}:truncated")));
                    break;
                }
            }
            Err(failure) => {
                measurement.fail(&failure);
                break;
            }
        }
    }
    let _ = session.quit().await;
    measurement.value = median(&times_ms);
    measurement.detail("ms", times_ms);
    measurement.detail("lines", lines);
    Ok(measurement)
}

/// connrate: `--conn-concurrency` clients loop connect + greeting + USER/PASS + QUIT for
/// `--conn-duration`; sessions completed per second of the whole run (in-flight sessions are
/// finished after the duration and count).
pub(crate) async fn connection_rate(bench: &Bench) -> Result<Measurement, Failure> {
    let sizes = bench.sizes;
    let started = Instant::now();
    let stop_at = started + Duration::from_secs_f64(sizes.conn_duration_s);
    let mut workers = JoinSet::new();
    for _ in 0..sizes.conn_concurrency {
        let endpoint = Arc::clone(&bench.endpoint);
        workers.spawn(async move {
            let mut completed = 0u64;
            let mut failures = FailureTally::default();
            let mut latencies_ms = Vec::new();
            while Instant::now() < stop_at {
                let session_started = Instant::now();
                let result = async {
                    let (session, _greeting) = Session::open(&endpoint).await?;
                    session.quit().await
                }
                .await;
                match result {
                    Ok(()) => {
                        completed += 1;
                        latencies_ms.push(milliseconds(session_started.elapsed()));
                    }
                    Err(failure) => {
                        failures.add(&failure);
                        // Do not spin on a server that refuses at once.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (completed, failures, latencies_ms)
        });
    }
    let mut measurement = Measurement::default();
    let mut completed = 0u64;
    let mut latencies_ms = Vec::new();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok((count, failures, latencies)) => {
                completed += count;
                measurement.failures.merge(failures);
                latencies_ms.extend(latencies);
            }
            Err(_) => measurement.fail(&Failure::new("worker:panicked")),
        }
    }
    let elapsed = started.elapsed();
    latencies_ms.sort_by(f64::total_cmp);
    measurement.value = Some(completed as f64 / elapsed.as_secs_f64().max(1e-9));
    measurement.detail("sessions", completed);
    measurement.detail("elapsed_s", seconds(elapsed));
    measurement.detail("latency_ms_p50", percentile(&latencies_ms, 0.5));
    measurement.detail("latency_ms_p99", percentile(&latencies_ms, 0.99));
    measurement.detail("latency_ms_max", percentile(&latencies_ms, 1.0));
    Ok(measurement)
}

/// What one burst session saw: its result and when its phases ended, from the run's start.
struct BurstSession {
    result: Result<(), Failure>,
    logged_in: bool,
    login_done: Duration,
    released: Duration,
    retrieved: Duration,
}

/// burst500: `--burst-sessions` sessions log in (at most 50 logins in flight) and set TYPE I,
/// wait for each other, then all RETR one small file at the same moment. Seconds from the
/// start to the last RETR's final reply; verifies every file's size.
pub(crate) async fn burst(bench: &Bench) -> Result<Measurement, Failure> {
    let sizes = bench.sizes;
    let count = usize::try_from(sizes.burst_sessions)
        .unwrap_or(usize::MAX)
        .max(1);
    let barrier = Arc::new(Barrier::new(count));
    let ramp = Arc::new(Semaphore::new(LOGIN_RAMP));
    let started = Instant::now();
    let mut sessions = JoinSet::new();
    for index in 0..sizes.burst_sessions {
        let endpoint = Arc::clone(&bench.endpoint);
        let (barrier, ramp) = (Arc::clone(&barrier), Arc::clone(&ramp));
        let path = bench.layout.small(index % sizes.small_count.max(1));
        let passive = bench.passive;
        sessions.spawn(async move {
            let permit = ramp.acquire_owned().await;
            let login = binary_session(&endpoint).await;
            drop(permit);
            let login_done = started.elapsed();
            barrier.wait().await;
            let released = started.elapsed();
            let mut session = match login {
                Ok(session) => session,
                Err(failure) => {
                    return BurstSession {
                        result: Err(failure),
                        logged_in: false,
                        login_done,
                        released,
                        retrieved: released,
                    };
                }
            };
            let mut buffer = vec![0u8; BURST_BUFFER_BYTES];
            let received = session
                .download(&format!("RETR {path}"), passive, &mut buffer)
                .await;
            let retrieved = started.elapsed();
            let _ = session.quit().await;
            let result = match received {
                Ok(received) if received.bytes == sizes.small_size => Ok(()),
                Ok(_) => Err(Failure::new("RETR:wrong-size")),
                Err(failure) => Err(failure),
            };
            BurstSession {
                result,
                logged_in: true,
                login_done,
                released,
                retrieved,
            }
        });
    }
    let mut measurement = Measurement::default();
    let (mut retrieved_ok, mut login_failures, mut retr_failures) = (0u32, 0u32, 0u32);
    let (mut last_login, mut last_release, mut last_retrieval) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    while let Some(joined) = sessions.join_next().await {
        let Ok(session) = joined else {
            measurement.fail(&Failure::new("session:panicked"));
            continue;
        };
        last_login = last_login.max(session.login_done);
        last_release = last_release.max(session.released);
        last_retrieval = last_retrieval.max(session.retrieved);
        match session.result {
            Ok(()) => retrieved_ok += 1,
            Err(failure) => {
                if session.logged_in {
                    retr_failures += 1;
                } else {
                    login_failures += 1;
                }
                measurement.fail(&failure);
            }
        }
    }
    measurement.value = Some(seconds(last_retrieval));
    measurement.detail("sessions", sizes.burst_sessions);
    measurement.detail("retrieved", retrieved_ok);
    measurement.detail("login_failures", login_failures);
    measurement.detail("retr_failures", retr_failures);
    measurement.detail("login_phase_s", seconds(last_login));
    measurement.detail(
        "retr_phase_s",
        seconds(last_retrieval.saturating_sub(last_release)),
    );
    Ok(measurement)
}

/// What the idle test's leader tells every session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdleCommand {
    Hold,
    Noop(u32),
    Quit,
}

/// What an idle session reports.
#[derive(Debug)]
enum IdleEvent {
    LoggedIn(Result<(), Failure>),
    Answered(Result<(), Failure>),
    Quit(Result<(), Failure>),
}

/// idle1000: `--idle-sessions` logged-in sessions (at most 50 logins in flight); 2 s after the
/// last login the server tree's RSS is read again: KiB per session over the RSS before. The
/// sessions are then held for `--idle-hold`, every one sending NOOP every 10 s and at the end,
/// and QUIT. Login, NOOP and QUIT failures are counted. Without `--server-pid` there is no
/// value.
pub(crate) async fn idle(bench: &Bench) -> Result<Measurement, Failure> {
    let sizes = bench.sizes;
    let timeout = bench.endpoint.timeout;
    let before = bench.server.map(|server| server.memory());
    let started = Instant::now();
    let ramp = Arc::new(Semaphore::new(LOGIN_RAMP));
    let (command, commands) = watch::channel(IdleCommand::Hold);
    let (events_sender, mut events) = mpsc::unbounded_channel();
    let mut sessions = JoinSet::new();
    for _ in 0..sizes.idle_sessions {
        let endpoint = Arc::clone(&bench.endpoint);
        let ramp = Arc::clone(&ramp);
        let commands = commands.clone();
        let events = events_sender.clone();
        sessions.spawn(idle_session(endpoint, ramp, commands, events));
    }
    drop(events_sender);
    let mut measurement = Measurement::default();
    let mut logged_in = 0u32;
    for _ in 0..sizes.idle_sessions {
        match events.recv().await {
            Some(IdleEvent::LoggedIn(Ok(()))) => logged_in += 1,
            Some(IdleEvent::LoggedIn(Err(failure))) => measurement.fail(&failure),
            Some(_) | None => break,
        }
    }
    let ramp_time = started.elapsed();
    tokio::time::sleep(IDLE_SETTLE).await;
    let loaded = bench.server.map(|server| server.memory());

    let hold = Duration::from_secs_f64(sizes.idle_hold_s);
    let held_from = tokio::time::Instant::now();
    let hold_end = held_from + hold;
    let (mut rounds, mut noop_failures) = (0u32, 0u32);
    loop {
        let next = (held_from + IDLE_NOOP_INTERVAL * (rounds + 1)).min(hold_end);
        tokio::time::sleep_until(next).await;
        rounds += 1;
        let _ = command.send(IdleCommand::Noop(rounds));
        let answers = collect(&mut events, logged_in, timeout + Duration::from_secs(1)).await;
        for answer in &answers {
            if let IdleEvent::Answered(Err(failure)) = answer {
                measurement.fail(failure);
                noop_failures += 1;
            }
        }
        let missing = logged_in.saturating_sub(u32::try_from(answers.len()).unwrap_or(u32::MAX));
        for _ in 0..missing {
            measurement.fail(&Failure::new("NOOP:no-answer"));
            noop_failures += 1;
        }
        if next >= hold_end {
            break;
        }
    }
    let held = held_from.elapsed();
    let _ = command.send(IdleCommand::Quit);
    let quits = collect(&mut events, logged_in, timeout + Duration::from_secs(1)).await;
    let mut quit_failures = 0u32;
    for quit in &quits {
        if let IdleEvent::Quit(Err(failure)) = quit {
            measurement.fail(failure);
            quit_failures += 1;
        }
    }
    for _ in 0..logged_in.saturating_sub(u32::try_from(quits.len()).unwrap_or(u32::MAX)) {
        measurement.fail(&Failure::new("QUIT:no-answer"));
        quit_failures += 1;
    }
    sessions.abort_all();

    measurement.detail("sessions", sizes.idle_sessions);
    measurement.detail("logged_in", logged_in);
    measurement.detail("ramp_s", seconds(ramp_time));
    measurement.detail("held_s", seconds(held));
    measurement.detail("noop_rounds", rounds);
    measurement.detail("noop_failures", noop_failures);
    measurement.detail("quit_failures", quit_failures);
    match (before, loaded) {
        (Some(before), Some(loaded)) if logged_in > 0 => {
            let memory = idle_memory(before, loaded, logged_in);
            measurement.value = Some(memory.rss_kib_per_session);
            measurement.detail(
                "memory",
                serde_json::to_value(memory).unwrap_or(Value::Null),
            );
        }
        (Some(_), Some(_)) => {}
        _ => {
            measurement.note =
                Some("no --server-pid: the server's memory was not measured".to_owned());
        }
    }
    Ok(measurement)
}

/// One idle session: logs in (holding a `ramp` permit meanwhile), then does what `commands`
/// says until told to QUIT, reporting each outcome to `events`.
async fn idle_session(
    endpoint: Arc<Endpoint>,
    ramp: Arc<Semaphore>,
    mut commands: watch::Receiver<IdleCommand>,
    events: mpsc::UnboundedSender<IdleEvent>,
) {
    let permit = ramp.acquire_owned().await;
    let login = Session::open(&endpoint).await;
    drop(permit);
    let mut session = match login {
        Ok((session, _greeting)) => session,
        Err(failure) => {
            let _ = events.send(IdleEvent::LoggedIn(Err(failure)));
            return;
        }
    };
    let _ = events.send(IdleEvent::LoggedIn(Ok(())));
    while commands.changed().await.is_ok() {
        let command = *commands.borrow_and_update();
        match command {
            IdleCommand::Hold => {}
            IdleCommand::Noop(_) => {
                let answered = session.expect("NOOP", ReplyCode::OK).await.map(drop);
                let _ = events.send(IdleEvent::Answered(answered));
            }
            IdleCommand::Quit => {
                let _ = events.send(IdleEvent::Quit(session.quit().await));
                return;
            }
        }
    }
}

/// Server memory before and with the idle sessions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct IdleMemory {
    /// The tree before the sessions.
    pub before: TreeMemory,
    /// The tree with the sessions logged in.
    pub loaded: TreeMemory,
    /// RSS growth per session, KiB.
    pub rss_kib_per_session: f64,
    /// PSS growth per session, KiB.
    pub pss_kib_per_session: f64,
    /// New processes per session (1 or 2 for a forking server, 0 for ferroftp).
    pub processes_per_session: f64,
}

/// The per-session growth of the server tree's memory.
pub(crate) fn idle_memory(before: TreeMemory, loaded: TreeMemory, sessions: u32) -> IdleMemory {
    let per_session = |after: u64, before: u64| {
        let growth = after as f64 - before as f64;
        (growth / f64::from(sessions.max(1)) * 10.0).round() / 10.0
    };
    IdleMemory {
        before,
        loaded,
        rss_kib_per_session: per_session(loaded.rss_kib, before.rss_kib),
        pss_kib_per_session: per_session(loaded.pss_kib, before.pss_kib),
        processes_per_session: per_session(loaded.processes, before.processes),
    }
}

/// Receives up to `count` events, waiting at most `limit` in all.
async fn collect(
    events: &mut mpsc::UnboundedReceiver<IdleEvent>,
    count: u32,
    limit: Duration,
) -> Vec<IdleEvent> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut received = Vec::new();
    while received.len() < usize::try_from(count).unwrap_or(usize::MAX) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => received.push(event),
            Ok(None) | Err(_) => break,
        }
    }
    received
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_memory_is_growth_per_session() {
        let before = TreeMemory {
            processes: 1,
            rss_kib: 25_000,
            pss_kib: 24_000,
        };
        let loaded = TreeMemory {
            processes: 1,
            rss_kib: 50_000,
            pss_kib: 48_003,
        };
        let memory = idle_memory(before, loaded, 1000);
        assert_eq!(memory.rss_kib_per_session, 25.0);
        assert_eq!(memory.pss_kib_per_session, 24.0);
        assert_eq!(memory.processes_per_session, 0.0);
        let forking = TreeMemory {
            processes: 2001,
            ..loaded
        };
        assert_eq!(
            idle_memory(before, forking, 1000).processes_per_session,
            2.0
        );
    }

    #[test]
    fn megabytes_are_decimal() {
        assert_eq!(
            megabytes_per_second(2_000_000, Duration::from_millis(500)),
            4.0
        );
    }
}
