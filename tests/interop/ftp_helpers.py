"""Helpers shared by the interop tests: hashing, a raw control-connection client, runners for
curl and lftp whose transcripts (commands sent, replies received) can be asserted on, listing
parsers, and a way to wait until the server has finished with a dead client's session.

Only the standard library is used here.
"""

from __future__ import annotations

import hashlib
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

# Every network operation and every child process in the suite is bounded by one of these.
SOCKET_TIMEOUT = 30.0
PROC_TIMEOUT = 120.0
BIG_PROC_TIMEOUT = 600.0
MiB = 1 << 20


# --------------------------------------------------------------------------------------------
# bytes and files


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def write_random(path, size: int) -> str:
    """Write `size` random bytes to `path`, return their sha256."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 1 << 20))
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


# The tree the mirror tests send up and fetch back: nested directories, an empty file, an
# empty directory (`emptydir`), a name with spaces.
MIRROR_TREE = {
    "a.bin": 1000,
    "empty.bin": 0,
    "one/b.bin": 70000,
    "one/two/c.bin": 1,
    "one/two/three/d.bin": 300000,
    "spaces in name/e f.bin": 123,
}


def make_tree(top, files: dict[str, int] = MIRROR_TREE) -> dict[str, int]:
    """Write `files` (relative name: size, random bytes) and an empty directory `emptydir`
    under `top`; return `files`."""
    top.mkdir(parents=True, exist_ok=True)
    for rel, size in files.items():
        p = top / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        write_random(p, size)
    (top / "emptydir").mkdir()
    return files


def tree_hashes(top) -> dict[str, str]:
    """Relative path -> sha256 for every regular file under `top` (directories as 'dir')."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        rel_dir = os.path.relpath(dirpath, top)
        for d in dirnames:
            out[os.path.normpath(os.path.join(rel_dir, d))] = "dir"
        for f in filenames:
            out[os.path.normpath(os.path.join(rel_dir, f))] = sha256_file(os.path.join(dirpath, f))
    return out


# --------------------------------------------------------------------------------------------
# raw control connection


class FTPClosed(Exception):
    pass


@dataclass
class Reply:
    code: int
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def __str__(self) -> str:  # pragma: no cover - diagnostics only
        return self.text


class RawFTP:
    """A control connection on a plain socket: sends exact bytes, reads RFC 959 replies
    (multi-line aware). Every read is bounded by the socket timeout."""

    def __init__(self, host: str, port: int, source: str | None = None,
                 timeout: float = SOCKET_TIMEOUT):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def local_ip(self) -> str:
        return self.sock.getsockname()[0]

    def _line(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise FTPClosed(f"connection closed by server; pending bytes: {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def read_reply(self) -> Reply:
        first = self._line().decode("utf-8", "replace")
        if not re.match(r"^\d{3}[ -]", first) and not re.match(r"^\d{3}$", first):
            raise AssertionError(f"malformed reply line: {first!r}")
        code = int(first[:3])
        lines = [first]
        if first[3:4] == "-":
            end = f"{code} "
            while True:
                line = self._line().decode("utf-8", "replace")
                lines.append(line)
                if line.startswith(end) or line == str(code):
                    break
        return Reply(code, lines)

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def cmd(self, line: str | bytes) -> Reply:
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send_raw(line + b"\r\n")
        return self.read_reply()

    def expect(self, line: str | bytes, *codes: int) -> Reply:
        r = self.cmd(line)
        assert r.code in codes, f"{line!r}: expected {codes}, got {r.text!r}"
        return r

    def greeting(self) -> Reply:
        return self.read_reply()

    def login(self, user: str, password: str):
        r = self.cmd(f"USER {user}")
        assert r.code == 331, f"USER: {r.text!r}"
        r = self.cmd(f"PASS {password}")
        assert r.code == 230, f"PASS: {r.text!r}"

    def wait_closed(self) -> bytes:
        """Read until the server closes the connection (bounded by the socket timeout)."""
        rest = self.buf
        self.buf = b""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return rest
            rest += chunk


def cmd_with_data_connection(c: RawFTP, line: str) -> Reply:
    """EPSV, connect the data connection, then send `line` (a transfer command): the server
    then judges the command itself, not the missing data connection. Returns the first reply
    (any data and the final reply of an unexpectedly started transfer are consumed)."""
    r = c.cmd("EPSV")
    assert r.code == 229, r.text
    data = socket.create_connection((c.sock.getpeername()[0], parse_epsv(r.text)),
                                    timeout=SOCKET_TIMEOUT)
    with data:
        first = c.cmd(line)
        if first.code in (125, 150):
            while data.recv(65536):
                pass
            data.close()
            c.read_reply()
    return first


def raw_session(server, login: bool = True, source: str | None = None) -> RawFTP:
    c = RawFTP(server.host, server.port, source=source)
    g = c.greeting()
    assert g.code == 220, f"greeting: {g.text!r}"
    if login:
        c.login(server.user, server.password)
    return c


def assert_session_alive(c: RawFTP):
    r = c.cmd("NOOP")
    assert r.code == 200, f"NOOP on the same session: {r.text!r}"


def assert_new_session_works(server):
    with raw_session(server) as c:
        assert_session_alive(c)
        r = c.cmd("QUIT")
        assert r.code == 221, f"QUIT: {r.text!r}"


# --------------------------------------------------------------------------------------------
# address formats


def parse_pasv(text: str) -> tuple[str, int]:
    m = re.search(r"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)", text)
    assert m, f"no host-port in PASV reply {text!r}"
    n = [int(x) for x in m.groups()]
    return ".".join(map(str, n[:4])), n[4] * 256 + n[5]


def parse_epsv(text: str) -> int:
    m = re.search(r"\((.)\1\1(\d+)\1\)", text)
    assert m, f"no |||port| in EPSV reply {text!r}"
    return int(m.group(2))


def port_arg(ip: str, port: int) -> str:
    return ",".join(ip.split(".") + [str(port >> 8), str(port & 255)])


# --------------------------------------------------------------------------------------------
# transcripts of real clients


@dataclass
class Exchange:
    command: str                       # as sent, e.g. "STOR x"
    replies: list[tuple[int, str]] = field(default_factory=list)   # final reply lines

    @property
    def verb(self) -> str:
        return self.command.split(" ", 1)[0].upper()

    @property
    def codes(self) -> list[int]:
        return [c for c, _ in self.replies]


@dataclass
class Run:
    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: str
    transcript: list[Exchange]
    greeting: list[tuple[int, str]]

    def exchanges(self, verb: str) -> list[Exchange]:
        return [e for e in self.transcript if e.verb == verb.upper()]

    def codes(self, verb: str) -> list[list[int]]:
        return [e.codes for e in self.exchanges(verb)]

    def sent_verbs(self) -> list[str]:
        return [e.verb for e in self.transcript]

    def describe(self) -> str:
        lines = [f"argv: {self.argv}", f"exit: {self.returncode}"]
        for e in self.transcript:
            lines.append(f"  > {e.command}  < {e.replies}")
        tail = self.stderr[-4000:]
        lines.append("stderr tail:\n" + tail)
        return "\n".join(lines)

    def assert_ok(self):
        assert self.returncode == 0, self.describe()

    def assert_exchange(self, verb: str, *codes_seq: object, index: int = -1):
        """Assert that the `index`th exchange for `verb` got exactly the replies listed; each
        element is a code or a tuple of acceptable codes (e.g. (125, 150) for a preliminary)."""
        ex = self.exchanges(verb)
        assert ex, f"{verb} was never sent\n{self.describe()}"
        got = ex[index].codes
        ok = len(got) == len(codes_seq) and all(
            (g in c) if isinstance(c, tuple) else g == c for g, c in zip(got, codes_seq))
        assert ok, f"{verb}: expected replies {codes_seq}, got {ex[index].replies}\n{self.describe()}"
        return ex[index]


def _transcript(pairs) -> tuple[list[Exchange], list[tuple[int, str]]]:
    """pairs: sequence of ('>', command) / ('<', reply line) in order. Only final reply lines
    ("NNN text") are kept. Replies before any command (the greeting) are returned apart."""
    transcript: list[Exchange] = []
    greeting: list[tuple[int, str]] = []
    for kind, text in pairs:
        if kind == ">":
            transcript.append(Exchange(text.strip()))
        else:
            m = re.match(r"^(\d{3})(?: (.*))?$", text.rstrip("\r"))
            if not m:
                continue            # continuation line of a multi-line reply
            item = (int(m.group(1)), m.group(2) or "")
            (transcript[-1].replies if transcript else greeting).append(item)
    return transcript, greeting


def curl_transcript(stderr: str):
    pairs = []
    for line in stderr.splitlines():
        if line.startswith("> "):
            pairs.append((">", line[2:]))
        elif line.startswith("< "):
            pairs.append(("<", line[2:]))
    return _transcript(pairs)


def lftp_transcript(stderr: str):
    pairs = []
    for line in stderr.splitlines():
        m = re.match(r"^\s*(--->|<---) ?(.*)$", line)
        if m:
            pairs.append((">" if m.group(1) == "--->" else "<", m.group(2)))
    return _transcript(pairs)


def run_client(argv, parse, timeout=PROC_TIMEOUT, cwd=None, stdin=subprocess.DEVNULL,
               env=None) -> Run:
    p = subprocess.run(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, cwd=cwd, env=env)
    err = p.stderr.decode("utf-8", "replace")
    transcript, greeting = parse(err)
    return Run(list(map(str, argv)), p.returncode, p.stdout, err, transcript, greeting)


def curl(*args, timeout=PROC_TIMEOUT, max_time=None, **kw) -> Run:
    mt = max_time or max(10, int(timeout) - 5)
    argv = ["curl", "-v", "-sS", "--connect-timeout", "10", "--max-time", str(mt),
            "--noproxy", "*", *map(str, args)]
    return run_client(argv, curl_transcript, timeout=timeout, **kw)


def parse_curl_trace(path) -> list[tuple[str, bytes]]:
    """Blocks of a `curl --trace FILE` dump: (kind, bytes), kind like '=> Send data' or
    '<= Recv header'. Data blocks hold the bytes exactly as they crossed the socket."""
    blocks: list[tuple[str, bytearray]] = []
    with open(path, "r", errors="replace") as f:
        for line in f:
            m = re.match(r"^(=> Send data|<= Recv data|=> Send header|<= Recv header)", line)
            if m:
                blocks.append((m.group(1), bytearray()))
                continue
            if line.startswith("== Info") or not blocks:
                continue
            m = re.match(r"^[0-9a-f]{4}: ((?:[0-9a-f]{2} ){1,16})", line)
            if m:
                blocks[-1][1].extend(bytes.fromhex(m.group(1)))
    return [(k, bytes(v)) for k, v in blocks]


@dataclass
class TracedRun(Run):
    data_in: bytes = b""
    data_out: bytes = b""


def curl_traced(*args, trace_path, timeout=PROC_TIMEOUT, **kw) -> TracedRun:
    """curl with --trace: the transcript comes from the trace's header blocks and the data
    bytes on the wire are kept (curl converts line ends itself in ASCII mode)."""
    argv = ["curl", "-sS", "--trace", str(trace_path), "--connect-timeout", "10",
            "--max-time", str(max(10, int(timeout) - 5)), "--noproxy", "*", *map(str, args)]
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout, **kw)
    blocks = parse_curl_trace(trace_path)
    pairs = []
    for kind, data in blocks:
        if kind.endswith("header"):
            for line in data.decode("utf-8", "replace").split("\r\n"):
                if line:
                    pairs.append((">" if kind.startswith("=>") else "<", line))
    transcript, greeting = _transcript(pairs)
    return TracedRun(list(map(str, argv)), p.returncode, p.stdout,
                     p.stderr.decode("utf-8", "replace"), transcript, greeting,
                     data_in=b"".join(d for k, d in blocks if k == "<= Recv data"),
                     data_out=b"".join(d for k, d in blocks if k == "=> Send data"))


def _popen(argv, **kw) -> subprocess.Popen:
    """Start a client in the background; its stderr goes to a temp file (a pipe nobody reads
    could fill up and stall it). `popen_stderr(proc)` reads it."""
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=err, **kw)
    proc.stderr_file = err
    return proc


def popen_stderr(proc: subprocess.Popen) -> str:
    f = getattr(proc, "stderr_file", None)
    if f is None:
        return ""
    f.seek(0)
    return f.read().decode("utf-8", "replace")


def curl_popen(*args, **kw) -> subprocess.Popen:
    argv = ["curl", "-v", "-sS", "--connect-timeout", "10", "--noproxy", "*", *map(str, args)]
    return _popen(argv, **kw)


LFTP_PRELUDE = [
    "set cmd:fail-exit yes",
    "set ftp:ssl-allow no",
    "set net:max-retries 1",
    "set net:reconnect-interval-base 1",
    "set net:timeout 20",
    "set net:persist-retries 0",
    "set xfer:clobber yes",
    "set cmd:interactive no",
    "set ftp:sync-mode yes",
]


def lftp_script(server, commands: list[str], passive: bool = True,
                extra_settings: list[str] = ()) -> str:
    lines = list(LFTP_PRELUDE)
    lines.append(f"set ftp:passive-mode {'on' if passive else 'off'}")
    lines.extend(extra_settings)
    lines.append(f"open -u {server.user},{server.password} ftp://{server.host}:{server.port}")
    lines.extend(commands)
    return "; ".join(lines)


def lftp_env():
    env = dict(os.environ)
    # Keep lftp away from any user rc files, bookmarks or proxies.
    env["HOME"] = env.get("FERROFTP_INTEROP_HOME", "/nonexistent-ferroftp-home")
    env.pop("ftp_proxy", None)
    env.pop("FTP_PROXY", None)
    env["LFTP_HOME"] = env["HOME"]
    return env


def lftp(server, commands: list[str], passive: bool = True, timeout=PROC_TIMEOUT,
         cwd=None, extra_settings: list[str] = ()) -> Run:
    script = lftp_script(server, commands, passive, extra_settings)
    argv = ["lftp", "-d", "-c", script]
    return run_client(argv, lftp_transcript, timeout=timeout, cwd=cwd, env=lftp_env())


def lftp_popen(server, commands: list[str], passive: bool = True, cwd=None,
               extra_settings: list[str] = ()) -> subprocess.Popen:
    script = lftp_script(server, commands, passive, extra_settings)
    return _popen(["lftp", "-d", "-c", script], cwd=cwd, env=lftp_env())


# --------------------------------------------------------------------------------------------
# listings


def parse_unix_list(text: str) -> dict[str, tuple[str, int]]:
    """Parse `ls -l`-style LIST output into name -> (type char, size)."""
    out: dict[str, tuple[str, int]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip() or line.startswith("total "):
            continue
        parts = line.split(None, 8)
        assert len(parts) == 9, f"unparseable LIST line {line!r}"
        name = parts[8]
        if parts[0].startswith("l") and " -> " in name:
            name = name.split(" -> ", 1)[0]
        out[name] = (parts[0][0], int(parts[4]))
    return out


def parse_mlsx_line(line: str) -> tuple[str, dict[str, str]]:
    facts_s, name = line.split(" ", 1)
    facts = {}
    for f in facts_s.split(";"):
        if f:
            k, v = f.split("=", 1)
            facts[k.lower()] = v
    return name, facts


def nlst_names(text: str) -> list[str]:
    return [l for l in text.replace("\r\n", "\n").split("\n") if l]


# --------------------------------------------------------------------------------------------
# waiting for the server to be done with a killed client (no sleeping for a fixed time)

_TCP_STATES = {"01": "ESTABLISHED", "08": "CLOSE_WAIT", "0A": "LISTEN", "06": "TIME_WAIT",
               "04": "FIN_WAIT1", "05": "FIN_WAIT2", "07": "CLOSE", "09": "LAST_ACK",
               "0B": "CLOSING", "02": "SYN_SENT", "03": "SYN_RECV"}


def _tcp_sockets():
    out = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, remote, st, inode = parts[1], parts[2], parts[3], parts[9]
                    lport = int(local.rsplit(":", 1)[1], 16)
                    rport = int(remote.rsplit(":", 1)[1], 16)
                    out.append((lport, rport, _TCP_STATES.get(st, st), inode))
        except FileNotFoundError:
            pass
    return out


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    return inodes


def server_open_paths(pid: int) -> list[str]:
    out = []
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            out.append(os.readlink(os.path.join(fd_dir, fd)))
        except OSError:
            pass
    return out


def server_connected_sockets(pid: int) -> list[tuple[int, int, str]]:
    """The server process's TCP sockets that are not listening sockets."""
    mine = _socket_inodes(pid)
    return [(lp, rp, st) for lp, rp, st, ino in _tcp_sockets()
            if ino in mine and st != "LISTEN"]


def wait_server_idle(server, timeout: float = 60.0, watch_dir=None):
    """Block until the server process holds no connected TCP socket (every session and data
    connection of killed clients has been closed by the server) and holds no file open under
    `watch_dir`. Polls /proc; the bound is a failure, not an assertion on speed."""
    deadline = time.monotonic() + timeout
    watch = os.path.realpath(watch_dir) if watch_dir else None
    while True:
        conns = server_connected_sockets(server.pid)
        files = [p for p in server_open_paths(server.pid)
                 if watch and p.startswith(watch + os.sep)]
        if not conns and not files:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"server still holds connections {conns} / files {files} {timeout}s after the "
                f"client was killed")
        time.sleep(0.05)


def wait_for(predicate, what: str, timeout: float = 60.0, proc: subprocess.Popen | None = None):
    """Poll `predicate` until true; fail if it isn't within `timeout` or `proc` exits first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            err = popen_stderr(proc)
            raise AssertionError(f"client exited ({proc.returncode}) before {what}\n{err[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _pid_tcp_sockets(pid: int):
    """(local port, remote port, state) of the TCP sockets held by process `pid`."""
    try:
        mine = _socket_inodes(pid)
    except FileNotFoundError:
        return []
    return [(lp, rp, st) for lp, rp, st, ino in _tcp_sockets() if ino in mine]


def reset_data_connections(pid: int, control_port: int) -> list[tuple[int, int]]:
    """Abort every established TCP connection of process `pid` other than its control
    connection(s) to `control_port`, with `ss -K` (SOCK_DESTROY): the kernel drops the socket
    and sends an RST, so the server sees the data connection reset mid-transfer.

    Why not just SIGKILL the client: on exit Linux closes a process's descriptors newest first,
    so a killed client's data connection ends with an orderly FIN (which in stream mode *is*
    the end-of-file mark) about 100 us before its control connection closes; no server can
    tell that apart from a finished upload. A reset data connection is an unambiguous
    interruption."""
    victims = [(lp, rp) for lp, rp, st in _pid_tcp_sockets(pid)
               if st == "ESTABLISHED" and rp != control_port]
    assert victims, f"client {pid} has no data connection open: {_pid_tcp_sockets(pid)}"
    for lp, rp in victims:
        p = subprocess.run(["ss", "-K", "-t", "state", "established", "(", "sport", "=",
                            f":{lp}", "and", "dport", "=", f":{rp}", ")"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        assert p.returncode == 0, f"ss -K failed: {p.stderr!r}"
    left = [(lp, rp) for lp, rp, st in _pid_tcp_sockets(pid)
            if st == "ESTABLISHED" and (lp, rp) in victims]
    assert not left, (f"ss -K did not destroy {left}: the kernel needs "
                      f"CONFIG_INET_DIAG_DESTROY and the caller CAP_NET_ADMIN")
    return victims


def kill_hard(proc: subprocess.Popen) -> str:
    """SIGKILL a client we started (by its PID) and return its stderr."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return popen_stderr(proc)


def file_size(path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return -1


def listener(ip: str = "127.0.0.1", port: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port))
    s.listen(4)
    return s


def has_pending_connection(sock: socket.socket) -> bool:
    r, _, _ = select.select([sock], [], [], 0)
    return bool(r)
