"""Session limits and the passive port pool: idle timeout, max sessions (global and per IP),
passive range exhaustion, the advertised passive address."""

from __future__ import annotations

import socket
import time

from conftest import next_passive_range
from ftp_helpers import (SOCKET_TIMEOUT, RawFTP, assert_new_session_works,
                         assert_session_alive, curl, file_size, parse_epsv, parse_pasv,
                         raw_session, sha256_file, write_random)


def test_idle_timeout_sends_421(start_server):
    server = start_server(idle_timeout="2s")
    with raw_session(server) as c:
        # No sleeping: block on the socket until the server speaks (bounded by 30 s).
        c.sock.settimeout(SOCKET_TIMEOUT)
        r = c.read_reply()
        assert r.code == 421, r.text
        assert c.wait_closed() == b"", "data after the 421"
    assert_new_session_works(server)


def test_idle_timeout_not_during_transfer(start_server, tmp_path):
    """A session whose upload takes longer than the idle timeout is not idle."""
    server = start_server(idle_timeout="2s")
    src = tmp_path / "slow.bin"
    sha = write_random(src, 1 << 20)
    # ~5 s at 200 KiB/s; curl's upload rate limit is steady.
    r = curl("--ftp-pasv", "--limit-rate", "200K", "-T", src, server.url("slow.bin"))
    r.assert_ok()
    r.assert_exchange("STOR", (125, 150), 226)
    assert sha256_file(server.path("slow.bin")) == sha


def greet(server, source=None) -> tuple[RawFTP, int]:
    c = RawFTP(server.host, server.port, source=source)
    return c, c.greeting().code


def expect_refused(server, source=None):
    c, code = greet(server, source)
    with c:
        assert code == 421, f"expected 421, got {code}"
        assert c.wait_closed() == b""


def connect_when_released(server, source=None, bound=10.0) -> RawFTP:
    """After a session ended, its slot is released; retry (bounded) until a greeting is 220."""
    deadline = time.monotonic() + bound
    while True:
        c, code = greet(server, source)
        if code == 220:
            return c
        c.close()
        assert code == 421, code
        assert time.monotonic() < deadline, "session slot never released"
        time.sleep(0.05)


def quit_and_wait(c: RawFTP):
    assert c.cmd("QUIT").code == 221
    assert c.wait_closed() == b""
    c.close()


def test_max_sessions_per_ip(start_server):
    server = start_server(max_sessions_per_ip=2)
    a, ca = greet(server)
    b, cb = greet(server)
    try:
        assert (ca, cb) == (220, 220)
        expect_refused(server)
        # Another client address is not affected.
        with raw_session(server, source="127.0.0.2") as other:
            assert_session_alive(other)
        # The first two still work.
        a.login(server.user, server.password)
        assert_session_alive(a)
        b.login(server.user, server.password)
        assert_session_alive(b)
        quit_and_wait(a)
        c = connect_when_released(server)
        with c:
            c.login(server.user, server.password)
            assert_session_alive(c)
            expect_refused(server)
    finally:
        a.close()
        b.close()


def test_max_sessions_global(start_server):
    server = start_server(max_sessions=2)
    a, ca = greet(server)
    b, cb = greet(server, source="127.0.0.2")
    try:
        assert (ca, cb) == (220, 220)
        expect_refused(server, source="127.0.0.3")
        quit_and_wait(a)
        with connect_when_released(server, source="127.0.0.3") as c:
            c.login(server.user, server.password)
            assert_session_alive(c)
    finally:
        a.close()
        b.close()


def read_all(sock: socket.socket) -> bytes:
    sock.settimeout(SOCKET_TIMEOUT)
    out = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return out
        out += chunk


def test_passive_range_exhausted(start_server):
    lo, _ = next_passive_range()
    server = start_server(passive_ports=(lo, lo))
    server.path("file.txt").write_bytes(b"content")
    with raw_session(server) as a, raw_session(server) as b:
        r = a.cmd("PASV")
        assert r.code == 227, r.text
        host, port = parse_pasv(r.text)
        assert (host, port) == ("127.0.0.1", lo)

        r = b.cmd("PASV")
        assert r.code == 425, r.text
        r = b.cmd("EPSV")
        assert r.code == 425, r.text
        assert_session_alive(b)

        # The holder can use its port.
        data = socket.create_connection(("127.0.0.1", lo), timeout=SOCKET_TIMEOUT)
        with data:
            r = a.cmd("RETR file.txt")
            assert r.code in (125, 150), r.text
            assert read_all(data) == b"content"
        assert a.read_reply().code == 226
        assert_session_alive(a)
    assert_new_session_works(server)


def test_passive_ports_within_range(start_server):
    server = start_server()
    with raw_session(server) as c:
        seen = set()
        for _ in range(10):
            r = c.cmd("EPSV")
            assert r.code == 229, r.text
            seen.add(parse_epsv(r.text))
            r = c.cmd("PASV")
            assert r.code == 227, r.text
            seen.add(parse_pasv(r.text)[1])
        assert all(server.in_passive_range(p) for p in seen), (seen, server.passive_range)


def test_advertised_address(start_server, samples, tmp_path):
    server = start_server(advertise="192.0.2.7")
    with raw_session(server) as c:
        r = c.cmd("PASV")
        assert r.code == 227, r.text
        host, port = parse_pasv(r.text)
        assert host == "192.0.2.7"
        assert server.in_passive_range(port)
        r = c.cmd("EPSV")
        assert r.code == 229, r.text
        assert server.in_passive_range(parse_epsv(r.text))
    # curl ignores the PASV address by default (--ftp-skip-pasv-ip) and still transfers.
    s = samples[1 << 20]
    up = curl("--ftp-pasv", "--disable-epsv", "-T", s.path, server.url("adv.bin"))
    up.assert_ok()
    up.assert_exchange("PASV", 227)
    out = tmp_path / "adv.out"
    down = curl("--ftp-pasv", "--disable-epsv", "-o", out, server.url("adv.bin"))
    down.assert_ok()
    assert sha256_file(out) == s.sha256 and file_size(out) == s.size


def test_session_survives_closed_data_connection(server):
    """A data connection reset by the client mid-download ends the transfer (226 if the
    bytes were already handed to the kernel, else 426/451) and the control session goes on."""
    server.path("file.txt").write_bytes(b"x" * 100000)
    with raw_session(server) as c:
        r = c.cmd("EPSV")
        port = parse_epsv(r.text)
        data = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
        data.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        r = c.cmd("RETR file.txt")
        assert r.code in (125, 150), r.text
        data.close()                    # RST
        r = c.read_reply()
        assert r.code in (226, 426, 451), r.text
        assert_session_alive(c)
    assert_new_session_works(server)
