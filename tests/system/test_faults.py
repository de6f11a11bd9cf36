"""Faults: the server out of file descriptors, and a client that stops reading a download.

Each test runs the server in a namespace of its own and talks to it over that namespace's
loopback; every wait is bounded.
"""

from __future__ import annotations

import os
import socket
import stat
import time

from sysftp import RawFTP, parse_pasv, raw_in, sha256_bytes, start_ferroftp

# The server's open-files limit in the descriptor test: low enough that a handful of sessions
# reach the budget (docs/operations.md, "Open files").
NOFILE = 96
# The same for uploads: high enough that the 32 descriptors kept aside cannot hide an
# undercount of what each uploading session holds (at 96 they did).
NOFILE_UPLOADS = 256


def _limited(bin_path: str, tmp_path, nofile: int) -> str:
    """A wrapper that starts the binary with soft and hard RLIMIT_NOFILE `nofile` (so the
    server cannot raise it)."""
    wrapper = tmp_path / "ferroftp-limited"
    wrapper.write_text(f'#!/bin/sh\nexec prlimit --nofile={nofile}:{nofile} {bin_path} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return str(wrapper)


def _connect(ns, port: int) -> RawFTP:
    """A control connection whose greeting is not read yet."""
    return ns.call(lambda: RawFTP("127.0.0.1", port, timeout=15), timeout=20)


def _retrieve(ns, c: RawFTP, name: str) -> bytes:
    host, port = parse_pasv(c.expect("PASV", 227).text)
    data = ns.connect(host, port, timeout=15)
    with data:
        assert c.cmd(f"RETR {name}").code == 150
        chunks = []
        while chunk := data.recv(65536):
            chunks.append(chunk)
    assert c.read_reply().code == 226
    return b"".join(chunks)


def _sessions_until_refused(ns, server, bound: int,
                            refusals: int = 1) -> tuple[list[RawFTP], list[str]]:
    """Logged-in sessions, opened until the server has refused `refusals` connections with
    421 (out of `bound` tries), and the refusals' texts."""
    sessions: list[RawFTP] = []
    refused: list[str] = []
    for _ in range(bound):
        c = _connect(ns, server.port)
        # Answered at once either way: never left in the accept queue.
        greeting = c.read_reply()
        if greeting.code == 220:
            c.login(server.user, server.password)
            sessions.append(c)
            continue
        assert greeting.code == 421, greeting.text
        refused.append(greeting.text)
        c.close()
        if len(refused) == refusals:
            break
    return sessions, refused


def test_out_of_descriptors_new_sessions_get_421_and_open_ones_keep_working(
        ferroftp_bin, topo, tmp_path):
    ns = topo.ns("srv")
    server = start_ferroftp(_limited(ferroftp_bin, tmp_path, NOFILE), ns, tmp_path / "server",
                            listen="127.0.0.1:2121", passive_ports="50000-50100",
                            # Only the descriptors limit the sessions here.
                            extra_args=["--max-sessions-per-ip", "1000"])
    try:
        payload = os.urandom(300_001)
        server.path("f.bin").write_bytes(payload)
        login = (server.user, server.password)
        # Bounded: the limit allows far fewer sessions than this.
        sessions, refused = _sessions_until_refused(ns, server, NOFILE, refusals=3)
        assert len(refused) == 3 and sessions, (len(sessions), refused)
        assert "out of file descriptors" in refused[0], refused
        # Every open session makes a transfer, all data connections and files open at once.
        data_connections = []
        for c in sessions:
            host, port = parse_pasv(c.expect("PASV", 227).text)
            data_connections.append(ns.connect(host, port, timeout=15))
        for c in sessions:
            assert c.cmd("RETR f.bin").code == 150
        for c, data in zip(sessions, data_connections):
            with data:
                received = b""
                while chunk := data.recv(65536):
                    received += chunk
            assert c.read_reply().code == 226
            assert sha256_bytes(received) == sha256_bytes(payload)
        # And again, one after the other, on the same sessions.
        for c in sessions:
            assert sha256_bytes(_retrieve(ns, c, "f.bin")) == sha256_bytes(payload)
        # Still full: refused.
        c = _connect(ns, server.port)
        assert c.read_reply().code == 421
        c.close()
        # One session leaves: a new one gets its place (its end is seen a moment later).
        sessions.pop().expect("QUIT", 221)
        for _ in range(50):
            c = _connect(ns, server.port)
            greeting = c.read_reply()
            if greeting.code == 220:
                break
            c.close()
            time.sleep(0.1)
        else:
            raise AssertionError("no session admitted after one ended")
        c.login(*login)
        assert sha256_bytes(_retrieve(ns, c, "f.bin")) == sha256_bytes(payload)
        sessions.append(c)
        assert server.proc.poll() is None
    finally:
        for c in locals().get("sessions", []):
            c.close()
        server.stop()


def test_out_of_descriptors_every_open_session_can_upload_at_once(ferroftp_bin, topo, tmp_path):
    """At the descriptor budget every admitted session uploads at the same time: each holds its
    control and data connections, its partial file, that file's directory and the probe of
    its control connection. Counting three per session let these uploads fail with 'Too many
    open files' (426/425)."""
    ns = topo.ns("srv")
    server = start_ferroftp(_limited(ferroftp_bin, tmp_path, NOFILE_UPLOADS), ns,
                            tmp_path / "server", listen="127.0.0.1:2121",
                            passive_ports="50000-50300",
                            extra_args=["--max-sessions-per-ip", "1000"])
    sessions: list[RawFTP] = []
    try:
        # Bounded: the limit allows far fewer sessions than this.
        sessions, refused = _sessions_until_refused(ns, server, NOFILE_UPLOADS)
        assert refused and sessions, (len(sessions), refused)
        assert "out of file descriptors" in refused[0], refused
        uploads = [os.urandom(200_003) for _ in sessions]
        data_connections = []
        for c in sessions:
            host, port = parse_pasv(c.expect("PASV", 227).text)
            data_connections.append(ns.connect(host, port, timeout=15))
        # Every upload started before any ends: all partial files open at once.
        for index, c in enumerate(sessions):
            reply = c.cmd(f"STOR up{index}.bin")
            assert reply.code == 150, (index, reply.text)
        for data, upload in zip(data_connections, uploads):
            with data:
                data.sendall(upload)
        for index, c in enumerate(sessions):
            reply = c.read_reply()
            assert reply.code == 226, (index, len(sessions), reply.text)
        for index, upload in enumerate(uploads):
            assert sha256_bytes(server.path(f"up{index}.bin").read_bytes()) == \
                sha256_bytes(upload), index
        assert server.proc.poll() is None
    finally:
        for c in sessions:
            c.close()
        server.stop()


def test_a_client_that_stops_reading_is_cut_by_the_data_idle_timeout(
        ferroftp_bin, topo, tmp_path):
    ns = topo.ns("srv")
    # One passive port: the next PASV proves that the stalled transfer gave it back.
    server = start_ferroftp(ferroftp_bin, ns, tmp_path / "server", listen="127.0.0.1:2121",
                            passive_ports="50000-50000",
                            config='[data]\nidle_timeout = "2s"\n')
    try:
        # Far more than the socket buffers of both ends hold.
        big = os.urandom(1 << 20) * 64
        server.path("big.bin").write_bytes(big)
        small = os.urandom(100_003)
        server.path("small.bin").write_bytes(small)
        c = raw_in(ns, "127.0.0.1", server.port, login=(server.user, server.password), timeout=30)
        with c:
            c.expect("TYPE I", 200)
            host, port = parse_pasv(c.expect("PASV", 227).text)
            assert port == 50000

            def stalled_connection():
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                # A small receive window that is never read: the window closes (zero window).
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.settimeout(15)
                s.connect((host, port))
                return s

            data = ns.call(stalled_connection, timeout=20)
            with data:
                assert c.cmd("RETR big.bin").code == 150
                # Nothing read: the server's writes stall, and data.idle_timeout cuts them.
                reply = c.read_reply()
                assert reply.code == 426, reply.text
                # The port is back in the pool (the stalled socket is still open here).
                host2, port2 = parse_pasv(c.expect("PASV", 227).text)
                assert port2 == 50000
                fresh = ns.connect(host2, port2, timeout=15)
                with fresh:
                    assert c.cmd("RETR small.bin").code == 150
                    received = b""
                    while chunk := fresh.recv(65536):
                        received += chunk
                assert c.read_reply().code == 226
                assert sha256_bytes(received) == sha256_bytes(small)
            c.expect("QUIT", 221)
        assert server.proc.poll() is None
    finally:
        server.stop()

