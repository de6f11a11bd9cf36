"""Fixtures for the interop suite: the ferroftp binary (built once), servers started on port 0
with their own temp root, users file and passive port range, and random sample files.

Environment:
  FERROFTP_BIN                 path to the binary (default: <repo>/target/debug/ferroftp, built
                               once per session with `cargo build -p ferroftp` unless
                               FERROFTP_SKIP_BUILD=1)
  FERROFTP_INTEROP_PASV_BASE   first passive port of the ranges handed to servers (default
                               21000 + a per-process offset); each server gets its own 100
                               ports from a counter, wrapping inside 21000-30999
  FERROFTP_INTEROP_MEMORY_ROOTS=1
                               every server's root (unless the test gives one) in /dev/shm, a
                               tmpfs: there the server does its file work in place instead of
                               on its blocking pool (docs/uploads.md). scripts/interop.sh runs
                               the transfer suites a second time this way.
"""

from __future__ import annotations

import itertools
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ftp_helpers import MiB, write_random

REPO = Path(__file__).resolve().parents[2]
MEMORY_ROOTS = os.environ.get("FERROFTP_INTEROP_MEMORY_ROOTS") == "1"
MEMORY_ROOT_PARENT = "/dev/shm"
STARTUP_TIMEOUT = 60.0
DEFAULT_TEST_TIMEOUT = 300




def pytest_configure(config):
    config.addinivalue_line(
        "markers", "time_limit(seconds): hard bound (SIGALRM) for one test, default 300 s")


@pytest.fixture(autouse=True)
def _time_limit(request):
    """Every test is bounded: a SIGALRM turns a hang into a failure with a traceback."""
    marker = request.node.get_closest_marker("time_limit")
    seconds = int(marker.args[0]) if marker else DEFAULT_TEST_TIMEOUT

    def on_alarm(signum, frame):
        raise TimeoutError(f"test exceeded its {seconds}s bound")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# --------------------------------------------------------------------------------------------
# the binary


@pytest.fixture(scope="session")
def ferroftp_bin() -> str:
    env_bin = os.environ.get("FERROFTP_BIN")
    if env_bin:
        path = Path(env_bin)
        if not path.is_absolute():
            path = REPO / path
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        if not target.is_absolute():
            target = REPO / target
        path = target / "debug" / "ferroftp"
        if os.environ.get("FERROFTP_SKIP_BUILD") != "1":
            subprocess.run(["cargo", "build", "-p", "ferroftp"], cwd=REPO, check=True,
                           timeout=3600)
    assert path.is_file() and os.access(path, os.X_OK), f"ferroftp binary not found at {path}"
    return str(path)


# --------------------------------------------------------------------------------------------
# servers

_range_counter = itertools.count()
_RANGE_FIRST = 21000
_RANGE_SLOTS = 100          # 21000-30999: below the kernel's ephemeral range (32768-60999)


def next_passive_range() -> tuple[int, int]:
    base_env = os.environ.get("FERROFTP_INTEROP_PASV_BASE")
    if base_env:
        start_slot = (int(base_env) - _RANGE_FIRST) // 100
    else:
        start_slot = os.getpid() % _RANGE_SLOTS
    slot = (start_slot + next(_range_counter)) % _RANGE_SLOTS
    lo = _RANGE_FIRST + slot * 100
    return lo, lo + 99


@dataclass
class User:
    name: str
    password: str
    home: str | None = None
    read_only: bool = False


@dataclass
class Server:
    host: str
    port: int
    user: str
    password: str
    root: Path
    users_file: Path
    passive_range: tuple[int, int]
    proc: subprocess.Popen
    argv: list[str]
    log_path: Path
    users: dict[str, User] = field(default_factory=dict)
    stdout_lines: list[str] = field(default_factory=list)
    # Every listener's port, in the order of the "listening on" lines (config order).
    ports: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str = "", user: str | None = None) -> str:
        u = self.users[user] if user else self.users[self.user]
        return f"ftp://{u.name}:{u.password}@{self.host}:{self.port}/{path.lstrip('/')}"

    def path(self, rel: str = "") -> Path:
        return self.root / rel.lstrip("/")

    def in_passive_range(self, port: int) -> bool:
        return self.passive_range[0] <= port <= self.passive_range[1]

    def log(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        return text + "".join(self.stdout_lines)


def _add_user(bin_path: str, users_file: Path, u: User):
    argv = [bin_path, "user", "add", u.name, "--users", str(users_file)]
    if u.home:
        argv += ["--home", u.home]
    if u.read_only:
        argv.append("--read-only")
    p = subprocess.run(argv, input=(u.password + "\n").encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 0, (
        f"`{' '.join(argv)}` failed ({p.returncode}): {p.stdout!r} {p.stderr!r}")


def _start(bin_path: str, workdir: Path, *, users: list[User] | None = None,
           anonymous: bool = False, idle_timeout: str | None = None,
           max_sessions: int | None = None, max_sessions_per_ip: int | None = None,
           advertise: str | None = None, passive_ports: tuple[int, int] | None = None,
           root: Path | None = None, config: str | None = None,
           storage: str | None = None, extra_args: list[str] | None = None) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    if root is None and MEMORY_ROOTS:
        root = Path(tempfile.mkdtemp(dir=MEMORY_ROOT_PARENT, prefix="ferroftp-interop-"))
    root = root or workdir / "root"
    root.mkdir(parents=True, exist_ok=True)
    users_file = workdir / "users.toml"
    if users is None:
        users = [User("alice", "pw-" + secrets.token_hex(8))]
    for u in users:
        _add_user(bin_path, users_file, u)
    lo, hi = passive_ports or next_passive_range()
    argv = [bin_path, "serve", "--passive-ports", f"{lo}-{hi}", "--users", str(users_file)]
    if storage is None:
        argv += ["--root", str(root)]
    if config is None:
        # A config file brings its own listeners (e.g. explicit and implicit FTPS).
        argv += ["--listen", "127.0.0.1:0"]
    if config is not None or storage is not None:
        # `storage`: a `[storage]` table (e.g. an S3 bucket) in place of `--root`.
        config_path = workdir / "ferroftp.toml"
        config_path.write_text((config or "") + "\n" + (storage or ""))
        argv += ["--config", str(config_path)]
    argv += extra_args or []
    if anonymous:
        argv.append("--anonymous")
    if idle_timeout:
        argv += ["--idle-timeout", idle_timeout]
    if max_sessions is not None:
        argv += ["--max-sessions", str(max_sessions)]
    if max_sessions_per_ip is not None:
        argv += ["--max-sessions-per-ip", str(max_sessions_per_ip)]
    if advertise:
        argv += ["--advertise", advertise]

    log_path = workdir / "server.stderr.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                            cwd=workdir)
    log.close()
    lines: list[str] = []
    q: queue.Queue = queue.Queue()

    def pump():
        # Keeps draining stdout for the server's whole life so it can never block on it.
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    ports: list[int] = []
    try:
        while True:
            try:
                line = q.get(timeout=STARTUP_TIMEOUT)
            except queue.Empty:
                raise AssertionError(
                    f"no 'listening on' line within {STARTUP_TIMEOUT}s from {argv}")
            if line is None:
                proc.wait(timeout=10)
                raise AssertionError(
                    f"server exited ({proc.returncode}) before listening: {argv}\n"
                    f"stdout: {''.join(lines)}\nstderr: {log_path.read_text(errors='replace')}")
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                ports.append(int(m.group(1)))
            elif ports and line.startswith("firewall:"):
                break
    except BaseException:
        _stop(proc)
        raise
    return Server("127.0.0.1", ports[0], users[0].name, users[0].password, root, users_file,
                  (lo, hi), proc, argv, log_path, {u.name: u for u in users}, lines, ports)


def _stop(proc: subprocess.Popen):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def start_server(ferroftp_bin, tmp_path):
    """Factory: start_server(**options) -> Server. Every server is stopped by PID at teardown;
    a server that died during the test fails the test's teardown."""
    started: list[Server] = []
    counter = itertools.count()

    def start(**kw) -> Server:
        s = _start(ferroftp_bin, tmp_path / f"server{next(counter)}", **kw)
        started.append(s)
        return s

    yield start
    died = []
    for s in started:
        if s.proc.poll() is not None:
            died.append((s.argv, s.proc.returncode))
        _stop(s.proc)
        if MEMORY_ROOTS and Path(s.root).parent == Path(MEMORY_ROOT_PARENT):
            shutil.rmtree(s.root, ignore_errors=True)
        print(f"--- server {s.argv} (pid {s.pid}) log tail ---")
        print(s.log()[-6000:])
    assert not died, f"server process(es) died during the test: {died}"


@pytest.fixture
def server(start_server) -> Server:
    return start_server()


# --------------------------------------------------------------------------------------------
# sample files


@dataclass
class Sample:
    path: Path
    size: int
    sha256: str


@pytest.fixture(scope="session")
def samples(tmp_path_factory) -> dict[int, Sample]:
    d = tmp_path_factory.mktemp("samples")
    out = {}
    for size in (0, 1, MiB):
        p = d / f"random-{size}.bin"
        out[size] = Sample(p, size, write_random(p, size))
    return out


@pytest.fixture(scope="session")
def big_sample(tmp_path_factory) -> Sample:
    d = tmp_path_factory.mktemp("big")
    p = d / "random-100MiB.bin"
    return Sample(p, 100 * MiB, write_random(p, 100 * MiB))


@pytest.fixture(scope="session")
def medium_sample(tmp_path_factory) -> Sample:
    """Used for interrupted uploads: big enough that a rate-limited client is still sending
    when it is killed."""
    d = tmp_path_factory.mktemp("medium")
    p = d / "random-8MiB.bin"
    return Sample(p, 8 * MiB, write_random(p, 8 * MiB))
