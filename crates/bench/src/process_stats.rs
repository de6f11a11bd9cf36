//! What `/proc` says about a server process tree, this process and the machine: CPU seconds,
//! resident memory, core count, kernel. Parsing is kept apart from reading so it can be tested.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::report::round3;

/// Most processes a tree walk visits (a forking server with 100,000 children is bounded).
const MAX_TREE_PROCESSES: usize = 200_000;

/// The fields of `/proc/PID/stat` the benchmark uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// The parent's PID.
    pub parent: u32,
    /// utime + stime + cutime + cstime, in clock ticks: the process's CPU and that of its
    /// reaped children (a forking server's finished sessions).
    pub cpu_ticks: u64,
}

/// Parses the text of `/proc/PID/stat`. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is the state (field 3): ppid is field 4, utime..cstime fields 14..=17.
    let parent = fields.get(1)?.parse().ok()?;
    let cpu_ticks = fields
        .get(11..15)?
        .iter()
        .map(|field| field.parse::<u64>().ok())
        .sum::<Option<u64>>()?;
    Some(ProcStat { parent, cpu_ticks })
}

/// Reads the value in KiB of the line starting with `key` (`VmRSS:`, `Pss:`) in a
/// `/proc/PID/status`, `smaps_rollup` or `/proc/meminfo` text.
pub(crate) fn parse_kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
}

/// Busy clock ticks of the whole machine so far, from the `cpu` line of `/proc/stat`: the
/// first eight fields but idle and iowait, as the shared harness counts them.
pub(crate) fn parse_machine_busy_ticks(text: &str) -> Option<u64> {
    let fields: Vec<u64> = text
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .take(8)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, _idle, _iowait, irq, softirq, steal] = fields[..] else {
        return None;
    };
    Some(user + nice + system + irq + softirq + steal)
}

/// The PIDs of `root` and all of its descendants, given every process's parent.
pub(crate) fn descendants(root: u32, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for &(pid, parent) in parents {
        children.entry(parent).or_default().push(pid);
    }
    let mut tree = Vec::new();
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        if tree.len() >= MAX_TREE_PROCESSES {
            break;
        }
        tree.push(pid);
        if let Some(kids) = children.get(&pid) {
            todo.extend(kids.iter().copied().filter(|&kid| kid != pid));
        }
    }
    tree
}

/// Clock ticks per second of the CPU fields in `/proc/PID/stat`.
fn ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

fn read_stat(pid: &str) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `(pid, parent)` of every process now.
fn all_parents() -> Vec<(u32, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let pid = name.parse::<u32>().ok()?;
            Some((pid, read_stat(&name)?.parent))
        })
        .collect()
}

/// The server's process tree: a root PID and everything it forked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerProcess {
    /// The root PID (`--server-pid`).
    pub pid: u32,
}

/// Memory of a process tree at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub(crate) struct TreeMemory {
    /// Processes in the tree.
    pub processes: u64,
    /// Sum of VmRSS, KiB.
    pub rss_kib: u64,
    /// Sum of Pss (shared pages divided among their users), KiB; 0 where unreadable.
    pub pss_kib: u64,
}

impl ServerProcess {
    /// Whether the process exists.
    pub(crate) fn is_alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    /// The PIDs of the tree now.
    pub(crate) fn tree(&self) -> Vec<u32> {
        descendants(self.pid, &all_parents())
    }

    /// CPU seconds of the tree so far, reaped children included.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        let ticks: u64 = self
            .tree()
            .iter()
            .filter_map(|pid| read_stat(&pid.to_string()))
            .map(|stat| stat.cpu_ticks)
            .sum();
        ticks as f64 / ticks_per_second()
    }

    /// RSS and PSS summed over the tree.
    pub(crate) fn memory(&self) -> TreeMemory {
        let mut memory = TreeMemory::default();
        for pid in self.tree() {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                continue;
            };
            memory.processes += 1;
            memory.rss_kib += parse_kib_field(&status, "VmRSS:").unwrap_or(0);
            if let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
                memory.pss_kib += parse_kib_field(&rollup, "Pss:").unwrap_or(0);
            }
        }
        memory
    }
}

/// CPU seconds this process has used so far (all threads, user + system).
pub(crate) fn own_cpu_seconds() -> f64 {
    read_stat("self").map_or(0.0, |stat| stat.cpu_ticks as f64 / ticks_per_second())
}

/// CPU seconds the whole machine has been busy so far (every core, every process); `None`
/// where `/proc/stat` cannot be read.
pub(crate) fn machine_busy_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    Some(parse_machine_busy_ticks(&text)? as f64 / ticks_per_second())
}

/// The CPU counters at one moment: this process's, the server tree's (with `--server-pid`)
/// and the whole machine's busy time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSample {
    at: Instant,
    client_s: f64,
    server_s: Option<f64>,
    machine_s: Option<f64>,
}

impl CpuSample {
    /// Reads them now.
    pub(crate) fn take(server: Option<ServerProcess>) -> Self {
        Self {
            at: Instant::now(),
            client_s: own_cpu_seconds(),
            server_s: server.map(|server| server.cpu_seconds()),
            machine_s: machine_busy_seconds(),
        }
    }

    /// The wall time and CPU used from this sample to `later`.
    pub(crate) fn until(&self, later: &CpuSample) -> CpuUse {
        let used = |before: f64, after: f64| round3((after - before).max(0.0));
        CpuUse {
            wall_s: round3(later.at.duration_since(self.at).as_secs_f64()),
            client_cpu_s: used(self.client_s, later.client_s),
            server_cpu_s: self
                .server_s
                .zip(later.server_s)
                .map(|(before, after)| used(before, after)),
            machine_busy_s: self
                .machine_s
                .zip(later.machine_s)
                .map(|(before, after)| used(before, after)),
        }
    }
}

/// Wall time and CPU seconds between two [`CpuSample`]s, to the millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct CpuUse {
    /// Wall time, seconds.
    pub wall_s: f64,
    /// CPU this benchmark process used, seconds.
    pub client_cpu_s: f64,
    /// CPU the server's process tree used, seconds (with `--server-pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_s: Option<f64>,
    /// CPU the whole machine used (every core, every process), seconds: beyond the
    /// client's and the server's, what else ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_busy_s: Option<f64>,
}

/// Facts about the machine the benchmark ran on, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct MachineFacts {
    /// Cores this process may use.
    pub cores: usize,
    /// `uname -r`.
    pub kernel: Option<String>,
    /// MemTotal, KiB.
    pub memory_kib: Option<u64>,
    /// The soft RLIMIT_NOFILE after raising it: the most sockets the benchmark can hold.
    pub open_files_limit: u64,
}

impl MachineFacts {
    /// Reads them now.
    pub(crate) fn read(open_files_limit: u64) -> Self {
        Self {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|text| text.trim().to_owned()),
            memory_kib: std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|text| parse_kib_field(&text, "MemTotal:")),
            open_files_limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let text = "4242 (ferro ftp (x)) S 1 4242 4242 0 -1 4194560 1 2 3 4 150 25 7 3 20 0 \
                    4 0 100 200 300";
        assert_eq!(
            parse_stat(text),
            Some(ProcStat {
                parent: 1,
                cpu_ticks: 150 + 25 + 7 + 3
            })
        );
        assert_eq!(parse_stat("12 (short) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn kib_fields() {
        let status = "Name:\tferroftp\nVmPeak:\t  9000 kB\nVmRSS:\t   24880 kB\n";
        assert_eq!(parse_kib_field(status, "VmRSS:"), Some(24880));
        assert_eq!(parse_kib_field(status, "Pss:"), None);
        let rollup = "00400000-7ffd [rollup]\nRss:   100 kB\nPss:    42 kB\n";
        assert_eq!(parse_kib_field(rollup, "Pss:"), Some(42));
    }

    #[test]
    fn machine_busy_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 2 30 5000 40 5 6 7 0 0\ncpu0 50 1 15 2500 20 2 3 3 0 0\n";
        assert_eq!(
            parse_machine_busy_ticks(stat),
            Some(100 + 2 + 30 + 5 + 6 + 7)
        );
        assert_eq!(parse_machine_busy_ticks("cpu  1 2 3\n"), None);
        assert_eq!(parse_machine_busy_ticks("intr 1 2 3 4 5 6 7 8\n"), None);
    }

    #[test]
    fn tree_walk_finds_grandchildren_only_below_the_root() {
        let parents = [
            (1, 0),
            (10, 1),
            (11, 10),
            (12, 10),
            (13, 11),
            (20, 1),
            (21, 20),
        ];
        let mut tree = descendants(10, &parents);
        tree.sort_unstable();
        assert_eq!(tree, vec![10, 11, 12, 13]);
        assert_eq!(descendants(99, &parents), vec![99]);
    }

    #[test]
    fn this_process_is_readable() {
        let me = ServerProcess {
            pid: std::process::id(),
        };
        assert!(me.is_alive());
        assert!(me.tree().contains(&me.pid));
        assert!(me.memory().rss_kib > 0);
        assert!(own_cpu_seconds() >= 0.0);
        assert!(machine_busy_seconds().is_some_and(|busy| busy > 0.0));
        let before = CpuSample::take(Some(me));
        let used = before.until(&CpuSample::take(Some(me)));
        assert!(used.wall_s >= 0.0 && used.client_cpu_s >= 0.0);
        assert!(used.server_cpu_s.is_some() && used.machine_busy_s.is_some());
    }
}
