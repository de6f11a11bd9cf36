"""ferroftp as a service: reload (SIGHUP), graceful stop (SIGTERM), systemd socket activation
and readiness notifications, dropping root. Loopback only (127.0.0.1); every server is a
process of this test, stopped by PID at teardown.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import pwd
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

STARTUP_TIMEOUT = 30


class Service:
    """One `ferroftp serve` process (or a launcher such as systemd-socket-activate around it)."""

    def __init__(self, argv, workdir: Path, env=None, wait_for_firewall=True):
        self.workdir = workdir
        self.log_path = workdir / "server.log"
        full_env = dict(os.environ, FERROFTP_LOG="debug", NO_COLOR="1")
        full_env.update(env or {})
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=log, cwd=workdir, env=full_env)
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.port = None
        if wait_for_firewall:
            self.wait_for_line(r"^firewall:")
            ports = [re.search(r"listening on \S+:(\d+)", l) for l in self.lines]
            self.port = int(next(m.group(1) for m in ports if m))

    def _pump(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_for_line(self, pattern: str) -> str:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        for line in self.lines:
            if re.search(pattern, line):
                return line
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r}: {''.join(self.lines)}\n"
                             f"log: {self.log()}")

    def log(self) -> str:
        # Without ANSI colour codes, whatever the logger decides.
        return re.sub(r"\x1b\[[0-9;]*m", "", self.log_path.read_text(errors="replace"))

    def wait_log(self, pattern: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.log()):
                return
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r}:\n{self.log()}")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def services(tmp_path):
    started: list[Service] = []

    def start(argv, env=None, wait_for_firewall=True, workdir=None) -> Service:
        s = Service(argv, workdir or tmp_path, env, wait_for_firewall)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
        print(f"--- {s.proc.args[:3]} log tail ---\n{s.log()[-6000:]}")


def add_user(ferroftp_bin: str, users: Path, name: str = "alice") -> str:
    password = "pw-" + secrets.token_hex(8)
    subprocess.run([ferroftp_bin, "user", "add", name, "--users", str(users)],
                   input=(password + "\n").encode(), check=True, capture_output=True,
                   timeout=60)
    return password


def write_config(path: Path, advertise: str, extra: str = "") -> None:
    path.write_text(f"""
[[server.listeners]]
listen = "127.0.0.1:0"

[passive]
ports = "42100-42140"
advertise = "{advertise}"

[storage]
root = "root"

[auth]
path = "users.toml"
{extra}
""")


def pasv_host(ftp: ftplib.FTP) -> str:
    reply = ftp.sendcmd("PASV")
    numbers = re.search(r"\((\d+,\d+,\d+,\d+),\d+,\d+\)", reply).group(1)
    return numbers.replace(",", ".")


def test_sighup_changes_the_next_pasv_and_a_broken_config_keeps_the_old_one(
        ferroftp_bin, services, tmp_path):
    config = tmp_path / "ferroftp.toml"
    write_config(config, "198.51.100.1")
    password = add_user(ferroftp_bin, tmp_path / "users.toml")
    # Started from another directory: the config's relative paths are relative to it.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    server = services([ferroftp_bin, "serve", "--config", str(config)], workdir=elsewhere)
    assert (tmp_path / "root").is_dir()
    assert not (elsewhere / "users.toml").exists()

    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", server.port, timeout=20)
    ftp.login("alice", password)
    assert pasv_host(ftp) == "198.51.100.1"

    write_config(config, "198.51.100.2")
    server.signal(signal.SIGHUP)
    server.wait_log(r"SIGHUP: configuration reloaded")
    # The open session stays logged in and its next PASV announces the new address.
    assert pasv_host(ftp) == "198.51.100.2"
    assert ftp.sendcmd("NOOP").startswith("200")

    # A config with problems: every one is logged, the server keeps the running config.
    write_config(config, "198.51.100.3", extra='colour = "blue"\n[tls]\ncert = "none.pem"\n'
                                               'key = "none.key"\n')
    server.signal(signal.SIGHUP)
    server.wait_log(r"configuration not reloaded")
    log = server.log()
    assert "auth.colour" in log and "tls.cert" in log, log
    assert server.proc.poll() is None
    assert pasv_host(ftp) == "198.51.100.2"
    fresh = ftplib.FTP()
    fresh.connect("127.0.0.1", server.port, timeout=20)
    fresh.login("alice", password)
    assert pasv_host(fresh) == "198.51.100.2"
    fresh.quit()
    ftp.quit()


def test_sighup_without_tls_files_and_with_self_signed_tls_is_not_fatal(
        ferroftp_bin, services, tmp_path):
    add_user(ferroftp_bin, tmp_path / "users.toml")
    server = services([ferroftp_bin, "serve", "--listen", "127.0.0.1:0", "--root", "root",
                       "--users", "users.toml", "--passive-ports", "42150-42160",
                       "--tls", "self-signed"])
    for _ in range(2):
        server.signal(signal.SIGHUP)
        server.wait_log(r"SIGHUP: configuration reloaded")
    assert server.proc.poll() is None
    ftp = ftplib.FTP_TLS()
    ftp.connect("127.0.0.1", server.port, timeout=20)
    assert ftp.sendcmd("NOOP").startswith("200")
    ftp.quit()


def test_sigterm_lets_a_slow_download_finish_refuses_new_connections_and_exits_0(
        ferroftp_bin, services, tmp_path):
    password = add_user(ferroftp_bin, tmp_path / "users.toml")
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(6 << 20)
    (root / "big.bin").write_bytes(data)
    server = services([ferroftp_bin, "serve", "--listen", "127.0.0.1:0", "--root", "root",
                       "--users", "users.toml", "--passive-ports", "42200-42210"])
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", server.port, timeout=30)
    ftp.login("alice", password)
    idle = ftplib.FTP()
    idle.connect("127.0.0.1", server.port, timeout=30)
    idle.login("alice", password)
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("RETR big.bin")
    # A client that reads slowly: a small receive buffer, 64 KiB now and then.
    received = bytearray(conn.recv(65536))
    server.signal(signal.SIGTERM)
    server.wait_log(r"shutting down: listeners closed")
    # New connections are refused while the transfer finishes; the idle session got 421.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5)
    with pytest.raises(ftplib.error_temp, match="^421"):
        idle.sendcmd("NOOP")
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        received += chunk
        time.sleep(0.002)
    conn.close()
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(data).hexdigest()
    assert ftp.voidresp().startswith("226")
    with pytest.raises(ftplib.error_temp, match="^421"):
        ftp.getresp()
    assert server.wait(timeout=60) == 0
    assert "stopped" in server.log()


def test_socket_activation_with_systemd_socket_activate(ferroftp_bin, services, tmp_path):
    if shutil.which("systemd-socket-activate") is None:
        pytest.skip("systemd-socket-activate is not installed (Debian package systemd)")
    password = add_user(ferroftp_bin, tmp_path / "users.toml")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    # Unnamed sockets serve as plain listeners with the command line's settings: no --listen.
    launcher = services(["systemd-socket-activate", "-l", f"127.0.0.1:{port}", ferroftp_bin,
                         "serve", "--root", "root", "--users", "users.toml",
                         "--passive-ports", "42250-42260"], wait_for_firewall=False)
    launcher.wait_log(r"Listening on")
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", port, timeout=30)
    ftp.login("alice", password)
    ftp.storbinary("STOR hello.txt", io.BytesIO(b"activated\n"))
    assert (tmp_path / "root" / "hello.txt").read_bytes() == b"activated\n"
    ftp.quit()
    launcher.wait_for_line(rf"listening on 127\.0\.0\.1:{port}")
    assert "serving an inherited socket" in launcher.log()


def test_socket_activation_names_map_to_listeners(ferroftp_bin, services, tmp_path):
    if shutil.which("systemd-socket-activate") is None:
        pytest.skip("systemd-socket-activate is not installed (Debian package systemd)")
    password = add_user(ferroftp_bin, tmp_path / "users.toml")
    (tmp_path / "ferroftp.toml").write_text("""
[[server.listeners]]
name = "ftp"
listen = "127.0.0.1:1"     # not bound: the inherited socket named "ftp" is served instead
""")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    launcher = services(["systemd-socket-activate", "-l", f"127.0.0.1:{port}",
                         "--fdname=ftp", ferroftp_bin, "serve", "--config", "ferroftp.toml",
                         "--passive-ports", "42270-42280"], wait_for_firewall=False)
    launcher.wait_log(r"Listening on")
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", port, timeout=30)
    ftp.login("alice", password)
    assert ftp.sendcmd("NOOP").startswith("200")
    ftp.quit()
    launcher.wait_log(r'serving an inherited socket.*name="?ftp')


def test_readiness_reload_and_stopping_are_notified(ferroftp_bin, services, tmp_path):
    add_user(ferroftp_bin, tmp_path / "users.toml")
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(30)
    try:
        server = services([ferroftp_bin, "serve", "--listen", "127.0.0.1:0", "--root", "root",
                           "--users", "users.toml", "--passive-ports", "42300-42310"],
                          env={"NOTIFY_SOCKET": str(notify_path)})

        def next_message() -> str:
            return listener.recv(4096).decode()

        ready = next_message()
        assert "READY=1" in ready.splitlines(), ready
        assert re.search(r"^STATUS=serving: \d+ session", ready, re.M), ready
        server.signal(signal.SIGHUP)
        reloading = next_message()
        assert "RELOADING=1" in reloading.splitlines(), reloading
        assert "MONOTONIC_USEC=" in reloading, reloading
        assert "READY=1" in next_message().splitlines()
        server.signal(signal.SIGTERM)
        messages = [next_message()]
        while not any("STOPPING=1" in m.splitlines() for m in messages):
            messages.append(next_message())
        assert server.wait(timeout=60) == 0
    finally:
        listener.close()


def free_privileged_port() -> int:
    for port in range(990, 600, -1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free privileged port on 127.0.0.1")


def test_started_as_root_it_binds_a_privileged_port_then_runs_as_server_user(
        ferroftp_bin, services, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    nobody = pwd.getpwnam("nobody")
    workdir = tmp_path / "svc"
    workdir.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(workdir, 0o755)
    port = free_privileged_port()
    (workdir / "ferroftp.toml").write_text(f"""
[server]
user = "nobody"
[[server.listeners]]
listen = "127.0.0.1:{port}"
[passive]
ports = "42350-42360"
""")
    server = services([ferroftp_bin, "serve", "--config", "ferroftp.toml"], workdir=workdir)
    assert server.port == port
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", status, re.M).groups()
    assert set(map(int, uids)) == {nobody.pw_uid}, status
    # The generated account and the storage root it created belong to that user: it can
    # read the one and write the other.
    password = re.search(r"password '([^']+)'", "".join(server.lines)).group(1)
    assert (workdir / "ftp-root").stat().st_uid == nobody.pw_uid
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", port, timeout=30)
    ftp.login("ferroftp", password)
    ftp.storbinary("STOR owned.txt", io.BytesIO(b"by nobody\n"))
    assert (workdir / "ftp-root" / "owned.txt").stat().st_uid == nobody.pw_uid
    ftp.quit()


def test_unit_files_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    repo = Path(__file__).resolve().parents[2]
    units = repo / "contrib" / "systemd"
    # verify resolves ExecStart: point it at a copy whose binary path exists here.
    for unit in ("ferroftp.service", "ferroftp.socket"):
        assert (units / unit).is_file()
    copy = tmp_path / "units"
    copy.mkdir()
    fake_bin = tmp_path / "ferroftp"
    fake_bin.write_text("#!/bin/sh\n")
    fake_bin.chmod(0o755)
    for unit in ("ferroftp.service", "ferroftp.socket"):
        text = (units / unit).read_text().replace("/usr/local/bin/ferroftp", str(fake_bin))
        (copy / unit).write_text(text)
    result = subprocess.run([analyze, "verify", str(copy / "ferroftp.service"),
                             str(copy / "ferroftp.socket")], capture_output=True, text=True,
                            timeout=60)
    # Only complaints about our units count (the host's own units may have their own).
    ours = [line for line in (result.stdout + result.stderr).splitlines()
            if "ferroftp." in line]
    assert not ours, "\n".join(ours)
