//! The server's logs: the event log (text or JSON lines, on standard error or in a file) and
//! the transfer log (one `xferlog` line per transfer, the format of wu-ftpd, ProFTPD's
//! `TransferLog` and vsftpd's `xferlog_std_format`). See docs/operations.md, "Logs".
//!
//! Both files are opened in append mode and can be reopened for logrotate: [`LogFiles`] is the
//! handle, [`LogFiles::reopen`] opens every path again (a rotated file is left to logrotate,
//! the new one is created). [`reopen_on_sighup`] calls it on each SIGHUP.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use ferroftp_server::{TransferCompletion, TransferDirection, TransferObserver, TransferRecord};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use ferroftp_config::{LogConfig, LogFormat};

/// The environment variable with the log filter (`tracing` `EnvFilter` directives, e.g.
/// `info`, `debug`, `ferroftp_server=debug,info`); `info` when unset.
pub const FILTER_VARIABLE: &str = "FERROFTP_LOG";

/// The log files of a running server, to reopen after logrotate moved them.
#[derive(Clone, Debug, Default)]
pub struct LogFiles {
    files: Vec<Arc<ReopenableFile>>,
}

impl LogFiles {
    /// Opens every log file again at its path (creating it), and writes to the new one from
    /// then on. Lines being written meanwhile go wholly to the old file or to the new one.
    /// Every file is tried; the first error is returned.
    pub fn reopen(&self) -> io::Result<()> {
        let mut result = Ok(());
        for file in &self.files {
            if let Err(error) = file.reopen() {
                result = result.and(Err(io::Error::new(
                    error.kind(),
                    format!("{}: {error}", file.path.display()),
                )));
            }
        }
        result
    }

    /// No file to reopen (the log goes to standard error and there is no transfer log).
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// What [`init`] set up.
#[derive(Debug)]
pub struct Logging {
    /// The files to reopen on SIGHUP.
    pub files: LogFiles,
    /// The transfer log, for `ServerOptions::transfer_observer`.
    pub transfer_log: Option<Arc<dyn TransferObserver>>,
}

/// Installs the global subscriber as `[log]` and `FERROFTP_LOG` say. An invalid filter is an
/// error (a silently ignored one hides the very logs someone asked for), and so is a log
/// file that cannot be opened. Colour only on a terminal.
pub fn init(config: &LogConfig) -> anyhow::Result<Logging> {
    let filter = filter_from_env()?;
    let mut files = LogFiles::default();
    let log_file = match &config.file {
        Some(path) => {
            let file = Arc::new(
                ReopenableFile::open(path)
                    .with_context(|| format!("opening log.file {}", path.display()))?,
            );
            files.files.push(Arc::clone(&file));
            Some(file)
        }
        None => None,
    };
    let transfer_log = match &config.transfer_log {
        Some(path) => {
            let file = Arc::new(
                ReopenableFile::open(path)
                    .with_context(|| format!("opening log.transfer_log {}", path.display()))?,
            );
            files.files.push(Arc::clone(&file));
            Some(Arc::new(TransferLogFile { file }) as Arc<dyn TransferObserver>)
        }
        None => None,
    };
    let writer = LogWriter(log_file);
    let registry = tracing_subscriber::registry()
        .with(filter)
        // Keeps the recent warnings and errors for the admin status page.
        .with(ferroftp_admin::RecentErrorsLayer);
    match config.format {
        LogFormat::Text => {
            let ansi = writer.0.is_none() && io::stderr().is_terminal();
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .with_writer(move || writer.clone());
            registry.with(layer).try_init()
        }
        LogFormat::Json => registry.with(JsonLayer { writer }).try_init(),
    }
    .context("installing the log subscriber")?;
    Ok(Logging {
        files,
        transfer_log,
    })
}

fn filter_from_env() -> anyhow::Result<EnvFilter> {
    match std::env::var(FILTER_VARIABLE) {
        Err(std::env::VarError::NotPresent) => Ok(EnvFilter::new("info")),
        Err(std::env::VarError::NotUnicode(_)) => {
            anyhow::bail!("{FILTER_VARIABLE} is not valid UTF-8")
        }
        // The parse error's text repeats its source: shown once, not as a chain.
        Ok(directives) => EnvFilter::builder().parse(&directives).map_err(|error| {
            anyhow::anyhow!(
                "{FILTER_VARIABLE}={directives:?} is not a valid log filter ({error}); \
                 examples: \"info\", \"debug\", \"ferroftp_server=debug,info\""
            )
        }),
    }
}

/// A file opened for appending that can be opened again at the same path.
#[derive(Debug)]
struct ReopenableFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl ReopenableFile {
    fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(open_append(path)?),
        })
    }

    fn reopen(&self) -> io::Result<()> {
        let file = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(PoisonError::into_inner) = file;
        Ok(())
    }

    /// Writes one whole line (one `write` call on an `O_APPEND` file: lines of several
    /// threads never interleave).
    fn write_line(&self, line: &[u8]) -> io::Result<()> {
        self.file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write_all(line)
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Where log lines go: the log file, or standard error.
#[derive(Clone, Debug)]
struct LogWriter(Option<Arc<ReopenableFile>>);

impl LogWriter {
    fn write_line(&self, line: &[u8]) {
        // A log that cannot be written has nowhere to report it.
        let _ = match &self.0 {
            Some(file) => file.write_line(line),
            None => io::stderr().lock().write_all(line),
        };
    }
}

impl Write for LogWriter {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        // The text formatter hands over each event as one buffer.
        match &self.0 {
            Some(file) => file.write_line(buffer).map(|()| buffer.len()),
            None => io::stderr().write(buffer),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// JSON lines

/// One JSON object per event, on one line, with stable names:
///
/// - `ts` (RFC 3339, UTC, microseconds), `level`, `event` (the message), `target`;
/// - from the `session` span: `session` (its number), `client` (address:port), `user` (once
///   logged in), `proxy` (behind a trusted proxy);
/// - the event's own fields under their names: `path`, `bytes`, `duration_ms`, `reply`,
///   `command`, `status`, …; an event's `client` (`login failed`: the address alone)
///   replaces the span's.
struct JsonLayer {
    writer: LogWriter,
}

/// The fields of a span, kept in its extensions.
#[derive(Default)]
struct JsonFields(Map<String, Value>);

impl Visit for JsonFields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        // A string recorded with `?` (client-supplied text, escaped): its Debug form is a
        // quoted literal; the quotes are JSON's job here, the escapes stay.
        let text = match text
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
        {
            Some(inner) if !inner.is_empty() || text.len() == 2 => inner.to_owned(),
            _ => text,
        };
        self.0.insert(field.name().to_owned(), Value::String(text));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
}

/// The stable JSON name of a span's field: the session span says `peer` and `id` in the text
/// log (where tests and habits know them), `client` and `session` in JSON.
fn json_span_field<'a>(span: &str, field: &'a str) -> &'a str {
    match (span, field) {
        ("session", "peer") => "client",
        ("session", "id") => "session",
        _ => field,
    }
}

impl<S> Layer<S> for JsonLayer
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, context: Context<'_, S>) {
        let mut fields = JsonFields::default();
        attributes.record(&mut fields);
        if let Some(span) = context.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, context: Context<'_, S>) {
        if let Some(span) = context.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<JsonFields>()
        {
            values.record(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, context: Context<'_, S>) {
        let metadata = event.metadata();
        let mut object = Map::new();
        object.insert(
            "ts".to_owned(),
            Value::String(humantime::format_rfc3339_micros(SystemTime::now()).to_string()),
        );
        object.insert(
            "level".to_owned(),
            Value::String(metadata.level().as_str().to_owned()),
        );
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        let message = fields.0.remove("message").unwrap_or(Value::Null);
        object.insert("event".to_owned(), message);
        if let Some(scope) = context.event_scope(event) {
            for span in scope.from_root() {
                if let Some(span_fields) = span.extensions().get::<JsonFields>() {
                    for (name, value) in &span_fields.0 {
                        object.insert(json_span_field(span.name(), name).to_owned(), value.clone());
                    }
                }
            }
        }
        object.extend(fields.0);
        object.insert(
            "target".to_owned(),
            Value::String(metadata.target().to_owned()),
        );
        let mut line = Value::Object(object).to_string();
        line.push('\n');
        self.writer.write_line(line.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// xferlog

/// Writes one `xferlog` line per finished or aborted file transfer (listings are not
/// logged, as in wu-ftpd and vsftpd).
#[derive(Debug)]
struct TransferLogFile {
    file: Arc<ReopenableFile>,
}

impl TransferObserver for TransferLogFile {
    fn transfer_finished(&self, record: &TransferRecord) {
        if let Some(line) = xferlog_line(record) {
            // Nowhere to report a failure but the event log, which has the transfer already.
            if let Err(error) = self.file.write_line(line.as_bytes()) {
                tracing::warn!(%error, "writing the transfer log failed");
            }
        }
    }
}

/// The `xferlog(5)` line of a transfer, newline included; `None` for listings. Fields:
///
/// `current-time transfer-time remote-host file-size filename transfer-type
/// special-action-flag direction access-mode username service-name authentication-method
/// authenticated-user-id completion-status`
///
/// - current-time: `DDD MMM dd hh:mm:ss YYYY` in UTC (vsftpd's default; no time zone is
///   written, and UTC does not jump);
/// - transfer-time: whole seconds, at least 1 (as vsftpd);
/// - remote-host: the client's IP address (no DNS lookups);
/// - file-size: the bytes that crossed the data connection;
/// - filename: the path in the storage, spaces and control characters as `_` (as ProFTPD);
/// - transfer-type `a` (TYPE A) or `b`; special-action-flag `_`; direction `o` (download)
///   or `i` (upload); access-mode `a` (anonymous) or `r`; the user name (as the filename);
///   service-name `ftp`; authentication-method `0`; authenticated-user-id `*`;
/// - completion-status `c` (complete) or `i` (incomplete: aborted, connection lost).
fn xferlog_line(record: &TransferRecord) -> Option<String> {
    let direction = match record.direction {
        TransferDirection::Download => 'o',
        TransferDirection::Upload => 'i',
        TransferDirection::Listing => return None,
    };
    let access_mode = if record.user == ferroftp_auth_file::ANONYMOUS_USER_NAME {
        'a'
    } else {
        'r'
    };
    let completion = match record.completion {
        TransferCompletion::Complete => 'c',
        TransferCompletion::Incomplete { .. } => 'i',
    };
    let seconds = (record.duration.as_millis().div_ceil(1000) as u64).max(1);
    let mut line = String::with_capacity(128);
    let _ = writeln!(
        line,
        "{} {seconds} {} {} {} {} _ {direction} {access_mode} {} ftp 0 * {completion}",
        ctime_utc(record.finished),
        record.client.ip().to_canonical(),
        record.bytes,
        xferlog_field(&record.path.to_string()),
        if record.ascii { 'a' } else { 'b' },
        xferlog_field(&record.user),
    );
    Some(line)
}

/// A name as one xferlog field: whitespace and control characters become `_`, so the line
/// keeps its field count and no client-supplied name can start a new line.
fn xferlog_field(name: &str) -> String {
    let field: String = name
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if field.is_empty() {
        "_".to_owned()
    } else {
        field
    }
}

/// `Sun Dec 06 00:27:02 2026`: the `ctime` form xferlog uses (day of the month zero-padded,
/// as ProFTPD and vsftpd write it, so that every line has the same number of fields).
fn ctime_utc(time: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let seconds = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = seconds / 86_400;
    let of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{} {} {day:02} {:02}:{:02}:{:02} {year}",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Year, month (1-12) and day (1-31) of a day counted from 1970-01-01 (proleptic Gregorian;
/// Howard Hinnant's `civil_from_days`, for days after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record(direction: TransferDirection, completion: TransferCompletion) -> TransferRecord {
        TransferRecord {
            // 2026-12-06 00:27:02 UTC, a Sunday.
            finished: UNIX_EPOCH + Duration::from_secs(1_796_516_822),
            duration: Duration::from_millis(2_300),
            session: 7,
            client: "[::ffff:203.0.113.9]:40000".parse().unwrap(),
            user: "bob".to_owned(),
            command: "STOR",
            direction,
            path: ferroftp_proto::VirtualPath::root()
                .resolve("/in coming/a\tb.txt")
                .unwrap(),
            bytes: 1_048_576,
            ascii: false,
            protected: false,
            completion,
        }
    }

    #[test]
    fn xferlog_lines_have_the_fourteen_fields_of_xferlog_5() {
        let line = xferlog_line(&record(
            TransferDirection::Upload,
            TransferCompletion::Incomplete {
                reason: "aborted".to_owned(),
            },
        ))
        .unwrap();
        assert_eq!(
            line,
            "Sun Dec 06 00:27:02 2026 3 203.0.113.9 1048576 /in_coming/a_b.txt b _ i r bob ftp 0 * i\n"
        );
        assert_eq!(line.split_whitespace().count(), 18); // the date is 5 of them
        let mut download = record(TransferDirection::Download, TransferCompletion::Complete);
        download.user = "anonymous".to_owned();
        download.ascii = true;
        download.duration = Duration::ZERO;
        let line = xferlog_line(&download).unwrap();
        assert!(
            line.ends_with(
                " 1 203.0.113.9 1048576 /in_coming/a_b.txt a _ o a anonymous ftp 0 * c\n"
            ),
            "{line}"
        );
        assert_eq!(
            xferlog_line(&record(
                TransferDirection::Listing,
                TransferCompletion::Complete
            )),
            None
        );
    }

    #[test]
    fn ctime_dates_across_leap_years_and_month_ends() {
        let at = |seconds| ctime_utc(UNIX_EPOCH + Duration::from_secs(seconds));
        assert_eq!(at(0), "Thu Jan 01 00:00:00 1970");
        assert_eq!(at(951_825_599), "Tue Feb 29 11:59:59 2000");
        assert_eq!(at(1_709_251_199), "Thu Feb 29 23:59:59 2024");
        assert_eq!(at(1_709_251_200), "Fri Mar 01 00:00:00 2024");
        assert_eq!(at(1_735_689_599), "Tue Dec 31 23:59:59 2024");
    }

    #[test]
    fn names_keep_the_line_and_its_field_count() {
        assert_eq!(xferlog_field("a b\nc\u{1b}d"), "a_b_c_d");
        assert_eq!(xferlog_field(""), "_");
    }

    #[test]
    fn json_lines_carry_the_stable_field_names() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("log.json");
        let file = Arc::new(ReopenableFile::open(&path).unwrap());
        let layer = JsonLayer {
            writer: LogWriter(Some(Arc::clone(&file))),
        };
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "session",
                peer = "203.0.113.9:40000",
                id = 7u64,
                user = tracing::field::Empty
            );
            let _entered = span.enter();
            span.record("user", "bob");
            tracing::info!(
                command = "RETR",
                path = "/a.txt",
                bytes = 5u64,
                duration_ms = 12u64,
                reply = 226u16,
                "transfer"
            );
            tracing::warn!(user = ?"e\u{1b}vil\"", client = "203.0.113.9", "login failed");
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let transfer = &lines[0];
        assert_eq!(transfer["event"], "transfer");
        assert_eq!(transfer["level"], "INFO");
        assert_eq!(transfer["session"], 7);
        assert_eq!(transfer["client"], "203.0.113.9:40000");
        assert_eq!(transfer["user"], "bob");
        assert_eq!(transfer["path"], "/a.txt");
        assert_eq!(transfer["bytes"], 5);
        assert_eq!(transfer["duration_ms"], 12);
        assert_eq!(transfer["reply"], 226);
        assert!(transfer["ts"].as_str().unwrap().ends_with('Z'));
        // The event's own fields win; client-supplied text stays escaped.
        assert_eq!(lines[1]["client"], "203.0.113.9");
        assert_eq!(lines[1]["user"], "e\\u{1b}vil\\\"");
        assert!(!text.contains('\u{1b}'));
    }

    #[test]
    fn reopen_writes_to_a_new_file_at_the_same_path() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("xferlog");
        let file = Arc::new(ReopenableFile::open(&path).unwrap());
        let files = LogFiles {
            files: vec![Arc::clone(&file)],
        };
        file.write_line(b"one\n").unwrap();
        let rotated = directory.path().join("xferlog.1");
        std::fs::rename(&path, &rotated).unwrap();
        files.reopen().unwrap();
        file.write_line(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "one\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        // A directory that went away: the error names the file.
        drop(directory);
        let error = files.reopen().unwrap_err();
        assert!(error.to_string().contains("xferlog"), "{error}");
    }

    #[test]
    fn an_invalid_filter_is_refused() {
        assert!(EnvFilter::builder().parse("ferroftp=loud").is_err());
        assert!(
            EnvFilter::builder()
                .parse("ferroftp_server=debug,info")
                .is_ok()
        );
    }
}
