"""FTP helpers for the system tests: ferroftp started inside a namespace, curl and Python's
ftplib run inside a namespace, and the raw control client of the interop suite
(tests/interop/ftp_helpers.py, imported from there) with its socket created in a namespace.

Only the standard library is used.
"""

from __future__ import annotations

import ftplib
import io
import os
import queue
import re
import secrets
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "interop"))

from ftp_helpers import (  # noqa: E402  (path set up just above)
    PROC_TIMEOUT, SOCKET_TIMEOUT, FTPClosed, RawFTP, Reply, Run, curl_transcript,
    parse_epsv, parse_pasv, port_arg, run_client, sha256_bytes, sha256_file, write_random,
)
from netns import Netns, stop_process  # noqa: E402

__all__ = [
    "PROC_TIMEOUT", "SOCKET_TIMEOUT", "FTPClosed", "RawFTP", "Reply", "Run", "parse_epsv",
    "parse_pasv", "port_arg", "sha256_bytes", "sha256_file", "write_random", "NsServer",
    "start_ferroftp", "curl_in", "raw_in", "ftplib_roundtrip", "FtplibResult", "RecordingFTP",
    "doc_block", "doc_commands", "strip_ansi",
]

STARTUP_TIMEOUT = 60.0


# --------------------------------------------------------------------------------------------
# the server


@dataclass
class NsServer:
    ns: Netns
    proc: subprocess.Popen
    argv: list[str]
    user: str
    password: str
    root: Path
    log_path: Path
    listening: list[str]
    stdout_lines: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.listening[0].rsplit(":", 1)[1])

    def url(self, host: str, path: str = "", port: int | None = None) -> str:
        return (f"ftp://{self.user}:{self.password}@{host}:{port or self.port}/"
                f"{path.lstrip('/')}")

    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def log(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        return strip_ansi(text + "".join(self.stdout_lines))

    def stop(self):
        stop_process(self.proc)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def start_ferroftp(bin_path: str, ns: Netns, workdir: Path, *, config: str | None = None,
                   listen: str | None = "0.0.0.0:2121",
                   passive_ports: str | None = "50000-50100",
                   advertise: str | None = None, extra_args: list[str] = (),
                   log_level: str = "debug") -> NsServer:
    """Start `ferroftp serve` inside `ns` and wait (bounded) for its `listening on` lines and
    its firewall line. `config` is TOML text written to workdir/ferroftp.toml; flags given
    here override it (pass listen=None / passive_ports=None to leave the file's values)."""
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "root"
    root.mkdir(exist_ok=True)
    users = workdir / "users.toml"
    user, password = "alice", "pw-" + secrets.token_hex(8)
    p = subprocess.run([bin_path, "user", "add", user, "--users", str(users)],
                       input=(password + "\n").encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 0, f"user add failed: {p.stdout!r} {p.stderr!r}"

    argv = [bin_path, "serve", "--root", str(root), "--users", str(users)]
    if config is not None:
        cfg = workdir / "ferroftp.toml"
        cfg.write_text(config)
        argv += ["--config", str(cfg)]
    if listen is not None:
        argv += ["--listen", listen]
    if passive_ports is not None:
        argv += ["--passive-ports", passive_ports]
    if advertise is not None:
        argv += ["--advertise", advertise]
    argv += list(extra_args)

    env = dict(os.environ)
    env["FERROFTP_LOG"] = log_level
    env["NO_COLOR"] = "1"
    log_path = workdir / "server.stderr.log"
    with open(log_path, "wb") as log:
        proc = ns.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                        cwd=workdir, env=env)
    lines: list[str] = []
    q: queue.Queue = queue.Queue()

    def pump():
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    listening: list[str] = []
    while True:
        try:
            line = q.get(timeout=STARTUP_TIMEOUT)
        except queue.Empty:
            stop_process(proc)
            raise AssertionError(f"no firewall line within {STARTUP_TIMEOUT}s from {argv}\n"
                                 f"stdout: {''.join(lines)}")
        if line is None:
            proc.wait(timeout=10)
            raise AssertionError(
                f"server exited ({proc.returncode}) before listening: {argv}\n"
                f"stdout: {''.join(lines)}\nstderr: {log_path.read_text(errors='replace')}")
        m = re.match(r"listening on (\S+)", line)
        if m:
            listening.append(m.group(1))
        if line.startswith("firewall:"):
            break
    assert listening, f"no 'listening on' line: {''.join(lines)}"
    return NsServer(ns, proc, argv, user, password, root, log_path, listening, lines)


# --------------------------------------------------------------------------------------------
# clients


def curl_in(ns: Netns, *args, timeout: float = PROC_TIMEOUT, max_time: float | None = None,
            connect_timeout: int = 10) -> Run:
    """curl -v inside `ns`; the transcript (commands and reply codes) is parsed from -v."""
    mt = max_time or max(10, int(timeout) - 5)
    argv = ns.argv(["curl", "-v", "-sS", "--connect-timeout", str(connect_timeout),
                    "--max-time", str(int(mt)), "--noproxy", "*", *map(str, args)])
    return run_client(argv, curl_transcript, timeout=timeout)


def raw_in(ns: Netns, host: str, port: int, *, source: str | None = None,
           login: tuple[str, str] | None = None, timeout: float = SOCKET_TIMEOUT) -> RawFTP:
    """A RawFTP control connection whose socket lives in `ns`; greeting read and checked."""
    c = ns.call(lambda: RawFTP(host, port, source=source, timeout=timeout), timeout=timeout + 5)
    try:
        g = c.greeting()
        assert g.code == 220, f"greeting: {g.text!r}"
        if login:
            c.login(*login)
    except BaseException:
        c.close()
        raise
    return c


class RecordingFTP(ftplib.FTP):
    """ftplib.FTP that keeps a transcript: [(command, [final reply lines])], like the curl
    transcripts (a preliminary 150 and the final 226 both belong to the RETR)."""

    def __init__(self, *a, **kw):
        self.transcript: list[tuple[str, list[str]]] = [("", [])]     # "" = the greeting
        super().__init__(*a, **kw)

    def putcmd(self, line):
        self.transcript.append((line if not line.startswith("PASS ") else "PASS ***", []))
        super().putcmd(line)

    def getresp(self):
        try:
            resp = super().getresp()
        except ftplib.Error as e:
            self.transcript[-1][1].append(str(e).splitlines()[-1])
            raise
        self.transcript[-1][1].append(resp.splitlines()[-1])
        return resp


@dataclass
class FtplibResult:
    transcript: list[tuple[str, list[str]]]
    downloaded: bytes

    def replies_to(self, verb: str) -> list[list[str]]:
        """The replies to each `verb` command sent, in order."""
        return [r for c, r in self.transcript if c.split(" ", 1)[0].upper() == verb.upper()]

    def codes(self, verb: str) -> list[list[int]]:
        return [[int(x[:3]) for x in r] for r in self.replies_to(verb)]


def ftplib_roundtrip(ns: Netns, host: str, server: NsServer, name: str, data: bytes, *,
                     passive: bool = True, trust_pasv_address: bool = True,
                     port: int | None = None, timeout: float = SOCKET_TIMEOUT) -> FtplibResult:
    """Inside `ns`: log in with ftplib, STOR `data` as `name`, RETR it back, QUIT.

    trust_pasv_address=True makes ftplib connect to the address in the 227 reply, like most
    clients; since Python 3.9.3/3.8.9/... ftplib ignores it by default and reuses the control
    connection's address, which would hide a wrong advertised address."""

    def go():
        ftp = RecordingFTP(timeout=timeout)
        ftp.trust_server_pasv_ipv4_address = trust_pasv_address
        try:
            ftp.connect(host, port or server.port)
            ftp.login(server.user, server.password)
            ftp.set_pasv(passive)
            ftp.storbinary(f"STOR {name}", io.BytesIO(data))
            out = bytearray()
            ftp.retrbinary(f"RETR {name}", out.extend)
            ftp.quit()
            return FtplibResult(ftp.transcript, bytes(out))
        except BaseException as e:
            e.add_note(f"ftplib transcript: {ftp.transcript}")
            ftp.close()
            raise

    return ns.call(go, timeout=timeout * 4)


# --------------------------------------------------------------------------------------------
# examples from docs/nat-and-firewalls.md


DOC = REPO / "docs" / "nat-and-firewalls.md"


def doc_block(name: str) -> str:
    """The fenced code block right after `<!-- system-test: NAME -->` in
    docs/nat-and-firewalls.md: the tests run the documented examples verbatim."""
    text = DOC.read_text()
    m = re.search(rf"<!-- system-test: {re.escape(name)} -->\s*\n```[^\n]*\n(.*?)\n```",
                  text, re.S)
    assert m, f"no code block marked `system-test: {name}` in {DOC}"
    return m.group(1) + "\n"


def doc_commands(name: str, program: str) -> list[list[str]]:
    """The commands of a shell block of the doc (comments dropped, `\\` continuations
    joined), split like the shell would; each must run `program`."""
    import shlex
    text = doc_block(name).replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            argv = shlex.split(line)
            assert argv[0] == program, f"{name}: {line!r} does not run {program}"
            out.append(argv)
    return out
