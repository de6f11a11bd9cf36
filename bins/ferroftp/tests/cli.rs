//! The `ferroftp` binary end to end: `user add`, `serve` on port 0, and `bench` against it.
//!
//! Ports: the server's passive range is 40100-40499 and the benchmark's active-mode listeners
//! use 40900-40999 (crates/server's tests take 41000 and up; the interop suite 21000-30999).
//! The passive range is larger than the ~150 data connections of a run: the range lies in
//! the kernel's ephemeral range, where the client's own connections in TIME_WAIT block some
//! ports, and the server's pool only falls back to ports it used within the last minute when
//! no other one is left.
//! Every child process is bounded in time and the server is killed by its PID at the end.

// Test code: a panic is the failure report, so unwrapping is the point (the helpers
// outside `#[test]` functions are not covered by clippy.toml's allow-unwrap-in-tests).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const PASSIVE_PORTS: &str = "40100-40499";
const ACTIVE_PORTS: &str = "40900-40999";

/// The longest any one child process may run.
const COMMAND_LIMIT: Duration = Duration::from_secs(240);

fn ferroftp() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferroftp"))
}

/// Runs `command` to its end with `stdin` as its input, killing it after [`COMMAND_LIMIT`].
fn run_bounded(mut command: Command, stdin: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting ferroftp");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let pid = child.id();
    let (done, finished) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let output = child.wait_with_output();
        let _ = done.send(());
        output
    });
    if finished.recv_timeout(COMMAND_LIMIT).is_err() {
        // Still running: kill it by its PID, then collect what it wrote.
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        let output = waiter.join().unwrap().unwrap();
        panic!(
            "ferroftp ran longer than {COMMAND_LIMIT:?}; stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    waiter.join().unwrap().unwrap()
}

/// A `ferroftp serve` child, killed on drop.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    fn start(root: &Path, users: &Path) -> Self {
        Self::start_with(root, users, &["--max-sessions-per-ip", "1000"])
    }

    /// A server with `extra` flags (and the default limits unless they change them).
    fn start_with(root: &Path, users: &Path, extra: &[&str]) -> Self {
        let mut child = ferroftp()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--passive-ports",
                PASSIVE_PORTS,
            ])
            .args(extra)
            .arg("--root")
            .arg(root)
            .arg("--users")
            .arg(users)
            .env("FERROFTP_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting ferroftp serve");
        let stdout = child.stdout.take().unwrap();
        let (sender, addresses) = mpsc::channel();
        // Reads stdout to its end, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(address) = line.strip_prefix("listening on ") {
                    let _ = sender.send(address.to_owned());
                }
            }
        });
        let mut server = Self {
            child,
            address: String::new(),
        };
        server.address = addresses
            .recv_timeout(Duration::from_secs(60))
            .expect("the server printed no `listening on` line");
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Child::kill signals exactly this PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn add_user(users: &Path, name: &str, password: &str) {
    let mut command = ferroftp();
    command.args(["user", "add", name, "--users"]).arg(users);
    let output = run_bounded(command, &format!("{password}\n"));
    assert!(
        output.status.success(),
        "user add: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The names in `dir`, sorted.
fn entries_of(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The sizes of the files in `dir`.
fn sizes_in(dir: &Path) -> Vec<u64> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    server: Server,
}

fn serve_with_bench_user() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let users = dir.path().join("users.toml");
    add_user(&users, "bench", "bench-secret");
    let server = Server::start(&root, &users);
    Fixture {
        _dir: dir,
        root,
        server,
    }
}

#[test]
fn bench_runs_every_test_against_a_real_server_and_cleans_up() {
    let fixture = serve_with_bench_user();
    let report = fixture.root.parent().unwrap().join("report.json");
    let markdown = fixture.root.parent().unwrap().join("report.md");
    let mut command = ferroftp();
    command
        .arg("bench")
        .arg(format!("ftp://bench@{}/", fixture.server.address))
        .env("FERROFTP_BENCH_PASSWORD", "bench-secret")
        .args([
            "--big-mib",
            "2",
            "--small-count",
            "20",
            "--small-put-sessions",
            "3",
            "--small-put-per-session",
            "7",
            "--list-entries",
            "50",
        ])
        .args([
            "--burst-sessions",
            "10",
            "--idle-sessions",
            "20",
            "--idle-hold",
            "1",
        ])
        .args(["--runs", "1", "--conn-duration", "0.5", "--timeout", "20s"])
        .args(["--active-ports", ACTIVE_PORTS, "--keep-fixtures"])
        .arg("--server-pid")
        .arg(fixture.server.pid().to_string())
        .arg("--json")
        .arg(&report)
        .arg("--markdown")
        .arg(&markdown);
    let output = run_bounded(command, "");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "bench failed:\n{stderr}\n{stdout}");

    let document: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(document["errors"], 0, "{document:#}");
    assert_eq!(document["server"]["pid"], fixture.server.pid());
    assert!(document["machine"]["cores"].as_u64().unwrap() >= 1);
    let tests = document["tests"].as_array().unwrap();
    let names: Vec<&str> = tests
        .iter()
        .map(|test| test["test"].as_str().unwrap())
        .collect();
    let expected = [
        "retr_pasv",
        "retr_actv",
        "stor_pasv",
        "small_get",
        "small_put",
        "small_put_8",
        "list_LIST",
        "list_MLSD",
        "connrate",
        "burst500",
        "idle1000",
    ];
    assert_eq!(names, expected);
    for test in tests {
        let name = &test["test"];
        assert_eq!(test["errors"], 0, "{name}: {test:#}");
        assert_eq!(test["runs_ok"], 1, "{name}: {test:#}");
        assert!(test["median"].is_number(), "{name}: {test:#}");
        assert!(test["unit"].is_string() && test["higher_is_better"].is_boolean());
        let run = &test["runs"][0];
        assert!(run["value"].is_number(), "{name}: {run:#}");
        assert!(run["server_cpu_s"].is_number(), "{name}: {run:#}");
        // One progress line per run.
        assert!(
            stderr.contains(&format!("{} run 1/1: ", name.as_str().unwrap())),
            "{stderr}"
        );
    }
    let test = |name: &str| tests.iter().find(|test| test["test"] == name).unwrap();
    assert_eq!(test("retr_actv")["runs"][0]["details"]["bytes"], 2 << 20);
    assert_eq!(
        test("small_put")["runs"][0]["details"]["stored_with_right_size"],
        20
    );
    let sessions = &test("small_put_8")["runs"][0]["details"];
    assert_eq!(sessions["prepared"], 3);
    assert_eq!(sessions["files"], 21);
    assert_eq!(sessions["stored_with_right_size"], 21);
    assert_eq!(test("list_LIST")["runs"][0]["details"]["lines"][0], 50);
    assert_eq!(test("burst500")["runs"][0]["details"]["retrieved"], 10);
    assert_eq!(test("idle1000")["runs"][0]["details"]["logged_in"], 20);
    assert_eq!(test("idle1000")["runs"][0]["details"]["noop_failures"], 0);

    // The fixtures were made through FTP, with the requested counts and sizes, and kept as
    // asked (--keep-fixtures); nothing else is left.
    assert!(
        stderr.contains("kept bench_fixtures for the next run (--keep-fixtures)"),
        "{stderr}"
    );
    assert_eq!(entries_of(&fixture.root), ["bench_fixtures"]);
    let fixtures = fixture.root.join("bench_fixtures");
    assert_eq!(
        std::fs::metadata(fixtures.join("big.bin")).unwrap().len(),
        2 << 20
    );
    assert_eq!(sizes_in(&fixtures.join("small")), vec![4096; 20]);
    assert_eq!(sizes_in(&fixtures.join("list50")), vec![0; 50]);
    assert!(
        !fixture.root.join("bench_upload").exists(),
        "bench_upload was not removed"
    );

    // The same table on stdout and in --markdown.
    assert!(
        stdout.contains("| test | measures | unit | median |"),
        "{stdout}"
    );
    assert!(stdout.contains("| idle1000 | "), "{stdout}");
    assert_eq!(std::fs::read_to_string(&markdown).unwrap(), stdout);

    // A wrong password is an error before any measurement.
    let mut command = ferroftp();
    command
        .arg("bench")
        .arg(format!("ftp://bench:wrong@{}/", fixture.server.address))
        .args(["--only", "small_get", "--timeout", "20s"]);
    let output = run_bounded(command, "");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot log in") && stderr.contains("login:530"),
        "{stderr}"
    );
}

#[test]
fn bench_refuses_bad_arguments_before_connecting() {
    for (arguments, message) in [
        (
            &["ftp://u:p@127.0.0.1:9/", "--only", "retr_pasv,nonsense"][..],
            "unknown test",
        ),
        (&["ftp://alice@127.0.0.1:9/"], "no password for alice"),
        (&["ftps://u:p@127.0.0.1:9/"], "ftps:// is not supported"),
        (&["ftp://u:p@127.0.0.1:9/", "--runs", "0"], "--runs must be"),
    ] {
        let mut command = ferroftp();
        command
            .arg("bench")
            .args(arguments)
            .env_remove("FERROFTP_BENCH_PASSWORD");
        let output = run_bounded(command, "");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{arguments:?}");
        assert!(stderr.contains(message), "{arguments:?}: {stderr}");
    }
}

/// `check-config` loads everything the server would and reports every problem at once:
/// parse-level ones (unknown key, wrong type, bad port range) and what the file refers to
/// (a certificate that does not exist, a users file that does not parse).
#[test]
fn check_config_reports_every_problem_at_once() {
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(directory.path().join("users.toml"), "[[users]]\nname = 1\n").unwrap();
    let config = directory.path().join("ferroftp.toml");
    std::fs::write(
        &config,
        "[server]\nmax_sessions = \"many\"\ncolour = \"blue\"\n\
         [passive]\nports = \"60000-50000\"\n\
         [tls]\ncert = \"fullchain.pem\"\nkey = \"privkey.pem\"\n",
    )
    .unwrap();
    let mut command = ferroftp();
    // From another directory: relative paths are the config file's.
    command
        .current_dir(std::env::temp_dir())
        .arg("check-config")
        .arg(&config);
    let output = run_bounded(command, "");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    for field in [
        "server.max_sessions:",
        "server.colour:",
        "passive.ports:",
        "tls.cert:",
        "auth.path:",
    ] {
        assert!(stdout.contains(field), "{field} missing from:\n{stdout}");
    }
    assert!(stdout.contains("fullchain.pem"), "{stdout}");
    assert!(stdout.contains("5 problem(s)"), "{stdout}");
}

/// `check-config` checks the `[defender]` section with the rest (docs/security.md).
#[test]
fn check_config_reports_defender_problems() {
    let directory = tempfile::tempdir().unwrap();
    let config = directory.path().join("ferroftp.toml");
    std::fs::write(
        &config,
        "[defender]\nthreshold = 0\nban_time = \"1h\"\nmax_ban_time = \"1m\"\n\
         allow = [\"10.0.0.0/8\"]\n[defender.weights]\nfailed_login = 3\n",
    )
    .unwrap();
    let mut command = ferroftp();
    command.arg("check-config").arg(&config);
    let output = run_bounded(command, "");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    for field in ["defender.threshold:", "defender.max_ban_time:"] {
        assert!(stdout.contains(field), "{field} missing from:\n{stdout}");
    }
    assert!(stdout.contains("2 problem(s)"), "{stdout}");
}

/// The README's own example: `echo 's3cret' | ferroftp user add alice --users users.toml
/// --home /alice`, then `ferroftp serve --users users.toml …`: alice logs in, stores and
/// lists (the server creates her home at the first login). With `--root` the home is
/// created by `user add` itself.
#[test]
fn readme_user_add_with_a_home_then_serve_lets_the_user_store_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut command = ferroftp();
    command.current_dir(dir.path()).args([
        "user",
        "add",
        "alice",
        "--users",
        "users.toml",
        "--home",
        "/alice",
    ]);
    let output = run_bounded(command, "s3cret\n");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "user add: {output:?}");
    assert!(
        stdout.contains(
            "the server creates the home /alice in its storage root at alice's first login"
        ),
        "{stdout}"
    );

    let server = Server::start(&root, &dir.path().join("users.toml"));
    assert!(!root.join("alice").exists());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use ferroftp_client::{Client, DataMode};
        let (mut client, _greeting) = Client::connect(server.address.as_str()).await.unwrap();
        assert_eq!(client.login("alice", "s3cret").await.unwrap().code.0, 230);
        client
            .store("/hello.txt", DataMode::ExtendedPassive, b"hello")
            .await
            .unwrap();
        let listing = client
            .list("LIST", None, DataMode::ExtendedPassive)
            .await
            .unwrap();
        assert!(
            String::from_utf8_lossy(&listing).ends_with(" hello.txt\r\n"),
            "{listing:?}"
        );
    });
    assert_eq!(
        std::fs::read(root.join("alice/hello.txt")).unwrap(),
        b"hello"
    );

    // With the root given, user add creates the home (and its parents) itself.
    let mut command = ferroftp();
    command
        .current_dir(dir.path())
        .args([
            "user",
            "add",
            "bob",
            "--users",
            "users.toml",
            "--home",
            "/team/bob",
        ])
        .arg("--root")
        .arg(&root);
    let output = run_bounded(command, "bob-secret\n");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "user add: {output:?}");
    assert!(
        stdout.contains(&format!("created the home /team/bob in {}", root.display())),
        "{stdout}"
    );
    assert!(root.join("team/bob").is_dir());
}

/// `--version` names the commit the binary was built from (build.rs), which is HEAD: Cargo
/// reruns the build script when HEAD moves.
#[test]
fn version_names_the_git_commit() {
    let output = run_bounded(
        {
            let mut command = ferroftp();
            command.arg("--version");
            command
        },
        "",
    );
    assert!(output.status.success());
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |output| String::from_utf8(output.stdout).unwrap().trim().to_owned(),
        );
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("ferroftp {} (commit {head})\n", env!("CARGO_PKG_VERSION"))
    );
}

/// Small sizes for every test, one run each.
const QUICK_BENCH: &[&str] = &[
    "--big-mib",
    "1",
    "--small-count",
    "5",
    "--small-put-per-session",
    "5",
    "--list-entries",
    "5",
    "--runs",
    "1",
    "--conn-duration",
    "0.5",
    "--timeout",
    "20s",
    "--active-ports",
    ACTIVE_PORTS,
];

/// Against a server with its default limits (50 sessions per address), the sessions tests
/// are refused with 421: the benchmark says which limit and what to change, and leaves the
/// root as it found it (empty), fixtures included.
#[test]
fn bench_against_default_limits_names_the_limit_and_leaves_the_root_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let users = dir.path().join("users.toml");
    add_user(&users, "bench", "bench-secret");
    let server = Server::start_with(&root, &users, &[]);
    let mut command = ferroftp();
    command
        .arg("bench")
        .arg(format!("ftp://bench@{}/", server.address))
        .env("FERROFTP_BENCH_PASSWORD", "bench-secret")
        .args(QUICK_BENCH)
        .args([
            "--burst-sessions",
            "80",
            "--idle-sessions",
            "80",
            "--idle-hold",
            "0",
        ]);
    let output = run_bounded(command, "");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    for test in ["burst500", "idle1000"] {
        let flag = if test == "burst500" {
            "--burst-sessions"
        } else {
            "--idle-sessions"
        };
        assert!(
            stderr.contains(&format!(
                "bench: {test}: the server refused sessions: 421 Too many sessions from your \
                 address — "
            )) && stderr.contains(&format!("or use fewer sessions ({flag} N)")),
            "{test}: {stderr}"
        );
    }
    assert!(stderr.contains("server.max_sessions_per_ip"), "{stderr}");
    assert!(stderr.contains("removed bench_fixtures"), "{stderr}");
    assert!(stderr.contains("removed bench_upload"), "{stderr}");
    assert_eq!(entries_of(&root), Vec::<String>::new(), "{stderr}");
}

/// A working directory that does not exist is named, with what it must be, before any
/// measurement; nothing is created.
#[test]
fn bench_in_a_missing_directory_explains_the_550() {
    let fixture = serve_with_bench_user();
    let mut command = ferroftp();
    command
        .arg("bench")
        .arg(format!(
            "ftp://bench@{}/no/such/dir/",
            fixture.server.address
        ))
        .env("FERROFTP_BENCH_PASSWORD", "bench-secret")
        .args(QUICK_BENCH)
        .args(["--only", "small_get"]);
    let output = run_bounded(command, "");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("preparing the fixtures: MKD /no/such/dir/bench_fixtures: 550 "),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "the benchmark works in /no/such/dir (the URL's path): it must exist and bench \
             must be able to create directories and files there"
        ),
        "{stderr}"
    );
    assert_eq!(entries_of(&fixture.root), Vec::<String>::new());
}

/// SIGINT in the middle of a run: the benchmark removes what it created before it exits.
#[test]
fn bench_interrupted_removes_what_it_created() {
    let fixture = serve_with_bench_user();
    let mut child = ferroftp()
        .arg("bench")
        .arg(format!("ftp://bench@{}/", fixture.server.address))
        .env("FERROFTP_BENCH_PASSWORD", "bench-secret")
        .args(QUICK_BENCH)
        .args(["--only", "small_put,idle1000", "--idle-sessions", "5"])
        .args(["--idle-hold", "600"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting ferroftp bench");
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let (sender, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = sender.send(line);
        }
    });
    // small_put has run (bench_upload exists) when its progress line is out; idle1000 then
    // holds its sessions for ten minutes.
    let mut seen = Vec::new();
    loop {
        let line = lines
            .recv_timeout(COMMAND_LIMIT)
            .unwrap_or_else(|_| panic!("no small_put progress line: {seen:?}"));
        let done = line.starts_with("bench: small_put run 1/1: ");
        seen.push(line);
        if done {
            break;
        }
    }
    assert!(fixture.root.join("bench_upload").is_dir());
    // Only this PID is signalled.
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (done, finished) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = done.send(());
        status
    });
    if finished.recv_timeout(COMMAND_LIMIT).is_err() {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        panic!("bench did not end after SIGINT: {seen:?}");
    }
    let status = waiter.join().unwrap().unwrap();
    reader.join().unwrap();
    seen.extend(lines.try_iter());
    assert!(!status.success());
    assert!(
        seen.iter()
            .any(|line| line == "bench: SIGINT: removing what the benchmark created"),
        "{seen:?}"
    );
    assert_eq!(entries_of(&fixture.root), Vec::<String>::new(), "{seen:?}");
}
