"""Fixtures for the system suite: the ferroftp binary, a per-test network topology (network
namespaces, see netns.py) that is always torn down, ferroftp servers started inside it, and
random sample files.

Needs root (network namespaces, veth, iptables/nftables inside the namespaces) and the tools
scripts/system.sh installs: iproute2, iptables, nftables, curl, haproxy.

Environment:
  FERROFTP_BIN         path to the binary (default: <repo>/target/debug/ferroftp, built once
                       per session with `cargo build -p ferroftp` unless FERROFTP_SKIP_BUILD=1)
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

import netns as netns_mod
from netns import Topology
from sysftp import NsServer, start_ferroftp, write_random

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TEST_TIMEOUT = 180
TOOLS = {"ip": "iproute2", "ss": "iproute2", "iptables": "iptables",
         "iptables-restore": "iptables", "nft": "nftables", "curl": "curl",
         "haproxy": "haproxy", "sysctl": "procps"}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "time_limit(seconds): hard bound (SIGALRM) for one test, default 180 s")


def pytest_sessionstart(session):
    if os.geteuid() == 0:
        netns_mod.remove_stale_namespaces()


@pytest.fixture(autouse=True)
def _time_limit(request):
    """Every test is bounded: a SIGALRM turns a hang into a failure with a traceback (the
    topology fixture still tears everything down)."""
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


@pytest.fixture(scope="session")
def tools():
    assert os.geteuid() == 0, "the system suite needs root (network namespaces); see scripts/system.sh"
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    assert not missing, f"missing tools from Debian packages {missing}: run scripts/system.sh"


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


@pytest.fixture
def topo(tools):
    """A fresh Topology; at teardown its processes are stopped by PID and its namespaces
    deleted, whether the test passed, failed or timed out."""
    t = Topology()
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def start_server(ferroftp_bin, topo, tmp_path):
    """Factory: start_server(ns, **start_ferroftp options) -> NsServer. At teardown: a server
    that died during the test fails the test; the log tail is printed (shown on failure)."""
    started: list[NsServer] = []
    counter = itertools.count()

    def start(ns, **kw) -> NsServer:
        s = start_ferroftp(ferroftp_bin, ns, tmp_path / f"server{next(counter)}", **kw)
        started.append(s)
        return s

    yield start
    died = [(s.argv, s.proc.returncode) for s in started if s.proc.poll() is not None]
    for s in started:
        s.stop()
        print(f"--- server in {s.ns.name} (pid {s.pid}) log tail ---")
        print(s.log()[-8000:])
    assert not died, f"server process(es) died during the test: {died}"


@dataclass
class Sample:
    path: Path
    size: int
    sha256: str

    def bytes(self) -> bytes:
        return self.path.read_bytes()


@pytest.fixture(scope="session")
def sample(tmp_path_factory) -> Sample:
    """A random file of 1 MiB + 17 bytes (several TCP windows, not a round size)."""
    d = tmp_path_factory.mktemp("samples")
    p = d / "random.bin"
    size = (1 << 20) + 17
    return Sample(p, size, write_random(p, size))


@pytest.fixture(scope="session")
def sample2(tmp_path_factory) -> Sample:
    d = tmp_path_factory.mktemp("samples2")
    p = d / "random2.bin"
    size = 300_001
    return Sample(p, size, write_random(p, size))
