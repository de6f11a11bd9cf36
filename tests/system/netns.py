"""Network-namespace topologies for the system tests.

A `Topology` owns everything it creates: namespaces (named `ffsys-<pid>-<n>-<role>`), the veth
pairs and bridges inside them, their addresses, routes, sysctls and firewall rules, and every
process started in them. `Topology.close()` stops those processes by PID and deletes the
namespaces, which takes their interfaces, routes and netfilter rules with them; it runs at
teardown whatever happened in the test.

Nothing here touches the host's own network namespace: veth pairs are created *inside* a
namespace with their peer moved straight into another one (`ip -n A link add ... peer ... netns
B`), every `ip`, `iptables`, `nft` and `sysctl` runs with `ip -n NS` / `ip netns exec NS`, and
Python sockets for a namespace are created by a thread that has entered it with setns(2) (a
socket stays in the namespace it was created in).

Every command and every wait is bounded; a failing command raises with its output.

Only the standard library is used.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "ffsys-"
CMD_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_counter = itertools.count()


class CommandFailed(AssertionError):
    pass


def run(argv: list[str], *, check: bool = True, timeout: float = CMD_TIMEOUT,
        input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run a command with a bound; `check` turns a non-zero exit into CommandFailed."""
    p = subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise CommandFailed(
            f"`{shlex.join(argv)}` exited {p.returncode}\nstdout: "
            f"{p.stdout.decode(errors='replace')}\nstderr: {p.stderr.decode(errors='replace')}")
    return p


def _setns(name: str):
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def stop_process(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT):
    """SIGTERM the process we started (by its PID), SIGKILL it if it does not exit in time."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=timeout)


@dataclass
class Netns:
    name: str
    role: str
    topo: "Topology"

    # ---- commands ----

    def argv(self, argv: list[str]) -> list[str]:
        """`argv` run inside this namespace. `ip netns exec` execs it: the PID is its own."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        return run(self.argv(argv), **kw)

    def ip(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return run(["ip", "-n", self.name, *args], **kw)

    def sh(self, script: str, **kw) -> subprocess.CompletedProcess:
        return self.run(["sh", "-ec", script], **kw)

    def popen(self, argv: list[str], **kw) -> subprocess.Popen:
        """Start a process in this namespace; the topology stops it (by PID) at teardown."""
        proc = subprocess.Popen(self.argv(argv), **kw)
        self.topo.processes.append(proc)
        return proc

    def sysctl(self, key: str, value: str | int):
        self.run(["sysctl", "-q", "-w", f"{key}={value}"])

    def forwarding(self):
        self.sysctl("net.ipv4.ip_forward", 1)

    def iptables(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(["iptables", "-w", "5", *args], check=check)

    def iptables_restore(self, rules: str):
        """Load rules (iptables-save syntax) without flushing what is already there."""
        self.run(["iptables-restore", "--noflush", "-w", "5"], input=rules.encode())

    def nft(self, *args: str, input: str | None = None, check: bool = True):
        if input is not None:
            return self.run(["nft", "-f", "-", *args], input=input.encode(), check=check)
        return self.run(["nft", *args], check=check)

    def rule_packets(self, table: str, chain: str, comment: str) -> int:
        """Packet counter of the iptables rule in `chain` tagged `-m comment --comment C`."""
        out = self.iptables("-t", table, "-L", chain, "-v", "-x", "-n").stdout.decode()
        for line in out.splitlines():
            if f"/* {comment} */" in line:
                return int(line.split()[0])
        raise AssertionError(f"no rule with comment {comment!r} in {table}/{chain}:\n{out}")

    def add_addr(self, ifname: str, cidr: str):
        # IPv6: no duplicate address detection, the address is usable at once.
        self.ip("addr", "add", cidr, "dev", ifname, *(["nodad"] if ":" in cidr else []))

    def route(self, dest: str, via: str):
        self.ip("route", "add", dest, "via", via)

    def listening_tcp_ports(self) -> set[int]:
        out = self.run(["ss", "-Hltn"]).stdout.decode()
        ports = set()
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 4:
                ports.add(int(parts[3].rsplit(":", 1)[1]))
        return ports

    # ---- Python inside the namespace ----

    def call(self, fn, *args, timeout: float = 120.0, **kw):
        """Run fn(*args, **kw) in a fresh thread that has entered this namespace; sockets it
        creates (ftplib's too) belong to the namespace. Returns its result or re-raises."""
        result: dict = {}

        def body():
            try:
                _setns(self.name)
                result["value"] = fn(*args, **kw)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                result["error"] = e

        t = threading.Thread(target=body, name=f"in-{self.name}", daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            raise AssertionError(f"{getattr(fn, '__name__', fn)} in {self.name} did not finish "
                                 f"within {timeout}s")
        if "error" in result:
            raise result["error"]
        return result.get("value")

    def socket(self, family=socket.AF_INET, type=socket.SOCK_STREAM) -> socket.socket:
        return self.call(socket.socket, family, type, timeout=CMD_TIMEOUT)

    def connect(self, host: str, port: int, source: str | None = None,
                timeout: float = 30.0) -> socket.socket:
        def go():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(timeout)
            if source:
                s.bind((source, 0))
            s.connect((host, port))
            return s
        return self.call(go, timeout=timeout + 5)

    def listen(self, ip: str, port: int = 0) -> socket.socket:
        def go():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ip, port))
            s.listen(8)
            return s
        return self.call(go, timeout=CMD_TIMEOUT)

    def wait_listening(self, port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None):
        """Poll `ss` in the namespace until something listens on TCP `port`."""
        deadline = time.monotonic() + timeout
        while port not in self.listening_tcp_ports():
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"process {proc.args} exited ({proc.returncode}) before "
                                     f"listening on port {port} in {self.name}")
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on port {port} in {self.name} "
                                     f"after {timeout}s")
            time.sleep(0.05)


@dataclass
class Topology:
    """A set of namespaces for one test. Use as a context manager or call close()."""
    tag: str = "t"
    namespaces: list[Netns] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)
    etc_dirs: list[Path] = field(default_factory=list)

    def __post_init__(self):
        self.base = f"{PREFIX}{os.getpid()}-{next(_counter)}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def ns(self, role: str, ipv6: bool = False) -> Netns:
        """A new namespace with lo up; IPv4 only unless `ipv6` (then IPv6 router
        solicitations and autoconfiguration are off, addresses are static)."""
        assert re.fullmatch(r"[a-z0-9]{1,12}", role), role
        name = f"{self.base}-{role}"
        run(["ip", "netns", "add", name])
        ns = Netns(name, role, self)
        self.namespaces.append(ns)          # registered first: deleted even if setup fails
        ns.ip("link", "set", "lo", "up")
        if ipv6:
            for scope in ("all", "default"):
                ns.sysctl(f"net.ipv6.conf.{scope}.accept_ra", 0)
                ns.sysctl(f"net.ipv6.conf.{scope}.autoconf", 0)
        else:
            # IPv4-only: no IPv6 link-local addresses or router solicitations.
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", 1)
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", 1)
        return ns

    def etc_file(self, ns: Netns, name: str, text: str) -> Path:
        """/etc/netns/NS/NAME: `ip netns exec NS` bind-mounts it over /etc/NAME for the
        processes it starts (e.g. a `hosts` file for name resolution inside the namespace).
        Write it before starting the process; rewrite it in place (same inode) to change it.
        Removed at teardown."""
        d = Path("/etc/netns") / ns.name
        d.mkdir(parents=True, exist_ok=True)
        self.etc_dirs.append(d)
        path = d / name
        path.write_text(text)
        return path

    def link(self, a: Netns, a_if: str, b: Netns, b_if: str,
             a_addr: str | None = None, b_addr: str | None = None):
        """A veth pair from `a` (interface a_if) to `b` (b_if), both up, with addresses."""
        a.ip("link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name)
        for ns, ifname, addr in ((a, a_if, a_addr), (b, b_if, b_addr)):
            if addr:
                ns.add_addr(ifname, addr)
            ns.ip("link", "set", ifname, "up")

    def bridge(self, ns: Netns, name: str, ports: list[str], addr: str | None = None):
        """A bridge inside `ns` enslaving interfaces that already live there."""
        ns.ip("link", "add", name, "type", "bridge")
        for p in ports:
            ns.ip("link", "set", p, "master", name)
        if addr:
            ns.add_addr(name, addr)
        ns.ip("link", "set", name, "up")

    def close(self):
        errors = []
        for proc in reversed(self.processes):
            try:
                stop_process(proc)
            except Exception as e:  # noqa: BLE001 - keep tearing down
                errors.append(f"stopping {proc.args}: {e}")
        for ns in reversed(self.namespaces):
            p = run(["ip", "netns", "del", ns.name], check=False)
            if p.returncode != 0 and os.path.exists(f"/run/netns/{ns.name}"):
                errors.append(f"ip netns del {ns.name}: {p.stderr.decode(errors='replace')}")
        for d in self.etc_dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.namespaces.clear()
        self.processes.clear()
        self.etc_dirs.clear()
        if errors:
            raise AssertionError("topology teardown: " + "; ".join(errors))


def remove_stale_namespaces():
    """Delete `ffsys-<pid>-...` namespaces left by a run whose process no longer exists (a
    SIGKILLed pytest cannot clean up after itself). Namespaces of live runs are left alone."""
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return
    for name in names:
        m = re.match(rf"^{re.escape(PREFIX)}(\d+)-", name)
        if not m:
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or os.path.exists(f"/proc/{pid}"):
            continue
        run(["ip", "netns", "del", name], check=False)
        shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)
