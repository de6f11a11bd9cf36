//! Statistics and the three outputs: a progress line per run, the markdown table and the JSON
//! document. Pure functions of the records; nothing here does I/O.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::process_stats::{CpuUse, MachineFacts};

/// The median (the mean of the two middle values for an even count), `None` for no values.
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        length if length % 2 == 1 => Some(sorted[middle]),
        _ => Some((sorted[middle - 1] + sorted[middle]) / 2.0),
    }
}

/// The value at `fraction` (0 to 1) of sorted `values`, nearest rank; `None` for no values.
pub(crate) fn percentile(sorted: &[f64], fraction: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let index = (last as f64 * fraction.clamp(0.0, 1.0)).round() as usize;
    sorted.get(index.min(last)).copied()
}

/// Median, minimum and maximum of a test's successful runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Summary {
    /// Median.
    pub median: f64,
    /// Lowest.
    pub min: f64,
    /// Highest.
    pub max: f64,
}

/// The summary of `values`, `None` for no values.
pub(crate) fn summarize(values: &[f64]) -> Option<Summary> {
    Some(Summary {
        median: median(values)?,
        min: values.iter().copied().reduce(f64::min)?,
        max: values.iter().copied().reduce(f64::max)?,
    })
}

/// A figure with three significant-ish digits: `2193`, `45.2`, `4.07`; `-` for none.
pub(crate) fn format_value(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(value) if value.abs() >= 100.0 => format!("{value:.0}"),
        Some(value) if value.abs() >= 10.0 => format!("{value:.1}"),
        Some(value) => format!("{value:.2}"),
    }
}

/// A byte count as the largest binary unit that divides it: `1 GiB`, `4 KiB`, `1000 B`.
pub(crate) fn format_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{} {unit}", bytes / size);
        }
    }
    format!("{bytes} B")
}

/// One run of one test.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct RunRecord {
    /// 1 for the first run.
    pub run: u32,
    /// The figure, `null` when the run failed (any error) or could not measure.
    pub value: Option<f64>,
    /// Wall time and CPU of the whole run (session setup, checks and cleanup included).
    #[serde(flatten)]
    pub cpu: CpuUse,
    /// Wall time and CPU of the measured phase alone, for a run that does much besides
    /// (small_put_8: the uploads, without the logins, checks and deletions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured_phase: Option<CpuUse>,
    /// Failed operations.
    pub errors: u64,
    /// Failed operations by kind, e.g. `{"RETR:550": 2}`.
    pub error_kinds: BTreeMap<String, u64>,
    /// Test-specific facts.
    pub details: Map<String, Value>,
    /// Why there is no value although nothing failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl RunRecord {
    /// The CPU that goes with the value: the measured phase's, else the whole run's.
    pub(crate) fn measured_cpu(&self) -> CpuUse {
        self.measured_phase.unwrap_or(self.cpu)
    }
}

/// One test's runs and their summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct TestReport {
    /// Test id: `retr_pasv`, `burst500`, …
    pub test: String,
    /// What it measures with the sizes used, e.g. `RETR 1 GiB, EPSV`.
    pub measures: String,
    /// `MB/s`, `files/s`, `ms`, `sessions/s`, `s`, `KiB/session`.
    pub unit: &'static str,
    /// Whether a higher value is better.
    pub higher_is_better: bool,
    /// Every run, failed ones included.
    pub runs: Vec<RunRecord>,
    /// Median of the successful runs.
    pub median: Option<f64>,
    /// Lowest successful run.
    pub min: Option<f64>,
    /// Highest successful run.
    pub max: Option<f64>,
    /// Runs with a value.
    pub runs_ok: usize,
    /// Errors over all runs.
    pub errors: u64,
    /// Median share of one core this process used during the successful runs (all runs
    /// when none succeeded), percent.
    pub client_cpu_percent: Option<f64>,
    /// The same for the server's process tree (with `--server-pid`).
    pub server_cpu_percent: Option<f64>,
    /// Skipped runs, missing values.
    pub notes: Vec<String>,
}

impl TestReport {
    /// Summarizes `runs` of test `test`.
    pub(crate) fn new(
        test: &str,
        measures: String,
        unit: &'static str,
        higher_is_better: bool,
        runs: Vec<RunRecord>,
        mut notes: Vec<String>,
    ) -> Self {
        let values: Vec<f64> = runs.iter().filter_map(|run| run.value).collect();
        let summary = summarize(&values);
        let successful: Vec<&RunRecord> = runs.iter().filter(|run| run.value.is_some()).collect();
        let sample: Vec<&RunRecord> = if successful.is_empty() {
            runs.iter().collect()
        } else {
            successful
        };
        let share = |cpu: fn(&CpuUse) -> Option<f64>| {
            let shares: Vec<f64> = sample
                .iter()
                .map(|run| run.measured_cpu())
                .filter(|used| used.wall_s > 0.0)
                .filter_map(|used| Some(cpu(&used)? / used.wall_s * 100.0))
                .collect();
            median(&shares).map(|percent| percent.round())
        };
        for run in &runs {
            if let Some(note) = &run.note
                && !notes.contains(note)
            {
                notes.push(note.clone());
            }
        }
        Self {
            test: test.to_owned(),
            measures,
            unit,
            higher_is_better,
            median: summary.map(|summary| summary.median),
            min: summary.map(|summary| summary.min),
            max: summary.map(|summary| summary.max),
            runs_ok: values.len(),
            errors: runs.iter().map(|run| run.errors).sum(),
            client_cpu_percent: share(|used| Some(used.client_cpu_s)),
            server_cpu_percent: share(|used| used.server_cpu_s),
            runs,
            notes,
        }
    }
}

/// What is known about the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ServerFacts {
    /// The greeting's text.
    pub greeting: String,
    /// The SYST reply's text, when the server answered 215.
    pub system: Option<String>,
    /// `--server-pid`.
    pub pid: Option<u32>,
}

/// The whole report, as written by `--json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Document {
    /// `ferroftp bench`.
    pub tool: &'static str,
    /// This ferroftp's version.
    pub version: &'static str,
    /// When the benchmark started, RFC 3339.
    pub started: String,
    /// The URL without its password.
    pub target: String,
    /// Greeting, system, PID.
    pub server: ServerFacts,
    /// Cores, kernel, memory of the machine running the benchmark.
    pub machine: MachineFacts,
    /// Sizes, counts, runs and modes used.
    pub parameters: Value,
    /// One entry per test run, in order.
    pub tests: Vec<TestReport>,
    /// Errors over all runs, plus one when bench_upload could not be removed.
    pub errors: u64,
    /// Tests skipped by `--max-minutes`.
    pub skipped: Vec<String>,
}

/// The progress line for one run: `small_get run 2/5: 3024 files/s (wall 0.66 s)` or
/// `… failed: 2 errors (RETR:550 ×2)`.
pub(crate) fn progress_line(test: &str, runs: u32, unit: &str, record: &RunRecord) -> String {
    let mut line = format!("{test} run {}/{runs}: ", record.run);
    match (record.value, record.errors) {
        (Some(value), 0) => {
            let _ = write!(line, "{} {unit}", format_value(Some(value)));
        }
        (_, 0) => {
            let _ = write!(
                line,
                "no value ({})",
                record.note.as_deref().unwrap_or("nothing measured")
            );
        }
        (_, errors) => {
            let kinds: Vec<String> = record
                .error_kinds
                .iter()
                .take(5)
                .map(|(kind, count)| format!("{kind} ×{count}"))
                .collect();
            let _ = write!(
                line,
                "failed: {errors} error{} ({})",
                if errors == 1 { "" } else { "s" },
                kinds.join(", ")
            );
        }
    }
    let _ = write!(line, " (wall {:.2} s", record.cpu.wall_s);
    let _ = write!(line, ", client CPU {:.2} s", record.cpu.client_cpu_s);
    if let Some(server) = record.cpu.server_cpu_s {
        let _ = write!(line, ", server CPU {server:.2} s");
    }
    line.push(')');
    line
}

/// The markdown report: a header with the target and the machine, one table row per test,
/// then the notes and error kinds.
pub(crate) fn markdown(document: &Document) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### ferroftp bench: {}", escape(&document.target));
    out.push('\n');
    let mut server = format!("Server: `{}`", escape(&document.server.greeting));
    if let Some(system) = &document.server.system {
        let _ = write!(server, " ({})", escape(system));
    }
    match document.server.pid {
        Some(pid) => {
            let _ = write!(server, ", PID {pid}");
        }
        None => server.push_str(", no --server-pid (no server CPU or memory)"),
    }
    let _ = writeln!(out, "{server}.");
    let machine = &document.machine;
    let _ = writeln!(
        out,
        "Client: ferroftp {} on {} core{}, kernel {}; started {}.",
        document.version,
        machine.cores,
        if machine.cores == 1 { "" } else { "s" },
        machine.kernel.as_deref().unwrap_or("unknown"),
        document.started
    );
    out.push('\n');
    out.push_str(
        "| test | measures | unit | median | min–max | runs ok | errors | client CPU | server CPU |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for test in &document.tests {
        let percent =
            |value: Option<f64>| value.map_or("-".to_owned(), |value| format!("{value:.0}%"));
        let _ = writeln!(
            out,
            "| {} | {} | {} {} | {} | {}–{} | {}/{} | {} | {} | {} |",
            test.test,
            escape(&test.measures),
            test.unit,
            if test.higher_is_better { "↑" } else { "↓" },
            format_value(test.median),
            format_value(test.min),
            format_value(test.max),
            test.runs_ok,
            test.runs.len(),
            test.errors,
            percent(test.client_cpu_percent),
            percent(test.server_cpu_percent),
        );
    }
    let mut notes = Vec::new();
    for test in &document.tests {
        for note in &test.notes {
            notes.push(format!("{}: {note}", test.test));
        }
        for run in test.runs.iter().filter(|run| run.errors > 0) {
            let kinds: Vec<String> = run
                .error_kinds
                .iter()
                .map(|(kind, count)| format!("{kind} ×{count}"))
                .collect();
            notes.push(format!(
                "{} run {}: {}",
                test.test,
                run.run,
                kinds.join(", ")
            ));
        }
    }
    for skipped in &document.skipped {
        notes.push(format!("{skipped}: not run (--max-minutes reached)"));
    }
    if !notes.is_empty() {
        out.push('\n');
        for note in notes {
            let _ = writeln!(out, "- {}", escape(&note));
        }
    }
    out
}

/// One line per run in the shared harness's results format (`bench.py`'s `"type": "run"`
/// lines: target, test, run counted from 0, value, unit, CPU seconds, details), so
/// `bench.py report` merges these runs with its own; `target` is the label of the server.
/// The CPU is the measured phase's where the run has one, as bench.py measures only its
/// client's command. Without `--server-pid` the server's CPU is 0, as bench.py records it
/// when it finds no server process.
pub(crate) fn harness_lines(document: &Document, target: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for test in &document.tests {
        for run in &test.runs {
            let used = run.measured_cpu();
            let server_cpu_s = used.server_cpu_s.unwrap_or(0.0);
            let other_cpu_s = used.machine_busy_s.map_or(0.0, |busy| {
                round3((busy - used.client_cpu_s - server_cpu_s).max(0.0))
            });
            let mut detail = run.details.clone();
            detail.insert("tool".to_owned(), json!(document.tool));
            if !run.error_kinds.is_empty() {
                detail.insert("error_kinds".to_owned(), json!(run.error_kinds));
            }
            if let Some(note) = &run.note {
                detail.insert("error".to_owned(), json!(note));
            }
            let line = json!({
                "type": "run",
                "target": target,
                "test": test.test,
                "run": run.run.saturating_sub(1),
                "value": run.value,
                "unit": test.unit,
                "cpu": {
                    "wall_s": used.wall_s,
                    "client_cpu_s": used.client_cpu_s,
                    "server_cpu_s": server_cpu_s,
                    "machine_busy_s": used.machine_busy_s.unwrap_or(0.0),
                    "other_cpu_s": other_cpu_s,
                },
                "detail": detail,
            });
            lines.push(line.to_string());
        }
    }
    lines
}

/// Rounds to three decimals: seconds to the millisecond.
pub(crate) fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// Keeps a table cell a cell.
fn escape(text: &str) -> String {
    text.replace('|', "\\|").replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(run: u32, value: Option<f64>, errors: &[(&str, u64)]) -> RunRecord {
        let error_kinds: BTreeMap<String, u64> = errors
            .iter()
            .map(|(kind, count)| ((*kind).to_owned(), *count))
            .collect();
        RunRecord {
            run,
            value,
            cpu: CpuUse {
                wall_s: 2.0,
                client_cpu_s: 0.5,
                server_cpu_s: Some(1.0),
                machine_busy_s: Some(1.75),
            },
            measured_phase: None,
            errors: error_kinds.values().sum(),
            error_kinds,
            details: Map::new(),
            note: None,
        }
    }

    #[test]
    fn median_min_max() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(
            summarize(&[2.0, 9.0, 4.0]),
            Some(Summary {
                median: 4.0,
                min: 2.0,
                max: 9.0
            })
        );
        assert_eq!(summarize(&[]), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.5), Some(51.0));
        assert_eq!(percentile(&sorted, 0.99), Some(99.0));
        assert_eq!(percentile(&sorted, 1.0), Some(100.0));
        assert_eq!(percentile(&sorted, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn value_and_size_formatting() {
        assert_eq!(format_value(Some(2193.4)), "2193");
        assert_eq!(format_value(Some(45.24)), "45.2");
        assert_eq!(format_value(Some(4.071)), "4.07");
        assert_eq!(format_value(None), "-");
        assert_eq!(format_bytes(1 << 30), "1 GiB");
        assert_eq!(format_bytes(2 << 20), "2 MiB");
        assert_eq!(format_bytes(4096), "4 KiB");
        assert_eq!(format_bytes(1000), "1000 B");
        assert_eq!(format_bytes(0), "0 B");
    }

    #[test]
    fn summary_counts_only_successful_runs() {
        let runs = vec![
            record(1, Some(10.0), &[]),
            record(2, None, &[("RETR:550", 2)]),
            record(3, Some(30.0), &[]),
        ];
        let report = TestReport::new("retr_pasv", "RETR 1 GiB".into(), "MB/s", true, runs, vec![]);
        assert_eq!(report.median, Some(20.0));
        assert_eq!((report.min, report.max), (Some(10.0), Some(30.0)));
        assert_eq!(report.runs_ok, 2);
        assert_eq!(report.errors, 2);
        assert_eq!(report.client_cpu_percent, Some(25.0));
        assert_eq!(report.server_cpu_percent, Some(50.0));
        // A run's measured phase is what its CPU shares come from.
        let mut phased = record(1, Some(10.0), &[]);
        phased.measured_phase = Some(CpuUse {
            wall_s: 1.0,
            client_cpu_s: 0.75,
            server_cpu_s: Some(0.25),
            machine_busy_s: None,
        });
        let report = TestReport::new(
            "small_put_8",
            "-".into(),
            "files/s",
            true,
            vec![phased],
            vec![],
        );
        assert_eq!(report.client_cpu_percent, Some(75.0));
        assert_eq!(report.server_cpu_percent, Some(25.0));
    }

    #[test]
    fn progress_lines() {
        let ok = record(2, Some(3024.4), &[]);
        assert_eq!(
            progress_line("small_get", 5, "files/s", &ok),
            "small_get run 2/5: 3024 files/s (wall 2.00 s, client CPU 0.50 s, server CPU 1.00 s)"
        );
        let failed = record(1, None, &[("RETR:550", 2), ("connect:timeout", 1)]);
        assert_eq!(
            progress_line("burst500", 3, "s", &failed),
            "burst500 run 1/3: failed: 3 errors (RETR:550 ×2, connect:timeout ×1) \
             (wall 2.00 s, client CPU 0.50 s, server CPU 1.00 s)"
        );
        let mut unmeasured = record(1, None, &[]);
        unmeasured.note = Some("no --server-pid".into());
        unmeasured.cpu.server_cpu_s = None;
        assert_eq!(
            progress_line("idle1000", 1, "KiB/session", &unmeasured),
            "idle1000 run 1/1: no value (no --server-pid) (wall 2.00 s, client CPU 0.50 s)"
        );
    }

    fn document(tests: Vec<TestReport>) -> Document {
        Document {
            tool: "ferroftp bench",
            version: "0.1.0",
            started: "2026-11-25T10:00:00Z".into(),
            target: "ftp://bench@127.0.0.1:2121/".into(),
            server: ServerFacts {
                greeting: "ferroftp | ready".into(),
                system: Some("UNIX Type: L8".into()),
                pid: Some(42),
            },
            machine: MachineFacts {
                cores: 2,
                kernel: Some("6.1.0".into()),
                memory_kib: Some(1024),
                open_files_limit: 20_000,
            },
            parameters: serde_json::json!({"runs": 3}),
            errors: tests.iter().map(|test| test.errors).sum(),
            tests,
            skipped: vec!["idle1000".into()],
        }
    }

    #[test]
    fn markdown_table_rows_and_notes() {
        let tests = vec![
            TestReport::new(
                "retr_pasv",
                "RETR 1 GiB, EPSV".into(),
                "MB/s",
                true,
                vec![record(1, Some(2193.0), &[]), record(2, Some(2529.4), &[])],
                vec![],
            ),
            TestReport::new(
                "list_MLSD",
                "MLSD of 10000 entries".into(),
                "ms",
                false,
                vec![record(1, None, &[("MLSD:502", 1)])],
                vec![],
            ),
        ];
        let text = markdown(&document(tests));
        assert!(
            text.starts_with("### ferroftp bench: ftp://bench@127.0.0.1:2121/\n"),
            "{text}"
        );
        assert!(
            text.contains("Server: `ferroftp \\| ready` (UNIX Type: L8), PID 42."),
            "{text}"
        );
        assert!(
            text.contains(
                "| retr_pasv | RETR 1 GiB, EPSV | MB/s ↑ | 2361 | 2193–2529 | 2/2 | 0 | 25% | 50% |"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| list_MLSD | MLSD of 10000 entries | ms ↓ | - | -–- | 0/1 | 1 | 25% | 50% |"
            ),
            "{text}"
        );
        assert!(text.contains("- list_MLSD run 1: MLSD:502 ×1\n"), "{text}");
        assert!(
            text.contains("- idle1000: not run (--max-minutes reached)\n"),
            "{text}"
        );
    }

    #[test]
    fn harness_lines_are_bench_py_run_lines() {
        let mut phased = record(1, Some(2400.5), &[]);
        phased.measured_phase = Some(CpuUse {
            wall_s: 1.0,
            client_cpu_s: 0.25,
            server_cpu_s: Some(0.5),
            machine_busy_s: Some(1.0),
        });
        let mut unmeasured = record(2, None, &[("STOR-end:451", 1)]);
        unmeasured.cpu.server_cpu_s = None;
        unmeasured.cpu.machine_busy_s = None;
        let tests = vec![TestReport::new(
            "small_put_8",
            "8 sessions × 500 × 4 KiB STOR, all at once".into(),
            "files/s",
            true,
            vec![phased, unmeasured],
            vec![],
        )];
        let lines = harness_lines(&document(tests), "pure-ftpd");
        assert_eq!(lines.len(), 2);
        let first: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(first["type"], "run");
        assert_eq!(first["target"], "pure-ftpd");
        assert_eq!(first["test"], "small_put_8");
        assert_eq!(first["run"], 0, "bench.py counts runs from 0");
        assert_eq!(first["value"], 2400.5);
        assert_eq!(first["unit"], "files/s");
        // The measured phase's CPU, not the whole run's.
        assert_eq!(first["cpu"]["wall_s"], 1.0);
        assert_eq!(first["cpu"]["client_cpu_s"], 0.25);
        assert_eq!(first["cpu"]["server_cpu_s"], 0.5);
        assert_eq!(first["cpu"]["machine_busy_s"], 1.0);
        assert_eq!(first["cpu"]["other_cpu_s"], 0.25);
        assert_eq!(first["detail"]["tool"], "ferroftp bench");
        assert!(first["detail"].get("error_kinds").is_none());
        let failed: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(failed["run"], 1);
        assert!(failed["value"].is_null());
        assert_eq!(failed["detail"]["error_kinds"]["STOR-end:451"], 1);
        assert_eq!(failed["cpu"]["wall_s"], 2.0);
        assert_eq!(failed["cpu"]["server_cpu_s"], 0.0);
        assert!(!lines[1].contains('\n'), "one line per run");
    }

    #[test]
    fn json_document_shape() {
        let tests = vec![TestReport::new(
            "connrate",
            "connect + login + QUIT".into(),
            "sessions/s",
            true,
            vec![record(1, Some(129.0), &[])],
            vec![],
        )];
        let json = serde_json::to_value(document(tests)).unwrap();
        let test = &json["tests"][0];
        assert_eq!(test["test"], "connrate");
        assert_eq!(test["unit"], "sessions/s");
        assert_eq!(test["higher_is_better"], true);
        assert_eq!(test["median"], 129.0);
        assert_eq!(test["runs"][0]["value"], 129.0);
        assert_eq!(test["runs"][0]["errors"], 0);
        assert_eq!(test["runs"][0]["server_cpu_s"], 1.0);
        assert_eq!(json["machine"]["cores"], 2);
        assert_eq!(json["server"]["greeting"], "ferroftp | ready");
    }
}
